//! `idlegrid bench activity`: how fast the client steps aside. On a private Xvfb display it
//! injects owner input with `xdotool` while a task runs, and measures from the input to
//! (a) the local pause of the task and (b) the supervisor receiving the `Activity` message.
//!
//! The supervisor and the client run in this process (the client with its real device_query
//! source polling the Xvfb display), so every instant is read from one monotonic clock. The
//! input instant is taken just before the command is written to a long-lived `xdotool`.

use super::xvfb::Xvfb;

#[derive(clap::Args, Debug, Clone)]
pub struct ActivityArgs {
    /// Inputs to inject (alternately pointer moves and key presses).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub trials: u32,
    /// Input poll interval of the client, in milliseconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub poll_ms: u64,
    /// Quiet time after which the client resumes, in milliseconds (kept short to run fast).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub idle_after_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Starts a private Xvfb display and points this process's `DISPLAY` at it, for the input
/// source (device_query opens whatever `DISPLAY` names).
///
/// # Safety
/// Call it while no other thread of the process reads or writes the environment (before any
/// async runtime starts): writing it while another thread reads it is undefined behaviour.
pub unsafe fn private_display() -> anyhow::Result<Xvfb> {
    let xvfb = Xvfb::start()?;
    // SAFETY: the caller promises no other thread touches the environment; the Xvfb start-up
    // helper thread only reads a pipe.
    unsafe { std::env::set_var("DISPLAY", &xvfb.display) };
    Ok(xvfb)
}

#[cfg(not(feature = "input"))]
pub async fn run(_args: ActivityArgs, _xvfb: Xvfb) -> anyhow::Result<()> {
    anyhow::bail!("this idlegrid was built without input detection (feature `input`)")
}

#[cfg(feature = "input")]
pub use measure::run;

#[cfg(feature = "input")]
mod measure {
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use tokio::sync::{broadcast, watch};

    use super::super::xvfb::Xvfb;
    use super::super::{Latency, print_latency_table};
    use crate::client::idle::{IdleConfig, IdleState};
    use crate::client::{self, ClientConfig, Snapshot, Watch};
    use crate::job::{JobSpec, TaskSpec};
    use crate::operator::Operator;
    use crate::proto::ActivityKind;
    use crate::sched;
    use crate::supervisor::{self, Event, Supervisor};

    use super::ActivityArgs;

    pub async fn run(args: ActivityArgs, xvfb: Xvfb) -> anyhow::Result<()> {
        let mut xdo = xvfb.xdotool()?;
        let data = tempfile::Builder::new()
            .prefix("idlegrid-bench-")
            .tempdir()?;
        let cfg = supervisor::Config::with_tokens_in(data.path(), sched::Config::default())?;
        let (worker_token, operator_token) = (cfg.worker_token.clone(), cfg.operator_token.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sup = Supervisor::start(listener, cfg).await?;
        let addr = sup.addr();
        let mut events = sup.subscribe();

        let poll = Duration::from_millis(args.poll_ms);
        let watch = Watch {
            idle: IdleConfig {
                idle_after: Duration::from_millis(args.idle_after_ms),
                run_while_in_use: false,
                run_on_battery: true,
            },
            // Tasks run here, but the bench measures the full rate whatever the engine says.
            sources: vec![client::activity::input::factory(poll, None)],
            power: false,
            pace: Default::default(),
        };
        let engine = client::build(
            ClientConfig {
                server: Some(format!("ws://{addr}/worker")),
                ca_file: None,
                token: worker_token,
                name: "bench-activity".into(),
                worker_id: client::new_worker_id("bench-activity"),
                slots: 1,
                data_dir: None,
            },
            watch,
        )
        .await?;
        let mut status = engine.handle().snapshots;
        let problems = status.borrow().source_problems.clone();
        if !problems.is_empty() {
            bail!("input detection did not start: {}", problems.join("; "));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client_task = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));

        let op = Operator::new(&format!("http://{addr}"), &operator_token)?;
        let spec = JobSpec {
            name: "activity-bench".into(),
            tasks: vec![TaskSpec::new(
                "spin",
                "spin",
                serde_json::json!({ "ms": 3_600_000 }),
            )],
            ..Default::default()
        };
        op.submit(&spec).await?;

        let mut pause = Vec::new();
        let mut notify = Vec::new();
        let mut kinds = Vec::new();
        for i in 0..args.trials {
            // Computing again: idle, and the task running.
            wait_status(&mut status, Duration::from_secs(60), |s| {
                s.idle == IdleState::Idle
                    && s.tasks.len() == 1
                    && matches!(s.connection, client::snapshot::Connection::Connected { .. })
            })
            .await
            .context("the client did not go back to computing")?;
            // Let the task take up the CPU again before the next input, then wait a further slice
            // of the poll interval that differs from trial to trial: the client resumed on a timer
            // that counts from a poll, so without it every input would land at the same phase of
            // the poll cycle and the figures would be biased.
            let phase = Duration::from_micros((u64::from(i) * 7_919) % (args.poll_ms * 1000));
            tokio::time::sleep(Duration::from_millis(30) + phase).await;
            let (command, kind) = if i % 2 == 0 {
                let (x, y) = (100 + (i * 37) % 900, 100 + (i * 53) % 600);
                (format!("mousemove {x} {y}"), ActivityKind::Pointer)
            } else {
                // Held 20 ms, as a (quick) human press is: xdotool's default 6 ms can fall between
                // two 10 ms polls of the key state.
                ("key --delay 40 a".to_owned(), ActivityKind::Keyboard)
            };
            let sent = xdo.send(&command)?;
            let paused = wait_status(&mut status, Duration::from_secs(10), |s| {
                s.paused_at.is_some_and(|p| p > sent)
            })
            .await
            .with_context(|| format!("`xdotool {command}` did not pause the task"))?
            .paused_at
            .unwrap_or(sent);
            let told = next_activity(&mut events, sent).await?;
            pause.push(paused.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            notify.push(told.0.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            kinds.push((kind, told.1));
        }
        let _ = stop.send(());
        let _ = client_task.await;
        sup.shutdown().await?;

        let wrong: Vec<String> = kinds
            .iter()
            .filter(|(want, got)| want != got)
            .map(|(want, got)| format!("{} seen as {}", want.as_str(), got.as_str()))
            .collect();
        let (pause, notify) = (Latency::of(&pause), Latency::of(&notify));
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "trials": args.trials,
                    "poll_ms": args.poll_ms,
                    "pause_p50_ms": pause.p50,
                    "pause_p99_ms": pause.p99,
                    "pause_max_ms": pause.max,
                    "notify_p50_ms": notify.p50,
                    "notify_p99_ms": notify.p99,
                    "notify_max_ms": notify.max,
                    "wrong_kind": wrong.len(),
                })
            );
        } else {
            println!("owner input (xdotool) -> task paused / supervisor told");
            println!(
                "{} inputs, half pointer moves, half key presses (held 20 ms); input poll {} ms",
                args.trials, args.poll_ms
            );
            print_latency_table(
                "",
                &[
                    ("input -> local pause", pause),
                    ("input -> supervisor told", notify),
                ],
            );
            if !wrong.is_empty() {
                println!("kinds reported wrongly: {}", wrong.join(", "));
            }
        }
        Ok(())
    }

    /// Waits until the status satisfies `ok`; returns that status.
    async fn wait_status(
        status: &mut watch::Receiver<Snapshot>,
        limit: Duration,
        ok: impl FnMut(&Snapshot) -> bool,
    ) -> anyhow::Result<Snapshot> {
        match tokio::time::timeout(limit, status.wait_for(ok)).await {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => bail!("the client stopped"),
            Err(_) => bail!("timed out after {limit:?}"),
        }
    }

    /// The first `Activity` the supervisor received after `after`: when, and of what kind.
    async fn next_activity(
        events: &mut broadcast::Receiver<Event>,
        after: Instant,
    ) -> anyhow::Result<(Instant, ActivityKind)> {
        let deadline = after + Duration::from_secs(10);
        loop {
            if let Event::Activity { at, kind, .. } =
                supervisor::next_event(events, deadline).await?
                && at > after
            {
                return Ok((at, kind));
            }
        }
    }
}
