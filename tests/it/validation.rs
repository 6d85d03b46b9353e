//! Result validation end to end: a worker that forges every output (`--lie-outputs`) among
//! honest ones. Without validation its outputs become results; with `validate = "quorum"` no
//! stored result is wrong, the liar is outvoted, flagged, given no more quorum tasks, and stays
//! flagged across a supervisor restart.

use std::collections::BTreeMap;
use std::time::Duration;

use idlegrid::job::{JobSpec, TaskSpec, Validate};
use idlegrid::operator::Operator;
use idlegrid::proto::JobId;
use idlegrid::runtime::{self, TaskControl};

use crate::harness::*;

/// `n` prime counts of about 0.1 s each; every output validated by a quorum of two if `quorum`.
fn primes_job(name: &str, n: u64, quorum: bool) -> JobSpec {
    let (base, width) = (2_000_000_000u64, 150_000_000u64);
    let mut spec = JobSpec {
        name: name.into(),
        tasks: (0..n)
            .map(|i| {
                let input =
                    serde_json::json!({ "from": base + i * width, "to": base + (i + 1) * width });
                TaskSpec {
                    critical: Some(false),
                    ..TaskSpec::new(format!("p{i:02}").as_str(), "primes", input)
                }
            })
            .collect(),
        ..Default::default()
    };
    if quorum {
        spec.validate = Some(Validate::Quorum);
    }
    spec
}

/// Tasks whose stored result differs from what this process's own kernel computes.
async fn wrong_results(op: &Operator, job: &JobId, spec: &JobSpec) -> Vec<String> {
    let stored: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(op.results(job).await.unwrap()).unwrap();
    assert_eq!(stored.len(), spec.tasks.len(), "{stored:?}");
    spec.tasks
        .iter()
        .filter(|t| {
            let want =
                runtime::run(&t.kind, &t.input, &BTreeMap::new(), &TaskControl::new()).unwrap();
            stored[&t.id.0] != want
        })
        .map(|t| t.id.0.clone())
        .collect()
}

/// The worker's entry in `/api/workers`.
async fn worker_entry(op: &Operator, id: &str) -> Option<serde_json::Value> {
    op.workers()
        .await
        .ok()?
        .as_array()?
        .iter()
        .find(|w| w["worker"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_worker_never_spoils_a_quorum_result_and_is_flagged_in_the_report() {
    let _machine = shared_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--heartbeat-ms", "100"];
    let mut sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &args);
    let addr = sup.addr;
    let _honest: Vec<WorkerProc> = (1..=3)
        .map(|i| WorkerProc::start(&sup, &format!("w{i}"), 1))
        .collect();
    let _liar = WorkerProc::start_args(
        &sup,
        "liar",
        1,
        &["--run-while-in-use", "--lie-outputs"],
        &[],
    );
    let op = sup.operator();
    wait_for_workers(&op, 4).await;
    let liar = worker_names(&op)
        .await
        .into_iter()
        .find(|(_, name)| name == "liar")
        .map(|(id, _)| id)
        .unwrap();

    // The negative control: trusted as sent, the liar's outputs are results.
    let spec = primes_job("trusting", 8, false);
    let job = op.submit(&spec).await.unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let report = op.report(&job).await.unwrap();
    let liar_won = report
        .workers
        .iter()
        .find(|w| w.worker == liar)
        .map_or(0, |w| w.won);
    assert!(liar_won > 0, "the liar ran nothing: {report:?}");
    let wrong = wrong_results(&op, &job, &spec).await;
    assert_eq!(
        wrong.len(),
        liar_won as usize,
        "each output the liar gave is wrong: {wrong:?}"
    );
    assert!(report.validation.is_none());

    // With a quorum of two: every result right, whoever ran it, until the liar is flagged.
    let mut rejected = 0;
    let mut flagged_in = None;
    for round in 0..4 {
        let spec = primes_job(&format!("quorum-{round}"), 8, true);
        let job = op.submit(&spec).await.unwrap();
        let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
        assert_eq!(summary.state, "completed", "{summary:?}");
        assert_eq!(
            wrong_results(&op, &job, &spec).await,
            Vec::<String>::new(),
            "a wrong output was stored in {job}"
        );
        let report = op.report(&job).await.unwrap();
        let v = report.validation.clone().expect("a validation section");
        assert_eq!(v.tasks_agreed, 8, "{v:?}");
        // Only the liar is ever outvoted.
        assert!(v.rejected_workers.iter().all(|w| w.worker == liar), "{v:?}");
        rejected += v.outputs_rejected;
        let entry = worker_entry(&op, &liar).await.unwrap();
        if entry["flagged"] == true {
            // The report says so too, in JSON and in words.
            let w = &v.rejected_workers[0];
            assert!(w.flagged && w.disagreed_total >= 3, "{w:?}");
            assert!(report.to_text().contains("FLAGGED"), "{}", report.to_text());
            flagged_in = Some(round);
            break;
        }
    }
    let round = flagged_in.expect("the liar was never flagged");
    assert!(rejected >= 3, "flagged after {rejected} rejections");
    eprintln!("liar flagged after {rejected} rejected outputs, in quorum job {round}");

    // Flagged: no replica of the next quorum job goes to it, and it still is right.
    let spec = primes_job("after-the-flag", 8, true);
    let job = op.submit(&spec).await.unwrap();
    let summary = wait_for_job(&op, &job, Duration::from_secs(60)).await;
    assert_eq!(summary.state, "completed", "{summary:?}");
    let report = op.report(&job).await.unwrap();
    assert!(
        report.workers.iter().all(|w| w.worker != liar),
        "a flagged worker got a quorum task: {:?}",
        report.workers
    );
    assert_eq!(report.validation.unwrap().outputs_rejected, 0);
    assert!(wrong_results(&op, &job, &spec).await.is_empty());
    // The operator sees it in /metrics and in `workers`.
    let metrics = metrics_text(&sup).await;
    assert!(
        metrics.contains(&format!(
            "idlegrid_quorum_outputs_total{{verdict=\"rejected\"}} {rejected}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("idlegrid_workers_flagged 1\n"),
        "{metrics}"
    );
    let (ok, out, err) = supervisor_cli(&sup, &["workers"]).await;
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("liar ")).unwrap();
    assert!(line.contains("FLAGGED"), "{out}");

    // The flag is stored: after a restart the reconnecting liar is still flagged.
    sup.kill9();
    let sup = SupervisorProc::start(dir.path(), &addr.to_string(), &args);
    let op = sup.operator();
    let entry = eventually(Duration::from_secs(30), "the liar back", || async {
        worker_entry(&op, &liar)
            .await
            .filter(|w| w["state"] == "live")
    })
    .await;
    assert_eq!(entry["flagged"], true, "{entry}");
    assert!(entry["disagreed"].as_u64().unwrap() >= 3, "{entry}");
}
