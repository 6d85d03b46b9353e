//! The idle policy: whether this machine may compute right now.
//!
//! [`IdlePolicy`] turns owner activity, power changes and the passage of time into [`IdleState`]
//! and reports each [`Transition`] the engine must act on (pause all tasks, or take work again).
//! It is a sans-IO state machine: it never reads a clock, polls input or touches a file; time
//! comes in as `now` on every `handle_*` call, and the caller asks [`IdlePolicy::poll_timeout`]
//! when to call [`IdlePolicy::handle_timeout`]. The activity sources and the engine drive it;
//! tests drive it on a virtual clock.
//!
//! The promise to volunteers is that their machine is theirs the moment they touch it: one
//! activity while idle makes the policy busy at once. The hysteresis is all on the way back:
//! becoming idle needs a whole `idle_after` without any activity, so a single jitter can never
//! make it flip back and forth.

use std::time::{Duration, Instant};

use crate::proto::ActivityKind;

/// When the machine counts as idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleConfig {
    /// The quiet period: no owner activity for this long makes the machine idle.
    pub idle_after: Duration,
    /// Compute even while the owner uses the machine: activity never makes it busy.
    pub run_while_in_use: bool,
    /// Compute on battery power; otherwise being on battery makes the machine busy.
    pub run_on_battery: bool,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            idle_after: Duration::from_secs(180),
            run_while_in_use: false,
            run_on_battery: false,
        }
    }
}

/// Why the machine is not idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Owner activity was seen less than `idle_after` ago.
    Owner(ActivityKind),
    /// The client started less than `idle_after` ago and has not yet seen a whole quiet period.
    Starting,
    /// The machine runs on battery and `run_on_battery` is off.
    OnBattery,
    /// The volunteer snoozed computing (window or tray) until a time of their choosing.
    Snoozed,
    /// Outside the daily schedule the settings allow.
    Schedule,
    /// A program from the settings' exclusive list runs.
    ExclusiveProgram,
    /// A CPU sensor is above the settings' temperature limit (and has not yet cooled 5 °C below).
    Thermal,
    /// A full-screen window has the focus and the settings say to pause for it.
    Fullscreen,
}

impl Busy {
    /// What the supervisor is told when this reason makes the machine busy; `None` for a
    /// client that is only starting (its hello says it is not idle).
    pub fn activity_kind(self) -> Option<ActivityKind> {
        Some(match self {
            Busy::Owner(kind) => kind,
            Busy::Starting => return None,
            Busy::OnBattery => ActivityKind::OnBattery,
            Busy::Snoozed => ActivityKind::User,
            Busy::Schedule => ActivityKind::Schedule,
            Busy::ExclusiveProgram => ActivityKind::ExclusiveProgram,
            Busy::Thermal => ActivityKind::Thermal,
            Busy::Fullscreen => ActivityKind::Fullscreen,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleState {
    Idle,
    Busy(Busy),
}

/// A change the engine must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Pause everything now.
    BecameBusy(Busy),
    /// Take work again.
    BecameIdle,
}

/// The idle decision for one machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct IdlePolicy {
    cfg: IdleConfig,
    /// Start of the current quiet period: the last activity, or the policy's creation.
    quiet_since: Instant,
    /// What the machine is busy with while the quiet period runs.
    quiet_reason: Busy,
    /// Battery blocks computing only when `run_on_battery` is off; kept apart from the quiet
    /// period so that coming back to mains resumes exactly where the quiet period stands.
    on_battery: bool,
    /// Conditions that stop computing whatever the quiet period says (a bit per entry of
    /// [`CONDITIONS`]).
    conditions: u8,
    state: IdleState,
}

/// Reasons that block computing while they last, independent of the quiet period, in the
/// order of precedence the state shows (after the battery). `Fullscreen` counts as the machine
/// being in use, so `run_while_in_use` ignores it; the others always apply.
pub const CONDITIONS: [Busy; 5] = [
    Busy::Snoozed,
    Busy::Thermal,
    Busy::ExclusiveProgram,
    Busy::Schedule,
    Busy::Fullscreen,
];

impl IdlePolicy {
    /// Starts busy (`Starting`) because nobody can say how long the owner has been away: a
    /// client launched while they type must not start computing at once. With
    /// `run_while_in_use` it starts idle.
    pub fn new(cfg: IdleConfig, now: Instant) -> Self {
        let state = if cfg.run_while_in_use {
            IdleState::Idle
        } else {
            IdleState::Busy(Busy::Starting)
        };
        IdlePolicy {
            cfg,
            quiet_since: now,
            quiet_reason: Busy::Starting,
            on_battery: false,
            conditions: 0,
            state,
        }
    }

    pub fn config(&self) -> IdleConfig {
        self.cfg
    }

    /// New settings, applied at once: a longer `idle_after` while waiting extends the wait, a
    /// shorter one may end it now.
    pub fn set_config(&mut self, now: Instant, cfg: IdleConfig) -> Option<Transition> {
        self.cfg = cfg;
        self.set(self.evaluate(now))
    }

    /// A blocking condition (one of [`CONDITIONS`]) started (`on`) or ended. While any is on the
    /// machine is busy with the first that applies; when the last ends the machine is idle
    /// again if the quiet period is over (a condition does not restart it). Any other reason is
    /// ignored.
    pub fn set_condition(&mut self, now: Instant, reason: Busy, on: bool) -> Option<Transition> {
        let bit = CONDITIONS.iter().position(|c| *c == reason)?;
        if on {
            self.conditions |= 1 << bit;
        } else {
            self.conditions &= !(1 << bit);
        }
        self.set(self.evaluate(now))
    }

    /// Whether the condition is on (whether or not it is the reason shown).
    pub fn condition(&self, reason: Busy) -> bool {
        CONDITIONS
            .iter()
            .position(|c| *c == reason)
            .is_some_and(|bit| self.conditions & (1 << bit) != 0)
    }

    /// The first blocking condition that applies under the current settings.
    fn blocking_condition(&self) -> Option<Busy> {
        CONDITIONS.iter().enumerate().find_map(|(bit, c)| {
            let on = self.conditions & (1 << bit) != 0;
            let applies = !(self.cfg.run_while_in_use && *c == Busy::Fullscreen);
            (on && applies).then_some(*c)
        })
    }

    pub fn state(&self) -> IdleState {
        self.state
    }

    /// Owner activity: busy at once, and the quiet period restarts. Returns `BecameBusy` if the
    /// machine was idle. With `run_while_in_use` the activity only restarts [`Self::quiet_for`].
    pub fn handle_activity(&mut self, now: Instant, kind: ActivityKind) -> Option<Transition> {
        // An instant older than the quiet period's start (events delivered out of order) must
        // not shorten the period.
        self.quiet_since = self.quiet_since.max(now);
        self.quiet_reason = Busy::Owner(kind);
        // Not `self.evaluate(now)`: with a zero `idle_after` the quiet period would already be
        // over, and the owner would not even see the machine pause for an instant.
        let next = if self.battery_blocks() {
            IdleState::Busy(Busy::OnBattery)
        } else if let Some(c) = self.blocking_condition() {
            IdleState::Busy(c)
        } else if self.cfg.run_while_in_use {
            IdleState::Idle
        } else {
            IdleState::Busy(Busy::Owner(kind))
        };
        self.set(next)
    }

    /// The machine's power changed: `Some(true)` on battery, `Some(false)` on mains, `None` no
    /// battery at all.
    pub fn handle_power(&mut self, now: Instant, on_battery: Option<bool>) -> Option<Transition> {
        self.on_battery = on_battery == Some(true);
        self.set(self.evaluate(now))
    }

    /// When [`Self::handle_timeout`] must next be called: the end of the quiet period while the
    /// machine waits for it; `None` when idle or when only a power change can make it idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            IdleState::Busy(Busy::Owner(_) | Busy::Starting) => self.quiet_deadline(),
            // Only the condition's end (or a power change) can make it idle.
            IdleState::Busy(_) | IdleState::Idle => None,
        }
    }

    /// Ends the quiet period if it is over; an early or repeated call changes nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            IdleState::Busy(Busy::Owner(_) | Busy::Starting) => self.set(self.evaluate(now)),
            IdleState::Busy(_) | IdleState::Idle => None,
        }
    }

    /// Time the machine has been quiet: since the last activity, or since the policy started.
    pub fn quiet_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.quiet_since)
    }

    fn battery_blocks(&self) -> bool {
        self.on_battery && !self.cfg.run_on_battery
    }

    /// `None` when `idle_after` is so long that the quiet period never ends.
    fn quiet_deadline(&self) -> Option<Instant> {
        self.quiet_since.checked_add(self.cfg.idle_after)
    }

    fn quiet_period_over(&self, now: Instant) -> bool {
        self.quiet_deadline()
            .is_some_and(|deadline| now >= deadline)
    }

    /// The state the inputs call for at `now`.
    fn evaluate(&self, now: Instant) -> IdleState {
        if self.battery_blocks() {
            IdleState::Busy(Busy::OnBattery)
        } else if let Some(c) = self.blocking_condition() {
            IdleState::Busy(c)
        } else if self.cfg.run_while_in_use || self.quiet_period_over(now) {
            IdleState::Idle
        } else {
            IdleState::Busy(self.quiet_reason)
        }
    }

    /// Moves to `next`, reporting only a change between idle and busy: a new reason for being
    /// busy asks nothing of an engine that has already paused.
    fn set(&mut self, next: IdleState) -> Option<Transition> {
        let transition = match (self.state, next) {
            (IdleState::Idle, IdleState::Busy(busy)) => Some(Transition::BecameBusy(busy)),
            (IdleState::Busy(_), IdleState::Idle) => Some(Transition::BecameIdle),
            (IdleState::Idle, IdleState::Idle) | (IdleState::Busy(_), IdleState::Busy(_)) => None,
        };
        self.state = next;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE_AFTER: Duration = Duration::from_millis(1000);

    fn ms(t0: Instant, millis: u64) -> Instant {
        t0 + Duration::from_millis(millis)
    }

    fn config() -> IdleConfig {
        IdleConfig {
            idle_after: IDLE_AFTER,
            ..IdleConfig::default()
        }
    }

    #[test]
    fn starts_busy_and_becomes_idle_after_idle_after() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Starting));
        assert_eq!(policy.poll_timeout(), Some(ms(t0, 1000)));
        assert_eq!(
            policy.handle_timeout(ms(t0, 1000)),
            Some(Transition::BecameIdle)
        );
        assert_eq!(policy.state(), IdleState::Idle);
        assert_eq!(policy.poll_timeout(), None);
        assert_eq!(policy.quiet_for(ms(t0, 1500)), Duration::from_millis(1500));
    }

    #[test]
    fn activity_makes_it_busy_at_once() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        let busy = Busy::Owner(ActivityKind::Mouse);
        assert_eq!(
            policy.handle_activity(ms(t0, 5000), ActivityKind::Mouse),
            Some(Transition::BecameBusy(busy))
        );
        assert_eq!(policy.state(), IdleState::Busy(busy));
        assert_eq!(policy.quiet_for(ms(t0, 5000)), Duration::ZERO);
        // A single activity keeps the machine busy for a whole quiet period.
        assert_eq!(policy.poll_timeout(), Some(ms(t0, 6000)));
        assert_eq!(policy.handle_timeout(ms(t0, 5999)), None);
        assert_eq!(
            policy.handle_timeout(ms(t0, 6000)),
            Some(Transition::BecameIdle)
        );
    }

    #[test]
    fn repeated_activity_keeps_it_busy_until_idle_after_after_the_last_one() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        // Activity while still starting: no transition, the quiet period moves.
        for at in [300, 900, 1400, 2000] {
            assert_eq!(
                policy.handle_activity(ms(t0, at), ActivityKind::Keyboard),
                None
            );
            assert_eq!(policy.handle_timeout(ms(t0, at)), None);
        }
        assert_eq!(
            policy.state(),
            IdleState::Busy(Busy::Owner(ActivityKind::Keyboard))
        );
        assert_eq!(policy.poll_timeout(), Some(ms(t0, 3000)));
        assert_eq!(policy.handle_timeout(ms(t0, 2999)), None);
        assert_eq!(
            policy.handle_timeout(ms(t0, 3000)),
            Some(Transition::BecameIdle)
        );
    }

    #[test]
    fn no_transition_on_a_timeout_that_comes_early() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        assert_eq!(policy.handle_timeout(t0), None);
        assert_eq!(policy.handle_timeout(ms(t0, 999)), None);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Starting));
        // Late is fine, and a second call reports nothing more.
        assert_eq!(
            policy.handle_timeout(ms(t0, 1700)),
            Some(Transition::BecameIdle)
        );
        assert_eq!(policy.handle_timeout(ms(t0, 1700)), None);
        assert_eq!(policy.handle_timeout(ms(t0, 9000)), None);
    }

    #[test]
    fn run_while_in_use_ignores_activity() {
        let t0 = Instant::now();
        let cfg = IdleConfig {
            run_while_in_use: true,
            ..config()
        };
        let mut policy = IdlePolicy::new(cfg, t0);
        assert_eq!(policy.state(), IdleState::Idle);
        assert_eq!(policy.poll_timeout(), None);
        assert_eq!(
            policy.handle_activity(ms(t0, 10), ActivityKind::Keyboard),
            None
        );
        assert_eq!(
            policy.handle_activity(ms(t0, 20), ActivityKind::BusyProcess),
            None
        );
        assert_eq!(policy.state(), IdleState::Idle);
        assert_eq!(policy.poll_timeout(), None);
        // Still truthful about when the owner last did something.
        assert_eq!(policy.quiet_for(ms(t0, 25)), Duration::from_millis(5));
    }

    #[test]
    fn battery_makes_it_busy_at_once_and_mains_restores_idle_only_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        let on_battery = Some(Transition::BecameBusy(Busy::OnBattery));
        assert_eq!(policy.handle_power(ms(t0, 2000), Some(true)), on_battery);
        assert_eq!(policy.poll_timeout(), None);
        // Mains after a long quiet stretch: idle again at once.
        assert_eq!(
            policy.handle_power(ms(t0, 2500), Some(false)),
            Some(Transition::BecameIdle)
        );

        assert_eq!(policy.handle_power(ms(t0, 3000), Some(true)), on_battery);
        assert_eq!(
            policy.handle_activity(ms(t0, 3200), ActivityKind::Touch),
            None
        );
        // Battery wins over the owner's activity while it lasts.
        assert_eq!(policy.state(), IdleState::Busy(Busy::OnBattery));
        // Mains 300 ms after the activity: the owner's quiet period still runs.
        assert_eq!(policy.handle_power(ms(t0, 3500), Some(false)), None);
        assert_eq!(
            policy.state(),
            IdleState::Busy(Busy::Owner(ActivityKind::Touch))
        );
        assert_eq!(policy.poll_timeout(), Some(ms(t0, 4200)));
        assert_eq!(
            policy.handle_timeout(ms(t0, 4200)),
            Some(Transition::BecameIdle)
        );

        // A machine without a battery is never blocked by it.
        assert_eq!(policy.handle_power(ms(t0, 5000), None), None);
        assert_eq!(policy.state(), IdleState::Idle);
    }

    #[test]
    fn run_on_battery_ignores_battery() {
        let t0 = Instant::now();
        let cfg = IdleConfig {
            run_on_battery: true,
            ..config()
        };
        let mut policy = IdlePolicy::new(cfg, t0);
        assert_eq!(policy.handle_power(ms(t0, 100), Some(true)), None);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Starting));
        assert_eq!(
            policy.handle_timeout(ms(t0, 1000)),
            Some(Transition::BecameIdle)
        );
        assert_eq!(policy.handle_power(ms(t0, 1100), Some(false)), None);
        assert_eq!(policy.handle_power(ms(t0, 1200), Some(true)), None);
        assert_eq!(policy.state(), IdleState::Idle);
    }

    #[test]
    fn run_while_in_use_still_respects_battery() {
        let t0 = Instant::now();
        let cfg = IdleConfig {
            run_while_in_use: true,
            ..config()
        };
        let mut policy = IdlePolicy::new(cfg, t0);
        assert_eq!(
            policy.handle_power(ms(t0, 10), Some(true)),
            Some(Transition::BecameBusy(Busy::OnBattery))
        );
        assert_eq!(
            policy.handle_activity(ms(t0, 20), ActivityKind::Mouse),
            None
        );
        assert_eq!(
            policy.handle_power(ms(t0, 30), Some(false)),
            Some(Transition::BecameIdle)
        );
    }

    #[test]
    fn a_condition_pauses_at_once_and_its_end_resumes_without_a_new_quiet_period() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        assert_eq!(
            policy.set_condition(ms(t0, 2000), Busy::Thermal, true),
            Some(Transition::BecameBusy(Busy::Thermal))
        );
        // A second condition changes the reason shown by precedence, not the state.
        assert_eq!(
            policy.set_condition(ms(t0, 2100), Busy::Snoozed, true),
            None
        );
        assert_eq!(policy.state(), IdleState::Busy(Busy::Snoozed));
        assert_eq!(policy.poll_timeout(), None);
        assert_eq!(policy.handle_timeout(ms(t0, 9000)), None);
        assert_eq!(
            policy.set_condition(ms(t0, 3000), Busy::Snoozed, false),
            None
        );
        assert_eq!(policy.state(), IdleState::Busy(Busy::Thermal));
        assert_eq!(
            policy.set_condition(ms(t0, 3100), Busy::Thermal, false),
            Some(Transition::BecameIdle)
        );
        // Owner input under a condition keeps the condition's reason; once it ends the quiet
        // period that the input restarted still has to run.
        policy.set_condition(ms(t0, 4000), Busy::Schedule, true);
        policy.handle_activity(ms(t0, 4100), ActivityKind::Keyboard);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Schedule));
        assert_eq!(
            policy.set_condition(ms(t0, 4200), Busy::Schedule, false),
            None
        );
        assert_eq!(
            policy.state(),
            IdleState::Busy(Busy::Owner(ActivityKind::Keyboard))
        );
        assert_eq!(
            policy.handle_timeout(ms(t0, 5100)),
            Some(Transition::BecameIdle)
        );
        // Not a condition: ignored.
        assert_eq!(
            policy.set_condition(ms(t0, 6000), Busy::Starting, true),
            None
        );
        assert_eq!(policy.state(), IdleState::Idle);
    }

    #[test]
    fn run_while_in_use_ignores_fullscreen_but_not_snooze() {
        let t0 = Instant::now();
        let cfg = IdleConfig {
            run_while_in_use: true,
            ..config()
        };
        let mut policy = IdlePolicy::new(cfg, t0);
        assert_eq!(
            policy.set_condition(ms(t0, 10), Busy::Fullscreen, true),
            None
        );
        assert_eq!(policy.state(), IdleState::Idle);
        assert!(policy.condition(Busy::Fullscreen));
        assert_eq!(
            policy.set_condition(ms(t0, 20), Busy::Snoozed, true),
            Some(Transition::BecameBusy(Busy::Snoozed))
        );
        // Turning run_while_in_use off makes the full-screen window count.
        policy.set_condition(ms(t0, 30), Busy::Snoozed, false);
        assert_eq!(
            policy.set_config(ms(t0, 40), config()),
            Some(Transition::BecameBusy(Busy::Fullscreen))
        );
    }

    /// The local time `minute` minutes into a week that starts on a Monday at 00:00.
    fn week_minute(minute: u32) -> crate::client::localtime::LocalTime {
        crate::client::localtime::LocalTime {
            year: 2026,
            month: 12,
            day: 7,
            weekday: minute / 1440 % 7,
            hour: minute % 1440 / 60,
            minute: minute % 60,
            second: 0,
        }
    }

    #[test]
    fn the_schedule_pauses_outside_its_windows_and_resumes_inside_them() {
        use crate::client::activity::schedule::ScheduleWatch;
        use crate::client::schedule::Schedule;
        let schedule = Schedule::parse(&["mon-fri 18:00-08:00"]).unwrap();
        let mut watch = ScheduleWatch::new(schedule);
        let t0 = Instant::now();
        let wall0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut policy = IdlePolicy::new(config(), t0);
        // From Monday 17:50 to Tuesday 08:10, one virtual minute at a time.
        let (from, to) = (17 * 60 + 50, 24 * 60 + 8 * 60 + 10);
        let mut transitions = Vec::new();
        for m in from..=to {
            let now = t0 + Duration::from_secs(60 * u64::from(m - from));
            let wall = wall0 + Duration::from_secs(60 * u64::from(m - from));
            policy.handle_timeout(now);
            if let Some(c) = watch.check(now, wall, &week_minute(m))
                && let Some(t) = policy.set_condition(now, c.reason, c.on)
            {
                transitions.push((week_minute(m).hh_mm(), t));
            }
            let expected_idle = (18 * 60..24 * 60 + 8 * 60).contains(&m);
            assert_eq!(
                policy.state() == IdleState::Idle,
                expected_idle,
                "at {} ({:?})",
                week_minute(m).hh_mm(),
                policy.state()
            );
        }
        assert_eq!(
            transitions,
            vec![
                ("18:00".to_owned(), Transition::BecameIdle),
                ("08:00".to_owned(), Transition::BecameBusy(Busy::Schedule)),
            ]
        );
        // The supervisor hears of it as a schedule activity.
        assert_eq!(Busy::Schedule.activity_kind(), Some(ActivityKind::Schedule));
    }

    #[test]
    fn an_exclusive_program_pauses_while_it_runs_whatever_the_input() {
        use crate::client::activity::exclusive::running;
        use std::ffi::OsStr;
        use std::path::Path;
        let wanted = vec!["blender".to_owned()];
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        let tables: [&[&str]; 5] = [
            &["bash", "Xorg"],
            &["bash", "Xorg", "blender"],
            &["blender"],
            &["bash"],
            &["bash", "blender-thumbnailer"],
        ];
        let mut seen = Vec::new();
        for (i, table) in tables.iter().enumerate() {
            let now = ms(t0, 2000 + 2000 * i as u64);
            let procs: Vec<(&OsStr, Option<&Path>)> =
                table.iter().map(|n| (OsStr::new(*n), None)).collect();
            let found = running(&wanted, procs.iter().copied());
            seen.push(policy.set_condition(now, Busy::ExclusiveProgram, !found.is_empty()));
            if i == 2 {
                // Input while the program runs restarts the quiet period under the condition.
                policy.handle_activity(ms(t0, 2000 + 2000 * 2 + 500), ActivityKind::Keyboard);
                assert_eq!(policy.state(), IdleState::Busy(Busy::ExclusiveProgram));
            }
        }
        assert_eq!(
            seen,
            vec![
                None,
                Some(Transition::BecameBusy(Busy::ExclusiveProgram)),
                None,
                // The program ended 1.5 s after the input, past the 1 s quiet period.
                Some(Transition::BecameIdle),
                // Not a substring match: no pause for another program.
                None,
            ]
        );
        assert_eq!(
            Busy::ExclusiveProgram.activity_kind(),
            Some(ActivityKind::ExclusiveProgram)
        );
    }

    #[test]
    fn temperature_pauses_above_the_limit_and_resumes_five_degrees_below() {
        use crate::client::activity::thermal::ThermalGate;
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        let mut gate = ThermalGate::new(80.0);
        // One reading every 5 s, as the source takes them.
        let readings = [70.0, 79.0, 80.5, 79.0, 77.0, 75.0, 74.5, 78.0, 80.0, 81.0];
        let mut states = Vec::new();
        for (i, c) in readings.into_iter().enumerate() {
            let now = ms(t0, 5000 * (i as u64 + 1));
            let hot = gate.push(c);
            policy.set_condition(now, Busy::Thermal, hot);
            states.push(policy.state() == IdleState::Idle);
        }
        assert_eq!(
            states,
            [
                true, true, false, false, false, false, true, true, true, false
            ]
        );
        assert_eq!(policy.state(), IdleState::Busy(Busy::Thermal));
        assert_eq!(Busy::Thermal.activity_kind(), Some(ActivityKind::Thermal));
        // A hot machine whose owner is also away stays paused for the heat alone.
        assert_eq!(policy.poll_timeout(), None);
    }

    #[test]
    fn a_fullscreen_window_pauses_at_once_and_its_end_waits_for_the_owners_quiet_period() {
        let t0 = Instant::now();
        let mut policy = IdlePolicy::new(config(), t0);
        policy.handle_timeout(ms(t0, 1000));
        assert_eq!(
            policy.set_condition(ms(t0, 2000), Busy::Fullscreen, true),
            Some(Transition::BecameBusy(Busy::Fullscreen))
        );
        assert_eq!(
            Busy::Fullscreen.activity_kind(),
            Some(ActivityKind::Fullscreen)
        );
        // A film plays for a minute without any input: the quiet period ends, nothing changes.
        assert_eq!(policy.handle_timeout(ms(t0, 62_000)), None);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Fullscreen));
        // The owner leaves full screen with a click: busy with the click, idle a second later.
        policy.handle_activity(ms(t0, 63_000), ActivityKind::Mouse);
        assert_eq!(
            policy.set_condition(ms(t0, 63_010), Busy::Fullscreen, false),
            None
        );
        assert_eq!(
            policy.state(),
            IdleState::Busy(Busy::Owner(ActivityKind::Mouse))
        );
        assert_eq!(policy.poll_timeout(), Some(ms(t0, 64_000)));
        assert_eq!(
            policy.handle_timeout(ms(t0, 64_000)),
            Some(Transition::BecameIdle)
        );
        // Every condition at once: the reasons follow the precedence as they end one by one.
        let now = ms(t0, 70_000);
        for c in [
            Busy::Fullscreen,
            Busy::Schedule,
            Busy::ExclusiveProgram,
            Busy::Thermal,
        ] {
            policy.set_condition(now, c, true);
        }
        let mut shown = vec![policy.state()];
        for c in [Busy::Thermal, Busy::ExclusiveProgram, Busy::Schedule] {
            policy.set_condition(now, c, false);
            shown.push(policy.state());
        }
        assert_eq!(
            shown,
            [
                IdleState::Busy(Busy::Thermal),
                IdleState::Busy(Busy::ExclusiveProgram),
                IdleState::Busy(Busy::Schedule),
                IdleState::Busy(Busy::Fullscreen),
            ]
        );
        assert_eq!(
            policy.set_condition(now, Busy::Fullscreen, false),
            Some(Transition::BecameIdle)
        );
    }

    #[test]
    fn an_endless_quiet_period_never_times_out() {
        let t0 = Instant::now();
        let cfg = IdleConfig {
            idle_after: Duration::MAX,
            ..config()
        };
        let mut policy = IdlePolicy::new(cfg, t0);
        assert_eq!(policy.poll_timeout(), None);
        assert_eq!(policy.handle_timeout(ms(t0, u64::from(u32::MAX))), None);
        assert_eq!(policy.state(), IdleState::Busy(Busy::Starting));
    }

    /// xorshift64: deterministic, so that a failing seed can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const KINDS: [ActivityKind; 6] = [
        ActivityKind::Keyboard,
        ActivityKind::Mouse,
        ActivityKind::Pointer,
        ActivityKind::Touch,
        ActivityKind::Voice,
        ActivityKind::BusyProcess,
    ];

    /// What the test itself knows about the inputs, to judge the policy's answers.
    struct Model {
        cfg: IdleConfig,
        last_activity: Instant,
        on_battery: bool,
        last_transition: Option<Transition>,
    }

    impl Model {
        /// Checks `policy` right after it answered `transition` at `now`, its state having been
        /// `before`.
        fn check(
            &mut self,
            seed: u64,
            policy: &IdlePolicy,
            now: Instant,
            before: IdleState,
            transition: Option<Transition>,
        ) {
            let after = policy.state();
            let expected = match (before, after) {
                (IdleState::Idle, IdleState::Busy(busy)) => Some(Transition::BecameBusy(busy)),
                (IdleState::Busy(_), IdleState::Idle) => Some(Transition::BecameIdle),
                _ => None,
            };
            assert_eq!(transition, expected, "seed {seed}: {before:?} -> {after:?}");
            if let Some(transition) = transition {
                assert_ne!(
                    self.last_transition,
                    Some(transition),
                    "seed {seed}: the same transition twice in a row"
                );
                self.last_transition = Some(transition);
            }

            let quiet_for = now.saturating_duration_since(self.last_activity);
            assert_eq!(policy.quiet_for(now), quiet_for, "seed {seed}");
            let blocked = self.on_battery && !self.cfg.run_on_battery;
            let idle = (quiet_for >= self.cfg.idle_after || self.cfg.run_while_in_use) && !blocked;
            assert_eq!(
                after == IdleState::Idle,
                idle,
                "seed {seed}: {after:?} after {quiet_for:?} quiet, blocked: {blocked}"
            );
            if transition == Some(Transition::BecameIdle) && !self.cfg.run_while_in_use {
                assert!(
                    now >= self.last_activity + self.cfg.idle_after,
                    "seed {seed}: idle too early"
                );
            }
            if after == IdleState::Idle {
                assert_eq!(policy.poll_timeout(), None, "seed {seed}");
            }
        }
    }

    #[test]
    fn random_event_sequences_keep_the_invariants() {
        for seed in 1..=500u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let cfg = IdleConfig {
                idle_after: Duration::from_millis(1 + rng.below(3000)),
                run_while_in_use: rng.below(4) == 0,
                run_on_battery: rng.below(4) == 0,
            };
            let t0 = Instant::now();
            let mut policy = IdlePolicy::new(cfg, t0);
            let mut model = Model {
                cfg,
                last_activity: t0,
                on_battery: false,
                last_transition: None,
            };
            let mut now = t0;
            for _ in 0..300 {
                // Often zero, so that several events share an instant.
                now += Duration::from_millis(rng.below(4) * rng.below(1500));
                // The driver: every deadline passed is handled before the next event, on time or
                // late (a busy event loop).
                while let Some(deadline) = policy.poll_timeout().filter(|&d| d <= now) {
                    let at = if rng.below(2) == 0 { deadline } else { now };
                    let before = policy.state();
                    let transition = policy.handle_timeout(at);
                    model.check(seed, &policy, at, before, transition);
                }
                let before = policy.state();
                let transition = match rng.below(10) {
                    0..=4 => {
                        model.last_activity = now;
                        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                        let transition = policy.handle_activity(now, kind);
                        let blocked = model.on_battery && !cfg.run_on_battery;
                        if !cfg.run_while_in_use && !blocked {
                            assert_eq!(
                                policy.state(),
                                IdleState::Busy(Busy::Owner(kind)),
                                "seed {seed}"
                            );
                        }
                        transition
                    }
                    5..=7 => {
                        let power = [None, Some(false), Some(true)][rng.below(3) as usize];
                        model.on_battery = power == Some(true);
                        policy.handle_power(now, power)
                    }
                    _ => {
                        // Every passed deadline was handled, so this one is early.
                        let transition = policy.handle_timeout(now);
                        assert_eq!(transition, None, "seed {seed}: early timeout acted");
                        transition
                    }
                };
                model.check(seed, &policy, now, before, transition);
            }
        }
    }
}
