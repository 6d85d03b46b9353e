//! Simulator tests: what a scripted world does to the real scheduler, in virtual time.

use std::path::Path;

use super::scenario::{CrashSpec, FreezeSpec, Shape};
use super::world::{Outage, TaskPlan, WorkerPlan};
use super::*;

fn worker(name: &str, speed: f64) -> WorkerPlan {
    WorkerPlan {
        name: name.to_owned(),
        speed,
        slowdown: 1.0,
        slots: 1,
        memory_mb: 8192,
        disk_mb: 100_000,
        link_kbps: 20_000.0,
        join_s: 0.0,
        leave_s: None,
        busy: Vec::new(),
        crash: None,
        freeze: None,
    }
}

fn bag(sizes: &[f64]) -> Vec<TaskPlan> {
    sizes
        .iter()
        .map(|&s| TaskPlan {
            size_s: s,
            estimate_s: s,
            deps: Vec::new(),
            mem_mb: 0,
            disk_mb: 0,
            net_kb: 0,
            out_kb: 0,
        })
        .collect()
}

fn world(workers: Vec<WorkerPlan>, tasks: Vec<TaskPlan>) -> World {
    World {
        name: "test".to_owned(),
        workers,
        tasks,
        delay_s: 0.01,
        submit_s: 1.0,
        heartbeat_ms: 1000,
        miss_limit: 3,
        limit_s: 3600.0,
    }
}

fn run(w: World, policy: Policy) -> Simulation {
    run_world(w, policy, 7).unwrap()
}

/// A scenario file of `benches/scenarios`, made small enough for a debug test: a sixth of the
/// pool, an eighth of the tasks (a quarter of the DAG's depth), a tenth of every duration.
fn small(file: &str) -> ScenarioSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/scenarios")
        .join(file);
    let mut s = ScenarioSpec::load(&path).unwrap();
    s.pool.workers = (s.pool.workers / 6).max(4);
    match s.job.shape {
        Shape::Bag => s.job.tasks = s.job.tasks.map(|t| (t / 8).max(4)),
        Shape::Dag => {
            s.job.depth = s.job.depth.map(|d| (d / 4).max(2));
            s.job.width = s.job.width.map(|w| (w / 4).max(3));
        }
    }
    s.job.mean_s /= 10.0;
    let tenth = |r: &mut [f64; 2]| {
        r[0] /= 10.0;
        r[1] /= 10.0;
    };
    if let Some(c) = &mut s.churn {
        tenth(&mut c.at_s);
        tenth(&mut c.busy_s);
    }
    if let Some(c) = &mut s.crashes {
        tenth(&mut c.at_s);
        tenth(&mut c.down_s);
    }
    if let Some(c) = &mut s.freezes {
        tenth(&mut c.at_s);
        tenth(&mut c.for_s);
    }
    s.validate().unwrap();
    s
}

const SCENARIOS: [&str; 4] = [
    "stable.toml",
    "churn10-stragglers5.toml",
    "churn30-crashes.toml",
    "dag-heavy.toml",
];

#[test]
fn the_same_seed_gives_the_same_json_bytes_and_another_seed_differs() {
    let src = Source::Scenario(Box::new(small("churn30-crashes.toml")));
    let json = |seed| {
        serde_json::to_string(&simulate(&src, Policy::Idlegrid, seed).unwrap().metrics).unwrap()
    };
    let a = json(11);
    assert_eq!(a, json(11));
    assert_ne!(a, json(12));
    assert!(
        a.contains("\"makespan_s\"") && a.contains("\"seed\":11"),
        "{a}"
    );
}

#[test]
fn no_task_is_lost_under_any_policy_in_any_scenario_over_many_seeds() {
    for file in SCENARIOS {
        let src = Source::Scenario(Box::new(small(file)));
        for policy in Policy::ALL {
            for seed in 0..6 {
                let m = simulate(&src, policy, seed)
                    .unwrap_or_else(|e| panic!("{file} {policy} seed {seed}: {e}"))
                    .metrics;
                assert_eq!(m.tasks_lost, 0, "{file} {policy} seed {seed}: {m:?}");
                assert_eq!(m.job_outcome, "completed", "{file} {policy} seed {seed}");
                assert_eq!(
                    m.replicas["won"] as usize, m.tasks,
                    "{file} {policy} seed {seed}"
                );
                assert!(
                    m.makespan_s >= m.lower_bound_s,
                    "{file} {policy} seed {seed}: {m:?}"
                );
            }
        }
    }
}

#[test]
fn a_simulated_crash_makes_the_scheduler_reissue_and_without_it_there_is_none() {
    let mut w = world(
        vec![worker("a", 1.0), worker("b", 1.0), worker("c", 1.0)],
        bag(&[100.0, 100.0]),
    );
    let healthy = run(w.clone(), Policy::Idlegrid);
    let lost = |m: &Metrics| {
        ["worker_lost", "owner_active", "dropped"]
            .iter()
            .map(|c| m.reissues.by_cause.get(*c).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(lost(&healthy.metrics), 0, "{:?}", healthy.metrics);
    assert_eq!(healthy.metrics.replicas["lost"], 0);
    // Every worker crashes 30 s in for good but one, so whichever ran a task lost it.
    for p in &mut w.workers[..2] {
        p.crash = Some(Outage {
            at_s: 31.0,
            until_s: None,
        });
    }
    w.workers[2].crash = None;
    let crashed = run(w, Policy::Idlegrid);
    let m = &crashed.metrics;
    assert!(
        m.reissues.by_cause.get("worker_lost").copied().unwrap_or(0) >= 1,
        "{m:?}"
    );
    assert!(
        m.replicas["lost"] >= 1 && m.workers_lost["disconnected"] == 2,
        "{m:?}"
    );
    assert_eq!(m.tasks_lost, 0);
    assert!(m.makespan_s > healthy.metrics.makespan_s);
}

#[test]
fn a_frozen_worker_is_found_by_the_schedulers_own_timeouts() {
    let mut a = worker("a", 1.0);
    a.freeze = Some(Outage {
        at_s: 11.0,
        until_s: None,
    });
    let mut w = world(vec![a, worker("b", 1.0)], bag(&[50.0, 50.0]));
    w.workers[1].join_s = 0.0;
    let m = run(w, Policy::None).metrics;
    assert_eq!(m.workers_lost["silent"], 1, "{m:?}");
    assert_eq!(m.reissues.by_cause["worker_lost"], 1, "{m:?}");
    // Found within the loss bound (3 heartbeats) plus a heartbeat and the delays, then rerun:
    // b runs its own task (50 s) and then a's again.
    assert!(
        m.makespan_s > 100.0 && m.makespan_s < 100.0 + 10.0 + 5.0,
        "{m:?}"
    );
    assert_eq!(m.tasks_lost, 0);
}

#[test]
fn a_worker_that_thaws_after_being_lost_reconnects_and_its_work_still_counts() {
    let mut a = worker("a", 1.0);
    a.freeze = Some(Outage {
        at_s: 11.0,
        until_s: Some(21.0),
    });
    let w = world(vec![a], bag(&[50.0]));
    let m = run(w, Policy::Idlegrid).metrics;
    assert_eq!(m.workers_lost["silent"], 1, "{m:?}");
    assert_eq!(m.tasks_lost, 0);
    // Lost after ~3 s of silence, back 10 s after the freeze holding its replica, which it keeps
    // and finishes: 50 s of work plus the 10 s frozen.
    assert!((60.0..62.0).contains(&m.makespan_s), "{m:?}");
    assert!((m.winners_cpu_s - 50.0).abs() < 0.01, "{m:?}");
}

#[test]
fn a_replica_pauses_while_its_owner_is_busy_and_its_cpu_time_excludes_the_pause() {
    let mut a = worker("a", 2.0);
    a.busy = vec![(11.0, 61.0)];
    let w = world(vec![a], bag(&[100.0]));
    let sim = run(w, Policy::Idlegrid);
    let m = &sim.metrics;
    // 100 CPU-s at speed 2: 50 s of computing, plus 50 s paused.
    assert!((100.0..101.0).contains(&m.makespan_s), "{m:?}");
    assert!((m.winners_cpu_s - 50.0).abs() < 0.01, "{m:?}");
    // The only worker: nowhere to reissue to, so the paused replica simply resumes.
    assert_eq!(m.reissues.total, 0, "{m:?}");
    let rows = sim.gantt_rows();
    assert_eq!(rows[0].busy, vec![(10.0, 60.0)]);
    assert_eq!(rows[0].bars.len(), 1);
    assert_eq!(rows[0].bars[0].outcome, crate::chart::BarOutcome::Won);
}

#[test]
fn a_straggler_executes_slower_than_its_benchmark_says() {
    let mut a = worker("a", 1.0);
    a.slowdown = 10.0;
    let m = run(world(vec![a], bag(&[10.0])), Policy::Idlegrid).metrics;
    assert!((100.0..101.0).contains(&m.makespan_s), "{m:?}");
    assert!((m.ideal_makespan_s - 10.0).abs() < 0.1, "{m:?}");
    assert!(m.x_ideal > 9.0);
}

#[test]
fn cost_is_cpu_seconds_times_the_rate_of_each_assignment() {
    let src = Source::Scenario(Box::new(small("churn10-stragglers5.toml")));
    let sim = simulate(&src, Policy::Idlegrid, 3).unwrap();
    let expected: f64 = sim.run.replicas.iter().map(|r| r.cpu_s * r.rate).sum();
    assert!(
        (sim.metrics.cost - expected).abs() < 1e-3,
        "{} vs {expected}",
        sim.metrics.cost
    );
    let by_class: f64 = sim.metrics.cost_by_class.values().sum();
    let by_outcome: f64 = sim.metrics.cost_by_outcome.values().sum();
    assert!((by_class - expected).abs() < 1e-3 && (by_outcome - expected).abs() < 1e-3);
    assert!(sim.run.replicas.iter().all(|r| r.rate > 0.0));
}

#[test]
fn the_ideal_run_has_no_churn_crashes_freezes_or_stragglers() {
    let spec = small("churn30-crashes.toml");
    let mut spec2 = spec.clone();
    spec2.stragglers = Some(scenario::StragglerSpec {
        fraction: 0.2,
        slowdown: 5.0,
    });
    let world = spec2.resolve(4);
    assert!(world.has_faults());
    let ideal = world.ideal();
    assert!(!ideal.has_faults());
    assert_eq!(ideal.tasks, world.tasks);
    let sim = run_world(world, Policy::Idlegrid, 4).unwrap();
    // Only the progress monitor may add copies there (a task larger than its estimate looks
    // slow); nothing is lost and no owner comes back.
    assert!(
        sim.ideal
            .reissues
            .keys()
            .all(|c| ["straggler", "stalled"].contains(c)),
        "{:?}",
        sim.ideal.reissues
    );
    assert!(sim.ideal.losses.is_empty(), "{:?}", sim.ideal.losses);
    assert!(sim.ideal.busy.iter().all(Vec::is_empty));
    assert!(!sim.run.reissues.is_empty());
}

#[test]
fn a_job_longer_than_its_trace_ends_with_a_clear_error() {
    let mut a = worker("a", 1.0);
    a.leave_s = Some(30.0);
    let e = run_world(world(vec![a], bag(&[100.0])), Policy::None, 1).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("stuck") && text.contains("0 of 1 tasks done"),
        "{text}"
    );
}

#[test]
fn a_run_that_exceeds_the_virtual_time_limit_stops_with_an_error() {
    let mut w = world(vec![worker("a", 1.0)], bag(&[1000.0]));
    w.limit_s = 100.0;
    let e = run_world(w, Policy::Idlegrid, 1).unwrap_err().to_string();
    assert!(
        e.contains("limit") && e.contains("0 of 1 tasks done"),
        "{e}"
    );
}

#[test]
fn quick_flags_out_of_range_are_named_in_the_error() {
    let q = Quick {
        workers: 10,
        tasks: 10,
        task_s: 60.0,
        task_cv: 0.5,
        churn: 1.5,
        stragglers: 0.0,
        slowdown: 10.0,
        slots: 1,
        delay_ms: 20.0,
    };
    let e = q.scenario().unwrap_err().to_string();
    assert_eq!(e, "--churn: 1.5 is not a fraction from 0 to 1");
    let ok = Quick { churn: 0.1, ..q };
    let spec = ok.scenario().unwrap();
    assert_eq!(spec.pool.workers, 10);
}

#[test]
fn crashed_workers_that_return_rejoin_and_take_tasks_again() {
    let mut spec = small("stable.toml");
    spec.crashes = Some(CrashSpec {
        fraction: 1.0,
        at_s: [5.0, 10.0],
        return_fraction: 1.0,
        down_s: [5.0, 10.0],
    });
    spec.freezes = Some(FreezeSpec {
        fraction: 0.0,
        at_s: [0.0, 0.0],
        thaw_fraction: 0.0,
        for_s: [0.0, 0.0],
    });
    // Every worker crashes and comes back within 20 s; the job still completes, on them.
    let m = simulate(&Source::Scenario(Box::new(spec)), Policy::None, 2)
        .unwrap()
        .metrics;
    assert_eq!(m.tasks_lost, 0);
    assert_eq!(
        m.workers_lost["disconnected"] as u32, m.workers as u32,
        "{m:?}"
    );
}
