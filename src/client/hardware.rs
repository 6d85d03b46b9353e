//! What this machine offers, for the hello: cores, memory, free disk, OS, and a short speed
//! benchmark. Read once at start-up.

use std::path::Path;
use std::time::Duration;

use crate::proto::Hardware;
use crate::runtime;

/// Reads the machine's hardware. `slots` is how many tasks the worker runs at once; `disk_dir` is
/// where tasks would write (its file system's free space is reported).
pub fn detect(slots: u32, disk_dir: &Path) -> Hardware {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mb = sysinfo::System::new()
        .map(|mut s| {
            s.refresh_memory();
            s.total_memory() / (1024 * 1024)
        })
        .unwrap_or(0);
    let disk_mb = free_disk_mb(disk_dir);
    let os = sysinfo::System::long_os_version()
        .or_else(|_| sysinfo::System::name())
        .unwrap_or_else(|_| std::env::consts::OS.to_owned());
    Hardware {
        cores,
        memory_mb,
        disk_mb,
        os,
        slots,
        bench_mops: runtime::bench_mops(Duration::from_millis(40)),
    }
}

/// Free space on the file system holding `dir`: the disk with the longest mount point that is a
/// prefix of it.
fn free_disk_mb(dir: &Path) -> u64 {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return 0;
    };
    disks
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.available_space() / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_cores_memory_disk_and_speed() {
        let hw = detect(2, Path::new("."));
        assert!(hw.cores >= 1);
        assert!(hw.memory_mb > 64, "{hw:?}");
        assert!(hw.disk_mb > 0, "{hw:?}");
        assert!(!hw.os.is_empty());
        assert_eq!(hw.slots, 2);
        assert!(hw.bench_mops > 0.0, "{hw:?}");
    }
}
