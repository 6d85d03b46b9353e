//! The scheduler's parameters. Plain data: the supervisor's CLI and config file fill it, the
//! scheduler only reads it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the scheduler uses redundancy and when it reissues. One scheduler, four policies: the
/// simulator compares them on the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// This design: critical tasks replicated from the start within a redundancy budget,
    /// capacity-aware placement, pool saturation, a job progress monitor, and reissue the moment
    /// a worker is lost or its owner returns.
    #[default]
    Idlegrid,
    /// BOINC-like: no replicas; a task is reissued only when its deadline (4x its estimate)
    /// passes or its worker's connection closes. Silence and owner activity change nothing.
    Deadline,
    /// No redundancy; reissue when a loss (silence, a closed connection, the owner) is detected.
    None,
    /// Spark-like: like `none`, plus one speculative copy of a task running longer than 1.5x the
    /// median of its job's finished tasks once 75% of them are done.
    Speculative,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Idlegrid,
        Policy::Deadline,
        Policy::None,
        Policy::Speculative,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Idlegrid => "idlegrid",
            Policy::Deadline => "deadline",
            Policy::None => "none",
            Policy::Speculative => "speculative",
        }
    }

    /// Critical tasks get extra replicas from the start, within the budget.
    pub fn replicates_critical(self) -> bool {
        self == Policy::Idlegrid
    }

    /// Free workers take replicas of running tasks; jobs are watched for stalls and stragglers.
    pub fn saturates(self) -> bool {
        self == Policy::Idlegrid
    }

    /// The scheduler looks at running jobs every `progress_interval` (stalls and stragglers for
    /// `idlegrid`, speculative copies for `speculative`).
    pub fn monitors_progress(self) -> bool {
        matches!(self, Policy::Idlegrid | Policy::Speculative)
    }

    /// A worker that stays silent past the loss bound, or whose owner returns, stops counting as
    /// running its replicas (rather than keeping them until a deadline).
    pub fn detects_loss(self) -> bool {
        self != Policy::Deadline
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown policy {s:?}; known: idlegrid, deadline, none, speculative")
            })
    }
}

/// Credits per CPU-second on a worker of each capacity class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassRates {
    pub high: f64,
    pub standard: f64,
    pub low: f64,
}

impl Default for ClassRates {
    fn default() -> Self {
        Self {
            high: 2.0,
            standard: 1.0,
            low: 0.5,
        }
    }
}

impl FromStr for ClassRates {
    type Err = String;
    /// `high=2,standard=1,low=0.5`; classes not named keep their default.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rates = ClassRates::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not CLASS=RATE (e.g. high=2)"))?;
            let value: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("rate {value:?} for {name} is not a number >= 0"))?;
            match name.trim() {
                "high" => rates.high = value,
                "standard" => rates.standard = value,
                "low" => rates.low = value,
                other => {
                    return Err(format!(
                        "unknown capacity class {other:?}; known: high, standard, low"
                    ));
                }
            }
        }
        Ok(rates)
    }
}

/// Scheduling parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often workers send heartbeats.
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before it is lost.
    pub miss_limit: u32,
    /// Silence after which a worker is sent a status request it must acknowledge. `None`: one and
    /// a half heartbeats (one clearly missed).
    pub status_request: Option<Duration>,
    /// Replicas of a critical task, unless its job says otherwise.
    pub critical_replicas: u32,
    /// Failed replicas of one task after which its job fails.
    pub max_failures: u32,
    /// Seed of the tie-breaking randomness.
    pub seed: u64,
    /// After a supervisor restart, how long workers that ran replicas have to reconnect, counted
    /// from [`super::Scheduler::begin_restart_grace`]. Longer than the loss bound: clients back off
    /// between attempts (up to ~6.25 s), and a restart must not double every task.
    pub restart_grace: Duration,
    /// A worker whose connection closes within this long after a replica was assigned to it
    /// counts as a failure of that task: a task that crashes (or gets OOM-killed with) every
    /// worker it runs on must fail its job at `max_failures`, not roam the pool forever.
    pub poison_window: Duration,
    pub policy: Policy,
    /// Extra replicas of critical tasks may cost at most this fraction of a job's estimated CPU
    /// time, unless the job sets its own `redundancy_budget`.
    pub redundancy_budget: f64,
    /// How often each running job is checked for stalls and stragglers.
    pub progress_interval: Duration,
    /// A job with running tasks and no task finished for this long is stalled: its running tasks
    /// get replicas on faster free workers.
    pub stall_after: Duration,
    /// A replica projected (from its progress) or observed to take this many times its expected
    /// time on its worker, and this many times its job's median, is a straggler.
    pub straggler_factor: f64,
    /// Workers whose measured link is slower than this (kbit/s, either direction) get no tasks.
    pub min_link_kbps: f64,
    /// A worker gets tasks only once its link was measured ([`super::Scheduler::handle_link`]).
    /// The supervisor sets it when it probes links; tests and the simulator may not.
    pub require_link: bool,
    /// Credits per CPU-second by capacity class.
    pub class_rates: ClassRates,
    /// Disagreements with a quorum after which a worker gets no quorum tasks, unless its
    /// agreements outnumber its disagreements ten to one ([`super::Reputation::flagged`]).
    pub distrust_after: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            miss_limit: 3,
            status_request: None,
            critical_replicas: 2,
            max_failures: 3,
            seed: 0,
            restart_grace: Duration::from_secs(10),
            poison_window: Duration::from_secs(10),
            policy: Policy::Idlegrid,
            redundancy_budget: 0.25,
            progress_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
            straggler_factor: 2.0,
            min_link_kbps: 100.0,
            require_link: false,
            class_rates: ClassRates::default(),
            distrust_after: 3,
        }
    }
}

impl Config {
    /// Silence after which a worker is lost.
    pub fn loss_after(&self) -> Duration {
        self.heartbeat * self.miss_limit.max(1)
    }

    /// Silence after which the worker is asked for a status acknowledgement.
    pub fn probe_after(&self) -> Duration {
        self.status_request
            .unwrap_or(self.heartbeat + self.heartbeat / 2)
    }
}
