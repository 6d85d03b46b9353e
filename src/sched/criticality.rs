//! Which tasks of a job are critical, why, and how many replicas each gets: the supervisor's
//! reading of a job's shape when its manifest does not decide (an explicit `critical` wins).
//!
//! Pure and deterministic: a function of the job and two parameters, so the scheduler, the
//! job report and the simulator all compute the same plan. Iterative (no recursion) and near
//! linear in tasks plus dependencies: a 100 000-task job plans in milliseconds.
//!
//! # The rules
//!
//! **Cost.** A task's cost is its `cpu_s` estimate; a task without one (0) counts as the mean of
//! the job's known estimates, or 1 s when none is known ([`estimated_cpu_s`]). The job's cost is
//! the sum over all its tasks.
//!
//! **Decided by the manifest.** `critical = true`: reason [`CriticalReason::Explicit`] only,
//! `replicas` (or the supervisor's `critical_replicas`) replicas. `critical = false`: no reasons,
//! one replica. Both still count as part of the job's shape for everyone else.
//!
//! **Reasons** for a task the manifest leaves undecided, in this order:
//! - [`Gates(n)`](CriticalReason::Gates): `n >= 1` tasks wait for it, directly or through others.
//!   Exact for jobs of up to [`EXACT_GATES_MAX_TASKS`] tasks; beyond, see [`gated_counts`].
//! - [`CriticalPath`](CriticalReason::CriticalPath): the task has a dependency or a dependent, and
//!   no slack: a longest path through the DAG by cost passes through it (the critical path
//!   method; with ties, every task on any of the longest paths). An isolated task is never on it
//!   (nothing waits for it; a long one is named by `HeaviestCpu`), so a job without dependencies
//!   has no critical path.
//! - [`SuppliesData`](CriticalReason::SuppliesData): the task has dependents and its `out_kb` is
//!   among the largest of the tasks with dependents (the heaviness test below, with the median
//!   taken over all the job's tasks and the top 5% counted among the tasks with dependents).
//! - `HeaviestMemory` / `HeaviestDisk` / `HeaviestCpu` / `HeaviestNetwork`: by `mem_mb`, `disk_mb`,
//!   `cpu_s`, `net_kb` as written (unknown = 0), the task is heavy among all the job's tasks.
//!
//! A value is *heavy* when it is above 0, at least twice the median (the lower median, unknown
//! values counted as 0), and at most `max(1, tasks / 20)` tasks (the top 5%) have a value at least
//! as large. Ties at the cut are all left out: among equals none is "the heaviest". So a job of
//! uniform independent tasks has no critical task, and neither has a one-task job.
//!
//! **Order**, most critical first (deterministic; also [`Plan::order`]): the explicit tasks, then
//! the undecided tasks with reasons, each group by: on the critical path first, then more tasks
//! gated, then more reasons (not counted for explicit tasks), then cheaper (more tasks protected
//! per CPU second), then task order.
//!
//! **Budget.** `budget_cpu_s` = fraction x the job's cost, the fraction being the manifest's
//! `redundancy_budget`, else the `budget` argument (a negative or non-finite fraction counts as
//! 0). An extra replica of a task costs the task's cost.
//! 1. Explicit tasks get their replicas whatever the budget; their extra cost is counted.
//! 2. Each candidate, in order, gets `critical_replicas` replicas if its extra cost
//!    `(critical_replicas - 1) x cost` fits in what is left. One that does not fit keeps its
//!    reasons with one replica, and later, cheaper ones may still fit.
//! 3. Then, in the same order, each candidate of the top tier that got replicas in step 2 gets
//!    one more (at most [`REPLICAS`]' maximum, 8) if its cost fits. The top tier: tasks gating
//!    at least half of the job's tasks, or on the critical path and gating at least one task.
//!
//! So `extra_cpu_s <= budget_cpu_s`, unless the explicit tasks alone cost more, and then
//! `extra_cpu_s` is their cost exactly. More budget never plans less extra CPU (the first
//! candidate whose outcome changes gains, and costs more than the smaller budget allowed), but it
//! may move replicas from some tasks to a more critical one: no first-fit rule that lets smaller
//! later tasks fit can give every task at least as many replicas for every larger budget. With
//! equal task costs it does (the granted tasks are a prefix of the order).

use std::cmp::Reverse;
use std::fmt;

use crate::job::{Job, REPLICAS};
use crate::rng::Rng;

/// Jobs with at most this many tasks get exact [`CriticalReason::Gates`] counts (bitsets of
/// `tasks^2` bits: 2 MiB at this size); larger jobs get the estimate of [`gated_counts`].
pub const EXACT_GATES_MAX_TASKS: usize = 4096;

/// Entries in a bottom-k sketch: counts below this are exact, larger ones have a relative
/// standard error of about `1 / sqrt(SKETCH - 2)`, 18%. Memory: `tasks x SKETCH x 4` bytes, 12.8 MB
/// for the largest job (100 000 tasks).
const SKETCH: usize = 32;

/// The top share a heavy value must be in: one task in this many.
const HEAVY_ONE_IN: usize = 20;

/// How far above the job's median a heavy value must be.
const HEAVY_OVER_MEDIAN: f64 = 2.0;

/// Seeds the random ranks of the gate sketches: fixed, so that a plan is a function of the job.
const SKETCH_SEED: u64 = 0x6964_6c65_6772_6964;

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
    /// Its output must be agreed by this many workers (`validate = "quorum"`).
    Quorum(u32),
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
            CriticalReason::HeaviestCpu { s } => write!(f, "heaviest CPU: {} s", seconds(*s)),
            CriticalReason::HeaviestNetwork { kb } => write!(f, "heaviest network: {kb} kB"),
            CriticalReason::Quorum(n) => write!(f, "quorum of {n}"),
        }
    }
}

/// Seconds with the precision an estimate has: "3600", "12.5", "0.25".
fn seconds(s: f64) -> String {
    let text = if s >= 100.0 {
        format!("{s:.0}")
    } else if s >= 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
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
    /// The tasks with reasons (explicit or found), most critical first: the order the budget
    /// was spent in, and the one to follow when replicating beyond the plan (pool saturation).
    pub order: Vec<usize>,
    /// What the extra replicas may cost: the budget fraction times the job's estimated CPU
    /// seconds (by [`estimated_cpu_s`]).
    pub budget_cpu_s: f64,
    /// What the planned extra replicas cost, by the same measure; never above `budget_cpu_s`
    /// unless the manifest's explicit `critical = true` tasks alone exceed it.
    pub extra_cpu_s: f64,
}

/// Plans a job. `critical_replicas` is the supervisor's default replica count for a critical
/// task, `budget` the fraction of the job's CPU time extra replicas may cost (the job's own
/// `redundancy_budget` overrides it). The rules are in the module documentation.
pub fn plan(job: &Job, critical_replicas: u32, budget: f64) -> Plan {
    let specs = job.tasks();
    let costs = estimated_cpu_s(job);
    let total: f64 = costs.iter().sum();
    let fraction = job.spec().redundancy_budget.unwrap_or(budget);
    let fraction = if fraction.is_finite() && fraction > 0.0 {
        fraction
    } else {
        0.0
    };
    let budget_cpu_s = fraction * total;

    let shape = Shape::of(job, &costs);
    let mut tasks: Vec<TaskPlan> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| match spec.critical {
            Some(true) => TaskPlan {
                replicas: spec.replicas.unwrap_or(critical_replicas).max(1),
                reasons: vec![CriticalReason::Explicit],
            },
            Some(false) => TaskPlan {
                replicas: 1,
                reasons: Vec::new(),
            },
            None => TaskPlan {
                replicas: 1,
                reasons: shape.reasons(job, i),
            },
        })
        .collect();

    let mut extra = 0.0;
    let mut order = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if specs[i].critical == Some(true) {
            extra += costs[i] * f64::from(task.replicas - 1);
            order.push(i);
        }
    }
    order.sort_by_cached_key(|&i| shape.rank(i, 0, costs[i]));
    let mut candidates: Vec<usize> = (0..specs.len())
        .filter(|&i| specs[i].critical.is_none() && !tasks[i].reasons.is_empty())
        .collect();
    candidates.sort_by_cached_key(|&i| shape.rank(i, tasks[i].reasons.len(), costs[i]));
    order.extend_from_slice(&candidates);

    // Each grant is checked against the running total itself, so the reported sum is exactly
    // what was compared with the budget.
    if critical_replicas >= 2 {
        let extra_replicas = f64::from(critical_replicas - 1);
        for &i in &candidates {
            let cost = costs[i] * extra_replicas;
            if extra + cost <= budget_cpu_s {
                extra += cost;
                tasks[i].replicas = critical_replicas;
            }
        }
        let most = critical_replicas.saturating_add(1);
        if most <= *REPLICAS.end() {
            for &i in &candidates {
                if tasks[i].replicas == critical_replicas
                    && shape.top_tier(i)
                    && extra + costs[i] <= budget_cpu_s
                {
                    extra += costs[i];
                    tasks[i].replicas = most;
                }
            }
        }
    }

    // A quorum task runs on as many workers as must agree, whatever the rest of the plan says
    // (and outside its budget: validation is not redundancy for speed).
    for (i, task) in tasks.iter_mut().enumerate() {
        if let Some(q) = job.quorum(i) {
            task.replicas = q.n;
            task.reasons.push(CriticalReason::Quorum(q.n));
        }
    }
    Plan {
        tasks,
        order,
        budget_cpu_s,
        extra_cpu_s: extra,
    }
}

/// Each task's CPU estimate as planning counts it: `cpu_s`, or for a task without one (0) the
/// mean of the job's known estimates, or 1 s when the job has none.
pub fn estimated_cpu_s(job: &Job) -> Vec<f64> {
    let (sum, known) = job
        .tasks()
        .iter()
        .map(|t| t.estimates.cpu_s)
        .filter(|&s| s > 0.0)
        .fold((0.0, 0usize), |(sum, n), s| (sum + s, n + 1));
    let unknown = if known > 0 { sum / known as f64 } else { 1.0 };
    job.tasks()
        .iter()
        .map(|t| {
            if t.estimates.cpu_s > 0.0 {
                t.estimates.cpu_s
            } else {
                unknown
            }
        })
        .collect()
}

/// What the job's shape says about each task.
struct Shape {
    tasks: usize,
    gates: Vec<usize>,
    on_path: Vec<bool>,
    supplies: Heavy,
    memory: Heavy,
    disk: Heavy,
    cpu: Heavy,
    network: Heavy,
}

impl Shape {
    fn of(job: &Job, costs: &[f64]) -> Self {
        let specs = job.tasks();
        let column = |f: fn(&crate::job::Estimates) -> f64| -> Vec<f64> {
            specs.iter().map(|t| f(&t.estimates)).collect()
        };
        let out_kb = column(|e| e.out_kb as f64);
        let suppliers: Vec<f64> = (0..specs.len())
            .filter(|&i| !job.dependents(i).is_empty())
            .map(|i| out_kb[i])
            .collect();
        Self {
            tasks: specs.len(),
            gates: gated_counts(job),
            on_path: on_critical_path(job, costs),
            supplies: Heavy::new(median(out_kb), suppliers),
            memory: Heavy::among(column(|e| e.mem_mb as f64)),
            disk: Heavy::among(column(|e| e.disk_mb as f64)),
            cpu: Heavy::among(column(|e| e.cpu_s)),
            network: Heavy::among(column(|e| e.net_kb as f64)),
        }
    }

    fn reasons(&self, job: &Job, i: usize) -> Vec<CriticalReason> {
        let e = &job.tasks()[i].estimates;
        let mut reasons = Vec::new();
        if self.gates[i] > 0 {
            reasons.push(CriticalReason::Gates(self.gates[i]));
        }
        if self.on_path[i] {
            reasons.push(CriticalReason::CriticalPath);
        }
        if !job.dependents(i).is_empty() && self.supplies.admits(e.out_kb as f64) {
            reasons.push(CriticalReason::SuppliesData { kb: e.out_kb });
        }
        if self.memory.admits(e.mem_mb as f64) {
            reasons.push(CriticalReason::HeaviestMemory { mb: e.mem_mb });
        }
        if self.disk.admits(e.disk_mb as f64) {
            reasons.push(CriticalReason::HeaviestDisk { mb: e.disk_mb });
        }
        if self.cpu.admits(e.cpu_s) {
            reasons.push(CriticalReason::HeaviestCpu { s: e.cpu_s });
        }
        if self.network.admits(e.net_kb as f64) {
            reasons.push(CriticalReason::HeaviestNetwork { kb: e.net_kb });
        }
        reasons
    }

    /// Sorts the most critical first: on the critical path, more tasks gated, more reasons,
    /// cheaper, earlier in the job.
    fn rank(&self, i: usize, reasons: usize, cost: f64) -> RankKey {
        // Costs are finite and positive, where the bit patterns order as the numbers do.
        (
            Reverse(self.on_path[i]),
            Reverse(self.gates[i]),
            Reverse(reasons),
            cost.to_bits(),
            i,
        )
    }

    /// The tier that may get one replica more than `critical_replicas`.
    fn top_tier(&self, i: usize) -> bool {
        2 * self.gates[i] >= self.tasks || (self.on_path[i] && self.gates[i] > 0)
    }
}

/// Ascending is most critical first.
type RankKey = (Reverse<bool>, Reverse<usize>, Reverse<usize>, u64, usize);

/// The bar for "among the heaviest" of one estimate.
struct Heavy {
    /// Twice the job's median.
    at_least: f64,
    /// The largest value that more than the top share reach; a heavy value is strictly above.
    above: f64,
}

impl Heavy {
    /// Heavy among `values`, against their own median.
    fn among(values: Vec<f64>) -> Self {
        Self::new(median(values.clone()), values)
    }

    /// Heavy among `ranked`, against `median` (the job's typical value).
    fn new(median: f64, mut ranked: Vec<f64>) -> Self {
        let top = (ranked.len() / HEAVY_ONE_IN).max(1);
        let above = if ranked.len() > top {
            let at = ranked.len() - top - 1;
            *ranked.select_nth_unstable_by(at, f64::total_cmp).1
        } else {
            0.0
        };
        Self {
            at_least: HEAVY_OVER_MEDIAN * median,
            above,
        }
    }

    fn admits(&self, value: f64) -> bool {
        value > 0.0 && value >= self.at_least && value > self.above
    }
}

/// The lower median; 0 for no values.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = (values.len() - 1) / 2;
    *values.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// For each task, how many tasks wait for it, directly or through others.
///
/// Exact (bitset unions in reverse topological order) for jobs of up to
/// [`EXACT_GATES_MAX_TASKS`] tasks. Larger jobs get bottom-k sketches (Cohen's size
/// estimation): every task has a random rank (a fixed-seed permutation), each task keeps the 32
/// smallest ranks among the tasks that wait for it, merged from its dependents', and a full
/// sketch whose largest rank is `r` estimates `31 x (tasks + 1) / (r + 1)`. Counts below 32 stay
/// exact; larger ones are within about 18% (one standard error), clamped to `32..tasks`. Time
/// `O(dependencies x 32)`, memory 128 bytes a task.
pub fn gated_counts(job: &Job) -> Vec<usize> {
    if job.tasks().len() <= EXACT_GATES_MAX_TASKS {
        exact_gated_counts(job)
    } else {
        sketched_gated_counts(job)
    }
}

fn exact_gated_counts(job: &Job) -> Vec<usize> {
    let n = job.tasks().len();
    let words = n.div_ceil(64);
    let mut reach = vec![0u64; n * words];
    let mut row = vec![0u64; words];
    let mut gates = vec![0; n];
    for &u in job.topo_order().iter().rev() {
        let dependents = job.dependents(u);
        if dependents.is_empty() {
            continue;
        }
        row.fill(0);
        for &d in dependents {
            row[d / 64] |= 1 << (d % 64);
            for (r, x) in row.iter_mut().zip(&reach[d * words..(d + 1) * words]) {
                *r |= x;
            }
        }
        gates[u] = row.iter().map(|w| w.count_ones() as usize).sum();
        reach[u * words..(u + 1) * words].copy_from_slice(&row);
    }
    gates
}

fn sketched_gated_counts(job: &Job) -> Vec<usize> {
    let n = job.tasks().len();
    // Job sizes are capped far below 2^32 (`job::MAX_TASKS`); the conversion cannot fail there,
    // and an impossible larger job would only share ranks, not break anything.
    let mut rank: Vec<u32> = (0..n)
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let mut rng = Rng::new(SKETCH_SEED);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        rank.swap(i, j);
    }
    // Each task's sketch covers the task itself and every task waiting for it, so that a
    // dependency merges one sketch per dependent.
    let mut sketches = vec![0u32; n * SKETCH];
    let mut lens = vec![0u8; n];
    let mut gates = vec![0; n];
    let mut acc: Vec<u32> = Vec::with_capacity(SKETCH);
    let mut tmp: Vec<u32> = Vec::with_capacity(SKETCH);
    for &u in job.topo_order().iter().rev() {
        acc.clear();
        for &d in job.dependents(u) {
            let sketch = &sketches[d * SKETCH..d * SKETCH + usize::from(lens[d])];
            // Large sets that overlap share their smallest ranks: most merges change nothing.
            let full = acc.len() == SKETCH;
            if (full && sketch.first().is_none_or(|&s| s >= acc[SKETCH - 1])) || acc == sketch {
                continue;
            }
            merge_smallest(&acc, sketch, &mut tmp);
            std::mem::swap(&mut acc, &mut tmp);
        }
        gates[u] = if acc.len() < SKETCH {
            acc.len()
        } else {
            let r = f64::from(acc[SKETCH - 1]) + 1.0;
            let estimate = (SKETCH - 1) as f64 * (n as f64 + 1.0) / r;
            (estimate.round() as usize).clamp(SKETCH, n - 1)
        };
        merge_smallest(&acc, &[rank[u]], &mut tmp);
        sketches[u * SKETCH..u * SKETCH + tmp.len()].copy_from_slice(&tmp);
        lens[u] = tmp.len() as u8;
    }
    gates
}

/// The `SKETCH` smallest distinct values of two ascending lists, ascending, into `out`.
fn merge_smallest(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    out.clear();
    if a.is_empty() {
        out.extend_from_slice(&b[..b.len().min(SKETCH)]);
        return;
    }
    let (mut i, mut j) = (0, 0);
    while out.len() < SKETCH {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => {
                if x <= y {
                    i += 1;
                }
                if y <= x {
                    j += 1;
                }
                x.min(y)
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => break,
        };
        out.push(next);
    }
}

/// For each task, whether it has a dependency or a dependent and no slack: some longest path
/// by cost passes through it.
fn on_critical_path(job: &Job, costs: &[f64]) -> Vec<bool> {
    let n = job.tasks().len();
    let order = job.topo_order();
    // Longest path ending with each task, and starting with it, both including it.
    let mut to = vec![0.0f64; n];
    for &v in order {
        let before = job
            .dependencies(v)
            .iter()
            .map(|&d| to[d])
            .fold(0.0, f64::max);
        to[v] = before + costs[v];
    }
    let mut from = vec![0.0f64; n];
    for &v in order.iter().rev() {
        let after = job
            .dependents(v)
            .iter()
            .map(|&d| from[d])
            .fold(0.0, f64::max);
        from[v] = after + costs[v];
    }
    let longest = to.iter().copied().fold(0.0, f64::max);
    // Sums taken in different orders may differ in the last bits.
    let tolerance = longest * 1e-9;
    (0..n)
        .map(|v| {
            let connected = !job.dependencies(v).is_empty() || !job.dependents(v).is_empty();
            connected && to[v] + from[v] - costs[v] >= longest - tolerance
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::job::{JobSpec, TaskSpec, validate};
    use crate::proto::TaskId;

    fn task(id: &str, deps: &[&str]) -> TaskSpec {
        let mut t = TaskSpec::new(id, "k", serde_json::json!({}));
        t.deps = deps.iter().map(|&d| TaskId::from(d)).collect();
        t
    }

    fn with_cpu(mut t: TaskSpec, cpu_s: f64) -> TaskSpec {
        t.estimates.cpu_s = cpu_s;
        t
    }

    fn job(tasks: Vec<TaskSpec>) -> Job {
        let spec = JobSpec {
            name: "test".to_owned(),
            tasks,
            ..JobSpec::default()
        };
        validate(spec, |_| true).expect("test job is valid")
    }

    /// A random DAG: each task depends on up to 3 earlier ones (within `reach` of it), with
    /// estimates that are often unknown and otherwise spread over two orders of magnitude.
    fn random_job(rng: &mut Rng, n: usize, reach: usize) -> Job {
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let mut t = task(&format!("t{i}"), &[]);
            if i > 0 {
                let mut deps: Vec<usize> = (0..rng.below(4))
                    .map(|_| i - 1 - rng.below(i.min(reach) as u64) as usize)
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                t.deps = deps.iter().map(|d| TaskId::from(format!("t{d}"))).collect();
            }
            let mut estimate = |unit: u64| {
                if rng.below(3) == 0 {
                    0
                } else {
                    unit << rng.below(7)
                }
            };
            t.estimates.cpu_s = estimate(1) as f64 * 0.5;
            t.estimates.mem_mb = estimate(64);
            t.estimates.disk_mb = estimate(100);
            t.estimates.net_kb = estimate(16);
            t.estimates.out_kb = estimate(4);
            tasks.push(t);
        }
        job(tasks)
    }

    /// `random_job` with some tasks decided by the manifest.
    fn random_job_with_explicit(rng: &mut Rng, n: usize) -> Job {
        let mut spec = random_job(rng, n, n).into_spec();
        for t in &mut spec.tasks {
            match rng.below(10) {
                0 => t.critical = Some(false),
                1 => {
                    t.critical = Some(true);
                    if rng.below(2) == 0 {
                        t.replicas = Some(2 + rng.below(3) as u32);
                    }
                }
                _ => {}
            }
        }
        validate(spec, |_| true).expect("test job is valid")
    }

    /// Tasks waiting for each task, by a search from each (the obvious, slow way).
    fn gated_by_search(job: &Job) -> Vec<usize> {
        let n = job.tasks().len();
        let mut seen = vec![usize::MAX; n];
        (0..n)
            .map(|start| {
                let mut stack = vec![start];
                let mut count = 0;
                while let Some(v) = stack.pop() {
                    for &d in job.dependents(v) {
                        if seen[d] != start {
                            seen[d] = start;
                            count += 1;
                            stack.push(d);
                        }
                    }
                }
                count
            })
            .collect()
    }

    fn explicit_extra(job: &Job, plan: &Plan) -> f64 {
        let costs = estimated_cpu_s(job);
        let mut extra = 0.0;
        for (i, t) in job.tasks().iter().enumerate() {
            if t.critical == Some(true) {
                extra += costs[i] * f64::from(plan.tasks[i].replicas - 1);
            }
        }
        extra
    }

    fn gates_of(plan: &TaskPlan) -> Option<usize> {
        plan.reasons.iter().find_map(|r| match r {
            CriticalReason::Gates(n) => Some(*n),
            _ => None,
        })
    }

    #[test]
    fn the_redundancy_budget_is_never_exceeded_on_random_dags() {
        let mut rng = Rng::new(7);
        let mut granted_somewhere = false;
        for _ in 0..300 {
            let n = 1 + rng.below(150) as usize;
            let job = random_job_with_explicit(&mut rng, n);
            let replicas = 1 + rng.below(4) as u32;
            let budget = rng.below(101) as f64 / 100.0;
            let plan = plan(&job, replicas, budget);
            assert_eq!(plan.tasks.len(), n);
            let explicit = explicit_extra(&job, &plan);
            assert!(
                plan.extra_cpu_s <= plan.budget_cpu_s.max(explicit),
                "extra {} over budget {} (explicit {explicit})",
                plan.extra_cpu_s,
                plan.budget_cpu_s
            );
            // The reported figure is what the replicas cost.
            let costs = estimated_cpu_s(&job);
            let cost: f64 = (0..n)
                .rev()
                .map(|i| costs[i] * f64::from(plan.tasks[i].replicas - 1))
                .sum();
            assert!((cost - plan.extra_cpu_s).abs() <= 1e-9 * cost.max(1.0));
            let total: f64 = costs.iter().sum();
            assert!((plan.budget_cpu_s - budget * total).abs() <= 1e-9 * total);
            granted_somewhere |=
                (0..n).any(|i| job.tasks()[i].critical.is_none() && plan.tasks[i].critical());
        }
        assert!(granted_somewhere, "the budget never bought a replica");
    }

    #[test]
    fn explicit_false_is_never_critical_and_explicit_true_always_is() {
        let mut rng = Rng::new(11);
        for _ in 0..200 {
            let n = 1 + rng.below(100) as usize;
            let job = random_job_with_explicit(&mut rng, n);
            for budget in [0.0, 0.25, 4.0] {
                let plan = plan(&job, 2, budget);
                for (t, p) in job.tasks().iter().zip(&plan.tasks) {
                    match t.critical {
                        Some(false) => {
                            assert_eq!(p.replicas, 1);
                            assert!(p.reasons.is_empty());
                        }
                        Some(true) => {
                            assert_eq!(p.replicas, t.replicas.unwrap_or(2));
                            assert_eq!(p.reasons, vec![CriticalReason::Explicit]);
                        }
                        None => assert!(!p.reasons.contains(&CriticalReason::Explicit)),
                    }
                }
            }
        }
    }

    #[test]
    fn explicit_tasks_get_their_replicas_even_beyond_the_budget() {
        let mut tasks: Vec<TaskSpec> = (0..4).map(|i| task(&format!("t{i}"), &[])).collect();
        tasks[0].critical = Some(true);
        tasks[0].replicas = Some(4);
        tasks[1] = with_cpu(task("t1", &[]), 100.0); // heaviest CPU: a candidate
        let job = job(tasks);
        let plan = plan(&job, 2, 0.1);
        assert_eq!(plan.tasks[0].replicas, 4);
        // t0 costs the mean of the known estimates, 100 s; three extra replicas.
        assert_eq!(plan.extra_cpu_s, 300.0);
        assert!(plan.extra_cpu_s > plan.budget_cpu_s);
        assert_eq!(
            plan.tasks[1].reasons,
            vec![CriticalReason::HeaviestCpu { s: 100.0 }]
        );
        assert_eq!(plan.tasks[1].replicas, 1, "nothing left for the candidate");
        assert_eq!(plan.order, vec![0, 1]);
    }

    #[test]
    fn a_fan_out_root_gates_its_dependents_and_is_critical() {
        let mut tasks = vec![task("root", &[])];
        tasks.extend((0..16).map(|i| task(&format!("leaf{i}"), &["root"])));
        let job = job(tasks);
        let plan = plan(&job, 2, 0.25);
        let root = &plan.tasks[0];
        assert!(root.critical());
        assert_eq!(gates_of(root), Some(16));
        assert!(root.reasons.contains(&CriticalReason::CriticalPath));
        assert_eq!(root.reasons[0].to_string(), "gates 16 tasks");
        assert_eq!(plan.order[0], 0, "the root is the most critical");
        for leaf in &plan.tasks[1..] {
            assert_eq!(gates_of(leaf), None);
        }
        assert!(plan.extra_cpu_s <= plan.budget_cpu_s);
    }

    #[test]
    fn the_most_critical_task_gets_a_third_replica_when_the_budget_allows() {
        let mut tasks = vec![task("root", &[])];
        tasks.extend((0..16).map(|i| task(&format!("leaf{i}"), &["root"])));
        let job = job(tasks);
        let generous = plan(&job, 2, 4.0);
        assert_eq!(generous.tasks[0].replicas, 3);
        // Leaves are on the critical path too but gate nothing: two replicas.
        assert!(generous.tasks[1..].iter().all(|t| t.replicas == 2));
        assert_eq!(generous.extra_cpu_s, 18.0);
        let tight = plan(&job, 2, 0.25);
        assert_eq!(tight.tasks[0].replicas, 2);
        // Never more than the supervisor's largest replica count.
        assert_eq!(plan(&job, 8, 4.0).tasks[0].replicas, 8);
    }

    #[test]
    fn a_candidate_too_costly_for_the_budget_keeps_its_reasons_and_cheaper_ones_still_fit() {
        let mut tasks = vec![with_cpu(task("big", &[]), 50.0)];
        tasks.extend((0..3).map(|i| with_cpu(task(&format!("big{i}"), &["big"]), 1.0)));
        tasks.push(with_cpu(task("small", &[]), 2.0));
        tasks.extend((0..2).map(|i| with_cpu(task(&format!("small{i}"), &["small"]), 1.0)));
        let job = job(tasks);
        // 57 s of work, 5.7 s of budget: not enough for `big`.
        let plan = plan(&job, 2, 0.1);
        let big = &plan.tasks[0];
        assert_eq!(big.replicas, 1);
        assert_eq!(
            big.reasons,
            vec![
                CriticalReason::Gates(3),
                CriticalReason::CriticalPath,
                CriticalReason::HeaviestCpu { s: 50.0 }
            ]
        );
        assert_eq!(plan.tasks[4].reasons, vec![CriticalReason::Gates(2)]);
        assert_eq!(plan.tasks[4].replicas, 2, "the smaller candidate fits");
        assert!(plan.extra_cpu_s <= plan.budget_cpu_s);
        assert_eq!(plan.order[0], 0);
    }

    #[test]
    fn in_a_chain_with_a_short_side_branch_the_chain_is_the_critical_path() {
        let job = job(vec![
            with_cpu(task("a", &[]), 10.0),
            with_cpu(task("b", &["a"]), 10.0),
            with_cpu(task("side", &["b"]), 1.0),
            with_cpu(task("c", &["b"]), 10.0),
            with_cpu(task("d", &["c"]), 10.0),
        ]);
        let plan = plan(&job, 2, 4.0);
        for i in [0, 1, 3, 4] {
            assert!(
                plan.tasks[i]
                    .reasons
                    .contains(&CriticalReason::CriticalPath),
                "{:?}",
                job.tasks()[i].id
            );
        }
        assert!(plan.tasks[2].reasons.is_empty(), "{:?}", plan.tasks[2]);
        assert_eq!(plan.tasks[2].replicas, 1);
        assert_eq!(gates_of(&plan.tasks[0]), Some(4));
        assert_eq!(gates_of(&plan.tasks[1]), Some(3));
        assert_eq!(plan.tasks[4].reasons, vec![CriticalReason::CriticalPath]);
    }

    #[test]
    fn a_job_without_dependencies_has_no_critical_path() {
        let mut tasks: Vec<TaskSpec> = (0..10)
            .map(|i| with_cpu(task(&format!("t{i}"), &[]), 5.0))
            .collect();
        tasks[3].estimates.cpu_s = 500.0;
        let plan = plan(&job(tasks), 2, 0.25);
        assert_eq!(
            plan.tasks[3].reasons,
            vec![CriticalReason::HeaviestCpu { s: 500.0 }]
        );
        assert_eq!(plan.tasks[3].reasons[0].to_string(), "heaviest CPU: 500 s");
        assert!(
            plan.tasks
                .iter()
                .enumerate()
                .all(|(i, t)| i == 3 || t.reasons.is_empty())
        );
    }

    #[test]
    fn the_heaviest_memory_task_is_named_with_its_megabytes() {
        let mut tasks: Vec<TaskSpec> = (0..40).map(|i| task(&format!("t{i}"), &[])).collect();
        for t in &mut tasks {
            t.estimates.mem_mb = 256;
        }
        tasks[17].estimates.mem_mb = 2048;
        let plan = plan(&job(tasks.clone()), 2, 0.25);
        assert_eq!(
            plan.tasks[17].reasons,
            vec![CriticalReason::HeaviestMemory { mb: 2048 }]
        );
        assert_eq!(
            plan.tasks[17].reasons[0].to_string(),
            "heaviest memory: 2048 MB"
        );
        assert!(plan.tasks[17].critical());
        assert_eq!(
            plan.tasks.iter().filter(|t| !t.reasons.is_empty()).count(),
            1
        );

        // Two equally heavy tasks in a job whose top 5% is one task: neither is the heaviest.
        tasks.truncate(20);
        tasks[3].estimates.mem_mb = 2048;
        tasks[17].estimates.mem_mb = 2048;
        let plan = super::plan(&job(tasks.clone()), 2, 0.25);
        assert!(plan.tasks.iter().all(|t| t.reasons.is_empty()));
        // Not heavy unless clearly above the typical task.
        tasks[3].estimates.mem_mb = 256;
        tasks[17].estimates.mem_mb = 500;
        let plan = super::plan(&job(tasks), 2, 0.25);
        assert!(plan.tasks.iter().all(|t| t.reasons.is_empty()));
    }

    #[test]
    fn a_task_supplying_much_more_data_than_the_others_is_named() {
        let mut tasks = Vec::new();
        for i in 0..30 {
            let mut t = task(&format!("map{i}"), &[]);
            t.estimates.out_kb = if i == 4 { 100_000 } else { 100 };
            tasks.push(t);
        }
        let maps: Vec<String> = (0..30).map(|i| format!("map{i}")).collect();
        let maps: Vec<&str> = maps.iter().map(String::as_str).collect();
        let mut reduce = task("reduce", &maps);
        reduce.estimates.out_kb = 1_000_000; // a sink: supplies nobody
        tasks.push(reduce);
        let plan = plan(&job(tasks), 2, 0.25);
        assert!(
            plan.tasks[4]
                .reasons
                .contains(&CriticalReason::SuppliesData { kb: 100_000 })
        );
        assert_eq!(
            CriticalReason::SuppliesData { kb: 100_000 }.to_string(),
            "supplies 100000 kB to dependents"
        );
        for (i, t) in plan.tasks.iter().enumerate() {
            if i != 4 {
                assert!(
                    !t.reasons
                        .iter()
                        .any(|r| matches!(r, CriticalReason::SuppliesData { .. })),
                    "task {i}: {:?}",
                    t.reasons
                );
            }
        }
    }

    #[test]
    fn a_bag_of_uniform_independent_tasks_has_no_critical_tasks() {
        let bare: Vec<TaskSpec> = (0..50).map(|i| task(&format!("t{i}"), &[])).collect();
        let mut estimated = bare.clone();
        for t in &mut estimated {
            t.estimates = crate::job::Estimates {
                cpu_s: 30.0,
                mem_mb: 512,
                disk_mb: 100,
                net_kb: 64,
                out_kb: 16,
            };
        }
        for tasks in [bare, estimated] {
            let plan = plan(&job(tasks), 2, 4.0);
            assert!(plan.tasks.iter().all(|t| t.reasons.is_empty()));
            assert!(plan.tasks.iter().all(|t| t.replicas == 1));
            assert!(plan.order.is_empty());
            assert_eq!(plan.extra_cpu_s, 0.0);
        }
    }

    #[test]
    fn unknown_cpu_estimates_count_as_the_mean_of_the_known_ones() {
        let job_of = |cpu: &[f64]| {
            job(cpu
                .iter()
                .enumerate()
                .map(|(i, &s)| with_cpu(task(&format!("t{i}"), &[]), s))
                .collect())
        };
        assert_eq!(
            estimated_cpu_s(&job_of(&[2.0, 4.0, 0.0])),
            vec![2.0, 4.0, 3.0]
        );
        assert_eq!(estimated_cpu_s(&job_of(&[0.0, 0.0])), vec![1.0, 1.0]);
        assert_eq!(plan(&job_of(&[2.0, 4.0, 0.0]), 2, 0.5).budget_cpu_s, 4.5);
        // The manifest's budget overrides the supervisor's; nonsense counts as none.
        let mut spec = job_of(&[2.0, 4.0, 0.0]).into_spec();
        spec.redundancy_budget = Some(1.0);
        let job = validate(spec, |_| true).expect("valid");
        assert_eq!(plan(&job, 2, 0.5).budget_cpu_s, 9.0);
        assert_eq!(plan(&job_of(&[1.0]), 2, f64::NAN).budget_cpu_s, 0.0);
        assert_eq!(plan(&job_of(&[1.0]), 2, -1.0).budget_cpu_s, 0.0);
    }

    #[test]
    fn more_budget_never_plans_less_redundancy() {
        let mut rng = Rng::new(23);
        for _ in 0..100 {
            let n = 1 + rng.below(120) as usize;
            let job = random_job(&mut rng, n, n);
            let replicas = 2 + rng.below(2) as u32;
            let mut last = 0.0;
            for step in 0..=40 {
                let p = plan(&job, replicas, f64::from(step) * 0.05);
                assert!(p.extra_cpu_s >= last, "budget step {step}");
                last = p.extra_cpu_s;
            }
            // With equal costs no task ever loses a replica to a larger budget.
            let mut spec = job.into_spec();
            for t in &mut spec.tasks {
                t.estimates.cpu_s = 0.0;
            }
            let job = validate(spec, |_| true).expect("valid");
            let mut last = vec![1; n];
            for step in 0..=40 {
                let p = plan(&job, 2, f64::from(step) * 0.05);
                for (i, t) in p.tasks.iter().enumerate() {
                    assert!(t.replicas >= last[i], "task {i} at budget step {step}");
                    last[i] = t.replicas;
                }
            }
        }
    }

    #[test]
    fn planning_is_deterministic() {
        let mut rng = Rng::new(5);
        for n in [10, 500, 5000] {
            let job = random_job_with_explicit(&mut rng, n);
            let again = validate(job.spec().clone(), |_| true).expect("valid");
            assert_eq!(plan(&job, 2, 0.25), plan(&again, 2, 0.25));
        }
    }

    #[test]
    fn gate_counts_are_exact_up_to_the_limit() {
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let n = 1 + rng.below(300) as usize;
            let reach = 1 + rng.below(n as u64) as usize;
            let job = random_job(&mut rng, n, reach);
            assert_eq!(gated_counts(&job), gated_by_search(&job));
        }
        let chain: Vec<TaskSpec> = (0..EXACT_GATES_MAX_TASKS)
            .map(|i| match i {
                0 => task("t0", &[]),
                _ => task(&format!("t{i}"), &[&format!("t{}", i - 1)]),
            })
            .collect();
        let counts = gated_counts(&job(chain));
        assert!(
            counts
                .iter()
                .enumerate()
                .all(|(i, &c)| c == EXACT_GATES_MAX_TASKS - 1 - i)
        );
    }

    #[test]
    fn gate_counts_of_larger_jobs_are_close_estimates() {
        let mut rng = Rng::new(13);
        let job = random_job(&mut rng, 6000, 300);
        let exact = gated_by_search(&job);
        let estimated = gated_counts(&job);
        let (mut error_sum, mut signed_sum) = (0.0, 0.0);
        let mut large = 0;
        for (i, (&e, &x)) in estimated.iter().zip(&exact).enumerate() {
            if x < SKETCH {
                assert_eq!(e, x, "task {i}: small counts stay exact");
            } else {
                let ratio = e as f64 / x as f64;
                assert!((0.5..=2.0).contains(&ratio), "task {i}: {e} for {x}");
                error_sum += (ratio - 1.0).abs();
                signed_sum += ratio - 1.0;
                large += 1;
            }
        }
        assert!(large > 1000, "too few large counts to judge: {large}");
        let mean_error = error_sum / large as f64;
        println!(
            "gate estimates: mean relative error {mean_error:.3} (signed {:+.3}) over {large} tasks",
            signed_sum / large as f64
        );
        // About 0.15 expected for independent sketches; these share most of their tasks.
        assert!(mean_error < 0.25, "mean relative error {mean_error}");
    }

    #[test]
    fn cpu_seconds_read_sensibly() {
        let text = |s| CriticalReason::HeaviestCpu { s }.to_string();
        assert_eq!(text(3600.0), "heaviest CPU: 3600 s");
        assert_eq!(text(12.5), "heaviest CPU: 12.5 s");
        assert_eq!(text(2.0), "heaviest CPU: 2 s");
        assert_eq!(text(0.25), "heaviest CPU: 0.25 s");
        assert_eq!(text(1234.567), "heaviest CPU: 1235 s");
        assert_eq!(CriticalReason::Gates(1).to_string(), "gates 1 task");
    }

    #[test]
    fn a_100000_task_random_dag_plans_quickly() {
        let mut rng = Rng::new(1);
        let job = random_job(&mut rng, crate::job::MAX_TASKS, 2000);
        let started = Instant::now();
        let plan = plan(&job, 2, 0.25);
        let took = started.elapsed();
        println!(
            "planned {} tasks in {took:?}: {} with reasons, {} with replicas",
            plan.tasks.len(),
            plan.order.len(),
            plan.tasks.iter().filter(|t| t.critical()).count()
        );
        assert_eq!(plan.tasks.len(), crate::job::MAX_TASKS);
        assert!(plan.extra_cpu_s <= plan.budget_cpu_s);
        assert!(plan.tasks.iter().any(TaskPlan::critical));
        // A generous bound, and only where the code is optimised; the figure above is the
        // measurement.
        if !cfg!(debug_assertions) {
            assert!(took < Duration::from_secs(1), "took {took:?}");
        }
    }
}
