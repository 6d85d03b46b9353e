//! Exclusive programs: pause while any of the programs the volunteer named runs (a game, a
//! renderer, a video call), whatever the CPU they use.
//!
//! [`running`] is the pure match of the settings' names against the process table;
//! [`ExclusiveSource`] lists the processes with sysinfo every [`POLL`]. A name matches a process
//! whose name or executable's file name is that name, ignoring case and a trailing `.exe`. On
//! Linux a process name is the kernel's `comm`, cut to 15 bytes, so a longer name also matches
//! its first 15 bytes.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::{
    ActivitySource, Condition, ConditionDetail, Observation, Signal, SourceError, SourceFactory,
};
use crate::client::idle::Busy;

/// Between two looks at the process table: a program the owner starts pauses the tasks within
/// this; one look costs about as much as the process source's full look (a read of
/// `/proc/PID/stat` per process; the executable's link once per new process).
pub const POLL: Duration = Duration::from_secs(2);

/// Linux keeps this many bytes of a process's name (`TASK_COMM_LEN` - 1).
const COMM_BYTES: usize = 15;

fn normalize(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.strip_suffix(".exe") {
        Some(stem) if !stem.is_empty() => stem.to_owned(),
        _ => lower,
    }
}

/// Whether a process called `name` (its executable `exe`) is the program `wanted` (normalized).
fn matches(wanted: &str, name: &OsStr, exe: Option<&Path>) -> bool {
    let name = normalize(&name.to_string_lossy());
    if name == wanted {
        return true;
    }
    // The kernel cut the name; the wanted one starts with what is left.
    if name.len() == COMM_BYTES && wanted.len() > COMM_BYTES && wanted.starts_with(&name) {
        return true;
    }
    exe.and_then(Path::file_name)
        .is_some_and(|f| normalize(&f.to_string_lossy()) == wanted)
}

/// The names in `wanted` (as the settings spell them) that some process in `processes`
/// (name, executable) is, in the order of `wanted`.
pub fn running<'a>(
    wanted: &[String],
    processes: impl IntoIterator<Item = (&'a OsStr, Option<&'a Path>)> + Clone,
) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| {
            let w = normalize(w);
            processes
                .clone()
                .into_iter()
                .any(|(name, exe)| matches(&w, name, exe))
        })
        .cloned()
        .collect()
}

/// Reports [`Busy::ExclusiveProgram`] while one of the named programs runs.
pub struct ExclusiveSource {
    system: System,
    wanted: Vec<String>,
    own: sysinfo::Pid,
    /// The programs last reported as running; `None` before the first report.
    reported: Option<Vec<String>>,
}

impl ExclusiveSource {
    pub fn new(wanted: Vec<String>) -> Result<Self, SourceError> {
        Ok(Self {
            system: System::new().map_err(SourceError::Processes)?,
            wanted,
            own: sysinfo::Pid::from_u32(std::process::id()),
            reported: None,
        })
    }

    /// The named programs running now.
    fn look(&mut self) -> Vec<String> {
        // Names come with every refresh (from /proc/PID/stat); the executable is read once per
        // process, for names the kernel cut. Nothing else: no CPU, memory or command lines.
        let kind = ProcessRefreshKind::nothing()
            .with_exe(UpdateKind::OnlyIfNotSet)
            .without_tasks();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let own = self.own;
        let processes = self
            .system
            .processes()
            .values()
            .filter(|p| p.thread_kind().is_none() && p.pid() != own)
            .map(|p| (p.name(), p.exe()));
        running(&self.wanted, processes)
    }
}

impl ActivitySource for ExclusiveSource {
    fn name(&self) -> String {
        format!("exclusive programs ({})", self.wanted.join(", "))
    }

    fn interval(&self) -> Duration {
        POLL
    }

    fn poll(&mut self, _now: Instant) -> Option<Observation> {
        None
    }

    fn signal(&mut self, now: Instant) -> Option<Signal> {
        let found = self.look();
        if self.reported.as_ref() == Some(&found) {
            return None;
        }
        self.reported = Some(found.clone());
        Some(Signal::Condition(Condition {
            reason: Busy::ExclusiveProgram,
            on: !found.is_empty(),
            at: now,
            detail: ConditionDetail::Programs(found),
        }))
    }
}

/// A factory for an [`ExclusiveSource`] watching for `programs`.
pub fn factory(programs: Vec<String>) -> SourceFactory {
    Box::new(move || Ok(Box::new(ExclusiveSource::new(programs)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn names(wanted: &[&str], table: &[(&str, Option<&str>)]) -> Vec<String> {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        let table: Vec<(&OsStr, Option<&Path>)> = table
            .iter()
            .map(|(n, e)| (OsStr::new(*n), e.map(Path::new)))
            .collect();
        running(&wanted, table.iter().copied())
    }

    #[test]
    fn names_match_by_process_name_or_executable_ignoring_case_and_exe() {
        let table = [
            ("bash", Some("/usr/bin/bash")),
            ("Blender.exe", None),
            ("python3", Some("/usr/bin/python3.11")),
            ("steamwebhelper", Some("/opt/steam/steamwebhelper")),
        ];
        assert_eq!(names(&["blender"], &table), vec!["blender"]);
        assert_eq!(names(&["BLENDER.EXE", "zoom"], &table), vec!["BLENDER.EXE"]);
        assert_eq!(names(&["python3.11"], &table), vec!["python3.11"]);
        // Not a substring search: "steam" is not "steamwebhelper", "bas" is not "bash".
        assert!(names(&["steam", "bas", "python"], &table).is_empty());
    }

    #[test]
    fn a_name_the_kernel_cut_to_fifteen_bytes_still_matches() {
        // comm of "gnome-control-center" is "gnome-control-c"; no exe readable (another user's).
        let table = [("gnome-control-c", None)];
        assert_eq!(
            names(&["gnome-control-center"], &table),
            vec!["gnome-control-center"]
        );
        assert!(
            names(
                &["gnome-control-c-other-thing-x"],
                &[("gnome-control-x", None)]
            )
            .is_empty()
        );
        // A short name is not matched by its prefix.
        assert!(names(&["gnome"], &table).is_empty());
    }

    /// Starts `sleep` under a name of its own (a symlink), so that no other process on a
    /// shared machine can be mistaken for it.
    fn spawn_named(dir: &Path, name: &str) -> std::process::Child {
        let link = dir.join(name);
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        Command::new(&link)
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("run sleep under another name")
    }

    #[test]
    fn a_named_program_starting_and_ending_is_reported_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("igx{}", std::process::id() % 100_000);
        let mut source = ExclusiveSource::new(vec![name.clone(), "no-such-program".into()])
            .expect("read the process table");
        let t0 = Instant::now();
        let first = source.signal(t0);
        let Some(Signal::Condition(c)) = first else {
            panic!("the first look reports the state: {first:?}")
        };
        assert_eq!((c.reason, c.on), (Busy::ExclusiveProgram, false));
        assert_eq!(source.signal(t0), None, "nothing changed");

        let mut child = spawn_named(dir.path(), &name);
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let seen = source.signal(t0);
        let cost = start.elapsed();
        let Some(Signal::Condition(c)) = seen else {
            let _ = child.kill();
            panic!("the program was not seen: {seen:?}")
        };
        assert!(c.on);
        assert_eq!(c.detail, ConditionDetail::Programs(vec![name.clone()]));
        assert_eq!(source.signal(t0), None);
        let _ = child.kill();
        let _ = child.wait();
        let Some(Signal::Condition(c)) = source.signal(t0) else {
            panic!("the end of the program was not reported")
        };
        assert!(!c.on);
        assert_eq!(c.detail, ConditionDetail::Programs(Vec::new()));
        println!(
            "one look at {} processes: {cost:?}",
            source.system.processes().len()
        );
    }
}
