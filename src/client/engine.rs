//! The worker's engine: one connection to the supervisor at a time, heartbeats, the life of each
//! assigned replica (fetch its inputs, start, progress, report, cancel), and obedience to the
//! idle policy.
//!
//! Replicas outlive connections: when the connection drops, tasks keep computing and outcomes
//! wait in the outbox (in memory and in the data dir) until the supervisor acknowledges them
//! with `ResultAck`; the engine reconnects with backoff, says in its hello what it still holds,
//! obeys the supervisor's keep/drop answer and sends every unacknowledged outcome again. A
//! refusal (token, protocol version) is not the end either: the engine keeps trying, more
//! slowly, and says why in its `Status`.
//!
//! Each connection is split in two: a writer task fed by channels (heartbeats, `Activity` and
//! other small messages on an urgent one that always goes first; outcomes on another) and the
//! reader, which is this loop. Big payloads never travel on the WebSocket: results above
//! `BULK_THRESHOLD_BYTES` are uploaded over HTTP by a task of their own and then reported by
//! reference, and dependency outputs sent by reference are downloaded before the replica is
//! queued (see `transfer`).
//!
//! The supervisor measures the link now and then: the engine answers its ping at once, counts
//! (and digests) the payload it sends down, and has the writer send the payload it asks for up,
//! a frame at a time between urgent messages, stopping at the leg's time limit. Frames beyond
//! what was announced end the connection, as any bad frame does.
//!
//! The owner comes first: an observation from an activity source reaches the engine on a
//! channel, the idle policy turns it into a transition, and on `BecameBusy` every running
//! replica is paused and `Activity` is sent in the same turn of the loop, not with the next
//! heartbeat. On `BecameIdle`, paused replicas resume where they stopped and `Available` is sent.
//!
//! Front ends (window, tray, screensaver) get an [`EngineHandle`]: a watch of [`Snapshot`] and a
//! sender of [`UiCommand`]s. A snapshot is published when something a volunteer sees changes,
//! at once; what moves by itself (running tasks' progress and elapsed time, the last activity
//! seen) is published at most once a second, and only while it moves, so an idle client with
//! its window closed publishes nothing. `idle_in` is as of `Snapshot::taken`: a front end
//! counts down itself.
//!
//! Settings change without a restart: the idle policy takes its new config at once; a new
//! `cpus` grows or shrinks the task threads and a new server or token reconnects, each with a
//! new hello, since the hello is where a worker says what it offers (slots) and who it is. The
//! supervisor sees that as any reconnect: the replicas held are kept. Quitting hands running
//! replicas back (`WorkerMsg::Leaving`, with what each used) so the supervisor reissues them at
//! once; outcomes not acknowledged stay in the outbox for the next run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::activity::{Monitor, Signal};
use super::contribution::{self, Tally};
use super::executor::{Executor, Finished, Sink};
use super::idle::{Busy, IdlePolicy, IdleState, Transition};
use super::outbox::{Outcome, OutcomeKind, Store};
use super::settings::{self, Settings};
use super::snapshot::{
    CapacityView, Connection, EngineHandle, Event, EventView, FieldError, MAX_EVENTS, MAX_TILES,
    SettingsResult, Snapshot, TaskState, TaskView, TileImage, UiCommand,
};
use super::transfer::Transfer;
use super::{ClientConfig, ClientError, Watch};
use crate::proto::{
    self, Assignment, ErrorCode, Execution, HandedBack, Hardware, Payload, Progress, ReplicaId,
    SupervisorMsg, WorkerMsg,
};
use crate::runtime::TaskControl;
use crate::tls::ClientTls;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF_MS: u64 = 5_000;
const MAX_BACKOFF: Duration = Duration::from_millis(MAX_BACKOFF_MS);
/// After a refusal the supervisor is asked again, but more slowly.
const FIRST_REFUSED_BACKOFF: Duration = Duration::from_secs(5);
const MAX_REFUSED_BACKOFF_MS: u64 = 60_000;
const MAX_REFUSED_BACKOFF: Duration = Duration::from_millis(MAX_REFUSED_BACKOFF_MS);

/// The longest a worker that lost its connection (not one that was refused) waits before it
/// tries again: the maximum backoff plus its jitter (+25%). A supervisor that restarts can
/// expect its workers back within this.
pub const MAX_RECONNECT_WAIT: Duration = Duration::from_millis(MAX_BACKOFF_MS * 5 / 4);
/// The longest a refused worker (token, protocol version) waits before it asks again.
pub const MAX_REFUSED_WAIT: Duration = Duration::from_millis(MAX_REFUSED_BACKOFF_MS * 5 / 4);

/// How often the battery is looked at.
const POWER_CHECK: Duration = Duration::from_secs(10);
/// How long a stopping worker gives its writer to send what is queued and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a leaving worker waits for its cancelled tasks to say what they used (they stop
/// within milliseconds at their next checkpoint).
const HAND_BACK_WAIT: Duration = Duration::from_millis(300);
/// What moves by itself (progress, elapsed time) is published at most this often.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Name of the token file a first-run configuration writes beside the settings file.
pub const TOKEN_FILE_NAME: &str = "worker.token";

/// How a session with the supervisor ended.
enum SessionEnd {
    /// The connection is gone; try again.
    Disconnected(String),
    /// The supervisor refused this worker (token, protocol version); try again, slowly.
    Refused(String),
    /// This worker does not trust the supervisor's certificate; try again, slowly (the
    /// operator or the volunteer must act).
    Untrusted(String),
    /// The settings changed what the hello says (slots, server, token): connect again now.
    Reconnect,
    Shutdown,
}

/// What a command asks of the connection loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reconnect,
    Quit,
}

/// Settings that were checked and written, to apply.
struct Saved {
    settings: Settings,
    /// The token read from the new token file (or given at configuration), if any.
    token: Option<String>,
    /// What the new settings' `ca_file` makes this worker trust, when it was read.
    tls: Option<ClientTls>,
}

/// Something the loop waited for besides the connection.
enum Wake {
    Shutdown,
    Observation(Signal),
    IdleTimer,
    Power,
    Finished(Finished),
    /// A replica's dependency outputs were downloaded (the assignment, now all inline), or not.
    Fetched(ReplicaId, Result<Assignment, String>),
    /// A big result's upload ended.
    Uploaded(ReplicaId, Result<(), String>),
    Command(UiCommand),
    SnoozeOver,
    /// Time to publish what moved by itself.
    Publish,
    /// Settings were written (or refused) off the async threads.
    Saved(Result<Saved, Vec<FieldError>>),
}

/// Timers the loop waits on besides the connection's.
#[derive(Clone, Copy)]
struct Timers {
    idle: Option<Instant>,
    snooze: Option<Instant>,
    publish: Option<Instant>,
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The channels and timers the engine waits on, apart from the connection. A struct of its own
/// so that waiting on it borrows nothing else of the engine.
struct Inbox {
    finished: mpsc::UnboundedReceiver<Finished>,
    observations: mpsc::UnboundedReceiver<Signal>,
    transfers: mpsc::UnboundedReceiver<Wake>,
    commands: mpsc::UnboundedReceiver<UiCommand>,
    watch_power: bool,
    power: tokio::time::Interval,
}

impl Inbox {
    /// Waits for shutdown, an observation, the end of the quiet period (`idle_deadline`), a
    /// power check, a finished replica or a finished transfer.
    async fn next(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        timers: Timers,
    ) -> Wake {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => Wake::Shutdown,
            Some(obs) = self.observations.recv() => Wake::Observation(obs),
            Some(cmd) = self.commands.recv() => Wake::Command(cmd),
            () = sleep_until(timers.idle) => Wake::IdleTimer,
            () = sleep_until(timers.snooze) => Wake::SnoozeOver,
            () = sleep_until(timers.publish) => Wake::Publish,
            Some(done) = self.finished.recv() => Wake::Finished(done),
            Some(wake) = self.transfers.recv() => wake,
            _ = self.power.tick(), if self.watch_power => Wake::Power,
        }
    }
}

/// The current connection's sending side.
struct Link {
    /// Heartbeats, `Activity`, `Available`, `StatusAck`, link probe answers: the writer sends
    /// these first.
    urgent: mpsc::UnboundedSender<Message>,
    /// Outcomes.
    bulk: mpsc::UnboundedSender<Message>,
    /// Link probe payload to send up: last, a frame at a time.
    probe_up: mpsc::UnboundedSender<UpLeg>,
    /// Uploads started on this connection; stopped with it (the next one resumes them).
    uploads: HashMap<ReplicaId, JoinHandle<()>>,
    /// The link probe payload coming down, if any.
    down: Option<DownLeg>,
    /// Payload bytes of a down leg whose time limit passed that may still arrive.
    late_bytes: u64,
}

/// Link probe payload the supervisor is sending.
struct DownLeg {
    nonce: u64,
    bytes: u64,
    digest: proto::LinkDigest,
    /// When what arrived is reported, complete or not.
    deadline: Instant,
}

/// Link probe payload the supervisor asked for.
struct UpLeg {
    nonce: u64,
    bytes: u64,
    deadline: Instant,
}

impl Drop for Link {
    fn drop(&mut self) {
        for (_, u) in self.uploads.drain() {
            u.abort();
        }
    }
}

/// What a welcome said.
struct Welcome {
    heartbeat_ms: u64,
    keep: Vec<ReplicaId>,
    drop: Vec<ReplicaId>,
    max_output_bytes: u64,
}

pub struct Engine {
    cfg: ClientConfig,
    hardware: Hardware,
    executor: Executor,
    inbox: Inbox,
    running: HashMap<ReplicaId, Arc<TaskControl>>,
    /// Replicas whose dependency outputs are being downloaded; queued once they are here.
    fetching: HashMap<ReplicaId, JoinHandle<()>>,
    /// Finished replicas whose outcome the supervisor has not acknowledged yet.
    outbox: BTreeMap<ReplicaId, Outcome>,
    store: Store,
    transfer: Transfer,
    transfers: mpsc::UnboundedSender<Wake>,
    /// What this worker trusts for `wss://` and `https://`.
    tls: ClientTls,
    /// The pool's output limit, from the latest welcome; the task threads read it.
    max_output_bytes: Arc<AtomicU64>,
    link: Option<Link>,
    idle: IdlePolicy,
    /// Keeps the source threads alive for the life of the engine.
    _monitor: Option<Monitor>,
    /// Told whether a task computes, so that input is polled at full rate only then.
    pace: super::activity::Pace,
    /// What front ends see, as the engine keeps it; published to `snapshots` on change.
    view: Snapshot,
    snapshots: watch::Sender<Snapshot>,
    last_published: Instant,
    /// When the screensaver feed was last written, and whether a write is under way.
    last_feed: Instant,
    feed_writing: Arc<std::sync::atomic::AtomicBool>,
    commands: mpsc::UnboundedSender<UiCommand>,
    /// What each held replica is (for the task list and the tiles).
    assigned: HashMap<ReplicaId, Arc<Assignment>>,
    /// When a snooze ends.
    snooze_until: Option<Instant>,
    /// What this machine has given, and its last writer's turn (writes happen off the async
    /// threads; an older one never overwrites a newer).
    tally: Tally,
    tally_turn: Arc<std::sync::Mutex<u64>>,
    tally_next: u64,
    tiles: VecDeque<Arc<TileImage>>,
    action: Option<Action>,
}

impl Engine {
    /// Starts the task threads and the activity sources, and loads the outbox kept in the data
    /// dir by an earlier run (its outcomes are held and sent on the first connection).
    pub fn new(cfg: ClientConfig, hardware: Hardware, watch: Watch) -> Result<Self, ClientError> {
        let store = match &cfg.data_dir {
            Some(d) => Store::on_disk(d.outbox()).map_err(|e| ClientError::DataDir {
                dir: d.path().to_owned(),
                reason: format!("cannot create its outbox: {e}"),
            })?,
            None => Store::in_memory(),
        };
        let outbox = store.load();
        if !outbox.is_empty() {
            info!(
                outcomes = outbox.len(),
                "unacknowledged outcomes from an earlier run: sending them again"
            );
        }
        let max_output_bytes = Arc::new(AtomicU64::new(proto::DEFAULT_MAX_OUTPUT_BYTES));
        let (tx, finished_rx) = mpsc::unbounded_channel();
        let sink = Sink {
            finished: tx,
            store: store.clone(),
            max_output_bytes: max_output_bytes.clone(),
        };
        let executor = Executor::new(cfg.slots as usize, sink).map_err(ClientError::Threads)?;
        let now = Instant::now();
        let (obs_tx, observations) = mpsc::unbounded_channel();
        let (transfers, transfers_rx) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let tally = match &cfg.data_dir {
            Some(d) => contribution::load(d.path()),
            None => Tally::default(),
        };
        let settings = Settings {
            server: cfg.server.clone(),
            cpus: Some(cfg.slots),
            ..Settings::default()
        };
        let mut status = Snapshot {
            taken: now,
            supervisor: cfg.server.clone(),
            worker_id: Some(cfg.worker_id.clone()),
            name: cfg.name.clone(),
            connection: if cfg.server.is_some() {
                Connection::Connecting
            } else {
                Connection::NotConfigured
            },
            idle: IdleState::Busy(Busy::Starting),
            idle_in: None,
            detail: Default::default(),
            tasks: Vec::new(),
            outbox: outbox.len(),
            contribution: tally.view(SystemTime::now()),
            capacity: CapacityView {
                cores: hardware.cores,
                slots: cfg.slots,
                memory_mb: hardware.memory_mb,
                disk_mb: hardware.disk_mb,
                bench_mops: hardware.bench_mops,
            },
            events: Vec::new(),
            sources: Vec::new(),
            source_problems: Vec::new(),
            last_activity: None,
            paused_at: None,
            settings: Arc::new(settings),
            settings_path: None,
            settings_result: None,
            tiles: Vec::new(),
        };
        let monitor = if watch.sources.is_empty() {
            None
        } else {
            let (monitor, report) = Monitor::start(watch.sources, obs_tx);
            for name in &report.running {
                info!("watching for the owner: {name}");
            }
            for (name, err) in &report.failed {
                // Said once, here and in the status: the worker carries on with what it has.
                warn!("cannot watch {name}: {err}; carrying on without it");
                status.source_problems.push(format!("{name}: {err}"));
            }
            status.sources = report.running;
            Some(monitor)
        };
        let mut idle = IdlePolicy::new(watch.idle, now);
        if watch.power {
            idle.handle_power(now, super::activity::battery::on_battery());
        }
        status.idle = idle.state();
        let mut power = tokio::time::interval(POWER_CHECK);
        power.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tls = ClientTls::new(cfg.ca_file.as_deref())?;
        let transfer = Transfer::new(
            cfg.server.as_deref().unwrap_or_default(),
            cfg.token.clone(),
            cfg.worker_id.clone(),
            &tls,
        )
        .map_err(ClientError::Http)?;
        Ok(Self {
            cfg,
            hardware,
            executor,
            inbox: Inbox {
                finished: finished_rx,
                observations,
                transfers: transfers_rx,
                commands: commands_rx,
                watch_power: watch.power,
                power,
            },
            running: HashMap::new(),
            fetching: HashMap::new(),
            outbox,
            store,
            transfer,
            transfers,
            tls,
            max_output_bytes,
            link: None,
            idle,
            _monitor: monitor,
            pace: watch.pace,
            snapshots: watch::Sender::new(status.clone()),
            view: status,
            last_published: now,
            last_feed: now.checked_sub(PUBLISH_EVERY).unwrap_or(now),
            feed_writing: Arc::default(),
            commands,
            assigned: HashMap::new(),
            snooze_until: None,
            tally,
            tally_turn: Arc::new(std::sync::Mutex::new(0)),
            tally_next: 0,
            tiles: VecDeque::new(),
            action: None,
        })
    }

    /// The settings this engine runs with and the file they live in: shown in snapshots,
    /// checked, written and applied by [`UiCommand::ApplySettings`] and
    /// [`UiCommand::Configure`]. Without a file those two are refused.
    pub fn with_settings(mut self, settings: Settings, path: Option<PathBuf>) -> Self {
        self.executor.follow_settings(&settings);
        self.view.settings = Arc::new(settings);
        self.view.settings_path = path;
        self.snapshots.send_replace(self.view.clone());
        self
    }

    /// A front end's end of the engine: snapshots as they change, and a sender of commands.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            snapshots: self.snapshots.subscribe(),
            commands: self.commands.clone(),
        }
    }

    /// Serves the supervisor until `shutdown` resolves or a front end sends
    /// [`UiCommand::Quit`]; either way running replicas are handed back first. Lost connections
    /// and refusals are retried (a refusal more slowly); each new reason is logged once and
    /// shown in the snapshot. Without a server it waits for [`UiCommand::Configure`].
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
        tokio::pin!(shutdown);
        let mut backoff = FIRST_BACKOFF;
        let mut refused_backoff = FIRST_REFUSED_BACKOFF;
        let mut last_logged: Option<String> = None;
        let mut attempt = self.connect_after(Duration::ZERO);
        loop {
            // While not connected, the owner still comes first.
            self.publish();
            let timers = self.timers();
            let connected = tokio::select! {
                c = &mut attempt => c,
                wake = self.inbox.next(&mut shutdown, timers) => {
                    if matches!(wake, Wake::Shutdown) {
                        break;
                    }
                    // Nobody to tell: outcomes wait in the outbox, and the hello carries
                    // whether the machine is idle.
                    self.on_wake(wake);
                    match self.action.take() {
                        Some(Action::Quit) => break,
                        Some(Action::Reconnect) => {
                            backoff = FIRST_BACKOFF;
                            refused_backoff = FIRST_REFUSED_BACKOFF;
                            attempt = self.connect_after(Duration::ZERO);
                        }
                        None => {}
                    }
                    continue;
                }
            };
            let end = match connected {
                Ok(ws) => {
                    let (end, welcomed) = self.session(ws, &mut shutdown).await;
                    if welcomed {
                        backoff = FIRST_BACKOFF;
                        refused_backoff = FIRST_REFUSED_BACKOFF;
                        last_logged = None;
                    }
                    end
                }
                Err(end) => end,
            };
            let (why, wait, refused) = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Reconnect => {
                    self.set_connection(Connection::Connecting);
                    attempt = self.connect_after(Duration::ZERO);
                    continue;
                }
                SessionEnd::Refused(why) => {
                    let wait = jitter(refused_backoff);
                    refused_backoff = (refused_backoff * 2).min(MAX_REFUSED_BACKOFF);
                    (
                        format!("the supervisor refused this worker: {why}"),
                        wait,
                        true,
                    )
                }
                SessionEnd::Untrusted(why) => {
                    let wait = jitter(refused_backoff);
                    refused_backoff = (refused_backoff * 2).min(MAX_REFUSED_BACKOFF);
                    (
                        format!(
                            "cannot connect to {}: {why}",
                            self.cfg.server.as_deref().unwrap_or("the supervisor")
                        ),
                        wait,
                        true,
                    )
                }
                SessionEnd::Disconnected(why) => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    (
                        format!(
                            "disconnected from {}: {why}",
                            self.cfg.server.as_deref().unwrap_or("the supervisor")
                        ),
                        wait,
                        false,
                    )
                }
            };
            if last_logged.as_deref() != Some(why.as_str()) {
                warn!("{why}; retrying in {} ms", wait.as_millis());
                self.push_event(if refused {
                    Event::Refused(why.clone())
                } else {
                    Event::Disconnected(why.clone())
                });
            } else {
                debug!("{why}; retrying in {} ms", wait.as_millis());
            }
            self.set_connection(if refused {
                Connection::Refused {
                    why: why.clone(),
                    retry_in: wait,
                }
            } else {
                Connection::Disconnected {
                    why: why.clone(),
                    retry_in: wait,
                }
            });
            last_logged = Some(why);
            attempt = self.connect_after(wait);
        }
        // Not connected (or the session already handed its replicas back): nobody to tell.
        self.cancel_all();
        self.publish();
        info!("worker stopped");
        Ok(())
    }

    /// The next connection attempt, after `wait`; one that never ends while no server is set.
    fn connect_after(
        &self,
        wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Ws, SessionEnd>> + Send>> {
        match &self.cfg.server {
            Some(server) => Box::pin(connect(server.clone(), self.tls.clone(), wait)),
            None => Box::pin(std::future::pending()),
        }
    }

    fn timers(&self) -> Timers {
        let moving = self
            .running
            .values()
            .any(|c| !c.is_paused() && !c.is_cancelled());
        Timers {
            idle: self.idle.poll_timeout(),
            snooze: self.snooze_until,
            publish: moving.then_some(self.last_published + PUBLISH_EVERY),
        }
    }

    fn set_connection(&mut self, c: Connection) {
        self.view.connection = c;
    }

    fn push_event(&mut self, what: Event) {
        let events = &mut self.view.events;
        events.push(EventView {
            at: SystemTime::now(),
            what,
        });
        if events.len() > MAX_EVENTS {
            let extra = events.len() - MAX_EVENTS;
            events.drain(..extra);
        }
    }

    /// Brings the view up to date and publishes it if a volunteer would see a difference:
    /// at once for a change of state, at most once a second for what moves by itself.
    fn publish(&mut self) {
        let now = Instant::now();
        self.refresh_view(now);
        let due = now >= self.last_published + PUBLISH_EVERY;
        let view = &self.view;
        let published = self.snapshots.send_if_modified(|s| {
            let (old, new) = (steady(s, view.taken), steady(view, view.taken));
            let moved = old != new || {
                let mut a = s.clone();
                a.taken = view.taken;
                a.idle_in = view.idle_in;
                a != *view
            };
            if old != new || (moved && due) {
                *s = view.clone();
                s.taken = now;
                true
            } else {
                false
            }
        });
        // A due turn that found nothing to publish counts as one too, so the once-a-second
        // timer never fires again at once.
        if published || due {
            self.last_published = now;
        }
        if published {
            self.publish_feed(now);
        }
    }

    /// Writes what a screensaver in another process (the xscreensaver hack) shows into the
    /// data dir: at most once a second, off the async threads, one write at a time.
    fn publish_feed(&mut self, now: Instant) {
        let Some(d) = &self.cfg.data_dir else {
            return;
        };
        if now < self.last_feed + PUBLISH_EVERY || self.feed_writing.load(Ordering::Acquire) {
            return;
        }
        self.last_feed = now;
        self.feed_writing.store(true, Ordering::Release);
        let (dir, snap, busy) = (
            d.path().to_owned(),
            self.view.clone(),
            self.feed_writing.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = super::saverfeed::publish(&dir, &snap) {
                debug!(
                    "cannot write the screensaver feed in {}: {e}",
                    dir.display()
                );
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Derived parts of the view: idle state, tasks, counts, contribution, tiles.
    fn refresh_view(&mut self, now: Instant) {
        self.pace
            .set_urgent(self.running.values().any(|ctl| !ctl.is_paused()));
        let v = &mut self.view;
        v.supervisor = self.cfg.server.clone();
        v.idle = self.idle.state();
        v.idle_in = self
            .idle
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now));
        v.outbox = self.outbox.len();
        v.capacity.slots = self.cfg.slots;
        let mut tasks: Vec<TaskView> = Vec::new();
        let view = |r: &ReplicaId, state: TaskState, progress: f32, elapsed: Duration| {
            let a = self.assigned.get(r)?;
            let remaining = (state != TaskState::Reporting && progress >= 0.02)
                .then(|| elapsed.mul_f64(f64::from((1.0 - progress) / progress)));
            Some(TaskView {
                replica: *r,
                job: a.job.clone(),
                task: a.task.clone(),
                kind: a.kind.clone(),
                state,
                progress,
                elapsed,
                remaining,
            })
        };
        for (r, ctl) in &self.running {
            let state = if ctl.is_paused() {
                TaskState::Paused
            } else {
                TaskState::Running
            };
            tasks.extend(view(r, state, ctl.progress(), ctl.busy_time()));
        }
        for r in self.fetching.keys() {
            tasks.extend(view(r, TaskState::Fetching, 0.0, Duration::ZERO));
        }
        for (r, o) in &self.outbox {
            let elapsed = Duration::from_millis(o.execution.wall_ms);
            tasks.extend(view(r, TaskState::Reporting, 1.0, elapsed));
        }
        tasks.sort_by_key(|t| t.replica);
        v.tasks = tasks;
        let today = self.tally.view(SystemTime::now());
        if v.contribution != today {
            v.contribution = today;
        }
        if v.tiles.len() != self.tiles.len()
            || v.tiles.last().map(Arc::as_ptr) != self.tiles.back().map(Arc::as_ptr)
        {
            v.tiles = self.tiles.iter().cloned().collect();
        }
    }

    /// Applies a wake-up to the policy, the tasks and the outbox, and tells the supervisor what
    /// it must hear now (if connected).
    fn on_wake(&mut self, wake: Wake) {
        let now = Instant::now();
        let (transition, at) = match wake {
            Wake::Shutdown | Wake::Publish => return,
            Wake::Finished(done) => return self.on_finished(done),
            Wake::Fetched(replica, fetched) => return self.on_fetched(replica, fetched),
            Wake::Uploaded(replica, uploaded) => return self.on_uploaded(replica, uploaded),
            Wake::Command(cmd) => return self.on_command(cmd),
            Wake::Saved(saved) => return self.on_saved(saved),
            Wake::SnoozeOver => return self.end_snooze(),
            Wake::Observation(Signal::Activity(obs)) => {
                self.view.last_activity = Some(obs);
                (self.idle.handle_activity(now, obs.kind), obs.at)
            }
            Wake::Observation(Signal::Condition(c)) => {
                c.apply_to(&mut self.view.detail);
                (self.idle.set_condition(now, c.reason, c.on), c.at)
            }
            Wake::IdleTimer => (self.idle.handle_timeout(now), now),
            Wake::Power => {
                let on_battery = super::activity::battery::on_battery();
                (self.idle.handle_power(now, on_battery), now)
            }
        };
        self.on_transition(transition, at);
    }

    /// Pauses or resumes the tasks and tells the supervisor, for a transition of the policy.
    fn on_transition(&mut self, transition: Option<Transition>, at: Instant) {
        let Some(transition) = transition else {
            return;
        };
        let msg = match transition {
            Transition::BecameBusy(why) => {
                for ctl in self.running.values() {
                    ctl.pause();
                }
                self.view.paused_at = Some(Instant::now());
                self.push_event(Event::Paused(why));
                // The policy starts busy rather than becoming so; the hello said it.
                let Some(kind) = why.activity_kind() else {
                    return;
                };
                info!(
                    kind = kind.as_str(),
                    tasks = self.running.len(),
                    "owner active: tasks paused"
                );
                WorkerMsg::Activity {
                    kind,
                    at_ms: unix_ms_at(at),
                }
            }
            Transition::BecameIdle => {
                for ctl in self.running.values() {
                    ctl.resume();
                }
                self.push_event(Event::Resumed);
                info!(tasks = self.running.len(), "machine idle: computing");
                WorkerMsg::Available {
                    at_ms: unix_ms_at(Instant::now()),
                }
            }
        };
        self.send_urgent(&msg);
    }

    fn on_command(&mut self, cmd: UiCommand) {
        let now = Instant::now();
        match cmd {
            UiCommand::SnoozeUntil(until) => {
                let left = until
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                self.snooze_until = Some(now + left);
                self.view.detail.snoozed_until = Some(until);
                self.push_event(Event::Snoozed { until });
                let t = self.idle.set_condition(now, Busy::Snoozed, true);
                self.on_transition(t, now);
            }
            UiCommand::Resume => self.end_snooze(),
            UiCommand::OwnerReturned(kind) => {
                let obs = super::activity::Observation { kind, at: now };
                self.on_wake(Wake::Observation(Signal::Activity(obs)));
            }
            UiCommand::Quit => self.action = Some(Action::Quit),
            UiCommand::ApplySettings(new) => self.apply_settings(*new),
            UiCommand::Configure { server, token } => self.configure(server, token),
        }
    }

    fn end_snooze(&mut self) {
        let now = Instant::now();
        self.snooze_until = None;
        self.view.detail.snoozed_until = None;
        let t = self.idle.set_condition(now, Busy::Snoozed, false);
        self.on_transition(t, now);
    }

    fn refuse(&mut self, errors: Vec<FieldError>) {
        self.view.settings_result = Some(SettingsResult::Refused(errors));
    }

    /// Checks what the engine must of new settings, then writes them (and reads a new token
    /// file) off the async threads; [`Self::on_saved`] applies them.
    fn apply_settings(&mut self, new: Settings) {
        let mut errors = Vec::new();
        if let Some(server) = &new.server
            && let Err(e) = super::check_server_url(server)
        {
            errors.push(field(Some("server"), e.to_string()));
        }
        let Some(path) = self.view.settings_path.clone() else {
            errors.push(field(
                None,
                "this client runs without a settings file (start it with --config FILE)".into(),
            ));
            return self.refuse(errors);
        };
        if !errors.is_empty() {
            return self.refuse(errors);
        }
        self.view.settings_result = Some(SettingsResult::Checking);
        let done = self.transfers.clone();
        tokio::task::spawn_blocking(move || {
            let saved = (|| {
                let token = match &new.token_file {
                    Some(f) => Some(
                        crate::supervisor::read_token(f)
                            .map_err(|e| vec![field(Some("token_file"), e.to_string())])?,
                    ),
                    None => None,
                };
                let tls = ClientTls::new(new.ca_file.as_deref())
                    .map_err(|e| vec![field(Some(settings::CA_FILE), e.to_string())])?;
                settings::save(&path, &new).map_err(|e| {
                    vec![field(None, format!("cannot write {}: {e}", path.display()))]
                })?;
                Ok(Saved {
                    settings: new,
                    token,
                    tls: Some(tls),
                })
            })();
            let _ = done.send(Wake::Saved(saved));
        });
    }

    /// First run: a real hello to `server` with `token`; if welcomed, the token goes to a file
    /// beside the settings file (mode 0600), the settings name both, and the engine connects.
    fn configure(&mut self, server: String, token: String) {
        let token = token.trim().to_owned();
        if let Err(e) = super::check_server_url(&server) {
            return self.refuse(vec![field(Some("server"), e.to_string())]);
        }
        if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return self.refuse(vec![field(
                Some("token_file"),
                "a token is 1-256 printable characters without spaces".into(),
            )]);
        }
        let Some(path) = self.view.settings_path.clone() else {
            return self.refuse(vec![field(
                None,
                "this client runs without a settings file (start it with --config FILE)".into(),
            )]);
        };
        self.view.settings_result = Some(SettingsResult::Checking);
        let mut new = (*self.view.settings).clone();
        new.server = Some(server.clone());
        let hello = WorkerMsg::Hello {
            protocol: proto::PROTOCOL_VERSION,
            worker: self.cfg.worker_id.clone(),
            name: self.cfg.name.clone(),
            token: token.clone(),
            hardware: self.hardware.clone(),
            held: Vec::new(),
            available: false,
        };
        let done = self.transfers.clone();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let saved = match check_hello(&server, tls, &hello).await {
                Err(e) => Err(vec![e]),
                Ok(()) => tokio::task::spawn_blocking(move || {
                    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
                    let file = dir.join(TOKEN_FILE_NAME);
                    write_secret(&file, &token).map_err(|e| {
                        vec![field(
                            Some("token_file"),
                            format!("cannot write {}: {e}", file.display()),
                        )]
                    })?;
                    new.token_file = Some(file);
                    settings::save(&path, &new).map_err(|e| {
                        vec![field(None, format!("cannot write {}: {e}", path.display()))]
                    })?;
                    Ok(Saved {
                        settings: new,
                        token: Some(token),
                        tls: None,
                    })
                })
                .await
                .unwrap_or_else(|e| Err(vec![field(None, e.to_string())])),
            };
            let _ = done.send(Wake::Saved(saved));
        });
    }

    /// Applies settings that were written: the idle policy at once, the task threads' number,
    /// and a reconnect when what the hello says changed.
    fn on_saved(&mut self, saved: Result<Saved, Vec<FieldError>>) {
        let Saved {
            settings,
            token,
            tls,
        } = match saved {
            Ok(s) => s,
            Err(errors) => return self.refuse(errors),
        };
        let now = Instant::now();
        let t = self.idle.set_config(now, settings.idle_config());
        self.on_transition(t, now);
        let mut reconnect = false;
        let slots = settings.cpus.unwrap_or(self.hardware.cores).max(1);
        if slots != self.cfg.slots {
            match self.executor.set_slots(slots as usize) {
                Ok(()) => {
                    self.cfg.slots = slots;
                    self.hardware.slots = slots;
                    reconnect = true;
                }
                Err(e) => warn!("cannot start task threads for {slots} slots: {e}"),
            }
        }
        self.executor.follow_settings(&settings);
        if settings.server != self.cfg.server {
            self.cfg.server = settings.server.clone();
            reconnect = true;
        }
        if let Some(token) = token
            && token != self.cfg.token
        {
            self.cfg.token = token;
            reconnect = true;
        }
        if let Some(tls) = tls
            && settings.ca_file != self.cfg.ca_file
        {
            self.cfg.ca_file = settings.ca_file.clone();
            self.tls = tls;
            reconnect = true;
        }
        if reconnect {
            match Transfer::new(
                self.cfg.server.as_deref().unwrap_or_default(),
                self.cfg.token.clone(),
                self.cfg.worker_id.clone(),
                &self.tls,
            ) {
                Ok(t) => self.transfer = t,
                // Cannot happen with a configuration `ClientTls::new` built; the old transfers
                // stay (they fail against a changed server with their own errors).
                Err(e) => warn!("cannot set up HTTP transfers for the new settings: {e}"),
            }
            if self.cfg.server.is_none() {
                self.set_connection(Connection::NotConfigured);
            } else {
                self.set_connection(Connection::Connecting);
            }
            self.action = Some(Action::Reconnect);
        }
        self.view.settings = Arc::new(settings);
        self.view.settings_result = Some(SettingsResult::Saved);
        self.push_event(Event::SettingsApplied);
    }

    fn send_urgent(&self, msg: &WorkerMsg) {
        if let Some(link) = &self.link {
            // A closed channel means the writer is gone; the loop notices that itself.
            let _ = link.urgent.send(Message::text(proto::encode(msg)));
        }
    }

    /// Sends an outcome from the outbox, or for a big output starts (or resumes) its upload
    /// first. Nothing happens while disconnected: the next session sends it.
    fn report(&mut self, replica: ReplicaId) {
        let (Some(link), Some(outcome)) = (&mut self.link, self.outbox.get(&replica)) else {
            return;
        };
        match &outcome.kind {
            OutcomeKind::Big { text, .. } => {
                if link.uploads.contains_key(&replica) {
                    return;
                }
                let (transfer, text, done) =
                    (self.transfer.clone(), text.clone(), self.transfers.clone());
                let upload = tokio::spawn(async move {
                    let result = transfer.upload(replica, &text).await;
                    let _ = done.send(Wake::Uploaded(replica, result.map_err(|e| e.to_string())));
                });
                link.uploads.insert(replica, upload);
            }
            _ => {
                let _ = link
                    .bulk
                    .send(Message::text(proto::encode(&outcome.message())));
            }
        }
    }

    fn on_uploaded(&mut self, replica: ReplicaId, uploaded: Result<(), String>) {
        let Some(link) = &mut self.link else {
            return;
        };
        link.uploads.remove(&replica);
        let Some(outcome) = self.outbox.get(&replica) else {
            return;
        };
        match uploaded {
            Ok(()) => {
                let _ = link
                    .bulk
                    .send(Message::text(proto::encode(&outcome.message())));
            }
            Err(e) => {
                warn!(%replica, "cannot upload the output: {e}; trying again on the next connection")
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.idle.state() == IdleState::Idle
    }

    /// Forgets what a replica was once nothing of it is held any more.
    fn update_counts(&mut self) {
        let (running, fetching, outbox) = (&self.running, &self.fetching, &self.outbox);
        self.assigned.retain(|r, _| {
            running.contains_key(r) || fetching.contains_key(r) || outbox.contains_key(r)
        });
    }

    fn cancel_all(&mut self) {
        for (_, ctl) in self.running.drain() {
            ctl.cancel();
        }
        for (_, f) in self.fetching.drain() {
            f.abort();
        }
        self.update_counts();
    }

    /// Stops a replica wherever it is and forgets its outcome.
    fn forget(&mut self, replica: ReplicaId) -> bool {
        let mut held = false;
        if let Some(ctl) = self.running.remove(&replica) {
            ctl.cancel();
            held = true;
        }
        if let Some(f) = self.fetching.remove(&replica) {
            f.abort();
            held = true;
        }
        if self.outbox.remove(&replica).is_some() {
            self.store.delete(replica);
            held = true;
        }
        if let Some(link) = &mut self.link
            && let Some(u) = link.uploads.remove(&replica)
        {
            u.abort();
        }
        self.update_counts();
        held
    }

    /// What this worker still holds: running, fetching, and unacknowledged outcomes.
    fn held(&self) -> Vec<ReplicaId> {
        let mut held: Vec<ReplicaId> = self
            .running
            .keys()
            .chain(self.fetching.keys())
            .chain(self.outbox.keys())
            .copied()
            .collect();
        held.sort();
        held.dedup();
        held
    }

    /// Acts on the welcome: running or fetching replicas not kept are stopped; outcomes the
    /// supervisor drops are forgotten, the others are sent again.
    fn on_welcome(&mut self, w: &Welcome) {
        self.max_output_bytes
            .store(w.max_output_bytes, Ordering::Relaxed);
        let stop: Vec<ReplicaId> = self
            .running
            .keys()
            .chain(self.fetching.keys())
            .filter(|r| !w.keep.contains(r))
            .copied()
            .collect();
        for r in stop.into_iter().chain(w.drop.iter().copied()) {
            self.forget(r);
        }
        info!(
            server = self.cfg.server.as_deref().unwrap_or_default(),
            heartbeat_ms = w.heartbeat_ms,
            kept = w.keep.len(),
            dropped = w.drop.len(),
            unacknowledged = self.outbox.len(),
            "connected to supervisor"
        );
    }

    /// One connection's life. Returns how it ended and whether the supervisor welcomed us.
    async fn session(
        &mut self,
        mut ws: Ws,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> (SessionEnd, bool) {
        let hello = WorkerMsg::Hello {
            protocol: proto::PROTOCOL_VERSION,
            worker: self.cfg.worker_id.clone(),
            name: self.cfg.name.clone(),
            token: self.cfg.token.clone(),
            hardware: self.hardware.clone(),
            held: self.held(),
            available: self.is_idle(),
        };
        if let Err(e) = ws.send(Message::text(proto::encode(&hello))).await {
            return (SessionEnd::Disconnected(e.to_string()), false);
        }
        let welcome = match tokio::time::timeout(CONNECT_TIMEOUT, welcome(&mut ws)).await {
            Err(_) => {
                return (
                    SessionEnd::Disconnected("no welcome within 10 s".into()),
                    false,
                );
            }
            Ok(Err(end)) => return (end, false),
            Ok(Ok(w)) => w,
        };
        self.on_welcome(&welcome);
        let heartbeat = Duration::from_millis(welcome.heartbeat_ms.max(1));
        let (sink, mut stream) = ws.split();
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        let (bulk, bulk_rx) = mpsc::unbounded_channel();
        let (probe_up, probe_rx) = mpsc::unbounded_channel();
        let mut writer = tokio::spawn(write(sink, urgent_rx, bulk_rx, probe_rx));
        self.link = Some(Link {
            urgent,
            bulk,
            probe_up,
            uploads: HashMap::new(),
            down: None,
            late_bytes: 0,
        });
        self.set_connection(Connection::Connected { heartbeat });
        self.push_event(Event::Connected);
        self.update_counts();
        // Outcomes that waited for this connection.
        let pending: Vec<ReplicaId> = self.outbox.keys().copied().collect();
        for r in pending {
            self.report(r);
        }
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            self.publish();
            let timers = self.timers();
            let down_at = self
                .link
                .as_ref()
                .and_then(|l| l.down.as_ref())
                .map(|d| d.deadline);
            let down_timer = async {
                match down_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                wake = self.inbox.next(shutdown, timers) => {
                    if matches!(wake, Wake::Shutdown) {
                        break SessionEnd::Shutdown;
                    }
                    self.on_wake(wake);
                    match self.action.take() {
                        Some(Action::Quit) => break SessionEnd::Shutdown,
                        Some(Action::Reconnect) => break SessionEnd::Reconnect,
                        None => {}
                    }
                }
                written = &mut writer => {
                    let why = written.unwrap_or_else(|e| format!("writer stopped: {e}"));
                    break SessionEnd::Disconnected(why);
                }
                frame = stream.next() => match frame {
                    None => break SessionEnd::Disconnected("connection closed".into()),
                    Some(Err(e)) => break SessionEnd::Disconnected(e.to_string()),
                    Some(Ok(Message::Text(text))) => match proto::decode_supervisor(&text) {
                        Ok(msg) => {
                            if let Some(end) = self.on_message(msg) {
                                break end;
                            }
                        }
                        Err(e) => break SessionEnd::Disconnected(format!("supervisor sent a bad frame: {e}")),
                    },
                    Some(Ok(Message::Binary(data))) => {
                        if let Err(why) = self.on_probe_bytes(&data) {
                            warn!("closing the connection: {why}");
                            break SessionEnd::Disconnected(why);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into());
                        break SessionEnd::Disconnected(format!("supervisor closed the connection: {why}"));
                    }
                    Some(Ok(_)) => {}
                },
                () = down_timer => self.on_down_deadline(),
                _ = beat.tick() => {
                    let progress = self
                        .running
                        .iter()
                        .map(|(r, ctl)| Progress { replica: *r, fraction: ctl.progress() })
                        .collect();
                    self.send_urgent(&WorkerMsg::Heartbeat { progress });
                }
            }
        };
        if matches!(end, SessionEnd::Shutdown) {
            self.hand_back().await;
        }
        // Dropping the link closes the writer's channels (it sends what is queued, then a
        // close frame) and stops this connection's uploads.
        self.link = None;
        if matches!(end, SessionEnd::Shutdown | SessionEnd::Reconnect) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
        }
        writer.abort();
        (end, true)
    }

    /// Takes in a finished replica's outcome (already saved by its task thread) and reports it.
    fn on_finished(&mut self, done: Finished) {
        let held = self.running.remove(&done.replica).is_some();
        let a = self.assigned.get(&done.replica).cloned();
        self.count(&done);
        self.update_counts();
        let Some(outcome) = done.outcome else {
            // Cancelled: what it used is what the job is charged for this replica.
            if let Some(link) = &self.link {
                let msg = WorkerMsg::Stopped {
                    replica: done.replica,
                    execution: done.execution,
                };
                let _ = link.bulk.send(Message::text(proto::encode(&msg)));
            }
            return;
        };
        if !held {
            // Cancelled or dropped while it finished: nobody wants it.
            self.store.delete(done.replica);
            return;
        }
        if let Some(a) = &a {
            // Held again (in the outbox) until acknowledged.
            self.assigned.insert(done.replica, a.clone());
        }
        match &outcome.kind {
            OutcomeKind::Failure(error) => {
                warn!(replica = %done.replica, "replica failed: {error}");
                if let Some(a) = &a {
                    self.push_event(Event::TaskFailed {
                        job: a.job.clone(),
                        kind: a.kind.clone(),
                        error: error.clone(),
                    });
                }
            }
            _ => {
                debug!(replica = %done.replica, wall_ms = outcome.execution.wall_ms, "replica finished");
                if let Some(a) = &a {
                    self.push_event(Event::TaskDone {
                        job: a.job.clone(),
                        kind: a.kind.clone(),
                        cpu: Duration::from_millis(done.execution.cpu_ms),
                    });
                    if a.kind == "mandelbrot" {
                        self.keep_tile(a, &outcome);
                    }
                }
            }
        }
        self.outbox.insert(done.replica, outcome);
        self.update_counts();
        self.report(done.replica);
    }

    /// Counts what a replica that ran gave towards this machine's contribution, and writes the
    /// tally to the data dir off the async threads.
    fn count(&mut self, done: &Finished) {
        let finished =
            matches!(&done.outcome, Some(o) if !matches!(o.kind, OutcomeKind::Failure(_)));
        let cpu = Duration::from_millis(done.execution.cpu_ms);
        if !finished && cpu.is_zero() {
            return;
        }
        self.tally.add(SystemTime::now(), finished, cpu);
        let Some(dir) = self.cfg.data_dir.as_ref().map(|d| d.path().to_owned()) else {
            return;
        };
        self.tally_next += 1;
        let (turn, last, tally) = (self.tally_next, self.tally_turn.clone(), self.tally.clone());
        tokio::task::spawn_blocking(move || {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if *last > turn {
                return;
            }
            *last = turn;
            if let Err(e) = contribution::save(&dir, &tally) {
                warn!("cannot write the contribution to {}: {e}", dir.display());
            }
        });
    }

    /// Keeps the pixels of a Mandelbrot tile this client computed, for the screensaver.
    fn keep_tile(&mut self, a: &Assignment, outcome: &Outcome) {
        let output = match &outcome.kind {
            OutcomeKind::Inline(v) => v.clone(),
            OutcomeKind::Big { text, .. } => match serde_json::from_slice(text) {
                Ok(v) => v,
                Err(_) => return,
            },
            OutcomeKind::Failure(_) => return,
        };
        let deps: BTreeMap<_, _> = a
            .deps
            .iter()
            .filter_map(|(k, p)| match p {
                Payload::Inline(v) => Some((k.clone(), v.clone())),
                Payload::Blob(_) => None,
            })
            .collect();
        match crate::runtime::mandelbrot::tile_rgba(&output, &deps) {
            Ok(px) => {
                self.tiles.push_back(Arc::new(TileImage {
                    job: a.job.clone(),
                    width: px.width,
                    height: px.height,
                    y0: px.y0,
                    y1: px.y1,
                    rgba: px.rgba,
                }));
                while self.tiles.len() > MAX_TILES {
                    self.tiles.pop_front();
                }
            }
            Err(e) => debug!(job = %a.job, "tile not kept for the screensaver: {e}"),
        }
    }

    /// Quitting: cancels every held replica, waits a moment for the task threads to say what
    /// each used, sends any result that beat the cancel, then `Leaving` with the rest, after
    /// every outcome already queued. Unacknowledged outcomes stay in the outbox.
    async fn hand_back(&mut self) {
        let mut handed: BTreeMap<ReplicaId, Execution> = BTreeMap::new();
        for (r, ctl) in &self.running {
            ctl.cancel();
            let used = ctl.busy_time().as_millis() as u64;
            // Until the task thread says: its busy time bounds its CPU time.
            handed.insert(
                *r,
                Execution {
                    wall_ms: used,
                    cpu_ms: used,
                },
            );
        }
        for (r, f) in self.fetching.drain() {
            f.abort();
            handed.insert(r, Execution::default());
        }
        let deadline = tokio::time::Instant::now() + HAND_BACK_WAIT;
        while !self.running.is_empty() {
            let Ok(Some(done)) =
                tokio::time::timeout_at(deadline, self.inbox.finished.recv()).await
            else {
                break;
            };
            let replica = done.replica;
            if done.outcome.is_some() {
                // It finished before the cancel: a result to report, not a hand-back.
                handed.remove(&replica);
                self.on_finished(done);
                continue;
            }
            if let Some(used) = handed.get_mut(&replica) {
                *used = done.execution;
            }
            self.running.remove(&replica);
            self.count(&done);
        }
        self.running.clear();
        let replicas: Vec<HandedBack> = handed
            .into_iter()
            .map(|(replica, execution)| HandedBack { replica, execution })
            .collect();
        info!(
            replicas = replicas.len(),
            "leaving: handing running tasks back"
        );
        if let Some(link) = &self.link {
            let msg = WorkerMsg::Leaving { replicas };
            let _ = link.bulk.send(Message::text(proto::encode(&msg)));
        }
        self.update_counts();
    }

    /// Queues an assignment, or first downloads its dependency outputs sent by reference.
    fn on_assign(&mut self, a: Assignment) {
        let replica = a.replica;
        if self.running.contains_key(&replica)
            || self.fetching.contains_key(&replica)
            || self.outbox.contains_key(&replica)
        {
            return;
        }
        info!(job = %a.job, task = %a.task, replica = %a.replica, kind = %a.kind, "task assigned");
        self.push_event(Event::TaskStarted {
            job: a.job.clone(),
            kind: a.kind.clone(),
        });
        self.assigned.insert(replica, Arc::new(a.clone()));
        if a.deps.values().all(|p| matches!(p, Payload::Inline(_))) {
            self.start(a);
            return;
        }
        let (transfer, done) = (self.transfer.clone(), self.transfers.clone());
        let fetch = tokio::spawn(async move {
            let fetched = fetch_deps(&transfer, a).await;
            let _ = done.send(Wake::Fetched(replica, fetched));
        });
        self.fetching.insert(replica, fetch);
        self.update_counts();
    }

    fn start(&mut self, a: Assignment) {
        let replica = a.replica;
        let ctl = self.executor.start(a);
        // Assigned while the owner is here (crossed with our Activity): it waits.
        if !self.is_idle() {
            ctl.pause();
        }
        self.running.insert(replica, ctl);
        self.update_counts();
    }

    fn on_fetched(&mut self, replica: ReplicaId, fetched: Result<Assignment, String>) {
        // Not fetching any more: cancelled or dropped meanwhile.
        if self.fetching.remove(&replica).is_none() {
            return;
        }
        match fetched {
            Ok(a) => self.start(a),
            Err(e) => {
                warn!(%replica, "{e}");
                let limit = self.max_output_bytes.load(Ordering::Relaxed);
                let outcome = Outcome::new(replica, Execution::default(), Err(e), limit);
                if let Err(e) = self.store.save(&outcome) {
                    warn!(%replica, "cannot save the outcome to the outbox: {e}");
                }
                self.outbox.insert(replica, outcome);
                self.update_counts();
                self.report(replica);
            }
        }
    }

    /// Acts on one message from the supervisor. `Some` ends the session.
    fn on_message(&mut self, msg: SupervisorMsg) -> Option<SessionEnd> {
        match msg {
            SupervisorMsg::Assign(a) => self.on_assign(a),
            SupervisorMsg::Cancel { replica, reason } => {
                let a = self.assigned.get(&replica).cloned();
                if self.forget(replica) {
                    info!(%replica, "task cancelled: {reason}");
                    if let Some(a) = a {
                        self.push_event(Event::TaskCancelled {
                            job: a.job.clone(),
                            kind: a.kind.clone(),
                        });
                    }
                }
            }
            SupervisorMsg::ResultAck { replica } => {
                if self.outbox.remove(&replica).is_some() {
                    debug!(%replica, "outcome acknowledged");
                    self.store.delete(replica);
                    self.update_counts();
                }
            }
            SupervisorMsg::StatusRequest { nonce } => {
                self.send_urgent(&WorkerMsg::StatusAck { nonce });
            }
            SupervisorMsg::Error {
                code,
                message,
                fatal,
            } => {
                warn!(?code, fatal, "supervisor error: {message}");
                if fatal {
                    return Some(SessionEnd::Disconnected(message));
                }
            }
            SupervisorMsg::Welcome { .. } => debug!("ignoring a second welcome"),
            SupervisorMsg::LinkPing { nonce } => self.send_urgent(&WorkerMsg::LinkPong { nonce }),
            SupervisorMsg::LinkDown {
                nonce,
                bytes,
                timeout_ms,
            } => {
                if let Err(why) = self.on_link_down(nonce, bytes, timeout_ms) {
                    warn!("closing the connection: {why}");
                    return Some(SessionEnd::Disconnected(why));
                }
            }
            SupervisorMsg::LinkUp {
                nonce,
                bytes,
                timeout_ms,
            } => {
                if let Err(why) = check_leg(bytes, timeout_ms) {
                    warn!("closing the connection: {why}");
                    return Some(SessionEnd::Disconnected(why));
                }
                if let Some(link) = &self.link {
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                    let _ = link.probe_up.send(UpLeg {
                        nonce,
                        bytes,
                        deadline,
                    });
                }
            }
        }
        None
    }

    /// The supervisor announces link probe payload.
    fn on_link_down(&mut self, nonce: u64, bytes: u64, timeout_ms: u64) -> Result<(), String> {
        check_leg(bytes, timeout_ms)?;
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        if let Some(d) = &link.down {
            return Err(format!(
                "the supervisor announced link probe {nonce} while probe {} was still arriving",
                d.nonce
            ));
        }
        // Payload of an earlier leg cut short was all sent before this announcement.
        link.late_bytes = 0;
        link.down = Some(DownLeg {
            nonce,
            bytes,
            digest: proto::LinkDigest::default(),
            deadline: Instant::now() + Duration::from_millis(timeout_ms),
        });
        if bytes == 0 {
            self.on_down_deadline();
        }
        Ok(())
    }

    /// A binary frame: link probe payload, which must have been announced.
    fn on_probe_bytes(&mut self, data: &[u8]) -> Result<(), String> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let len = data.len() as u64;
        if data.len() > proto::LINK_CHUNK_BYTES {
            return Err(format!(
                "the supervisor sent a binary frame of {len} bytes; link probe frames are at most {} bytes",
                proto::LINK_CHUNK_BYTES
            ));
        }
        let Some(down) = &mut link.down else {
            if link.late_bytes >= len {
                link.late_bytes -= len;
                return Ok(());
            }
            return Err(format!(
                "the supervisor sent a binary frame ({len} bytes) it had not announced"
            ));
        };
        if down.digest.bytes() + len > down.bytes {
            return Err(format!(
                "the supervisor sent more than the {} bytes it announced for link probe {}",
                down.bytes, down.nonce
            ));
        }
        down.digest.update(data);
        if down.digest.bytes() == down.bytes {
            self.on_down_deadline();
        }
        Ok(())
    }

    /// The down leg is complete or its time is up: say what arrived.
    fn on_down_deadline(&mut self) {
        let Some(link) = &mut self.link else {
            return;
        };
        let Some(down) = link.down.take() else {
            return;
        };
        let bytes = down.digest.bytes();
        link.late_bytes = down.bytes - bytes;
        if bytes < down.bytes {
            debug!(
                nonce = down.nonce,
                bytes,
                of = down.bytes,
                "link probe leg cut short by its time limit"
            );
        }
        self.send_urgent(&WorkerMsg::LinkReceived {
            nonce: down.nonce,
            bytes,
            digest: down.digest.finish(),
        });
    }
}

/// A snapshot without what moves by itself (when it was taken, the countdown to idle, tasks'
/// progress and times, the last activity seen): what must be published at once when it differs.
fn steady(s: &Snapshot, taken: Instant) -> Snapshot {
    let mut s = s.clone();
    s.taken = taken;
    s.idle_in = None;
    s.last_activity = None;
    for t in &mut s.tasks {
        t.progress = 0.0;
        t.elapsed = Duration::ZERO;
        t.remaining = None;
    }
    s
}

fn field(key: Option<&'static str>, message: String) -> FieldError {
    FieldError { key, message }
}

/// Whether the supervisor at `server` welcomes this hello: a refusal is the token's fault, any
/// other trouble the server's.
async fn check_hello(server: &str, tls: ClientTls, hello: &WorkerMsg) -> Result<(), FieldError> {
    let mut ws = match connect(server.to_owned(), tls, Duration::ZERO).await {
        Ok(ws) => ws,
        Err(SessionEnd::Untrusted(why) | SessionEnd::Disconnected(why)) => {
            return Err(field(Some("server"), format!("{server}: {why}")));
        }
        Err(_) => return Err(field(Some("server"), format!("{server}: cannot connect"))),
    };
    ws.send(Message::text(proto::encode(hello)))
        .await
        .map_err(|e| field(Some("server"), format!("{server}: {e}")))?;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, welcome(&mut ws)).await;
    let _ = ws.close(None).await;
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(SessionEnd::Refused(why))) => Err(field(
            Some("token_file"),
            format!("the supervisor refused this token: {why}"),
        )),
        Ok(Err(SessionEnd::Disconnected(why))) => {
            Err(field(Some("server"), format!("{server}: {why}")))
        }
        Ok(Err(_)) => Err(field(Some("server"), format!("{server}: no welcome"))),
        Err(_) => Err(field(
            Some("server"),
            format!(
                "{server}: no welcome within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Writes a secret readable by this user only (0600 on Unix), atomically.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    // NamedTempFile is created 0600 on Unix.
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))?;
    tmp.write_all(format!("{secret}\n").as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A link probe leg within the protocol's limits, or why not.
fn check_leg(bytes: u64, timeout_ms: u64) -> Result<(), String> {
    if bytes > proto::MAX_LINK_PROBE_BYTES || timeout_ms > proto::MAX_LINK_LEG_MS {
        return Err(format!(
            "the supervisor asked for a link probe leg of {bytes} bytes in {timeout_ms} ms; the protocol allows at most {} bytes and {} ms",
            proto::MAX_LINK_PROBE_BYTES,
            proto::MAX_LINK_LEG_MS
        ));
    }
    Ok(())
}

/// Downloads the dependency outputs of `a` sent by reference and puts them inline.
async fn fetch_deps(transfer: &Transfer, mut a: Assignment) -> Result<Assignment, String> {
    for (task, payload) in a.deps.iter_mut() {
        if let Payload::Blob(blob) = payload {
            let value = transfer
                .download(&a.job, task, blob)
                .await
                .map_err(|e| format!("cannot fetch the output of dependency {task}: {e}"))?;
            *payload = Payload::Inline(value);
        }
    }
    Ok(a)
}

/// The writer half: sends what the engine queues, urgent messages first, then outcomes, then
/// link probe payload a frame at a time (ended by `LinkSent`), until the engine drops its
/// senders (then closes the connection) or sending fails (returns why).
async fn write(
    mut sink: SplitSink<Ws, Message>,
    mut urgent: mpsc::UnboundedReceiver<Message>,
    mut bulk: mpsc::UnboundedReceiver<Message>,
    mut probe: mpsc::UnboundedReceiver<UpLeg>,
) -> String {
    let mut up: Option<(UpLeg, u64)> = None;
    let mut probe_open = true;
    loop {
        let msg = tokio::select! {
            biased;
            Some(m) = urgent.recv() => m,
            Some(m) = bulk.recv() => m,
            leg = probe.recv(), if up.is_none() && probe_open => {
                match leg {
                    Some(leg) => up = Some((leg, 0)),
                    None => probe_open = false,
                }
                continue;
            }
            () = std::future::ready(()), if up.is_some() => {
                let Some((leg, sent)) = &mut up else { continue };
                if *sent >= leg.bytes || Instant::now() >= leg.deadline {
                    let done = WorkerMsg::LinkSent { nonce: leg.nonce, bytes: *sent };
                    up = None;
                    Message::text(proto::encode(&done))
                } else {
                    let len = (leg.bytes - *sent).min(proto::LINK_CHUNK_BYTES as u64) as usize;
                    let chunk = proto::link_chunk(leg.nonce, *sent, len);
                    *sent += len as u64;
                    Message::binary(chunk)
                }
            }
            else => {
                let _ = sink.close().await;
                return "connection closed by this worker".into();
            }
        };
        if let Err(e) = sink.send(msg).await {
            return e.to_string();
        }
    }
}

/// Connects after waiting `after` (the backoff); a `wss://` URL over TLS, trusting what `tls`
/// does. A certificate this worker does not trust is told apart, in words that say what to do.
async fn connect(url: String, tls: ClientTls, after: Duration) -> Result<Ws, SessionEnd> {
    tokio::time::sleep(after).await;
    let config = WebSocketConfig::default()
        .max_message_size(Some(proto::MAX_FRAME_BYTES))
        .max_frame_size(Some(proto::MAX_FRAME_BYTES));
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls.config)),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(
            match crate::tls::describe_failure(&e, crate::tls::url_host(&url)) {
                Some(why) => SessionEnd::Untrusted(why),
                None => SessionEnd::Disconnected(format!("cannot connect: {e}")),
            },
        ),
        Err(_) => Err(SessionEnd::Disconnected("connect timed out".into())),
    }
}

/// Waits for the welcome. A refusal of this worker (token, version) is told apart from other
/// trouble, for its slower retry.
async fn welcome(ws: &mut Ws) -> Result<Welcome, SessionEnd> {
    loop {
        let text = match ws.next().await {
            None => {
                return Err(SessionEnd::Disconnected(
                    "connection closed before welcome".into(),
                ));
            }
            Some(Err(e)) => return Err(SessionEnd::Disconnected(e.to_string())),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(SessionEnd::Disconnected(format!(
                    "closed before welcome: {why}"
                )));
            }
            Some(Ok(_)) => continue,
        };
        match proto::decode_supervisor(&text) {
            Ok(SupervisorMsg::Welcome {
                heartbeat_ms,
                keep,
                drop,
                max_output_bytes,
                ..
            }) => {
                return Ok(Welcome {
                    heartbeat_ms,
                    keep,
                    drop,
                    max_output_bytes,
                });
            }
            Ok(SupervisorMsg::Error {
                code: ErrorCode::Unauthorized | ErrorCode::VersionMismatch,
                message,
                ..
            }) => {
                return Err(SessionEnd::Refused(message));
            }
            Ok(SupervisorMsg::Error { message, .. }) => {
                return Err(SessionEnd::Disconnected(message));
            }
            Ok(other) => debug!("ignoring {other:?} before welcome"),
            Err(e) => {
                return Err(SessionEnd::Disconnected(format!(
                    "supervisor sent a bad frame: {e}"
                )));
            }
        }
    }
}

/// Unix time in milliseconds of an instant in the recent past.
fn unix_ms_at(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Spreads reconnects of many workers over ±25% of the backoff, so a restarted supervisor is
/// not hit by all of them in the same millisecond.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        0x8000
    };
    let f = 0.75 + 0.5 * (f64::from(r) / f64::from(u16::MAX));
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    //! A fake supervisor on 127.0.0.1:0: WebSocket on `/worker`, and a small hand-made HTTP/1.1
    //! server for the upload and output endpoints on the same port.

    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;
    use crate::client::DataDir;
    use crate::client::idle::IdleConfig;
    use crate::proto::sha256_hex;
    use crate::proto::{BlobRef, TaskId};

    type ServerWs = WebSocketStream<TcpStream>;
    const WAIT: Duration = Duration::from_secs(20);

    #[derive(Default)]
    struct Http {
        /// Upload key -> bytes received.
        uploads: HashMap<String, Vec<u8>>,
        /// Offsets of the PUTs received.
        puts: Vec<u64>,
        /// Fail the PUT with this index (0-based) with a 500.
        fail_put: Option<usize>,
        /// The dependency output served at /worker/outputs/...
        output: Vec<u8>,
        /// `Range` headers of the output GETs (None: no range).
        ranges: Vec<Option<String>>,
        /// Whether every request carried the worker's token and id.
        authorised: bool,
    }

    struct Fake {
        addr: std::net::SocketAddr,
        http: Arc<Mutex<Http>>,
        ws: tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerWs>>,
    }

    impl Fake {
        /// Accepts connections in a task of its own: WebSockets are handed to [`Fake::accept`],
        /// HTTP requests are served at once.
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let http = Arc::new(Mutex::new(Http {
                authorised: true,
                ..Http::default()
            }));
            let (tx, rx) = mpsc::unbounded_channel();
            let served = http.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (tx, served) = (tx.clone(), served.clone());
                    tokio::spawn(async move {
                        let mut head = [0u8; 16];
                        let mut n = 0;
                        while n < head.len() {
                            n = stream.peek(&mut head).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                        }
                        if head.starts_with(b"GET /worker HTTP") {
                            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                                let _ = tx.send(ws);
                            }
                        } else {
                            serve_http(stream, served).await;
                        }
                    });
                }
            });
            Self {
                addr,
                http,
                ws: tokio::sync::Mutex::new(rx),
            }
        }

        fn url(&self) -> String {
            format!("ws://{}/worker", self.addr)
        }

        /// The next WebSocket connection.
        async fn accept(&self) -> ServerWs {
            tokio::time::timeout(WAIT, self.ws.lock().await.recv())
                .await
                .expect("no connection from the worker")
                .unwrap()
        }
    }

    async fn serve_http(mut stream: TcpStream, http: Arc<Mutex<Http>>) {
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap().split(' ');
        let (method, target) = (first.next().unwrap(), first.next().unwrap().to_owned());
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = buf[end..].to_vec();
        while body.len() < length {
            let mut chunk = vec![0u8; 1 << 16];
            let n = stream.read(&mut chunk).await.unwrap();
            body.extend_from_slice(&chunk[..n]);
        }
        let auth = header("authorization").as_deref() == Some("Bearer tok")
            && header("x-idlegrid-worker").as_deref() == Some("w-test");
        let (status, reply, truncate) = {
            let mut h = http.lock().unwrap();
            h.authorised &= auth;
            if let Some(rest) = target.strip_prefix("/worker/uploads/") {
                let (key, offset) = match rest.split_once("?offset=") {
                    Some((k, o)) => (k.to_owned(), o.parse::<u64>().ok()),
                    None => (rest.to_owned(), None),
                };
                let have = h.uploads.get(&key).map_or(0, Vec::len) as u64;
                match (method, offset) {
                    ("GET", _) => (
                        "200 OK",
                        format!("{{\"received\":{have}}}").into_bytes(),
                        None,
                    ),
                    ("PUT", Some(at)) => {
                        let i = h.puts.len();
                        h.puts.push(at);
                        if h.fail_put == Some(i) {
                            ("500 Internal Server Error", b"{}".to_vec(), None)
                        } else if at != have {
                            let r = format!("{{\"error\":\"offset\",\"received\":{have}}}");
                            ("409 Conflict", r.into_bytes(), None)
                        } else {
                            let got = h.uploads.entry(key).or_default();
                            got.extend_from_slice(&body);
                            let r = format!("{{\"received\":{}}}", got.len());
                            ("200 OK", r.into_bytes(), None)
                        }
                    }
                    _ => ("400 Bad Request", b"{}".to_vec(), None),
                }
            } else if target.starts_with("/worker/outputs/") {
                let range = header("range");
                let first_get = h.ranges.is_empty();
                h.ranges.push(range.clone());
                let from: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                    .unwrap_or(0);
                let body = h.output[from..].to_vec();
                let status = if from > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                // The first download is cut off half way.
                (status, body, first_get.then_some(h.output.len() / 2))
            } else {
                ("404 Not Found", b"{}".to_vec(), None)
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            reply.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream
            .write_all(&reply[..truncate.unwrap_or(reply.len())])
            .await;
        let _ = stream.flush().await;
    }

    async fn recv(ws: &mut ServerWs) -> WorkerMsg {
        tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match proto::decode_worker(&t).unwrap() {
                        WorkerMsg::Heartbeat { .. } => continue,
                        msg => return msg,
                    },
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await
        .expect("nothing from the worker")
    }

    async fn send(ws: &mut ServerWs, msg: &SupervisorMsg) {
        ws.send(Message::text(proto::encode(msg))).await.unwrap();
    }

    /// Reads the hello, answers with a welcome keeping what the worker holds; returns `held`.
    async fn greet(ws: &mut ServerWs) -> Vec<ReplicaId> {
        let WorkerMsg::Hello { held, .. } = recv(ws).await else {
            panic!("no hello");
        };
        send(
            ws,
            &SupervisorMsg::Welcome {
                protocol: proto::PROTOCOL_VERSION,
                heartbeat_ms: 100,
                keep: held.clone(),
                drop: Vec::new(),
                max_output_bytes: proto::DEFAULT_MAX_OUTPUT_BYTES,
            },
        )
        .await;
        held
    }

    fn primes(replica: ReplicaId) -> SupervisorMsg {
        SupervisorMsg::Assign(Assignment {
            replica,
            job: "j".into(),
            task: "t".into(),
            kind: "primes".into(),
            input: serde_json::json!({"from": 0, "to": 100}),
            deps: BTreeMap::new(),
        })
    }

    struct Running {
        status: watch::Receiver<Snapshot>,
        commands: mpsc::UnboundedSender<UiCommand>,
        stop: oneshot::Sender<()>,
        run: JoinHandle<Result<(), ClientError>>,
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(WAIT, self.run)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    fn start(server: &str, data_dir: Option<DataDir>) -> Running {
        start_with(Some(server), data_dir, Watch::always(), None)
    }

    /// An owner away for good, but a quiet period of an hour: the worker waits for idle.
    fn waiting_watch() -> Watch {
        Watch {
            idle: IdleConfig {
                idle_after: Duration::from_secs(3600),
                run_while_in_use: false,
                run_on_battery: true,
            },
            sources: Vec::new(),
            power: false,
            pace: Default::default(),
        }
    }

    fn start_with(
        server: Option<&str>,
        data_dir: Option<DataDir>,
        watch: Watch,
        settings_path: Option<PathBuf>,
    ) -> Running {
        let cfg = ClientConfig {
            server: server.map(str::to_owned),
            ca_file: None,
            token: "tok".into(),
            name: "test".into(),
            worker_id: "w-test".into(),
            slots: 1,
            data_dir,
        };
        let hardware = Hardware {
            cores: 1,
            memory_mb: 1,
            disk_mb: 1,
            os: "test".into(),
            slots: 1,
            bench_mops: 0.0,
        };
        let settings = Settings {
            idle_after: watch.idle.idle_after,
            run_while_in_use: watch.idle.run_while_in_use,
            run_on_battery: watch.idle.run_on_battery,
            server: cfg.server.clone(),
            cpus: Some(1),
            ..Settings::default()
        };
        let engine = Engine::new(cfg, hardware, watch)
            .unwrap()
            .with_settings(settings, settings_path);
        let EngineHandle {
            snapshots: status,
            commands,
        } = engine.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        Running {
            status,
            commands,
            stop,
            run,
        }
    }

    async fn wait_status(status: &mut watch::Receiver<Snapshot>, what: impl Fn(&Snapshot) -> bool) {
        tokio::time::timeout(WAIT, status.wait_for(|s| what(s)))
            .await
            .expect("status never came")
            .unwrap();
    }

    #[tokio::test]
    async fn an_unacknowledged_result_is_sent_again_after_every_reconnect_until_acked() {
        let sup = Fake::start().await;
        let mut worker = start(&sup.url(), None);
        let r = ReplicaId::new(1, 7);

        let mut ws = sup.accept().await;
        assert!(greet(&mut ws).await.is_empty());
        send(&mut ws, &primes(r)).await;
        let first = recv(&mut ws).await;
        assert!(
            matches!(&first, WorkerMsg::Result { replica, output: Payload::Inline(_), .. } if *replica == r),
            "{first:?}"
        );
        drop(ws); // never acknowledged

        for _ in 0..2 {
            let mut ws = sup.accept().await;
            assert_eq!(greet(&mut ws).await, vec![r]);
            assert_eq!(recv(&mut ws).await, first);
        }
        let mut ws = sup.accept().await;
        assert_eq!(greet(&mut ws).await, vec![r]);
        assert_eq!(recv(&mut ws).await, first);
        send(&mut ws, &SupervisorMsg::ResultAck { replica: r }).await;
        wait_status(&mut worker.status, |s| s.outbox == 0).await;
        drop(ws);

        let mut ws = sup.accept().await;
        assert!(greet(&mut ws).await.is_empty(), "forgotten once acked");
        worker.stop().await;
    }

    #[tokio::test]
    async fn finished_work_survives_a_restart_of_the_client_and_is_deleted_once_acked() {
        let sup = Fake::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("client");
        let r = ReplicaId::new(2, 1);

        let mut worker = start(&sup.url(), Some(DataDir::open(&dir, "test").unwrap()));
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        send(&mut ws, &primes(r)).await;
        let first = recv(&mut ws).await;
        assert!(matches!(first, WorkerMsg::Result { .. }), "{first:?}");
        wait_status(&mut worker.status, |s| s.outbox == 1).await;
        worker.stop().await;
        drop(ws);
        assert!(dir.join("outbox/2.1.outcome").is_file());

        // A new client on the same dir (the lock went with the old one) holds and re-sends it.
        let mut worker = start(&sup.url(), Some(DataDir::open(&dir, "test").unwrap()));
        assert_eq!(worker.status.borrow().outbox, 1);
        let mut ws = sup.accept().await;
        assert_eq!(greet(&mut ws).await, vec![r]);
        assert_eq!(recv(&mut ws).await, first);
        send(&mut ws, &SupervisorMsg::ResultAck { replica: r }).await;
        wait_status(&mut worker.status, |s| s.outbox == 0).await;
        assert!(!dir.join("outbox/2.1.outcome").exists());
        worker.stop().await;
    }

    #[tokio::test]
    async fn a_result_above_the_threshold_is_uploaded_in_resumable_chunks_then_sent_by_reference() {
        let sup = Fake::start().await;
        sup.http.lock().unwrap().fail_put = Some(1);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("client");
        let data = DataDir::open(&dir, "test").unwrap();
        // As a killed client would have left it.
        let r = ReplicaId::new(3, 4);
        let big = serde_json::json!("z".repeat(2 * transfer_chunk() + 1000));
        let outcome = Outcome::new(r, Execution::default(), Ok(big), u64::MAX);
        let OutcomeKind::Big { text, blob } = outcome.kind.clone() else {
            panic!("not big");
        };
        Store::on_disk(data.outbox())
            .unwrap()
            .save(&outcome)
            .unwrap();

        let mut worker = start(&sup.url(), Some(data));
        let mut ws = sup.accept().await;
        assert_eq!(greet(&mut ws).await, vec![r]);
        let msg = recv(&mut ws).await;
        assert_eq!(
            msg,
            WorkerMsg::Result {
                replica: r,
                output: Payload::Blob(blob),
                execution: Execution::default(),
            }
        );
        {
            let h = sup.http.lock().unwrap();
            assert_eq!(h.uploads[&r.key()], &text[..]);
            let c = transfer_chunk() as u64;
            // The second PUT failed; the worker asked where it stood and sent it again.
            assert_eq!(h.puts, vec![0, c, c, 2 * c]);
            assert!(h.authorised);
        }
        send(&mut ws, &SupervisorMsg::ResultAck { replica: r }).await;
        wait_status(&mut worker.status, |s| s.outbox == 0).await;
        assert!(!dir.join("outbox/3.4.output").exists());
        worker.stop().await;
    }

    fn transfer_chunk() -> usize {
        super::super::transfer::UPLOAD_CHUNK_BYTES
    }

    #[tokio::test]
    async fn a_dependency_sent_by_reference_is_downloaded_resumed_and_checked_before_the_task_runs()
    {
        let sup = Fake::start().await;
        let dep = serde_json::to_vec(&serde_json::json!({"pad": "q".repeat(1 << 19)})).unwrap();
        let blob = BlobRef {
            bytes: dep.len() as u64,
            sha256: sha256_hex(&dep),
        };
        sup.http.lock().unwrap().output = dep.clone();
        let worker = start(&sup.url(), None);
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        let r = ReplicaId::new(1, 1);
        let SupervisorMsg::Assign(mut a) = primes(r) else {
            unreachable!()
        };
        a.deps.insert(TaskId::from("big"), Payload::Blob(blob));
        send(&mut ws, &SupervisorMsg::Assign(a)).await;
        let msg = recv(&mut ws).await;
        assert!(
            matches!(msg, WorkerMsg::Result { replica, .. } if replica == r),
            "{msg:?}"
        );
        {
            let h = sup.http.lock().unwrap();
            assert_eq!(
                h.ranges,
                vec![None, Some(format!("bytes={}-", dep.len() / 2))]
            );
            assert!(h.authorised);
        }
        worker.stop().await;
    }

    #[tokio::test]
    async fn a_refused_worker_keeps_asking_and_says_why_in_its_status() {
        let sup = Fake::start().await;
        let mut worker = start(&sup.url(), None);
        let mut ws = sup.accept().await;
        assert!(matches!(recv(&mut ws).await, WorkerMsg::Hello { .. }));
        send(
            &mut ws,
            &SupervisorMsg::Error {
                code: ErrorCode::Unauthorized,
                message: "invalid worker token".into(),
                fatal: true,
            },
        )
        .await;
        drop(ws);
        wait_status(&mut worker.status, |s| {
            matches!(s.connection, Connection::Refused { .. })
        })
        .await;
        {
            let s = worker.status.borrow();
            let Connection::Refused { why, retry_in } = &s.connection else {
                unreachable!()
            };
            assert!(why.contains("invalid worker token"), "{s:?}");
            let wait = *retry_in;
            assert!(
                wait >= FIRST_REFUSED_BACKOFF * 3 / 4 && wait <= MAX_REFUSED_WAIT,
                "{wait:?}"
            );
        }
        // It asks again, and a welcome clears the refusal.
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        wait_status(&mut worker.status, |s| {
            matches!(s.connection, Connection::Connected { .. })
        })
        .await;
        assert!(!worker.run.is_finished());
        worker.stop().await;
    }

    /// The next message that is not a heartbeat, within `limit`, or `None`.
    async fn recv_within(ws: &mut ServerWs, limit: Duration) -> Option<WorkerMsg> {
        tokio::time::timeout(limit, recv(ws)).await.ok()
    }

    #[tokio::test]
    async fn a_snooze_tells_the_supervisor_at_once_and_ends_on_time() {
        let sup = Fake::start().await;
        let mut worker = start(&sup.url(), None);
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        wait_status(&mut worker.status, |s| s.idle == IdleState::Idle).await;
        let asked = Instant::now();
        let until = SystemTime::now() + Duration::from_millis(400);
        worker.commands.send(UiCommand::SnoozeUntil(until)).unwrap();
        let msg = recv(&mut ws).await;
        assert!(
            matches!(
                msg,
                WorkerMsg::Activity {
                    kind: proto::ActivityKind::User,
                    ..
                }
            ),
            "{msg:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "{:?}",
            asked.elapsed()
        );
        wait_status(&mut worker.status, |s| {
            s.idle == IdleState::Busy(Busy::Snoozed) && s.detail.snoozed_until == Some(until)
        })
        .await;
        let msg = recv(&mut ws).await;
        let over = asked.elapsed();
        assert!(matches!(msg, WorkerMsg::Available { .. }), "{msg:?}");
        assert!(
            over >= Duration::from_millis(380) && over < Duration::from_millis(1500),
            "snooze of 400 ms ended after {over:?}"
        );
        wait_status(&mut worker.status, |s| {
            s.idle == IdleState::Idle && s.detail.snoozed_until.is_none()
        })
        .await;
        // Resume ends a snooze before its time.
        let until = SystemTime::now() + Duration::from_secs(3600);
        worker.commands.send(UiCommand::SnoozeUntil(until)).unwrap();
        assert!(matches!(recv(&mut ws).await, WorkerMsg::Activity { .. }));
        worker.commands.send(UiCommand::Resume).unwrap();
        assert!(matches!(recv(&mut ws).await, WorkerMsg::Available { .. }));
        worker.stop().await;
    }

    #[tokio::test]
    async fn nothing_is_published_while_nothing_changes() {
        let sup = Fake::start().await;
        let mut worker = start(&sup.url(), None);
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        wait_status(&mut worker.status, |s| {
            matches!(s.connection, Connection::Connected { .. }) && s.idle == IdleState::Idle
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        worker.status.mark_unchanged();
        // Heartbeats go out every 100 ms meanwhile: the loop turns, the snapshot stays.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !worker.status.has_changed().unwrap(),
            "published with nothing changed"
        );
        // Control: a running task is published, and its progress moves about once a second.
        send(&mut ws, &spin(ReplicaId::new(9, 1), 3000)).await;
        wait_status(&mut worker.status, |s| {
            s.tasks.len() == 1 && s.tasks[0].state == TaskState::Running
        })
        .await;
        let first = worker.status.borrow_and_update().tasks[0].elapsed;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(worker.status.has_changed().unwrap());
        let later = worker.status.borrow_and_update().tasks[0].elapsed;
        assert!(later > first, "{first:?} -> {later:?}");
        worker.stop().await;
    }

    #[tokio::test]
    async fn input_is_polled_at_full_rate_only_while_a_task_computes() {
        let sup = Fake::start().await;
        let watch = Watch::always();
        let pace = watch.pace.clone();
        let mut worker = start_with(Some(&sup.url()), None, watch, None);
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        wait_status(&mut worker.status, |s| s.idle == IdleState::Idle).await;
        assert!(!pace.urgent(), "idle with nothing to compute: relaxed");
        send(&mut ws, &spin(ReplicaId::new(9, 2), 5000)).await;
        wait_status(&mut worker.status, |s| {
            s.tasks.len() == 1 && s.tasks[0].state == TaskState::Running
        })
        .await;
        assert!(
            pace.urgent(),
            "a task computes: the owner's return must pause it at once"
        );
        // Paused (here by a snooze): nothing to pause any more, relaxed again.
        let until = SystemTime::now() + Duration::from_secs(3600);
        worker.commands.send(UiCommand::SnoozeUntil(until)).unwrap();
        wait_status(&mut worker.status, |s| {
            s.tasks.len() == 1 && s.tasks[0].state == TaskState::Paused
        })
        .await;
        assert!(!pace.urgent());
        worker.commands.send(UiCommand::Resume).unwrap();
        wait_status(&mut worker.status, |s| {
            s.tasks.len() == 1 && s.tasks[0].state == TaskState::Running
        })
        .await;
        assert!(pace.urgent());
        worker.stop().await;
    }

    fn spin(replica: ReplicaId, ms: u64) -> SupervisorMsg {
        SupervisorMsg::Assign(Assignment {
            replica,
            job: "j".into(),
            task: "t".into(),
            kind: "spin".into(),
            input: serde_json::json!({ "ms": ms }),
            deps: BTreeMap::new(),
        })
    }

    #[tokio::test]
    async fn a_new_idle_after_takes_effect_without_a_restart_and_is_written_to_the_file() {
        let sup = Fake::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("settings.toml");
        let mut worker = start_with(Some(&sup.url()), None, waiting_watch(), Some(path.clone()));
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        // Control: with an hour's quiet period it keeps waiting.
        assert_eq!(recv_within(&mut ws, Duration::from_millis(300)).await, None);
        assert_eq!(worker.status.borrow().idle, IdleState::Busy(Busy::Starting));
        let mut new = (*worker.status.borrow().settings).clone();
        new.idle_after = Duration::from_millis(200);
        worker
            .commands
            .send(UiCommand::ApplySettings(Box::new(new.clone())))
            .unwrap();
        // Quiet for longer than that already: idle at once, and the supervisor hears it.
        let msg = recv(&mut ws).await;
        assert!(matches!(msg, WorkerMsg::Available { .. }), "{msg:?}");
        wait_status(&mut worker.status, |s| {
            s.settings_result == Some(SettingsResult::Saved) && s.idle == IdleState::Idle
        })
        .await;
        assert_eq!(worker.status.borrow().settings.idle_after, new.idle_after);
        let written =
            settings::parse(&std::fs::read_to_string(&path).unwrap(), tmp.path()).unwrap();
        assert_eq!(written.idle_after, Duration::from_millis(200));
        worker.stop().await;
    }

    #[tokio::test]
    async fn settings_that_cannot_be_written_are_refused_and_nothing_is_applied() {
        let sup = Fake::start().await;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), "").unwrap();
        // Its directory is a file: the write fails.
        let path = tmp.path().join("file").join("settings.toml");
        let mut worker = start_with(Some(&sup.url()), None, waiting_watch(), Some(path.clone()));
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        let mut new = (*worker.status.borrow().settings).clone();
        new.idle_after = Duration::from_millis(200);
        worker
            .commands
            .send(UiCommand::ApplySettings(Box::new(new)))
            .unwrap();
        wait_status(&mut worker.status, |s| {
            matches!(s.settings_result, Some(SettingsResult::Refused(_)))
        })
        .await;
        {
            let s = worker.status.borrow();
            let Some(SettingsResult::Refused(errors)) = &s.settings_result else {
                unreachable!()
            };
            assert!(
                errors[0].message.contains("settings.toml") && errors[0].key.is_none(),
                "{errors:?}"
            );
            assert_eq!(s.settings.idle_after, Duration::from_secs(3600));
        }
        // Not applied: still waiting, nothing told.
        assert_eq!(recv_within(&mut ws, Duration::from_millis(500)).await, None);
        assert_eq!(worker.status.borrow().idle, IdleState::Busy(Busy::Starting));
        // A bad server URL is refused under its key before anything is written.
        let mut bad = (*worker.status.borrow().settings).clone();
        bad.server = Some("http://x".into());
        worker
            .commands
            .send(UiCommand::ApplySettings(Box::new(bad)))
            .unwrap();
        wait_status(&mut worker.status, |s| {
            matches!(&s.settings_result, Some(SettingsResult::Refused(e)) if e[0].key == Some("server"))
        })
        .await;
        worker.stop().await;
    }

    #[tokio::test]
    async fn a_first_run_configuration_is_checked_with_a_hello_then_saved_and_used() {
        let sup = Fake::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("conf").join("settings.toml");
        let mut worker = start_with(None, None, Watch::always(), Some(path.clone()));
        assert_eq!(worker.status.borrow().connection, Connection::NotConfigured);

        // Refused: nothing is written and it stays unconfigured.
        worker
            .commands
            .send(UiCommand::Configure {
                server: sup.url(),
                token: "wrong".into(),
            })
            .unwrap();
        let mut ws = sup.accept().await;
        let WorkerMsg::Hello { token, .. } = recv(&mut ws).await else {
            panic!("no hello");
        };
        assert_eq!(token, "wrong");
        send(
            &mut ws,
            &SupervisorMsg::Error {
                code: ErrorCode::Unauthorized,
                message: "invalid worker token".into(),
                fatal: true,
            },
        )
        .await;
        wait_status(&mut worker.status, |s| {
            matches!(&s.settings_result, Some(SettingsResult::Refused(e)) if e[0].key == Some("token_file"))
        })
        .await;
        assert!(!path.exists());
        assert_eq!(worker.status.borrow().connection, Connection::NotConfigured);

        // Unreachable: refused under "server".
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        worker
            .commands
            .send(UiCommand::Configure {
                server: format!("ws://{closed}/worker"),
                token: "tok".into(),
            })
            .unwrap();
        wait_status(&mut worker.status, |s| {
            matches!(&s.settings_result, Some(SettingsResult::Refused(e)) if e[0].key == Some("server"))
        })
        .await;
        assert!(!path.exists());

        // Accepted: token file (0600) and settings written, then it connects.
        worker
            .commands
            .send(UiCommand::Configure {
                server: sup.url(),
                token: " tok \n".into(),
            })
            .unwrap();
        let mut probe = sup.accept().await;
        greet(&mut probe).await;
        let mut ws = sup.accept().await;
        let WorkerMsg::Hello { token, .. } = recv(&mut ws).await else {
            panic!("no hello");
        };
        assert_eq!(token, "tok");
        let token_file = path.parent().unwrap().join(TOKEN_FILE_NAME);
        assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), "tok");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let written = settings::parse(
            &std::fs::read_to_string(&path).unwrap(),
            path.parent().unwrap(),
        )
        .unwrap();
        assert_eq!(written.server.as_deref(), Some(sup.url().as_str()));
        assert_eq!(written.token_file.as_deref(), Some(token_file.as_path()));
        wait_status(&mut worker.status, |s| {
            s.settings_result == Some(SettingsResult::Saved)
                && s.supervisor.as_deref() == Some(sup.url().as_str())
        })
        .await;
        worker.stop().await;
    }

    #[tokio::test]
    async fn finished_work_counts_towards_the_contribution_across_a_restart_and_tiles_are_kept() {
        let sup = Fake::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("client");
        let mut worker = start_with(
            Some(&sup.url()),
            Some(DataDir::open(&dir, "test").unwrap()),
            Watch::always(),
            None,
        );
        assert_eq!(worker.status.borrow().contribution.tasks_total, 0);
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        // A Mandelbrot tile, its plan inline as the supervisor sends it.
        let view = serde_json::json!({
            "width": 40, "height": 20, "center_re": -0.5, "center_im": 0.0,
            "span_re": 3.0, "tiles": 2,
        });
        let ctl = crate::runtime::TaskControl::new();
        let plan = crate::runtime::run("mandelbrot_view", &view, &BTreeMap::new(), &ctl).unwrap();
        let r = ReplicaId::new(5, 1);
        send(
            &mut ws,
            &SupervisorMsg::Assign(Assignment {
                replica: r,
                job: "render".into(),
                task: "tile-1".into(),
                kind: "mandelbrot".into(),
                input: serde_json::json!({ "index": 1 }),
                deps: BTreeMap::from([("view".into(), Payload::Inline(plan))]),
            }),
        )
        .await;
        assert!(matches!(recv(&mut ws).await, WorkerMsg::Result { .. }));
        send(&mut ws, &SupervisorMsg::ResultAck { replica: r }).await;
        wait_status(&mut worker.status, |s| {
            s.contribution.tasks_today == 1 && s.tiles.len() == 1 && s.outbox == 0
        })
        .await;
        {
            let s = worker.status.borrow();
            let tile = &s.tiles[0];
            assert_eq!(
                (tile.width, tile.height, tile.y0, tile.y1),
                (40, 20, 10, 20)
            );
            assert_eq!(tile.rgba.len(), 4 * 40 * 10);
            assert_eq!(s.contribution.per_day.len(), contribution::CHART_DAYS);
            assert_eq!(s.contribution.per_day.last().unwrap().tasks, 1);
            assert!(
                s.events.iter().any(
                    |e| matches!(&e.what, Event::TaskDone { kind, .. } if kind == "mandelbrot")
                ),
                "{:?}",
                s.events
            );
        }
        worker.stop().await;
        drop(ws);
        // Written off the async threads: give the write a moment, then start again on the dir.
        let file = contribution::path(&dir);
        for _ in 0..100 {
            if file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let worker = start(&sup.url(), Some(DataDir::open(&dir, "test").unwrap()));
        assert_eq!(worker.status.borrow().contribution.tasks_total, 1);
        worker.stop().await;
    }

    #[tokio::test]
    async fn quit_hands_running_tasks_back_with_what_they_used() {
        let sup = Fake::start().await;
        let worker = start(&sup.url(), None);
        let mut status = worker.status.clone();
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        let r = ReplicaId::new(4, 2);
        send(&mut ws, &spin(r, 60_000)).await;
        wait_status(&mut status, |s| {
            s.tasks
                .iter()
                .any(|t| t.state == TaskState::Running && t.elapsed > Duration::ZERO)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        worker.commands.send(UiCommand::Quit).unwrap();
        let msg = recv(&mut ws).await;
        let WorkerMsg::Leaving { replicas } = msg else {
            panic!("{msg:?}");
        };
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].replica, r);
        let used = replicas[0].execution;
        assert!(used.wall_ms >= 150 && used.cpu_ms > 0, "{used:?}");
        // And the engine stops by itself.
        tokio::time::timeout(WAIT, worker.run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_exported_reconnect_bound_covers_the_backoff_and_its_jitter() {
        for _ in 0..1000 {
            assert!(jitter(MAX_BACKOFF) <= MAX_RECONNECT_WAIT);
            assert!(jitter(MAX_REFUSED_BACKOFF) <= MAX_REFUSED_WAIT);
        }
    }
}
