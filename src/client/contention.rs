//! Stepping aside within milliseconds when anything else on the machine wants a CPU.
//!
//! Task threads run under `SCHED_IDLE`, so a program of the owner's takes a core from them at
//! once. That is not enough for a memory-bound program: the task on the *other* core keeps
//! streaming memory and slows it (measured: 18.5% on a 512 MiB sweep beside two `memsweep`
//! tasks). The process watch (`activity::process`) notices a program only after it has used a
//! CPU for seconds. This watch notices it at its first milliseconds: a task thread that is
//! runnable (`R` in `/proc/self/task/TID/stat`) yet got less than half of the last few
//! milliseconds on a CPU (`schedstat`'s first field, in ns) is being kept off it by something at
//! a higher priority. (The kernel's count of time spent waiting, `schedstat`'s second field, only
//! grows when a starved thread finally runs: too late.) Every task then rests (a shared
//! [`StepAside`]) for a while, looks again, and rests longer each time the other program is still
//! there ([`Backoff`]).
//!
//! [`Backoff`] is pure (time is an argument); [`Watch`] only reads the kernel's counters and
//! sets the flag. Off under `run_while_in_use` (a machine dedicated to the pool, or several
//! workers sharing one, which would see each other), where there is no owner to step aside for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::runtime::StepAside;

/// How often the counters are read while a task computes.
pub const TICK: Duration = Duration::from_millis(5);
/// A runnable task thread that got less than this share of a look's window on a CPU is being
/// kept off it.
const STARVED_SHARE: f64 = 0.5;
/// The first rest, and the longest: each time the other program is still there on return the
/// rest doubles, so a long program costs the pool little checking and a short one little time.
pub const FIRST_REST: Duration = Duration::from_millis(250);
pub const LONGEST_REST: Duration = Duration::from_secs(2);
/// Computing this long without contention starts the next rest at [`FIRST_REST`] again.
const CALM: Duration = Duration::from_secs(2);

/// When to step aside, from how long task threads were kept waiting. Pure.
#[derive(Debug, Clone)]
pub struct Backoff {
    rest: Duration,
    aside_until: Option<Instant>,
    calm_since: Instant,
}

impl Backoff {
    pub fn new(now: Instant) -> Self {
        Self {
            rest: FIRST_REST,
            aside_until: None,
            calm_since: now,
        }
    }

    /// One look: `starved` says whether a task thread was kept off a CPU since the last one.
    /// Returns whether tasks must rest now.
    pub fn tick(&mut self, now: Instant, starved: bool) -> bool {
        if let Some(until) = self.aside_until {
            if now < until {
                return true;
            }
            // Back to work, and look again at the next tick.
            self.aside_until = None;
            self.calm_since = now;
            return false;
        }
        if starved {
            self.aside_until = Some(now + self.rest);
            self.rest = (self.rest * 2).min(LONGEST_REST);
            return true;
        }
        if now.duration_since(self.calm_since) >= CALM {
            self.rest = FIRST_REST;
        }
        false
    }

    pub fn resting(&self) -> bool {
        self.aside_until.is_some()
    }
}

/// The task threads to watch, by thread id, with their time on a CPU at the last look.
#[derive(Debug, Default)]
pub struct Threads {
    runtimes: Mutex<HashMap<i32, Option<(Instant, u64)>>>,
}

impl Threads {
    /// Called by a task thread as it starts a task.
    pub fn enter(&self) {
        if let Some(tid) = current_tid() {
            self.lock().insert(tid, None);
        }
    }

    /// Called by a task thread as its task ends.
    pub fn leave(&self) {
        if let Some(tid) = current_tid() {
            self.lock().remove(&tid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Option<(Instant, u64)>>> {
        self.runtimes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a runnable thread got less than [`STARVED_SHARE`] of the time since the last call
    /// on a CPU; `None` when no task runs. `fresh` forgets the last look (after a rest, whose
    /// sleep says nothing).
    fn starved(&self, fresh: bool) -> Option<bool> {
        let mut threads = self.lock();
        if threads.is_empty() {
            return None;
        }
        let mut starved = false;
        for (tid, last) in threads.iter_mut() {
            let now = Instant::now();
            let Some(runtime) = runtime_ns(*tid) else {
                continue;
            };
            if let (Some((at, before)), false) = (*last, fresh) {
                let window = now.duration_since(at).as_nanos() as f64;
                let got = runtime.saturating_sub(before) as f64;
                starved |= window > 0.0 && got < window * STARVED_SHARE && runnable(*tid);
            }
            *last = Some((now, runtime));
        }
        Some(starved)
    }
}

#[cfg(target_os = "linux")]
fn current_tid() -> Option<i32> {
    // SAFETY: gettid has no arguments and cannot fail.
    Some(unsafe { libc::syscall(libc::SYS_gettid) } as i32)
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> Option<i32> {
    None
}

/// Nanoseconds the thread has spent on a CPU, from schedstat.
#[cfg(target_os = "linux")]
fn runtime_ns(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn runtime_ns(_tid: i32) -> Option<u64> {
    None
}

/// Whether the thread is running or waiting to run (not asleep: paused, resting, blocked).
#[cfg(target_os = "linux")]
fn runnable(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            rest.split_whitespace().next().map(|st| st == "R")
        })
        .unwrap_or(false)
}

#[cfg(not(target_os = "linux"))]
fn runnable(_tid: i32) -> bool {
    false
}

/// Whether this system counts threads' time on a CPU (Linux with schedstat).
pub fn available() -> bool {
    current_tid().and_then(runtime_ns).is_some()
}

/// The watching thread of one executor. Dropping it stops the thread and lets tasks run.
pub struct Watch {
    stop: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    aside: Arc<StepAside>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts the thread (disabled until [`Watch::set_enabled`]); `None` where the waits are not
    /// counted, with tasks then never stepping aside on their own.
    pub fn start(threads: Arc<Threads>, aside: Arc<StepAside>) -> Option<Self> {
        if !available() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(false));
        let (s, e, a) = (stop.clone(), enabled.clone(), aside.clone());
        let thread = std::thread::Builder::new()
            .name("idlegrid-aside".into())
            .spawn(move || watch(&threads, &a, &s, &e))
            .ok()?;
        Some(Self {
            stop,
            enabled,
            aside,
            thread: Some(thread),
        })
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
        if !on {
            self.aside.set(false);
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.aside.set(false);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// While no task runs (or the watch is off) the thread sleeps this long between looks.
const IDLE_LOOK: Duration = Duration::from_millis(100);

fn watch(threads: &Threads, aside: &StepAside, stop: &AtomicBool, enabled: &AtomicBool) {
    let mut backoff = Backoff::new(Instant::now());
    let mut steps = 0u64;
    let mut fresh = true;
    while !stop.load(Ordering::Acquire) {
        if !enabled.load(Ordering::Acquire) {
            fresh = true;
            std::thread::park_timeout(IDLE_LOOK);
            continue;
        }
        let now = Instant::now();
        let rest = if backoff.resting() {
            // Resting threads are asleep: the backoff alone says when to look again.
            fresh = true;
            backoff.tick(now, false)
        } else {
            match threads.starved(fresh) {
                Some(starved) => {
                    fresh = false;
                    backoff.tick(now, starved)
                }
                None => {
                    aside.set(false);
                    backoff = Backoff::new(now);
                    fresh = true;
                    std::thread::park_timeout(IDLE_LOOK);
                    continue;
                }
            }
        };
        if rest && !aside.is_on() {
            steps += 1;
            tracing::debug!(steps, "another program wants a CPU: tasks step aside");
        }
        aside.set(rest);
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_thread_kept_waiting_makes_tasks_rest_and_longer_each_time_the_program_is_still_there() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        assert!(!b.tick(t0 + ms(5), false), "no wait: compute");
        assert!(!b.tick(t0 + ms(10), false), "jitter");
        // A program starts: 2 ms of a 5 ms tick kept waiting.
        assert!(b.tick(t0 + ms(15), true));
        assert!(b.tick(t0 + ms(15) + FIRST_REST - ms(1), false), "rests");
        let back = t0 + ms(15) + FIRST_REST;
        assert!(!b.tick(back, false), "back to look");
        // Still there: twice as long.
        assert!(b.tick(back + ms(5), true));
        assert!(b.tick(back + ms(5) + FIRST_REST * 2 - ms(1), false));
        let back = back + ms(5) + FIRST_REST * 2;
        assert!(!b.tick(back, false));
        // Rests stop growing at the longest.
        let mut now = back;
        for _ in 0..10 {
            now += ms(5);
            assert!(b.tick(now, true));
            now += LONGEST_REST;
            assert!(!b.tick(now, false));
        }
        now += ms(5);
        assert!(b.tick(now, true));
        assert!(!b.tick(now + LONGEST_REST, false));
    }

    #[test]
    fn after_a_calm_spell_the_next_rest_is_short_again() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        assert!(b.tick(t0, true));
        assert!(!b.tick(t0 + FIRST_REST, false));
        assert!(b.tick(t0 + FIRST_REST + ms(5), true));
        let back = t0 + FIRST_REST * 3 + ms(5);
        assert!(!b.tick(back, false));
        let mut now = back;
        while now < back + CALM {
            now += TICK;
            assert!(!b.tick(now, false));
        }
        assert!(b.tick(now + TICK, true));
        assert!(b.tick(now + TICK + FIRST_REST - ms(1), false));
        assert!(!b.tick(now + TICK + FIRST_REST, false), "a short rest");
    }

    /// The CPUs this process may use (a container may not offer CPU 0).
    #[cfg(target_os = "linux")]
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is empty; sched_getaffinity fills it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect()
        }
    }

    #[cfg(target_os = "linux")]
    fn pin(cpu: usize) {
        // SAFETY: the set lives on this stack for the call.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0
            );
        }
    }

    /// A task thread at SCHED_IDLE on `cpu` that computes unless told to step aside; returns
    /// how long it rested.
    #[cfg(target_os = "linux")]
    fn task_on(
        cpu: usize,
        threads: &Arc<Threads>,
        aside: &Arc<StepAside>,
        stop: &Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Duration> {
        let (threads, aside, stop) = (threads.clone(), aside.clone(), stop.clone());
        std::thread::spawn(move || {
            pin(cpu);
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in the executor.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            threads.enter();
            let mut rested = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                if aside.is_on() {
                    let t = Instant::now();
                    std::thread::sleep(ms(1));
                    rested += t.elapsed();
                } else {
                    std::hint::spin_loop();
                }
            }
            threads.leave();
            rested
        })
    }

    /// Task threads at SCHED_IDLE, one on the CPU a normal-priority "owner's program" then
    /// takes: the watch sees that thread kept off its CPU within milliseconds, and the task on
    /// the other CPU rests (what spares a memory-bound program). Switched off, it never does.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_program_on_a_tasks_cpu_is_seen_within_milliseconds_and_every_task_rests() {
        assert!(available(), "schedstat counts time on a CPU on this kernel");
        let cpus = allowed_cpus();
        let threads = Arc::new(Threads::default());
        let aside = Arc::new(StepAside::default());
        let watch = Watch::start(threads.clone(), aside.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let starved = task_on(cpus[0], &threads, &aside, &stop);
        let other = cpus.get(1).map(|c| task_on(*c, &threads, &aside, &stop));
        std::thread::sleep(ms(50));
        let owner = {
            let (stop, cpu) = (stop.clone(), cpus[0]);
            std::thread::spawn(move || {
                pin(cpu);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let mut off_saw = false;
        let t = Instant::now();
        while t.elapsed() < ms(200) {
            off_saw |= aside.is_on();
            std::thread::sleep(Duration::from_micros(500));
        }
        watch.set_enabled(true);
        let t = Instant::now();
        let mut seen = None;
        while t.elapsed() < Duration::from_secs(2) {
            if seen.is_none() && aside.is_on() {
                seen = Some(t.elapsed());
            }
            if seen.is_some_and(|s| t.elapsed() > s + ms(300)) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
        owner.join().unwrap();
        starved.join().unwrap();
        let other_rested = other.map(|h| h.join().unwrap());
        drop(watch);
        assert!(
            !off_saw,
            "switched off (run_while_in_use), the watch never steps aside"
        );
        let seen = seen.expect("the watch saw the program within 2 s");
        assert!(seen < ms(100), "seen after {seen:?}");
        if let Some(rested) = other_rested {
            assert!(
                rested >= ms(100),
                "the task on the other CPU rested {rested:?}"
            );
        }
    }
}
