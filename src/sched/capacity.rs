//! What a worker can take and what its time costs. Its capacity combines three sources:
//! - the join benchmark and hardware it reports (single-core speed, cores, memory, disk);
//! - measured history: an exponentially weighted speed per task kind, from the executions the
//!   supervisor observes (kept under the worker's stable id, so it survives restarts);
//! - its link: throughput both ways over its WebSocket, measured by the supervisor.
//!
//! From these it gets a capacity class (high / standard / low), which orders placement and sets
//! the rate a CPU-second is charged at.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::ClassRates;
use crate::proto::Hardware;

/// Single-core speed of the reference worker, in million kernel steps per second (see
/// `runtime::bench_mops`): one core of the 2-core CI machine. Speeds are relative to it.
pub const REFERENCE_MOPS: f64 = 400.0;

/// Weight of the newest execution in a worker's speed for a kind.
pub const HISTORY_ALPHA: f64 = 0.3;

/// Relative speed (1.0 = the reference core) at or above which a worker is `high` class...
pub const HIGH_SPEED: f64 = 1.25;
/// ...and below which it is `low`.
pub const LOW_SPEED: f64 = 0.75;
/// A link slower than this (kbit/s, the slower direction) makes a worker `low` class; a high
/// class worker needs at least [`HIGH_LINK_KBPS`].
pub const LOW_LINK_KBPS: f64 = 1_000.0;
pub const HIGH_LINK_KBPS: f64 = 10_000.0;

/// A worker's capacity class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityClass {
    Low,
    Standard,
    High,
}

impl CapacityClass {
    pub const ALL: [CapacityClass; 3] = [
        CapacityClass::High,
        CapacityClass::Standard,
        CapacityClass::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CapacityClass::High => "high",
            CapacityClass::Standard => "standard",
            CapacityClass::Low => "low",
        }
    }

    /// Credits per CPU-second on a worker of this class.
    pub fn rate(self, rates: &ClassRates) -> f64 {
        match self {
            CapacityClass::High => rates.high,
            CapacityClass::Standard => rates.standard,
            CapacityClass::Low => rates.low,
        }
    }
}

impl fmt::Display for CapacityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's measured link, in kbit/s each way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Worker to supervisor.
    pub up_kbps: f64,
    /// Supervisor to worker.
    pub down_kbps: f64,
}

impl Link {
    /// The slower direction.
    pub fn kbps(&self) -> f64 {
        self.up_kbps.min(self.down_kbps)
    }
}

/// A worker's measured speed for one task kind, relative to the reference core: the task's
/// CPU estimate divided by the CPU time it took, exponentially weighted over `samples`
/// executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindSpeed {
    pub kind: String,
    pub speed: f64,
    pub samples: u32,
}

/// Measured history of one worker, by task kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    kinds: BTreeMap<String, (f64, u32)>,
}

impl History {
    pub fn from_speeds(speeds: impl IntoIterator<Item = KindSpeed>) -> Self {
        let kinds = speeds
            .into_iter()
            .filter(|k| k.speed.is_finite() && k.speed > 0.0 && k.samples > 0)
            .map(|k| (k.kind, (k.speed, k.samples)))
            .collect();
        Self { kinds }
    }

    /// Folds one execution in: `speed` is estimate / CPU time. Returns the kind's new value.
    pub fn observe(&mut self, kind: &str, speed: f64) -> Option<KindSpeed> {
        if !(speed.is_finite() && speed > 0.0) {
            return None;
        }
        // One wild measurement (a task paused for a minute, a clock step) must not make or
        // break a worker: clamp each sample to 20x either way.
        let speed = speed.clamp(0.05, 20.0);
        let entry = self.kinds.entry(kind.to_owned()).or_insert((speed, 0));
        if entry.1 > 0 {
            entry.0 += HISTORY_ALPHA * (speed - entry.0);
        }
        entry.1 = entry.1.saturating_add(1);
        Some(KindSpeed {
            kind: kind.to_owned(),
            speed: entry.0,
            samples: entry.1,
        })
    }

    /// Speed for a kind: its own history, else the mean over the kinds measured (weighted by
    /// samples), else `None`.
    pub fn speed(&self, kind: Option<&str>) -> Option<f64> {
        if let Some((s, _)) = kind.and_then(|k| self.kinds.get(k)) {
            return Some(*s);
        }
        let (sum, n) = self.kinds.values().fold((0.0, 0u64), |(sum, n), (s, k)| {
            (sum + s * f64::from(*k), n + u64::from(*k))
        });
        (n > 0).then(|| sum / n as f64)
    }

    pub fn speeds(&self) -> Vec<KindSpeed> {
        self.kinds
            .iter()
            .map(|(kind, (speed, samples))| KindSpeed {
                kind: kind.clone(),
                speed: *speed,
                samples: *samples,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// Speed from the join benchmark, relative to the reference core (1.0 when unknown).
pub fn bench_speed(hw: Option<&Hardware>) -> f64 {
    match hw {
        Some(hw) if hw.bench_mops.is_finite() && hw.bench_mops > 0.0 => {
            hw.bench_mops / REFERENCE_MOPS
        }
        _ => 1.0,
    }
}

/// The speed a task of `kind` is expected to run at on this worker: measured history first,
/// the join benchmark otherwise.
pub fn expected_speed(hw: Option<&Hardware>, history: Option<&History>, kind: Option<&str>) -> f64 {
    history
        .and_then(|h| h.speed(kind))
        .unwrap_or_else(|| bench_speed(hw))
}

/// The class of a worker from its expected speed and its link (unknown: not held against it).
pub fn class_of(speed: f64, link: Option<&Link>) -> CapacityClass {
    let kbps = link.map_or(f64::INFINITY, Link::kbps);
    if speed < LOW_SPEED || kbps < LOW_LINK_KBPS {
        CapacityClass::Low
    } else if speed >= HIGH_SPEED && kbps >= HIGH_LINK_KBPS {
        CapacityClass::High
    } else {
        CapacityClass::Standard
    }
}

/// How many replicas a worker runs at once: its configured slots, but never more than its cores
/// (a slot without a core only makes every task on the machine slower, and the owner's too).
pub(super) fn slot_cap(hw: &Hardware) -> usize {
    hw.slots.min(hw.cores.max(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_weights_new_executions_and_falls_back_to_other_kinds() {
        let mut h = History::default();
        assert_eq!(h.speed(Some("spin")), None);
        assert_eq!(h.observe("spin", 2.0).unwrap().speed, 2.0);
        let s = h.observe("spin", 1.0).unwrap();
        assert!((s.speed - 1.7).abs() < 1e-9 && s.samples == 2);
        // Another kind, never run here, borrows the mean of what was measured.
        assert!((h.speed(Some("primes")).unwrap() - 1.7).abs() < 1e-9);
        assert_eq!(h.observe("spin", f64::NAN), None);
    }

    #[test]
    fn class_needs_both_speed_and_link() {
        let fast = Link {
            up_kbps: 50_000.0,
            down_kbps: 50_000.0,
        };
        let slow = Link {
            up_kbps: 500.0,
            down_kbps: 50_000.0,
        };
        assert_eq!(class_of(2.0, Some(&fast)), CapacityClass::High);
        assert_eq!(class_of(2.0, None), CapacityClass::High);
        assert_eq!(class_of(2.0, Some(&slow)), CapacityClass::Low);
        assert_eq!(class_of(1.0, Some(&fast)), CapacityClass::Standard);
        assert_eq!(class_of(0.5, Some(&fast)), CapacityClass::Low);
    }
}
