//! Poison tasks: a task whose output is over the pool's limit, and one whose kernel kills its
//! worker process, each fail their own job after `max_failures` workers, and the pool goes on
//! running other jobs.

use std::collections::BTreeSet;
use std::time::Duration;

use idlegrid::job::{JobSpec, TaskSpec};

use crate::harness::*;

fn spin_job(name: &str, n: usize) -> JobSpec {
    JobSpec {
        name: name.into(),
        tasks: (0..n)
            .map(|i| TaskSpec::new(format!("s{i}"), "spin", serde_json::json!({ "ms": 100 })))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_output_exceeds_the_limit_fails_its_job_after_max_failures_workers() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(
        dir.path(),
        "127.0.0.1:0",
        &["--max-output-mb", "1", "--max-failures", "3"],
    );
    let _workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();
    // 1.5 MiB of bytes is 2 MiB of base64: twice the limit.
    let big = op
        .submit(&JobSpec {
            name: "too-big".into(),
            tasks: vec![TaskSpec::new(
                "huge",
                "bytes",
                serde_json::json!({ "bytes": 3 << 19, "seed": 1 }),
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = wait_for_job(&op, &big, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "failed", "{summary:?}");
    let error = summary.error.unwrap();
    assert!(error.starts_with("task huge failed 3 times"), "{error}");
    assert!(
        error.contains("exceeds this pool's limit of 1048576 bytes"),
        "{error}"
    );
    let report = op.report(&big).await.unwrap();
    let tried: BTreeSet<&str> = report.workers.iter().map(|w| w.worker.as_str()).collect();
    assert_eq!(
        tried.len(),
        3,
        "three distinct workers tried it: {report:?}"
    );
    // Nobody was knocked off, and the pool still works.
    assert_eq!(op.stats().await.unwrap()["workers_lost"], 0);
    let ok = op.submit(&spin_job("after", 3)).await.unwrap();
    assert_eq!(
        wait_for_job(&op, &ok, Duration::from_secs(60)).await.state,
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_fails_its_job_after_max_failures_and_the_pool_keeps_running()
{
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(
        dir.path(),
        "127.0.0.1:0",
        &["--heartbeat-ms", "200", "--max-failures", "3"],
    );
    let _workers: Vec<WorkerProc> = (1..=4)
        .map(|i| {
            WorkerProc::start_args(
                &sup,
                &format!("w{i}"),
                1,
                &["--run-while-in-use", "--fault-kernels"],
                &[],
            )
        })
        .collect();
    let op = sup.operator();
    wait_for_workers(&op, 4).await;
    let poison = op
        .submit(&JobSpec {
            name: "poison".into(),
            tasks: vec![TaskSpec::new(
                "crasher",
                "abort",
                serde_json::json!({ "after_ms": 100 }),
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = wait_for_job(&op, &poison, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "failed", "{summary:?}");
    let error = summary.error.unwrap();
    assert!(error.starts_with("task crasher failed 3 times"), "{error}");
    assert!(error.contains("may crash its worker"), "{error}");
    // Three workers died of it; the fourth never got it and runs the next job.
    let report = op.report(&poison).await.unwrap();
    assert_eq!(report.replicas_started, 3, "{report:?}");
    let live = wait_for_workers(&op, 1).await;
    let live: Vec<&serde_json::Value> = live
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let ok = op.submit(&spin_job("after", 3)).await.unwrap();
    assert_eq!(
        wait_for_job(&op, &ok, Duration::from_secs(60)).await.state,
        "completed"
    );
}
