//! Benchmarks: commands that set up what they measure (supervisor, worker processes) on
//! 127.0.0.1 and print figures, as a table or one JSON object. Not tests: nothing here fails on
//! a slow machine.

pub mod activity;
pub mod bulk;
pub mod chaos;
pub mod footprint;
pub mod interference;
pub mod proxy;
pub mod reissue;
pub mod sim_vs_real;
pub mod swarm;
pub mod xvfb;

/// The nearest-rank percentile `p` (0..=100) of `samples`, in the samples' unit.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The figures of a set of latency samples, in milliseconds rounded to 0.01 ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples_ms: &[f64]) -> Self {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Self {
            p50: round(percentile(samples_ms, 50.0)),
            p99: round(percentile(samples_ms, 99.0)),
            max: round(samples_ms.iter().copied().fold(0.0, f64::max)),
        }
    }
}

/// Prints a table of latencies: a header naming the first column, then a row per measure.
pub fn print_latency_table(first_column: &str, rows: &[(&str, Latency)]) {
    println!(
        "{first_column:<28} {:>10} {:>10} {:>10}",
        "p50 ms", "p99 ms", "max ms"
    );
    for (label, l) in rows {
        println!(
            "{label:<28} {:>10.2} {:>10.2} {:>10.2}",
            l.p50, l.p99, l.max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
