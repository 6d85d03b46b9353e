//! `idlegrid bench interference`: what the owner of a machine feels while the client computes.
//! Fixed foreground programs (CPU-bound for about 1 s and about 10 s, and a memory-bound sweep
//! of a large array) run alone and again just after a real `idlegrid --headless` client has
//! started background tasks on every core, alternating alone / with in pairs within one run;
//! the figures are the median paired slowdowns, for a CPU-only background (`spin`) and a
//! memory-touching one (`memsweep`).
//!
//! The foreground programs are this binary re-executed with the hidden `--foreground` flag, so
//! nothing needs installing. The client runs with its default settings (but a short
//! idle_after), so it protects the owner as it would on their machine: task threads at nice 19 /
//! SCHED_IDLE in the idle I/O class, stepping aside within milliseconds when another program
//! wants a CPU (`client::contention`), and pausing when the process watch sees a program busy for
//! seconds. `--run-while-in-use` measures the worst case instead: a machine dedicated to the
//! pool, where only the priorities protect other programs.
//!
//! A benchmark, not a test: on a machine busy with other work the figures mean little (and
//! SCHED_IDLE tasks may get no CPU at all: `background_cores_used` shows it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::footprint::cpu_time;
use crate::client::settings::Settings;
use crate::job::{JobSpec, TaskSpec};
use crate::operator::Operator;
use crate::supervisor::{self, Event, Supervisor, next_event};

#[derive(clap::Args, Debug, Clone)]
pub struct InterferenceArgs {
    /// Pairs (alone, then with the client computing) per foreground program and background.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub pairs: u32,
    /// Work of the short CPU-bound program, in ms on this machine alone (calibrated at start).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub short_ms: u64,
    /// Work of the long CPU-bound program, in ms on this machine alone.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub long_ms: u64,
    /// Array streamed by the memory-bound program, in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub memory_mib: u64,
    /// Times the memory-bound program streams over its array (after filling it).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub memory_passes: u64,
    /// Array each background `memsweep` task streams over, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub background_mib: u64,
    /// The client's idle_after, in ms (its other settings are the defaults).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub idle_after_ms: u64,
    /// Run the client with `--run-while-in-use` (no owner watch, no stepping aside): what other
    /// programs feel on a machine dedicated to the pool.
    #[arg(long)]
    pub run_while_in_use: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run one foreground program and print its wall time in ms: `cpu:STEPS` or
    /// `memory:MIB:PASSES` (what the bench starts).
    #[arg(long, hide = true, value_name = "PROGRAM")]
    pub foreground: Option<String>,
}

/// A foreground program: fixed work, whatever the machine's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// Dependent integer steps on one core.
    Cpu { steps: u64 },
    /// The `memsweep` kernel at normal priority.
    Memory { mib: u64, passes: u64 },
}

impl Program {
    fn parse(spec: &str) -> anyhow::Result<Self> {
        let number = |s: &str, what: &str| -> anyhow::Result<u64> {
            s.parse().with_context(|| {
                format!("--foreground {spec:?}: {what} {s:?} is not a whole number")
            })
        };
        match spec.split(':').collect::<Vec<_>>()[..] {
            ["cpu", steps] => Ok(Program::Cpu {
                steps: number(steps, "steps")?,
            }),
            ["memory", mib, passes] => Ok(Program::Memory {
                mib: number(mib, "MiB")?,
                passes: number(passes, "passes")?,
            }),
            _ => bail!("--foreground {spec:?}: expected cpu:STEPS or memory:MIB:PASSES"),
        }
    }

    fn spec(self) -> String {
        match self {
            Program::Cpu { steps } => format!("cpu:{steps}"),
            Program::Memory { mib, passes } => format!("memory:{mib}:{passes}"),
        }
    }

    /// Runs the program here and returns how long it took.
    fn run(self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        match self {
            Program::Cpu { steps } => {
                std::hint::black_box(cpu_steps(steps));
            }
            Program::Memory { mib, passes } => {
                crate::runtime::run(
                    "memsweep",
                    &json!({ "mib": mib, "passes": passes }),
                    &Default::default(),
                    &crate::runtime::TaskControl::new(),
                )
                .context("the memory-bound program failed")?;
            }
        }
        Ok(start.elapsed())
    }
}

/// `steps` xorshift steps: a few cycles each of dependent work the optimiser cannot fold away.
fn cpu_steps(steps: u64) -> u64 {
    let mut state = std::hint::black_box(0x2545_f491_4f6c_dd1du64);
    for _ in 0..steps {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
    }
    state
}

/// Steps of [`cpu_steps`] this machine does in `ms` on one core, from a short trial here.
fn calibrate(ms: u64) -> u64 {
    let mut steps = 1u64 << 16;
    loop {
        let start = Instant::now();
        std::hint::black_box(cpu_steps(steps));
        let took = start.elapsed();
        if took >= Duration::from_millis(100) || steps >= 1 << 40 {
            let per_ms = steps as f64 / took.as_secs_f64().max(1e-9) / 1e3;
            return (per_ms * ms as f64).max(1.0) as u64;
        }
        steps *= 2;
    }
}

/// One foreground program against one background kind: the paired runs.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// `cpu-1s`, `cpu-10s` or `memory` (with the default sizes).
    pub program: String,
    /// `spin` or `memsweep`.
    pub background: String,
    pub alone_ms: Vec<f64>,
    pub with_client_ms: Vec<f64>,
    /// `with / alone - 1` of each pair, in percent.
    pub slowdown_percent: Vec<f64>,
    pub slowdown_median_percent: f64,
    pub slowdown_min_percent: f64,
    pub slowdown_max_percent: f64,
    /// Cores' worth of CPU the client's process used while each "with" run lasted.
    pub background_cores_used: Vec<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct InterferenceReport {
    /// The worse of the two backgrounds' median paired slowdowns, per program.
    pub slowdown_short_percent: f64,
    pub slowdown_long_percent: f64,
    pub slowdown_memory_percent: f64,
    /// The lowest and highest paired slowdowns behind each figure above (that background's).
    pub slowdown_short_range_percent: [f64; 2],
    pub slowdown_long_range_percent: [f64; 2],
    pub slowdown_memory_range_percent: [f64; 2],
    pub pairs: u32,
    /// Background tasks run at once (one per logical CPU).
    pub cores: u32,
    /// Whether the client ran with `--run-while-in-use` (see the note).
    pub run_while_in_use: bool,
    pub note: String,
    pub series: Vec<Series>,
}

const NOTE_DEDICATED: &str = "the client ran with --run-while-in-use: only its priorities protect these programs (a machine dedicated to the pool)";
const NOTE_OWNER: &str = "the client ran with its default settings (idle_after shortened): it steps aside when these programs want a CPU, as on a volunteer's machine";

pub async fn run(args: InterferenceArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.foreground {
        let took = Program::parse(spec)?.run()?;
        println!("{:.3}", took.as_secs_f64() * 1e3);
        return Ok(());
    }
    let r = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "interference: {} pairs per program, {} background tasks (nice 19 / SCHED_IDLE) on {} cores",
        r.pairs, r.cores, r.cores
    );
    println!("note: {}", r.note);
    println!(
        "{:<10} {:<10} {:>14} {:>14} {:>12} {:>20} {:>10}",
        "program", "background", "alone ms", "with ms", "slowdown %", "range %", "bg cores"
    );
    for s in &r.series {
        println!(
            "{:<10} {:<10} {:>14.1} {:>14.1} {:>12.2} {:>20} {:>10.2}",
            s.program,
            s.background,
            median(&s.alone_ms),
            median(&s.with_client_ms),
            s.slowdown_median_percent,
            format!(
                "[{:.2}, {:.2}]",
                s.slowdown_min_percent, s.slowdown_max_percent
            ),
            median(&s.background_cores_used),
        );
    }
    println!(
        "slowdown_short_percent {:.2}   slowdown_long_percent {:.2}   slowdown_memory_percent {:.2}   (target <= 1 each)",
        r.slowdown_short_percent, r.slowdown_long_percent, r.slowdown_memory_percent
    );
    Ok(())
}

fn median(samples: &[f64]) -> f64 {
    super::percentile(samples, 50.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Runs `program` in a process of its own (this binary, `--foreground`) and returns its own
/// measure of its wall time, in ms.
fn run_foreground(program: Program) -> anyhow::Result<f64> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let out = Command::new(&exe)
        .args(["bench", "interference", "--foreground", &program.spec()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the foreground program {} failed: {}",
            program.spec(),
            out.status
        );
    }
    text.trim().parse::<f64>().with_context(|| {
        format!(
            "the foreground program printed {:?}, not a time",
            text.trim()
        )
    })
}

/// Cores' worth of CPU used by `pid` over `window`.
async fn cores_used(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let c0 = cpu_time(pid)?;
    tokio::time::sleep(window).await;
    let c1 = cpu_time(pid)?;
    Ok(c1.saturating_sub(c0).as_secs_f64() / window.as_secs_f64())
}

struct Background<'a> {
    op: &'a Operator,
    events: &'a mut tokio::sync::broadcast::Receiver<Event>,
    pid: u32,
    cores: u32,
}

impl Background<'_> {
    /// Submits one long task per core of `kind` and returns once the client computes them.
    async fn start(&mut self, kind: &str, input: &Value) -> anyhow::Result<crate::proto::JobId> {
        let tasks = (0..self.cores)
            .map(|i| TaskSpec::new(format!("bg{i}").as_str(), kind, input.clone()))
            .collect();
        let job = self
            .op
            .submit(&JobSpec {
                name: format!("interference-{kind}"),
                tasks,
                redundancy_budget: Some(0.0),
                ..Default::default()
            })
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut assigned = 0;
        while assigned < self.cores {
            match next_event(self.events, deadline).await {
                Ok(Event::Assigned { job: j, .. }) if j == job => assigned += 1,
                Ok(_) => {}
                Err(e) => bail!(
                    "the client was not given its background tasks: {e} (its owner watch counts other busy programs as the owner: run on a quiet machine, or pass --run-while-in-use)"
                ),
            }
        }
        // Just after it has started: wait until its threads really use the CPU (a second at
        // most; on a loaded machine SCHED_IDLE threads may get nothing, which the report shows).
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && cores_used(self.pid, Duration::from_millis(50)).await? < 0.5
        {
        }
        Ok(job)
    }

    /// Cancels the job and waits until the client's process is quiet again.
    async fn stop(&mut self, job: &crate::proto::JobId) -> anyhow::Result<()> {
        self.op.cancel(job).await?;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until
            && cores_used(self.pid, Duration::from_millis(100)).await? > 0.1
        {}
        Ok(())
    }
}

/// Runs every pair and returns the figures.
pub async fn measure(args: &InterferenceArgs) -> anyhow::Result<InterferenceReport> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let dir = tempfile::Builder::new()
        .prefix("idlegrid-interference-")
        .tempdir()?;
    let mut cfg = supervisor::Config::with_tokens_in(dir.path(), crate::sched::Config::default())?;
    // No link probes: their transfers would be background load of their own.
    cfg.link_probe = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sup = Supervisor::start(listener, cfg.clone()).await?;
    let mut events = sup.subscribe();
    let result = with_client(args, cores, dir.path(), &sup, &mut events, &cfg).await;
    sup.shutdown().await?;
    result
}

async fn with_client(
    args: &InterferenceArgs,
    cores: u32,
    dir: &Path,
    sup: &Supervisor,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    cfg: &supervisor::Config,
) -> anyhow::Result<InterferenceReport> {
    let settings_path = dir.join("settings.toml");
    let settings = Settings {
        idle_after: Duration::from_millis(args.idle_after_ms),
        ..Settings::default()
    };
    std::fs::write(&settings_path, settings.to_toml())?;
    let log_path = dir.join("client.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--headless", "--name", "interference"]);
    if args.run_while_in_use {
        cmd.arg("--run-while-in-use");
    }
    let mut child = cmd
        .args(["--server", &format!("ws://{}/worker", sup.addr())])
        .args(["--cpus", &cores.to_string()])
        .arg("--token-file")
        .arg(dir.join("worker.token"))
        .arg("--config")
        .arg(&settings_path)
        .arg("--data-dir")
        .arg(dir.join("client"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the client")?;
    let result = pairs(args, cores, child.id(), sup, events, cfg).await;
    let _ = child.kill();
    let _ = child.wait();
    result.with_context(|| {
        format!(
            "the client's log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })
}

async fn pairs(
    args: &InterferenceArgs,
    cores: u32,
    pid: u32,
    sup: &Supervisor,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    cfg: &supervisor::Config,
) -> anyhow::Result<InterferenceReport> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match next_event(events, deadline).await {
            Ok(Event::WorkerJoined { .. }) => break,
            Ok(_) => {}
            Err(e) => bail!("the client did not connect: {e}"),
        }
    }
    let op = Operator::new(&format!("http://{}", sup.addr()), &cfg.operator_token)?;
    let name = |ms: u64| {
        if ms.is_multiple_of(1000) {
            format!("cpu-{}s", ms / 1000)
        } else {
            format!("cpu-{ms}ms")
        }
    };
    let programs = [
        (
            name(args.short_ms),
            Program::Cpu {
                steps: calibrate(args.short_ms),
            },
        ),
        (
            name(args.long_ms),
            Program::Cpu {
                steps: calibrate(args.long_ms),
            },
        ),
        (
            "memory".to_owned(),
            Program::Memory {
                mib: args.memory_mib,
                passes: args.memory_passes,
            },
        ),
    ];
    let backgrounds = [
        ("spin", json!({ "ms": 86_400_000u64 })),
        (
            "memsweep",
            json!({ "mib": args.background_mib, "passes": 1_000_000u64 }),
        ),
    ];
    let mut bg = Background {
        op: &op,
        events,
        pid,
        cores,
    };
    let mut series = Vec::new();
    for (kind, input) in &backgrounds {
        for (label, program) in &programs {
            let mut s = Series {
                program: label.clone(),
                background: (*kind).to_owned(),
                alone_ms: vec![],
                with_client_ms: vec![],
                slowdown_percent: vec![],
                slowdown_median_percent: 0.0,
                slowdown_min_percent: 0.0,
                slowdown_max_percent: 0.0,
                background_cores_used: vec![],
            };
            for _ in 0..args.pairs {
                let alone = run_foreground(*program)?;
                let job = bg.start(kind, input).await?;
                let (c0, t0) = (cpu_time(pid)?, Instant::now());
                let with = tokio::task::spawn_blocking({
                    let program = *program;
                    move || run_foreground(program)
                })
                .await??;
                let used = cpu_time(pid)?.saturating_sub(c0).as_secs_f64()
                    / t0.elapsed().as_secs_f64().max(1e-9);
                bg.stop(&job).await?;
                s.alone_ms.push(alone);
                s.with_client_ms.push(with);
                s.slowdown_percent
                    .push(round2((with / alone.max(1e-9) - 1.0) * 100.0));
                s.background_cores_used.push(round2(used));
            }
            s.slowdown_median_percent = median(&s.slowdown_percent);
            s.slowdown_min_percent = s
                .slowdown_percent
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            s.slowdown_max_percent = s
                .slowdown_percent
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            series.push(s);
        }
    }
    // Per program (the first three series are spin's, the next three memsweep's, in order).
    let worst = |i: usize| -> (f64, [f64; 2]) {
        let pick = [&series[i], &series[i + programs.len()]]
            .into_iter()
            .max_by(|a, b| {
                a.slowdown_median_percent
                    .total_cmp(&b.slowdown_median_percent)
            })
            .expect("two series");
        (
            pick.slowdown_median_percent,
            [pick.slowdown_min_percent, pick.slowdown_max_percent],
        )
    };
    let (short, short_range) = worst(0);
    let (long, long_range) = worst(1);
    let (memory, memory_range) = worst(2);
    Ok(InterferenceReport {
        slowdown_short_percent: short,
        slowdown_long_percent: long,
        slowdown_memory_percent: memory,
        slowdown_short_range_percent: short_range,
        slowdown_long_range_percent: long_range,
        slowdown_memory_range_percent: memory_range,
        pairs: args.pairs,
        cores,
        run_while_in_use: args.run_while_in_use,
        note: if args.run_while_in_use {
            NOTE_DEDICATED
        } else {
            NOTE_OWNER
        }
        .to_owned(),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreground_programs_parse_and_name_bad_ones() {
        assert_eq!(
            Program::parse("cpu:12").unwrap(),
            Program::Cpu { steps: 12 }
        );
        assert_eq!(
            Program::parse("memory:8:2").unwrap(),
            Program::Memory { mib: 8, passes: 2 }
        );
        assert_eq!(Program::parse("memory:8:2").unwrap().spec(), "memory:8:2");
        let err = Program::parse("cpu:lots").unwrap_err().to_string();
        assert!(err.contains("\"lots\" is not a whole number"), "{err}");
        let err = Program::parse("gpu:1").unwrap_err().to_string();
        assert!(
            err.contains("expected cpu:STEPS or memory:MIB:PASSES"),
            "{err}"
        );
    }

    #[test]
    fn a_memory_program_beyond_the_kernels_limit_fails_with_its_message() {
        let err = Program::Memory {
            mib: 5000,
            passes: 1,
        }
        .run()
        .unwrap_err();
        assert!(format!("{err:#}").contains("\"mib\""), "{err:#}");
    }
}
