//! Scheduler tests on a virtual clock: scenarios first, then a seeded churn simulation that checks
//! the invariants after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;
use crate::job::{Estimates, JobSpec, TaskSpec, validate};
use crate::proto::{ActivityKind, Hardware, JobId, ReplicaId, TaskId, WorkerId};

pub(super) fn hw(slots: u32, mops: f64) -> Hardware {
    Hardware {
        cores: slots,
        memory_mb: 8192,
        disk_mb: 10_000,
        os: "test".into(),
        slots,
        bench_mops: mops,
    }
}

/// The value of an inline payload (the scheduler never makes any other kind).
pub(super) fn inline(p: &Payload) -> &serde_json::Value {
    match p {
        Payload::Inline(v) => v,
        Payload::Blob(_) => panic!("the scheduler sent a blob reference"),
    }
}

pub(super) fn task(id: &str, deps: &[&str], critical: bool) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        kind: "spin".into(),
        input: serde_json::json!({}),
        deps: deps.iter().map(|d| TaskId::from(*d)).collect(),
        critical: Some(critical),
        replicas: None,
        estimates: Estimates::default(),
        ..TaskSpec::new(id, "spin", serde_json::json!({}))
    }
}

pub(super) fn job(tasks: Vec<TaskSpec>) -> Job {
    validate(
        JobSpec {
            name: "t".into(),
            tasks,
            ..Default::default()
        },
        |_| true,
    )
    .expect("valid test job")
}

pub(super) fn w(id: &str) -> WorkerId {
    WorkerId::from(id)
}

pub(super) fn cfg() -> Config {
    Config {
        heartbeat: Duration::from_millis(100),
        ..Config::default()
    }
}

pub(super) fn drain(s: &mut Scheduler) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

pub(super) fn assigns(out: &[Output]) -> Vec<(WorkerId, Assignment, AssignReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Assign {
                worker,
                assignment,
                reason,
                ..
            } => Some((worker.clone(), assignment.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn join(
    s: &mut Scheduler,
    now: Instant,
    id: &str,
    slots: u32,
    mops: f64,
) -> Vec<Output> {
    s.handle_worker_joined(now, w(id), id.into(), hw(slots, mops), &[], true);
    drain(s)
}

#[test]
fn a_critical_task_starts_on_the_two_fastest_distinct_workers() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "slow", 4, 50.0);
    join(&mut s, t0, "fast", 4, 400.0);
    join(&mut s, t0, "mid", 4, 200.0);
    s.submit_job(t0, "j".into(), job(vec![task("seed", &[], true)]));
    let a = assigns(&drain(&mut s));
    let workers: BTreeSet<_> = a[..2].iter().map(|(w, ..)| w.0.as_str()).collect();
    assert_eq!(workers, BTreeSet::from(["fast", "mid"]));
    assert_eq!(a[0].2, AssignReason::First);
    assert_eq!(a[1].2, AssignReason::Redundant);
    // The slow worker would idle: it takes a saturation replica (the task has no estimate, so
    // only a critical one is insured this way).
    assert_eq!(a.len(), 3);
    assert_eq!(
        (a[2].0.clone(), a[2].2.clone()),
        (w("slow"), AssignReason::Saturation)
    );
}

#[test]
fn a_critical_task_gets_its_second_replica_when_a_second_worker_joins() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("seed", &[], true)]));
    assert_eq!(assigns(&drain(&mut s)).len(), 1);
    let a = assigns(&join(&mut s, t0, "b", 1, 0.0));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("b"));
}

#[test]
fn a_disconnected_workers_task_is_reissued_in_the_same_call() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let first = assigns(&drain(&mut s));
    assert_eq!(first[0].0, w("a"));
    join(&mut s, t0, "b", 1, 0.0);
    s.handle_worker_left(t0, &w("a"));
    let out = drain(&mut s);
    assert!(matches!(
        &out[0],
        Output::WorkerLost {
            cause: LossCause::Disconnected,
            ..
        }
    ));
    let a = assigns(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("b"));
    assert!(
        matches!(&a[0].2, AssignReason::Reissue(ReissueCause::WorkerLost { worker, .. }) if worker == &w("a"))
    );
}

#[test]
fn a_leaving_workers_tasks_are_reissued_at_once_as_left_and_the_worker_is_forgotten() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let first = assigns(&drain(&mut s));
    assert_eq!(first[0].0, w("a"));
    let held = first[0].1.replica;
    join(&mut s, t0, "b", 1, 0.0);
    assert_eq!(s.handle_worker_leaving(t0, &w("a")), vec![held]);
    let out = drain(&mut s);
    assert!(
        out.iter().any(|o| matches!(o, Output::WorkerLost { cause: LossCause::Left, replicas, .. } if replicas == &vec![held])),
        "{out:?}"
    );
    let a = assigns(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("b"));
    assert!(
        matches!(&a[0].2, AssignReason::Reissue(ReissueCause::Left { worker }) if worker == &w("a")),
        "{:?}",
        a[0].2
    );
    // Forgotten: its replica is no longer held, and neither its closing connection nor a
    // later silence does anything more.
    assert_eq!(s.replica_holder(held), None);
    s.handle_worker_left(t0, &w("a"));
    s.handle_timeout(t0 + Duration::from_secs(600));
    assert!(
        !drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::WorkerLost { worker, .. } if *worker == w("a")))
    );
    // Negative control: a worker that is not connected hands nothing back.
    assert!(s.handle_worker_leaving(t0, &w("nobody")).is_empty());
}

#[test]
fn a_silent_worker_is_probed_then_lost_exactly_at_the_miss_limit() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    join(&mut s, t0, "b", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let holder = assigns(&drain(&mut s))[0].0.clone();
    let other = if holder == w("a") { w("b") } else { w("a") };
    // The other worker keeps its heartbeats; the holder falls silent at t0.
    let mut now;
    let mut probed = false;
    loop {
        let deadline = s.poll_timeout().expect("workers are watched");
        now = deadline;
        s.handle_heartbeat(now, &other, &[]);
        s.handle_timeout(now);
        let out = drain(&mut s);
        if out
            .iter()
            .any(|o| matches!(o, Output::StatusRequest { worker, .. } if *worker == holder))
        {
            assert_eq!(now - t0, Duration::from_millis(150));
            probed = true;
        }
        if let Some(Output::WorkerLost { cause, .. }) = out
            .iter()
            .find(|o| matches!(o, Output::WorkerLost { worker, .. } if *worker == holder))
        {
            assert_eq!(now - t0, Duration::from_millis(300));
            assert_eq!(*cause, LossCause::Silent(Duration::from_millis(300)));
            let a = assigns(&out);
            assert_eq!(a.len(), 1, "reissued in the same call: {out:?}");
            assert_eq!(a[0].0, other);
            break;
        }
        assert!(now - t0 < Duration::from_secs(1), "never lost");
    }
    assert!(probed);
}

#[test]
fn a_status_ack_keeps_a_worker_alive() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    s.handle_timeout(t0 + Duration::from_millis(150));
    let [Output::StatusRequest { nonce, .. }] = drain(&mut s)[..] else {
        panic!("no status request");
    };
    assert!(s.handle_status_ack(t0 + Duration::from_millis(160), &w("a"), nonce));
    s.handle_timeout(t0 + Duration::from_millis(300));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(310)));
}

#[test]
fn owner_activity_reissues_only_tasks_without_another_live_replica() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 2, 0.0);
    join(&mut s, t0, "b", 2, 0.0);
    // Estimated, on equal workers: no free worker would finish sooner, so saturation stays out.
    let mut tasks = vec![task("crit", &[], true), task("plain", &[], false)];
    for t in &mut tasks {
        t.estimates.cpu_s = 10.0;
    }
    s.submit_job(t0, "j".into(), job(tasks));
    let a = assigns(&drain(&mut s));
    let plain_on = a
        .iter()
        .find(|(_, x, _)| x.task == TaskId::from("plain"))
        .unwrap()
        .0
        .clone();
    join(&mut s, t0, "c", 2, 0.0);
    s.handle_activity(t0, &plain_on, ActivityKind::Keyboard);
    let re = assigns(&drain(&mut s));
    // The critical task keeps one live replica elsewhere and is topped up; the plain one is
    // reissued because its only replica paused.
    let plain = re
        .iter()
        .find(|(_, x, _)| x.task == TaskId::from("plain"))
        .expect("reissued");
    assert!(matches!(
        &plain.2,
        AssignReason::Reissue(ReissueCause::OwnerActive {
            kind: ActivityKind::Keyboard,
            ..
        })
    ));
    let crit = re
        .iter()
        .find(|(_, x, _)| x.task == TaskId::from("crit"))
        .expect("topped up");
    assert_eq!(crit.2, AssignReason::Redundant);
    assert!(re.iter().all(|(wk, ..)| *wk != plain_on));
    // The busy worker takes nothing new until it is available again.
    s.submit_job(
        t0,
        "k".into(),
        job(vec![task("x", &[], false), task("y", &[], false)]),
    );
    assert!(
        assigns(&drain(&mut s))
            .iter()
            .all(|(wk, ..)| *wk != plain_on)
    );
}

#[test]
fn a_worker_that_joins_before_its_machine_is_idle_gets_tasks_only_once_available() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    s.handle_worker_joined(t0, w("a"), "a".into(), hw(1, 0.0), &[], false);
    assert!(assigns(&drain(&mut s)).is_empty());
    assert_eq!(s.workers()[0].state, WorkerState::Waiting);
    // Activity while waiting changes nothing but the recorded kind.
    s.handle_activity(t0, &w("a"), ActivityKind::Pointer);
    assert!(drain(&mut s).is_empty());
    s.handle_available(t0, &w("a"));
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2, AssignReason::First);
}

#[test]
fn a_paused_replica_that_finishes_first_after_the_owner_leaves_wins() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let r = assigns(&drain(&mut s))[0].1.replica;
    s.handle_activity(t0, &w("a"), ActivityKind::Mouse);
    let r2 = assigns(&join(&mut s, t0, "b", 1, 0.0))[0].1.replica;
    s.handle_available(t0, &w("a"));
    assert!(assigns(&drain(&mut s)).is_empty());
    assert!(s.result_target(&w("a"), r).is_some());
    s.handle_result(t0, &w("a"), r, serde_json::json!(1), Duration::ZERO);
    let out = drain(&mut s);
    assert!(out.contains(&Output::Cancel {
        worker: w("b"),
        replica: r2,
        reason: "task t finished on another worker".into()
    }));
    assert!(out.contains(&Output::JobFinished {
        job: "j".into(),
        outcome: JobOutcome::Completed
    }));
    // The loser's late result is not taken.
    assert!(s.result_target(&w("b"), r2).is_none());
}

#[test]
fn a_failed_task_is_retried_on_other_workers_then_fails_the_job_with_its_error() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        Config {
            max_failures: 3,
            ..cfg()
        },
        1,
    );
    for id in ["a", "b", "c", "d"] {
        join(&mut s, t0, id, 1, 0.0);
    }
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let mut tried = BTreeSet::new();
    let mut out = drain(&mut s);
    for attempt in 1..=3 {
        let (wk, a, _) = assigns(&out).pop().expect("assigned");
        assert!(
            tried.insert(wk.clone()),
            "attempt {attempt} went back to {wk}"
        );
        s.handle_failure(t0, &wk, a.replica, format!("bad input #{attempt}"));
        out = drain(&mut s);
    }
    let failed = out.iter().find_map(|o| match o {
        Output::JobFinished {
            outcome: JobOutcome::Failed { task, error },
            ..
        } => Some((task, error)),
        _ => None,
    });
    let (task_id, error) = failed.expect("job failed after 3 failures");
    assert_eq!(task_id, &TaskId::from("t"));
    assert!(
        error.starts_with("task t failed 3 times, last on worker "),
        "{error}"
    );
    assert!(error.ends_with(": bad input #3"), "{error}");
    assert!(s.unfinished_jobs().is_empty());
}

#[test]
fn dependents_start_only_after_their_deps_and_receive_their_outputs() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 4, 0.0);
    s.submit_job(
        t0,
        "j".into(),
        job(vec![
            task("x", &[], false),
            task("y", &[], false),
            task("z", &["x", "y"], false),
        ]),
    );
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 2);
    for (i, (wk, asg, _)) in a.iter().enumerate() {
        s.handle_result(t0, wk, asg.replica, serde_json::json!(i), Duration::ZERO);
        let next = assigns(&drain(&mut s));
        if i == 0 {
            assert!(next.is_empty(), "z started before both deps were done");
        } else {
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].1.task, TaskId::from("z"));
            let deps: BTreeMap<TaskId, Payload> = a
                .iter()
                .enumerate()
                .map(|(j, (_, x, _))| (x.task.clone(), Payload::Inline(serde_json::json!(j))))
                .collect();
            assert_eq!(next[0].1.deps, deps);
        }
    }
}

#[test]
fn a_reconnecting_worker_keeps_what_it_still_holds_and_drops_the_rest() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 2, 0.0);
    s.submit_job(
        t0,
        "j".into(),
        job(vec![task("x", &[], false), task("y", &[], false)]),
    );
    let a = assigns(&drain(&mut s));
    s.handle_worker_left(t0, &w("a"));
    drain(&mut s);
    // It comes back holding x's replica and one the scheduler never issued.
    let stranger = ReplicaId::new(99, 1);
    s.handle_worker_joined(
        t0,
        w("a"),
        "a".into(),
        hw(2, 0.0),
        &[a[0].1.replica, stranger],
        true,
    );
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Welcome {
            worker: w("a"),
            keep: vec![a[0].1.replica],
            drop: vec![stranger]
        }
    );
    // y had no live replica: it is reissued (to the same worker, the only one).
    let re = assigns(&out);
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].1.task, a[1].1.task);
}

#[test]
fn after_a_restart_tasks_wait_for_their_workers_until_the_restart_grace_ends() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    let old = ReplicaId::new(1, 5);
    let old2 = ReplicaId::new(1, 6);
    s.restore_job(
        t0,
        "j".into(),
        job(vec![
            task("done", &[], false),
            task("x", &["done"], false),
            task("y", &["done"], false),
        ]),
        BTreeMap::from([(TaskId::from("done"), serde_json::json!(7))]),
        &[(old, "x".into(), w("a")), (old2, "y".into(), w("gone"))],
        Vec::new(),
    );
    s.begin_restart_grace(t0);
    join(&mut s, t0, "b", 4, 0.0);
    assert!(
        assigns(&drain(&mut s)).is_empty(),
        "restored replicas count until the grace ends"
    );
    s.handle_worker_joined(t0, w("a"), "a".into(), hw(1, 0.0), &[old], true);
    assert!(matches!(&drain(&mut s)[0], Output::Welcome { keep, .. } if keep == &vec![old]));
    let grace = s.config().restart_grace;
    let mut now = t0;
    while now + Duration::from_millis(100) < t0 + grace {
        now += Duration::from_millis(100);
        s.handle_heartbeat(now, &w("a"), &[]);
        s.handle_heartbeat(now, &w("b"), &[]);
        s.handle_timeout(now);
        assert!(drain(&mut s).is_empty(), "lost before the grace ended");
    }
    assert_eq!(s.poll_timeout(), Some(t0 + grace));
    s.handle_heartbeat(t0 + grace, &w("a"), &[]);
    s.handle_heartbeat(t0 + grace, &w("b"), &[]);
    s.handle_timeout(t0 + grace);
    let out = drain(&mut s);
    assert!(out.iter().any(|o| matches!(o, Output::WorkerLost { worker, cause: LossCause::NotReconnected, .. } if *worker == w("gone"))));
    let re = assigns(&out);
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].1.task, TaskId::from("y"));
    assert_eq!(
        re[0].1.deps,
        BTreeMap::from([(TaskId::from("done"), Payload::Inline(serde_json::json!(7)))])
    );
    assert_eq!(re[0].1.replica.epoch, 2, "replica ids carry the new epoch");
}

#[test]
fn a_restored_job_whose_tasks_were_all_done_completes_at_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    s.restore_job(
        t0,
        "j".into(),
        job(vec![task("x", &[], false)]),
        BTreeMap::from([(TaskId::from("x"), serde_json::json!(1))]),
        &[],
        Vec::new(),
    );
    assert_eq!(
        drain(&mut s),
        vec![Output::JobFinished {
            job: "j".into(),
            outcome: JobOutcome::Completed
        }]
    );
}

#[test]
fn a_result_from_a_worker_that_does_not_hold_the_replica_is_ignored() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    join(&mut s, t0, "b", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let (holder, a, _) = assigns(&drain(&mut s)).remove(0);
    let other = if holder == w("a") { w("b") } else { w("a") };
    assert!(s.result_target(&other, a.replica).is_none());
    s.handle_result(t0, &other, a.replica, serde_json::json!(0), Duration::ZERO);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.unfinished_jobs(), vec![JobId::from("j")]);
}

#[test]
fn cancelling_a_job_cancels_its_replicas() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 2, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], true)]));
    drain(&mut s);
    join(&mut s, t0, "b", 2, 0.0);
    drain(&mut s);
    assert!(s.cancel_job(t0, &"j".into()));
    let out = drain(&mut s);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Cancel { .. }))
            .count(),
        2
    );
    assert!(out.contains(&Output::JobFinished {
        job: "j".into(),
        outcome: JobOutcome::Cancelled
    }));
    assert!(!s.cancel_job(t0, &"j".into()));
}

fn restored_on_a(s: &mut Scheduler, t0: Instant) -> ReplicaId {
    let old = ReplicaId::new(1, 5);
    s.restore_job(
        t0,
        "j".into(),
        job(vec![task("x", &[], false)]),
        BTreeMap::new(),
        &[(old, "x".into(), w("a"))],
        Vec::new(),
    );
    old
}

/// Heartbeats from `alive` and timeouts every 100 ms from `from` to `to`; returns the outputs.
fn beat_until(s: &mut Scheduler, alive: &[&str], from: Instant, to: Instant) -> Vec<Output> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        now = (now + Duration::from_millis(100)).min(to);
        for id in alive {
            s.handle_heartbeat(now, &w(id), &[]);
        }
        s.handle_timeout(now);
        out.extend(drain(s));
    }
    out
}

#[test]
fn a_worker_rejoining_after_the_loss_bound_but_within_the_restart_grace_keeps_its_replicas() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    let old = restored_on_a(&mut s, t0);
    join(&mut s, t0, "b", 4, 0.0);
    s.begin_restart_grace(t0);
    let back = t0 + Duration::from_secs(5);
    assert!(s.config().loss_after() < back - t0);
    let out = beat_until(&mut s, &["b"], t0, back);
    assert!(out.is_empty(), "{out:?}");
    s.handle_worker_joined(back, w("a"), "a".into(), hw(1, 0.0), &[old], true);
    let out = drain(&mut s);
    assert_eq!(
        out,
        vec![Output::Welcome {
            worker: w("a"),
            keep: vec![old],
            drop: vec![]
        }]
    );
    let out = beat_until(&mut s, &["a", "b"], back, t0 + Duration::from_secs(12));
    assert!(assigns(&out).is_empty(), "reissued a kept replica: {out:?}");
    assert_eq!(s.replica_holder(old), Some(&w("a")));
}

#[test]
fn a_worker_not_back_when_the_restart_grace_ends_is_lost_and_its_task_reissued() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    restored_on_a(&mut s, t0);
    join(&mut s, t0, "b", 4, 0.0);
    s.begin_restart_grace(t0);
    let grace = s.config().restart_grace;
    let out = beat_until(&mut s, &["b"], t0, t0 + grace - Duration::from_millis(1));
    assert!(out.is_empty(), "{out:?}");
    let out = beat_until(
        &mut s,
        &["b"],
        t0 + grace - Duration::from_millis(1),
        t0 + grace,
    );
    assert!(out.iter().any(|o| matches!(o, Output::WorkerLost { worker, cause: LossCause::NotReconnected, .. } if *worker == w("a"))));
    let a = assigns(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("b"));
    assert!(matches!(
        &a[0].2,
        AssignReason::Reissue(ReissueCause::WorkerLost {
            cause: LossCause::NotReconnected,
            ..
        })
    ));
}

#[test]
fn reconnecting_workers_have_no_deadline_until_the_restart_grace_begins() {
    let t0 = Instant::now();
    // No progress monitor, so the only deadlines are the workers'.
    let cfg = Config {
        policy: Policy::None,
        ..cfg()
    };
    let mut s = Scheduler::new(cfg, 2);
    restored_on_a(&mut s, t0);
    assert_eq!(s.poll_timeout(), None);
    let late = t0 + Duration::from_secs(3600);
    s.handle_timeout(late);
    assert!(drain(&mut s).is_empty());
    s.begin_restart_grace(late);
    assert_eq!(s.poll_timeout(), Some(late + s.config().restart_grace));
}

#[test]
fn a_task_whose_workers_disconnect_soon_after_it_is_assigned_fails_its_job_at_max_failures() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["a", "b", "c", "d"] {
        join(&mut s, t0, id, 1, 0.0);
    }
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let mut out = drain(&mut s);
    let mut now = t0;
    let mut crashed = BTreeSet::new();
    for _ in 0..3 {
        let (wk, ..) = assigns(&out).pop().expect("assigned");
        assert!(crashed.insert(wk.clone()), "went back to {wk}");
        now += Duration::from_millis(1234);
        s.handle_worker_left(now, &wk);
        out = drain(&mut s);
    }
    let error = out
        .iter()
        .find_map(|o| match o {
            Output::JobFinished {
                outcome: JobOutcome::Failed { task, error },
                ..
            } if *task == TaskId::from("t") => Some(error.clone()),
            _ => None,
        })
        .expect("job failed after 3 crashes");
    assert!(
        error.starts_with("task t failed 3 times, last on worker "),
        "{error}"
    );
    assert!(
        error.ends_with(
            " lost 1234 ms after this task was assigned (the task may crash its worker)"
        ),
        "{error}"
    );
}

#[test]
fn losses_by_silence_owner_activity_or_after_the_poison_window_are_not_failures() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        Config {
            max_failures: 1,
            ..cfg()
        },
        1,
    );
    for id in ["a", "b", "c", "d"] {
        join(&mut s, t0, id, 1, 0.0);
    }
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let holder = |out: &[Output]| assigns(out).pop().expect("reissued").0;
    let first = holder(&drain(&mut s));
    // Disconnected, but only once the window has passed.
    let now = t0 + s.config().poison_window;
    let mut alive: Vec<&str> = vec!["a", "b", "c", "d"];
    for id in &alive {
        s.handle_heartbeat(now, &w(id), &[]);
    }
    s.handle_worker_left(now, &first);
    let second = holder(&drain(&mut s));
    alive.retain(|id| w(id) != first);
    // Owner activity.
    s.handle_activity(now, &second, ActivityKind::Keyboard);
    let third = holder(&drain(&mut s));
    // Silence: the third holder stops beating and is lost at the miss limit.
    alive.retain(|id| w(id) != third);
    let out = beat_until(&mut s, &alive, now, now + Duration::from_millis(400));
    assert!(out.iter().any(|o| matches!(o, Output::WorkerLost { worker, cause: LossCause::Silent(_), .. } if *worker == third)));
    assert_eq!(assigns(&out).len(), 1, "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::JobFinished { .. })));
    assert_eq!(s.job_view(&"j".into()).unwrap().tasks[0].failures, 0);
}

#[test]
fn an_undeliverable_assignment_counts_as_a_failure_and_sends_no_cancel() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        Config {
            max_failures: 2,
            ..cfg()
        },
        1,
    );
    for id in ["a", "b", "c"] {
        join(&mut s, t0, id, 1, 0.0);
    }
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let (first, a, _) = assigns(&drain(&mut s)).pop().unwrap();
    s.handle_undeliverable(t0, a.replica, "frame too large".into());
    let out = drain(&mut s);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Cancel { .. })),
        "{out:?}"
    );
    let (second, b, reason) = assigns(&out).pop().expect("reissued");
    assert_ne!(second, first, "went back to the worker it could not reach");
    assert_eq!(
        reason,
        AssignReason::Reissue(ReissueCause::Failed {
            worker: first,
            error: "frame too large".into()
        })
    );
    assert_eq!(s.replica_holder(a.replica), None);
    s.handle_undeliverable(t0, b.replica, "frame too large".into());
    let out = drain(&mut s);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Cancel { .. })),
        "{out:?}"
    );
    assert!(out.contains(&Output::JobFinished {
        job: "j".into(),
        outcome: JobOutcome::Failed {
            task: "t".into(),
            error: format!("task t failed 2 times, last on worker {second}: frame too large"),
        }
    }));
}

#[test]
fn a_result_the_store_could_not_commit_is_cancelled_and_reissued_without_a_failure() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        Config {
            max_failures: 1,
            ..cfg()
        },
        1,
    );
    join(&mut s, t0, "a", 1, 0.0);
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let r = assigns(&drain(&mut s))[0].1.replica;
    s.handle_not_stored(t0, &w("a"), r, "disk full".into());
    let out = drain(&mut s);
    assert!(
        matches!(&out[0], Output::Cancel { worker, replica, .. } if *worker == w("a") && *replica == r),
        "{out:?}"
    );
    let cause = ReissueCause::NotStored {
        worker: w("a"),
        error: "disk full".into(),
    };
    assert_eq!(cause.label(), "not_stored");
    assert_eq!(
        cause.to_string(),
        "result from worker a could not be stored: disk full"
    );
    let a = assigns(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2, AssignReason::Reissue(cause));
    assert_ne!(a[0].1.replica, r);
    assert!(s.result_target(&w("a"), r).is_none());
    assert_eq!(s.job_view(&"j".into()).unwrap().tasks[0].failures, 0);
}

#[test]
fn a_status_ack_with_a_nonce_not_outstanding_does_not_answer_the_request() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    assert!(!s.handle_status_ack(t0, &w("a"), 0), "nothing was asked");
    s.handle_timeout(t0 + Duration::from_millis(150));
    let [Output::StatusRequest { nonce, .. }] = drain(&mut s)[..] else {
        panic!("no status request");
    };
    assert!(!s.handle_status_ack(t0 + Duration::from_millis(160), &w("a"), nonce + 1));
    assert!(!s.handle_status_ack(t0 + Duration::from_millis(160), &w("b"), nonce));
    // Still outstanding: no second probe, lost at the miss limit from that last frame.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(460)));
    assert!(s.handle_status_ack(t0 + Duration::from_millis(170), &w("a"), nonce));
    assert!(
        !s.handle_status_ack(t0 + Duration::from_millis(180), &w("a"), nonce),
        "answered twice"
    );
    // Every ack was a sign of life.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(330)));
}

#[test]
fn a_worker_never_runs_more_replicas_than_it_has_cores() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    let tasks = (0..6).map(|i| task(&format!("t{i}"), &[], false)).collect();
    s.submit_job(t0, "j".into(), job(tasks));
    let few_cores = Hardware {
        cores: 2,
        ..hw(4, 0.0)
    };
    s.handle_worker_joined(t0, w("a"), "a".into(), few_cores, &[], true);
    assert_eq!(assigns(&drain(&mut s)).len(), 2);
    let no_cores = Hardware {
        cores: 0,
        ..hw(4, 0.0)
    };
    s.handle_worker_joined(t0, w("b"), "b".into(), no_cores, &[], true);
    assert_eq!(assigns(&drain(&mut s)).len(), 1, "zero cores counts as one");
}

#[test]
fn replica_holder_and_started_follow_the_replica() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 0.0);
    let t1 = t0 + Duration::from_millis(40);
    s.submit_job(t1, "j".into(), job(vec![task("t", &[], false)]));
    let r = assigns(&drain(&mut s))[0].1.replica;
    assert_eq!(s.replica_holder(r), Some(&w("a")));
    assert_eq!(s.replica_started(r), Some(t1));
    s.handle_activity(t1, &w("a"), ActivityKind::Mouse);
    assert_eq!(s.replica_holder(r), Some(&w("a")), "paused, still held");
    s.handle_worker_left(t1, &w("a"));
    assert_eq!(s.replica_holder(r), None);
    let mut s = Scheduler::new(cfg(), 2);
    let old = restored_on_a(&mut s, t1);
    assert_eq!(s.replica_holder(old), Some(&w("a")));
    assert_eq!(s.replica_started(old), Some(t1));
    assert_eq!(s.replica_started(ReplicaId::new(2, 99)), None);
}

// ----- seeded churn simulation -----

/// A scripted worker process. It keeps the replicas it holds across a lost connection (as the
/// client engine does) unless it crashed; a frozen one does nothing until it thaws.
struct SimWorker {
    connected: bool,
    frozen: bool,
    /// Its owner is using the machine (the scheduler saw `Activity`).
    busy: bool,
    /// It joined before its machine was idle (the scheduler has it `Waiting`).
    waiting: bool,
    slots: u32,
    cores: u32,
    mops: f64,
    last_beat: Instant,
    /// Replicas it holds, with when each would finish.
    running: BTreeMap<ReplicaId, Instant>,
}

impl SimWorker {
    fn hardware(&self) -> Hardware {
        Hardware {
            cores: self.cores,
            ..hw(self.slots, self.mops)
        }
    }

    fn computes(&self) -> bool {
        self.connected && !self.frozen && !self.busy && !self.waiting
    }
}

/// How often the simulation took each path, so that a test can insist they were all tried.
#[derive(Debug, Default, Clone, Copy)]
struct Tried {
    restarts: u32,
    kept: u32,
    waiting_joins: u32,
    thawed_rejoins: u32,
    late_results: u32,
    cancels: u32,
    not_stored: u32,
    undeliverable: u32,
}

impl std::ops::AddAssign for Tried {
    fn add_assign(&mut self, o: Self) {
        self.restarts += o.restarts;
        self.kept += o.kept;
        self.waiting_joins += o.waiting_joins;
        self.thawed_rejoins += o.thawed_rejoins;
        self.late_results += o.late_results;
        self.cancels += o.cancels;
        self.not_stored += o.not_stored;
        self.undeliverable += o.undeliverable;
    }
}

struct Sim {
    s: Scheduler,
    tried: Tried,
    cfg: Config,
    epoch: u32,
    rng: crate::rng::Rng,
    now: Instant,
    t0: Instant,
    workers: BTreeMap<WorkerId, SimWorker>,
    expected: BTreeMap<(JobId, TaskId), i64>,
    done: BTreeSet<(JobId, TaskId)>,
    finished: BTreeMap<JobId, JobOutcome>,
    specs: BTreeMap<JobId, JobSpec>,
    cancelled: BTreeSet<JobId>,
    fail_p: u64,
    /// What the supervisor's store would hold about running replicas: assigned, not ended.
    durable: BTreeMap<ReplicaId, (JobId, TaskId, WorkerId)>,
    /// Replicas that no longer count (cancelled, dropped, failed), for late results.
    stale: Vec<(WorkerId, ReplicaId)>,
    /// The `keep` the next `Welcome` must carry: what the worker holds and is still attached.
    expect_keep: Option<(WorkerId, BTreeSet<ReplicaId>)>,
    /// When the restart grace of the last simulated restart ends.
    grace_end: Option<Instant>,
}

impl Sim {
    fn new(seed: u64, fail_p: u64) -> Self {
        let t0 = Instant::now();
        let cfg = Config {
            seed,
            max_failures: 50,
            // Longer than the loss bound (300 ms), so that rejoining between the two is tried.
            restart_grace: Duration::from_millis(1000),
            poison_window: Duration::from_millis(1000),
            ..cfg()
        };
        Sim {
            s: Scheduler::new(cfg.clone(), 1),
            tried: Tried::default(),
            cfg,
            epoch: 1,
            rng: crate::rng::Rng::new(seed ^ 0xdead_beef),
            now: t0,
            t0,
            workers: BTreeMap::new(),
            expected: BTreeMap::new(),
            done: BTreeSet::new(),
            finished: BTreeMap::new(),
            specs: BTreeMap::new(),
            cancelled: BTreeSet::new(),
            fail_p,
            durable: BTreeMap::new(),
            stale: Vec::new(),
            expect_keep: None,
            grace_end: None,
        }
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below(hi - lo + 1))
    }

    fn add_worker(&mut self, id: WorkerId) {
        let slots = 1 + self.rng.below(3) as u32;
        // Some machines offer more slots than they have cores.
        let cores = 1 + self.rng.below(u64::from(slots)) as u32;
        let mops = [50.0, 100.0, 400.0][self.rng.below(3) as usize];
        self.workers.insert(
            id.clone(),
            SimWorker {
                connected: false,
                frozen: false,
                busy: false,
                waiting: false,
                slots,
                cores,
                mops,
                last_beat: self.now,
                running: BTreeMap::new(),
            },
        );
        let available = self.rng.below(4) != 0;
        self.join(&id, available);
    }

    /// The worker (re)connects, holding whatever it still runs. Replicas it holds that the
    /// scheduler still has attached to it must be kept.
    fn join(&mut self, id: &WorkerId, available: bool) {
        let attached: BTreeSet<ReplicaId> = self
            .s
            .workers()
            .into_iter()
            .find(|v| v.id == *id)
            .map(|v| v.replicas.into_iter().collect())
            .unwrap_or_default();
        let sw = self.workers.get_mut(id).unwrap();
        let held: Vec<ReplicaId> = sw.running.keys().copied().collect();
        sw.connected = true;
        sw.frozen = false;
        sw.busy = false;
        sw.waiting = !available;
        sw.last_beat = self.now;
        self.tried.waiting_joins += u32::from(!available);
        let hardware = sw.hardware();
        let keep = held
            .iter()
            .copied()
            .filter(|r| attached.contains(r))
            .collect();
        self.expect_keep = Some((id.clone(), keep));
        self.s.handle_worker_joined(
            self.now,
            id.clone(),
            id.0.clone(),
            hardware,
            &held,
            available,
        );
        self.settle();
        assert!(self.expect_keep.is_none(), "no welcome for {id}");
    }

    fn submit(&mut self, name: &str) {
        let n = 3 + self.rng.below(12) as usize;
        let mut tasks = Vec::new();
        for i in 0..n {
            let deps: Vec<String> = (0..i)
                .filter(|_| self.rng.below(4) == 0)
                .map(|d| format!("t{d}"))
                .collect();
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            tasks.push(task(&format!("t{i}"), &deps, self.rng.below(3) == 0));
        }
        let spec = JobSpec {
            name: name.into(),
            tasks,
            ..Default::default()
        };
        let id = JobId::from(name);
        self.specs.insert(id.clone(), spec.clone());
        self.s
            .submit_job(self.now, id, validate(spec, |_| true).unwrap());
        self.settle();
    }

    /// The output a task must produce: its number plus its deps' outputs, so a dependent that
    /// got the wrong inputs computes a wrong value.
    fn output_of(&self, a: &Assignment) -> i64 {
        let n: i64 = a.task.0[1..].parse().unwrap();
        n + a
            .deps
            .values()
            .map(|v| inline(v).as_i64().unwrap())
            .sum::<i64>()
    }

    /// Carries out the scheduler's outputs and checks the invariants.
    fn settle(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::Assign {
                    worker, assignment, ..
                } => self.assigned(worker, assignment),
                Output::Cancel {
                    worker, replica, ..
                } => {
                    self.durable.remove(&replica);
                    self.stale.push((worker.clone(), replica));
                    // A cancel reaches only a connected worker; one that is away hears of it
                    // in the welcome's `drop` when it comes back.
                    if let Some(sw) = self.workers.get_mut(&worker).filter(|w| w.connected) {
                        sw.running.remove(&replica);
                    }
                }
                Output::WorkerLost { worker, .. } => {
                    // The shell closes its connection; the worker keeps what it holds.
                    self.workers.get_mut(&worker).unwrap().connected = false;
                }
                Output::Welcome { worker, keep, drop } => {
                    let (id, want) = self.expect_keep.take().expect("a welcome nobody asked");
                    assert_eq!(id, worker);
                    let keep: BTreeSet<ReplicaId> = keep.into_iter().collect();
                    assert_eq!(keep, want, "{worker} did not keep what it held");
                    self.tried.kept += u32::from(!keep.is_empty());
                    let sw = self.workers.get_mut(&worker).unwrap();
                    assert!(
                        drop.iter()
                            .all(|r| sw.running.contains_key(r) && !keep.contains(r))
                    );
                    assert_eq!(keep.len() + drop.len(), sw.running.len());
                    sw.running.retain(|r, _| keep.contains(r));
                    self.durable
                        .retain(|r, (_, _, w)| *w != worker || keep.contains(r));
                    self.stale
                        .extend(drop.into_iter().map(|r| (worker.clone(), r)));
                }
                Output::Speed { .. } | Output::Validated { .. } | Output::WorkerFlagged { .. } => {}
                Output::TaskDone {
                    job, task, replica, ..
                } => {
                    self.durable.remove(&replica);
                    assert!(self.done.insert((job, task)), "a task finished twice");
                }
                Output::JobFinished { job, outcome } => {
                    self.durable.retain(|_, (j, _, _)| *j != job);
                    assert!(
                        self.finished.insert(job, outcome).is_none(),
                        "a job finished twice"
                    );
                }
                Output::StatusRequest { worker, nonce } => {
                    let sw = &self.workers[&worker];
                    if sw.connected && !sw.frozen {
                        assert!(self.s.handle_status_ack(self.now, &worker, nonce));
                        self.workers.get_mut(&worker).unwrap().last_beat = self.now;
                    }
                }
            }
            if self.stale.len() > 64 {
                self.stale.drain(..32);
            }
        }
        let workers = self.s.workers();
        self.check_slot_caps(&workers);
        self.check_no_missed_opportunity(&workers);
    }

    fn assigned(&mut self, worker: WorkerId, assignment: Assignment) {
        let state = self
            .s
            .workers()
            .into_iter()
            .find(|v| v.id == worker)
            .map(|v| v.state);
        assert_eq!(
            state,
            Some(WorkerState::Live),
            "assigned to a worker not live"
        );
        let spec = &self.specs[&assignment.job];
        let t = spec.tasks.iter().find(|t| t.id == assignment.task).unwrap();
        let want: BTreeSet<&TaskId> = t.deps.iter().collect();
        let got: BTreeSet<&TaskId> = assignment.deps.keys().collect();
        assert_eq!(want, got, "task started before its deps were done");
        for (d, v) in &assignment.deps {
            assert_eq!(
                Some(inline(v).as_i64().unwrap()),
                self.expected
                    .get(&(assignment.job.clone(), d.clone()))
                    .copied(),
                "wrong dep output"
            );
        }
        assert!(
            self.workers[&worker].connected,
            "assigned to a disconnected worker"
        );
        let v = self.output_of(&assignment);
        self.expected
            .entry((assignment.job.clone(), assignment.task.clone()))
            .or_insert(v);
        if self.fail_p > 0 && self.rng.below(100) == 0 {
            // The shell could not send it.
            self.tried.undeliverable += 1;
            self.s
                .handle_undeliverable(self.now, assignment.replica, "frame too large".into());
            return;
        }
        let finish = self.now + Duration::from_millis(20 + self.rng.below(400));
        self.durable.insert(
            assignment.replica,
            (assignment.job, assignment.task, worker.clone()),
        );
        self.workers
            .get_mut(&worker)
            .unwrap()
            .running
            .insert(assignment.replica, finish);
    }

    /// No worker holds more replicas than its slots and cores allow, in the scheduler's view or
    /// in fact.
    fn check_slot_caps(&self, workers: &[WorkerView]) {
        for v in workers {
            let sw = &self.workers[&v.id];
            let cap = sw.slots.min(sw.cores.max(1)) as usize;
            if v.hardware.is_some() {
                assert!(
                    v.replicas.len() <= cap,
                    "{} holds {:?} > {cap}",
                    v.id,
                    v.replicas
                );
            }
            if sw.connected {
                assert!(
                    sw.running.len() <= cap,
                    "{} runs {} > {cap}",
                    v.id,
                    sw.running.len()
                );
            }
        }
    }

    /// Nothing is lost: a task with fewer live replicas than it wants has no eligible worker
    /// (free, not running it, and not one it failed on while another live worker has not).
    fn check_no_missed_opportunity(&self, workers: &[WorkerView]) {
        let free: BTreeMap<&WorkerId, usize> = workers
            .iter()
            .filter(|v| v.state == WorkerState::Live)
            .map(|v| {
                let cap = slot_cap(v.hardware.as_ref().unwrap());
                (&v.id, cap.saturating_sub(v.replicas.len()))
            })
            .filter(|(_, f)| *f > 0)
            .collect();
        for id in self.s.unfinished_jobs() {
            let view = self.s.job_view(&id).unwrap();
            let state = &self.s.jobs[&self.s.job_seq[&id]];
            for (tv, t) in view.tasks.iter().zip(&state.tasks) {
                if matches!(tv.phase, TaskPhase::Done | TaskPhase::Waiting) {
                    continue;
                }
                let on: BTreeSet<&WorkerId> = tv.replicas.iter().map(|r| &r.worker).collect();
                assert_eq!(
                    on.len(),
                    tv.replicas.len(),
                    "two replicas of {} on one worker",
                    tv.id
                );
                let live = tv
                    .replicas
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.worker_state,
                            WorkerState::Live | WorkerState::Reconnecting
                        )
                    })
                    .count();
                let target = tv.planned_replicas as usize;
                let avoid_failed = workers
                    .iter()
                    .any(|v| v.state == WorkerState::Live && !t.failed_on.contains(&v.id));
                if live < target {
                    let eligible = free
                        .keys()
                        .filter(|w| !on.contains(*w))
                        .filter(|w| !(avoid_failed && t.failed_on.contains(**w)))
                        .count();
                    assert_eq!(
                        eligible, 0,
                        "task {} of {id} has {live}/{target} live replicas while {eligible} workers are free",
                        tv.id
                    );
                }
            }
        }
    }

    fn next_finish(&self) -> Option<(Instant, WorkerId, ReplicaId)> {
        self.workers
            .iter()
            .filter(|(_, w)| w.computes())
            .flat_map(|(id, w)| w.running.iter().map(move |(r, t)| (*t, id.clone(), *r)))
            .min()
    }

    /// Advances virtual time by `dt`, delivering heartbeats, completions and deadlines in order.
    fn run_for(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            let beat = self
                .workers
                .iter()
                .filter(|(_, w)| w.connected && !w.frozen)
                .map(|(id, w)| (w.last_beat + self.cfg.heartbeat, id.clone()))
                .min();
            let finish = self.next_finish();
            let timeout = self.s.poll_timeout();
            let next = [
                beat.as_ref().map(|b| b.0),
                finish.as_ref().map(|f| f.0),
                timeout,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                break;
            };
            self.now = next.max(self.now);
            if let Some((t, id)) = beat.filter(|b| b.0 == next) {
                self.workers.get_mut(&id).unwrap().last_beat = t;
                self.s.handle_heartbeat(self.now, &id, &[]);
            } else if let Some((_, id, r)) = finish.filter(|f| f.0 == next) {
                self.finished_replica(&id, r);
            } else {
                self.timeout();
            }
            self.settle();
        }
        self.now = end;
    }

    fn finished_replica(&mut self, id: &WorkerId, r: ReplicaId) {
        let sw = self.workers.get_mut(id).unwrap();
        sw.running.remove(&r);
        // Whatever it sends now is a sign of life too.
        sw.last_beat = self.now;
        let Some((job, task)) = self.s.result_target(id, r) else {
            return;
        };
        if self.rng.below(100) < self.fail_p {
            self.durable.remove(&r);
            self.stale.push((id.clone(), r));
            self.s.handle_failure(self.now, id, r, "injected".into());
        } else if self.rng.below(30) == 0 {
            // The store could not commit it: cancelled (which ends its durable record) and
            // reissued.
            self.tried.not_stored += 1;
            self.s
                .handle_not_stored(self.now, id, r, "disk full".into());
        } else {
            let v = self.expected[&(job, task)];
            self.s
                .handle_result(self.now, id, r, serde_json::json!(v), Duration::ZERO);
        }
    }

    fn timeout(&mut self) {
        let before: BTreeMap<WorkerId, Instant> = self
            .workers
            .iter()
            .filter(|(_, w)| w.frozen && w.connected)
            .map(|(id, w)| (id.clone(), w.last_beat))
            .collect();
        self.s.handle_timeout(self.now);
        let views = self.s.workers();
        // Detection bound: a frozen worker is lost no later than loss_after after its last
        // heartbeat...
        for (id, last) in before {
            if self.now - last >= self.cfg.loss_after() {
                let still = views
                    .iter()
                    .any(|v| v.id == id && v.state != WorkerState::Lost);
                assert!(!still, "{id} silent past the bound but not lost");
            }
        }
        // ... and one that does not come back after a restart, when the grace ends.
        if self.grace_end.is_some_and(|g| self.now >= g) {
            let late: Vec<&WorkerId> = views
                .iter()
                .filter(|v| v.state == WorkerState::Reconnecting)
                .map(|v| &v.id)
                .collect();
            assert!(late.is_empty(), "{late:?} reconnecting past the grace");
        }
    }

    /// A result for a replica that no longer counts changes nothing.
    fn late_result(&mut self) {
        let candidates: Vec<(WorkerId, ReplicaId)> = self
            .stale
            .iter()
            .filter(|(w, _)| self.workers[w].connected && !self.workers[w].frozen)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (id, r) = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        let jobs = self.s.unfinished_jobs();
        let views = |s: &Scheduler| -> Vec<Option<JobView>> {
            jobs.iter().map(|j| s.job_view(j)).collect()
        };
        let before = (views(&self.s), self.s.workers());
        assert!(self.s.result_target(&id, r).is_none(), "{r} still counts");
        self.s
            .handle_result(self.now, &id, r, serde_json::json!(-1), Duration::ZERO);
        assert_eq!(
            self.s.poll_output(),
            None,
            "a late result of {r} did something"
        );
        assert_eq!((views(&self.s), self.s.workers()), before);
        self.tried.late_results += 1;
    }

    /// The supervisor restarts: every connection drops, a new scheduler (next epoch) is built
    /// from the durable state, and the workers come back as they will.
    fn restart(&mut self) {
        for sw in self.workers.values_mut() {
            sw.connected = false;
        }
        self.epoch += 1;
        self.tried.restarts += 1;
        self.s = Scheduler::new(
            Config {
                seed: self.cfg.seed.wrapping_add(u64::from(self.epoch)),
                ..self.cfg.clone()
            },
            self.epoch,
        );
        self.expect_keep = None;
        let unfinished: Vec<JobId> = self
            .specs
            .keys()
            .filter(|j| !self.finished.contains_key(*j))
            .cloned()
            .collect();
        for id in unfinished {
            let spec = self.specs[&id].clone();
            let done = spec
                .tasks
                .iter()
                .filter(|t| self.done.contains(&(id.clone(), t.id.clone())))
                .map(|t| {
                    let v = self.expected[&(id.clone(), t.id.clone())];
                    (t.id.clone(), serde_json::json!(v))
                })
                .collect();
            let running: Vec<(ReplicaId, TaskId, WorkerId)> = self
                .durable
                .iter()
                .filter(|(_, (j, _, _))| *j == id)
                .map(|(r, (_, t, w))| (*r, t.clone(), w.clone()))
                .collect();
            let job = validate(spec, |_| true).unwrap();
            self.s
                .restore_job(self.now, id, job, done, &running, Vec::new());
            self.settle();
        }
        self.s.begin_restart_grace(self.now);
        self.grace_end = Some(self.now + self.cfg.restart_grace);
        self.settle();
        // The workers come back one by one, backing off; the last ones may miss the grace.
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids {
            let backoff = self.ms(0, 250);
            self.run_for(backoff);
            let sw = &self.workers[&id];
            if !sw.connected && !sw.frozen {
                let available = self.rng.below(4) != 0;
                self.join(&id, available);
            }
        }
    }

    fn churn(&mut self, id_counter: &mut u32) {
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
        let sw = self.workers.get_mut(&id).unwrap();
        match self.rng.below(13) {
            // A crash: the connection closes and the work is gone.
            0 if sw.connected => {
                sw.connected = false;
                sw.running.clear();
                self.s.handle_worker_left(self.now, &id);
            }
            // A network reset: the connection closes; the worker keeps its replicas.
            1 if sw.connected => {
                sw.connected = false;
                self.s.handle_worker_left(self.now, &id);
                self.settle();
                // It reconnects after a back-off, holding them.
                let backoff = self.ms(10, 300);
                self.run_for(backoff);
                let sw = &self.workers[&id];
                if !sw.connected && !sw.frozen {
                    self.join(&id, true);
                }
            }
            2 if sw.connected => sw.frozen = true,
            // Thawing: a frozen worker declared lost comes back holding its replicas.
            3 if sw.frozen => {
                sw.frozen = false;
                if !sw.connected {
                    let available = self.rng.below(3) != 0;
                    self.tried.thawed_rejoins += 1;
                    self.join(&id, available);
                }
            }
            4 if !sw.connected && !sw.frozen => {
                let available = self.rng.below(3) != 0;
                self.join(&id, available);
            }
            5 if sw.connected && !sw.frozen && !sw.busy && !sw.waiting => {
                sw.busy = true;
                self.s
                    .handle_activity(self.now, &id, ActivityKind::Keyboard);
            }
            6 if sw.connected && !sw.frozen && (sw.busy || sw.waiting) => {
                sw.busy = false;
                sw.waiting = false;
                self.s.handle_available(self.now, &id);
            }
            7 => self.late_result(),
            8 if self.rng.below(3) == 0 => {
                let open: Vec<JobId> = self.s.unfinished_jobs();
                if !open.is_empty() {
                    let j = open[self.rng.below(open.len() as u64) as usize].clone();
                    assert!(self.s.cancel_job(self.now, &j));
                    self.cancelled.insert(j);
                    self.tried.cancels += 1;
                }
            }
            9 if self.rng.below(4) == 0 => self.restart(),
            9..=12 => {
                *id_counter += 1;
                self.add_worker(WorkerId(format!("w{id_counter}")));
                return;
            }
            _ => {}
        }
        self.settle();
    }

    /// Brings every worker back to health: frozen ones thaw, disconnected ones reconnect
    /// holding what they still have, busy and waiting ones become available.
    fn heal(&mut self) {
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids {
            let sw = self.workers.get_mut(&id).unwrap();
            sw.frozen = false;
            if !sw.connected {
                self.join(&id, true);
            } else if sw.busy || sw.waiting {
                sw.busy = false;
                sw.waiting = false;
                self.s.handle_available(self.now, &id);
                self.settle();
            }
        }
    }
}

fn simulate(seed: u64, fail_p: u64) -> Tried {
    let mut sim = Sim::new(seed, fail_p);
    let mut ids = 0;
    for _ in 0..(2 + sim.rng.below(5)) {
        ids += 1;
        sim.add_worker(WorkerId(format!("w{ids}")));
    }
    for j in 0..(1 + sim.rng.below(4)) {
        sim.submit(&format!("job{j}"));
    }
    // Ten virtual seconds of churn.
    for _ in 0..50 {
        let dt = sim.ms(50, 350);
        sim.run_for(dt);
        if sim.rng.below(3) == 0 {
            sim.churn(&mut ids);
        }
    }
    sim.heal();
    sim.run_for(Duration::from_secs(120));
    let elapsed = sim.now - sim.t0;
    for j in sim.specs.keys() {
        let want = if sim.cancelled.contains(j) {
            JobOutcome::Cancelled
        } else {
            JobOutcome::Completed
        };
        assert_eq!(
            sim.finished.get(j),
            Some(&want),
            "seed {seed}: job {j} did not end as it should in {elapsed:?}"
        );
    }
    for (id, spec) in &sim.specs {
        if sim.cancelled.contains(id) {
            continue;
        }
        for t in &spec.tasks {
            assert!(
                sim.done.contains(&(id.clone(), t.id.clone())),
                "seed {seed}: {id}/{} never done",
                t.id
            );
        }
    }
    sim.tried
}

/// Every path of the simulation was taken at least a few times over the seeds.
fn assert_tried_everything(t: Tried, failures: bool) {
    let all = [
        t.restarts,
        t.kept,
        t.waiting_joins,
        t.thawed_rejoins,
        t.late_results,
        t.cancels,
        t.not_stored,
    ];
    assert!(all.iter().all(|n| *n >= 5), "{t:?}");
    assert_eq!(t.undeliverable >= 5, failures, "{t:?}");
}

#[test]
fn under_churn_every_task_of_every_job_finishes_once_the_pool_is_healthy() {
    let mut tried = Tried::default();
    for seed in 0..300 {
        tried += simulate(seed, 0);
    }
    assert_tried_everything(tried, false);
}

#[test]
fn under_churn_and_failures_every_job_still_completes() {
    let mut tried = Tried::default();
    for seed in 1000..1150 {
        tried += simulate(seed, 10);
    }
    assert_tried_everything(tried, true);
}

#[test]
fn a_worker_heard_in_time_by_its_connection_is_not_lost_while_its_frame_still_queues() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "queued", 1, 0.0);
    join(&mut s, t0, "silent", 1, 0.0);
    // Loss after 300 ms. The connection of `queued` received a frame at 250 ms that the driver
    // has not handled by 350 ms; `silent` sent nothing.
    let now = t0 + Duration::from_millis(350);
    let due = s.due_workers(now);
    assert_eq!(due, vec![w("queued"), w("silent")]);
    s.handle_heard(t0 + Duration::from_millis(250), &w("queued"));
    s.handle_timeout(now);
    let lost: Vec<WorkerId> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::WorkerLost { worker, .. } => Some(worker),
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![w("silent")]);
    // A stale stamp moves nothing back: it is lost 300 ms after 250 ms.
    s.handle_heard(t0 + Duration::from_millis(10), &w("queued"));
    assert_eq!(s.due_workers(now), Vec::<WorkerId>::new());
    s.handle_timeout(t0 + Duration::from_millis(550));
    assert!(
        drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::WorkerLost { worker, .. } if *worker == w("queued")))
    );
}

/// `n` alike one-slot workers, and a job of one task at a time finished at once: who ran each.
fn holders_of_single_tasks(n: usize, tasks: usize) -> Vec<WorkerId> {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for i in 0..n {
        join(&mut s, t0, &format!("w{i:04}"), 1, 100.0);
    }
    let mut holders = Vec::new();
    for k in 0..tasks {
        s.submit_job(t0, format!("j{k}").into(), job(vec![task("t", &[], false)]));
        let a = assigns(&drain(&mut s));
        assert_eq!(a.len(), 1, "one task, one replica");
        let (worker, asg, _) = &a[0];
        s.handle_result(
            t0,
            worker,
            asg.replica,
            serde_json::json!(k),
            Duration::ZERO,
        );
        drain(&mut s);
        holders.push(worker.clone());
    }
    holders
}

#[test]
fn alike_workers_share_the_work_in_small_pools_and_in_pools_of_thousands() {
    // Below and above the size where ties stop being scanned: both draw at random among all
    // the alike free workers, never settling on the first few.
    for n in [100, 3000] {
        let holders = holders_of_single_tasks(n, 200);
        let distinct: BTreeSet<&WorkerId> = holders.iter().collect();
        // 200 draws among n: a uniform draw repeats rarely (100: about 87 distinct, 3000:
        // about 193); a biased one would concentrate on a handful.
        let floor = if n == 100 { 70 } else { 180 };
        assert!(
            distinct.len() >= floor,
            "{n} workers: {} distinct",
            distinct.len()
        );
    }
}

#[test]
fn a_task_retried_in_a_large_alike_pool_never_goes_back_to_a_worker_it_failed_on() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        Config {
            max_failures: 500,
            ..cfg()
        },
        1,
    );
    for i in 0..400 {
        join(&mut s, t0, &format!("w{i:04}"), 1, 100.0);
    }
    s.submit_job(t0, "j".into(), job(vec![task("t", &[], false)]));
    let mut failed_on = BTreeSet::new();
    // Fail it on 390 of the 400: late retries find almost every alike worker excluded, so the
    // draws miss and the group is scanned.
    for _ in 0..390 {
        let a = assigns(&drain(&mut s));
        assert_eq!(a.len(), 1);
        let (worker, asg, _) = &a[0];
        assert!(
            failed_on.insert(worker.clone()),
            "{worker} got the task again"
        );
        s.handle_failure(t0, worker, asg.replica, "boom".into());
    }
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 1);
    assert!(!failed_on.contains(&a[0].0));
}

#[test]
fn a_dependency_output_is_kept_only_until_its_last_dependent_is_done_and_a_large_one_only_by_reference()
 {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 4, 100.0);
    s.submit_job(
        t0,
        "j".into(),
        job(vec![
            task("seed", &[], false),
            task("left", &["seed"], false),
            task("right", &["seed"], false),
            task("leaf", &[], false),
            task("tail", &["left"], false),
        ]),
    );
    let first = assigns(&drain(&mut s));
    let of = |a: &[(WorkerId, Assignment, AssignReason)], t: &str| {
        a.iter()
            .find(|(_, x, _)| x.task.0 == t)
            .map(|(_, x, _)| x.clone())
            .unwrap_or_else(|| panic!("{t} not assigned: {a:?}"))
    };
    let seq = s.job_seq[&JobId::from("j")];
    let kept = |s: &Scheduler, ti: usize| s.jobs[&seq].tasks[ti].output.clone();
    // A large output arrives as a reference to its file: that is what is kept and sent.
    let blob = crate::proto::BlobRef {
        bytes: 3_000_000,
        sha256: "ab".repeat(32),
    };
    let seed = of(&first, "seed");
    s.handle_result(
        t0,
        &w("a"),
        seed.replica,
        Payload::Blob(blob.clone()),
        Duration::ZERO,
    );
    // A task no other depends on keeps no output at all.
    let leaf = of(&first, "leaf");
    s.handle_result(
        t0,
        &w("a"),
        leaf.replica,
        serde_json::json!("big"),
        Duration::ZERO,
    );
    assert_eq!(kept(&s, 3), None);
    assert!(s.jobs[&seq].tasks[3].done);
    let next = assigns(&drain(&mut s));
    for t in ["left", "right"] {
        assert_eq!(
            of(&next, t).deps[&TaskId::from("seed")],
            Payload::Blob(blob.clone())
        );
    }
    s.handle_result(
        t0,
        &w("a"),
        of(&next, "left").replica,
        serde_json::json!(1),
        Duration::ZERO,
    );
    // `right` still needs it.
    assert_eq!(kept(&s, 0), Some(Payload::Blob(blob.clone())));
    s.handle_result(
        t0,
        &w("a"),
        of(&next, "right").replica,
        serde_json::json!(2),
        Duration::ZERO,
    );
    // Both its dependents are done: it is let go, while `left`'s stays for `tail`.
    assert_eq!(kept(&s, 0), None);
    assert_eq!(kept(&s, 1), Some(Payload::Inline(serde_json::json!(1))));
    let last = assigns(&drain(&mut s));
    assert_eq!(
        of(&last, "tail").deps[&TaskId::from("left")],
        Payload::Inline(serde_json::json!(1))
    );
}

#[test]
fn a_restored_job_keeps_only_the_stored_outputs_a_pending_dependent_needs() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    s.restore_job(
        t0,
        "j".into(),
        job(vec![
            task("spent", &[], false),
            task("used", &["spent"], false),
            task("needed", &[], false),
            task("waits", &["needed"], false),
            task("alone", &[], false),
        ]),
        BTreeMap::from([
            (TaskId::from("spent"), serde_json::json!(1)),
            (TaskId::from("used"), serde_json::json!(2)),
            (TaskId::from("needed"), serde_json::json!(3)),
            (TaskId::from("alone"), serde_json::json!(4)),
        ]),
        &[],
        Vec::new(),
    );
    let seq = s.job_seq[&JobId::from("j")];
    let kept: Vec<Option<Payload>> = s.jobs[&seq]
        .tasks
        .iter()
        .map(|t| t.output.clone())
        .collect();
    assert_eq!(
        kept,
        vec![
            None,
            None,
            Some(Payload::Inline(serde_json::json!(3))),
            None,
            None
        ]
    );
    assert_eq!(s.jobs[&seq].done, 4);
    // And the one that waits gets it.
    s.begin_restart_grace(t0);
    let out = join(&mut s, t0, "a", 1, 0.0);
    let a = assigns(&out);
    assert_eq!(a.len(), 1, "{out:?}");
    assert_eq!(a[0].1.task, TaskId::from("waits"));
    assert_eq!(
        a[0].1.deps[&TaskId::from("needed")],
        Payload::Inline(serde_json::json!(3))
    );
}
