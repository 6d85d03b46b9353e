//! Quality of service as an operator sees it: serve's QoS flags, a worker's measured speed kept
//! under its stable id across restarts, and the job report's critical tasks and cost by class.

use std::time::Duration;

use idlegrid::job::{Estimates, JobSpec, TaskSpec};
use idlegrid::operator::Operator;

use crate::harness::*;

/// Distinctive rates, so that a cost charged at the default ones would show.
const RATES: &str = "high=3,standard=1.5,low=0.25";

fn rate(class: &str) -> f64 {
    match class {
        "high" => 3.0,
        "standard" => 1.5,
        "low" => 0.25,
        other => panic!("unexpected class {other:?}"),
    }
}

/// A spin task of `ms` that says so in its CPU estimate (the scheduler measures speed against
/// the estimate).
fn spin(id: &str, ms: u64) -> TaskSpec {
    TaskSpec {
        estimates: Estimates {
            cpu_s: ms as f64 / 1000.0,
            ..Estimates::default()
        },
        ..TaskSpec::new(id, "spin", serde_json::json!({ "ms": ms }))
    }
}

/// The `/api/workers` entry of the worker named `name`.
async fn worker_named(op: &Operator, name: &str) -> serde_json::Value {
    let all = op.workers().await.unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {all}"))
        .clone()
}

/// Samples of a worker's measured speed for `kind` (0 when it has none).
fn samples(worker: &serde_json::Value, kind: &str) -> u64 {
    worker["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == kind)
        .map_or(0, |h| h["samples"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_measured_speed_survives_its_restart_and_the_supervisors() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let op = sup.operator();
    let mut w1 = WorkerProc::start(&sup, "w1", 1);
    wait_for_workers(&op, 1).await;
    let before = worker_named(&op, "w1").await;
    let id = before["worker"].as_str().unwrap().to_owned();
    assert_eq!(samples(&before, "spin"), 0, "{before}");
    // The capacity sources are all shown.
    for key in [
        "bench_speed",
        "speed",
        "class",
        "history",
        "link",
        "held_back",
    ] {
        assert!(before.get(key).is_some(), "no {key} in {before}");
    }
    assert!(before["hardware"]["cores"].as_u64().unwrap() >= 1);
    assert!(before["hardware"].get("memory_mb").is_some());
    assert!(before["hardware"].get("disk_mb").is_some());

    let spec = JobSpec {
        name: "measure".into(),
        tasks: (0..3).map(|i| spin(&format!("s{i}"), 150)).collect(),
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    assert_eq!(
        wait_for_job(&op, &job, Duration::from_secs(60)).await.state,
        "completed"
    );
    let measured = worker_named(&op, "w1").await;
    assert_eq!(samples(&measured, "spin"), 3, "{measured}");
    let speed = measured["history"][0]["speed"].as_f64().unwrap();
    assert!(speed > 0.0);

    // The worker and the supervisor both go (kill -9: nothing is written on the way out), then
    // come back on the same data dirs. Before any new task, the worker's history is there, under
    // the id it kept; a worker new to the pool has none.
    w1.kill9();
    sup.kill9();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let op = sup.operator();
    let _w1 = WorkerProc::start(&sup, "w1", 1);
    let _w2 = WorkerProc::start(&sup, "w2", 1);
    wait_for_workers(&op, 2).await;
    let back = worker_named(&op, "w1").await;
    assert_eq!(back["worker"], id.as_str());
    assert_eq!(samples(&back, "spin"), 3, "{back}");
    assert!((back["history"][0]["speed"].as_f64().unwrap() - speed).abs() < 1e-9);
    // The speed placement uses is the measured one, not the benchmark's.
    assert!(
        (back["speed"].as_f64().unwrap() - speed).abs() < 1e-9,
        "{back}"
    );
    let fresh = worker_named(&op, "w2").await;
    assert_eq!(samples(&fresh, "spin"), 0, "{fresh}");
    assert_ne!(fresh["worker"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_critical_tasks_and_charges_cpu_time_by_class() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--class-rates", RATES]);
    let _workers = start_workers(&sup, 2, 1).await;
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        r#"name = "qos"

[[task]]
id = "a"
kind = "spin"
input = { ms = 300 }
critical = true
estimates = { cpu_s = 0.3 }

[[task]]
id = "b"
kind = "spin"
input = { ms = 100 }

[[task]]
id = "c"
kind = "spin"
input = { ms = 100 }
"#,
    )
    .unwrap();
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(SUPERVISOR)
            .arg("submit")
            .arg(&manifest)
            .args(["--server", &sup.http_url(), "--wait"])
            .env_remove("IDLEGRID_OPERATOR_TOKEN_FILE")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("cost by class: high"), "{text}");
    assert!(text.contains("cost by outcome: won"), "{text}");
    assert!(text.contains("saturation"), "{text}");
    assert!(
        text.contains("a (2 replicas planned): critical in the manifest"),
        "{text}"
    );
    let job = text.lines().next().unwrap().trim().into();

    let op = sup.operator();
    let report = op.report(&job).await.unwrap();
    let a = report
        .critical_tasks
        .iter()
        .find(|c| c.task == "a")
        .unwrap_or_else(|| panic!("a is not listed as critical: {report:?}"));
    assert_eq!(a.planned_replicas, 2);
    assert!(!a.reasons.is_empty());
    // a ran twice from the start, on two workers.
    assert!(report.replicas_started >= 4, "{report:?}");
    // Each class's cost is its CPU seconds at that class's rate (given on the command line),
    // and the classes add up to the total.
    let mut total = 0.0;
    let mut charged = 0;
    for (class, line) in &report.cost_by_class {
        let expected = line.cpu_ms as f64 / 1000.0 * rate(class);
        assert!(
            (line.cost - expected).abs() < 1e-6,
            "{class}: {line:?} at {}",
            rate(class)
        );
        total += line.cost;
        charged += line.replicas - line.unmeasured;
    }
    assert!((total - report.cost).abs() < 1e-6, "{report:?}");
    // Every finished task's winner reported its CPU time and was charged for it.
    assert!(charged >= 3, "{report:?}");
    assert!(report.cost > 0.0);
    assert_eq!(report.cost_by_outcome["won"].replicas, 3);

    // Losing copies (of `a`, or a saturation copy) are cancelled; their workers report what
    // they used, and the job is charged for it too.
    let losers = eventually(Duration::from_secs(10), "the loser's CPU time", || async {
        let report = op.report(&job).await.ok()?;
        let losers = report.cost_by_outcome.get("losers")?.clone();
        (losers.replicas >= 1 && losers.unmeasured == 0).then_some(losers)
    })
    .await;
    assert!(losers.cpu_ms > 0 && losers.cost > 0.0, "{losers:?}");

    // The job's status shows the plan per task, after the job finished as while it ran.
    let status = op.status(&job).await.unwrap();
    let tasks = status["task_states"].as_array().unwrap();
    let a = tasks.iter().find(|t| t["id"] == "a").unwrap();
    assert_eq!(a["planned_replicas"], 2);
    assert_eq!(a["critical_reasons"][0], "critical in the manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_qos_flags_out_of_range_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--policy", "fastest"],
            "known: idlegrid, deadline, none, speculative",
        ),
        (&["--redundancy-budget", "5"], "from 0 to 4"),
        (&["--status-request-ms", "0"], "--status-request-ms"),
        (
            &["--status-request-ms", "3000"],
            "not shorter than the loss bound of 3000 ms",
        ),
        (&["--progress-ms", "20000"], "--progress-ms"),
        (
            &["--class-rates", "premium=4"],
            "unknown capacity class \"premium\"",
        ),
    ];
    for (flags, expected) in cases {
        let out = tokio::process::Command::new(SUPERVISOR)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(flags)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
    let help = tokio::process::Command::new(SUPERVISOR)
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--policy <NAME>",
        "--redundancy-budget <F>",
        "--status-request-ms <MS>",
        "--progress-ms <MS>",
        "--stall-after-s <S>",
        "--class-rates <CLASS=RATE,...>",
    ] {
        assert!(help.contains(flag), "no {flag} in serve --help:\n{help}");
    }
}
