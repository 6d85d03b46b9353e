//! `idlegrid-supervisor bench sim-vs-real`: one small world run twice, once in the simulator and
//! once for real, and the two makespans side by side.
//!
//! The world is drawn from a scenario file by the simulator's own code ([`ScenarioSpec`],
//! [`World`]) and played by [`crate::sim::run_world`]. Then the same world is played in real
//! time: a real supervisor (in this process, on 127.0.0.1, with the same policy, heartbeat and
//! miss limit) and one `idlegrid --headless` process per simulated worker. The job is the same
//! tasks with the same estimates, each a `spin` of its true size; the fault schedule is replayed
//! from the moment of submission: owner spells through each client's scripted activity
//! (`--scripted-activity`), crashes by SIGKILL and a restart of the same worker on the same data
//! dir, freezes by SIGSTOP and SIGCONT.
//!
//! Why the real run can stand in for the simulated one on one machine: `spin` counts its time on
//! the task's busy clock (wall time less pauses, `runtime::control`), not on CPU time, so six
//! workers sharing two cores each take their task's size in wall time, like six speed-1.0
//! machines. What still differs is reported, not hidden: see the `notes` of the figures.
//!
//! A benchmark: it prints figures, and fails only when something could not be run (a worker
//! that does not start, a job that does not finish), never on the ratio.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::local::{LocalWorker, ScriptedClient, client_beside};
use crate::operator::Operator;
use crate::proto::WorkerId;
use crate::sched::{self, Policy};
use crate::sim::{self, ScenarioSpec, World};
use crate::supervisor::{self, Event, Supervisor};

/// The scenario run when none is given.
pub const DEFAULT_SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/scenarios/small-real.toml"
);

#[derive(clap::Args, Debug, Clone)]
pub struct SimVsRealArgs {
    /// Scenario file (TOML, as for `simulate`). Every worker must run at speed 1.0, with no
    /// stragglers: the real workers all run on this machine.
    #[arg(long, default_value = DEFAULT_SCENARIO)]
    pub scenario: PathBuf,
    /// Seed of the world's draw and of both schedulers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// idlegrid, deadline, none or speculative.
    #[arg(long, default_value = "idlegrid")]
    pub policy: Policy,
    /// Time the real workers get to start, join and have their links measured before the job
    /// is submitted, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub lead_s: f64,
    /// Keep the supervisor's and the workers' data, scripts and logs here (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What [`run_sim_vs_real`] runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub policy: Policy,
    pub lead: Duration,
    pub dir: Option<PathBuf>,
    /// The `idlegrid` client; `None`: the one beside this executable.
    pub client_program: Option<PathBuf>,
}

/// One side's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Submission to the job's end.
    pub makespan_s: f64,
    pub tasks_done: usize,
    pub replicas: u64,
    /// Reissues by cause (`worker_lost`, `owner_active`, `straggler`, ...); causes with none are
    /// left out.
    pub reissues: BTreeMap<String, u64>,
    /// Workers the supervisor declared lost, by cause (`disconnected`, `silent`).
    pub workers_lost: BTreeMap<String, u64>,
    /// Every reissue, in time order.
    pub reissue_log: Vec<ReissueLine>,
}

/// One reissue: when (seconds from submission), which task, to which worker, why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReissueLine {
    pub at_s: f64,
    pub task: String,
    pub worker: String,
    pub cause: String,
}

/// One fault of the schedule: when the world has it, and when the real run carried it out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub worker: String,
    /// `owner busy`, `owner away`, `SIGKILL`, `restart`, `SIGSTOP`, `SIGCONT`.
    pub what: &'static str,
    /// Seconds from submission.
    pub planned_s: f64,
    /// Seconds from submission on the real clock: when the signal was sent or the worker
    /// restarted; for `owner busy`, when the supervisor heard the worker's `Activity`. `None`: the
    /// job was over first (or, for an owner, the supervisor never heard).
    pub real_s: Option<f64>,
}

/// Milliseconds over a set of tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overhead {
    pub tasks: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// The figures of one comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub seed: u64,
    pub policy: String,
    pub workers: usize,
    pub tasks: usize,
    pub heartbeat_ms: u64,
    pub miss_limit: u32,
    pub sim: Side,
    pub real: Side,
    /// Real makespan over simulated makespan.
    pub ratio: f64,
    pub real_state: String,
    pub faults: Vec<Fault>,
    /// Join benchmark speeds the real workers reported (the simulated ones report 1.0).
    pub real_bench_speeds: Vec<f64>,
    /// Per restarted worker: restart to its link measured (it gets no task before), seconds.
    pub rejoin_s: Vec<f64>,
    /// Tasks that ran once, on a worker no fault touched: how much longer than its size each
    /// took from assignment to done (assignment, start, the spin's end, the result). The
    /// simulator's is two network delays.
    pub real_overhead: Overhead,
    pub sim_overhead_ms: f64,
    /// What is known to differ between the two runs.
    pub notes: Vec<String>,
}

impl Comparison {
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sim vs real: {} ({} workers, {} tasks), policy {}, seed {}, heartbeat {} ms x {}",
            self.scenario,
            self.workers,
            self.tasks,
            self.policy,
            self.seed,
            self.heartbeat_ms,
            self.miss_limit
        );
        let causes = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(
            s,
            "{:<6} {:>10} {:>7} {:>9}  {:<34} workers lost",
            "", "makespan", "tasks", "replicas", "reissues"
        );
        for (name, side) in [("sim", &self.sim), ("real", &self.real)] {
            let _ = writeln!(
                s,
                "{name:<6} {:>8.2} s {:>7} {:>9}  {:<34} {}",
                side.makespan_s,
                side.tasks_done,
                side.replicas,
                causes(&side.reissues),
                causes(&side.workers_lost)
            );
        }
        let _ = writeln!(s, "ratio real/sim: {:.3}", self.ratio);
        for (name, side) in [("sim", &self.sim), ("real", &self.real)] {
            let lines: Vec<String> = side
                .reissue_log
                .iter()
                .map(|r| format!("{:.2} {} -> {} ({})", r.at_s, r.task, r.worker, r.cause))
                .collect();
            if !lines.is_empty() {
                let _ = writeln!(s, "{name} reissues: {}", lines.join("; "));
            }
        }
        let _ = writeln!(s, "faults (s from submission: planned -> real):");
        for f in &self.faults {
            let real = f.real_s.map_or("-".to_owned(), |t| format!("{t:.2}"));
            let _ = writeln!(
                s,
                "  {:<6} {:<11} {:>6.2} -> {real}",
                f.worker, f.what, f.planned_s
            );
        }
        let speeds: Vec<String> = self
            .real_bench_speeds
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect();
        let _ = writeln!(
            s,
            "real workers' join benchmark speed: {}",
            speeds.join(" ")
        );
        let _ = writeln!(
            s,
            "undisturbed real tasks, time over size: p50 {:.0} ms, max {:.0} ms ({} tasks; \
             simulated: {:.0} ms)",
            self.real_overhead.p50_ms,
            self.real_overhead.max_ms,
            self.real_overhead.tasks,
            self.sim_overhead_ms
        );
        if !self.rejoin_s.is_empty() {
            let r: Vec<String> = self.rejoin_s.iter().map(|v| format!("{v:.2} s")).collect();
            let _ = writeln!(s, "restart -> link measured: {}", r.join(", "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

pub async fn run(args: SimVsRealArgs) -> anyhow::Result<()> {
    if !(args.lead_s.is_finite() && (0.5..=600.0).contains(&args.lead_s)) {
        bail!("--lead-s {} must be from 0.5 to 600", args.lead_s);
    }
    let spec = ScenarioSpec::load(&args.scenario)?;
    let c = run_sim_vs_real(
        &spec,
        Options {
            seed: args.seed,
            policy: args.policy,
            lead: Duration::from_secs_f64(args.lead_s),
            dir: args.dir,
            client_program: None,
        },
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        print!("{}", c.to_text());
    }
    Ok(())
}

/// The world of `spec` for `opts.seed`, with task sizes rounded to the millisecond a `spin` is
/// given, checked for what one machine can play.
pub fn world_for(spec: &ScenarioSpec, seed: u64) -> anyhow::Result<World> {
    let mut world = spec.resolve(seed);
    for t in &mut world.tasks {
        t.size_s = (t.size_s * 1000.0).round() / 1000.0;
    }
    for w in &world.workers {
        if w.speed != 1.0 || w.slowdown != 1.0 {
            bail!(
                "scenario {}: worker {} runs at speed {:.3} (slowdown {}); sim-vs-real needs every \
                 worker at speed 1.0 and no stragglers, since the real workers all run on this \
                 machine (set pool.speed = {{ median = 1.0, sigma = 0.0 }}, no [stragglers])",
                world.name,
                w.name,
                w.speed,
                w.slowdown
            );
        }
        if w.leave_s.is_some() {
            bail!(
                "scenario {}: worker {} leaves for good; sim-vs-real replays crashes, freezes and \
                 owners only",
                world.name,
                w.name
            );
        }
    }
    Ok(world)
}

/// Seconds of `world` time to seconds from submission.
fn from_submit(world: &World, t: f64) -> f64 {
    t - world.submit_s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Kill,
    Restart,
    Stop,
    Cont,
}

/// The signals and restarts of the world, in time order (seconds from submission, worker).
fn actions(world: &World) -> Vec<(f64, usize, Act)> {
    let mut acts = Vec::new();
    for (i, w) in world.workers.iter().enumerate() {
        if let Some(c) = w.crash {
            acts.push((from_submit(world, c.at_s), i, Act::Kill));
            if let Some(u) = c.until_s {
                acts.push((from_submit(world, u), i, Act::Restart));
            }
        }
        if let Some(f) = w.freeze {
            acts.push((from_submit(world, f.at_s), i, Act::Stop));
            if let Some(u) = f.until_s {
                acts.push((from_submit(world, u), i, Act::Cont));
            }
        }
    }
    // Stable: at one instant, the order above (as the simulator pushes them).
    acts.sort_by(|a, b| a.0.total_cmp(&b.0));
    acts
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The spell script of worker `w`: its owner's spells at wall-clock instants, the submission
/// being at `submit_unix_ms`.
fn script(world: &World, w: usize, submit_unix_ms: u64) -> String {
    let at = |t: f64| {
        let ms = (from_submit(world, t) * 1000.0).round();
        if ms >= 0.0 {
            submit_unix_ms + ms as u64
        } else {
            submit_unix_ms.saturating_sub((-ms) as u64)
        }
    };
    let mut s = format!(
        "# owner of {}: ms since the Unix epoch\n",
        world.workers[w].name
    );
    for &(a, b) in &world.workers[w].busy {
        s.push_str(&format!("{},busy\n{},idle\n", at(a), at(b)));
    }
    s
}

/// Real-side state of one worker, as the simulator keeps it.
struct Proc {
    name: String,
    data_dir: PathBuf,
    script: PathBuf,
    process: Option<LocalWorker>,
    frozen: bool,
    restarts: u32,
}

struct Real<'a> {
    dir: PathBuf,
    program: PathBuf,
    server: String,
    token_file: PathBuf,
    settings: PathBuf,
    slots: &'a [u32],
    procs: Vec<Proc>,
}

impl Real<'_> {
    fn spawn(&mut self, w: usize) -> anyhow::Result<()> {
        let p = &mut self.procs[w];
        let log = self.dir.join(format!("{}.{}.log", p.name, p.restarts));
        let worker = LocalWorker::spawn_scripted(&ScriptedClient {
            program: &self.program,
            server: &self.server,
            token_file: &self.token_file,
            name: &p.name,
            cpus: self.slots[w],
            data_dir: &p.data_dir,
            settings: &self.settings,
            script: &p.script,
            log: &log,
        })
        .with_context(|| {
            format!(
                "cannot start worker {} ({})",
                p.name,
                self.program.display()
            )
        })?;
        p.process = Some(worker);
        p.frozen = false;
        Ok(())
    }

    /// Carries out one action the way the simulator's worker lives it; `false`: it does not
    /// apply (a freeze of a dead worker, a restart of a live one).
    fn act(&mut self, w: usize, act: Act) -> anyhow::Result<bool> {
        let p = &mut self.procs[w];
        match act {
            Act::Kill => match p.process.take() {
                Some(proc) => {
                    proc.kill();
                    p.frozen = false;
                    Ok(true)
                }
                None => Ok(false),
            },
            Act::Restart => {
                if p.process.is_some() {
                    return Ok(false);
                }
                p.restarts += 1;
                self.spawn(w)?;
                Ok(true)
            }
            Act::Stop => match &p.process {
                Some(proc) if !p.frozen => {
                    proc.signal(libc::SIGSTOP)
                        .with_context(|| format!("cannot SIGSTOP worker {}", p.name))?;
                    p.frozen = true;
                    Ok(true)
                }
                _ => Ok(false),
            },
            Act::Cont => match &p.process {
                Some(proc) if p.frozen => {
                    proc.signal(libc::SIGCONT)
                        .with_context(|| format!("cannot SIGCONT worker {}", p.name))?;
                    p.frozen = false;
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    fn stop_all(&mut self) {
        for p in &mut self.procs {
            if let Some(proc) = p.process.take() {
                // SIGKILL ends a stopped process too.
                proc.kill();
            }
        }
    }
}

fn loss_label(cause: &str) -> String {
    if cause.starts_with("connection closed") {
        "disconnected".to_owned()
    } else if cause.starts_with("silent") {
        "silent".to_owned()
    } else {
        cause.to_owned()
    }
}

fn owned(m: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect()
}

/// Runs the world of `spec` for `opts.seed` in the simulator and for real, and compares.
pub async fn run_sim_vs_real(spec: &ScenarioSpec, opts: Options) -> anyhow::Result<Comparison> {
    let world = world_for(spec, opts.seed)?;
    let program = match &opts.client_program {
        Some(p) => p.clone(),
        None => client_beside()?.context(
            "sim-vs-real runs the `idlegrid` client, which is not beside this executable; build \
             it (cargo build --bins)",
        )?,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let slots: Vec<u32> = world.workers.iter().map(|w| w.slots).collect();
    let mut notes = Vec::new();
    if let Some(&most) = slots.iter().max()
        && most > cores
    {
        notes.push(format!(
            "a simulated worker has {most} slots but this machine {cores} cores: the real \
             supervisor gives a worker no more replicas than cores"
        ));
    }

    // 1. The simulator.
    let simulated = sim::run_world(world.clone(), opts.policy, opts.seed)?;
    let sim_side = Side {
        makespan_s: simulated.run.makespan_s,
        tasks_done: simulated
            .run
            .task_times
            .iter()
            .filter(|t| t.1.is_some())
            .count(),
        replicas: simulated.run.replicas.len() as u64,
        reissues: owned(&simulated.run.reissues),
        workers_lost: owned(&simulated.run.losses),
        reissue_log: simulated
            .run
            .replicas
            .iter()
            .filter(|r| crate::supervisor::report::REISSUE_CAUSES.contains(&r.reason))
            .map(|r| ReissueLine {
                at_s: r.assigned_s,
                task: format!("t{:05}", r.task + 1),
                worker: world.workers[r.worker].name.clone(),
                cause: r.reason.to_owned(),
            })
            .collect(),
    };

    // 2. The real supervisor and workers.
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("idlegrid-sim-vs-real-")
                .tempdir()?;
            tmp.path().to_owned()
        }
    };
    let sched_cfg = sched::Config {
        heartbeat: Duration::from_millis(world.heartbeat_ms),
        miss_limit: world.miss_limit,
        seed: opts.seed,
        policy: opts.policy,
        ..sched::Config::default()
    };
    let cfg = supervisor::Config::with_tokens_in(&dir.join("supervisor"), sched_cfg)?;
    let op_token = cfg.operator_token.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sup = Supervisor::start(listener, cfg).await?;
    let addr = sup.addr();
    let mut events = sup.subscribe();
    let op = Operator::new(&format!("http://{addr}"), &op_token)?;
    let settings = dir.join("client-settings.toml");
    // The shortest quiet period the client allows: the simulated worker computes again the
    // moment its owner leaves.
    std::fs::write(&settings, "idle_after_secs = 0.1\n")
        .with_context(|| format!("cannot write {}", settings.display()))?;

    let lead = opts.lead;
    let submit_unix_ms = unix_ms_now() + lead.as_millis() as u64;
    let submit_at = Instant::now() + lead;
    let mut real = Real {
        dir: dir.clone(),
        program,
        server: format!("ws://{addr}/worker"),
        token_file: dir.join("supervisor").join("worker.token"),
        settings,
        slots: &slots,
        procs: Vec::new(),
    };
    for (i, w) in world.workers.iter().enumerate() {
        let script_file = dir.join(format!("{}.owner.csv", w.name));
        std::fs::write(&script_file, script(&world, i, submit_unix_ms))
            .with_context(|| format!("cannot write {}", script_file.display()))?;
        // The simulated worker's id (its name), so that the real scheduler, which breaks ties
        // by id, sees the same pool: the data dir keeps the id a client presents.
        let data_dir = dir.join(format!("{}.client", w.name));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        std::fs::write(data_dir.join("worker-id"), format!("{}\n", w.name))
            .with_context(|| format!("cannot write {}/worker-id", data_dir.display()))?;
        real.procs.push(Proc {
            name: w.name.clone(),
            data_dir,
            script: script_file,
            process: None,
            frozen: false,
            restarts: 0,
        });
    }
    let outcome = play(&world, &mut real, &mut events, &op, submit_at, &mut notes).await;
    real.stop_all();
    sup.shutdown().await?;
    let played = outcome?;

    let report = op_report_side(&played);
    let ratio = report.makespan_s / sim_side.makespan_s;
    let mut faults = Vec::new();
    for (i, w) in world.workers.iter().enumerate() {
        for &(a, b) in &w.busy {
            let planned = from_submit(&world, a);
            // The first Activity the supervisor heard from this worker near the spell's start.
            let heard = played
                .activity
                .iter()
                .filter(|(wi, t)| *wi == i && *t >= planned - 0.5)
                .map(|(_, t)| *t)
                .next();
            faults.push(Fault {
                worker: w.name.clone(),
                what: "owner busy",
                planned_s: planned,
                real_s: heard,
            });
            faults.push(Fault {
                worker: w.name.clone(),
                what: "owner away",
                planned_s: from_submit(&world, b),
                real_s: None,
            });
        }
    }
    for (t, w, act, real_s) in &played.acts {
        faults.push(Fault {
            worker: world.workers[*w].name.clone(),
            what: match act {
                Act::Kill => "SIGKILL",
                Act::Restart => "restart",
                Act::Stop => "SIGSTOP",
                Act::Cont => "SIGCONT",
            },
            planned_s: *t,
            real_s: *real_s,
        });
    }
    faults.sort_by(|a, b| a.planned_s.total_cmp(&b.planned_s));
    notes.extend(standing_notes(&world));
    Ok(Comparison {
        scenario: world.name.clone(),
        seed: opts.seed,
        policy: opts.policy.as_str().to_owned(),
        workers: world.workers.len(),
        tasks: world.tasks.len(),
        heartbeat_ms: world.heartbeat_ms,
        miss_limit: world.miss_limit,
        sim: sim_side,
        real: report,
        ratio,
        real_state: played.state.clone(),
        faults,
        real_bench_speeds: played.bench_speeds.clone(),
        rejoin_s: played.rejoin_s.clone(),
        real_overhead: played.overhead.clone(),
        sim_overhead_ms: 2.0 * world.delay_s * 1000.0,
        notes,
    })
}

/// Differences between the two runs that hold whatever the seed.
fn standing_notes(world: &World) -> Vec<String> {
    let mut notes = Vec::new();
    if world.workers.iter().any(|w| w.freeze.is_some()) {
        notes.push(
            "a SIGSTOPped worker's busy clock runs on (the monotonic clock does not stop for a \
             stopped process), so after SIGCONT its replica counts the frozen time as work done; \
             the simulator's frozen worker computes nothing until it thaws"
                .to_owned(),
        );
    }
    if world.workers.iter().any(|w| !w.busy.is_empty()) {
        notes.push(
            "a real owner's spell ends a quiet period (0.1 s) plus a poll (20 ms) later than the \
             simulated one, and begins up to a poll later"
                .to_owned(),
        );
    }
    if world
        .workers
        .iter()
        .any(|w| w.crash.is_some_and(|c| c.until_s.is_some()))
    {
        notes.push(
            "a restarted real worker starts a process, runs its join benchmark and has its link \
             measured before it gets a task; the simulated one is ready one network delay after \
             its restart"
                .to_owned(),
        );
    }
    notes
}

/// What the real run gave.
struct Played {
    state: String,
    makespan_s: f64,
    tasks_done: usize,
    replicas: u64,
    reissues: BTreeMap<String, u64>,
    losses: BTreeMap<String, u64>,
    /// `(planned s, worker, action, real s)`.
    acts: Vec<(f64, usize, Act, Option<f64>)>,
    /// `(worker, s from submission)` of each `Activity` the supervisor heard.
    activity: Vec<(usize, f64)>,
    bench_speeds: Vec<f64>,
    rejoin_s: Vec<f64>,
    reissue_log: Vec<ReissueLine>,
    overhead: Overhead,
}

fn op_report_side(p: &Played) -> Side {
    Side {
        makespan_s: p.makespan_s,
        tasks_done: p.tasks_done,
        replicas: p.replicas,
        reissues: p.reissues.clone(),
        workers_lost: p.losses.clone(),
        reissue_log: p.reissue_log.clone(),
    }
}

/// Starts the workers, submits the job at `submit_at`, replays the faults and waits for the end.
async fn play(
    world: &World,
    real: &mut Real<'_>,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    op: &Operator,
    submit_at: Instant,
    notes: &mut Vec<String>,
) -> anyhow::Result<Played> {
    let n = world.workers.len();
    let index: BTreeMap<String, usize> = world
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.clone(), i))
        .collect();
    for i in 0..n {
        real.spawn(i)?;
    }
    // Every worker joined and measured before the submission: the simulated ones are.
    let mut ids: BTreeMap<WorkerId, usize> = BTreeMap::new();
    let mut measured = vec![false; n];
    while measured.iter().any(|m| !m) {
        match supervisor::next_event(events, submit_at).await {
            Ok(Event::WorkerJoined { worker, name }) => {
                if let Some(&i) = index.get(&name) {
                    ids.insert(worker, i);
                }
            }
            Ok(Event::LinkMeasured { worker, .. }) => {
                if let Some(&i) = ids.get(&worker) {
                    measured[i] = true;
                }
            }
            Ok(_) => {}
            Err(supervisor::EventWaitError::TimedOut) => {
                let missing: Vec<&str> = (0..n)
                    .filter(|&i| !measured[i])
                    .map(|i| world.workers[i].name.as_str())
                    .collect();
                bail!(
                    "workers {} did not join and have their links measured within the lead of \
                     {:.1} s (see the logs in {}); pass a longer --lead-s",
                    missing.join(", "),
                    submit_at
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                        .max(0.0),
                    real.dir.display()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    let bench_speeds = bench_speeds(op, &index).await?;
    tokio::time::sleep_until(submit_at.into()).await;
    let spec = world.job_spec(
        "spin",
        |t| serde_json::json!({ "ms": (t.size_s * 1000.0).round() as u64 }),
    );
    let t0 = Instant::now();
    let job = op.submit(&spec).await.context("cannot submit the job")?;
    let since = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();

    let plan = actions(world);
    let mut acts = Vec::new();
    let mut next = 0;
    let mut losses: BTreeMap<String, u64> = BTreeMap::new();
    let mut activity = Vec::new();
    let mut restarted_at: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut rejoin_s = Vec::new();
    let limit = t0 + Duration::from_secs_f64(world.limit_s.min(3600.0));
    let mut assigned: BTreeMap<String, Vec<(Instant, WorkerId)>> = BTreeMap::new();
    let mut done: BTreeMap<String, Instant> = BTreeMap::new();
    let due = |t: f64| t0 + Duration::from_secs_f64(t.max(0.0));
    loop {
        while let Some(&(t, w, act)) = plan.get(next)
            && Instant::now() >= due(t)
        {
            next += 1;
            let applied = real.act(w, act)?;
            let at = Instant::now();
            if applied && act == Act::Restart {
                restarted_at.insert(w, at);
            }
            acts.push((t, w, act, applied.then(|| since(at))));
        }
        if Instant::now() >= limit {
            let s = op.summary(&job).await?;
            bail!(
                "the real job did not finish within {:.0} s ({} of {} tasks done; logs in {})",
                limit.saturating_duration_since(t0).as_secs_f64(),
                s.tasks_done,
                s.tasks,
                real.dir.display()
            );
        }
        let wait_until = plan.get(next).map_or(limit, |(t, _, _)| due(*t).min(limit));
        match supervisor::next_event(events, wait_until).await {
            Ok(Event::JobFinished { job: j, .. }) if j == job => break,
            Ok(Event::WorkerLost { cause, .. }) => {
                *losses.entry(loss_label(&cause)).or_default() += 1;
            }
            Ok(Event::WorkerJoined { worker, name }) => {
                if let Some(&i) = index.get(&name) {
                    ids.insert(worker, i);
                }
            }
            Ok(Event::LinkMeasured { worker, .. }) => {
                if let Some(&i) = ids.get(&worker)
                    && let Some(at) = restarted_at.remove(&i)
                {
                    rejoin_s.push(at.elapsed().as_secs_f64());
                }
            }
            Ok(Event::Assigned {
                at,
                job: j,
                task,
                worker,
                ..
            }) if j == job => assigned.entry(task.0).or_default().push((at, worker)),
            Ok(Event::TaskDone { job: j, task, .. }) if j == job => {
                done.insert(task.0, Instant::now());
            }
            Ok(Event::Activity { at, worker, .. }) => {
                if let Some(&i) = ids.get(&worker) {
                    activity.push((i, since(at)));
                }
            }
            Ok(_) | Err(supervisor::EventWaitError::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for &(t, w, act) in &plan[next..] {
        acts.push((t, w, act, None));
    }
    if next < plan.len() {
        notes.push(format!(
            "the real job finished before {} of the {} scheduled signals and restarts",
            plan.len() - next,
            plan.len()
        ));
    }
    let report = op
        .report(&job)
        .await
        .context("cannot fetch the job report")?;
    let reissues = report
        .reissues_by_cause
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.clone(), u64::from(*v)))
        .collect();
    let reissue_log = report
        .reissues
        .iter()
        .map(|r| ReissueLine {
            at_s: r.at_ms.saturating_sub(report.summary.submitted_ms) as f64 / 1000.0,
            task: r.task.clone(),
            worker: report
                .workers
                .iter()
                .find(|w| w.worker == r.worker)
                .map_or_else(|| r.worker.clone(), |w| w.name.clone()),
            cause: r.cause.clone(),
        })
        .collect();
    let untouched: Vec<bool> = world
        .workers
        .iter()
        .map(|w| w.busy.is_empty() && w.crash.is_none() && w.freeze.is_none())
        .collect();
    let mut over = Vec::new();
    for (i, t) in world.tasks.iter().enumerate() {
        let id = format!("t{:05}", i + 1);
        if let (Some([(at, worker)]), Some(end)) =
            (assigned.get(&id).map(Vec::as_slice), done.get(&id))
            && ids.get(worker).is_some_and(|&w| untouched[w])
        {
            let took = end.saturating_duration_since(*at).as_secs_f64();
            over.push((took - t.size_s) * 1000.0);
        }
    }
    let overhead = Overhead {
        tasks: over.len(),
        p50_ms: super::percentile(&over, 50.0).round(),
        max_ms: over.iter().copied().fold(f64::NAN, f64::max).round(),
    };
    Ok(Played {
        overhead,
        reissue_log,
        state: report.summary.state.clone(),
        makespan_s: report.makespan_ms as f64 / 1000.0,
        tasks_done: report.summary.tasks_done as usize,
        replicas: u64::from(report.replicas_started),
        reissues,
        losses,
        acts,
        activity,
        bench_speeds,
        rejoin_s,
    })
}

/// The join benchmark speed (relative to the reference core) each real worker reported, in the
/// world's order (NaN for one the supervisor does not list).
async fn bench_speeds(op: &Operator, index: &BTreeMap<String, usize>) -> anyhow::Result<Vec<f64>> {
    let workers = op.workers().await?;
    let mut speeds = vec![f64::NAN; index.len()];
    for w in workers.as_array().into_iter().flatten() {
        if let (Some(i), Some(speed)) = (
            w["name"].as_str().and_then(|n| index.get(n)),
            w["bench_speed"].as_f64(),
        ) && let Some(s) = speeds.get_mut(*i)
        {
            *s = (speed * 100.0).round() / 100.0;
        }
    }
    Ok(speeds)
}
