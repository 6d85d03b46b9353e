//! Full-screen windows end to end: a real supervisor and a real `idlegrid --headless` on a
//! private Xvfb display with openbox as its window manager. A window the test makes full screen
//! (asking openbox with a `_NET_WM_STATE` client message, as a video player does) pauses the
//! task, and the supervisor records an `Activity` of kind `fullscreen`; leaving full screen
//! resumes computing. With `pause_on_fullscreen = false` the same window pauses nothing.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idlegrid::bench::xvfb::Xvfb;
use idlegrid::job::{JobSpec, TaskSpec};
use idlegrid::operator::Operator;
use idlegrid::proto::JobId;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    Atom, ClientMessageEvent, ConnectionExt, CreateWindowAux, EventMask, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

use crate::harness::*;

/// openbox on a display; ended when dropped.
struct Openbox(Child);

impl Openbox {
    fn start(display: &str) -> Openbox {
        let child = Command::new("openbox")
            .args(["--sm-disable"])
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openbox is installed (setup.sh)");
        Openbox(child)
    }
}

impl Drop for Openbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A top-level window of the test's own, which it asks the window manager to make full screen.
struct TestWindow {
    conn: RustConnection,
    root: Window,
    window: Window,
    wm_state: Atom,
    fullscreen: Atom,
    active: Atom,
}

impl TestWindow {
    fn atom(conn: &RustConnection, name: &[u8]) -> Atom {
        conn.intern_atom(false, name).unwrap().reply().unwrap().atom
    }

    /// Connects, waits until a window manager runs (`_NET_SUPPORTING_WM_CHECK` on the root),
    /// and maps a window.
    async fn open(display: &str) -> TestWindow {
        let (conn, screen) = x11rb::connect(Some(display)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let check = Self::atom(&conn, b"_NET_SUPPORTING_WM_CHECK");
        eventually(Duration::from_secs(10), "openbox to run", || {
            let reply = conn
                .get_property(
                    false,
                    root,
                    check,
                    x11rb::protocol::xproto::AtomEnum::WINDOW,
                    0,
                    1,
                )
                .ok()
                .and_then(|c| c.reply().ok());
            let running = reply.is_some_and(|r| r.value_len > 0);
            async move { running.then_some(()) }
        })
        .await;
        let window = conn.generate_id().unwrap();
        conn.create_window(
            0,
            window,
            root,
            100,
            100,
            320,
            240,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new().background_pixel(0x0020_4080),
        )
        .unwrap();
        conn.map_window(window).unwrap();
        conn.flush().unwrap();
        TestWindow {
            wm_state: Self::atom(&conn, b"_NET_WM_STATE"),
            fullscreen: Self::atom(&conn, b"_NET_WM_STATE_FULLSCREEN"),
            active: Self::atom(&conn, b"_NET_ACTIVE_WINDOW"),
            conn,
            root,
            window,
        }
    }

    /// A client message to the root window, as EWMH has clients ask the window manager.
    fn ask(&self, message: Atom, data: [u32; 5]) {
        let event = ClientMessageEvent::new(32, self.window, message, data);
        self.conn
            .send_event(
                false,
                self.root,
                EventMask::SUBSTRUCTURE_REDIRECT | EventMask::SUBSTRUCTURE_NOTIFY,
                event,
            )
            .unwrap();
        self.conn.flush().unwrap();
    }

    /// Asks for the focus (source 2: a pager, which window managers always obey).
    fn activate(&self) {
        self.ask(self.active, [2, x11rb::CURRENT_TIME, 0, 0, 0]);
    }

    /// `_NET_WM_STATE` add (1) or remove (0) full screen; source 1, a normal application.
    fn set_fullscreen(&self, on: bool) {
        self.ask(self.wm_state, [u32::from(on), self.fullscreen, 0, 1, 0]);
    }

    /// Whether the window manager shows the window full screen now.
    fn is_fullscreen(&self) -> bool {
        self.conn
            .get_property(
                false,
                self.window,
                self.wm_state,
                x11rb::protocol::xproto::AtomEnum::ATOM,
                0,
                64,
            )
            .ok()
            .and_then(|c| c.reply().ok())
            .and_then(|r| r.value32().map(|mut v| v.any(|a| a == self.fullscreen)))
            .unwrap_or(false)
    }
}

async fn progress(op: &Operator, job: &JobId) -> Option<f64> {
    let status = op.status(job).await.ok()?;
    status["task_states"][0]["replicas"][0]["progress"].as_f64()
}

async fn worker_state(op: &Operator) -> Option<String> {
    let w = op.workers().await.ok()?;
    w[0]["state"].as_str().map(str::to_owned)
}

/// A supervisor, Xvfb + openbox, and a worker "desk" with `pause_on_fullscreen` as given,
/// running a long spin task; returns once the task is under way.
struct Desk {
    op: Operator,
    job: JobId,
    window: TestWindow,
    _worker: WorkerProc,
    _sup: SupervisorProc,
    _wm: Openbox,
    _xvfb: Xvfb,
    _dir: tempfile::TempDir,
}

async fn desk(pause_on_fullscreen: bool) -> Desk {
    let xvfb = Xvfb::start().expect("Xvfb is installed (setup.sh)");
    let wm = Openbox::start(&xvfb.display);
    let window = TestWindow::open(&xvfb.display).await;
    window.activate();
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let settings = dir.path().join("settings.toml");
    // Other processes' CPU must not count here (nor make the task step aside): the machine is
    // shared with builds and tests.
    std::fs::write(
        &settings,
        format!(
            "idle_after_secs = 1.0\nprocess_threshold_percent = 100000\nstep_aside = false\n\
             pause_on_fullscreen = {pause_on_fullscreen}\n"
        ),
    )
    .unwrap();
    let worker = WorkerProc::start_args(
        &sup,
        "desk",
        1,
        &["--config", settings.to_str().unwrap()],
        &[("DISPLAY", xvfb.display.as_str())],
    );
    let op = sup.operator();
    wait_for_live_workers(&op, 1).await;
    let log = std::fs::read_to_string(dir.path().join("desk.log")).unwrap();
    assert_eq!(
        log.contains("watching for the owner: full-screen windows"),
        pause_on_fullscreen,
        "{log}"
    );
    let spec = JobSpec {
        name: "film-night".into(),
        tasks: vec![TaskSpec::new(
            "spin",
            "spin",
            serde_json::json!({ "ms": 120_000 }),
        )],
        ..Default::default()
    };
    let job = op.submit(&spec).await.unwrap();
    eventually(Duration::from_secs(20), "the task under way", || async {
        (progress(&op, &job).await? > 0.0).then_some(())
    })
    .await;
    Desk {
        op,
        job,
        window,
        _worker: worker,
        _sup: sup,
        _wm: wm,
        _xvfb: xvfb,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fullscreen_window_pauses_the_task_and_the_supervisor_hears_of_it() {
    let _machine = shared_machine().await;
    let d = desk(true).await;
    let (op, job) = (&d.op, &d.job);
    let seen = op.activity().await.unwrap().len();

    d.window.set_fullscreen(true);
    eventually(
        Duration::from_secs(5),
        "openbox to make it full screen",
        || {
            let full = d.window.is_fullscreen();
            async move { full.then_some(()) }
        },
    )
    .await;
    let record = eventually(
        Duration::from_secs(10),
        "an Activity of kind fullscreen",
        || async {
            let all = op.activity().await.ok()?;
            (all.len() > seen).then(|| all[0].clone())
        },
    )
    .await;
    assert_eq!(record.kind, "fullscreen", "{record:?}");
    assert_eq!(record.worker_name, "desk");
    eventually(Duration::from_secs(5), "the worker marked busy", || async {
        (worker_state(op).await? == "busy").then_some(())
    })
    .await;
    // Paused: heartbeats (every 100 ms) keep coming, the progress they carry does not move,
    // however long the film plays without any input.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frozen = progress(op, job).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        progress(op, job).await.unwrap(),
        frozen,
        "the task advanced under a full-screen window"
    );
    assert_eq!(worker_state(op).await.as_deref(), Some("busy"));

    d.window.set_fullscreen(false);
    eventually(Duration::from_secs(20), "the task to resume", || async {
        let p = progress(op, job).await?;
        (worker_state(op).await? == "live" && p > frozen).then_some(())
    })
    .await;
    let kinds: Vec<String> = op
        .activity()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds.len(), seen + 1, "one pause, one Activity: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pause_on_fullscreen_off_a_fullscreen_window_pauses_nothing() {
    let _machine = shared_machine().await;
    let d = desk(false).await;
    let (op, job) = (&d.op, &d.job);
    let seen = op.activity().await.unwrap().len();
    d.window.set_fullscreen(true);
    eventually(
        Duration::from_secs(5),
        "openbox to make it full screen",
        || {
            let full = d.window.is_fullscreen();
            async move { full.then_some(()) }
        },
    )
    .await;
    let before = progress(op, job).await.unwrap();
    // Well past the source's 250 ms poll and the supervisor's heartbeat.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        op.activity().await.unwrap().len(),
        seen,
        "an Activity was recorded"
    );
    assert_eq!(worker_state(op).await.as_deref(), Some("live"));
    assert!(
        progress(op, job).await.unwrap() > before,
        "the task did not advance"
    );
}

/// The window named `idlegrid` that a client maps on this display, as the window manager lists
/// it (`_NET_CLIENT_LIST`): whether it is shown, and whether it is full screen.
fn idlegrid_window(conn: &RustConnection, root: Window) -> Option<(bool, bool)> {
    use x11rb::protocol::xproto::{AtomEnum, MapState};
    let atom = |name: &[u8]| {
        conn.intern_atom(false, name)
            .ok()?
            .reply()
            .ok()
            .map(|r| r.atom)
    };
    let (list, wm_state, full, name_atom, utf8) = (
        atom(b"_NET_CLIENT_LIST")?,
        atom(b"_NET_WM_STATE")?,
        atom(b"_NET_WM_STATE_FULLSCREEN")?,
        atom(b"_NET_WM_NAME")?,
        atom(b"UTF8_STRING")?,
    );
    let windows: Vec<u32> = conn
        .get_property(false, root, list, AtomEnum::WINDOW, 0, 1024)
        .ok()?
        .reply()
        .ok()?
        .value32()?
        .collect();
    windows.into_iter().find_map(|w| {
        let name = conn
            .get_property(false, w, name_atom, utf8, 0, 64)
            .ok()?
            .reply()
            .ok()?;
        if name.value != b"idlegrid" {
            return None;
        }
        let shown =
            conn.get_window_attributes(w).ok()?.reply().ok()?.map_state == MapState::VIEWABLE;
        let fullscreen = conn
            .get_property(false, w, wm_state, AtomEnum::ATOM, 0, 64)
            .ok()?
            .reply()
            .ok()?
            .value32()
            .is_some_and(|mut v| v.any(|a| a == full));
        Some((shown, fullscreen))
    })
}

/// `screensaver = true`: the desktop client, started in the tray with its window closed, shows
/// its screensaver full screen once the machine has been idle for `idle_after`, does not take
/// its own full-screen window for a film (the task keeps running), and a key press ends it: the
/// window goes back to the tray and the supervisor hears of the owner at once.
#[cfg(feature = "gui")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_screensaver_on_the_client_covers_the_screen_when_idle_and_a_key_ends_it() {
    let _machine = shared_machine().await;
    let xvfb = Xvfb::start().expect("Xvfb is installed (setup.sh)");
    let _wm = Openbox::start(&xvfb.display);
    let dir = tempfile::tempdir().unwrap();
    let sup = SupervisorProc::start(dir.path(), "127.0.0.1:0", &["--heartbeat-ms", "100"]);
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "idle_after_secs = 1.5\nprocess_threshold_percent = 100000\nstep_aside = false\n\
             screensaver = true\nserver = {:?}\ntoken_file = {:?}\n",
            sup.ws_url(),
            sup.worker_token_file().to_str().unwrap()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("saver.log")).unwrap();
    let mut client = Command::new("dbus-run-session")
        .arg("--")
        .arg(CLIENT)
        .args(["--hidden", "--name", "saver", "--cpus", "1", "--config"])
        .arg(&settings)
        .arg("--data-dir")
        .arg(dir.path().join("saver.client"))
        .env("DISPLAY", &xvfb.display)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("dbus-run-session is installed (setup.sh)");
    let op = sup.operator();
    wait_for_live_workers(&op, 1).await;
    let job = op
        .submit(&JobSpec {
            name: "while-away".into(),
            tasks: vec![TaskSpec::new(
                "spin",
                "spin",
                serde_json::json!({ "ms": 120_000 }),
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let (conn, screen) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let client_log = || std::fs::read_to_string(dir.path().join("saver.log")).unwrap_or_default();
    eventually(
        Duration::from_secs(30),
        "the screensaver full screen",
        || {
            let w = idlegrid_window(&conn, root);
            async move { (w == Some((true, true))).then_some(()) }
        },
    )
    .await;
    // Its own full-screen window is not a film: nothing is reported, the task computes.
    let seen = op.activity().await.unwrap().len();
    let before = progress(&op, &job).await.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        op.activity().await.unwrap().len(),
        seen,
        "the saver's window counted as activity; log: {}",
        client_log()
    );
    assert!(progress(&op, &job).await.unwrap_or(0.0) > before);

    let key = Command::new("xdotool")
        .args(["key", "space"])
        .env("DISPLAY", &xvfb.display)
        .status()
        .expect("xdotool is installed (setup.sh)");
    assert!(key.success());
    let record = eventually(Duration::from_secs(10), "an Activity", || async {
        let all = op.activity().await.ok()?;
        (all.len() > seen).then(|| all[0].clone())
    })
    .await;
    assert_eq!(record.kind, "keyboard", "{record:?}");
    eventually(
        Duration::from_secs(10),
        "the window back in the tray",
        || {
            let w = idlegrid_window(&conn, root);
            async move { matches!(w, None | Some((false, _))).then_some(()) }
        },
    )
    .await;
    // dbus-run-session does not pass a signal on: the client first, then the session.
    if let Some(pid) = idlegrid::local::child_named(client.id(), "idlegrid") {
        let _ = idlegrid::local::signal_pid(pid, libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client.kill();
    let _ = client.wait();
}
