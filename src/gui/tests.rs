//! The window on hand-made snapshots, through egui_kittest (no GPU, no display): what each state
//! says, and which commands its buttons send.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use tokio::sync::{mpsc, watch};

use super::{App, Page, Snooze};
use crate::client::idle::{Busy, IdleState};
use crate::client::settings::Settings;
use crate::client::snapshot::*;
use crate::proto::{ActivityKind, JobId, ReplicaId, TaskId, WorkerId};

fn snapshot() -> Snapshot {
    Snapshot {
        taken: Instant::now(),
        supervisor: Some("ws://127.0.0.1:7400/worker".into()),
        worker_id: Some(WorkerId("desk-1a2b".into())),
        name: "desk".into(),
        connection: Connection::Connected {
            heartbeat: Duration::from_secs(1),
        },
        idle: IdleState::Idle,
        idle_in: None,
        detail: PauseDetail::default(),
        tasks: Vec::new(),
        outbox: 0,
        contribution: Contribution::default(),
        capacity: CapacityView {
            cores: 8,
            slots: 8,
            memory_mb: 16_384,
            disk_mb: 100_000,
            bench_mops: 900.0,
        },
        events: Vec::new(),
        sources: vec!["input".into()],
        source_problems: Vec::new(),
        last_activity: None,
        paused_at: None,
        settings: Arc::new(Settings::default()),
        settings_path: Some("/tmp/idlegrid-test/settings.toml".into()),
        settings_result: None,
        tiles: Vec::new(),
    }
}

fn task(progress: f32) -> TaskView {
    TaskView {
        replica: ReplicaId { epoch: 1, seq: 7 },
        job: JobId("3".into()),
        task: TaskId("12".into()),
        kind: "mandelbrot".into(),
        state: TaskState::Running,
        progress,
        elapsed: Duration::from_secs(65),
        remaining: Some(Duration::from_secs(30)),
    }
}

struct Ui {
    harness: Harness<'static, App>,
    commands: mpsc::UnboundedReceiver<UiCommand>,
    snapshots: watch::Sender<Snapshot>,
}

fn window(s: Snapshot, page: Page) -> Ui {
    let (snapshots, rx) = watch::channel(s);
    let (tx, commands) = mpsc::unbounded_channel();
    let app = App::new(
        EngineHandle {
            snapshots: rx,
            commands: tx,
        },
        Some(page),
    );
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 1400.0))
        .build_ui_state(|ui, app: &mut App| app.body_ui(ui), app);
    harness.run();
    Ui {
        harness,
        commands,
        snapshots,
    }
}

use eframe::egui;

fn shows(ui: &Ui, text: &str) -> bool {
    ui.harness
        .query_all_by_label_contains(text)
        .next()
        .is_some()
}

#[test]
fn every_state_and_its_reason_is_shown_on_the_status_page() {
    let now = SystemTime::now();
    let with = |f: &dyn Fn(&mut Snapshot)| {
        let mut s = snapshot();
        f(&mut s);
        s
    };
    let soon = now + Duration::from_secs(600);
    let soon_hhmm = crate::client::localtime::local(soon).hh_mm();
    let cases: Vec<(Snapshot, &str, String)> = vec![
        (
            with(&|s| s.tasks = vec![task(0.42)]),
            "Computing",
            "mandelbrot of job 3: 42%".into(),
        ),
        (
            with(&|s| {
                s.idle = IdleState::Busy(Busy::Starting);
                s.idle_in = Some(Duration::from_secs(125));
            }),
            "Waiting for idle",
            "starts in 2 min 5 s".into(),
        ),
        (
            with(&|s| s.idle = IdleState::Busy(Busy::Owner(ActivityKind::Keyboard))),
            "Paused",
            "you are using this computer (keyboard)".into(),
        ),
        (
            with(&|s| {
                s.idle = IdleState::Busy(Busy::Snoozed);
                s.detail.snoozed_until = Some(soon);
            }),
            "Paused",
            format!("snoozed until {soon_hhmm}"),
        ),
        (
            with(&|s| {
                s.idle = IdleState::Busy(Busy::Thermal);
                s.detail.temperature_c = Some(91.0);
            }),
            "Paused",
            "too hot (91 °C)".into(),
        ),
        (
            with(&|s| s.idle = IdleState::Busy(Busy::OnBattery)),
            "Paused",
            "on battery".into(),
        ),
        (
            with(&|s| s.idle = IdleState::Busy(Busy::Schedule)),
            "Paused",
            "outside the schedule".into(),
        ),
        (
            with(&|s| {
                s.idle = IdleState::Busy(Busy::ExclusiveProgram);
                s.detail.exclusive = vec!["blender".into()];
            }),
            "Paused",
            "an exclusive program runs (blender)".into(),
        ),
        (
            with(&|s| s.idle = IdleState::Busy(Busy::Fullscreen)),
            "Paused",
            "a full-screen window has the focus".into(),
        ),
        (
            with(&|s| {
                s.connection = Connection::Disconnected {
                    why: "connection refused".into(),
                    retry_in: Duration::from_secs(8),
                }
            }),
            "Disconnected",
            "connection refused; retrying in 8 s".into(),
        ),
    ];
    for (s, title, reason) in cases {
        let ui = window(s, Page::Status);
        assert!(shows(&ui, title), "{title:?} not shown");
        assert!(shows(&ui, &reason), "{reason:?} not shown under {title:?}");
        // The window's words are the tray tooltip's words.
        let (t, r) = super::label::state_label(&ui.harness.state().snapshot, now);
        assert_eq!((t.as_str(), r.as_str()), (title, reason.as_str()));
    }
    // A negative control: a reason that does not apply is not shown.
    let ui = window(snapshot(), Page::Status);
    assert!(!shows(&ui, "too hot"));
    assert!(!shows(&ui, "Paused"));
}

#[test]
fn cpu_time_of_ten_short_tasks_is_shown_not_rounded_to_nothing() {
    let mut s = snapshot();
    // Ten Mandelbrot tiles of 45 ms each: the status page once said "0 s" for this.
    let mut tally = crate::client::contribution::Tally::default();
    for _ in 0..10 {
        tally.add(SystemTime::now(), true, Duration::from_millis(45));
    }
    s.contribution = tally.view(SystemTime::now());
    let ui = window(s, Page::Status);
    assert!(
        shows(&ui, "0.5 s"),
        "today's and the total CPU time read 0.5 s"
    );
    assert!(!shows(&ui, "0 s"));
    assert_eq!(super::status_ui::hours(Duration::from_millis(7)), "7 ms");
    assert_eq!(
        super::status_ui::hours(Duration::from_millis(9_960)),
        "10.0 s"
    );
    assert_eq!(super::status_ui::hours(Duration::from_secs(42)), "42 s");
    assert_eq!(super::status_ui::hours(Duration::from_secs(600)), "10 min");
}

#[test]
fn a_running_task_shows_job_kind_progress_and_time_left() {
    let mut s = snapshot();
    s.tasks = vec![task(0.5)];
    s.contribution.per_day = (0..14)
        .map(|d| DayTotal {
            date: format!("2026-11-{:02}", d + 10),
            cpu: Duration::from_secs(d * 600),
            tasks: d,
        })
        .collect();
    s.events = vec![EventView {
        at: SystemTime::now(),
        what: Event::TaskDone {
            job: JobId("3".into()),
            kind: "mandelbrot".into(),
            cpu: Duration::from_secs(90),
        },
    }];
    let ui = window(s, Page::Status);
    assert!(shows(&ui, "job 3 · mandelbrot · task 12"));
    assert!(shows(&ui, "1 min 5 s elapsed"));
    assert!(shows(&ui, "about 30 s left"));
    assert!(shows(&ui, "finished a mandelbrot task of job 3"));
    assert!(shows(&ui, "CPU time per day, last 14 days"));
}

#[test]
fn snooze_sends_its_command_and_resume_ends_it() {
    let mut ui = window(snapshot(), Page::Status);
    assert!(
        ui.commands.try_recv().is_err(),
        "nothing sent before a click"
    );
    let before = SystemTime::now();
    ui.harness.get_by_label("Snooze 1 h").click();
    ui.harness.run();
    match ui.commands.try_recv() {
        Ok(UiCommand::SnoozeUntil(t)) => {
            let d = t.duration_since(before).unwrap();
            assert!(
                d >= Duration::from_secs(3599) && d <= Duration::from_secs(3610),
                "{d:?}"
            );
        }
        other => panic!("expected a snooze, got {other:?}"),
    }
    ui.harness.get_by_label("Snooze until tomorrow").click();
    ui.harness.run();
    let Ok(UiCommand::SnoozeUntil(t)) = ui.commands.try_recv() else {
        panic!("no snooze until tomorrow");
    };
    let l = crate::client::localtime::local(t);
    assert_eq!((l.hour, l.minute), (8, 0));
    // Resume is offered once the engine says it is snoozed.
    let mut s = snapshot();
    s.idle = IdleState::Busy(Busy::Snoozed);
    s.detail.snoozed_until = Some(SystemTime::now() + Duration::from_secs(3600));
    ui.snapshots.send_replace(s);
    ui.harness.run();
    ui.harness.get_by_label("Resume").click();
    ui.harness.run();
    assert_eq!(ui.commands.try_recv().ok(), Some(UiCommand::Resume));
}

#[test]
fn an_invalid_setting_shows_its_message_and_sends_nothing() {
    let mut ui = window(snapshot(), Page::Settings);
    ui.harness.state_mut().settings.form.idle_after_secs = "soon".into();
    ui.harness.state_mut().settings.form.cpus = "0".into();
    ui.harness.run();
    ui.harness.get_by_label("Save").click();
    ui.harness.run();
    assert!(shows(&ui, "idle_after_secs must be a number, not \"soon\""));
    assert!(shows(&ui, "cpus = 0 is out of range (allowed 1 ..= 4096)"));
    assert!(ui.commands.try_recv().is_err(), "an invalid form was sent");
}

#[test]
fn a_valid_setting_is_sent_with_its_new_value_and_the_engines_answer_shown() {
    let mut ui = window(snapshot(), Page::Settings);
    ui.harness.state_mut().settings.form.idle_after_secs = "42".into();
    ui.harness.state_mut().settings.form.run_on_battery = true;
    ui.harness.run();
    ui.harness.get_by_label("Save").click();
    ui.harness.run();
    match ui.commands.try_recv() {
        Ok(UiCommand::ApplySettings(s)) => {
            assert_eq!(s.idle_after, Duration::from_secs(42));
            assert!(s.run_on_battery);
            assert_eq!(s.cpus, Settings::default().cpus, "untouched fields stay");
        }
        other => panic!("expected ApplySettings, got {other:?}"),
    }
    assert!(!shows(&ui, "Saved"));
    let mut s = snapshot();
    s.settings_result = Some(SettingsResult::Saved);
    ui.snapshots.send_replace(s.clone());
    ui.harness.run();
    assert!(shows(&ui, "Saved"));
    // A refusal from the engine shows beside its field.
    s.settings_result = Some(SettingsResult::Refused(vec![FieldError {
        key: Some("server"),
        message: "the supervisor did not answer".into(),
    }]));
    ui.snapshots.send_replace(s);
    ui.harness.run();
    assert!(shows(&ui, "the supervisor did not answer"));
}

#[test]
fn first_run_opens_the_welcome_page_and_configure_carries_url_and_token() {
    let mut s = snapshot();
    s.connection = Connection::NotConfigured;
    s.supervisor = None;
    let (snapshots, rx) = watch::channel(s);
    let (tx, mut commands) = mpsc::unbounded_channel();
    let app = App::new(
        EngineHandle {
            snapshots: rx,
            commands: tx,
        },
        None,
    );
    assert_eq!(app.page, Page::Welcome);
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 900.0))
        .build_ui_state(|ui, app: &mut App| app.body_ui(ui), app);
    harness.run();
    harness.state_mut().welcome.server = "http://nope".into();
    harness.get_by_label("Connect").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("must start with ws://")
            .is_some()
    );
    assert!(commands.try_recv().is_err());
    harness.state_mut().welcome.server = "ws://127.0.0.1:7400/worker".into();
    harness.state_mut().welcome.token = "s3cret".into();
    harness.get_by_label("Connect").click();
    harness.run();
    assert_eq!(
        commands.try_recv().ok(),
        Some(UiCommand::Configure {
            server: "ws://127.0.0.1:7400/worker".into(),
            token: "s3cret".into()
        })
    );
    // Once configured, the window moves on to the status page.
    snapshots.send_replace(snapshot());
    harness.run();
    assert_eq!(harness.state().page, Page::Status);
}

#[test]
fn snooze_until_tomorrow_is_eight_the_next_morning() {
    let now = SystemTime::now();
    let t = Snooze::UntilTomorrow.until(now);
    let d = t.duration_since(now).unwrap();
    assert!(d > Duration::from_secs(8 * 3600) && d <= Duration::from_secs(32 * 3600));
}

/// The window, with `screensaver = true` in its settings, while the owner types.
fn window_with_saver_setting(on: bool, busy: Busy) -> Ui {
    let mut s = snapshot();
    s.idle = IdleState::Busy(busy);
    s.settings = Arc::new(Settings {
        screensaver: on,
        ..Settings::default()
    });
    window(s, Page::Status)
}

fn go(ui: &mut Ui, idle: IdleState) {
    let mut s = ui.snapshots.borrow().clone();
    s.idle = idle;
    s.taken = Instant::now();
    ui.snapshots.send(s).unwrap();
    ui.harness.run();
}

#[test]
fn the_screensaver_covers_the_window_when_the_owner_walks_away_and_a_key_ends_it() {
    let mut ui = window_with_saver_setting(true, Busy::Owner(ActivityKind::Keyboard));
    assert!(!ui.harness.state().saver_showing());
    assert!(
        shows(&ui, "Snooze 1 h"),
        "the status page while the owner works"
    );

    go(&mut ui, IdleState::Idle);
    assert!(ui.harness.state().saver_showing(), "idle: the saver shows");
    assert!(!shows(&ui, "Snooze 1 h"), "it covers the pages");
    assert!(ui.commands.try_recv().is_err(), "showing it sends nothing");

    ui.harness.key_press(egui::Key::Space);
    ui.harness.run();
    match ui.commands.try_recv() {
        Ok(UiCommand::OwnerReturned(ActivityKind::Keyboard)) => {}
        other => panic!("a key on the saver is the owner typing, got {other:?}"),
    }
    assert!(!ui.harness.state().saver_showing());
    assert!(shows(&ui, "Snooze 1 h"), "the pages are back");
}

#[test]
fn the_screensaver_ends_when_the_engine_sees_the_owner_and_stays_off_unless_asked_for() {
    let mut ui = window_with_saver_setting(true, Busy::Starting);
    go(&mut ui, IdleState::Idle);
    assert!(ui.harness.state().saver_showing(), "idle after start-up");
    go(&mut ui, IdleState::Busy(Busy::Owner(ActivityKind::Mouse)));
    assert!(
        !ui.harness.state().saver_showing(),
        "the engine saw the mouse"
    );
    assert!(
        ui.commands.try_recv().is_err(),
        "the engine knows already: nothing to report"
    );

    // Off in the settings: idle changes nothing on screen.
    let mut off = window_with_saver_setting(false, Busy::Owner(ActivityKind::Keyboard));
    go(&mut off, IdleState::Idle);
    assert!(!off.harness.state().saver_showing());

    // A snooze ending says nothing about whether anyone is at the screen.
    let mut snooze = window_with_saver_setting(true, Busy::Snoozed);
    go(&mut snooze, IdleState::Idle);
    assert!(!snooze.harness.state().saver_showing());
}
