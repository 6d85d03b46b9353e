//! The view's leave rule on egui input, the hack under a private Xvfb, and the fullscreen
//! viewport under Xvfb + openbox (with the screenshot for the README).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use eframe::egui;
use serde_json::json;

use super::*;
use crate::bench::xvfb::Xvfb;
use crate::client::saverfeed::{self, Liveness, SlotView};
use crate::client::snapshot::TileImage;
use crate::proto::TaskId;
use crate::runtime::{TaskControl, mandelbrot};

fn feed() -> SaverFeed {
    SaverFeed {
        liveness: Liveness::Live,
        name: "desk".into(),
        state: "computing".into(),
        image: None,
        slots: vec![SlotView {
            job: "j".into(),
            kind: "primes".into(),
            progress: 0.3,
            state: "running".into(),
        }],
        tasks_today: 1,
        tasks_total: 2,
        cpu_today: Duration::from_secs(5),
        cpu_total: Duration::from_secs(50),
    }
}

/// One frame of the view on a 800x600 screen with these input events.
fn frame(
    ctx: &egui::Context,
    state: &mut SaverState,
    events: Vec<egui::Event>,
) -> (Option<Leave>, egui::FullOutput) {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(800.0, 600.0),
        )),
        events,
        ..Default::default()
    };
    let mut leave = None;
    let mut out = ctx.run_ui(input, |ui| leave = screensaver_ui(ui, &feed(), state));
    // No renderer here to upload the font atlas to.
    out.textures_delta.clear();
    (leave, out)
}

fn moved(x: f32, y: f32) -> egui::Event {
    egui::Event::PointerMoved(egui::pos2(x, y))
}

#[test]
fn pointer_jitter_stays_and_a_real_move_leaves_as_mouse_activity() {
    let ctx = egui::Context::default();
    let mut state = SaverState::new();
    assert_eq!(frame(&ctx, &mut state, vec![moved(400.0, 300.0)]).0, None);
    // Small drift around the first position, over several frames: still there.
    for (x, y) in [(403.0, 302.0), (398.0, 305.0), (405.0, 305.0)] {
        assert_eq!(
            frame(&ctx, &mut state, vec![moved(x, y)]).0,
            None,
            "{x},{y}"
        );
    }
    assert_eq!(frame(&ctx, &mut state, vec![]).0, None);
    // Beyond the threshold from where the pointer first was.
    let (leave, _) = frame(
        &ctx,
        &mut state,
        vec![moved(400.0, 300.0 + JITTER_PX + 1.0)],
    );
    assert_eq!(
        leave,
        Some(Leave {
            kind: ActivityKind::Mouse
        })
    );
}

#[test]
fn a_key_or_a_click_leaves_and_names_its_kind() {
    let ctx = egui::Context::default();
    let mut state = SaverState::new();
    let key = egui::Event::Key {
        key: egui::Key::A,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: egui::Modifiers::NONE,
    };
    assert_eq!(
        frame(&ctx, &mut state, vec![key]).0,
        Some(Leave {
            kind: ActivityKind::Keyboard
        })
    );
    let mut state = SaverState::new();
    let click = egui::Event::PointerButton {
        pos: egui::pos2(10.0, 10.0),
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: egui::Modifiers::NONE,
    };
    assert_eq!(
        frame(&ctx, &mut state, vec![moved(10.0, 10.0), click]).0,
        Some(Leave {
            kind: ActivityKind::Mouse
        })
    );
    // A key release alone (the key that started the screensaver coming up) does not.
    let mut state = SaverState::new();
    let release = egui::Event::Key {
        key: egui::Key::A,
        physical_key: None,
        pressed: false,
        repeat: false,
        modifiers: egui::Modifiers::NONE,
    };
    assert_eq!(frame(&ctx, &mut state, vec![release]).0, None);
}

#[test]
fn the_view_hides_the_cursor_and_paints_the_screen() {
    let ctx = egui::Context::default();
    let mut state = SaverState::new();
    let (_, out) = frame(&ctx, &mut state, vec![]);
    assert_eq!(out.platform_output.cursor_icon, egui::CursorIcon::None);
    let texts: Vec<String> = out
        .shapes
        .iter()
        .filter_map(|s| match &s.shape {
            egui::Shape::Text(t) => Some(t.galley.text().to_owned()),
            _ => None,
        })
        .collect();
    assert!(texts.iter().any(|t| t == "30%"), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("tasks done: 1 today, 2 in all")),
        "{texts:?}"
    );
}

#[test]
fn windows_screensaver_arguments_map_to_modes() {
    assert_eq!(WindowsMode::parse(&["/s"]), Ok(WindowsMode::Fullscreen));
    assert_eq!(WindowsMode::parse(&["/S"]), Ok(WindowsMode::Fullscreen));
    assert_eq!(WindowsMode::parse(&["-s"]), Ok(WindowsMode::Fullscreen));
    assert_eq!(
        WindowsMode::parse::<&str>(&[]),
        Ok(WindowsMode::Settings { parent: None })
    );
    assert_eq!(
        WindowsMode::parse(&["/c:1234"]),
        Ok(WindowsMode::Settings { parent: Some(1234) })
    );
    assert_eq!(
        WindowsMode::parse(&["/c"]),
        Ok(WindowsMode::Settings { parent: None })
    );
    assert_eq!(
        WindowsMode::parse(&["/p", "5678"]),
        Ok(WindowsMode::Preview { parent: 5678 })
    );
    assert_eq!(
        WindowsMode::parse(&["/P:42"]),
        Ok(WindowsMode::Preview { parent: 42 })
    );
    let e = WindowsMode::parse(&["/p"]).unwrap_err();
    assert!(e.contains("window handle"), "{e}");
    let e = WindowsMode::parse(&["/p", "abc"]).unwrap_err();
    assert!(e.contains("abc"), "{e}");
    let e = WindowsMode::parse(&["/x"]).unwrap_err();
    assert!(e.contains("/x"), "{e}");
    assert!(WindowsMode::parse(&["s"]).is_err());
}

/// Tiles of a real Mandelbrot render, computed by the runtime's kernels and coloured with the
/// assembly's palette: the plan of `tiles` bands, and the tiles at `indices`.
pub(crate) fn real_tiles(
    width: u32,
    height: u32,
    tiles: u32,
    indices: &[u32],
) -> Vec<Arc<TileImage>> {
    let ctl = TaskControl::new();
    let view = json!({
        "width": width, "height": height,
        "center_re": -0.7436, "center_im": 0.1318, "span_re": 0.012,
        "max_iter": 600, "tiles": tiles,
    });
    let plan = crate::runtime::run("mandelbrot_view", &view, &BTreeMap::new(), &ctl).unwrap();
    let deps = BTreeMap::from([(TaskId::from("plan"), plan)]);
    indices
        .iter()
        .map(|&i| {
            let out =
                crate::runtime::run("mandelbrot", &json!({ "index": i }), &deps, &ctl).unwrap();
            let y0 = out["y0"].as_u64().unwrap() as u32;
            let y1 = out["y1"].as_u64().unwrap() as u32;
            let data = base64::engine::general_purpose::STANDARD
                .decode(out["data"].as_str().unwrap())
                .unwrap();
            let rgba = data
                .chunks_exact(4)
                .flat_map(|b| {
                    let [r, g, b] =
                        mandelbrot::palette_rgb(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    [r, g, b, 255]
                })
                .collect();
            Arc::new(TileImage {
                job: "job-mandel".into(),
                width,
                height,
                y0,
                y1,
                rgba,
            })
        })
        .collect()
}

/// A data dir with a published feed: a 4-tile render with tiles 0 and 2 done.
fn published(dir: &std::path::Path) -> Vec<Arc<TileImage>> {
    let tiles = real_tiles(320, 200, 4, &[0, 2]);
    let mut snap = crate::client::saverfeed::tests::snapshot(tiles.clone());
    snap.tasks.clear();
    saverfeed::publish(dir, &snap).unwrap();
    tiles
}

fn x_connect(display: &str) -> (x11rb::rust_connection::RustConnection, usize) {
    x11rb::connect(Some(display)).unwrap()
}

/// The window's pixels as RGB (24-bit TrueColor, little endian: what Xvfb serves).
fn read_back(display: &str, window: u32, w: u16, h: u16) -> Vec<[u8; 3]> {
    use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat};
    let (conn, _) = x_connect(display);
    let img = conn
        .get_image(ImageFormat::Z_PIXMAP, window, 0, 0, w, h, !0)
        .unwrap()
        .reply()
        .unwrap();
    img.data
        .chunks_exact(4)
        .map(|p| [p[2], p[1], p[0]])
        .collect()
}

/// Runs the hack on `target` until it has drawn, returns the pixels, stops it.
fn hack_pixels(x: &Xvfb, target: XTarget, window: u32, w: u16, h: u16) -> Vec<[u8; 3]> {
    let dir = tempfile::tempdir().unwrap();
    published(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let hack = {
        let (stop, display, data) = (stop.clone(), x.display.clone(), dir.path().to_owned());
        std::thread::spawn(move || xhack::run_xhack_until(target, &data, &stop, Some(&display)))
    };
    let t = Instant::now();
    let mut pixels = read_back(&x.display, window, w, h);
    while pixels.iter().all(|p| *p == pixels[0]) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        pixels = read_back(&x.display, window, w, h);
    }
    stop.store(true, Ordering::SeqCst);
    hack.join().unwrap().unwrap();
    pixels
}

/// The image's rectangle as the layout puts it on a `w` x `h` screen, with the feed read back.
fn image_rect(dir_feed: &SaverFeed, w: u16, h: u16) -> render::Rect {
    render::Layout::new(dir_feed, f32::from(w), f32::from(h))
        .image
        .unwrap()
}

fn check_tiles_drawn(pixels: &[[u8; 3]], w: u16, h: u16) {
    let dir = tempfile::tempdir().unwrap();
    published(dir.path());
    let feed = saverfeed::read(dir.path()).unwrap();
    let rect = image_rect(&feed, w, h);
    if let Some(dump) = std::env::var_os("SAVER_DUMP") {
        let f = std::fs::File::create(format!("{}-{w}.png", dump.to_string_lossy())).unwrap();
        let mut e = png::Encoder::new(f, u32::from(w), u32::from(h));
        e.set_color(png::ColorType::Rgb);
        let flat: Vec<u8> = pixels.iter().flatten().copied().collect();
        e.write_header().unwrap().write_image_data(&flat).unwrap();
    }
    let distinct: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(
        distinct.len() > 20,
        "only {} colours: blank",
        distinct.len()
    );
    let at = |x: f32, y: f32| pixels[y as usize * usize::from(w) + x as usize];
    // Tile rows done show the render's colours (many of them across a row); the others show
    // the empty colour all along.
    for (tile, done) in [(0, true), (1, false), (2, true), (3, false)] {
        let y = rect.y + rect.h * (tile as f32 + 0.5) / 4.0;
        let row: std::collections::HashSet<_> = (0..rect.w as u32)
            .map(|dx| at(rect.x + dx as f32, y))
            .collect();
        if done {
            assert!(
                !row.contains(&render::IMAGE_EMPTY) && !row.contains(&render::BACKGROUND),
                "tile {tile}: {row:?}"
            );
        } else {
            assert_eq!(row.len(), 1, "tile {tile}");
            assert!(row.contains(&render::IMAGE_EMPTY), "tile {tile}: {row:?}");
        }
    }
}

#[test]
fn the_xhack_draws_the_feed_into_a_given_window_and_into_the_root() {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{ConnectionExt as _, CreateWindowAux, WindowClass};
    let x = Xvfb::start().unwrap();
    let (conn, screen) = x_connect(&x.display);
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id().unwrap();
    let (w, h) = (640u16, 400u16);
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        root,
        10,
        10,
        w,
        h,
        0,
        WindowClass::INPUT_OUTPUT,
        x11rb::COPY_FROM_PARENT,
        &CreateWindowAux::new().background_pixel(0),
    )
    .unwrap();
    conn.map_window(win).unwrap();
    conn.flush().unwrap();
    // As xscreensaver passes it.
    let target = XTarget::from_args(&["-root"], Some(&format!("0x{win:x}"))).unwrap();
    let pixels = hack_pixels(&x, target, win, w, h);
    check_tiles_drawn(&pixels, w, h);

    // The root, with nothing over it.
    conn.destroy_window(win).unwrap();
    conn.flush().unwrap();
    let (rw, rh) = (1280u16, 800u16);
    let pixels = hack_pixels(&x, XTarget::Root, root, rw, rh);
    check_tiles_drawn(&pixels, rw, rh);
}

#[test]
fn the_xhack_without_a_display_says_so() {
    let stop = AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    let e = xhack::run_xhack_until(XTarget::Root, dir.path(), &stop, Some(":987654"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("X display"), "{e}");
}

struct Openbox(std::process::Child);

impl Drop for Openbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fullscreen viewport under a window manager, fed from a data dir: it fills the screen
/// with the partly filled-in image, and a key press ends it with keyboard activity. The
/// screenshot goes to `$IDLEGRID_SCREENSHOT` when set (docs/screenshot-screensaver.png).
/// This is the one test in the library that runs an eframe event loop.
#[test]
fn the_fullscreen_view_fills_the_screen_and_a_key_ends_it() {
    let x = Xvfb::start().unwrap();
    let wm = Openbox(
        std::process::Command::new("openbox")
            .env("DISPLAY", &x.display)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openbox (apt-get install openbox)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let tiles = real_tiles(800, 500, 8, &[0, 1, 2, 4, 5]);
    let mut snap = crate::client::saverfeed::tests::snapshot(tiles);
    // The next tile is being computed.
    snap.tasks[0].kind = "mandelbrot".into();
    saverfeed::publish(dir.path(), &snap).unwrap();

    // eframe reads DISPLAY from the environment; this test is the only one here that sets it.
    // SAFETY: no other test of this binary reads or writes DISPLAY.
    unsafe { std::env::set_var("DISPLAY", &x.display) };
    let display = x.display.clone();
    let shot = std::env::var_os("IDLEGRID_SCREENSHOT").map(std::path::PathBuf::from);
    let out = tempfile::tempdir().unwrap();
    let png = shot.unwrap_or_else(|| out.path().join("screensaver.png"));
    let taker = {
        let png = png.clone();
        std::thread::spawn(move || {
            // Wait until the window fills the root with the view, then shoot and press a key.
            let t = Instant::now();
            let mut filled = false;
            while t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(500));
                let px = read_back(&display, root_of(&display), 1280, 800);
                let distinct: std::collections::HashSet<_> = px.iter().step_by(7).collect();
                let corner = px[5 * 1280 + 5];
                if distinct.len() > 50 && corner == render::BACKGROUND {
                    filled = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            let status = std::process::Command::new("/usr/bin/import")
                .args(["-window", "root"])
                .arg(&png)
                .env("DISPLAY", &display)
                .status();
            let _ = std::process::Command::new("xdotool")
                .args(["key", "space"])
                .env("DISPLAY", &display)
                .status();
            (filled, status.map(|s| s.success()).unwrap_or(false))
        })
    };
    let leave = run_fullscreen(
        FeedSource::DataDir(dir.path().to_owned()),
        FullscreenOptions {
            fullscreen: true,
            any_thread: true,
        },
    )
    .unwrap();
    let (filled, shot_ok) = taker.join().unwrap();
    drop(wm);
    assert!(filled, "the view never filled the screen");
    assert!(shot_ok, "import failed");
    assert_eq!(
        leave,
        Some(Leave {
            kind: ActivityKind::Keyboard
        })
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (1280, 800));
}

fn root_of(display: &str) -> u32 {
    use x11rb::connection::Connection as _;
    let (conn, screen) = x_connect(display);
    conn.setup().roots[screen].root
}
