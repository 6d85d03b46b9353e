//! The screensaver as an xscreensaver hack: a process that xscreensaver starts when the screen
//! blanks and kills (SIGTERM) when the owner returns.
//!
//! It reads the feed the running client publishes into its data dir, renders it in software
//! ([`super::render`]: no GL context is needed, and xscreensaver's window may belong to any
//! visual) and puts the frame into the target window with `PutImage`, a few times a second. The
//! target is `XSCREENSAVER_WINDOW` when xscreensaver set it, the root window with `-root`, or a
//! window of its own otherwise (a preview; it closes on a key or a click).
//!
//! Leaving is xscreensaver's business here: it sees the owner's input itself, and the client
//! sees it through its own input watch. The hack only draws.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, ImageFormat, ImageOrder, PropMode,
    Screen, VisualClass, Window, WindowClass,
};
use x11rb::wrapper::ConnectionExt as _;

use crate::client::saverfeed::{FeedReader, SaverFeed};

/// Where the hack draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XTarget {
    /// A window someone else made: xscreensaver's (`XSCREENSAVER_WINDOW`) or `-window-id ID`.
    Window(u32),
    /// The screen's root window (`-root`).
    Root,
    /// A window of its own.
    OwnWindow,
}

#[derive(Debug, thiserror::Error)]
pub enum XhackError {
    #[error("{0}")]
    Args(String),
    #[error("cannot connect to the X display (is DISPLAY set?): {0}")]
    Connect(#[from] x11rb::errors::ConnectError),
    #[error("X connection: {0}")]
    Connection(#[from] x11rb::errors::ConnectionError),
    #[error("X request failed: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
    #[error("X request failed: {0}")]
    ReplyOrId(#[from] x11rb::errors::ReplyOrIdError),
    #[error(
        "window 0x{window:x} has depth {depth} with {bpp} bits per pixel; only 24 or 32-bit true colour is drawn"
    )]
    Visual { window: u32, depth: u8, bpp: u8 },
}

fn parse_window_id(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    match parsed {
        Ok(0) | Err(_) => Err(format!(
            "window id {s:?} is not a window (expected 0x1a00007 or 27262983)"
        )),
        Ok(id) => Ok(id),
    }
}

impl XTarget {
    /// From the hack's arguments and the `XSCREENSAVER_WINDOW` variable. `-window-id ID` wins;
    /// then xscreensaver's window (it also passes `-root`, meaning "the screen you are given");
    /// then `-root`; otherwise a window of its own. Unknown arguments are refused by name.
    pub fn from_args<S: AsRef<str>>(
        args: &[S],
        xscreensaver_window: Option<&str>,
    ) -> Result<Self, XhackError> {
        let mut root = false;
        let mut explicit = None;
        let mut it = args.iter().map(|a| a.as_ref());
        while let Some(a) = it.next() {
            match a {
                "-root" | "--root" => root = true,
                "-window-id" | "--window-id" => {
                    let v = it
                        .next()
                        .ok_or_else(|| XhackError::Args("-window-id needs a window id".into()))?;
                    explicit = Some(parse_window_id(v).map_err(XhackError::Args)?);
                }
                // xscreensaver passes these to every hack; they change nothing here.
                "-window" | "-install" | "-mono" => {}
                other => {
                    return Err(XhackError::Args(format!(
                        "unknown screensaver hack argument {other:?} (expected -root or -window-id ID)"
                    )));
                }
            }
        }
        if let Some(id) = explicit {
            return Ok(XTarget::Window(id));
        }
        if let Some(env) = xscreensaver_window.filter(|v| !v.trim().is_empty()) {
            return parse_window_id(env)
                .map(XTarget::Window)
                .map_err(|e| XhackError::Args(format!("XSCREENSAVER_WINDOW: {e}")));
        }
        Ok(if root {
            XTarget::Root
        } else {
            XTarget::OwnWindow
        })
    }
}

/// Set by SIGTERM or SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the hack until SIGTERM or SIGINT (xscreensaver's way of ending it), the target window
/// disappears, or (in its own window) a key or a click. `data_dir` is the client's data dir
/// (`client::default_data_dir()`), where the running client publishes its feed.
pub fn run_xhack(target: XTarget, data_dir: &Path) -> Result<(), XhackError> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    run_xhack_until(target, data_dir, &STOP, None)
}

/// Frames are rendered at most this often, and again at least this often when nothing changed
/// (another client may have drawn over the root window).
const FRAME: Duration = Duration::from_millis(250);
const REDRAW_ANYWAY: Duration = Duration::from_secs(2);
const FEED_POLL: Duration = Duration::from_secs(1);

/// [`run_xhack`] with its own stop flag and display (tests; `display: None` is `$DISPLAY`).
pub fn run_xhack_until(
    target: XTarget,
    data_dir: &Path,
    stop: &AtomicBool,
    display: Option<&str>,
) -> Result<(), XhackError> {
    let (conn, screen_num) = x11rb::connect(display)?;
    let screen = conn.setup().roots[screen_num].clone();
    let window = match target {
        XTarget::Window(w) => w,
        XTarget::Root => screen.root,
        XTarget::OwnWindow => own_window(&conn, &screen)?,
    };
    let own = target == XTarget::OwnWindow;
    let format = PixelFormat::of(&conn, &screen, window)?;
    let gc = conn.generate_id()?;
    conn.create_gc(gc, window, &CreateGCAux::new())?;
    conn.flush()?;

    let mut reader = FeedReader::new(PathBuf::from(data_dir));
    let mut feed: Option<SaverFeed> = None;
    let mut read_at: Option<Instant> = None;
    let mut drawn: Option<(SaverFeed, u16, u16, Instant)> = None;
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut exposed = false;
        while let Some(event) = conn.poll_for_event()? {
            match event {
                Event::Expose(_) => exposed = true,
                Event::KeyPress(_) | Event::ButtonPress(_) if own => return Ok(()),
                Event::DestroyNotify(e) if e.window == window => return Ok(()),
                _ => {}
            }
        }
        if read_at.is_none_or(|t| t.elapsed() >= FEED_POLL) {
            let new = reader.poll();
            if let (Some(e), None) = (&reader.last_error, &feed) {
                tracing::info!("screensaver feed: {e}");
            }
            feed = Some(new);
            read_at = Some(Instant::now());
        }
        // A window that is gone (xscreensaver destroyed it) ends the hack quietly.
        let Ok(geometry) = conn.get_geometry(window)?.reply() else {
            return Ok(());
        };
        let (w, h) = (geometry.width, geometry.height);
        let current = feed.clone().unwrap_or_else(SaverFeed::not_running);
        let stale = match &drawn {
            None => true,
            Some((f, dw, dh, at)) => {
                exposed || *f != current || (*dw, *dh) != (w, h) || at.elapsed() >= REDRAW_ANYWAY
            }
        };
        if stale && w > 0 && h > 0 {
            let frame = super::render::render(&current, u32::from(w), u32::from(h));
            format.encode(&frame.rgba, &mut buf);
            put_frame(&conn, window, gc, &format, w, h, &buf)?;
            conn.flush()?;
            drawn = Some((current, w, h, Instant::now()));
        }
        let until = Instant::now() + FRAME;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    if own {
        let _ = conn.destroy_window(window);
        let _ = conn.flush();
    }
    Ok(())
}

fn own_window(conn: &impl Connection, screen: &Screen) -> Result<Window, XhackError> {
    let win = conn.generate_id()?;
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        screen.root,
        0,
        0,
        1024,
        640,
        0,
        WindowClass::INPUT_OUTPUT,
        x11rb::COPY_FROM_PARENT,
        &CreateWindowAux::new()
            .background_pixel(screen.black_pixel)
            .event_mask(
                EventMask::EXPOSURE
                    | EventMask::KEY_PRESS
                    | EventMask::BUTTON_PRESS
                    | EventMask::STRUCTURE_NOTIFY,
            ),
    )?;
    let title = b"idlegrid screensaver";
    conn.change_property8(
        PropMode::REPLACE,
        win,
        x11rb::protocol::xproto::AtomEnum::WM_NAME,
        x11rb::protocol::xproto::AtomEnum::STRING,
        title,
    )?;
    conn.map_window(win)?;
    conn.flush()?;
    Ok(win)
}

/// How the target window's pixels are laid out in a `ZPixmap` image.
struct PixelFormat {
    depth: u8,
    /// Shift of each 8-bit channel inside a 32-bit pixel.
    shifts: [u32; 3],
    little_endian: bool,
}

impl PixelFormat {
    fn of(conn: &impl Connection, screen: &Screen, window: Window) -> Result<Self, XhackError> {
        let geometry = conn.get_geometry(window)?.reply()?;
        let attrs = conn.get_window_attributes(window)?.reply()?;
        let depth = geometry.depth;
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == attrs.visual);
        let bad = || XhackError::Visual { window, depth, bpp };
        let visual = visual.ok_or_else(bad)?;
        if bpp != 32
            || !(depth == 24 || depth == 32)
            || !(visual.class == VisualClass::TRUE_COLOR
                || visual.class == VisualClass::DIRECT_COLOR)
        {
            return Err(bad());
        }
        let shift = |mask: u32| -> Result<u32, XhackError> {
            if mask == 0 || (mask >> mask.trailing_zeros()) != 0xff {
                return Err(bad());
            }
            Ok(mask.trailing_zeros())
        };
        Ok(Self {
            depth,
            shifts: [
                shift(visual.red_mask)?,
                shift(visual.green_mask)?,
                shift(visual.blue_mask)?,
            ],
            little_endian: conn.setup().image_byte_order == ImageOrder::LSB_FIRST,
        })
    }

    fn encode(&self, rgba: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(rgba.len());
        for px in rgba.chunks_exact(4) {
            let v = (u32::from(px[0]) << self.shifts[0])
                | (u32::from(px[1]) << self.shifts[1])
                | (u32::from(px[2]) << self.shifts[2]);
            out.extend_from_slice(&if self.little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            });
        }
    }
}

/// Puts the frame in bands of rows that each fit in one request.
fn put_frame(
    conn: &impl Connection,
    window: Window,
    gc: u32,
    format: &PixelFormat,
    w: u16,
    h: u16,
    data: &[u8],
) -> Result<(), XhackError> {
    let stride = 4 * usize::from(w);
    let max = conn.maximum_request_bytes().saturating_sub(64);
    let rows = (max / stride).clamp(1, usize::from(h));
    for (band, chunk) in data.chunks(rows * stride).enumerate() {
        let y = band * rows;
        conn.put_image(
            ImageFormat::Z_PIXMAP,
            window,
            gc,
            w,
            (chunk.len() / stride) as u16,
            0,
            y as i16,
            0,
            format.depth,
            chunk,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xscreensaver_window_wins_over_root_and_window_id_wins_over_both() {
        assert_eq!(
            XTarget::from_args(&["-root"], Some("0x1a00007")).unwrap(),
            XTarget::Window(0x1a0_0007)
        );
        assert_eq!(XTarget::from_args(&["-root"], None).unwrap(), XTarget::Root);
        assert_eq!(
            XTarget::from_args::<&str>(&[], None).unwrap(),
            XTarget::OwnWindow
        );
        assert_eq!(
            XTarget::from_args(&["-window-id", "27262983"], Some("0x5")).unwrap(),
            XTarget::Window(27_262_983)
        );
        assert_eq!(
            XTarget::from_args(&["-root"], Some("  ")).unwrap(),
            XTarget::Root
        );
    }

    #[test]
    fn bad_hack_arguments_are_named() {
        let e = XTarget::from_args(&["-fast"], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("-fast"), "{e}");
        let e = XTarget::from_args(&["-root"], Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("XSCREENSAVER_WINDOW") && e.contains("nope"),
            "{e}"
        );
        assert!(XTarget::from_args(&["-window-id"], None).is_err());
        assert!(XTarget::from_args(&["-window-id", "0"], None).is_err());
    }
}
