//! A latency histogram with fixed bounds: cheap to record on the driver's hot path (no
//! allocation), exact in count, sum and maximum, and quantiles to the bucket they fall in.

use std::time::Duration;

/// Upper bounds of the buckets, in milliseconds; one more bucket holds everything above.
pub const BOUNDS_MS: [f64; 14] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Histogram {
    /// How many samples fell at or under each of `BOUNDS_MS` (and over the last one), not
    /// cumulative.
    pub counts: [u64; BOUNDS_MS.len() + 1],
    pub count: u64,
    pub sum_ms: f64,
    pub max_ms: f64,
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BOUNDS_MS.partition_point(|b| *b < ms);
        self.counts[i] += 1;
        self.count += 1;
        self.sum_ms += ms;
        if ms > self.max_ms {
            self.max_ms = ms;
        }
    }

    /// The bound of the bucket the `q` quantile falls in (the maximum, past the last bound);
    /// `None` without samples.
    pub fn quantile_at_most_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    BOUNDS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(self.max_ms)
                        .min(self.max_ms),
                );
            }
        }
        Some(self.max_ms)
    }
}

/// What `/api/stats` shows of a histogram: the buckets and the quantiles read off them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistogramView {
    pub bounds_ms: &'static [f64],
    #[serde(flatten)]
    pub histogram: Histogram,
    pub p50_ms_at_most: Option<f64>,
    pub p99_ms_at_most: Option<f64>,
}

impl From<&Histogram> for HistogramView {
    fn from(h: &Histogram) -> Self {
        Self {
            bounds_ms: &BOUNDS_MS,
            histogram: h.clone(),
            p50_ms_at_most: h.quantile_at_most_ms(0.5),
            p99_ms_at_most: h.quantile_at_most_ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_bucket_of_their_sample_and_never_above_the_maximum() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_at_most_ms(0.99), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(300));
        }
        h.record(Duration::from_millis(30));
        h.record(Duration::from_millis(7000));
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile_at_most_ms(0.5), Some(0.5));
        // The 99th of 100 samples is the 30 ms one: in the bucket up to 50 ms.
        assert_eq!(h.quantile_at_most_ms(0.99), Some(50.0));
        // Past the last bound, the maximum.
        assert_eq!(h.quantile_at_most_ms(1.0), Some(7000.0));
        assert!((h.max_ms - 7000.0).abs() < 1e-9);
        assert_eq!(h.counts[BOUNDS_MS.len()], 1);
        // A sample on a bound counts in that bound's bucket.
        let mut one = Histogram::default();
        one.record(Duration::from_millis(1));
        assert_eq!(one.counts[2], 1);
        assert_eq!(one.quantile_at_most_ms(0.99), Some(1.0));
    }
}
