//! Scenario files (TOML): a pool of volunteer machines, a job, and what goes wrong while it runs.
//! [`ScenarioSpec`] is the file as written (a distribution of machines, fractions of them that
//! churn, crash, freeze or straggle); [`ScenarioSpec::resolve`] draws one concrete [`World`] from
//! it with a seed.
//!
//! ```toml
//! name = "example"                 # default: the file's stem
//! [pool]
//! workers = 100
//! slots = [1, 4]                   # per worker, uniform integers (cores = slots)
//! speed = { median = 1.0, sigma = 0.3, min = 0.3, max = 3.0 }   # log-normal, 1.0 = reference core
//! memory_mb = [4096, 16384]        # uniform
//! disk_mb = [20000, 200000]        # uniform
//! link_kbps = [2000, 100000]       # log-uniform
//! [network]
//! delay_ms = 30                    # one way, every message
//! [job]
//! shape = "bag"                    # or "dag" with depth, width, fan_in
//! tasks = 400                      # bag only
//! mean_s = 600                     # CPU-seconds at speed 1.0, log-normal sizes...
//! cv = 0.5                         # ...with this coefficient of variation
//! estimate_noise = 0.2             # estimate = size x exp(noise x N(0,1)); 0: exact
//! mem_mb = 512                     # estimates given to the scheduler
//! [churn]                          # owners who come back during the job
//! fraction = 0.1
//! at_s = [60, 900]                 # when (after submission), uniform
//! busy_s = [300, 1800]             # for how long, uniform
//! [crashes]                        # disconnects
//! fraction = 0.05
//! at_s = [60, 900]
//! return_fraction = 0.5            # of the crashed, how many restart...
//! down_s = [60, 600]               # ...after this long
//! [freezes]                        # silent workers (connection open, nothing said)
//! fraction = 0.02
//! at_s = [60, 900]
//! thaw_fraction = 0.5
//! for_s = [30, 300]
//! [stragglers]                     # slow only in execution: the join benchmark sees full speed
//! fraction = 0.05
//! slowdown = 10
//! [supervisor]
//! heartbeat_ms = 1000
//! miss_limit = 3
//! limit_h = 48                     # virtual-time cap of one run
//! ```

use std::path::Path;

use serde::Deserialize;

use super::SimError;
use super::world::{Outage, TaskPlan, WorkerPlan, World};
use crate::rng::Rng;

/// `[lo, hi]`.
pub type Range = [f64; 2];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub pool: PoolSpec,
    #[serde(default)]
    pub network: NetworkSpec,
    pub job: JobShape,
    #[serde(default)]
    pub churn: Option<ChurnSpec>,
    #[serde(default)]
    pub crashes: Option<CrashSpec>,
    #[serde(default)]
    pub freezes: Option<FreezeSpec>,
    #[serde(default)]
    pub stragglers: Option<StragglerSpec>,
    #[serde(default)]
    pub supervisor: SupervisorSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub workers: u32,
    #[serde(default = "one_slot")]
    pub slots: [u32; 2],
    #[serde(default)]
    pub speed: SpeedSpec,
    #[serde(default = "default_memory")]
    pub memory_mb: Range,
    #[serde(default = "default_disk")]
    pub disk_mb: Range,
    #[serde(default = "default_link")]
    pub link_kbps: Range,
}

fn one_slot() -> [u32; 2] {
    [1, 1]
}
fn default_memory() -> Range {
    [8192.0, 8192.0]
}
fn default_disk() -> Range {
    [100_000.0, 100_000.0]
}
fn default_link() -> Range {
    [20_000.0, 20_000.0]
}

/// Log-normal nominal speeds, clamped to `[min, max]`; `sigma = 0` makes every worker `median`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedSpec {
    pub median: f64,
    #[serde(default)]
    pub sigma: f64,
    #[serde(default = "min_speed")]
    pub min: f64,
    #[serde(default = "max_speed")]
    pub max: f64,
}

fn min_speed() -> f64 {
    0.05
}
fn max_speed() -> f64 {
    20.0
}

impl Default for SpeedSpec {
    fn default() -> Self {
        Self {
            median: 1.0,
            sigma: 0.0,
            min: min_speed(),
            max: max_speed(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub delay_ms: f64,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self { delay_ms: 20.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    #[default]
    Bag,
    Dag,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobShape {
    #[serde(default)]
    pub shape: Shape,
    /// Bag: how many tasks.
    #[serde(default)]
    pub tasks: Option<u32>,
    /// DAG: levels, tasks per level, and dependencies of each task on the level before (each
    /// task also feeds `fan_in` tasks of the next level: a banded DAG).
    #[serde(default)]
    pub depth: Option<u32>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub fan_in: Option<u32>,
    pub mean_s: f64,
    #[serde(default)]
    pub cv: f64,
    #[serde(default)]
    pub estimate_noise: f64,
    #[serde(default)]
    pub mem_mb: u64,
    #[serde(default)]
    pub disk_mb: u64,
    #[serde(default)]
    pub net_kb: u64,
    #[serde(default)]
    pub out_kb: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    pub fraction: f64,
    pub at_s: Range,
    pub busy_s: Range,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSpec {
    pub fraction: f64,
    pub at_s: Range,
    #[serde(default)]
    pub return_fraction: f64,
    #[serde(default = "zero_range")]
    pub down_s: Range,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSpec {
    pub fraction: f64,
    pub at_s: Range,
    #[serde(default)]
    pub thaw_fraction: f64,
    #[serde(default = "zero_range")]
    pub for_s: Range,
}

fn zero_range() -> Range {
    [0.0, 0.0]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StragglerSpec {
    pub fraction: f64,
    pub slowdown: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSpec {
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_miss_limit")]
    pub miss_limit: u32,
    #[serde(default = "default_limit_h")]
    pub limit_h: f64,
}

fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_miss_limit() -> u32 {
    3
}
fn default_limit_h() -> f64 {
    48.0
}

impl Default for SupervisorSpec {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat_ms(),
            miss_limit: default_miss_limit(),
            limit_h: default_limit_h(),
        }
    }
}

/// Most workers and tasks a scenario may have (a typo of three zeros should fail, not swap).
pub const MAX_WORKERS: u32 = 100_000;
pub const MAX_TASKS: u32 = crate::job::MAX_TASKS as u32;

/// A problem in a spec: the dotted field (`churn.fraction`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn check_fraction(field: &str, v: f64) -> Result<(), FieldError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is not a fraction from 0 to 1")))
    }
}

fn check_range(field: &str, r: Range, min: f64, max: f64) -> Result<(), FieldError> {
    let [lo, hi] = r;
    if !(lo.is_finite() && hi.is_finite()) || lo < min || hi > max || lo > hi {
        return Err(bad(
            field,
            format!("[{lo}, {hi}] must be [lo, hi] with {min} <= lo <= hi <= {max}"),
        ));
    }
    Ok(())
}

fn check_positive(field: &str, v: f64, max: f64) -> Result<(), FieldError> {
    if v.is_finite() && v > 0.0 && v <= max {
        Ok(())
    } else {
        Err(bad(field, format!("{v} must be above 0 and at most {max}")))
    }
}

const DAY_S: f64 = 86_400.0;

impl ScenarioSpec {
    /// Reads and checks a scenario file. Errors name the file, the line and the field.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            file: path.to_owned(),
            source,
        })?;
        let mut spec: ScenarioSpec = toml::from_str(&text).map_err(|e| SimError::Toml {
            file: path.to_owned(),
            message: e.to_string(),
        })?;
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        spec.validate().map_err(|e| SimError::Scenario {
            file: path.to_owned(),
            line: locate(&text, &e.field),
            field: e.field,
            message: e.message,
        })?;
        Ok(spec)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("scenario")
    }

    /// Checks every value; the first problem is returned.
    pub fn validate(&self) -> Result<(), FieldError> {
        let p = &self.pool;
        if p.workers == 0 || p.workers > MAX_WORKERS {
            return Err(bad(
                "pool.workers",
                format!("{} is out of range (1..={MAX_WORKERS})", p.workers),
            ));
        }
        if p.slots[0] == 0 || p.slots[0] > p.slots[1] || p.slots[1] > 256 {
            return Err(bad(
                "pool.slots",
                format!(
                    "[{}, {}] must be [lo, hi] with 1 <= lo <= hi <= 256",
                    p.slots[0], p.slots[1]
                ),
            ));
        }
        let s = &p.speed;
        check_positive("pool.speed.median", s.median, 100.0)?;
        if !(s.sigma.is_finite() && (0.0..=3.0).contains(&s.sigma)) {
            return Err(bad(
                "pool.speed.sigma",
                format!("{} must be from 0 to 3", s.sigma),
            ));
        }
        check_positive("pool.speed.min", s.min, 100.0)?;
        check_positive("pool.speed.max", s.max, 100.0)?;
        if s.min > s.max {
            return Err(bad(
                "pool.speed.min",
                format!("{} is above pool.speed.max = {}", s.min, s.max),
            ));
        }
        check_range("pool.memory_mb", p.memory_mb, 1.0, 1e9)?;
        check_range("pool.disk_mb", p.disk_mb, 1.0, 1e12)?;
        check_range("pool.link_kbps", p.link_kbps, 1.0, 1e9)?;
        let d = self.network.delay_ms;
        if !(d.is_finite() && (0.0..=60_000.0).contains(&d)) {
            return Err(bad(
                "network.delay_ms",
                format!("{d} must be from 0 to 60000"),
            ));
        }
        let j = &self.job;
        match j.shape {
            Shape::Bag => {
                let n = j
                    .tasks
                    .ok_or_else(|| bad("job.tasks", "a bag of tasks needs `tasks`"))?;
                if n == 0 || n > MAX_TASKS {
                    return Err(bad(
                        "job.tasks",
                        format!("{n} is out of range (1..={MAX_TASKS})"),
                    ));
                }
                for (f, v) in [("job.depth", j.depth), ("job.width", j.width)] {
                    if v.is_some() {
                        return Err(bad(f, "only a DAG (shape = \"dag\") has this"));
                    }
                }
            }
            Shape::Dag => {
                if j.tasks.is_some() {
                    return Err(bad(
                        "job.tasks",
                        "a DAG has depth x width tasks; give depth and width instead",
                    ));
                }
                let depth = j
                    .depth
                    .ok_or_else(|| bad("job.depth", "a DAG needs `depth`"))?;
                let width = j
                    .width
                    .ok_or_else(|| bad("job.width", "a DAG needs `width`"))?;
                if depth == 0 || width == 0 {
                    return Err(bad("job.depth", "depth and width must be at least 1"));
                }
                if u64::from(depth) * u64::from(width) > u64::from(MAX_TASKS) {
                    return Err(bad(
                        "job.width",
                        format!(
                            "depth x width = {} tasks; at most {MAX_TASKS}",
                            depth * width
                        ),
                    ));
                }
                let fan_in = j.fan_in.unwrap_or(1);
                if fan_in == 0 || fan_in > width {
                    return Err(bad(
                        "job.fan_in",
                        format!("{fan_in} must be from 1 to the width ({width})"),
                    ));
                }
            }
        }
        check_positive("job.mean_s", j.mean_s, 1e6)?;
        if !(j.cv.is_finite() && (0.0..=10.0).contains(&j.cv)) {
            return Err(bad("job.cv", format!("{} must be from 0 to 10", j.cv)));
        }
        if !(j.estimate_noise.is_finite() && (0.0..=3.0).contains(&j.estimate_noise)) {
            return Err(bad(
                "job.estimate_noise",
                format!("{} must be from 0 to 3", j.estimate_noise),
            ));
        }
        if let Some(c) = &self.churn {
            check_fraction("churn.fraction", c.fraction)?;
            check_range("churn.at_s", c.at_s, 0.0, 30.0 * DAY_S)?;
            check_range("churn.busy_s", c.busy_s, 0.0, 30.0 * DAY_S)?;
        }
        if let Some(c) = &self.crashes {
            check_fraction("crashes.fraction", c.fraction)?;
            check_range("crashes.at_s", c.at_s, 0.0, 30.0 * DAY_S)?;
            check_fraction("crashes.return_fraction", c.return_fraction)?;
            check_range("crashes.down_s", c.down_s, 0.0, 30.0 * DAY_S)?;
        }
        if let Some(c) = &self.freezes {
            check_fraction("freezes.fraction", c.fraction)?;
            check_range("freezes.at_s", c.at_s, 0.0, 30.0 * DAY_S)?;
            check_fraction("freezes.thaw_fraction", c.thaw_fraction)?;
            check_range("freezes.for_s", c.for_s, 0.0, 30.0 * DAY_S)?;
        }
        if let Some(c) = &self.stragglers {
            check_fraction("stragglers.fraction", c.fraction)?;
            if !(c.slowdown.is_finite() && (1.0..=1000.0).contains(&c.slowdown)) {
                return Err(bad(
                    "stragglers.slowdown",
                    format!("{} must be from 1 to 1000", c.slowdown),
                ));
            }
        }
        let sup = &self.supervisor;
        if !crate::supervisor::HEARTBEAT_RANGE_MS.contains(&sup.heartbeat_ms) {
            return Err(bad(
                "supervisor.heartbeat_ms",
                format!(
                    "{} is out of range ({}..={})",
                    sup.heartbeat_ms,
                    crate::supervisor::HEARTBEAT_RANGE_MS.start(),
                    crate::supervisor::HEARTBEAT_RANGE_MS.end()
                ),
            ));
        }
        if !(1..=100).contains(&sup.miss_limit) {
            return Err(bad(
                "supervisor.miss_limit",
                format!("{} is out of range (1..=100)", sup.miss_limit),
            ));
        }
        check_positive("supervisor.limit_h", sup.limit_h, 24.0 * 365.0)?;
        Ok(())
    }

    /// Draws one concrete world: each worker's speed, slots, memory, disk and link; which owners
    /// come back when, which workers crash, freeze or straggle; every task's true size and its
    /// estimate. Workers join at time 0; the job is submitted at 1 s (after every join arrived).
    /// The spec must be valid ([`ScenarioSpec::validate`]).
    pub fn resolve(&self, seed: u64) -> World {
        let mut rng = Rng::new(seed ^ 0x5ce0_a710);
        let p = &self.pool;
        let n = p.workers as usize;
        let mut workers: Vec<WorkerPlan> = (0..n)
            .map(|i| {
                let slots = p.slots[0] + rng.below(u64::from(p.slots[1] - p.slots[0] + 1)) as u32;
                let speed = (p.speed.median * (p.speed.sigma * normal(&mut rng)).exp())
                    .clamp(p.speed.min, p.speed.max);
                WorkerPlan {
                    name: format!("w{:04}", i + 1),
                    speed,
                    slowdown: 1.0,
                    slots,
                    memory_mb: uniform(&mut rng, p.memory_mb).round() as u64,
                    disk_mb: uniform(&mut rng, p.disk_mb).round() as u64,
                    link_kbps: log_uniform(&mut rng, p.link_kbps),
                    join_s: 0.0,
                    leave_s: None,
                    busy: Vec::new(),
                    crash: None,
                    freeze: None,
                }
            })
            .collect();
        let submit_s = 1.0;
        if let Some(c) = &self.churn {
            for i in pick(&mut rng, n, c.fraction) {
                let at = submit_s + uniform(&mut rng, c.at_s);
                let busy = uniform(&mut rng, c.busy_s);
                workers[i].busy.push((at, at + busy));
            }
        }
        if let Some(c) = &self.crashes {
            let chosen = pick(&mut rng, n, c.fraction);
            let back = (chosen.len() as f64 * c.return_fraction).round() as usize;
            for (k, i) in chosen.into_iter().enumerate() {
                let at = submit_s + uniform(&mut rng, c.at_s);
                let down = uniform(&mut rng, c.down_s);
                workers[i].crash = Some(Outage {
                    at_s: at,
                    until_s: (k < back).then_some(at + down),
                });
            }
        }
        if let Some(c) = &self.freezes {
            let chosen = pick(&mut rng, n, c.fraction);
            let thaw = (chosen.len() as f64 * c.thaw_fraction).round() as usize;
            for (k, i) in chosen.into_iter().enumerate() {
                let at = submit_s + uniform(&mut rng, c.at_s);
                let len = uniform(&mut rng, c.for_s);
                workers[i].freeze = Some(Outage {
                    at_s: at,
                    until_s: (k < thaw).then_some(at + len),
                });
            }
        }
        if let Some(c) = &self.stragglers {
            for i in pick(&mut rng, n, c.fraction) {
                workers[i].slowdown = c.slowdown;
            }
        }
        let tasks = self.job.tasks(&mut rng);
        World {
            name: self.name().to_owned(),
            workers,
            tasks,
            delay_s: self.network.delay_ms / 1000.0,
            submit_s,
            heartbeat_ms: self.supervisor.heartbeat_ms,
            miss_limit: self.supervisor.miss_limit,
            limit_s: self.supervisor.limit_h * 3600.0,
        }
    }
}

impl JobShape {
    /// True sizes (log-normal with mean `mean_s`, coefficient of variation `cv`), estimates
    /// (noisy by `estimate_noise`) and dependencies.
    pub fn tasks(&self, rng: &mut Rng) -> Vec<TaskPlan> {
        let (n, deps): (usize, Box<dyn Fn(usize) -> Vec<usize>>) = match self.shape {
            Shape::Bag => (self.tasks.unwrap_or(1) as usize, Box::new(|_| Vec::new())),
            Shape::Dag => {
                let depth = self.depth.unwrap_or(1) as usize;
                let width = self.width.unwrap_or(1) as usize;
                let fan_in = self.fan_in.unwrap_or(1) as usize;
                (
                    depth * width,
                    Box::new(move |i| {
                        let (level, pos) = (i / width, i % width);
                        if level == 0 {
                            return Vec::new();
                        }
                        let mut d: Vec<usize> = (0..fan_in)
                            .map(|k| (level - 1) * width + (pos + k) % width)
                            .collect();
                        d.sort_unstable();
                        d
                    }),
                )
            }
        };
        (0..n)
            .map(|i| {
                let size_s = lognormal_mean(rng, self.mean_s, self.cv);
                let estimate_s = size_s * (self.estimate_noise * normal(rng)).exp();
                TaskPlan {
                    size_s,
                    estimate_s,
                    deps: deps(i),
                    mem_mb: self.mem_mb,
                    disk_mb: self.disk_mb,
                    net_kb: self.net_kb,
                    out_kb: self.out_kb,
                }
            })
            .collect()
    }
}

/// A uniform number in `[0, 1)`.
pub(crate) fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal number (Box-Muller).
pub(crate) fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub(crate) fn uniform(rng: &mut Rng, [lo, hi]: Range) -> f64 {
    lo + (hi - lo) * unit(rng)
}

fn log_uniform(rng: &mut Rng, [lo, hi]: Range) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * unit(rng)).exp()
}

/// Log-normal with the given mean and coefficient of variation (`cv = 0`: always `mean`).
pub(crate) fn lognormal_mean(rng: &mut Rng, mean: f64, cv: f64) -> f64 {
    let sigma2 = (1.0 + cv * cv).ln();
    let mu = mean.ln() - sigma2 / 2.0;
    (mu + sigma2.sqrt() * normal(rng)).exp()
}

/// `round(fraction x n)` distinct indices out of `0..n`, ascending (a seeded partial shuffle).
fn pick(rng: &mut Rng, n: usize, fraction: f64) -> Vec<usize> {
    let k = ((n as f64) * fraction).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k.min(n));
    idx
}

/// The line (from 1) where a dotted field (`churn.fraction`, `pool.speed.sigma`) is set: its key
/// inside its `[table]`, or an inline table's key on the line of its parent; else the table's
/// header; else `None`.
fn locate(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field.split('.').collect();
    let (table, key) = match parts.as_slice() {
        [key] => ("", *key),
        [table, key] => (*table, *key),
        [table, parent, _] => (*table, *parent),
        _ => return None,
    };
    let mut current = "";
    let mut header = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = name.trim();
            if current == table {
                header = Some(i + 1);
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(i + 1);
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pool]
workers = 10
speed = { median = 1.0, sigma = 0.3 }
[job]
tasks = 20
mean_s = 60
[churn]
fraction = 0.2
at_s = [10, 100]
busy_s = [30, 60]
"#;

    fn load(text: &str) -> Result<ScenarioSpec, SimError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        ScenarioSpec::load(&path)
    }

    #[test]
    fn a_bad_value_is_reported_with_its_file_line_and_field() {
        let text = GOOD.replace("fraction = 0.2", "fraction = 1.5");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("s.toml line 9: churn.fraction"), "{e}");
        assert!(e.contains("1.5 is not a fraction"), "{e}");
        let text = GOOD.replace("sigma = 0.3", "sigma = -1");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("line 4: pool.speed.sigma"), "{e}");
        assert!(load(GOOD).is_ok());
    }

    #[test]
    fn an_unknown_or_missing_field_is_reported_with_its_line() {
        let text = GOOD.replace("busy_s", "bussy_s");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("s.toml") && e.contains("line 11"), "{e}");
        let text = GOOD.replace("tasks = 20\n", "");
        let e = load(&text).unwrap_err().to_string();
        assert!(
            e.contains("job.tasks") && e.contains("needs `tasks`"),
            "{e}"
        );
    }

    #[test]
    fn churn_picks_the_stated_fraction_of_workers_within_the_stated_window() {
        let spec: ScenarioSpec = toml::from_str(GOOD).unwrap();
        let world = spec.resolve(3);
        let churned: Vec<_> = world
            .workers
            .iter()
            .filter(|w| !w.busy.is_empty())
            .collect();
        assert_eq!(churned.len(), 2);
        for w in churned {
            let (a, b) = w.busy[0];
            assert!((11.0..=101.0).contains(&a) && (30.0..=60.0).contains(&(b - a)));
        }
        assert_eq!(world.tasks.len(), 20);
    }
}
