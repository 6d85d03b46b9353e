//! The Mandelbrot render, a three-stage task graph: a plan, tiles that depend on it, and an
//! assembly that depends on the plan and every tile.
//!
//! - `mandelbrot_view` (plan). Input `{"width", "height", "center_re", "center_im", "span_re",
//!   "max_iter"?, "tiles"}`; `span_re` is the width of the view in the complex plane (pixels are
//!   square), `max_iter` defaults to more iterations the deeper the zoom. Output: the same fields
//!   as used (centre rounded to 15 significant digits, span to 10, so that they cross JSON text
//!   bit for bit; `max_iter` filled in), plus `"rows": [[y0, y1], ...]`, the half-open row band
//!   of each tile.
//! - `mandelbrot` (tile). Input `{"index": i}`; the plan is the one dependency output holding
//!   `"rows"`. Output `{"index", "y0", "y1", "width", "data"}`, where `data` is base64 of one
//!   little-endian `f32` per pixel, row-major over rows `y0..y1`: the smooth (fractional) escape
//!   count, `>= 0`, or [`INSIDE`] (negative) for a point that did not escape within `max_iter`.
//!   That is 4 bytes a pixel, about 5.4 once in base64. The assembly receives every tile in one
//!   assignment, so a view is refused at submission ([`check_view`]) when its tiles' outputs
//!   together, or the assembled PNG at worst, would exceed the supervisor's output limit
//!   [`DEFAULT_MAX_OUTPUT_BYTES`] (64 MiB of JSON text): about 12.5 M pixels at most. The
//!   kernels themselves accept up to [`MAX_PIXELS`] (as [`render_reference`] does, locally).
//! - `mandelbrot_assemble`. Input `{}` or `{"file": "name.png"}`; dependencies: the plan and all
//!   tiles. Checks that the tiles cover every row exactly once, colours them and outputs
//!   `{"width", "height", "tiles", "file": {"name", "media_type": "image/png", "base64"}}`.
//!
//! The image is byte-identical however it is split and wherever the tiles are computed: a pixel's
//! value depends only on the plan and its own position, and the per-pixel arithmetic (escape
//! count, logarithm, palette) uses only `+ - * /` and `sqrt`, which IEEE 754 rounds the same on
//! every machine, never libm functions that may differ in the last bit between platforms.
//!
//! This file owns the maths, the tile format and the palette; it does no I/O (the PNG is built in
//! memory and returned as data).

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::{Fields, Stop, TaskControl, TaskError, show};
use crate::proto::{DEFAULT_MAX_OUTPUT_BYTES, TaskId};

/// Largest image, in pixels: 256 MiB of tile values and 192 MiB of RGB at worst.
pub const MAX_PIXELS: u64 = 64 << 20;
/// Most tiles in one plan; far more than workers in any pool, and it keeps the plan small.
pub const MAX_TILES: u64 = 10_000;
pub const MAX_ITER: u64 = 65_535;
/// Tile value of a point that never escaped.
pub const INSIDE: f32 = -1.0;

/// Views outside these bounds show nothing of the set, or ask for more precision than `f64`
/// holds (below about 1e-12 neighbouring pixels round to the same point).
const CENTER_RANGE: std::ops::RangeInclusive<f64> = -10.0..=10.0;
const SPAN_RANGE: std::ops::RangeInclusive<f64> = 1e-12..=100.0;

/// Escape radius 256: large enough that the smooth count has no visible seams between bands.
const BAILOUT_SQ: f64 = 256.0 * 256.0;

/// Iterations between checkpoints inside a row: well under a millisecond of work, so a deep zoom
/// with rows of slow pixels still pauses promptly.
const WORK_PER_CHECK: u64 = 100_000;

/// Pixels coloured, or RGB bytes compressed, between checkpoints during assembly.
const PIXELS_PER_CHECK: usize = 16_384;

const DEFAULT_FILE: &str = "mandelbrot.png";

/// The fields of a view, then any more: a plan is a view plus its row bands.
macro_rules! view_fields {
    ($($more:literal),*) => {
        &["width", "height", "center_re", "center_im", "span_re", "max_iter", "tiles", $($more),*]
    };
}
const VIEW_FIELDS: &[&str] = view_fields!();
const PLAN_FIELDS: &[&str] = view_fields!("rows");
const TILE_FIELDS: &[&str] = &["index", "y0", "y1", "width", "data"];

/// A checked view: what the plan task outputs and every later stage re-checks, since it comes
/// back over the network.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    width: u32,
    height: u32,
    center_re: f64,
    center_im: f64,
    span_re: f64,
    max_iter: u32,
    tiles: u32,
}

impl Plan {
    /// Only the view input may leave `max_iter` out (`require_max_iter` false); the plan always
    /// carries the value chosen, so that every tile iterates alike.
    fn parse(fields: &Fields<'_>, require_max_iter: bool) -> Result<Self, TaskError> {
        let width = fields.u64("width", 1..=MAX_PIXELS)?;
        let height = fields.u64("height", 1..=MAX_PIXELS)?;
        if width * height > MAX_PIXELS {
            return Err(fields.bad(
                "height",
                format_args!(
                    "times \"width\" must be at most {MAX_PIXELS} pixels, got {width} x {height}"
                ),
            ));
        }
        let center_re = canonical(fields.f64("center_re", CENTER_RANGE)?, 15);
        let center_im = canonical(fields.f64("center_im", CENTER_RANGE)?, 15);
        let span_re = canonical(fields.f64("span_re", SPAN_RANGE)?, 10);
        let max_iter = match fields.opt_u64("max_iter", 1..=MAX_ITER)? {
            Some(n) => n,
            None if require_max_iter => fields.u64("max_iter", 1..=MAX_ITER)?,
            None => default_max_iter(span_re),
        };
        let tiles = fields.u64("tiles", 1..=height.min(MAX_TILES))?;
        // Every bound above is below u32::MAX.
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Self {
            width: narrow(width),
            height: narrow(height),
            center_re,
            center_im,
            span_re,
            max_iter: narrow(max_iter),
            tiles: narrow(tiles),
        })
    }

    /// Reads a plan that a `mandelbrot_view` task output.
    fn from_output(value: &Value, origin: &str) -> Result<Self, TaskError> {
        let fields = Fields::of(value, PLAN_FIELDS, origin)?;
        let plan = Self::parse(&fields, true)?;
        let rows = fields.required("rows", "an array of [y0, y1] bands")?;
        let matches = rows.as_array().is_some_and(|rows| {
            rows.len() == plan.tiles as usize
                && rows.iter().enumerate().all(|(i, band)| {
                    let (y0, y1) = plan.band(i as u32);
                    band.as_array().is_some_and(|b| {
                        b.len() == 2
                            && b[0].as_u64() == Some(y0.into())
                            && b[1].as_u64() == Some(y1.into())
                    })
                })
        });
        if !matches {
            return Err(fields.bad(
                "rows",
                format_args!(
                    "must be {} rows split evenly into {} bands, as mandelbrot_view makes them, \
                     got {}",
                    plan.height,
                    plan.tiles,
                    show(rows)
                ),
            ));
        }
        Ok(plan)
    }

    /// Rows `y0..y1` of tile `index`: bands differ in height by at most one row.
    fn band(&self, index: u32) -> (u32, u32) {
        let at = |i: u32| (u64::from(i) * u64::from(self.height) / u64::from(self.tiles)) as u32;
        (at(index), at(index + 1))
    }

    fn to_json(&self) -> Value {
        let rows: Vec<[u32; 2]> = (0..self.tiles).map(|i| self.band(i).into()).collect();
        json!({
            "width": self.width,
            "height": self.height,
            "center_re": self.center_re,
            "center_im": self.center_im,
            "span_re": self.span_re,
            "max_iter": self.max_iter,
            "tiles": self.tiles,
            "rows": rows,
        })
    }

    /// The point at the centre of pixel (x, y); the image's y axis points down the imaginary one.
    /// Computed from the pixel's position alone, never accumulated along a band, so a pixel has
    /// the same value in every tiling.
    fn point(&self, x: u32, y: u32) -> (f64, f64) {
        let step = self.span_re / f64::from(self.width);
        let re = self.center_re + (f64::from(x) + 0.5 - f64::from(self.width) * 0.5) * step;
        let im = self.center_im - (f64::from(y) + 0.5 - f64::from(self.height) * 0.5) * step;
        (re, im)
    }
}

/// `x` rounded to `digits` significant digits, and to a multiple of 10^-22 when tiny.
///
/// serde_json's default parser (without the `float_roundtrip` feature) reads a number exactly
/// only when its digits fit in 2^53 and its exponent is within 10^±22 (one correctly rounded
/// multiply or divide by an exact power of ten); a 17-digit number may come back an ulp off.
/// The plan's numbers travel as JSON text from the plan task through the supervisor to every
/// tile, perhaps re-encoded on the way, and one ulp moves every pixel a little, so the plan keeps
/// only numbers whose shortest form the parser reads back bit for bit. Idempotent.
fn canonical(x: f64, digits: usize) -> f64 {
    let rounded: f64 = format!("{x:.*e}", digits - 1).parse().unwrap_or(x);
    if rounded.abs() < 1e-8 {
        format!("{rounded:.22}").parse().unwrap_or(rounded)
    } else {
        rounded
    }
}

/// Deeper zooms need more iterations to show the boundary: 100 at the classic 3-wide view, 50
/// more each time the view halves.
fn default_max_iter(span_re: f64) -> u64 {
    (100.0 + 50.0 * log2(3.0 / span_re)).clamp(64.0, 20_000.0) as u64
}

pub(super) fn run_view(input: &Value) -> Result<Value, TaskError> {
    Ok(parse_view(input)?.to_json())
}

fn parse_view(input: &Value) -> Result<Plan, TaskError> {
    let fields = Fields::of(input, VIEW_FIELDS, "")?;
    Plan::parse(&fields, false)
}

/// What [`super::check_input`] runs for a view at submission: the view's fields, and that no
/// later stage of the render can produce more than [`DEFAULT_MAX_OUTPUT_BYTES`]. The tiles and
/// the assembly cannot check that themselves: by the time they run, the job is half done.
pub(super) fn check_view(input: &Value) -> Result<(), TaskError> {
    let plan = parse_view(input)?;
    let limit = DEFAULT_MAX_OUTPUT_BYTES;
    let tiles = plan.tiles_output_bytes();
    let png = plan.assembly_output_bytes_at_most();
    if tiles.max(png) <= limit {
        return Ok(());
    }
    let (what, bytes) = if tiles >= png {
        (
            "its tiles' outputs, which the assembly receives together, would total",
            tiles,
        )
    } else {
        ("its assembled PNG could take", png)
    };
    Err(TaskError::BadInput(format!(
        "the view is {} x {} = {} pixels; {what} {bytes} bytes of JSON text, more than the \
         supervisor's output limit of {} MiB (about {} pixels at most); render a smaller view \
         or several views",
        plan.width,
        plan.height,
        u64::from(plan.width) * u64::from(plan.height),
        limit >> 20,
        // Base64 of 4 bytes a pixel is 16/3 bytes a pixel.
        limit * 3 / 16,
    )))
}

/// Length of the base64 text of `bytes` bytes (padded).
fn base64_len(bytes: u64) -> u64 {
    bytes.div_ceil(3) * 4
}

/// A tile output's JSON text, beyond its base64: field names, punctuation and five integers
/// (`{"data":"","index":9999,"width":67108864,"y0":67108863,"y1":67108864}` is 68 characters).
const TILE_JSON_OVERHEAD: u64 = 128;
/// The assembly's JSON text, beyond its base64: field names, numbers and a file name of at
/// most 100 characters.
const ASSEMBLY_JSON_OVERHEAD: u64 = 512;

impl Plan {
    /// Exact upper bound of all tiles' output JSON text together.
    fn tiles_output_bytes(&self) -> u64 {
        (0..self.tiles)
            .map(|i| {
                let (y0, y1) = self.band(i);
                base64_len(4 * u64::from(self.width) * u64::from(y1 - y0)) + TILE_JSON_OVERHEAD
            })
            .sum()
    }

    /// A bound on the assembly's output JSON text, whatever the pixels: the PNG never exceeds
    /// its raw scanlines (a filter byte and 3 bytes a pixel) by more than deflate's stored-block
    /// headers and the 12 bytes of each 4 KiB IDAT chunk (under 1/64 of the data) plus the
    /// header chunks.
    fn assembly_output_bytes_at_most(&self) -> u64 {
        let raw = u64::from(self.height) * (1 + 3 * u64::from(self.width));
        base64_len(raw + raw / 64 + 4096) + ASSEMBLY_JSON_OVERHEAD
    }
}

/// The tile's index, checked against `tiles` (the plan's; at submission, before there is a plan,
/// the most any plan has).
fn parse_tile(input: &Value, tiles: u64) -> Result<u32, TaskError> {
    let fields = Fields::of(input, &["index"], "")?;
    // Below MAX_TILES, so it fits.
    Ok(fields.u64("index", 0..=tiles - 1)? as u32)
}

/// What [`super::check_input`] runs for a tile at submission.
pub(super) fn check_tile(input: &Value) -> Result<(), TaskError> {
    parse_tile(input, MAX_TILES).map(drop)
}

pub(super) fn run_tile(
    input: &Value,
    deps: &BTreeMap<TaskId, Value>,
    ctl: &TaskControl,
) -> Result<Value, TaskError> {
    let plan = find_plan(deps)?;
    let index = parse_tile(input, u64::from(plan.tiles))?;
    let (y0, y1) = plan.band(index);
    let bytes = render_rows(&plan, y0, y1, ctl)?;
    Ok(json!({
        "index": index,
        "y0": y0,
        "y1": y1,
        "width": plan.width,
        "data": BASE64.encode(bytes),
    }))
}

pub(super) fn run_assemble(
    input: &Value,
    deps: &BTreeMap<TaskId, Value>,
    ctl: &TaskControl,
) -> Result<Value, TaskError> {
    let name = parse_assemble(input)?;
    let image = assemble(deps, ctl)?;
    Ok(json!({
        "width": image.width,
        "height": image.height,
        "tiles": image.tiles,
        "file": { "name": name, "media_type": "image/png", "base64": BASE64.encode(&image.png) },
    }))
}

/// The output file's name, checked; also what [`super::check_input`] runs at submission.
pub(super) fn parse_assemble(input: &Value) -> Result<&str, TaskError> {
    let fields = Fields::of(input, &["file"], "")?;
    match fields.opt_str("file")? {
        None => Ok(DEFAULT_FILE),
        Some(name) if is_plain_png_name(name) => Ok(name),
        Some(name) => Err(fields.bad(
            "file",
            format_args!(
                "must be a plain file name ending in \".png\" (letters, digits, '.', '-', '_'; \
                 at most 100 characters; no directories), got {}",
                show(&Value::from(name))
            ),
        )),
    }
}

/// Renders the image a plan describes in one piece, through the same stages a distributed job
/// runs (plan, every tile, assembly), and returns the PNG bytes. A distributed render of the same
/// plan input is byte-identical to this.
pub fn render_reference(plan_input: &Value) -> Result<Vec<u8>, TaskError> {
    let ctl = TaskControl::new();
    let plan = parse_view(plan_input)?;
    let plan_only = BTreeMap::from([(TaskId::from("view"), plan.to_json())]);
    let mut deps = plan_only.clone();
    for index in 0..plan.tiles {
        let tile = run_tile(&json!({ "index": index }), &plan_only, &ctl)?;
        deps.insert(TaskId(format!("tile-{index}")), tile);
    }
    Ok(assemble(&deps, &ctl)?.png)
}

/// The one dependency output that is a plan (holds `"rows"`). Several identical copies are fine.
fn find_plan(deps: &BTreeMap<TaskId, Value>) -> Result<Plan, TaskError> {
    let mut found: Option<(&TaskId, &Value)> = None;
    for (id, output) in deps
        .iter()
        .filter(|(_, output)| output.get("rows").is_some())
    {
        match found {
            None => found = Some((id, output)),
            Some((_, first)) if first == output => {}
            Some((first_id, _)) => {
                return Err(TaskError::BadInput(format!(
                    "dependencies {:?} and {:?} are two different Mandelbrot plans; \
                     depend on exactly one mandelbrot_view task",
                    first_id.0, id.0
                )));
            }
        }
    }
    let Some((id, output)) = found else {
        return Err(TaskError::BadInput(format!(
            "no dependency is a Mandelbrot plan (an output with \"rows\" from a \
             mandelbrot_view task); dependencies: {}",
            name_ids(deps.keys())
        )));
    };
    Plan::from_output(output, &format!("plan from task {:?}", id.0))
}

/// Up to a few task ids for a message.
fn name_ids<'a>(ids: impl ExactSizeIterator<Item = &'a TaskId>) -> String {
    const SHOWN: usize = 5;
    let total = ids.len();
    if total == 0 {
        return "none".to_owned();
    }
    let mut text: Vec<String> = ids.take(SHOWN).map(|id| format!("{:?}", id.0)).collect();
    if total > SHOWN {
        text.push(format!("and {} more", total - SHOWN));
    }
    text.join(", ")
}

/// Smooth escape values of rows `y0..y1`, row-major, as little-endian `f32` bytes.
fn render_rows(plan: &Plan, y0: u32, y1: u32, ctl: &TaskControl) -> Result<Vec<u8>, Stop> {
    // Written straight in the tile format: no second full-size copy of a large band.
    let mut values = Vec::with_capacity((y1 - y0) as usize * plan.width as usize * 4);
    let mut work = 0u64;
    for y in y0..y1 {
        ctl.checkpoint()?;
        for x in 0..plan.width {
            let (re, im) = plan.point(x, y);
            let (value, iterations) = escape(re, im, plan.max_iter);
            values.extend_from_slice(&value.to_le_bytes());
            // A pixel costs something even when the bulb tests skip its iterations.
            work += u64::from(iterations) + 8;
            if work >= WORK_PER_CHECK {
                work = 0;
                ctl.checkpoint()?;
            }
        }
        ctl.set_progress((y + 1 - y0) as f32 / (y1 - y0) as f32);
    }
    Ok(values)
}

/// Smooth escape count of c = re + i·im and the iterations spent on it.
fn escape(re: f64, im: f64, max_iter: u32) -> (f32, u32) {
    // Points in the main cardioid or the period-2 bulb never escape; most inside pixels of the
    // usual views are there, and would otherwise cost max_iter each.
    let x = re - 0.25;
    let q = x * x + im * im;
    if q * (q + x) <= 0.25 * im * im || (re + 1.0) * (re + 1.0) + im * im <= 0.0625 {
        return (INSIDE, 0);
    }
    let (mut zr, mut zi, mut zr2, mut zi2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for n in 1..=max_iter {
        zi = 2.0 * zr * zi + im;
        zr = zr2 - zi2 + re;
        zr2 = zr * zr;
        zi2 = zi * zi;
        let modulus_sq = zr2 + zi2;
        if modulus_sq > BAILOUT_SQ {
            // n + 1 - log2(log2 |z|): continuous across escape counts.
            let smooth = f64::from(n) + 1.0 - log2(0.5 * log2(modulus_sq));
            return (smooth.max(0.0) as f32, n);
        }
    }
    (INSIDE, max_iter)
}

const LOG2_E: f64 = std::f64::consts::LOG2_E;

/// Base-2 logarithm from `+ - * /` only, so that every machine computes it to the same bit (see
/// the module doc). Accurate to about 1e-14; `x <= 0` and NaN give NaN, infinity gives infinity.
fn log2(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    if x.is_infinite() {
        return x;
    }
    let (mut x, mut exponent) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range so the exponent bits mean what they say.
        x *= 2f64.powi(64);
        exponent -= 64;
    }
    let bits = x.to_bits();
    exponent += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa *= 0.5;
        exponent += 1;
    }
    // ln m = 2 atanh(t) = 2 (t + t^3/3 + t^5/5 + ...) with |t| <= 0.172, so eight terms suffice.
    let t = (mantissa - 1.0) / (mantissa + 1.0);
    let t2 = t * t;
    let mut series = 1.0 / 15.0;
    for k in [13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        series = 1.0 / k + t2 * series;
    }
    exponent as f64 + 2.0 * t * series * LOG2_E
}

/// The palette, cyclic: deep blue, sky blue, white, orange, near black, and back to blue.
const STOPS: [(f64, [f64; 3]); 6] = [
    (0.0, [0.0, 7.0, 100.0]),
    (0.16, [32.0, 107.0, 203.0]),
    (0.42, [237.0, 255.0, 255.0]),
    (0.6425, [255.0, 170.0, 0.0]),
    (0.8575, [0.0, 2.0, 0.0]),
    (1.0, [0.0, 7.0, 100.0]),
];

/// Colour of one tile value as the assembly paints it (for the screensaver's partial image).
pub fn palette_rgb(value: f32) -> [u8; 3] {
    colour(value)
}

/// Colour of one tile value; inside points are black.
fn colour(value: f32) -> [u8; 3] {
    if value.is_nan() || value < 0.0 {
        return [0, 0, 0];
    }
    // The square root slows the cycling as counts grow, so shallow views get a full sweep of
    // colours near the set while deep zooms (counts in the thousands) do not turn to noise.
    let position = f64::from(value).sqrt() * 0.25;
    let phase = position - position.floor();
    let upper = STOPS
        .iter()
        .position(|&(at, _)| at > phase)
        .unwrap_or(STOPS.len() - 1)
        .max(1);
    let (a, from) = STOPS[upper - 1];
    let (b, to) = STOPS[upper];
    let t = ((phase - a) / (b - a)).clamp(0.0, 1.0);
    let mut rgb = [0u8; 3];
    for ((out, from), to) in rgb.iter_mut().zip(from).zip(to) {
        *out = (from + (to - from) * t + 0.5).clamp(0.0, 255.0) as u8;
    }
    rgb
}

/// A tile's pixels coloured as the assembly colours them.
#[derive(Debug, Clone, PartialEq)]
pub struct TilePixels {
    /// The whole image's size, from the plan.
    pub width: u32,
    pub height: u32,
    /// The tile's rows `y0..y1`.
    pub y0: u32,
    pub y1: u32,
    /// RGBA, row-major over the tile's rows: `4 * width * (y1 - y0)` bytes (alpha 255).
    pub rgba: Vec<u8>,
}

/// Colours the output of a `mandelbrot` tile task with the assembly's palette; `deps` are the
/// tile's dependency outputs (the plan among them). For a client that shows the tiles it
/// computed; errors name what does not fit.
pub fn tile_rgba(output: &Value, deps: &BTreeMap<TaskId, Value>) -> Result<TilePixels, TaskError> {
    let plan = find_plan(deps)?;
    let fields = Fields::of(output, TILE_FIELDS, "tile output")?;
    let index = fields.u64("index", 0..=u64::from(plan.tiles) - 1)?;
    let (y0, y1) = plan.band(index as u32);
    let data = fields.required("data", "base64 of the tile's pixels")?;
    let bytes = data
        .as_str()
        .and_then(|d| BASE64.decode(d).ok())
        .ok_or_else(|| fields.bad("data", format_args!("is not base64")))?;
    let pixels = plan.width as usize * (y1 - y0) as usize;
    if bytes.len() != pixels * 4 {
        return Err(fields.bad(
            "data",
            format_args!(
                "holds {} bytes; a tile of {} pixels has {}",
                bytes.len(),
                pixels,
                pixels * 4
            ),
        ));
    }
    let mut rgba = Vec::with_capacity(pixels * 4);
    for chunk in bytes.chunks_exact(4) {
        let value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        rgba.extend_from_slice(&colour(value));
        rgba.push(255);
    }
    Ok(TilePixels {
        width: plan.width,
        height: plan.height,
        y0,
        y1,
        rgba,
    })
}

struct Image {
    width: u32,
    height: u32,
    tiles: usize,
    png: Vec<u8>,
}

/// One tile output, checked against the plan; its data is decoded only once coverage is known.
struct Tile<'a> {
    id: &'a TaskId,
    y0: u32,
    y1: u32,
    data: &'a str,
}

fn assemble(deps: &BTreeMap<TaskId, Value>, ctl: &TaskControl) -> Result<Image, TaskError> {
    let plan = find_plan(deps)?;
    let mut tiles = Vec::new();
    for (id, output) in deps {
        if output.get("rows").is_some() {
            continue;
        }
        let origin = format!("tile from task {:?}", id.0);
        if output.get("data").is_none() {
            return Err(TaskError::BadInput(format!(
                "dependency {:?} is neither the Mandelbrot plan nor a tile (no \"rows\" or \
                 \"data\"), got {}",
                id.0,
                show(output)
            )));
        }
        let fields = Fields::of(output, TILE_FIELDS, &origin)?;
        fields.u64("index", 0..=u64::from(plan.tiles) - 1)?;
        let width = fields.u64("width", 1..=MAX_PIXELS)?;
        if width != u64::from(plan.width) {
            return Err(fields.bad(
                "width",
                format_args!("must equal the plan's width {}, got {width}", plan.width),
            ));
        }
        let y0 = fields.u64("y0", 0..=u64::from(plan.height) - 1)? as u32;
        let y1 = fields.u64("y1", u64::from(y0) + 1..=u64::from(plan.height))? as u32;
        let Some(Value::String(data)) = fields.get("data") else {
            return Err(fields.bad("data", "must be a base64 string"));
        };
        tiles.push(Tile { id, y0, y1, data });
    }
    check_coverage(&plan, &mut tiles)?;

    let mut rgb = vec![0u8; plan.width as usize * plan.height as usize * 3];
    for tile in &tiles {
        let values = decode_tile(tile, plan.width)?;
        let start = tile.y0 as usize * plan.width as usize * 3;
        let out = &mut rgb[start..start + values.len() / 4 * 3];
        for (chunk_in, chunk_out) in values
            .chunks(PIXELS_PER_CHECK * 4)
            .zip(out.chunks_mut(PIXELS_PER_CHECK * 3))
        {
            ctl.checkpoint()?;
            for (value, pixel) in chunk_in.chunks_exact(4).zip(chunk_out.chunks_exact_mut(3)) {
                let value = f32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                pixel.copy_from_slice(&colour(value));
            }
        }
    }
    ctl.set_progress(0.5);
    let png = encode_png(plan.width, plan.height, &rgb, ctl)?;
    Ok(Image {
        width: plan.width,
        height: plan.height,
        tiles: tiles.len(),
        png,
    })
}

/// Every row in exactly one tile. Sorts `tiles` by band.
fn check_coverage(plan: &Plan, tiles: &mut [Tile<'_>]) -> Result<(), TaskError> {
    const SHOWN: usize = 5;
    tiles.sort_by_key(|t| (t.y0, t.y1));
    let mut problems = Vec::new();
    let mut covered_to = 0u32;
    let mut last: Option<&TaskId> = None;
    for tile in tiles.iter() {
        if tile.y0 > covered_to {
            problems.push(format!("rows {covered_to}..{} are in no tile", tile.y0));
        } else if tile.y0 < covered_to {
            let end = covered_to.min(tile.y1);
            let other = last.map_or(String::new(), |id| format!("{:?} and ", id.0));
            problems.push(format!(
                "rows {}..{end} are in more than one tile ({other}{:?})",
                tile.y0, tile.id.0
            ));
        }
        if tile.y1 > covered_to {
            covered_to = tile.y1;
            last = Some(tile.id);
        }
    }
    if covered_to < plan.height {
        problems.push(format!("rows {covered_to}..{} are in no tile", plan.height));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(SHOWN);
    problems.truncate(SHOWN);
    if more > 0 {
        problems.push(format!("and {more} more problems"));
    }
    Err(TaskError::BadInput(format!(
        "the tiles do not cover the image's {} rows exactly once: {}",
        plan.height,
        problems.join("; ")
    )))
}

/// The tile's values as little-endian `f32` bytes, checked for size.
fn decode_tile(tile: &Tile<'_>, width: u32) -> Result<Vec<u8>, TaskError> {
    let pixels = (tile.y1 - tile.y0) as usize * width as usize;
    let bytes = pixels * 4;
    let bad = |what: String| {
        TaskError::BadInput(format!(
            "tile from task {:?}: field \"data\" {what}",
            tile.id.0
        ))
    };
    // Checked before decoding, so a wrong-sized tile costs nothing to refuse.
    if tile.data.len() != bytes.div_ceil(3) * 4 {
        return Err(bad(format!(
            "must be base64 of {bytes} bytes (rows {}..{} of {width} f32 values), \
             got {} base64 characters",
            tile.y0,
            tile.y1,
            tile.data.len()
        )));
    }
    let raw = BASE64
        .decode(tile.data)
        .map_err(|e| bad(format!("is not valid base64: {e}")))?;
    if raw.len() != bytes {
        return Err(bad(format!(
            "must decode to {bytes} bytes, got {}",
            raw.len()
        )));
    }
    Ok(raw)
}

fn encode_png(
    width: u32,
    height: u32,
    rgb: &[u8],
    ctl: &TaskControl,
) -> Result<Vec<u8>, TaskError> {
    // Dimensions and buffer are checked above, so the encoder cannot refuse them; should it fail
    // anyway, the image it was given is the cause.
    let failed = |e: &dyn std::fmt::Display| {
        TaskError::BadInput(format!("cannot encode a {width} x {height} PNG: {e}"))
    };
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
    let mut stream = writer.stream_writer().map_err(|e| failed(&e))?;
    let chunks = rgb.chunks(PIXELS_PER_CHECK * 3);
    let total = chunks.len().max(1);
    for (i, chunk) in chunks.enumerate() {
        ctl.checkpoint()?;
        stream.write_all(chunk).map_err(|e| failed(&e))?;
        ctl.set_progress(0.5 + 0.5 * (i + 1) as f32 / total as f32);
    }
    stream.finish().map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(png)
}

/// A name a client can save as-is: no directories, no hidden files, no surprises in a shell.
fn is_plain_png_name(name: &str) -> bool {
    (5..=100).contains(&name.len())
        && name.ends_with(".png")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn view(width: u32, height: u32, tiles: u32) -> Value {
        json!({
            "width": width, "height": height,
            "center_re": -0.25, "center_im": 0.0, "span_re": 4.0,
            "tiles": tiles,
        })
    }

    /// A value after a trip over the wire as JSON text.
    fn wire(value: Value) -> Value {
        serde_json::from_str(&value.to_string()).unwrap()
    }

    /// Runs the three stages the way a distributed job does: through `runtime::run`, with every
    /// output crossing the wire before the next stage reads it.
    fn render_distributed(view_input: &Value) -> Result<Value, TaskError> {
        let ctl = TaskControl::new();
        let none = BTreeMap::new();
        let plan = wire(crate::runtime::run(
            "mandelbrot_view",
            view_input,
            &none,
            &ctl,
        )?);
        let plan_dep = BTreeMap::from([(TaskId::from("seed"), plan.clone())]);
        let mut all = plan_dep.clone();
        for index in 0..plan["tiles"].as_u64().unwrap() {
            let input = json!({ "index": index });
            let tile = wire(crate::runtime::run("mandelbrot", &input, &plan_dep, &ctl)?);
            all.insert(TaskId(format!("t{index:03}")), tile);
        }
        crate::runtime::run("mandelbrot_assemble", &json!({}), &all, &ctl)
    }

    fn png_bytes(output: &Value) -> Vec<u8> {
        BASE64
            .decode(output["file"]["base64"].as_str().unwrap())
            .unwrap()
    }

    fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    /// The pixel nearest to a point of the complex plane, for `view(w, h, _)`.
    fn pixel_at(rgb: &[u8], width: u32, height: u32, re: f64, im: f64) -> [u8; 3] {
        let step = 4.0 / f64::from(width);
        let x = ((re + 0.25) / step + f64::from(width) / 2.0 - 0.5).round() as usize;
        let y = ((-im) / step + f64::from(height) / 2.0 - 0.5).round() as usize;
        let at = (y * width as usize + x) * 3;
        [rgb[at], rgb[at + 1], rgb[at + 2]]
    }

    #[test]
    fn a_tile_coloured_for_the_screensaver_matches_its_rows_in_the_assembled_image() {
        let input = view(90, 61, 4);
        let ctl = TaskControl::new();
        let none = BTreeMap::new();
        let plan = wire(crate::runtime::run("mandelbrot_view", &input, &none, &ctl).unwrap());
        let deps = BTreeMap::from([(TaskId::from("seed"), plan)]);
        let (_, rgb) = decode_png(&png_bytes(&render_distributed(&input).unwrap()));
        for index in 0..4u32 {
            let tile = wire(
                crate::runtime::run("mandelbrot", &json!({ "index": index }), &deps, &ctl).unwrap(),
            );
            let px = tile_rgba(&tile, &deps).unwrap();
            assert_eq!((px.width, px.height), (90, 61));
            assert_eq!(px.rgba.len(), 4 * 90 * (px.y1 - px.y0) as usize);
            let rows = &rgb[px.y0 as usize * 90 * 3..px.y1 as usize * 90 * 3];
            for (rgba, rgb) in px.rgba.chunks_exact(4).zip(rows.chunks_exact(3)) {
                assert_eq!(&rgba[..3], rgb);
                assert_eq!(rgba[3], 255);
            }
        }
        // A tile output that does not fit its plan is named, not shown.
        let mut bad =
            wire(crate::runtime::run("mandelbrot", &json!({ "index": 0 }), &deps, &ctl).unwrap());
        bad["data"] = json!(BASE64.encode([0u8; 8]));
        let err = tile_rgba(&bad, &deps).unwrap_err().to_string();
        assert!(err.contains("data"), "{err}");
        assert!(tile_rgba(&json!({"index": 0}), &BTreeMap::new()).is_err());
    }

    #[test]
    fn the_output_size_bounds_hold_for_real_renders_and_noise() {
        for (w, h, tiles) in [(96, 64, 4), (80, 61, 7), (1, 1, 1), (300, 200, 3)] {
            let input = view(w, h, tiles);
            let plan = parse_view(&input).unwrap();
            let plan_json = run_view(&input).unwrap();
            let plan_dep = BTreeMap::from([(TaskId::from("seed"), plan_json)]);
            let ctl = TaskControl::new();
            let mut all = plan_dep.clone();
            let mut tile_text = 0u64;
            for index in 0..tiles {
                let tile = run_tile(&json!({ "index": index }), &plan_dep, &ctl).unwrap();
                tile_text += tile.to_string().len() as u64;
                all.insert(TaskId(format!("t{index}")), tile);
            }
            let bound = plan.tiles_output_bytes();
            assert!(
                tile_text <= bound && bound - tile_text <= u64::from(tiles) * TILE_JSON_OVERHEAD,
                "{w}x{h}/{tiles}: {tile_text} vs {bound}"
            );
            let name = "n".repeat(96) + ".png";
            let out = run_assemble(&json!({ "file": name }), &all, &ctl).unwrap();
            assert!(out.to_string().len() as u64 <= plan.assembly_output_bytes_at_most());
        }
        // Noise does not compress: the PNG bound must hold for it too.
        let plan = parse_view(&view(512, 256, 1)).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let rgb: Vec<u8> = (0..512 * 256 * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let png = encode_png(512, 256, &rgb, &TaskControl::new()).unwrap();
        let text = base64_len(png.len() as u64) + ASSEMBLY_JSON_OVERHEAD;
        assert!(png.len() > rgb.len(), "noise compressed to {}", png.len());
        assert!(text <= plan.assembly_output_bytes_at_most());
    }

    #[test]
    fn the_assembled_png_is_an_rgb_image_with_the_set_in_black() {
        let out = render_distributed(&view(96, 96, 4)).unwrap();
        assert_eq!(out["width"], 96);
        assert_eq!(out["height"], 96);
        assert_eq!(out["tiles"], 4);
        assert_eq!(out["file"]["name"], "mandelbrot.png");
        assert_eq!(out["file"]["media_type"], "image/png");
        let (info, rgb) = decode_png(&png_bytes(&out));
        assert_eq!((info.width, info.height), (96, 96));
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        assert_eq!(pixel_at(&rgb, 96, 96, -0.5, 0.0), [0, 0, 0]);
        assert_eq!(pixel_at(&rgb, 96, 96, -0.12, 0.74), [0, 0, 0]);
        assert_ne!(pixel_at(&rgb, 96, 96, 1.5, 1.5), [0, 0, 0]);
        assert_ne!(pixel_at(&rgb, 96, 96, -2.0, 1.5), [0, 0, 0]);
    }

    #[test]
    fn any_tiling_gives_the_same_bytes_as_the_reference() {
        let reference = render_reference(&view(80, 61, 1)).unwrap();
        for tiles in [1, 3, 7, 61] {
            let out = render_distributed(&view(80, 61, tiles)).unwrap();
            assert!(
                png_bytes(&out) == reference,
                "{tiles} tiles differ from the reference"
            );
        }
    }

    #[test]
    fn plan_numbers_survive_json_text_bit_for_bit() {
        let awkward = [
            0.1 + 0.2,
            1.0 / 3.0,
            -0.743_643_887_037_158_7,
            -std::f64::consts::E,
            9.999_999_999_999_999,
            1.234_567_890_123_456_7e-9,
            -3.3e-17,
            5e-324,
        ];
        for (i, &center) in awkward.iter().enumerate() {
            let span = [1.000_000_000_1e-12, 2.0 / 3.0, 99.999_999_999_9][i % 3];
            let input = json!({
                "width": 4, "height": 4, "center_re": center, "center_im": -center,
                "span_re": span, "tiles": 1,
            });
            let plan = run_view(&input).unwrap();
            let mut text = plan.to_string();
            for _ in 0..3 {
                let again: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(again, plan, "{center}, {span}: {text}");
                text = again.to_string();
            }
            // Planning again from the plan's own numbers changes nothing.
            let mut replan = plan.clone();
            replan.as_object_mut().unwrap().remove("rows");
            assert_eq!(run_view(&replan).unwrap(), plan);
            let moved = |f: &str| (plan[f].as_f64().unwrap() - input[f].as_f64().unwrap()).abs();
            assert!(
                moved("center_re") <= 1e-14 && moved("span_re") <= 1e-9 * span,
                "{plan}"
            );
        }
    }

    #[test]
    fn the_plan_splits_rows_evenly_without_gaps() {
        let plan = run_view(&view(10, 10, 3)).unwrap();
        assert_eq!(plan["rows"], json!([[0, 3], [3, 6], [6, 10]]));
        assert_eq!(plan["max_iter"], 79);
        let plan = run_view(&view(10, 10, 10)).unwrap();
        assert_eq!(plan["rows"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn deeper_zooms_get_more_iterations_unless_told() {
        let iters = |span: f64| {
            let mut input = view(10, 10, 1);
            input["span_re"] = json!(span);
            run_view(&input).unwrap()["max_iter"].as_u64().unwrap()
        };
        assert_eq!(iters(3.0), 100);
        assert_eq!(iters(100.0), 64);
        assert!(iters(1e-3) > iters(1e-1));
        assert!((2_100..2_200).contains(&iters(1e-12)), "{}", iters(1e-12));
        let mut input = view(10, 10, 1);
        input["max_iter"] = json!(500);
        assert_eq!(run_view(&input).unwrap()["max_iter"], 500);
    }

    #[test]
    fn bad_views_are_named() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "width",
                json!(0),
                "\"width\" must be an integer in 1..=67108864",
            ),
            ("width", json!(-3), "\"width\""),
            ("width", json!(1e30), "\"width\""),
            (
                "height",
                json!(1_000_000),
                "at most 67108864 pixels, got 96 x 1000000",
            ),
            (
                "span_re",
                json!(0.0),
                "\"span_re\" must be a number in 1e-12..=100, got 0.0",
            ),
            ("span_re", json!(-1.0), "\"span_re\""),
            ("span_re", json!(f64::NAN), "\"span_re\" is missing"),
            (
                "center_re",
                json!(1e9),
                "\"center_re\" must be a number in -10..=10",
            ),
            ("center_im", json!("0"), "\"center_im\" must be a number"),
            (
                "max_iter",
                json!(0),
                "\"max_iter\" must be an integer in 1..=65535",
            ),
            ("max_iter", json!(70_000), "\"max_iter\""),
            ("tiles", json!(0), "\"tiles\" must be an integer in 1..=64"),
            ("tiles", json!(65), "\"tiles\" must be an integer in 1..=64"),
            ("colour", json!("red"), "unknown field \"colour\""),
        ];
        for (field, value, expected) in cases {
            let mut input = view(96, 64, 4);
            input[*field] = value.clone();
            let err = run_view(&input).unwrap_err();
            assert!(matches!(err, TaskError::BadInput(_)), "{field}: {err}");
            assert!(err.to_string().contains(expected), "{field}={value}: {err}");
            assert!(render_reference(&input).is_err());
        }
    }

    #[test]
    fn a_missing_or_doubled_tile_is_named_by_its_rows() {
        let ctl = TaskControl::new();
        let plan = run_view(&view(16, 12, 3)).unwrap();
        let plan_dep = BTreeMap::from([(TaskId::from("seed"), plan.clone())]);
        let tile = |i: u64| run_tile(&json!({ "index": i }), &plan_dep, &ctl).unwrap();
        let mut deps = plan_dep.clone();
        deps.insert("a".into(), tile(0));
        deps.insert("c".into(), tile(2));
        let err = run_assemble(&json!({}), &deps, &ctl).unwrap_err();
        assert!(
            err.to_string().contains("rows 4..8 are in no tile"),
            "{err}"
        );

        deps.insert("b".into(), tile(1));
        assert!(run_assemble(&json!(null), &deps, &ctl).is_ok());
        deps.insert("b2".into(), tile(1));
        let err = run_assemble(&json!({}), &deps, &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("rows 4..8 are in more than one tile (\"b\" and \"b2\")"),
            "{err}"
        );

        deps.remove(&TaskId::from("b2"));
        deps.remove(&TaskId::from("c"));
        let err = run_assemble(&json!({}), &deps, &ctl).unwrap_err();
        assert!(
            err.to_string().contains("rows 8..12 are in no tile"),
            "{err}"
        );
    }

    #[test]
    fn tiles_that_do_not_fit_the_plan_are_refused() {
        let ctl = TaskControl::new();
        let plan = run_view(&view(16, 12, 2)).unwrap();
        let plan_dep = BTreeMap::from([(TaskId::from("seed"), plan.clone())]);
        let good = |i: u64| run_tile(&json!({ "index": i }), &plan_dep, &ctl).unwrap();
        let with = |tile: Value| {
            let mut deps = plan_dep.clone();
            deps.insert("t0".into(), good(0));
            deps.insert("t1".into(), tile);
            run_assemble(&json!({}), &deps, &ctl)
                .unwrap_err()
                .to_string()
        };
        let mut wide = good(1);
        wide["width"] = json!(17);
        assert!(with(wide).contains("\"width\" must equal the plan's width 16, got 17"));
        let mut short = good(1);
        short["data"] = json!(BASE64.encode([0u8; 12]));
        assert!(with(short).contains("must be base64 of 384 bytes"));
        let mut garbled = good(1);
        let len = garbled["data"].as_str().unwrap().len();
        garbled["data"] = json!("!".repeat(len));
        assert!(with(garbled).contains("not valid base64"));
        let mut beyond = good(1);
        beyond["y1"] = json!(13);
        assert!(with(beyond).contains("\"y1\" must be an integer in 7..=12"));
        assert!(with(json!({"count": 3})).contains("neither the Mandelbrot plan nor a tile"));
        assert!(with(json!("text")).contains("neither"));
    }

    #[test]
    fn a_tile_needs_exactly_one_plan() {
        let ctl = TaskControl::new();
        let plan = run_view(&view(16, 12, 2)).unwrap();
        let err = run_tile(&json!({"index": 0}), &BTreeMap::new(), &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("no dependency is a Mandelbrot plan"),
            "{err}"
        );

        let mut other = plan.clone();
        other["center_re"] = json!(0.0);
        let deps = BTreeMap::from([("p1".into(), plan.clone()), ("p2".into(), other)]);
        let err = run_tile(&json!({"index": 0}), &deps, &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"p1\" and \"p2\" are two different"),
            "{err}"
        );

        let same = BTreeMap::from([("p1".into(), plan.clone()), ("p2".into(), plan.clone())]);
        assert!(run_tile(&json!({"index": 1}), &same, &ctl).is_ok());
        let err = run_tile(&json!({"index": 2}), &same, &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"index\" must be an integer in 0..=1, got 2"),
            "{err}"
        );

        let mut forged = plan.clone();
        forged["rows"] = json!([[0, 12], [12, 12]]);
        let deps = BTreeMap::from([("p".into(), forged)]);
        let err = run_tile(&json!({"index": 0}), &deps, &ctl).unwrap_err();
        assert!(
            err.to_string()
                .contains("plan from task \"p\": field \"rows\""),
            "{err}"
        );

        let mut huge = plan;
        huge["width"] = json!(1u64 << 40);
        let deps = BTreeMap::from([("p".into(), huge)]);
        let err = run_tile(&json!({"index": 0}), &deps, &ctl).unwrap_err();
        assert!(err.to_string().contains("\"width\""), "{err}");
    }

    #[test]
    fn the_file_name_is_checked() {
        let plan = run_view(&view(8, 8, 1)).unwrap();
        let ctl = TaskControl::new();
        let mut deps = BTreeMap::from([(TaskId::from("seed"), plan.clone())]);
        let seed_only = deps.clone();
        deps.insert(
            "t".into(),
            run_tile(&json!({"index": 0}), &seed_only, &ctl).unwrap(),
        );
        let out = run_assemble(&json!({"file": "zoom-1.png"}), &deps, &ctl).unwrap();
        assert_eq!(out["file"]["name"], "zoom-1.png");
        for name in [
            "../x.png",
            "/etc/x.png",
            ".png",
            ".hidden.png",
            "x.jpg",
            "a b.png",
            "",
        ] {
            let err = run_assemble(&json!({ "file": name }), &deps, &ctl).unwrap_err();
            assert!(
                err.to_string()
                    .contains("\"file\" must be a plain file name"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn log2_matches_the_library_closely() {
        for x in [
            1e-310,
            1e-300,
            0.3,
            std::f64::consts::FRAC_1_SQRT_2,
            1.0,
            std::f64::consts::SQRT_2,
            1.5,
            2.0,
            3.0,
            10.0,
            65536.5,
            1e10,
            1e300,
        ] {
            let (ours, std) = (log2(x), x.log2());
            assert!(
                (ours - std).abs() <= 1e-12 * std.abs().max(1.0),
                "{x}: {ours} vs {std}"
            );
        }
        assert!(log2(0.0).is_nan() && log2(-1.0).is_nan() && log2(f64::NAN).is_nan());
        assert_eq!(log2(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn escape_values_are_smooth_across_iteration_counts() {
        // Along a line leaving the set, neighbouring points never jump by a whole iteration.
        let mut last = escape(0.4, 0.0, 1000).0;
        for i in 1..400 {
            let value = escape(0.4 + f64::from(i) * 0.005, 0.0, 1000).0;
            assert!(
                value >= 0.0 && (value - last).abs() < 1.0,
                "at step {i}: {last} -> {value}"
            );
            last = value;
        }
        assert_eq!(escape(-0.5, 0.0, 1000), (INSIDE, 0));
        assert_eq!(escape(-0.1226, 0.7449, 300), (INSIDE, 300));
    }

    #[test]
    fn cancelling_a_slow_tile_stops_it_promptly() {
        // Inside the period-3 bulb: every pixel runs to max_iter, minutes of work in all.
        let input = json!({
            "width": 1000, "height": 1000, "center_re": -0.1226, "center_im": 0.7449,
            "span_re": 0.001, "max_iter": 65535, "tiles": 1,
        });
        let plan = run_view(&input).unwrap();
        let deps = BTreeMap::from([(TaskId::from("seed"), plan)]);
        let ctl = Arc::new(TaskControl::new());
        let kernel = {
            let ctl = Arc::clone(&ctl);
            std::thread::spawn(move || run_tile(&json!({"index": 0}), &deps, &ctl))
        };
        std::thread::sleep(Duration::from_millis(30));
        let asked = Instant::now();
        ctl.cancel();
        let result = kernel.join().unwrap();
        let took = asked.elapsed();
        assert!(matches!(result, Err(TaskError::Cancelled)), "{result:?}");
        assert!(took < Duration::from_millis(50), "{took:?}");
    }
}
