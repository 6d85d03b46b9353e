//! `bench qos`: every scenario file of a directory under every policy, over a few seeds, as one
//! table (and a chart of makespan over ideal).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ScenarioSpec, SimError, Simulation, Source, charts, simulate};
use crate::sched::Policy;

/// The scenario whose idlegrid run `--gantt` draws.
pub const GANTT_SCENARIO: &str = "churn10-stragglers5";

/// One scenario under one policy, averaged over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QosRow {
    pub scenario: String,
    pub policy: String,
    pub seeds: u64,
    pub makespan_s: f64,
    pub ideal_makespan_s: f64,
    pub x_ideal: f64,
    pub p99_task_s: f64,
    pub replica_cpu_percent: f64,
    pub cost: f64,
    pub reissues: f64,
    /// Summed over the seeds (should be 0).
    pub tasks_lost: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QosTable {
    pub rows: Vec<QosRow>,
}

/// The `*.toml` files of `dir`, by name, each loaded and checked.
pub fn load_scenarios(dir: &Path) -> Result<Vec<ScenarioSpec>, SimError> {
    let io = |source| SimError::Io {
        file: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SimError::Flag {
            flag: "--scenarios".to_owned(),
            message: format!("{} holds no .toml scenario", dir.display()),
        });
    }
    files.iter().map(|f| ScenarioSpec::load(f)).collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

/// Runs every scenario under every policy for seeds `0..seeds`. Also returns the idlegrid run of
/// [`GANTT_SCENARIO`] with the first seed, if that scenario is among them.
pub fn run(
    scenarios: &[ScenarioSpec],
    seeds: u64,
) -> Result<(QosTable, Option<Simulation>), SimError> {
    let seeds = seeds.max(1);
    let mut rows = Vec::new();
    let mut gantt = None;
    for spec in scenarios {
        let source = Source::Scenario(Box::new(spec.clone()));
        for policy in Policy::ALL {
            let mut sims = Vec::new();
            for seed in 0..seeds {
                let sim = simulate(&source, policy, seed)?;
                sims.push(sim.metrics.clone());
                if seed == 0 && policy == Policy::Idlegrid && spec.name() == GANTT_SCENARIO {
                    gantt = Some(sim);
                }
            }
            rows.push(QosRow {
                scenario: spec.name().to_owned(),
                policy: policy.as_str().to_owned(),
                seeds,
                makespan_s: mean(sims.iter().map(|m| m.makespan_s)),
                ideal_makespan_s: mean(sims.iter().map(|m| m.ideal_makespan_s)),
                x_ideal: mean(sims.iter().map(|m| m.x_ideal)),
                p99_task_s: mean(sims.iter().map(|m| m.p99_task_s)),
                replica_cpu_percent: mean(sims.iter().map(|m| m.replica_cpu_percent)),
                cost: mean(sims.iter().map(|m| m.cost)),
                reissues: mean(sims.iter().map(|m| m.reissues.total as f64)),
                tasks_lost: sims.iter().map(|m| m.tasks_lost).sum(),
            });
        }
    }
    Ok((QosTable { rows }, gantt))
}

impl QosTable {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{:<22} {:<12} {:>11} {:>8} {:>10} {:>10} {:>10} {:>9}\n",
            "scenario",
            "policy",
            "makespan s",
            "x ideal",
            "p99 task s",
            "replica %",
            "cost",
            "reissues"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<22} {:<12} {:>11.1} {:>8.2} {:>10.1} {:>10.1} {:>10.0} {:>9.1}{}\n",
                r.scenario,
                r.policy,
                r.makespan_s,
                r.x_ideal,
                r.p99_task_s,
                r.replica_cpu_percent,
                r.cost,
                r.reissues,
                if r.tasks_lost > 0 {
                    format!("  ({} tasks lost)", r.tasks_lost)
                } else {
                    String::new()
                }
            ));
        }
        s
    }

    /// Grouped bars: a group per scenario, a bar per policy, makespan over the ideal run of
    /// `idlegrid` in that scenario (one yardstick per scenario, so bars compare across
    /// policies; each policy's own `x ideal` is in the table).
    pub fn write_chart(&self, path: &Path) -> Result<(), SimError> {
        let mut groups: Vec<String> = Vec::new();
        for r in &self.rows {
            if !groups.contains(&r.scenario) {
                groups.push(r.scenario.clone());
            }
        }
        let series: Vec<(String, Vec<f64>)> = Policy::ALL
            .iter()
            .map(|p| {
                let values = groups
                    .iter()
                    .map(|g| {
                        let row = |policy: &str| {
                            self.rows
                                .iter()
                                .find(|r| &r.scenario == g && r.policy == policy)
                        };
                        let yardstick =
                            row(Policy::Idlegrid.as_str()).map_or(f64::NAN, |r| r.ideal_makespan_s);
                        row(p.as_str()).map_or(0.0, |r| r.makespan_s / yardstick)
                    })
                    .collect();
                (p.as_str().to_owned(), values)
            })
            .collect();
        charts::grouped_bars(
            path,
            "Makespan by scenario and policy, over idlegrid's ideal run (no faults)",
            "makespan / ideal",
            &groups,
            &series,
            Some(1.0),
        )
    }
}
