//! `idlegrid-supervisor`: serve workers and operators, submit jobs, run the demo and the benches.
//! Parses the command line and calls into the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use idlegrid::supervisor::{self, HEARTBEAT_RANGE_MS};
use idlegrid::tls::{ServerTls, TlsFiles};
use idlegrid::{bench, client, demo, job, opcli, runtime, sched, sim};

#[derive(Parser)]
#[command(
    name = "idlegrid-supervisor",
    version,
    about = "Runs an idlegrid pool: accepts jobs, assigns tasks to volunteer workers, reissues what they drop."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve workers (ws://ADDR/worker) and operators (http://ADDR/api); with --tls-cert and
    /// --tls-key, wss:// and https://.
    Serve(ServeArgs),
    /// Submit a job manifest (TOML) and print its id; with --wait, follow it to its report.
    Submit(SubmitArgs),
    /// List the jobs, newest first: state, tasks done, time.
    Jobs(OpArgs),
    /// A job's state, its tasks by state and each running replica.
    Status(JobArgs),
    /// Write a job's results under --out DIR: TASK.json per task, and the files outputs carry
    /// (such as the Mandelbrot PNG).
    Results(ResultsArgs),
    /// Cancel a running job.
    Cancel(JobArgs),
    /// List the workers: state, tasks, speed, link.
    Workers(OpArgs),
    /// Per-volunteer worker tokens: issue, revoke, list.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the whole system on this machine: a supervisor, local workers and a Mandelbrot job.
    Demo(demo::DemoArgs),
    /// Measure the system: prints figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the real scheduler on virtual time against a simulated pool: a quick pool from
    /// flags, a scenario file, or an availability trace. Deterministic: one seed, one result.
    Simulate(SimulateArgs),
    /// Run a headless worker that computes whatever the machine is doing (what the demo starts
    /// when no `idlegrid` binary is beside this one).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a worker token for one volunteer and print it (shown only this once). Issuing a
    /// name again replaces its token and keeps its worker ids.
    Issue {
        /// The volunteer's name: 1-64 characters of A-Z a-z 0-9 . - _.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        conn: opcli::ConnArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a volunteer's token: their workers are disconnected at once and their tasks
    /// reissued.
    Revoke {
        name: String,
        #[command(flatten)]
        conn: opcli::ConnArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the volunteer tokens (names, state, worker ids; never the tokens).
    List {
        #[command(flatten)]
        conn: opcli::ConnArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Latency from losing a worker (SIGKILL, SIGSTOP) to its task being assigned elsewhere.
    Reissue(bench::reissue::ReissueArgs),
    /// Seeded worker kills and freezes, supervisor restarts and link faults under a stream of
    /// jobs; checks that no result is lost, duplicated or wrong. Exits non-zero if one is, or a
    /// job does not complete.
    Chaos(bench::chaos::ChaosArgs),
    /// A large result over a throttled link: no false loss, and owner input still reaches the
    /// supervisor at once while it uploads.
    Bulk(bench::bulk::BulkArgs),
    /// Every scenario under every policy in the simulator: makespan, x ideal, p99 task time,
    /// replica CPU and cost, as a table (and charts).
    Qos(QosArgs),
    /// One small scenario run in the simulator and for real (a supervisor here, a worker
    /// process per simulated one, owners scripted, crashes by SIGKILL, freezes by SIGSTOP):
    /// both makespans, their ratio and reissues by cause.
    SimVsReal(bench::sim_vs_real::SimVsRealArgs),
    /// Thousands of simulated workers in this process, each a real WebSocket connection to a
    /// real supervisor process: completions/s, latencies, heartbeat gaps, drops, false losses,
    /// and the supervisor's CPU and RSS.
    Swarm(bench::swarm::SwarmArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// A scenario file (TOML: pool, speeds, job or DAG, churn, crashes, freezes, stragglers,
    /// network delay). See benches/scenarios/.
    #[arg(long, conflicts_with_all = ["availability", "workers", "churn", "stragglers"])]
    scenario: Option<PathBuf>,
    /// An availability trace, CSV `worker,start_s,end_s`: intervals in which each machine was
    /// idle. Before its first interval a machine has not joined; between intervals its owner is
    /// active; after its last it leaves.
    #[arg(long, conflicts_with_all = ["workers", "churn", "stragglers"])]
    availability: Option<PathBuf>,
    /// With --availability: CSV `worker,speed` (1.0 = the reference core) for every traced
    /// machine (default: 1.0 each).
    #[arg(long, requires = "availability")]
    speeds: Option<PathBuf>,
    /// Write a synthetic trace (availability.csv, speeds.csv) of --workers machines over --hours
    /// into this directory, and exit.
    #[arg(long, conflicts_with_all = ["scenario", "availability"])]
    write_trace: Option<PathBuf>,
    /// Length of a trace written with --write-trace.
    #[arg(long, default_value_t = 6.0, requires = "write_trace")]
    hours: f64,
    /// Workers of a quick pool (log-normal speeds around 1.0).
    #[arg(long)]
    workers: Option<u32>,
    /// Tasks of the bag (quick pool or trace).
    #[arg(long, default_value_t = 500)]
    tasks: u32,
    /// Mean task size in CPU-seconds at speed 1.0 (log-normal sizes).
    #[arg(long, default_value_t = 300.0)]
    task_s: f64,
    /// Coefficient of variation of the task sizes.
    #[arg(long, default_value_t = 0.5)]
    task_cv: f64,
    /// Fraction of workers whose owner returns during the job (quick pool).
    #[arg(long)]
    churn: Option<f64>,
    /// Fraction of workers that are stragglers (quick pool), slow only in execution.
    #[arg(long)]
    stragglers: Option<f64>,
    /// How many times slower a straggler executes.
    #[arg(long, default_value_t = 10.0)]
    slowdown: f64,
    /// Slots per worker (quick pool or trace).
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// One-way network delay of every message (quick pool or trace).
    #[arg(long, default_value_t = 20.0)]
    delay_ms: f64,
    /// Link speed of every traced worker, kbit/s.
    #[arg(long, default_value_t = 20_000.0)]
    link_kbps: f64,
    /// Virtual-time limit of a trace run, hours.
    #[arg(long, default_value_t = 48.0)]
    limit_h: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// idlegrid, deadline, none or speculative.
    #[arg(long, default_value = "idlegrid")]
    policy: sched::Policy,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw the run as a Gantt chart (PNG): a row per worker, a bar per replica coloured by
    /// outcome, owner-busy spells shaded.
    #[arg(long)]
    gantt: Option<PathBuf>,
}

#[derive(clap::Args)]
struct QosArgs {
    /// Directory of scenario files (*.toml).
    #[arg(long, default_value = "benches/scenarios")]
    scenarios: PathBuf,
    /// Seeds per scenario and policy (0..K); figures are means over them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    seeds: u64,
    /// Write a grouped bar chart (PNG) of makespan over ideal.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Write the Gantt chart (PNG) of idlegrid's run of churn10-stragglers5 (seed 0).
    #[arg(long)]
    gantt: Option<PathBuf>,
    /// Print the table as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on, for workers and operators alike.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Where the job store and the generated tokens live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Interval at which workers send heartbeats, in milliseconds (1 ..= 600000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(*HEARTBEAT_RANGE_MS.start()..=*HEARTBEAT_RANGE_MS.end()))]
    heartbeat_ms: u64,
    /// Heartbeats a worker may miss before its tasks are reissued.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    miss_limit: u32,
    /// Replicas of a critical task (its job may ask for more).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    critical_replicas: u32,
    /// Failed replicas of a task after which its job fails. A worker whose connection closes
    /// within --poison-window-ms of being given a task counts as a failure of that task.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_failures: u32,
    /// A worker that disconnects this soon after being assigned a task counts as a failure of
    /// that task (a task that crashes its workers fails its job instead of knocking every
    /// worker off in turn).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    poison_window_ms: u64,
    /// After a restart, how long workers that were running tasks have to reconnect before those
    /// tasks are reissued, counted from when this supervisor accepts connections (default: the
    /// client's longest reconnect wait plus the loss bound).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    restart_grace_ms: Option<u64>,
    /// How often each worker's link is measured (a timed transfer both ways over its
    /// WebSocket), in seconds; also once at join. 0: never (workers are not held back by link).
    #[arg(long, default_value_t = supervisor::DEFAULT_LINK_PROBE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=86_400))]
    link_probe_s: u64,
    /// Workers whose measured link is slower than this (kbit/s, the slower direction) get no
    /// tasks; they stay connected.
    #[arg(long, default_value_t = 100.0, value_parser = parse_kbps)]
    min_link_kbps: f64,
    /// Largest task output accepted, in MiB; a larger one fails its replica.
    #[arg(long, default_value_t = idlegrid::proto::DEFAULT_MAX_OUTPUT_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_output_mb: u64,
    /// Messages a second one worker connection may send (bursts of twice that); a connection
    /// over it is closed with an error.
    #[arg(long, default_value_t = supervisor::limits::DEFAULT_MAX_MSGS_PER_S, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_msgs_per_s: u32,
    /// Connections from one address that may wait for their hello at once; more are refused
    /// with 429.
    #[arg(long, default_value_t = supervisor::limits::DEFAULT_MAX_PENDING_PER_IP as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_pending_per_ip: u64,
    /// How long a new worker connection may take to say hello, in ms.
    #[arg(long, default_value_t = supervisor::limits::DEFAULT_HELLO_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    hello_timeout_ms: u64,
    /// Scheduling policy: idlegrid (replicas of critical tasks within the redundancy budget,
    /// placement by capacity, pool saturation, progress monitor), deadline (BOINC-like: reissue
    /// only at 4x a task's estimate or a closed connection), none (no redundancy, reissue on a
    /// detected loss) or speculative (Spark-like copies of slow tasks late in a job).
    #[arg(long, value_name = "NAME", default_value_t = sched::Policy::default(), value_parser = |s: &str| s.parse::<sched::Policy>())]
    policy: sched::Policy,
    /// Extra replicas of a job's critical tasks may cost at most this fraction of its estimated
    /// CPU time (0 ..= 4; a manifest's `redundancy_budget` overrides it).
    #[arg(long, value_name = "F", default_value_t = sched::Config::default().redundancy_budget, value_parser = parse_redundancy_budget)]
    redundancy_budget: f64,
    /// Silence after which a worker is sent a status request it must acknowledge, in
    /// milliseconds (1 ..= 600000; default: one and a half heartbeats). Must be shorter than the
    /// loss bound (--heartbeat-ms x --miss-limit).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(*STATUS_REQUEST_RANGE_MS.start()..=*STATUS_REQUEST_RANGE_MS.end()))]
    status_request_ms: Option<u64>,
    /// How often each running job is checked for stalls and stragglers, in milliseconds
    /// (1 ..= 10000).
    #[arg(long, value_name = "MS", default_value_t = sched::Config::default().progress_interval.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    progress_ms: u64,
    /// A job with running tasks that finished none for this long, in seconds, is stalled: its
    /// running tasks get replicas on faster free workers (0.001 ..= 86400).
    #[arg(long, value_name = "S", default_value_t = sched::Config::default().stall_after.as_secs_f64(), value_parser = parse_stall_after)]
    stall_after_s: f64,
    /// Credits per CPU-second on a worker of each capacity class, e.g. high=2,standard=1,low=0.5
    /// (the defaults; a class not named keeps its default). A job's cost is the CPU time its
    /// replicas used times these rates.
    #[arg(long, value_name = "CLASS=RATE,...", value_parser = |s: &str| s.parse::<sched::ClassRates>())]
    class_rates: Option<sched::ClassRates>,
    /// File holding the workers' token (default: DATA_DIR/worker.token, created if missing).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the operators' token (default: DATA_DIR/operator.token, created if missing).
    #[arg(long)]
    operator_token_file: Option<PathBuf>,
    /// Serve https:// and wss:// with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// The job manifest.
    manifest: PathBuf,
    #[command(flatten)]
    conn: opcli::ConnArgs,
    /// Follow the job to its end and print its report.
    #[arg(long)]
    wait: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// An operator verb without arguments of its own (`jobs`, `workers`).
#[derive(clap::Args)]
struct OpArgs {
    #[command(flatten)]
    conn: opcli::ConnArgs,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// An operator verb on one job (`status`, `cancel`).
#[derive(clap::Args)]
struct JobArgs {
    /// The job id, as `submit` printed it (e.g. job-1).
    job: String,
    #[command(flatten)]
    conn: opcli::ConnArgs,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ResultsArgs {
    /// The job id, as `submit` printed it (e.g. job-1).
    job: String,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    conn: opcli::ConnArgs,
    /// Print what was written as one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long)]
    server: String,
    /// Trust the CA certificates in this PEM file for a wss:// server.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Where this worker keeps its id and unacknowledged outcomes (default: this system's data
    /// directory for idlegrid).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the `abort` fault kernel, which kills this worker process (fault tests only).
    #[arg(long)]
    fault_kernels: bool,
}

fn main() -> std::process::ExitCode {
    idlegrid::tls::install_process_provider();
    let cli = Cli::parse();
    // A server logs what it does; the other commands print their own story and log only trouble.
    idlegrid::init_logging(match cli.command {
        Command::Serve(_) | Command::Worker(_) => "info",
        Command::Demo(_) | Command::Bench(_) => "error",
        Command::Submit(_)
        | Command::Simulate(_)
        | Command::Jobs(_)
        | Command::Status(_)
        | Command::Results(_)
        | Command::Cancel(_)
        | Command::Workers(_)
        | Command::Token(_) => "warn",
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        Command::Serve(args) => serve(args).await?,
        Command::Submit(args) => return submit(args).await,
        Command::Jobs(a) => opcli::jobs(&a.conn, a.json).await?,
        Command::Status(a) => opcli::status(&a.conn, &a.job, a.json).await?,
        Command::Results(a) => opcli::results(&a.conn, &a.job, &a.out, a.json).await?,
        Command::Cancel(a) => opcli::cancel(&a.conn, &a.job, a.json).await?,
        Command::Workers(a) => opcli::workers(&a.conn, a.json).await?,
        Command::Token(TokenCommand::Issue { name, conn, json }) => {
            opcli::token_issue(&conn, &name, json).await?
        }
        Command::Token(TokenCommand::Revoke { name, conn, json }) => {
            opcli::token_revoke(&conn, &name, json).await?
        }
        Command::Token(TokenCommand::List { conn, json }) => opcli::token_list(&conn, json).await?,
        Command::Demo(args) => demo::run(args).await?,
        Command::Bench(BenchCommand::Reissue(args)) => bench::reissue::run(args).await?,
        Command::Bench(BenchCommand::Chaos(args)) => return bench::chaos::run(args).await,
        Command::Bench(BenchCommand::Bulk(args)) => bench::bulk::run(args).await?,
        Command::Bench(BenchCommand::Qos(args)) => bench_qos(args)?,
        Command::Bench(BenchCommand::SimVsReal(args)) => bench::sim_vs_real::run(args).await?,
        Command::Bench(BenchCommand::Swarm(args)) => bench::swarm::run(args).await?,
        Command::Simulate(args) => simulate(args)?,
        Command::Worker(args) => {
            let token = supervisor::read_token(&args.token_file)?;
            let name = args.name.unwrap_or_else(client::host_name);
            let Some(data_dir) = args.data_dir.or_else(client::default_data_dir) else {
                anyhow::bail!(
                    "this system names no data directory for idlegrid; pass --data-dir DIR"
                );
            };
            let data = client::DataDir::open(&data_dir, &name)?;
            if args.fault_kernels {
                client::enable_fault_kernels();
            }
            let cfg = client::ClientConfig {
                server: Some(args.server),
                ca_file: args.ca_file,
                token,
                worker_id: data.worker_id().clone(),
                name,
                slots: args.cpus.max(1),
                data_dir: Some(data),
            };
            client::run(cfg, client::Watch::always(), idlegrid::shutdown_signal()).await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Range of `serve --status-request-ms`.
const STATUS_REQUEST_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=600_000;

fn parse_redundancy_budget(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.0..=4.0).contains(f))
        .ok_or_else(|| {
            format!("{s:?} is not a fraction of a job's CPU time from 0 to 4 (e.g. 0.25)")
        })
}

fn parse_stall_after(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.001..=86_400.0).contains(f))
        .ok_or_else(|| format!("{s:?} is not a number of seconds from 0.001 to 86400"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let heartbeat = Duration::from_millis(args.heartbeat_ms);
    let restart_grace = match args.restart_grace_ms {
        Some(ms) => Duration::from_millis(ms),
        None => client::MAX_RECONNECT_WAIT + heartbeat * args.miss_limit,
    };
    let loss_after = heartbeat * args.miss_limit;
    let status_request = args.status_request_ms.map(Duration::from_millis);
    if let Some(probe) = status_request.filter(|p| *p >= loss_after) {
        anyhow::bail!(
            "--status-request-ms {} is not shorter than the loss bound of {} ms \
             (--heartbeat-ms {} x --miss-limit {}): the request would never be sent",
            probe.as_millis(),
            loss_after.as_millis(),
            args.heartbeat_ms,
            args.miss_limit
        );
    }
    let sched = sched::Config {
        heartbeat,
        miss_limit: args.miss_limit,
        critical_replicas: args.critical_replicas,
        max_failures: args.max_failures,
        seed: std::process::id().into(),
        poison_window: Duration::from_millis(args.poison_window_ms),
        restart_grace,
        min_link_kbps: args.min_link_kbps,
        policy: args.policy,
        redundancy_budget: args.redundancy_budget,
        status_request,
        progress_interval: Duration::from_millis(args.progress_ms),
        stall_after: Duration::from_secs_f64(args.stall_after_s),
        class_rates: args.class_rates.unwrap_or_default(),
        ..Default::default()
    };
    let mut cfg = supervisor::Config::with_tokens_in(&args.data_dir, sched)?;
    cfg.max_output_bytes = args.max_output_mb << 20;
    cfg.limits = supervisor::limits::Limits {
        max_msgs_per_s: args.max_msgs_per_s,
        max_pending_per_ip: args.max_pending_per_ip as usize,
        hello_timeout: Duration::from_millis(args.hello_timeout_ms),
    };
    cfg.link_probe = (args.link_probe_s > 0).then(|| Duration::from_secs(args.link_probe_s));
    if let Some(f) = &args.token_file {
        cfg.worker_token = supervisor::read_token(f)?;
    }
    if let Some(f) = &args.operator_token_file {
        cfg.operator_token = supervisor::read_token(f)?;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        cfg.tls = Some(ServerTls::from_files(&TlsFiles { cert, key })?);
    }
    let tls = cfg.tls.is_some();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let operator_token = cfg.operator_token.clone();
    let sup = supervisor::Supervisor::start(listener, cfg).await?;
    // Scripts (and the tests) read this line to find the port when --listen ends in :0.
    println!("{}", supervisor::listening_line(addr, tls));
    println!(
        "worker token: {}",
        args.token_file
            .unwrap_or(args.data_dir.join("worker.token"))
            .display()
    );
    println!(
        "operator token: {}",
        args.operator_token_file
            .unwrap_or(args.data_dir.join("operator.token"))
            .display()
    );
    match supervisor::save_local_operator_token(addr.port(), &operator_token) {
        Ok(path) => println!("operator token for local submits: {}", path.display()),
        Err(e) => tracing::warn!("local submits will need --token-file: {e}"),
    }
    idlegrid::shutdown_signal().await;
    tracing::info!("shutting down");
    sup.shutdown().await?;
    Ok(())
}

/// A link speed in kbit/s: a finite number >= 0.
fn parse_kbps(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a speed in kbit/s (a number >= 0)"))
}

async fn submit(args: SubmitArgs) -> anyhow::Result<std::process::ExitCode> {
    let spec = job::load_manifest(&args.manifest)?;
    // Refuse an invalid job here, with the same checks the supervisor runs, before any network.
    let job = runtime::validate_job(spec)
        .with_context(|| format!("invalid job {}", args.manifest.display()))?;
    let tasks = job.tasks().len();
    let op = args.conn.operator()?;
    let id = op.submit_owned(job.into_spec()).await?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::json!({ "job_id": id }));
        } else {
            println!("{id}");
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if !args.json {
        println!("{id}");
    }
    let bar = (std::io::stdout().is_terminal() && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new(tasks as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} tasks {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let report = op
        .wait(&id, |s| {
            if let Some(bar) = &bar {
                bar.set_position(u64::from(s.tasks_done));
                bar.set_message(s.state.clone());
            }
        })
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    // Scripts tell a job that failed (2) from a submission that failed (1).
    Ok(if report.summary.state == "completed" {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    })
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.write_trace {
        let workers = args.workers.unwrap_or(400);
        if workers == 0
            || !(args.hours.is_finite() && args.hours > 0.0 && args.hours <= 24.0 * 365.0)
        {
            anyhow::bail!(
                "--write-trace needs --workers >= 1 and --hours above 0 (at most a year)"
            );
        }
        let (a, s) = sim::trace::write_trace(dir, workers, args.hours, args.seed)?;
        println!("{}\n{}", a.display(), s.display());
        return Ok(());
    }
    let source = if let Some(path) = &args.scenario {
        sim::Source::Scenario(Box::new(sim::ScenarioSpec::load(path)?))
    } else if let Some(path) = &args.availability {
        let availability = sim::trace::read_availability(path)?;
        let speeds = match &args.speeds {
            Some(s) => Some(sim::trace::read_speeds(s, &availability)?),
            None => None,
        };
        check_trace_flags(&args)?;
        sim::Source::Trace(Box::new(sim::TraceSpec {
            name: path
                .file_stem()
                .map_or("trace".to_owned(), |s| s.to_string_lossy().into_owned()),
            availability,
            speeds,
            tasks: args.tasks,
            task_s: args.task_s,
            task_cv: args.task_cv,
            slots: args.slots,
            link_kbps: args.link_kbps,
            delay_ms: args.delay_ms,
            limit_h: args.limit_h,
        }))
    } else {
        let quick = sim::Quick {
            workers: args.workers.unwrap_or(100),
            tasks: args.tasks,
            task_s: args.task_s,
            task_cv: args.task_cv,
            churn: args.churn.unwrap_or(0.0),
            stragglers: args.stragglers.unwrap_or(0.0),
            slowdown: args.slowdown,
            slots: args.slots,
            delay_ms: args.delay_ms,
        };
        sim::Source::Scenario(Box::new(quick.scenario()?))
    };
    let started = std::time::Instant::now();
    let run = sim::simulate(&source, args.policy, args.seed)?;
    let wall = started.elapsed();
    if let Some(path) = &args.gantt {
        run.write_gantt(path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&run.metrics)?);
    } else {
        print!("{}", run.metrics.to_text());
        // Wall time is for people only: it would make the JSON differ between runs.
        println!(
            "{:<18}{:.2} s for both runs",
            "wall time",
            wall.as_secs_f64()
        );
    }
    Ok(())
}

/// The trace's job and pool flags, checked as a scenario file's fields are.
fn check_trace_flags(args: &SimulateArgs) -> anyhow::Result<()> {
    let checks: [(&str, bool, &str); 7] = [
        (
            "--tasks",
            (1..=job::MAX_TASKS as u32).contains(&args.tasks),
            "1 to 100000",
        ),
        (
            "--task-s",
            args.task_s.is_finite() && args.task_s > 0.0 && args.task_s <= 1e6,
            "above 0, at most 1e6",
        ),
        (
            "--task-cv",
            args.task_cv.is_finite() && (0.0..=10.0).contains(&args.task_cv),
            "0 to 10",
        ),
        ("--slots", (1..=256).contains(&args.slots), "1 to 256"),
        (
            "--delay-ms",
            args.delay_ms.is_finite() && (0.0..=60_000.0).contains(&args.delay_ms),
            "0 to 60000",
        ),
        (
            "--link-kbps",
            args.link_kbps.is_finite() && args.link_kbps >= 1.0,
            "at least 1",
        ),
        (
            "--limit-h",
            args.limit_h.is_finite() && args.limit_h > 0.0 && args.limit_h <= 8760.0,
            "above 0, at most 8760",
        ),
    ];
    for (flag, ok, range) in checks {
        if !ok {
            anyhow::bail!("{flag} is out of range ({range})");
        }
    }
    Ok(())
}

fn bench_qos(args: QosArgs) -> anyhow::Result<()> {
    let scenarios = sim::qos::load_scenarios(&args.scenarios)?;
    let (table, gantt) = sim::qos::run(&scenarios, args.seeds)?;
    if let Some(path) = &args.chart {
        table.write_chart(path)?;
    }
    if let Some(path) = &args.gantt {
        let Some(run) = &gantt else {
            anyhow::bail!(
                "--gantt draws {}, which is not in {}",
                sim::qos::GANTT_SCENARIO,
                args.scenarios.display()
            );
        };
        run.write_gantt(path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        print!("{}", table.to_text());
    }
    Ok(())
}
