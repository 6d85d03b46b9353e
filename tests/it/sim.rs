//! `simulate` and `bench qos` as a user's script calls them.

use std::process::Command;

use crate::harness::SUPERVISOR;

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(SUPERVISOR)
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn simulate_json_prints_the_same_bytes_for_the_same_seed() {
    let args = [
        "--workers",
        "30",
        "--tasks",
        "60",
        "--task-s",
        "30",
        "--churn",
        "0.1",
        "--stragglers",
        "0.05",
        "--seed",
        "5",
        "--policy",
        "deadline",
        "--json",
    ];
    let a = simulate(&args);
    let b = simulate(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let m: serde_json::Value = serde_json::from_slice(&a.stdout).expect("one JSON object");
    for key in [
        "makespan_s",
        "ideal_makespan_s",
        "lower_bound_s",
        "replica_cpu_percent",
        "p99_task_s",
        "reissues",
        "cost",
        "cost_by_class",
        "cost_by_outcome",
        "tasks_lost",
        "policy",
        "seed",
        "workers",
        "tasks",
        "events",
    ] {
        assert!(m.get(key).is_some(), "no {key} in {m}");
    }
    assert_eq!(m["policy"], "deadline");
    assert_eq!(m["tasks_lost"], 0);
}

#[test]
fn simulate_rejects_a_bad_scenario_or_trace_naming_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(
        &scenario,
        "[pool]\nworkers = 10\n[job]\ntasks = 5\nmean_s = 60\n[stragglers]\nfraction = 0.1\nslowdown = 0.5\n",
    )
    .unwrap();
    let out = simulate(&["--scenario", scenario.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml line 8: stragglers.slowdown"),
        "{err}"
    );
    let trace = dir.path().join("avail.csv");
    std::fs::write(&trace, "worker,start_s,end_s\na,0,100\nb,-5,100\n").unwrap();
    let out = simulate(&["--availability", trace.to_str().unwrap(), "--tasks", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("avail.csv line 3: start_s"), "{err}");
}

#[test]
fn a_written_trace_drives_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = simulate(&[
        "--write-trace",
        d,
        "--workers",
        "20",
        "--hours",
        "2",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let avail = dir.path().join("availability.csv");
    let speeds = dir.path().join("speeds.csv");
    let out = simulate(&[
        "--availability",
        avail.to_str().unwrap(),
        "--speeds",
        speeds.to_str().unwrap(),
        "--tasks",
        "40",
        "--task-s",
        "60",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["workers"], 20);
    assert_eq!(m["tasks_lost"], 0);
}
