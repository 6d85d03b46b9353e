//! Sources that replay scripted owner activity, for tests of whatever consumes observations (the
//! engine's pause and resume, the monitor itself) and for benchmarks of a pool whose owners must
//! come and go on cue.
//!
//! - [`ScriptedSource`]: a timeline of observations relative to the first poll (in-process tests);
//! - [`SpellSource`]: spells of `busy` and `idle` at wall-clock instants, read from a file by the
//!   client's hidden `--scripted-activity FILE` flag, so that a benchmark can drive a worker
//!   *process*, and a restarted one picks the script up where it stands.
//!
//! They read no clock of their own beyond `poll(now)` (and, for the spells, one reading of the
//! wall clock at construction). They must not be used outside tests, demos and benchmarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ActivitySource, Observation, SourceFactory, most_telling};
use crate::proto::ActivityKind;

/// Replays `(offset from the first poll, kind)` entries.
pub struct ScriptedSource {
    /// Sorted by offset.
    timeline: Vec<(Duration, ActivityKind)>,
    /// The first entry not yet reported.
    next: usize,
    /// The instant of the first poll.
    start: Option<Instant>,
    interval: Duration,
}

impl ScriptedSource {
    /// A source that reports each entry of `timeline` at the first poll at or after its offset.
    /// The timeline need not be sorted.
    pub fn new(mut timeline: Vec<(Duration, ActivityKind)>, interval: Duration) -> Self {
        timeline.sort_by_key(|(offset, _)| *offset);
        Self {
            timeline,
            next: 0,
            start: None,
            interval,
        }
    }

    /// Whether every entry has been reported.
    pub fn is_done(&self) -> bool {
        self.next >= self.timeline.len()
    }
}

impl ActivitySource for ScriptedSource {
    fn name(&self) -> String {
        "scripted".to_owned()
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// Reports the entries that fell due since the previous poll as one observation: the most
    /// telling kind among them, at the instant of the latest (the last moment the owner was seen,
    /// which is what an idle timer needs).
    fn poll(&mut self, now: Instant) -> Option<Observation> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let mut seen: Option<Observation> = None;
        while let Some(&(offset, kind)) = self.timeline.get(self.next) {
            if offset > elapsed {
                break;
            }
            self.next += 1;
            seen = Some(match seen {
                None => Observation {
                    kind,
                    at: start + offset,
                },
                Some(o) => Observation {
                    kind: most_telling(o.kind, kind),
                    at: start + offset,
                },
            });
        }
        seen
    }
}

/// A factory for a [`ScriptedSource`], for [`super::Monitor::start`].
pub fn factory(timeline: Vec<(Duration, ActivityKind)>, interval: Duration) -> SourceFactory {
    Box::new(move || Ok(Box::new(ScriptedSource::new(timeline, interval))))
}

/// One line of a spell script: from `at` (since the Unix epoch) the owner is busy or away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spell {
    pub at_ms: u64,
    pub busy: bool,
}

/// A spell script that cannot be used; names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum SpellError {
    #[error("scripted activity {}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("scripted activity {} line {line}: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads a spell script: one `at_ms,busy` or `at_ms,idle` per line, `at_ms` in milliseconds since
/// the Unix epoch, in non-decreasing order; blank lines and `#` comments are skipped. Before the
/// first line the owner is away.
pub fn read_spells(file: &Path) -> Result<Vec<Spell>, SpellError> {
    let text = std::fs::read_to_string(file).map_err(|source| SpellError::Io {
        file: file.to_owned(),
        source,
    })?;
    parse_spells(&text).map_err(|(line, message)| SpellError::Line {
        file: file.to_owned(),
        line,
        message,
    })
}

/// [`read_spells`] on text; an error is `(line from 1, message)`.
pub fn parse_spells(text: &str) -> Result<Vec<Spell>, (usize, String)> {
    let mut spells: Vec<Spell> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((at, state)) = line.split_once(',') else {
            return Err((n, format!("{line:?} is not `at_ms,busy` or `at_ms,idle`")));
        };
        let at_ms: u64 = at.trim().parse().map_err(|_| {
            (
                n,
                format!("{:?} is not a time in ms since the Unix epoch", at.trim()),
            )
        })?;
        let busy = match state.trim() {
            "busy" => true,
            "idle" => false,
            other => return Err((n, format!("{other:?} is neither `busy` nor `idle`"))),
        };
        if let Some(prev) = spells.last()
            && at_ms < prev.at_ms
        {
            return Err((
                n,
                format!(
                    "{at_ms} is before the line above ({}): lines must be in time order",
                    prev.at_ms
                ),
            ));
        }
        spells.push(Spell { at_ms, busy });
    }
    Ok(spells)
}

/// Reports keyboard activity on every poll that falls in a busy spell, and once for a spell that
/// began and ended between two polls; nothing while the owner is away. The client's idle policy
/// then does what it does with a real owner: pauses at once, and computes again a quiet period
/// after the last activity.
pub struct SpellSource {
    /// `(instant, busy)`, in time order.
    toggles: Vec<(Instant, bool)>,
    next: usize,
    busy: bool,
    interval: Duration,
}

impl SpellSource {
    /// Places each spell on the monotonic clock by one reading of the wall clock: a spell in the
    /// past counts as already begun (or ended).
    pub fn new(spells: &[Spell], interval: Duration) -> Self {
        let (now, wall_ms) = (Instant::now(), unix_ms_now());
        let toggles = spells
            .iter()
            .map(|s| {
                let at = if s.at_ms >= wall_ms {
                    now + Duration::from_millis(s.at_ms - wall_ms)
                } else {
                    now.checked_sub(Duration::from_millis(wall_ms - s.at_ms))
                        .unwrap_or(now)
                };
                (at, s.busy)
            })
            .collect();
        Self {
            toggles,
            next: 0,
            busy: false,
            interval,
        }
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ActivitySource for SpellSource {
    fn name(&self) -> String {
        "scripted spells".to_owned()
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn poll(&mut self, now: Instant) -> Option<Observation> {
        // The last instant the owner was seen since the previous poll: the end of a spell that
        // ended meanwhile (even one that also began meanwhile), or now while a spell lasts.
        let mut seen = None;
        while let Some(&(at, busy)) = self.toggles.get(self.next) {
            if at > now {
                break;
            }
            self.next += 1;
            if self.busy && !busy {
                seen = Some(at);
            }
            self.busy = busy;
        }
        if self.busy {
            seen = Some(now);
        }
        seen.map(|at| Observation {
            kind: ActivityKind::Keyboard,
            at,
        })
    }
}

/// A factory for a [`SpellSource`], for [`super::Monitor::start`].
pub fn spells_factory(spells: Vec<Spell>, interval: Duration) -> SourceFactory {
    Box::new(move || Ok(Box::new(SpellSource::new(&spells, interval))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::activity::Monitor;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn entries_are_reported_relative_to_the_first_poll() {
        let mut s = ScriptedSource::new(
            vec![
                (MS * 250, ActivityKind::Mouse),
                (Duration::ZERO, ActivityKind::Pointer),
            ],
            MS * 10,
        );
        let t0 = Instant::now() + Duration::from_secs(100);
        assert_eq!(
            s.poll(t0),
            Some(Observation {
                kind: ActivityKind::Pointer,
                at: t0
            })
        );
        assert_eq!(s.poll(t0 + MS * 249), None);
        assert_eq!(
            s.poll(t0 + MS * 260),
            Some(Observation {
                kind: ActivityKind::Mouse,
                at: t0 + MS * 250
            })
        );
        assert!(s.is_done());
        assert_eq!(s.poll(t0 + MS * 1000), None);
    }

    #[test]
    fn entries_due_in_one_poll_become_the_most_telling_kind_at_the_latest_instant() {
        let mut s = ScriptedSource::new(
            vec![
                (MS * 10, ActivityKind::Keyboard),
                (MS * 20, ActivityKind::Pointer),
                (MS * 30, ActivityKind::BusyProcess),
                (MS * 90, ActivityKind::Mouse),
            ],
            MS * 10,
        );
        let t0 = Instant::now();
        assert_eq!(s.poll(t0), None);
        assert_eq!(
            s.poll(t0 + MS * 50),
            Some(Observation {
                kind: ActivityKind::Keyboard,
                at: t0 + MS * 30
            })
        );
        assert!(!s.is_done());
    }

    #[tokio::test]
    async fn a_monitor_delivers_a_scripted_timeline_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let timeline = vec![
            (MS * 20, ActivityKind::Keyboard),
            (MS * 60, ActivityKind::BusyProcess),
        ];
        let (monitor, report) = Monitor::start(vec![factory(timeline, MS * 5)], tx);
        assert_eq!(report.running, vec!["scripted".to_owned()]);
        assert!(report.failed.is_empty());
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let o = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("the timeline plays within 2 s")
                .expect("the monitor is running");
            kinds.push(o.activity().map(|o| o.kind));
        }
        assert_eq!(
            kinds,
            vec![
                Some(ActivityKind::Keyboard),
                Some(ActivityKind::BusyProcess)
            ]
        );
        drop(monitor);
    }

    #[test]
    fn a_spell_script_is_read_and_a_bad_line_is_named() {
        let ok = parse_spells("# owner\n1000,busy\n\n 2500 , idle \n").unwrap();
        assert_eq!(
            ok,
            vec![
                Spell {
                    at_ms: 1000,
                    busy: true
                },
                Spell {
                    at_ms: 2500,
                    busy: false
                }
            ]
        );
        let e = |text: &str| parse_spells(text).unwrap_err();
        assert_eq!(e("1000,busy\n900,idle").0, 2);
        assert!(e("1000,busy\n900,idle").1.contains("time order"));
        let (line, msg) = e("1000,bussy");
        assert_eq!(line, 1);
        assert!(msg.contains("\"bussy\" is neither"), "{msg}");
        assert!(e("soon,busy").1.contains("\"soon\" is not a time"));
        assert!(e("1000").1.contains("is not `at_ms,busy`"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("owner.csv");
        std::fs::write(&file, "1,busy\nx,idle\n").unwrap();
        let err = read_spells(&file).unwrap_err().to_string();
        assert!(err.contains("owner.csv line 2"), "{err}");
        let err = read_spells(&dir.path().join("none.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.csv"), "{err}");
    }

    #[test]
    fn spells_report_activity_only_while_the_owner_is_there() {
        let wall = unix_ms_now();
        let spells = [
            Spell {
                at_ms: wall + 100,
                busy: true,
            },
            Spell {
                at_ms: wall + 300,
                busy: false,
            },
            // A spell shorter than a poll interval.
            Spell {
                at_ms: wall + 500,
                busy: true,
            },
            Spell {
                at_ms: wall + 505,
                busy: false,
            },
        ];
        let mut s = SpellSource::new(&spells, MS * 10);
        let t0 = s.toggles[0].0 - MS * 100;
        assert_eq!(s.poll(t0 + MS * 50), None);
        assert_eq!(s.poll(t0 + MS * 150).map(|o| o.at), Some(t0 + MS * 150));
        assert_eq!(s.poll(t0 + MS * 250).map(|o| o.at), Some(t0 + MS * 250));
        // The spell ended at 300: that was the last sighting, then nothing.
        assert_eq!(s.poll(t0 + MS * 350).map(|o| o.at), Some(s.toggles[1].0));
        assert_eq!(s.poll(t0 + MS * 450), None);
        assert_eq!(s.poll(t0 + MS * 550).map(|o| o.at), Some(s.toggles[3].0));
        assert_eq!(s.poll(t0 + MS * 600), None);
    }

    #[test]
    fn a_spell_already_under_way_counts_as_begun() {
        let wall = unix_ms_now();
        let spells = [
            Spell {
                at_ms: wall.saturating_sub(5_000),
                busy: true,
            },
            Spell {
                at_ms: wall + 60_000,
                busy: false,
            },
        ];
        let mut s = SpellSource::new(&spells, MS * 10);
        assert!(s.poll(Instant::now()).is_some());
    }
}
