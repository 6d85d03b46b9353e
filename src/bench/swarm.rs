//! `idlegrid-supervisor bench swarm`: thousands of simulated workers in this one process, each a
//! real WebSocket connection speaking the real protocol to a real supervisor process
//! (`idlegrid-supervisor serve`, started here on 127.0.0.1 with a temporary data dir).
//!
//! A simulated worker says hello with the pool's worker token, sends a heartbeat every interval
//! and answers each `Assign` of a `spin` task with the output the kernel would compute
//! (`{"spun_ms": N}`) after holding it N ms (a sleep: the swarm burns no CPU for its tasks). The
//! bench keeps the pool busy with jobs submitted over the operator API.
//!
//! What is measured, and how:
//! - from the workers' side: completions (a `ResultAck` received) per second; assignment to
//!   acknowledgement, result to acknowledgement (a round trip through the supervisor's driver
//!   and its store) and result to the next assignment; connection failures and drops;
//! - heartbeats: the protocol has no heartbeat answer, so no heartbeat round trip exists. Each
//!   heartbeat goes with a WebSocket ping, which the supervisor's connection task answers (not
//!   its driver): that round trip is measured, and so are the gaps between the heartbeats the
//!   swarm actually sent (the swarm's own health: a late heartbeat is the swarm's fault);
//! - false loss: a worker the supervisor declares lost is sent an `Error` ("worker declared
//!   lost") before its connection is closed; those received by heartbeating workers are false
//!   losses. The supervisor's own count (`workers_lost`, reissues by cause, from `/api/stats`)
//!   is printed beside them;
//! - the supervisor's CPU (utime + stime from /proc/PID/stat over the measured window) and RSS
//!   (VmRSS before the workers joined and at the end, VmHWM).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Latency;
use crate::job::{JobSpec, TaskSpec};
use crate::operator::Operator;
use crate::proto::{
    self, Assignment, Execution, Hardware, JobId, Payload, ReplicaId, SupervisorMsg, TaskId,
    WorkerId, WorkerMsg,
};

/// What the supervisor tells a worker it declared lost, before closing its connection.
const LOST_NOTICE: &str = "worker declared lost";
/// Connections opened at once while the swarm joins.
const CONNECT_CONCURRENCY: usize = 200;
/// File descriptors kept beyond one per connection (runtime, log files, HTTP client).
const FD_MARGIN: u64 = 256;

#[derive(clap::Args, Debug, Clone)]
pub struct SwarmArgs {
    /// Simulated workers, each its own WebSocket connection.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub workers: u32,
    /// Heartbeat interval of the supervisor (and so of the workers), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub heartbeat_ms: u64,
    /// Heartbeats a worker may miss before the supervisor declares it lost.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub miss_limit: u32,
    /// Length of the measured window, once every worker has joined.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_s: u64,
    /// Size of each task (`spin`, whose unit is the millisecond: a multiple of 1000). 0: no-op
    /// tasks. The simulated worker holds a task this long without computing.
    #[arg(long, default_value_t = 0, value_parser = parse_task_us)]
    pub task_us: u64,
    /// Submit tasks at this rate. Absent: keep every worker busy (a backlog of two tasks per
    /// worker, at least 1,000 and at least two jobs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks_per_s: Option<u32>,
    /// Tasks per submitted job. Large jobs stall the supervisor while it stores them (see the
    /// README); the default measures steady work, not ingestion.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub job_tasks: u64,
    /// Workers (of --workers) that say hello and then go silent: a control, each must be
    /// declared lost (and is not counted as a false loss).
    #[arg(long, default_value_t = 0)]
    pub silent: u32,
    /// Kill the supervisor (SIGKILL) this many seconds into the window and start it again on the
    /// same data dir and port; the workers reconnect and send their unacknowledged results
    /// again. After the window, every acknowledged job is waited for and checked.
    #[arg(long)]
    pub kill_at_s: Option<u64>,
    /// Keep the supervisor's data dir and log (its path is printed on stderr).
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_task_us(s: &str) -> Result<u64, String> {
    let us: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of microseconds"))?;
    if !us.is_multiple_of(1000) || us > 3_600_000_000 {
        return Err(format!(
            "--task-us {us}: the spin kernel counts whole milliseconds, so a multiple of 1000 \
             up to an hour (3600000000)"
        ));
    }
    Ok(us)
}

/// Everything the run needs: the arguments and which supervisor program to start.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    pub args: SwarmArgs,
    /// The `idlegrid-supervisor` binary (default: this program).
    pub supervisor_program: Option<PathBuf>,
}

/// The file-descriptor limit as found and as raised.
#[derive(Debug, Clone, Serialize)]
pub struct FdLimit {
    /// What the workers need in this process (and the supervisor in its own).
    pub needed: u64,
    pub soft_before: u64,
    pub soft_after: u64,
    pub hard: u64,
    pub enough: bool,
}

/// A set of latencies in ms, with how many samples they come from.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    fn of(samples: &[f64]) -> Self {
        let l = Latency::of(samples);
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        Self {
            samples: samples.len(),
            p50_ms: finite(l.p50),
            p99_ms: finite(l.p99),
            max_ms: finite(l.max),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorFigures {
    pub pid: u32,
    /// CPU time over the measured window, as a percentage of one core.
    pub cpu_percent: f64,
    pub rss_kb_before_workers: u64,
    pub rss_kb_end: u64,
    pub rss_kb_peak: u64,
    /// VmRSS at the end over the number of workers.
    pub rss_kb_per_worker: f64,
    /// (VmRSS at the end - VmRSS before any worker joined) over the number of workers.
    pub rss_kb_added_per_worker: f64,
    /// From `/api/stats` at the end of the window.
    pub workers_lost: u64,
    pub reissues: serde_json::Value,
    /// Heartbeats from arrival (the connection's reader) to being handled by the driver, over
    /// the supervisor's life (`/api/stats`): the bucket bound the p99 falls in, and the maximum.
    pub heartbeat_lateness_p99_ms_at_most: Option<f64>,
    pub heartbeat_lateness_max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmReport {
    pub workers: u32,
    pub heartbeat_ms: u64,
    pub miss_limit: u32,
    pub duration_s: f64,
    pub task_us: u64,
    pub tasks_per_s_asked: Option<u32>,
    pub fd_limit: FdLimit,
    pub connected: usize,
    pub connect_failures: usize,
    /// First connection error seen, if any.
    pub connect_error: Option<String>,
    pub join_s: f64,
    /// Heartbeating workers whose connection ended before the bench stopped them.
    pub dropped: usize,
    pub tasks_submitted: u64,
    pub jobs: Vec<JobId>,
    /// Results acknowledged by the supervisor within the window.
    pub completed: u64,
    pub completions_per_s: f64,
    pub assign_to_ack: Figures,
    pub result_to_ack: Figures,
    pub result_to_next_assign: Figures,
    /// Gaps between consecutive heartbeats the swarm sent (should be the interval).
    pub heartbeat_gap: Figures,
    /// WebSocket ping sent with each heartbeat to its pong (answered by the supervisor's
    /// connection task, not its driver: the protocol does not answer heartbeats).
    pub ws_ping_rtt: Figures,
    /// `Error` "worker declared lost" received by heartbeating workers.
    pub false_loss_notices: u64,
    pub control_silent: u32,
    /// Of the silent control workers, how many were declared lost.
    pub control_lost_detected: u64,
    pub cancels_received: u64,
    /// Results in the store that were checked against the spin output, and those that differ.
    pub results_checked: u64,
    pub results_wrong: u64,
    /// CPU of this process (the swarm) over the window, % of one core.
    pub swarm_cpu_percent: f64,
    /// With `--kill-at-s`: what the kill and the restart did to acknowledged work.
    pub restart: Option<RestartFigures>,
    /// The supervisor process running at the end (after a restart, the second one; its CPU
    /// figure is both processes' over the window).
    pub supervisor: SupervisorFigures,
}

/// `--kill-at-s`: the supervisor killed with SIGKILL inside the window and started again on the
/// same data dir and port; every job acknowledged until the end of the window is then waited for.
#[derive(Debug, Clone, Serialize)]
pub struct RestartFigures {
    /// When the kill came, seconds into the window.
    pub killed_at_s: f64,
    /// From the kill to the new supervisor listening.
    pub restart_s: f64,
    /// Connections the workers made again.
    pub reconnects: u64,
    /// Jobs whose submission was answered before the kill.
    pub jobs_acknowledged_before_kill: usize,
    /// Results the workers had an acknowledgement for before the kill...
    pub results_acknowledged_before_kill: u64,
    /// ...and of those, the ones not in the store at the end with the right output (must be 0).
    pub of_those_missing_or_changed: u64,
    /// Jobs acknowledged over the whole window, and of those the ones not finished within two
    /// minutes after it (must be 0).
    pub jobs_acknowledged: usize,
    pub jobs_unfinished: usize,
    /// How long the acknowledged jobs took to finish after the window.
    pub drain_s: f64,
    /// Tasks of acknowledged jobs with no stored result (must be 0).
    pub tasks_without_result: u64,
    /// Tasks the store records as won by two replicas (must be 0).
    pub tasks_won_twice: u64,
    /// Tasks whose result a worker got acknowledged more than once (a result sent again after
    /// the reconnect is acknowledged again and changes nothing).
    pub results_acknowledged_again: u64,
}

/// Counters every simulated worker updates.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    /// The supervisor is being killed and restarted: a dropped connection is made again.
    restarting: AtomicBool,
    welcomed: AtomicUsize,
    failed: AtomicUsize,
    acked_total: AtomicU64,
    acked_window: AtomicU64,
    cancels: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(e);
        }
    }
}

/// What one simulated worker saw, in ms samples taken inside the window.
#[derive(Default)]
struct WorkerLog {
    welcomed: bool,
    dropped: bool,
    lost_notice: bool,
    assign_to_ack: Vec<f64>,
    result_to_ack: Vec<f64>,
    result_to_next_assign: Vec<f64>,
    heartbeat_gap: Vec<f64>,
    ping_rtt: Vec<f64>,
    /// Connections made again after the supervisor was killed.
    reconnects: u32,
    /// Acknowledged results (with `record_acks`): when, of which task.
    acked: Vec<(Instant, JobId, TaskId)>,
}

struct WorkerSetup {
    index: u32,
    url: String,
    token: String,
    heartbeat: Duration,
    silent: bool,
    /// Keep every acknowledgement (when, which task), for the restart check.
    record_acks: bool,
    shared: Arc<Shared>,
    connect_gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    epoch: Instant,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and says hello; returns the connection and the welcome's `keep` and `drop`.
async fn connect(
    setup: &WorkerSetup,
    held: Vec<ReplicaId>,
) -> Result<(Ws, Vec<ReplicaId>, Vec<ReplicaId>), String> {
    let _permit = setup
        .connect_gate
        .acquire()
        .await
        .map_err(|_| "connect gate closed".to_owned())?;
    // Small buffers: thousands of connections live in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(proto::MAX_FRAME_BYTES));
    let attempt =
        tokio_tungstenite::connect_async_with_config(setup.url.as_str(), Some(config), true);
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => return Err("connect timed out after 30 s".into()),
    };
    let id = format!("swarm-{}", setup.index);
    let hello = WorkerMsg::Hello {
        protocol: proto::PROTOCOL_VERSION,
        worker: WorkerId(id.clone()),
        name: id,
        token: setup.token.clone(),
        hardware: Hardware {
            cores: 1,
            memory_mb: 1024,
            disk_mb: 1024,
            os: "swarm".into(),
            slots: 1,
            bench_mops: 100.0,
        },
        held,
        available: true,
    };
    ws.send(Message::text(proto::encode(&hello)))
        .await
        .map_err(|e| format!("cannot send hello: {e}"))?;
    let welcome = async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(t)) => match proto::decode_supervisor(&t) {
                    Ok(SupervisorMsg::Welcome { keep, drop, .. }) => return Ok((keep, drop)),
                    Ok(SupervisorMsg::Error { message, .. }) => {
                        return Err(format!("refused: {message}"));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("undecodable frame before welcome: {e}")),
                },
                Ok(_) => {}
                Err(e) => return Err(format!("connection failed before welcome: {e}")),
            }
        }
        Err("connection closed before welcome".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(60), welcome).await {
        Ok(Ok((keep, drop))) => Ok((ws, keep, drop)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no welcome within 60 s".into()),
    }
}

/// The output `spin` computes for this input, and the time it takes; `None` for anything else.
fn spin_output(a: &Assignment) -> Option<(serde_json::Value, Duration)> {
    if a.kind != "spin" {
        return None;
    }
    let ms = a.input.get("ms")?.as_u64()?;
    Some((json!({ "spun_ms": ms }), Duration::from_millis(ms)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a simulated worker holds across connections: tasks not yet done and results not yet
/// acknowledged (sent again after a reconnect, as a real worker's outbox would).
#[derive(Default)]
struct Held {
    /// Tasks held (one slot: normally at most one): when each is done, the task, when assigned.
    queue: VecDeque<(Instant, Assignment, Instant)>,
    /// Results sent and not yet acknowledged: when assigned, when sent, the task, the frame.
    unacked: HashMap<ReplicaId, (Instant, Instant, JobId, TaskId, String)>,
}

impl Held {
    fn replicas(&self) -> Vec<ReplicaId> {
        let mut held: Vec<ReplicaId> = self
            .queue
            .iter()
            .map(|(_, a, _)| a.replica)
            .chain(self.unacked.keys().copied())
            .collect();
        held.sort();
        held.dedup();
        held
    }

    /// Acts on a welcome as a real worker does: tasks not kept stop, results dropped are
    /// forgotten.
    fn on_welcome(&mut self, keep: &[ReplicaId], drop: &[ReplicaId]) {
        self.queue.retain(|(_, a, _)| keep.contains(&a.replica));
        for r in drop {
            self.unacked.remove(r);
        }
    }
}

/// How one connection of a simulated worker ended.
enum SessionEnd {
    /// The bench stopped the swarm.
    Stopped,
    /// The connection ended (closed, reset, or a send failed).
    Dropped,
}

async fn simulated_worker(mut setup: WorkerSetup) -> WorkerLog {
    let mut log = WorkerLog::default();
    let mut held = Held::default();
    let mut ws = match connect(&setup, Vec::new()).await {
        Ok((ws, _, _)) => ws,
        Err(e) => {
            setup.shared.fail(e);
            return log;
        }
    };
    log.welcomed = true;
    setup.shared.welcomed.fetch_add(1, Ordering::Relaxed);
    loop {
        match session(&mut setup, &mut ws, &mut held, &mut log).await {
            SessionEnd::Stopped => break,
            SessionEnd::Dropped if *setup.stop.borrow() => break,
            SessionEnd::Dropped if setup.shared.restarting.load(Ordering::Relaxed) => {
                match reconnect(&mut setup, &mut held).await {
                    Some(again) => {
                        ws = again;
                        log.reconnects += 1;
                    }
                    None => {
                        log.dropped = true;
                        return log;
                    }
                }
            }
            SessionEnd::Dropped => {
                log.dropped = true;
                return log;
            }
        }
    }
    let _ = ws.close(None).await;
    log
}

/// After the supervisor was killed: connects again (every 100 ms, for up to two minutes),
/// saying what it holds, and sends its unacknowledged results again. `None` if it could not.
async fn reconnect(setup: &mut WorkerSetup, held: &mut Held) -> Option<Ws> {
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until && !*setup.stop.borrow() {
        match connect(setup, held.replicas()).await {
            Ok((mut ws, keep, drop)) => {
                held.on_welcome(&keep, &drop);
                for (_, _, _, _, frame) in held.unacked.values() {
                    if ws.feed(Message::text(frame.clone())).await.is_err() {
                        break;
                    }
                }
                if ws.flush().await.is_ok() {
                    return Some(ws);
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// One connection's life: heartbeats, tasks, results, until it ends or the bench stops.
async fn session(
    setup: &mut WorkerSetup,
    ws: &mut Ws,
    held: &mut Held,
    log: &mut WorkerLog,
) -> SessionEnd {
    let shared = setup.shared.clone();
    // Heartbeats spread over the interval, as independent machines' would be.
    let offset = setup
        .heartbeat
        .mul_f64(f64::from(setup.index % 997) / 997.0);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, setup.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<Instant> = None;
    let mut last_result_sent: Option<Instant> = None;
    loop {
        let due = held.queue.front().map(|(t, _, _)| *t);
        let task_timer = async {
            match due {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let measuring = shared.measuring.load(Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = setup.stop.changed() => return SessionEnd::Stopped,
            frame = ws.next() => {
                let now = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Pong(p))) => {
                        if let Ok(b) = <[u8; 8]>::try_from(p.as_ref())
                            && measuring
                        {
                            let sent = Duration::from_micros(u64::from_le_bytes(b));
                            let rtt = now.saturating_duration_since(setup.epoch + sent);
                            log.ping_rtt.push(ms(rtt));
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return SessionEnd::Dropped,
                    Some(Ok(_)) => continue,
                };
                let Ok(msg) = proto::decode_supervisor(&text) else { continue };
                if setup.silent {
                    if let SupervisorMsg::Error { message, .. } = &msg
                        && message.contains(LOST_NOTICE)
                    {
                        log.lost_notice = true;
                    }
                    continue;
                }
                match msg {
                    SupervisorMsg::Assign(a) => {
                        if measuring && let Some(sent) = last_result_sent.take() {
                            log.result_to_next_assign.push(ms(now - sent));
                        }
                        let hold = spin_output(&a).map_or(Duration::ZERO, |(_, d)| d);
                        held.queue.push_back((now + hold, a, now));
                    }
                    SupervisorMsg::ResultAck { replica } => {
                        if let Some((assigned, sent, job, task, _)) = held.unacked.remove(&replica) {
                            shared.acked_total.fetch_add(1, Ordering::Relaxed);
                            if setup.record_acks {
                                log.acked.push((now, job, task));
                            }
                            if measuring {
                                shared.acked_window.fetch_add(1, Ordering::Relaxed);
                                log.assign_to_ack.push(ms(now - assigned));
                                log.result_to_ack.push(ms(now - sent));
                            }
                        }
                    }
                    SupervisorMsg::Cancel { replica, .. } => {
                        shared.cancels.fetch_add(1, Ordering::Relaxed);
                        held.queue.retain(|(_, a, _)| a.replica != replica);
                    }
                    SupervisorMsg::StatusRequest { nonce } => {
                        let ack = WorkerMsg::StatusAck { nonce };
                        if ws.send(Message::text(proto::encode(&ack))).await.is_err() {
                            return SessionEnd::Dropped;
                        }
                    }
                    SupervisorMsg::Error { message, .. } if message.contains(LOST_NOTICE) => {
                        log.lost_notice = true;
                    }
                    _ => {}
                }
            }
            _ = beat.tick(), if !setup.silent => {
                let now = Instant::now();
                if measuring && let Some(last) = last_beat {
                    log.heartbeat_gap.push(ms(now - last));
                }
                last_beat = Some(now);
                let hb = proto::encode(&WorkerMsg::Heartbeat { progress: Vec::new() });
                let stamp = (now - setup.epoch).as_micros() as u64;
                let sent = async {
                    ws.feed(Message::text(hb)).await?;
                    ws.feed(Message::Ping(stamp.to_le_bytes().to_vec().into())).await?;
                    ws.flush().await
                };
                if sent.await.is_err() {
                    return SessionEnd::Dropped;
                }
            }
            () = task_timer => {
                let Some((_, a, assigned)) = held.queue.pop_front() else { continue };
                let now = Instant::now();
                let took = now - assigned;
                let execution = Execution { wall_ms: took.as_millis() as u64, cpu_ms: 0 };
                let msg = match spin_output(&a) {
                    Some((output, _)) => WorkerMsg::Result {
                        replica: a.replica,
                        output: Payload::Inline(output),
                        execution,
                    },
                    None => WorkerMsg::Failure {
                        replica: a.replica,
                        error: format!("the swarm runs only spin tasks, not {:?}", a.kind),
                        execution,
                    },
                };
                let frame = proto::encode(&msg);
                // Held until acknowledged, whatever happens to this connection.
                held.unacked.insert(a.replica, (assigned, now, a.job, a.task, frame.clone()));
                if ws.send(Message::text(frame)).await.is_err() {
                    return SessionEnd::Dropped;
                }
                last_result_sent = Some(now);
            }
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; children started later inherit it.
fn raise_fd_limit(needed: u64) -> FdLimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let before = lim.rlim_cur;
    if got && lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    FdLimit {
        needed,
        soft_before: before,
        soft_after: lim.rlim_cur,
        hard: lim.rlim_max,
        enough: lim.rlim_cur >= needed,
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The supervisor process, killed when dropped.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Server {
    /// Starts `serve` on `listen` over the data dir under `dir` (the same one after a restart),
    /// logging to `dir/log`.
    async fn start(
        program: &Path,
        dir: &Path,
        args: &SwarmArgs,
        listen: &str,
        log: &str,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join(log))?;
        let data = dir.join("data");
        let mut child = Command::new(program)
            .args(["serve", "--listen", listen, "--link-probe-s", "0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--heartbeat-ms", &args.heartbeat_ms.to_string()])
            .args(["--miss-limit", &args.miss_limit.to_string()])
            // Every simulated worker comes from 127.0.0.1, thousands at once: the per-address
            // cap on connections waiting for their hello is for strangers, not for this.
            .args(["--max-pending-per-ip", "100000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} serve", program.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from the supervisor")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let first = tokio::time::timeout(Duration::from_secs(30), rx).await;
        let addr = match first {
            Ok(Ok(Some(Ok(line)))) => crate::supervisor::parse_listening_line(&line),
            _ => None,
        };
        let mut server = Self {
            child,
            addr: "127.0.0.1:0".parse()?,
        };
        match addr {
            Some(a) => server.addr = a,
            None => bail!(
                "the supervisor printed no address line; see {}",
                dir.join("supervisor.log").display()
            ),
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("cannot kill the supervisor")?;
        self.child
            .wait()
            .context("cannot wait for the killed supervisor")?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits jobs of `spin` tasks while the swarm runs: at a fixed rate, or to keep a backlog.
async fn submitter(
    op: Operator,
    args: SwarmArgs,
    shared: Arc<Shared>,
    submitted: Arc<AtomicU64>,
    jobs: Arc<std::sync::Mutex<Vec<(JobId, u64)>>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let workers = u64::from(args.workers - args.silent.min(args.workers)).max(1);
    let chunk = args.job_tasks;
    // Deep enough that the pool never runs dry between two looks (every 5 ms): at 20,000
    // tasks/s, 1,000 tasks last 50 ms. A shallow backlog measures this loop, not the supervisor.
    let backlog = (2 * workers).max(1000).max(2 * chunk);
    let spin_ms = args.task_us / 1000;
    let started = Instant::now();
    let mut n = 0;
    while !*stop.borrow() {
        let done = shared.acked_total.load(Ordering::Relaxed);
        let sent = submitted.load(Ordering::Relaxed);
        let want = match args.tasks_per_s {
            Some(rate) => {
                let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                due.saturating_sub(sent).min(chunk)
            }
            None if sent.saturating_sub(done) < backlog => chunk,
            None => 0,
        };
        if want > 0 {
            let spec = JobSpec {
                name: format!("swarm-{n}"),
                tasks: (0..want)
                    .map(|k| TaskSpec::new(format!("t{k}"), "spin", json!({ "ms": spin_ms })))
                    .collect(),
                ..Default::default()
            };
            match op.submit_owned(spec).await {
                Ok(id) => {
                    n += 1;
                    if let Ok(mut jobs) = jobs.lock() {
                        jobs.push((id, want));
                    }
                    submitted.fetch_add(want, Ordering::Relaxed);
                    continue;
                }
                // Killed on purpose: this job was not acknowledged, so it is not counted (it may
                // be stored all the same: it then runs, unchecked).
                Err(_) if shared.restarting.load(Ordering::Relaxed) => n += 1,
                Err(e) => return Err(e.into()),
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    Ok(())
}

/// The stored results of the jobs, by job: task id -> output.
async fn stored_results(
    op: &Operator,
    jobs: &[(JobId, u64)],
) -> anyhow::Result<HashMap<JobId, serde_json::Map<String, serde_json::Value>>> {
    let mut stored = HashMap::with_capacity(jobs.len());
    for (job, _) in jobs {
        let results = op.results(job).await?;
        let serde_json::Value::Object(map) = results else {
            bail!("the results of job {job} are not an object: {results}");
        };
        stored.insert(job.clone(), map);
    }
    Ok(stored)
}

/// Tasks recorded in the store as won by more than one replica (none may be).
fn tasks_won_twice(data: &Path) -> anyhow::Result<u64> {
    let path = data.join("idlegrid.sqlite3");
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", path.display()))?;
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT job, task FROM replicas WHERE outcome = 'won'
             GROUP BY job, task HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .with_context(|| format!("cannot read the replica records of {}", path.display()))?;
    Ok(n.max(0) as u64)
}

pub async fn run(args: SwarmArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = run_swarm(SwarmOptions {
        args,
        supervisor_program: None,
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

pub async fn run_swarm(opts: SwarmOptions) -> anyhow::Result<SwarmReport> {
    let args = opts.args;
    if let Some(k) = args.kill_at_s
        && k >= args.duration_s
    {
        bail!(
            "--kill-at-s {k} is not inside the window of --duration-s {}",
            args.duration_s
        );
    }
    if args.silent >= args.workers {
        bail!(
            "--silent {} leaves no heartbeating worker of --workers {}",
            args.silent,
            args.workers
        );
    }
    let fd = raise_fd_limit(u64::from(args.workers) + FD_MARGIN);
    if !fd.enough {
        eprintln!(
            "warning: the open-file limit is {} (hard {}), {} workers need about {}: \
             connections beyond it will fail (raise the hard limit: ulimit -Hn)",
            fd.soft_after, fd.hard, args.workers, fd.needed
        );
    }
    let program = match &opts.supervisor_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this program")?,
    };
    let dir = tempfile::Builder::new()
        .prefix("idlegrid-swarm-")
        .tempdir()?;
    let mut server =
        Server::start(&program, dir.path(), &args, "127.0.0.1:0", "supervisor.log").await?;
    let data = dir.path().join("data");
    let token = crate::supervisor::read_token(&data.join("worker.token"))?;
    let op_token = crate::supervisor::read_token(&data.join("operator.token"))?;
    let op = Operator::new(&format!("http://{}", server.addr), &op_token)?;
    let first_pid = server.pid();
    let rss_before = status_kb(first_pid, "VmRSS");

    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let epoch = Instant::now();
    let url = format!("ws://{}/worker", server.addr);
    let join_started = Instant::now();
    let mut handles = Vec::with_capacity(args.workers as usize);
    for index in 0..args.workers {
        let setup = WorkerSetup {
            index,
            url: url.clone(),
            token: token.clone(),
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            silent: index < args.silent,
            record_acks: args.kill_at_s.is_some(),
            shared: shared.clone(),
            connect_gate: gate.clone(),
            stop: stop_rx.clone(),
            epoch,
        };
        handles.push(tokio::spawn(simulated_worker(setup)));
    }
    let n = args.workers as usize;
    let join_limit = Duration::from_secs(60) + Duration::from_millis(20) * args.workers;
    while shared.welcomed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < n {
        if join_started.elapsed() > join_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let join_s = join_started.elapsed().as_secs_f64();

    // The measured window.
    let submitted = Arc::new(AtomicU64::new(0));
    let jobs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (sub_stop_tx, sub_stop_rx) = watch::channel(false);
    let sub = tokio::spawn(submitter(
        op.clone(),
        args.clone(),
        shared.clone(),
        submitted.clone(),
        jobs.clone(),
        sub_stop_rx,
    ));
    // CPU seconds of supervisor processes that ended inside the window.
    let mut cpu_before_restart = 0.0;
    let cpu0 = cpu_seconds(&first_pid.to_string());
    let self0 = cpu_seconds("self");
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    let mut restart = None;
    if let Some(kill_at) = args.kill_at_s {
        tokio::time::sleep(Duration::from_secs(kill_at)).await;
        shared.restarting.store(true, Ordering::Relaxed);
        let jobs_before = jobs.lock().map(|j| j.len()).unwrap_or(0);
        cpu_before_restart =
            cpu_seconds(&first_pid.to_string()).unwrap_or(0.0) - cpu0.unwrap_or(0.0);
        let killed = Instant::now();
        server.kill()?;
        let listen = server.addr.to_string();
        server = Server::start(
            &program,
            dir.path(),
            &args,
            &listen,
            "supervisor-restarted.log",
        )
        .await
        .context("restarting the supervisor after the kill")?;
        restart = Some((killed, jobs_before, killed.elapsed()));
    }
    let cpu_from = match restart {
        Some(_) => Some(0.0),
        None => cpu0,
    };
    let rest = Duration::from_secs(args.duration_s).saturating_sub(t0.elapsed());
    tokio::time::sleep(rest).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let pid = server.pid();
    let pid_s = pid.to_string();
    let cpu1 = cpu_seconds(&pid_s).map(|c| c + cpu_before_restart);
    let self1 = cpu_seconds("self");
    let rss_end = status_kb(pid, "VmRSS");
    let rss_peak = status_kb(pid, "VmHWM");
    let stats = op.stats().await?;

    let _ = sub_stop_tx.send(true);
    match sub.await {
        Ok(r) => r.context("submitting jobs")?,
        Err(e) => bail!("the submitter stopped: {e}"),
    }
    let jobs: Vec<(JobId, u64)> = jobs.lock().map(|j| j.clone()).unwrap_or_default();
    // After a restart, every acknowledged job must finish: the workers go on until they have.
    let mut drain = None;
    if restart.is_some() {
        let drained = Instant::now();
        let until = drained + Duration::from_secs(120);
        let mut unfinished = 0;
        for (job, _) in &jobs {
            loop {
                if op.summary(job).await?.is_finished() {
                    break;
                }
                if Instant::now() > until {
                    unfinished += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drain = Some((drained.elapsed(), unfinished));
    }
    let _ = stop_tx.send(true);
    let mut logs = Vec::with_capacity(n);
    for h in handles {
        logs.push(h.await.context("a simulated worker panicked")?);
    }
    let stored = stored_results(&op, &jobs).await?;
    let want = json!({ "spun_ms": args.task_us / 1000 });
    let results_checked = stored.values().map(|m| m.len() as u64).sum();
    let results_wrong = stored
        .values()
        .flat_map(|m| m.values())
        .filter(|v| **v != want)
        .count() as u64;
    drop(server);
    let restart = match (restart, drain) {
        (Some((killed, jobs_before, restart_took)), Some((drain_took, unfinished))) => {
            let before: Vec<(&JobId, &TaskId)> = logs
                .iter()
                .flat_map(|l| l.acked.iter())
                .filter(|(at, _, _)| *at < killed)
                .map(|(_, job, task)| (job, task))
                .collect();
            let lost = before
                .iter()
                .filter(|(job, task)| {
                    stored
                        .get(*job)
                        .and_then(|m| m.get(task.0.as_str()))
                        .is_none_or(|v| *v != want)
                })
                .count() as u64;
            let mut acks: HashMap<(&JobId, &TaskId), u32> = HashMap::new();
            for (_, job, task) in logs.iter().flat_map(|l| l.acked.iter()) {
                *acks.entry((job, task)).or_default() += 1;
            }
            let missing = jobs
                .iter()
                .map(|(job, tasks)| {
                    let have = stored.get(job).map_or(0, |m| {
                        (0..*tasks)
                            .filter(|k| m.contains_key(&format!("t{k}")))
                            .count() as u64
                    });
                    tasks - have
                })
                .sum();
            Some(RestartFigures {
                killed_at_s: round2(killed.duration_since(t0).as_secs_f64()),
                restart_s: round2(restart_took.as_secs_f64()),
                reconnects: logs.iter().map(|l| u64::from(l.reconnects)).sum(),
                jobs_acknowledged_before_kill: jobs_before,
                results_acknowledged_before_kill: before.len() as u64,
                of_those_missing_or_changed: lost,
                jobs_acknowledged: jobs.len(),
                jobs_unfinished: unfinished,
                drain_s: round2(drain_took.as_secs_f64()),
                tasks_without_result: missing,
                tasks_won_twice: tasks_won_twice(&data)?,
                results_acknowledged_again: acks.values().filter(|n| **n > 1).count() as u64,
            })
        }
        _ => None,
    };
    if args.keep {
        eprintln!(
            "supervisor data dir and log kept in {}",
            dir.keep().display()
        );
    }

    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => ((b - a) / window * 1000.0).round() / 10.0,
        _ => f64::NAN,
    };
    let silent = args.silent as usize;
    let (control, beating) = logs.split_at(silent.min(logs.len()));
    let gather = |f: fn(&WorkerLog) -> &Vec<f64>| -> Vec<f64> {
        beating.iter().flat_map(|l| f(l).iter().copied()).collect()
    };
    let completed = shared.acked_window.load(Ordering::Relaxed);
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    Ok(SwarmReport {
        workers: args.workers,
        heartbeat_ms: args.heartbeat_ms,
        miss_limit: args.miss_limit,
        duration_s: round2(window),
        task_us: args.task_us,
        tasks_per_s_asked: args.tasks_per_s,
        fd_limit: fd,
        connected: logs.iter().filter(|l| l.welcomed).count(),
        connect_failures: shared.failed.load(Ordering::Relaxed),
        connect_error: first_error,
        join_s: round2(join_s),
        dropped: beating.iter().filter(|l| l.dropped).count(),
        tasks_submitted: submitted.load(Ordering::Relaxed),
        jobs: jobs.into_iter().map(|(id, _)| id).collect(),
        completed,
        completions_per_s: round1(completed as f64 / window),
        assign_to_ack: Figures::of(&gather(|l| &l.assign_to_ack)),
        result_to_ack: Figures::of(&gather(|l| &l.result_to_ack)),
        result_to_next_assign: Figures::of(&gather(|l| &l.result_to_next_assign)),
        heartbeat_gap: Figures::of(&gather(|l| &l.heartbeat_gap)),
        ws_ping_rtt: Figures::of(&gather(|l| &l.ping_rtt)),
        false_loss_notices: beating.iter().filter(|l| l.lost_notice).count() as u64,
        control_silent: args.silent,
        control_lost_detected: control.iter().filter(|l| l.lost_notice).count() as u64,
        cancels_received: shared.cancels.load(Ordering::Relaxed),
        results_checked,
        results_wrong,
        swarm_cpu_percent: pct(self0, self1),
        restart,
        supervisor: SupervisorFigures {
            pid,
            cpu_percent: pct(cpu_from, cpu1),
            rss_kb_before_workers: rss_before,
            rss_kb_end: rss_end,
            rss_kb_peak: rss_peak,
            rss_kb_per_worker: round1(rss_end as f64 / f64::from(args.workers)),
            rss_kb_added_per_worker: round1(
                rss_end.saturating_sub(rss_before) as f64 / f64::from(args.workers),
            ),
            workers_lost: stats["workers_lost"].as_u64().unwrap_or(0),
            reissues: stats["reissues"].clone(),
            heartbeat_lateness_p99_ms_at_most: stats["heartbeat_lateness"]["p99_ms_at_most"]
                .as_f64(),
            heartbeat_lateness_max_ms: stats["heartbeat_lateness"]["max_ms"].as_f64(),
        },
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl SwarmReport {
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let task = if self.task_us == 0 {
            "no-op (spin 0 ms)".to_owned()
        } else {
            format!("spin {} ms, held without computing", self.task_us / 1000)
        };
        let _ = writeln!(
            s,
            "swarm: {} workers, heartbeat {} ms (loss after {} missed), {:.1} s measured, tasks {task}{}",
            self.workers,
            self.heartbeat_ms,
            self.miss_limit,
            self.duration_s,
            self.tasks_per_s_asked
                .map(|r| format!(", submitted at {r}/s"))
                .unwrap_or_default()
        );
        let f = &self.fd_limit;
        let _ = writeln!(
            s,
            "open-file limit     soft {} -> {} (hard {}), needed about {}{}",
            f.soft_before,
            f.soft_after,
            f.hard,
            f.needed,
            if f.enough { "" } else { ": NOT ENOUGH" }
        );
        let _ = writeln!(
            s,
            "connections         {} connected in {:.2} s, {} failed{}, {} dropped",
            self.connected,
            self.join_s,
            self.connect_failures,
            self.connect_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.dropped
        );
        let _ = writeln!(
            s,
            "tasks               {} completed (acknowledged) in the window: {:.1}/s; {} submitted in {} jobs",
            self.completed,
            self.completions_per_s,
            self.tasks_submitted,
            self.jobs.len()
        );
        let _ = writeln!(
            s,
            "results             {} stored results checked against the spin output, {} wrong",
            self.results_checked, self.results_wrong
        );
        let _ = writeln!(
            s,
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            "latency (workers' clock)", "samples", "p50 ms", "p99 ms", "max ms"
        );
        for (label, x) in [
            ("assignment -> result acknowledged", &self.assign_to_ack),
            (
                "result sent -> acknowledged (round trip)",
                &self.result_to_ack,
            ),
            (
                "result sent -> next assignment",
                &self.result_to_next_assign,
            ),
            ("gap between heartbeats sent", &self.heartbeat_gap),
            ("ws ping -> pong (with each heartbeat)", &self.ws_ping_rtt),
        ] {
            let _ = writeln!(
                s,
                "{label:<44} {:>9} {:>9.2} {:>9.2} {:>9.2}",
                x.samples, x.p50_ms, x.p99_ms, x.max_ms
            );
        }
        let _ = writeln!(
            s,
            "  (heartbeats are not answered in the protocol: no heartbeat round trip exists; the \
             ping is answered by the supervisor's connection task, not its driver)"
        );
        let sup = &self.supervisor;
        let _ = writeln!(
            s,
            "false loss          {} heartbeating workers told \"{LOST_NOTICE}\"; supervisor's workers_lost {} (reissues {}){}",
            self.false_loss_notices,
            sup.workers_lost,
            sup.reissues,
            if self.control_silent > 0 {
                format!(
                    "; control: {} of {} silent workers declared lost",
                    self.control_lost_detected, self.control_silent
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(s, "cancels received    {}", self.cancels_received);
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "heartbeat lateness  in the supervisor, arrival -> handled by the driver: p99 <= {} ms, max {} ms",
            opt(sup.heartbeat_lateness_p99_ms_at_most),
            opt(sup.heartbeat_lateness_max_ms)
        );
        if let Some(r) = &self.restart {
            let _ = writeln!(
                s,
                "restart             SIGKILL at {:.2} s into the window, listening again {:.2} s later; {} reconnections",
                r.killed_at_s, r.restart_s, r.reconnects
            );
            let _ = writeln!(
                s,
                "  acknowledged before the kill: {} jobs, {} results; of those results {} missing or changed at the end",
                r.jobs_acknowledged_before_kill,
                r.results_acknowledged_before_kill,
                r.of_those_missing_or_changed
            );
            let _ = writeln!(
                s,
                "  all {} acknowledged jobs: {} unfinished {:.2} s after the window; {} tasks without a result; {} tasks won twice; {} results acknowledged again after the reconnect",
                r.jobs_acknowledged,
                r.jobs_unfinished,
                r.drain_s,
                r.tasks_without_result,
                r.tasks_won_twice,
                r.results_acknowledged_again
            );
        }
        let _ = writeln!(
            s,
            "supervisor          CPU {:.1}% of one core; RSS {} kB before workers, {} kB at the end (peak {}): {:.1} kB per worker ({:.1} added per worker)",
            sup.cpu_percent,
            sup.rss_kb_before_workers,
            sup.rss_kb_end,
            sup.rss_kb_peak,
            sup.rss_kb_per_worker,
            sup.rss_kb_added_per_worker
        );
        let _ = writeln!(
            s,
            "swarm (this process) CPU {:.1}% of one core",
            self.swarm_cpu_percent
        );
        s
    }
}
