//! The decisions the scheduler hands to the I/O shell ([`Output`]) and the reasons they carry:
//! why a worker was lost, why a task was reissued, why a replica started, how a job ended.
//! Types only; the scheduler decides, the shell carries out.

use std::fmt;
use std::time::Duration;

use super::capacity::{CapacityClass, KindSpeed};
use crate::proto::{ActivityKind, Assignment, JobId, ReplicaId, TaskId, WorkerId};

/// Why a worker stopped counting as a running host of its replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum LossCause {
    /// Its connection closed (crash, shutdown, network reset).
    Disconnected,
    /// Nothing arrived for this long while the connection stayed open.
    Silent(Duration),
    /// It ran replicas before a supervisor restart and did not reconnect in time.
    NotReconnected,
    /// It said it was leaving (`WorkerMsg::Leaving`) and handed its replicas back.
    Left,
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossCause::Disconnected => f.write_str("connection closed"),
            LossCause::Silent(d) => write!(f, "silent for {} ms", d.as_millis()),
            LossCause::NotReconnected => {
                f.write_str("did not reconnect after a supervisor restart")
            }
            LossCause::Left => f.write_str("left the pool"),
        }
    }
}

/// Why a task got a new replica after it had one.
#[derive(Debug, Clone, PartialEq)]
pub enum ReissueCause {
    WorkerLost {
        worker: WorkerId,
        cause: LossCause,
    },
    OwnerActive {
        worker: WorkerId,
        kind: ActivityKind,
    },
    Failed {
        worker: WorkerId,
        error: String,
    },
    /// The worker left the pool (its volunteer quit) and handed the replica back.
    Left {
        worker: WorkerId,
    },
    /// The worker reconnected without it.
    Dropped {
        worker: WorkerId,
    },
    /// The worker's result could not be committed to the store.
    NotStored {
        worker: WorkerId,
        error: String,
    },
    /// A replica is running far longer than expected on its worker and than its job's finished
    /// tasks (progress monitor): another replica goes to a faster free worker. The slow one keeps
    /// running; the first to finish wins.
    Straggler {
        worker: WorkerId,
        elapsed: Duration,
        expected: Duration,
    },
    /// The job finished no task for this long (progress monitor): its running tasks get another
    /// replica.
    Stalled {
        idle: Duration,
    },
    /// `deadline` policy: the replica's deadline (4x the task's estimate) passed.
    DeadlinePassed {
        worker: WorkerId,
        deadline: Duration,
    },
}

impl ReissueCause {
    /// A short machine-friendly label: `worker_lost`, `owner_active`, `failed`, `dropped`,
    /// `not_stored`, `straggler`, `stalled`, `deadline`, `left`.
    pub fn label(&self) -> &'static str {
        match self {
            ReissueCause::WorkerLost { .. } => "worker_lost",
            ReissueCause::OwnerActive { .. } => "owner_active",
            ReissueCause::Failed { .. } => "failed",
            ReissueCause::Dropped { .. } => "dropped",
            ReissueCause::NotStored { .. } => "not_stored",
            ReissueCause::Straggler { .. } => "straggler",
            ReissueCause::Stalled { .. } => "stalled",
            ReissueCause::DeadlinePassed { .. } => "deadline",
            ReissueCause::Left { .. } => "left",
        }
    }
}

impl fmt::Display for ReissueCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReissueCause::WorkerLost { worker, cause } => {
                write!(f, "worker {worker} lost ({cause})")
            }
            ReissueCause::OwnerActive { worker, kind } => {
                write!(f, "owner of worker {worker} came back ({})", kind.as_str())
            }
            ReissueCause::Failed { worker, error } => {
                write!(f, "failed on worker {worker}: {error}")
            }
            ReissueCause::Left { worker } => write!(f, "worker {worker} left and handed it back"),
            ReissueCause::Dropped { worker } => {
                write!(f, "worker {worker} reconnected without it")
            }
            ReissueCause::NotStored { worker, error } => {
                write!(
                    f,
                    "result from worker {worker} could not be stored: {error}"
                )
            }
            ReissueCause::Straggler {
                worker,
                elapsed,
                expected,
            } => write!(
                f,
                "straggler on worker {worker}: running {:.1} s, expected {:.1} s",
                elapsed.as_secs_f64(),
                expected.as_secs_f64()
            ),
            ReissueCause::Stalled { idle } => {
                write!(
                    f,
                    "job stalled: no task finished for {:.1} s",
                    idle.as_secs_f64()
                )
            }
            ReissueCause::DeadlinePassed { worker, deadline } => write!(
                f,
                "deadline of {:.1} s passed on worker {worker}",
                deadline.as_secs_f64()
            ),
        }
    }
}

/// Why a replica was started.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignReason {
    /// The task's first replica.
    First,
    /// An extra replica of a critical task (within the job's redundancy budget).
    Redundant,
    /// A replica of a running task on a worker that would otherwise idle (pool saturation).
    Saturation,
    /// `speculative` policy: a copy of a task running longer than 1.5x its job's median.
    Speculative,
    /// The task had no live replica left, or the progress monitor gave it another
    /// ([`ReissueCause::Straggler`], [`ReissueCause::Stalled`]).
    Reissue(ReissueCause),
}

impl AssignReason {
    /// `first`, `redundant`, `saturation`, `speculative`, or the reissue cause's label.
    pub fn label(&self) -> &'static str {
        match self {
            AssignReason::First => "first",
            AssignReason::Redundant => "redundant",
            AssignReason::Saturation => "saturation",
            AssignReason::Speculative => "speculative",
            AssignReason::Reissue(cause) => cause.label(),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed,
    Failed { task: TaskId, error: String },
    Cancelled,
}

/// A decision for the I/O shell to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Answer a worker's hello: which held replicas to keep and which to drop.
    Welcome {
        worker: WorkerId,
        keep: Vec<ReplicaId>,
        drop: Vec<ReplicaId>,
    },
    /// Start a replica. `rate` is what a CPU-second of it costs on this worker, the rate of its
    /// capacity `class` at the time of assignment.
    Assign {
        worker: WorkerId,
        assignment: Assignment,
        reason: AssignReason,
        class: CapacityClass,
        rate: f64,
        /// A reissue: how long its task had been without a live replica, from the event that
        /// left it so.
        waited: Option<Duration>,
    },
    Cancel {
        worker: WorkerId,
        replica: ReplicaId,
        reason: String,
    },
    StatusRequest {
        worker: WorkerId,
        nonce: u64,
    },
    /// The worker no longer counts; if its connection is still open, close it. `replicas` were
    /// attached to it (they may come back if it reconnects holding them).
    WorkerLost {
        worker: WorkerId,
        cause: LossCause,
        replicas: Vec<ReplicaId>,
    },
    TaskDone {
        job: JobId,
        task: TaskId,
        replica: ReplicaId,
        worker: WorkerId,
    },
    /// A quorum task's output was agreed by `agreed` (the first gave it); `dissent` reported
    /// something else.
    Validated {
        job: JobId,
        task: TaskId,
        agreed: Vec<WorkerId>,
        dissent: Vec<WorkerId>,
    },
    /// The worker disagreed with quorums often enough to get no more quorum tasks.
    WorkerFlagged {
        worker: WorkerId,
        agreed: u32,
        disagreed: u32,
    },
    JobFinished {
        job: JobId,
        outcome: JobOutcome,
    },
    /// The worker's measured speed for a task kind changed (keep it under its stable id:
    /// [`super::Scheduler::restore_history`] gives it back after a restart or reconnect).
    Speed {
        worker: WorkerId,
        speed: KindSpeed,
    },
}
