//! `idlegrid bench footprint`: what an idle client costs its volunteer. A real `idlegrid
//! --headless` process, with default settings (input polled every 10 ms on a private Xvfb
//! display, other processes' CPU every second), connected to a supervisor with no work, is
//! watched for a while: its CPU time (from /proc) as a share of one core, and its resident memory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::xvfb::Xvfb;
use crate::client::settings::Settings;
use crate::sched;
use crate::supervisor::{self, Event, Supervisor};

#[derive(clap::Args, Debug, Clone)]
pub struct FootprintArgs {
    /// Seconds to watch the idle client.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub secs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The desktop client instead: first with its window closed and the tray running (CPU,
    /// RSS), then with the window open and nothing changing (repaints per second).
    #[arg(long)]
    pub gui: bool,
}

/// CPU time (user + system) of a process, from /proc.
pub(super) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat line")?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Whether a worker joins within `limit` (through the events: a lagging receiver skips ahead, a
/// stopped supervisor ends the wait).
async fn joined(events: &mut tokio::sync::broadcast::Receiver<Event>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match supervisor::next_event(events, deadline).await {
            Ok(Event::WorkerJoined { .. }) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Resident memory of a process in MiB, from /proc.
fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kb / 1024.0)
}

pub async fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let xvfb = Xvfb::start()?;
    let data = tempfile::Builder::new()
        .prefix("idlegrid-bench-")
        .tempdir()?;
    let cfg = supervisor::Config::with_tokens_in(data.path(), sched::Config::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sup = Supervisor::start(listener, cfg).await?;
    let mut events = sup.subscribe();
    let settings = data.path().join("settings.toml");
    std::fs::write(&settings, Settings::default().to_toml())?;
    let log_path = data.path().join("client.log");
    let log = std::fs::File::create(&log_path)?;
    if args.gui {
        return run_gui(&args, &xvfb, sup, &mut events, data.path(), &settings).await;
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--headless",
            "--name",
            "footprint",
            "--server",
            &format!("ws://{}/worker", sup.addr()),
        ])
        .arg("--token-file")
        .arg(data.path().join("worker.token"))
        .arg("--config")
        .arg(&settings)
        .arg("--data-dir")
        .arg(data.path().join("client"))
        .env("DISPLAY", &xvfb.display)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the client")?;
    let pid = child.id();
    if !joined(&mut events, Duration::from_secs(30)).await {
        let _ = child.kill();
        bail!(
            "the client did not connect; its log: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    // Past start-up (the speed benchmark, the first process table read).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let watching: Vec<String> = log_text
        .lines()
        .filter_map(|l| {
            l.split_once("watching for the owner: ")
                .map(|(_, s)| s.trim().to_owned())
        })
        .collect();
    let (cpu0, t0) = (cpu_time(pid)?, Instant::now());
    let mut rss_max: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(args.secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(rss_mb(pid)?);
    }
    let (cpu1, wall) = (cpu_time(pid)?, t0.elapsed());
    let _ = child.kill();
    let _ = child.wait();
    sup.shutdown().await?;

    let cpu_percent =
        (cpu1.saturating_sub(cpu0).as_secs_f64() / wall.as_secs_f64() * 100.0 * 1000.0).round()
            / 1000.0;
    let rss = (rss_max * 10.0).round() / 10.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "secs": args.secs, "cpu_percent": cpu_percent, "rss_mb": rss, "watching": watching })
        );
    } else {
        println!(
            "idle client footprint over {} s (watching: {})",
            args.secs,
            watching.join(", ")
        );
        println!("cpu_percent {cpu_percent:.3} (of one core)   rss_mb {rss:.1}");
    }
    Ok(())
}

/// One desktop client run: joined, past start-up, then watched for `secs`. Returns CPU % of one
/// core, peak RSS in MiB, and frames drawn per second.
async fn watch_gui(
    sup: &Supervisor,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    xvfb: &Xvfb,
    dir: &std::path::Path,
    settings: &std::path::Path,
    hidden: bool,
    secs: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let tag = if hidden { "hidden" } else { "open" };
    let frames = dir.join(format!("frames-{tag}"));
    let log_path = dir.join(format!("client-{tag}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = std::process::Command::new("dbus-run-session");
    cmd.arg("--").arg(std::env::current_exe()?);
    if hidden {
        cmd.arg("--hidden");
    }
    let mut child = cmd
        .args(["--name", &format!("footprint-{tag}"), "--server"])
        .arg(format!("ws://{}/worker", sup.addr()))
        .arg("--token-file")
        .arg(dir.join("worker.token"))
        .arg("--config")
        .arg(settings)
        .arg("--data-dir")
        .arg(dir.join(format!("client-{tag}")))
        .arg("--count-frames")
        .arg(&frames)
        .env("DISPLAY", &xvfb.display)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start dbus-run-session (apt-get install dbus-daemon)")?;
    let outcome = async {
        if !joined(events, Duration::from_secs(60)).await {
            bail!(
                "the client did not connect; its log: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The client's process inside dbus-run-session (which also runs a dbus-daemon).
        let pid = crate::local::child_named(child.id(), "idlegrid")
            .context("no client process under dbus-run-session")?;
        let read_frames = || -> u64 {
            std::fs::read_to_string(&frames)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        let (cpu0, f0, t0) = (cpu_time(pid)?, read_frames(), Instant::now());
        let mut rss_max: f64 = 0.0;
        while t0.elapsed() < Duration::from_secs(secs) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_max = rss_max.max(rss_mb(pid)?);
        }
        let (cpu1, f1, wall) = (cpu_time(pid)?, read_frames(), t0.elapsed().as_secs_f64());
        let cpu = cpu1.saturating_sub(cpu0).as_secs_f64() / wall * 100.0;
        Ok((cpu, rss_max, f1.saturating_sub(f0) as f64 / wall))
    }
    .await;
    // dbus-run-session does not pass a signal on: the client first, then the session.
    if let Some(pid) = crate::local::child_named(child.id(), "idlegrid") {
        let _ = crate::local::signal_pid(pid, libc::SIGTERM);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

async fn run_gui(
    args: &FootprintArgs,
    xvfb: &Xvfb,
    sup: Supervisor,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    dir: &std::path::Path,
    settings: &std::path::Path,
) -> anyhow::Result<()> {
    let (cpu, rss, _) = watch_gui(&sup, events, xvfb, dir, settings, true, args.secs).await?;
    let open_secs = args.secs.min(10);
    let (open_cpu, open_rss, repaints) =
        watch_gui(&sup, events, xvfb, dir, settings, false, open_secs).await?;
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let r1 = |v: f64| (v * 10.0).round() / 10.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "secs": args.secs,
                "cpu_percent": r3(cpu),
                "rss_mb": r1(rss),
                "open_secs": open_secs,
                "open_cpu_percent": r3(open_cpu),
                "open_rss_mb": r1(open_rss),
                "repaints_per_s": r3(repaints),
            })
        );
    } else {
        println!(
            "desktop client footprint (window closed, tray running) over {} s",
            args.secs
        );
        println!("cpu_percent {:.3} (of one core)   rss_mb {:.1}", cpu, rss);
        println!("window open, nothing changing, over {open_secs} s");
        println!(
            "repaints_per_s {:.3}   cpu_percent {:.3}   rss_mb {:.1}",
            repaints, open_cpu, open_rss
        );
    }
    sup.shutdown().await?;
    Ok(())
}
