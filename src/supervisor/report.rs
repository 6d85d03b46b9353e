//! What the supervisor tells operators about a job: its summary and its report (makespan,
//! replicas, reissues and why, execution time and cost per worker, class, outcome and reason,
//! the critical tasks and why, the tasks not needed), as JSON over HTTP and as a human table.
//! Shared by the HTTP API, `submit --wait`, `demo` and the benches. Pure data, arithmetic and
//! formatting: no I/O (the store reads the rows, the driver supplies the job's plan).
//!
//! Cost is charged on the CPU time a replica actually used, as its worker measured it, times the
//! rate of the worker's capacity class when the replica was assigned; never on wall time, which
//! counts time paused for the owner or starved by the owner's programs. A replica that never
//! reported a CPU time (cancelled, lost, still running) is not charged; the report counts those
//! and the time they were assigned, an upper bound on the CPU they may have used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::proto::{TaskId, WorkerId};
use crate::sched::criticality::Plan;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub name: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub submitted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    pub tasks: u32,
    pub tasks_done: u32,
}

impl JobSummary {
    pub fn is_finished(&self) -> bool {
        self.state != "running"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reissue {
    pub task: String,
    /// The worker that got the new replica.
    pub worker: String,
    pub at_ms: u64,
    /// The cause's label (`worker_lost`, `straggler`, `stalled`, `deadline`, ...); `reissue`
    /// for a replica recorded before causes were kept.
    #[serde(default)]
    pub cause: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerCost {
    pub worker: String,
    pub name: String,
    pub replicas: u32,
    /// Replicas whose result was their task's first.
    pub won: u32,
    /// Execution time: as the worker reported it, else as the supervisor saw it assigned.
    pub exec_ms: u64,
    /// CPU time the worker reported.
    pub cpu_ms: u64,
    /// `cpu_ms` charged at each replica's rate.
    pub cost: f64,
}

/// What a group of replicas cost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CostLine {
    pub replicas: u32,
    /// CPU time reported by the workers.
    pub cpu_ms: u64,
    /// Credits: `cpu_ms` of each replica times its rate.
    pub cost: f64,
    /// Replicas among them that reported no CPU time (not charged)...
    pub unmeasured: u32,
    /// ...and how long they were assigned, an upper bound on the CPU they used.
    pub unmeasured_ms: u64,
}

impl CostLine {
    fn add(&mut self, r: &ReplicaRow, assigned_ms: u64) {
        self.replicas += 1;
        match r.cpu_ms {
            Some(cpu) => {
                self.cpu_ms += cpu;
                self.cost += r.charge();
            }
            None => {
                self.unmeasured += 1;
                self.unmeasured_ms += assigned_ms;
            }
        }
    }
}

/// A task the supervisor planned as critical, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalTask {
    pub task: String,
    /// Replicas planned from the start (1 when the redundancy budget left it out).
    pub planned_replicas: u32,
    /// "gates 16 tasks", "critical path", "heaviest memory: 2048 MB", ...
    pub reasons: Vec<String>,
}

/// One replica as the store recorded it: the input of [`Report::build`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaRow {
    pub task: String,
    pub worker: String,
    pub worker_name: String,
    /// Credits per CPU-second, the rate of `class` at assignment.
    pub rate: f64,
    /// `high`, `standard`, `low`; `None` for replicas recorded before classes were kept.
    pub class: Option<String>,
    /// `first`, `redundant`, `saturation`, `speculative` or `reissue`.
    pub reason: String,
    /// A reissue's cause label.
    pub cause: Option<String>,
    pub detail: Option<String>,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// `won`, `late`, `failed`, `cancelled`, `lost`; `None` while it runs.
    pub outcome: Option<String>,
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
}

impl ReplicaRow {
    /// What this replica is charged: its CPU seconds times its rate (nothing without a CPU time).
    pub fn charge(&self) -> f64 {
        self.cpu_ms
            .map_or(0.0, |cpu| cpu as f64 / 1000.0 * self.rate)
    }

    /// The [`Report::cost_by_outcome`] key: `won`, `losers` (cancelled, or finished after
    /// another replica won), `lost`, `failed`, `running`.
    fn outcome_key(&self) -> &'static str {
        match self.outcome.as_deref() {
            Some("won") => "won",
            Some("agreed") => "agreed",
            Some("dissent") => "rejected",
            Some("candidate") => "unjudged",
            Some("late" | "cancelled") => "losers",
            Some("lost") => "lost",
            Some("failed") => "failed",
            _ => "running",
        }
    }
}

/// Keys of [`Report::cost_by_outcome`], always present. For quorum tasks: `won` gave the
/// agreed output, `agreed` agreed with it, `rejected` did not, `unjudged` await a quorum (or
/// never got one: the job ended first).
pub const OUTCOMES: [&str; 8] = [
    "won", "agreed", "rejected", "unjudged", "losers", "lost", "failed", "running",
];
/// Keys of [`Report::cost_by_reason`], always present: why each replica was started.
pub const ASSIGN_REASONS: [&str; 5] =
    ["first", "redundant", "saturation", "speculative", "reissue"];
/// Keys of [`Report::reissues_by_cause`], always present: the labels of
/// [`crate::sched::ReissueCause`] (a test checks they match).
pub const REISSUE_CAUSES: [&str; 9] = [
    "worker_lost",
    "owner_active",
    "failed",
    "dropped",
    "not_stored",
    "straggler",
    "stalled",
    "deadline",
    "left",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub makespan_ms: u64,
    pub replicas_started: u32,
    pub reissued: u32,
    pub reissues: Vec<Reissue>,
    pub workers: Vec<WorkerCost>,
    /// Credits: CPU seconds times the rate of the worker's class (a CPU-second on a `standard`
    /// worker costs one at the default rates).
    pub cost: f64,
    /// By capacity class at assignment: `high`, `standard`, `low` (always present), and
    /// `unknown` for replicas recorded before classes were kept.
    #[serde(default)]
    pub cost_by_class: BTreeMap<String, CostLine>,
    /// By how each replica ended: see [`OUTCOMES`].
    #[serde(default)]
    pub cost_by_outcome: BTreeMap<String, CostLine>,
    /// By why each replica was started: see [`ASSIGN_REASONS`]. `saturation` and `speculative`
    /// are what speed cost beyond the job's own replicas.
    #[serde(default)]
    pub cost_by_reason: BTreeMap<String, CostLine>,
    /// Replicas that reported no CPU time, and are not charged.
    #[serde(default)]
    pub unmeasured_replicas: u32,
    /// How long those were assigned: an upper bound on their CPU time.
    #[serde(default)]
    pub unmeasured_ms: u64,
    /// Reissues by cause: see [`REISSUE_CAUSES`].
    #[serde(default)]
    pub reissues_by_cause: BTreeMap<String, u32>,
    /// Tasks the supervisor's criticality analysis names, with why and how many replicas it
    /// planned (in the job's task order).
    #[serde(default)]
    pub critical_tasks: Vec<CriticalTask>,
    /// For a job that completed before all its tasks did (`min_complete`, `optional`): the tasks
    /// it did not need.
    #[serde(default)]
    pub not_needed: Vec<String>,
    /// For a job with quorum tasks: how their outputs were judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

/// One stored output of a quorum task: an input of [`Validation::build`].
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRow {
    pub task: TaskId,
    pub worker: WorkerId,
    pub worker_name: String,
    /// SHA-256 of its canonical JSON.
    pub digest: String,
    /// `agreed`, `dissent`, or none while its task has no quorum.
    pub verdict: Option<String>,
}

/// How a job's quorum tasks' outputs were judged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Validation {
    /// Quorum tasks whose output was agreed.
    pub tasks_agreed: u32,
    /// Outputs that agreed with their task's quorum, that did not, and that wait for one.
    pub outputs_agreed: u32,
    pub outputs_rejected: u32,
    pub outputs_waiting: u32,
    /// Each quorum task that has outputs, in the order its first arrived.
    pub tasks: Vec<ValidatedTask>,
    /// Workers with an output a quorum of this job rejected, most rejections first.
    pub rejected_workers: Vec<RejectedWorker>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ValidatedTask {
    pub task: String,
    /// SHA-256 of the agreed output's canonical JSON, once agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreed_digest: Option<String>,
    /// Worker ids, in the order their outputs arrived.
    pub agreed_by: Vec<String>,
    pub rejected: Vec<String>,
    pub waiting: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RejectedWorker {
    pub worker: String,
    pub name: String,
    /// Its outputs rejected in this job.
    pub rejected: u32,
    /// Its record against every quorum so far, and whether it is flagged for it (gets no
    /// quorum tasks): filled in by the supervisor.
    pub agreed_total: u32,
    pub disagreed_total: u32,
    pub flagged: bool,
}

impl Validation {
    /// From a job's stored quorum outputs, in the order they were stored; `None` if it has
    /// none.
    pub fn build(rows: &[CandidateRow]) -> Option<Validation> {
        if rows.is_empty() {
            return None;
        }
        let mut v = Validation::default();
        let mut at: BTreeMap<&TaskId, usize> = BTreeMap::new();
        let mut rejected: BTreeMap<&WorkerId, RejectedWorker> = BTreeMap::new();
        for r in rows {
            let i = *at.entry(&r.task).or_insert_with(|| {
                v.tasks.push(ValidatedTask {
                    task: r.task.0.clone(),
                    ..ValidatedTask::default()
                });
                v.tasks.len() - 1
            });
            let t = &mut v.tasks[i];
            match r.verdict.as_deref() {
                Some("agreed") => {
                    v.outputs_agreed += 1;
                    t.agreed_digest.get_or_insert_with(|| r.digest.clone());
                    t.agreed_by.push(r.worker.0.clone());
                }
                Some(_) => {
                    v.outputs_rejected += 1;
                    t.rejected.push(r.worker.0.clone());
                    let w = rejected.entry(&r.worker).or_insert_with(|| RejectedWorker {
                        worker: r.worker.0.clone(),
                        name: r.worker_name.clone(),
                        ..RejectedWorker::default()
                    });
                    w.rejected += 1;
                }
                None => {
                    v.outputs_waiting += 1;
                    t.waiting.push(r.worker.0.clone());
                }
            }
        }
        v.tasks_agreed = v.tasks.iter().filter(|t| !t.agreed_by.is_empty()).count() as u32;
        v.rejected_workers = rejected.into_values().collect();
        v.rejected_workers
            .sort_by(|a, b| b.rejected.cmp(&a.rejected).then(a.worker.cmp(&b.worker)));
        Some(v)
    }
}

impl Report {
    /// The report from a job's replica records (in the order they started). `now_ms` stands in
    /// for the end of a job still running.
    pub fn build(summary: JobSummary, rows: &[ReplicaRow], now_ms: u64) -> Report {
        let end_of_job = summary.finished_ms.unwrap_or(now_ms);
        let mut workers: BTreeMap<String, WorkerCost> = BTreeMap::new();
        let mut reissues = Vec::new();
        let line = |keys: &[&str]| -> BTreeMap<String, CostLine> {
            keys.iter()
                .map(|k| ((*k).to_owned(), CostLine::default()))
                .collect()
        };
        let mut by_class = line(&["high", "standard", "low"]);
        let mut by_outcome = line(&OUTCOMES);
        let mut by_reason = line(&ASSIGN_REASONS);
        let mut by_cause: BTreeMap<String, u32> = REISSUE_CAUSES
            .iter()
            .map(|c| ((*c).to_owned(), 0))
            .collect();
        let (mut unmeasured_replicas, mut unmeasured_ms) = (0, 0);
        for r in rows {
            // The supervisor's own clock, from assignment to the end it saw (or to the job's
            // end, or now, for a replica still open).
            let assigned_ms = r
                .ended_ms
                .unwrap_or(end_of_job)
                .saturating_sub(r.started_ms);
            if r.reason == "reissue" {
                let cause = r.cause.clone().unwrap_or_else(|| "reissue".to_owned());
                *by_cause.entry(cause.clone()).or_default() += 1;
                reissues.push(Reissue {
                    task: r.task.clone(),
                    worker: r.worker.clone(),
                    at_ms: r.started_ms,
                    cause,
                    why: r.detail.clone().unwrap_or_default(),
                });
            }
            let class = r.class.as_deref().unwrap_or("unknown");
            by_class
                .entry(class.to_owned())
                .or_default()
                .add(r, assigned_ms);
            by_outcome
                .entry(r.outcome_key().to_owned())
                .or_default()
                .add(r, assigned_ms);
            by_reason
                .entry(r.reason.clone())
                .or_default()
                .add(r, assigned_ms);
            if r.cpu_ms.is_none() {
                unmeasured_replicas += 1;
                unmeasured_ms += assigned_ms;
            }
            let w = workers
                .entry(r.worker.clone())
                .or_insert_with(|| WorkerCost {
                    worker: r.worker.clone(),
                    name: r.worker_name.clone(),
                    ..WorkerCost::default()
                });
            w.replicas += 1;
            w.won += u32::from(r.outcome.as_deref() == Some("won"));
            w.exec_ms += r.wall_ms.unwrap_or(assigned_ms);
            w.cpu_ms += r.cpu_ms.unwrap_or(0);
            w.cost += r.charge();
        }
        Report {
            makespan_ms: end_of_job.saturating_sub(summary.submitted_ms),
            replicas_started: rows.len() as u32,
            reissued: reissues.len() as u32,
            reissues,
            cost: rows.iter().map(ReplicaRow::charge).sum(),
            workers: workers.into_values().collect(),
            cost_by_class: by_class,
            cost_by_outcome: by_outcome,
            cost_by_reason: by_reason,
            unmeasured_replicas,
            unmeasured_ms,
            reissues_by_cause: by_cause,
            critical_tasks: Vec::new(),
            not_needed: Vec::new(),
            validation: None,
            summary,
        }
    }

    /// Adds what the job's plan says: its critical tasks and why, and, for a job that completed
    /// with tasks left undone (`min_complete`, `optional`), those tasks. `done` are the tasks
    /// with a stored result.
    pub fn with_plan(mut self, job: &Job, plan: &Plan, done: &BTreeSet<TaskId>) -> Report {
        self.critical_tasks = job
            .tasks()
            .iter()
            .zip(&plan.tasks)
            .filter(|(_, p)| !p.reasons.is_empty())
            .map(|(t, p)| CriticalTask {
                task: t.id.0.clone(),
                planned_replicas: p.replicas,
                reasons: p.reasons.iter().map(ToString::to_string).collect(),
            })
            .collect();
        self.not_needed = if self.summary.state == "completed" {
            job.tasks()
                .iter()
                .filter(|t| !done.contains(&t.id))
                .map(|t| t.id.0.clone())
                .collect()
        } else {
            Vec::new()
        };
        self
    }

    /// The report as a table for people.
    pub fn to_text(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(out, "job {} ({}): {}", s.job_id, s.name, s.state);
        if let Some(e) = &s.error {
            let _ = writeln!(out, "  error: {e}");
        }
        let _ = writeln!(
            out,
            "  tasks {}/{}   makespan {:.3} s   replicas started {}   reissued {}   cost {:.2} credits",
            s.tasks_done,
            s.tasks,
            self.makespan_ms as f64 / 1000.0,
            self.replicas_started,
            self.reissued,
            self.cost
        );
        let credits = |l: &CostLine| format!("{:.2} ({})", l.cost, replicas(l.replicas));
        let join = |m: &BTreeMap<String, CostLine>, keys: &[&str]| {
            keys.iter()
                .filter_map(|k| m.get(*k).map(|l| format!("{k} {}", credits(l))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut classes: Vec<&str> = vec!["high", "standard", "low"];
        if self.cost_by_class.contains_key("unknown") {
            classes.push("unknown");
        }
        let _ = writeln!(
            out,
            "  cost by class: {}",
            join(&self.cost_by_class, &classes)
        );
        let _ = writeln!(
            out,
            "  cost by outcome: {}",
            join(&self.cost_by_outcome, &OUTCOMES)
        );
        let _ = writeln!(
            out,
            "  cost by reason: {}",
            join(&self.cost_by_reason, &ASSIGN_REASONS)
        );
        if self.unmeasured_replicas > 0 {
            let _ = writeln!(
                out,
                "  not charged: {} reported no CPU time (assigned {:.3} s in all)",
                replicas(self.unmeasured_replicas),
                self.unmeasured_ms as f64 / 1000.0
            );
        }
        let causes: Vec<String> = self
            .reissues_by_cause
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if !causes.is_empty() {
            let _ = writeln!(out, "  reissues by cause: {}", causes.join(", "));
        }
        if !self.critical_tasks.is_empty() {
            let _ = writeln!(out, "  critical tasks:");
            for c in &self.critical_tasks {
                let _ = writeln!(
                    out,
                    "    {} ({} planned): {}",
                    c.task,
                    replicas(c.planned_replicas),
                    c.reasons.join(", ")
                );
            }
        }
        if !self.not_needed.is_empty() {
            let _ = writeln!(
                out,
                "  not needed (the job completed without them): {}",
                self.not_needed.join(", ")
            );
        }
        if let Some(v) = &self.validation {
            let _ = writeln!(
                out,
                "  validation: {} quorum task(s) agreed; outputs agreed {}, rejected {}, waiting {}",
                v.tasks_agreed, v.outputs_agreed, v.outputs_rejected, v.outputs_waiting
            );
            for w in &v.rejected_workers {
                let _ = writeln!(
                    out,
                    "    rejected: {} ({}) {} output(s) here; {} disagreed, {} agreed in all{}",
                    w.worker,
                    w.name,
                    w.rejected,
                    w.disagreed_total,
                    w.agreed_total,
                    if w.flagged {
                        "; FLAGGED: gets no quorum tasks"
                    } else {
                        ""
                    }
                );
            }
        }
        if !self.reissues.is_empty() {
            let _ = writeln!(out, "  reissues:");
            for r in &self.reissues {
                let at = r.at_ms.saturating_sub(s.submitted_ms) as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "    +{at:.3} s  task {} -> {}: {}",
                    r.task, r.worker, r.why
                );
            }
        }
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>5} {:>10} {:>10} {:>8}",
            "worker", "replicas", "won", "exec s", "cpu s", "cost"
        );
        for w in &self.workers {
            let label = if w.name.is_empty() || w.name == w.worker {
                w.worker.clone()
            } else {
                format!("{} ({})", w.name, w.worker)
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>8} {:>5} {:>10.3} {:>10.3} {:>8.2}",
                label,
                w.replicas,
                w.won,
                w.exec_ms as f64 / 1000.0,
                w.cpu_ms as f64 / 1000.0,
                w.cost
            );
        }
        out
    }
}

/// "1 replica", "3 replicas".
fn replicas(n: u32) -> String {
    format!("{n} replica{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, TaskSpec};
    use crate::sched::{CapacityClass, ClassRates, ReissueCause, criticality};

    fn summary(state: &str) -> JobSummary {
        JobSummary {
            job_id: "job-1".into(),
            name: "j".into(),
            state: state.into(),
            error: None,
            submitted_ms: 1_000,
            finished_ms: Some(20_000),
            tasks: 3,
            tasks_done: 2,
        }
    }

    /// A replica on a worker of `class` at `rates`, that ran `wall_ms` and used `cpu_ms`.
    fn row(
        task: &str,
        class: CapacityClass,
        rates: &ClassRates,
        reason: &str,
        outcome: Option<&str>,
        wall_ms: Option<u64>,
        cpu_ms: Option<u64>,
    ) -> ReplicaRow {
        ReplicaRow {
            task: task.into(),
            worker: format!("w-{class}"),
            worker_name: class.to_string(),
            rate: class.rate(rates),
            class: Some(class.to_string()),
            reason: reason.into(),
            cause: (reason == "reissue").then(|| "straggler".to_owned()),
            detail: None,
            started_ms: 2_000,
            ended_ms: outcome.map(|_| 2_000 + wall_ms.unwrap_or(3_000)),
            outcome: outcome.map(str::to_owned),
            wall_ms,
            cpu_ms,
        }
    }

    fn rows(rates: &ClassRates) -> Vec<ReplicaRow> {
        use CapacityClass::*;
        vec![
            // Paused half its time for the owner: 4 s of wall time, 2 s of CPU.
            row(
                "a",
                High,
                rates,
                "first",
                Some("won"),
                Some(4_000),
                Some(2_000),
            ),
            row(
                "a",
                Low,
                rates,
                "saturation",
                Some("late"),
                Some(6_000),
                Some(5_500),
            ),
            row(
                "b",
                Standard,
                rates,
                "first",
                Some("failed"),
                Some(1_000),
                Some(900),
            ),
            row(
                "b",
                Standard,
                rates,
                "reissue",
                Some("won"),
                Some(3_000),
                Some(2_900),
            ),
            // Cancelled and lost replicas report no CPU time.
            row("c", High, rates, "redundant", Some("cancelled"), None, None),
            row("c", Low, rates, "first", Some("lost"), None, None),
        ]
    }

    #[test]
    fn cost_is_the_cpu_seconds_of_every_replica_times_its_class_rate() {
        let rates = ClassRates {
            high: 3.0,
            standard: 1.5,
            low: 0.25,
        };
        let rows = rows(&rates);
        let r = Report::build(summary("completed"), &rows, 99_000);
        let class = |r: &ReplicaRow| match r.class.as_deref() {
            Some("high") => CapacityClass::High,
            Some("low") => CapacityClass::Low,
            _ => CapacityClass::Standard,
        };
        let expected: f64 = rows
            .iter()
            .map(|r| r.cpu_ms.unwrap_or(0) as f64 / 1000.0 * class(r).rate(&rates))
            .sum();
        // 2 x 3 + 5.5 x 0.25 + 0.9 x 1.5 + 2.9 x 1.5
        assert!((expected - 13.075).abs() < 1e-9);
        assert!((r.cost - expected).abs() < 1e-9, "{} != {expected}", r.cost);
        // Negative controls: charging wall time, or one rate for every class, would differ.
        let on_wall: f64 = rows
            .iter()
            .map(|r| r.wall_ms.unwrap_or(0) as f64 / 1000.0 * class(r).rate(&rates))
            .sum();
        let one_rate: f64 = rows
            .iter()
            .map(|r| r.cpu_ms.unwrap_or(0) as f64 / 1000.0 * rates.standard)
            .sum();
        assert!((r.cost - on_wall).abs() > 1.0 && (r.cost - one_rate).abs() > 1.0);
        // Every breakdown adds up to the total.
        for by in [&r.cost_by_class, &r.cost_by_outcome, &r.cost_by_reason] {
            let sum: f64 = by.values().map(|l| l.cost).sum();
            assert!((sum - r.cost).abs() < 1e-9, "{by:?}");
            assert_eq!(by.values().map(|l| l.replicas).sum::<u32>(), 6);
        }
        let workers: f64 = r.workers.iter().map(|w| w.cost).sum();
        assert!((workers - r.cost).abs() < 1e-9);
        assert!((r.cost_by_class["high"].cost - 6.0).abs() < 1e-9);
        assert!((r.cost_by_class["low"].cost - 1.375).abs() < 1e-9);
        assert!((r.cost_by_class["standard"].cost - 5.7).abs() < 1e-9);
        // Won: a and the reissued b; losers: the late saturation copy and the cancelled one.
        assert!((r.cost_by_outcome["won"].cost - 10.35).abs() < 1e-9);
        assert_eq!(r.cost_by_outcome["losers"].replicas, 2);
        assert!((r.cost_by_outcome["losers"].cost - 1.375).abs() < 1e-9);
        assert!((r.cost_by_outcome["failed"].cost - 1.35).abs() < 1e-9);
        assert_eq!(r.cost_by_outcome["lost"].replicas, 1);
        // What speed cost, shown apart: the saturation copy.
        assert!((r.cost_by_reason["saturation"].cost - 1.375).abs() < 1e-9);
        assert_eq!(r.cost_by_reason["speculative"], CostLine::default());
        // The two replicas without a CPU time were assigned 3 s each: not charged, counted.
        assert_eq!((r.unmeasured_replicas, r.unmeasured_ms), (2, 6_000));
        assert_eq!(r.reissues_by_cause["straggler"], 1);
        assert_eq!(r.reissues_by_cause["deadline"], 0);
        let text = r.to_text();
        assert!(text.contains("saturation 1.38 (1 replica)"), "{text}");
        assert!(text.contains("reissues by cause: straggler 1"), "{text}");
    }

    #[test]
    fn the_report_names_critical_tasks_and_the_tasks_an_early_completion_did_not_need() {
        let task = |id: &str| TaskSpec::new(id, "spin", serde_json::json!({ "ms": 1 }));
        let spec = JobSpec {
            name: "j".into(),
            tasks: vec![
                TaskSpec {
                    critical: Some(true),
                    ..task("a")
                },
                task("b"),
                TaskSpec {
                    optional: true,
                    ..task("c")
                },
            ],
            min_complete: Some(2),
            ..Default::default()
        };
        let job = crate::job::validate(spec, |_| true).unwrap();
        let plan = criticality::plan(&job, 2, 0.25);
        let done = BTreeSet::from([TaskId::from("a"), TaskId::from("b")]);
        let r = Report::build(summary("completed"), &[], 0).with_plan(&job, &plan, &done);
        let expected: Vec<CriticalTask> = job
            .tasks()
            .iter()
            .zip(&plan.tasks)
            .filter(|(_, p)| !p.reasons.is_empty())
            .map(|(t, p)| CriticalTask {
                task: t.id.0.clone(),
                planned_replicas: p.replicas,
                reasons: p.reasons.iter().map(ToString::to_string).collect(),
            })
            .collect();
        assert_eq!(r.critical_tasks, expected);
        let a = r.critical_tasks.iter().find(|c| c.task == "a").unwrap();
        assert_eq!(a.planned_replicas, 2);
        assert!(a.reasons.contains(&"critical in the manifest".to_owned()));
        assert_eq!(r.not_needed, vec!["c".to_owned()]);
        let text = r.to_text();
        assert!(
            text.contains("not needed (the job completed without them): c"),
            "{text}"
        );
        // A job that failed did not complete early: its undone tasks are not "not needed".
        let failed = Report::build(summary("failed"), &[], 0).with_plan(&job, &plan, &done);
        assert!(failed.not_needed.is_empty());
    }

    #[test]
    fn every_reissue_cause_of_the_scheduler_has_a_key_in_the_report() {
        use crate::proto::{ActivityKind, WorkerId};
        use crate::sched::LossCause;
        use std::time::Duration;
        let w = WorkerId::from("w");
        let causes = [
            ReissueCause::WorkerLost {
                worker: w.clone(),
                cause: LossCause::Disconnected,
            },
            ReissueCause::OwnerActive {
                worker: w.clone(),
                kind: ActivityKind::Mouse,
            },
            ReissueCause::Failed {
                worker: w.clone(),
                error: String::new(),
            },
            ReissueCause::Dropped { worker: w.clone() },
            ReissueCause::NotStored {
                worker: w.clone(),
                error: String::new(),
            },
            ReissueCause::Straggler {
                worker: w.clone(),
                elapsed: Duration::ZERO,
                expected: Duration::ZERO,
            },
            ReissueCause::Stalled {
                idle: Duration::ZERO,
            },
            ReissueCause::DeadlinePassed {
                worker: w.clone(),
                deadline: Duration::ZERO,
            },
            ReissueCause::Left { worker: w },
        ];
        let labels: BTreeSet<&str> = causes.iter().map(ReissueCause::label).collect();
        assert_eq!(labels, REISSUE_CAUSES.into_iter().collect());
        // A cause added to the scheduler stops this from compiling until it is listed above.
        for c in &causes {
            match c {
                ReissueCause::WorkerLost { .. }
                | ReissueCause::OwnerActive { .. }
                | ReissueCause::Failed { .. }
                | ReissueCause::Dropped { .. }
                | ReissueCause::NotStored { .. }
                | ReissueCause::Straggler { .. }
                | ReissueCause::Stalled { .. }
                | ReissueCause::DeadlinePassed { .. }
                | ReissueCause::Left { .. } => {}
            }
        }
    }
}
