//! A short swarm: hundreds of simulated workers over real WebSockets against a supervisor
//! process. Every worker joins and stays, results are right, the figures are all there, and a
//! worker that goes silent is the only one declared lost.

use idlegrid::bench::swarm::{SwarmArgs, SwarmOptions, run_swarm};

use crate::harness::*;

fn args(workers: u32, silent: u32, tasks_per_s: Option<u32>) -> SwarmArgs {
    SwarmArgs {
        workers,
        heartbeat_ms: 100,
        miss_limit: 3,
        duration_s: 5,
        task_us: 0,
        tasks_per_s,
        job_tasks: 200,
        silent,
        kill_at_s: None,
        keep: false,
        json: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_workers_at_100_ms_heartbeats_all_stay_connected_and_none_is_falsely_lost() {
    let _machine = whole_machine().await;
    // A moderate task rate: this test checks the swarm and the loss detector, not the
    // supervisor's throughput (which `bench swarm` measures).
    let r = run_swarm(SwarmOptions {
        args: args(200, 5, Some(200)),
        supervisor_program: Some(SUPERVISOR.into()),
    })
    .await
    .unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["connected"], 200, "{json}");
    assert_eq!(json["connect_failures"], 0, "{json}");
    assert_eq!(json["dropped"], 0, "{json}");
    assert_eq!(json["false_loss_notices"], 0, "{json}");
    // The negative control: the silent workers were all seen as lost, and only they were.
    assert_eq!(json["control_lost_detected"], 5, "{json}");
    assert_eq!(json["supervisor"]["workers_lost"], 5, "{json}");
    assert!(json["completed"].as_u64().unwrap() > 0, "{json}");
    assert!(
        json["results_checked"].as_u64().unwrap() >= json["completed"].as_u64().unwrap(),
        "{json}"
    );
    assert_eq!(json["results_wrong"], 0, "{json}");
    for key in [
        "assign_to_ack",
        "result_to_ack",
        "heartbeat_gap",
        "ws_ping_rtt",
    ] {
        assert!(json[key]["samples"].as_u64().unwrap() > 0, "{key}: {json}");
        assert!(json[key]["p99_ms"].as_f64().is_some(), "{key}: {json}");
    }
    assert!(json["completions_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(
        json["supervisor"]["cpu_percent"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(
        json["supervisor"]["rss_kb_end"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert!(json["fd_limit"]["enough"].as_bool().unwrap(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_killed_under_load_keeps_every_acknowledged_result_and_finishes_every_job_once()
 {
    let _machine = whole_machine().await;
    let mut a = args(100, 0, None);
    a.heartbeat_ms = 500;
    a.duration_s = 6;
    a.kill_at_s = Some(3);
    let r = run_swarm(SwarmOptions {
        args: a,
        supervisor_program: Some(SUPERVISOR.into()),
    })
    .await
    .unwrap();
    let json = serde_json::to_value(&r).unwrap();
    let restart = &json["restart"];
    // The kill came under load: work had been acknowledged, and more came after it.
    assert!(
        restart["results_acknowledged_before_kill"]
            .as_u64()
            .unwrap()
            > 100,
        "{json}"
    );
    assert!(
        restart["jobs_acknowledged"].as_u64().unwrap()
            > restart["jobs_acknowledged_before_kill"].as_u64().unwrap(),
        "{json}"
    );
    assert_eq!(restart["reconnects"], 100, "{json}");
    assert_eq!(restart["of_those_missing_or_changed"], 0, "{json}");
    assert_eq!(restart["jobs_unfinished"], 0, "{json}");
    assert_eq!(restart["tasks_without_result"], 0, "{json}");
    assert_eq!(restart["tasks_won_twice"], 0, "{json}");
    assert_eq!(json["results_wrong"], 0, "{json}");
    assert_eq!(json["dropped"], 0, "{json}");
    assert_eq!(json["false_loss_notices"], 0, "{json}");
}

#[tokio::test]
async fn a_kill_outside_the_window_is_refused_before_anything_starts() {
    let mut a = args(10, 0, None);
    a.kill_at_s = Some(5);
    let e = run_swarm(SwarmOptions {
        args: a,
        supervisor_program: Some(SUPERVISOR.into()),
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--kill-at-s 5"), "{e}");
}
