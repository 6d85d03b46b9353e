//! A source that replays a fixed timeline of owner activity, for tests of whatever consumes
//! observations (the engine's pause and resume, the monitor itself).
//!
//! It reads no clock of its own: time comes in through `poll(now)`, and the timeline is relative
//! to the instant of the first poll. It must not be used outside tests and demos.

use std::time::{Duration, Instant};

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
            kinds.push(o.kind);
        }
        assert_eq!(
            kinds,
            vec![ActivityKind::Keyboard, ActivityKind::BusyProcess]
        );
        drop(monitor);
    }
}
