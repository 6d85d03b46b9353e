//! `idlegrid-supervisor bench chaos`: a real supervisor process and real worker processes on
//! 127.0.0.1 run a stream of jobs while a seeded schedule injects faults (workers SIGKILLed and
//! restarted, workers frozen with SIGSTOP, the supervisor SIGKILLed and restarted on the same port
//! and data dir, link faults through [`Proxy`]); then every result is checked against the same
//! kernels run here.
//!
//! It talks to the supervisor only through its operator API and its command line, as an operator
//! would; it never reads the supervisor's store. Every process it starts dies with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::percentile;
use super::proxy::{Mode, Proxy};
use crate::job::{JobSpec, TaskSpec};
use crate::local::{signal_pid, worker_program};
use crate::operator::Operator;
use crate::proto::JobId;
use crate::rng::Rng;
use crate::runtime::{self, TaskControl};
use crate::supervisor::report::Report;
use crate::supervisor::unix_ms;

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long faults are injected, in seconds (then the bench waits for the jobs to finish).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_s: u64,
    /// Seed of the fault schedule and of the jobs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker processes (about a third connect through a fault-injecting proxy).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// The supervisor is SIGKILLed and restarted at least this often, in seconds.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub restart_every_s: u64,
    /// Keep the supervisor's and workers' data and logs in this directory (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What [`run_chaos`] runs.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosOptions {
    pub duration: Duration,
    pub seed: u64,
    pub workers: u32,
    pub restart_every: Duration,
    /// How long to wait for the submitted jobs once faults stop.
    pub drain_limit: Duration,
    /// Where data and logs go; `None`: a temporary directory.
    pub dir: Option<PathBuf>,
    /// The `idlegrid-supervisor` to run; `None`: this executable (a test passes the binary).
    pub supervisor_program: Option<PathBuf>,
    /// The `idlegrid` client to run (with `--headless --run-while-in-use`); `None`: the one
    /// beside this executable, as `local::worker_program` finds it.
    pub worker_program: Option<PathBuf>,
}

impl ChaosOptions {
    pub fn new(duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            seed,
            workers: 6,
            restart_every: Duration::from_secs(25),
            drain_limit: Duration::from_secs(120),
            dir: None,
            supervisor_program: None,
            worker_program: None,
        }
    }
}

/// The figures of one run. See `README`-level description in [`run_chaos`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub duration_s: f64,
    pub seed: u64,
    pub workers: u32,
    pub jobs_submitted: u32,
    pub jobs_completed: u32,
    pub jobs_failed: u32,
    /// Submitted jobs still running when the drain limit ran out (or cancelled).
    pub jobs_unfinished: u32,
    /// Submissions the supervisor did not acknowledge (down or unreachable): not counted as
    /// submitted.
    pub submit_errors: u32,
    pub tasks_submitted: u32,
    pub results_verified: u32,
    pub results_lost: u32,
    pub results_duplicated: u32,
    pub results_wrong: u32,
    pub reissues_by_cause: BTreeMap<String, u32>,
    /// Over reissues of tasks a faulted worker held: fault injection -> reissue, p99 (null when
    /// there were none).
    pub reissue_p99_ms: Option<f64>,
    pub reissue_p50_ms: Option<f64>,
    pub reissue_samples: u32,
    pub max_wait_with_free_worker_ms: f64,
    pub supervisor_restarts: u32,
    pub worker_kills: u32,
    pub worker_freezes: u32,
    pub link_faults: u32,
    /// After the faults: waiting for the jobs, and computing the expected results here.
    pub drain_s: f64,
    pub verify_s: f64,
    /// Why the run is not clean, one line each (empty when it is).
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// No result lost, duplicated or wrong, and every submitted job completed.
    pub fn is_clean(&self) -> bool {
        self.results_lost == 0
            && self.results_duplicated == 0
            && self.results_wrong == 0
            && self.jobs_completed == self.jobs_submitted
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos: {} workers, {:.1} s of faults, seed {}",
            self.workers, self.duration_s, self.seed
        );
        let rows: Vec<(&str, String)> = vec![
            ("jobs submitted", self.jobs_submitted.to_string()),
            ("jobs completed", self.jobs_completed.to_string()),
            ("jobs failed", self.jobs_failed.to_string()),
            ("jobs unfinished", self.jobs_unfinished.to_string()),
            ("submit errors", self.submit_errors.to_string()),
            ("tasks submitted", self.tasks_submitted.to_string()),
            ("results verified", self.results_verified.to_string()),
            ("results lost", self.results_lost.to_string()),
            ("results duplicated", self.results_duplicated.to_string()),
            ("results wrong", self.results_wrong.to_string()),
            (
                "reissue p99 ms",
                self.reissue_p99_ms.map_or("-".into(), |v| {
                    format!("{v:.1} (n={})", self.reissue_samples)
                }),
            ),
            (
                "max wait, free worker ms",
                format!("{:.1}", self.max_wait_with_free_worker_ms),
            ),
            ("supervisor restarts", self.supervisor_restarts.to_string()),
            ("worker kills", self.worker_kills.to_string()),
            ("worker freezes", self.worker_freezes.to_string()),
            ("link faults", self.link_faults.to_string()),
            ("drain s", format!("{:.1}", self.drain_s)),
            ("verify s", format!("{:.1}", self.verify_s)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<26} {v:>12}");
        }
        if !self.reissues_by_cause.is_empty() {
            let _ = writeln!(s, "  reissues by cause:");
            for (k, v) in &self.reissues_by_cause {
                let _ = writeln!(s, "    {k:<40} {v:>6}");
            }
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        let _ = writeln!(
            s,
            "  {}",
            if self.is_clean() {
                "CLEAN"
            } else {
                "NOT CLEAN"
            }
        );
        s
    }
}

/// The CLI entry: runs and prints; the exit code says whether the run was clean.
pub async fn run(args: ChaosArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut opts = ChaosOptions::new(Duration::from_secs(args.duration_s), args.seed);
    opts.workers = args.workers;
    opts.restart_every = Duration::from_secs(args.restart_every_s);
    opts.dir = args.dir;
    let report = run_chaos(opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.is_clean() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Heartbeat interval the supervisor runs with.
const HEARTBEAT_MS: u64 = 100;
/// Slots of each worker.
const WORKER_CPUS: u32 = 1;
/// Any one API call; a supervisor that is down refuses at once, one that hangs is given up on.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// The status of unfinished jobs and the workers are sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Stored results are read this often (and just before and after each supervisor restart).
const RESULTS_EVERY: Duration = Duration::from_secs(1);

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn rand_range(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi - lo + 1)
}

fn rand_ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand_range(rng, lo, hi))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The supervisor process, restartable on the same port and data dir.
struct SupervisorProc {
    child: Option<Child>,
    addr: Option<SocketAddr>,
    data_dir: PathBuf,
    program: PathBuf,
}

impl SupervisorProc {
    /// Starts `serve`; the first time on port 0, afterwards on the port it printed then.
    async fn start(&mut self) -> anyhow::Result<()> {
        let listen = self
            .addr
            .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        // Just after a SIGKILL the port may still be held for a moment: try a few times.
        let mut last_err = None;
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match self.spawn(&listen).await {
                Ok(addr) => {
                    if self.addr.is_some_and(|a| a != addr) {
                        bail!("the supervisor came back on {addr}, not {listen}");
                    }
                    self.addr = Some(addr);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("cannot start the supervisor")
    }

    async fn spawn(&mut self, listen: &str) -> anyhow::Result<SocketAddr> {
        let exe = self.program.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("supervisor.log"))?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start idlegrid-supervisor serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // Read the first line on a thread; the rest is drained there so the pipe never fills.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let first = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Some(Ok(line)))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the supervisor printed no address line ({other:?})");
            }
        };
        let Some(addr) = crate::supervisor::parse_listening_line(&first) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unexpected first line from the supervisor: {first:?}");
        };
        self.child = Some(child);
        Ok(addr)
    }

    fn is_up(&self) -> bool {
        self.child.is_some()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SupervisorProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WorkerPhase {
    Running,
    Killed,
    Frozen,
}

/// A worker process slot: the process (when running), its name, data dir and where it connects.
struct WorkerSlot {
    name: String,
    data_dir: PathBuf,
    child: Option<Child>,
    phase: WorkerPhase,
    /// The proxy it connects through, if any.
    proxy: Option<Proxy>,
}

impl WorkerSlot {
    fn spawn(
        &mut self,
        server: &str,
        token_file: &Path,
        (program, pre): &WorkerProgram,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))?;
        let mut cmd = Command::new(program);
        cmd.args(pre)
            .args(["--server", server, "--name", &self.name])
            .args(["--cpus", &WORKER_CPUS.to_string()])
            .arg("--token-file")
            .arg(token_file)
            // Its own data dir, kept across its restarts: the same worker id, and its
            // unacknowledged results survive a kill.
            .arg("--data-dir")
            .arg(&self.data_dir);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start worker {}", self.name))?;
        self.child = Some(child);
        self.phase = WorkerPhase::Running;
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            let _ = signal_pid(c.id(), sig);
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A worker program and the arguments before the client's flags.
type WorkerProgram = (PathBuf, Vec<String>);

// ---------------------------------------------------------------------------------------------
// Jobs

/// A job made by the bench: a few primes and spin tasks, sometimes a small DAG.
fn make_job(rng: &mut Rng, n: u32) -> JobSpec {
    let task = |rng: &mut Rng, id: String| {
        if rng.below(2) == 0 {
            let from = 1_000_000_000 + rng.below(1_000) * 1_000_000;
            let width = rand_range(rng, 5, 40) * 1_000_000;
            TaskSpec::new(id, "primes", json!({ "from": from, "to": from + width }))
        } else {
            TaskSpec::new(id, "spin", json!({ "ms": rand_range(rng, 50, 500) }))
        }
    };
    let mut tasks = Vec::new();
    match rng.below(3) {
        0 | 1 => {
            for i in 0..rand_range(rng, 1, 5) {
                let mut t = task(rng, format!("t{i}"));
                t.critical = Some(rng.below(5) == 0);
                tasks.push(t);
            }
        }
        _ => {
            // root -> middle (2..=4) -> join; root and join critical.
            let mut root = task(rng, "root".into());
            root.critical = Some(true);
            tasks.push(root);
            let middle = rand_range(rng, 2, 4);
            for i in 0..middle {
                let mut t = task(rng, format!("m{i}"));
                t.deps = vec!["root".into()];
                t.critical = Some(rng.below(4) == 0);
                tasks.push(t);
            }
            let mut join = task(rng, "join".into());
            join.deps = (0..middle).map(|i| format!("m{i}").into()).collect();
            join.critical = Some(true);
            tasks.push(join);
        }
    }
    JobSpec {
        name: format!("chaos-{n}"),
        tasks,
        ..Default::default()
    }
}

/// The output each task of each job must have, computed by the same kernels (primes and spin
/// read no deps). Run once the workers are idle, so that it takes no CPU from them (they run at
/// the lowest priority, this would not).
fn expected(specs: Vec<JobSpec>) -> Vec<BTreeMap<String, Result<Value, String>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = specs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = specs
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|spec| {
                            spec.tasks
                                .iter()
                                .map(|t| {
                                    // A kernel that panics is a bug in it: its task
                                    // checks as wrong, and the other checks go on.
                                    let out = std::panic::catch_unwind(|| {
                                        runtime::run(
                                            &t.kind,
                                            &t.input,
                                            &BTreeMap::new(),
                                            &TaskControl::new(),
                                        )
                                        .map_err(|e| e.to_string())
                                    })
                                    .unwrap_or_else(|_| Err("the kernel panicked".into()));
                                    (t.id.0.clone(), out)
                                })
                                .collect::<BTreeMap<_, _>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| {
                // Panics are caught per task above, so every part comes back whole and the
                // parts stay aligned with the jobs.
                h.join().unwrap_or_default()
            })
            .collect()
    })
}

struct TrackedJob {
    id: JobId,
    spec: JobSpec,
    finished: Option<String>,
    /// Tasks not yet done, from the last status read (for the load estimate).
    remaining: usize,
}

// ---------------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker {
        worker: usize,
        down: Duration,
    },
    FreezeWorker {
        worker: usize,
        frozen: Duration,
    },
    RestartSupervisor {
        outage: Duration,
    },
    Link {
        proxy: usize,
        mode: Mode,
        lasts: Duration,
    },
    LinkReset {
        proxy: usize,
    },
}

/// The fault schedule, fixed by the seed: (offset from the start, fault).
fn schedule(
    rng: &mut Rng,
    duration: Duration,
    workers: usize,
    proxies: usize,
    restart_every: Duration,
) -> Vec<(Duration, Fault)> {
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    // When the supervisor was last back up; the next restart is due `restart_every` after it.
    let mut up_at = Duration::ZERO;
    loop {
        let gap = rand_ms(rng, 700, 3_000);
        let forced_at = up_at + restart_every;
        let forced = t + gap >= forced_at && forced_at >= t;
        t = if forced { forced_at } else { t + gap };
        if t >= duration {
            break;
        }
        let down = t < up_at;
        let fault = match rng.below(10) {
            _ if forced => Fault::RestartSupervisor {
                outage: rand_ms(rng, 500, 8_000),
            },
            6 if !down => Fault::RestartSupervisor {
                outage: rand_ms(rng, 500, 8_000),
            },
            0..=2 => Fault::KillWorker {
                worker: rng.below(workers as u64) as usize,
                down: rand_ms(rng, 200, 2_000),
            },
            3..=6 => Fault::FreezeWorker {
                worker: rng.below(workers as u64) as usize,
                frozen: rand_ms(rng, 300, 3_000),
            },
            _ if proxies == 0 => Fault::FreezeWorker {
                worker: rng.below(workers as u64) as usize,
                frozen: rand_ms(rng, 300, 3_000),
            },
            _ => {
                let proxy = rng.below(proxies as u64) as usize;
                let lasts = rand_ms(rng, 1_000, 5_000);
                match rng.below(4) {
                    0 => Fault::Link {
                        proxy,
                        mode: Mode::Delay(rand_ms(rng, 50, 300)),
                        lasts,
                    },
                    1 => Fault::Link {
                        proxy,
                        mode: Mode::Throttle {
                            bytes_per_s: rand_range(rng, 64, 1_000) * 1_000,
                        },
                        lasts,
                    },
                    2 => Fault::Link {
                        proxy,
                        mode: Mode::Blackhole,
                        lasts: rand_ms(rng, 500, 3_000),
                    },
                    _ => Fault::LinkReset { proxy },
                }
            }
        };
        if let Fault::RestartSupervisor { outage } = fault {
            up_at = t + outage;
        }
        out.push((t, fault));
    }
    out
}

/// Something to undo later.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    RestartWorker(usize),
    Thaw(usize),
    StartSupervisor,
    LinkPass(usize),
}

/// A fault that made a worker unreachable: when, which worker id(s), which tasks it held.
struct WorkerFault {
    at_ms: u64,
    worker_ids: Vec<String>,
    held: BTreeSet<(String, String)>,
}

// ---------------------------------------------------------------------------------------------
// The run

struct Chaos {
    opts: ChaosOptions,
    dir: PathBuf,
    sup: SupervisorProc,
    op: Option<Operator>,
    workers: Vec<WorkerSlot>,
    worker_program: WorkerProgram,
    jobs: Vec<TrackedJob>,
    report: ChaosReport,
    /// Every stored result seen, per (job, task).
    seen: HashMap<(String, String), Value>,
    /// (job, task) whose stored result changed between reads / disappeared.
    changed: BTreeSet<(String, String)>,
    vanished: BTreeSet<(String, String)>,
    /// From the last samples: worker name -> ids the supervisor has for it (connected ones first).
    names: HashMap<String, Vec<String>>,
    /// From the last samples: (job, task) -> worker ids holding replicas.
    holders: HashMap<(String, String), Vec<String>>,
    worker_faults: Vec<WorkerFault>,
    /// (job, task) -> when it was first seen ready with a free live worker, in this stretch.
    waiting: HashMap<(String, String), Instant>,
    max_wait: Duration,
    pending: Vec<(Instant, Recovery)>,
    rng: Rng,
}

/// Runs the chaos bench: starts a supervisor and `opts.workers` workers, streams jobs under the
/// seeded faults for `opts.duration`, waits for every job (up to `opts.drain_limit`), checks the
/// results, stops everything and returns the figures.
///
/// How the figures come about:
/// - `results_verified` / `results_wrong`: each stored result of a completed job against the
///   kernel run here on the same input;
/// - `results_lost`: tasks of completed jobs without a stored result, plus (job, task) that had
///   a stored result in one read and none in a later one (reads every second and around each
///   supervisor restart);
/// - `results_duplicated`: per job, won replicas beyond one per task (sum of the report's
///   per-worker `won`, which has no per-task breakdown), plus stored results that changed
///   between two reads;
/// - `reissues_by_cause`: the reports' reissue `why` texts, worker ids left out;
/// - `reissue_p99_ms`: after a worker fault (kill, freeze, blackhole or reset of its link), the
///   tasks it held in the last sample; for each, the first reissue naming that worker after the
///   fault; injection -> reissue (`at_ms`), p99;
/// - `max_wait_with_free_worker_ms`: every ~100 ms the statuses of unfinished jobs and the
///   workers; the longest stretch a task was seen `ready` in consecutive samples that each saw a
///   `live` worker with fewer replicas than slots.
pub async fn run_chaos(opts: ChaosOptions) -> anyhow::Result<ChaosReport> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("idlegrid-chaos-")
                .tempdir()?;
            tmp.path().to_owned()
        }
    };
    let mut rng = Rng::new(opts.seed);
    let job_rng = Rng::new(rng.next_u64());
    let worker_program: WorkerProgram = match &opts.worker_program {
        Some(p) => (
            p.clone(),
            vec!["--headless".into(), "--run-while-in-use".into()],
        ),
        None => {
            let (p, pre) = worker_program()?;
            (p, pre.into_iter().map(str::to_owned).collect())
        }
    };
    let supervisor_program = match &opts.supervisor_program {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut chaos = Chaos {
        dir: dir.clone(),
        sup: SupervisorProc {
            child: None,
            addr: None,
            data_dir: dir.join("supervisor"),
            program: supervisor_program,
        },
        op: None,
        workers: Vec::new(),
        worker_program,
        jobs: Vec::new(),
        report: ChaosReport {
            seed: opts.seed,
            workers: opts.workers,
            ..ChaosReport::default()
        },
        seen: HashMap::new(),
        changed: BTreeSet::new(),
        vanished: BTreeSet::new(),
        names: HashMap::new(),
        holders: HashMap::new(),
        worker_faults: Vec::new(),
        waiting: HashMap::new(),
        max_wait: Duration::ZERO,
        pending: Vec::new(),
        rng: job_rng,
        opts,
    };
    let result = chaos.run(&mut rng).await;
    // Everything dies here, on success and on error alike.
    for w in &mut chaos.workers {
        w.signal(libc::SIGCONT);
        w.kill9();
    }
    chaos.workers.clear();
    chaos.sup.kill9();
    result.map(|()| chaos.report)
}

impl Chaos {
    async fn run(&mut self, rng: &mut Rng) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.sup.data_dir)?;
        self.sup.start().await?;
        let addr = self.sup.addr.context("no supervisor address")?;
        let token = crate::supervisor::read_token(&self.sup.data_dir.join("operator.token"))?;
        self.op = Some(Operator::new(&format!("http://{addr}"), &token)?);
        let proxied = (self.opts.workers as usize).div_ceil(3);
        for i in 0..self.opts.workers as usize {
            // Workers 0, 3, 6, ... go through a proxy.
            let proxy = (i % 3 == 0 && i / 3 < proxied)
                .then(|| Proxy::start(addr))
                .transpose()?;
            self.workers.push(WorkerSlot {
                name: format!("chaos-w{i}"),
                data_dir: self.dir.join(format!("w{i}")),
                child: None,
                phase: WorkerPhase::Killed,
                proxy,
            });
            self.spawn_worker(i)?;
        }
        self.wait_for_workers(Duration::from_secs(60)).await?;

        let proxies: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].proxy.is_some())
            .collect();
        let plan = schedule(
            rng,
            self.opts.duration,
            self.workers.len(),
            proxies.len(),
            self.opts.restart_every,
        );
        let start = Instant::now();
        let end = start + self.opts.duration;
        let mut plan = plan.into_iter().peekable();
        let mut next_sample = start;
        let mut next_results = start;
        let mut next_submit = start;
        // Phase 1: jobs and faults.
        while Instant::now() < end {
            let now = Instant::now();
            while let Some((at, _)) = plan.peek()
                && start + *at <= now
            {
                let (_, fault) = plan.next().context("peeked")?;
                self.inject(fault, &proxies).await?;
            }
            self.recover_due(false).await?;
            if now >= next_submit {
                self.submit_some().await;
                next_submit = now + Duration::from_millis(200);
            }
            if now >= next_sample {
                self.sample().await;
                next_sample = now + SAMPLE_EVERY;
            }
            if now >= next_results {
                self.read_results().await;
                next_results = now + RESULTS_EVERY;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.report.duration_s = round1(start.elapsed().as_secs_f64());
        // Phase 2: no new faults; undo the current ones and let every job finish.
        self.recover_due(true).await?;
        let drain_start = Instant::now();
        let drain_end = Instant::now() + self.opts.drain_limit;
        while Instant::now() < drain_end && self.jobs.iter().any(|j| j.finished.is_none()) {
            self.sample().await;
            if Instant::now() >= next_results {
                self.read_results().await;
                next_results = Instant::now() + RESULTS_EVERY;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        self.read_results().await;
        self.report.drain_s = round1(drain_start.elapsed().as_secs_f64());
        self.finish().await
    }

    fn op(&self) -> anyhow::Result<&Operator> {
        self.op.as_ref().context("no operator client")
    }

    fn server_for(&self, i: usize) -> anyhow::Result<String> {
        let addr = match &self.workers[i].proxy {
            Some(p) => p.addr(),
            None => self.sup.addr.context("no supervisor address")?,
        };
        Ok(format!("ws://{addr}/worker"))
    }

    fn spawn_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let server = self.server_for(i)?;
        let token = self.sup.data_dir.join("worker.token");
        self.workers[i].spawn(&server, &token, &self.worker_program)
    }

    async fn wait_for_workers(&self, limit: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + limit;
        let want = self.workers.len();
        loop {
            if let Ok(Ok(w)) = tokio::time::timeout(API_TIMEOUT, self.op()?.workers()).await {
                let live = w
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|w| w["state"] == "live").count());
                if live >= want {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                bail!("the {want} workers did not all become live within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ids the supervisor knows for worker `i` (from the last sample).
    fn ids_of(&self, i: usize) -> Vec<String> {
        self.names
            .get(&self.workers[i].name)
            .cloned()
            .unwrap_or_default()
    }

    fn note_worker_fault(&mut self, i: usize) {
        let ids = self.ids_of(i);
        let held = self
            .holders
            .iter()
            .filter(|(_, ws)| ws.iter().any(|w| ids.contains(w)))
            .map(|(k, _)| k.clone())
            .collect();
        self.worker_faults.push(WorkerFault {
            at_ms: unix_ms(),
            worker_ids: ids,
            held,
        });
    }

    async fn inject(&mut self, fault: Fault, proxies: &[usize]) -> anyhow::Result<()> {
        let now = Instant::now();
        match fault {
            Fault::KillWorker { worker, down } => {
                if self.workers[worker].phase != WorkerPhase::Running {
                    return Ok(());
                }
                self.note_worker_fault(worker);
                self.workers[worker].kill9();
                self.workers[worker].phase = WorkerPhase::Killed;
                self.report.worker_kills += 1;
                self.pending
                    .push((now + down, Recovery::RestartWorker(worker)));
            }
            Fault::FreezeWorker { worker, frozen } => {
                if self.workers[worker].phase != WorkerPhase::Running {
                    return Ok(());
                }
                self.note_worker_fault(worker);
                self.workers[worker].signal(libc::SIGSTOP);
                self.workers[worker].phase = WorkerPhase::Frozen;
                self.report.worker_freezes += 1;
                self.pending.push((now + frozen, Recovery::Thaw(worker)));
            }
            Fault::RestartSupervisor { outage } => {
                if !self.sup.is_up() {
                    return Ok(());
                }
                // What was stored just before the crash, to compare with what is after.
                self.read_results().await;
                self.sup.kill9();
                self.report.supervisor_restarts += 1;
                self.waiting.clear();
                self.pending.push((now + outage, Recovery::StartSupervisor));
            }
            Fault::Link { proxy, mode, lasts } => {
                let i = proxies[proxy];
                let Some(p) = &self.workers[i].proxy else {
                    return Ok(());
                };
                if p.mode() != Mode::Pass {
                    return Ok(());
                }
                p.set_mode(mode);
                self.report.link_faults += 1;
                if mode == Mode::Blackhole {
                    self.note_worker_fault(i);
                }
                self.pending.push((now + lasts, Recovery::LinkPass(i)));
            }
            Fault::LinkReset { proxy } => {
                let i = proxies[proxy];
                if let Some(p) = &self.workers[i].proxy {
                    p.reset_all();
                    self.report.link_faults += 1;
                    self.note_worker_fault(i);
                }
            }
        }
        Ok(())
    }

    /// Undoes the faults whose time has come (all of them with `all`).
    async fn recover_due(&mut self, all: bool) -> anyhow::Result<()> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.pending = later;
        for (_, r) in due {
            match r {
                Recovery::RestartWorker(i) => self.spawn_worker(i)?,
                Recovery::Thaw(i) => {
                    self.workers[i].signal(libc::SIGCONT);
                    self.workers[i].phase = WorkerPhase::Running;
                }
                Recovery::StartSupervisor => {
                    self.sup.start().await?;
                    // What survived the restart.
                    self.read_results().await;
                }
                Recovery::LinkPass(i) => {
                    if let Some(p) = &self.workers[i].proxy {
                        p.set_mode(Mode::Pass);
                    }
                }
            }
        }
        Ok(())
    }

    /// Submits jobs while fewer than twice the pool's slots worth of tasks are unfinished.
    async fn submit_some(&mut self) {
        if !self.sup.is_up() {
            return;
        }
        let slots = self.workers.len() * WORKER_CPUS as usize;
        for _ in 0..4 {
            let unfinished: usize = self
                .jobs
                .iter()
                .filter(|j| j.finished.is_none())
                .map(|j| j.remaining)
                .sum();
            if unfinished >= 2 * slots {
                return;
            }
            let n = self.jobs.len() as u32 + self.report.submit_errors;
            let spec = make_job(&mut self.rng, n);
            let Ok(op) = self.op() else { return };
            match tokio::time::timeout(API_TIMEOUT, op.submit(&spec)).await {
                Ok(Ok(id)) => {
                    self.report.jobs_submitted += 1;
                    self.report.tasks_submitted += spec.tasks.len() as u32;
                    let tasks = spec.tasks.len();
                    self.jobs.push(TrackedJob {
                        id,
                        spec,
                        finished: None,
                        remaining: tasks,
                    });
                }
                _ => {
                    self.report.submit_errors += 1;
                    return;
                }
            }
        }
    }

    /// Reads the workers and the status of every unfinished job; updates the waiting figure, the
    /// holders of tasks and the finished jobs.
    async fn sample(&mut self) {
        if !self.sup.is_up() {
            self.waiting.clear();
            return;
        }
        let Ok(op) = self.op().cloned() else { return };
        let Ok(Ok(workers)) = tokio::time::timeout(API_TIMEOUT, op.workers()).await else {
            self.waiting.clear();
            return;
        };
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        let mut free = false;
        for w in workers.as_array().into_iter().flatten() {
            let (Some(id), Some(name)) = (w["worker"].as_str(), w["name"].as_str()) else {
                continue;
            };
            let state = w["state"].as_str().unwrap_or("");
            let entry = names.entry(name.to_owned()).or_default();
            if state == "lost" {
                entry.push(id.to_owned());
            } else {
                entry.insert(0, id.to_owned());
            }
            let replicas = w["replicas"].as_u64().unwrap_or(0);
            if state == "live" && replicas < u64::from(WORKER_CPUS) {
                free = true;
            }
        }
        self.names = names;
        let open: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].finished.is_none())
            .collect();
        let statuses = futures_util::future::join_all(open.iter().map(|&i| {
            let op = op.clone();
            let id = self.jobs[i].id.clone();
            async move { tokio::time::timeout(API_TIMEOUT, op.status(&id)).await }
        }))
        .await;
        let now = Instant::now();
        let mut still_waiting = HashMap::new();
        for (&i, status) in open.iter().zip(statuses) {
            let Ok(Ok(status)) = status else { continue };
            let job = self.jobs[i].id.0.clone();
            if let Some(state) = status["state"].as_str()
                && state != "running"
            {
                self.jobs[i].finished = Some(state.to_owned());
                self.jobs[i].remaining = 0;
            }
            let mut remaining = 0;
            for t in status["task_states"].as_array().into_iter().flatten() {
                let Some(task) = t["id"].as_str() else {
                    continue;
                };
                let key = (job.clone(), task.to_owned());
                let phase = t["state"].as_str().unwrap_or("");
                if phase != "done" {
                    remaining += 1;
                }
                let holders: Vec<String> = t["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["worker"].as_str().map(str::to_owned))
                    .collect();
                self.holders.insert(key.clone(), holders);
                if phase == "ready" && free {
                    let since = self.waiting.get(&key).copied().unwrap_or(now);
                    self.max_wait = self.max_wait.max(now - since);
                    still_waiting.insert(key, since);
                }
            }
            if self.jobs[i].finished.is_none() {
                self.jobs[i].remaining = remaining;
            }
        }
        self.waiting = still_waiting;
    }

    /// Reads the stored results of every job; notes results that changed or vanished.
    async fn read_results(&mut self) {
        if !self.sup.is_up() {
            return;
        }
        let Ok(op) = self.op().cloned() else { return };
        let ids: Vec<JobId> = self.jobs.iter().map(|j| j.id.clone()).collect();
        let all = futures_util::future::join_all(ids.iter().map(|id| {
            let op = op.clone();
            async move { tokio::time::timeout(API_TIMEOUT, op.results(id)).await }
        }))
        .await;
        for (id, r) in ids.iter().zip(all) {
            let Ok(Ok(Value::Object(map))) = r else {
                continue;
            };
            for (job, task) in self.seen.keys() {
                if *job == id.0 && !map.contains_key(task) {
                    self.vanished.insert((job.clone(), task.clone()));
                }
            }
            for (task, v) in map {
                let key = (id.0.clone(), task);
                match self.seen.get(&key) {
                    Some(old) if *old != v => {
                        self.changed.insert(key.clone());
                    }
                    _ => {}
                }
                self.seen.entry(key).or_insert(v);
            }
        }
    }

    /// Final reads and the figures.
    async fn finish(&mut self) -> anyhow::Result<()> {
        let op = self.op()?.clone();
        let mut reissue_ms = Vec::new();
        let mut lost: BTreeSet<(String, String)> = self.vanished.clone();
        let mut duplicated = self.changed.len() as u32;
        let jobs = std::mem::take(&mut self.jobs);
        let specs = jobs.iter().map(|j| j.spec.clone()).collect();
        let verify_start = Instant::now();
        let all_expected = tokio::task::spawn_blocking(move || expected(specs)).await?;
        self.report.verify_s = round1(verify_start.elapsed().as_secs_f64());
        for (job, expected) in jobs.into_iter().zip(all_expected) {
            let summary = tokio::time::timeout(API_TIMEOUT, op.summary(&job.id)).await;
            let state = match summary {
                Ok(Ok(s)) => s.state,
                _ => "unknown".to_owned(),
            };
            match state.as_str() {
                "completed" => self.report.jobs_completed += 1,
                "failed" => {
                    self.report.jobs_failed += 1;
                    self.report
                        .problems
                        .push(format!("job {} failed", job.id.0));
                }
                other => {
                    self.report.jobs_unfinished += 1;
                    self.report
                        .problems
                        .push(format!("job {} not completed ({other})", job.id.0));
                }
            }
            if let Ok(Ok(report)) = tokio::time::timeout(API_TIMEOUT, op.report(&job.id)).await {
                self.account_report(
                    &report,
                    job.spec.tasks.len(),
                    &mut reissue_ms,
                    &mut duplicated,
                );
            }
            if state != "completed" {
                continue;
            }
            let results = match tokio::time::timeout(API_TIMEOUT, op.results(&job.id)).await {
                Ok(Ok(Value::Object(m))) => m,
                _ => {
                    self.report
                        .problems
                        .push(format!("job {}: results unreadable", job.id.0));
                    serde_json::Map::new()
                }
            };
            for (task, want) in &expected {
                let key = (job.id.0.clone(), task.clone());
                match (results.get(task), want) {
                    (None, _) => {
                        lost.insert(key);
                    }
                    (Some(got), Ok(want)) if got == want => self.report.results_verified += 1,
                    (Some(got), want) => {
                        self.report.results_wrong += 1;
                        self.report.problems.push(format!(
                            "job {} task {task}: got {got}, expected {want:?}",
                            job.id.0
                        ));
                    }
                }
            }
        }
        self.report.results_lost = lost.len() as u32;
        for (job, task) in &lost {
            self.report
                .problems
                .push(format!("job {job} task {task}: result lost"));
        }
        for (job, task) in &self.changed {
            self.report
                .problems
                .push(format!("job {job} task {task}: stored result changed"));
        }
        self.report.results_duplicated = duplicated;
        self.report.reissue_samples = reissue_ms.len() as u32;
        let pct = |p| (!reissue_ms.is_empty()).then(|| round1(percentile(&reissue_ms, p)));
        self.report.reissue_p50_ms = pct(50.0);
        self.report.reissue_p99_ms = pct(99.0);
        self.report.max_wait_with_free_worker_ms =
            (self.max_wait.as_secs_f64() * 10_000.0).round() / 10.0;
        Ok(())
    }

    fn account_report(
        &mut self,
        report: &Report,
        tasks: usize,
        reissue_ms: &mut Vec<f64>,
        duplicated: &mut u32,
    ) {
        let job = &report.summary.job_id;
        let won: u32 = report.workers.iter().map(|w| w.won).sum();
        if won as usize > tasks {
            let extra = won - tasks as u32;
            *duplicated += extra;
            self.report
                .problems
                .push(format!("job {job}: {won} replicas won for {tasks} tasks"));
        }
        for r in &report.reissues {
            *self
                .report
                .reissues_by_cause
                .entry(cause_label(&r.why))
                .or_default() += 1;
        }
        // Fault -> first reissue naming the faulted worker, per task it held.
        for f in &self.worker_faults {
            for (j, task) in &f.held {
                if j != job {
                    continue;
                }
                let first = report
                    .reissues
                    .iter()
                    .filter(|r| r.task == *task && r.at_ms >= f.at_ms)
                    .filter(|r| f.worker_ids.iter().any(|w| r.why.contains(w.as_str())))
                    .map(|r| r.at_ms)
                    .min();
                if let Some(at) = first {
                    reissue_ms.push((at - f.at_ms) as f64);
                }
            }
        }
    }
}

/// A reissue's `why` without the worker's id: `worker W lost (silent for 312 ms)` becomes
/// `worker lost (silent)`.
fn cause_label(why: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut it = why.split_whitespace().peekable();
    while let Some(w) = it.next() {
        words.push(w);
        if w == "worker" {
            // The id follows.
            it.next();
        }
    }
    let s = words.join(" ");
    // Numbers (durations) vary; keep only the words.
    let s: String = s
        .split(' ')
        .filter(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .filter(|w| *w != "ms" && *w != "ms)")
        .collect::<Vec<_>>()
        .join(" ");
    let s = s.replace("silent for", "silent");
    let s = if s.ends_with("(silent") {
        format!("{s})")
    } else {
        s
    };
    if s.is_empty() { "unknown".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_labels_drop_worker_ids_and_numbers() {
        assert_eq!(
            cause_label("worker w1-abcd lost (connection closed)"),
            "worker lost (connection closed)"
        );
        assert_eq!(
            cause_label("worker w1-abcd lost (silent for 312 ms)"),
            "worker lost (silent)"
        );
        assert_eq!(
            cause_label("worker x-1 reconnected without it"),
            "worker reconnected without it"
        );
        assert_eq!(
            cause_label("failed on worker x-1: boom"),
            "failed on worker boom"
        );
        assert_eq!(cause_label(""), "unknown");
    }

    #[test]
    fn the_schedule_is_fixed_by_the_seed_and_restarts_often_enough() {
        let every = Duration::from_secs(10);
        let a = schedule(&mut Rng::new(5), Duration::from_secs(120), 6, 2, every);
        let b = schedule(&mut Rng::new(5), Duration::from_secs(120), 6, 2, every);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let mut up_at = Duration::ZERO;
        let mut restarts = 0;
        for (at, f) in &a {
            if let Fault::RestartSupervisor { outage } = f {
                assert!(
                    *at >= up_at && *at - up_at <= every,
                    "{at:?} after {up_at:?}"
                );
                up_at = *at + *outage;
                restarts += 1;
            }
        }
        assert!(restarts >= 5, "{restarts} restarts in 120 s");
    }

    #[test]
    fn jobs_are_valid() {
        let mut rng = Rng::new(3);
        for n in 0..50 {
            let spec = make_job(&mut rng, n);
            crate::job::validate(spec, runtime::is_known_kind).unwrap();
        }
    }
}
