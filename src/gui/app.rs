//! The eframe app: which page is shown, the latest snapshot, the forms being edited, and what
//! closing the window means (hide to the tray; Quit ends the engine, then the window).
//!
//! With `screensaver = true` in the settings, the window also becomes the screensaver view: when
//! the machine goes idle after its owner was active (or after start-up), it is shown full screen
//! over everything, until the owner is back (a key, a click, a move beyond the jitter threshold,
//! or the engine's own input watch), and then goes back to how it was (hidden in the tray or not).

use std::sync::atomic::Ordering;

use eframe::egui;
use tokio::sync::{mpsc, watch};

use super::screensaver::{SaverState, screensaver_ui};
use super::settings_ui::SettingsPage;
use super::welcome_ui::WelcomePage;
use super::{FRAMES, label};
use crate::client::idle::{Busy, IdleState};
use crate::client::saverfeed::SaverFeed;
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
    /// The screensaver view, while it covers the window.
    pub(super) saver: Option<InAppSaver>,
    /// The saver ended; the window still has to leave full screen (and hide again if it was).
    saver_ended: Option<InAppSaver>,
}

/// The screensaver shown inside the client's own window.
pub(super) struct InAppSaver {
    state: SaverState,
    feed: SaverFeed,
    /// Whether the window was hidden in the tray before the saver showed it (`None` until the
    /// window has been told to go full screen).
    was_hidden: Option<bool>,
}

impl InAppSaver {
    fn new(s: &Snapshot) -> Self {
        Self {
            state: SaverState::new(),
            feed: SaverFeed::from_snapshot(s),
            was_hidden: None,
        }
    }
}

/// Whether the machine has just gone idle in the sense a screensaver means: the owner (or the
/// start-up quiet period) was what kept it busy. Other pauses ending (a snooze, the schedule, a
/// hot CPU) say nothing about whether anyone is at the screen.
fn owner_walked_away(before: &IdleState, now: &IdleState) -> bool {
    presence(before) == Presence::Owner && presence(now) == Presence::Away
}

/// What an idle state says about the screen's owner, for the screensaver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// The owner is active, or the client is still in its start-up quiet period.
    Owner,
    /// Nobody has been seen for the quiet period: the machine is idle.
    Away,
    /// Paused for something else (snooze, schedule, heat, battery, a program, a full screen).
    Other,
}

pub(super) fn presence(s: &IdleState) -> Presence {
    match s {
        IdleState::Idle => Presence::Away,
        IdleState::Busy(Busy::Owner(_) | Busy::Starting) => Presence::Owner,
        IdleState::Busy(_) => Presence::Other,
    }
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
            saver: None,
            saver_ended: None,
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
                let idle_before = self.snapshot.idle;
                self.snapshot = self.snapshots.borrow_and_update().clone();
                let configured = self.snapshot.connection != Connection::NotConfigured;
                if configured && !was_configured && self.page == Page::Welcome {
                    self.page = Page::Status;
                }
                self.follow_idle(idle_before);
            }
            Ok(false) => {}
            Err(_) => self.engine_ended = true,
        }
    }

    /// Starts the screensaver when the owner walks away (if the settings ask for it), ends it
    /// when the engine sees them back, and keeps its picture current.
    fn follow_idle(&mut self, before: IdleState) {
        let now = self.snapshot.idle;
        if matches!(now, IdleState::Busy(Busy::Owner(_))) {
            self.end_saver();
        } else if let Some(saver) = &mut self.saver {
            saver.feed = SaverFeed::from_snapshot(&self.snapshot);
        } else if self.snapshot.settings.screensaver
            && !self.quitting
            && owner_walked_away(&before, &now)
        {
            self.saver = Some(InAppSaver::new(&self.snapshot));
        }
    }

    fn end_saver(&mut self) {
        if let Some(saver) = self.saver.take() {
            self.saver_ended = Some(saver);
        }
    }

    /// Whether the screensaver view covers the window now.
    pub fn saver_showing(&self) -> bool {
        self.saver.is_some()
    }

    /// What the window must do for the screensaver: go full screen over everything when it
    /// starts, and back to how it was when it ends.
    fn follow_saver(&mut self, ctx: &egui::Context) {
        if let Some(saver) = &mut self.saver
            && saver.was_hidden.is_none()
        {
            saver.was_hidden = Some(super::window_hidden(ctx));
            super::show_window(ctx);
            ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(true));
            ctx.send_viewport_cmd(egui::ViewportCommand::WindowLevel(
                egui::WindowLevel::AlwaysOnTop,
            ));
        }
        if let Some(ended) = self.saver_ended.take() {
            ctx.send_viewport_cmd(egui::ViewportCommand::WindowLevel(
                egui::WindowLevel::Normal,
            ));
            ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(false));
            if ended.was_hidden == Some(true) {
                super::hide_window(ctx);
            }
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
        if let Some(saver) = &mut self.saver {
            if let Some(leave) = screensaver_ui(ui, &saver.feed, &mut saver.state) {
                // The owner is back: the engine pauses at once and tells the supervisor.
                let _ = self.commands.send(UiCommand::OwnerReturned(leave.kind));
                self.end_saver();
                ui.ctx().request_repaint();
            }
            return;
        }
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
                    super::hide_window(ui.ctx());
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
    /// Runs before each frame, and alone while the window is hidden (eframe paints nothing
    /// then): the screensaver can start, and Quit can end the window, from the tray.
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.refresh();
        self.follow_saver(ctx);
        if self.engine_ended {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        FRAMES.fetch_add(1, Ordering::Relaxed);
        let ctx = ui.ctx().clone();
        if ctx.input(|i| i.viewport().close_requested()) && !self.engine_ended {
            // Close to tray: the engine and the tray keep running. Without a tray, closing is
            // the only way out, so it quits.
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            if self.tray_running {
                super::hide_window(&ctx);
            } else {
                self.quit();
            }
        }
        self.body_ui(ui);
        self.follow_saver(&ctx);
        if self.engine_ended {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}
