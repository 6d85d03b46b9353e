//! The settings page: every field of the settings form, each with its message beside it. Save
//! sends the checked settings to the engine (which writes the file and applies them); nothing is
//! sent while a field is wrong.

use std::path::PathBuf;

use eframe::egui;
use tokio::sync::mpsc;

use super::form::SettingsForm;
use crate::client::snapshot::{FieldError, SettingsResult, Snapshot, UiCommand};

pub struct SettingsPage {
    pub form: SettingsForm,
    /// Messages from the last local check of the form.
    errors: Vec<FieldError>,
    /// Whether Save sent something whose answer the engine has not given yet, or has.
    sent: bool,
}

impl SettingsPage {
    pub fn new(s: &Snapshot) -> Self {
        Self {
            form: SettingsForm::from_settings(&s.settings),
            errors: Vec::new(),
            sent: false,
        }
    }

    fn messages<'a>(&'a self, s: &'a Snapshot, key: &str) -> Vec<&'a str> {
        let engine = match (&s.settings_result, self.sent) {
            (Some(SettingsResult::Refused(e)), true) => e.as_slice(),
            _ => &[],
        };
        self.errors
            .iter()
            .chain(engine)
            .filter(|e| e.key == Some(key) || (key.is_empty() && e.key.is_none()))
            .map(|e| e.message.as_str())
            .collect()
    }

    pub fn settings_ui(
        &mut self,
        ui: &mut egui::Ui,
        s: &Snapshot,
        commands: &mpsc::UnboundedSender<UiCommand>,
    ) {
        ui.heading("Settings");
        if let Some(p) = &s.settings_path {
            ui.label(format!("Settings file: {}", p.display()));
        }
        ui.add_space(6.0);
        let mut form = std::mem::take(&mut self.form);
        egui::Grid::new("settings")
            .num_columns(3)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                let text =
                    |ui: &mut egui::Ui, label: &str, key: &str, v: &mut String, hint: &str| {
                        ui.label(label);
                        ui.add_sized(
                            [260.0, 20.0],
                            egui::TextEdit::singleline(v)
                                .hint_text(hint)
                                .desired_width(260.0)
                                .id_salt(key),
                        );
                        self.messages_ui(ui, s, key);
                        ui.end_row();
                    };
                text(
                    ui,
                    "Start after idle for (s)",
                    "idle_after_secs",
                    &mut form.idle_after_secs,
                    "180",
                );
                text(ui, "CPUs to use", "cpus", &mut form.cpus, "all");
                text(
                    ui,
                    "CPU time cap (%)",
                    "cpu_cap_percent",
                    &mut form.cpu_cap_percent,
                    "100",
                );
                text(
                    ui,
                    "Supervisor URL",
                    "server",
                    &mut form.server,
                    "ws://host:7400/worker",
                );
                text(
                    ui,
                    "Token file",
                    "token_file",
                    &mut form.token_file,
                    "worker.token",
                );
                text(
                    ui,
                    "CA file (wss://)",
                    "ca_file",
                    &mut form.ca_file,
                    "public roots only",
                );
                text(
                    ui,
                    "Temperature limit (°C)",
                    "temperature_limit_c",
                    &mut form.temperature_limit_c,
                    "none",
                );
                let check = |ui: &mut egui::Ui, label: &str, key: &str, v: &mut bool| {
                    ui.label("");
                    ui.checkbox(v, label);
                    self.messages_ui(ui, s, key);
                    ui.end_row();
                };
                check(
                    ui,
                    "Run while the computer is in use",
                    "run_while_in_use",
                    &mut form.run_while_in_use,
                );
                check(
                    ui,
                    "Run on battery",
                    "run_on_battery",
                    &mut form.run_on_battery,
                );
                check(
                    ui,
                    "Pause while a full-screen window has the focus",
                    "pause_on_fullscreen",
                    &mut form.pause_on_fullscreen,
                );
                check(
                    ui,
                    "Show the screensaver view when idle",
                    "screensaver",
                    &mut form.screensaver,
                );
                check(
                    ui,
                    "Step aside at once when another program wants the CPU",
                    "step_aside",
                    &mut form.step_aside,
                );
                let lines =
                    |ui: &mut egui::Ui, label: &str, key: &str, v: &mut String, hint: &str| {
                        ui.label(label);
                        ui.add_sized(
                            [260.0, 60.0],
                            egui::TextEdit::multiline(v)
                                .hint_text(hint)
                                .desired_rows(3)
                                .desired_width(260.0)
                                .id_salt(key),
                        );
                        self.messages_ui(ui, s, key);
                        ui.end_row();
                    };
                lines(
                    ui,
                    "Daily schedule",
                    "schedule",
                    &mut form.schedule,
                    "mon-fri 18:00-08:00\nsat,sun 00:00-24:00",
                );
                lines(
                    ui,
                    "Exclusive programs",
                    "exclusive_programs",
                    &mut form.exclusive_programs,
                    "one program name a line",
                );
            });
        self.form = form;
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Save").clicked() {
                self.save(s, commands);
            }
            if ui.button("Revert").clicked() {
                *self = SettingsPage::new(s);
            }
            if self.sent {
                match &s.settings_result {
                    Some(SettingsResult::Saved) => {
                        ui.colored_label(egui::Color32::from_rgb(46, 157, 76), "Saved");
                    }
                    Some(SettingsResult::Checking) => {
                        ui.spinner();
                        ui.label("Checking…");
                    }
                    Some(SettingsResult::Refused(_)) => {
                        ui.colored_label(ui.visuals().error_fg_color, "Not saved");
                    }
                    None => {
                        ui.label("Sent to the engine…");
                    }
                }
            } else if !self.errors.is_empty() {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    "Not saved: fix the fields marked",
                );
            }
        });
        self.messages_ui(ui, s, "");
    }

    fn messages_ui(&self, ui: &mut egui::Ui, s: &Snapshot, key: &str) {
        let msgs = self.messages(s, key);
        if msgs.is_empty() {
            ui.label("");
        } else {
            ui.colored_label(ui.visuals().error_fg_color, msgs.join("; "));
        }
    }

    fn save(&mut self, s: &Snapshot, commands: &mpsc::UnboundedSender<UiCommand>) {
        let base = s
            .settings_path
            .as_ref()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        match self.form.check(&base) {
            Ok(settings) => {
                self.errors.clear();
                self.sent = true;
                let _ = commands.send(UiCommand::ApplySettings(Box::new(settings)));
            }
            Err(errors) => {
                self.errors = errors;
                self.sent = false;
            }
        }
    }
}
