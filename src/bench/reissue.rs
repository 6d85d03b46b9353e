//! `idlegrid-supervisor bench reissue`: how long a task stays without a worker after its worker
//! is lost, measured from the moment the bench loses the worker to the moment the supervisor
//! sends the task to another one (both on this process's monotonic clock).
//!
//! Two kinds of loss, each over repeated trials with real worker processes:
//! - crash: SIGKILL; the connection closes, so no heartbeat needs to be missed;
//! - silent: SIGSTOP; the connection stays open and nothing arrives, as when a machine freezes or
//!   its network is cut; detected after `heartbeat × miss_limit`.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::broadcast;

use super::{Latency, print_latency_table};
use crate::job::{JobSpec, TaskSpec};
use crate::local::LocalWorker;
use crate::operator::Operator;
use crate::proto::WorkerId;
use crate::sched;
use crate::supervisor::{self, Event, Supervisor};

#[derive(clap::Args, Debug, Clone)]
pub struct ReissueArgs {
    /// Trials of each kind of loss.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub trials: u32,
    /// Heartbeat interval of the supervisor, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub heartbeat_ms: u64,
    /// Missed heartbeats before a silent worker is lost.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub miss_limit: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    Crash,
    Silent,
}

struct Bench {
    sup: Supervisor,
    op: Operator,
    events: broadcast::Receiver<Event>,
    server: String,
    token_file: std::path::PathBuf,
    dir: std::path::PathBuf,
    workers: Vec<(WorkerId, LocalWorker)>,
    spawned: u32,
}

impl Bench {
    async fn spawn_worker(&mut self) -> anyhow::Result<()> {
        self.spawned += 1;
        let name = format!("bench-{}", self.spawned);
        let log = self.dir.join(format!("{name}.log"));
        let worker_data = self.dir.join(format!("{name}.client"));
        let w = LocalWorker::spawn(&self.server, &self.token_file, &name, 1, &worker_data, &log)
            .with_context(|| format!("cannot start worker {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Event::WorkerJoined { worker, name: n } = self.next_event(deadline).await?
                && n == name
            {
                self.workers.push((worker, w));
                return Ok(());
            }
        }
    }

    async fn next_event(&mut self, deadline: Instant) -> anyhow::Result<Event> {
        Ok(supervisor::next_event(&mut self.events, deadline).await?)
    }

    /// One trial: a long task starts on a worker, the worker is lost, the task moves. Returns
    /// the latency in milliseconds.
    async fn trial(&mut self, loss: Loss) -> anyhow::Result<f64> {
        let spec = JobSpec {
            name: "reissue-bench".into(),
            tasks: vec![TaskSpec::new(
                "spin",
                "spin",
                serde_json::json!({ "ms": 600_000 }),
            )],
            ..Default::default()
        };
        let job = self.op.submit(&spec).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let holder = loop {
            if let Event::Assigned { job: j, worker, .. } = self.next_event(deadline).await?
                && j == job
            {
                break worker;
            }
        };
        // Let the worker take the task up and send a heartbeat or two, as in real life.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let idx = self
            .workers
            .iter()
            .position(|(w, _)| *w == holder)
            .context("task went to an unknown worker")?;
        let (_, victim) = self.workers.remove(idx);
        let sig = match loss {
            Loss::Crash => libc::SIGKILL,
            Loss::Silent => libc::SIGSTOP,
        };
        let lost_at = Instant::now();
        victim.signal(sig)?;
        let moved_at = loop {
            match self.next_event(lost_at + Duration::from_secs(60)).await? {
                Event::Assigned {
                    at, job: j, worker, ..
                } if j == job && worker != holder => break at,
                _ => {}
            }
        };
        victim.kill();
        self.op.cancel(&job).await?;
        self.spawn_worker().await?;
        Ok(moved_at.saturating_duration_since(lost_at).as_secs_f64() * 1000.0)
    }
}

pub async fn run(args: ReissueArgs) -> anyhow::Result<()> {
    let data = tempfile::Builder::new()
        .prefix("idlegrid-bench-")
        .tempdir()?;
    let sched_cfg = sched::Config {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        miss_limit: args.miss_limit,
        ..sched::Config::default()
    };
    let bound_ms = (args.heartbeat_ms * u64::from(args.miss_limit)) as f64;
    let cfg = supervisor::Config::with_tokens_in(data.path(), sched_cfg)?;
    let op_token = cfg.operator_token.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sup = Supervisor::start(listener, cfg).await?;
    let addr = sup.addr();
    let events = sup.subscribe();
    let mut bench = Bench {
        op: Operator::new(&format!("http://{addr}"), &op_token)?,
        sup,
        events,
        server: format!("ws://{addr}/worker"),
        token_file: data.path().join("worker.token"),
        dir: data.path().to_owned(),
        workers: Vec::new(),
        spawned: 0,
    };
    bench.spawn_worker().await?;
    bench.spawn_worker().await?;
    let mut crash = Vec::new();
    let mut silent = Vec::new();
    for _ in 0..args.trials {
        crash.push(bench.trial(Loss::Crash).await?);
    }
    for _ in 0..args.trials {
        silent.push(bench.trial(Loss::Silent).await?);
    }
    for (_, w) in bench.workers.drain(..) {
        w.kill();
    }
    bench.sup.shutdown().await?;

    let (crash, silent) = (Latency::of(&crash), Latency::of(&silent));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "trials": args.trials,
                "heartbeat_ms": args.heartbeat_ms,
                "miss_limit": args.miss_limit,
                "crash_p50_ms": crash.p50,
                "crash_p99_ms": crash.p99,
                "crash_max_ms": crash.max,
                "silent_p50_ms": silent.p50,
                "silent_p99_ms": silent.p99,
                "silent_max_ms": silent.max,
                "silent_bound_ms": bound_ms,
            })
        );
    } else {
        println!("reissue latency: worker lost -> its task assigned to another worker");
        println!(
            "{} trials each; heartbeat {} ms, miss limit {} (silent bound {bound_ms} ms)",
            args.trials, args.heartbeat_ms, args.miss_limit
        );
        print_latency_table(
            "loss",
            &[("crash (SIGKILL)", crash), ("silent (SIGSTOP)", silent)],
        );
    }
    Ok(())
}
