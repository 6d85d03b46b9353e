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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_jobs_and_workers_follows_a_job_gets_the_mandelbrot_png_and_cancels() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &[]);
    let _workers = start_workers(&sup, 2, 1).await;
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jobs/mandelbrot.toml");
    let (ok, job, err) = supervisor_cli(&sup, &["submit", manifest]).await;
    assert!(ok, "{err}");
    let job = job.trim().to_owned();

    let (ok, out, err) = supervisor_cli(&sup, &["jobs", "--json"]).await;
    assert!(ok, "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs[0]["job_id"], job.as_str(), "{jobs}");
    assert_eq!(jobs[0]["name"], "mandelbrot-demo", "{jobs}");
    let (ok, out, err) = supervisor_cli(&sup, &["status", &job]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{job} \"mandelbrot-demo\": ")),
        "{out}"
    );

    let summary = wait_for_job(
        &sup.operator(),
        &job.as_str().into(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let (ok, out, err) = supervisor_cli(&sup, &["jobs"]).await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&job))
        .unwrap_or_default();
    assert!(
        line.contains("completed") && line.contains("10/10"),
        "{out}"
    );

    // The picture, and every task's output, under --out.
    let out_dir = dir.path().join("out");
    let (ok, out, err) =
        supervisor_cli(&sup, &["results", &job, "--out", out_dir.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("10 results of 10 tasks"), "{out}");
    let png = std::fs::read(out_dir.join("mandelbrot.png")).expect("the picture was written");
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (800, 600));
    let assemble: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("assemble.json")).unwrap()).unwrap();
    assert_eq!(assemble["file"]["saved_as"], "mandelbrot.png", "{assemble}");
    assert!(out_dir.join("tile-7.json").is_file());

    let (ok, out, err) = supervisor_cli(&sup, &["workers", "--json"]).await;
    assert!(ok, "{err}");
    let workers: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(workers.as_array().unwrap().len(), 2, "{workers}");
    let (ok, out, _) = supervisor_cli(&sup, &["workers"]).await;
    assert!(ok && out.contains("w1") && out.contains("live"), "{out}");

    // Cancel: a running job stops; a finished one cannot be cancelled, and says so.
    let long = dir.path().join("long.toml");
    std::fs::write(
        &long,
        "name = \"long\"\n[[task]]\nid = \"a\"\nkind = \"spin\"\ninput = { ms = 60000 }\n",
    )
    .unwrap();
    let (ok, long_job, err) = supervisor_cli(&sup, &["submit", long.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let long_job = long_job.trim().to_owned();
    let (ok, out, err) = supervisor_cli(&sup, &["cancel", &long_job, "--json"]).await;
    assert!(ok, "{err}");
    let cancelled: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (ok, _, err) = supervisor_cli(&sup, &["cancel", &job]).await;
    assert!(!ok && err.contains("already finished"), "{err}");

    // Bad arguments are refused before any request, naming what is wrong.
    let (ok, _, err) = supervisor_cli(&sup, &["status", "../api/workers"]).await;
    assert!(
        !ok && err.contains("invalid job id \"../api/workers\""),
        "{err}"
    );
    let (ok, _, err) = supervisor_cli(&sup, &["status", "job-999"]).await;
    assert!(!ok && err.contains("job-999"), "{err}");
}
