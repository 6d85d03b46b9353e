//! A short chaos run: real supervisor and worker processes under seeded kills, freezes,
//! supervisor restarts and link faults, with every result checked against a local computation.

use std::time::Duration;

use idlegrid::bench::chaos::{ChaosOptions, run_chaos};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_freezes_restarts_and_link_faults_no_result_is_lost_duplicated_or_wrong() {
    let _machine = whole_machine().await;
    let mut opts = ChaosOptions::new(Duration::from_secs(20), 7);
    opts.workers = 4;
    opts.restart_every = Duration::from_secs(8);
    opts.supervisor_program = Some(SUPERVISOR.into());
    opts.worker_program = Some(CLIENT.into());
    let r = run_chaos(opts).await.unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["supervisor_restarts"].as_u64().unwrap() >= 2, "{json}");
    assert!(json["worker_kills"].as_u64().unwrap() >= 1, "{json}");
    assert!(json["jobs_submitted"].as_u64().unwrap() >= 5, "{json}");
    assert_eq!(json["jobs_completed"], json["jobs_submitted"], "{json}");
    assert_eq!(json["results_verified"], json["tasks_submitted"], "{json}");
    for key in ["results_lost", "results_duplicated", "results_wrong"] {
        assert_eq!(json[key], 0, "{key}: {json}");
    }
}
