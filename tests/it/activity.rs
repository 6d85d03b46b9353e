//! The activity monitor end to end: a real supervisor and a real `idlegrid --headless` watching a
//! private Xvfb display with device_query and other processes with sysinfo. Pointer moves, key
//! presses and a busy process each pause the task and reach the supervisor as an `Activity` of
//! the right kind; after the quiet period the task resumes and the job completes correctly.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use idlegrid::bench::xvfb::Xvfb;
use idlegrid::job::{Estimates, JobSpec, TaskSpec};
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
        "idle_after_secs = 1.0\ninput_poll_ms = 10\nprocess_threshold_percent = 25\nprocess_sustain_secs = 1.0\n",
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
        tasks: vec![TaskSpec {
            id: "count".into(),
            kind: "primes".into(),
            input: serde_json::json!({ "from": 1_000_000_000u64, "to": 6_000_000_000u64 }),
            deps: vec![],
            critical: false,
            replicas: None,
            estimates: Estimates::default(),
        }],
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
