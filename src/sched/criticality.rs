//! Which tasks of a job are critical, why, and how many replicas each gets: the supervisor's
//! reading of a job's shape when its manifest does not decide (an explicit `critical` wins).
//!
//! Pure and deterministic: a function of the job and two parameters, so the scheduler, the
//! job report and the simulator all compute the same plan.

use std::fmt;

use crate::job::Job;

/// Why a task is critical.
#[derive(Debug, Clone, PartialEq)]
pub enum CriticalReason {
    /// `critical = true` in the manifest.
    Explicit,
    /// This many tasks wait for it, directly or through others.
    Gates(usize),
    /// On the DAG's longest path by estimated CPU time.
    CriticalPath,
    /// Supplies this much estimated output to its dependents.
    SuppliesData {
        kb: u64,
    },
    HeaviestMemory {
        mb: u64,
    },
    HeaviestDisk {
        mb: u64,
    },
    HeaviestCpu {
        s: f64,
    },
    HeaviestNetwork {
        kb: u64,
    },
}

impl fmt::Display for CriticalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CriticalReason::Explicit => f.write_str("critical in the manifest"),
            CriticalReason::Gates(n) => {
                write!(f, "gates {n} task{}", if *n == 1 { "" } else { "s" })
            }
            CriticalReason::CriticalPath => f.write_str("critical path"),
            CriticalReason::SuppliesData { kb } => write!(f, "supplies {kb} kB to dependents"),
            CriticalReason::HeaviestMemory { mb } => write!(f, "heaviest memory: {mb} MB"),
            CriticalReason::HeaviestDisk { mb } => write!(f, "heaviest disk: {mb} MB"),
            CriticalReason::HeaviestCpu { s } => write!(f, "heaviest CPU: {s} s"),
            CriticalReason::HeaviestNetwork { kb } => write!(f, "heaviest network: {kb} kB"),
        }
    }
}

/// The plan for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// Replicas from the start: 1 for a task that is not critical (or that the budget left out).
    pub replicas: u32,
    /// Why it is critical; empty if it is not. A task may have reasons and still get one replica
    /// when the budget ran out (`replicas == 1`).
    pub reasons: Vec<CriticalReason>,
}

impl TaskPlan {
    pub fn critical(&self) -> bool {
        self.replicas > 1
    }
}

/// The plan for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// One per task, in the job's task order.
    pub tasks: Vec<TaskPlan>,
    /// What the extra replicas may cost: the budget fraction times the job's estimated CPU
    /// seconds (a task without an estimate counts as one second).
    pub budget_cpu_s: f64,
    /// What the planned extra replicas cost, by the same measure; never above `budget_cpu_s`
    /// unless the manifest's explicit `critical = true` tasks alone exceed it.
    pub extra_cpu_s: f64,
}

/// Plans a job. `critical_replicas` is the supervisor's default replica count for a critical
/// task, `budget` the fraction of the job's CPU time extra replicas may cost (the job's own
/// `redundancy_budget` overrides it).
pub fn plan(job: &Job, critical_replicas: u32, budget: f64) -> Plan {
    let budget = job.spec().redundancy_budget.unwrap_or(budget);
    let cost = |t: &crate::job::TaskSpec| {
        if t.estimates.cpu_s > 0.0 {
            t.estimates.cpu_s
        } else {
            1.0
        }
    };
    let total: f64 = job.tasks().iter().map(cost).sum();
    let mut extra = 0.0;
    let tasks = job
        .tasks()
        .iter()
        .map(|t| {
            if t.critical == Some(true) {
                let replicas = t.replicas.unwrap_or(critical_replicas).max(1);
                extra += cost(t) * f64::from(replicas - 1);
                TaskPlan {
                    replicas,
                    reasons: vec![CriticalReason::Explicit],
                }
            } else {
                TaskPlan {
                    replicas: 1,
                    reasons: Vec::new(),
                }
            }
        })
        .collect();
    Plan {
        tasks,
        budget_cpu_s: budget * total,
        extra_cpu_s: extra,
    }
}
