//! `/metrics`: real Prometheus text, behind the operator token, whose counters match the job
//! report of what happened.

use std::time::Duration;

use idlegrid::job::{JobSpec, TaskSpec};
use prometheus_parse::{Scrape, Value};

use crate::harness::*;

async fn scrape(sup: &SupervisorProc, token: Option<&str>) -> (u16, String) {
    let mut req = crate::harness::http().get(format!("{}/metrics", sup.http_url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn sum(scrape: &Scrape, metric: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_what_the_job_report_counts() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    // 200 ms heartbeats: a live worker is lost after 600 ms of silence, which a loaded machine
    // (the browser test beside this one) does not reach; at 50 ms it might, and a false loss
    // would change every count below. The SIGKILLed worker is lost at once (its connection
    // closes).
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "200"]);
    let mut workers = start_workers(&sup, 3, 1).await;
    let op = sup.operator();
    let spec = JobSpec {
        name: "metrics".into(),
        tasks: (0..6)
            .map(|k| TaskSpec::new(format!("t{k}"), "spin", serde_json::json!({ "ms": 800 })))
            .collect(),
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    // Every worker holds a task by now: the one killed leaves a task to reissue.
    tokio::time::sleep(Duration::from_millis(400)).await;
    workers[0].kill9();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed");
    let report = op.report(&job).await.unwrap();
    assert!(report.reissued >= 1, "{report:?}");

    // Behind the operator token, like the API.
    assert_eq!(scrape(&sup, None).await.0, 401);
    assert_eq!(scrape(&sup, Some("wrong")).await.0, 401);
    let (status, text) = scrape(&sup, Some(&sup.operator_token())).await;
    assert_eq!(status, 200, "{text}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        sum(&parsed, "idlegrid_replicas_started_total"),
        f64::from(report.replicas_started),
        "{text}"
    );
    assert_eq!(
        sum(&parsed, "idlegrid_reissues_total"),
        f64::from(report.reissued),
        "{text}"
    );
    assert_eq!(sum(&parsed, "idlegrid_workers_lost_total"), 1.0, "{text}");
    let live = parsed
        .samples
        .iter()
        .find(|s| s.metric == "idlegrid_workers" && s.labels.get("state") == Some("live"))
        .map(|s| s.value.clone());
    assert!(matches!(live, Some(Value::Gauge(v)) if v == 2.0), "{text}");
    // Every result was stored and acknowledged: the latency histogram counted each.
    assert!(
        text.contains("idlegrid_result_latency_seconds_count 6\n")
            || text.contains("idlegrid_result_latency_seconds_count 7\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE idlegrid_heartbeat_lateness_seconds histogram"),
        "{text}"
    );
    // Every reissue's latency was measured; none waited long for a free worker.
    assert_eq!(
        sum(&parsed, "idlegrid_reissue_latency_seconds_count"),
        f64::from(report.reissued),
        "{text}"
    );
    // Tasks, jobs, makespan and cost: what the report says.
    assert_eq!(sum(&parsed, "idlegrid_tasks_done_total"), 6.0, "{text}");
    assert_eq!(sum(&parsed, "idlegrid_jobs_running"), 0.0, "{text}");
    assert_eq!(sum(&parsed, "idlegrid_tasks"), 0.0, "no job runs: {text}");
    let completed = parsed.samples.iter().find(|s| {
        s.metric == "idlegrid_jobs_finished_total" && s.labels.get("state") == Some("completed")
    });
    assert!(
        matches!(completed.map(|s| &s.value), Some(Value::Counter(v)) if *v == 1.0),
        "{text}"
    );
    assert_eq!(
        sum(&parsed, "idlegrid_job_makespan_seconds_count"),
        1.0,
        "{text}"
    );
    let makespan = sum(&parsed, "idlegrid_job_makespan_seconds_sum");
    assert!(
        (makespan - report.makespan_ms as f64 / 1000.0).abs() < 1e-6,
        "{makespan} s vs {} ms: {text}",
        report.makespan_ms
    );
    let cost = sum(&parsed, "idlegrid_cost_total");
    assert!(report.cost > 0.0, "{report:?}");
    assert!(
        (cost - report.cost).abs() < 1e-9,
        "{cost} vs {}: {text}",
        report.cost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_tasks_of_a_running_job_by_state() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let _workers = start_workers(&sup, 1, 1).await;
    let op = sup.operator();
    // One worker, one slot: "first" runs, two wait for it, one is ready behind the running one.
    let mut tasks = vec![
        TaskSpec::new("first", "spin", serde_json::json!({ "ms": 30_000 })),
        TaskSpec::new("other", "spin", serde_json::json!({ "ms": 30_000 })),
    ];
    for k in 0..2 {
        let mut t = TaskSpec::new(
            format!("after-{k}"),
            "spin",
            serde_json::json!({ "ms": 10 }),
        );
        t.deps = vec!["first".into(), "other".into()];
        tasks.push(t);
    }
    let job = op
        .submit(&JobSpec {
            name: "by-state".into(),
            tasks,
            ..Default::default()
        })
        .await
        .unwrap();
    let token = sup.operator_token();
    let text = eventually(Duration::from_secs(20), "a task running", || async {
        let (_, text) = scrape(&sup, Some(&token)).await;
        text.contains("idlegrid_tasks{state=\"running\"} 1\n")
            .then_some(text)
    })
    .await;
    for (state, n) in [("waiting", 2), ("ready", 1), ("running", 1), ("done", 0)] {
        assert!(
            text.contains(&format!("idlegrid_tasks{{state=\"{state}\"}} {n}\n")),
            "{state} {n}: {text}"
        );
    }
    assert!(text.contains("idlegrid_jobs_running 1\n"), "{text}");
    op.cancel(&job).await.unwrap();
}
