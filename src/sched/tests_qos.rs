//! Scheduler tests of the quality-of-service policy on a virtual clock: each policy's reissue
//! rules, saturation, the progress monitor, partial completion, placement limits, links,
//! measured history and class rates.

use std::time::{Duration, Instant};

use super::tests::{assigns, cfg, drain, hw, job, join, task, w};
use super::*;
use crate::job::{JobSpec, TaskSpec, validate};
use crate::proto::{ActivityKind, Progress, TaskId};

fn with(policy: Policy) -> Config {
    Config { policy, ..cfg() }
}

fn est(mut t: TaskSpec, cpu_s: f64) -> TaskSpec {
    t.estimates.cpu_s = cpu_s;
    t
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn cancels(out: &[Output]) -> Vec<(WorkerId, ReplicaId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cancel {
                worker, replica, ..
            } => Some((worker.clone(), *replica)),
            _ => None,
        })
        .collect()
}

fn finished(out: &[Output]) -> Vec<JobOutcome> {
    out.iter()
        .filter_map(|o| match o {
            Output::JobFinished { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

/// Runs timeouts as the driver would, up to `to`, with heartbeats from `alive` every 100 ms.
fn run(s: &mut Scheduler, alive: &[&str], from: Instant, to: Instant) -> Vec<Output> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        let next = (now + Duration::from_millis(100)).min(to);
        while let Some(t) = s.poll_timeout().filter(|t| *t <= next) {
            s.handle_timeout(t.max(now));
            out.extend(drain(s));
            if t <= now {
                break;
            }
        }
        now = next;
        for id in alive {
            s.handle_heartbeat(now, &w(id), &[]);
        }
        out.extend(drain(s));
    }
    out
}

// ----- deadline (BOINC-like) -----

#[test]
fn deadline_policy_keeps_a_task_whose_owner_returned_until_four_times_its_estimate() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(with(Policy::Deadline), 1);
    join(&mut s, t0, "a", 1, 400.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    let first = assigns(&drain(&mut s));
    assert_eq!(first.len(), 1);
    let on = first[0].0.clone();
    join(&mut s, t0, "b", 1, 400.0);
    s.handle_activity(t0 + secs(1.0), &on, ActivityKind::Keyboard);
    // Silent, paused, for almost the whole deadline: nothing moves.
    let early = run(&mut s, &["b"], t0 + secs(1.0), t0 + secs(39.9));
    assert!(assigns(&early).is_empty(), "{early:?}");
    let late = run(&mut s, &["b"], t0 + secs(39.9), t0 + secs(40.2));
    let re = assigns(&late);
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].0, w("b"));
    assert!(
        matches!(&re[0].2, AssignReason::Reissue(ReissueCause::DeadlinePassed { deadline, .. }) if *deadline == secs(40.0)),
        "{:?}",
        re[0].2
    );
    // The late original may still win: its result is accepted and the new copy cancelled.
    s.handle_available(t0 + secs(41.0), &on);
    assert!(s.result_target(&on, first[0].1.replica).is_some());
    s.handle_result(
        t0 + secs(42.0),
        &on,
        first[0].1.replica,
        serde_json::json!(1),
        secs(10.0),
    );
    let out = drain(&mut s);
    assert_eq!(cancels(&out), vec![(w("b"), re[0].1.replica)]);
    assert_eq!(finished(&out), vec![JobOutcome::Completed]);
}

#[test]
fn deadline_policy_ignores_silence_but_reissues_when_the_connection_closes() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(with(Policy::Deadline), 1);
    join(&mut s, t0, "a", 1, 400.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 100.0)]));
    let on = assigns(&drain(&mut s))[0].0.clone();
    join(&mut s, t0, "b", 1, 400.0);
    // Ten seconds of silence from `a` (100 loss bounds): still its task.
    let quiet = run(&mut s, &["b"], t0, t0 + secs(10.0));
    assert!(assigns(&quiet).is_empty());
    assert!(
        !quiet
            .iter()
            .any(|o| matches!(o, Output::StatusRequest { .. } | Output::WorkerLost { .. }))
    );
    s.handle_worker_left(t0 + secs(10.0), &on);
    let re = assigns(&drain(&mut s));
    assert_eq!(re.len(), 1);
    assert!(matches!(
        &re[0].2,
        AssignReason::Reissue(ReissueCause::WorkerLost {
            cause: LossCause::Disconnected,
            ..
        })
    ));
}

// ----- none, and what idlegrid adds -----

#[test]
fn only_idlegrid_replicates_a_critical_task_from_the_start() {
    for (policy, replicas) in [
        (Policy::Idlegrid, 2),
        (Policy::None, 1),
        (Policy::Deadline, 1),
        (Policy::Speculative, 1),
    ] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(with(policy), 1);
        for id in ["a", "b"] {
            join(&mut s, t0, id, 1, 400.0);
        }
        s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], true), 10.0)]));
        assert_eq!(assigns(&drain(&mut s)).len(), replicas, "{policy}");
    }
}

#[test]
fn none_policy_reissues_at_once_when_the_owner_returns() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(with(Policy::None), 1);
    join(&mut s, t0, "a", 1, 400.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    let on = assigns(&drain(&mut s))[0].0.clone();
    join(&mut s, t0, "b", 1, 400.0);
    s.handle_activity(t0 + secs(1.0), &on, ActivityKind::Mouse);
    let re = assigns(&drain(&mut s));
    assert_eq!(re.len(), 1);
    assert!(matches!(
        &re[0].2,
        AssignReason::Reissue(ReissueCause::OwnerActive { .. })
    ));
}

// ----- speculative (Spark-like) -----

#[test]
fn speculative_policy_copies_a_late_task_only_once_three_quarters_are_done() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(with(Policy::Speculative), 1);
    for id in ["a", "b", "c", "d", "e"] {
        join(&mut s, t0, id, 1, 400.0);
    }
    let tasks = (0..4).map(|i| task(&format!("t{i}"), &[], false)).collect();
    s.submit_job(t0, "j".into(), job(tasks));
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 4);
    assert!(
        assigns(&run(
            &mut s,
            &["a", "b", "c", "d", "e"],
            t0,
            t0 + secs(10.0)
        ))
        .is_empty()
    );
    // Two finish at 10 s: half done, the other two run on and get nothing.
    for (wk, asg, _) in &a[..2] {
        s.handle_result(
            t0 + secs(10.0),
            wk,
            asg.replica,
            serde_json::json!(0),
            secs(10.0),
        );
    }
    let out = run(
        &mut s,
        &["a", "b", "c", "d", "e"],
        t0 + secs(10.0),
        t0 + secs(20.0),
    );
    assert!(assigns(&out).is_empty(), "copied before 75% were done");
    // The third at 20 s: 75% done, median 10 s; the last has run 20 s > 15 s: one copy.
    s.handle_result(
        t0 + secs(20.0),
        &a[2].0,
        a[2].1.replica,
        serde_json::json!(0),
        secs(20.0),
    );
    let out = run(
        &mut s,
        &["a", "b", "c", "d", "e"],
        t0 + secs(20.0),
        t0 + secs(30.0),
    );
    let copies = assigns(&out);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1.task, a[3].1.task);
    assert_eq!(copies[0].2, AssignReason::Speculative);
}

// ----- saturation -----

#[test]
fn a_free_faster_worker_takes_a_saturation_replica_and_the_loser_is_cancelled() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "slow", 1, 100.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    let first = assigns(&drain(&mut s));
    // An equally slow worker joining would not finish sooner: no replica (negative control).
    assert!(assigns(&join(&mut s, t0 + secs(1.0), "slow2", 1, 100.0)).is_empty());
    let sat = assigns(&join(&mut s, t0 + secs(1.0), "fast", 1, 400.0));
    assert_eq!(sat.len(), 1);
    assert_eq!(
        (sat[0].0.clone(), sat[0].2.clone()),
        (w("fast"), AssignReason::Saturation)
    );
    s.handle_result(
        t0 + secs(11.0),
        &w("fast"),
        sat[0].1.replica,
        serde_json::json!(1),
        secs(10.0),
    );
    let out = drain(&mut s);
    assert_eq!(cancels(&out), vec![(w("slow"), first[0].1.replica)]);
}

#[test]
fn new_work_takes_the_worker_of_a_saturation_replica() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "slow", 1, 100.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    let first = assigns(&drain(&mut s));
    let sat = assigns(&join(&mut s, t0 + secs(1.0), "fast", 1, 400.0));
    assert_eq!(sat[0].2, AssignReason::Saturation);
    s.submit_job(
        t0 + secs(2.0),
        "k".into(),
        job(vec![est(task("y", &[], false), 10.0)]),
    );
    let out = drain(&mut s);
    assert_eq!(cancels(&out), vec![(w("fast"), sat[0].1.replica)]);
    let a = assigns(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].0.clone(), a[0].1.task.clone()),
        (w("fast"), TaskId::from("y"))
    );
    // The original of the first task runs on.
    assert!(s.replica_holder(first[0].1.replica).is_some());
}

// ----- the progress monitor -----

#[test]
fn a_straggler_gets_a_replica_on_a_faster_free_worker() {
    for (progress, expect) in [(0.01f32, true), (0.5, false)] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 1);
        join(&mut s, t0, "a", 1, 400.0);
        s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
        let first = assigns(&drain(&mut s));
        // An equal worker: saturation sees no gain from the estimate alone.
        assert!(assigns(&join(&mut s, t0, "b", 1, 400.0)).is_empty());
        let p = Progress {
            replica: first[0].1.replica,
            fraction: progress,
        };
        assert!(assigns(&run(&mut s, &["a", "b"], t0, t0 + secs(5.0))).is_empty());
        s.handle_heartbeat(t0 + secs(5.0), &w("a"), &[p]);
        let out = run(&mut s, &["a", "b"], t0 + secs(5.0), t0 + secs(6.5));
        let a = assigns(&out);
        if expect {
            assert_eq!(a.len(), 1, "{out:?}");
            assert_eq!(a[0].0, w("b"));
            assert!(
                matches!(&a[0].2, AssignReason::Reissue(ReissueCause::Straggler { worker, .. }) if *worker == w("a")),
                "{:?}",
                a[0].2
            );
        } else {
            assert!(
                a.is_empty(),
                "a replica on schedule got a straggler copy: {a:?}"
            );
        }
    }
}

#[test]
fn a_job_that_finishes_nothing_for_stall_after_gets_more_replicas() {
    let t0 = Instant::now();
    let cfg = Config {
        stall_after: secs(30.0),
        ..cfg()
    };
    let mut s = Scheduler::new(cfg, 1);
    join(&mut s, t0, "a", 1, 400.0);
    // No estimate, no progress: only the stall says anything.
    s.submit_job(t0, "j".into(), job(vec![task("x", &[], false)]));
    assert_eq!(assigns(&drain(&mut s)).len(), 1);
    join(&mut s, t0, "b", 1, 400.0);
    let before = run(&mut s, &["a", "b"], t0, t0 + secs(29.5));
    assert!(assigns(&before).is_empty());
    let after = run(&mut s, &["a", "b"], t0 + secs(29.5), t0 + secs(31.5));
    let a = assigns(&after);
    assert_eq!(a.len(), 1);
    assert!(
        matches!(&a[0].2, AssignReason::Reissue(ReissueCause::Stalled { idle }) if *idle >= secs(30.0))
    );
}

// ----- partial completion -----

#[test]
fn a_job_with_min_complete_completes_once_enough_tasks_are_done_and_cancels_the_rest() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(with(Policy::None), 1);
    for id in ["a", "b", "c", "d"] {
        join(&mut s, t0, id, 1, 400.0);
    }
    let mut tasks: Vec<TaskSpec> = ["r1", "r2", "o1", "o2"]
        .iter()
        .map(|id| task(id, &[], false))
        .collect();
    tasks[2].optional = true;
    tasks[3].optional = true;
    let spec = JobSpec {
        name: "partial".into(),
        tasks,
        min_complete: Some(3),
        ..Default::default()
    };
    s.submit_job(t0, "j".into(), validate(spec, |_| true).unwrap());
    let a = assigns(&drain(&mut s));
    let by = |id: &str| {
        a.iter()
            .find(|x| x.1.task == TaskId::from(id))
            .unwrap()
            .clone()
    };
    // An optional task and one required: 2 done, not complete.
    for id in ["o1", "r1"] {
        let (wk, asg, _) = by(id);
        s.handle_result(
            t0 + secs(1.0),
            &wk,
            asg.replica,
            serde_json::json!(0),
            secs(1.0),
        );
    }
    assert!(finished(&drain(&mut s)).is_empty());
    let (wk, asg, _) = by("r2");
    s.handle_result(
        t0 + secs(2.0),
        &wk,
        asg.replica,
        serde_json::json!(0),
        secs(2.0),
    );
    let out = drain(&mut s);
    assert_eq!(finished(&out), vec![JobOutcome::Completed]);
    assert_eq!(cancels(&out), vec![(by("o2").0, by("o2").1.replica)]);
}

// ----- placement limits and links -----

#[test]
fn a_task_never_goes_to_a_worker_with_less_memory_or_disk_than_it_needs() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    let mut small = hw(1, 800.0);
    small.memory_mb = 1024;
    s.handle_worker_joined(t0, w("small"), "small".into(), small, &[], true);
    let mut big_task = est(task("x", &[], false), 10.0);
    big_task.estimates.mem_mb = 4096;
    s.submit_job(t0, "j".into(), job(vec![big_task]));
    assert!(
        assigns(&drain(&mut s)).is_empty(),
        "placed on a worker with 1024 MB"
    );
    let mut roomy = hw(1, 100.0);
    roomy.disk_mb = 10;
    let mut disk_task = est(task("y", &[], false), 10.0);
    disk_task.estimates.disk_mb = 100;
    s.submit_job(t0, "k".into(), job(vec![disk_task]));
    // The fast small worker takes the disk task (enough disk there); the big one waits.
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].0.clone(), a[0].1.task.clone()),
        (w("small"), TaskId::from("y"))
    );
    let a = assigns(&join(&mut s, t0, "big", 1, 100.0));
    assert_eq!(
        (a[0].0.clone(), a[0].1.task.clone()),
        (w("big"), TaskId::from("x"))
    );
}

#[test]
fn a_worker_gets_tasks_only_once_its_link_is_measured_fast_enough() {
    let t0 = Instant::now();
    let cfg = Config {
        require_link: true,
        min_link_kbps: 100.0,
        ..cfg()
    };
    let mut s = Scheduler::new(cfg, 1);
    join(&mut s, t0, "a", 1, 400.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    assert!(assigns(&drain(&mut s)).is_empty());
    let view = &s.workers()[0];
    assert_eq!(view.held_back.as_deref(), Some("link not measured yet"));
    let slow = Link {
        up_kbps: 60.0,
        down_kbps: 5_000.0,
    };
    s.handle_link(t0, &w("a"), slow);
    assert!(
        assigns(&drain(&mut s)).is_empty(),
        "a 60 kbit/s uplink got a task"
    );
    let view = &s.workers()[0];
    assert!(view.held_back.as_deref().unwrap().contains("60 kbit/s"));
    assert_eq!(view.link, Some(slow));
    let fast = Link {
        up_kbps: 20_000.0,
        down_kbps: 20_000.0,
    };
    s.handle_link(t0 + secs(1.0), &w("a"), fast);
    assert_eq!(assigns(&drain(&mut s)).len(), 1);
}

// ----- status requests -----

#[test]
fn the_status_request_interval_is_its_own_setting_and_an_ack_keeps_the_worker() {
    let t0 = Instant::now();
    let cfg = Config {
        heartbeat: secs(1.0),
        miss_limit: 3,
        status_request: Some(Duration::from_millis(50)),
        policy: Policy::None,
        ..Config::default()
    };
    let mut s = Scheduler::new(cfg, 1);
    join(&mut s, t0, "a", 1, 400.0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(50)));
    s.handle_timeout(t0 + Duration::from_millis(50));
    let [Output::StatusRequest { nonce, .. }] = drain(&mut s)[..] else {
        panic!("no status request at 50 ms");
    };
    // Acknowledged: the worker stays, and the next request comes 50 ms after the ack.
    let ack = t0 + Duration::from_millis(60);
    assert!(s.handle_status_ack(ack, &w("a"), nonce));
    assert_eq!(s.poll_timeout(), Some(ack + Duration::from_millis(50)));
    s.handle_timeout(ack + Duration::from_millis(50));
    assert!(matches!(drain(&mut s)[..], [Output::StatusRequest { .. }]));
    // Not acknowledged: lost at the bound (3 heartbeats after it was last heard), not before.
    assert_eq!(s.poll_timeout(), Some(ack + secs(3.0)));
    s.handle_timeout(ack + secs(3.0) - Duration::from_millis(1));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(ack + secs(3.0));
    assert!(drain(&mut s).iter().any(|o| matches!(
        o,
        Output::WorkerLost {
            cause: LossCause::Silent(_),
            ..
        }
    )));
}

// ----- capacity: history and classes -----

#[test]
fn measured_history_raises_a_workers_class_and_comes_back_under_its_id() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 400.0);
    assert_eq!(s.workers()[0].class, CapacityClass::Standard);
    s.submit_job(t0, "j".into(), job(vec![est(task("x", &[], false), 10.0)]));
    let a = assigns(&drain(&mut s));
    // 10 s of estimated work done in 4 s: speed 2.5 for `spin`.
    s.handle_result(
        t0 + secs(4.0),
        &w("a"),
        a[0].1.replica,
        serde_json::json!(0),
        secs(4.0),
    );
    let speeds: Vec<KindSpeed> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Speed { worker, speed } if worker == w("a") => Some(speed),
            _ => None,
        })
        .collect();
    assert_eq!(speeds.len(), 1);
    assert_eq!(
        (speeds[0].kind.as_str(), speeds[0].speed, speeds[0].samples),
        ("spin", 2.5, 1)
    );
    let view = &s.workers()[0];
    assert_eq!(
        (view.class, view.speed, view.bench_speed),
        (CapacityClass::High, 2.5, 1.0)
    );
    // A new supervisor boot knows nothing until the store gives the history back.
    let mut s2 = Scheduler::new(cfg(), 2);
    s2.restore_history(&w("a"), speeds);
    join(&mut s2, t0, "a", 1, 400.0);
    assert_eq!(s2.workers()[0].class, CapacityClass::High);
}

#[test]
fn each_replica_is_charged_at_its_class_rate_and_critical_tasks_get_the_high_class() {
    let t0 = Instant::now();
    let cfg = Config {
        class_rates: ClassRates {
            high: 3.0,
            standard: 1.0,
            low: 0.4,
        },
        ..cfg()
    };
    let mut s = Scheduler::new(cfg, 1);
    join(&mut s, t0, "low", 1, 100.0);
    join(&mut s, t0, "std", 1, 400.0);
    join(&mut s, t0, "high", 1, 800.0);
    s.submit_job(t0, "j".into(), job(vec![est(task("c", &[], true), 10.0)]));
    let rates: Vec<(WorkerId, CapacityClass, f64)> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Assign {
                worker,
                class,
                rate,
                ..
            } => Some((worker, class, rate)),
            _ => None,
        })
        .collect();
    assert_eq!(rates[0], (w("high"), CapacityClass::High, 3.0));
    assert_eq!(rates[1], (w("std"), CapacityClass::Standard, 1.0));
}
