//! Noticing that the owner is using the machine: activity sources and the monitor that polls them.
//!
//! An [`ActivitySource`] turns one kind of evidence (keyboard and mouse, busy processes, a script
//! for tests) into [`Observation`]s, or watches a blocking condition (the daily schedule, an
//! exclusive program, the CPU's temperature, a full-screen window) and reports its changes as
//! [`Condition`]s. The [`Monitor`] polls each source on its own OS thread and sends every
//! [`Signal`], the moment it is seen, to the engine over a tokio channel.
//!
//! This module only *observes*. It does not decide whether the machine is idle (that is the
//! engine's idle policy, a pure function of observations and time), it never pauses a task, and it
//! never talks to the supervisor.

pub mod battery;
pub mod exclusive;
#[cfg(feature = "input")]
pub mod fullscreen;
#[cfg(feature = "input")]
pub mod input;
pub mod process;
pub mod schedule;
pub mod scripted;
pub mod thermal;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use crate::client::idle::Busy;
use crate::client::snapshot::PauseDetail;
use crate::proto::ActivityKind;

/// How often the input source looks while no task computes. Its own interval (10 ms by default)
/// is for when a task does: then the owner's return must pause it at once. With nothing
/// computing, nothing needs pausing, the supervisor still hears within a tenth of a second, and
/// polling ten times less often is what keeps an idle client near nothing (each look is two X
/// round trips, about 1.4% of a core at 10 ms).
pub const RELAXED_POLL: Duration = Duration::from_millis(100);

/// Whether a task computes, as the engine tells the sources that care (input): shared, cheap to
/// read at every poll. Starts relaxed.
#[derive(Debug, Clone, Default)]
pub struct Pace(Arc<AtomicBool>);

impl Pace {
    pub fn set_urgent(&self, urgent: bool) {
        self.0.store(urgent, Ordering::Relaxed);
    }

    pub fn urgent(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a source saw: a kind of owner activity, at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub kind: ActivityKind,
    pub at: Instant,
}

/// A blocking condition started or ended (or its detail changed while it lasts): for
/// [`crate::client::idle::IdlePolicy::set_condition`], and the detail for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// One of [`crate::client::idle::CONDITIONS`] (not `Snoozed`: that one is the user's).
    pub reason: Busy,
    pub on: bool,
    pub at: Instant,
    pub detail: ConditionDetail,
}

/// What a volunteer is shown about a condition besides its reason.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionDetail {
    None,
    /// The exclusive programs running now, by the names the settings gave (empty when off).
    Programs(Vec<String>),
    /// The hottest CPU sensor, in °C, at the latest reading.
    Temperature(f32),
    /// When the daily schedule next allows computing (`None` while it allows it now).
    ScheduleOpens(Option<SystemTime>),
}

impl Condition {
    /// Copies the detail into the status' [`PauseDetail`] (the engine calls this as it applies
    /// the condition).
    pub fn apply_to(&self, detail: &mut PauseDetail) {
        match &self.detail {
            ConditionDetail::None => {}
            ConditionDetail::Programs(names) => detail.exclusive.clone_from(names),
            ConditionDetail::Temperature(c) => detail.temperature_c = Some(*c),
            ConditionDetail::ScheduleOpens(at) => detail.schedule_opens = *at,
        }
    }
}

/// What the monitor sends the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Owner activity: restarts the quiet period.
    Activity(Observation),
    /// A blocking condition changed.
    Condition(Condition),
}

impl Signal {
    /// The owner activity, if this is one.
    pub fn activity(self) -> Option<Observation> {
        match self {
            Signal::Activity(o) => Some(o),
            Signal::Condition(_) => None,
        }
    }
}

/// A way of noticing that the owner is using the machine, or that a blocking condition holds.
/// Polled from its own thread.
pub trait ActivitySource {
    /// For logs and status, e.g. "input (X11 display :99)", "processes", "scripted".
    fn name(&self) -> String;
    /// How long to sleep between polls.
    fn interval(&self) -> Duration;
    /// Polls once. Returns what was seen since the previous poll (at most one observation; the
    /// most telling kind).
    fn poll(&mut self, now: Instant) -> Option<Observation>;
    /// What the monitor sends after a poll. Sources of owner activity need only [`Self::poll`];
    /// a source of a blocking condition has no instant of activity to report and overrides
    /// this instead (its `poll` returns nothing), reporting the condition's first state and
    /// then each change.
    fn signal(&mut self, now: Instant) -> Option<Signal> {
        self.poll(now).map(Signal::Activity)
    }
}

/// Why a source could not start (e.g. no display).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no X display (DISPLAY is not set)")]
    DisplayNotSet,
    #[error("no X display (cannot connect to DISPLAY={display})")]
    DisplayUnreachable { display: String },
    #[error("keyboard and mouse cannot be read (on macOS, allow idlegrid under Accessibility)")]
    InputUnavailable,
    #[error("cannot read the process list: {0}")]
    Processes(#[source] sysinfo::Error),
    #[error("cannot start the source's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the source did not start within {0:?}")]
    StartTimeout(Duration),
    #[error("the source panicked while starting")]
    StartPanicked,
    /// A condition source that cannot watch on this machine (no display, no sensor).
    #[error("{reason}")]
    Unavailable { which: &'static str, reason: String },
}

impl SourceError {
    /// The source an error belongs to, when the error itself says so. Errors of the monitor's own
    /// (thread, timeout, panic) do not: the factory that failed has no name until it has built
    /// its source.
    fn origin(&self) -> Option<&'static str> {
        match self {
            SourceError::DisplayNotSet
            | SourceError::DisplayUnreachable { .. }
            | SourceError::InputUnavailable => Some("input"),
            SourceError::Processes(_) => Some("processes"),
            SourceError::Unavailable { which, .. } => Some(which),
            SourceError::Thread(_) | SourceError::StartTimeout(_) | SourceError::StartPanicked => {
                None
            }
        }
    }
}

/// Builds a source inside the thread that polls it (device_query's `DeviceState` is `!Send`).
pub type SourceFactory = Box<dyn FnOnce() -> Result<Box<dyn ActivitySource>, SourceError> + Send>;

/// Which sources a [`Monitor`] runs and which could not start.
#[derive(Debug)]
pub struct MonitorReport {
    /// Names of the sources that started.
    pub running: Vec<String>,
    /// For each source that failed to start: which one (its kind, or "source #i" for the i-th
    /// factory when the error does not say), and why.
    pub failed: Vec<(String, SourceError)>,
}

/// How long [`Monitor::start`] waits for all sources to be built. Building is quick (opening an X
/// connection, reading /proc once); the bound is for an X display on an unreachable host, where
/// connecting can hang for a TCP timeout.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A running monitor: one OS thread per source, each polling at its interval and sending every
/// observation on its channel. Dropping it stops and joins the threads.
pub struct Monitor {
    threads: Vec<SourceThread>,
}

struct SourceThread {
    /// Checked before every poll; set on drop (or when `start` gives up waiting for the source).
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Monitor {
    /// Starts a thread per factory. Returns the monitor and, for each source that failed to
    /// start, its error (the caller logs them once and falls back). A source that starts is
    /// reported by name.
    ///
    /// Waits until every source has been built (at most [`START_TIMEOUT`] in all) so that the
    /// report is accurate. A thread ends by itself when the receiving side of `tx` is dropped.
    pub fn start(
        factories: Vec<SourceFactory>,
        tx: UnboundedSender<Signal>,
    ) -> (Monitor, MonitorReport) {
        let mut report = MonitorReport {
            running: Vec::new(),
            failed: Vec::new(),
        };
        let mut starting = Vec::new();
        for (i, factory) in factories.into_iter().enumerate() {
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let stop = Arc::new(AtomicBool::new(false));
            let thread_stop = Arc::clone(&stop);
            let tx = tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("activity-{i}"))
                .spawn(move || run_source(factory, ready_tx, thread_stop, tx));
            match spawned {
                Ok(handle) => starting.push((i, ready_rx, SourceThread { stop, handle })),
                Err(e) => report
                    .failed
                    .push((format!("source #{i}"), SourceError::Thread(e))),
            }
        }

        let deadline = Instant::now() + START_TIMEOUT;
        let mut threads = Vec::new();
        for (i, ready_rx, thread) in starting {
            let which = |e: &SourceError| e.origin().map_or(format!("source #{i}"), str::to_owned);
            match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(name)) => {
                    report.running.push(name);
                    threads.push(thread);
                }
                Ok(Err(e)) => report.failed.push((which(&e), e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Reported as failed, so it must not run: its thread stops before its first
                    // poll once its factory returns. It is not joined, since that may take long.
                    thread.stop.store(true, Ordering::Release);
                    let e = SourceError::StartTimeout(START_TIMEOUT);
                    report.failed.push((which(&e), e));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let e = SourceError::StartPanicked;
                    report.failed.push((which(&e), e));
                }
            }
        }
        (Monitor { threads }, report)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.threads {
            t.stop.store(true, Ordering::Release);
            // Wakes the thread from its sleep between polls, so that dropping a monitor whose
            // sources poll every second does not take a second.
            t.handle.thread().unpark();
        }
        for t in self.threads.drain(..) {
            // A panic while polling was already logged by the thread itself.
            let _ = t.handle.join();
        }
    }
}

/// The body of one source's thread: build, report, poll until stopped.
fn run_source(
    factory: SourceFactory,
    ready: mpsc::SyncSender<Result<String, SourceError>>,
    stop: Arc<AtomicBool>,
    tx: UnboundedSender<Signal>,
) {
    let mut source = match factory() {
        Ok(source) => source,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let name = source.name();
    if ready.send(Ok(name.clone())).is_err() {
        return;
    }
    drop(ready);
    tracing::debug!(source = %name, interval = ?source.interval(), "activity source running");
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        // Read at every turn: a source's pace may follow the engine (input, see `Pace`).
        let interval = source.interval();
        // A source that panics stops reporting; the others and the engine carry on.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.signal(now)));
        match polled {
            Ok(Some(signal)) => {
                if tx.send(signal).is_err() {
                    tracing::debug!(source = %name, "nobody listens to activity any more; stopping");
                    return;
                }
            }
            Ok(None) => {}
            Err(_) => {
                tracing::error!(source = %name, "activity source panicked; it stops reporting");
                return;
            }
        }
        sleep_until(now + interval, &stop);
    }
}

/// Sleeps until `deadline` or until `stop` is set (the monitor unparks the thread when it sets it).
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // `park_timeout` may wake early (spuriously or from a stale unpark); the loop re-sleeps.
        thread::park_timeout(left);
    }
}

/// How telling a kind of activity is, when one poll saw several: deliberate input on the machine
/// beats incidental input (a pointer nudged), and any input beats a busy process, which is only
/// indirect evidence that someone is there.
fn telling_rank(kind: ActivityKind) -> u8 {
    match kind {
        ActivityKind::Keyboard => 5,
        ActivityKind::Mouse => 4,
        ActivityKind::Touch => 3,
        ActivityKind::Voice => 2,
        ActivityKind::Pointer => 1,
        ActivityKind::BusyProcess
        | ActivityKind::OnBattery
        | ActivityKind::User
        | ActivityKind::Schedule
        | ActivityKind::ExclusiveProgram
        | ActivityKind::Thermal
        | ActivityKind::Fullscreen => 0,
    }
}

/// The more telling of two kinds (see [`telling_rank`]).
fn most_telling(a: ActivityKind, b: ActivityKind) -> ActivityKind {
    if telling_rank(b) > telling_rank(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that reports `kind` on every poll, counting its polls.
    struct Every {
        kind: ActivityKind,
        interval: Duration,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ActivitySource for Every {
        fn name(&self) -> String {
            format!("every {}", self.kind.as_str())
        }
        fn interval(&self) -> Duration {
            self.interval
        }
        fn poll(&mut self, now: Instant) -> Option<Observation> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            Some(Observation {
                kind: self.kind,
                at: now,
            })
        }
    }

    fn every(
        kind: ActivityKind,
        interval: Duration,
    ) -> (SourceFactory, Arc<std::sync::atomic::AtomicUsize>) {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&polls);
        let factory: SourceFactory = Box::new(move || {
            Ok(Box::new(Every {
                kind,
                interval,
                polls: counter,
            }) as Box<dyn ActivitySource>)
        });
        (factory, polls)
    }

    #[tokio::test]
    async fn monitor_reports_started_and_failed_sources_and_forwards_observations() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (ok, _) = every(ActivityKind::Keyboard, Duration::from_millis(5));
        let no_display: SourceFactory = Box::new(|| Err(SourceError::DisplayNotSet));
        let panics: SourceFactory = Box::new(|| panic!("deliberate panic in a test factory"));
        let (monitor, report) = Monitor::start(vec![no_display, ok, panics], tx);

        assert_eq!(report.running, vec!["every keyboard".to_owned()]);
        let failed: Vec<String> = report
            .failed
            .iter()
            .map(|(which, e)| format!("{which}: {e}"))
            .collect();
        assert_eq!(
            failed,
            vec![
                "input: no X display (DISPLAY is not set)".to_owned(),
                "source #2: the source panicked while starting".to_owned(),
            ]
        );

        let seen = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("an observation within 2 s")
            .expect("the channel is open while the monitor runs");
        assert_eq!(
            seen.activity().map(|o| o.kind),
            Some(ActivityKind::Keyboard)
        );
        drop(monitor);
    }

    /// A source polled every 5 ms while its pace is urgent and every 200 ms otherwise.
    struct Paced {
        pace: Pace,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ActivitySource for Paced {
        fn name(&self) -> String {
            "paced".into()
        }
        fn interval(&self) -> Duration {
            if self.pace.urgent() {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(200)
            }
        }
        fn poll(&mut self, _now: Instant) -> Option<Observation> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    #[test]
    fn a_source_follows_its_pace_from_one_poll_to_the_next() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let pace = Pace::default();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p, counter) = (pace.clone(), Arc::clone(&polls));
        let factory: SourceFactory = Box::new(move || {
            Ok(Box::new(Paced {
                pace: p,
                polls: counter,
            }) as Box<dyn ActivitySource>)
        });
        let (monitor, _) = Monitor::start(vec![factory], tx);
        let count = |ms| {
            let before = polls.load(Ordering::Relaxed);
            thread::sleep(Duration::from_millis(ms));
            polls.load(Ordering::Relaxed) - before
        };
        let relaxed = count(450);
        pace.set_urgent(true);
        thread::sleep(Duration::from_millis(250)); // the relaxed sleep under way ends
        let urgent = count(450);
        pace.set_urgent(false);
        thread::sleep(Duration::from_millis(50));
        let relaxed_again = count(450);
        drop(monitor);
        assert!(relaxed <= 4, "relaxed: {relaxed} polls in 450 ms");
        assert!(urgent >= 20, "urgent: {urgent} polls in 450 ms");
        assert!(relaxed_again <= 4, "relaxed again: {relaxed_again} polls");
    }

    #[test]
    fn dropping_the_monitor_stops_its_threads_without_waiting_a_whole_interval() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (slow, polls) = every(ActivityKind::Pointer, Duration::from_secs(60));
        let (monitor, report) = Monitor::start(vec![slow], tx);
        assert_eq!(report.running.len(), 1);
        let t = Instant::now();
        drop(monitor);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let after_drop = polls.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(polls.load(Ordering::Relaxed), after_drop);
    }

    #[test]
    fn a_source_stops_when_nobody_listens() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (fast, polls) = every(ActivityKind::Mouse, Duration::from_millis(1));
        let (monitor, _) = Monitor::start(vec![fast], tx);
        drop(rx);
        thread::sleep(Duration::from_millis(50));
        let stopped_at = polls.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(polls.load(Ordering::Relaxed), stopped_at);
        drop(monitor);
    }

    #[test]
    fn deliberate_input_outranks_incidental_input_and_busy_processes() {
        use ActivityKind::*;
        assert_eq!(most_telling(Pointer, Keyboard), Keyboard);
        assert_eq!(most_telling(Mouse, Pointer), Mouse);
        assert_eq!(most_telling(Keyboard, Mouse), Keyboard);
        assert_eq!(most_telling(BusyProcess, Pointer), Pointer);
    }
}
