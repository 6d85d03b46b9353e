//! Full-screen windows: pause while the focused window is full screen (a film, a game, a call),
//! although nobody touches the keyboard or the mouse.
//!
//! On X11 the window manager names the focused window in the root window's
//! `_NET_ACTIVE_WINDOW`, and a full-screen window carries `_NET_WM_STATE_FULLSCREEN` in its
//! `_NET_WM_STATE` (EWMH). [`FullscreenSource`] reads both every [`POLL`] over its own x11rb
//! connection (pure Rust over the X socket: two round trips a poll). A window of this very
//! process (`_NET_WM_PID`: the screensaver view is full screen while it shows the work) does not
//! count. Without a window manager that sets `_NET_ACTIVE_WINDOW` nothing is ever full screen.

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{Atom, AtomEnum, ConnectionExt, Window};
use x11rb::rust_connection::RustConnection;

use super::{
    ActivitySource, Condition, ConditionDetail, Observation, Signal, SourceError, SourceFactory,
};
use crate::client::idle::Busy;

/// Between two looks: a film started full screen pauses the tasks within this.
pub const POLL: Duration = Duration::from_millis(250);
/// After the X connection is lost, how often to try to open it again.
const RECONNECT: Duration = Duration::from_secs(5);

struct Atoms {
    active_window: Atom,
    wm_state: Atom,
    fullscreen: Atom,
    wm_pid: Atom,
}

struct Display {
    conn: RustConnection,
    root: Window,
    atoms: Atoms,
}

impl Display {
    fn open(name: Option<&str>) -> Result<(Self, String), SourceError> {
        let shown = match name {
            Some(n) => n.to_owned(),
            None => std::env::var("DISPLAY")
                .ok()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| unavailable("no X display (DISPLAY is not set)".to_owned()))?,
        };
        let (conn, screen) = x11rb::connect(Some(&shown)).map_err(|e| {
            unavailable(format!(
                "no X display (cannot connect to DISPLAY={shown}: {e})"
            ))
        })?;
        let root = conn
            .setup()
            .roots
            .get(screen)
            .map(|s| s.root)
            .ok_or_else(|| unavailable(format!("X display {shown} has no screen {screen}")))?;
        let intern = |name: &[u8]| -> Result<Atom, SourceError> {
            let reply = conn
                .intern_atom(false, name)
                .map_err(|e| unavailable(format!("X display {shown}: {e}")))?
                .reply()
                .map_err(|e| unavailable(format!("X display {shown}: {e}")))?;
            Ok(reply.atom)
        };
        let atoms = Atoms {
            active_window: intern(b"_NET_ACTIVE_WINDOW")?,
            wm_state: intern(b"_NET_WM_STATE")?,
            fullscreen: intern(b"_NET_WM_STATE_FULLSCREEN")?,
            wm_pid: intern(b"_NET_WM_PID")?,
        };
        Ok((Self { conn, root, atoms }, shown))
    }

    /// The 32-bit values of `property` on `window` (at most `len`); empty when it is not set or
    /// the window is gone. `Err` only when the connection itself failed.
    fn values(
        &self,
        window: Window,
        property: Atom,
        kind: AtomEnum,
        len: u32,
    ) -> Result<Vec<u32>, x11rb::errors::ConnectionError> {
        let cookie = self
            .conn
            .get_property(false, window, property, kind, 0, len)?;
        Ok(match cookie.reply() {
            Ok(reply) => reply.value32().map(Iterator::collect).unwrap_or_default(),
            // A window closed between the two requests is simply not full screen.
            Err(x11rb::errors::ReplyError::X11Error(_)) => Vec::new(),
            Err(x11rb::errors::ReplyError::ConnectionError(e)) => return Err(e),
        })
    }

    /// Whether the focused window is full screen and not ours.
    fn focused_is_fullscreen(&self, own_pid: u32) -> Result<bool, x11rb::errors::ConnectionError> {
        let active = self.values(self.root, self.atoms.active_window, AtomEnum::WINDOW, 1)?;
        let Some(&window) = active.first().filter(|&&w| w != x11rb::NONE) else {
            return Ok(false);
        };
        let state = self.values(window, self.atoms.wm_state, AtomEnum::ATOM, 64)?;
        if !state.contains(&self.atoms.fullscreen) {
            return Ok(false);
        }
        let pid = self.values(window, self.atoms.wm_pid, AtomEnum::CARDINAL, 1)?;
        Ok(pid.first() != Some(&own_pid))
    }
}

fn unavailable(reason: String) -> SourceError {
    SourceError::Unavailable {
        which: "fullscreen",
        reason,
    }
}

/// Reports [`Busy::Fullscreen`] while the focused window is full screen.
pub struct FullscreenSource {
    display: Option<Display>,
    name: String,
    /// `None` until the first report.
    reported: Option<bool>,
    lost_at: Option<Instant>,
    own_pid: u32,
}

impl FullscreenSource {
    /// Connects to `display`, or to `DISPLAY` when `None`. No display is an error the caller
    /// shows once.
    pub fn new(display: Option<&str>) -> Result<Self, SourceError> {
        let (d, shown) = Display::open(display)?;
        Ok(Self {
            display: Some(d),
            name: shown,
            reported: None,
            lost_at: None,
            own_pid: std::process::id(),
        })
    }

    fn look(&mut self, now: Instant) -> bool {
        if self.display.is_none()
            && self
                .lost_at
                .is_none_or(|t| now.saturating_duration_since(t) >= RECONNECT)
        {
            match Display::open(Some(&self.name)) {
                Ok((d, _)) => {
                    tracing::info!(display = %self.name, "full-screen check: X display back");
                    self.display = Some(d);
                }
                Err(_) => self.lost_at = Some(now),
            }
        }
        let Some(d) = &self.display else {
            return false;
        };
        match d.focused_is_fullscreen(self.own_pid) {
            Ok(full) => full,
            Err(e) => {
                tracing::warn!(display = %self.name, "full-screen check: X connection lost ({e})");
                self.display = None;
                self.lost_at = Some(now);
                false
            }
        }
    }
}

impl ActivitySource for FullscreenSource {
    fn name(&self) -> String {
        format!("full-screen windows (X11 display {})", self.name)
    }

    fn interval(&self) -> Duration {
        POLL
    }

    fn poll(&mut self, _now: Instant) -> Option<Observation> {
        None
    }

    fn signal(&mut self, now: Instant) -> Option<Signal> {
        let full = self.look(now);
        if self.reported == Some(full) {
            return None;
        }
        self.reported = Some(full);
        Some(Signal::Condition(Condition {
            reason: Busy::Fullscreen,
            on: full,
            at: now,
            detail: ConditionDetail::None,
        }))
    }
}

/// A factory for a [`FullscreenSource`] on `DISPLAY`.
pub fn factory() -> SourceFactory {
    Box::new(|| Ok(Box::new(FullscreenSource::new(None)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x11rb::protocol::xproto::{CreateWindowAux, PropMode, WindowClass};
    use x11rb::wrapper::ConnectionExt as _;

    fn state(source: &mut FullscreenSource) -> Option<bool> {
        match source.signal(Instant::now()) {
            Some(Signal::Condition(c)) => {
                assert_eq!(c.reason, Busy::Fullscreen);
                Some(c.on)
            }
            other => {
                assert_eq!(other, None);
                None
            }
        }
    }

    /// Plays the window manager's part by hand on a bare Xvfb: sets `_NET_ACTIVE_WINDOW` and the
    /// window's `_NET_WM_STATE` as EWMH says, and checks what the source reads of them.
    #[test]
    fn the_focused_windows_fullscreen_state_is_read_from_the_ewmh_properties() {
        let xvfb = crate::bench::xvfb::Xvfb::start().expect("Xvfb runs (setup.sh installs it)");
        let (conn, screen) = x11rb::connect(Some(&xvfb.display)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let atom = |n: &[u8]| conn.intern_atom(false, n).unwrap().reply().unwrap().atom;
        let (active, wm_state, fullscreen, above, wm_pid) = (
            atom(b"_NET_ACTIVE_WINDOW"),
            atom(b"_NET_WM_STATE"),
            atom(b"_NET_WM_STATE_FULLSCREEN"),
            atom(b"_NET_WM_STATE_ABOVE"),
            atom(b"_NET_WM_PID"),
        );
        let window = conn.generate_id().unwrap();
        conn.create_window(
            0,
            window,
            root,
            0,
            0,
            100,
            100,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new(),
        )
        .unwrap();
        let set = |w: Window, prop: Atom, kind: AtomEnum, values: &[u32]| {
            conn.change_property32(PropMode::REPLACE, w, prop, kind, values)
                .unwrap();
            conn.sync().unwrap();
        };

        let mut source = FullscreenSource::new(Some(&xvfb.display)).expect("the source connects");
        assert!(source.name().contains(&xvfb.display), "{}", source.name());
        assert_eq!(state(&mut source), Some(false), "no active window yet");
        set(root, active, AtomEnum::WINDOW, &[window]);
        set(window, wm_state, AtomEnum::ATOM, &[above]);
        assert_eq!(state(&mut source), None, "focused but not full screen");
        set(window, wm_state, AtomEnum::ATOM, &[above, fullscreen]);
        let t = Instant::now();
        assert_eq!(state(&mut source), Some(true));
        println!("one full-screen look: {:?}", t.elapsed());
        // The same window, but ours (the screensaver view): not a reason to pause.
        set(window, wm_pid, AtomEnum::CARDINAL, &[std::process::id()]);
        assert_eq!(state(&mut source), Some(false));
        set(window, wm_pid, AtomEnum::CARDINAL, &[1]);
        assert_eq!(state(&mut source), Some(true));
        // Focus moves to the root (no window): not full screen.
        set(root, active, AtomEnum::WINDOW, &[x11rb::NONE]);
        assert_eq!(state(&mut source), Some(false));
        // Focus names a window that no longer exists: an X error, read as not full screen.
        set(root, active, AtomEnum::WINDOW, &[window]);
        assert_eq!(state(&mut source), Some(true));
        conn.destroy_window(window).unwrap();
        conn.sync().unwrap();
        assert_eq!(state(&mut source), Some(false));
    }

    #[test]
    fn an_unreachable_display_is_a_clear_error() {
        let err = FullscreenSource::new(Some(":12345"))
            .err()
            .expect("no X server on :12345");
        assert!(matches!(
            err,
            SourceError::Unavailable {
                which: "fullscreen",
                ..
            }
        ));
        assert!(
            err.to_string()
                .starts_with("no X display (cannot connect to DISPLAY=:12345"),
            "{err}"
        );
    }
}
