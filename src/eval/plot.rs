// SPDX-License-Identifier: MIT OR Apache-2.0
//! Minimal plotting into an [`image::RgbImage`]: axes with ticks and labels, polylines, markers, filled cells and
//! text (DejaVu Sans through `ab_glyph`), enough for the evaluation's curves and confusion matrices.

use std::path::Path;
use std::sync::LazyLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use super::{EvalError, Result};

static FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(dejavu::sans::regular()).expect("the DejaVu Sans font embedded by `dejavu` parses")
});

pub const WHITE: [u8; 3] = [255, 255, 255];
pub const BLACK: [u8; 3] = [0, 0, 0];
pub const GRID: [u8; 3] = [225, 225, 225];
pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const RED: [u8; 3] = [214, 39, 40];

/// A white canvas.
pub fn canvas(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb(WHITE))
}

fn blend(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3], a: f32) {
    if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 || a <= 0.0 {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (v, &target) in p.0.iter_mut().zip(&c) {
        let old = *v as f32;
        *v = (old + (target as f32 - old) * a.min(1.0)).round() as u8;
    }
}

/// Fills the rectangle `[x0, x1) x [y0, y1)`.
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    for y in y0.max(0)..y1.min(img.height() as i64) {
        for x in x0.max(0)..x1.min(img.width() as i64) {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }
}

/// An anti-aliased line of `width` pixels (distance-to-segment coverage).
pub fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), width: f32, c: [u8; 3]) {
    let r = width / 2.0;
    let (minx, maxx) = (a.0.min(b.0) - r - 1.0, a.0.max(b.0) + r + 1.0);
    let (miny, maxy) = (a.1.min(b.1) - r - 1.0, a.1.max(b.1) + r + 1.0);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    for y in miny.floor() as i64..=maxy.ceil() as i64 {
        for x in minx.floor() as i64..=maxx.ceil() as i64 {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = if len2 > 0.0 { (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let (qx, qy) = (a.0 + t * dx, a.1 + t * dy);
            let d = ((px - qx).powi(2) + (py - qy).powi(2)).sqrt();
            blend(img, x, y, c, (r + 0.5 - d).clamp(0.0, 1.0));
        }
    }
}

/// A filled disc.
pub fn disc(img: &mut RgbImage, centre: (f32, f32), radius: f32, c: [u8; 3]) {
    line(img, centre, centre, 2.0 * radius, c);
}

/// Horizontal placement of text relative to the anchor point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Centre,
    Right,
}

/// Width of `text` in pixels at `px` size.
pub fn text_width(text: &str, px: f32) -> f32 {
    let f = FONT.as_scaled(PxScale::from(px));
    let mut w = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let g = f.glyph_id(ch);
        if let Some(p) = prev {
            w += f.kern(p, g);
        }
        w += f.h_advance(g);
        prev = Some(g);
    }
    w
}

/// Draws `text` with its vertical centre at `y`, anchored at `x` by `align`.
pub fn text(img: &mut RgbImage, x: f32, y: f32, px: f32, align: Align, c: [u8; 3], text: &str) {
    let f = FONT.as_scaled(PxScale::from(px));
    let w = text_width(text, px);
    let mut cx = match align {
        Align::Left => x,
        Align::Centre => x - w / 2.0,
        Align::Right => x - w,
    };
    let baseline = y + (f.ascent() + f.descent()) / 2.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            cx += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(px), point(cx, baseline));
        cx += f.h_advance(id);
        prev = Some(id);
        if let Some(o) = FONT.outline_glyph(glyph) {
            let bb = o.px_bounds();
            o.draw(|gx, gy, cov| blend(img, bb.min.x as i64 + gx as i64, bb.min.y as i64 + gy as i64, c, cov));
        }
    }
}

/// Text rotated by 90 degrees counter-clockwise (for a y-axis title), centred at (`x`, `y`).
pub fn text_vertical(img: &mut RgbImage, x: f32, y: f32, px: f32, c: [u8; 3], s: &str) {
    let w = text_width(s, px).ceil() as u32 + 4;
    let h = (px * 1.5).ceil() as u32;
    let mut tmp = canvas(w, h);
    text(&mut tmp, 2.0, h as f32 / 2.0, px, Align::Left, c, s);
    for ty in 0..h {
        for tx in 0..w {
            let p = tmp.get_pixel(tx, ty).0;
            if p != WHITE {
                // (tx, ty) -> rotated: x' = ty, y' = w - 1 - tx
                let dx = x as i64 - h as i64 / 2 + ty as i64;
                let dy = y as i64 + w as i64 / 2 - 1 - tx as i64;
                if dx >= 0 && dy >= 0 && (dx as u32) < img.width() && (dy as u32) < img.height() {
                    img.put_pixel(dx as u32, dy as u32, Rgb(p));
                }
            }
        }
    }
}

/// A data-to-pixel mapping for one plot area, with axis drawing.
#[derive(Clone, Copy, Debug)]
pub struct Axes {
    /// Plot area in pixels: left, top, right, bottom.
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

impl Axes {
    pub fn px(&self, x: f64, y: f64) -> (f32, f32) {
        let fx = (x - self.x_range.0) / (self.x_range.1 - self.x_range.0);
        let fy = (y - self.y_range.0) / (self.y_range.1 - self.y_range.0);
        (self.left + fx as f32 * (self.right - self.left), self.bottom - fy as f32 * (self.bottom - self.top))
    }

    /// Grid, frame, ticks every `x_step`/`y_step` with labels, axis titles and a title above.
    #[allow(clippy::too_many_arguments)]
    pub fn draw(&self, img: &mut RgbImage, x_step: f64, y_step: f64, x_title: &str, y_title: &str, title: &str) {
        let ticks = |range: (f64, f64), step: f64| -> Vec<f64> {
            let first = (range.0 / step).ceil() as i64;
            let last = (range.1 / step + 1e-9).floor() as i64;
            (first..=last).map(|i| i as f64 * step).collect()
        };
        let label = |v: f64, step: f64| {
            let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
            format!("{v:.decimals$}")
        };
        let font = 13.0;
        for x in ticks(self.x_range, x_step) {
            let (px, _) = self.px(x, self.y_range.0);
            line(img, (px, self.top), (px, self.bottom), 1.0, GRID);
            line(img, (px, self.bottom), (px, self.bottom + 5.0), 1.0, BLACK);
            text(img, px, self.bottom + 14.0, font, Align::Centre, BLACK, &label(x, x_step));
        }
        for y in ticks(self.y_range, y_step) {
            let (_, py) = self.px(self.x_range.0, y);
            line(img, (self.left, py), (self.right, py), 1.0, GRID);
            line(img, (self.left - 5.0, py), (self.left, py), 1.0, BLACK);
            text(img, self.left - 8.0, py, font, Align::Right, BLACK, &label(y, y_step));
        }
        for (a, b) in [
            ((self.left, self.top), (self.right, self.top)),
            ((self.right, self.top), (self.right, self.bottom)),
            ((self.left, self.bottom), (self.right, self.bottom)),
            ((self.left, self.top), (self.left, self.bottom)),
        ] {
            line(img, a, b, 1.0, BLACK);
        }
        text(img, (self.left + self.right) / 2.0, self.bottom + 34.0, 14.0, Align::Centre, BLACK, x_title);
        text_vertical(img, self.left - 48.0, (self.top + self.bottom) / 2.0, 14.0, BLACK, y_title);
        text(img, (self.left + self.right) / 2.0, self.top - 14.0, 15.0, Align::Centre, BLACK, title);
    }

    /// A polyline through data points, clipped to the plot area.
    pub fn polyline(&self, img: &mut RgbImage, pts: &[(f64, f64)], width: f32, c: [u8; 3]) {
        let clamp = |(x, y): (f32, f32)| (x.clamp(self.left, self.right), y.clamp(self.top, self.bottom));
        for w in pts.windows(2) {
            let (a, b) = (self.px(w[0].0, w[0].1), self.px(w[1].0, w[1].1));
            // Skip segments wholly outside; clamp the others (good enough for monotone curves).
            if (a.0 > self.right && b.0 > self.right) || (a.1 > self.bottom && b.1 > self.bottom) {
                continue;
            }
            line(img, clamp(a), clamp(b), width, c);
        }
    }
}

/// A colour on a white-to-blue ramp for `v` in 0..=1.
pub fn heat(v: f64) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0) as f32;
    let lerp = |a: f32, b: f32| (a + (b - a) * v).round() as u8;
    [lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0)]
}

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::Write { path: path.to_owned(), reason: e.to_string() })?;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| EvalError::Write { path: path.to_owned(), reason: e.to_string() })
}
