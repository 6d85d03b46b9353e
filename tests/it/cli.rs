//! The command-line contract of DESIGN.md, as a user's script would call it.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_json_on_the_supervisors_machine_needs_no_token_flag_and_prints_the_report() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let _workers = start_workers(&sup, 2, 1).await;
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jobs/primes.toml");
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(SUPERVISOR)
            .args([
                "submit",
                manifest,
                "--server",
                &sup.http_url(),
                "--wait",
                "--json",
            ])
            .env_remove("IDLEGRID_OPERATOR_TOKEN_FILE")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for key in [
        "job_id",
        "state",
        "tasks",
        "makespan_ms",
        "replicas_started",
        "reissued",
        "cost",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["state"], "completed");
    assert_eq!(report["tasks"], 8);
    let results = sup
        .operator()
        .results(&report["job_id"].as_str().unwrap().into())
        .await
        .unwrap();
    let total: u64 = results
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // There are 539 777 primes below 8 000 000.
    assert_eq!(total, 539_777);
}

/// Windows runs a screensaver as `NAME.scr /s | /c | /p HWND`; the same dispatch holds wherever
/// the program is named `*.scr` (here a hard link), so it is tested on Linux.
#[cfg(feature = "gui")]
#[test]
fn named_scr_the_client_answers_the_windows_screensaver_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let scr = dir.path().join("idlegrid.scr");
    if std::fs::hard_link(CLIENT, &scr).is_err() {
        std::fs::copy(CLIENT, &scr).unwrap();
    }
    let run = |args: &[&str]| {
        std::process::Command::new(&scr)
            .args(args)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap()
    };
    let preview = run(&["/p", "4242"]);
    assert!(preview.status.success());
    assert!(String::from_utf8_lossy(&preview.stderr).contains("no preview drawn into window 4242"));
    let bad = run(&["/x"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"/x\": expected /s, /c or /p HWND"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let no_hwnd = run(&["/p"]);
    assert!(!no_hwnd.status.success());
    assert!(String::from_utf8_lossy(&no_hwnd.stderr).contains("/p needs a window handle"));
    // Not named .scr, the same argument is an ordinary bad command line.
    let plain = std::process::Command::new(CLIENT)
        .arg("/p")
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("window handle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_streams_a_job_of_thirty_thousand_tasks_and_every_task_is_stored() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    // About 2 MB of JSON: sent in dozens of pieces, never whole.
    let n = 30_000;
    let mut manifest = String::from("name = \"wide\"\n");
    for k in 0..n {
        manifest.push_str(&format!(
            "[[task]]\nid = \"t{k}\"\nkind = \"spin\"\ninput = {{ ms = 0 }}\n"
        ));
    }
    let path = dir.path().join("wide.toml");
    std::fs::write(&path, manifest).unwrap();
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(SUPERVISOR)
            .arg("submit")
            .arg(&path)
            .args(["--server", &sup.http_url(), "--json"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let job = id["job_id"].as_str().unwrap().into();
    let summary = sup.operator().summary(&job).await.unwrap();
    assert_eq!(summary.tasks, n);
    assert_eq!(summary.state, "running");
    // The store counted every task (above), and the scheduler holds the last one.
    let status = sup.operator().status(&job).await.unwrap();
    assert!(
        status.to_string().contains(&format!("\"t{}\"", n - 1)),
        "{status}"
    );
}
