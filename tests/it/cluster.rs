//! The core loop end to end: a real supervisor process and real headless worker processes over
//! 127.0.0.1, with workers and the supervisor killed mid-job.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::proto::JobId;
use idlegrid::runtime::{self, TaskControl};

use crate::harness::*;

/// A prime-counting task over `[from, to)`.
fn primes(id: &str, from: u64, to: u64, critical: bool) -> TaskSpec {
    TaskSpec {
        critical: Some(critical),
        ..TaskSpec::new(id, "primes", serde_json::json!({ "from": from, "to": to }))
    }
}

/// `n` prime-counting tasks of `width` numbers each, starting at 10^9 (so they take a while).
fn primes_job(name: &str, n: u64, width: u64) -> JobSpec {
    let base = 1_000_000_000;
    JobSpec {
        name: name.into(),
        tasks: (0..n)
            .map(|i| {
                primes(
                    &format!("p{i:02}"),
                    base + i * width,
                    base + (i + 1) * width,
                    false,
                )
            })
            .collect(),
        ..Default::default()
    }
}

/// What each task must output, computed here by the same kernels.
fn expected_outputs(spec: &JobSpec) -> BTreeMap<String, serde_json::Value> {
    spec.tasks
        .iter()
        .map(|t| {
            let out =
                runtime::run(&t.kind, &t.input, &BTreeMap::new(), &TaskControl::new()).unwrap();
            (t.id.0.clone(), out)
        })
        .collect()
}

fn results_map(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(v).unwrap()
}

/// Per task of a running job: the (worker, progress) of each replica.
async fn replicas(
    op: &idlegrid::operator::Operator,
    job: &JobId,
) -> BTreeMap<String, Vec<(String, f64)>> {
    let status = op.status(job).await.unwrap();
    status["task_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let reps = t["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["worker"].as_str().unwrap().to_owned(),
                        r["progress"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            (t["id"].as_str().unwrap().to_owned(), reps)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_correctly_when_a_worker_is_killed_mid_task() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "50"]);
    let mut workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();

    // Each task takes about half a second here.
    let spec = primes_job("kill-a-worker", 6, 1_000_000_000);
    let job = op.submit(&spec).await.unwrap();

    // Wait until some worker is visibly early in a task (heartbeats every 50 ms carry its
    // progress), then SIGKILL it.
    let (task, victim_id) = eventually(Duration::from_secs(30), "a task in progress", || async {
        replicas(&op, &job).await.into_iter().find_map(|(t, reps)| {
            reps.into_iter()
                .find(|(_, p)| *p > 0.02 && *p < 0.5)
                .map(|(w, _)| (t, w))
        })
    })
    .await;
    let names = worker_names(&op).await;
    let victim_name = &names[&victim_id];
    let victim = workers.iter_mut().find(|w| &w.name == victim_name).unwrap();
    victim.kill9();

    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    assert_eq!(
        results_map(op.results(&job).await.unwrap()),
        expected_outputs(&spec)
    );
    let report = op.report(&job).await.unwrap();
    let reissue = report
        .reissues
        .iter()
        .find(|r| r.task == task)
        .unwrap_or_else(|| panic!("{task} not reissued: {report:?}"));
    assert!(
        reissue.why.contains(&victim_id) && reissue.why.contains("connection closed"),
        "{reissue:?}"
    );
    assert_ne!(reissue.worker, victim_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_task_runs_on_two_distinct_workers_at_once() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let _workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();

    // The critical task takes about a second; the others a tenth of that.
    let mut spec = primes_job("critical", 3, 150_000_000);
    spec.tasks[0].critical = Some(true);
    spec.tasks[0].input = serde_json::json!({ "from": 1_000_000_000u64, "to": 3_000_000_000u64 });
    let job = op.submit(&spec).await.unwrap();
    let running_on = eventually(
        Duration::from_secs(20),
        "the critical task on two workers",
        || async {
            let reps = replicas(&op, &job).await;
            let on: BTreeSet<String> = reps.get("p00")?.iter().map(|(w, _)| w.clone()).collect();
            (on.len() >= 2).then_some(on)
        },
    )
    .await;
    assert_eq!(running_on.len(), 2, "{running_on:?}");
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed");
    assert_eq!(
        results_map(op.results(&job).await.unwrap()),
        expected_outputs(&spec)
    );
    let report = op.report(&job).await.unwrap();
    // Two replicas of the critical task plus one of each other task; the loser was cancelled.
    // A worker freed by a short task may insure the critical one with a saturation replica.
    let saturation = report
        .cost_by_reason
        .get("saturation")
        .map_or(0, |line| line.replicas);
    assert!(saturation <= 1, "{report:?}");
    assert_eq!(report.replicas_started, 4 + saturation, "{report:?}");
    assert_eq!(report.reissued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_killed_mid_job_resumes_it_after_restart_without_losing_anything() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "200"]);
    let addr = sup.addr;
    let _workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();

    // Twelve tasks of about a fifth of a second each on three workers.
    let spec = primes_job("restart", 12, 300_000_000);
    let job = op.submit(&spec).await.unwrap();
    let before = eventually(Duration::from_secs(60), "a few results", || async {
        let r = results_map(op.results(&job).await.ok()?);
        (r.len() >= 3).then_some(r)
    })
    .await;
    sup.kill9();
    assert!(
        before.len() < spec.tasks.len(),
        "job finished before the kill; make tasks longer"
    );

    // Same data dir, same port: the workers reconnect by themselves.
    let sup = SupervisorProc::start(dir.path(), &addr.to_string(), &["--heartbeat-ms", "200"]);
    let op = sup.operator();
    let summary = wait_for_job(&op, &job, Duration::from_secs(90)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let after = results_map(op.results(&job).await.unwrap());
    assert_eq!(after, expected_outputs(&spec));
    for (task, out) in &before {
        assert_eq!(
            after.get(task),
            Some(out),
            "result of {task} changed or was lost"
        );
    }
    assert!(
        sup.log().contains("resuming job after restart"),
        "{}",
        sup.log()
    );
    let report = op.report(&job).await.unwrap();
    assert_eq!(report.summary.tasks_done, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_everywhere_fails_its_job_with_the_tasks_error() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--max-failures", "3"]);
    let _workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();

    // Valid as a job, and refused by every worker: none of them runs fault kernels.
    let spec = JobSpec {
        name: "doomed".into(),
        tasks: vec![TaskSpec::new("backwards", "abort", serde_json::json!({}))],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(30)).await;
    assert_eq!(summary.state, "failed");
    let error = summary.error.unwrap();
    assert!(
        error.starts_with("task backwards failed 3 times"),
        "{error}"
    );
    assert!(error.contains("fault kernels are disabled"), "{error}");
    let report = op.report(&job).await.unwrap();
    let tried: BTreeSet<&str> = report.workers.iter().map(|w| w.worker.as_str()).collect();
    assert_eq!(
        tried.len(),
        3,
        "each retry went to a different worker: {report:?}"
    );
}
