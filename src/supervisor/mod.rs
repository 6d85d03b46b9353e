//! The supervisor's I/O shell around the scheduler: the WebSocket endpoint for workers, the HTTP
//! API for operators, the durable store, and the driver that connects them.
//!
//! Threads and tasks:
//! - the **driver** runs on its own thread (a single-threaded tokio runtime) and alone owns the
//!   [`crate::sched::Scheduler`] and the [`store::Store`]; it `select!`s over connection events,
//!   API requests and the scheduler's next deadline. SQLite writes block only this thread.
//! - each worker connection is a task (`ws`), which authenticates the hello, decodes frames and
//!   forwards them; it owns nothing else;
//! - HTTP handlers (`http`) check the operator token and ask the driver; the dashboard's
//!   (`dashboard`) check a session cookie instead and render HTML from the same answers.
//!
//! Nothing here decides where a task runs; that is `sched`'s job.

mod auth;
mod dashboard;
mod driver;
mod histogram;
pub(crate) mod http;
pub mod limits;
mod metrics;
pub mod probe;
pub mod report;
pub mod store;
mod tls;
pub mod volunteers;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

pub use auth::{
    TokenError, generate_token, load_or_create_token, local_operator_token_path, read_token,
    save_local_operator_token,
};
use driver::DriverMsg;
pub use driver::{IssuedToken, Revoked, TokenView};

use crate::proto::{ActivityKind, JobId, ReplicaId, TaskId, WorkerId};
use crate::sched;

/// Smallest and largest heartbeat interval a supervisor accepts.
pub const HEARTBEAT_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=600_000;

/// How often a worker's link is measured unless configured otherwise (and once at join).
pub const DEFAULT_LINK_PROBE: Duration = Duration::from_secs(600);

/// Largest HTTP request body (a job submission), in bytes.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Everything a supervisor needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub sched: sched::Config,
    /// Token every worker must present in its hello.
    pub worker_token: String,
    /// Token operators present as `Authorization: Bearer ...`.
    pub operator_token: String,
    /// Largest task output (JSON text) accepted; a larger one fails its replica.
    pub max_output_bytes: u64,
    /// How often each worker's link is measured (and at join); `None`: never. While links are
    /// probed, a worker gets tasks only once its link is measured and no slower than
    /// `sched.min_link_kbps` (`sched.require_link` is set from this at start).
    pub link_probe: Option<Duration>,
    /// Serve `https://` and `wss://` with this certificate; `None`: plain HTTP and WebSocket.
    pub tls: Option<crate::tls::ServerTls>,
    /// Abuse limits on the worker port.
    pub limits: limits::Limits,
}

impl Config {
    /// A config whose tokens are read from (or created in) `data_dir`: `worker.token` and
    /// `operator.token`.
    pub fn with_tokens_in(data_dir: &Path, sched: sched::Config) -> Result<Self, SupervisorError> {
        std::fs::create_dir_all(data_dir).map_err(|source| SupervisorError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            worker_token: load_or_create_token(&data_dir.join("worker.token"))?,
            operator_token: load_or_create_token(&data_dir.join("operator.token"))?,
            max_output_bytes: crate::proto::DEFAULT_MAX_OUTPUT_BYTES,
            link_probe: Some(DEFAULT_LINK_PROBE),
            tls: None,
            limits: limits::Limits::default(),
            sched,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("heartbeat interval {0} ms is outside 1 ms ..= 10 min")]
    Heartbeat(u128),
    #[error("cannot start the driver thread: {0}")]
    Thread(std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Something that happened, for in-process observers (benchmarks, the demo, tests). Sent on a
/// broadcast channel: a slow observer misses events, it never slows the supervisor.
#[derive(Debug, Clone)]
pub enum Event {
    WorkerJoined {
        worker: WorkerId,
        name: String,
    },
    WorkerLost {
        worker: WorkerId,
        cause: String,
    },
    /// A worker's link was measured (at join, then every `link_probe`).
    LinkMeasured {
        worker: WorkerId,
        link: sched::Link,
        rtt: Duration,
        /// A leg hit its time limit: the figures are lower bounds.
        cut_short: bool,
    },
    /// A replica was sent to a worker, at `at`.
    Assigned {
        at: Instant,
        job: JobId,
        task: TaskId,
        replica: ReplicaId,
        worker: WorkerId,
        /// `first`, `redundant` or `reissue`.
        reason: &'static str,
        detail: Option<String>,
    },
    Activity {
        at: Instant,
        worker: WorkerId,
        kind: ActivityKind,
        at_ms: u64,
    },
    /// A job was stored and handed to the scheduler.
    JobSubmitted {
        job: JobId,
    },
    TaskDone {
        job: JobId,
        task: TaskId,
        worker: WorkerId,
    },
    JobFinished {
        job: JobId,
        state: &'static str,
    },
}

/// Why no event came.
#[derive(Debug, thiserror::Error)]
pub enum EventWaitError {
    #[error("timed out waiting for the supervisor")]
    TimedOut,
    #[error("the supervisor stopped")]
    Stopped,
}

/// The next event on a subscription, waiting until `deadline` at most. A subscriber that fell
/// behind skips what it missed.
pub async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    deadline: Instant,
) -> Result<Event, EventWaitError> {
    loop {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Err(_) => return Err(EventWaitError::TimedOut),
            Ok(Ok(ev)) => return Ok(ev),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err(EventWaitError::Stopped),
        }
    }
}

/// A running supervisor.
pub struct Supervisor {
    addr: SocketAddr,
    events: broadcast::Sender<Event>,
    driver_tx: mpsc::Sender<DriverMsg>,
    stop: Option<oneshot::Sender<()>>,
    closing: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    driver: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    /// Opens the store in the data dir, resumes its unfinished jobs and serves on `listener`.
    pub async fn start(
        listener: tokio::net::TcpListener,
        mut cfg: Config,
    ) -> Result<Supervisor, SupervisorError> {
        // Without probes no link is ever measured: requiring one would starve every worker.
        cfg.sched.require_link = cfg.link_probe.is_some();
        let hb = cfg.sched.heartbeat.as_millis();
        if !HEARTBEAT_RANGE_MS.contains(&(hb as u64)) {
            return Err(SupervisorError::Heartbeat(hb));
        }
        let addr = listener.local_addr().map_err(SupervisorError::Serve)?;
        let (events, _) = broadcast::channel(4096);
        let (driver_tx, driver_rx) = mpsc::channel(4096);
        let guard = limits::Guard::new(cfg.limits);
        let (driver, credentials) = driver::spawn(&cfg, driver_rx, events.clone(), guard.clone())?;
        let (uploads, outputs) = driver::bulk_dirs(&cfg.data_dir);
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let state = http::AppState {
            driver: driver_tx.clone(),
            conn: std::sync::Arc::new(ws::ConnContext {
                credentials,
                guard,
                uploads,
                // A leg may take the loss bound: by then the worker's heartbeats (or the probe
                // traffic itself) have shown it alive.
                probe: cfg
                    .link_probe
                    .map(|every| probe::ProbeConfig::new(every, cfg.sched.loss_after())),
            }),
            operator_token: cfg.operator_token.clone().into(),
            next_conn: Default::default(),
            outputs: outputs.into(),
            max_output_bytes: cfg.max_output_bytes,
            uploading: Default::default(),
            sessions: Default::default(),
            events: events.clone(),
            closing: closing_rx,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(state);
        let stopped = async move {
            let _ = stopped.await;
        };
        let server = match cfg.tls {
            Some(server_tls) => tokio::spawn(tls::serve(listener, app, server_tls, stopped)),
            None => tokio::spawn(async move {
                use axum::serve::ListenerExt;
                // Small frames matter more than throughput here: an Assign or Activity must not
                // wait for Nagle's timer.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
        };
        // Workers that ran replicas before a restart get their grace from now on, when their
        // reconnects can be accepted, not from when the store was read.
        let _ = driver_tx.send(DriverMsg::Serving).await;
        Ok(Supervisor {
            addr,
            events,
            driver_tx,
            stop: Some(stop),
            closing,
            server,
            driver: Some(driver),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A stream of what happens from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stops serving, closes every worker connection and waits for the driver to finish its
    /// writes.
    pub async fn shutdown(mut self) -> Result<(), SupervisorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.closing.send(true);
        let _ = self.driver_tx.send(DriverMsg::Shutdown).await;
        // Graceful shutdown waits for open WebSocket connections; the driver closes them above,
        // but a worker that never answers must not hold the supervisor up.
        match tokio::time::timeout(Duration::from_secs(5), &mut self.server).await {
            Ok(Ok(result)) => result.map_err(SupervisorError::Serve)?,
            Ok(Err(_)) | Err(_) => self.server.abort(),
        }
        if let Some(driver) = self.driver.take() {
            let _ = tokio::task::spawn_blocking(move || driver.join()).await;
        }
        Ok(())
    }
}

/// Serves until `shutdown` resolves: the shape `main` and tests use.
pub async fn run(
    listener: tokio::net::TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SupervisorError> {
    let sup = Supervisor::start(listener, cfg).await?;
    shutdown.await;
    sup.shutdown().await
}

/// The first line `serve` prints: scripts, tests and the chaos bench read the address from it
/// (with [`parse_listening_line`]) when `--listen` ends in `:0`. Under TLS it says `https://`
/// and `wss://`.
pub fn listening_line(addr: SocketAddr, tls: bool) -> String {
    let s = if tls { "s" } else { "" };
    format!("idlegrid-supervisor listening on http{s}://{addr} (workers: ws{s}://{addr}/worker)")
}

/// The address in a [`listening_line`], plain or TLS.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let rest = rest
        .strip_prefix("https://")
        .or_else(|| rest.strip_prefix("http://"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Milliseconds since the Unix epoch, for stored timestamps.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_names_its_scheme_and_parses_back_either_way() {
        let addr: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let plain = listening_line(addr, false);
        assert!(
            plain.contains("http://127.0.0.1:7400") && plain.contains("ws://127.0.0.1:7400/worker")
        );
        let tls = listening_line(addr, true);
        assert!(
            tls.contains("https://127.0.0.1:7400") && tls.contains("wss://127.0.0.1:7400/worker")
        );
        assert_eq!(parse_listening_line(&plain), Some(addr));
        assert_eq!(parse_listening_line(&tls), Some(addr));
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(parse_listening_line(&listening_line(v6, true)), Some(v6));
        assert_eq!(parse_listening_line("worker token: /x"), None);
    }
}
