//! `spin`: burns one core for a given amount of busy time. A stand-in for real work of known cost,
//! used by tests, the simulator's calibration and load experiments.
//!
//! Input `{"ms": N}` with N in `0..=86_400_000` (a day). Output `{"spun_ms": N}`.
//!
//! The work is real arithmetic, not a sleep, so that the worker's CPU accounting, idle detection
//! and pause latency are exercised as with any other kernel. Time is counted on the task's busy
//! clock, so a paused spin finishes later but does not do less.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Fields, Stop, TaskControl, TaskError};

/// Longest spin, in ms of busy time; also the longest delay before an `abort`.
pub(super) const MAX_MS: u64 = 86_400_000;

/// Arithmetic steps between checkpoints: some tens of microseconds even unoptimised, so the
/// clock is read often enough that the spin ends within a fraction of a millisecond of its target.
const STEPS_PER_CHECK: u32 = 4_096;

pub(super) fn run(input: &Value, ctl: &TaskControl) -> Result<Value, TaskError> {
    let ms = parse(input)?;
    spin_for(Duration::from_millis(ms), ctl)?;
    Ok(json!({ "spun_ms": ms }))
}

/// The input's `ms`, checked; what [`super::check_input`] runs at submission.
pub(super) fn parse(input: &Value) -> Result<u64, TaskError> {
    Fields::of(input, &["ms"], "")?.u64("ms", 0..=MAX_MS)
}

/// Computes until the task's busy clock reaches `target`, reporting progress towards it. Shared
/// with the `abort` fault kernel, which burns its time the same way before it aborts.
pub(super) fn spin_for(target: Duration, ctl: &TaskControl) -> Result<(), Stop> {
    let mut state = std::hint::black_box(0x9e37_79b9_7f4a_7c15u64);
    loop {
        ctl.checkpoint()?;
        let busy = ctl.busy_time();
        if busy >= target {
            break;
        }
        ctl.set_progress((busy.as_secs_f64() / target.as_secs_f64()) as f32);
        for _ in 0..STEPS_PER_CHECK {
            // xorshift: a few cycles of dependent integer work the optimiser cannot fold away.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        state = std::hint::black_box(state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn spin_burns_about_the_requested_time() {
        let ctl = TaskControl::new();
        let start = Instant::now();
        let out = run(&json!({"ms": 40}), &ctl).unwrap();
        let took = start.elapsed();
        assert_eq!(out, json!({"spun_ms": 40}));
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert!(ctl.busy_time() >= Duration::from_millis(40));
    }

    #[test]
    fn spin_refuses_more_than_a_day() {
        let err = run(&json!({"ms": MAX_MS + 1}), &TaskControl::new()).unwrap_err();
        assert!(err.to_string().contains("\"ms\""), "{err}");
    }
}
