//! The first-run page: which supervisor to lend this computer to, and the token its operator
//! gave (pasted, or a file). The engine checks them with the supervisor before saving.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use eframe::egui;
use tokio::sync::mpsc;

use crate::client::snapshot::{FieldError, SettingsResult, Snapshot, UiCommand};

#[derive(Default)]
pub struct WelcomePage {
    pub server: String,
    pub token: String,
    pub token_file: String,
    errors: Vec<FieldError>,
    /// A token file read off the UI thread, and its error if it could not be read.
    reading: Arc<Mutex<Option<String>>>,
    sent: bool,
}

impl WelcomePage {
    fn messages(&self, s: &Snapshot, key: &str) -> String {
        let engine = match (&s.settings_result, self.sent) {
            (Some(SettingsResult::Refused(e)), true) => e.as_slice(),
            _ => &[],
        };
        let mut out: Vec<String> = self
            .errors
            .iter()
            .chain(engine)
            .filter(|e| e.key == Some(key) || (key.is_empty() && e.key.is_none()))
            .map(|e| e.message.clone())
            .collect();
        if key == "token_file"
            && let Ok(g) = self.reading.lock()
            && let Some(e) = &*g
        {
            out.push(e.clone());
        }
        out.join("; ")
    }

    pub fn welcome_ui(
        &mut self,
        ui: &mut egui::Ui,
        s: &Snapshot,
        commands: &mpsc::UnboundedSender<UiCommand>,
    ) {
        ui.heading("Welcome to idlegrid");
        ui.label(
            "idlegrid lends this computer's idle time to a pool of computers, and steps aside the moment you are back. \
             Enter the supervisor your pool's operator gave you, and your token.",
        );
        ui.add_space(8.0);
        egui::Grid::new("welcome")
            .num_columns(3)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                let row = |ui: &mut egui::Ui,
                           label: &str,
                           key: &str,
                           v: &mut String,
                           hint: &str,
                           password: bool| {
                    ui.label(label);
                    ui.add_sized(
                        [300.0, 20.0],
                        egui::TextEdit::singleline(v)
                            .hint_text(hint)
                            .password(password)
                            .desired_width(300.0)
                            .id_salt(key),
                    );
                    let m = self.messages(s, key);
                    ui.colored_label(ui.visuals().error_fg_color, m);
                    ui.end_row();
                };
                let (mut server, mut token, mut file) = (
                    self.server.clone(),
                    self.token.clone(),
                    self.token_file.clone(),
                );
                row(
                    ui,
                    "Supervisor URL",
                    "server",
                    &mut server,
                    "ws://host:7400/worker",
                    false,
                );
                row(ui, "Token", "token", &mut token, "paste it here", true);
                row(
                    ui,
                    "…or a token file",
                    "token_file",
                    &mut file,
                    "/path/to/worker.token",
                    false,
                );
                (self.server, self.token, self.token_file) = (server, token, file);
            });
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Connect").clicked() {
                self.connect(ui.ctx(), commands);
            }
            match (&s.settings_result, self.sent) {
                (Some(SettingsResult::Checking), true) => {
                    ui.spinner();
                    ui.label("Checking with the supervisor…");
                }
                (Some(SettingsResult::Saved), true) => {
                    ui.label("Saved; connecting.");
                }
                (Some(SettingsResult::Refused(_)), true) => {
                    ui.colored_label(ui.visuals().error_fg_color, "Not saved");
                }
                _ => {}
            }
        });
        let m = self.messages(s, "");
        if !m.is_empty() {
            ui.colored_label(ui.visuals().error_fg_color, m);
        }
    }

    fn connect(&mut self, ctx: &egui::Context, commands: &mpsc::UnboundedSender<UiCommand>) {
        self.errors.clear();
        if let Ok(mut g) = self.reading.lock() {
            *g = None;
        }
        let server = self.server.trim().to_owned();
        if let Err(e) = crate::client::check_server_url(&server) {
            self.errors.push(FieldError {
                key: Some("server"),
                message: e.to_string(),
            });
        }
        let (token, file) = (
            self.token.trim().to_owned(),
            self.token_file.trim().to_owned(),
        );
        if token.is_empty() && file.is_empty() {
            self.errors.push(FieldError {
                key: Some("token"),
                message: "paste the token, or name the file that holds it".into(),
            });
        }
        if !self.errors.is_empty() {
            return;
        }
        self.sent = true;
        if !token.is_empty() {
            let _ = commands.send(UiCommand::Configure { server, token });
            return;
        }
        // The file is read off the UI thread; its error (if any) comes back beside the field.
        let (commands, ctx, reading) = (commands.clone(), ctx.clone(), self.reading.clone());
        std::thread::spawn(move || {
            match crate::supervisor::read_token(&PathBuf::from(&file)) {
                Ok(token) => {
                    let _ = commands.send(UiCommand::Configure { server, token });
                }
                Err(e) => {
                    if let Ok(mut g) = reading.lock() {
                        *g = Some(e.to_string());
                    }
                }
            }
            ctx.request_repaint();
        });
    }
}
