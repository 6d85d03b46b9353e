//! Runs assigned replicas on a fixed pool of OS threads, off the async runtime: one thread per
//! slot, so a worker never computes more tasks at once than its CPU cap. A finished replica's
//! outcome is shaped (serialised, size-checked) and saved to the outbox on its task thread, then
//! goes back to the engine on a channel, so the engine's loop never waits on a big write.
//!
//! Owns the threads and the queue; knows nothing about the connection.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc;

use super::outbox::{Outcome, Store};
use crate::proto::{Assignment, Execution, Payload, ReplicaId, TaskId};
use crate::runtime::{self, TaskControl, TaskError};

/// A replica that stopped running, one way or another.
#[derive(Debug)]
pub struct Finished {
    pub replica: ReplicaId,
    /// `None` when a cancel stopped it: only its `execution` is reported. `Some` is already in
    /// the outbox.
    pub outcome: Option<Outcome>,
    /// What it used until it stopped.
    pub execution: Execution,
}

/// Where finished outcomes go: the outbox's store and the pool's output limit (from the
/// latest welcome).
#[derive(Debug, Clone)]
pub struct Sink {
    pub finished: mpsc::UnboundedSender<Finished>,
    pub store: Store,
    pub max_output_bytes: Arc<AtomicU64>,
}

struct Queued {
    assignment: Assignment,
    ctl: Arc<TaskControl>,
}

struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    ready: Condvar,
    stopping: AtomicBool,
}

pub struct Executor {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Executor {
    /// Starts `slots` task threads.
    pub fn new(slots: usize, sink: Sink) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let threads = (0..slots.max(1))
            .map(|i| {
                let shared = shared.clone();
                let sink = sink.clone();
                std::thread::Builder::new()
                    .name(format!("idlegrid-task-{i}"))
                    .spawn(move || task_thread(&shared, &sink))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { shared, threads })
    }

    /// Queues a replica; it starts as soon as a task thread is free. The returned control
    /// cancels or pauses it.
    pub fn start(&self, assignment: Assignment) -> Arc<TaskControl> {
        let ctl = Arc::new(TaskControl::new());
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(Queued {
            assignment,
            ctl: ctl.clone(),
        });
        self.shared.ready.notify_one();
        ctl
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            for q in queue.drain(..) {
                q.ctl.cancel();
            }
        }
        self.shared.ready.notify_all();
        // Running tasks are cancelled by their owners (the engine) before the executor goes; a
        // thread still computing is left to finish on its own rather than block shutdown.
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn task_thread(shared: &Shared, sink: &Sink) {
    lower_priority();
    loop {
        let next = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(q) = queue.pop_front() {
                    break q;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Queued { assignment, ctl } = next;
        let cpu_start = runtime::thread_cpu_time();
        let result = if ctl.is_cancelled() {
            Err(TaskError::Cancelled)
        } else {
            std::panic::catch_unwind(AssertUnwindSafe(|| match inline_deps(&assignment) {
                Ok(deps) => runtime::run(&assignment.kind, &assignment.input, &deps, &ctl),
                Err(e) => Err(e),
            }))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(TaskError::BadInput(format!("task kernel panicked: {msg}")))
            })
        };
        let execution = Execution {
            wall_ms: ctl.busy_time().as_millis() as u64,
            cpu_ms: runtime::thread_cpu_time()
                .saturating_sub(cpu_start)
                .as_millis() as u64,
        };
        let outcome = match result {
            Err(TaskError::Cancelled) => None,
            result => {
                let limit = sink.max_output_bytes.load(Ordering::Relaxed);
                let result = result.map_err(|e| e.to_string());
                let outcome = Outcome::new(assignment.replica, execution, result, limit);
                if let Err(e) = sink.store.save(&outcome) {
                    // Still reported from memory; only a restart before the ack would lose it.
                    tracing::warn!(replica = %assignment.replica, "cannot save the outcome to the outbox: {e}");
                }
                Some(outcome)
            }
        };
        let replica = assignment.replica;
        if sink
            .finished
            .send(Finished {
                replica,
                outcome,
                execution,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The dependency outputs as values. Out-of-band ones must have been fetched (and replaced by
/// their value) before the replica was queued.
fn inline_deps(a: &Assignment) -> Result<BTreeMap<TaskId, serde_json::Value>, TaskError> {
    a.deps
        .iter()
        .map(|(k, p)| match p {
            Payload::Inline(v) => Ok((k.clone(), v.clone())),
            Payload::Blob(_) => Err(TaskError::BadInput(format!(
                "the output of dependency {k} was not fetched"
            ))),
        })
        .collect()
}

/// Puts the calling thread at the lowest priority the OS offers, so that the owner's programs
/// (and this worker's own heartbeats) always run first: nice 19 and `SCHED_IDLE` on Linux.
/// Failure is logged, not fatal: a task at normal priority is still a correct task.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, setpriority and sched_setscheduler only read their arguments; the
        // sched_param lives on this stack for the duration of the call.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
                tracing::warn!(
                    "cannot lower task thread priority: {}",
                    std::io::Error::last_os_error()
                );
            }
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                tracing::warn!(
                    "cannot set SCHED_IDLE on a task thread: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    // Other systems: the idle priority class on Windows and nice on the BSDs come with their
    // installers; until then tasks run at normal priority there.
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn task_threads_run_at_nice_19_under_sched_idle() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = std::thread::spawn(move || {
            lower_priority();
            // SAFETY: plain queries about the calling thread.
            let (nice, policy) = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                (
                    libc::getpriority(libc::PRIO_PROCESS, tid),
                    libc::sched_getscheduler(0),
                )
            };
            tx.send((nice, policy)).unwrap();
        });
        handle.join().unwrap();
        let (nice, policy) = rx.try_recv().unwrap();
        assert_eq!(nice, 19);
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
