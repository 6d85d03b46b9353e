//! What a worker can take and what its time costs, from the hardware it reports: its speed
//! relative to the reference worker, its rate per second, and how many replicas it runs at once.

use crate::proto::Hardware;

/// Single-core speed of the reference worker, in million kernel steps per second (see
/// `runtime::bench_mops`): one core of the 2-core CI machine. A worker this fast is charged one
/// credit per second of execution.
pub const REFERENCE_MOPS: f64 = 400.0;

/// Cost of one second of execution on a worker with this hardware, in credits: one on the
/// reference worker, more on faster ones (they finish sooner, so the job pays for speed).
pub fn rate_per_s(hw: Option<&Hardware>) -> f64 {
    (capacity(hw) / REFERENCE_MOPS).clamp(0.25, 4.0)
}

/// Relative capacity of a worker for one task: its measured single-core speed.
pub(super) fn capacity(hw: Option<&Hardware>) -> f64 {
    match hw {
        Some(hw) if hw.bench_mops.is_finite() && hw.bench_mops > 0.0 => hw.bench_mops,
        _ => REFERENCE_MOPS,
    }
}

/// How many replicas a worker runs at once: its configured slots, but never more than its cores
/// (a slot without a core only makes every task on the machine slower, and the owner's too).
pub(super) fn slot_cap(hw: &Hardware) -> usize {
    hw.slots.min(hw.cores.max(1)) as usize
}
