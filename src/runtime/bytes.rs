//! `bytes`: a large output of known content, for tests of how big results travel (out of band)
//! and of the supervisor's output limit.
//!
//! Input `{"bytes": N, "seed": S}`: N in `0..=1 GiB` (2^30), S any `u64`. Output
//! `{"bytes": N, "seed": S, "base64": B}`, where B is the standard base64 (padded) of the first N
//! bytes of the stream of splitmix64 outputs seeded with S, each output little-endian. Anyone can
//! recompute the bytes from the input, so a test checks a result without keeping a copy.
//!
//! This is the one kind whose output size is *not* checked at submission: an N whose output is
//! larger than the supervisor's limit (`proto::DEFAULT_MAX_OUTPUT_BYTES`, 64 MiB of JSON text, so
//! N above about 48 MiB) is accepted, runs on a worker and fails there or at the supervisor.
//! Tests need exactly such a task to reach the workers.
//!
//! The work is done in chunks with a checkpoint and progress between them, so pause and cancel
//! stay prompt however large N is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::{Fields, TaskControl, TaskError};
use crate::rng::Rng;

pub(super) const MAX_BYTES: u64 = 1 << 30;

/// Bytes generated and encoded between checkpoints: a multiple of 3 (so the chunks' base64 joins
/// without padding in the middle) and of 8 (whole generator outputs), and tens of microseconds of
/// work.
const CHUNK_BYTES: usize = 48 << 10;

/// The input's size and seed, checked; what [`super::check_input`] runs at submission.
pub(super) fn parse(input: &Value) -> Result<(u64, u64), TaskError> {
    let fields = Fields::of(input, &["bytes", "seed"], "")?;
    let bytes = fields.u64("bytes", 0..=MAX_BYTES)?;
    let seed = fields.u64("seed", 0..=u64::MAX)?;
    Ok((bytes, seed))
}

pub(super) fn run(input: &Value, ctl: &TaskControl) -> Result<Value, TaskError> {
    let (bytes, seed) = parse(input)?;
    // At most 2^30, so it fits in usize on any platform that runs workers (64-bit).
    let total = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut text = String::new();
    text.try_reserve_exact(total.div_ceil(3) * 4).map_err(|_| {
        TaskError::BadInput(format!(
            "this worker cannot allocate the output of {bytes} bytes"
        ))
    })?;
    let mut generator = Rng::new(seed);
    let mut chunk = vec![0u8; CHUNK_BYTES.min(total)];
    let mut done = 0;
    while done < total {
        ctl.checkpoint()?;
        let len = chunk.len().min(total - done);
        generator.fill(&mut chunk[..len]);
        BASE64.encode_string(&chunk[..len], &mut text);
        done += len;
        ctl.set_progress((done as f64 / total as f64) as f32);
    }
    Ok(json!({ "bytes": bytes, "seed": seed, "base64": text }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn decoded(output: &Value) -> Vec<u8> {
        BASE64.decode(output["base64"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn bytes_are_splitmix64_of_the_seed_little_endian() {
        let out = run(&json!({"bytes": 16, "seed": 0}), &TaskControl::new()).unwrap();
        assert_eq!(out["bytes"], 16);
        assert_eq!(out["seed"], 0);
        // The first two outputs of splitmix64 seeded with 0, from the reference implementation.
        let mut expected = 0xe220_a839_7b1d_cdafu64.to_le_bytes().to_vec();
        expected.extend(0x6e78_9e6a_a1b9_65f4u64.to_le_bytes());
        assert_eq!(decoded(&out), expected);
    }

    #[test]
    fn bytes_are_the_same_across_chunks_and_lengths() {
        let ctl = TaskControl::new();
        let long = run(
            &json!({"bytes": 3 * CHUNK_BYTES + 5, "seed": u64::MAX}),
            &ctl,
        )
        .unwrap();
        let short = run(&json!({"bytes": CHUNK_BYTES + 3, "seed": u64::MAX}), &ctl).unwrap();
        let (long, short) = (decoded(&long), decoded(&short));
        assert_eq!(long.len(), 3 * CHUNK_BYTES + 5);
        assert_eq!(short[..], long[..short.len()]);
        let other = run(&json!({"bytes": 64, "seed": 1}), &ctl).unwrap();
        assert_ne!(decoded(&other)[..], long[..64]);
        let empty = run(&json!({"bytes": 0, "seed": 7}), &ctl).unwrap();
        assert_eq!(empty, json!({"bytes": 0, "seed": 7, "base64": ""}));
    }

    #[test]
    fn bytes_refuses_more_than_a_gib_and_needs_a_seed() {
        let ctl = TaskControl::new();
        let err = run(&json!({"bytes": MAX_BYTES + 1, "seed": 0}), &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"bytes\" must be an integer in 0..=1073741824"),
            "{err}"
        );
        let err = run(&json!({"bytes": 1}), &ctl).unwrap_err();
        assert!(err.to_string().contains("\"seed\" is missing"), "{err}");
    }

    #[test]
    fn cancelling_a_large_bytes_task_stops_it_promptly() {
        let ctl = Arc::new(TaskControl::new());
        let kernel = {
            let ctl = Arc::clone(&ctl);
            std::thread::spawn(move || run(&json!({"bytes": 256 << 20, "seed": 3}), &ctl))
        };
        std::thread::sleep(Duration::from_millis(30));
        let asked = Instant::now();
        ctl.cancel();
        let result = kernel.join().unwrap();
        let took = asked.elapsed();
        assert!(matches!(result, Err(TaskError::Cancelled)), "{result:?}");
        assert!(took < Duration::from_millis(50), "{took:?}");
        assert!(
            ctl.progress() > 0.0 && ctl.progress() < 1.0,
            "{}",
            ctl.progress()
        );
    }
}
