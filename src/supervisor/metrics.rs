//! `/metrics` in the Prometheus text exposition format (version 0.0.4): a writer for counters,
//! gauges and histograms with labels, and what the supervisor exposes through it.
//!
//! Names follow Prometheus conventions: `idlegrid_` prefix, `_total` for counters, base units
//! (`_seconds`). Label values are escaped as the format requires.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::histogram::{BOUNDS_MS, Histogram};

/// The text of one scrape.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A counter or gauge without labels.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A counter or gauge with one label, a sample per value of it (`all` are always present,
    /// at 0 when `values` has none).
    pub fn by_label(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        all: &[&str],
        values: &BTreeMap<&str, u64>,
    ) {
        self.header(name, kind, help);
        let mut keys: Vec<&str> = all.to_vec();
        keys.extend(values.keys().filter(|k| !all.contains(k)));
        for k in keys {
            let v = values.get(k).copied().unwrap_or(0);
            self.sample(name, &[(label, k)], v as f64);
        }
    }

    /// A histogram of durations recorded in milliseconds, exposed in seconds.
    pub fn histogram_seconds(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in BOUNDS_MS.iter().zip(h.counts.iter()) {
            cumulative += n;
            let le = number(bound / 1000.0);
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum_ms / 1000.0);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// A sample value as the format writes it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Upper bounds of [`Coarse`]'s buckets, in seconds: from a second to a day.
pub const COARSE_BOUNDS_S: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
];

/// A histogram of long durations (job makespans), in seconds.
#[derive(Debug, Clone, Default)]
pub struct Coarse {
    /// Samples at or under each of `COARSE_BOUNDS_S` (and over the last one), not cumulative.
    pub counts: [u64; COARSE_BOUNDS_S.len() + 1],
    pub count: u64,
    pub sum_s: f64,
}

impl Coarse {
    pub fn record(&mut self, seconds: f64) {
        let i = COARSE_BOUNDS_S.partition_point(|b| *b < seconds);
        self.counts[i] += 1;
        self.count += 1;
        self.sum_s += seconds;
    }
}

impl Exposition {
    /// A [`Coarse`] histogram (already in seconds).
    pub fn histogram_coarse(&mut self, name: &str, help: &str, h: &Coarse) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in COARSE_BOUNDS_S.iter().zip(h.counts.iter()) {
            cumulative += n;
            self.sample(&bucket, &[("le", &number(*bound))], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum_s);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_exposition_parses_as_prometheus_text_with_cumulative_buckets_and_escaped_labels() {
        let mut e = Exposition::default();
        e.single(
            "idlegrid_workers_lost_total",
            "counter",
            "Workers declared lost.",
            3.0,
        );
        let values = BTreeMap::from([("live", 2), ("later", 1)]);
        e.by_label(
            "idlegrid_workers",
            "gauge",
            "Workers by state.",
            "state",
            &["live", "busy"],
            &values,
        );
        let mut h = Histogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(30));
        h.record(Duration::from_secs(9));
        e.histogram_seconds("idlegrid_heartbeat_lateness_seconds", "Lateness.", &h);
        let text = e.into_text();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
        let find = |name: &str, label: Option<(&str, &str)>| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| s.value.clone())
                .unwrap_or_else(|| panic!("no {name} {label:?} in\n{text}"))
        };
        assert!(matches!(
            find("idlegrid_workers_lost_total", None),
            prometheus_parse::Value::Counter(v) if v == 3.0
        ));
        assert!(matches!(
            find("idlegrid_workers", Some(("state", "busy"))),
            prometheus_parse::Value::Gauge(v) if v == 0.0
        ));
        // A value beyond those always listed gets its own sample.
        assert!(matches!(
            find("idlegrid_workers", Some(("state", "later"))),
            prometheus_parse::Value::Gauge(v) if v == 1.0
        ));
        match find("idlegrid_heartbeat_lateness_seconds", None) {
            prometheus_parse::Value::Histogram(buckets) => {
                let at = |le: f64| {
                    buckets
                        .iter()
                        .find(|b| (b.less_than - le).abs() < 1e-12)
                        .map(|b| b.count)
                };
                assert_eq!(at(0.0005), Some(1.0));
                assert_eq!(at(0.05), Some(2.0));
                assert_eq!(at(5.0), Some(2.0));
            }
            other => panic!("not a histogram: {other:?}\n{text}"),
        }
        assert!(
            text.contains("idlegrid_heartbeat_lateness_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegrid_heartbeat_lateness_seconds_count 3\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_and_help_texts_are_escaped_as_the_format_requires() {
        let mut e = Exposition::default();
        e.by_label(
            "idlegrid_x",
            "gauge",
            "Two\nlines \\ here.",
            "k",
            &[],
            &BTreeMap::from([("a \"b\"\nc\\d", 1)]),
        );
        let text = e.into_text();
        assert!(
            text.contains("# HELP idlegrid_x Two\\nlines \\\\ here.\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegrid_x{k=\"a \\\"b\\\"\\nc\\\\d\"} 1\n"),
            "{text}"
        );
    }
}
