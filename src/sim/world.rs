//! One concrete world to simulate: every worker's hardware, true speed and what happens to it,
//! every task's true size and estimate. Drawn from a scenario or read from a trace; the engine
//! only plays it.

use crate::job::{Estimates, Job, JobSpec, TaskSpec};

/// Every time is in seconds of virtual time from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub name: String,
    pub workers: Vec<WorkerPlan>,
    pub tasks: Vec<TaskPlan>,
    /// One-way delay of every message, either way.
    pub delay_s: f64,
    /// When the job is submitted; makespans count from here.
    pub submit_s: f64,
    pub heartbeat_ms: u64,
    pub miss_limit: u32,
    /// A run that has not finished its job this long after submission is an error.
    pub limit_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    pub name: String,
    /// Nominal single-core speed, 1.0 = the reference core (what the join benchmark reports).
    pub speed: f64,
    /// A straggler executes at `speed / slowdown` (1.0: not a straggler). The benchmark does not
    /// see it.
    pub slowdown: f64,
    /// Slots, and as many cores.
    pub slots: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub link_kbps: f64,
    /// The worker's process starts and connects.
    pub join_s: f64,
    /// It shuts down for good (its connection closes); `None`: it stays.
    pub leave_s: Option<f64>,
    /// Spells in which its owner uses the machine (replicas pause), sorted and disjoint.
    pub busy: Vec<(f64, f64)>,
    /// The process dies (the connection closes); it may restart at `until_s`.
    pub crash: Option<Outage>,
    /// The process stops (SIGSTOP-like: the connection stays open, nothing is said); it may
    /// resume at `until_s`.
    pub freeze: Option<Outage>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub at_s: f64,
    pub until_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// True CPU-seconds at speed 1.0.
    pub size_s: f64,
    /// What the job tells the scheduler (`estimates.cpu_s`).
    pub estimate_s: f64,
    /// Indices of the tasks it waits for (lower than its own).
    pub deps: Vec<usize>,
    pub mem_mb: u64,
    pub disk_mb: u64,
    pub net_kb: u64,
    pub out_kb: u64,
}

impl World {
    /// The same job on the same pool at nominal speeds, every worker there from the start to the
    /// end, with no owner activity, crashes, freezes or stragglers.
    pub fn ideal(&self) -> World {
        let mut w = self.clone();
        w.name = format!("{} (ideal)", self.name);
        for p in &mut w.workers {
            p.slowdown = 1.0;
            p.join_s = 0.0;
            p.leave_s = None;
            p.busy.clear();
            p.crash = None;
            p.freeze = None;
        }
        w
    }

    /// Whether anything can go wrong in it (the ideal world has nothing).
    pub fn has_faults(&self) -> bool {
        self.workers.iter().any(|p| {
            p.slowdown != 1.0
                || p.leave_s.is_some()
                || !p.busy.is_empty()
                || p.crash.is_some()
                || p.freeze.is_some()
        })
    }

    /// No schedule beats this: the larger of all the work over the pool's whole capacity (every
    /// slot at nominal speed) and the longest dependency chain at the fastest speed.
    pub fn lower_bound_s(&self) -> f64 {
        let work: f64 = self.tasks.iter().map(|t| t.size_s).sum();
        let capacity: f64 = self
            .workers
            .iter()
            .map(|w| w.speed * f64::from(w.slots))
            .sum();
        let fastest = self.workers.iter().map(|w| w.speed).fold(0.0, f64::max);
        // Dependencies point to lower indices, so one pass in index order finds every chain.
        let mut chain = vec![0.0f64; self.tasks.len()];
        for (i, t) in self.tasks.iter().enumerate() {
            let before = t
                .deps
                .iter()
                .filter(|&&d| d < i)
                .map(|&d| chain[d])
                .fold(0.0, f64::max);
            chain[i] = before + t.size_s;
        }
        let path = chain.iter().copied().fold(0.0, f64::max);
        if capacity <= 0.0 || fastest <= 0.0 {
            return f64::INFINITY;
        }
        (work / capacity).max(path / fastest)
    }

    /// The job as the scheduler sees it: task `t0001`... of kind `sim`, with the estimates.
    pub fn job(&self) -> Result<Job, crate::job::JobError> {
        crate::job::validate(self.job_spec("sim", |_| serde_json::Value::Null), |_| true)
    }

    /// The job as an operator would submit it, each task of `kind` with `input(task)`: the same
    /// ids, dependencies, estimates and name as [`World::job`] (`bench sim-vs-real` runs it on
    /// real workers).
    pub fn job_spec(&self, kind: &str, input: impl Fn(&TaskPlan) -> serde_json::Value) -> JobSpec {
        let ids: Vec<String> = (0..self.tasks.len())
            .map(|i| format!("t{:05}", i + 1))
            .collect();
        let tasks = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut spec = TaskSpec::new(ids[i].as_str(), kind, input(t));
                spec.deps = t.deps.iter().map(|&d| ids[d].as_str().into()).collect();
                spec.estimates = Estimates {
                    // The manifest's checks cap estimates; a simulated one is kept in range too.
                    cpu_s: t.estimate_s.clamp(0.001, 1e7),
                    mem_mb: t.mem_mb,
                    disk_mb: t.disk_mb,
                    net_kb: t.net_kb,
                    out_kb: t.out_kb,
                };
                spec
            })
            .collect();
        // File names may hold anything; the job's name keeps only plain characters.
        let name: String = self
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || " ._-()".contains(*c))
            .take(crate::job::MAX_NAME_CHARS)
            .collect();
        JobSpec {
            name: if name.trim().is_empty() {
                "simulated job".to_owned()
            } else {
                name
            },
            tasks,
            redundancy_budget: None,
            min_complete: None,
            ..JobSpec::default()
        }
    }
}
