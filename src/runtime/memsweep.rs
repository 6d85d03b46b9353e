//! `memsweep`: streams over a large array, for load experiments where the task's cost is memory
//! bandwidth and cache rather than arithmetic (the interference benchmark's memory-touching
//! background task).
//!
//! Input `{"mib": M, "passes": P}`: M in `1..=4096`, P in `1..=1_000_000`. The kernel fills
//! M MiB of 64-bit words with their own index, then P times reads and rewrites every word
//! (adding one). Output `{"mib": M, "passes": P, "sum": S}` where S is the wrapping sum of the
//! words at the end, `n(n-1)/2 + n·P` mod 2^64 for `n = M·2^17` words: anyone can check a result
//! from the input alone.
//!
//! The array is walked in chunks with a checkpoint and progress between them, so pause and
//! cancel stay prompt whatever the size; an array this worker cannot allocate is a bad input,
//! not an abort.

use serde_json::{Value, json};

use super::{Fields, TaskControl, TaskError};

pub(super) const MAX_MIB: u64 = 4096;
pub(super) const MAX_PASSES: u64 = 1_000_000;

/// Words touched between checkpoints: 256 KiB, some tens of microseconds of streaming.
const CHUNK_WORDS: usize = 32 << 10;

const WORDS_PER_MIB: u64 = (1 << 20) / 8;

/// The input's size and passes, checked; what [`super::check_input`] runs at submission.
pub(super) fn parse(input: &Value) -> Result<(u64, u64), TaskError> {
    let fields = Fields::of(input, &["mib", "passes"], "")?;
    let mib = fields.u64("mib", 1..=MAX_MIB)?;
    let passes = fields.u64("passes", 1..=MAX_PASSES)?;
    Ok((mib, passes))
}

/// The sum the kernel reports for `words` words after `passes` passes.
#[cfg(test)]
fn expected_sum(words: u64, passes: u64) -> u64 {
    // n(n-1)/2 without overflowing before the division: halve whichever factor is even.
    let triangle = if words.is_multiple_of(2) {
        (words / 2).wrapping_mul(words.wrapping_sub(1))
    } else {
        words.wrapping_mul(words.wrapping_sub(1) / 2)
    };
    triangle.wrapping_add(words.wrapping_mul(passes))
}

pub(super) fn run(input: &Value, ctl: &TaskControl) -> Result<Value, TaskError> {
    let (mib, passes) = parse(input)?;
    let words = usize::try_from(mib * WORDS_PER_MIB).unwrap_or(usize::MAX);
    let mut array: Vec<u64> = Vec::new();
    array.try_reserve_exact(words).map_err(|_| {
        TaskError::BadInput(format!("this worker cannot allocate {mib} MiB for \"mib\""))
    })?;
    // Filling is a pass of its own (it faults the pages in), so it counts in the progress.
    let steps = (passes + 1) as f64 * words as f64;
    let mut done = 0f64;
    while array.len() < words {
        ctl.checkpoint()?;
        let start = array.len() as u64;
        let len = CHUNK_WORDS.min(words - array.len()) as u64;
        array.extend(start..start + len);
        done += len as f64;
        ctl.set_progress((done / steps) as f32);
    }
    for _ in 0..passes {
        for chunk in array.chunks_mut(CHUNK_WORDS) {
            ctl.checkpoint()?;
            for word in chunk.iter_mut() {
                *word = word.wrapping_add(1);
            }
            // Keeps the optimiser from folding passes together: each one really streams.
            std::hint::black_box(&mut *chunk);
            done += chunk.len() as f64;
            ctl.set_progress((done / steps) as f32);
        }
    }
    let sum = array.iter().fold(0u64, |s, w| s.wrapping_add(*w));
    Ok(json!({ "mib": mib, "passes": passes, "sum": sum }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn memsweep_sum_is_the_closed_form_of_its_input() {
        let ctl = TaskControl::new();
        let out = run(&json!({"mib": 2, "passes": 3}), &ctl).unwrap();
        let n = 2 * WORDS_PER_MIB;
        // 262144 words 0..n each plus 3: n(n-1)/2 + 3n.
        assert_eq!(
            out,
            json!({"mib": 2, "passes": 3, "sum": n * (n - 1) / 2 + 3 * n})
        );
        assert_eq!(expected_sum(n, 3), n * (n - 1) / 2 + 3 * n);
        assert_eq!(ctl.progress(), 1.0);
        // A different number of passes gives a different sum: the passes really ran.
        let once = run(&json!({"mib": 2, "passes": 1}), &ctl).unwrap();
        assert_eq!(once["sum"], json!(expected_sum(n, 1)));
        assert_ne!(once["sum"], out["sum"]);
        // Odd word counts take the other branch of the closed form.
        assert_eq!(expected_sum(5, 2), 10 + 10);
    }

    #[test]
    fn memsweep_refuses_sizes_and_passes_out_of_range() {
        let ctl = TaskControl::new();
        let cases = [
            (
                json!({"mib": 0, "passes": 1}),
                "\"mib\" must be an integer in 1..=4096",
            ),
            (
                json!({"mib": 4097, "passes": 1}),
                "\"mib\" must be an integer in 1..=4096",
            ),
            (
                json!({"mib": 1, "passes": 0}),
                "\"passes\" must be an integer in 1..=1000000",
            ),
            (json!({"mib": 1}), "\"passes\" is missing"),
            (
                json!({"mib": 1, "passes": 1, "bytes": 2}),
                "unknown field \"bytes\"",
            ),
        ];
        for (input, expected) in cases {
            let err = run(&input, &ctl).unwrap_err();
            assert!(
                matches!(err, TaskError::BadInput(_)) && err.to_string().contains(expected),
                "{input}: {err}"
            );
            assert_eq!(
                super::super::check_input("memsweep", &input)
                    .unwrap_err()
                    .to_string(),
                err.to_string()
            );
        }
    }

    fn start(
        input: Value,
    ) -> (
        Arc<TaskControl>,
        std::thread::JoinHandle<Result<Value, TaskError>>,
    ) {
        let ctl = Arc::new(TaskControl::new());
        let kernel = {
            let ctl = Arc::clone(&ctl);
            std::thread::spawn(move || run(&input, &ctl))
        };
        (ctl, kernel)
    }

    #[test]
    fn cancelling_a_memsweep_stops_it_promptly() {
        let (ctl, kernel) = start(json!({"mib": 64, "passes": MAX_PASSES}));
        std::thread::sleep(Duration::from_millis(50));
        let asked = Instant::now();
        ctl.cancel();
        let result = kernel.join().unwrap();
        let took = asked.elapsed();
        assert!(matches!(result, Err(TaskError::Cancelled)), "{result:?}");
        assert!(took < Duration::from_millis(100), "{took:?}");
        assert!(ctl.progress() > 0.0 && ctl.progress() < 1.0);
    }

    #[test]
    fn a_paused_memsweep_makes_no_progress_and_resumes_to_the_right_sum() {
        let (ctl, kernel) = start(json!({"mib": 16, "passes": 100}));
        std::thread::sleep(Duration::from_millis(30));
        ctl.pause();
        // Within a chunk the kernel reaches its checkpoint and holds.
        std::thread::sleep(Duration::from_millis(20));
        let held = ctl.progress();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ctl.progress(), held, "progress moved while paused");
        assert!(!kernel.is_finished());
        ctl.resume();
        let out = kernel.join().unwrap().unwrap();
        assert_eq!(out["sum"], json!(expected_sum(16 * WORDS_PER_MIB, 100)));
    }
}
