//! The quality-of-service half of the scheduler, beyond placing and reissuing: pool saturation,
//! the job progress monitor (stalls and stragglers), speculative copies (`speculative` policy)
//! and replica deadlines (`deadline` policy). Same state machine as `mod.rs`, same rules: no
//! clock, no I/O; every decision leaves as an [`super::Output`].

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::time::{Duration, Instant};

use super::{
    AssignReason, Extra, Pick, Policy, ReissueCause, ReplicaId, Scheduler, expected_speed,
};

/// Most live replicas saturation gives one task (the original included).
const MAX_SATURATION_LIVE: usize = 3;
/// A saturation replica must be expected to finish within this share of the time its task still needs
/// on its best running replica: a small gain is not worth the CPU the loser burns.
const SATURATION_GAIN: f64 = 0.4;
/// Copies beyond its plan one task may get in its life (saturation, monitor, speculative).
const MAX_EXTRAS: u32 = 3;
/// An extra replica projected to need this many times the time its task's best replica needs
/// is cancelled.
const TRIM_BEHIND: f64 = 2.0;
/// Progress below this fraction is too little to project a replica's finish from.
const MIN_PROGRESS: f64 = 0.02;
/// Deadline of a task with no CPU estimate in its job, under `deadline` (BOINC's default delay
/// bound is days; an hour keeps simulations of short jobs meaningful).
const DEFAULT_DEADLINE_EST_S: f64 = 900.0;
/// `deadline` policy: a replica's deadline is this many times its task's estimate.
const DEADLINE_FACTOR: f64 = 4.0;
/// `speculative` policy: share of a job's tasks done before copies start, and how much longer
/// than the median of finished tasks a task must run to get one.
const SPECULATIVE_AFTER: f64 = 0.75;
const SPECULATIVE_FACTOR: f64 = 1.5;

/// A running task as the monitor sees it: its live replicas and the best projection of when it
/// finishes.
struct Running {
    seq: u64,
    ti: usize,
    live: Vec<ReplicaId>,
    /// Seconds until its most promising live replica is expected to finish.
    remaining_s: f64,
    /// The replica that projection belongs to.
    best: ReplicaId,
}

impl Scheduler {
    /// The task's CPU estimate at speed 1.0: its own, else the mean of its job's known ones.
    pub(super) fn est_cpu(&self, seq: u64, ti: usize) -> Option<f64> {
        let job = self.jobs.get(&seq)?;
        let own = job.job.tasks()[ti].estimates.cpu_s;
        if own > 0.0 {
            return Some(own);
        }
        job.mean_est_cpu
    }

    /// The mean of a job's known CPU estimates (kept in its state: the monitor asks for it for
    /// every running replica, and a job may have 100,000 tasks).
    pub(super) fn mean_est_cpu(job: &crate::job::Job) -> Option<f64> {
        let (sum, n) = job
            .tasks()
            .iter()
            .map(|t| t.estimates.cpu_s)
            .filter(|s| *s > 0.0)
            .fold((0.0, 0u32), |(sum, n), s| (sum + s, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// Speed expected of the replica's worker for its task's kind.
    fn replica_speed(&self, r: &ReplicaId) -> Option<f64> {
        let rep = self.replicas.get(r)?;
        let w = self.workers.get(&rep.worker)?;
        let kind = &self.jobs.get(&rep.job)?.job.tasks()[rep.task].kind;
        Some(expected_speed(
            w.hardware.as_ref(),
            self.history.get(&rep.worker),
            Some(kind),
        ))
    }

    /// When the replica is expected to finish, in seconds of its own running, and how long it
    /// has run: from its progress once that says enough (MIN_PROGRESS, or any progress after a
    /// quarter of the expected time), else from the estimate and its worker's speed (a replica
    /// already past that gets as long again as it ran).
    fn projection(&self, now: Instant, r: &ReplicaId) -> Option<(f64, f64)> {
        let rep = self.replicas.get(r)?;
        let elapsed = now.saturating_duration_since(rep.started).as_secs_f64();
        let p = f64::from(rep.progress);
        let expected = self
            .est_cpu(rep.job, rep.task)
            .zip(self.replica_speed(r))
            .map(|(e, s)| e / s);
        if self.measured(r) {
            let at = rep
                .progress_at
                .saturating_duration_since(rep.started)
                .as_secs_f64();
            return Some(((at / p).max(elapsed), elapsed));
        }
        Some((expected?.max(2.0 * elapsed), elapsed))
    }

    /// Whether the replica's projection comes from its own progress rather than an estimate.
    fn measured(&self, r: &ReplicaId) -> bool {
        let Some(rep) = self.replicas.get(r) else {
            return false;
        };
        // What it had run when it reported its progress.
        let ran = rep
            .progress_at
            .saturating_duration_since(rep.started)
            .as_secs_f64();
        let p = f64::from(rep.progress);
        let expected = self
            .est_cpu(rep.job, rep.task)
            .zip(self.replica_speed(r))
            .map(|(e, s)| e / s);
        let telling = p >= MIN_PROGRESS || expected.is_some_and(|e| ran >= 0.25 * e);
        p > 0.0 && ran > 0.0 && telling
    }

    /// Every task with a live replica, with its best projection.
    fn running_tasks(&self, now: Instant) -> Vec<Running> {
        self.running_tasks_of(now, |_| true)
    }

    /// Every task with a live replica in a job `of` accepts, with its best projection.
    fn running_tasks_of(
        &self,
        now: Instant,
        of: impl Fn(&super::JobState) -> bool,
    ) -> Vec<Running> {
        let mut by_task: BTreeMap<(u64, usize), Vec<ReplicaId>> = BTreeMap::new();
        for (r, rep) in &self.replicas {
            if self.jobs.get(&rep.job).is_some_and(&of) && self.is_live(r) {
                by_task.entry((rep.job, rep.task)).or_default().push(*r);
            }
        }
        by_task
            .into_iter()
            .filter(|((seq, ti), _)| self.jobs.get(seq).is_some_and(|j| !j.tasks[*ti].done))
            .map(|((seq, ti), live)| {
                let (remaining_s, best) = live
                    .iter()
                    .map(|r| {
                        let left = self
                            .projection(now, r)
                            .map_or(f64::INFINITY, |(total, ran)| (total - ran).max(0.0));
                        (left, *r)
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .expect("a running task has a live replica");
                Running {
                    seq,
                    ti,
                    live,
                    remaining_s,
                    best,
                }
            })
            .collect()
    }

    /// Whether the task may get another copy beyond its plan: at most `MAX_EXTRAS` in its life,
    /// so that copies that keep losing cannot burn CPU without end.
    fn may_copy(&self, t: &Running) -> bool {
        self.jobs
            .get(&t.seq)
            .is_some_and(|j| j.tasks[t.ti].extras < MAX_EXTRAS)
    }

    // ----- saturation -----

    /// Pool saturation: while workers would idle, replicate running tasks onto them, most
    /// critical and longest remaining first, when the free worker is expected to finish the task
    /// before its best running replica does.
    pub(super) fn saturate(&mut self, now: Instant) {
        let mut free: usize = self.free_slots();
        // Runs on every scheduling turn with a free slot: when no job could take a copy, it must
        // cost nothing (a pool of no-op tasks with no estimates would otherwise walk every
        // replica each turn).
        if free == 0 || self.saturable_jobs == 0 {
            return;
        }
        let mut running = self.running_tasks_of(now, |j| j.saturable);
        running.retain(|t| t.live.len() < MAX_SATURATION_LIVE && self.may_copy(t));
        running.sort_by(|a, b| {
            let crit = |t: &Running| self.is_critical(t.seq, t.ti);
            crit(b)
                .cmp(&crit(a))
                .then(b.remaining_s.total_cmp(&a.remaining_s))
                .then((a.seq, a.ti).cmp(&(b.seq, b.ti)))
        });
        for t in running {
            if free == 0 {
                break;
            }
            let Some(est) = self.est_cpu(t.seq, t.ti) else {
                // Without an estimate nobody can say a new replica would win: insure only
                // critical tasks.
                if self.is_critical(t.seq, t.ti)
                    && let Some(w) = self.pick_worker(t.seq, t.ti, Pick::Any)
                {
                    self.start_replica(
                        now,
                        t.seq,
                        t.ti,
                        w,
                        Extra::Saturation,
                        Some(AssignReason::Saturation),
                    );
                    free -= 1;
                }
                continue;
            };
            let Some(w) = self.pick_worker(t.seq, t.ti, Pick::Any) else {
                continue;
            };
            let kind = self.jobs[&t.seq].job.tasks()[t.ti].kind.clone();
            let speed = {
                let wk = &self.workers[&w];
                expected_speed(wk.hardware.as_ref(), self.history.get(&w), Some(&kind))
            };
            if est / speed >= SATURATION_GAIN * t.remaining_s {
                continue;
            }
            self.start_replica(
                now,
                t.seq,
                t.ti,
                w,
                Extra::Saturation,
                Some(AssignReason::Saturation),
            );
            free -= 1;
        }
    }

    /// Tasks with no live replica come before saturation replicas: each such task the free
    /// workers could not take gets the worker of a saturation replica whose task runs elsewhere
    /// too (that replica is cancelled at once).
    pub(super) fn preempt_saturation(&mut self, now: Instant) {
        // Tasks with no live replica lead `wanting` (classes 0 and 1). Taking one moves it to
        // class 2 or out; cancelling a victim leaves its task a live replica: neither adds a
        // key of class 0 or 1, so walking the set is walking a copy of its start.
        let mut after: Option<super::WantKey> = None;
        while !self.saturation.is_empty() {
            let next = match after {
                None => self.wanting.first(),
                Some(k) => self.wanting.range((Excluded(k), Unbounded)).next(),
            };
            let Some(&key) = next.filter(|k| k.class < 2) else {
                break;
            };
            after = Some(key);
            let victim =
                self.saturation
                    .iter()
                    .filter_map(|r| self.replicas.get(r).map(|rep| (r, rep)))
                    .filter(|(r, rep)| {
                        rep.extra == Extra::Saturation
                            && self.live_replicas(rep.job, rep.task) >= 2
                            && self.is_live(r)
                    })
                    .find_map(|(r, rep)| {
                        let w = self.workers.get(&rep.worker)?;
                        let job = self.jobs.get(&key.job)?;
                        let task = &job.tasks[key.task];
                        let fits = super::fits(w.hardware.as_ref(), &job.job.tasks()[key.task])
                            && !self.is_held_back(w)
                            && !task.failed_on.contains(&rep.worker)
                            && !task.replicas.iter().any(|x| {
                                self.replicas.get(x).is_some_and(|x| x.worker == rep.worker)
                            })
                            && !self.quorum_bars(key.job, key.task, &rep.worker);
                        fits.then(|| (*r, rep.worker.clone()))
                    });
            let Some((victim, worker)) = victim else {
                break;
            };
            let task_id = self.jobs[&key.job].job.tasks()[key.task].id.clone();
            self.cancel_replica(
                victim,
                format!("worker needed for task {task_id}, which has no replica running"),
            );
            self.start_replica(now, key.job, key.task, worker, Extra::No, None);
        }
    }

    /// Free slots of the workers that can take a replica now.
    fn free_slots(&self) -> usize {
        self.free_ok
    }

    // ----- the progress monitor -----

    /// Looks at every running job: under `idlegrid`, a job that finished nothing for
    /// `stall_after` gets another replica of each running task, and a straggling replica one on
    /// a faster free worker; under `speculative`, late tasks get a copy.
    pub(super) fn check_progress(&mut self, now: Instant) {
        match self.cfg.policy {
            Policy::Idlegrid => {
                self.trim(now);
                self.check_stalls(now);
                self.check_stragglers(now);
            }
            Policy::Speculative => self.speculate(now),
            Policy::Deadline | Policy::None => {}
        }
    }

    /// A task running more replicas than its plan asks for (a saturation or monitor copy, or
    /// a paused replica that resumed after its reissue) keeps its most promising ones; an extra
    /// projected to need more than `TRIM_BEHIND` times what the best one needs is cancelled:
    /// it would almost surely lose, and every second it runs is CPU spent for nothing.
    fn trim(&mut self, now: Instant) {
        for t in self.running_tasks(now) {
            let target = self.target_replicas(t.seq, t.ti);
            if t.live.len() <= target || !t.remaining_s.is_finite() {
                continue;
            }
            // Only measured progress against measured progress: an estimate is a promise.
            let mut ranked: Vec<(f64, ReplicaId)> = t
                .live
                .iter()
                .filter(|r| self.measured(r))
                .map(|r| {
                    let left = self
                        .projection(now, r)
                        .map_or(f64::INFINITY, |(total, ran)| (total - ran).max(0.0));
                    (left, *r)
                })
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some(&(best, _)) = ranked.first() else {
                continue;
            };
            for &(left, r) in ranked.iter().skip(target) {
                if left.is_finite() && left > TRIM_BEHIND * best.max(1.0) {
                    if let Some(worker) = self.replicas.get(&r).map(|x| x.worker.clone())
                        && let Some(task) = self.jobs.get_mut(&t.seq).map(|j| &mut j.tasks[t.ti])
                    {
                        task.trimmed_on.insert(worker);
                    }
                    self.cancel_replica(
                        r,
                        format!(
                            "another replica is far ahead ({best:.0} s left against {left:.0} s)"
                        ),
                    );
                }
            }
        }
    }

    /// A job is stalled when it finished nothing for `stall_after` and for longer than its
    /// running tasks should take (one and a half times the longest one's expected time, when an
    /// estimate or finished peers say): a job of hour-long tasks is not stalled after a minute.
    fn check_stalls(&mut self, now: Instant) {
        let candidates: Vec<(u64, Duration)> = self
            .jobs
            .iter()
            .filter_map(|(seq, j)| {
                let idle = now.saturating_duration_since(j.last_done);
                (idle >= self.cfg.stall_after).then_some((*seq, idle))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let running = self.running_tasks(now);
        let stalled: Vec<(u64, Duration)> = candidates
            .into_iter()
            .filter(|(seq, idle)| {
                let median = self.jobs.get(seq).and_then(|j| median(&j.durations));
                let expected = running
                    .iter()
                    .filter(|t| t.seq == *seq)
                    .filter_map(|t| {
                        let by_estimate = self
                            .est_cpu(t.seq, t.ti)
                            .zip(self.replica_speed(&t.best))
                            .map(|(e, s)| e / s);
                        by_estimate.or(median)
                    })
                    .fold(0.0, f64::max);
                idle.as_secs_f64() >= 1.5 * expected
            })
            .collect();
        for (seq, idle) in stalled {
            if let Some(j) = self.jobs.get_mut(&seq) {
                // Look again only after another `stall_after`.
                j.last_done = now;
            }
            for t in running.iter().filter(|t| t.seq == seq && t.live.len() < 2) {
                if !self.may_copy(t) {
                    continue;
                }
                let min = self.replica_speed(&t.best).unwrap_or(0.0);
                let Some(w) = self.pick_worker(seq, t.ti, Pick::FasterThan(min * 0.99)) else {
                    continue;
                };
                let cause = ReissueCause::Stalled { idle };
                self.start_replica(
                    now,
                    seq,
                    t.ti,
                    w,
                    Extra::Monitor,
                    Some(AssignReason::Reissue(cause)),
                );
            }
        }
    }

    fn check_stragglers(&mut self, now: Instant) {
        let factor = self.cfg.straggler_factor;
        // Once per job per look, not per running task: a big job has many of both.
        let mut medians: std::collections::HashMap<u64, Option<f64>> = Default::default();
        for t in self.running_tasks(now) {
            // Judged by its most promising replica: two slow replicas are no better than one.
            if t.live.len() >= MAX_SATURATION_LIVE || !self.may_copy(&t) {
                continue;
            }
            let r = t.best;
            let Some((projected, elapsed)) = self.projection(now, &r) else {
                continue;
            };
            let speed = self.replica_speed(&r).unwrap_or(1.0);
            let est = self.est_cpu(t.seq, t.ti);
            let expected = est.map(|e| e / speed);
            let median = *medians
                .entry(t.seq)
                .or_insert_with(|| self.jobs.get(&t.seq).and_then(|j| median(&j.durations)));
            let slow = match (expected, median) {
                (Some(e), Some(m)) => projected >= factor * e && projected >= factor * m,
                (Some(e), None) => projected >= factor * e,
                (None, Some(m)) => projected >= factor * m,
                (None, None) => false,
            };
            if !slow {
                continue;
            }
            // Faster than it turns out to be, not than its benchmark promised: a straggler is
            // usually a machine that benchmarked well and then slowed down.
            let observed = est.map_or(speed, |e| e / projected).min(speed);
            let Some(w) = self.pick_worker(t.seq, t.ti, Pick::FasterThan(observed)) else {
                continue;
            };
            // Worth it only if the faster worker is expected to finish first.
            if let Some(est) = est {
                let kind = &self.jobs[&t.seq].job.tasks()[t.ti].kind;
                let wk = &self.workers[&w];
                let new =
                    est / expected_speed(wk.hardware.as_ref(), self.history.get(&w), Some(kind));
                if new >= projected - elapsed {
                    continue;
                }
            }
            let worker = self.replicas[&r].worker.clone();
            let cause = ReissueCause::Straggler {
                worker,
                elapsed: Duration::from_secs_f64(elapsed),
                expected: Duration::from_secs_f64(expected.or(median).unwrap_or(0.0)),
            };
            self.start_replica(
                now,
                t.seq,
                t.ti,
                w,
                Extra::Monitor,
                Some(AssignReason::Reissue(cause)),
            );
        }
    }

    /// `speculative`: once 75% of a job's tasks are done, a task running longer than 1.5x the
    /// median of the finished ones gets one copy on any free worker.
    fn speculate(&mut self, now: Instant) {
        let mut medians: std::collections::HashMap<u64, Option<f64>> = Default::default();
        for t in self.running_tasks(now) {
            if t.live.len() != 1 {
                continue;
            }
            let Some(job) = self.jobs.get(&t.seq) else {
                continue;
            };
            let n = job.tasks.len() as f64;
            if (job.done as f64) < SPECULATIVE_AFTER * n {
                continue;
            }
            let Some(m) = *medians
                .entry(t.seq)
                .or_insert_with(|| median(&job.durations))
            else {
                continue;
            };
            let copied = job.tasks[t.ti].replicas.iter().any(|r| {
                self.replicas
                    .get(r)
                    .is_some_and(|x| x.extra == Extra::Speculative)
            });
            let elapsed = now
                .saturating_duration_since(self.replicas[&t.live[0]].started)
                .as_secs_f64();
            if copied || elapsed <= SPECULATIVE_FACTOR * m {
                continue;
            }
            if let Some(w) = self.pick_worker(t.seq, t.ti, Pick::Any) {
                self.start_replica(
                    now,
                    t.seq,
                    t.ti,
                    w,
                    Extra::Speculative,
                    Some(AssignReason::Speculative),
                );
            }
        }
    }

    // ----- deadlines (`deadline` policy) -----

    /// Gives a new replica its deadline under the `deadline` policy: 4x its task's estimate.
    pub(super) fn set_deadline(&mut self, now: Instant, r: ReplicaId) {
        if self.cfg.policy != Policy::Deadline {
            return;
        }
        let Some(rep) = self.replicas.get(&r) else {
            return;
        };
        let est = self
            .est_cpu(rep.job, rep.task)
            .unwrap_or(DEFAULT_DEADLINE_EST_S);
        let at = now + Duration::from_secs_f64(DEADLINE_FACTOR * est);
        if let Some(rep) = self.replicas.get_mut(&r) {
            rep.deadline = Some(at);
        }
        self.deadlines.insert((at, r));
    }

    /// The replica's deadline passed: it stops counting as running (it stays attached and its
    /// result still counts if it comes first), and a task left with none is reissued.
    pub(super) fn expire(&mut self, r: ReplicaId) {
        let Some(rep) = self.replicas.get_mut(&r) else {
            return;
        };
        rep.expired = true;
        let (seq, ti, worker, started, at) = (
            rep.job,
            rep.task,
            rep.worker.clone(),
            rep.started,
            rep.deadline,
        );
        if self.live_replicas(seq, ti) == 0
            && let Some(task) = self.jobs.get_mut(&seq).map(|j| &mut j.tasks[ti])
            && !task.done
        {
            let deadline = at.map_or(Duration::ZERO, |at| at.saturating_duration_since(started));
            task.pending_cause
                .get_or_insert(ReissueCause::DeadlinePassed { worker, deadline });
            self.orphaned.push((seq, ti));
        }
        self.refresh_task(seq, ti);
    }
}

/// Median of a list of durations, if any.
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}
