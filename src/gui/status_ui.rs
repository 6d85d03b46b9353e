//! The status page: the supervisor and the connection, the state and its reason, snooze, the
//! tasks held, what this machine has given, its capacity, a 14-day chart and recent events.

use std::time::{Duration, SystemTime};

use eframe::egui;

use super::{App, Snooze, label};
use crate::client::localtime;
use crate::client::snapshot::{Connection, Event, Snapshot, TaskState, UiCommand};

pub fn status_ui(ui: &mut egui::Ui, app: &mut App) {
    let s = &app.snapshot;
    let now = SystemTime::now();
    let (title, reason) = label::state_label(s, now);
    ui.heading(&title);
    ui.label(&reason);
    ui.add_space(4.0);
    if let Some(why) = &app.tray_problem {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            format!("No tray icon: {why}. Closing this window keeps idlegrid running only if a tray icon is shown."),
        );
    }
    snooze_ui(ui, s, &app.commands);
    ui.separator();
    connection_ui(ui, s);
    ui.separator();
    tasks_ui(ui, s);
    ui.separator();
    contribution_ui(ui, s);
    ui.separator();
    events_ui(ui, s);
}

fn snooze_ui(
    ui: &mut egui::Ui,
    s: &Snapshot,
    commands: &tokio::sync::mpsc::UnboundedSender<UiCommand>,
) {
    ui.horizontal_wrapped(|ui| {
        let now = SystemTime::now();
        for (text, choice) in [
            ("Snooze 1 h", Snooze::OneHour),
            ("Snooze 3 h", Snooze::ThreeHours),
            ("Snooze until tomorrow", Snooze::UntilTomorrow),
        ] {
            if ui.button(text).clicked() {
                let _ = commands.send(UiCommand::SnoozeUntil(choice.until(now)));
            }
        }
        let snoozed = s.detail.snoozed_until.is_some_and(|t| t > now);
        if ui
            .add_enabled(snoozed, egui::Button::new("Resume"))
            .clicked()
        {
            let _ = commands.send(UiCommand::Resume);
        }
    });
}

fn connection_ui(ui: &mut egui::Ui, s: &Snapshot) {
    egui::Grid::new("connection").num_columns(2).show(ui, |ui| {
        ui.label("Supervisor");
        ui.label(s.supervisor.as_deref().unwrap_or("none configured"));
        ui.end_row();
        ui.label("Connection");
        ui.label(match &s.connection {
            Connection::NotConfigured => "not configured".to_owned(),
            Connection::Connecting => "connecting…".to_owned(),
            Connection::Connected { heartbeat } => {
                format!("connected (heartbeat every {} ms)", heartbeat.as_millis())
            }
            Connection::Disconnected { why, retry_in } => {
                format!("disconnected: {why}; retrying in {}", label::secs(*retry_in))
            }
            Connection::Refused { why, retry_in } => {
                format!("refused: {why}; asking again in {}", label::secs(*retry_in))
            }
        });
        ui.end_row();
        ui.label("This machine");
        let c = &s.capacity;
        ui.label(format!(
            "{} ({}): {} cores, {} task slots, {:.1} GiB memory, {:.0} GiB free disk, {:.0} Mop/s per core",
            s.name,
            s.worker_id.as_ref().map(|w| w.0.as_str()).unwrap_or("no id yet"),
            c.cores,
            c.slots,
            c.memory_mb as f64 / 1024.0,
            c.disk_mb as f64 / 1024.0,
            c.bench_mops
        ));
        ui.end_row();
        if !s.sources.is_empty() || !s.source_problems.is_empty() {
            ui.label("Watching");
            ui.vertical(|ui| {
                if !s.sources.is_empty() {
                    ui.label(s.sources.join(", "));
                }
                for p in &s.source_problems {
                    ui.colored_label(ui.visuals().warn_fg_color, format!("not watching {p}"));
                }
            });
            ui.end_row();
        }
        if s.outbox > 0 {
            ui.label("Waiting to send");
            ui.label(format!("{} finished results", s.outbox));
            ui.end_row();
        }
    });
}

fn tasks_ui(ui: &mut egui::Ui, s: &Snapshot) {
    ui.strong(format!("Tasks ({})", s.tasks.len()));
    if s.tasks.is_empty() {
        ui.label("No task held right now.");
        return;
    }
    egui::Grid::new("tasks")
        .num_columns(4)
        .striped(true)
        .show(ui, |ui| {
            for t in &s.tasks {
                ui.label(format!("job {} · {} · task {}", t.job, t.kind, t.task));
                ui.add(
                    egui::ProgressBar::new(t.progress.clamp(0.0, 1.0))
                        .desired_width(160.0)
                        .show_percentage(),
                );
                ui.label(match t.state {
                    TaskState::Fetching => "fetching inputs".to_owned(),
                    TaskState::Running => format!("{} elapsed", label::mins_secs(t.elapsed)),
                    TaskState::Paused => format!("paused after {}", label::mins_secs(t.elapsed)),
                    TaskState::Reporting => "sending the result".to_owned(),
                });
                ui.label(match t.remaining {
                    Some(r) => format!("about {} left", label::mins_secs(r)),
                    None => "—".to_owned(),
                });
                ui.end_row();
            }
        });
}

/// "3.2 h", "12 min", "40 s".
pub fn hours(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s >= 10.0 {
        format!("{s:.0} s")
    } else if s >= 0.1 || s == 0.0 {
        // Sub-second tasks (a Mandelbrot tile) add up in tenths; "0 s" would say nothing ran.
        format!("{s:.1} s")
    } else {
        format!("{} ms", d.as_millis().max(1))
    }
}

fn contribution_ui(ui: &mut egui::Ui, s: &Snapshot) {
    let c = &s.contribution;
    ui.strong("Given to the pool");
    egui::Grid::new("contribution")
        .num_columns(3)
        .show(ui, |ui| {
            ui.label("");
            ui.label("tasks");
            ui.label("CPU time");
            ui.end_row();
            ui.label("Today");
            ui.label(c.tasks_today.to_string());
            ui.label(hours(c.cpu_today));
            ui.end_row();
            ui.label("In total");
            ui.label(c.tasks_total.to_string());
            ui.label(hours(c.cpu_total));
            ui.end_row();
        });
    ui.label("CPU time per day, last 14 days");
    super::chart::cpu_per_day_ui(ui, &c.per_day);
}

fn events_ui(ui: &mut egui::Ui, s: &Snapshot) {
    ui.strong("Recent events");
    if s.events.is_empty() {
        ui.label("Nothing yet.");
    }
    for e in s.events.iter().rev().take(12) {
        let at = localtime::local(e.at).hh_mm();
        ui.label(format!("{at}  {}", event_text(&e.what)));
    }
}

pub fn event_text(e: &Event) -> String {
    match e {
        Event::Connected => "connected to the supervisor".into(),
        Event::Disconnected(why) => format!("disconnected: {why}"),
        Event::Refused(why) => format!("refused: {why}"),
        Event::Paused(b) => format!("paused: {}", label::busy_text(*b)),
        Event::Resumed => "computing again".into(),
        Event::TaskStarted { job, kind } => format!("started a {kind} task of job {job}"),
        Event::TaskDone { job, kind, cpu } => {
            format!("finished a {kind} task of job {job} ({})", hours(*cpu))
        }
        Event::TaskFailed { job, kind, error } => {
            format!("a {kind} task of job {job} failed: {error}")
        }
        Event::TaskCancelled { job, kind } => {
            format!("a {kind} task of job {job} was cancelled (another copy won or the job ended)")
        }
        Event::Snoozed { until } => format!("snoozed until {}", localtime::local(*until).hh_mm()),
        Event::SettingsApplied => "settings saved".into(),
        Event::Note(n) => n.clone(),
    }
}
