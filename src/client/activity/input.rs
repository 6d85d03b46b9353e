//! Noticing the owner at the keyboard and mouse, by polling their state with device_query (X11
//! on Linux). Built only with the `input` feature, the one part of the client that links libX11.
//!
//! [`InputTracker`] turns successive snapshots (keys down, buttons down, pointer position) into
//! observations and is pure; [`InputSource`] only reads the snapshots. Polling state rather than
//! receiving events means a key pressed and released between two polls goes unseen; at the 10 ms
//! interval a human keystroke (held 50 ms or more) never is. This file never grabs the keyboard,
//! reads which keys were typed, or keeps any of it: only whether something changed.
//!
//! The X display is the one named by `DISPLAY` when the source is built. device_query 4 opens it
//! with `XOpenDisplay(NULL)` and has no way to name another one, so there is no display
//! parameter: setting `DISPLAY` from a running (multi-threaded) process is unsound, and a
//! parameter that worked only by doing that would be a trap. Tests run under Xvfb in a child
//! process that receives `DISPLAY` at exec instead.

use std::time::{Duration, Instant};

use device_query::{DeviceQuery, DeviceState};

use super::{ActivitySource, Observation, Pace, RELAXED_POLL, SourceError, SourceFactory};
use crate::proto::ActivityKind;

/// How far the pointer must move, in pixels along x or y, from where it was last reported before
/// it counts as the owner. One or two pixels is sensor noise, not a hand: an optical mouse on a
/// glossy or vibrating desk, a touchpad under a resting palm, or a remote-desktop client
/// re-syncing the cursor all nudge it by a pixel now and then. Counting those would keep the
/// machine "in use" forever in an empty room. Comparing with the last *reported* position (not the
/// last polled one) means a slow, real movement still adds up past the threshold within a few
/// polls, while jitter around a spot never does.
pub const POINTER_JITTER_PX: i32 = 2;

/// Turns input snapshots into observations. Pure: the caller reads the devices.
#[derive(Debug, Clone, Default)]
pub struct InputTracker {
    /// `None` until the first snapshot, which only records the baseline.
    reported_position: Option<(i32, i32)>,
    buttons: Vec<bool>,
}

impl InputTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// One snapshot: whether any key is down, which buttons are down, where the pointer is.
    /// Returns the most telling kind of activity it shows (Keyboard > Mouse > Pointer), if any.
    ///
    /// - `Keyboard` while any key is down: a newly pressed key, or a key held (a held key changes
    ///   nothing else, so without this a long key press would look like an empty room).
    /// - `Mouse` when a button is down that was not down at the previous snapshot. A held button
    ///   is not reported again: dragging moves the pointer, which is reported on its own.
    /// - `Pointer` when the pointer is more than [`POINTER_JITTER_PX`] away, along x or y, from
    ///   the last reported position.
    pub fn observe(
        &mut self,
        any_key_down: bool,
        buttons: &[bool],
        position: (i32, i32),
    ) -> Option<ActivityKind> {
        let newly_pressed = buttons
            .iter()
            .enumerate()
            .any(|(i, &down)| down && !self.buttons.get(i).copied().unwrap_or(false));
        self.buttons.clear();
        self.buttons.extend_from_slice(buttons);
        let Some(reported) = self.reported_position else {
            self.reported_position = Some(position);
            return None;
        };
        let moved = (position.0 - reported.0).abs() > POINTER_JITTER_PX
            || (position.1 - reported.1).abs() > POINTER_JITTER_PX;
        if moved {
            // Even when a key or button outranks it, the movement was part of what was reported;
            // keeping the old reference would report the same movement again at the next poll.
            self.reported_position = Some(position);
        }
        if any_key_down {
            Some(ActivityKind::Keyboard)
        } else if newly_pressed {
            Some(ActivityKind::Mouse)
        } else if moved {
            Some(ActivityKind::Pointer)
        } else {
            None
        }
    }
}

/// Reports keyboard, mouse-button and pointer activity on the X display named by `DISPLAY`.
///
/// Cost: one poll is two X round trips (`XQueryKeymap`, `XQueryPointer`). Measured under Xvfb on
/// the 2-core test container: 27-86 µs of wall time on average over 500 polls, depending on load
/// (printed by the Xvfb test; STACK.md found about 0.1 ms). Of the client's own CPU, polling every
/// 10 ms took 1.4% of one core (release build, `bench footprint`), which is why the engine's
/// [`Pace`] keeps that rate for while a task computes and polls every [`RELAXED_POLL`] otherwise.
///
/// Xlib ends the process if the X server goes away while connected (its default I/O error
/// handler); device_query gives no way to install another. A session that ends takes the client
/// with it, as it does every other X client of that session.
pub struct InputSource {
    device: DeviceState,
    name: String,
    interval: Duration,
    /// `None`: always `interval`; else `interval` only while a task computes.
    pace: Option<Pace>,
    tracker: InputTracker,
}

impl InputSource {
    /// Connects to the display. Never panics: no display is an error the caller logs once.
    pub fn new(interval: Duration, pace: Option<Pace>) -> Result<Self, SourceError> {
        let (device, name) = open_devices()?;
        Ok(Self {
            device,
            name,
            interval,
            pace,
            tracker: InputTracker::new(),
        })
    }
}

#[cfg(target_os = "linux")]
fn open_devices() -> Result<(DeviceState, String), SourceError> {
    // Checked first for a plain message: Xlib would fail too, but without saying why.
    let display = std::env::var_os("DISPLAY")
        .filter(|d| !d.is_empty())
        .ok_or(SourceError::DisplayNotSet)?
        .to_string_lossy()
        .into_owned();
    // device_query prints a line of its own on stderr when this fails; it cannot be silenced.
    let device = DeviceState::checked_new().ok_or(SourceError::DisplayUnreachable {
        display: display.clone(),
    })?;
    Ok((device, format!("input (X11 display {display})")))
}

#[cfg(not(target_os = "linux"))]
fn open_devices() -> Result<(DeviceState, String), SourceError> {
    // On macOS this fails without the accessibility permission; on Windows it cannot fail.
    let device = DeviceState::checked_new().ok_or(SourceError::InputUnavailable)?;
    Ok((device, "input".to_owned()))
}

impl ActivitySource for InputSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn interval(&self) -> Duration {
        match &self.pace {
            Some(pace) if !pace.urgent() => self.interval.max(RELAXED_POLL),
            _ => self.interval,
        }
    }

    fn poll(&mut self, now: Instant) -> Option<Observation> {
        let any_key_down = !self.device.get_keys().is_empty();
        let mouse = self.device.get_mouse();
        self.tracker
            .observe(any_key_down, &mouse.button_pressed, mouse.coords)
            .map(|kind| Observation { kind, at: now })
    }
}

/// A factory for an [`InputSource`] polled every `poll` (10 ms is the intended default), for
/// [`super::Monitor::start`]; with a `pace`, every `poll` only while it is urgent and every
/// [`RELAXED_POLL`] otherwise. The source is built in the polling thread: `DeviceState` is `!Send`.
pub fn factory(poll: Duration, pace: Option<Pace>) -> SourceFactory {
    Box::new(move || Ok(Box::new(InputSource::new(poll, pace)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::activity::Monitor;
    use std::process::Command;

    const NO_BUTTONS: [bool; 6] = [false; 6];

    fn button(n: usize) -> [bool; 6] {
        let mut b = NO_BUTTONS;
        b[n] = true;
        b
    }

    #[test]
    fn the_first_snapshot_only_records_the_baseline() {
        let mut t = InputTracker::new();
        assert_eq!(t.observe(true, &button(1), (500, 500)), None);
        assert_eq!(t.observe(false, &button(1), (500, 500)), None);
    }

    #[test]
    fn pointer_jitter_of_two_pixels_is_not_the_owner() {
        let mut t = InputTracker::new();
        t.observe(false, &NO_BUTTONS, (100, 100));
        for p in [(101, 101), (102, 98), (98, 102), (100, 100), (102, 102)] {
            assert_eq!(t.observe(false, &NO_BUTTONS, p), None, "{p:?}");
        }
        assert_eq!(
            t.observe(false, &NO_BUTTONS, (103, 100)),
            Some(ActivityKind::Pointer)
        );
        // The reference is now (103, 100): jitter around it is quiet again.
        assert_eq!(t.observe(false, &NO_BUTTONS, (101, 101)), None);
    }

    #[test]
    fn a_slow_drift_adds_up_until_it_counts() {
        let mut t = InputTracker::new();
        t.observe(false, &NO_BUTTONS, (0, 0));
        assert_eq!(t.observe(false, &NO_BUTTONS, (0, 1)), None);
        assert_eq!(t.observe(false, &NO_BUTTONS, (0, 2)), None);
        assert_eq!(
            t.observe(false, &NO_BUTTONS, (0, 3)),
            Some(ActivityKind::Pointer)
        );
    }

    #[test]
    fn keyboard_outranks_mouse_outranks_pointer() {
        let mut t = InputTracker::new();
        t.observe(false, &NO_BUTTONS, (0, 0));
        assert_eq!(
            t.observe(true, &button(1), (50, 50)),
            Some(ActivityKind::Keyboard)
        );
        assert_eq!(
            t.observe(false, &button(3), (90, 90)),
            Some(ActivityKind::Mouse)
        );
        // The movements above were part of what was reported, not owed for later.
        assert_eq!(t.observe(false, &NO_BUTTONS, (90, 90)), None);
    }

    #[test]
    fn a_held_key_keeps_reporting_but_a_held_button_does_not() {
        let mut t = InputTracker::new();
        t.observe(false, &NO_BUTTONS, (0, 0));
        for _ in 0..3 {
            assert_eq!(
                t.observe(true, &NO_BUTTONS, (0, 0)),
                Some(ActivityKind::Keyboard)
            );
        }
        assert_eq!(t.observe(false, &NO_BUTTONS, (0, 0)), None);
        assert_eq!(
            t.observe(false, &button(2), (0, 0)),
            Some(ActivityKind::Mouse)
        );
        assert_eq!(t.observe(false, &button(2), (0, 0)), None);
        assert_eq!(t.observe(false, &NO_BUTTONS, (0, 0)), None);
        assert_eq!(
            t.observe(false, &button(2), (0, 0)),
            Some(ActivityKind::Mouse)
        );
    }

    // ---- Under a real X server --------------------------------------------------------------
    //
    // `DISPLAY` is read by Xlib from the environment, and changing the environment of this
    // multi-threaded test process is unsound (other tests read it concurrently, and Xlib's
    // getenv does not take Rust's environment lock). So each real-X check runs as an ignored test
    // in a child process (this same test binary) started with `DISPLAY` in its environment. The
    // ignored tests do nothing unless that child marker is set.

    const CHILD_MARKER: &str = "IDLEGRID_ACTIVITY_INPUT_CHILD";

    fn in_child() -> bool {
        if std::env::var_os(CHILD_MARKER).is_some() {
            return true;
        }
        println!("not run directly: its parent test starts it with DISPLAY set");
        false
    }

    /// Runs `test` (a test of this module) in a child process with `DISPLAY` set to `display`
    /// (or unset). Returns the child's output; panics with it if the child test failed.
    fn run_in_child(test: &str, display: Option<&str>) -> String {
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let exe = std::env::current_exe().expect("the path of this test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            &format!("{module}::{test}"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1");
        match display {
            Some(d) => cmd.env("DISPLAY", d),
            None => cmd.env_remove("DISPLAY"),
        };
        let out = cmd.output().expect("run this test binary as a child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child test {test} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        print!("{stdout}");
        stdout
    }

    #[test]
    fn keys_buttons_and_pointer_moves_are_seen_under_xvfb() {
        let xvfb = crate::bench::xvfb::Xvfb::start()
            .expect("Xvfb runs (install it with setup.sh); xdotool is needed too");
        run_in_child("child_sees_xdotool_input", Some(&xvfb.display));
        drop(xvfb);
    }

    #[test]
    fn an_unreachable_display_is_an_error_not_a_panic() {
        run_in_child("child_fails_cleanly_on_display_12345", Some(":12345"));
    }

    #[test]
    fn a_missing_display_is_named_in_the_error() {
        run_in_child("child_fails_cleanly_without_display", None);
    }

    fn xdotool(args: &[&str]) {
        let status = Command::new("xdotool")
            .args(args)
            .status()
            .expect("run xdotool");
        assert!(status.success(), "xdotool {args:?}: {status}");
    }

    /// Runs xdotool and expects `kind` as the next observation, within 100 ms of xdotool's return.
    async fn expect_after(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<crate::client::activity::Signal>,
        args: &[&str],
        kind: ActivityKind,
    ) {
        xdotool(args);
        let t = Instant::now();
        let seen = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        match seen {
            Ok(Some(crate::client::activity::Signal::Activity(o))) => {
                assert_eq!(o.kind, kind, "after xdotool {args:?}");
                println!("xdotool {args:?} -> {kind:?} after {:?}", t.elapsed());
            }
            other => panic!("expected {kind:?} within 100 ms of xdotool {args:?}, got {other:?}"),
        }
    }

    async fn expect_nothing_after(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<crate::client::activity::Signal>,
        args: &[&str],
    ) {
        xdotool(args);
        let seen = tokio::time::timeout(Duration::from_millis(150), rx.recv()).await;
        assert!(seen.is_err(), "after xdotool {args:?}: {seen:?}");
    }

    #[tokio::test]
    #[ignore = "run in a child process by keys_buttons_and_pointer_moves_are_seen_under_xvfb"]
    async fn child_sees_xdotool_input() {
        if !in_child() {
            return;
        }
        let display = std::env::var("DISPLAY").expect("the parent sets DISPLAY");

        // The cost of one poll, on a source of its own (each opens its own X connection).
        let mut probe = InputSource::new(Duration::from_millis(10), None).expect("connect to Xvfb");
        let polls = 500;
        let t = Instant::now();
        for _ in 0..polls {
            let _ = probe.poll(Instant::now());
        }
        println!("input poll: {:?} on average", t.elapsed() / polls);
        drop(probe);

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (monitor, report) = Monitor::start(vec![factory(Duration::from_millis(10), None)], tx);
        assert_eq!(
            report.running,
            vec![format!("input (X11 display {display})")]
        );
        assert!(report.failed.is_empty());
        // Let the first poll take its baseline.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "the baseline is not an observation");

        expect_after(&mut rx, &["mousemove", "100", "100"], ActivityKind::Pointer).await;
        // xdotool's plain `key a` and `click 1` release almost at once: a 10 ms poll saw 19 of 30
        // such keystrokes and 0 of 30 such clicks. A human keystroke or click lasts 50 ms or
        // more, which is what polling relies on; the presses below are held that long.
        expect_after(
            &mut rx,
            &["key", "--delay", "100", "a"],
            ActivityKind::Keyboard,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        while rx.try_recv().is_ok() {} // the held key was seen at several polls
        expect_after(
            &mut rx,
            &["mousedown", "1", "sleep", "0.05", "mouseup", "1"],
            ActivityKind::Mouse,
        )
        .await;
        expect_nothing_after(&mut rx, &["mousemove_relative", "1", "1"]).await;
        expect_nothing_after(&mut rx, &["mousemove_relative", "1", "1"]).await;
        // Three 1-px steps from the last reported position: a slow hand, not jitter.
        expect_after(
            &mut rx,
            &["mousemove_relative", "1", "1"],
            ActivityKind::Pointer,
        )
        .await;
        drop(monitor);
    }

    #[test]
    #[ignore = "run in a child process by an_unreachable_display_is_an_error_not_a_panic"]
    fn child_fails_cleanly_on_display_12345() {
        if !in_child() {
            return;
        }
        let err = factory(Duration::from_millis(10), None)()
            .err()
            .expect("no X server listens on :12345");
        assert!(
            matches!(&err, SourceError::DisplayUnreachable { display } if display == ":12345"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no X display (cannot connect to DISPLAY=:12345)"
        );
    }

    #[test]
    #[ignore = "run in a child process by a_missing_display_is_named_in_the_error"]
    fn child_fails_cleanly_without_display() {
        if !in_child() {
            return;
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (_monitor, report) = Monitor::start(vec![factory(Duration::from_millis(10), None)], tx);
        assert!(report.running.is_empty());
        let failed: Vec<String> = report
            .failed
            .iter()
            .map(|(which, e)| format!("{which}: {e}"))
            .collect();
        assert_eq!(failed, vec!["input: no X display (DISPLAY is not set)"]);
    }
}
