//! The deterministic simulator: the real [`crate::sched::Scheduler`] (the code the supervisor
//! runs, with the policy as its parameter) on virtual time, against scripted volunteer workers
//! that churn, crash, freeze and straggle.
//!
//! - `scenario`: scenario files (TOML) and the seeded draw of a concrete world from one;
//! - `trace`: availability traces (CSV) and a generator of synthetic ones;
//! - `world`: the concrete world (workers, tasks, faults), its ideal twin and lower bound;
//! - `engine`: the discrete-event engine;
//! - `report`: the figures of a run (JSON and a table);
//! - `qos`: every scenario under every policy, as one table and chart.
//!
//! It does no I/O beyond reading the files it is given and writing the charts it is asked for,
//! and reads no clock: one seed, one result, byte for byte.

mod engine;
pub mod qos;
pub mod report;
pub mod scenario;
pub mod trace;
pub mod world;

use std::path::{Path, PathBuf};

pub use engine::{ReplicaOutcome, ReplicaRecord, RunLog};
pub use report::Metrics;
pub use scenario::ScenarioSpec;
pub use trace::TraceSpec;
pub use world::World;

use crate::chart::{BarOutcome, GanttBar, GanttRow};
use crate::sched::Policy;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// `message` is the TOML parser's, which names the line, column and field.
    #[error("{}: {message}", file.display())]
    Toml { file: PathBuf, message: String },
    #[error("{}{}: {field}: {message}", file.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Scenario {
        file: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
    },
    #[error("{} line {line}: {field}: {message}", file.display())]
    Csv {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
    #[error(
        "the job did not finish within the limit of {limit_h} h of virtual time ({done} of {total} \
         tasks done)"
    )]
    TimeLimit {
        limit_h: f64,
        done: usize,
        total: usize,
    },
    #[error(
        "the simulation is stuck {at_s:.1} s after submission: {why} ({done} of {total} tasks done)"
    )]
    Stuck {
        at_s: f64,
        why: String,
        done: usize,
        total: usize,
    },
    #[error("simulator: {0}")]
    Engine(String),
    #[error("chart {}: {message}", file.display())]
    Chart { file: PathBuf, message: String },
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Scenario(Box<ScenarioSpec>),
    Trace(Box<TraceSpec>),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Scenario(s) => s.name(),
            Source::Trace(t) => &t.name,
        }
    }

    /// The concrete world for a seed.
    pub fn world(&self, seed: u64) -> World {
        match self {
            Source::Scenario(s) => s.resolve(seed),
            Source::Trace(t) => t.resolve(seed),
        }
    }
}

/// The flags of `simulate --workers N --tasks M ...`, turned into a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Quick {
    pub workers: u32,
    pub tasks: u32,
    pub task_s: f64,
    pub task_cv: f64,
    /// Fraction of workers whose owner returns during the job.
    pub churn: f64,
    /// Fraction of workers that are stragglers...
    pub stragglers: f64,
    /// ...this many times slower in execution.
    pub slowdown: f64,
    pub slots: u32,
    pub delay_ms: f64,
}

impl Quick {
    /// A pool of `workers` one-speed-distribution machines (log-normal around 1.0, sigma 0.3),
    /// a bag of `tasks`; churned owners return at a uniform time within the job's expected length
    /// (its work over the pool's slots) and stay for a quarter to all of that length.
    pub fn scenario(&self) -> Result<ScenarioSpec, SimError> {
        let expected = (f64::from(self.tasks) * self.task_s
            / (f64::from(self.workers.max(1)) * f64::from(self.slots.max(1))))
        .max(self.task_s);
        let text = format!(
            "name = \"quick\"\n\
             [pool]\nworkers = {w}\nslots = [{s}, {s}]\n\
             speed = {{ median = 1.0, sigma = 0.3, min = 0.3, max = 3.0 }}\n\
             [network]\ndelay_ms = {d}\n\
             [job]\ntasks = {t}\nmean_s = {m}\ncv = {cv}\n\
             [churn]\nfraction = {c}\nat_s = [0, {e}]\nbusy_s = [{q}, {e}]\n\
             [stragglers]\nfraction = {st}\nslowdown = {sl}\n",
            w = self.workers,
            s = self.slots,
            d = self.delay_ms,
            t = self.tasks,
            m = self.task_s,
            cv = self.task_cv,
            c = self.churn,
            e = expected,
            q = expected / 4.0,
            st = self.stragglers,
            sl = self.slowdown,
        );
        let spec: ScenarioSpec = toml::from_str(&text).map_err(|e| SimError::Flag {
            flag: "simulate".to_owned(),
            message: e.to_string(),
        })?;
        spec.validate().map_err(|e| SimError::Flag {
            flag: flag_of(&e.field).to_owned(),
            message: e.message,
        })?;
        Ok(spec)
    }
}

/// The `simulate` flag behind a scenario field of [`Quick`].
fn flag_of(field: &str) -> &str {
    match field {
        "pool.workers" => "--workers",
        "pool.slots" => "--slots",
        "network.delay_ms" => "--delay-ms",
        "job.tasks" => "--tasks",
        "job.mean_s" => "--task-s",
        "job.cv" => "--task-cv",
        "churn.fraction" => "--churn",
        "stragglers.fraction" => "--stragglers",
        "stragglers.slowdown" => "--slowdown",
        other => other,
    }
}

/// A run and its ideal twin.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub world: World,
    pub run: RunLog,
    pub ideal: RunLog,
    pub metrics: Metrics,
}

/// Runs one world under a policy (and its ideal twin under the same policy).
pub fn run_world(world: World, policy: Policy, seed: u64) -> Result<Simulation, SimError> {
    let run = engine::Engine::new(&world, policy, seed).run()?;
    let ideal_world = world.ideal();
    let ideal = engine::Engine::new(&ideal_world, policy, seed).run()?;
    let metrics = report::metrics(&world, &run, &ideal);
    Ok(Simulation {
        world,
        run,
        ideal,
        metrics,
    })
}

/// Draws the world for `seed` and runs it.
pub fn simulate(source: &Source, policy: Policy, seed: u64) -> Result<Simulation, SimError> {
    run_world(source.world(seed), policy, seed)
}

impl Simulation {
    /// A row per worker (in the world's order), a bar per replica that reached its worker.
    pub fn gantt_rows(&self) -> Vec<GanttRow> {
        let mut rows: Vec<GanttRow> = self
            .world
            .workers
            .iter()
            .zip(&self.run.busy)
            .map(|(w, busy)| GanttRow {
                label: w.name.clone(),
                bars: Vec::new(),
                busy: busy.clone(),
            })
            .collect();
        for r in &self.run.replicas {
            let (Some(start_s), Some(end_s)) = (r.started_s, r.ended_s) else {
                continue;
            };
            if let Some(row) = rows.get_mut(r.worker) {
                row.bars.push(GanttBar {
                    start_s,
                    end_s,
                    outcome: match r.outcome {
                        ReplicaOutcome::Won => BarOutcome::Won,
                        ReplicaOutcome::Cancelled => BarOutcome::Cancelled,
                        ReplicaOutcome::Lost => BarOutcome::Lost,
                    },
                });
            }
        }
        rows
    }

    /// Draws the run as a Gantt chart (PNG).
    pub fn write_gantt(&self, path: &Path) -> Result<(), SimError> {
        let title = format!(
            "{} under {} (seed {}): makespan {:.0} s, x{:.2} ideal",
            self.metrics.scenario,
            self.metrics.policy,
            self.metrics.seed,
            self.metrics.makespan_s,
            self.metrics.x_ideal
        );
        charts::gantt(path, &title, &self.gantt_rows())
    }
}

/// The one place that draws: `crate::chart` renders, its errors become [`SimError::Chart`].
pub(crate) mod charts {
    use std::path::Path;

    use super::SimError;
    use crate::chart::{self, ChartError, GanttRow, Series};

    fn err(e: ChartError) -> SimError {
        SimError::Chart {
            file: e.path.clone(),
            message: e.problem.to_string(),
        }
    }

    pub fn gantt(path: &Path, title: &str, rows: &[GanttRow]) -> Result<(), SimError> {
        chart::gantt_png(path, title, rows).map_err(err)
    }

    /// Grouped bars: a group per `groups`, a bar per series in each.
    pub fn grouped_bars(
        path: &Path,
        title: &str,
        y_label: &str,
        groups: &[String],
        series: &[(String, Vec<f64>)],
        reference: Option<f64>,
    ) -> Result<(), SimError> {
        let series: Vec<Series> = series
            .iter()
            .map(|(name, values)| Series {
                name: name.clone(),
                values: values.clone(),
            })
            .collect();
        chart::grouped_bars_png(path, title, y_label, groups, &series, reference).map_err(err)
    }
}

#[cfg(test)]
mod tests;
