//! The worker's engine: one connection to the supervisor at a time, heartbeats, the life of each
//! assigned replica (start, progress, result, cancel), and obedience to the idle policy.
//!
//! Replicas outlive connections: when the connection drops, tasks keep computing and results
//! wait; the engine reconnects with backoff, says in its hello what it still holds, and obeys the
//! supervisor's keep/drop answer.
//!
//! The owner comes first: an observation from an activity source reaches the engine on a
//! channel, the idle policy turns it into a transition, and on `BecameBusy` every running
//! replica is paused and `Activity` is sent in the same turn of the loop, not with the next
//! heartbeat. On `BecameIdle`, paused replicas resume where they stopped and `Available` is sent.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::activity::{Monitor, Observation};
use super::executor::{Executor, Failure, Finished};
use super::idle::{Busy, IdlePolicy, IdleState, Transition};
use super::{ClientConfig, ClientError, Status, Watch};
use crate::proto::{
    self, ActivityKind, ErrorCode, Hardware, Progress, ReplicaId, SupervisorMsg, WorkerMsg,
};
use crate::runtime::TaskControl;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the battery is looked at.
const POWER_CHECK: Duration = Duration::from_secs(10);

/// How a session with the supervisor ended.
enum SessionEnd {
    /// The connection is gone; try again.
    Disconnected(String),
    /// The supervisor refused this worker for good (token, protocol version).
    Refused(String),
    Shutdown,
}

/// Something the loop waited for besides the connection.
enum Wake {
    Shutdown,
    Observation(Observation),
    IdleTimer,
    Power,
    Finished(Finished),
}

/// The channels and timers the engine waits on, apart from the connection. A struct of its own
/// so that waiting on it borrows nothing else of the engine.
struct Inbox {
    finished: mpsc::UnboundedReceiver<Finished>,
    observations: mpsc::UnboundedReceiver<Observation>,
    watch_power: bool,
    power: tokio::time::Interval,
}

impl Inbox {
    /// Waits for shutdown, an observation, the end of the quiet period (`idle_deadline`), a
    /// power check or a finished replica.
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
            _ = self.power.tick(), if self.watch_power => Wake::Power,
        }
    }
}

pub struct Engine {
    cfg: ClientConfig,
    hardware: Hardware,
    executor: Executor,
    inbox: Inbox,
    running: HashMap<ReplicaId, Arc<TaskControl>>,
    /// Finished replicas whose outcome the supervisor has not received yet.
    unreported: BTreeMap<ReplicaId, WorkerMsg>,
    idle: IdlePolicy,
    /// Keeps the source threads alive for the life of the engine.
    _monitor: Option<Monitor>,
    status: watch::Sender<Status>,
}

impl Engine {
    pub fn new(cfg: ClientConfig, hardware: Hardware, watch: Watch) -> Result<Self, ClientError> {
        let (tx, finished_rx) = mpsc::unbounded_channel();
        let executor = Executor::new(cfg.slots as usize, tx).map_err(ClientError::Threads)?;
        let now = Instant::now();
        let (obs_tx, observations) = mpsc::unbounded_channel();
        let mut status = Status::default();
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
        Ok(Self {
            cfg,
            hardware,
            executor,
            inbox: Inbox {
                finished: finished_rx,
                observations,
                watch_power: watch.power,
                power,
            },
            running: HashMap::new(),
            unreported: BTreeMap::new(),
            idle,
            _monitor: monitor,
            status: watch::Sender::new(status),
        })
    }

    /// A view of what the worker is doing, updated as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Serves the supervisor until `shutdown` resolves or the supervisor refuses this worker.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
        tokio::pin!(shutdown);
        let mut backoff = FIRST_BACKOFF;
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
                    // Nobody to tell: results wait for the next connection, and the hello
                    // carries whether the machine is idle.
                    if let Some(msg @ (WorkerMsg::Result { replica, .. } | WorkerMsg::Failure { replica, .. })) = self.on_wake(wake) {
                        self.unreported.insert(replica, msg);
                    }
                    continue;
                }
            };
            let end = match connected {
                Ok(ws) => {
                    let (end, welcomed) = self.session(ws, &mut shutdown).await;
                    if welcomed {
                        backoff = FIRST_BACKOFF;
                    }
                    end
                }
                Err(e) => SessionEnd::Disconnected(e),
            };
            self.status.send_modify(|s| s.connected = false);
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Refused(why) => {
                    self.cancel_all();
                    return Err(ClientError::Refused(why));
                }
                SessionEnd::Disconnected(why) => {
                    let wait = jitter(backoff);
                    warn!(
                        "disconnected from {}: {why}; retrying in {} ms",
                        self.cfg.server,
                        wait.as_millis()
                    );
                    attempt = Box::pin(connect(self.cfg.server.clone(), wait));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.cancel_all();
        info!("worker stopped");
        Ok(())
    }

    /// Applies a wake-up to the policy and the tasks; returns the message the supervisor must
    /// get now, if any.
    fn on_wake(&mut self, wake: Wake) -> Option<WorkerMsg> {
        let now = Instant::now();
        let (transition, at) = match wake {
            Wake::Shutdown => return None,
            Wake::Finished(done) => return self.outcome(done),
            Wake::Observation(obs) => {
                self.status.send_modify(|s| s.last_activity = Some(obs));
                (self.idle.handle_activity(now, obs.kind), obs.at)
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
        match transition? {
            Transition::BecameBusy(why) => {
                for ctl in self.running.values() {
                    ctl.pause();
                }
                let paused_at = Instant::now();
                self.status.send_modify(|s| s.paused_at = Some(paused_at));
                let kind = match why {
                    Busy::Owner(kind) => kind,
                    Busy::OnBattery => ActivityKind::OnBattery,
                    // The policy starts busy rather than becoming so; the hello said it.
                    Busy::Starting => return None,
                };
                info!(
                    kind = kind.as_str(),
                    tasks = self.running.len(),
                    "owner active: tasks paused"
                );
                Some(WorkerMsg::Activity {
                    kind,
                    at_ms: unix_ms_at(at),
                })
            }
            Transition::BecameIdle => {
                for ctl in self.running.values() {
                    ctl.resume();
                }
                info!(tasks = self.running.len(), "machine idle: computing");
                Some(WorkerMsg::Available {
                    at_ms: unix_ms_at(now),
                })
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.idle.state() == IdleState::Idle
    }

    fn cancel_all(&mut self) {
        for (_, ctl) in self.running.drain() {
            ctl.cancel();
        }
        self.status.send_modify(|s| s.running = 0);
    }

    /// What this worker still holds: running replicas and unreported outcomes.
    fn held(&self) -> Vec<ReplicaId> {
        let mut held: Vec<ReplicaId> = self
            .running
            .keys()
            .chain(self.unreported.keys())
            .copied()
            .collect();
        held.sort();
        held.dedup();
        held
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
        if let Err(e) = send(&mut ws, &hello).await {
            return (SessionEnd::Disconnected(e), false);
        }
        let heartbeat = match tokio::time::timeout(CONNECT_TIMEOUT, welcome(&mut ws)).await {
            Err(_) => {
                return (
                    SessionEnd::Disconnected("no welcome within 10 s".into()),
                    false,
                );
            }
            Ok(Err(end)) => return (end, false),
            Ok(Ok((heartbeat_ms, keep, drop))) => {
                let forget: Vec<ReplicaId> = self
                    .held()
                    .into_iter()
                    .filter(|r| !keep.contains(r))
                    .collect();
                for r in &forget {
                    if let Some(ctl) = self.running.remove(r) {
                        ctl.cancel();
                    }
                    self.unreported.remove(r);
                }
                info!(
                    server = %self.cfg.server,
                    heartbeat_ms,
                    kept = keep.len(),
                    dropped = drop.len(),
                    "connected to supervisor"
                );
                Duration::from_millis(heartbeat_ms.max(1))
            }
        };
        self.status.send_modify(|s| {
            s.connected = true;
            s.running = self.running.len();
        });
        // Outcomes that waited for this connection.
        let pending: Vec<(ReplicaId, WorkerMsg)> =
            std::mem::take(&mut self.unreported).into_iter().collect();
        for (r, msg) in pending {
            if let Err(e) = send(&mut ws, &msg).await {
                self.unreported.insert(r, msg);
                return (SessionEnd::Disconnected(e), true);
            }
        }
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let deadline = self.idle.poll_timeout();
            tokio::select! {
                biased;
                wake = self.inbox.next(shutdown, deadline) => {
                    if matches!(wake, Wake::Shutdown) {
                        let _ = ws.close(None).await;
                        break SessionEnd::Shutdown;
                    }
                    if let Some(msg) = self.on_wake(wake)
                        && let Err(e) = send(&mut ws, &msg).await
                    {
                        if let WorkerMsg::Result { replica, .. } | WorkerMsg::Failure { replica, .. } = &msg {
                            self.unreported.insert(*replica, msg);
                        }
                        break SessionEnd::Disconnected(e);
                    }
                }
                frame = ws.next() => match frame {
                    None => break SessionEnd::Disconnected("connection closed".into()),
                    Some(Err(e)) => break SessionEnd::Disconnected(e.to_string()),
                    Some(Ok(Message::Text(text))) => match proto::decode_supervisor(&text) {
                        Ok(msg) => {
                            if let Some(end) = self.on_message(&mut ws, msg).await {
                                break end;
                            }
                        }
                        Err(e) => break SessionEnd::Disconnected(format!("supervisor sent a bad frame: {e}")),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into());
                        break SessionEnd::Disconnected(format!("supervisor closed the connection: {why}"));
                    }
                    Some(Ok(_)) => {}
                },
                _ = beat.tick() => {
                    let progress = self
                        .running
                        .iter()
                        .map(|(r, ctl)| Progress { replica: *r, fraction: ctl.progress() })
                        .collect();
                    if let Err(e) = send(&mut ws, &WorkerMsg::Heartbeat { progress }).await {
                        break SessionEnd::Disconnected(e);
                    }
                }
            }
        };
        (end, true)
    }

    /// Turns a finished replica into the message to send, if any.
    fn outcome(&mut self, done: Finished) -> Option<WorkerMsg> {
        // A replica we no longer hold was cancelled or dropped: nobody wants its outcome.
        self.running.remove(&done.replica)?;
        self.status.send_modify(|s| s.running = self.running.len());
        match done.outcome {
            Ok(output) => {
                debug!(replica = %done.replica, wall_ms = done.execution.wall_ms, "replica finished");
                Some(WorkerMsg::Result {
                    replica: done.replica,
                    output: proto::Payload::Inline(output),
                    execution: done.execution,
                })
            }
            Err(Failure::Error(error)) => {
                warn!(replica = %done.replica, "replica failed: {error}");
                Some(WorkerMsg::Failure {
                    replica: done.replica,
                    error,
                    execution: done.execution,
                })
            }
            Err(Failure::Cancelled) => None,
        }
    }

    /// Acts on one message from the supervisor. `Some` ends the session.
    async fn on_message(&mut self, ws: &mut Ws, msg: SupervisorMsg) -> Option<SessionEnd> {
        match msg {
            SupervisorMsg::Assign(a) => {
                if !self.running.contains_key(&a.replica) {
                    info!(job = %a.job, task = %a.task, replica = %a.replica, kind = %a.kind, "task assigned");
                    let replica = a.replica;
                    let ctl = self.executor.start(a);
                    // Assigned while the owner is here (crossed with our Activity): it waits.
                    if !self.is_idle() {
                        ctl.pause();
                    }
                    self.running.insert(replica, ctl);
                    self.status.send_modify(|s| s.running = self.running.len());
                }
            }
            SupervisorMsg::Cancel { replica, reason } => {
                if let Some(ctl) = self.running.remove(&replica) {
                    info!(%replica, "task cancelled: {reason}");
                    ctl.cancel();
                    self.status.send_modify(|s| s.running = self.running.len());
                }
                self.unreported.remove(&replica);
            }
            SupervisorMsg::StatusRequest { nonce } => {
                if let Err(e) = send(ws, &WorkerMsg::StatusAck { nonce }).await {
                    return Some(SessionEnd::Disconnected(e));
                }
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
            SupervisorMsg::ResultAck { replica } => debug!(%replica, "result acknowledged"),
        }
        None
    }
}

async fn send(ws: &mut Ws, msg: &WorkerMsg) -> Result<(), String> {
    ws.send(Message::text(proto::encode(msg)))
        .await
        .map_err(|e| e.to_string())
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

/// Waits for the welcome. A fatal refusal of this worker ends the client.
async fn welcome(ws: &mut Ws) -> Result<(u64, Vec<ReplicaId>, Vec<ReplicaId>), SessionEnd> {
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
                ..
            }) => return Ok((heartbeat_ms, keep, drop)),
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
