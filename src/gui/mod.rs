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
use std::time::{Duration, Instant, SystemTime};

use eframe::egui;
use tokio::sync::{mpsc, watch};

pub use app::{App, Page};

use crate::client::idle::IdleState;
use crate::client::settings::{self, Settings};
use crate::client::snapshot::{
    CapacityView, Connection, Contribution, EngineHandle, Event, EventView, FieldError,
    PauseDetail, SettingsResult, Snapshot, UiCommand,
};
use crate::client::{self, ClientConfig, DataDir, Status, Watch};

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

/// Shows the window (from the tray), wherever it was hidden.
pub(crate) fn show_window(ctx: &egui::Context) {
    ctx.send_viewport_cmd(egui::ViewportCommand::Visible(true));
    ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
    ctx.request_repaint();
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
                ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
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
fn wake_on_change(
    mut snapshots: watch::Receiver<Snapshot>,
    ctx: egui::Context,
    rt: tokio::runtime::Handle,
) {
    let _ = std::thread::Builder::new()
        .name("gui-wake".into())
        .spawn(move || {
            while rt.block_on(snapshots.changed()).is_ok() {
                ctx.request_repaint();
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

/// What the engine needs to start, now or once the welcome page has configured a supervisor.
pub struct Launch {
    pub settings: Settings,
    /// Where settings are saved (the `--config` file, else the default path).
    pub settings_path: Option<PathBuf>,
    /// Ready to connect, or `None` on first run.
    pub config: Option<ClientConfig>,
    pub name: String,
    pub data_dir: PathBuf,
    pub slots: u32,
}

// ---------------------------------------------------------------------------------------------
// THE ENGINE SEAM. The lead replaces the body of `start_engine` with helper B's
// `Engine::handle()`; nothing else in `gui/` knows how snapshots are made. Until then this
// adapts the current engine's `Status` watch into snapshots as far as it says (no per-task
// views, no contribution), and answers the commands it can (settings are saved, applied at the
// next start; snoozes are recorded but do not pause the old engine).
// ---------------------------------------------------------------------------------------------

/// Starts the engine on `runtime`; the returned task ends once it has stopped (after Quit, or a
/// signal), having handed its work back.
pub fn start_engine(
    runtime: &tokio::runtime::Handle,
    launch: Launch,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let first = first_snapshot(&launch);
    let (tx, snapshots) = watch::channel(first);
    let (commands, rx) = mpsc::unbounded_channel();
    let task = runtime.spawn(adapt(launch, tx, rx));
    (
        EngineHandle {
            snapshots,
            commands,
        },
        task,
    )
}

fn first_snapshot(l: &Launch) -> Snapshot {
    Snapshot {
        taken: Instant::now(),
        supervisor: l.config.as_ref().map(|c| c.server.clone()),
        worker_id: l.config.as_ref().map(|c| c.worker_id.clone()),
        name: l.name.clone(),
        connection: if l.config.is_some() {
            Connection::Connecting
        } else {
            Connection::NotConfigured
        },
        idle: IdleState::Busy(client::idle::Busy::Starting),
        idle_in: None,
        detail: PauseDetail::default(),
        tasks: Vec::new(),
        outbox: 0,
        contribution: Contribution::default(),
        capacity: CapacityView {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            slots: l.slots,
            ..CapacityView::default()
        },
        events: Vec::new(),
        sources: Vec::new(),
        source_problems: Vec::new(),
        last_activity: None,
        paused_at: None,
        settings: Arc::new(l.settings.clone()),
        settings_path: l.settings_path.clone(),
        settings_result: None,
        tiles: Vec::new(),
    }
}

fn push_event(s: &mut Snapshot, what: Event) {
    s.events.push(EventView {
        at: SystemTime::now(),
        what,
    });
    let extra = s
        .events
        .len()
        .saturating_sub(crate::client::snapshot::MAX_EVENTS);
    s.events.drain(..extra);
}

fn refused(key: Option<&'static str>, message: String) -> SettingsResult {
    SettingsResult::Refused(vec![FieldError { key, message }])
}

async fn adapt(
    mut launch: Launch,
    tx: watch::Sender<Snapshot>,
    mut rx: mpsc::UnboundedReceiver<UiCommand>,
) {
    let mut snap = tx.borrow().clone();
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    // Only what a person could see changing wakes the window: the old engine republishes its
    // status without change.
    let publish = |snap: &mut Snapshot| {
        let same = {
            let last = tx.borrow();
            Snapshot {
                taken: last.taken,
                ..snap.clone()
            } == *last
        };
        if !same {
            snap.taken = Instant::now();
            tx.send_replace(snap.clone());
        }
    };
    let cfg = loop {
        if let Some(cfg) = launch.config.take() {
            break cfg;
        }
        let cmd = tokio::select! {
            c = rx.recv() => c,
            _ = &mut signal => None,
        };
        match cmd {
            None | Some(UiCommand::Quit) => return,
            Some(UiCommand::Configure { server, token }) => {
                snap.settings_result = Some(SettingsResult::Checking);
                publish(&mut snap);
                let result = configure(&mut launch, &server, &token).await;
                snap.settings_result = Some(match result {
                    Ok(()) => SettingsResult::Saved,
                    Err(r) => r,
                });
                snap.settings = Arc::new(launch.settings.clone());
                snap.settings_path = launch.settings_path.clone();
                publish(&mut snap);
            }
            Some(other) => {
                common_command(&mut launch, &mut snap, other).await;
                publish(&mut snap);
            }
        }
    };
    snap.supervisor = Some(cfg.server.clone());
    snap.worker_id = Some(cfg.worker_id.clone());
    snap.connection = Connection::Connecting;
    snap.capacity.slots = cfg.slots;
    publish(&mut snap);
    let slots = cfg.slots;
    if let Ok(hw) =
        tokio::task::spawn_blocking(move || client::hardware::detect(slots, &std::env::temp_dir()))
            .await
    {
        snap.capacity = CapacityView {
            cores: hw.cores,
            slots: hw.slots,
            memory_mb: hw.memory_mb,
            disk_mb: hw.disk_mb,
            bench_mops: hw.bench_mops,
        };
    }
    let engine = match client::build(cfg, Watch::from_settings(&launch.settings)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot start the engine: {e}");
            snap.connection = Connection::Disconnected {
                why: format!("cannot start: {e}"),
                retry_in: Duration::from_secs(3600),
            };
            publish(&mut snap);
            while let Some(cmd) = rx.recv().await {
                if cmd == UiCommand::Quit {
                    return;
                }
            }
            return;
        }
    };
    let mut status = engine.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(engine.run(async {
        let _ = stopped.await;
    }));
    let mut last = Status::default();
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = status.borrow_and_update().clone();
                apply_status(&mut snap, &last, &now);
                last = now;
                publish(&mut snap);
            }
            cmd = rx.recv() => match cmd {
                None | Some(UiCommand::Quit) => break,
                Some(other) => {
                    common_command(&mut launch, &mut snap, other).await;
                    publish(&mut snap);
                }
            },
            _ = &mut signal => break,
        }
    }
    let _ = stop.send(());
    match run.await {
        Ok(Err(e)) => tracing::error!("engine: {e}"),
        Err(e) => tracing::error!("engine task: {e}"),
        Ok(Ok(())) => {}
    }
}

fn apply_status(snap: &mut Snapshot, before: &Status, now: &Status) {
    snap.connection = if let Some(why) = &now.refused {
        Connection::Refused {
            why: why.clone(),
            retry_in: now.retry_in.unwrap_or_default(),
        }
    } else if now.connected {
        Connection::Connected {
            heartbeat: Duration::from_secs(1),
        }
    } else if let Some(why) = &now.last_error {
        Connection::Disconnected {
            why: why.clone(),
            retry_in: now.retry_in.unwrap_or_default(),
        }
    } else {
        Connection::Connecting
    };
    if now.connected && !before.connected {
        push_event(snap, Event::Connected);
    }
    if !now.connected && before.connected {
        push_event(
            snap,
            Event::Disconnected(now.last_error.clone().unwrap_or_default()),
        );
    }
    if now.refused.is_some() && now.refused != before.refused {
        push_event(
            snap,
            Event::Refused(now.refused.clone().unwrap_or_default()),
        );
    }
    if now.idle != before.idle {
        match now.idle {
            IdleState::Idle => push_event(snap, Event::Resumed),
            IdleState::Busy(b) if b != client::idle::Busy::Starting => {
                push_event(snap, Event::Paused(b))
            }
            IdleState::Busy(_) => {}
        }
    }
    snap.idle = now.idle;
    snap.outbox = now.outbox;
    snap.sources = now.sources.clone();
    snap.source_problems = now.source_problems.clone();
    snap.last_activity = now.last_activity;
    snap.paused_at = now.paused_at;
}

/// Commands the old engine cannot act on itself.
async fn common_command(launch: &mut Launch, snap: &mut Snapshot, cmd: UiCommand) {
    match cmd {
        UiCommand::SnoozeUntil(until) => {
            snap.detail.snoozed_until = Some(until);
            push_event(snap, Event::Snoozed { until });
        }
        UiCommand::Resume => {
            snap.detail.snoozed_until = None;
            push_event(snap, Event::Resumed);
        }
        UiCommand::ApplySettings(new) => {
            let Some(path) = launch.settings_path.clone() else {
                snap.settings_result = Some(refused(
                    None,
                    "this system names no config directory; start with --config FILE".into(),
                ));
                return;
            };
            let to_save = (*new).clone();
            let saved = tokio::task::spawn_blocking(move || settings::save(&path, &to_save)).await;
            snap.settings_result = Some(match saved {
                Ok(Ok(())) => {
                    launch.settings = *new;
                    snap.settings = Arc::new(launch.settings.clone());
                    push_event(snap, Event::SettingsApplied);
                    SettingsResult::Saved
                }
                Ok(Err(e)) => refused(None, format!("cannot write the settings file: {e}")),
                Err(e) => refused(None, format!("cannot write the settings file: {e}")),
            });
        }
        UiCommand::Configure { .. } => {
            snap.settings_result = Some(refused(None, "a supervisor is configured already".into()));
        }
        UiCommand::OwnerReturned(_) | UiCommand::Quit => {}
    }
}

/// First run: checks the server answers, writes the token beside the settings file, saves the
/// settings naming both, and readies the engine's configuration.
async fn configure(launch: &mut Launch, server: &str, token: &str) -> Result<(), SettingsResult> {
    let server = server.trim();
    let token = token.trim();
    client::check_server_url(server).map_err(|e| refused(Some("server"), e.to_string()))?;
    if token.is_empty() {
        return Err(refused(
            Some("token"),
            "paste the token the pool's operator gave you".into(),
        ));
    }
    let reach = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(server),
    )
    .await;
    match reach {
        Ok(Ok((mut ws, _))) => {
            let _ = ws.close(None).await;
        }
        Ok(Err(e)) => {
            return Err(refused(
                Some("server"),
                format!("cannot reach {server}: {e}"),
            ));
        }
        Err(_) => {
            return Err(refused(
                Some("server"),
                format!("{server} did not answer within 5 s"),
            ));
        }
    }
    let Some(path) = launch.settings_path.clone() else {
        return Err(refused(
            None,
            "this system names no config directory; start with --config FILE".into(),
        ));
    };
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let token_file = dir.join("worker.token");
    let mut new = launch.settings.clone();
    new.server = Some(server.to_owned());
    new.token_file = Some(token_file.clone());
    let (token_owned, settings_copy) = (token.to_owned(), new.clone());
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        write_private(&token_file, &token_owned)?;
        settings::save(&path, &settings_copy)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(refused(None, format!("cannot save: {e}"))),
        Err(e) => return Err(refused(None, format!("cannot save: {e}"))),
    }
    let data =
        DataDir::open(&launch.data_dir, &launch.name).map_err(|e| refused(None, e.to_string()))?;
    launch.settings = new;
    launch.config = Some(ClientConfig {
        server: server.to_owned(),
        token: token.to_owned(),
        worker_id: data.worker_id().clone(),
        name: launch.name.clone(),
        slots: launch.settings.cpus.unwrap_or(launch.slots),
        data_dir: Some(data),
    });
    Ok(())
}

/// A file only its owner may read (the token is a secret).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}
