//! What the client is doing, in words: one pure function of a [`Snapshot`] that the window's
//! header and the tray's tooltip both show, so the two can never disagree. Also picks the tray
//! icon for the state.

use std::time::{Duration, SystemTime};

use crate::client::idle::{Busy, IdleState};
use crate::client::localtime;
use crate::client::snapshot::{Connection, Snapshot, TaskState};
use crate::proto::ActivityKind;

/// The states the tray tells apart by its icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    Computing,
    Waiting,
    /// Paused because the owner is using the machine.
    Owner,
    /// Paused by the volunteer (snooze).
    User,
    /// Paused for a condition: heat, battery, schedule, an exclusive program, full screen.
    Condition,
    Disconnected,
}

/// A title ("Computing", "Paused") and its reason, as of `now` (wall clock, for "snoozed until").
pub fn state_label(s: &Snapshot, now: SystemTime) -> (String, String) {
    let (title, reason, _) = describe(s, now);
    (title, reason)
}

/// Which tray icon shows `s`.
pub fn tray_state(s: &Snapshot) -> TrayState {
    describe(s, SystemTime::now()).2
}

fn describe(s: &Snapshot, now: SystemTime) -> (String, String, TrayState) {
    let t = |a: &str, b: String, st| (a.to_owned(), b, st);
    match &s.connection {
        Connection::NotConfigured => {
            return t(
                "Not set up",
                "no supervisor configured yet: open idlegrid to enter one".into(),
                TrayState::Disconnected,
            );
        }
        Connection::Connecting => {
            return t(
                "Connecting",
                format!("to {}", s.supervisor.as_deref().unwrap_or("the supervisor")),
                TrayState::Disconnected,
            );
        }
        Connection::Disconnected { why, retry_in } => {
            return t(
                "Disconnected",
                format!("{why}; retrying in {}", secs(*retry_in)),
                TrayState::Disconnected,
            );
        }
        Connection::Refused { why, retry_in } => {
            return t(
                "Refused by the supervisor",
                format!("{why}; asking again in {}", secs(*retry_in)),
                TrayState::Disconnected,
            );
        }
        Connection::Connected { .. } => {}
    }
    match s.idle {
        IdleState::Idle => {
            let running: Vec<_> = s
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .collect();
            match running.as_slice() {
                [] => t(
                    "Idle, no work",
                    "waiting for the supervisor to assign a task".into(),
                    TrayState::Waiting,
                ),
                [one] => t(
                    "Computing",
                    format!(
                        "{} of job {}: {:.0}%",
                        one.kind,
                        one.job,
                        one.progress.clamp(0.0, 1.0) * 100.0
                    ),
                    TrayState::Computing,
                ),
                many => {
                    let mean = many.iter().map(|t| t.progress.clamp(0.0, 1.0)).sum::<f32>()
                        / many.len() as f32;
                    t(
                        "Computing",
                        format!("{} tasks, {:.0}% on average", many.len(), mean * 100.0),
                        TrayState::Computing,
                    )
                }
            }
        }
        IdleState::Busy(busy) => busy_label(s, busy, now),
    }
}

fn busy_label(s: &Snapshot, busy: Busy, now: SystemTime) -> (String, String, TrayState) {
    let paused = |reason: String, st| ("Paused".to_owned(), reason, st);
    match busy {
        Busy::Starting => {
            let when = match s.idle_in {
                Some(d) => format!("starts in {}", mins_secs(d)),
                None => "starts once the machine has been idle a while".into(),
            };
            ("Waiting for idle".into(), when, TrayState::Waiting)
        }
        Busy::Owner(kind) => {
            let what = owner_kind(kind);
            let back = match s.idle_in {
                Some(d) => format!("; resumes {} after the last use", mins_secs(d)),
                None => String::new(),
            };
            paused(
                format!("you are using this computer ({what}){back}"),
                TrayState::Owner,
            )
        }
        Busy::Snoozed => {
            let until = match s.detail.snoozed_until {
                Some(at) if at > now => {
                    let l = localtime::local(at);
                    let today = localtime::local(now);
                    if l.date() == today.date() {
                        format!("snoozed until {}", l.hh_mm())
                    } else {
                        format!("snoozed until {} on {}", l.hh_mm(), l.date())
                    }
                }
                _ => "snoozed".into(),
            };
            paused(until, TrayState::User)
        }
        Busy::OnBattery => paused("on battery".into(), TrayState::Condition),
        Busy::Thermal => {
            let r = match s.detail.temperature_c {
                Some(c) => format!("too hot ({c:.0} °C)"),
                None => "too hot".into(),
            };
            paused(r, TrayState::Condition)
        }
        Busy::Schedule => {
            let r = match s.detail.schedule_opens {
                Some(at) => format!(
                    "outside the schedule; computing again at {}",
                    localtime::local(at).hh_mm()
                ),
                None => "outside the schedule".into(),
            };
            paused(r, TrayState::Condition)
        }
        Busy::ExclusiveProgram => {
            let r = if s.detail.exclusive.is_empty() {
                "an exclusive program runs".into()
            } else {
                format!(
                    "an exclusive program runs ({})",
                    s.detail.exclusive.join(", ")
                )
            };
            paused(r, TrayState::Condition)
        }
        Busy::Fullscreen => paused(
            "a full-screen window has the focus".into(),
            TrayState::Condition,
        ),
    }
}

/// A busy reason in a few words, for the event list.
pub fn busy_text(b: Busy) -> String {
    match b {
        Busy::Owner(kind) => format!("you were using this computer ({})", owner_kind(kind)),
        Busy::Starting => "starting".into(),
        Busy::OnBattery => "on battery".into(),
        Busy::Snoozed => "snoozed".into(),
        Busy::Schedule => "outside the schedule".into(),
        Busy::ExclusiveProgram => "an exclusive program runs".into(),
        Busy::Thermal => "too hot".into(),
        Busy::Fullscreen => "a full-screen window has the focus".into(),
    }
}

/// How a volunteer names the kind of activity that paused the work.
pub fn owner_kind(kind: ActivityKind) -> &'static str {
    match kind {
        ActivityKind::Keyboard => "keyboard",
        ActivityKind::Mouse => "mouse",
        ActivityKind::Pointer => "pointer",
        ActivityKind::Touch => "touch",
        ActivityKind::Voice => "voice",
        ActivityKind::BusyProcess => "another program is busy",
        ActivityKind::OnBattery => "on battery",
        ActivityKind::User => "snoozed",
        ActivityKind::Schedule => "schedule",
        ActivityKind::ExclusiveProgram => "exclusive program",
        ActivityKind::Thermal => "temperature",
        ActivityKind::Fullscreen => "full screen",
    }
}

/// "42 s".
pub fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64().ceil() as u64)
}

/// "2 min 5 s", "40 s", "1 h 3 min".
pub fn mins_secs(d: Duration) -> String {
    let s = d.as_secs_f64().ceil() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
