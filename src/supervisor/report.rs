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
use crate::proto::TaskId;
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
            Some("late" | "cancelled") => "losers",
            Some("lost") => "lost",
            Some("failed") => "failed",
            _ => "running",
        }
    }
}

/// Keys of [`Report::cost_by_outcome`], always present.
pub const OUTCOMES: [&str; 5] = ["won", "losers", "lost", "failed", "running"];
/// Keys of [`Report::cost_by_reason`], always present: why each replica was started.
pub const ASSIGN_REASONS: [&str; 5] =
    ["first", "redundant", "saturation", "speculative", "reissue"];
/// Keys of [`Report::reissues_by_cause`], always present: the labels of
/// [`crate::sched::ReissueCause`] (a test checks they match).
pub const REISSUE_CAUSES: [&str; 8] = [
    "worker_lost",
    "owner_active",
    "failed",
    "dropped",
    "not_stored",
    "straggler",
    "stalled",
    "deadline",
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
        let credits = |l: &CostLine| format!("{:.2} ({} replicas)", l.cost, l.replicas);
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
                "  not charged: {} replicas reported no CPU time (assigned {:.3} s in all)",
                self.unmeasured_replicas,
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
                    "    {} ({} replica{} planned): {}",
                    c.task,
                    c.planned_replicas,
                    if c.planned_replicas == 1 { "" } else { "s" },
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
