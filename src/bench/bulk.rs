//! `idlegrid-supervisor bench bulk`: a large result over a slow link. One in-process supervisor,
//! one in-process client connected through a throttled [`Proxy`], and a `bytes` task whose
//! output is `--mb` MiB of JSON. While the result uploads, the owner "comes back" every
//! `--touch-ms` (a source the bench triggers itself) and the bench measures how long each
//! `Activity` takes to reach the supervisor: it must not wait behind the upload. It also counts
//! workers the supervisor wrongly declared lost during the transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::proxy::{Mode, Proxy};
use super::{Latency, print_latency_table};
use crate::client::activity::{ActivitySource, Observation, SourceError, SourceFactory};
use crate::client::idle::IdleConfig;
use crate::client::{self, ClientConfig, Watch};
use crate::job::{JobSpec, TaskSpec};
use crate::operator::Operator;
use crate::proto::ActivityKind;
use crate::supervisor::{self, Event, Supervisor};

#[derive(clap::Args, Debug, Clone)]
pub struct BulkArgs {
    /// Size of the result, in MiB of JSON text.
    #[arg(long, default_value_t = 50)]
    pub mb: u64,
    /// The link's speed, in kbit/s (10000 = 10 Mbit/s).
    #[arg(long, default_value_t = 10_000)]
    pub kbps: u64,
    /// Heartbeat interval, in milliseconds (the loss bound is three of them).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// How often the owner comes back during the upload, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub touch_ms: u64,
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    pub result_bytes: u64,
    pub link_kbps: u64,
    /// From the task's assignment to its result being stored.
    pub transfer_s: f64,
    pub job_state: String,
    pub result_correct: bool,
    /// Workers the supervisor declared lost while the result travelled.
    pub false_losses: u64,
    pub reissued: u32,
    /// Owner inputs during the upload, and from each to the supervisor hearing of it.
    pub touches: usize,
    pub notify_p50_ms: f64,
    pub notify_p99_ms: f64,
    pub notify_max_ms: f64,
}

/// A source the bench fires by hand: the next poll after [`Touch::fire`] reports keyboard input.
#[derive(Clone, Default)]
struct Touch(Arc<AtomicBool>);

impl Touch {
    fn fire(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn factory(&self) -> SourceFactory {
        let me = self.clone();
        Box::new(move || -> Result<Box<dyn ActivitySource>, SourceError> { Ok(Box::new(me)) })
    }
}

impl ActivitySource for Touch {
    fn name(&self) -> String {
        "bench touch".into()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn poll(&mut self, now: Instant) -> Option<Observation> {
        self.0.swap(false, Ordering::SeqCst).then_some(Observation {
            kind: ActivityKind::Keyboard,
            at: now,
        })
    }
}

pub async fn run(args: BulkArgs) -> anyhow::Result<()> {
    let r = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "bulk: a {:.1} MiB result over {} kbit/s: {} in {:.1} s, result {}, false losses {}, reissued {}",
        r.result_bytes as f64 / f64::from(1 << 20),
        r.link_kbps,
        r.job_state,
        r.transfer_s,
        if r.result_correct { "correct" } else { "WRONG" },
        r.false_losses,
        r.reissued,
    );
    print_latency_table(
        &format!("{} owner inputs during it", r.touches),
        &[(
            "input -> supervisor told",
            Latency {
                p50: r.notify_p50_ms,
                p99: r.notify_p99_ms,
                max: r.notify_max_ms,
            },
        )],
    );
    Ok(())
}

/// Runs the transfer and returns the figures.
pub async fn measure(args: &BulkArgs) -> anyhow::Result<BulkReport> {
    if args.mb == 0 || args.kbps == 0 {
        bail!("--mb and --kbps must be positive");
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let sched = crate::sched::Config {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        ..crate::sched::Config::default()
    };
    let mut cfg = supervisor::Config::with_tokens_in(dir.path(), sched)?;
    cfg.max_output_bytes = cfg.max_output_bytes.max((args.mb + 8) << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sup = Supervisor::start(listener, cfg.clone()).await?;
    let mut events = sup.subscribe();
    let proxy = Proxy::start(sup.addr())?;
    proxy.set_mode(Mode::Throttle {
        bytes_per_s: args.kbps * 1000 / 8,
    });

    let touch = Touch::default();
    let watch = Watch {
        // Busy at the touch, idle again 100 ms later: every touch is a fresh return.
        idle: IdleConfig {
            idle_after: Duration::from_millis(100),
            run_while_in_use: false,
            run_on_battery: true,
        },
        sources: vec![touch.factory()],
        pace: Default::default(),
        power: false,
    };
    let client_cfg = ClientConfig {
        server: Some(format!("ws://{}/worker", proxy.addr())),
        ca_file: None,
        token: cfg.worker_token.clone(),
        name: "bulk".into(),
        worker_id: client::new_worker_id("bulk"),
        slots: 1,
        data_dir: None,
    };
    let engine = client::build(client_cfg, watch).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(engine.run(async {
        let _ = stop_rx.await;
    }));

    let op = Operator::new(&format!("http://{}", sup.addr()), &cfg.operator_token)?;
    // base64 is 4/3 of the bytes; the JSON around it is a few dozen bytes.
    let bytes = (args.mb << 20) * 3 / 4;
    let input = serde_json::json!({ "bytes": bytes, "seed": 7 });
    let job = op
        .submit(&JobSpec {
            name: "bulk".into(),
            tasks: vec![TaskSpec::new("big", "bytes", input.clone())],
            ..Default::default()
        })
        .await?;
    let expected = tokio::task::spawn_blocking(move || {
        crate::runtime::run(
            "bytes",
            &input,
            &Default::default(),
            &crate::runtime::TaskControl::new(),
        )
    })
    .await??;

    let deadline = Instant::now()
        + Duration::from_secs(120)
        + Duration::from_secs_f64((args.mb * 8 * 1049) as f64 / args.kbps as f64 * 1.5);
    let mut assigned_at = None;
    let mut done_at = None;
    let mut false_losses = 0u64;
    let mut samples = Vec::new();
    let mut touched_at: Option<Instant> = None;
    let mut next_touch = Instant::now() + Duration::from_millis(args.touch_ms);
    let uploads = dir.path().join("uploads");
    let mut state = String::from("running");
    while Instant::now() < deadline {
        let wait = next_touch.min(deadline);
        match tokio::time::timeout_at(wait.into(), events.recv()).await {
            Ok(Ok(Event::Assigned { at, .. })) => {
                assigned_at.get_or_insert(at);
            }
            Ok(Ok(Event::Activity { at, .. })) => {
                if let Some(t) = touched_at.take() {
                    samples.push(at.saturating_duration_since(t).as_secs_f64() * 1e3);
                }
            }
            Ok(Ok(Event::WorkerLost { .. })) => false_losses += 1,
            Ok(Ok(Event::TaskDone { .. })) => done_at = Some(Instant::now()),
            Ok(Ok(Event::JobFinished { state: s, .. })) => {
                state = s.to_owned();
                break;
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                // Touch only while the result is on its way up, and one at a time.
                let uploading = std::fs::read_dir(&uploads)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if uploading && touched_at.is_none() {
                    touch.fire();
                    touched_at = Some(Instant::now());
                }
                next_touch = Instant::now() + Duration::from_millis(args.touch_ms);
            }
        }
    }
    let results = op.results(&job).await.unwrap_or_default();
    let report = op.report(&job).await.ok();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    drop(proxy);
    sup.shutdown().await?;
    let latency = Latency::of(&samples);
    Ok(BulkReport {
        result_bytes: expected.to_string().len() as u64,
        link_kbps: args.kbps,
        transfer_s: match (assigned_at, done_at) {
            (Some(a), Some(d)) => d.saturating_duration_since(a).as_secs_f64(),
            _ => f64::NAN,
        },
        job_state: state,
        result_correct: results.get("big") == Some(&expected),
        false_losses,
        reissued: report.map_or(0, |r| r.reissued),
        touches: samples.len(),
        notify_p50_ms: latency.p50,
        notify_p99_ms: latency.p99,
        notify_max_ms: latency.max,
    })
}
