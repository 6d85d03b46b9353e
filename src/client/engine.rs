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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
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
use super::executor::{Executor, Finished, Sink};
use super::idle::{IdlePolicy, IdleState, Transition};
use super::outbox::{Outcome, OutcomeKind, Store};
use super::transfer::Transfer;
use super::{ClientConfig, ClientError, Status, Watch};
use crate::proto::{
    self, Assignment, ErrorCode, Execution, Hardware, Payload, Progress, ReplicaId, SupervisorMsg,
    WorkerMsg,
};
use crate::runtime::TaskControl;

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

/// How a session with the supervisor ended.
enum SessionEnd {
    /// The connection is gone; try again.
    Disconnected(String),
    /// The supervisor refused this worker (token, protocol version); try again, slowly.
    Refused(String),
    Shutdown,
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
}

/// The channels and timers the engine waits on, apart from the connection. A struct of its own
/// so that waiting on it borrows nothing else of the engine.
struct Inbox {
    finished: mpsc::UnboundedReceiver<Finished>,
    observations: mpsc::UnboundedReceiver<Signal>,
    transfers: mpsc::UnboundedReceiver<Wake>,
    watch_power: bool,
    power: tokio::time::Interval,
}

impl Inbox {
    /// Waits for shutdown, an observation, the end of the quiet period (`idle_deadline`), a
    /// power check, a finished replica or a finished transfer.
    async fn next(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        idle_deadline: Option<Instant>,
    ) -> Wake {
        let idle_timer = async {
            match idle_deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.as_mut() => Wake::Shutdown,
            Some(obs) = self.observations.recv() => Wake::Observation(obs),
            () = idle_timer => Wake::IdleTimer,
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
    /// The pool's output limit, from the latest welcome; the task threads read it.
    max_output_bytes: Arc<AtomicU64>,
    link: Option<Link>,
    idle: IdlePolicy,
    /// Keeps the source threads alive for the life of the engine.
    _monitor: Option<Monitor>,
    status: watch::Sender<Status>,
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
        let mut status = Status {
            outbox: outbox.len(),
            ..Status::default()
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
        let transfer = Transfer::new(&cfg.server, cfg.token.clone(), cfg.worker_id.clone());
        Ok(Self {
            cfg,
            hardware,
            executor,
            inbox: Inbox {
                finished: finished_rx,
                observations,
                transfers: transfers_rx,
                watch_power: watch.power,
                power,
            },
            running: HashMap::new(),
            fetching: HashMap::new(),
            outbox,
            store,
            transfer,
            transfers,
            max_output_bytes,
            link: None,
            idle,
            _monitor: monitor,
            status: watch::Sender::new(status),
        })
    }

    /// A view of what the worker is doing, updated as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Serves the supervisor until `shutdown` resolves. Lost connections and refusals are
    /// retried (a refusal more slowly); each new reason is logged once and shown in the status.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
        tokio::pin!(shutdown);
        let mut backoff = FIRST_BACKOFF;
        let mut refused_backoff = FIRST_REFUSED_BACKOFF;
        let mut last_logged: Option<String> = None;
        let mut attempt: Pin<Box<dyn Future<Output = Result<Ws, String>> + Send>> =
            Box::pin(connect(self.cfg.server.clone(), Duration::ZERO));
        loop {
            // While not connected, the owner still comes first.
            let deadline = self.idle.poll_timeout();
            let connected = tokio::select! {
                c = &mut attempt => c,
                wake = self.inbox.next(&mut shutdown, deadline) => {
                    if matches!(wake, Wake::Shutdown) {
                        break;
                    }
                    // Nobody to tell: outcomes wait in the outbox, and the hello carries
                    // whether the machine is idle.
                    self.on_wake(wake);
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
                Err(e) => SessionEnd::Disconnected(e),
            };
            let (why, wait, refused) = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Refused(why) => {
                    let wait = jitter(refused_backoff);
                    refused_backoff = (refused_backoff * 2).min(MAX_REFUSED_BACKOFF);
                    (
                        format!("the supervisor refused this worker: {why}"),
                        wait,
                        true,
                    )
                }
                SessionEnd::Disconnected(why) => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    (
                        format!("disconnected from {}: {why}", self.cfg.server),
                        wait,
                        false,
                    )
                }
            };
            if last_logged.as_deref() != Some(why.as_str()) {
                warn!("{why}; retrying in {} ms", wait.as_millis());
            } else {
                debug!("{why}; retrying in {} ms", wait.as_millis());
            }
            self.status.send_modify(|s| {
                s.connected = false;
                s.refused = refused.then(|| why.clone());
                s.last_error = Some(why.clone());
                s.retry_in = Some(wait);
            });
            last_logged = Some(why);
            attempt = Box::pin(connect(self.cfg.server.clone(), wait));
        }
        self.cancel_all();
        info!("worker stopped");
        Ok(())
    }

    /// Applies a wake-up to the policy, the tasks and the outbox, and tells the supervisor what
    /// it must hear now (if connected).
    fn on_wake(&mut self, wake: Wake) {
        let now = Instant::now();
        let (transition, at) = match wake {
            Wake::Shutdown => return,
            Wake::Finished(done) => return self.on_finished(done),
            Wake::Fetched(replica, fetched) => return self.on_fetched(replica, fetched),
            Wake::Uploaded(replica, uploaded) => return self.on_uploaded(replica, uploaded),
            Wake::Observation(Signal::Activity(obs)) => {
                self.status.send_modify(|s| s.last_activity = Some(obs));
                (self.idle.handle_activity(now, obs.kind), obs.at)
            }
            Wake::Observation(Signal::Condition(c)) => {
                self.status.send_modify(|s| c.apply_to(&mut s.detail));
                (self.idle.set_condition(now, c.reason, c.on), c.at)
            }
            Wake::IdleTimer => (self.idle.handle_timeout(now), now),
            Wake::Power => {
                let on_battery = super::activity::battery::on_battery();
                (self.idle.handle_power(now, on_battery), now)
            }
        };
        // The reason for being busy may change without a transition (starting -> owner).
        let state = self.idle.state();
        self.status
            .send_if_modified(|s| std::mem::replace(&mut s.idle, state) != state);
        let Some(transition) = transition else {
            return;
        };
        let msg = match transition {
            Transition::BecameBusy(why) => {
                for ctl in self.running.values() {
                    ctl.pause();
                }
                let paused_at = Instant::now();
                self.status.send_modify(|s| s.paused_at = Some(paused_at));
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
                info!(tasks = self.running.len(), "machine idle: computing");
                WorkerMsg::Available {
                    at_ms: unix_ms_at(now),
                }
            }
        };
        self.send_urgent(&msg);
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

    fn update_counts(&self) {
        let (running, outbox) = (self.running.len() + self.fetching.len(), self.outbox.len());
        self.status.send_if_modified(|s| {
            let changed = s.running != running || s.outbox != outbox;
            s.running = running;
            s.outbox = outbox;
            changed
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
            server = %self.cfg.server,
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
        self.status.send_modify(|s| {
            s.connected = true;
            s.refused = None;
            s.last_error = None;
            s.retry_in = None;
        });
        self.update_counts();
        // Outcomes that waited for this connection.
        let pending: Vec<ReplicaId> = self.outbox.keys().copied().collect();
        for r in pending {
            self.report(r);
        }
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let deadline = self.idle.poll_timeout();
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
                wake = self.inbox.next(shutdown, deadline) => {
                    if matches!(wake, Wake::Shutdown) {
                        break SessionEnd::Shutdown;
                    }
                    self.on_wake(wake);
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
        // Dropping the link closes the writer's channels (it sends what is queued, then a
        // close frame) and stops this connection's uploads.
        self.link = None;
        if matches!(end, SessionEnd::Shutdown) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
        }
        writer.abort();
        self.status.send_modify(|s| s.connected = false);
        (end, true)
    }

    /// Takes in a finished replica's outcome (already saved by its task thread) and reports it.
    fn on_finished(&mut self, done: Finished) {
        let held = self.running.remove(&done.replica).is_some();
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
        match &outcome.kind {
            OutcomeKind::Failure(error) => {
                warn!(replica = %done.replica, "replica failed: {error}")
            }
            _ => {
                debug!(replica = %done.replica, wall_ms = outcome.execution.wall_ms, "replica finished")
            }
        }
        self.outbox.insert(done.replica, outcome);
        self.update_counts();
        self.report(done.replica);
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
                if self.forget(replica) {
                    info!(%replica, "task cancelled: {reason}");
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

/// Connects after waiting `after` (the backoff).
async fn connect(url: String, after: Duration) -> Result<Ws, String> {
    tokio::time::sleep(after).await;
    let config = WebSocketConfig::default()
        .max_message_size(Some(proto::MAX_FRAME_BYTES))
        .max_frame_size(Some(proto::MAX_FRAME_BYTES));
    let attempt = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err("connect timed out".into()),
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
        status: watch::Receiver<Status>,
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
        let cfg = ClientConfig {
            server: server.to_owned(),
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
        let engine = Engine::new(cfg, hardware, Watch::always()).unwrap();
        let status = engine.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        Running { status, stop, run }
    }

    async fn wait_status(status: &mut watch::Receiver<Status>, what: impl Fn(&Status) -> bool) {
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
        wait_status(&mut worker.status, |s| s.refused.is_some()).await;
        {
            let s = worker.status.borrow();
            assert!(
                s.refused
                    .as_deref()
                    .unwrap()
                    .contains("invalid worker token"),
                "{s:?}"
            );
            let wait = s.retry_in.unwrap();
            assert!(
                wait >= FIRST_REFUSED_BACKOFF * 3 / 4 && wait <= MAX_REFUSED_WAIT,
                "{wait:?}"
            );
        }
        // It asks again, and a welcome clears the refusal.
        let mut ws = sup.accept().await;
        greet(&mut ws).await;
        wait_status(&mut worker.status, |s| s.connected && s.refused.is_none()).await;
        assert!(!worker.run.is_finished());
        worker.stop().await;
    }

    #[test]
    fn the_exported_reconnect_bound_covers_the_backoff_and_its_jitter() {
        for _ in 0..1000 {
            assert!(jitter(MAX_BACKOFF) <= MAX_RECONNECT_WAIT);
            assert!(jitter(MAX_REFUSED_BACKOFF) <= MAX_REFUSED_WAIT);
        }
    }
}
