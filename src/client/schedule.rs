//! The daily schedule: the hours of each weekday in which this machine may compute.
//!
//! A [`Schedule`] is a list of [`Window`]s, each a set of weekdays and a local time span,
//! written as the settings file and the settings page show them: `"mon-fri 18:00-08:00"`,
//! `"sat,sun 00:00-24:00"`, `"daily 12:00-13:30"`, or a span alone (every day). A span whose end
//! is before its start crosses midnight and belongs to the day it starts on: `"fri 22:00-06:00"`
//! allows Friday night until Saturday 06:00. An empty schedule allows every hour.
//!
//! Pure: it answers for a [`LocalTime`] it is given and never reads a clock.

use std::fmt;

use crate::client::localtime::LocalTime;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// One daily window: on each of `days`, from `start` to `end` (minutes since local midnight;
/// `end` may be 24:00, and before `start` when the window crosses midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` for weekday `d` (0 = Monday).
    days: u8,
    start: u32,
    end: u32,
}

/// When computing is allowed. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

impl Schedule {
    /// Every hour of every day.
    pub fn always() -> Self {
        Self::default()
    }

    /// Parses one window per entry; the error names the entry and what is wrong with it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let windows = entries
            .iter()
            .map(|e| Window::parse(e.as_ref()).map_err(|why| format!("\"{}\": {why}", e.as_ref())))
            .collect::<Result<_, _>>()?;
        Ok(Self { windows })
    }

    pub fn from_windows(windows: Vec<Window>) -> Self {
        Self { windows }
    }

    /// True when the schedule has no window (it allows every hour).
    pub fn is_always(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Whether computing is allowed at `t`.
    pub fn allows(&self, t: &LocalTime) -> bool {
        self.allows_minute(minute_of_week(t))
    }

    /// Seconds from `t` until [`Self::allows`] next changes its answer, or `None` when it never
    /// does (always allowed, or windows that cover the whole week). The caller re-checks then.
    pub fn next_change(&self, t: &LocalTime) -> Option<u64> {
        let now = minute_of_week(t);
        let allowed = self.allows_minute(now);
        // The answer is constant between the windows' edges, so the first edge after now at
        // which it differs is the change.
        let mut edges: Vec<u32> = self
            .intervals()
            .flat_map(|(s, e)| [s, e % MINUTES_PER_WEEK])
            .map(|edge| (edge + MINUTES_PER_WEEK - now) % MINUTES_PER_WEEK)
            .filter(|&ahead| ahead > 0)
            .collect();
        edges.sort_unstable();
        edges.dedup();
        let ahead = edges
            .into_iter()
            .find(|&ahead| self.allows_minute((now + ahead) % MINUTES_PER_WEEK) != allowed)?;
        Some(u64::from(ahead) * 60 - u64::from(t.second.min(59)))
    }

    fn allows_minute(&self, m: u32) -> bool {
        self.windows.is_empty()
            || self.intervals().any(|(s, e)| {
                // An interval may run past the week's end into the next Monday.
                (s..e).contains(&m) || (s..e).contains(&(m + MINUTES_PER_WEEK))
            })
    }

    /// Every window on every one of its days, as minutes of the week `[start, end)`; `end` may
    /// exceed a week.
    fn intervals(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.windows.iter().flat_map(|w| {
            (0..7u32).filter(|d| w.days & (1 << d) != 0).map(|d| {
                let start = d * MINUTES_PER_DAY + w.start;
                let end = if w.end > w.start {
                    d * MINUTES_PER_DAY + w.end
                } else {
                    (d + 1) * MINUTES_PER_DAY + w.end
                };
                (start, end)
            })
        })
    }
}

fn minute_of_week(t: &LocalTime) -> u32 {
    (t.weekday % 7) * MINUTES_PER_DAY + t.minute_of_day().min(MINUTES_PER_DAY - 1)
}

impl Window {
    /// `"[DAYS ]HH:MM-HH:MM"`; DAYS are names (`mon`, `monday`), ranges (`mon-fri`, `fri-mon`),
    /// `daily`, `weekdays` or `weekend`, joined by commas. The error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(why.to_owned());
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (days, span) = match parts.as_slice() {
            [span] if span.contains(':') => (0x7f, *span),
            [days, span] => match parse_days(days) {
                Ok(d) => (d, *span),
                Err(why) => return bad(&why),
            },
            _ => return bad("write a window as DAYS HH:MM-HH:MM, e.g. mon-fri 18:00-08:00"),
        };
        let Some((start, end)) = span.split_once('-') else {
            return bad("the hours must be HH:MM-HH:MM, e.g. 18:00-08:00");
        };
        let start = match parse_hh_mm(start) {
            Ok(m) if m < MINUTES_PER_DAY => m,
            Ok(_) => return bad("a window cannot start at 24:00"),
            Err(why) => return bad(&why),
        };
        let end = match parse_hh_mm(end) {
            Ok(m) => m,
            Err(why) => return bad(&why),
        };
        if start == end % MINUTES_PER_DAY && end != MINUTES_PER_DAY {
            return bad("it starts and ends at the same time; for a whole day write 00:00-24:00");
        }
        Ok(Window { days, start, end })
    }
}

fn parse_day(name: &str) -> Result<u32, String> {
    const FULL_NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = name.to_ascii_lowercase();
    (0..7)
        .find(|&d| lower == DAY_NAMES[d] || lower == FULL_NAMES[d])
        .map(|d| d as u32)
        .ok_or_else(|| format!("`{name}` is not a day (mon, tue, wed, thu, fri, sat, sun)"))
}

fn parse_days(text: &str) -> Result<u8, String> {
    let mut days = 0u8;
    for item in text.split(',') {
        days |= match item.to_ascii_lowercase().as_str() {
            "daily" => 0x7f,
            "weekdays" => 0x1f,
            "weekend" | "weekends" => 0x60,
            _ => match item.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (parse_day(from)?, parse_day(to)?);
                    // A range may wrap past Sunday: fri-mon is fri, sat, sun, mon.
                    let mut mask = 0u8;
                    let mut d = from;
                    loop {
                        mask |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                    mask
                }
                None => 1 << parse_day(item)?,
            },
        };
    }
    Ok(days)
}

fn parse_hh_mm(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day (HH:MM, 00:00 ..= 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let all_digits = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(h) || m.len() != 2 || !all_digits(m) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl fmt::Display for Window {
    /// The form [`Window::parse`] reads back to the same window: `mon-fri 18:00-08:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hh_mm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let days = if self.days == 0x7f {
            "daily".to_owned()
        } else {
            // Runs of consecutive days (Monday to Sunday) as ranges when longer than two.
            let mut parts = Vec::new();
            let mut d = 0;
            while d < 7 {
                if self.days & (1 << d) == 0 {
                    d += 1;
                    continue;
                }
                let from = d;
                while d + 1 < 7 && self.days & (1 << (d + 1)) != 0 {
                    d += 1;
                }
                match d - from {
                    0 => parts.push(DAY_NAMES[from].to_owned()),
                    1 => parts.push(format!("{},{}", DAY_NAMES[from], DAY_NAMES[d])),
                    _ => parts.push(format!("{}-{}", DAY_NAMES[from], DAY_NAMES[d])),
                }
                d += 1;
            }
            parts.join(",")
        };
        write!(f, "{days} {}-{}", hh_mm(self.start), hh_mm(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weekday (0 = Monday) at HH:MM:SS; the date does not matter to a schedule.
    fn at(weekday: u32, hour: u32, minute: u32, second: u32) -> LocalTime {
        LocalTime {
            year: 2026,
            month: 12,
            day: 1,
            weekday,
            hour,
            minute,
            second,
        }
    }

    fn schedule(entries: &[&str]) -> Schedule {
        Schedule::parse(entries).unwrap_or_else(|e| panic!("{entries:?}: {e}"))
    }

    const MON: u32 = 0;
    const FRI: u32 = 4;
    const SAT: u32 = 5;
    const SUN: u32 = 6;

    #[test]
    fn an_empty_schedule_allows_every_hour_and_never_changes() {
        let s = Schedule::always();
        assert!(s.is_always());
        for (d, h) in [(MON, 0), (FRI, 13), (SUN, 23)] {
            assert!(s.allows(&at(d, h, 0, 0)));
            assert_eq!(s.next_change(&at(d, h, 0, 0)), None);
        }
    }

    #[test]
    fn an_evening_window_crosses_midnight_into_the_next_day() {
        let s = schedule(&["mon-fri 18:00-08:00"]);
        assert!(!s.allows(&at(MON, 17, 59, 59)));
        assert!(s.allows(&at(MON, 18, 0, 0)));
        assert!(s.allows(&at(MON, 23, 59, 0)));
        // Tuesday early morning belongs to Monday's window.
        assert!(s.allows(&at(1, 7, 59, 0)));
        assert!(!s.allows(&at(1, 8, 0, 0)));
        // Friday's window runs into Saturday morning; Saturday's evening has none.
        assert!(s.allows(&at(SAT, 7, 30, 0)));
        assert!(!s.allows(&at(SAT, 8, 0, 0)));
        assert!(!s.allows(&at(SAT, 20, 0, 0)));
        // Monday early morning: Sunday has no window.
        assert!(!s.allows(&at(MON, 3, 0, 0)));
    }

    #[test]
    fn a_window_from_sunday_night_wraps_into_monday() {
        let s = schedule(&["sun 22:00-06:00"]);
        assert!(s.allows(&at(SUN, 23, 0, 0)));
        assert!(s.allows(&at(MON, 5, 59, 0)));
        assert!(!s.allows(&at(MON, 6, 0, 0)));
        assert!(!s.allows(&at(SAT, 23, 0, 0)));
        assert_eq!(s.next_change(&at(MON, 5, 0, 0)), Some(3600));
        assert_eq!(s.next_change(&at(SUN, 21, 59, 30)), Some(30));
    }

    #[test]
    fn weekdays_and_weekends_combine() {
        let s = schedule(&["mon-fri 18:00-08:00", "sat,sun 00:00-24:00"]);
        assert!(s.allows(&at(SAT, 12, 0, 0)));
        assert!(s.allows(&at(SUN, 23, 59, 0)));
        // Sunday's whole day ends at Monday 00:00, and Monday's window opens at 18:00.
        assert!(!s.allows(&at(MON, 0, 0, 0)));
        assert_eq!(s.next_change(&at(MON, 0, 0, 0)), Some(18 * 3600));
        // Friday evening to Monday 00:00 is one open stretch: the next change is its end,
        // not Saturday 08:00 where one window ends inside another.
        assert_eq!(s.next_change(&at(FRI, 20, 0, 0)), Some((4 + 2 * 24) * 3600));
        assert!(
            schedule(&["daily 00:00-24:00"])
                .next_change(&at(FRI, 1, 2, 3))
                .is_none()
        );
    }

    #[test]
    fn the_next_change_counts_the_seconds_to_the_edge() {
        let s = schedule(&["12:00-13:30"]);
        assert!(!s.allows(&at(FRI, 11, 59, 59)));
        assert_eq!(s.next_change(&at(FRI, 11, 59, 59)), Some(1));
        assert_eq!(s.next_change(&at(FRI, 12, 0, 0)), Some(90 * 60));
        // After today's window: tomorrow at noon.
        assert_eq!(s.next_change(&at(FRI, 14, 0, 0)), Some(22 * 3600));
    }

    #[test]
    fn day_names_ranges_and_words_are_read() {
        let days = |text: &str| schedule(&[text]).windows()[0].days;
        assert_eq!(days("mon-fri 08:00-09:00"), 0x1f);
        assert_eq!(days("weekdays 08:00-09:00"), 0x1f);
        assert_eq!(days("Sat,SUNDAY 08:00-09:00"), 0x60);
        assert_eq!(days("weekend 08:00-09:00"), 0x60);
        assert_eq!(days("fri-mon 08:00-09:00"), 0x71);
        assert_eq!(days("08:00-09:00"), 0x7f);
        assert_eq!(days("daily 08:00-09:00"), 0x7f);
        assert_eq!(days("tue,thu 8:00-9:05"), 0x0a);
    }

    #[test]
    fn display_reads_back_to_the_same_window() {
        for (text, shown) in [
            ("mon-fri 18:00-08:00", "mon-fri 18:00-08:00"),
            ("sat,sun 00:00-24:00", "sat,sun 00:00-24:00"),
            ("fri-mon 8:00-9:05", "mon,fri-sun 08:00-09:05"),
            ("12:00-13:30", "daily 12:00-13:30"),
            ("tue,thu,wed 23:00-01:00", "tue-thu 23:00-01:00"),
        ] {
            let w = Window::parse(text).unwrap();
            assert_eq!(w.to_string(), shown);
            assert_eq!(Window::parse(shown), Ok(w));
        }
    }

    #[test]
    fn a_bad_window_is_refused_with_the_entry_and_the_reason() {
        for (text, why) in [
            ("mon-fri", "HH:MM-HH:MM"),
            ("mon-fri 18:00", "HH:MM-HH:MM"),
            ("funday 18:00-20:00", "`funday` is not a day"),
            ("mon 25:00-26:00", "`25:00` is not a time of day"),
            ("mon 18:60-19:00", "`18:60` is not a time of day"),
            ("mon 24:00-08:00", "cannot start at 24:00"),
            ("mon 08:00-08:00", "same time"),
            ("mon 00:00-00:00", "same time"),
            ("mon tue 08:00-09:00", "DAYS HH:MM-HH:MM"),
            ("mon 8-9", "not a time of day"),
        ] {
            let err = Schedule::parse(&["daily 08:00-09:00", text]).expect_err(text);
            assert!(
                err.starts_with(&format!("\"{text}\": ")) && err.contains(why),
                "{text}: {err}"
            );
        }
    }
}
