//! The worker's engine: one connection to the supervisor at a time, heartbeats, and the life of
//! each assigned replica (start, progress, result, cancel).
//!
//! Replicas outlive connections: when the connection drops, tasks keep computing and results
//! wait; the engine reconnects with backoff, says in its hello what it still holds, and obeys
//! the supervisor's keep/drop answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::executor::{Executor, Failure, Finished};
use super::{ClientConfig, ClientError};
use crate::proto::{self, ErrorCode, Hardware, Progress, ReplicaId, SupervisorMsg, WorkerMsg};
use crate::runtime::TaskControl;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a session with the supervisor ended.
enum SessionEnd {
    /// The connection is gone; try again.
    Disconnected(String),
    /// The supervisor refused this worker for good (token, protocol version).
    Refused(String),
    Shutdown,
}

pub struct Engine {
    cfg: ClientConfig,
    hardware: Hardware,
    executor: Executor,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    running: HashMap<ReplicaId, Arc<TaskControl>>,
    /// Finished replicas whose outcome the supervisor has not received yet.
    unreported: BTreeMap<ReplicaId, WorkerMsg>,
}

impl Engine {
    pub fn new(cfg: ClientConfig, hardware: Hardware) -> Result<Self, ClientError> {
        let (tx, finished_rx) = mpsc::unbounded_channel();
        let executor = Executor::new(cfg.slots as usize, tx).map_err(ClientError::Threads)?;
        Ok(Self {
            cfg,
            hardware,
            executor,
            finished_rx,
            running: HashMap::new(),
            unreported: BTreeMap::new(),
        })
    }

    /// Serves the supervisor until `shutdown` resolves or the supervisor refuses this worker.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        tokio::pin!(shutdown);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let connected = tokio::select! {
                () = &mut shutdown => break,
                c = connect(&self.cfg.server) => c,
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
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.cancel_all();
        info!("worker stopped");
        Ok(())
    }

    fn cancel_all(&mut self) {
        for (_, ctl) in self.running.drain() {
            ctl.cancel();
        }
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
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> (SessionEnd, bool) {
        let hello = WorkerMsg::Hello {
            protocol: proto::PROTOCOL_VERSION,
            worker: self.cfg.worker_id.clone(),
            name: self.cfg.name.clone(),
            token: self.cfg.token.clone(),
            hardware: self.hardware.clone(),
            held: self.held(),
        };
        if let Err(e) = ws.send(Message::text(proto::encode(&hello))).await {
            return (SessionEnd::Disconnected(e.to_string()), false);
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
                for r in drop.iter().chain(
                    self.held()
                        .iter()
                        .filter(|r| !keep.contains(r) && !drop.contains(r)),
                ) {
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
        // Outcomes that waited for this connection.
        let pending: Vec<(ReplicaId, WorkerMsg)> =
            std::mem::take(&mut self.unreported).into_iter().collect();
        for (r, msg) in pending {
            if let Err(e) = ws.send(Message::text(proto::encode(&msg))).await {
                self.unreported.insert(r, msg);
                return (SessionEnd::Disconnected(e.to_string()), true);
            }
        }
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                () = shutdown.as_mut() => {
                    let _ = ws.close(None).await;
                    break SessionEnd::Shutdown;
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
                    if let Err(e) = ws.send(Message::text(proto::encode(&WorkerMsg::Heartbeat { progress }))).await {
                        break SessionEnd::Disconnected(e.to_string());
                    }
                }
                Some(done) = self.finished_rx.recv() => {
                    if let Some(msg) = self.outcome(done) {
                        let text = proto::encode(&msg);
                        if let Err(e) = ws.send(Message::text(text)).await {
                            if let WorkerMsg::Result { replica, .. } | WorkerMsg::Failure { replica, .. } = &msg {
                                self.unreported.insert(*replica, msg);
                            }
                            break SessionEnd::Disconnected(e.to_string());
                        }
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
        match done.outcome {
            Ok(output) => {
                debug!(replica = %done.replica, wall_ms = done.execution.wall_ms, "replica finished");
                Some(WorkerMsg::Result {
                    replica: done.replica,
                    output,
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
                    self.running.insert(replica, ctl);
                }
            }
            SupervisorMsg::Cancel { replica, reason } => {
                if let Some(ctl) = self.running.remove(&replica) {
                    info!(%replica, "task cancelled: {reason}");
                    ctl.cancel();
                }
                self.unreported.remove(&replica);
            }
            SupervisorMsg::StatusRequest { nonce } => {
                let ack = proto::encode(&WorkerMsg::StatusAck { nonce });
                if let Err(e) = ws.send(Message::text(ack)).await {
                    return Some(SessionEnd::Disconnected(e.to_string()));
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
        }
        None
    }
}

async fn connect(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(proto::MAX_FRAME_BYTES))
        .max_frame_size(Some(proto::MAX_FRAME_BYTES));
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
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
