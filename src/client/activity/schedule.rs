//! The daily schedule as a condition: [`Busy::Schedule`] while the [`Schedule`] does not allow
//! computing, with the time it next opens.
//!
//! Looks at the local clock every [`POLL`] rather than sleeping until the next edge: the wall
//! clock can jump (suspend, NTP, a time-zone or DST change), and one `localtime_r` a second costs
//! nothing.

use std::time::{Duration, Instant, SystemTime};

use super::{ActivitySource, Condition, ConditionDetail, Observation, Signal, SourceFactory};
use crate::client::idle::Busy;
use crate::client::localtime::{self, LocalTime};
use crate::client::schedule::Schedule;

pub const POLL: Duration = Duration::from_secs(1);

/// Tracks what was reported and says what to report next. Pure: the caller gives the wall-clock
/// time and its local reading.
#[derive(Debug, Clone)]
pub struct ScheduleWatch {
    schedule: Schedule,
    /// Whether the schedule was closed, and when it was to open, at the last report.
    reported: Option<(bool, Option<SystemTime>)>,
}

impl ScheduleWatch {
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            reported: None,
        }
    }

    /// The condition to report at `wall` (local time `local`), if it differs from the last one:
    /// the first call always reports; later ones when the schedule opens or closes, or when the
    /// opening time moves by more than a minute (the clock jumped).
    pub fn check(
        &mut self,
        now: Instant,
        wall: SystemTime,
        local: &LocalTime,
    ) -> Option<Condition> {
        let closed = !self.schedule.allows(local);
        let opens = closed
            .then(|| self.schedule.next_change(local))
            .flatten()
            .map(|secs| wall + Duration::from_secs(secs));
        let moved = |a: Option<SystemTime>, b: Option<SystemTime>| match (a, b) {
            (Some(a), Some(b)) => {
                let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
                d > Duration::from_secs(60)
            }
            (a, b) => a.is_some() != b.is_some(),
        };
        let report = match self.reported {
            None => true,
            Some((was_closed, was_opens)) => was_closed != closed || moved(was_opens, opens),
        };
        if !report {
            return None;
        }
        self.reported = Some((closed, opens));
        Some(Condition {
            reason: Busy::Schedule,
            on: closed,
            at: now,
            detail: ConditionDetail::ScheduleOpens(opens),
        })
    }
}

/// Reports the schedule from the system's local clock.
pub struct ScheduleSource {
    watch: ScheduleWatch,
}

impl ActivitySource for ScheduleSource {
    fn name(&self) -> String {
        let windows: Vec<String> = self
            .watch
            .schedule
            .windows()
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("schedule ({})", windows.join("; "))
    }

    fn interval(&self) -> Duration {
        POLL
    }

    fn poll(&mut self, _now: Instant) -> Option<Observation> {
        None
    }

    fn signal(&mut self, now: Instant) -> Option<Signal> {
        let wall = SystemTime::now();
        self.watch
            .check(now, wall, &localtime::local(wall))
            .map(Signal::Condition)
    }
}

/// A factory for a [`ScheduleSource`].
pub fn factory(schedule: Schedule) -> SourceFactory {
    Box::new(move || {
        Ok(Box::new(ScheduleSource {
            watch: ScheduleWatch::new(schedule),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(weekday: u32, hour: u32, minute: u32) -> LocalTime {
        LocalTime {
            year: 2026,
            month: 12,
            day: 1,
            weekday,
            hour,
            minute,
            second: 0,
        }
    }

    #[test]
    fn the_first_state_then_each_opening_and_closing_is_reported() {
        let schedule = Schedule::parse(&["mon-fri 18:00-08:00"]).unwrap();
        let mut w = ScheduleWatch::new(schedule);
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Monday 17:00: closed, opens in an hour.
        let c = w.check(t0, wall, &at(0, 17, 0)).expect("first report");
        assert!(c.on);
        assert_eq!(
            c.detail,
            ConditionDetail::ScheduleOpens(Some(wall + Duration::from_secs(3600)))
        );
        let later = wall + Duration::from_secs(60);
        assert_eq!(w.check(t0, later, &at(0, 17, 1)), None);
        let open = wall + Duration::from_secs(3600);
        let c = w.check(t0, open, &at(0, 18, 0)).expect("it opened");
        assert!(!c.on);
        assert_eq!(c.detail, ConditionDetail::ScheduleOpens(None));
        assert_eq!(w.check(t0, open, &at(1, 7, 59)), None);
        let c = w.check(t0, open, &at(1, 8, 0)).expect("it closed");
        assert!(c.on);
    }

    #[test]
    fn a_clock_jump_while_closed_reports_the_new_opening_time() {
        let schedule = Schedule::parse(&["12:00-13:00"]).unwrap();
        let mut w = ScheduleWatch::new(schedule);
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(w.check(t0, wall, &at(2, 10, 0)).is_some());
        // The same wall clock reads an hour later in local time (a DST change).
        let c = w.check(t0, wall, &at(2, 11, 0)).expect("the opening moved");
        assert_eq!(
            c.detail,
            ConditionDetail::ScheduleOpens(Some(wall + Duration::from_secs(3600)))
        );
    }
}
