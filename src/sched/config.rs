//! The scheduler's parameters. Plain data: the supervisor's CLI and config file fill it, the
//! scheduler only reads it.

use std::time::Duration;

/// Scheduling parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often workers send heartbeats.
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before it is lost.
    pub miss_limit: u32,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            miss_limit: 3,
            critical_replicas: 2,
            max_failures: 3,
            seed: 0,
            restart_grace: Duration::from_secs(10),
            poison_window: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Silence after which a worker is lost.
    pub fn loss_after(&self) -> Duration {
        self.heartbeat * self.miss_limit.max(1)
    }

    /// Silence after which the worker is asked for a status acknowledgement: one and a half
    /// heartbeats, i.e. one clearly missed.
    pub(super) fn probe_after(&self) -> Duration {
        self.heartbeat + self.heartbeat / 2
    }
}
