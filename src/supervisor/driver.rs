//! The driver: the one place where the scheduler meets the world. It owns the scheduler and the
//! store, turns connection events and API requests into `handle_*` calls, and carries out the
//! scheduler's outputs (frames to workers, store writes, events).
//!
//! Ordering rules kept here: a job is stored before it is handed to the scheduler and
//! acknowledged; a result is stored before the scheduler hears of it; an Assign is sent before
//! its record is written, so a store write never delays a reissue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::histogram::{Histogram, HistogramView};
use super::http::output_path;
use super::limits::{Cause, Guard};
use super::report::{JobSummary, Report};
use super::store::{
    ActivityRecord, Agreement, QuorumRow, Record, ReplicaEnd, ReplicaInfo, ReplicaStart, ResultRow,
    Store, StoreError,
};
use super::volunteers::{self, Auth, Credentials, TokenRecord};
use super::{Config, Event, SupervisorError, unix_ms};
use crate::job;
use crate::proto::{
    self, BlobRef, ErrorCode, Execution, Hardware, JobId, Payload, ReplicaId, SupervisorMsg,
    TaskId, WorkerId, WorkerMsg,
};
use crate::runtime;
use crate::sched::{
    AssignReason, CapacityClass, JobOutcome, KindSpeed, Link, Output, Scheduler, Verdict,
    criticality, quorum,
};

/// Identifies one WebSocket connection (a worker may reconnect on a new one).
pub type ConnId = u64;

/// What the driver sends to a connection task.
#[derive(Debug)]
pub enum Outgoing {
    Frame(String),
    /// A turn's frames for one connection, in order, written together (one write, not one
    /// per frame: an acknowledgement and the next assignment leave in one TCP segment).
    Frames(Vec<String>),
    /// Send this error, then close the connection.
    Close {
        code: ErrorCode,
        message: String,
    },
}

/// An operator's request, answered on `reply`.
#[derive(Debug)]
pub enum ApiRequest {
    /// A job validated, and its spec serialised, by the HTTP handler (off the driver thread).
    Submit {
        job: Box<job::Job>,
        spec_json: String,
        reply: oneshot::Sender<Result<JobId, ApiError>>,
    },
    Status {
        job: JobId,
        reply: oneshot::Sender<Result<JobStatus, ApiError>>,
    },
    /// `/metrics`: the Prometheus text of this moment.
    Metrics {
        reply: oneshot::Sender<String>,
    },
    /// The summary alone: cheap however many tasks the job has (a status lists them all).
    Summary {
        job: JobId,
        reply: oneshot::Sender<Result<JobSummary, ApiError>>,
    },
    Report {
        job: JobId,
        reply: oneshot::Sender<Result<Report, ApiError>>,
    },
    Results {
        job: JobId,
        task: Option<TaskId>,
        reply: oneshot::Sender<Result<serde_json::Value, ApiError>>,
    },
    Cancel {
        job: JobId,
        reply: oneshot::Sender<Result<JobSummary, ApiError>>,
    },
    Jobs {
        reply: oneshot::Sender<Result<Vec<JobSummary>, ApiError>>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerStatus>>,
    },
    Activity {
        worker: Option<String>,
        reply: oneshot::Sender<Result<Vec<ActivityRecord>, ApiError>>,
    },
    /// May this worker upload the result of this replica (is it running there)?
    MayUpload {
        worker: WorkerId,
        replica: ReplicaId,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    IssueToken {
        name: String,
        reply: oneshot::Sender<Result<IssuedToken, ApiError>>,
    },
    RevokeToken {
        name: String,
        reply: oneshot::Sender<Result<Revoked, ApiError>>,
    },
    Tokens {
        reply: oneshot::Sender<Result<Vec<TokenView>, ApiError>>,
    },
    /// The dashboard's front page in one turn: the pool, the newest `jobs` jobs with their cost,
    /// the newest `activity` messages. Costs no more than `/api/workers` plus one indexed
    /// aggregate per job listed.
    Overview {
        jobs: usize,
        activity: usize,
        reply: oneshot::Sender<Result<Overview, ApiError>>,
    },
}

/// What the dashboard's front page shows (see [`ApiRequest::Overview`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    pub workers: Vec<WorkerStatus>,
    pub jobs: Vec<JobLine>,
    pub activity: Vec<ActivityRecord>,
    /// When the view was made (Unix ms): the end of the makespan of jobs still running.
    pub now_ms: u64,
}

/// A job in the dashboard's list: its summary and what its replicas cost so far.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobLine {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub cost: f64,
    pub reissued: u32,
}

/// Counters of what the driver refused or could not do, and of reissues by cause.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Reports (result, failure, progress, status_ack) refused because the replica or nonce
    /// was not that worker's, by kind.
    pub refused: BTreeMap<&'static str, u64>,
    /// Results that could not be stored (their replica was detached and the task reissued).
    pub not_stored: u64,
    /// Assignments that could not be sent (too large for a frame).
    pub undeliverable: u64,
    /// Replicas started again after their task lost its last live one, by cause label.
    pub reissues: BTreeMap<&'static str, u64>,
    pub workers_lost: u64,
    /// Measured speeds that could not be written to the store (history is advisory: the
    /// scheduler keeps using them; they are lost only if the supervisor restarts).
    pub history_not_stored: u64,
    /// Joins whose stored history could not be read (the worker starts from its benchmark).
    pub history_not_loaded: u64,
    /// Heartbeats by how long they waited from their arrival (the connection's reader) to
    /// the driver handling them: how far the driver lags its workers.
    #[serde(serialize_with = "histogram_view")]
    pub heartbeat_lateness: Histogram,
    /// Replicas started, by reason (`AssignReason::label`).
    pub replicas_started: BTreeMap<&'static str, u64>,
    /// How long the store's commits took: a turn's results, and a turn's other records.
    #[serde(serialize_with = "histogram_view")]
    pub store_commit: Histogram,
    /// From a result's arrival at its connection to its acknowledgement being queued.
    #[serde(serialize_with = "histogram_view")]
    pub result_latency: Histogram,
    /// Reissues by how long their task had been without a live replica: from the event that
    /// left it so (a loss, a failure, the owner's return) to the new replica's assignment.
    #[serde(serialize_with = "histogram_view")]
    pub reissue_latency: Histogram,
    /// Tasks whose result was stored.
    pub tasks_done: u64,
    /// Jobs finished, by state (`completed`, `failed`, `cancelled`).
    pub jobs_finished: BTreeMap<&'static str, u64>,
    /// Makespans of finished jobs, submission to end (their report's `makespan_ms`).
    #[serde(skip)]
    pub makespans: super::metrics::Coarse,
    /// Credits charged to finished jobs (what their reports call `cost`).
    pub cost: f64,
    /// Quorum tasks' outputs that agreed with their quorum, and that did not.
    pub outputs_agreed: u64,
    pub outputs_rejected: u64,
    /// Workers flagged for disagreeing with quorums (since this boot).
    pub workers_flagged: u64,
}

fn histogram_view<S: serde::Serializer>(h: &Histogram, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&HistogramView::from(h), s)
}

/// When a connection's reader last received a frame (any frame is a sign of life). The driver
/// reads it before it judges deadlines: a worker whose frames arrived in time is never lost for
/// how long they queued for the driver.
#[derive(Debug)]
pub struct Heard {
    epoch: Instant,
    micros: AtomicU64,
}

impl Default for Heard {
    fn default() -> Self {
        Self::new()
    }
}

impl Heard {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            micros: AtomicU64::new(0),
        }
    }

    pub fn stamp(&self, at: Instant) {
        let us = at.saturating_duration_since(self.epoch).as_micros();
        self.micros
            .fetch_max(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn at(&self) -> Instant {
        self.epoch + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid job: {0}")]
    Invalid(#[from] job::JobError),
    #[error("no job {0}")]
    NoJob(JobId),
    #[error("job {job} has no result for task {task}")]
    NoResult { job: JobId, task: TaskId },
    #[error("job {0} has already finished")]
    Finished(JobId),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    #[error("invalid volunteer name {0:?}: 1-64 characters of A-Z a-z 0-9 . - _")]
    BadName(String),
    #[error("no volunteer token named {0:?}")]
    NoToken(String),
    #[error("no randomness available to make a token: {0}")]
    NoRandomness(String),
}

/// A token just issued: the only time the token itself is shown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IssuedToken {
    pub name: String,
    pub token: String,
    pub created_ms: u64,
}

/// What a revocation did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Revoked {
    pub name: String,
    pub revoked_ms: u64,
    /// Workers connected with the token, disconnected now.
    pub disconnected: Vec<WorkerId>,
}

/// A volunteer token as `token list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenView {
    #[serde(flatten)]
    pub token: TokenRecord,
    /// Worker ids bound to it.
    pub workers: Vec<WorkerId>,
    /// How many of them are connected now.
    pub connected: usize,
}

/// A job's status: its summary and, while it runs, where each task stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub task_states: Vec<TaskStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    pub id: String,
    pub state: &'static str,
    /// The tasks it waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
    pub critical: bool,
    /// Why the supervisor's criticality analysis names this task ("gates 16 tasks", ...).
    pub critical_reasons: Vec<String>,
    /// Replicas planned from the start.
    pub planned_replicas: u32,
    pub failures: u32,
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    pub replica: String,
    pub worker: String,
    /// The worker's state: `live`, `busy`, `reconnecting` or `lost`.
    pub worker_state: &'static str,
    pub progress: f32,
}

/// A worker as `/api/workers` shows it, with the sources of its capacity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub name: String,
    pub state: &'static str,
    /// What it reported at join: cores, memory_mb, disk_mb, slots, bench_mops, os.
    pub hardware: Option<Hardware>,
    pub replicas: usize,
    /// Speed from the join benchmark, relative to the reference core.
    pub bench_speed: f64,
    /// Measured speed per task kind, kept under its stable id across restarts.
    pub history: Vec<KindSpeed>,
    /// The speed placement uses when the kind is not known: history first, else the benchmark.
    pub speed: f64,
    /// Its measured link (kbit/s each way), once measured.
    pub link: Option<Link>,
    pub class: CapacityClass,
    /// Why it takes no tasks though idle (a slow link, none measured yet).
    pub held_back: Option<String>,
    /// While busy: the owner's activity that paused it (`keyboard`, `busy_process`, ...).
    pub activity: Option<&'static str>,
    /// What its replicas run, as `job/task`.
    pub tasks: Vec<String>,
    /// How long ago its connection last received a frame; `None` while not connected.
    pub heard_ms_ago: Option<u64>,
    /// Its outputs that agreed with quorums, and that did not.
    pub agreed: u32,
    pub disagreed: u32,
    /// It disagreed often enough to get no quorum tasks.
    pub flagged: bool,
}

/// What a checked hello says.
#[derive(Debug)]
pub struct Hello {
    pub worker: WorkerId,
    pub name: String,
    pub hardware: Hardware,
    pub held: Vec<ReplicaId>,
    pub available: bool,
    /// The token it presented: the shared one or a volunteer's.
    pub auth: Auth,
}

/// A result's output as it was uploaded out of band: its file, reference and JSON text.
#[derive(Debug)]
pub struct Upload {
    pub path: PathBuf,
    pub blob: BlobRef,
    pub text: String,
}

impl Upload {
    /// The output is not kept: its file goes.
    fn discard(self) {
        let _ = std::fs::remove_file(self.path);
    }
}

#[derive(Debug)]
pub enum DriverMsg {
    /// A worker passed the hello checks.
    Joined {
        conn: ConnId,
        hello: Hello,
        tx: mpsc::UnboundedSender<Outgoing>,
        heard: Arc<Heard>,
    },
    Frame {
        conn: ConnId,
        worker: WorkerId,
        /// When the connection's reader received it.
        at: Instant,
        msg: WorkerMsg,
        /// For a result uploaded out of band (already checked and read by the connection
        /// task): the upload.
        upload: Option<Upload>,
    },
    /// The connection measured the worker's link.
    Link {
        conn: ConnId,
        worker: WorkerId,
        measurement: super::probe::Measurement,
    },
    /// The connection refused something the worker sent (counted in the stats), and closes.
    Refused {
        worker: WorkerId,
        kind: &'static str,
        what: String,
    },
    /// The server accepts connections now: the restart grace starts.
    Serving,
    Closed {
        conn: ConnId,
        worker: WorkerId,
    },
    Api(ApiRequest),
    Shutdown,
}

struct Conn {
    id: ConnId,
    name: String,
    /// Replicas the worker runs at most (its slots, capped by its cores).
    slots: usize,
    tx: mpsc::UnboundedSender<Outgoing>,
    heard: Arc<Heard>,
    /// The token it connected with.
    auth: Auth,
}

struct Driver {
    sched: Scheduler,
    store: Store,
    /// Who may connect; the connection tasks read it, only the driver changes it.
    credentials: Arc<Credentials>,
    /// The abuse limits' refusals (the connection tasks count theirs there too).
    guard: Arc<Guard>,
    conns: HashMap<WorkerId, Conn>,
    events: broadcast::Sender<Event>,
    max_output_bytes: u64,
    uploads: PathBuf,
    outputs: PathBuf,
    /// Store writes of this turn, written in one transaction after its frames have left.
    pending: Vec<Record>,
    /// Jobs that finished this turn: their reports feed the metrics once stored.
    finished_now: Vec<JobId>,
    /// Results received this turn, not yet stored: stored together in one transaction (group
    /// commit), and only then acted on and acknowledged ([`Driver::flush_results`]).
    results: Vec<PendingResult>,
    /// Dependency outputs by job and task: `Some` for those that travel out of band (their
    /// file is in `outputs`), `None` for those small enough to go inline. Forgotten, files and
    /// all, when the job finishes.
    out_of_band: HashMap<JobId, HashMap<TaskId, Option<BlobRef>>>,
    stats: Stats,
    /// Refusals already logged, so a lying worker cannot flood the log.
    refusals_logged: HashSet<(WorkerId, &'static str)>,
    /// What replicas handed back by a leaving worker used, until their end is recorded.
    handed_back: HashMap<ReplicaId, Execution>,
    /// When each replica this run started was recorded as started (the `started_ms` its store
    /// record holds), so that clamping a result's claimed times reads no row. Taken out when
    /// an outcome arrives or the replica is cancelled or lost; one missing (a replica restored
    /// after a restart) is read from the store. Pruned of replicas the scheduler no longer holds
    /// when it doubles in size, so nothing is kept for ever.
    started_ms: HashMap<ReplicaId, u64>,
    /// The size of `started_ms` at which it is pruned next.
    started_prune_at: usize,
    /// This turn's frames not yet handed to their connections' writers: per connection, in
    /// the order they were sent. Handed over at the end of the turn ([`Driver::uncork`]),
    /// before its records are written, and before any close.
    corked: HashMap<ConnId, (mpsc::UnboundedSender<Outgoing>, Vec<String>)>,
    /// Measured speeds of this turn, written after its records in a transaction of their own:
    /// history is advisory, and a failure to keep it must not undo a replica record.
    speeds: Vec<(WorkerId, KindSpeed)>,
}

/// A result waiting for its turn's group commit.
struct PendingResult {
    worker: WorkerId,
    replica: ReplicaId,
    job: JobId,
    task: TaskId,
    /// The output's JSON text as stored, and as a value for the scheduler.
    text: String,
    output: serde_json::Value,
    execution: Execution,
    upload: Option<(PathBuf, BlobRef)>,
    received_ms: u64,
    /// When its connection received it.
    arrived: Instant,
}

/// At most this many messages are handled in one turn of the driver (before its outputs are
/// sent and its records written): what a busy queue may batch into one group commit.
const MAX_TURN_MESSAGES: usize = 512;
/// The smallest size at which the map of replicas' start times is pruned.
const STARTED_PRUNE_MIN: usize = 4096;

/// Opens the store, resumes unfinished jobs, and runs the driver on its own thread.
pub fn spawn(
    cfg: &Config,
    rx: mpsc::Receiver<DriverMsg>,
    events: broadcast::Sender<Event>,
    guard: Arc<Guard>,
) -> Result<(std::thread::JoinHandle<()>, Arc<Credentials>), SupervisorError> {
    let mut store = Store::open(&cfg.data_dir)?;
    let epoch = store.next_epoch()?;
    let credentials = Arc::new(Credentials::new(
        &cfg.worker_token,
        &store.volunteer_tokens()?,
        store.worker_bindings()?,
    ));
    let sched = Scheduler::new(cfg.sched.clone(), epoch);
    let (uploads, outputs) = bulk_dirs(&cfg.data_dir);
    // Out-of-band copies of outputs are a cache of the store: made again when needed.
    let _ = std::fs::remove_dir_all(&outputs);
    for dir in [&uploads, &outputs] {
        std::fs::create_dir_all(dir).map_err(|source| SupervisorError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let mut driver = Driver {
        sched,
        store,
        credentials: credentials.clone(),
        guard,
        conns: HashMap::new(),
        events,
        max_output_bytes: cfg.max_output_bytes,
        uploads,
        outputs,
        pending: Vec::new(),
        finished_now: Vec::new(),
        results: Vec::new(),
        out_of_band: HashMap::new(),
        stats: Stats::default(),
        refusals_logged: HashSet::new(),
        handed_back: HashMap::new(),
        started_ms: HashMap::new(),
        started_prune_at: STARTED_PRUNE_MIN,
        corked: HashMap::new(),
        speeds: Vec::new(),
    };
    driver.resume()?;
    driver.forget_stale_uploads();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Thread)?;
    let thread = std::thread::Builder::new()
        .name("idlegrid-driver".into())
        .spawn(move || runtime.block_on(driver.run(rx)))
        .map_err(SupervisorError::Thread)?;
    Ok((thread, credentials))
}

/// Where uploads arrive and where outputs for dependents are kept, in the data dir.
pub fn bulk_dirs(data_dir: &std::path::Path) -> (PathBuf, PathBuf) {
    (data_dir.join("uploads"), data_dir.join("outputs"))
}

impl Driver {
    /// Deletes uploads whose replica has ended: nobody will send their result any more.
    fn forget_stale_uploads(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.uploads) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(replica) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".part"))
                .and_then(ReplicaId::parse)
            else {
                continue;
            };
            let ended = match self.store.replica_info(replica) {
                Ok(Some(info)) => info.outcome.is_some_and(|o| o != "lost"),
                Ok(None) => true,
                Err(_) => false,
            };
            if ended {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Hands every unfinished stored job back to the scheduler.
    fn resume(&mut self) -> Result<(), SupervisorError> {
        let now = Instant::now();
        for stored in self.store.unfinished()? {
            let done = stored.done.len();
            match job::validate(stored.spec, runtime::is_known_kind) {
                Ok(job) => {
                    info!(
                        job = %stored.id,
                        done,
                        running = stored.running.len(),
                        "resuming job after restart"
                    );
                    self.sched.restore_job(
                        now,
                        stored.id,
                        job,
                        stored.done,
                        &stored.running,
                        stored.candidates,
                    );
                }
                Err(e) => {
                    // A job this build cannot run (say, a kind it no longer knows) fails alone.
                    error!(job = %stored.id, "cannot resume job: {e}");
                    let msg = format!("cannot resume after restart: {e}");
                    self.store
                        .finish_job(&stored.id, "failed", Some(&msg), unix_ms())?;
                }
            }
        }
        self.drain();
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<DriverMsg>) {
        loop {
            let deadline = self.sched.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut stopping = false;
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(DriverMsg::Shutdown) | None => stopping = true,
                    Some(msg) => {
                        self.handle(msg);
                        // What else has queued up meanwhile joins this turn (and its commit).
                        for _ in 1..MAX_TURN_MESSAGES {
                            match rx.try_recv() {
                                Ok(DriverMsg::Shutdown) => {
                                    stopping = true;
                                    break;
                                }
                                Ok(msg) => self.handle(msg),
                                Err(_) => break,
                            }
                        }
                    }
                },
                () = sleep => {}
            }
            // The turn's results are stored (and acted on) before any deadline is looked at.
            let now = Instant::now();
            self.flush_results(now);
            // Deadlines are checked on every turn, so a busy queue never hides a lost worker.
            if self.sched.poll_timeout().is_some_and(|t| t <= now) {
                // Judged by what the connections heard, which may be ahead of this queue.
                for id in self.sched.due_workers(now) {
                    if let Some(c) = self.conns.get(&id) {
                        self.sched.handle_heard(c.heard.at(), &id);
                    }
                }
                self.sched.handle_timeout(now);
            }
            self.drain();
            if stopping {
                break;
            }
        }
        self.uncork();
        for (_, conn) in self.conns.drain() {
            let _ = conn.tx.send(Outgoing::Close {
                code: ErrorCode::Protocol,
                message: "supervisor shutting down".into(),
            });
        }
        info!("driver stopped");
    }

    fn handle(&mut self, msg: DriverMsg) {
        let now = Instant::now();
        // Results wait for the turn's group commit only behind heartbeats and other results:
        // anything else (a closed connection, a job's status, a cancel) sees them stored first.
        let batchable = matches!(
            &msg,
            DriverMsg::Frame {
                msg: WorkerMsg::Result { .. } | WorkerMsg::Heartbeat { .. },
                ..
            }
        );
        if !batchable {
            self.flush_results(now);
        }
        match msg {
            DriverMsg::Joined {
                conn,
                hello,
                tx,
                heard,
            } => {
                let Hello {
                    worker,
                    name,
                    hardware,
                    held,
                    available,
                    auth,
                } = hello;
                if let Err(why) = self.authorize(&worker, &auth) {
                    warn!(%worker, %name, "refused worker connection: {why}");
                    *self.stats.refused.entry("credentials").or_default() += 1;
                    let _ = tx.send(Outgoing::Close {
                        code: ErrorCode::Unauthorized,
                        message: why,
                    });
                    return;
                }
                // Two workers of one volunteer never sit in one quorum.
                self.sched
                    .set_owner(&worker, auth.volunteer().map(str::to_owned));
                if let Some(old) = self.conns.insert(
                    worker.clone(),
                    Conn {
                        id: conn,
                        name: name.clone(),
                        slots: hardware.slots as usize,
                        tx,
                        heard,
                        auth,
                    },
                ) {
                    self.uncork();
                    let _ = old.tx.send(Outgoing::Close {
                        code: ErrorCode::Protocol,
                        message: "replaced by a newer connection of the same worker".into(),
                    });
                }
                info!(%worker, %name, slots = hardware.slots, cores = hardware.cores, mops = hardware.bench_mops, available, "worker joined");
                let _ = self.events.send(Event::WorkerJoined {
                    worker: worker.clone(),
                    name: name.clone(),
                });
                // Its measured speeds come back under its stable id before it is placed on.
                self.restore_history(&worker);
                self.restore_reputation(&worker);
                self.sched
                    .handle_worker_joined(now, worker, name, hardware, &held, available);
            }
            DriverMsg::Frame {
                conn,
                worker,
                at,
                msg,
                upload,
            } => {
                if matches!(msg, WorkerMsg::Heartbeat { .. }) {
                    self.stats
                        .heartbeat_lateness
                        .record(now.saturating_duration_since(at));
                }
                if self.conns.get(&worker).is_some_and(|c| c.id == conn) {
                    self.handle_frame(now, at, &worker, msg, upload);
                } else if let Some(upload) = upload {
                    // From a connection that no longer counts: the worker sends it again.
                    debug!(%worker, "result from a replaced connection ignored: {}", upload.path.display());
                }
            }
            DriverMsg::Link {
                conn,
                worker,
                measurement: m,
            } => {
                if self.conns.get(&worker).is_some_and(|c| c.id == conn) {
                    let _ = self.events.send(Event::LinkMeasured {
                        worker: worker.clone(),
                        link: m.link,
                        rtt: m.rtt,
                        cut_short: m.cut_short,
                    });
                    self.sched.handle_link(now, &worker, m.link);
                }
            }
            DriverMsg::Refused { worker, kind, what } => self.refused(&worker, kind, &what),
            DriverMsg::Serving => self.sched.begin_restart_grace(now),
            DriverMsg::Closed { conn, worker } => {
                if self.conns.get(&worker).is_some_and(|c| c.id == conn) {
                    self.conns.remove(&worker);
                    self.sched.handle_worker_left(now, &worker);
                }
            }
            DriverMsg::Api(req) => self.handle_api(now, req),
            DriverMsg::Shutdown => {}
        }
    }

    /// A cancelled replica's execution, for its cost: recorded once, if the replica was this
    /// worker's and was cancelled, capped at what the supervisor observed.
    fn stopped(&mut self, worker: &WorkerId, replica: ReplicaId, execution: Execution) {
        let stored = self.store.replica_info(replica);
        let ours = matches!(&stored, Ok(Some(info)) if &info.worker == worker
            && info.outcome.as_deref() == Some("cancelled"));
        if !ours {
            self.refused(
                worker,
                "stopped",
                &format!("a stop report for replica {replica}, not a cancelled replica of its own"),
            );
            return;
        }
        let exec = clamp(started(&stored), execution);
        self.pending.push(Record::Measured { replica, exec });
    }

    /// A worker hands back what it runs and goes: its tasks are reissued now (cause `left`) and
    /// each replica it names is charged what it says it used (capped at what was observed, as
    /// for a stop report). Replicas it holds but does not name end as lost, uncharged.
    fn leaving(&mut self, now: Instant, worker: &WorkerId, handed: &[proto::HandedBack]) {
        for h in handed {
            if self.sched.replica_holder(h.replica) != Some(worker) {
                self.refused(
                    worker,
                    "leaving",
                    &format!("handed back replica {} which it does not run", h.replica),
                );
                continue;
            }
            let started = self.take_started(h.replica);
            self.handed_back
                .insert(h.replica, clamp(started, h.execution));
        }
        let taken = self.sched.handle_worker_leaving(now, worker);
        info!(%worker, replicas = taken.len(), "worker left: its tasks are reissued");
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        arrived: Instant,
        worker: &WorkerId,
        msg: WorkerMsg,
        upload: Option<Upload>,
    ) {
        match msg {
            WorkerMsg::Hello { .. } => {
                self.close(
                    worker,
                    ErrorCode::Protocol,
                    "hello sent twice on one connection",
                );
                self.sched.handle_worker_left(now, worker);
            }
            WorkerMsg::Heartbeat { mut progress } => {
                self.sched.handle_heartbeat(now, worker, &[]);
                // A worker runs at most its slots: entries beyond them are refused unread, so
                // a heartbeat full of made-up replicas cannot make the driver look each up.
                let slots = self.conns.get(worker).map_or(0, |c| c.slots);
                let excess = progress.len().saturating_sub(slots);
                if excess > 0 {
                    progress.truncate(slots);
                    let what = format!(
                        "a heartbeat with {excess} progress entries beyond its {slots} slots"
                    );
                    self.refused_n(worker, "progress", excess as u64, &what);
                }
                for p in progress {
                    self.progress(now, worker, p);
                }
            }
            WorkerMsg::StatusAck { nonce } => {
                if !self.sched.handle_status_ack(now, worker, nonce) {
                    self.refused(
                        worker,
                        "status_ack",
                        &format!("nonce {nonce} was not asked for"),
                    );
                }
            }
            WorkerMsg::Progress(p) => {
                self.sched.handle_heartbeat(now, worker, &[]);
                self.progress(now, worker, p);
            }
            WorkerMsg::Result {
                replica,
                output: Payload::Inline(output),
                execution,
            } => self.result(now, arrived, worker, replica, output, execution, upload),
            WorkerMsg::Result {
                replica,
                output: Payload::Blob(_),
                ..
            } => {
                // The connection task resolves uploads; one it could not is sent again later.
                self.sched.handle_heartbeat(now, worker, &[]);
                warn!(%worker, %replica, "unresolved out-of-band result ignored");
            }
            WorkerMsg::Failure {
                replica,
                error,
                execution,
            } => self.failure(now, worker, replica, proto::cut_error(error), execution),
            WorkerMsg::Activity { kind, at_ms } => {
                info!(%worker, kind = kind.as_str(), "owner activity: worker paused");
                let _ = self.events.send(Event::Activity {
                    at: now,
                    worker: worker.clone(),
                    kind,
                    at_ms,
                });
                self.sched.handle_activity(now, worker, kind);
                // Reissues go out before the record is written (drain sends, then writes).
                self.pending.push(Record::Activity(ActivityRecord {
                    worker: worker.0.clone(),
                    worker_name: self
                        .conns
                        .get(worker)
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    kind: kind.as_str().to_owned(),
                    at_ms,
                    received_ms: unix_ms(),
                }));
            }
            WorkerMsg::Available { .. } => {
                info!(%worker, "worker idle again");
                self.sched.handle_available(now, worker);
            }
            // The connection task answers link probes itself; none reaches here.
            WorkerMsg::Stopped { replica, execution } => self.stopped(worker, replica, execution),
            WorkerMsg::Leaving { replicas } => self.leaving(now, worker, &replicas),
            WorkerMsg::LinkPong { .. }
            | WorkerMsg::LinkReceived { .. }
            | WorkerMsg::LinkSent { .. } => {}
        }
    }

    /// Hands the scheduler a joining worker's stored speeds. None stored: whatever the scheduler
    /// already has stands (it only has what it measured itself, which it also tried to store).
    fn restore_history(&mut self, worker: &WorkerId) {
        match self.store.speeds(worker) {
            Ok(speeds) if speeds.is_empty() => {}
            Ok(speeds) => {
                debug!(%worker, kinds = speeds.len(), "measured history restored");
                self.sched.restore_history(worker, speeds);
            }
            Err(e) => {
                self.stats.history_not_loaded += 1;
                warn!(%worker, "cannot read its measured history; it starts from its benchmark: {e}");
            }
        }
    }

    /// Hands the scheduler a joining worker's stored record against quorums, so that a flagged
    /// worker stays flagged across reconnects and restarts. Unreadable: what the scheduler has
    /// stands (quorums still outvote a liar; it only may get quorum tasks again).
    fn restore_reputation(&mut self, worker: &WorkerId) {
        match self.store.reputation(worker) {
            Ok(r) => self.sched.restore_reputation(worker, r),
            Err(e) => warn!(%worker, "cannot read its record against quorums: {e}"),
        }
    }

    fn progress(&mut self, now: Instant, worker: &WorkerId, p: proto::Progress) {
        if self.sched.replica_holder(p.replica) == Some(worker) {
            self.sched.handle_progress(now, worker, p);
        } else if !self.was_assigned_to(worker, p.replica) {
            // A replica this worker never ran. (Progress of one it ran but no longer runs,
            // crossing a cancel on the wire, is harmless and ignored.)
            self.refused(
                worker,
                "progress",
                &format!("progress for {} which it does not run", p.replica),
            );
        }
    }

    /// Whether the store says this replica was ever assigned to this worker.
    fn was_assigned_to(&self, worker: &WorkerId, replica: ReplicaId) -> bool {
        matches!(self.store.replica_info(replica), Ok(Some(info)) if info.worker == *worker)
    }

    /// Counts a refused report and logs the first of its kind from each worker.
    fn refused(&mut self, worker: &WorkerId, kind: &'static str, what: &str) {
        self.refused_n(worker, kind, 1, what);
    }

    fn refused_n(&mut self, worker: &WorkerId, kind: &'static str, n: u64, what: &str) {
        *self.stats.refused.entry(kind).or_default() += n;
        if self.refusals_logged.insert((worker.clone(), kind)) {
            warn!(%worker, "refused a report: {what} (further refusals of this kind from this worker are counted, not logged)");
        }
    }

    /// Keeps when a replica was recorded as started, pruning the map of replicas the scheduler
    /// no longer holds when it has doubled.
    fn remember_started(&mut self, replica: ReplicaId, at_ms: u64) {
        self.started_ms.insert(replica, at_ms);
        if self.started_ms.len() >= self.started_prune_at {
            let sched = &self.sched;
            self.started_ms
                .retain(|r, _| sched.replica_holder(*r).is_some());
            self.started_prune_at = (2 * self.started_ms.len()).max(STARTED_PRUNE_MIN);
        }
    }

    /// When a replica was recorded as started, taken out of the map (read from the store for
    /// one this run did not start).
    fn take_started(&mut self, replica: ReplicaId) -> Option<u64> {
        self.started_ms
            .remove(&replica)
            .or_else(|| started(&self.store.replica_info(replica)))
    }

    fn ack(&mut self, worker: &WorkerId, replica: ReplicaId) {
        self.send(worker, &SupervisorMsg::ResultAck { replica });
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &mut self,
        now: Instant,
        arrived: Instant,
        worker: &WorkerId,
        replica: ReplicaId,
        output: serde_json::Value,
        execution: Execution,
        upload: Option<Upload>,
    ) {
        // Any frame is a sign of life.
        self.sched.handle_heartbeat(now, worker, &[]);
        let Some((job, task)) = self.sched.result_target(worker, replica) else {
            self.outcome_not_running(worker, replica, execution, Reported::Result);
            if let Some(upload) = upload {
                upload.discard();
            }
            return;
        };
        let execution = clamp(self.take_started(replica), execution);
        // An upload's text as it came (it was checked against its digest); else the output's.
        let (text, upload) = match upload {
            Some(Upload { path, blob, text }) => (text, Some((path, blob))),
            None => (output.to_string(), None),
        };
        if text.len() as u64 > self.max_output_bytes {
            let error = format!(
                "output of {} bytes exceeds this pool's limit of {} bytes",
                text.len(),
                self.max_output_bytes
            );
            if let Some((path, _)) = upload {
                let _ = std::fs::remove_file(path);
            }
            self.guard.refuse(
                &worker.0,
                Cause::OutputTooLarge,
                &format!("replica {replica}: {error}"),
            );
            self.replica_failed(now, worker, replica, error, execution);
            return;
        }
        // A second result for the same task in one turn is judged after the first is in.
        if self.results.iter().any(|p| p.job == job && p.task == task) {
            self.flush_results(now);
        }
        self.results.push(PendingResult {
            worker: worker.clone(),
            replica,
            job,
            task,
            text,
            output,
            execution,
            upload,
            received_ms: unix_ms(),
            arrived,
        });
    }

    /// Stores the turn's results in one transaction, then marks their tasks done and
    /// acknowledges them. Durable first: once the scheduler marks a task done, a crash must not
    /// lose its result; and the worker forgets it only once it is stored. If the transaction
    /// fails, none is stored and every one of their tasks is reissued.
    fn flush_results(&mut self, now: Instant) {
        if self.results.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.results);
        // A quorum task's output is a candidate: what it adds up to is judged now, so that the
        // candidate and what its verdict decides are stored in the same transaction.
        let judged: Vec<Option<(String, Verdict, Option<String>)>> = batch
            .iter()
            .map(|p| {
                let verdict = self.sched.judge(&p.worker, p.replica, &p.output)?;
                // The agreed output's text: this result's own, or an earlier candidate's.
                let agreed_text = match &verdict {
                    Verdict::Agreed { output, agreed, .. } if agreed[0].0 != p.replica => {
                        Some(output.to_string())
                    }
                    _ => None,
                };
                Some((quorum::digest(&p.output), verdict, agreed_text))
            })
            .collect();
        let rows: Vec<ResultRow<'_>> = batch
            .iter()
            .zip(&judged)
            .map(|(p, j)| ResultRow {
                replica: p.replica,
                job: &p.job,
                task: &p.task,
                output: &p.text,
                exec: p.execution,
                now_ms: p.received_ms,
                quorum: j.as_ref().map(|(digest, verdict, text)| QuorumRow {
                    worker: &p.worker,
                    digest,
                    agreement: match verdict {
                        Verdict::Agreed {
                            agreed, dissent, ..
                        } => Some(Agreement {
                            output: text.as_deref().unwrap_or(&p.text),
                            agreed,
                            dissent,
                        }),
                        _ => None,
                    },
                }),
            })
            .collect();
        let commit = Instant::now();
        let stored = self.store.record_results(&rows);
        self.stats.store_commit.record(commit.elapsed());
        drop(rows);
        match stored {
            Ok(()) => {
                let acked = Instant::now();
                for (p, judged) in batch.into_iter().zip(judged) {
                    if let Some((_, verdict, agreed_text)) = judged {
                        let arrived = p.arrived;
                        self.candidate_stored(now, p, verdict, agreed_text);
                        self.stats
                            .result_latency
                            .record(acked.saturating_duration_since(arrived));
                        continue;
                    }
                    // A large output stays in its file: the scheduler keeps only the reference.
                    let output = match self.keep_for_dependents(&p.job, &p.task, &p.text, p.upload)
                    {
                        Some(blob) => Payload::Blob(blob),
                        None => Payload::Inline(p.output),
                    };
                    self.sched.handle_result(
                        now,
                        &p.worker,
                        p.replica,
                        output,
                        Duration::from_millis(p.execution.wall_ms),
                    );
                    self.ack(&p.worker, p.replica);
                    self.stats
                        .result_latency
                        .record(acked.saturating_duration_since(p.arrived));
                }
            }
            Err(e) => {
                for p in batch {
                    error!(job = %p.job, task = %p.task, replica = %p.replica, "cannot store result; its task is reissued: {e}");
                    self.stats.not_stored += 1;
                    if let Some((path, _)) = p.upload {
                        let _ = std::fs::remove_file(path);
                    }
                    self.sched
                        .handle_not_stored(now, &p.worker, p.replica, e.to_string());
                }
            }
        }
    }

    /// A quorum task's output was stored as a candidate (with what its verdict decided): the
    /// scheduler reaches the same verdict, and the worker forgets the output. An agreed output
    /// large enough to travel out of band is kept as a file for the task's dependents.
    /// `agreed_text` is the agreed output's text when an earlier candidate gave it (else it is
    /// this result's).
    fn candidate_stored(
        &mut self,
        now: Instant,
        p: PendingResult,
        verdict: Verdict,
        agreed_text: Option<String>,
    ) {
        let gave_output =
            matches!(&verdict, Verdict::Agreed { agreed, .. } if agreed[0].0 == p.replica);
        let upload = match p.upload {
            Some(upload) if gave_output => Some(upload),
            Some((path, _)) => {
                let _ = std::fs::remove_file(path);
                None
            }
            None => None,
        };
        match (&verdict, agreed_text) {
            (Verdict::Agreed { .. }, text) => {
                let text = text.as_deref().unwrap_or(&p.text);
                self.keep_for_dependents(&p.job, &p.task, text, upload);
            }
            (Verdict::Hopeless { error }, _) => {
                warn!(job = %p.job, task = %p.task, "no quorum: {error}");
            }
            _ => {
                debug!(job = %p.job, task = %p.task, worker = %p.worker, "candidate output stored")
            }
        }
        self.sched.handle_candidate(
            now,
            &p.worker,
            p.replica,
            p.output,
            Duration::from_millis(p.execution.wall_ms),
        );
        self.ack(&p.worker, p.replica);
    }

    fn failure(
        &mut self,
        now: Instant,
        worker: &WorkerId,
        replica: ReplicaId,
        error: String,
        execution: Execution,
    ) {
        self.sched.handle_heartbeat(now, worker, &[]);
        if self.sched.result_target(worker, replica).is_none() {
            self.outcome_not_running(worker, replica, execution, Reported::Failure(error));
            return;
        }
        let execution = clamp(self.take_started(replica), execution);
        self.replica_failed(now, worker, replica, error, execution);
    }

    /// A replica running on this worker failed: recorded, counted by the scheduler, acknowledged.
    fn replica_failed(
        &mut self,
        now: Instant,
        worker: &WorkerId,
        replica: ReplicaId,
        error: String,
        execution: Execution,
    ) {
        warn!(%worker, %replica, "replica failed: {error}");
        self.pending.push(Record::Ended {
            replica,
            end: ReplicaEnd::Failed,
            exec: Some(execution),
            error: Some(error.clone()),
            at_ms: unix_ms(),
        });
        self.sched.handle_failure(now, worker, replica, error);
        self.ack(worker, replica);
    }

    /// An outcome for a replica the scheduler does not count as running on this worker: a
    /// repeat of one already stored, a late one (its task is done, or it was cancelled), or one
    /// this worker never ran. The first two are recorded (if not yet) and acknowledged so the
    /// worker forgets them; the last is refused and acknowledged all the same (nothing the
    /// worker can do with it). `stored` is the store's record of the replica.
    fn outcome_not_running(
        &mut self,
        worker: &WorkerId,
        replica: ReplicaId,
        exec: Execution,
        reported: Reported,
    ) {
        let stored = self.store.replica_info(replica);
        let exec = clamp(started(&stored), exec);
        let (kind, end, error) = match reported {
            Reported::Result => ("result", ReplicaEnd::Late, None),
            Reported::Failure(error) => ("failure", ReplicaEnd::Failed, Some(error)),
        };
        match stored {
            Ok(Some(info)) if info.worker == *worker => {
                debug!(%worker, %replica, "{kind} of a replica that no longer counts");
                if info.outcome.is_none() {
                    self.pending.push(Record::Ended {
                        replica,
                        end,
                        exec: Some(exec),
                        error,
                        at_ms: unix_ms(),
                    });
                } else if info.outcome.as_deref() == Some("cancelled") {
                    // It finished before the cancel reached it: what it used is still charged.
                    self.pending.push(Record::Measured { replica, exec });
                }
                self.ack(worker, replica);
            }
            Ok(_) => {
                self.refused(
                    worker,
                    kind,
                    &format!("{kind} for {replica} which it never ran"),
                );
                self.ack(worker, replica);
            }
            // Not acknowledged: the worker sends it again on its next connection.
            Err(e) => error!(%worker, %replica, "cannot look up a replica: {e}"),
        }
    }

    /// After a result is stored: a large output is kept as a file for the workers that need it
    /// as a dependency (the upload itself, when it came that way).
    fn keep_for_dependents(
        &mut self,
        job: &JobId,
        task: &TaskId,
        text: &str,
        upload: Option<(PathBuf, BlobRef)>,
    ) -> Option<BlobRef> {
        if text.len() <= proto::BULK_THRESHOLD_BYTES {
            if let Some((path, _)) = upload {
                let _ = std::fs::remove_file(path);
            }
            return None;
        }
        let dest = output_path(&self.outputs, job, task);
        let blob = match upload {
            Some((path, blob)) if std::fs::rename(&path, &dest).is_ok() => Some(blob),
            _ => write_output_file(&dest, text),
        };
        // Without a file (a write error) the output goes inline, if it fits.
        self.remember_out_of_band(job, task, &blob);
        blob
    }

    fn remember_out_of_band(&mut self, job: &JobId, task: &TaskId, blob: &Option<BlobRef>) {
        self.out_of_band
            .entry(job.clone())
            .or_default()
            .insert(task.clone(), blob.clone());
    }

    /// The out-of-band reference for a dependency output, making its file if needed; `None`
    /// when it goes inline.
    fn dep_ref(
        &mut self,
        job: &JobId,
        task: &TaskId,
        value: &serde_json::Value,
    ) -> Option<BlobRef> {
        if let Some(known) = self.out_of_band.get(job).and_then(|t| t.get(task)) {
            return known.clone();
        }
        let text = value.to_string();
        let blob = if text.len() > proto::BULK_THRESHOLD_BYTES {
            write_output_file(&output_path(&self.outputs, job, task), &text)
        } else {
            None
        };
        self.remember_out_of_band(job, task, &blob);
        blob
    }

    fn handle_api(&mut self, now: Instant, req: ApiRequest) {
        match req {
            ApiRequest::Submit {
                job,
                spec_json,
                reply,
            } => {
                let _ = reply.send(self.submit(now, *job, &spec_json));
            }
            ApiRequest::Status { job, reply } => {
                let _ = reply.send(self.status(&job));
            }
            ApiRequest::Metrics { reply } => {
                let _ = reply.send(self.metrics());
            }
            ApiRequest::Summary { job, reply } => {
                let _ = reply.send(self.summary(&job));
            }
            ApiRequest::Report { job, reply } => {
                let _ = reply.send(self.report(&job));
            }
            ApiRequest::Results { job, task, reply } => {
                let _ = reply.send(self.results(&job, task));
            }
            ApiRequest::Cancel { job, reply } => {
                let r = if self.sched.cancel_job(now, &job) {
                    self.drain();
                    self.summary(&job)
                } else {
                    match self.summary(&job) {
                        Ok(_) => Err(ApiError::Finished(job)),
                        Err(e) => Err(e),
                    }
                };
                let _ = reply.send(r);
            }
            ApiRequest::IssueToken { name, reply } => {
                let _ = reply.send(self.issue_token(&name));
            }
            ApiRequest::RevokeToken { name, reply } => {
                let r = self.revoke_token(now, &name);
                self.drain();
                let _ = reply.send(r);
            }
            ApiRequest::Tokens { reply } => {
                let _ = reply.send(self.tokens());
            }
            ApiRequest::Jobs { reply } => {
                let _ = reply.send(self.store.list_jobs(1000).map_err(Into::into));
            }
            ApiRequest::Activity { worker, reply } => {
                let _ = reply.send(
                    self.store
                        .activity(worker.as_deref(), 1000)
                        .map_err(Into::into),
                );
            }
            ApiRequest::MayUpload {
                worker,
                replica,
                reply,
            } => {
                let _ = reply.send(self.sched.result_target(&worker, replica).is_some());
            }
            ApiRequest::Stats { reply } => {
                let _ = reply.send(self.stats.clone());
            }
            ApiRequest::Workers { reply } => {
                let _ = reply.send(self.workers(now));
            }
            ApiRequest::Overview {
                jobs,
                activity,
                reply,
            } => {
                let _ = reply.send(self.overview(now, jobs, activity));
            }
        }
    }

    fn workers(&self, now: Instant) -> Vec<WorkerStatus> {
        self.sched
            .workers()
            .into_iter()
            .map(|w| {
                let tasks = w
                    .replicas
                    .iter()
                    .filter_map(|r| self.sched.replica_task(*r))
                    .map(|(job, task)| format!("{job}/{task}"))
                    .collect();
                let heard_ms_ago = self
                    .conns
                    .get(&w.id)
                    .map(|c| now.saturating_duration_since(c.heard.at()).as_millis() as u64);
                let (reputation, flagged) = self.sched.reputation(&w.id);
                WorkerStatus {
                    agreed: reputation.agreed,
                    disagreed: reputation.disagreed,
                    flagged,
                    activity: match w.state {
                        crate::sched::WorkerState::Busy(kind) => Some(kind.as_str()),
                        _ => None,
                    },
                    tasks,
                    heard_ms_ago,
                    worker: w.id.0,
                    name: w.name,
                    state: w.state.as_str(),
                    hardware: w.hardware,
                    replicas: w.replicas.len(),
                    bench_speed: w.bench_speed,
                    history: w.history,
                    speed: w.speed,
                    link: w.link,
                    class: w.class,
                    held_back: w.held_back,
                }
            })
            .collect()
    }

    fn overview(&self, now: Instant, jobs: usize, activity: usize) -> Result<Overview, ApiError> {
        let jobs = self
            .store
            .list_jobs(jobs)?
            .into_iter()
            .map(|summary| {
                let (cost, reissued) = self.store.job_totals(&JobId(summary.job_id.clone()))?;
                Ok(JobLine {
                    summary,
                    cost,
                    reissued,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Overview {
            workers: self.workers(now),
            jobs,
            activity: self.store.activity(None, activity)?,
            now_ms: unix_ms(),
        })
    }

    /// The Prometheus exposition: `/api/stats`'s counters, workers by state, and the latency
    /// histograms.
    fn metrics(&self) -> String {
        use super::metrics::Exposition;
        let mut e = Exposition::default();
        let mut states: BTreeMap<&str, u64> = BTreeMap::new();
        let mut flagged = 0;
        for w in self.sched.workers() {
            *states.entry(w.state.as_str()).or_default() += 1;
            flagged += u64::from(self.sched.reputation(&w.id).1);
        }
        e.by_label(
            "idlegrid_workers",
            "gauge",
            "Workers the scheduler knows, by state.",
            "state",
            &["live", "busy", "waiting", "reconnecting", "lost"],
            &states,
        );
        let [waiting, ready, running, done] = self.sched.task_counts();
        let tasks = BTreeMap::from([
            ("waiting", waiting),
            ("ready", ready),
            ("running", running),
            ("done", done),
        ]);
        e.by_label(
            "idlegrid_tasks",
            "gauge",
            "Tasks of the unfinished jobs, by state (waiting for dependencies, ready, running, done).",
            "state",
            &["waiting", "ready", "running", "done"],
            &tasks,
        );
        e.single(
            "idlegrid_tasks_done_total",
            "counter",
            "Tasks whose result was stored.",
            self.stats.tasks_done as f64,
        );
        e.single(
            "idlegrid_jobs_running",
            "gauge",
            "Jobs not finished yet.",
            self.sched.running_jobs() as f64,
        );
        e.by_label(
            "idlegrid_jobs_finished_total",
            "counter",
            "Jobs finished, by state.",
            "state",
            &["completed", "failed", "cancelled"],
            &self.stats.jobs_finished,
        );
        e.histogram_coarse(
            "idlegrid_job_makespan_seconds",
            "Finished jobs from submission to end (their report's makespan).",
            &self.stats.makespans,
        );
        e.single(
            "idlegrid_cost_total",
            "counter",
            "Credits charged to finished jobs: CPU seconds times the rate of each worker's class (the sum of their reports' cost).",
            self.stats.cost,
        );
        let verdicts = BTreeMap::from([
            ("agreed", self.stats.outputs_agreed),
            ("rejected", self.stats.outputs_rejected),
        ]);
        e.by_label(
            "idlegrid_quorum_outputs_total",
            "counter",
            "Outputs of quorum tasks judged, by verdict: agreed with the task's quorum, or rejected.",
            "verdict",
            &["agreed", "rejected"],
            &verdicts,
        );
        e.single(
            "idlegrid_workers_flagged",
            "gauge",
            "Workers the scheduler knows that disagreed with quorums often enough to get no quorum tasks.",
            flagged as f64,
        );
        e.single(
            "idlegrid_connections",
            "gauge",
            "Worker connections open.",
            self.conns.len() as f64,
        );
        let s = &self.stats;
        e.single(
            "idlegrid_workers_lost_total",
            "counter",
            "Workers declared lost (silent, disconnected, not back after a restart).",
            s.workers_lost as f64,
        );
        e.by_label(
            "idlegrid_replicas_started_total",
            "counter",
            "Replicas started, by why.",
            "reason",
            &super::report::ASSIGN_REASONS,
            &s.replicas_started,
        );
        e.by_label(
            "idlegrid_reissues_total",
            "counter",
            "Replicas started because their task lost its last live one, by cause.",
            "cause",
            &super::report::REISSUE_CAUSES,
            &s.reissues,
        );
        e.by_label(
            "idlegrid_reports_refused_total",
            "counter",
            "Worker reports refused: the replica or nonce was not that worker's.",
            "kind",
            &[],
            &s.refused,
        );
        let refusals: BTreeMap<&str, u64> = self.guard.counts().into_iter().collect();
        e.by_label(
            "idlegrid_refusals_total",
            "counter",
            "Connections and messages refused by the abuse limits, by cause: too many connections from one address without a hello, no hello in time, messages over the rate limit, outputs over the size limit.",
            "cause",
            &[],
            &refusals,
        );
        e.single(
            "idlegrid_results_not_stored_total",
            "counter",
            "Results the store could not commit (their tasks were reissued).",
            s.not_stored as f64,
        );
        e.single(
            "idlegrid_assignments_undeliverable_total",
            "counter",
            "Assignments too large to send.",
            s.undeliverable as f64,
        );
        e.single(
            "idlegrid_history_not_stored_total",
            "counter",
            "Measured speeds the store could not keep.",
            s.history_not_stored as f64,
        );
        e.histogram_seconds(
            "idlegrid_heartbeat_lateness_seconds",
            "Heartbeats from their arrival at the connection to the driver handling them.",
            &s.heartbeat_lateness,
        );
        e.histogram_seconds(
            "idlegrid_result_latency_seconds",
            "Results from their arrival at the connection to their acknowledgement (stored).",
            &s.result_latency,
        );
        e.histogram_seconds(
            "idlegrid_reissue_latency_seconds",
            "Reissues from the event that left their task without a live replica (a loss, a failure, the owner's return) to the new replica's assignment.",
            &s.reissue_latency,
        );
        e.histogram_seconds(
            "idlegrid_store_commit_seconds",
            "Store commits of a driver turn (its results; its other records).",
            &s.store_commit,
        );
        e.into_text()
    }

    fn submit(&mut self, now: Instant, job: job::Job, spec_json: &str) -> Result<JobId, ApiError> {
        let id = self
            .store
            .insert_job_json(job.name(), job.tasks().len(), spec_json, unix_ms())?;
        info!(job = %id, name = job.name(), tasks = job.tasks().len(), "job accepted");
        self.sched.submit_job(now, id.clone(), job);
        let _ = self.events.send(Event::JobSubmitted { job: id.clone() });
        Ok(id)
    }

    /// The job report, with what the job's plan adds: the critical tasks and why, and the tasks
    /// a job that completed early did not need. The plan is a pure function of the job and this
    /// supervisor's parameters, so it is the same after the job finished as while it ran.
    fn report(&self, job: &JobId) -> Result<Report, ApiError> {
        let report = self
            .store
            .report(job, unix_ms())?
            .ok_or_else(|| ApiError::NoJob(job.clone()))?;
        let Some(job_def) = self.stored_job(job)? else {
            return Ok(report);
        };
        let plan = self.plan(&job_def);
        let done = self.store.done_tasks(job)?;
        let mut report = report.with_plan(&job_def, &plan, &done);
        if let Some(v) = &mut report.validation {
            let distrust_after = self.sched.config().distrust_after;
            for w in &mut v.rejected_workers {
                let r = self.store.reputation(&WorkerId(w.worker.clone()))?;
                w.agreed_total = r.agreed;
                w.disagreed_total = r.disagreed;
                w.flagged = r.flagged(distrust_after);
            }
        }
        Ok(report)
    }

    /// A stored job, validated again; `None` if this build can no longer run it (its report and
    /// status then go without a plan).
    fn stored_job(&self, job: &JobId) -> Result<Option<job::Job>, ApiError> {
        let Some(spec) = self.store.spec(job)? else {
            return Ok(None);
        };
        Ok(job::validate(spec, runtime::is_known_kind).ok())
    }

    fn plan(&self, job: &job::Job) -> criticality::Plan {
        let cfg = self.sched.config();
        criticality::plan(job, cfg.critical_replicas, cfg.redundancy_budget)
    }

    fn summary(&self, job: &JobId) -> Result<JobSummary, ApiError> {
        self.store
            .summary(job)?
            .ok_or_else(|| ApiError::NoJob(job.clone()))
    }

    fn status(&self, job: &JobId) -> Result<JobStatus, ApiError> {
        let summary = self.summary(job)?;
        let task_states = match self.sched.job_view(job) {
            Some(view) => view
                .tasks
                .into_iter()
                .map(|t| TaskStatus {
                    id: t.id.0,
                    state: t.phase.as_str(),
                    deps: t.deps.into_iter().map(|d| d.0).collect(),
                    critical: t.critical,
                    critical_reasons: t.critical_reasons,
                    planned_replicas: t.planned_replicas,
                    failures: t.failures,
                    replicas: t
                        .replicas
                        .into_iter()
                        .map(|r| ReplicaStatus {
                            replica: r.replica.to_string(),
                            worker: r.worker.0,
                            worker_state: r.worker_state.as_str(),
                            progress: r.progress,
                        })
                        .collect(),
                })
                .collect(),
            None => {
                // A finished job: its tasks as stored, with the plan it ran under.
                let done = self.store.done_tasks(job)?;
                let Some(job_def) = self.stored_job(job)? else {
                    return Ok(JobStatus {
                        summary,
                        task_states: Vec::new(),
                    });
                };
                let plan = self.plan(&job_def);
                job_def
                    .tasks()
                    .iter()
                    .zip(plan.tasks)
                    .map(|(t, p)| TaskStatus {
                        state: if done.contains(&t.id) {
                            "done"
                        } else {
                            "not_done"
                        },
                        id: t.id.0.clone(),
                        deps: t.deps.iter().map(|d| d.0.clone()).collect(),
                        critical: p.critical(),
                        critical_reasons: p.reasons.iter().map(ToString::to_string).collect(),
                        planned_replicas: p.replicas,
                        failures: 0,
                        replicas: Vec::new(),
                    })
                    .collect()
            }
        };
        Ok(JobStatus {
            summary,
            task_states,
        })
    }

    fn results(&self, job: &JobId, task: Option<TaskId>) -> Result<serde_json::Value, ApiError> {
        self.summary(job)?;
        match task {
            None => {
                let all: BTreeMap<String, serde_json::Value> = self
                    .store
                    .results(job)?
                    .into_iter()
                    .map(|(k, v)| (k.0, v))
                    .collect();
                Ok(serde_json::to_value(all).unwrap_or_default())
            }
            Some(task) => self.store.result(job, &task)?.ok_or(ApiError::NoResult {
                job: job.clone(),
                task,
            }),
        }
    }

    /// Carries out everything the scheduler decided: frames first, then the records of it all
    /// in one transaction, so that no store write delays an Assign.
    fn drain(&mut self) {
        while let Some(out) = self.sched.poll_output() {
            self.carry_out(out);
        }
        // The turn's frames leave before its records are written: store latency never delays
        // an `Assign`, a `Cancel` or a reissue.
        self.uncork();
        let records = std::mem::take(&mut self.pending);
        let commit = Instant::now();
        log_store(self.store.write_batch(&records));
        if !records.is_empty() {
            self.stats.store_commit.record(commit.elapsed());
        }
        // Jobs that ended this turn, now that their last records are stored: their makespan
        // (as the report counts it) and cost (the same aggregate the dashboard's job list
        // uses, not a whole report) go into the metrics, once per job.
        for job in std::mem::take(&mut self.finished_now) {
            let totals = self.store.summary(&job).and_then(|s| {
                let (cost, _) = self.store.job_totals(&job)?;
                Ok(s.map(|s| (s, cost)))
            });
            match totals {
                Ok(Some((summary, cost))) => {
                    let end = summary.finished_ms.unwrap_or_else(unix_ms);
                    let makespan_ms = end.saturating_sub(summary.submitted_ms);
                    self.stats.makespans.record(makespan_ms as f64 / 1000.0);
                    self.stats.cost += cost;
                }
                Ok(None) => {}
                Err(e) => error!(%job, "cannot read the finished job's totals for /metrics: {e}"),
            }
        }
        let speeds = std::mem::take(&mut self.speeds);
        if let Err(e) = self.store.save_speeds(&speeds, unix_ms()) {
            self.stats.history_not_stored += speeds.len() as u64;
            error!(
                "cannot store {} measured speeds (kept in memory until a restart): {e}",
                speeds.len()
            );
        }
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::Welcome { worker, keep, drop } => {
                for r in &keep {
                    self.pending.push(Record::Reopened(*r));
                }
                let hb = self.sched.config().heartbeat.as_millis() as u64;
                self.send(
                    &worker,
                    &SupervisorMsg::Welcome {
                        protocol: proto::PROTOCOL_VERSION,
                        heartbeat_ms: hb,
                        keep,
                        drop,
                        max_output_bytes: self.max_output_bytes,
                    },
                );
            }
            Output::Assign {
                worker,
                mut assignment,
                reason,
                class,
                rate,
                waited,
            } => {
                if let Some(waited) = waited {
                    self.stats.reissue_latency.record(waited);
                }
                let job = assignment.job.clone();
                for (dep, payload) in &mut assignment.deps {
                    if let Payload::Inline(value) = payload
                        && let Some(blob) = self.dep_ref(&job, dep, value)
                    {
                        *payload = Payload::Blob(blob);
                    }
                }
                let frame = proto::encode(&SupervisorMsg::Assign(assignment.clone()));
                if frame.len() > proto::MAX_FRAME_BYTES {
                    let error = format!(
                        "its assignment is {} bytes, more than the frame limit of {} bytes",
                        frame.len(),
                        proto::MAX_FRAME_BYTES
                    );
                    warn!(job = %assignment.job, task = %assignment.task, "cannot assign: {error}");
                    self.stats.undeliverable += 1;
                    self.sched
                        .handle_undeliverable(Instant::now(), assignment.replica, error);
                    return;
                }
                self.send_frame(&worker, frame);
                let at = Instant::now();
                let (label, cause, detail) = match &reason {
                    AssignReason::Reissue(cause) => {
                        *self.stats.reissues.entry(cause.label()).or_default() += 1;
                        ("reissue", Some(cause.label()), Some(cause.to_string()))
                    }
                    other => (other.label(), None, None),
                };
                if let Some(d) = &detail {
                    info!(job = %assignment.job, task = %assignment.task, to = %worker, "reissued: {d}");
                }
                let _ = self.events.send(Event::Assigned {
                    at,
                    job: assignment.job.clone(),
                    task: assignment.task.clone(),
                    replica: assignment.replica,
                    worker: worker.clone(),
                    reason: label,
                    detail: detail.clone(),
                });
                *self.stats.replicas_started.entry(label).or_default() += 1;
                let worker_name = self
                    .conns
                    .get(&worker)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let at_ms = unix_ms();
                self.remember_started(assignment.replica, at_ms);
                self.pending.push(Record::Started(ReplicaStart {
                    replica: assignment.replica,
                    job: assignment.job,
                    task: assignment.task,
                    worker,
                    worker_name,
                    rate,
                    class,
                    reason: label,
                    cause,
                    detail,
                    at_ms,
                }));
            }
            Output::Cancel {
                worker,
                replica,
                reason,
            } => {
                self.send(&worker, &SupervisorMsg::Cancel { replica, reason });
                self.started_ms.remove(&replica);
                self.pending.push(Record::Ended {
                    replica,
                    end: ReplicaEnd::Cancelled,
                    exec: None,
                    error: None,
                    at_ms: unix_ms(),
                });
            }
            Output::Speed { worker, speed } => self.speeds.push((worker, speed)),
            Output::Validated {
                job,
                task,
                agreed,
                dissent,
            } => {
                self.stats.outputs_agreed += agreed.len() as u64;
                self.stats.outputs_rejected += dissent.len() as u64;
                if dissent.is_empty() {
                    debug!(%job, %task, "quorum of {} agreed", agreed.len());
                } else {
                    let who: Vec<String> = dissent.iter().map(|w| w.0.clone()).collect();
                    warn!(%job, %task, "quorum of {} agreed; output rejected from {}", agreed.len(), who.join(", "));
                }
            }
            Output::WorkerFlagged {
                worker,
                agreed,
                disagreed,
            } => {
                self.stats.workers_flagged += 1;
                warn!(%worker, agreed, disagreed, "worker flagged: it disagreed with {disagreed} quorums and gets no quorum tasks");
            }
            Output::StatusRequest { worker, nonce } => {
                self.send(&worker, &SupervisorMsg::StatusRequest { nonce });
            }
            Output::WorkerLost {
                worker,
                cause,
                replicas,
            } => {
                warn!(%worker, "worker lost: {cause}");
                self.stats.workers_lost += 1;
                let at_ms = unix_ms();
                for replica in &replicas {
                    self.started_ms.remove(replica);
                }
                self.pending
                    .extend(replicas.into_iter().map(|replica| Record::Ended {
                        replica,
                        end: ReplicaEnd::Lost,
                        exec: self.handed_back.remove(&replica),
                        error: None,
                        at_ms,
                    }));
                // A silent worker's connection may still be open: close it, so the worker (if it
                // wakes up) reconnects and says what it still holds. Unless it has already come
                // back: a hello read in the same turn as the old connection's end is a new
                // connection, and closing it would lose the worker a second time.
                if !self.sched.is_connected(&worker) {
                    self.close(
                        &worker,
                        ErrorCode::Protocol,
                        &format!("worker declared lost: {cause}"),
                    );
                }
                let _ = self.events.send(Event::WorkerLost {
                    worker,
                    cause: cause.to_string(),
                });
            }
            Output::TaskDone {
                job, task, worker, ..
            } => {
                debug!(%job, %task, %worker, "task done");
                self.stats.tasks_done += 1;
                let _ = self.events.send(Event::TaskDone { job, task, worker });
            }
            Output::JobFinished { job, outcome } => {
                let (state, error) = match &outcome {
                    JobOutcome::Completed => ("completed", None),
                    JobOutcome::Failed { error, .. } => ("failed", Some(error.clone())),
                    JobOutcome::Cancelled => ("cancelled", None),
                };
                info!(%job, state, "job finished{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default());
                *self.stats.jobs_finished.entry(state).or_default() += 1;
                self.finished_now.push(job.clone());
                self.pending.push(Record::JobFinished {
                    job: job.clone(),
                    state,
                    error,
                    at_ms: unix_ms(),
                });
                // Its outputs are no one's dependencies any more.
                for (task, blob) in self.out_of_band.remove(&job).unwrap_or_default() {
                    if blob.is_some() {
                        let _ = std::fs::remove_file(output_path(&self.outputs, &job, &task));
                    }
                }
                let _ = self.events.send(Event::JobFinished { job, state });
            }
        }
    }

    fn send(&mut self, worker: &WorkerId, msg: &SupervisorMsg) {
        self.send_frame(worker, proto::encode(msg));
    }

    /// Queues a frame for the worker's connection until the end of the turn.
    fn send_frame(&mut self, worker: &WorkerId, frame: String) {
        let Some(conn) = self.conns.get(worker) else {
            return;
        };
        self.corked
            .entry(conn.id)
            .or_insert_with(|| (conn.tx.clone(), Vec::new()))
            .1
            .push(frame);
    }

    /// Hands the turn's frames to their connections' writers, each connection's as one batch.
    fn uncork(&mut self) {
        for (_, (tx, mut frames)) in self.corked.drain() {
            let out = match frames.len() {
                1 => Outgoing::Frame(frames.pop().unwrap_or_default()),
                _ => Outgoing::Frames(frames),
            };
            let _ = tx.send(out);
        }
    }

    /// Whether a worker that said hello with `auth` may be `worker`; binds the id to a
    /// volunteer's token on its first use (stored first: a binding the store cannot keep
    /// refuses the join rather than be forgotten at the next restart).
    fn authorize(&mut self, worker: &WorkerId, auth: &Auth) -> Result<(), String> {
        // The token may have been revoked since the connection task checked it.
        if let Some(name) = auth.volunteer()
            && !self.credentials.is_valid(name)
        {
            return Err(volunteers::Refused::Revoked(name.to_owned()).to_string());
        }
        let binds = self
            .credentials
            .may_use(auth, worker)
            .map_err(|e| e.to_string())?;
        if let (true, Some(name)) = (binds, auth.volunteer()) {
            self.store
                .bind_worker(worker, name, unix_ms())
                .map_err(|e| format!("the supervisor cannot store this worker's binding: {e}"))?;
            self.credentials.bind(worker, name);
            info!(%worker, volunteer = name, "worker id bound to its volunteer's token");
        }
        Ok(())
    }

    /// `token issue --name N`: a new random token for `name`, stored as its digest; the token
    /// itself is in the answer only.
    fn issue_token(&mut self, name: &str) -> Result<IssuedToken, ApiError> {
        if !volunteers::valid_name(name) {
            return Err(ApiError::BadName(name.to_owned()));
        }
        let token =
            super::auth::generate_token().map_err(|e| ApiError::NoRandomness(e.to_string()))?;
        let digest = volunteers::digest(&token);
        let record = self.store.issue_token(name, &digest, unix_ms())?;
        self.credentials.issue(name, &digest);
        info!(volunteer = name, "worker token issued");
        Ok(IssuedToken {
            name: record.name,
            token,
            created_ms: record.created_ms,
        })
    }

    /// `token revoke N`: the token stops working, each worker connected with it is
    /// disconnected at once and its tasks reissued (cause `left`: it will not be back).
    fn revoke_token(&mut self, now: Instant, name: &str) -> Result<Revoked, ApiError> {
        let record = self
            .store
            .revoke_token(name, unix_ms())?
            .ok_or_else(|| ApiError::NoToken(name.to_owned()))?;
        self.credentials.revoke(name);
        let mut gone: Vec<WorkerId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.auth.volunteer() == Some(name))
            .map(|(w, _)| w.clone())
            .collect();
        gone.sort();
        let message = volunteers::Refused::Revoked(name.to_owned()).to_string();
        for worker in &gone {
            self.close(worker, ErrorCode::Unauthorized, &message);
            let taken = self.sched.handle_worker_leaving(now, worker);
            warn!(%worker, volunteer = name, replicas = taken.len(), "worker disconnected: its token was revoked; its tasks are reissued");
        }
        Ok(Revoked {
            name: record.name,
            revoked_ms: record.revoked_ms.unwrap_or_default(),
            disconnected: gone,
        })
    }

    /// `token list`: every volunteer token (never the token), its worker ids and how many are
    /// connected now.
    fn tokens(&self) -> Result<Vec<TokenView>, ApiError> {
        Ok(self
            .store
            .volunteer_tokens()?
            .into_iter()
            .map(|t| {
                let workers = self.credentials.workers_of(&t.name);
                let connected = self
                    .conns
                    .values()
                    .filter(|c| c.auth.volunteer() == Some(t.name.as_str()))
                    .count();
                TokenView {
                    token: t,
                    workers,
                    connected,
                }
            })
            .collect())
    }

    fn close(&mut self, worker: &WorkerId, code: ErrorCode, message: &str) {
        // What was sent before the close goes first.
        self.uncork();
        if let Some(conn) = self.conns.remove(worker) {
            let _ = conn.tx.send(Outgoing::Close {
                code,
                message: message.to_owned(),
            });
        }
    }
}

/// What a worker reported about a replica that is not running there.
enum Reported {
    Result,
    Failure(String),
}

/// When the store says a replica started, if it knows.
fn started(stored: &Result<Option<ReplicaInfo>, StoreError>) -> Option<u64> {
    match stored {
        Ok(Some(info)) => Some(info.started_ms),
        _ => None,
    }
}

/// Caps a reported execution at what the supervisor saw of the replica: the time since it
/// recorded the replica as started (nothing, when it has no such record). No replica computes
/// longer than it has been assigned, nor uses more CPU time than that on its one thread.
fn clamp(started_ms: Option<u64>, exec: Execution) -> Execution {
    let observed = started_ms.map_or(0, |s| unix_ms().saturating_sub(s));
    Execution {
        wall_ms: exec.wall_ms.min(observed),
        cpu_ms: exec.cpu_ms.min(observed),
    }
}

/// Writes an output's JSON text where dependents fetch it; its reference, or `None` (logged)
/// when the file cannot be written.
fn write_output_file(path: &std::path::Path, text: &str) -> Option<BlobRef> {
    match std::fs::write(path, text) {
        Ok(()) => Some(BlobRef {
            bytes: text.len() as u64,
            sha256: proto::sha256_hex(text.as_bytes()),
        }),
        Err(e) => {
            error!("cannot write {}: {e}", path.display());
            None
        }
    }
}

/// Store writes outside the acknowledgement path are logged, not fatal: the scheduler's state is
/// still right, and the next write may succeed.
fn log_store(r: Result<(), StoreError>) {
    if let Err(e) = r {
        error!("store write failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Hardware;

    fn joined(conn: ConnId) -> (DriverMsg, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            worker: WorkerId::from("w1"),
            name: "w1".into(),
            hardware: Hardware {
                cores: 1,
                memory_mb: 1,
                disk_mb: 1,
                os: "test".into(),
                slots: 1,
                bench_mops: 0.0,
            },
            held: vec![],
            available: true,
            auth: Auth::Shared,
        };
        let msg = DriverMsg::Joined {
            conn,
            hello,
            tx,
            heard: Arc::new(Heard::new()),
        };
        (msg, rx)
    }

    /// A worker whose connection drops and whose reconnect is read in the same driver turn (as
    /// when a client reconnects at once) keeps its new connection: the loss of the old one
    /// closes nothing of the new one.
    #[test]
    fn a_reconnect_read_in_the_same_turn_as_the_old_connections_end_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_tokens_in(dir.path(), crate::sched::Config::default()).unwrap();
        cfg.link_probe = None;
        let (tx, rx) = mpsc::channel(16);
        let (events, _) = broadcast::channel(16);
        let (first, _old) = joined(1);
        let (second, mut new) = joined(2);
        // Queued before the driver starts, so that one turn reads all three.
        tx.try_send(first).unwrap();
        tx.try_send(DriverMsg::Closed {
            conn: 1,
            worker: WorkerId::from("w1"),
        })
        .unwrap();
        tx.try_send(second).unwrap();
        let guard = Guard::new(cfg.limits);
        let (driver, _) = spawn(&cfg, rx, events, guard).unwrap();
        // The new connection is welcomed; nothing tells it to close (before the shutdown).
        let start = Instant::now();
        let mut welcomed = None;
        while welcomed.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(300)) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the reconnected worker was never welcomed"
            );
            match new.try_recv() {
                Ok(Outgoing::Frame(f)) if f.contains("\"welcome\"") => {
                    welcomed.get_or_insert_with(Instant::now);
                }
                Ok(Outgoing::Frames(fs)) if fs.iter().any(|f| f.contains("\"welcome\"")) => {
                    welcomed.get_or_insert_with(Instant::now);
                }
                Ok(Outgoing::Frame(_) | Outgoing::Frames(_)) => {}
                Ok(Outgoing::Close { message, .. }) => {
                    panic!("the reconnected worker's connection was closed: {message}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        tx.try_send(DriverMsg::Shutdown).unwrap();
        driver.join().unwrap();
    }
}
