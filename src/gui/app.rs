//! The eframe app: which page is shown, the latest snapshot, the forms being edited, and what
//! closing the window means (hide to the tray; Quit ends the engine, then the window).

use std::sync::atomic::Ordering;

use eframe::egui;
use tokio::sync::{mpsc, watch};

use super::settings_ui::SettingsPage;
use super::welcome_ui::WelcomePage;
use super::{FRAMES, label};
use crate::client::snapshot::{Connection, EngineHandle, Snapshot, UiCommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Status,
    Settings,
    Welcome,
}

impl std::str::FromStr for Page {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "status" => Ok(Page::Status),
            "settings" => Ok(Page::Settings),
            "welcome" => Ok(Page::Welcome),
            _ => Err(format!("{s:?}: pages are status, settings, welcome")),
        }
    }
}

pub struct App {
    pub(super) snapshot: Snapshot,
    snapshots: watch::Receiver<Snapshot>,
    pub(super) commands: mpsc::UnboundedSender<UiCommand>,
    pub page: Page,
    pub(super) settings: SettingsPage,
    pub(super) welcome: WelcomePage,
    /// Why the tray icon is not shown, if it is not.
    pub(super) tray_problem: Option<String>,
    /// Whether a tray icon runs (closing the window then hides it instead of quitting).
    tray_running: bool,
    pub(super) quitting: bool,
    engine_ended: bool,
}

impl App {
    pub fn new(engine: EngineHandle, page: Option<Page>) -> Self {
        let mut snapshots = engine.snapshots;
        let snapshot = snapshots.borrow_and_update().clone();
        let page = page.unwrap_or(if snapshot.connection == Connection::NotConfigured {
            Page::Welcome
        } else {
            Page::Status
        });
        let settings = SettingsPage::new(&snapshot);
        Self {
            snapshot,
            snapshots,
            commands: engine.commands,
            page,
            settings,
            welcome: WelcomePage::default(),
            tray_problem: None,
            tray_running: false,
            quitting: false,
            engine_ended: false,
        }
    }

    pub(super) fn set_tray(&mut self, problem: Option<String>, running: bool) {
        self.tray_problem = problem;
        self.tray_running = running;
    }

    /// Takes the engine's latest snapshot, if there is a new one.
    fn refresh(&mut self) {
        match self.snapshots.has_changed() {
            Ok(true) => {
                let was_configured = self.snapshot.connection != Connection::NotConfigured;
                self.snapshot = self.snapshots.borrow_and_update().clone();
                let configured = self.snapshot.connection != Connection::NotConfigured;
                if configured && !was_configured && self.page == Page::Welcome {
                    self.page = Page::Status;
                }
            }
            Ok(false) => {}
            Err(_) => self.engine_ended = true,
        }
    }

    pub(super) fn quit(&mut self) {
        if !self.quitting {
            self.quitting = true;
            let _ = self.commands.send(UiCommand::Quit);
        }
    }

    /// The whole window's content (what tests drive).
    pub fn body_ui(&mut self, ui: &mut egui::Ui) {
        self.refresh();
        egui::Panel::top("pages").show(ui, |ui| self.top_bar_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| match self.page {
                Page::Status => super::status_ui::status_ui(ui, self),
                Page::Settings => self
                    .settings
                    .settings_ui(ui, &self.snapshot, &self.commands),
                Page::Welcome => self.welcome.welcome_ui(ui, &self.snapshot, &self.commands),
            });
        });
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.menu_button("idlegrid", |ui| {
                if ui.button("Hide window").clicked() {
                    ui.ctx()
                        .send_viewport_cmd(egui::ViewportCommand::Visible(false));
                }
                if ui.button("Quit").clicked() {
                    self.quit();
                }
            });
            ui.separator();
            if self.snapshot.connection == Connection::NotConfigured {
                ui.selectable_value(&mut self.page, Page::Welcome, "Welcome");
            }
            ui.selectable_value(&mut self.page, Page::Status, "Status");
            if ui
                .selectable_value(&mut self.page, Page::Settings, "Settings")
                .clicked()
            {
                self.settings = SettingsPage::new(&self.snapshot);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let (title, _) = label::state_label(&self.snapshot, std::time::SystemTime::now());
                ui.label(title);
            });
        });
        if self.quitting {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Quitting: handing running work back to the supervisor…");
            });
        }
    }
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        FRAMES.fetch_add(1, Ordering::Relaxed);
        let ctx = ui.ctx().clone();
        if ctx.input(|i| i.viewport().close_requested()) && !self.engine_ended {
            // Close to tray: the engine and the tray keep running. Without a tray, closing is
            // the only way out, so it quits.
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            if self.tray_running {
                ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
            } else {
                self.quit();
            }
        }
        self.body_ui(ui);
        if self.engine_ended {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}
