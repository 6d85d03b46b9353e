//! Runs assigned replicas on a fixed pool of OS threads, off the async runtime: one thread per
//! slot, so a worker never computes more tasks at once than its CPU cap. A finished replica's
//! outcome is shaped (serialised, size-checked) and saved to the outbox on its task thread, then
//! goes back to the engine on a channel, so the engine's loop never waits on a big write.
//!
//! The number of threads follows the settings' `cpus` without a restart ([`Executor::set_slots`]):
//! new threads start at once, surplus ones end when their current task does. A CPU cap below
//! 100% is a duty cycle every task keeps at its checkpoints ([`Executor::set_cpu_cap`]).
//!
//! Owns the threads and the queue; knows nothing about the connection.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

struct Queue {
    waiting: VecDeque<Queued>,
    /// Task threads alive, and how many there should be: a thread above `slots` ends before
    /// it takes another task.
    alive: usize,
    slots: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    stopping: AtomicBool,
    /// The task threads computing now, for the contention watch.
    computing: Arc<super::contention::Threads>,
}

pub struct Executor {
    shared: Arc<Shared>,
    sink: Sink,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Percent of one core each task may use; shared with every task's control.
    cpu_cap: Arc<AtomicU32>,
    /// On while tasks step aside for another program; shared with every task's control.
    aside: Arc<runtime::StepAside>,
    /// Sets `aside` from how long task threads wait for a CPU (Linux; `None` elsewhere).
    contention: Option<super::contention::Watch>,
    spawned: usize,
}

impl Executor {
    /// Starts `slots` task threads.
    pub fn new(slots: usize, sink: Sink) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                alive: 0,
                slots: 0,
            }),
            ready: Condvar::new(),
            stopping: AtomicBool::new(false),
            computing: Arc::default(),
        });
        let aside = Arc::new(runtime::StepAside::default());
        let contention = super::contention::Watch::start(shared.computing.clone(), aside.clone());
        let mut executor = Self {
            shared,
            sink,
            threads: Vec::new(),
            cpu_cap: Arc::new(AtomicU32::new(100)),
            aside,
            contention,
            spawned: 0,
        };
        executor.set_slots(slots)?;
        Ok(executor)
    }

    /// Runs `slots` (at least one) tasks at once from now on: more threads start at once; when
    /// there are fewer slots, running tasks finish and the surplus threads then end.
    pub fn set_slots(&mut self, slots: usize) -> std::io::Result<()> {
        let slots = slots.max(1);
        let grow = {
            let mut q = self.lock();
            q.slots = slots;
            let grow = slots.saturating_sub(q.alive);
            q.alive += grow;
            grow
        };
        self.shared.ready.notify_all();
        self.threads.retain(|t| !t.is_finished());
        for _ in 0..grow {
            let (shared, sink) = (self.shared.clone(), self.sink.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("idlegrid-task-{}", self.spawned))
                .spawn(move || task_thread(&shared, &sink));
            self.spawned += 1;
            match spawned {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    self.lock().alive -= 1;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Caps each task at `percent` (1..=100) of one core, running tasks included: below 100 a
    /// task rests at its checkpoints for the rest of every 100 ms period.
    pub fn set_cpu_cap(&self, percent: u32) {
        self.cpu_cap.store(percent.clamp(1, 100), Ordering::Relaxed);
    }

    /// What the settings say about running tasks: the CPU cap, and whether they step aside.
    pub fn follow_settings(&self, s: &super::settings::Settings) {
        self.set_cpu_cap(s.cpu_cap_percent);
        self.set_step_aside(s.step_aside && !s.run_while_in_use);
    }

    /// Whether tasks step aside, within milliseconds, whenever another program wants a CPU
    /// (`client::contention`): on while an owner is watched for, off under `run_while_in_use`.
    /// Off until called.
    pub fn set_step_aside(&self, on: bool) {
        if let Some(w) = &self.contention {
            w.set_enabled(on);
        }
    }

    /// Queues a replica; it starts as soon as a task thread is free. The returned control
    /// cancels or pauses it.
    pub fn start(&self, assignment: Assignment) -> Arc<TaskControl> {
        let ctl = Arc::new(TaskControl::with_shared(
            self.cpu_cap.clone(),
            self.aside.clone(),
        ));
        let mut queue = self.lock();
        queue.waiting.push_back(Queued {
            assignment,
            ctl: ctl.clone(),
        });
        self.shared.ready.notify_one();
        ctl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut queue = self.lock();
            for q in queue.waiting.drain(..) {
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
                if queue.alive > queue.slots {
                    queue.alive -= 1;
                    return;
                }
                if let Some(q) = queue.waiting.pop_front() {
                    break q;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Queued { assignment, ctl } = next;
        shared.computing.enter();
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
        shared.computing.leave();
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
                let result = result.map(forge_if_lying).map_err(|e| e.to_string());
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
/// Process-wide: this worker reports forged outputs (`--lie-outputs`, for tests of result
/// validation only).
static LIE_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// Makes this worker process report a forged output for every task (see [`forge`]).
pub fn set_lie_outputs(on: bool) {
    LIE_OUTPUTS.store(on, Ordering::SeqCst);
}

fn forge_if_lying(output: serde_json::Value) -> serde_json::Value {
    if LIE_OUTPUTS.load(Ordering::Relaxed) {
        forge(output)
    } else {
        output
    }
}

/// A plausible wrong output: every number one more, or, with no number in it, the output
/// wrapped in an object that says so. Never equal to the output it was made from.
pub fn forge(output: serde_json::Value) -> serde_json::Value {
    fn bump(v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::Number(n) => {
                *n = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) if u < u64::MAX => (u + 1).into(),
                    (_, Some(i), _) if i < i64::MAX => (i + 1).into(),
                    (_, _, Some(f)) => serde_json::Number::from_f64(f + 1.0).unwrap_or(0.into()),
                    _ => 0.into(),
                };
                true
            }
            // Every number, not only the first.
            Value::Array(items) => items.iter_mut().map(bump).filter(|b| *b).count() > 0,
            Value::Object(map) => map.values_mut().map(bump).filter(|b| *b).count() > 0,
            _ => false,
        }
    }
    let mut forged = output.clone();
    if bump(&mut forged) && forged != output {
        forged
    } else {
        serde_json::json!({ "forged": output })
    }
}

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

#[cfg(target_os = "linux")]
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// `IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT` (3 << 13), level 0 (the idle class has no levels).
#[cfg(target_os = "linux")]
const IOPRIO_IDLE: libc::c_int = 3 << 13;

/// Puts the calling thread at the lowest priority the OS offers, so that the owner's programs
/// (and this worker's own heartbeats) always run first: nice 19, `SCHED_IDLE` and the idle I/O
/// class on Linux (a task's disk reads and writes wait for everyone else's).
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
            // ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE): glibc has no wrapper.
            if libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_IDLE) != 0 {
                tracing::warn!(
                    "cannot put a task thread in the idle I/O class: {}",
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
    fn a_forged_output_differs_from_the_real_one_in_every_number_or_says_it_is_forged() {
        use serde_json::json;
        assert_eq!(
            forge(json!({"from": 2, "to": 5, "count": 2, "v": [1.5, -3]})),
            json!({"from": 3, "to": 6, "count": 3, "v": [2.5, -2]})
        );
        assert_eq!(forge(json!("text")), json!({"forged": "text"}));
        assert_eq!(forge(json!({})), json!({"forged": {}}));
    }

    #[test]
    fn task_threads_run_at_nice_19_under_sched_idle_in_the_idle_io_class() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = std::thread::spawn(move || {
            lower_priority();
            // SAFETY: plain queries about the calling thread.
            let (nice, policy, io) = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                (
                    libc::getpriority(libc::PRIO_PROCESS, tid),
                    libc::sched_getscheduler(0),
                    libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid),
                )
            };
            tx.send((nice, policy, io)).unwrap();
        });
        handle.join().unwrap();
        let (nice, policy, io) = rx.try_recv().unwrap();
        assert_eq!(nice, 19);
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(io, libc::c_long::from(IOPRIO_IDLE), "I/O priority {io:#x}");
        // Control: this (test) thread was left in its own class.
        // SAFETY: a plain query about the calling thread.
        let own = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid)
        };
        assert_ne!(own, libc::c_long::from(IOPRIO_IDLE));
    }
}
