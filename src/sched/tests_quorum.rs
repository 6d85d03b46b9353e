//! Quorum validation in the scheduler: distinct workers, agreement, disagreement, reputation,
//! restarts. On a virtual clock, as `tests`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use super::tests::{assigns, cfg, drain, inline, job, join, task, w};
use super::*;
use crate::job::{TaskSpec, Validate};

fn quorum(mut t: TaskSpec, n: u32) -> TaskSpec {
    t.validate = Some(Validate::Quorum);
    t.quorum = Some(n);
    t
}

/// Reports `output` from the worker holding `replica`.
fn report(s: &mut Scheduler, now: Instant, worker: &str, replica: ReplicaId, output: i64) {
    s.handle_candidate(
        now,
        &w(worker),
        replica,
        json!({ "count": output }),
        Duration::ZERO,
    );
}

fn replica_on(a: &[(WorkerId, Assignment, AssignReason)], worker: &str) -> ReplicaId {
    a.iter()
        .find(|(x, ..)| x.0 == worker)
        .map(|(_, a, _)| a.replica)
        .unwrap_or_else(|| panic!("nothing assigned to {worker}: {a:?}"))
}

fn done(out: &[Output]) -> Vec<(TaskId, WorkerId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::TaskDone { task, worker, .. } => Some((task.clone(), worker.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_quorum_task_runs_on_distinct_workers_and_is_done_only_when_enough_agree() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    // Three workers of two slots: a fourth replica (a saturation copy) would need a fourth.
    for id in ["a", "b", "c"] {
        join(&mut s, t0, id, 2, 100.0);
    }
    s.submit_job(t0, "j".into(), job(vec![quorum(task("q", &[], false), 3)]));
    let a = assigns(&drain(&mut s));
    let on: BTreeSet<&str> = a.iter().map(|(w, ..)| w.0.as_str()).collect();
    assert_eq!((a.len(), on.len()), (3, 3), "{a:?}");
    let mut it = a.iter().map(|(w, a, _)| (w.0.clone(), a.replica));
    let (w1, r1) = it.next().unwrap();
    let (w2, r2) = it.next().unwrap();
    let (w3, r3) = it.next().unwrap();
    report(&mut s, t0, &w1, r1, 5);
    report(&mut s, t0, &w2, r2, 5);
    let out = drain(&mut s);
    assert!(done(&out).is_empty(), "two of three is no quorum: {out:?}");
    assert!(
        assigns(&out).is_empty(),
        "the third is still running: {out:?}"
    );
    report(&mut s, t0, &w3, r3, 5);
    let out = drain(&mut s);
    assert_eq!(done(&out), vec![(TaskId::from("q"), w(&w1))]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Validated { agreed, dissent, .. } if agreed.len() == 3 && dissent.is_empty()
    )));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::JobFinished {
            outcome: JobOutcome::Completed,
            ..
        }
    )));
    assert_eq!(s.reputation(&w(&w1)).0.agreed, 1);
}

#[test]
fn a_disagreement_brings_in_a_worker_not_tried_yet_and_dependents_get_the_agreed_output() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["a", "b"] {
        join(&mut s, t0, id, 1, 100.0);
    }
    s.submit_job(
        t0,
        "j".into(),
        job(vec![
            quorum(task("q", &[], false), 2),
            task("after", &["q"], false),
        ]),
    );
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 2);
    let (ra, rb) = (replica_on(&a, "a"), replica_on(&a, "b"));
    report(&mut s, t0, "a", ra, 5);
    report(&mut s, t0, "b", rb, 6);
    let out = drain(&mut s);
    assert!(done(&out).is_empty());
    // Both free again, but neither may run it a second time: it waits for a third worker
    // (and `after` waits for it).
    assert!(assigns(&out).is_empty(), "{out:?}");
    let a = assigns(&join(&mut s, t0, "c", 1, 100.0));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("c"));
    report(&mut s, t0, "c", a[0].1.replica, 5);
    let out = drain(&mut s);
    assert_eq!(done(&out), vec![(TaskId::from("q"), w("a"))]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Validated { agreed, dissent, .. }
            if agreed == &vec![w("a"), w("c")] && dissent == &vec![w("b")]
    )));
    let next = assigns(&out);
    assert_eq!(next.len(), 1, "{out:?}");
    assert_eq!(next[0].1.task, TaskId::from("after"));
    assert_eq!(
        inline(&next[0].1.deps[&TaskId::from("q")]),
        &json!({"count": 5})
    );
    assert_eq!(
        s.reputation(&w("b")).0,
        Reputation {
            agreed: 0,
            disagreed: 1
        }
    );
    assert_eq!(s.reputation(&w("c")).0.agreed, 1);
}

#[test]
fn a_worker_is_flagged_once_at_its_third_disagreement_and_then_gets_no_quorum_tasks() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["liar", "a", "b"] {
        join(&mut s, t0, id, 1, 100.0);
    }
    let mut flagged = 0;
    let mut rounds = 0;
    while !s.reputation(&w("liar")).1 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "never flagged: {:?}",
            s.reputation(&w("liar"))
        );
        let id = JobId::from(format!("j{rounds}").as_str());
        s.submit_job(t0, id, job(vec![quorum(task("q", &[], false), 2)]));
        let mut out = drain(&mut s);
        while !out.iter().any(|o| matches!(o, Output::JobFinished { .. })) {
            let a = assigns(&out);
            assert!(!a.is_empty(), "round {rounds} stuck: {out:?}");
            for (worker, asg, _) in a {
                let value = if worker == w("liar") { 6 } else { 5 };
                report(&mut s, t0, &worker.0, asg.replica, value);
            }
            out = drain(&mut s);
            flagged += out
                .iter()
                .filter(
                    |o| matches!(o, Output::WorkerFlagged { worker, .. } if worker == &w("liar")),
                )
                .count();
        }
    }
    let r = s.reputation(&w("liar")).0;
    assert_eq!((r.agreed, r.disagreed), (0, 3), "flagged at its third");
    assert_eq!(flagged, 1);
    for honest in ["a", "b"] {
        assert_eq!(s.reputation(&w(honest)).0.disagreed, 0);
    }
    // Flagged: quorum tasks go elsewhere (and wait for workers rather than go to it), plain
    // tasks still reach it.
    s.submit_job(
        t0,
        "after".into(),
        job(vec![
            quorum(task("q1", &[], false), 2),
            quorum(task("q2", &[], false), 2),
            task("plain", &[], false),
        ]),
    );
    let a = assigns(&drain(&mut s));
    let liar: Vec<&TaskId> = a
        .iter()
        .filter(|(x, ..)| x == &w("liar"))
        .map(|(_, a, _)| &a.task)
        .collect();
    assert_eq!(liar, vec![&TaskId::from("plain")], "{a:?}");
}

#[test]
fn a_flag_is_forgiven_to_a_worker_that_agreed_ten_times_for_each_disagreement() {
    let r = |agreed, disagreed| Reputation { agreed, disagreed };
    assert!(!r(0, 2).flagged(3));
    assert!(r(0, 3).flagged(3));
    assert!(r(29, 3).flagged(3));
    assert!(!r(30, 3).flagged(3));
}

#[test]
fn outputs_that_never_agree_fail_the_job_at_twice_the_quorum_and_one() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for i in 0..6 {
        join(&mut s, t0, &format!("w{i}"), 1, 100.0);
    }
    s.submit_job(t0, "j".into(), job(vec![quorum(task("q", &[], false), 2)]));
    let mut out = drain(&mut s);
    let mut value = 0;
    let mut reported = 0;
    while !out.iter().any(|o| matches!(o, Output::JobFinished { .. })) {
        let a = assigns(&out);
        assert!(!a.is_empty(), "stuck after {reported}: {out:?}");
        for (worker, asg, _) in a {
            value += 1;
            reported += 1;
            report(&mut s, t0, &worker.0, asg.replica, value);
        }
        out = drain(&mut s);
    }
    assert_eq!(reported, 5);
    let error = out
        .iter()
        .find_map(|o| match o {
            Output::JobFinished {
                outcome: JobOutcome::Failed { error, .. },
                ..
            } => Some(error.clone()),
            _ => None,
        })
        .expect("the job failed");
    assert!(
        error.contains("got 5 outputs from distinct workers and no 2 of them agree"),
        "{error}"
    );
}

#[test]
fn stored_candidates_count_towards_the_quorum_after_a_restart() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 2);
    let earlier = ReplicaId::new(1, 7);
    s.restore_job(
        t0,
        "j".into(),
        job(vec![quorum(task("q", &[], false), 2)]),
        BTreeMap::new(),
        &[],
        vec![(
            TaskId::from("q"),
            Candidate {
                replica: earlier,
                worker: w("a"),
                output: json!({"count": 5}),
            },
        )],
    );
    // Worker a gave its output before the restart: only b may give the second.
    let mut a = assigns(&join(&mut s, t0, "a", 1, 100.0));
    assert!(a.is_empty(), "{a:?}");
    a = assigns(&join(&mut s, t0, "b", 1, 100.0));
    assert_eq!(a.len(), 1);
    report(&mut s, t0, "b", a[0].1.replica, 5);
    let out = drain(&mut s);
    assert_eq!(done(&out), vec![(TaskId::from("q"), w("a"))]);
}

#[test]
fn a_task_not_validated_by_quorum_is_done_at_its_first_result() {
    // The negative control of the tests above: without `validate`, one output is enough.
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    join(&mut s, t0, "a", 1, 100.0);
    join(&mut s, t0, "b", 1, 100.0);
    s.submit_job(t0, "j".into(), job(vec![task("q", &[], false)]));
    let a = assigns(&drain(&mut s));
    assert_eq!(a.len(), 1);
    assert!(s.judge(&a[0].0, a[0].1.replica, &json!(1)).is_none());
    s.handle_result(t0, &a[0].0, a[0].1.replica, json!(6), Duration::ZERO);
    assert_eq!(done(&drain(&mut s)).len(), 1);
}

#[test]
fn two_workers_of_one_volunteer_never_give_outputs_to_one_quorum() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["m1", "m2", "m3", "honest"] {
        join(&mut s, t0, id, 1, 100.0);
    }
    for id in ["m1", "m2", "m3"] {
        s.set_owner(&w(id), Some("mallory".into()));
    }
    s.submit_job(t0, "j".into(), job(vec![quorum(task("q", &[], false), 2)]));
    let a = assigns(&drain(&mut s));
    let mallory = a.iter().filter(|(x, ..)| x.0.starts_with('m')).count();
    assert_eq!((a.len(), mallory), (2, 1), "{a:?}");
    // Mallory's output disagrees with the honest one: the third output must come from someone
    // else than mallory, so the task waits for another owner.
    for (worker, asg, _) in &a {
        let value = if worker.0.starts_with('m') { 6 } else { 5 };
        report(&mut s, t0, &worker.0, asg.replica, value);
    }
    let out = drain(&mut s);
    assert!(assigns(&out).is_empty(), "{out:?}");
    let a = assigns(&join(&mut s, t0, "other", 1, 100.0));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, w("other"));
    // The same job without owners would have taken a second mallory worker at once: the
    // negative control.
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["m1", "m2"] {
        join(&mut s, t0, id, 1, 100.0);
    }
    s.submit_job(t0, "j".into(), job(vec![quorum(task("q", &[], false), 2)]));
    assert_eq!(assigns(&drain(&mut s)).len(), 2);
}

#[test]
fn a_worker_freed_from_a_saturation_copy_never_runs_a_quorum_task_it_gave_an_output_for() {
    // Seen on a real pool: a task left with no live replica takes the worker of a saturation
    // copy; that worker had already given the task an output, and its second output agreed
    // with its first.
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 1);
    for id in ["a", "b", "c"] {
        join(&mut s, t0, id, 1, 100.0);
    }
    let mut plain = task("p", &[], false);
    plain.estimates.cpu_s = 5.0;
    s.submit_job(
        t0,
        "j".into(),
        job(vec![quorum(task("q", &[], false), 2), plain]),
    );
    let a = assigns(&drain(&mut s));
    let q: Vec<(WorkerId, ReplicaId)> = a
        .iter()
        .filter(|(_, x, _)| x.task == TaskId::from("q"))
        .map(|(w, x, _)| (w.clone(), x.replica))
        .collect();
    assert_eq!(q.len(), 2, "{a:?}");
    let (x, y) = (&q[0], &q[1]);
    report(&mut s, t0, &x.0.0, x.1, 5);
    let mut out = drain(&mut s);
    // The first to answer idles: it holds a saturation copy of `p` (made here if the policy
    // did not make one).
    let seq = s.job_seq[&JobId::from("j")];
    if s.workers[&x.0].replicas.is_empty() {
        s.start_replica(
            t0,
            seq,
            1,
            x.0.clone(),
            Extra::Saturation,
            Some(AssignReason::Saturation),
        );
    }
    out.extend(drain(&mut s));
    report(&mut s, t0, &y.0.0, y.1, 6);
    out.extend(drain(&mut s));
    for (w2, again, _) in assigns(&out) {
        assert!(
            !(again.task == TaskId::from("q") && (w2 == x.0 || w2 == y.0)),
            "{w2} got q again after giving it an output: {out:?}"
        );
    }
}
