// SPDX-License-Identifier: MIT OR Apache-2.0
//! Drawing the analysis results into a packed RGB-family or 4:2:0 YUV frame: one outline per face coloured by emotion, a label
//! rendered from a [`LabelTemplate`], landmark dots, and optional privacy blurring or pixelation of the face box.
//!
//! Everything is plain Rust over [`FrameMut`], with no GStreamer. Every shape is clipped to
//! `[0, width) x [0, height)`; the stride padding beyond `width * bpp` and the alpha/x bytes are never written, and
//! boxes that are non-finite, empty or outside the frame are skipped or clipped without panicking.
//!
//! [`Overlay`] owns all scratch memory (the label string, a glyph coverage cache keyed by character and pixel size,
//! the blur buffers), so once a stream's labels have been seen, drawing allocates nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::LazyLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};

use crate::face::{Face, NUM_EMOTIONS};
use crate::frame::{FrameMut, PixelsMut, YuvLayout, YuvMut, YuvToRgb, chroma_size};

/// The label format used when none is configured: rounded age and emotion label, e.g. `"31 happy"`.
pub const DEFAULT_LABEL_FORMAT: &str = "{age} {emotion}";

/// Smallest font size in pixels, for explicit sizes and for the size derived from the frame height.
pub const MIN_FONT_SIZE: f32 = 6.0;
/// Largest font size in pixels (bounds the glyph cache and the label size).
pub const MAX_FONT_SIZE: f32 = 256.0;
/// Largest outline width in pixels.
pub const MAX_LINE_WIDTH: u32 = 64;

/// The embedded label font (DejaVu Sans Bold from the `dejavu` crate), parsed once.
static FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(dejavu::sans::bold()).expect("the DejaVu Sans Bold font embedded by `dejavu` parses")
});

/// Glyph cache entries beyond which the cache is emptied and refilled (a change of font size per frame).
const GLYPH_CACHE_MAX_ENTRIES: usize = 2048;
/// Coverage bytes beyond which the glyph cache is emptied and refilled.
const GLYPH_CACHE_MAX_BYTES: usize = 8 << 20;
/// Box blur passes for [`Privacy::Blur`]; three passes approximate a Gaussian.
const BLUR_PASSES: usize = 3;
/// Float coordinates are clamped to this magnitude before converting to integers.
const COORD_LIMIT: f32 = 16_777_216.0;

// ---------------------------------------------------------------------------------------------------------------
// Label template
// ---------------------------------------------------------------------------------------------------------------

/// A value a label template can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Field {
    Age,
    AgeRange,
    Emotion,
    Confidence,
    Score,
    Id,
    Gender,
}

impl Field {
    const NAMES: [(&'static str, Field); 7] = [
        ("age", Field::Age),
        ("age_range", Field::AgeRange),
        ("emotion", Field::Emotion),
        ("confidence", Field::Confidence),
        ("score", Field::Score),
        ("id", Field::Id),
        ("gender", Field::Gender),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
    }

    /// Whether `face` has this value (a present field always renders as a non-empty string).
    fn present(self, face: &Face) -> bool {
        match self {
            Field::Age => face.age.is_some_and(|a| a.value.is_finite()),
            Field::AgeRange => face.age.is_some_and(|a| a.low.is_finite() && a.high.is_finite()),
            Field::Emotion => face.emotion.is_some(),
            Field::Confidence => face.emotion.is_some_and(|e| e.confidence().is_finite()),
            Field::Score => face.detection.score.is_finite(),
            Field::Id => face.track_id.is_some(),
            Field::Gender => face.gender_male.is_some_and(f32::is_finite),
        }
    }

    /// Appends the value to `out`; writes nothing when it is missing.
    fn write(self, face: &Face, out: &mut String) {
        if !self.present(face) {
            return;
        }
        let years = |v: f32| v.round().clamp(0.0, 999.0) as u32;
        // Writing into a String cannot fail.
        let _ = match self {
            Field::Age => face.age.map_or(Ok(()), |a| write!(out, "{}", years(a.value))),
            Field::AgeRange => face.age.map_or(Ok(()), |a| write!(out, "{}-{}", years(a.low), years(a.high))),
            Field::Emotion => {
                out.push_str(face.emotion.map_or("", |e| e.label()));
                Ok(())
            }
            Field::Confidence => face.emotion.map_or(Ok(()), |e| write!(out, "{:.2}", e.confidence())),
            Field::Score => write!(out, "{:.2}", face.detection.score),
            Field::Id => face.track_id.map_or(Ok(()), |id| write!(out, "{id}")),
            Field::Gender => {
                out.push_str(if face.gender_male.is_some_and(|p| p >= 0.5) { "M" } else { "F" });
                Ok(())
            }
        };
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A whitespace-delimited run of literal text and fields.
#[derive(Clone, Debug, Default, PartialEq)]
struct Word {
    pieces: Vec<Piece>,
    has_field: bool,
}

/// A parsed label format such as `"{age}y {emotion} {confidence}"`.
///
/// Fields: `{age}` (rounded years), `{age_range}` (10th–90th percentile, e.g. `29-40`), `{emotion}` (label),
/// `{confidence}` (emotion probability, e.g. `0.81`), `{score}` (detector confidence), `{id}` (track id) and
/// `{gender}` (`M` or `F`). `{{` and `}}` are literal braces.
///
/// A missing value (age analysis off, no track id, ...) renders as nothing. The format is split into
/// whitespace-delimited words; a word whose fields are all missing is dropped together with its literal text
/// (so `"{age}y"` or `"id:{id}"` disappear rather than leaving `"y"` or `"id:"`), and the remaining words are joined
/// by single spaces with no leading or trailing space.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelTemplate {
    words: Vec<Word>,
}

impl LabelTemplate {
    /// Parses a label format; fails on an unknown `{field}`, an unclosed `{` or a lone `}`.
    pub fn parse(format: &str) -> Result<Self, String> {
        let mut words = Vec::new();
        let mut word = Word::default();
        let mut text = String::new();
        let mut chars = format.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' | '}' if chars.peek().is_some_and(|&(_, n)| n == c) => {
                    chars.next();
                    text.push(c);
                }
                '{' => {
                    let mut end = None;
                    for (j, d) in chars.by_ref() {
                        match d {
                            '}' => {
                                end = Some(j);
                                break;
                            }
                            '{' => return Err(format!("label format {format:?}: '{{' inside a field at byte {j}")),
                            _ => {}
                        }
                    }
                    let end =
                        end.ok_or_else(|| format!("label format {format:?}: '{{' at byte {i} is never closed"))?;
                    let name = &format[i + 1..end];
                    let field = Field::from_name(name).ok_or_else(|| {
                        format!(
                            "label format {format:?}: unknown field {{{name}}} (known: {{age}}, {{age_range}}, \
                             {{emotion}}, {{confidence}}, {{score}}, {{id}}, {{gender}})"
                        )
                    })?;
                    if !text.is_empty() {
                        word.pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    word.pieces.push(Piece::Field(field));
                    word.has_field = true;
                }
                '}' => {
                    return Err(format!(
                        "label format {format:?}: unmatched '}}' at byte {i} (write '}}}}' for a literal brace)"
                    ));
                }
                c if c.is_whitespace() => {
                    if !text.is_empty() {
                        word.pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    if !word.pieces.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            word.pieces.push(Piece::Text(text));
        }
        if !word.pieces.is_empty() {
            words.push(word);
        }
        Ok(Self { words })
    }

    /// Whether the template renders nothing for every face (an empty or all-whitespace format).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Clears `out` and writes the label for `face` into it (reusing its capacity).
    pub fn render(&self, face: &Face, out: &mut String) {
        out.clear();
        for word in &self.words {
            if word.has_field && !word.pieces.iter().any(|p| matches!(p, Piece::Field(f) if f.present(face))) {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            for piece in &word.pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Field(f) => f.write(face, out),
                }
            }
        }
    }
}

impl Default for LabelTemplate {
    /// The template for [`DEFAULT_LABEL_FORMAT`].
    fn default() -> Self {
        Self::parse(DEFAULT_LABEL_FORMAT).expect("the default label format parses")
    }
}

impl FromStr for LabelTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Style
// ---------------------------------------------------------------------------------------------------------------

/// How the face region is anonymised before the box and label are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Privacy {
    /// Leave the face visible.
    #[default]
    None,
    /// A strong blur: three passes of a separable box blur with a radius of 1/8 of the box size.
    Blur,
    /// Square blocks of 1/8 of the box size, each filled with its average colour.
    Pixelate,
}

/// What to draw and how large.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayStyle {
    /// Label font size in pixels; `None` scales with the frame: `max(12, height / 36)`. Clamped to
    /// [`MIN_FONT_SIZE`]..=[`MAX_FONT_SIZE`] and rounded to whole pixels.
    pub font_size: Option<f32>,
    /// Outline width in pixels; `None` scales with the frame: `max(1, round(height / 360))`. Clamped to
    /// 1..=[`MAX_LINE_WIDTH`].
    pub line_width: Option<u32>,
    /// Draw each face's box outline.
    pub draw_boxes: bool,
    /// Draw the five landmarks as small filled dots.
    pub draw_landmarks: bool,
    /// Draw the label above each box.
    pub draw_labels: bool,
    /// Anonymise the face box.
    pub privacy: Privacy,
}

impl Default for OverlayStyle {
    /// Sizes scaled with the frame, landmarks and labels on, no privacy filter.
    fn default() -> Self {
        Self {
            font_size: None,
            line_width: None,
            draw_boxes: true,
            draw_landmarks: true,
            draw_labels: true,
            privacy: Privacy::None,
        }
    }
}

impl OverlayStyle {
    /// The label font size in whole pixels for a frame `frame_height` pixels high.
    pub fn font_px(&self, frame_height: usize) -> u32 {
        let auto = (frame_height as f32 / 36.0).max(12.0);
        let size = self.font_size.filter(|s| s.is_finite()).unwrap_or(auto);
        size.clamp(MIN_FONT_SIZE, MAX_FONT_SIZE).round() as u32
    }

    /// The outline width in pixels for a frame `frame_height` pixels high.
    pub fn line_px(&self, frame_height: usize) -> u32 {
        let auto = (frame_height as f32 / 360.0).round() as u32;
        self.line_width.unwrap_or(auto).clamp(1, MAX_LINE_WIDTH)
    }
}

/// The box colour for a face: by emotion (happy green, neutral light grey, sad blue, angry red, surprise yellow,
/// fear purple, disgust olive), cyan when there is no emotion estimate.
pub fn face_color(face: &Face) -> [u8; 3] {
    /// In [`crate::face::EMOTIONS`] order: angry, disgust, fear, happy, sad, surprise, neutral.
    const BY_EMOTION: [[u8; 3]; NUM_EMOTIONS] =
        [[230, 40, 40], [150, 160, 30], [165, 80, 220], [40, 205, 70], [45, 110, 240], [250, 220, 30], [215, 215, 215]];
    const NO_EMOTION: [u8; 3] = [0, 220, 235];
    face.emotion.map_or(NO_EMOTION, |e| BY_EMOTION[e.index.min(NUM_EMOTIONS - 1)])
}

/// Black or white, whichever contrasts more with `bg`.
fn text_color(bg: [u8; 3]) -> [u8; 3] {
    let luma = 299 * bg[0] as u32 + 587 * bg[1] as u32 + 114 * bg[2] as u32;
    if luma > 140_000 { [0, 0, 0] } else { [255, 255, 255] }
}

// ---------------------------------------------------------------------------------------------------------------
// Canvas: validated row access to the frame
// ---------------------------------------------------------------------------------------------------------------

/// An integer rectangle `[x0, x1) x [y0, y1)`, possibly outside the frame or empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn width(&self) -> i64 {
        self.x1 - self.x0
    }
    fn height(&self) -> i64 {
        self.y1 - self.y0
    }
}

/// A rectangle clipped to the frame and known to be non-empty.
#[derive(Clone, Copy, Debug)]
struct Clipped {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// Float coordinate to integer pixel, saturating far outside any frame. Callers reject non-finite values first.
#[inline]
fn to_px(v: f32) -> i64 {
    v.clamp(-COORD_LIMIT, COORD_LIMIT).round() as i64
}

/// The pixel rectangle of a face box, or `None` for non-finite, empty or negative boxes.
fn face_rect(face: &Face) -> Option<Rect> {
    let b = face.detection.bbox;
    let (x2, y2) = (b.x + b.w, b.y + b.h);
    if !(b.x.is_finite() && b.y.is_finite() && x2.is_finite() && y2.is_finite() && b.w > 0.0 && b.h > 0.0) {
        return None;
    }
    let (x0, y0) = (to_px(b.x), to_px(b.y));
    // At least one pixel, so that a tiny face is still marked.
    Some(Rect { x0, y0, x1: to_px(x2).max(x0 + 1), y1: to_px(y2).max(y0 + 1) })
}

struct Canvas<'a> {
    width: usize,
    height: usize,
    surface: Surface<'a>,
}

/// Where a [`Canvas`] draws: packed pixels, or the planes of a 4:2:0 YUV frame (luma per pixel, chroma per 2x2 cell:
/// a shape's colour reaches the whole chroma cell of each pixel it covers, as in any 4:2:0 overlay).
enum Surface<'a> {
    Packed {
        data: &'a mut [u8],
        stride: usize,
        bpp: usize,
        offs: [usize; 3],
    },
    /// The planes, and their YUV to RGB conversion folded once.
    Yuv(YuvMut<'a>, YuvToRgb),
}

/// The chroma cells `c0..c1` (one axis) touched by pixels `p0..p1`.
#[inline]
fn cells(p0: usize, p1: usize) -> std::ops::Range<usize> {
    p0 / 2..p1.div_ceil(2)
}

impl<'a> Canvas<'a> {
    /// Re-validates the geometry (the frame's fields are public), so that row slicing below cannot panic.
    fn new(frame: &'a mut FrameMut<'_>) -> Option<Self> {
        let (width, height) = (frame.width, frame.height);
        if width == 0 || height == 0 {
            return None;
        }
        let fits = |len: usize, row: usize, rows: usize, stride: usize| {
            stride >= row && (rows - 1).checked_mul(stride).and_then(|v| v.checked_add(row)).is_some_and(|n| n <= len)
        };
        let surface = match &mut frame.pixels {
            PixelsMut::Packed { data, stride, layout } => {
                let bpp = layout.bpp();
                if !fits(data.len(), width.checked_mul(bpp)?, height, *stride) {
                    return None;
                }
                Surface::Packed { data, stride: *stride, bpp, offs: layout.rgb_offsets() }
            }
            PixelsMut::Yuv(m) => {
                let (cw, ch) = chroma_size(width, height);
                let ok = fits(m.y.len(), width, height, m.y_stride)
                    && match m.layout {
                        YuvLayout::I420 => fits(m.c0.len(), cw, ch, m.c_stride) && fits(m.c1.len(), cw, ch, m.c_stride),
                        YuvLayout::Nv12 => fits(m.c0.len(), 2 * cw, ch, m.c_stride),
                    };
                if !ok {
                    return None;
                }
                let to_rgb = m.matrix.coefficients();
                let planes = YuvMut {
                    y: &mut *m.y,
                    c0: &mut *m.c0,
                    c1: &mut *m.c1,
                    y_stride: m.y_stride,
                    c_stride: m.c_stride,
                    layout: m.layout,
                    matrix: m.matrix,
                };
                Surface::Yuv(planes, to_rgb)
            }
        };
        Some(Self { width, height, surface })
    }

    fn clip(&self, r: Rect) -> Option<Clipped> {
        let x0 = r.x0.clamp(0, self.width as i64) as usize;
        let x1 = r.x1.clamp(0, self.width as i64) as usize;
        let y0 = r.y0.clamp(0, self.height as i64) as usize;
        let y1 = r.y1.clamp(0, self.height as i64) as usize;
        (x0 < x1 && y0 < y1).then_some(Clipped { x0, y0, x1, y1 })
    }

    fn fill(&mut self, r: Rect, rgb: [u8; 3]) {
        let Some(c) = self.clip(r) else { return };
        match &mut self.surface {
            Surface::Packed { data, stride, bpp, offs: [o0, o1, o2] } => {
                for y in c.y0..c.y1 {
                    for px in span(data, *stride, *bpp, y, c.x0, c.x1).chunks_exact_mut(*bpp) {
                        px[*o0] = rgb[0];
                        px[*o1] = rgb[1];
                        px[*o2] = rgb[2];
                    }
                }
            }
            Surface::Yuv(m, _) => {
                let [yv, u, v] = m.matrix.from_rgb(rgb);
                for y in c.y0..c.y1 {
                    m.y[y * m.y_stride + c.x0..y * m.y_stride + c.x1].fill(yv);
                }
                for cy in cells(c.y0, c.y1) {
                    for cx in cells(c.x0, c.x1) {
                        m.set_chroma(cx, cy, [u, v]);
                    }
                }
            }
        }
    }

    /// An outline `t` pixels thick, inside `r`.
    fn outline(&mut self, r: Rect, t: i64, rgb: [u8; 3]) {
        self.fill(Rect { y1: (r.y0 + t).min(r.y1), ..r }, rgb);
        self.fill(Rect { y0: (r.y1 - t).max(r.y0), ..r }, rgb);
        let (y0, y1) = (r.y0 + t, r.y1 - t);
        self.fill(Rect { y0, y1, x1: (r.x0 + t).min(r.x1), ..r }, rgb);
        self.fill(Rect { y0, y1, x0: (r.x1 - t).max(r.x0), ..r }, rgb);
    }

    /// A filled disc of radius `r` pixels centred on pixel (cx, cy).
    fn disc(&mut self, cx: i64, cy: i64, r: i64, rgb: [u8; 3]) {
        for dy in -r..=r {
            let half = ((r * r - dy * dy) as f32 + 0.5 * r as f32).sqrt() as i64;
            self.fill(Rect { x0: cx - half, y0: cy + dy, x1: cx + half + 1, y1: cy + dy + 1 }, rgb);
        }
    }

    /// Blends a glyph's coverage (`w` x `h`, row-major) with its top-left pixel at (x, y).
    fn blend_coverage(&mut self, x: i64, y: i64, w: usize, h: usize, coverage: &[u8], rgb: [u8; 3]) {
        let r = Rect { x0: x, y0: y, x1: x + w as i64, y1: y + h as i64 };
        let Some(c) = self.clip(r) else { return };
        let (cx0, cy0) = ((c.x0 as i64 - x) as usize, (c.y0 as i64 - y) as usize);
        let blend = |old: u8, v: u8, a: u32| ((old as u32 * (255 - a) + v as u32 * a + 127) / 255) as u8;
        match &mut self.surface {
            Surface::Packed { data, stride, bpp, offs } => {
                for (row, y) in (c.y0..c.y1).enumerate() {
                    let cov_start = (cy0 + row) * w + cx0;
                    let cov = &coverage[cov_start..cov_start + (c.x1 - c.x0)];
                    for (px, &a) in span(data, *stride, *bpp, y, c.x0, c.x1).chunks_exact_mut(*bpp).zip(cov) {
                        match a {
                            0 => {}
                            255 => {
                                for (&o, v) in offs.iter().zip(rgb) {
                                    px[o] = v;
                                }
                            }
                            a => {
                                for (&o, v) in offs.iter().zip(rgb) {
                                    px[o] = blend(px[o], v, a as u32);
                                }
                            }
                        }
                    }
                }
            }
            Surface::Yuv(m, _) => {
                let [yv, u, v] = m.matrix.from_rgb(rgb);
                let cov_at = |px: usize, py: usize| coverage[(py - c.y0 + cy0) * w + (px - c.x0 + cx0)] as u32;
                for py in c.y0..c.y1 {
                    for px in c.x0..c.x1 {
                        let a = cov_at(px, py);
                        if a > 0 {
                            let i = py * m.y_stride + px;
                            m.y[i] = blend(m.y[i], yv, a);
                        }
                    }
                }
                // Chroma: the cell's coverage is the mean over its four pixels (those outside the glyph count 0).
                for cy in cells(c.y0, c.y1) {
                    for cx in cells(c.x0, c.x1) {
                        let mut sum = 0;
                        for py in (2 * cy).max(c.y0)..(2 * cy + 2).min(c.y1) {
                            for px in (2 * cx).max(c.x0)..(2 * cx + 2).min(c.x1) {
                                sum += cov_at(px, py);
                            }
                        }
                        let a = (sum + 2) / 4;
                        if a > 0 {
                            let [ou, ov] = m.chroma(cx, cy);
                            m.set_chroma(cx, cy, [blend(ou, u, a), blend(ov, v, a)]);
                        }
                    }
                }
            }
        }
    }

    /// Red, green, blue of pixel (x, y), inside the canvas.
    #[inline]
    fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        match &self.surface {
            Surface::Packed { data, stride, bpp, offs } => {
                let p = y * stride + x * bpp;
                offs.map(|o| data[p + o])
            }
            Surface::Yuv(m, k) => {
                let [u, v] = m.chroma(x / 2, y / 2);
                k.rgb(m.y[y * m.y_stride + x] as f32, u as f32, v as f32).map(|c| c.round().clamp(0.0, 255.0) as u8)
            }
        }
    }

    /// Copies the clipped region into `dst` as packed RGB, transposed: `dst` holds one row of `y1 - y0` pixels per
    /// column of the region. `dst` must be `3 * width * height` bytes.
    fn gather_transposed(&mut self, c: Clipped, dst: &mut [u8]) {
        let h = c.y1 - c.y0;
        if let Surface::Packed { data, stride, bpp, offs: [o0, o1, o2] } = &mut self.surface {
            for (row, y) in (c.y0..c.y1).enumerate() {
                for (x, px) in span(data, *stride, *bpp, y, c.x0, c.x1).chunks_exact(*bpp).enumerate() {
                    let d = (x * h + row) * 3;
                    dst[d..d + 3].copy_from_slice(&[px[*o0], px[*o1], px[*o2]]);
                }
            }
            return;
        }
        for (row, y) in (c.y0..c.y1).enumerate() {
            for (x, px) in (c.x0..c.x1).enumerate() {
                let d = (x * h + row) * 3;
                dst[d..d + 3].copy_from_slice(&self.rgb_at(px, y));
            }
        }
    }

    /// Writes packed RGB `src` back into the clipped region (for YUV: luma per pixel, chroma per cell from the
    /// mean of the cell's pixels inside the region).
    fn scatter(&mut self, c: Clipped, src: &[u8]) {
        let row_len = (c.x1 - c.x0) * 3;
        match &mut self.surface {
            Surface::Packed { data, stride, bpp, offs: [o0, o1, o2] } => {
                for (y, src_row) in (c.y0..c.y1).zip(src.chunks_exact(row_len)) {
                    for (px, s) in
                        span(data, *stride, *bpp, y, c.x0, c.x1).chunks_exact_mut(*bpp).zip(src_row.chunks_exact(3))
                    {
                        px[*o0] = s[0];
                        px[*o1] = s[1];
                        px[*o2] = s[2];
                    }
                }
            }
            Surface::Yuv(m, _) => {
                let at = |px: usize, py: usize| {
                    let i = (py - c.y0) * row_len + (px - c.x0) * 3;
                    [src[i] as f32, src[i + 1] as f32, src[i + 2] as f32]
                };
                for py in c.y0..c.y1 {
                    for px in c.x0..c.x1 {
                        let yv = m.matrix.from_rgb_f32(at(px, py))[0];
                        m.y[py * m.y_stride + px] = yv.round().clamp(0.0, 255.0) as u8;
                    }
                }
                for cy in cells(c.y0, c.y1) {
                    for cx in cells(c.x0, c.x1) {
                        let (mut sum, mut n) = ([0.0f32; 3], 0.0f32);
                        for py in (2 * cy).max(c.y0)..(2 * cy + 2).min(c.y1) {
                            for px in (2 * cx).max(c.x0)..(2 * cx + 2).min(c.x1) {
                                let p = at(px, py);
                                sum = [sum[0] + p[0], sum[1] + p[1], sum[2] + p[2]];
                                n += 1.0;
                            }
                        }
                        let [_, u, v] = m.matrix.from_rgb_f32(sum.map(|s| s / n));
                        m.set_chroma(cx, cy, [u, v].map(|c| c.round().clamp(0.0, 255.0) as u8));
                    }
                }
            }
        }
    }

    /// Replaces each `block` x `block` cell (grid anchored at `origin`) by its average colour.
    fn pixelate(&mut self, c: Clipped, origin: (i64, i64), block: i64) {
        let next = |p: usize, o: i64, end: usize| -> usize {
            let n = o + ((p as i64 - o).div_euclid(block) + 1) * block;
            (n.max(p as i64 + 1) as usize).min(end)
        };
        let mut by0 = c.y0;
        while by0 < c.y1 {
            let by1 = next(by0, origin.1, c.y1);
            let mut bx0 = c.x0;
            while bx0 < c.x1 {
                let bx1 = next(bx0, origin.0, c.x1);
                let mut sum = [0u64; 3];
                for y in by0..by1 {
                    match &mut self.surface {
                        Surface::Packed { data, stride, bpp, offs: [o0, o1, o2] } => {
                            for px in span(data, *stride, *bpp, y, bx0, bx1).chunks_exact(*bpp) {
                                sum[0] += px[*o0] as u64;
                                sum[1] += px[*o1] as u64;
                                sum[2] += px[*o2] as u64;
                            }
                        }
                        Surface::Yuv(..) => {
                            for x in bx0..bx1 {
                                let p = self.rgb_at(x, y);
                                sum = [sum[0] + p[0] as u64, sum[1] + p[1] as u64, sum[2] + p[2] as u64];
                            }
                        }
                    }
                }
                let n = ((by1 - by0) * (bx1 - bx0)) as u64;
                let avg = sum.map(|s| ((s + n / 2) / n) as u8);
                self.fill(Rect { x0: bx0 as i64, y0: by0 as i64, x1: bx1 as i64, y1: by1 as i64 }, avg);
                bx0 = bx1;
            }
            by0 = by1;
        }
    }
}

/// The bytes of pixels `x0..x1` of row `y` of packed pixels (callers keep them inside the frame).
#[inline]
fn span(data: &mut [u8], stride: usize, bpp: usize, y: usize, x0: usize, x1: usize) -> &mut [u8] {
    let start = y * stride;
    &mut data[start + x0 * bpp..start + x1 * bpp]
}

/// Transposes `rows` x `cols` packed RGB pixels in `src` into `cols` x `rows` in `dst`.
fn transpose_rgb(src: &[u8], dst: &mut [u8], rows: usize, cols: usize) {
    for (i, src_row) in src.chunks_exact(cols * 3).enumerate().take(rows) {
        for (j, px) in src_row.chunks_exact(3).enumerate() {
            let d = (j * rows + i) * 3;
            dst[d..d + 3].copy_from_slice(px);
        }
    }
}

/// [`BLUR_PASSES`] vertical box-blur passes over `rows` rows of `row_len` bytes; the result ends in `a`, `b` and
/// `sums` are scratch.
fn blur_columns(a: &mut Vec<u8>, b: &mut Vec<u8>, row_len: usize, rows: usize, r: usize, sums: &mut Vec<u32>) {
    for _ in 0..BLUR_PASSES {
        box_blur_v(a, b, row_len, rows, r, sums);
        std::mem::swap(a, b);
    }
}

/// One vertical box-blur pass over `h` packed RGB rows, edges clamped; `sums` is scratch.
fn box_blur_v(src: &[u8], dst: &mut [u8], row_len: usize, h: usize, r: usize, sums: &mut Vec<u32>) {
    // Fixed-point reciprocal instead of a division per byte: s <= 255 * n, so s * mul + 2^23 <= 255 * 2^24 + 2^23
    // fits in u32 and the result never exceeds 255.
    let mul = (1u32 << 24) / (2 * r as u32 + 1);
    let row = |i: usize| &src[i.min(h - 1) * row_len..][..row_len];
    sums.clear();
    sums.extend(row(0).iter().map(|&v| (r as u32 + 1) * v as u32));
    for i in 1..=r {
        for (s, &v) in sums.iter_mut().zip(row(i)) {
            *s += v as u32;
        }
    }
    for (y, d) in dst.chunks_exact_mut(row_len).enumerate().take(h) {
        for (d, &s) in d.iter_mut().zip(sums.iter()) {
            *d = ((s * mul + (1 << 23)) >> 24) as u8;
        }
        for ((s, &add), &sub) in sums.iter_mut().zip(row(y + r + 1)).zip(row(y.saturating_sub(r))) {
            *s = *s + add as u32 - sub as u32;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Glyph cache
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Glyph {
    id: GlyphId,
    advance: f32,
    /// Offset of the coverage bitmap's top-left pixel from the pen position on the baseline.
    left: i32,
    top: i32,
    w: u32,
    h: u32,
    /// Start of the `w * h` coverage bytes in the cache's arena.
    offset: usize,
}

#[derive(Debug, Default)]
struct GlyphCache {
    map: HashMap<(char, u32), Glyph>,
    coverage: Vec<u8>,
}

impl GlyphCache {
    fn get(&mut self, c: char, px: u32) -> Glyph {
        if let Some(g) = self.map.get(&(c, px)) {
            return *g;
        }
        let font = &*FONT;
        let scale = PxScale::from(px as f32);
        let id = font.glyph_id(c);
        let mut g = Glyph {
            id,
            advance: font.as_scaled(scale).h_advance(id),
            left: 0,
            top: 0,
            w: 0,
            h: 0,
            offset: self.coverage.len(),
        };
        if let Some(outlined) = font.outline_glyph(id.with_scale_and_position(scale, point(0.0, 0.0))) {
            let b = outlined.px_bounds();
            let (w, h) = (b.width().max(0.0) as u32, b.height().max(0.0) as u32);
            g = Glyph { left: b.min.x as i32, top: b.min.y as i32, w, h, ..g };
            self.coverage.resize(g.offset + (w * h) as usize, 0);
            let dst = &mut self.coverage[g.offset..];
            outlined.draw(|x, y, a| {
                if x < w && y < h {
                    dst[(y * w + x) as usize] = (a.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                }
            });
        }
        self.map.insert((c, px), g);
        g
    }

    fn trim(&mut self) {
        if self.map.len() > GLYPH_CACHE_MAX_ENTRIES || self.coverage.len() > GLYPH_CACHE_MAX_BYTES {
            self.map.clear();
            self.coverage.clear();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Overlay
// ---------------------------------------------------------------------------------------------------------------

/// Draws faces into frames; keep one per stream so that its scratch memory and glyph cache are reused.
#[derive(Debug, Default)]
pub struct Overlay {
    label: String,
    glyphs: GlyphCache,
    blur_a: Vec<u8>,
    blur_b: Vec<u8>,
    blur_sums: Vec<u32>,
}

impl Overlay {
    /// An overlay with empty caches (the embedded font is parsed once per process, on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Draws `faces` into `frame`: privacy filter first (for all faces), then the outlines and landmarks (as enabled), then the
    /// labels on top. Invalid boxes (non-finite, empty) are skipped; everything is clipped to the frame. Landmarks
    /// that are all exactly (0, 0) are taken as absent; non-finite landmarks are skipped.
    pub fn draw(&mut self, frame: &mut FrameMut<'_>, faces: &[Face], template: &LabelTemplate, style: &OverlayStyle) {
        let Some(mut canvas) = Canvas::new(frame) else { return };
        let line = style.line_px(canvas.height) as i64;

        if style.privacy != Privacy::None {
            for face in faces {
                if let Some(rect) = face_rect(face) {
                    self.anonymise(&mut canvas, rect, style.privacy);
                }
            }
        }

        for face in faces {
            let color = face_color(face);
            if let Some(rect) = face_rect(face).filter(|_| style.draw_boxes) {
                canvas.outline(rect, line, color);
            }
            if style.draw_landmarks {
                draw_landmarks(&mut canvas, face, line + 1, color);
            }
        }

        if style.draw_labels && !template.is_empty() {
            self.glyphs.trim();
            let px = style.font_px(canvas.height);
            for face in faces {
                let Some(rect) = face_rect(face) else { continue };
                if canvas.clip(rect).is_none() {
                    continue;
                }
                template.render(face, &mut self.label);
                if !self.label.is_empty() {
                    draw_label(&mut canvas, &mut self.glyphs, &self.label, px, rect, face_color(face));
                }
            }
        }
    }

    fn anonymise(&mut self, canvas: &mut Canvas<'_>, rect: Rect, privacy: Privacy) {
        let Some(c) = canvas.clip(rect) else { return };
        // Scale from the whole box (not the clipped part) so the effect is as strong at the frame edge, but never
        // beyond the frame's size.
        let size = rect.width().max(rect.height()).min(canvas.width.max(canvas.height) as i64);
        match privacy {
            Privacy::None => {}
            Privacy::Pixelate => canvas.pixelate(c, (rect.x0, rect.y0), (size / 8).max(2)),
            Privacy::Blur => {
                // Box blurs along one axis commute, so run all passes along x, then all along y. Both run as
                // vertical passes (which vectorise across the row): along x on the transposed region.
                let (w, h) = (c.x1 - c.x0, c.y1 - c.y0);
                let r = (size / 8).max(1) as usize;
                let (a, b, sums) = (&mut self.blur_a, &mut self.blur_b, &mut self.blur_sums);
                for buf in [&mut *a, &mut *b] {
                    buf.clear();
                    buf.resize(w * h * 3, 0);
                }
                canvas.gather_transposed(c, a);
                blur_columns(a, b, h * 3, w, r, sums);
                transpose_rgb(a, b, w, h);
                std::mem::swap(a, b);
                blur_columns(a, b, w * 3, h, r, sums);
                canvas.scatter(c, &self.blur_a);
            }
        }
    }
}

fn draw_landmarks(canvas: &mut Canvas<'_>, face: &Face, radius: i64, color: [u8; 3]) {
    let marks = &face.detection.landmarks;
    // All five at the origin means "no landmarks" (a detector without them, or a default Face).
    if marks.iter().all(|&[x, y]| x == 0.0 && y == 0.0) {
        return;
    }
    for &[x, y] in marks {
        if x.is_finite() && y.is_finite() {
            canvas.disc(to_px(x - 0.5), to_px(y - 0.5), radius, color);
        }
    }
}

/// Draws `text` on a filled label in `color` above `rect` (inside it when there is no room above), kept inside the
/// frame horizontally.
fn draw_label(canvas: &mut Canvas<'_>, glyphs: &mut GlyphCache, text: &str, px: u32, rect: Rect, color: [u8; 3]) {
    let scaled = FONT.as_scaled(PxScale::from(px as f32));
    let ascent = scaled.ascent().round() as i64;
    let line_h = (scaled.ascent() - scaled.descent()).ceil() as i64;
    let pad_x = ((px as f32 * 0.25).round() as i64).max(2);
    let pad_y = ((px as f32 * 0.12).round() as i64).max(1);

    // Measure.
    let mut pen = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    for c in text.chars() {
        let g = glyphs.get(c, px);
        if let Some(p) = prev {
            pen += scaled.kern(p, g.id);
        }
        pen += g.advance;
        prev = Some(g.id);
    }
    let label_w = pen.ceil() as i64 + 2 * pad_x;
    let label_h = line_h + 2 * pad_y;

    let (fw, fh) = (canvas.width as i64, canvas.height as i64);
    let x0 = rect.x0.min(fw - label_w).max(0);
    let y0 = if rect.y0 - label_h >= 0 { rect.y0 - label_h } else { rect.y0.min(fh - label_h).max(0) };
    canvas.fill(Rect { x0, y0, x1: x0 + label_w, y1: y0 + label_h }, color);

    // Draw.
    let ink = text_color(color);
    let baseline = y0 + pad_y + ascent;
    let (mut pen, mut prev) = (0.0f32, None);
    for c in text.chars() {
        let g = glyphs.get(c, px);
        if let Some(p) = prev {
            pen += scaled.kern(p, g.id);
        }
        if g.w > 0 && g.h > 0 {
            let cov = &glyphs.coverage[g.offset..g.offset + (g.w * g.h) as usize];
            let gx = x0 + pad_x + pen.round() as i64 + g.left as i64;
            canvas.blend_coverage(gx, baseline + g.top as i64, g.w as usize, g.h as usize, cov, ink);
        }
        pen += g.advance;
        prev = Some(g.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{AgeEstimate, BBox, Detection, EMOTIONS, EmotionEstimate};
    use crate::frame::PixelLayout;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 131 + 17) % 251) as u8).collect()
    }

    fn face(x: f32, y: f32, w: f32, h: f32) -> Face {
        let mut probs = [0.02; NUM_EMOTIONS];
        probs[3] = 0.81;
        Face {
            detection: Detection {
                bbox: BBox { x, y, w, h },
                score: 0.93,
                landmarks: [
                    [x + 0.3 * w, y + 0.4 * h],
                    [x + 0.7 * w, y + 0.4 * h],
                    [x + 0.5 * w, y + 0.6 * h],
                    [x + 0.35 * w, y + 0.8 * h],
                    [x + 0.65 * w, y + 0.8 * h],
                ],
            },
            age: Some(AgeEstimate { value: 31.4, stddev: 4.0, low: 28.6, high: 40.2, confidence: 0.6 }),
            gender_male: Some(0.8),
            emotion: Some(EmotionEstimate::from_probabilities(probs)),
            track_id: Some(7),
            fresh: true,
            observations: 1,
        }
    }

    /// Byte indices of a padded frame that drawing must never change: stride padding and alpha/x bytes.
    fn protected(width: usize, height: usize, stride: usize, layout: PixelLayout) -> Vec<bool> {
        let bpp = layout.bpp();
        let rgb = layout.rgb_offsets();
        let mut mask = vec![true; (height - 1) * stride + width * bpp];
        for y in 0..height {
            for x in 0..width {
                for o in rgb {
                    mask[y * stride + x * bpp + o] = false;
                }
            }
        }
        mask
    }

    #[test]
    fn draws_box_in_every_layout_without_touching_padding_or_alpha() {
        let (w, h) = (641, 361);
        let f = face(200.3, 120.7, 150.0, 170.0);
        let template = LabelTemplate::parse("{age} {emotion} {confidence}").unwrap();
        let mut overlay = Overlay::new();
        for layout in PixelLayout::ALL {
            let stride = w * layout.bpp() + 12;
            let mut buf = pattern(stride * h);
            let orig = buf.clone();
            let mask = protected(w, h, stride, layout);
            let mut frame = FrameMut::new(&mut buf, w, h, stride, layout).unwrap();
            overlay.draw(&mut frame, &[f], &template, &OverlayStyle::default());
            let view = frame.as_ref();
            let color = face_color(&f);
            // Top, bottom, left and right edges of the box.
            for (x, y) in [(250, 121), (250, 290), (200, 200), (349, 200)] {
                assert_eq!(view.rgb(x, y), color, "{layout:?} border ({x}, {y})");
            }
            // The label sits above the box, in the box colour at its left padding.
            assert_eq!(view.rgb(201, 115), color, "{layout:?} label");
            let far = 600 * layout.bpp() + 340 * stride;
            assert_eq!(buf[far..far + layout.bpp()], orig[far..far + layout.bpp()], "{layout:?} far pixel");
            for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
                assert_eq!(buf[i], orig[i], "{layout:?} protected byte {i}");
            }
            assert_eq!(buf[mask.len()..], orig[mask.len()..]);
        }
    }

    #[test]
    fn label_text_contrasts_with_background() {
        // Neutral (light grey) gets black text, sad (blue) white text.
        let (w, h) = (200, 100);
        for (emotion, ink) in [(6, [0, 0, 0]), (4, [255, 255, 255])] {
            let mut f = face(20.0, 50.0, 100.0, 40.0);
            let mut probs = [0.0; NUM_EMOTIONS];
            probs[emotion] = 1.0;
            f.emotion = Some(EmotionEstimate::from_probabilities(probs));
            let mut buf = vec![128u8; w * h * 3];
            let mut frame = FrameMut::new(&mut buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
            let style = OverlayStyle { font_size: Some(20.0), ..OverlayStyle::default() };
            Overlay::new().draw(&mut frame, &[f], &LabelTemplate::parse("{emotion}").unwrap(), &style);
            let view = frame.as_ref();
            let count = (0..50).flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| view.rgb(x, y) == ink);
            assert!(count.count() > 20, "{} text pixels", EMOTIONS[emotion]);
        }
    }

    #[test]
    fn label_moves_inside_the_box_at_the_top_edge() {
        let (w, h) = (200, 100);
        let f = face(150.0, 2.0, 40.0, 60.0);
        let mut buf = pattern(w * h * 3);
        let orig = buf.clone();
        let style = OverlayStyle { font_size: Some(14.0), draw_landmarks: false, ..OverlayStyle::default() };
        let mut frame = FrameMut::new(&mut buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
        Overlay::new().draw(&mut frame, &[f], &LabelTemplate::default(), &style);
        // The label starts at the box top and is shifted left to fit; rows above the box stay as they were.
        assert_eq!(frame.as_ref().rgb(w - 1, 3), face_color(&f));
        assert_eq!(buf[..2 * w * 3], orig[..2 * w * 3]);
        let p = (3 * w + 140) * 3;
        assert_ne!(buf[p..p + 3], orig[p..p + 3], "label not shifted left of the box");
    }

    #[test]
    fn hostile_boxes_never_write_outside_the_frame() {
        let (w, h) = (37, 23);
        let guard = 9;
        let faces = [
            face(-50.0, 5.0, 30.0, 10.0),
            face(40.0, 5.0, 30.0, 10.0),
            face(5.0, -40.0, 10.0, 30.0),
            face(5.0, 30.0, 10.0, 30.0),
            face(-5.0, -5.0, 20.0, 15.0),
            face(30.0, 18.0, 20.0, 15.0),
            face(-1e9, -1e9, 2e9, 2e9),
            face(f32::NAN, 3.0, 10.0, 10.0),
            face(3.0, 3.0, f32::INFINITY, 10.0),
            face(3.0, 3.0, f32::NEG_INFINITY, 10.0),
            face(10.0, 10.0, 0.0, 5.0),
            face(10.0, 10.0, -5.0, 5.0),
            face(f32::MAX, f32::MAX, f32::MAX, f32::MAX),
            face(-f32::MAX, 3.0, f32::MAX, 3.0),
            face(36.9, 22.9, 0.01, 0.01),
        ];
        let mut nan_marks = face(5.0, 5.0, 10.0, 10.0);
        nan_marks.detection.landmarks = [[f32::NAN, 1.0], [-3.0, -3.0], [1e30, 5.0], [36.0, 22.0], [0.0, 22.5]];
        let styles = [
            OverlayStyle::default(),
            OverlayStyle { font_size: Some(1e9), line_width: Some(u32::MAX), ..OverlayStyle::default() },
            OverlayStyle { font_size: Some(f32::NAN), line_width: Some(0), ..OverlayStyle::default() },
            OverlayStyle { privacy: Privacy::Blur, ..OverlayStyle::default() },
            OverlayStyle { privacy: Privacy::Pixelate, ..OverlayStyle::default() },
        ];
        let template = LabelTemplate::parse("{id} {age_range} {emotion} {score}").unwrap();
        let mut overlay = Overlay::new();
        for layout in PixelLayout::ALL {
            let bpp = layout.bpp();
            let outer_stride = (w + 2 * guard) * bpp;
            let outer_h = h + 2 * guard;
            let mut outer = pattern(outer_stride * outer_h);
            let orig = outer.clone();
            let start = guard * outer_stride + guard * bpp;
            for style in &styles {
                for f in faces.iter().chain([&nan_marks]) {
                    let mut frame = FrameMut::new(&mut outer[start..], w, h, outer_stride, layout).unwrap();
                    overlay.draw(&mut frame, std::slice::from_ref(f), &template, style);
                }
                let mut frame = FrameMut::new(&mut outer[start..], w, h, outer_stride, layout).unwrap();
                overlay.draw(&mut frame, &faces, &template, style);
            }
            let rgb = layout.rgb_offsets();
            let mut changed_inside = 0;
            for (i, (a, b)) in outer.iter().zip(&orig).enumerate() {
                let (y, x, o) = (i / outer_stride, (i % outer_stride) / bpp, i % bpp);
                let inside = (guard..guard + h).contains(&y) && (guard..guard + w).contains(&x) && rgb.contains(&o);
                if inside {
                    changed_inside += usize::from(a != b);
                } else {
                    assert_eq!(a, b, "{layout:?}: byte {i} (x {x}, y {y}, channel byte {o}) outside the frame changed");
                }
            }
            assert!(changed_inside > 0, "{layout:?}: nothing drawn");
        }
    }

    #[test]
    fn template_renders_fields() {
        let f = face(0.0, 0.0, 10.0, 10.0);
        let mut out = String::with_capacity(64);
        let render = |fmt: &str, face: &Face, out: &mut String| {
            LabelTemplate::parse(fmt).unwrap().render(face, out);
            out.clone()
        };
        assert_eq!(render(DEFAULT_LABEL_FORMAT, &f, &mut out), "31 happy");
        assert_eq!(render("{age_range} {confidence} {score}", &f, &mut out), "29-40 0.81 0.93");
        assert_eq!(render("#{id} {gender} {age}y", &f, &mut out), "#7 M 31y");
        assert_eq!(render("  {{{emotion}}}   x\t{{}}  ", &f, &mut out), "{happy} x {}");
        assert_eq!(render("{{age}}", &f, &mut out), "{age}");
        assert_eq!(render("", &f, &mut out), "");
        assert!(LabelTemplate::parse("  ").unwrap().is_empty());

        let female = Face { gender_male: Some(0.2), ..f };
        assert_eq!(render("{gender}", &female, &mut out), "F");

        // Missing values: no dangling spaces or suffixes.
        let bare = Face { age: None, emotion: None, gender_male: None, track_id: None, ..f };
        assert_eq!(render(DEFAULT_LABEL_FORMAT, &bare, &mut out), "");
        assert_eq!(render("{age} {emotion} {score}", &bare, &mut out), "0.93");
        assert_eq!(render("id:{id}  {age}y  face  {gender}", &bare, &mut out), "face");
        let no_age = Face { age: None, ..f };
        assert_eq!(render("{age}  {emotion}", &no_age, &mut out), "happy");
        assert_eq!(render("{emotion} {age} {confidence}", &no_age, &mut out), "happy 0.81");
        assert_eq!(render("{age}/{gender}", &no_age, &mut out), "/M");
        let nan_age = Face { age: Some(AgeEstimate { value: f32::NAN, ..AgeEstimate::default() }), ..f };
        assert_eq!(render("{age} {emotion}", &nan_age, &mut out), "happy");

        // `render` replaces, reusing the allocation.
        let cap = out.capacity();
        LabelTemplate::default().render(&f, &mut out);
        assert_eq!(out, "31 happy");
        assert_eq!(out.capacity(), cap);
    }

    #[test]
    fn template_rejects_bad_formats() {
        for bad in ["{", "{age", "age}", "{ag}", "{}", "{age}}", "{{age}", "{a{ge}", "x } y", "{AGE}"] {
            let err = LabelTemplate::parse(bad).expect_err(bad);
            assert!(err.contains("label format"), "{bad}: {err}");
        }
        assert!(LabelTemplate::parse("{bogus}").unwrap_err().contains("unknown field {bogus}"));
        assert!("{age}".parse::<LabelTemplate>().is_ok());
    }

    #[test]
    fn privacy_changes_only_the_box() {
        let (w, h) = (160, 120);
        let rect = (40usize, 30usize, 64usize, 48usize);
        let f = face(rect.0 as f32, rect.1 as f32, rect.2 as f32, rect.3 as f32);
        for privacy in [Privacy::Blur, Privacy::Pixelate] {
            for layout in [PixelLayout::Rgb, PixelLayout::Xbgr] {
                let stride = w * layout.bpp() + 4;
                let mut buf = pattern(stride * h);
                let orig = buf.clone();
                let style = OverlayStyle {
                    draw_labels: false,
                    draw_landmarks: false,
                    line_width: Some(1),
                    privacy,
                    ..OverlayStyle::default()
                };
                let mut frame = FrameMut::new(&mut buf, w, h, stride, layout).unwrap();
                Overlay::new().draw(&mut frame, &[f], &LabelTemplate::default(), &style);
                let (mut inside, mut changed) = (0, 0);
                for y in 0..h {
                    for x in 0..w {
                        let p = y * stride + x * layout.bpp();
                        let differs = buf[p..p + layout.bpp()] != orig[p..p + layout.bpp()];
                        let in_box = (rect.0..rect.0 + rect.2).contains(&x) && (rect.1..rect.1 + rect.3).contains(&y);
                        if in_box {
                            inside += 1;
                            changed += usize::from(differs);
                        } else {
                            assert!(!differs, "{privacy:?} {layout:?}: ({x}, {y}) outside the box changed");
                        }
                    }
                }
                assert!(changed * 10 > inside * 9, "{privacy:?} {layout:?}: only {changed} of {inside} changed");
                for (i, m) in protected(w, h, stride, layout).into_iter().enumerate() {
                    if m {
                        assert_eq!(buf[i], orig[i], "{privacy:?} {layout:?} protected byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn pixelate_makes_uniform_blocks() {
        let (w, h) = (64, 64);
        let mut buf = pattern(w * h * 3);
        let f = face(0.0, 0.0, 64.0, 64.0);
        let style = OverlayStyle {
            draw_labels: false,
            draw_landmarks: false,
            line_width: Some(1),
            privacy: Privacy::Pixelate,
            ..OverlayStyle::default()
        };
        let mut frame = FrameMut::new(&mut buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
        Overlay::new().draw(&mut frame, &[f], &LabelTemplate::default(), &style);
        // Blocks of 8: the interior of block (1, 1) is one colour.
        let view = frame.as_ref();
        let c = view.rgb(8, 8);
        assert!((8..16).all(|y| (8..16).all(|x| view.rgb(x, y) == c)));
        assert_ne!(view.rgb(16, 8), c);
    }

    #[test]
    fn tiny_frames() {
        let mut overlay = Overlay::new();
        let template = LabelTemplate::parse("{age} {emotion} {id}").unwrap();
        for layout in PixelLayout::ALL {
            for (w, h) in [(1, 1), (2, 2)] {
                for privacy in [Privacy::None, Privacy::Blur, Privacy::Pixelate] {
                    let stride = w * layout.bpp() + 3;
                    let mut buf = pattern(stride * h);
                    let orig = buf.clone();
                    let mut frame = FrameMut::new(&mut buf, w, h, stride, layout).unwrap();
                    let faces = [face(0.0, 0.0, 1.0, 1.0), face(-3.0, -3.0, 10.0, 10.0), face(0.5, 0.5, 0.4, 0.4)];
                    let style = OverlayStyle { privacy, ..OverlayStyle::default() };
                    overlay.draw(&mut frame, &faces, &template, &style);
                    assert_ne!(buf[..layout.bpp()], orig[..layout.bpp()], "{layout:?} {w}x{h} {privacy:?}");
                    for (i, m) in protected(w, h, stride, layout).into_iter().enumerate() {
                        if m {
                            assert_eq!(buf[i], orig[i], "{layout:?} {w}x{h} {privacy:?} byte {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn steady_state_reuses_scratch() {
        let (w, h) = (320, 240);
        let mut buf = pattern(w * h * 4);
        let faces: Vec<Face> = (0..5).map(|i| face(10.0 + 60.0 * i as f32, 60.0, 50.0, 60.0)).collect();
        let template = LabelTemplate::parse("{id} {age_range} {emotion} {confidence}").unwrap();
        let style = OverlayStyle { privacy: Privacy::Blur, ..OverlayStyle::default() };
        let mut overlay = Overlay::new();
        let mut frame = FrameMut::new(&mut buf, w, h, w * 4, PixelLayout::Bgrx).unwrap();
        overlay.draw(&mut frame, &faces, &template, &style);
        let sizes = |o: &Overlay| {
            (
                o.label.capacity(),
                o.glyphs.map.len(),
                o.glyphs.coverage.capacity(),
                // The two blur buffers swap roles; their total is what matters.
                o.blur_a.capacity() + o.blur_b.capacity(),
                o.blur_sums.capacity(),
            )
        };
        let first = sizes(&overlay);
        assert!(first.1 > 0);
        for _ in 0..3 {
            overlay.draw(&mut frame, &faces, &template, &style);
            assert_eq!(sizes(&overlay), first);
        }
    }

    /// Writes sample renderings to /tmp when FACEANALYZE_OVERLAY_PNG is set, and prints draw timings.
    #[test]
    fn sample_png() {
        if std::env::var_os("FACEANALYZE_OVERLAY_PNG").is_none() {
            return;
        }
        let (w, h) = (1920usize, 1080usize);
        let mut base = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let p = (y * w + x) * 3;
                let check = if ((x / 40) + (y / 40)) % 2 == 0 { 30 } else { 0 };
                base[p] = (x * 200 / w) as u8 + check;
                base[p + 1] = (y * 200 / h) as u8 + check;
                base[p + 2] = 90 + check;
            }
        }
        let mut faces = Vec::new();
        for i in 0..10 {
            let mut f = face(60.0 + 185.0 * i as f32, 200.0 + 60.0 * (i % 3) as f32, 150.0, 190.0);
            let mut probs = [0.05; NUM_EMOTIONS];
            probs[i % NUM_EMOTIONS] = 0.7;
            f.emotion = (i != 7).then(|| EmotionEstimate::from_probabilities(probs));
            f.track_id = Some(i as u64);
            faces.push(f);
        }
        faces.push(face(1800.0, -40.0, 200.0, 160.0));
        faces.push(face(-60.0, 900.0, 200.0, 250.0));
        let template = LabelTemplate::parse("#{id} {age} {emotion} {confidence}").unwrap();
        let mut overlay = Overlay::new();
        for (name, privacy) in [("none", Privacy::None), ("blur", Privacy::Blur), ("pixelate", Privacy::Pixelate)] {
            let mut buf = base.clone();
            let style = OverlayStyle { privacy, ..OverlayStyle::default() };
            let mut frame = FrameMut::new(&mut buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
            overlay.draw(&mut frame, &faces, &template, &style);
            let n = 100;
            let t = std::time::Instant::now();
            for _ in 0..n {
                overlay.draw(&mut frame, &faces[..10], &template, &style);
            }
            eprintln!("privacy {name}: {:?} per draw of 10 faces at 1080p", t.elapsed() / n);
            let mut buf = base.clone();
            let mut frame = FrameMut::new(&mut buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
            overlay.draw(&mut frame, &faces, &template, &style);
            let img = image::RgbImage::from_raw(w as u32, h as u32, buf).unwrap();
            img.save(format!("/tmp/faceanalyze-overlay-{name}.png")).unwrap();
            let crop = image::imageops::crop_imm(&img, 50, 150, 520, 250).to_image();
            let zoom = image::imageops::resize(&crop, 1560, 750, image::imageops::FilterType::Nearest);
            zoom.save(format!("/tmp/faceanalyze-overlay-{name}-zoom.png")).unwrap();
        }
    }
}
