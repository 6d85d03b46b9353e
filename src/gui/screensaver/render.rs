//! Where things go on the screensaver's screen ([`Layout`]), and a software renderer of that
//! layout into an RGBA buffer ([`render`]) for the xscreensaver hack, which has no GPU context.
//!
//! The egui view (`super::screensaver_ui`) paints the same [`Layout`], so the hack and the
//! fullscreen window show the same picture. Nothing here does I/O.

use ab_glyph::{Font, FontRef};

use crate::client::saverfeed::{Liveness, SaverFeed};

pub const BACKGROUND: [u8; 3] = [6, 8, 18];
/// Rows of the image no tile has filled yet.
pub const IMAGE_EMPTY: [u8; 3] = [22, 26, 44];
pub const RING_TRACK: [u8; 3] = [40, 46, 70];
pub const RING_DONE: [u8; 3] = [255, 170, 40];
pub const RING_PAUSED: [u8; 3] = [120, 130, 160];
pub const TEXT: [u8; 3] = [225, 230, 240];
pub const TEXT_DIM: [u8; 3] = [140, 150, 175];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// One slot's progress ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    pub cx: f32,
    pub cy: f32,
    /// Radius of the ring's middle line.
    pub r: f32,
    pub thickness: f32,
    /// 0.0 ..= 1.0, drawn clockwise from the top.
    pub progress: f32,
    pub paused: bool,
    /// Inside the ring ("42%") and under it (the kind).
    pub percent: String,
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// Top of the line, and its left end or centre.
    pub x: f32,
    pub y: f32,
    pub size: f32,
    pub align: Align,
    pub colour: [u8; 3],
    pub text: String,
}

/// Everything the screen shows, in pixels of a `width` x `height` screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: f32,
    pub height: f32,
    /// Where the Mandelbrot image goes (its aspect kept).
    pub image: Option<Rect>,
    pub rings: Vec<Ring>,
    pub texts: Vec<Text>,
}

/// "3 h 05 min", "12 min", "40 s".
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

impl Layout {
    pub fn new(feed: &SaverFeed, width: f32, height: f32) -> Self {
        let width = width.max(1.0);
        let height = height.max(1.0);
        let unit = (width.min(height) / 40.0).max(6.0);
        let footer = unit * 4.2;
        let content = Rect {
            x: unit,
            y: unit,
            w: (width - 2.0 * unit).max(1.0),
            h: (height - footer - 2.0 * unit).max(1.0),
        };
        let rings_wanted = feed.shows_rings() && !feed.slots.is_empty();
        let (image_area, ring_area) = match (&feed.image, rings_wanted) {
            (Some(_), true) => {
                let split = content.h * 0.72;
                (
                    Some(Rect {
                        h: split,
                        ..content
                    }),
                    Some(Rect {
                        y: content.y + split,
                        h: content.h - split,
                        ..content
                    }),
                )
            }
            (Some(_), false) => (Some(content), None),
            (None, true) => (None, Some(content)),
            (None, false) => (None, None),
        };
        let image = match (&feed.image, image_area) {
            (Some(img), Some(area)) => {
                let scale = (area.w / img.width as f32).min(area.h / img.height as f32);
                let (w, h) = (img.width as f32 * scale, img.height as f32 * scale);
                Some(Rect {
                    x: (area.x + (area.w - w) / 2.0).round(),
                    y: (area.y + (area.h - h) / 2.0).round(),
                    w: w.round().max(1.0),
                    h: h.round().max(1.0),
                })
            }
            _ => None,
        };
        let mut rings = Vec::new();
        let mut texts = Vec::new();
        if let Some(area) = ring_area {
            let n = feed.slots.len() as f32;
            let label = unit * 1.2;
            let r = (area.w / (n * 2.6))
                .min((area.h - 2.0 * label) / 2.3)
                .max(4.0);
            let cy = area.y + (area.h - label) / 2.0;
            for (i, slot) in feed.slots.iter().enumerate() {
                let cx = area.x + area.w * (i as f32 + 0.5) / n;
                let ring = Ring {
                    cx,
                    cy,
                    r,
                    thickness: (r * 0.2).max(2.0),
                    progress: slot.progress,
                    paused: slot.state != "running",
                    percent: format!("{:.0}%", slot.progress * 100.0),
                    kind: slot.kind.clone(),
                };
                texts.push(Text {
                    x: cx,
                    y: cy - r * 0.22,
                    size: (r * 0.4).max(8.0),
                    align: Align::Center,
                    colour: TEXT,
                    text: ring.percent.clone(),
                });
                texts.push(Text {
                    x: cx,
                    y: cy + r + ring.thickness,
                    size: label * 0.8,
                    align: Align::Center,
                    colour: TEXT_DIM,
                    text: if ring.paused {
                        format!("{} ({})", slot.kind, slot.state)
                    } else {
                        slot.kind.clone()
                    },
                });
                rings.push(ring);
            }
        }
        let top = height - footer + unit * 0.4;
        let who = if feed.name.is_empty() {
            "idlegrid".to_owned()
        } else {
            format!("idlegrid on {}", feed.name)
        };
        let mut line1 = format!("{who} · {}", feed.state);
        if let Some(img) = &feed.image {
            line1.push_str(&format!(
                " · image {}% filled in",
                100 * u64::from(img.rows_filled) / u64::from(img.height.max(1))
            ));
        }
        texts.push(Text {
            x: width / 2.0,
            y: top,
            size: unit * 1.3,
            align: Align::Center,
            colour: TEXT,
            text: line1,
        });
        texts.push(Text {
            x: width / 2.0,
            y: top + unit * 1.8,
            size: unit * 1.05,
            align: Align::Center,
            colour: TEXT_DIM,
            text: format!(
                "tasks done: {} today, {} in all · CPU time given: {} today, {} in all",
                feed.tasks_today,
                feed.tasks_total,
                human_duration(feed.cpu_today),
                human_duration(feed.cpu_total)
            ),
        });
        if feed.liveness == Liveness::NotRunning {
            texts.push(Text {
                x: width / 2.0,
                y: height / 2.0 - unit * 1.5,
                size: unit * 2.4,
                align: Align::Center,
                colour: TEXT,
                text: "idlegrid is not running".to_owned(),
            });
        } else if image.is_none() && rings.is_empty() {
            texts.push(Text {
                x: width / 2.0,
                y: height / 2.0 - unit * 1.5,
                size: unit * 2.0,
                align: Align::Center,
                colour: TEXT_DIM,
                text: "no task running".to_owned(),
            });
        }
        Self {
            width,
            height,
            image,
            rings,
            texts,
        }
    }
}

/// One software-rendered frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Row-major RGBA, alpha always 255.
    pub rgba: Vec<u8>,
}

impl Frame {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 4 * (y as usize * self.width as usize + x as usize);
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]
    }

    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], coverage: f32) {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return;
        }
        let a = coverage.clamp(0.0, 1.0);
        if a <= 0.0 {
            return;
        }
        let i = 4 * (y as usize * self.width as usize + x as usize);
        for (c, new) in self.rgba[i..i + 3].iter_mut().zip(colour) {
            *c = (f32::from(*c) * (1.0 - a) + f32::from(new) * a + 0.5) as u8;
        }
    }
}

/// Draws `feed` as the screensaver shows it on a `width` x `height` screen.
pub fn render(feed: &SaverFeed, width: u32, height: u32) -> Frame {
    let (width, height) = (width.max(1), height.max(1));
    let layout = Layout::new(feed, width as f32, height as f32);
    let mut frame = Frame {
        width,
        height,
        rgba: [BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 255]
            .repeat(width as usize * height as usize),
    };
    if let (Some(rect), Some(img)) = (layout.image, &feed.image) {
        blit_image(&mut frame, rect, img);
    }
    for ring in &layout.rings {
        draw_ring(&mut frame, ring);
    }
    if let Ok(font) = crate::chart::font() {
        for t in &layout.texts {
            draw_text(&mut frame, font, t);
        }
    }
    frame
}

/// Nearest-neighbour scaling: a few frames a second of a screen-sized image, and tiles have hard
/// edges anyway.
fn blit_image(frame: &mut Frame, rect: Rect, img: &crate::client::saverfeed::FeedImage) {
    let x0 = rect.x.max(0.0) as u32;
    let y0 = rect.y.max(0.0) as u32;
    let x1 = ((rect.x + rect.w) as u32).min(frame.width);
    let y1 = ((rect.y + rect.h) as u32).min(frame.height);
    if img.rgba.len() != 4 * img.width as usize * img.height as usize {
        return;
    }
    for y in y0..y1 {
        let sy =
            (((y as f32 - rect.y + 0.5) / rect.h * img.height as f32) as u32).min(img.height - 1);
        let src_row = &img.rgba[sy as usize * 4 * img.width as usize..][..4 * img.width as usize];
        let dst_row =
            &mut frame.rgba[4 * (y as usize * frame.width as usize)..][..4 * frame.width as usize];
        for x in x0..x1 {
            let sx =
                (((x as f32 - rect.x + 0.5) / rect.w * img.width as f32) as u32).min(img.width - 1);
            let s = &src_row[4 * sx as usize..][..4];
            let px = if s[3] == 0 {
                IMAGE_EMPTY
            } else {
                [s[0], s[1], s[2]]
            };
            dst_row[4 * x as usize..][..3].copy_from_slice(&px);
        }
    }
}

fn draw_ring(frame: &mut Frame, ring: &Ring) {
    let outer = ring.r + ring.thickness / 2.0 + 1.0;
    let done = if ring.paused { RING_PAUSED } else { RING_DONE };
    let sweep = ring.progress.clamp(0.0, 1.0) * std::f32::consts::TAU;
    let (xa, xb) = (
        (ring.cx - outer).floor() as i64,
        (ring.cx + outer).ceil() as i64,
    );
    let (ya, yb) = (
        (ring.cy - outer).floor() as i64,
        (ring.cy + outer).ceil() as i64,
    );
    for y in ya..=yb {
        for x in xa..=xb {
            let dx = x as f32 + 0.5 - ring.cx;
            let dy = y as f32 + 0.5 - ring.cy;
            let d = (dx * dx + dy * dy).sqrt();
            let coverage = ring.thickness / 2.0 - (d - ring.r).abs() + 0.5;
            if coverage <= 0.0 {
                continue;
            }
            // Clockwise from twelve o'clock.
            let mut angle = dx.atan2(-dy);
            if angle < 0.0 {
                angle += std::f32::consts::TAU;
            }
            let colour = if angle < sweep { done } else { RING_TRACK };
            frame.blend(x, y, colour, coverage);
        }
    }
}

fn draw_text(frame: &mut Frame, font: &'static FontRef<'static>, t: &Text) {
    let laid = crate::chart::lay_out(font, t.size, &t.text);
    let left = match t.align {
        Align::Left => t.x,
        Align::Center => t.x - laid.width / 2.0,
    };
    for glyph in laid.glyphs {
        let Some(outline) = font.outline_glyph(glyph) else {
            continue; // a space
        };
        let b = outline.px_bounds();
        outline.draw(|x, y, coverage| {
            frame.blend(
                (left + b.min.x) as i64 + i64::from(x),
                (t.y + b.min.y) as i64 + i64::from(y),
                t.colour,
                coverage,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::saverfeed::{FeedImage, SlotView};
    use std::time::Duration;

    pub(crate) fn feed_with_rows(w: u32, h: u32, filled: &[(u32, u32)]) -> SaverFeed {
        let mut rgba = vec![0u8; (4 * w * h) as usize];
        let mut rows = 0;
        for &(y0, y1) in filled {
            for y in y0..y1 {
                rows += 1;
                for x in 0..w {
                    let i = (4 * (y * w + x)) as usize;
                    rgba[i..i + 4].copy_from_slice(&[250, 20, 200, 255]);
                }
            }
        }
        SaverFeed {
            liveness: Liveness::Live,
            name: "desk".into(),
            state: "computing".into(),
            image: Some(FeedImage {
                job: "j".into(),
                width: w,
                height: h,
                rgba,
                rows_filled: rows,
            }),
            slots: vec![SlotView {
                job: "j".into(),
                kind: "mandelbrot".into(),
                progress: 0.5,
                state: "running".into(),
            }],
            tasks_today: 3,
            tasks_total: 40,
            cpu_today: Duration::from_secs(125),
            cpu_total: Duration::from_secs(7300),
        }
    }

    fn ring_feed(progress: &[f32]) -> SaverFeed {
        SaverFeed {
            image: None,
            slots: progress
                .iter()
                .map(|&p| SlotView {
                    job: "j".into(),
                    kind: "primes".into(),
                    progress: p,
                    state: "running".into(),
                })
                .collect(),
            ..feed_with_rows(4, 4, &[])
        }
    }

    #[test]
    fn rows_of_finished_tiles_show_image_pixels_and_the_rest_shows_empty() {
        // 4 tiles of 16 rows; tiles 0 and 2 done.
        let feed = feed_with_rows(64, 64, &[(0, 16), (32, 48)]);
        let layout = Layout::new(&feed, 640.0, 480.0);
        let rect = layout.image.expect("an image rect");
        let frame = render(&feed, 640, 480);
        let x = (rect.x + rect.w / 2.0) as u32;
        for (tile, done) in [(0, true), (1, false), (2, true), (3, false)] {
            let y = (rect.y + rect.h * (tile as f32 + 0.5) / 4.0) as u32;
            let want = if done { [250, 20, 200] } else { IMAGE_EMPTY };
            assert_eq!(frame.pixel(x, y), want, "tile {tile} at ({x}, {y})");
        }
        // Outside the image: background.
        assert_eq!(frame.pixel(2, 2), BACKGROUND);
    }

    #[test]
    fn the_footer_text_is_drawn() {
        let feed = feed_with_rows(64, 64, &[]);
        let frame = render(&feed, 640, 480);
        let lit = (400..480)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .filter(|&(x, y)| frame.pixel(x, y)[0] > 150)
            .count();
        assert!(lit > 200, "footer pixels lit: {lit}");
    }

    #[test]
    fn rings_differ_by_progress() {
        let count_done = |p: f32| {
            let feed = ring_feed(&[p]);
            let frame = render(&feed, 400, 300);
            frame
                .rgba
                .chunks_exact(4)
                .filter(|px| px[..3] == RING_DONE)
                .count()
        };
        let (none, quarter, most) = (count_done(0.0), count_done(0.25), count_done(0.8));
        assert_eq!(none, 0);
        assert!(quarter > 50, "{quarter}");
        assert!(most > 2 * quarter, "{most} vs {quarter}");
    }

    #[test]
    fn each_slot_gets_a_ring_and_a_mandelbrot_only_feed_gets_none() {
        let feed = ring_feed(&[0.1, 0.5, 0.9]);
        assert_eq!(Layout::new(&feed, 800.0, 600.0).rings.len(), 3);
        let feed = feed_with_rows(16, 16, &[(0, 4)]);
        assert!(Layout::new(&feed, 800.0, 600.0).rings.is_empty());
    }

    #[test]
    fn a_feed_from_no_client_says_so() {
        let layout = Layout::new(&SaverFeed::not_running(), 800.0, 600.0);
        assert!(
            layout
                .texts
                .iter()
                .any(|t| t.text == "idlegrid is not running")
        );
        // Tiny or degenerate screens do not panic.
        let _ = render(&feed_with_rows(3, 5, &[(0, 2)]), 1, 1);
        let _ = render(&ring_feed(&[0.3; 40]), 7, 3);
    }
}
