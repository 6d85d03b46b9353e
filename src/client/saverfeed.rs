//! What the screensaver shows, and how it travels to a screensaver in another process.
//!
//! A [`SaverFeed`] is the screensaver's whole input: the newest Mandelbrot image this client is
//! filling in (tiles it computed, composed into one RGBA picture whose unfilled rows are
//! transparent), the slots and their progress, tasks done and CPU time given. In process it is
//! made from a [`Snapshot`] ([`SaverFeed::from_snapshot`]). An xscreensaver hack runs as its own
//! process while the client sits in the tray, so the engine also [`publish`]es the feed into the
//! data dir (`screensaver/feed.json` and one PNG), and the hack [`read`]s it back.
//!
//! Both files are written to a temporary name and renamed, so a reader sees a whole old feed or a
//! whole new one. The summary names its image file, so an image never pairs with the wrong
//! summary; a reader that still finds something wrong (a file cut short, one from another
//! version) gets an error, and [`FeedReader`] turns every such error into the last feed it read,
//! or into "not running": a screensaver never fails because of its feed.
//!
//! This module does no drawing; it is built without feature `gui` because the engine publishes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::idle::{Busy, IdleState};
use crate::client::snapshot::{Connection, Snapshot, TaskState, TileImage};

/// The folder under the data dir that holds the published feed.
pub const FEED_DIR: &str = "screensaver";
const SUMMARY_FILE: &str = "feed.json";
/// Bumped when the summary's meaning changes; a reader refuses other versions.
const FEED_VERSION: u32 = 1;
/// The published image is scaled down (by a whole factor) to at most this many pixels: 16 MiB
/// of RGBA at most in memory, far less as PNG, and more than any screen shows.
pub const MAX_FEED_PIXELS: u64 = 4 << 20;
/// A summary larger than this is not a feed (it holds a few slots and figures).
const MAX_SUMMARY_BYTES: u64 = 256 << 10;
/// At most this many slots are shown.
pub const MAX_SLOTS: usize = 64;

/// What the screensaver shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SaverFeed {
    pub liveness: Liveness,
    /// The worker's name.
    pub name: String,
    /// One line of state: "computing", "waiting for idle", "disconnected", ...
    pub state: String,
    /// The newest Mandelbrot image this client helped fill in.
    pub image: Option<FeedImage>,
    pub slots: Vec<SlotView>,
    pub tasks_today: u64,
    pub tasks_total: u64,
    pub cpu_today: Duration,
    pub cpu_total: Duration,
}

/// Whether the feed comes from a running client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// From the engine in this process, or published by a client that still runs.
    Live,
    /// The client that published it has stopped (or nothing was ever published): the screen says
    /// "idlegrid is not running" over what was last known.
    NotRunning,
}

/// One job's image as far as this client computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedImage {
    pub job: String,
    pub width: u32,
    pub height: u32,
    /// `4 * width * height` bytes; rows no tile covered are transparent (alpha 0).
    pub rgba: Vec<u8>,
    /// Rows covered by tiles, out of `height`.
    pub rows_filled: u32,
}

/// One replica the worker holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotView {
    pub job: String,
    pub kind: String,
    /// 0.0 ..= 1.0.
    pub progress: f32,
    /// "running", "paused", "fetching", "reporting".
    pub state: String,
}

impl SaverFeed {
    /// What a screensaver shows when no client runs and nothing was ever read.
    pub fn not_running() -> Self {
        Self {
            liveness: Liveness::NotRunning,
            name: String::new(),
            state: "idlegrid is not running".to_owned(),
            image: None,
            slots: Vec::new(),
            tasks_today: 0,
            tasks_total: 0,
            cpu_today: Duration::ZERO,
            cpu_total: Duration::ZERO,
        }
    }

    /// The feed of an in-process engine's snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        Self {
            liveness: Liveness::Live,
            name: s.name.clone(),
            state: state_line(s),
            image: compose_newest(&s.tiles),
            slots: s
                .tasks
                .iter()
                .take(MAX_SLOTS)
                .map(|t| SlotView {
                    job: t.job.0.clone(),
                    kind: t.kind.clone(),
                    progress: clamp_progress(t.progress),
                    state: match t.state {
                        TaskState::Fetching => "fetching",
                        TaskState::Running => "running",
                        TaskState::Paused => "paused",
                        TaskState::Reporting => "reporting",
                    }
                    .to_owned(),
                })
                .collect(),
            tasks_today: s.contribution.tasks_today,
            tasks_total: s.contribution.tasks_total,
            cpu_today: s.contribution.cpu_today,
            cpu_total: s.contribution.cpu_total,
        }
    }

    /// Whether any slot runs something other than a Mandelbrot tile (the view then shows rings).
    pub fn shows_rings(&self) -> bool {
        self.image.is_none() || self.slots.iter().any(|s| s.kind != "mandelbrot")
    }
}

fn clamp_progress(p: f32) -> f32 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

fn state_line(s: &Snapshot) -> String {
    match &s.connection {
        Connection::NotConfigured => return "not set up yet".to_owned(),
        Connection::Disconnected { .. } => return "disconnected".to_owned(),
        Connection::Refused { .. } => return "refused by the supervisor".to_owned(),
        Connection::Connecting | Connection::Connected { .. } => {}
    }
    match &s.idle {
        IdleState::Idle if s.tasks.iter().any(|t| t.state == TaskState::Running) => {
            "computing".to_owned()
        }
        IdleState::Idle => "waiting for work".to_owned(),
        IdleState::Busy(Busy::Starting) | IdleState::Busy(Busy::Owner(_)) => {
            "waiting for idle".to_owned()
        }
        IdleState::Busy(Busy::Snoozed) => "paused by you".to_owned(),
        IdleState::Busy(Busy::OnBattery) => "paused: on battery".to_owned(),
        IdleState::Busy(Busy::Schedule) => "paused: outside the schedule".to_owned(),
        IdleState::Busy(Busy::ExclusiveProgram) => "paused: an exclusive program runs".to_owned(),
        IdleState::Busy(Busy::Thermal) => "paused: too hot".to_owned(),
        IdleState::Busy(Busy::Fullscreen) => "paused: a full-screen window".to_owned(),
    }
}

/// The tiles of the newest job (the job of the last tile), composed into one image. Tiles whose
/// sizes disagree with the first of their job, or whose pixels do not fill their rows, are
/// skipped: they come from the engine, but a screensaver must not trust sizes blindly.
fn compose_newest(tiles: &[std::sync::Arc<TileImage>]) -> Option<FeedImage> {
    let newest = tiles.last()?;
    let (width, height) = (newest.width, newest.height);
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 || pixels > crate::runtime::mandelbrot::MAX_PIXELS {
        return None;
    }
    // A whole factor so that the scaled image stays under the bound; 1 for every usual size.
    let mut step = 1u32;
    while pixels / (u64::from(step) * u64::from(step)) > MAX_FEED_PIXELS {
        step += 1;
    }
    let (w, h) = (width.div_ceil(step), height.div_ceil(step));
    let mut rgba = vec![0u8; 4 * w as usize * h as usize];
    let mut filled = vec![false; h as usize];
    for tile in tiles.iter().filter(|t| t.job == newest.job) {
        if tile.width != width || tile.height != height || tile.y0 >= tile.y1 || tile.y1 > height {
            continue;
        }
        let row_bytes = 4 * width as usize;
        if tile.rgba.len() != row_bytes * (tile.y1 - tile.y0) as usize {
            continue;
        }
        // Rows of the scaled image whose source row (y * step) lies in this tile.
        for y in tile.y0.div_ceil(step)..h {
            let src_y = y * step;
            if src_y >= tile.y1 {
                break;
            }
            let src = &tile.rgba[(src_y - tile.y0) as usize * row_bytes..][..row_bytes];
            let dst = &mut rgba[y as usize * 4 * w as usize..][..4 * w as usize];
            for (x, out) in dst.chunks_exact_mut(4).enumerate() {
                let s = &src[x * step as usize * 4..][..4];
                out.copy_from_slice(&[s[0], s[1], s[2], 255]);
            }
            filled[y as usize] = true;
        }
    }
    Some(FeedImage {
        job: newest.job.0.clone(),
        width: w,
        height: h,
        rgba,
        rows_filled: filled.iter().filter(|f| **f).count() as u32,
    })
}

/// The summary on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    version: u32,
    /// The publishing process, to tell a running client from a stopped one.
    pid: u32,
    written_unix_ms: u64,
    name: String,
    state: String,
    slots: Vec<SlotView>,
    tasks_today: u64,
    tasks_total: u64,
    cpu_today_ms: u64,
    cpu_total_ms: u64,
    image: Option<ImageRef>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageRef {
    /// A file name inside the feed folder (no separators).
    file: String,
    job: String,
    width: u32,
    height: u32,
    rows_filled: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("no screensaver feed in {}", .0.display())]
    Missing(PathBuf),
    #[error("screensaver feed {}: {reason}", file.display())]
    Bad { file: PathBuf, reason: String },
}

/// Writes the feed of `snapshot` into `data_dir/screensaver/`. The image is encoded only when
/// it changed (its file name is a digest of what it shows); older images are removed once the
/// summary points past them, all but the previous one, which a reader may be opening.
pub fn publish(data_dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let feed = SaverFeed::from_snapshot(snapshot);
    let dir = data_dir.join(FEED_DIR);
    std::fs::create_dir_all(&dir)?;
    let image = match &feed.image {
        None => None,
        Some(img) => {
            let file = format!("image-{:016x}.png", digest(img));
            let path = dir.join(&file);
            if !path.exists() {
                let png = encode_png(img)?;
                write_atomic(&path, &png)?;
            }
            Some(ImageRef {
                file,
                job: img.job.clone(),
                width: img.width,
                height: img.height,
                rows_filled: img.rows_filled,
            })
        }
    };
    let current = image.as_ref().map(|i| i.file.clone());
    let summary = Summary {
        version: FEED_VERSION,
        pid: std::process::id(),
        written_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        name: feed.name,
        state: feed.state,
        slots: feed.slots,
        tasks_today: feed.tasks_today,
        tasks_total: feed.tasks_total,
        cpu_today_ms: feed.cpu_today.as_millis() as u64,
        cpu_total_ms: feed.cpu_total.as_millis() as u64,
        image,
    };
    let json = serde_json::to_vec(&summary).map_err(std::io::Error::other)?;
    let summary_path = dir.join(SUMMARY_FILE);
    let previous = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Summary>(&b).ok())
        .and_then(|s| s.image.map(|i| i.file));
    write_atomic(&summary_path, &json)?;
    remove_old_images(&dir, current.as_deref(), previous.as_deref());
    Ok(())
}

fn remove_old_images(dir: &Path, keep: Option<&str>, previous: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("image-")
            && name.ends_with(".png")
            && Some(name) != keep
            && Some(name) != previous
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// FNV-1a over what the image shows: it names the file, so an unchanged image is not re-encoded.
fn digest(img: &FeedImage) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(img.job.as_bytes());
    eat(&img.width.to_le_bytes());
    eat(&img.height.to_le_bytes());
    eat(&img.rgba);
    h
}

fn encode_png(img: &FeedImage) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(&img.rgba)
        .map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)?;
    Ok(out)
}

/// Writes to a temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a feed file has no folder"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads the feed a client published into `data_dir`. A feed whose publisher has stopped comes
/// back marked [`Liveness::NotRunning`]; one that is missing or damaged is an error (see
/// [`FeedReader`] for a reader that never fails).
pub fn read(data_dir: &Path) -> Result<SaverFeed, FeedError> {
    let dir = data_dir.join(FEED_DIR);
    let summary_path = dir.join(SUMMARY_FILE);
    let bad = |file: &Path, reason: String| FeedError::Bad {
        file: file.to_owned(),
        reason,
    };
    let bytes = match read_bounded(&summary_path, MAX_SUMMARY_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FeedError::Missing(dir));
        }
        Err(e) => return Err(bad(&summary_path, e.to_string())),
    };
    let s: Summary = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&summary_path, format!("not a feed summary: {e}")))?;
    if s.version != FEED_VERSION {
        return Err(bad(
            &summary_path,
            format!("version {} (this build reads {FEED_VERSION})", s.version),
        ));
    }
    let image = match s.image {
        None => None,
        Some(r) => Some(read_image(&dir, &r)?),
    };
    Ok(SaverFeed {
        liveness: if process_alive(s.pid) {
            Liveness::Live
        } else {
            Liveness::NotRunning
        },
        name: s.name,
        state: s.state,
        image,
        slots: s
            .slots
            .into_iter()
            .take(MAX_SLOTS)
            .map(|mut v| {
                v.progress = clamp_progress(v.progress);
                v
            })
            .collect(),
        tasks_today: s.tasks_today,
        tasks_total: s.tasks_total,
        cpu_today: Duration::from_millis(s.cpu_today_ms),
        cpu_total: Duration::from_millis(s.cpu_total_ms),
    })
}

fn read_image(dir: &Path, r: &ImageRef) -> Result<FeedImage, FeedError> {
    let path = dir.join(&r.file);
    let bad = |reason: String| FeedError::Bad {
        file: path.clone(),
        reason,
    };
    if r.file.contains(['/', '\\']) || r.file.starts_with('.') {
        return Err(bad(
            "the image is not named as a file in the feed folder".into()
        ));
    }
    if u64::from(r.width) * u64::from(r.height) > MAX_FEED_PIXELS || r.width == 0 || r.height == 0 {
        return Err(bad(format!(
            "image size {}x{} out of bounds",
            r.width, r.height
        )));
    }
    let bytes = read_bounded(&path, 8 * MAX_FEED_PIXELS).map_err(|e| bad(e.to_string()))?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let info = reader.info();
    if (info.width, info.height) != (r.width, r.height)
        || info.color_type != png::ColorType::Rgba
        || info.bit_depth != png::BitDepth::Eight
    {
        return Err(bad(format!(
            "image is {}x{} {:?}, the summary says {}x{} RGBA",
            info.width, info.height, info.color_type, r.width, r.height
        )));
    }
    let mut rgba = vec![0u8; 4 * r.width as usize * r.height as usize];
    reader
        .next_frame(&mut rgba)
        .map_err(|e| bad(e.to_string()))?;
    Ok(FeedImage {
        job: r.job.clone(),
        width: r.width,
        height: r.height,
        rgba,
        rows_filled: r.rows_filled.min(r.height),
    })
}

fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Reads a published feed now and then, and never fails: a missing or damaged feed gives the
/// last one read (marked not running when it cannot be read at all), or [`SaverFeed::not_running`].
#[derive(Debug)]
pub struct FeedReader {
    data_dir: PathBuf,
    last: Option<SaverFeed>,
    /// The latest reason a read failed, for a log line.
    pub last_error: Option<String>,
}

impl FeedReader {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            last: None,
            last_error: None,
        }
    }

    /// Reads the feed again.
    pub fn poll(&mut self) -> SaverFeed {
        match read(&self.data_dir) {
            Ok(feed) => {
                self.last_error = None;
                self.last = Some(feed.clone());
                feed
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                match &self.last {
                    // Half-written or just replaced: what was last read still holds, and a
                    // missing feed means the client removed it or never ran.
                    Some(last) if !matches!(e, FeedError::Missing(_)) => last.clone(),
                    Some(last) => SaverFeed {
                        liveness: Liveness::NotRunning,
                        ..last.clone()
                    },
                    None => SaverFeed::not_running(),
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::snapshot::TileImage;
    use std::sync::Arc;

    /// A 4-tile job `w`x`h`, with the tiles at `present` filled in a colour per tile.
    pub(crate) fn tiles(w: u32, h: u32, present: &[u32]) -> Vec<Arc<TileImage>> {
        let band = h / 4;
        present
            .iter()
            .map(|&i| {
                let (y0, y1) = (i * band, if i == 3 { h } else { (i + 1) * band });
                let px = [40 + 50 * i as u8, 200, 100, 255];
                Arc::new(TileImage {
                    job: "job-1".into(),
                    width: w,
                    height: h,
                    y0,
                    y1,
                    rgba: px.repeat((w * (y1 - y0)) as usize),
                })
            })
            .collect()
    }

    #[test]
    fn composed_image_has_pixels_only_in_the_rows_of_present_tiles() {
        let img = compose_newest(&tiles(8, 8, &[0, 2])).unwrap();
        assert_eq!((img.width, img.height, img.rows_filled), (8, 8, 4));
        let alpha = |y: usize| img.rgba[y * 32 + 3];
        assert_eq!(
            (0..8).map(alpha).collect::<Vec<_>>(),
            [255, 255, 0, 0, 255, 255, 0, 0]
        );
    }

    #[test]
    fn tiles_with_wrong_sizes_are_skipped_not_trusted() {
        let mut t = tiles(8, 8, &[0, 1]);
        let mut bad = (*t[1]).clone();
        bad.rgba.truncate(10);
        t[1] = Arc::new(bad);
        let img = compose_newest(&t).unwrap();
        assert_eq!(img.rows_filled, 2);
    }

    pub(crate) fn snapshot(tiles: Vec<Arc<TileImage>>) -> Snapshot {
        use crate::client::snapshot::*;
        Snapshot {
            taken: std::time::Instant::now(),
            supervisor: Some("ws://127.0.0.1:7400/worker".into()),
            worker_id: None,
            name: "desk".into(),
            connection: Connection::Connected {
                heartbeat: Duration::from_secs(1),
            },
            idle: IdleState::Idle,
            idle_in: None,
            detail: PauseDetail::default(),
            tasks: vec![TaskView {
                replica: crate::proto::ReplicaId::new(1, 1),
                job: "job-1".into(),
                task: "t1".into(),
                kind: "primes".into(),
                state: TaskState::Running,
                progress: 0.4,
                elapsed: Duration::from_secs(3),
                remaining: None,
            }],
            outbox: 0,
            contribution: Contribution {
                tasks_today: 7,
                cpu_today: Duration::from_secs(600),
                tasks_total: 91,
                cpu_total: Duration::from_secs(36_000),
                per_day: Vec::new(),
            },
            capacity: CapacityView::default(),
            events: Vec::new(),
            sources: Vec::new(),
            source_problems: Vec::new(),
            last_activity: None,
            paused_at: None,
            settings: Arc::new(crate::client::settings::Settings::default()),
            settings_path: None,
            settings_result: None,
            tiles,
        }
    }

    #[test]
    fn a_published_feed_reads_back_as_the_snapshot_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let snap = snapshot(tiles(16, 8, &[1, 3]));
        publish(dir.path(), &snap).unwrap();
        let back = read(dir.path()).unwrap();
        let want = SaverFeed::from_snapshot(&snap);
        assert_eq!(back, want);
        assert_eq!(back.liveness, Liveness::Live);
        assert_eq!((back.tasks_today, back.tasks_total), (7, 91));
        assert_eq!(back.slots[0].kind, "primes");
        assert_eq!(back.image.as_ref().unwrap().rows_filled, 4);

        // More tiles: a new image replaces the old one, and old files do not pile up.
        for n in [vec![0, 1, 3], vec![0, 1, 2, 3]] {
            publish(dir.path(), &snapshot(tiles(16, 8, &n))).unwrap();
        }
        let back = read(dir.path()).unwrap();
        assert_eq!(back.image.unwrap().rows_filled, 8);
        let images = std::fs::read_dir(dir.path().join(FEED_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("image-")
            })
            .count();
        assert!(images <= 2, "{images} image files kept");
    }

    #[test]
    fn a_missing_or_half_written_feed_shows_not_running_or_the_last_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = FeedReader::new(dir.path());
        // Nothing published yet.
        assert!(matches!(read(dir.path()), Err(FeedError::Missing(_))));
        assert_eq!(reader.poll(), SaverFeed::not_running());

        publish(dir.path(), &snapshot(tiles(16, 8, &[0]))).unwrap();
        let good = reader.poll();
        assert_eq!(good.liveness, Liveness::Live);

        // A summary cut short (a crash mid-write by some other writer).
        let summary = dir.path().join(FEED_DIR).join(SUMMARY_FILE);
        let bytes = std::fs::read(&summary).unwrap();
        std::fs::write(&summary, &bytes[..bytes.len() / 2]).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("feed.json"), "{err}");
        assert_eq!(reader.poll(), good);
        assert!(reader.last_error.is_some());

        // A whole summary whose image is cut short.
        std::fs::write(&summary, &bytes).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let image = dir
            .path()
            .join(FEED_DIR)
            .join(v["image"]["file"].as_str().unwrap());
        let png = std::fs::read(&image).unwrap();
        std::fs::write(&image, &png[..png.len() / 2]).unwrap();
        assert!(read(dir.path()).is_err());
        assert_eq!(reader.poll(), good);

        // The feed removed: the last one read, marked not running.
        std::fs::remove_dir_all(dir.path().join(FEED_DIR)).unwrap();
        let gone = reader.poll();
        assert_eq!(gone.liveness, Liveness::NotRunning);
        assert_eq!(gone.tasks_total, good.tasks_total);
    }

    #[test]
    fn a_feed_from_a_stopped_client_is_marked_not_running() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), &snapshot(Vec::new())).unwrap();
        let summary = dir.path().join(FEED_DIR).join(SUMMARY_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        // A child that has exited and been reaped: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        v["pid"] = pid.into();
        std::fs::write(&summary, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(read(dir.path()).unwrap().liveness, Liveness::NotRunning);
    }

    #[test]
    fn a_summary_pointing_outside_the_feed_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), &snapshot(tiles(16, 8, &[0]))).unwrap();
        let summary = dir.path().join(FEED_DIR).join(SUMMARY_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        v["image"]["file"] = "../../etc/passwd".into();
        std::fs::write(&summary, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not named as a file"), "{err}");
    }

    #[test]
    fn huge_images_are_scaled_down_under_the_bound() {
        let t = vec![Arc::new(TileImage {
            job: "j".into(),
            width: 4096,
            height: 2048,
            y0: 0,
            y1: 2,
            rgba: vec![9; 4 * 4096 * 2],
        })];
        let img = compose_newest(&t).unwrap();
        assert!(u64::from(img.width) * u64::from(img.height) <= MAX_FEED_PIXELS);
        assert_eq!(img.rows_filled, 1);
    }
}
