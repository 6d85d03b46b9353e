//! `primes`: counts the primes in a half-open range with a segmented sieve of Eratosthenes.
//!
//! Input `{"from": a, "to": b}`: integers with `a <= b <= 10^12` and `b - a <= 10^10`.
//! Output `{"from": a, "to": b, "count": n}`, where `n` is the number of primes `p` with
//! `a <= p < b`. The answer is exact; the range caps bound the work (minutes, not days) and the
//! memory (about 1 MiB whatever the range).
//!
//! This file owns the arithmetic only; it checks the task's control between segments and does
//! nothing else with the outside world.

use serde_json::{Value, json};

use super::{Fields, Stop, TaskControl, TaskError};

const MAX_TO: u64 = 1_000_000_000_000;
const MAX_SPAN: u64 = 10_000_000_000;

/// Odd numbers per segment, one byte each: 128 KiB sits in L2 on anything current, and a segment
/// takes well under the 2 ms allowed between checkpoints.
const SEGMENT_ODDS: usize = 128 * 1024;

/// Near 10^12 there are about 78 000 sieving primes, so a segment also checks the control every
/// this many primes: walking them all is the slow part of a segment there.
const PRIMES_PER_CHECK: usize = 8_192;

pub(super) fn run(input: &Value, ctl: &TaskControl) -> Result<Value, TaskError> {
    let (from, to) = parse(input)?;
    let count = count_primes(from, to, ctl)?;
    Ok(json!({ "from": from, "to": to, "count": count }))
}

/// The input's range, checked; what [`super::check_input`] runs at submission.
pub(super) fn parse(input: &Value) -> Result<(u64, u64), TaskError> {
    let fields = Fields::of(input, &["from", "to"], "")?;
    let from = fields.u64("from", 0..=MAX_TO)?;
    let to = fields.u64("to", 0..=MAX_TO)?;
    if from > to {
        return Err(fields.bad(
            "from",
            format_args!("must not exceed \"to\" ({to}), got {from}"),
        ));
    }
    if to - from > MAX_SPAN {
        return Err(fields.bad(
            "to",
            format_args!(
                "must be at most {MAX_SPAN} above \"from\" ({from}), got {to}; split the range"
            ),
        ));
    }
    Ok((from, to))
}

/// Number of primes in `from..to`. Only even 2 is handled apart; the sieve holds odd numbers.
fn count_primes(from: u64, to: u64, ctl: &TaskControl) -> Result<u64, Stop> {
    let mut count = u64::from(from <= 2 && 2 < to);
    // First odd number >= max(from, 3): 1 is not prime and 2 is counted above.
    let lo = from.max(3) | 1;
    if lo >= to {
        return Ok(count);
    }
    let sieving = odd_primes_up_to((to - 1).isqrt(), ctl)?;
    // Next odd multiple of each sieving prime still to cross off, carried from segment to
    // segment so that no segment pays a division per prime. Starting at p*p keeps p itself.
    let mut next: Vec<u64> = sieving
        .iter()
        .map(|&p| {
            let p = u64::from(p);
            let first = (p * p).max(lo.div_ceil(p) * p);
            if first % 2 == 0 { first + p } else { first }
        })
        .collect();

    let total = (to - lo).div_ceil(2);
    let mut segment = vec![0u8; SEGMENT_ODDS.min(usize::try_from(total).unwrap_or(SEGMENT_ODDS))];
    let mut done = 0u64;
    while done < total {
        ctl.checkpoint()?;
        let len = segment
            .len()
            .min(usize::try_from(total - done).unwrap_or(usize::MAX));
        let seg_lo = lo + 2 * done;
        let seg_hi = seg_lo + 2 * len as u64;
        let composite = &mut segment[..len];
        composite.fill(0);
        for (i, (&p, next)) in sieving.iter().zip(next.iter_mut()).enumerate() {
            if i % PRIMES_PER_CHECK == PRIMES_PER_CHECK - 1 {
                ctl.checkpoint()?;
            }
            let p = u64::from(p);
            if p * p >= seg_hi {
                // Sorted ascending, so no later prime has anything to cross off here either.
                break;
            }
            // Odd multiples of p are 2p apart, which is p slots in a sieve of odd numbers.
            let mut slot = ((*next - seg_lo) / 2) as usize;
            while slot < len {
                composite[slot] = 1;
                slot += p as usize;
            }
            *next = seg_lo + 2 * slot as u64;
        }
        count += composite.iter().filter(|&&c| c == 0).count() as u64;
        done += len as u64;
        ctl.set_progress((done as f64 / total as f64) as f32);
    }
    Ok(count)
}

/// Odd primes up to `limit` (at most 10^6 here), ascending.
fn odd_primes_up_to(limit: u64, ctl: &TaskControl) -> Result<Vec<u32>, Stop> {
    // Slot i stands for 2i + 1.
    let slots = usize::try_from(limit / 2 + 1).unwrap_or(0);
    let mut composite = vec![false; slots];
    let mut i = 1;
    while (2 * i + 1) * (2 * i + 1) <= slots * 2 {
        if !composite[i] {
            ctl.checkpoint()?;
            let p = 2 * i + 1;
            let mut j = p * p / 2;
            while j < slots {
                composite[j] = true;
                j += p;
            }
        }
        i += 1;
    }
    Ok((1..slots)
        .filter(|&i| !composite[i] && (2 * i + 1) as u64 <= limit)
        .map(|i| (2 * i + 1) as u32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(from: u64, to: u64) -> u64 {
        count_primes(from, to, &TaskControl::new()).unwrap()
    }

    fn is_prime_naive(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn known_counts() {
        assert_eq!(count(0, 100), 25);
        assert_eq!(count(0, 1_000_000), 78_498);
        assert_eq!(count(1_000_000, 2_000_000), 70_435);
        assert_eq!(count(0, 2), 0);
        assert_eq!(count(2, 3), 1);
        assert_eq!(count(0, 0), 0);
        assert_eq!(count(7, 7), 0);
        assert_eq!(count(3, 4), 1);
        assert_eq!(count(4, 5), 0);
        assert_eq!(count(0, 10), 4);
        assert_eq!(count(1, 3), 1);
    }

    #[test]
    fn small_ranges_match_trial_division() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        for _ in 0..200 {
            let from = rand(5_000);
            let to = from + rand(600);
            let naive = (from..to).filter(|&n| is_prime_naive(n)).count() as u64;
            assert_eq!(count(from, to), naive, "[{from}, {to})");
        }
    }

    #[test]
    fn the_top_of_the_range_matches_trial_division() {
        // Here every sieving prime up to 10^6 is in play and numbers need more than 32 bits.
        let (from, to) = (MAX_TO - 300, MAX_TO);
        let naive = (from..to).filter(|&n| is_prime_naive(n)).count() as u64;
        assert_eq!(count(from, to), naive);
    }

    #[test]
    fn bad_ranges_are_named() {
        let ctl = TaskControl::new();
        let cases = [
            (
                json!({"from": 10, "to": 5}),
                "\"from\" must not exceed \"to\" (5), got 10",
            ),
            (
                json!({"from": 0, "to": MAX_TO + 1}),
                "\"to\" must be an integer in 0..=1000000000000",
            ),
            (
                json!({"from": 0, "to": MAX_SPAN + 1}),
                "\"to\" must be at most 10000000000 above",
            ),
            (json!({"from": -1, "to": 5}), "\"from\" must be an integer"),
            (json!({"to": 5}), "\"from\" is missing"),
            (json!({"from": 0, "to": f64::NAN}), "\"to\" is missing"),
        ];
        for (input, expected) in cases {
            let err = run(&input, &ctl).unwrap_err();
            assert!(
                matches!(err, TaskError::BadInput(_)) && err.to_string().contains(expected),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn output_echoes_the_range() {
        let out = run(&json!({"from": 0, "to": 100}), &TaskControl::new()).unwrap();
        assert_eq!(out, json!({"from": 0, "to": 100, "count": 25}));
    }
}
