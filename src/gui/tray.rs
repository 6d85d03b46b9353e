//! The tray icon: a StatusNotifierItem (ksni, over D-Bus) on Linux, with the state's icon, the
//! same words as the window's header as its tooltip, and a menu (Open, Snooze, Resume, Quit).
//!
//! The icon and its menu live on a thread of their own, which follows the snapshots, so the
//! tray keeps working while the window is closed. Menu choices become [`UiCommand`]s (or, for
//! Open, a viewport command to the window); the tray never touches the engine otherwise.

use std::time::SystemTime;

use eframe::egui;
use tokio::sync::{mpsc, watch};
use tray_icon::menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{TrayIconBuilder, TrayIconEvent};

use super::label::{TrayState, state_label, tray_state};
use super::{Snooze, icons};
use crate::client::snapshot::{Snapshot, UiCommand};

/// Starts the tray. `Ok(None)`: shown. `Ok(Some(why))`: running, but nobody shows it (no tray
/// host on the bus). `Err(why)`: no tray at all (no session bus).
pub fn start(
    snapshots: watch::Receiver<Snapshot>,
    commands: mpsc::UnboundedSender<UiCommand>,
    ctx: egui::Context,
    runtime: tokio::runtime::Handle,
) -> Result<Option<String>, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tray".into())
        .spawn(move || run(snapshots, commands, ctx, runtime, ready_tx))
        .map_err(|e| format!("cannot start the tray thread: {e}"))?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err("the tray thread ended".into()))
}

fn icon(state: TrayState) -> Option<tray_icon::Icon> {
    let rgba = icons::decode(icons::tray_png(state)).ok()?;
    tray_icon::Icon::from_rgba(rgba.pixels, rgba.width, rgba.height).ok()
}

fn tooltip(s: &Snapshot) -> String {
    let (title, reason) = state_label(s, SystemTime::now());
    format!("idlegrid: {title} — {reason}")
}

fn run(
    mut snapshots: watch::Receiver<Snapshot>,
    commands: mpsc::UnboundedSender<UiCommand>,
    ctx: egui::Context,
    runtime: tokio::runtime::Handle,
    ready: std::sync::mpsc::Sender<Result<Option<String>, String>>,
) {
    let open = MenuItem::new("Open idlegrid", true, None);
    let snooze_1h = MenuItem::new("Snooze 1 h", true, None);
    let snooze_3h = MenuItem::new("Snooze 3 h", true, None);
    let snooze_tomorrow = MenuItem::new("Snooze until tomorrow", true, None);
    let resume = MenuItem::new("Resume", true, None);
    let quit = MenuItem::new("Quit", true, None);
    let menu = Menu::new();
    let built = menu.append_items(&[
        &open,
        &PredefinedMenuItem::separator(),
        &snooze_1h,
        &snooze_3h,
        &snooze_tomorrow,
        &resume,
        &PredefinedMenuItem::separator(),
        &quit,
    ]);
    if let Err(e) = built {
        let _ = ready.send(Err(format!("cannot build the tray menu: {e}")));
        return;
    }
    let first = snapshots.borrow_and_update().clone();
    let mut shown = tray_state(&first);
    let tray = TrayIconBuilder::new()
        .with_id("idlegrid")
        .with_title("idlegrid")
        .with_tooltip(tooltip(&first))
        .with_menu(Box::new(menu))
        .with_menu_on_left_click(false);
    let tray = match icon(shown) {
        Some(i) => tray.with_icon(i),
        None => tray,
    };
    let tray = match tray.build() {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(format!("no tray icon ({e})")));
            return;
        }
    };

    let ids = [
        (open.id().clone(), Choice::Open),
        (snooze_1h.id().clone(), Choice::Snooze(Snooze::OneHour)),
        (snooze_3h.id().clone(), Choice::Snooze(Snooze::ThreeHours)),
        (
            snooze_tomorrow.id().clone(),
            Choice::Snooze(Snooze::UntilTomorrow),
        ),
        (resume.id().clone(), Choice::Resume),
        (quit.id().clone(), Choice::Quit),
    ];
    {
        let (commands, ctx) = (commands.clone(), ctx.clone());
        MenuEvent::set_event_handler(Some(move |e: MenuEvent| {
            if let Some((_, choice)) = ids.iter().find(|(id, _)| *id == e.id) {
                choose(*choice, &commands, &ctx);
            }
        }));
    }
    {
        let ctx = ctx.clone();
        TrayIconEvent::set_event_handler(Some(move |e: TrayIconEvent| {
            if let TrayIconEvent::DoubleClick { .. } | TrayIconEvent::Click { .. } = e {
                super::show_window(&ctx);
            }
        }));
    }
    let _ = ready.send(Ok(runtime.block_on(host_missing())));

    // Follow the engine until it ends (Quit): then the icon goes away with this thread.
    while runtime.block_on(snapshots.changed()).is_ok() {
        let s = snapshots.borrow_and_update().clone();
        let state = tray_state(&s);
        if state != shown {
            shown = state;
            let _ = tray.set_icon(icon(state));
        }
        let _ = tray.set_tooltip(Some(tooltip(&s)));
    }
    drop(tray);
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Open,
    Snooze(Snooze),
    Resume,
    Quit,
}

fn choose(choice: Choice, commands: &mpsc::UnboundedSender<UiCommand>, ctx: &egui::Context) {
    let cmd = match choice {
        Choice::Open => return super::show_window(ctx),
        Choice::Snooze(s) => UiCommand::SnoozeUntil(s.until(SystemTime::now())),
        Choice::Resume => UiCommand::Resume,
        Choice::Quit => UiCommand::Quit,
    };
    let _ = commands.send(cmd);
    ctx.request_repaint();
}

#[cfg(not(target_os = "linux"))]
async fn host_missing() -> Option<String> {
    None
}

/// Why nobody shows the icon, if nobody does: no StatusNotifierWatcher (the tray host of KDE,
/// of GNOME's AppIndicator extension, of most panels) owns its name on the session bus.
#[cfg(target_os = "linux")]
async fn host_missing() -> Option<String> {
    const WATCHER: &str = "org.kde.StatusNotifierWatcher";
    let conn = match zbus::Connection::session().await {
        Ok(c) => c,
        Err(e) => return Some(format!("no session bus ({e})")),
    };
    let proxy = match zbus::fdo::DBusProxy::new(&conn).await {
        Ok(p) => p,
        Err(e) => return Some(format!("cannot ask the session bus ({e})")),
    };
    let name = zbus::names::BusName::try_from(WATCHER).ok()?;
    match proxy.name_has_owner(name).await {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "no tray host on this desktop (nothing owns {WATCHER}; on GNOME, enable the AppIndicator extension)"
        )),
        Err(e) => Some(format!("cannot ask the session bus ({e})")),
    }
}
