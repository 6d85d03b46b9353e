//! The decisions the scheduler hands to the I/O shell ([`Output`]) and the reasons they carry:
//! why a worker was lost, why a task was reissued, why a replica started, how a job ended.
//! Types only; the scheduler decides, the shell carries out.

use std::fmt;
use std::time::Duration;

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
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossCause::Disconnected => f.write_str("connection closed"),
            LossCause::Silent(d) => write!(f, "silent for {} ms", d.as_millis()),
            LossCause::NotReconnected => {
                f.write_str("did not reconnect after a supervisor restart")
            }
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
    /// The worker reconnected without it.
    Dropped {
        worker: WorkerId,
    },
    /// The worker's result could not be committed to the store.
    NotStored {
        worker: WorkerId,
        error: String,
    },
}

impl ReissueCause {
    /// A short machine-friendly label: `worker_lost`, `owner_active`, `failed`, `dropped`,
    /// `not_stored`.
    pub fn label(&self) -> &'static str {
        match self {
            ReissueCause::WorkerLost { .. } => "worker_lost",
            ReissueCause::OwnerActive { .. } => "owner_active",
            ReissueCause::Failed { .. } => "failed",
            ReissueCause::Dropped { .. } => "dropped",
            ReissueCause::NotStored { .. } => "not_stored",
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
            ReissueCause::Dropped { worker } => {
                write!(f, "worker {worker} reconnected without it")
            }
            ReissueCause::NotStored { worker, error } => {
                write!(
                    f,
                    "result from worker {worker} could not be stored: {error}"
                )
            }
        }
    }
}

/// Why a replica was started.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignReason {
    /// The task's first replica.
    First,
    /// An extra replica of a critical task.
    Redundant,
    /// The task had no live replica left.
    Reissue(ReissueCause),
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
    /// Start a replica. `rate` is what a second of it costs on this worker.
    Assign {
        worker: WorkerId,
        assignment: Assignment,
        reason: AssignReason,
        rate: f64,
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
    JobFinished {
        job: JobId,
        outcome: JobOutcome,
    },
}
