//! The activity monitor end to end: a real supervisor and a real `idlegrid --headless` watching a
//! private Xvfb display with device_query and other processes with sysinfo. Pointer moves, key
//! presses and a busy process each pause the task and reach the supervisor as an `Activity` of
//! the right kind; after the quiet period the task resumes and the job completes correctly.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use idlegrid::bench::xvfb::Xvfb;
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::operator::Operator;
use idlegrid::proto::JobId;
use idlegrid::runtime::{self, TaskControl};

use crate::harness::*;

/// The task's progress as the supervisor last heard it in a heartbeat.
async fn progress(op: &Operator, job: &JobId) -> Option<f64> {
    let status = op.status(job).await.ok()?;
    status["task_states"][0]["replicas"][0]["progress"].as_f64()
}

async fn worker_state(op: &Operator) -> Option<String> {
    let w = op.workers().await.ok()?;
    w[0]["state"].as_str().map(str::to_owned)
}

/// Kills a helper process by its PID when dropped.
struct Busy(std::process::Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes the owner show up with `act`, then checks that the supervisor records an Activity of
/// `kind`, that the task stops advancing, and (once `leave` has run and the quiet period has
/// passed) that it advances again.
async fn owner_comes_and_goes(
    op: &Operator,
    job: &JobId,
    kind: &str,
    act: impl FnOnce(),
    leave: impl FnOnce(),
) {
    let seen = op.activity().await.unwrap().len();
    act();
    let record = eventually(
        Duration::from_secs(10),
        &format!("an Activity of kind {kind}"),
        || async {
            let all = op.activity().await.ok()?;
            (all.len() > seen).then(|| all[0].clone())
        },
    )
    .await;
    assert_eq!(record.kind, kind, "{record:?}");
    assert_eq!(record.worker_name, "desk");
    eventually(Duration::from_secs(5), "the worker marked busy", || async {
        (worker_state(op).await? == "busy").then_some(())
    })
    .await;
    // Paused: heartbeats (every 100 ms) keep coming, the progress they carry does not move.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = progress(op, job).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        progress(op, job).await.unwrap(),
        frozen,
        "the task advanced while the owner was here"
    );
    leave();
    eventually(Duration::from_secs(10), "the task to resume", || async {
        let p = progress(op, job).await?;
        (worker_state(op).await? == "live" && p > frozen).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_input_and_busy_processes_pause_the_task_and_tell_the_supervisor() {
    // Alone on the machine: the busy-process source must see only the processes this test makes.
    let _machine = whole_machine().await;
    let xvfb = Xvfb::start().expect("Xvfb is installed (setup.sh)");
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        // Stepping aside (client::contention, tested on its own) would make the task rest
        // whenever anything else on the machine computes; this test is about what pauses it.
        "idle_after_secs = 1.0\ninput_poll_ms = 10\nprocess_threshold_percent = 25\nprocess_sustain_secs = 1.0\nstep_aside = false\n",
    )
    .unwrap();
    let _worker = WorkerProc::start_args(
        &sup,
        "desk",
        1,
        &["--config", settings.to_str().unwrap()],
        &[("DISPLAY", xvfb.display.as_str())],
    );
    let op = sup.operator();
    // It joins, then becomes available after a quiet second.
    wait_for_workers(&op, 1).await;
    let log = std::fs::read_to_string(dir.path().join("desk.log")).unwrap();
    assert!(log.contains("watching for the owner: input"), "{log}");

    // One task of about three seconds of computing.
    let spec = JobSpec {
        name: "patient".into(),
        tasks: vec![TaskSpec::new(
            "count",
            "primes",
            serde_json::json!({ "from": 1_000_000_000u64, "to": 6_000_000_000u64 }),
        )],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    eventually(Duration::from_secs(10), "the task under way", || async {
        (progress(&op, &job).await? > 0.01).then_some(())
    })
    .await;

    owner_comes_and_goes(
        &op,
        &job,
        "pointer",
        || xvfb.run_xdotool(&["mousemove", "300", "200"]).unwrap(),
        || {},
    )
    .await;
    owner_comes_and_goes(
        &op,
        &job,
        "keyboard",
        || xvfb.run_xdotool(&["key", "--delay", "40", "a"]).unwrap(),
        || {},
    )
    .await;
    let yes = std::cell::RefCell::new(None);
    owner_comes_and_goes(
        &op,
        &job,
        "busy_process",
        || {
            let child = Command::new("yes")
                .stdout(Stdio::null())
                .spawn()
                .expect("run yes");
            *yes.borrow_mut() = Some(Busy(child));
        },
        || drop(yes.borrow_mut().take()),
    )
    .await;

    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let results: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(op.results(&job).await.unwrap()).unwrap();
    let t = &spec.tasks[0];
    let expected = runtime::run(&t.kind, &t.input, &BTreeMap::new(), &TaskControl::new()).unwrap();
    assert_eq!(results["count"], expected);
    let report = op.report(&job).await.unwrap();
    assert_eq!(
        report.reissued, 0,
        "one worker: nothing to reissue to, the paused replica resumed"
    );
}

/// An in-process supervisor and a way to start in-process workers with scripted owners.
struct Pool {
    sup: idlegrid::supervisor::Supervisor,
    cfg: idlegrid::supervisor::Config,
    _dir: tempfile::TempDir,
}

impl Pool {
    async fn start(heartbeat: Duration) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        let sched = idlegrid::sched::Config {
            heartbeat,
            ..Default::default()
        };
        let cfg = idlegrid::supervisor::Config::with_tokens_in(dir.path(), sched).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sup = idlegrid::supervisor::Supervisor::start(listener, cfg.clone())
            .await
            .unwrap();
        Pool {
            sup,
            cfg,
            _dir: dir,
        }
    }

    fn operator(&self) -> Operator {
        Operator::new(
            &format!("http://{}", self.sup.addr()),
            &self.cfg.operator_token,
        )
        .unwrap()
    }

    /// A worker whose owner does what `timeline` says (offsets from the worker's start).
    async fn worker(
        &self,
        name: &str,
        watch: idlegrid::client::Watch,
    ) -> (
        tokio::sync::watch::Receiver<idlegrid::client::Snapshot>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let engine = idlegrid::client::build(
            idlegrid::client::ClientConfig {
                server: Some(format!("ws://{}/worker", self.sup.addr())),
                ca_file: None,
                token: self.cfg.worker_token.clone(),
                name: name.into(),
                worker_id: idlegrid::client::new_worker_id(name),
                slots: 1,
                data_dir: None,
            },
            watch,
        )
        .await
        .unwrap();
        let status = engine.handle().snapshots;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        (status, stop)
    }
}

fn scripted(
    timeline: Vec<(Duration, idlegrid::proto::ActivityKind)>,
    idle_after: Duration,
) -> idlegrid::client::Watch {
    idlegrid::client::Watch {
        idle: idlegrid::client::idle::IdleConfig {
            idle_after,
            run_while_in_use: false,
            run_on_battery: true,
        },
        sources: vec![idlegrid::client::activity::scripted::factory(
            timeline,
            Duration::from_millis(5),
        )],
        power: false,
        pace: Default::default(),
    }
}

fn spin_job(ms: u64) -> JobSpec {
    JobSpec {
        name: "spin".into(),
        tasks: vec![TaskSpec::new(
            "spin",
            "spin",
            serde_json::json!({ "ms": ms }),
        )],
        ..Default::default()
    }
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<idlegrid::supervisor::Event>,
    mut pick: impl FnMut(&idlegrid::supervisor::Event) -> bool,
) -> idlegrid::supervisor::Event {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = idlegrid::supervisor::next_event(events, deadline)
            .await
            .unwrap();
        if pick(&ev) {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_hears_of_the_owner_at_once_not_with_the_next_heartbeat_and_the_task_resumes()
 {
    let _machine = shared_machine().await;
    // Heartbeats every 20 s: an Activity that waited for one would come far too late.
    let pool = Pool::start(Duration::from_secs(20)).await;
    let mut events = pool.sup.subscribe();
    let op = pool.operator();
    let kinds = vec![(
        Duration::from_millis(1500),
        idlegrid::proto::ActivityKind::Keyboard,
    )];
    let (mut status, _stop) = pool
        .worker("desk", scripted(kinds, Duration::from_millis(300)))
        .await;
    let job = op.submit(&spin_job(2000)).await.unwrap();
    let idlegrid::supervisor::Event::Assigned {
        at: assigned_at, ..
    } = next_event(&mut events, |e| {
        matches!(e, idlegrid::supervisor::Event::Assigned { .. })
    })
    .await
    else {
        unreachable!()
    };

    let idlegrid::supervisor::Event::Activity { at, kind, .. } = next_event(&mut events, |e| {
        matches!(e, idlegrid::supervisor::Event::Activity { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(kind, idlegrid::proto::ActivityKind::Keyboard);
    let paused_at = status.borrow().paused_at.expect("tasks paused");
    assert!(at >= paused_at, "told before pausing");
    assert!(
        at - paused_at < Duration::from_millis(50),
        "told {:?} after pausing",
        at - paused_at
    );

    // After a quiet 300 ms the task resumes where it stopped and the job completes.
    let s = status
        .wait_for(|s| s.idle == idlegrid::client::idle::IdleState::Idle)
        .await
        .unwrap()
        .clone();
    let resumed_at = std::time::Instant::now();
    assert_eq!(s.tasks.len(), 1);
    next_event(&mut events, |e| {
        matches!(e, idlegrid::supervisor::Event::TaskDone { .. })
    })
    .await;
    let done_at = std::time::Instant::now();
    let summary = wait_for_job(&op, &job, Duration::from_secs(20)).await;
    assert_eq!(summary.state, "completed");
    assert_eq!(
        op.result(&job, &"spin".into()).await.unwrap(),
        serde_json::json!({ "spun_ms": 2000 })
    );
    let report = op.report(&job).await.unwrap();
    assert_eq!(report.replicas_started, 1);
    // The pause itself, measured two ways: on the worker (paused until the quiet period of
    // 300 ms ran out), and in the replica's busy time (its `wall_ms` as executed, which leaves
    // pauses out) against the wall time from assignment to result. Without the pause the
    // difference is only assignment and result latency, tens of ms at most.
    let paused = resumed_at - paused_at;
    assert!(
        paused >= Duration::from_millis(250),
        "paused for {paused:?}"
    );
    let busy = Duration::from_millis(report.workers[0].exec_ms);
    let wall = done_at - assigned_at;
    assert!(busy >= Duration::from_millis(2000), "{report:?}");
    assert!(
        wall >= busy + paused.mul_f64(0.8),
        "the pause did not stop the task's clock: {wall:?} from assignment to result, \
         {busy:?} busy, paused for {paused:?}"
    );
    // Nor did the kernel compute while paused: its CPU time is no more than its busy time.
    assert!(
        report.workers[0].cpu_ms <= report.workers[0].exec_ms + 50,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_task_the_supervisor_cancels_meanwhile_is_dropped_not_resumed() {
    let _machine = shared_machine().await;
    let pool = Pool::start(Duration::from_millis(200)).await;
    let mut events = pool.sup.subscribe();
    let op = pool.operator();
    // The desk becomes idle after a quiet 3 s; its owner comes back at 4 s and stays until 7 s,
    // long enough for the task to finish elsewhere.
    let kinds = vec![(
        Duration::from_millis(4000),
        idlegrid::proto::ActivityKind::Mouse,
    )];
    let (mut desk, _stop_desk) = pool
        .worker("desk", scripted(kinds, Duration::from_secs(3)))
        .await;
    desk.wait_for(|s| {
        s.idle == idlegrid::client::idle::IdleState::Idle
            && matches!(
                s.connection,
                idlegrid::client::snapshot::Connection::Connected { .. }
            )
    })
    .await
    .unwrap();
    let job = op.submit(&spin_job(2000)).await.unwrap();
    next_event(&mut events, |e| {
        matches!(e, idlegrid::supervisor::Event::Assigned { .. })
    })
    .await;
    // A second, dedicated worker joins once the task is on the desk.
    let (_server, _stop_server) = pool
        .worker("server", idlegrid::client::Watch::always())
        .await;

    let idlegrid::supervisor::Event::Assigned { reason, detail, .. } =
        next_event(&mut events, |e| {
            matches!(e, idlegrid::supervisor::Event::Assigned { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(reason, "reissue");
    assert!(detail.unwrap().contains("came back (mouse)"));
    let summary = wait_for_job(&op, &job, Duration::from_secs(20)).await;
    assert_eq!(summary.state, "completed");
    // The desk's paused replica was cancelled and dropped while its owner was still there.
    let s = desk.wait_for(|s| s.tasks.is_empty()).await.unwrap().clone();
    assert!(s.paused_at.is_some());
    assert!(
        matches!(s.idle, idlegrid::client::idle::IdleState::Busy(_)),
        "{s:?}"
    );
    let report = op.report(&job).await.unwrap();
    let desk_row = report.workers.iter().find(|w| w.name == "desk").unwrap();
    assert_eq!(desk_row.won, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_display_the_client_says_so_once_and_still_works_watching_processes() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let settings = dir.path().join("settings.toml");
    // A high threshold: other tests' processes must not count as this machine's owner.
    std::fs::write(
        &settings,
        "idle_after_secs = 0.5\nprocess_threshold_percent = 100000\nstep_aside = false\n",
    )
    .unwrap();
    let _worker = WorkerProc::start_args(
        &sup,
        "headless-box",
        1,
        &["--config", settings.to_str().unwrap()],
        &[("DISPLAY", "")],
    );
    let op = sup.operator();
    wait_for_workers(&op, 1).await;
    let job = op.submit(&spin_job(200)).await.unwrap();
    assert_eq!(
        wait_for_job(&op, &job, Duration::from_secs(20)).await.state,
        "completed"
    );
    let log = std::fs::read_to_string(dir.path().join("headless-box.log")).unwrap();
    assert_eq!(
        log.matches("cannot watch input: no X display (DISPLAY is not set)")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("watching for the owner: processes"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
