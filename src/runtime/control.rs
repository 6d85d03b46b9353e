//! The line between a running kernel and whoever owns it: cancel, pause/resume, progress and the
//! task's busy clock, shared as an `Arc<TaskControl>` between the worker's async engine and the
//! kernel thread.
//!
//! This file owns only that shared state. It never spawns threads, never sleeps on a timer and
//! knows nothing about kinds or the wire: kernels poll it through [`TaskControl::checkpoint`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Set while every task of an executor steps aside because something else on the machine wants a
/// CPU (`client::contention` decides when). Shared, like the CPU cap, by every task's control:
/// a task that finds it on rests at its checkpoint until it is off.
#[derive(Debug, Default)]
pub struct StepAside {
    on: AtomicBool,
    lock: Mutex<()>,
    off: Condvar,
}

impl StepAside {
    pub fn set(&self, on: bool) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.on.swap(on, Ordering::AcqRel) && !on {
            self.off.notify_all();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// How often a task resting for [`StepAside`] looks again for a cancel or a pause (those wake
/// the task's own condition variable, not the shared one).
const ASIDE_RECHECK: Duration = Duration::from_millis(20);

/// The task was cancelled; kernels turn it into [`super::TaskError::Cancelled`] with `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop;

/// Control block of one running task. `Send + Sync`; share it behind an `Arc`.
///
/// The busy clock starts when the control is created, so create it when the task starts.
#[derive(Debug)]
pub struct TaskControl {
    // The flags are read lock-free on the kernel's fast path; they are only ever *written* with
    // `clock` held, so that a kernel deciding to wait cannot miss the wake-up.
    cancelled: AtomicBool,
    paused: AtomicBool,
    /// `f32` bits of the last progress fraction.
    progress: AtomicU32,
    clock: Mutex<Clock>,
    wake: Condvar,
    /// The CPU cap in percent of one core (shared by every task of an executor, so that a
    /// change reaches running tasks); below 100 the task rests at its checkpoints for
    /// `100 - cap` percent of every [`DUTY_PERIOD`].
    cpu_cap: Arc<AtomicU32>,
    aside: Arc<StepAside>,
}

/// The period of the CPU cap's duty cycle: short, so that the owner never notices a burst, and
/// long against a checkpoint's couple of milliseconds.
pub const DUTY_PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Clock {
    started: Instant,
    /// Length of the pauses that have ended.
    paused: Duration,
    /// Set while a pause lasts.
    paused_since: Option<Instant>,
    /// Start of the current duty period (under a CPU cap).
    period_start: Instant,
}

impl Default for TaskControl {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskControl {
    pub fn new() -> Self {
        Self::with_cpu_cap(Arc::new(AtomicU32::new(100)))
    }

    /// A control whose task honours the CPU cap in `cpu_cap` (percent of one core, 1..=100),
    /// read at every checkpoint.
    pub fn with_cpu_cap(cpu_cap: Arc<AtomicU32>) -> Self {
        Self::with_shared(cpu_cap, Arc::new(StepAside::default()))
    }

    /// A control whose task honours the CPU cap in `cpu_cap` and rests while `aside` is on.
    pub fn with_shared(cpu_cap: Arc<AtomicU32>, aside: Arc<StepAside>) -> Self {
        let now = Instant::now();
        Self {
            cpu_cap,
            aside,
            cancelled: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            progress: AtomicU32::new(0f32.to_bits()),
            clock: Mutex::new(Clock {
                started: now,
                paused: Duration::ZERO,
                paused_since: None,
                period_start: now,
            }),
            wake: Condvar::new(),
        }
    }

    /// Asks the task to stop. Callable from any thread; a task waiting in a pause wakes up and
    /// stops. The kernel notices at its next checkpoint.
    pub fn cancel(&self) {
        let _clock = self.lock();
        self.cancelled.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Holds the task at its next checkpoint (within a couple of milliseconds of work), with its
    /// state intact, until [`TaskControl::resume`] or [`TaskControl::cancel`].
    pub fn pause(&self) {
        let mut clock = self.lock();
        if !self.paused.swap(true, Ordering::AcqRel) {
            clock.paused_since = Some(Instant::now());
            // A task resting under the CPU cap goes to the pause's wait.
            self.wake.notify_all();
        }
    }

    pub fn resume(&self) {
        let mut clock = self.lock();
        if self.paused.swap(false, Ordering::AcqRel) {
            if let Some(since) = clock.paused_since.take() {
                clock.paused += since.elapsed();
            }
            self.wake.notify_all();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Records how far the task is, clamped to `0..=1`. A NaN is ignored rather than shown.
    pub fn set_progress(&self, fraction: f32) {
        if fraction.is_nan() {
            return;
        }
        self.progress
            .store(fraction.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn progress(&self) -> f32 {
        f32::from_bits(self.progress.load(Ordering::Relaxed))
    }

    /// Kernels call this at least every couple of milliseconds of work. Returns at once while the
    /// task runs, blocks (without spinning) while it is paused, and returns `Err(Stop)` once it is
    /// cancelled.
    #[inline]
    pub fn checkpoint(&self) -> Result<(), Stop> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(Stop);
        }
        if self.paused.load(Ordering::Acquire) {
            return self.wait_while_paused();
        }
        if self.aside.on.load(Ordering::Relaxed) {
            return self.rest_aside();
        }
        if self.cpu_cap.load(Ordering::Relaxed) < 100 {
            return self.duty_cycle();
        }
        Ok(())
    }

    /// While the executor steps aside: rests until it no longer does (or a cancel or a pause).
    #[cold]
    fn rest_aside(&self) -> Result<(), Stop> {
        let mut guard = self
            .aside
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while self.aside.on.load(Ordering::Acquire) {
            if self.cancelled.load(Ordering::Acquire) {
                return Err(Stop);
            }
            if self.paused.load(Ordering::Acquire) {
                drop(guard);
                return self.wait_while_paused();
            }
            guard = self
                .aside
                .off
                .wait_timeout(guard, ASIDE_RECHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// Under a CPU cap: once the task has computed its share of the current period, it rests
    /// (waking for a cancel or a pause) until the period ends.
    #[cold]
    fn duty_cycle(&self) -> Result<(), Stop> {
        let cap = self.cpu_cap.load(Ordering::Relaxed).clamp(1, 100);
        let mut clock = self.lock();
        let now = Instant::now();
        let end = clock.period_start + DUTY_PERIOD;
        if now >= end {
            clock.period_start = now;
            return Ok(());
        }
        if now - clock.period_start < DUTY_PERIOD * cap / 100 {
            return Ok(());
        }
        loop {
            if self.cancelled.load(Ordering::Acquire) {
                return Err(Stop);
            }
            if self.paused.load(Ordering::Acquire) {
                drop(clock);
                return self.wait_while_paused();
            }
            let now = Instant::now();
            if now >= end {
                clock.period_start = now;
                return Ok(());
            }
            clock = self
                .wake
                .wait_timeout(clock, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    #[cold]
    fn wait_while_paused(&self) -> Result<(), Stop> {
        let mut clock = self.lock();
        while self.paused.load(Ordering::Acquire) && !self.cancelled.load(Ordering::Acquire) {
            clock = self
                .wake
                .wait(clock)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if self.cancelled.load(Ordering::Acquire) {
            Err(Stop)
        } else {
            Ok(())
        }
    }

    /// Time the task has spent computing so far: since the control was created, less every pause
    /// from `pause()` to `resume()`.
    ///
    /// Pauses are timed from the calls rather than from when the kernel actually blocks. The
    /// kernel's last fraction of a millisecond before its checkpoint goes uncounted, but the
    /// clock stops the moment `pause()` is called, however long a busy machine then takes to
    /// schedule the kernel thread, so a pause always shows in full in the task's wall time.
    pub fn busy_time(&self) -> Duration {
        let clock = self.lock();
        let now = Instant::now();
        let pausing = clock
            .paused_since
            .map_or(Duration::ZERO, |since| now - since);
        (now - clock.started).saturating_sub(clock.paused + pausing)
    }

    fn lock(&self) -> MutexGuard<'_, Clock> {
        // Nothing panics while holding this lock, and the clock stays consistent even if
        // something did, so a poisoned lock is still usable.
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{TaskError, run};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::thread::{self, JoinHandle, sleep};

    fn start(
        kind: &'static str,
        input: Value,
    ) -> (Arc<TaskControl>, JoinHandle<Result<Value, TaskError>>) {
        let ctl = Arc::new(TaskControl::new());
        let kernel = {
            let ctl = Arc::clone(&ctl);
            thread::spawn(move || run(kind, &input, &BTreeMap::new(), &ctl))
        };
        (ctl, kernel)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_control_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<TaskControl>();
    }

    #[test]
    fn progress_is_clamped_and_ignores_nan() {
        let ctl = TaskControl::default();
        assert_eq!(ctl.progress(), 0.0);
        ctl.set_progress(0.25);
        assert_eq!(ctl.progress(), 0.25);
        ctl.set_progress(f32::NAN);
        assert_eq!(ctl.progress(), 0.25);
        ctl.set_progress(7.0);
        assert_eq!(ctl.progress(), 1.0);
        ctl.set_progress(-1.0);
        assert_eq!(ctl.progress(), 0.0);
    }

    #[test]
    fn checkpoint_passes_until_cancelled() {
        let ctl = TaskControl::new();
        assert_eq!(ctl.checkpoint(), Ok(()));
        assert!(!ctl.is_cancelled() && !ctl.is_paused());
        ctl.cancel();
        assert!(ctl.is_cancelled());
        assert_eq!(ctl.checkpoint(), Err(Stop));
    }

    #[test]
    fn a_pause_before_the_first_checkpoint_holds_the_kernel_there() {
        let ctl = Arc::new(TaskControl::new());
        ctl.pause();
        let waiter = {
            let ctl = Arc::clone(&ctl);
            thread::spawn(move || ctl.checkpoint())
        };
        sleep(ms(30));
        assert!(!waiter.is_finished());
        ctl.resume();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    #[test]
    fn a_pause_is_left_out_of_busy_time_and_holds_progress() {
        let wall = Instant::now();
        let (ctl, kernel) = start("spin", json!({"ms": 200}));
        sleep(ms(80));
        ctl.pause();
        sleep(ms(20));
        let held = ctl.progress();
        assert!(held > 0.0 && held < 1.0, "{held}");
        sleep(ms(280));
        assert_eq!(ctl.progress(), held, "progress moved while paused");
        ctl.resume();
        assert_eq!(kernel.join().unwrap().unwrap(), json!({"spun_ms": 200}));
        let (busy, wall) = (ctl.busy_time(), wall.elapsed());
        assert!(busy >= ms(200) && busy < ms(260), "busy {busy:?}");
        assert!(wall >= ms(500), "wall {wall:?}");
    }

    #[test]
    fn a_paused_kernel_stops_within_20ms_and_a_cancel_wakes_it() {
        let (ctl, kernel) = start("spin", json!({"ms": 10_000}));
        sleep(ms(30));
        ctl.pause();
        sleep(ms(20));
        let held = ctl.progress();
        let busy = ctl.busy_time();
        sleep(ms(50));
        assert_eq!(ctl.progress(), held, "still computing 20 ms after pause()");
        assert_eq!(ctl.busy_time(), busy, "busy clock ran while paused");
        let asked = Instant::now();
        ctl.cancel();
        assert!(matches!(kernel.join().unwrap(), Err(TaskError::Cancelled)));
        assert!(asked.elapsed() < ms(50), "{:?}", asked.elapsed());
    }

    /// CPU time the kernel thread used while running `spin` for `ms` under `cap`, over the
    /// wall time it took.
    fn cpu_share_of_spin(cap: u32, ms: u64) -> f64 {
        let ctl = Arc::new(TaskControl::with_cpu_cap(Arc::new(AtomicU32::new(cap))));
        let kernel = thread::spawn(move || {
            let (cpu, wall) = (crate::runtime::thread_cpu_time(), Instant::now());
            run("spin", &json!({"ms": ms}), &BTreeMap::new(), &ctl).unwrap();
            let used = crate::runtime::thread_cpu_time().saturating_sub(cpu);
            used.as_secs_f64() / wall.elapsed().as_secs_f64()
        });
        kernel.join().unwrap()
    }

    #[test]
    fn a_cpu_cap_of_50_percent_gives_a_spinning_task_about_half_a_core() {
        // Against an uncapped control run just before and after, so that what other programs
        // take of the machine cancels out.
        let before = cpu_share_of_spin(100, 500);
        let capped = cpu_share_of_spin(50, 1000);
        let after = cpu_share_of_spin(100, 500);
        let full = (before + after) / 2.0;
        let ratio = capped / full;
        assert!(
            (0.35..=0.65).contains(&ratio),
            "capped share {capped:.2} of the uncapped {before:.2} / {after:.2}"
        );
        // The control: uncapped, the task takes most of the core it is given.
        assert!(
            full > capped * 1.5,
            "uncapped {full:.2}, capped {capped:.2}"
        );
    }

    #[test]
    fn a_cancel_stops_a_huge_prime_count_within_50ms() {
        let (ctl, kernel) = start(
            "primes",
            json!({"from": 990_000_000_000u64, "to": 1_000_000_000_000u64}),
        );
        sleep(ms(40));
        let asked = Instant::now();
        ctl.cancel();
        assert!(matches!(kernel.join().unwrap(), Err(TaskError::Cancelled)));
        assert!(asked.elapsed() < ms(50), "{:?}", asked.elapsed());
    }
}
