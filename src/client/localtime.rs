//! The local calendar time of an instant, for what a volunteer reads and sets: the daily
//! schedule ("between 18:00 and 08:00 on weekdays"), "snoozed until 14:30", CPU time per day.
//! The time zone is the system's (`TZ`, `/etc/localtime`), through the C library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment in local time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1 ..= 12
    pub month: u32,
    /// 1 ..= 31
    pub day: u32,
    /// 0 = Monday ..= 6 = Sunday.
    pub weekday: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl LocalTime {
    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HH:MM`.
    pub fn hh_mm(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// Minutes since local midnight.
    pub fn minute_of_day(&self) -> u32 {
        self.hour * 60 + self.minute
    }
}

/// `t` in the system's local time zone; UTC where the C library cannot say (a time before
/// 1970 is taken as 1970).
pub fn local(t: SystemTime) -> LocalTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let secs = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: `tm` is plain old data that localtime_r fills; both pointers are valid for the
    // call, and localtime_r (unlike localtime) touches no shared buffer.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return utc(secs as u64);
    }
    LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        weekday: ((tm.tm_wday + 6) % 7) as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec.min(59) as u32,
    }
}

/// The civil date and time in UTC (days-from-civil, inverted).
fn utc(secs: u64) -> LocalTime {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    LocalTime {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday (3 counting from Monday = 0).
        weekday: ((days + 3).rem_euclid(7)) as u32,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_and_weekdays_are_right_across_leap_years() {
        // 2024-02-29 12:34:56 UTC, a Thursday.
        let t = utc(1_709_210_096);
        assert_eq!((t.year, t.month, t.day), (2024, 2, 29));
        assert_eq!((t.hour, t.minute, t.second), (12, 34, 56));
        assert_eq!(t.weekday, 3);
        assert_eq!(t.date(), "2024-02-29");
        // 2026-12-01 00:00:00 UTC, a Tuesday.
        let t = utc(1_796_083_200);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2026, 12, 1, 1));
        assert_eq!(t.hh_mm(), "00:00");
    }

    #[test]
    fn local_time_differs_from_utc_by_whole_minutes_only() {
        let now = SystemTime::now();
        let l = local(now);
        let u = utc(now.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(l.second, u.second);
        assert!(l.weekday < 7 && (1..=12).contains(&l.month) && l.hour < 24);
    }
}
