//! Figures of a run: makespan against the ideal run and the lower bound, task times, what the
//! replicas cost and who paid for what. Pure functions of the run logs; the JSON is built from
//! ordered maps only, so one seed always prints the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::engine::{ReplicaOutcome, RunLog};
use super::world::World;
use crate::sched::JobOutcome;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub scenario: String,
    pub policy: String,
    pub seed: u64,
    pub workers: usize,
    pub tasks: usize,
    /// Submission to the job's end.
    pub makespan_s: f64,
    /// The same job on the same pool at nominal speeds, with no churn, crashes, freezes or
    /// stragglers, under the same policy.
    pub ideal_makespan_s: f64,
    pub x_ideal: f64,
    /// Max of total work over total capacity and the critical path at the fastest speed.
    pub lower_bound_s: f64,
    /// CPU spent on replicas that did not win, as a percentage of the winners' CPU.
    pub replica_cpu_percent: f64,
    pub winners_cpu_s: f64,
    pub losers_cpu_s: f64,
    /// Per task, first assignment to done.
    pub p50_task_s: f64,
    pub p99_task_s: f64,
    pub reissues: Reissues,
    /// Every assignment by reason (`first`, `redundant`, `saturation`, `speculative`, causes).
    pub assigns: BTreeMap<String, u64>,
    pub replicas: BTreeMap<String, u64>,
    /// Sum over replicas of CPU seconds times the rate of the assignment.
    pub cost: f64,
    pub cost_by_class: BTreeMap<String, f64>,
    pub cost_by_outcome: BTreeMap<String, f64>,
    /// Workers the scheduler declared lost, by cause.
    pub workers_lost: BTreeMap<String, u64>,
    /// Tasks not completed when the run ended (0 unless the job failed).
    pub tasks_lost: usize,
    pub job_outcome: String,
    pub events: u64,
    pub ideal_events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reissues {
    pub total: u64,
    pub by_cause: BTreeMap<String, u64>,
}

/// Rounds to a millionth: figures stay readable and the bytes stay the same.
fn r6(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        x
    }
}

/// Nearest-rank percentile of unsorted values (0 for none).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn metrics(world: &World, run: &RunLog, ideal: &RunLog) -> Metrics {
    let mut winners = 0.0;
    let mut losers = 0.0;
    let mut cost = 0.0;
    let mut by_class: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_outcome: BTreeMap<String, f64> = ["won", "cancelled", "lost"]
        .into_iter()
        .map(|k| (k.to_owned(), 0.0))
        .collect();
    let mut replicas: BTreeMap<String, u64> = ["won", "cancelled", "lost"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    for r in &run.replicas {
        let c = r.cpu_s * r.rate;
        cost += c;
        *by_class.entry(r.class.as_str().to_owned()).or_default() += c;
        *by_outcome.entry(r.outcome.as_str().to_owned()).or_default() += c;
        *replicas.entry(r.outcome.as_str().to_owned()).or_default() += 1;
        if r.outcome == ReplicaOutcome::Won {
            winners += r.cpu_s;
        } else {
            losers += r.cpu_s;
        }
    }
    let task_s: Vec<f64> = run
        .task_times
        .iter()
        .filter_map(|(a, d)| Some(d.as_ref()? - a.as_ref()?))
        .collect();
    let tasks_lost = run.task_times.iter().filter(|t| t.1.is_none()).count();
    let job_outcome = match &run.outcome {
        JobOutcome::Completed => "completed".to_owned(),
        JobOutcome::Failed { error, .. } => format!("failed: {error}"),
        JobOutcome::Cancelled => "cancelled".to_owned(),
    };
    let owned = |m: &BTreeMap<&'static str, u64>| -> BTreeMap<String, u64> {
        m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    Metrics {
        scenario: world.name.clone(),
        policy: run.policy.as_str().to_owned(),
        seed: run.seed,
        workers: world.workers.len(),
        tasks: world.tasks.len(),
        makespan_s: r6(run.makespan_s),
        ideal_makespan_s: r6(ideal.makespan_s),
        x_ideal: r6(if ideal.makespan_s > 0.0 {
            run.makespan_s / ideal.makespan_s
        } else {
            0.0
        }),
        lower_bound_s: r6(world.lower_bound_s()),
        replica_cpu_percent: r6(if winners > 0.0 {
            100.0 * losers / winners
        } else {
            0.0
        }),
        winners_cpu_s: r6(winners),
        losers_cpu_s: r6(losers),
        p50_task_s: r6(percentile(&task_s, 50.0)),
        p99_task_s: r6(percentile(&task_s, 99.0)),
        reissues: Reissues {
            total: run.reissues.values().sum(),
            by_cause: owned(&run.reissues),
        },
        assigns: owned(&run.assigns),
        replicas,
        cost: r6(cost),
        cost_by_class: by_class.into_iter().map(|(k, v)| (k, r6(v))).collect(),
        cost_by_outcome: by_outcome.into_iter().map(|(k, v)| (k, r6(v))).collect(),
        workers_lost: owned(&run.losses),
        tasks_lost,
        job_outcome,
        events: run.events,
        ideal_events: ideal.events,
    }
}

fn list(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Metrics {
    /// A short table for people.
    pub fn to_text(&self) -> String {
        let causes = if self.reissues.by_cause.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                self.reissues
                    .by_cause
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18}{v}\n"));
        row(
            "scenario",
            format!(
                "{} ({} workers, {} tasks), policy {}, seed {}",
                self.scenario, self.workers, self.tasks, self.policy, self.seed
            ),
        );
        row(
            "makespan",
            format!(
                "{:.1} s   ideal {:.1} s (x{:.2})   lower bound {:.1} s",
                self.makespan_s, self.ideal_makespan_s, self.x_ideal, self.lower_bound_s
            ),
        );
        row(
            "task time",
            format!(
                "p50 {:.1} s   p99 {:.1} s",
                self.p50_task_s, self.p99_task_s
            ),
        );
        row(
            "replica CPU",
            format!(
                "{:.1} % of the winners' {:.0} CPU-s",
                self.replica_cpu_percent, self.winners_cpu_s
            ),
        );
        row("reissues", format!("{}{causes}", self.reissues.total));
        row(
            "cost",
            format!(
                "{:.1}   by class: {}   by outcome: {}",
                self.cost,
                list(&self.cost_by_class),
                list(&self.cost_by_outcome)
            ),
        );
        row(
            "outcome",
            format!("{}, {} tasks lost", self.job_outcome, self.tasks_lost),
        );
        row(
            "events",
            format!("{} (ideal run {})", self.events, self.ideal_events),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
