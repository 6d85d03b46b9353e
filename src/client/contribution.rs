//! What this machine has given: tasks finished and CPU time per local day, kept in the data
//! dir across restarts (`contribution.json`), for the status window's "today", "total" and
//! 14-day chart.
//!
//! A task counts as finished when it produced a result (a failure or a cancel does not), and
//! the CPU time of every replica that ran counts, whatever its end: that time was given. The
//! file is small (one line per day, at most [`KEPT_DAYS`] days) and written whole, atomically,
//! after each finished replica; a file that cannot be read is logged, renamed aside
//! (`contribution.json.bad`) and counting starts again from zero, so a bad file never stops the
//! worker. This module does no I/O of its own beyond [`load`] and [`save`], which the engine
//! calls off its async threads.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::localtime;
use super::snapshot::{Contribution, DayTotal};

/// Days shown in the chart, today included.
pub const CHART_DAYS: usize = 14;
/// Days kept in the file; older ones only count in the totals.
pub const KEPT_DAYS: usize = 60;
const FILE: &str = "contribution.json";

/// The kept counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub tasks_total: u64,
    pub cpu_total_ms: u64,
    /// Local date `YYYY-MM-DD` -> that day's counts.
    pub days: BTreeMap<String, Day>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    pub tasks: u64,
    pub cpu_ms: u64,
}

impl Tally {
    /// Counts a replica that ran for `cpu` and, if `finished`, produced its task's result, on
    /// the local day of `at`.
    pub fn add(&mut self, at: SystemTime, finished: bool, cpu: Duration) {
        let cpu_ms = cpu.as_millis() as u64;
        let tasks = u64::from(finished);
        self.tasks_total += tasks;
        self.cpu_total_ms += cpu_ms;
        let day = self.days.entry(localtime::local(at).date()).or_default();
        day.tasks += tasks;
        day.cpu_ms += cpu_ms;
        while self.days.len() > KEPT_DAYS {
            self.days.pop_first();
        }
    }

    /// The view for a snapshot as of `now`: today, the totals, and the last [`CHART_DAYS`]
    /// local days oldest first (today last), days without work as zero.
    pub fn view(&self, now: SystemTime) -> Contribution {
        let per_day: Vec<DayTotal> = (0..CHART_DAYS)
            .rev()
            .map(|back| {
                // Whole days back from now: within an hour of midnight after a change of UTC
                // offset a day can show twice or not at all, for that hour.
                let at = now - Duration::from_secs(86_400 * back as u64);
                let date = localtime::local(at).date();
                let d = self.days.get(&date).copied().unwrap_or_default();
                DayTotal {
                    date,
                    cpu: Duration::from_millis(d.cpu_ms),
                    tasks: d.tasks,
                }
            })
            .collect();
        let today = per_day.last().cloned();
        Contribution {
            tasks_today: today.as_ref().map_or(0, |d| d.tasks),
            cpu_today: today.map_or(Duration::ZERO, |d| d.cpu),
            tasks_total: self.tasks_total,
            cpu_total: Duration::from_millis(self.cpu_total_ms),
            per_day,
        }
    }
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads the tally kept in `data_dir`. None kept: zero. A file that cannot be read or parsed
/// is logged and renamed aside, and counting starts from zero.
pub fn load(data_dir: &Path) -> Tally {
    let file = path(data_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Tally::default(),
        Err(e) => return set_aside(&file, &e.to_string()),
    };
    match serde_json::from_str::<Tally>(&text) {
        Ok(t) => t,
        Err(e) => set_aside(&file, &e.to_string()),
    }
}

fn set_aside(file: &Path, why: &str) -> Tally {
    let aside = file.with_extension("json.bad");
    let moved = std::fs::rename(file, &aside);
    tracing::warn!(
        "cannot read the contribution kept in {}: {why}; {}counting starts from zero",
        file.display(),
        match moved {
            Ok(()) => format!("moved it to {}; ", aside.display()),
            Err(e) => format!("cannot move it aside ({e}); "),
        }
    );
    Tally::default()
}

/// Writes the tally to `data_dir` so that a reader sees the old file or the new one: a
/// temporary file beside it, flushed, then renamed over it.
pub fn save(data_dir: &Path, tally: &Tally) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(data_dir)?;
    let text = serde_json::to_string(tally).map_err(io::Error::other)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path(data_dir)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn todays_work_and_the_totals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut t = load(dir.path());
        assert_eq!(t, Tally::default());
        t.add(now, true, secs(30));
        t.add(now, false, secs(5)); // a cancelled replica: its CPU counts, not as a task
        save(dir.path(), &t).unwrap();

        let again = load(dir.path());
        assert_eq!(again, t);
        let v = again.view(now);
        assert_eq!((v.tasks_today, v.cpu_today), (1, secs(35)));
        assert_eq!((v.tasks_total, v.cpu_total), (1, secs(35)));
        assert_eq!(v.per_day.len(), CHART_DAYS);
        assert_eq!(v.per_day[CHART_DAYS - 1].date, localtime::local(now).date());
    }

    #[test]
    fn the_chart_has_fourteen_days_with_empty_days_as_zero_and_today_last() {
        let now = SystemTime::now();
        let mut t = Tally::default();
        t.add(now - secs(3 * 86_400), true, secs(60));
        t.add(now - secs(20 * 86_400), true, secs(7)); // beyond the chart: totals only
        let v = t.view(now);
        assert_eq!(v.per_day.len(), CHART_DAYS);
        let cpu: Vec<u64> = v.per_day.iter().map(|d| d.cpu.as_secs()).collect();
        let mut want = vec![0; CHART_DAYS];
        want[CHART_DAYS - 1 - 3] = 60;
        assert_eq!(cpu, want);
        assert_eq!((v.tasks_today, v.cpu_today), (0, Duration::ZERO));
        assert_eq!((v.tasks_total, v.cpu_total), (2, secs(67)));
        let dates: Vec<&str> = v.per_day.iter().map(|d| d.date.as_str()).collect();
        let mut sorted = dates.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, dates, "oldest first, each day once");
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_counting_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"tasks_total\": \"many\"").unwrap();
        let t = load(dir.path());
        assert_eq!(t, Tally::default());
        assert!(!path(dir.path()).exists());
        let aside = dir.path().join("contribution.json.bad");
        assert_eq!(
            std::fs::read_to_string(aside).unwrap(),
            "{\"tasks_total\": \"many\""
        );
        // And counting goes on from there.
        let mut t = t;
        t.add(SystemTime::now(), true, secs(1));
        save(dir.path(), &t).unwrap();
        assert_eq!(load(dir.path()).tasks_total, 1);
    }

    #[test]
    fn only_the_kept_days_stay_in_the_file() {
        let now = SystemTime::now();
        let mut t = Tally::default();
        for back in 0..(KEPT_DAYS as u64 + 10) {
            t.add(now - secs(back * 86_400), true, secs(1));
        }
        assert_eq!(t.days.len(), KEPT_DAYS);
        assert_eq!(t.tasks_total, KEPT_DAYS as u64 + 10);
    }
}
