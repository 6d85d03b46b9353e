//! PNG charts of simulator runs: a Gantt chart of one run (a row per worker, a bar per replica,
//! shaded spells when the owner was busy) and grouped bars for a scenario x policy table.
//!
//! Owns only drawing and PNG writing: callers turn their run records into [`GanttRow`]s and
//! [`Series`]; nothing here knows the scheduler. Input is checked before anything is drawn, and
//! every failure comes back as a [`ChartError`] naming the file and the cause (never a panic).
//!
//! Text goes through `ab_glyph` with an embedded font (`assets/fonts/`), so drawing needs no
//! system font library and looks the same on every machine. The image is drawn into memory and
//! encoded with `png`, then written in one go: a failed chart leaves no half-written file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, Glyph, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
};

/// How a replica's bar ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarOutcome {
    /// Its result was the one accepted.
    Won,
    /// Stopped by the scheduler (another replica won, or the job was cancelled).
    Cancelled,
    /// The worker went away or stopped answering while it ran.
    Lost,
    /// The task reported an error.
    Failed,
}

/// One replica's run on a worker, in seconds since the run started.
#[derive(Debug, Clone, PartialEq)]
pub struct GanttBar {
    pub start_s: f64,
    pub end_s: f64,
    pub outcome: BarOutcome,
}

/// One worker's row.
#[derive(Debug, Clone, PartialEq)]
pub struct GanttRow {
    pub label: String,
    pub bars: Vec<GanttBar>,
    /// Owner-busy spells `(start_s, end_s)`, shaded behind the bars.
    pub busy: Vec<(f64, f64)>,
}

/// One bar per group, e.g. a policy's value in each scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A chart that could not be made: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("chart {}: {problem}", path.display())]
pub struct ChartError {
    pub path: PathBuf,
    pub problem: ChartProblem,
}

/// What went wrong with a chart.
#[derive(Debug, thiserror::Error)]
pub enum ChartProblem {
    /// The rows, bars or series given cannot be drawn (the text says which one and why).
    #[error("bad input: {0}")]
    BadInput(String),
    /// The drawing library refused (a font or geometry problem on our side).
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("cannot encode the PNG: {0}")]
    Encode(String),
    #[error("cannot write the file: {0}")]
    Write(std::io::Error),
}

pub const WON: RGBColor = RGBColor(46, 160, 67);
pub const CANCELLED: RGBColor = RGBColor(232, 166, 35);
pub const LOST: RGBColor = RGBColor(214, 39, 40);
pub const FAILED: RGBColor = RGBColor(110, 0, 0);
pub const BUSY: RGBColor = RGBColor(214, 222, 240);
/// The horizontal reference line of [`grouped_bars_png`].
pub const REFERENCE: RGBColor = RGBColor(120, 40, 150);
/// Series colours in order (Okabe-Ito, distinguishable with the common colour-vision
/// deficiencies); a chart has at most this many series, so no two share a colour.
pub const SERIES_COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(86, 180, 233),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
    RGBColor(60, 60, 60),
];

/// Rows beyond this are sampled: 400 rows of 3 px would show neither labels nor bars.
pub const GANTT_MAX_ROWS: usize = 100;
pub const GANTT_WIDTH: u32 = 1400;
pub const BARS_HEIGHT: u32 = 640;

impl BarOutcome {
    fn colour(self) -> RGBColor {
        match self {
            BarOutcome::Won => WON,
            BarOutcome::Cancelled => CANCELLED,
            BarOutcome::Lost => LOST,
            BarOutcome::Failed => FAILED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BarOutcome::Won => "won",
            BarOutcome::Cancelled => "cancelled",
            BarOutcome::Lost => "lost",
            BarOutcome::Failed => "failed",
        }
    }

    const ALL: [BarOutcome; 4] = [
        BarOutcome::Won,
        BarOutcome::Cancelled,
        BarOutcome::Lost,
        BarOutcome::Failed,
    ];
}

const FONT: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// The embedded font, parsed once per process.
pub(crate) fn font() -> Result<&'static FontRef<'static>, String> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
        .ok_or_else(|| {
            "the embedded font assets/fonts/DejaVuSans-subset.ttf does not parse".to_string()
        })
}

type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;
type DrawResult = Result<(), DrawingErrorKind<BitmapError>>;

/// plotters' bitmap backend, with text laid out and drawn here from the embedded font.
/// plotters' own `ab_glyph` text drops each glyph's side bearing, which spaces letters unevenly
/// ("can celled"); its other font backend needs the system's fontconfig. Only the text calls
/// differ: shapes go straight to the bitmap.
struct Canvas<'a> {
    bitmap: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

/// Glyphs of one line of text placed from (0, 0) at the top left, and the box they fill.
pub(crate) struct Laid {
    pub(crate) glyphs: Vec<Glyph>,
    pub(crate) width: f32,
    pub(crate) height: f32,
}

pub(crate) fn lay_out(font: &FontRef<'static>, size: f32, text: &str) -> Laid {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut caret = 0.0f32;
    let mut previous = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, id);
        }
        glyphs.push(id.with_scale_and_position(size, ab_glyph::point(caret, scaled.ascent())));
        caret += scaled.h_advance(id);
        previous = Some(id);
    }
    Laid {
        glyphs,
        width: caret,
        height: scaled.ascent() - scaled.descent(),
    }
}

impl<'a> Canvas<'a> {
    fn new(rgb: &'a mut [u8], size: (u32, u32), font: &'static FontRef<'static>) -> Self {
        Canvas {
            bitmap: BitMapBackend::with_buffer(rgb, size),
            font,
        }
    }
}

impl DrawingBackend for Canvas<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }

    fn ensure_prepared(&mut self) -> DrawResult {
        self.bitmap.ensure_prepared()
    }

    fn present(&mut self) -> DrawResult {
        self.bitmap.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> DrawResult {
        self.bitmap.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> DrawResult {
        self.bitmap.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> DrawResult {
        self.bitmap.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<BitmapError>> {
        let laid = lay_out(self.font, style.size() as f32, text);
        let (w, h) = (laid.width.ceil() as u32, laid.height.ceil() as u32);
        Ok(match style.transform() {
            FontTransform::Rotate90 | FontTransform::Rotate270 => (h, w),
            _ => (w, h),
        })
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> DrawResult {
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let font = self.font;
        let laid = lay_out(font, style.size() as f32, text);
        let (w, h) = (laid.width.ceil() as i32, laid.height.ceil() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let (width, height) = self.get_size();
        for glyph in laid.glyphs {
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let mut result = Ok(());
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let local = (
                    bounds.min.x as i32 + x as i32 + dx,
                    bounds.min.y as i32 + y as i32 + dy,
                );
                let (tx, ty) = transform.transform(local.0, local.1);
                let (px, py) = (pos.0 + tx, pos.1 + ty);
                if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                    let shade = BackendColor {
                        alpha: colour.alpha * f64::from(coverage.min(1.0)),
                        rgb: colour.rgb,
                    };
                    result = self.bitmap.draw_pixel((px, py), shade);
                }
            });
            result?;
        }
        Ok(())
    }
}

/// Black text of the embedded font at `size` pixels.
fn text_style(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn bad(path: &Path, what: String) -> ChartError {
    ChartError {
        path: path.to_path_buf(),
        problem: ChartProblem::BadInput(what),
    }
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> ChartError + '_ {
    move |e| ChartError {
        path: path.to_path_buf(),
        problem: ChartProblem::Draw(e.to_string()),
    }
}

/// Which of `n` rows to draw, top to bottom: all of them up to `cap`, else `cap` evenly spaced
/// ones that include the first and the last.
fn sampled_rows(n: usize, cap: usize) -> Vec<usize> {
    if n <= cap {
        return (0..n).collect();
    }
    if cap <= 1 {
        return vec![0];
    }
    (0..cap)
        .map(|i| (i * (n - 1) + (cap - 1) / 2) / (cap - 1))
        .collect()
}

fn check_span(
    path: &Path,
    what: &dyn Fn() -> String,
    start: f64,
    end: f64,
) -> Result<(), ChartError> {
    if !start.is_finite() || !end.is_finite() {
        return Err(bad(
            path,
            format!("{} is not a finite time ({start} .. {end})", what()),
        ));
    }
    if start < 0.0 {
        return Err(bad(path, format!("{} starts before 0 s ({start})", what())));
    }
    if end < start {
        return Err(bad(
            path,
            format!("{} ends before it starts ({start} .. {end})", what()),
        ));
    }
    Ok(())
}

fn validate_gantt(path: &Path, rows: &[GanttRow]) -> Result<f64, ChartError> {
    if rows.is_empty() {
        return Err(bad(
            path,
            "no rows: a Gantt chart needs at least one worker".into(),
        ));
    }
    let mut x_max: f64 = 0.0;
    let mut anything = false;
    for row in rows {
        for (i, b) in row.bars.iter().enumerate() {
            let what = || format!("row {:?} bar {i}", row.label);
            check_span(path, &what, b.start_s, b.end_s)?;
            x_max = x_max.max(b.end_s);
            anything = true;
        }
        for (i, &(s, e)) in row.busy.iter().enumerate() {
            let what = || format!("row {:?} busy spell {i}", row.label);
            check_span(path, &what, s, e)?;
            x_max = x_max.max(e);
            anything = true;
        }
    }
    if !anything {
        return Err(bad(
            path,
            format!("none of the {} rows has a bar or a busy spell", rows.len()),
        ));
    }
    Ok(if x_max > 0.0 { x_max } else { 1.0 })
}

/// Shortens `text` with an ellipsis until it fits `max_px` in `font`.
fn fit_text(
    area: &DrawingArea<Canvas<'_>, Shift>,
    text: &str,
    font: &TextStyle<'_>,
    max_px: u32,
) -> String {
    let width = |s: &str| {
        area.estimate_text_size(s, font)
            .map(|(w, _)| w)
            .unwrap_or(0)
    };
    if width(text) <= max_px {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "…";
        if width(&candidate) <= max_px {
            return candidate;
        }
    }
    String::new()
}

/// Side of a legend's colour swatch, in pixels.
const SWATCH: i32 = 15;

/// A legend entry's mark before its text.
#[derive(Clone, Copy)]
enum Mark {
    Swatch(RGBColor),
    Line(RGBColor),
    /// Text only, e.g. how many rows are shown.
    None,
}

struct LegendEntry {
    mark: Mark,
    text: String,
}

/// Draws the title and, below it, legend entries wrapped to the width; returns the height used.
fn draw_header(
    root: &DrawingArea<Canvas<'_>, Shift>,
    title: &str,
    entries: &[LegendEntry],
    width: u32,
    draw: bool,
) -> Result<u32, String> {
    let title_font = text_style(22);
    let font = text_style(15);
    let title = fit_text(root, title, &title_font, width.saturating_sub(40));
    if draw {
        root.draw(&Text::new(title, (20, 12), title_font))
            .map_err(|e| e.to_string())?;
    }
    let (mut x, mut y) = (20i32, 46i32);
    for entry in entries {
        let mark_w = if matches!(entry.mark, Mark::None) {
            0
        } else {
            22
        };
        // An entry longer than the whole line is shortened rather than drawn off the edge.
        let text = fit_text(
            root,
            &entry.text,
            &font,
            width.saturating_sub(80 + mark_w as u32),
        );
        let (text_w, _) = root
            .estimate_text_size(&text, &font)
            .map_err(|e| e.to_string())?;
        let entry_w = mark_w + text_w as i32 + 22;
        if x > 20 && x + entry_w > width as i32 - 20 {
            x = 20;
            y += 24;
        }
        if draw {
            match entry.mark {
                Mark::Line(colour) => root.draw(&Rectangle::new(
                    [(x, y + 6), (x + 16, y + 9)],
                    colour.filled(),
                )),
                Mark::Swatch(colour) => root.draw(&Rectangle::new(
                    [(x, y), (x + SWATCH, y + SWATCH)],
                    colour.filled(),
                )),
                Mark::None => Ok(()),
            }
            .map_err(|e| e.to_string())?;
            root.draw(&Text::new(
                text,
                (x + mark_w, y + 8),
                font.pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(|e| e.to_string())?;
        }
        x += entry_w;
    }
    Ok(y as u32 + 26)
}

fn encode_and_write(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), ChartError> {
    let encode = |e: png::EncodingError| ChartError {
        path: path.to_path_buf(),
        problem: ChartProblem::Encode(e.to_string()),
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(encode)?;
        writer.write_image_data(rgb).map_err(encode)?;
        writer.finish().map_err(encode)?;
    }
    std::fs::write(path, &bytes).map_err(|e| ChartError {
        path: path.to_path_buf(),
        problem: ChartProblem::Write(e),
    })
}

/// A Gantt chart of a run: one row per worker, x = seconds since the run started. Bars are
/// coloured by outcome (won green, cancelled amber, lost red, failed dark red) over light
/// shading where the owner was busy. The legend counts every bar of every row. More than
/// [`GANTT_MAX_ROWS`] rows are sampled evenly (first and last included) and the legend says
/// how many are shown, so the image stays legible at a few hundred workers.
pub fn gantt_png(path: &Path, title: &str, rows: &[GanttRow]) -> Result<(), ChartError> {
    let x_max = validate_gantt(path, rows)?;
    let font = font().map_err(draw_err(path))?;

    let shown = sampled_rows(rows.len(), GANTT_MAX_ROWS);
    let row_h: u32 = if shown.len() <= 40 { 24 } else { 14 };
    let label_w: u32 = 170;
    let x_axis_h: u32 = 56;

    let mut counts = [0usize; 4];
    for bar in rows.iter().flat_map(|r| &r.bars) {
        counts[bar.outcome as usize] += 1;
    }
    let mut entries: Vec<LegendEntry> = BarOutcome::ALL
        .iter()
        .map(|o| LegendEntry {
            mark: Mark::Swatch(o.colour()),
            text: format!("{} ({})", o.name(), counts[*o as usize]),
        })
        .collect();
    entries.push(LegendEntry {
        mark: Mark::Swatch(BUSY),
        text: "owner busy".into(),
    });
    if shown.len() < rows.len() {
        entries.push(LegendEntry {
            mark: Mark::None,
            text: format!(
                "{} of {} workers shown, evenly spaced",
                shown.len(),
                rows.len()
            ),
        });
    }

    let width = GANTT_WIDTH;
    // The header's height depends on how the legend wraps: measure it on a scratch area first.
    let header_h = {
        let mut scratch = vec![255u8; (width * 8 * 3) as usize];
        let area = Canvas::new(&mut scratch, (width, 8), font).into_drawing_area();
        draw_header(&area, title, &entries, width, false).map_err(draw_err(path))?
    };
    let height = header_h + shown.len() as u32 * row_h + x_axis_h + 8;

    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = Canvas::new(&mut rgb, (width, height), font).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(path))?;
        draw_header(&root, title, &entries, width, true).map_err(draw_err(path))?;
        let (_, body) = root.split_vertically(header_h);
        let n = shown.len() as f64;
        let mut chart = ChartBuilder::on(&body)
            .margin_top(4)
            .margin_right(30)
            .x_label_area_size(x_axis_h)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0f64..x_max, 0f64..n)
            .map_err(draw_err(path))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(14)
            .x_desc("seconds since the run started")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(220, 220, 220))
            .draw()
            .map_err(draw_err(path))?;

        // Top row is the first one: row k spans y in [n-k-1, n-k].
        let label_font = text_style(if row_h >= 20 { 14 } else { 11 });
        for (k, &i) in shown.iter().enumerate() {
            let row = &rows[i];
            let top = n - k as f64;
            let bottom = top - 1.0;
            chart
                .draw_series(
                    row.busy
                        .iter()
                        .map(|&(s, e)| Rectangle::new([(s, bottom), (e, top)], BUSY.filled())),
                )
                .map_err(draw_err(path))?;
            for b in &row.bars {
                let (x0, y0) = chart.backend_coord(&(b.start_s, top - 0.18));
                let (x1, y1) = chart.backend_coord(&(b.end_s, bottom + 0.18));
                // A pixel of gap at the start of a wide bar tells back-to-back replicas apart.
                let x0 = if x1 - x0 >= 4 { x0 + 1 } else { x0 };
                // An instant (or sub-pixel) replica still shows, as a 1-pixel line.
                let x1 = x1.max(x0 + 1);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    b.outcome.colour().filled(),
                ))
                .map_err(draw_err(path))?;
            }
            let (x0, y) = chart.backend_coord(&(0.0, bottom + 0.5));
            let text = fit_text(&root, &row.label, &label_font, label_w - 14);
            root.draw(&Text::new(
                text,
                (x0 - 8, y),
                label_font.clone().pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(draw_err(path))?;
        }
        root.present().map_err(draw_err(path))?;
    }
    encode_and_write(path, &rgb, width, height)
}

fn validate_bars(
    path: &Path,
    groups: &[String],
    series: &[Series],
    reference: Option<f64>,
) -> Result<f64, ChartError> {
    if groups.is_empty() {
        return Err(bad(
            path,
            "no groups: a bar chart needs at least one".into(),
        ));
    }
    if series.is_empty() {
        return Err(bad(
            path,
            "no series: a bar chart needs at least one".into(),
        ));
    }
    if series.len() > SERIES_COLOURS.len() {
        return Err(bad(
            path,
            format!(
                "{} series: at most {} can be told apart by colour",
                series.len(),
                SERIES_COLOURS.len()
            ),
        ));
    }
    let mut y_max: f64 = 0.0;
    for s in series {
        if s.values.len() != groups.len() {
            return Err(bad(
                path,
                format!(
                    "series {:?} has {} values for {} groups",
                    s.name,
                    s.values.len(),
                    groups.len()
                ),
            ));
        }
        for (g, &v) in groups.iter().zip(&s.values) {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(
                    path,
                    format!(
                        "series {:?} group {g:?}: value {v} is not a finite number >= 0",
                        s.name
                    ),
                ));
            }
            y_max = y_max.max(v);
        }
    }
    if let Some(r) = reference {
        if !r.is_finite() || r < 0.0 {
            return Err(bad(
                path,
                format!("reference line {r} is not a finite number >= 0"),
            ));
        }
        y_max = y_max.max(r);
    }
    Ok(if y_max > 0.0 { y_max * 1.15 } else { 1.0 })
}

/// A value label short enough to sit over a bar.
fn value_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Grouped bars: a group per entry of `groups` (e.g. scenarios), a bar per series within it
/// (e.g. policies, at most [`SERIES_COLOURS`]`.len()` = 8), each labelled with its value; a
/// legend names the series; the y axis is titled `y_label`. `reference` draws a horizontal line (e.g. 1.0 = ideal). The image widens
/// with the number of bars so that bars and their labels stay readable.
pub fn grouped_bars_png(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    reference: Option<f64>,
) -> Result<(), ChartError> {
    let y_max = validate_bars(path, groups, series, reference)?;
    let font = font().map_err(draw_err(path))?;

    const PAD: f64 = 0.1;
    let bar_min_px = 40.0;
    let group_px = (series.len() as f64 * bar_min_px / (1.0 - 2.0 * PAD)).max(110.0);
    let width = (groups.len() as f64 * group_px + 140.0).clamp(800.0, 3200.0) as u32;
    let height = BARS_HEIGHT;

    let mut entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(j, s)| LegendEntry {
            mark: Mark::Swatch(SERIES_COLOURS[j]),
            text: s.name.clone(),
        })
        .collect();
    if let Some(r) = reference {
        entries.push(LegendEntry {
            mark: Mark::Line(REFERENCE),
            text: format!("reference {}", value_label(r)),
        });
    }

    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = Canvas::new(&mut rgb, (width, height), font).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(path))?;
        let header_h = draw_header(&root, title, &entries, width, true).map_err(draw_err(path))?;
        let (_, body) = root.split_vertically(header_h);
        let x_axis_h = 44;
        let mut chart = ChartBuilder::on(&body)
            .margin_top(8)
            .margin_right(24)
            .x_label_area_size(x_axis_h)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..groups.len() as f64, 0f64..y_max)
            .map_err(draw_err(path))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(10)
            .y_max_light_lines(1)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(245, 245, 245))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(draw_err(path))?;

        let bar_w = (1.0 - 2.0 * PAD) / series.len() as f64;
        let bar_px = {
            let (a, _) = chart.backend_coord(&(0.0, 0.0));
            let (b, _) = chart.backend_coord(&(bar_w, 0.0));
            (b - a).max(1) as u32
        };
        // One label size for every bar, the largest at which the widest label fits its bar;
        // none at all if even the smallest would overlap its neighbours.
        let widest = series
            .iter()
            .flat_map(|s| s.values.iter().map(|&v| value_label(v)))
            .max_by_key(|l| l.chars().count())
            .unwrap_or_default();
        let label_size = (9..=14).rev().find(|&size| {
            root.estimate_text_size(&widest, &text_style(size))
                .map(|(w, _)| w + 4 <= bar_px)
                .unwrap_or(false)
        });

        for (j, s) in series.iter().enumerate() {
            let colour = SERIES_COLOURS[j];
            let x_of = |g: usize| g as f64 + PAD + j as f64 * bar_w;
            chart
                .draw_series(s.values.iter().enumerate().map(|(g, &v)| {
                    Rectangle::new([(x_of(g), 0.0), (x_of(g) + bar_w, v)], colour.filled())
                }))
                .map_err(draw_err(path))?;
            if let Some(size) = label_size {
                let font = text_style(size).pos(Pos::new(HPos::Center, VPos::Bottom));
                for (g, &v) in s.values.iter().enumerate() {
                    let (x, y) = chart.backend_coord(&(x_of(g) + bar_w / 2.0, v));
                    root.draw(&Text::new(value_label(v), (x, y - 3), font.clone()))
                        .map_err(draw_err(path))?;
                }
            }
        }
        if let Some(r) = reference {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, r), (groups.len() as f64, r)],
                    Color::stroke_width(&REFERENCE, 2),
                )))
                .map_err(draw_err(path))?;
        }

        let group_font = text_style(15).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, name) in groups.iter().enumerate() {
            let (x0, y) = chart.backend_coord(&(g as f64, 0.0));
            let (x1, _) = chart.backend_coord(&(g as f64 + 1.0, 0.0));
            let text = fit_text(&root, name, &group_font, (x1 - x0 - 6).max(1) as u32);
            root.draw(&Text::new(
                text,
                ((x0 + x1) / 2, y + 10),
                group_font.clone(),
            ))
            .map_err(draw_err(path))?;
        }
        root.present().map_err(draw_err(path))?;
    }
    encode_and_write(path, &rgb, width, height)
}

#[cfg(test)]
mod tests;
