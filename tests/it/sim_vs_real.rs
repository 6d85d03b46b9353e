//! `bench sim-vs-real` end to end on a reduced scenario: the simulator's world replayed on a real
//! supervisor and real worker processes (scripted owner, SIGKILL and restart, SIGSTOP and
//! SIGCONT). The figures are not judged here (machines are noisy; the bench shows them), only
//! that the real run did what the world says and both makespans came out.

use std::time::Duration;

use idlegrid::bench::sim_vs_real::{Options, run_sim_vs_real, world_for};
use idlegrid::sched::Policy;
use idlegrid::sim::ScenarioSpec;

use crate::harness::*;

/// 3 workers, 6 spins of about a second; one owner back, one crash that comes back, one freeze
/// that thaws, all within the job's first two seconds.
const REDUCED: &str = r#"
name = "small-real-reduced"
[pool]
workers = 3
speed = { median = 1.0, sigma = 0.0 }
[network]
delay_ms = 1
[job]
tasks = 6
mean_s = 1.2
cv = 0.2
[churn]
fraction = 0.34
at_s = [0.4, 0.8]
busy_s = [0.8, 1.2]
[crashes]
fraction = 0.34
at_s = [0.5, 1.2]
return_fraction = 1.0
down_s = [0.5, 1.0]
[freezes]
fraction = 0.34
at_s = [0.5, 1.2]
thaw_fraction = 1.0
for_s = [1.2, 1.5]
[supervisor]
heartbeat_ms = 250
miss_limit = 3
limit_h = 0.05
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_world_runs_for_real_with_its_faults_replayed_and_both_makespans_are_printed() {
    let _machine = whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reduced.toml");
    std::fs::write(&file, REDUCED).unwrap();
    let spec = ScenarioSpec::load(&file).unwrap();
    // A seed whose owner, crash and freeze fall on three different workers, so that each fault
    // shows on its own.
    let seed = (0..1000)
        .find(|&s| {
            let w = world_for(&spec, s).unwrap().workers;
            let of = |f: &dyn Fn(&idlegrid::sim::world::WorkerPlan) -> bool| w.iter().position(f);
            let owner = of(&|p| !p.busy.is_empty());
            let crash = of(&|p| p.crash.is_some());
            let freeze = of(&|p| p.freeze.is_some());
            owner.is_some() && owner != crash && crash != freeze && freeze != owner
        })
        .expect("some seed separates the faults");
    let opts = Options {
        seed,
        policy: Policy::Idlegrid,
        lead: Duration::from_secs(3),
        dir: Some(dir.path().join("run")),
        client_program: Some(CLIENT.into()),
    };
    let c = tokio::time::timeout(Duration::from_secs(60), run_sim_vs_real(&spec, opts))
        .await
        .expect("the comparison finishes within a minute")
        .unwrap();
    let text = c.to_text();
    assert_eq!(c.real_state, "completed", "{text}");
    assert_eq!((c.real.tasks_done, c.sim.tasks_done), (6, 6), "{text}");
    assert!(c.ratio.is_finite() && c.ratio > 0.0, "{text}");
    assert!(
        text.contains(&format!("ratio real/sim: {:.3}", c.ratio)),
        "{text}"
    );
    // The faults were carried out, and the supervisor saw each for what it is.
    for what in ["SIGKILL", "restart", "SIGSTOP", "SIGCONT", "owner busy"] {
        let f = c.faults.iter().find(|f| f.what == what);
        assert!(
            f.is_some_and(|f| f.real_s.is_some()),
            "{what} not replayed: {text}"
        );
    }
    // When the replay falls behind (a loaded machine) the SIGKILL can land at the very moment of
    // the restart, and the supervisor then finds the killed connection silent rather than
    // closed (a known gap: a worker that restarts at once under the same id). Each fault still
    // costs exactly one loss.
    let kill = c.faults.iter().find(|f| f.what == "SIGKILL");
    let restart = c.faults.iter().find(|f| f.what == "restart");
    let kill_on_its_own = match (kill.and_then(|f| f.real_s), restart.and_then(|f| f.real_s)) {
        (Some(k), Some(r)) => r - k > 0.2,
        _ => false,
    };
    let lost = |cause: &str| c.real.workers_lost.get(cause).copied().unwrap_or(0);
    assert_eq!(lost("disconnected") + lost("silent"), 2, "{text}");
    if kill_on_its_own {
        assert_eq!(lost("disconnected"), 1, "{text}");
        assert_eq!(lost("silent"), 1, "{text}");
    }
    // The restarted worker came back under its own id and took work again: every task done
    // with 3 workers means it was not left out for good.
    assert_eq!(c.rejoin_s.len(), 1, "{text}");
}

#[test]
fn the_client_refuses_a_bad_activity_script_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("worker.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let script = dir.path().join("owner.csv");
    std::fs::write(&script, "1000,busy\n900,idle\n").unwrap();
    let out = std::process::Command::new(CLIENT)
        .args([
            "--headless",
            "--server",
            "ws://127.0.0.1:9/worker",
            "--token-file",
        ])
        .arg(&token)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--scripted-activity")
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("owner.csv line 2") && stderr.contains("time order"),
        "{stderr}"
    );
    // Scripted owners and computing regardless contradict each other.
    let out = std::process::Command::new(CLIENT)
        .args(["--headless", "--run-while-in-use", "--scripted-activity"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot be used with"),
        "{stderr}"
    );
}
