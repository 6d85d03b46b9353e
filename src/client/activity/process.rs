//! Noticing the owner through the CPU their programs use: a compile, a game, a video call.
//!
//! [`ProcessSource`] samples, with sysinfo, the CPU share of every process except this one and its
//! descendants (our own tasks must never count as the owner), and [`CpuWindow`] decides, as a pure
//! function of samples and time, when that share has stayed high long enough to mean someone is
//! at work. This file reads only the process table's CPU times: no names, command lines or memory.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{ActivitySource, Observation, SourceError, SourceFactory};
use crate::proto::ActivityKind;

/// sysinfo computes a process's CPU usage from the CPU time it gained between two refreshes;
/// closer than this the figure is mostly rounding (sysinfo's `MINIMUM_CPU_UPDATE_INTERVAL`).
const MIN_SAMPLE_GAP: Duration = Duration::from_millis(200);

/// How the process source samples and when it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    /// Time between samples; at least 200 ms (shorter is raised to 200 ms).
    pub interval: Duration,
    /// CPU share of the other processes, in percent of one core, above which the machine counts
    /// as busy. 100 is one core fully used.
    pub threshold_percent: f64,
    /// How long the share must stay above the threshold before it is reported.
    pub sustain: Duration,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            threshold_percent: 25.0,
            sustain: Duration::from_secs(3),
        }
    }
}

/// Decides from CPU samples when the machine is busy: the share has been above the threshold in
/// every sample covering the last `sustain`. Pure: time comes in with each sample.
///
/// A sample is the average share since the previous one, so a run of high samples covers the
/// time from the sample *before* the run. The first sample only opens that coverage (sysinfo has
/// nothing to compare its first reading with, so its value is meaningless).
#[derive(Debug, Clone)]
pub struct CpuWindow {
    threshold_percent: f64,
    sustain: Duration,
    last_sample: Option<Instant>,
    /// Start of the time covered by the current run of samples above the threshold.
    high_since: Option<Instant>,
}

impl CpuWindow {
    pub fn new(threshold_percent: f64, sustain: Duration) -> Self {
        Self {
            threshold_percent,
            sustain,
            last_sample: None,
            high_since: None,
        }
    }

    /// Adds the share measured over the time since the previous sample, up to `at`. Returns
    /// whether the machine is busy: the samples above the threshold now cover at least `sustain`.
    ///
    /// It returns true on every sample while the share stays high, not once per run: the trait
    /// promises what was seen since the previous poll, and a steady signal (one a second by
    /// default) keeps the engine's idle timer from running out while a build or a game goes on.
    pub fn push(&mut self, at: Instant, share_percent: f64) -> bool {
        let Some(previous) = self.last_sample.replace(at) else {
            return false;
        };
        // NaN compares false: an unreadable sample breaks the run rather than extending it.
        if share_percent > self.threshold_percent {
            let since = *self.high_since.get_or_insert(previous);
            at.saturating_duration_since(since) >= self.sustain
        } else {
            self.high_since = None;
            false
        }
    }
}

/// The CPU share, in percent of one core, of the processes not in `own`'s tree. `processes` are
/// `(pid, parent, share)`; a descendant is found through parent links, so a task's helper
/// processes are excluded along with this process.
fn others_share(processes: &[(Pid, Option<Pid>, f32)], own: Pid) -> f64 {
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for &(pid, parent, _) in processes {
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut ours = HashSet::from([own]);
    let mut stack = vec![own];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            // `insert` is false for a pid seen before, which also ends any cycle in the links.
            if ours.insert(child) {
                stack.push(child);
            }
        }
    }
    processes
        .iter()
        .filter(|(pid, _, _)| !ours.contains(pid))
        .map(|&(_, _, share)| f64::from(share))
        .sum()
}

/// What a refresh reads of a process: CPU times only. Threads ("tasks") are not listed: sysinfo
/// would list each as a process of its own, which costs more and counts their CPU twice (a
/// process's times include its threads').
fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing().with_cpu().without_tasks()
}

/// Reports [`ActivityKind::BusyProcess`] while other programs keep the CPU busy.
///
/// Cost: a quiet machine costs two small reads per poll, `/proc/stat` (the whole machine's CPU
/// time) and this process's own `/proc/PID/stat`: the whole machine minus this process bounds
/// what all other processes used. Only when that bound is above the threshold does a poll look
/// process by process, which is one sysinfo refresh of the CPU times of all processes (one read
/// of `/proc/PID/stat` each, threads not listed): median 1.9 ms on the 2-core test container
/// (67 entries in /proc), 0.2% of one core at the 1 s interval, growing with the number of
/// processes. The quiet path keeps an idle client's own footprint down where it matters.
pub struct ProcessSource {
    system: System,
    own: Pid,
    interval: Duration,
    window: CpuWindow,
    threshold_percent: f64,
    last_refresh: Option<Instant>,
    /// Whether the previous poll looked process by process: a process's CPU share is measured
    /// since its previous refresh, so the first full look after quiet polls has no fair base.
    scanned: bool,
    /// Reused between polls to avoid allocating each time.
    samples: Vec<(Pid, Option<Pid>, f32)>,
}

impl ProcessSource {
    pub fn new(cfg: ProcessConfig) -> Result<Self, SourceError> {
        let system = System::new().map_err(SourceError::Processes)?;
        Ok(Self {
            system,
            own: Pid::from_u32(std::process::id()),
            interval: cfg.interval.max(MIN_SAMPLE_GAP),
            window: CpuWindow::new(cfg.threshold_percent, cfg.sustain),
            threshold_percent: cfg.threshold_percent,
            last_refresh: None,
            scanned: false,
            samples: Vec::new(),
        })
    }

    /// The whole machine's CPU use and this process's, in percent of one core, since the
    /// previous call: two small reads.
    fn machine_and_own(&mut self) -> (f64, f64) {
        self.system.refresh_cpu_usage();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.own]),
            false,
            refresh_kind(),
        );
        let cores = self.system.cpus().len().max(1) as f64;
        let machine = f64::from(self.system.global_cpu_usage()) * cores;
        let own = self
            .system
            .process(self.own)
            .map_or(0.0, |p| f64::from(p.cpu_usage()));
        (machine, own)
    }

    /// Refreshes the CPU times and returns the share of the other processes.
    fn sample(&mut self) -> f64 {
        let (machine, own) = self.machine_and_own();
        let bound = (machine - own).max(0.0);
        if bound <= self.threshold_percent {
            self.scanned = false;
            return bound;
        }
        let first_look = !self.scanned;
        self.scanned = true;
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
        if first_look {
            // The per-process shares span the time since the last full look, not this
            // interval; the bound stands for this one sample.
            return bound;
        }
        self.samples.clear();
        self.samples.extend(
            self.system
                .processes()
                .values()
                // Kernel threads (kworkers, ksoftirqd) are no program of the owner's: their CPU is
                // work done for others, including the disk and network traffic of our own tasks.
                .filter(|p| p.thread_kind().is_none())
                .map(|p| (p.pid(), p.parent(), p.cpu_usage())),
        );
        others_share(&self.samples, self.own)
    }
}

impl ActivitySource for ProcessSource {
    fn name(&self) -> String {
        "processes".to_owned()
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn poll(&mut self, now: Instant) -> Option<Observation> {
        if self
            .last_refresh
            .is_some_and(|last| now.saturating_duration_since(last) < MIN_SAMPLE_GAP)
        {
            return None;
        }
        self.last_refresh = Some(now);
        let share = self.sample();
        self.window.push(now, share).then_some(Observation {
            kind: ActivityKind::BusyProcess,
            at: now,
        })
    }
}

/// A factory for a [`ProcessSource`], for [`super::Monitor::start`].
pub fn factory(cfg: ProcessConfig) -> SourceFactory {
    Box::new(move || Ok(Box::new(ProcessSource::new(cfg)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `(ms after t0, share)` samples to a fresh window; returns which ones reported busy.
    fn busy_at(threshold: f64, sustain: Duration, samples: &[(u64, f64)]) -> Vec<u64> {
        let t0 = Instant::now();
        let mut w = CpuWindow::new(threshold, sustain);
        samples
            .iter()
            .filter(|&&(ms, share)| w.push(t0 + MS * ms as u32, share))
            .map(|&(ms, _)| ms)
            .collect()
    }

    #[test]
    fn busy_only_once_the_high_samples_cover_the_whole_sustain() {
        // Samples every second; the first only opens the coverage. High from the sample at 1 s,
        // which covers 0..1 s, so 3 s are covered at the sample at 3 s.
        let samples = [
            (0, 90.0),
            (1000, 90.0),
            (2000, 90.0),
            (3000, 90.0),
            (4000, 90.0),
        ];
        assert_eq!(busy_at(25.0, MS * 3000, &samples), vec![3000, 4000]);
    }

    #[test]
    fn the_first_sample_alone_never_counts() {
        assert_eq!(
            busy_at(25.0, Duration::ZERO, &[(0, 400.0)]),
            Vec::<u64>::new()
        );
        assert_eq!(
            busy_at(25.0, Duration::ZERO, &[(0, 400.0), (250, 400.0)]),
            vec![250]
        );
    }

    #[test]
    fn one_quiet_sample_restarts_the_wait() {
        let samples = [
            (0, 0.0),
            (1000, 80.0),
            (2000, 80.0),
            (3000, 10.0),
            (4000, 80.0),
            (5000, 80.0),
            (6000, 80.0),
        ];
        assert_eq!(busy_at(25.0, MS * 3000, &samples), vec![6000]);
    }

    #[test]
    fn a_share_at_the_threshold_is_not_above_it() {
        let samples = [(0, 25.0), (1000, 25.0), (2000, 25.0)];
        assert_eq!(busy_at(25.0, MS * 1000, &samples), Vec::<u64>::new());
        let nan = [(0, 0.0), (1000, 99.0), (2000, f64::NAN), (3000, 99.0)];
        assert_eq!(busy_at(25.0, MS * 1500, &nan), Vec::<u64>::new());
    }

    #[test]
    fn a_late_sample_covers_the_time_since_the_previous_one() {
        // The poller stalled for 5 s (a loaded machine, a suspended laptop): the sample at 5.3 s
        // averages the whole gap, so it alone covers the sustain.
        let samples = [(0, 0.0), (300, 0.0), (5300, 60.0)];
        assert_eq!(busy_at(25.0, MS * 3000, &samples), vec![5300]);
    }

    #[test]
    fn this_process_and_its_descendants_do_not_count() {
        let p = Pid::from_u32;
        let own = p(100);
        let processes = [
            (p(1), None, 1.0),
            (own, Some(p(1)), 180.0),
            (p(101), Some(own), 90.0),    // a task's helper
            (p(102), Some(p(101)), 90.0), // and its child
            (p(200), Some(p(1)), 30.0),   // the owner's editor
            (p(201), Some(p(200)), 12.5), // and its language server
            (p(300), Some(p(300)), 2.0),  // a self-parented oddity must not loop
        ];
        assert_eq!(others_share(&processes, own), 45.5);
    }

    /// Kills a process by PID when dropped, so a failing test leaves no `yes` running.
    struct KillOnDrop(u32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let Ok(pid) = libc::pid_t::try_from(self.0) else {
                return;
            };
            // SAFETY: kill(2) takes plain integers; a PID that is already gone yields ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Starts `yes > /dev/null` *outside* this process's tree: a direct child would be one of our
    /// descendants, which the source rightly ignores. The shell backgrounds `yes` and exits, so
    /// `yes` is re-parented (to init or a subreaper) like any program of the owner's.
    fn spawn_foreign_yes() -> Option<KillOnDrop> {
        spawn_foreign("yes >/dev/null 2>&1")
    }

    /// Starts `command` outside this process's tree, as [`spawn_foreign_yes`] does. It must
    /// redirect its output: reading the pid waits until every holder of the pipe has closed it.
    fn spawn_foreign(command: &str) -> Option<KillOnDrop> {
        let out = Command::new("sh")
            .args(["-c", &format!("{command} & echo $!")])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .ok()?;
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some(KillOnDrop(pid))
    }

    /// The mean of `n` samples of the other processes' share, 250 ms apart, after one sample
    /// that only sets the base.
    fn mean_share(source: &mut ProcessSource, n: u32) -> f64 {
        source.sample();
        let mut total = 0.0;
        for _ in 0..n {
            std::thread::sleep(MS * 250);
            total += source.sample();
        }
        total / f64::from(n)
    }

    /// The two tests that read the real machine run one at a time: one makes it busy.
    static REAL_MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_busy_program_of_someone_else_is_reported() {
        let _alone = REAL_MACHINE.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = ProcessConfig {
            interval: MS * 250,
            threshold_percent: 25.0,
            sustain: Duration::from_secs(1),
        };
        let mut source = ProcessSource::new(cfg.clone()).expect("read the process table");
        // The negative control: the same source, the same measurement, before `yes` starts. The
        // machine is shared (other builds may run), so it need not be quiet, but `yes` must add
        // a clear share on top of whatever it does.
        let without = mean_share(&mut source, 6);
        let yes = spawn_foreign_yes().expect("start `yes` in the background");
        // And a foreign program that sleeps, measured alongside `yes`.
        let idle =
            spawn_foreign("sleep 30 >/dev/null 2>&1").expect("start `sleep` in the background");

        let t0 = Instant::now();
        let mut costs = Vec::new();
        let mut seen = None;
        while t0.elapsed() < Duration::from_secs(4) {
            let now = Instant::now();
            let polled = source.poll(now);
            costs.push(now.elapsed());
            if let Some(o) = polled {
                seen = Some(o);
                break;
            }
            std::thread::sleep(source.interval());
        }
        let busy_after = t0.elapsed();
        let with = mean_share(&mut source, 4);
        let share_of = |pid: u32| {
            source
                .samples
                .iter()
                .find(|(p, _, _)| p.as_u32() == pid)
                .map(|&(_, _, share)| f64::from(share))
        };
        let (yes_share, idle_share) = (share_of(yes.0), share_of(idle.0));
        drop((yes, idle));

        let o = seen.expect("BusyProcess within 4 s while `yes` spins");
        assert_eq!(o.kind, ActivityKind::BusyProcess);
        // The same measurement tells a spinning program from a sleeping one.
        let (Some(yes_share), Some(idle_share)) = (yes_share, idle_share) else {
            panic!("`yes` ({yes_share:?}) or `sleep` ({idle_share:?}) missing from the samples");
        };
        assert!(
            yes_share >= 20.0 && idle_share < 5.0,
            "`yes` at {yes_share:.0}%, `sleep` at {idle_share:.0}% of a core"
        );
        // On a machine quiet before `yes` (the 2-core machine is shared, often it is not), the
        // source's total must rise clearly with it: without a busy program it reports less.
        if without <= cfg.threshold_percent {
            assert!(
                with >= without + 40.0,
                "others' share {with:.0}% with `yes` spinning, {without:.0}% without"
            );
        }
        let total: Duration = costs.iter().sum();
        println!("others' share {without:.0}% before `yes`, {with:.0}% with it");
        println!(
            "BusyProcess after {busy_after:?}; {} polls over {} user processes, {:?} per poll on average",
            costs.len(),
            source.samples.len(),
            total / costs.len().max(1) as u32
        );
    }

    #[test]
    fn this_process_computing_flat_out_is_left_out_of_the_share() {
        let _alone = REAL_MACHINE.lock().unwrap_or_else(|p| p.into_inner());
        let mut source =
            ProcessSource::new(ProcessConfig::default()).expect("read the process table");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        };
        // sysinfo knows a process's CPU share from its third refresh on.
        for _ in 0..2 {
            source.machine_and_own();
            std::thread::sleep(MS * 250);
        }
        let (machine, own) = source.machine_and_own();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        // Whatever else the machine does, our spinning thread shows up as our own CPU, which
        // the quiet-machine bound subtracts.
        assert!(
            own >= 30.0,
            "own {own}% of a core while a thread of ours spins"
        );
        // The machine's share and our own come from two reads a moment apart (sysinfo samples
        // the machine, then the process table), so under load they may disagree by a few
        // percent of a core; more than that would mean our CPU was not counted in the machine's.
        assert!(
            machine + 10.0 >= own,
            "machine {machine}% well below own {own}%"
        );
    }
}
