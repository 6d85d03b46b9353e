//! The desktop client's window and tray icon (feature `gui`).
//!
//! The GUI only renders: it reads [`Snapshot`]s from the engine's watch channel and sends
//! [`UiCommand`]s back. It never reads a file, a socket or the settings itself; a thread of its
//! own wakes it when a snapshot changes (no continuous repaint). `app` is the eframe app and its
//! pages (`status_ui`, `settings_ui`, `welcome_ui`), `label` the words for a state (shared with
//! the tray), `tray` the StatusNotifierItem, `icons` the embedded artwork, `form` the settings
//! form. [`start_engine`] is the one seam between this and the engine.

mod app;
mod chart;
pub mod form;
pub mod icons;
pub mod label;
pub mod screensaver;
mod settings_ui;
mod status_ui;
#[cfg(test)]
mod tests;
mod tray;
mod welcome_ui;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use eframe::egui;
use tokio::sync::watch;

pub use app::{App, Page};

use crate::client::settings::Settings;
use crate::client::snapshot::{EngineHandle, Snapshot};
use crate::client::{self, ClientConfig, Watch};

/// Frames the window has drawn (for `idlegrid bench footprint --gui`).
pub static FRAMES: AtomicU64 = AtomicU64::new(0);

/// How the window starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The page shown first (default: status, or welcome when not configured).
    pub page: Option<Page>,
    /// Start in the tray with the window closed.
    pub hidden: bool,
    /// Write the number of frames drawn to this file once a second (benchmarks).
    pub count_frames: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuiError {
    #[error("cannot open the window: {0}")]
    Window(String),
}

/// Whether a display to open a window on is there: a Wayland socket named, or an X server that
/// accepts a connection.
pub fn display_available() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|d| !d.is_empty());
    if set("WAYLAND_DISPLAY") {
        return true;
    }
    set("DISPLAY") && x11rb::connect(None).is_ok()
}

/// Snooze choices of the window and the tray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snooze {
    OneHour,
    ThreeHours,
    /// Until 08:00 local time the next day.
    UntilTomorrow,
}

impl Snooze {
    pub fn until(self, now: SystemTime) -> SystemTime {
        match self {
            Snooze::OneHour => now + Duration::from_secs(3600),
            Snooze::ThreeHours => now + Duration::from_secs(3 * 3600),
            Snooze::UntilTomorrow => {
                let l = client::localtime::local(now);
                let since_midnight = u64::from(l.minute_of_day()) * 60 + u64::from(l.second);
                now + Duration::from_secs(24 * 3600 - since_midnight + 8 * 3600)
            }
        }
    }
}

/// Where the context keeps whether this code hid the window (egui's viewport info does not say).
fn hidden_id() -> egui::Id {
    egui::Id::unique("idlegrid-window-hidden")
}

/// Shows the window (from the tray), wherever it was hidden.
pub(crate) fn show_window(ctx: &egui::Context) {
    ctx.data_mut(|d| d.insert_temp(hidden_id(), false));
    ctx.send_viewport_cmd(egui::ViewportCommand::Visible(true));
    ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
    ctx.request_repaint();
}

/// Hides the window into the tray.
pub(crate) fn hide_window(ctx: &egui::Context) {
    ctx.data_mut(|d| d.insert_temp(hidden_id(), true));
    ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
}

/// Whether the window is hidden in the tray.
pub(crate) fn window_hidden(ctx: &egui::Context) -> bool {
    ctx.data(|d| d.get_temp(hidden_id())).unwrap_or(false)
}

/// Runs the window and the tray on this (the main) thread until the engine has ended (Quit).
pub fn run(
    runtime: &tokio::runtime::Handle,
    engine: EngineHandle,
    options: Options,
) -> Result<(), GuiError> {
    let icon = icons::decode(icons::app_png())
        .ok()
        .map(|i| egui::IconData {
            rgba: i.pixels,
            width: i.width,
            height: i.height,
        });
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("idlegrid")
        .with_app_id("idlegrid")
        .with_inner_size([720.0, 640.0])
        .with_min_inner_size([420.0, 360.0]);
    if let Some(icon) = icon {
        viewport = viewport.with_icon(Arc::new(icon));
    }
    let native = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        // Tests run the binary from `cargo test`'s threads; the real client calls from main.
        event_loop_builder: Some(Box::new(|b| {
            #[cfg(target_os = "linux")]
            {
                use winit::platform::x11::EventLoopBuilderExtX11;
                b.with_any_thread(true);
            }
            let _ = b;
        })),
        ..Default::default()
    };
    let rt = runtime.clone();
    eframe::run_native(
        "idlegrid",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            wake_on_change(engine.snapshots.clone(), ctx.clone(), rt.clone());
            if let Some(path) = options.count_frames.clone() {
                count_frames(path);
            }
            let tray = tray::start(
                engine.snapshots.clone(),
                engine.commands.clone(),
                ctx.clone(),
                rt.clone(),
            );
            let tray_problem = match tray {
                Ok(None) => None,
                Ok(Some(why)) | Err(why) => {
                    tracing::warn!("tray icon not shown: {why}; the window stays the way in");
                    Some(why)
                }
            };
            let tray_running = !matches!(tray_problem_kind(&tray_problem), TrayKind::None);
            let mut app = App::new(engine, options.page);
            app.set_tray(tray_problem, tray_running);
            if options.hidden && tray_running {
                hide_window(&ctx);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| GuiError::Window(e.to_string()))
}

enum TrayKind {
    None,
    Some,
}

// A tray without a host still runs (a host may come later); only a failed build has none.
fn tray_problem_kind(p: &Option<String>) -> TrayKind {
    match p {
        Some(why) if why.starts_with("no tray icon") || why.starts_with("cannot") => TrayKind::None,
        _ => TrayKind::Some,
    }
}

/// Wakes the window whenever the engine publishes a snapshot, and once more when it ends.
///
/// While the window is hidden in the tray, only a change of the owner's presence wakes it (the
/// screensaver may have to start). On X11, eframe cannot tell that a window is hidden and would
/// paint every wake-up into it: with the owner at work, the engine publishes about once a second
/// (the last activity moves on), which cost a hidden client 2-3% of a core.
fn wake_on_change(
    mut snapshots: watch::Receiver<Snapshot>,
    ctx: egui::Context,
    rt: tokio::runtime::Handle,
) {
    let _ = std::thread::Builder::new()
        .name("gui-wake".into())
        .spawn(move || {
            let mut seen = app::presence(&snapshots.borrow().idle);
            while rt.block_on(snapshots.changed()).is_ok() {
                let now = app::presence(&snapshots.borrow_and_update().idle);
                if !window_hidden(&ctx) || now != seen {
                    ctx.request_repaint();
                }
                seen = now;
            }
            ctx.request_repaint();
        });
}

fn count_frames(path: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("gui-frames".into())
        .spawn(move || {
            loop {
                let _ = std::fs::write(&path, FRAMES.load(Ordering::Relaxed).to_string());
                std::thread::sleep(Duration::from_millis(250));
            }
        });
}

/// What the engine needs to start. Without a supervisor (first run) the engine still runs, shows
/// `Connection::NotConfigured`, and the welcome page configures it.
pub struct Launch {
    pub settings: Settings,
    /// Where settings are saved (the `--config` file, else the default path).
    pub settings_path: Option<PathBuf>,
    pub config: ClientConfig,
    pub watch: Watch,
}

/// Starts the engine on `runtime`; the returned task ends once it has stopped (after Quit, or a
/// signal), having handed its work back.
pub fn start_engine(
    runtime: &tokio::runtime::Handle,
    launch: Launch,
) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), client::ClientError> {
    let engine = runtime
        .block_on(client::build(launch.config, launch.watch))?
        .with_settings(launch.settings, launch.settings_path);
    let handle = engine.handle();
    let task = runtime.spawn(async move {
        if let Err(e) = engine.run(crate::shutdown_signal()).await {
            tracing::error!("the engine stopped: {e}");
        }
    });
    Ok((handle, task))
}
