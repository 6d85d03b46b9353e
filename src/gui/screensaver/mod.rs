//! The screensaver view: the work this machine does, full screen, until the owner comes back.
//!
//! [`screensaver_ui`] paints a [`SaverFeed`] (the Mandelbrot image filling in as tiles complete;
//! progress rings per slot for other kinds; tasks done and CPU time given) and says when to
//! leave: on a key, a click, a touch, or a pointer move beyond [`JITTER_PX`] from where the
//! pointer first was. Leaving counts as owner activity: the caller sends
//! `UiCommand::OwnerReturned(leave.kind)`.
//!
//! Three ways to run it:
//! - inside the client's own window code, calling [`screensaver_ui`] each frame;
//! - [`run_fullscreen`]: its own fullscreen eframe viewport (`idlegrid --screensaver`), fed by an
//!   in-process engine or by the feed a running client publishes into its data dir;
//! - [`xhack::run_xhack`]: an xscreensaver hack that software-renders ([`render`]) into the
//!   window xscreensaver gives it.
//!
//! On Windows a screensaver is an `.scr` started with `/s`, `/c` or `/p HWND`:
//! [`WindowsMode::parse`] maps those to the modes above. This module only renders: the feed comes
//! in, a [`Leave`] goes out.

pub mod render;
#[cfg(unix)]
pub mod xhack;

#[cfg(unix)]
pub use xhack::{XTarget, run_xhack};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use crate::client::saverfeed::{FeedReader, SaverFeed};
use crate::client::snapshot::{EngineHandle, UiCommand};
use crate::proto::ActivityKind;
use render::{Align, Layout};

/// Pointer moves closer than this to where the pointer first was are jitter (a desk knocked, an
/// optical mouse drifting), not the owner.
pub const JITTER_PX: f32 = 8.0;

/// The owner came back: leave the screensaver and report activity of this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leave {
    pub kind: ActivityKind,
}

/// What the view keeps between frames.
#[derive(Default)]
pub struct SaverState {
    /// Where the pointer was first seen.
    origin: Option<egui::Pos2>,
    /// The image's texture, and what it shows.
    texture: Option<(ImageKey, egui::TextureHandle)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageKey {
    job: String,
    width: u32,
    height: u32,
    rows_filled: u32,
    sample: u64,
}

impl ImageKey {
    fn of(img: &crate::client::saverfeed::FeedImage) -> Self {
        // A sparse sum: tiles only ever add rows, which `rows_filled` catches; the sample catches
        // a different job's image of the same size and fill.
        let sample = img
            .rgba
            .iter()
            .step_by(997)
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        Self {
            job: img.job.clone(),
            width: img.width,
            height: img.height,
            rows_filled: img.rows_filled,
            sample,
        }
    }
}

impl SaverState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the leave rule to this frame's input events.
    pub fn leave_on(&mut self, events: &[egui::Event]) -> Option<Leave> {
        for e in events {
            let kind = match e {
                egui::Event::Key { pressed: true, .. } | egui::Event::Text(_) => {
                    Some(ActivityKind::Keyboard)
                }
                egui::Event::PointerButton { pressed: true, .. }
                | egui::Event::MouseWheel { .. } => Some(ActivityKind::Mouse),
                egui::Event::Touch { .. } => Some(ActivityKind::Touch),
                egui::Event::PointerMoved(p) => match self.origin {
                    None => {
                        self.origin = Some(*p);
                        None
                    }
                    Some(o) if o.distance(*p) > JITTER_PX => Some(ActivityKind::Mouse),
                    Some(_) => None,
                },
                _ => None,
            };
            if let Some(kind) = kind {
                return Some(Leave { kind });
            }
        }
        None
    }
}

fn colour([r, g, b]: [u8; 3]) -> egui::Color32 {
    egui::Color32::from_rgb(r, g, b)
}

/// Paints the screensaver over all of `ui` and hides the cursor. Returns `Some` when the owner
/// is back; the caller then sends `UiCommand::OwnerReturned(leave.kind)` and stops showing it.
pub fn screensaver_ui(
    ui: &mut egui::Ui,
    feed: &SaverFeed,
    state: &mut SaverState,
) -> Option<Leave> {
    let events = ui.input(|i| i.events.clone());
    let leave = state.leave_on(&events);
    ui.ctx().set_cursor_icon(egui::CursorIcon::None);
    let full = ui.max_rect();
    let painter = ui.painter_at(full);
    let layout = Layout::new(feed, full.width(), full.height());
    let at = |x: f32, y: f32| egui::pos2(full.min.x + x, full.min.y + y);
    painter.rect_filled(full, 0.0, colour(render::BACKGROUND));

    if let (Some(rect), Some(img)) = (layout.image, &feed.image) {
        let key = ImageKey::of(img);
        if state.texture.as_ref().map(|(k, _)| k) != Some(&key) {
            let image = egui::ColorImage::from_rgba_unmultiplied(
                [img.width as usize, img.height as usize],
                &img.rgba,
            );
            let tex =
                ui.ctx()
                    .load_texture("screensaver-image", image, egui::TextureOptions::NEAREST);
            state.texture = Some((key, tex));
        }
        let r = egui::Rect::from_min_size(at(rect.x, rect.y), egui::vec2(rect.w, rect.h));
        painter.rect_filled(r, 0.0, colour(render::IMAGE_EMPTY));
        if let Some((_, tex)) = &state.texture {
            painter.image(
                tex.id(),
                r,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                egui::Color32::WHITE,
            );
        }
    } else {
        state.texture = None;
    }

    for ring in &layout.rings {
        let centre = at(ring.cx, ring.cy);
        painter.circle_stroke(
            centre,
            ring.r,
            egui::Stroke::new(ring.thickness, colour(render::RING_TRACK)),
        );
        let sweep = ring.progress.clamp(0.0, 1.0) * std::f32::consts::TAU;
        if sweep > 0.0 {
            let steps = ((sweep / std::f32::consts::TAU) * 96.0).ceil().max(2.0) as usize;
            let points: Vec<egui::Pos2> = (0..=steps)
                .map(|i| {
                    let a = sweep * i as f32 / steps as f32;
                    centre + egui::vec2(a.sin(), -a.cos()) * ring.r
                })
                .collect();
            let done = if ring.paused {
                render::RING_PAUSED
            } else {
                render::RING_DONE
            };
            painter.add(egui::Shape::line(
                points,
                egui::Stroke::new(ring.thickness, colour(done)),
            ));
        }
    }

    for t in &layout.texts {
        let anchor = match t.align {
            Align::Left => egui::Align2::LEFT_TOP,
            Align::Center => egui::Align2::CENTER_TOP,
        };
        painter.text(
            at(t.x, t.y),
            anchor,
            &t.text,
            egui::FontId::proportional(t.size),
            colour(t.colour),
        );
    }
    // Claim the whole screen so that clicks land here, not on anything behind.
    ui.allocate_rect(full, egui::Sense::click());
    leave
}

/// Where [`run_fullscreen`] gets its feed.
pub enum FeedSource {
    /// An engine in this process: its snapshots, and its commands for `OwnerReturned`.
    Engine(EngineHandle),
    /// The feed a client running elsewhere publishes into its data dir
    /// (`client::saverfeed::publish`); read about once a second.
    DataDir(PathBuf),
}

/// Options of [`run_fullscreen`].
#[derive(Debug, Clone)]
pub struct FullscreenOptions {
    /// Ask for a fullscreen window (a window manager makes it so); off, a plain 1024x768 window.
    pub fullscreen: bool,
    /// Let the event loop run off the main thread (tests under `cargo test`).
    pub any_thread: bool,
}

impl Default for FullscreenOptions {
    fn default() -> Self {
        Self {
            fullscreen: true,
            any_thread: false,
        }
    }
}

/// How often a data-dir feed is read again, and how often the view repaints without input.
const FEED_POLL: Duration = Duration::from_millis(1000);
const REPAINT: Duration = Duration::from_millis(250);

struct FullscreenApp {
    source: FeedSource,
    reader: Option<FeedReader>,
    feed: SaverFeed,
    read_at: Option<Instant>,
    state: SaverState,
    left: std::sync::Arc<std::sync::Mutex<Option<Leave>>>,
}

impl FullscreenApp {
    fn refresh(&mut self) {
        match &mut self.source {
            FeedSource::Engine(handle) => {
                if handle.snapshots.has_changed().unwrap_or(false) || self.read_at.is_none() {
                    self.feed = SaverFeed::from_snapshot(&handle.snapshots.borrow_and_update());
                    self.read_at = Some(Instant::now());
                }
            }
            FeedSource::DataDir(dir) => {
                if self.read_at.is_none_or(|t| t.elapsed() >= FEED_POLL) {
                    let reader = self
                        .reader
                        .get_or_insert_with(|| FeedReader::new(dir.clone()));
                    self.feed = reader.poll();
                    if let Some(e) = &reader.last_error {
                        tracing::debug!("screensaver feed: {e}");
                    }
                    self.read_at = Some(Instant::now());
                }
            }
        }
    }
}

impl eframe::App for FullscreenApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.refresh();
        if let Some(leave) = screensaver_ui(ui, &self.feed, &mut self.state) {
            if let FeedSource::Engine(handle) = &self.source {
                let _ = handle.commands.send(UiCommand::OwnerReturned(leave.kind));
            }
            if let Ok(mut left) = self.left.lock() {
                left.get_or_insert(leave);
            }
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ui.ctx().request_repaint_after(REPAINT);
    }
}

/// Runs the screensaver in its own fullscreen viewport until the owner comes back, and returns
/// how they did (`None` when the window was closed otherwise). With [`FeedSource::Engine`] the
/// `OwnerReturned` command has already been sent when this returns; with a data-dir feed the
/// running client notices the owner through its own input watch.
///
/// Blocks the calling thread (the main thread, unless `opts.any_thread`); one per process.
pub fn run_fullscreen(
    source: FeedSource,
    opts: FullscreenOptions,
) -> Result<Option<Leave>, eframe::Error> {
    let left = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("idlegrid screensaver")
        .with_decorations(false);
    viewport = if opts.fullscreen {
        viewport.with_fullscreen(true)
    } else {
        viewport.with_inner_size([1024.0, 768.0])
    };
    let mut native = eframe::NativeOptions {
        viewport,
        ..Default::default()
    };
    if opts.any_thread {
        native.event_loop_builder = Some(Box::new(|builder| {
            #[cfg(all(unix, not(target_os = "macos")))]
            {
                use winit::platform::x11::EventLoopBuilderExtX11;
                builder.with_any_thread(true);
            }
            #[cfg(not(all(unix, not(target_os = "macos"))))]
            let _ = builder;
        }));
    }
    let app = FullscreenApp {
        source,
        reader: None,
        feed: SaverFeed::not_running(),
        read_at: None,
        state: SaverState::new(),
        left: left.clone(),
    };
    eframe::run_native(
        "idlegrid screensaver",
        native,
        Box::new(move |_cc| Ok(Box::new(app))),
    )?;
    let leave = left.lock().ok().and_then(|l| *l);
    Ok(leave)
}

/// How Windows starts a screensaver (`.scr`): the arguments, per Microsoft's convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowsMode {
    /// `/s`: run full screen.
    Fullscreen,
    /// `/c`, `/c:HWND` or no arguments: show settings (the client's window), owned by that
    /// window if given.
    Settings { parent: Option<u64> },
    /// `/p HWND` or `/p:HWND`: draw a preview inside that window of the settings dialog.
    Preview { parent: u64 },
}

impl WindowsMode {
    /// Parses the arguments after the program name. Case and `-` for `/` do not matter.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, String> {
        let Some(first) = args.first().map(|a| a.as_ref().trim()) else {
            return Ok(WindowsMode::Settings { parent: None });
        };
        let lower = first.to_ascii_lowercase();
        let body = lower
            .strip_prefix('/')
            .or_else(|| lower.strip_prefix('-'))
            .ok_or_else(|| format!("screensaver argument {first:?}: expected /s, /c or /p HWND"))?;
        let (flag, inline) = match body.split_once(':') {
            Some((f, v)) => (f, Some(v.trim())),
            None => (body, None),
        };
        let hwnd = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                format!("screensaver argument {first:?}: window handle {v:?} is not a number")
            })
        };
        let inline_or_next = || -> Option<String> {
            inline
                .map(str::to_owned)
                .or_else(|| args.get(1).map(|a| a.as_ref().trim().to_owned()))
        };
        match flag {
            "s" => Ok(WindowsMode::Fullscreen),
            "c" => Ok(WindowsMode::Settings {
                parent: inline_or_next().map(|v| hwnd(&v)).transpose()?,
            }),
            "p" => match inline_or_next() {
                Some(v) => Ok(WindowsMode::Preview { parent: hwnd(&v)? }),
                None => Err(format!(
                    "screensaver argument {first:?}: /p needs a window handle"
                )),
            },
            _ => Err(format!(
                "screensaver argument {first:?}: expected /s, /c or /p HWND"
            )),
        }
    }
}

// The tests use a private Xvfb for the hack and the viewport.
#[cfg(all(test, unix))]
mod tests;
