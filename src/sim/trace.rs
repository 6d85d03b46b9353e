//! Availability traces, so that published desktop-grid traces can drive the simulator.
//!
//! `availability.csv`: `worker,start_s,end_s`, one idle interval per line (the machine was idle
//! and available from `start_s` to `end_s`, seconds from the trace's start). `speeds.csv`:
//! `worker,speed` (1.0 = the reference core). A header line naming those columns is allowed;
//! blank lines and lines starting with `#` are skipped.
//!
//! How a traced machine behaves:
//! - before its first interval it has not joined yet (its client is not running);
//! - at the start of its first interval it joins, idle;
//! - between two intervals its owner is active: the client sends `Activity` at the end of one
//!   interval and `Available` at the start of the next (intervals that touch or overlap in time
//!   are refused when they overlap, merged when they touch);
//! - at the end of its last interval it leaves: its client shuts down and the connection closes.
//!
//! The job (a bag of tasks) is submitted at the trace's time 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::SimError;
use super::scenario::{JobShape, Shape, lognormal_mean, normal, unit};
use super::world::{WorkerPlan, World};
use crate::rng::Rng;

/// A trace and the job to run on it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    pub name: String,
    /// Idle intervals by worker, sorted, disjoint.
    pub availability: BTreeMap<String, Vec<(f64, f64)>>,
    /// Nominal speed by worker (all of them when given; 1.0 each when not).
    pub speeds: Option<BTreeMap<String, f64>>,
    pub tasks: u32,
    pub task_s: f64,
    pub task_cv: f64,
    pub slots: u32,
    pub link_kbps: f64,
    pub delay_ms: f64,
    pub limit_h: f64,
}

impl TraceSpec {
    /// One concrete world: the trace as it is, the task sizes drawn with `seed`.
    pub fn resolve(&self, seed: u64) -> World {
        let mut rng = Rng::new(seed ^ 0x7ace);
        let workers = self
            .availability
            .iter()
            .map(|(name, intervals)| {
                let speed = self
                    .speeds
                    .as_ref()
                    .and_then(|s| s.get(name).copied())
                    .unwrap_or(1.0);
                let busy = intervals.windows(2).map(|w| (w[0].1, w[1].0)).collect();
                WorkerPlan {
                    name: name.clone(),
                    speed,
                    slowdown: 1.0,
                    slots: self.slots,
                    memory_mb: 8192,
                    disk_mb: 100_000,
                    link_kbps: self.link_kbps,
                    join_s: intervals.first().map_or(0.0, |i| i.0),
                    leave_s: intervals.last().map(|i| i.1),
                    busy,
                    crash: None,
                    freeze: None,
                }
            })
            .collect();
        let job = JobShape {
            shape: Shape::Bag,
            tasks: Some(self.tasks),
            depth: None,
            width: None,
            fan_in: None,
            mean_s: self.task_s,
            cv: self.task_cv,
            estimate_noise: 0.0,
            mem_mb: 0,
            disk_mb: 0,
            net_kb: 0,
            out_kb: 0,
        };
        World {
            name: self.name.clone(),
            workers,
            tasks: job.tasks(&mut rng),
            delay_s: self.delay_ms / 1000.0,
            submit_s: 0.0,
            heartbeat_ms: 1000,
            miss_limit: 3,
            limit_s: self.limit_h * 3600.0,
        }
    }
}

fn csv_err(file: &Path, line: usize, field: &str, message: impl Into<String>) -> SimError {
    SimError::Csv {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Data lines of a CSV file with their line numbers (from 1), split on commas and trimmed; a
/// header equal to `header` is skipped. Each line must have `header.len()` fields.
fn rows<'t>(
    file: &Path,
    text: &'t str,
    header: &[&str],
) -> Result<Vec<(usize, Vec<&'t str>)>, SimError> {
    let mut out = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && fields == header {
            continue;
        }
        if fields.len() != header.len() {
            return Err(csv_err(
                file,
                i + 1,
                header
                    .get(fields.len().min(header.len() - 1))
                    .unwrap_or(&"line"),
                format!(
                    "expected {} fields ({}), found {}",
                    header.len(),
                    header.join(","),
                    fields.len()
                ),
            ));
        }
        out.push((i + 1, fields));
    }
    if out.is_empty() {
        return Err(csv_err(file, 1, header[0], "the file has no data lines"));
    }
    Ok(out)
}

fn read(file: &Path) -> Result<String, SimError> {
    std::fs::read_to_string(file).map_err(|source| SimError::Io {
        file: file.to_owned(),
        source,
    })
}

fn worker_name(file: &Path, line: usize, s: &str) -> Result<String, SimError> {
    if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(csv_err(
            file,
            line,
            "worker",
            format!("{s:?} is not a worker name (1 to 128 characters, no control characters)"),
        ));
    }
    Ok(s.to_owned())
}

fn seconds(file: &Path, line: usize, field: &str, s: &str) -> Result<f64, SimError> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 1e9)
        .ok_or_else(|| {
            csv_err(
                file,
                line,
                field,
                format!("{s:?} is not a number of seconds >= 0"),
            )
        })
}

/// Reads an availability trace. Intervals must have `start_s < end_s` and must not overlap
/// another of the same worker.
pub fn read_availability(file: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>, SimError> {
    let text = read(file)?;
    parse_availability(file, &text)
}

pub fn parse_availability(
    file: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<(f64, f64)>>, SimError> {
    let mut by_worker: BTreeMap<String, Vec<(f64, f64, usize)>> = BTreeMap::new();
    for (line, f) in rows(file, text, &["worker", "start_s", "end_s"])? {
        let worker = worker_name(file, line, f[0])?;
        let start = seconds(file, line, "start_s", f[1])?;
        let end = seconds(file, line, "end_s", f[2])?;
        if end <= start {
            return Err(csv_err(
                file,
                line,
                "end_s",
                format!("{end} is not after start_s = {start}"),
            ));
        }
        by_worker
            .entry(worker)
            .or_default()
            .push((start, end, line));
    }
    let mut out = BTreeMap::new();
    for (worker, mut v) in by_worker {
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut merged: Vec<(f64, f64, usize)> = Vec::with_capacity(v.len());
        for iv in v {
            match merged.last_mut() {
                Some(last) if iv.0 < last.1 => {
                    return Err(csv_err(
                        file,
                        iv.2.max(last.2),
                        "start_s",
                        format!(
                            "worker {worker}'s interval on line {} overlaps the one on line {}",
                            iv.2.max(last.2),
                            iv.2.min(last.2)
                        ),
                    ));
                }
                Some(last) if iv.0 == last.1 => last.1 = iv.1,
                _ => merged.push(iv),
            }
        }
        out.insert(worker, merged.into_iter().map(|(a, b, _)| (a, b)).collect());
    }
    Ok(out)
}

/// Reads `worker,speed`, and checks that it names exactly the workers of `availability`.
pub fn read_speeds(
    file: &Path,
    availability: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<BTreeMap<String, f64>, SimError> {
    let text = read(file)?;
    parse_speeds(file, &text, availability)
}

pub fn parse_speeds(
    file: &Path,
    text: &str,
    availability: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<BTreeMap<String, f64>, SimError> {
    let mut out = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (line, f) in rows(file, text, &["worker", "speed"])? {
        let worker = worker_name(file, line, f[0])?;
        let speed = f[1]
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= 100.0)
            .ok_or_else(|| {
                csv_err(
                    file,
                    line,
                    "speed",
                    format!("{:?} is not a speed above 0 and at most 100", f[1]),
                )
            })?;
        if !availability.contains_key(&worker) {
            return Err(csv_err(
                file,
                line,
                "worker",
                format!("worker {worker} has no interval in the availability trace"),
            ));
        }
        if let Some(first) = lines.insert(worker.clone(), line) {
            return Err(csv_err(
                file,
                line,
                "worker",
                format!("worker {worker} already has a speed on line {first}"),
            ));
        }
        out.insert(worker, speed);
    }
    if let Some(missing) = availability.keys().find(|w| !out.contains_key(*w)) {
        return Err(csv_err(
            file,
            text.lines().count().max(1),
            "worker",
            format!("worker {missing} of the availability trace has no speed"),
        ));
    }
    Ok(out)
}

/// Writes a synthetic trace of `workers` machines over `hours` into `dir`
/// (`availability.csv`, `speeds.csv`), shaped like measured desktop grids: most machines are
/// there from the start, a quarter join during the first half; idle spells average two hours,
/// owner spells twenty minutes (both log-normal, cv 1); speeds log-normal around 1.0 (sigma
/// 0.35, within 0.2..4). Returns the two paths.
pub fn write_trace(
    dir: &Path,
    workers: u32,
    hours: f64,
    seed: u64,
) -> Result<(PathBuf, PathBuf), SimError> {
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| SimError::Io { file, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let horizon = hours * 3600.0;
    let mut rng = Rng::new(seed ^ 0x7ace_0001);
    let avail_path = dir.join("availability.csv");
    let speeds_path = dir.join("speeds.csv");
    let mut avail = String::from("worker,start_s,end_s\n");
    let mut speeds = String::from("worker,speed\n");
    for i in 0..workers {
        let name = format!("m{:05}", i + 1);
        let mut t = if unit(&mut rng) < 0.75 {
            0.0
        } else {
            unit(&mut rng) * horizon / 2.0
        };
        while t < horizon {
            let idle = lognormal_mean(&mut rng, 7200.0, 1.0).max(60.0);
            let end = (t + idle).min(horizon);
            avail.push_str(&format!("{name},{t:.1},{end:.1}\n"));
            t = end + lognormal_mean(&mut rng, 1200.0, 1.0).max(30.0);
        }
        let speed = (0.35 * normal(&mut rng)).exp().clamp(0.2, 4.0);
        speeds.push_str(&format!("{name},{speed:.3}\n"));
    }
    for (path, text) in [(&avail_path, avail), (&speeds_path, speeds)] {
        let mut f = std::fs::File::create(path).map_err(io(path))?;
        f.write_all(text.as_bytes()).map_err(io(path))?;
    }
    Ok((avail_path, speeds_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("avail.csv")
    }

    #[test]
    fn a_bad_trace_line_is_reported_with_its_line_and_field() {
        let e = parse_availability(p(), "worker,start_s,end_s\na,0,10\nb,5,x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "avail.csv line 3: end_s: \"x\" is not a number of seconds >= 0"
        );
        let e = parse_availability(p(), "a,0,10\na,20,15\n").unwrap_err();
        assert!(e.to_string().starts_with("avail.csv line 2: end_s:"), "{e}");
        let e = parse_availability(p(), "a,0,10\nb,1\n").unwrap_err();
        assert!(e.to_string().contains("line 2") && e.to_string().contains("expected 3 fields"));
        let e = parse_availability(p(), "a,0,10\na,5,20\n").unwrap_err();
        assert!(
            e.to_string().contains(
                "line 2: start_s: worker a's interval on line 2 overlaps the one on line 1"
            ),
            "{e}"
        );
        let e = parse_availability(p(), "# nothing\n\n").unwrap_err();
        assert!(e.to_string().contains("no data lines"));
    }

    #[test]
    fn touching_intervals_merge_and_intervals_sort_per_worker() {
        let a = parse_availability(p(), "b,30,40\nb,0,10\nb,10,20\na,1,2\n").unwrap();
        assert_eq!(a["b"], vec![(0.0, 20.0), (30.0, 40.0)]);
        assert_eq!(a.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn speeds_must_name_exactly_the_traced_workers() {
        let a = parse_availability(p(), "a,0,10\nb,0,10\n").unwrap();
        let s = Path::new("speeds.csv");
        assert_eq!(
            parse_speeds(s, "worker,speed\na,1.5\nb,0.5\n", &a).unwrap()["a"],
            1.5
        );
        let e = parse_speeds(s, "a,1\nb,0\n", &a).unwrap_err().to_string();
        assert!(e.starts_with("speeds.csv line 2: speed:"), "{e}");
        let e = parse_speeds(s, "a,1\nc,1\n", &a).unwrap_err().to_string();
        assert!(
            e.contains("line 2: worker: worker c has no interval"),
            "{e}"
        );
        let e = parse_speeds(s, "a,1\n", &a).unwrap_err().to_string();
        assert!(
            e.contains("worker b of the availability trace has no speed"),
            "{e}"
        );
        let e = parse_speeds(s, "a,1\na,2\nb,1\n", &a)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: worker: worker a already has a speed on line 1"),
            "{e}"
        );
    }

    #[test]
    fn between_intervals_the_owner_is_busy_and_after_the_last_the_machine_leaves() {
        let a = parse_availability(p(), "a,100,200\na,300,400\n").unwrap();
        let spec = TraceSpec {
            name: "t".into(),
            availability: a,
            speeds: None,
            tasks: 3,
            task_s: 10.0,
            task_cv: 0.0,
            slots: 1,
            link_kbps: 10_000.0,
            delay_ms: 10.0,
            limit_h: 1.0,
        };
        let w = &spec.resolve(1).workers[0];
        assert_eq!((w.join_s, w.leave_s), (100.0, Some(400.0)));
        assert_eq!(w.busy, vec![(200.0, 300.0)]);
    }
}
