//! A worker that is told to stop (SIGTERM, as at logout or `systemctl stop`) hands its running
//! task back: the supervisor reissues it at once, not after the heartbeat bound, and charges
//! the replica that left for what it used. A frozen worker (SIGSTOP) is the negative control:
//! its task waits for the whole bound.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::supervisor::report::Report;

use crate::harness::*;

const HEARTBEAT_MS: u64 = 200;
const MISS_LIMIT: u64 = 3;
/// When a silent worker's tasks are reissued: `--heartbeat-ms` x `--miss-limit`.
const LOSS_BOUND_MS: u64 = HEARTBEAT_MS * MISS_LIMIT;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One job of one 3 s `spin` task on two one-slot workers; `signal` is sent to the worker
/// running it once it is under way. Returns the time from the signal to the reissue, the
/// report, and the stopped worker's id.
async fn stop_mid_task(signal: libc::c_int) -> (u64, Report, String) {
    let dir = tempfile::tempdir().unwrap();
    let (hb, misses) = (HEARTBEAT_MS.to_string(), MISS_LIMIT.to_string());
    // No redundancy: the only copy of the task is the one on the stopped worker.
    let args = [
        "--policy",
        "none",
        "--heartbeat-ms",
        &hb,
        "--miss-limit",
        &misses,
    ];
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &args);
    let workers = start_workers(&sup, 2, 1).await;
    let op = sup.operator();
    let spec = JobSpec {
        name: "leaving".into(),
        tasks: vec![TaskSpec::new(
            "spin",
            "spin",
            serde_json::json!({ "ms": 3000 }),
        )],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    let victim_id = eventually(Duration::from_secs(30), "the task under way", || async {
        let status = op.status(&job).await.ok()?;
        let r = &status["task_states"][0]["replicas"][0];
        (r["progress"].as_f64()? > 0.05).then(|| r["worker"].as_str().map(str::to_owned))?
    })
    .await;
    let names = worker_names(&op).await;
    let victim = workers
        .iter()
        .find(|w| w.name == names[&victim_id])
        .unwrap();
    let at = unix_ms();
    // SAFETY: signalling a child process this test started (and still owns).
    assert_eq!(
        unsafe { libc::kill(victim.pid() as libc::pid_t, signal) },
        0
    );
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let results: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(op.results(&job).await.unwrap()).unwrap();
    assert_eq!(
        results,
        BTreeMap::from([("spin".to_owned(), serde_json::json!({ "spun_ms": 3000 }))])
    );
    let report = op.report(&job).await.unwrap();
    let reissue = report
        .reissues
        .iter()
        .find(|r| r.task == "spin")
        .unwrap_or_else(|| panic!("not reissued: {report:?}"));
    assert_ne!(reissue.worker, victim_id);
    let delay = reissue.at_ms.saturating_sub(at);
    if signal == libc::SIGSTOP {
        // SAFETY: as above; the worker is killed when `workers` goes.
        unsafe { libc::kill(victim.pid() as libc::pid_t, libc::SIGCONT) };
    }
    (delay, report, victim_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_task_hands_it_back_and_it_is_reissued_at_once_not_at_the_bound() {
    let _machine = shared_machine().await;
    let (delay, report, victim) = stop_mid_task(libc::SIGTERM).await;
    println!("SIGTERM: reissued {delay} ms after the signal (loss bound {LOSS_BOUND_MS} ms)");
    let reissue = report.reissues.iter().find(|r| r.task == "spin").unwrap();
    assert_eq!(reissue.cause, "left", "{reissue:?}");
    assert!(reissue.why.contains(&victim), "{reissue:?}");
    assert_eq!(report.reissues_by_cause["left"], 1, "{report:?}");
    assert_eq!(report.replicas_started, 2, "{report:?}");
    assert!(
        delay < LOSS_BOUND_MS / 3,
        "reissued {delay} ms after SIGTERM; the heartbeat bound is {LOSS_BOUND_MS} ms"
    );
    // The replica that left is charged for what it used.
    let left = report.workers.iter().find(|w| w.worker == victim).unwrap();
    assert!(left.cpu_ms > 0, "{left:?}");

    // Negative control: a frozen worker says nothing, and its task waits for the bound.
    let (frozen, report, _) = stop_mid_task(libc::SIGSTOP).await;
    println!("SIGSTOP: reissued {frozen} ms after the signal");
    let reissue = report.reissues.iter().find(|r| r.task == "spin").unwrap();
    assert_eq!(reissue.cause, "worker_lost", "{reissue:?}");
    assert!(
        frozen >= LOSS_BOUND_MS - HEARTBEAT_MS,
        "a frozen worker's task was reissued after {frozen} ms, before the bound"
    );
    assert!(
        delay * 3 < frozen,
        "SIGTERM {delay} ms, SIGSTOP {frozen} ms"
    );
}
