//! What the engine shows a window, a tray icon or a screensaver, and what they may ask of it.
//!
//! The engine publishes a [`Snapshot`] on a `tokio::sync::watch` channel whenever something a
//! volunteer could see changes, and takes [`UiCommand`]s on an unbounded channel. A front end
//! only renders snapshots and sends commands: it never blocks on I/O, never touches the data dir,
//! the settings file or the connection itself. All of those belong to the engine.
//!
//! Times a person reads ("snoozed until 14:30", "events at 09:12") are [`SystemTime`]s; times the
//! engine measures with (how long a task has run) are [`Duration`]s taken when the snapshot was
//! made, at [`Snapshot::taken`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::client::idle::{Busy, IdleState};
use crate::client::settings::Settings;
use crate::proto::{ActivityKind, JobId, ReplicaId, TaskId, WorkerId};

/// Everything a front end shows. Cheap to clone: large parts are behind `Arc`s.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the engine made this snapshot (durations below are as of then).
    pub taken: Instant,
    /// The supervisor's worker endpoint, if one is configured.
    pub supervisor: Option<String>,
    pub worker_id: Option<WorkerId>,
    /// The name operators see.
    pub name: String,
    pub connection: Connection,
    /// Whether the machine counts as idle, and why not.
    pub idle: IdleState,
    /// When the quiet period ends and computing starts (while waiting for idle).
    pub idle_in: Option<Duration>,
    /// The details behind the busy reasons that carry some.
    pub detail: PauseDetail,
    /// Replicas held: running, paused or waiting for their inputs.
    pub tasks: Vec<TaskView>,
    /// Finished outcomes the supervisor has not acknowledged yet (kept in the data dir).
    pub outbox: usize,
    pub contribution: Contribution,
    pub capacity: CapacityView,
    /// Recent events, oldest first, at most [`MAX_EVENTS`].
    pub events: Vec<EventView>,
    /// Activity sources watching for the owner, and those that could not start (and why).
    pub sources: Vec<String>,
    pub source_problems: Vec<String>,
    pub last_activity: Option<crate::client::activity::Observation>,
    /// When tasks were last paused because the machine stopped being idle.
    pub paused_at: Option<Instant>,
    /// The settings the engine runs with, and the file they live in (if any).
    pub settings: Arc<Settings>,
    pub settings_path: Option<PathBuf>,
    /// The answer to the latest [`UiCommand::ApplySettings`] or [`UiCommand::Configure`].
    pub settings_result: Option<SettingsResult>,
    /// Pixels of the Mandelbrot tiles this client computed, newest last (at most
    /// [`MAX_TILES`]), for the screensaver.
    pub tiles: Vec<Arc<TileImage>>,
}

/// The pixels of one Mandelbrot tile this client computed, coloured as the job's assembled image
/// colours them.
#[derive(Debug, Clone, PartialEq)]
pub struct TileImage {
    pub job: JobId,
    /// The whole image's size, from the job's plan.
    pub width: u32,
    pub height: u32,
    /// The tile's rows, `y0..y1`, of `width` pixels each.
    pub y0: u32,
    pub y1: u32,
    /// RGBA, row-major over the tile's rows: `4 * width * (y1 - y0)` bytes.
    pub rgba: Vec<u8>,
}

/// At most this many events are kept in a snapshot.
pub const MAX_EVENTS: usize = 50;
/// At most this many computed tiles are kept for the screensaver.
pub const MAX_TILES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// No supervisor is configured yet (first run): the window asks for one.
    NotConfigured,
    /// Trying to connect (first attempt, or a retry that is under way).
    Connecting,
    Connected {
        /// The heartbeat the supervisor asked for.
        heartbeat: Duration,
    },
    /// The connection was lost or could not be made; the next attempt comes in `retry_in`.
    Disconnected { why: String, retry_in: Duration },
    /// The supervisor refused this worker (token, version); it asks again, slowly.
    Refused { why: String, retry_in: Duration },
}

/// Details of a pause that the reason alone does not say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PauseDetail {
    /// Snoozed by the user until then.
    pub snoozed_until: Option<SystemTime>,
    /// The exclusive programs running now, by name.
    pub exclusive: Vec<String>,
    /// The hottest CPU sensor, in °C, when one is read.
    pub temperature_c: Option<f32>,
    /// The next time the daily schedule allows computing, while outside it.
    pub schedule_opens: Option<SystemTime>,
}

/// One replica this worker holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub replica: ReplicaId,
    pub job: JobId,
    pub task: TaskId,
    pub kind: String,
    pub state: TaskState,
    /// 0.0 ..= 1.0, as the kernel last reported.
    pub progress: f32,
    /// Time spent computing (pauses excluded).
    pub elapsed: Duration,
    /// From progress and elapsed time, once progress says enough.
    pub remaining: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Downloading the outputs of its dependencies.
    Fetching,
    Running,
    Paused,
    /// Finished; the outcome waits for the supervisor's acknowledgement or an upload.
    Reporting,
}

/// What this machine has given, kept in the data dir across restarts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    pub tasks_today: u64,
    pub cpu_today: Duration,
    pub tasks_total: u64,
    pub cpu_total: Duration,
    /// CPU time given per local day, oldest first, the last 14 days (today last), with days
    /// without work as zero.
    pub per_day: Vec<DayTotal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DayTotal {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    pub cpu: Duration,
    pub tasks: u64,
}

/// This machine's measured capacity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityView {
    pub cores: u32,
    pub slots: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The join benchmark: million operations per second on one core.
    pub bench_mops: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub at: SystemTime,
    pub what: Event,
}

/// Something a volunteer may want to read about afterwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected,
    Disconnected(String),
    Refused(String),
    /// Tasks paused, and why.
    Paused(Busy),
    Resumed,
    TaskStarted {
        job: JobId,
        kind: String,
    },
    TaskDone {
        job: JobId,
        kind: String,
        cpu: Duration,
    },
    TaskFailed {
        job: JobId,
        kind: String,
        error: String,
    },
    /// The supervisor cancelled a replica (another copy won, or the job ended).
    TaskCancelled {
        job: JobId,
        kind: String,
    },
    Snoozed {
        until: SystemTime,
    },
    SettingsApplied,
    /// Anything else worth a line (a source that could not start, a tray host missing).
    Note(String),
}

/// The outcome of a settings change or of a first-run configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingsResult {
    /// Written to the settings file and applied to the running engine.
    Saved,
    /// Refused; nothing was written. Messages are per settings key where one applies.
    Refused(Vec<FieldError>),
    /// A [`UiCommand::Configure`] is being checked against the supervisor.
    Checking,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The settings key (`idle_after_secs`, `server`, ...), or `None` for the whole change.
    pub key: Option<&'static str>,
    pub message: String,
}

/// What a front end may ask the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    /// Pause all tasks until then (tells the supervisor at once, like owner input).
    SnoozeUntil(SystemTime),
    /// End a snooze.
    Resume,
    /// Check, write to the settings file and apply without a restart. The answer comes in
    /// [`Snapshot::settings_result`].
    ApplySettings(Box<Settings>),
    /// First run: check that the supervisor at `server` accepts `token` (a hello), then save
    /// both (the token to a file in the config dir) and connect.
    Configure { server: String, token: String },
    /// The screensaver was left by the owner: counts as owner activity of this kind.
    OwnerReturned(ActivityKind),
    /// Stop the engine: running replicas are handed back to the supervisor first.
    Quit,
}

/// A front end's end of the engine: snapshots to render, commands to send.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub snapshots: tokio::sync::watch::Receiver<Snapshot>,
    pub commands: tokio::sync::mpsc::UnboundedSender<UiCommand>,
}
