//! Read-only views of the scheduler's state for the status API and dashboards: what a worker is
//! doing, where each task of an unfinished job stands. Built on request; nothing here decides.

use super::capacity::{CapacityClass, KindSpeed, Link};
use crate::proto::{ActivityKind, Hardware, ReplicaId, TaskId, WorkerId};

/// What a worker is doing, as far as the scheduler knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Connected and taking tasks.
    Live,
    /// Connected, but its owner is using the machine: its replicas are paused.
    Busy(ActivityKind),
    /// Connected, waiting for its machine to become idle (it joined while not idle).
    Waiting,
    /// Ran replicas before a supervisor restart; expected back within the restart grace.
    Reconnecting,
    /// Gone. Kept only while replicas that may come back with it are attached.
    Lost,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Live => "live",
            WorkerState::Busy(_) => "busy",
            WorkerState::Waiting => "waiting",
            WorkerState::Reconnecting => "reconnecting",
            WorkerState::Lost => "lost",
        }
    }

    /// Whether the worker is connected (whether or not it takes tasks).
    pub(super) fn is_connected(self) -> bool {
        matches!(
            self,
            WorkerState::Live | WorkerState::Busy(_) | WorkerState::Waiting
        )
    }

    /// Whether a replica on a worker in this state counts as running. A reconnecting worker
    /// counts until the restart grace ends, so that a supervisor restart does not double every
    /// task.
    pub(super) fn hosts_live_replicas(self) -> bool {
        matches!(self, WorkerState::Live | WorkerState::Reconnecting)
    }
}

/// A task's place in a job, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    /// Dependencies not done yet.
    Waiting,
    /// Ready, with no replica running.
    Ready,
    Running,
    Done,
}

impl TaskPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskPhase::Waiting => "waiting",
            TaskPhase::Ready => "ready",
            TaskPhase::Running => "running",
            TaskPhase::Done => "done",
        }
    }
}

/// A live view of one unfinished job, for the status API.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: TaskId,
    pub phase: TaskPhase,
    /// The tasks it waits for (the job's DAG edges).
    pub deps: Vec<TaskId>,
    /// Planned for more than one replica from the start.
    pub critical: bool,
    /// Why (`criticality::CriticalReason`, as text: "gates 16 tasks", "critical path").
    pub critical_reasons: Vec<String>,
    /// Replicas planned from the start.
    pub planned_replicas: u32,
    pub failures: u32,
    pub replicas: Vec<ReplicaView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaView {
    pub replica: ReplicaId,
    pub worker: WorkerId,
    pub worker_state: WorkerState,
    pub progress: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub name: String,
    pub state: WorkerState,
    pub hardware: Option<Hardware>,
    pub replicas: Vec<ReplicaId>,
    /// Speed from the join benchmark, relative to the reference core.
    pub bench_speed: f64,
    /// Measured speed per task kind (history kept under the worker's stable id).
    pub history: Vec<KindSpeed>,
    /// The speed placement uses when the kind is not known: history first, else the benchmark.
    pub speed: f64,
    pub link: Option<Link>,
    pub class: CapacityClass,
    /// Why a connected worker takes no tasks though it is idle (a slow link, no link measured
    /// yet); `None` when it takes them or is not idle.
    pub held_back: Option<String>,
}
