// SPDX-License-Identifier: MIT OR Apache-2.0
//! Pixels to model inputs: the detector's letterboxed BGR planes, and per-face crops or aligned chips sampled
//! bilinearly straight from the frame (any packed layout or 4:2:0 YUV, any stride) into caller-owned, reused
//! buffers. YUV frames are converted to RGB only at the sampled points.

use crate::align::Affine;
use crate::frame::{FrameRef, Packed, Pixels, Yuv};
use crate::helper::HelperThread;

/// How the detector input relates to the frame: `input = frame · scale`, placed top-left and zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LetterboxInfo {
    /// Horizontal and vertical scale from frame to detector input (differ by rounding only).
    pub scale_x: f32,
    pub scale_y: f32,
    /// Size of the scaled image inside the input.
    pub scaled_w: usize,
    pub scaled_h: usize,
    /// Padded input size (multiples of 32).
    pub input_w: usize,
    pub input_h: usize,
}

/// The detector input geometry for a `width` x `height` frame when its long side becomes `size` (0 = native).
pub fn letterbox_geometry(width: usize, height: usize, size: usize) -> LetterboxInfo {
    let long = width.max(height).max(1);
    // Never upscale: on FDDB's ~450 px photos the native size beat a 640 px upscale (docs/ACCURACY.md).
    let scale = if size == 0 || long <= size { 1.0 } else { size as f64 / long as f64 };
    let scaled_w = ((width as f64 * scale).round() as usize).max(1);
    let scaled_h = ((height as f64 * scale).round() as usize).max(1);
    LetterboxInfo {
        scale_x: scaled_w as f32 / width.max(1) as f32,
        scale_y: scaled_h as f32 / height.max(1) as f32,
        scaled_w,
        scaled_h,
        input_w: scaled_w.div_ceil(32) * 32,
        input_h: scaled_h.div_ceil(32) * 32,
    }
}

/// One source tap of a bilinear resize along an axis: two sample positions and the weight of the second.
#[derive(Debug, Clone, Copy, Default)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

fn taps(out: &mut Vec<Tap>, dst_len: usize, src_len: usize, scale: f32, step: usize) {
    out.clear();
    let max = src_len.saturating_sub(1) as f32;
    for d in 0..dst_len {
        let s = ((d as f32 + 0.5) / scale - 0.5).clamp(0.0, max);
        let i0 = s.floor() as usize;
        let i1 = (i0 + 1).min(src_len - 1);
        out.push(Tap { i0: i0 * step, i1: i1 * step, w: s - i0 as f32 });
    }
}

/// The chroma taps matching luma taps of a `dst_len` resize of a `src_len` axis: chroma samples sit at the centre
/// of their 2x2 luma cell, so luma position s is chroma position (s + 0.5) / 2 - 0.5.
fn chroma_taps(out: &mut Vec<Tap>, dst_len: usize, src_len: usize, scale: f32, step: usize) {
    out.clear();
    let c_len = src_len.div_ceil(2);
    let max_s = src_len.saturating_sub(1) as f32;
    let max_c = c_len.saturating_sub(1) as f32;
    for d in 0..dst_len {
        let s = ((d as f32 + 0.5) / scale - 0.5).clamp(0.0, max_s);
        let c = ((s + 0.5) * 0.5 - 0.5).clamp(0.0, max_c);
        let i0 = c.floor() as usize;
        let i1 = (i0 + 1).min(c_len - 1);
        out.push(Tap { i0: i0 * step, i1: i1 * step, w: c - i0 as f32 });
    }
}

/// Reusable state of the detector pre-processing: the input tensor and the resize tables, rebuilt only when the
/// frame geometry or detection size changes.
#[derive(Debug, Default)]
pub struct Letterboxer {
    key: (usize, usize, usize, usize),
    info: LetterboxInfo,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    /// Chroma taps, for YUV frames.
    cxs: Vec<Tap>,
    cys: Vec<Tap>,
    /// NCHW, BGR, 0..255, `[1, 3, input_h, input_w]`.
    pub input: Vec<f32>,
    /// Scratch rows for each half of the output rows: one vertically blended source row (packed), or luma, U and
    /// V rows and their horizontally sampled versions (YUV).
    rows: [Vec<f32>; 2],
    /// Fills the lower half of the rows on a second core (see [`Letterboxer::parallel`]).
    helper: Option<HelperThread>,
    /// Start `helper` on the first frame.
    want_helper: bool,
}

impl Letterboxer {
    /// A letterboxer that fills half of the rows on a helper thread: the second core idles during pre-processing
    /// otherwise. Output is identical to the single-threaded one.
    pub fn parallel() -> Self {
        Self { want_helper: true, ..Self::default() }
    }

    /// Converts and scales `frame` into [`Self::input`] in one pass and returns the geometry.
    pub fn run(&mut self, frame: &FrameRef, size: usize) -> LetterboxInfo {
        // The tap tables depend on the sample step: bytes per pixel, or 0 / the chroma step for YUV.
        let step = match frame.pixels() {
            Pixels::Packed(p) => p.layout.bpp(),
            Pixels::Yuv(y) => 16 + y.c_step,
        };
        let key = (frame.width, frame.height, size, step);
        if key != self.key || self.xs.is_empty() {
            self.info = letterbox_geometry(frame.width, frame.height, size);
            let (sx, sy) = (self.info.scale_x, self.info.scale_y);
            let (bpp, c_step) = match frame.pixels() {
                Pixels::Packed(p) => (p.layout.bpp(), 0),
                Pixels::Yuv(y) => (1, y.c_step),
            };
            taps(&mut self.xs, self.info.scaled_w, frame.width, sx, bpp);
            taps(&mut self.ys, self.info.scaled_h, frame.height, sy, 1);
            if c_step > 0 {
                chroma_taps(&mut self.cxs, self.info.scaled_w, frame.width, sx, c_step);
                chroma_taps(&mut self.cys, self.info.scaled_h, frame.height, sy, 1);
            }
            self.key = key;
            let len = 3 * self.info.input_w * self.info.input_h;
            self.input.clear();
            self.input.resize(len, 0.0);
            // YUV also keeps the three horizontally sampled rows (Y, U, V at the output width).
            let rows = match frame.pixels() {
                Pixels::Packed(p) => frame.width * p.layout.bpp(),
                Pixels::Yuv(y) => frame.width + 2 * yuv_chroma_span(&y, frame.width) + 3 * self.info.scaled_w,
            };
            if self.want_helper {
                self.want_helper = false;
                self.helper = HelperThread::start("faceanalyze-pre");
            }
            // The second set of scratch rows is the helper's.
            let sets = if self.helper.is_some() { 2 } else { 1 };
            for r in &mut self.rows[..sets] {
                r.clear();
                r.resize(rows, 0.0);
            }
        }
        let info = self.info;
        let plane = info.input_w * info.input_h;
        let (b, rest) = self.input.split_at_mut(plane);
        let (g, r) = rest.split_at_mut(plane);
        let fill =
            Fill { xs: &self.xs, cxs: &self.cxs, width: frame.width, input_w: info.input_w, scaled_w: info.scaled_w };
        let pixels = frame.pixels();
        let (ys, cys) = (&self.ys[..], &self.cys[..]);
        match &mut self.helper {
            Some(helper) if ys.len() >= 2 => {
                let mid = ys.len() / 2;
                let at = mid * info.input_w;
                let ((b0, b1), (g0, g1), (r0, r1)) = (b.split_at_mut(at), g.split_at_mut(at), r.split_at_mut(at));
                let [s0, s1] = &mut self.rows;
                let mut theirs = || {
                    fill.rows(
                        &pixels,
                        &ys[mid..],
                        cys.get(mid..).unwrap_or_default(),
                        [&mut *b1, &mut *g1, &mut *r1],
                        s1,
                    )
                };
                helper.join(
                    || fill.rows(&pixels, &ys[..mid], cys.get(..mid).unwrap_or_default(), [b0, g0, r0], s0),
                    &mut theirs,
                );
            }
            _ => fill.rows(&pixels, ys, cys, [b, g, r], &mut self.rows[0]),
        }
        self.info
    }
}

/// What every output row of a letterbox shares: the horizontal taps and the geometry.
struct Fill<'a> {
    xs: &'a [Tap],
    cxs: &'a [Tap],
    width: usize,
    input_w: usize,
    scaled_w: usize,
}

impl Fill<'_> {
    /// Fills the output rows of `ys` (and `cys` for YUV) into `[b, g, r]`, planes that start at the first of them.
    fn rows(&self, pixels: &Pixels, ys: &[Tap], cys: &[Tap], planes: [&mut [f32]; 3], scratch: &mut [f32]) {
        match pixels {
            Pixels::Packed(p) => self.packed(p, ys, planes, scratch),
            Pixels::Yuv(f) => self.yuv(f, ys, cys, planes, scratch),
        }
    }

    fn packed(&self, frame: &Packed, ys: &[Tap], [b_plane, g_plane, r_plane]: [&mut [f32]; 3], scratch: &mut [f32]) {
        let [ro, go, bo] = frame.layout.rgb_offsets();
        let width = self.width;
        let row = &mut scratch[..width * frame.layout.bpp()];
        for (y, ty) in ys.iter().enumerate() {
            // Separable: blend the two source rows (contiguous, vectorised), then sample across.
            vblend(frame.row(ty.i0, width), frame.row(ty.i1, width), ty.w, row);
            let off = y * self.input_w;
            let (bd, gd, rd) = (
                &mut b_plane[off..off + self.scaled_w],
                &mut g_plane[off..off + self.scaled_w],
                &mut r_plane[off..off + self.scaled_w],
            );
            for (x, tx) in self.xs.iter().enumerate() {
                let px = |c: usize| {
                    let a = row[tx.i0 + c];
                    a + (row[tx.i1 + c] - a) * tx.w
                };
                bd[x] = px(bo);
                gd[x] = px(go);
                rd[x] = px(ro);
            }
        }
    }

    /// The YUV path: luma and chroma rows are blended vertically, then sampled across and converted.
    fn yuv(&self, f: &Yuv, ys: &[Tap], cys: &[Tap], [b_plane, g_plane, r_plane]: [&mut [f32]; 3], scratch: &mut [f32]) {
        let (width, w) = (self.width, self.scaled_w);
        let c_span = yuv_chroma_span(f, width);
        let (ry, rest) = scratch.split_at_mut(width);
        let (ru, rest) = rest.split_at_mut(c_span);
        let (rv, rest) = rest.split_at_mut(c_span);
        let (hy, rest) = rest.split_at_mut(w);
        let (hu, hv) = rest.split_at_mut(w);
        let hv = &mut hv[..w];
        let k = f.to_rgb;
        for (y, (ty, tc)) in ys.iter().zip(cys).enumerate() {
            let yrow = |i: usize| &f.y[i * f.y_stride..i * f.y_stride + width];
            vblend(yrow(ty.i0), yrow(ty.i1), ty.w, ry);
            let (c0, c1) = (tc.i0 * f.c_stride, tc.i1 * f.c_stride);
            vblend(&f.u[c0..c0 + c_span], &f.u[c1..c1 + c_span], tc.w, ru);
            vblend(&f.v[c0..c0 + c_span], &f.v[c1..c1 + c_span], tc.w, rv);
            // Sample across (a gather), then convert in one contiguous pass that the compiler vectorises.
            sample_across([&*ry, &*ru, &*rv], self.xs, self.cxs, [&mut *hy, &mut *hu, &mut *hv]);
            let off = y * self.input_w;
            let (bd, gd, rd) = (&mut b_plane[off..off + w], &mut g_plane[off..off + w], &mut r_plane[off..off + w]);
            for (((((b, g), r), &yv), &u), &v) in bd.iter_mut().zip(gd).zip(rd).zip(&*hy).zip(&*hu).zip(&*hv) {
                let [rr, gg, bb] = k.rgb(yv, u, v);
                *b = bb.clamp(0.0, 255.0);
                *g = gg.clamp(0.0, 255.0);
                *r = rr.clamp(0.0, 255.0);
            }
        }
    }
}

/// Bytes of one chroma row that the letterbox reads: `ceil(width / 2)` samples `c_step` apart.
fn yuv_chroma_span(f: &Yuv, width: usize) -> usize {
    (width.div_ceil(2) - 1) * f.c_step + 1
}

/// The horizontal half of a bilinear YUV resize: the vertically blended luma and chroma rows `[y, u, v]` sampled
/// at the luma taps `ls` and chroma taps `cs` into `out` (as many values as the shortest of them).
#[inline]
fn sample_across([ry, ru, rv]: [&[f32]; 3], ls: &[Tap], cs: &[Tap], [hy, hu, hv]: [&mut [f32]; 3]) {
    for ((((oy, ou), ov), tl), tc) in hy.iter_mut().zip(hu.iter_mut()).zip(hv.iter_mut()).zip(ls).zip(cs) {
        *oy = hlerp(ry, tl);
        *ou = hlerp(ru, tc);
        *ov = hlerp(rv, tc);
    }
}

/// `out[i] = a[i] + (b[i] - a[i]) * w`, as f32: the vertical half of a bilinear resize.
#[inline]
fn vblend(a: &[u8], b: &[u8], w: f32, out: &mut [f32]) {
    if w == 0.0 {
        // Exact source rows (an integer scale factor, such as 1080p to 640): the second row is never read.
        for (o, &a) in out.iter_mut().zip(a) {
            *o = a as f32;
        }
        return;
    }
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        let a = a as f32;
        *o = a + (b as f32 - a) * w;
    }
}

/// Widest output handled by the axis-aligned fast path of [`warp_affine`] (tap table on the stack).
const FAST_MAX_W: usize = 256;

/// Samples `frame` bilinearly (border replicate) at the points `m · (x, y)` for every pixel of an
/// `out_w` x `out_h` grid and hands `(x, y, [r, g, b])` to `put`, values in 0..255.
#[inline]
pub fn warp_affine(
    frame: &FrameRef,
    m: &Affine,
    out_w: usize,
    out_h: usize,
    mut put: impl FnMut(usize, usize, [f32; 3]),
) {
    let (width, height) = (frame.width, frame.height);
    let maxx = width as f32 - 1.0;
    let maxy = height as f32 - 1.0;
    let axis_aligned = m[1] == 0.0 && m[3] == 0.0 && out_w <= FAST_MAX_W && m.iter().all(|v| v.is_finite());
    let frame = match frame.pixels() {
        Pixels::Packed(p) => p,
        Pixels::Yuv(f) if axis_aligned => return resize_crop_yuv(&f, width, height, m, out_w, out_h, put),
        Pixels::Yuv(f) => {
            for y in 0..out_h {
                for x in 0..out_w {
                    let (sx, sy) = source_point(m, x, y, maxx, maxy);
                    put(x, y, f.sample(sx, sy, width, height));
                }
            }
            return;
        }
    };
    if axis_aligned {
        return resize_crop(&frame, width, height, m, out_w, out_h, put);
    }
    let bpp = frame.layout.bpp();
    let [ro, go, bo] = frame.layout.rgb_offsets();
    let data = frame.data;
    for y in 0..out_h {
        for x in 0..out_w {
            let (sx, sy) = source_point(m, x, y, maxx, maxy);
            let x0 = sx as usize;
            let y0 = sy as usize;
            let x1 = (x0 + 1).min(width - 1);
            let y1 = (y0 + 1).min(height - 1);
            let (wx, wy) = (sx - x0 as f32, sy - y0 as f32);
            let p00 = y0 * frame.stride + x0 * bpp;
            let p01 = y0 * frame.stride + x1 * bpp;
            let p10 = y1 * frame.stride + x0 * bpp;
            let p11 = y1 * frame.stride + x1 * bpp;
            let s = |o: usize| {
                let top = data[p00 + o] as f32 + (data[p01 + o] as f32 - data[p00 + o] as f32) * wx;
                let bot = data[p10 + o] as f32 + (data[p11 + o] as f32 - data[p10 + o] as f32) * wx;
                top + (bot - top) * wy
            };
            put(x, y, [s(ro), s(go), s(bo)]);
        }
    }
}

/// The frame point that output pixel (x, y) samples, clamped into `[0, maxx] x [0, maxy]`. NaN clamps to the
/// minimum, so a broken transform samples a corner instead of reading out of bounds.
#[inline]
fn source_point(m: &Affine, x: usize, y: usize, maxx: f32, maxy: f32) -> (f32, f32) {
    let (xf, yf) = (x as f32, y as f32);
    let sx = m[0] * xf + m[1] * yf + m[2];
    let sy = m[3] * xf + m[4] * yf + m[5];
    let sx = if sx.is_nan() { 0.0 } else { sx.clamp(0.0, maxx) };
    let sy = if sy.is_nan() { 0.0 } else { sy.clamp(0.0, maxy) };
    (sx, sy)
}

thread_local! {
    /// Vertically blended source rows for the crop fast paths; grows to the widest crop a thread has seen, then is
    /// reused (no allocation once warm).
    static CROP_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The source columns `[lo, hi)` that `taps` read, with the taps made relative to `lo`.
fn tap_span(taps: &mut [Tap]) -> (usize, usize) {
    let lo = taps.iter().map(|t| t.i0.min(t.i1)).min().unwrap_or(0);
    let hi = taps.iter().map(|t| t.i0.max(t.i1) + 1).max().unwrap_or(0);
    for t in taps.iter_mut() {
        t.i0 -= lo;
        t.i1 -= lo;
    }
    (lo, hi)
}

/// Linear interpolation between two neighbours of a blended row.
#[inline(always)]
fn hlerp(row: &[f32], t: &Tap) -> f32 {
    let a = row[t.i0];
    a + (row[t.i1] - a) * t.w
}

/// [`warp_affine`] for a scale-and-translate map (a crop resize): horizontal taps computed once per call; per output
/// row, the two source rows are blended over the crop's span (contiguous, vectorised), then sampled across.
fn resize_crop(
    frame: &Packed,
    width: usize,
    height: usize,
    m: &Affine,
    out_w: usize,
    out_h: usize,
    mut put: impl FnMut(usize, usize, [f32; 3]),
) {
    let bpp = frame.layout.bpp();
    let [ro, go, bo] = frame.layout.rgb_offsets();
    let (maxx, maxy) = (width as f32 - 1.0, height as f32 - 1.0);
    let mut xs = [Tap::default(); FAST_MAX_W];
    let xs = &mut xs[..out_w];
    for (x, t) in xs.iter_mut().enumerate() {
        let sx = (m[0] * x as f32 + m[2]).clamp(0.0, maxx);
        let x0 = sx as usize;
        *t = Tap { i0: x0 * bpp, i1: (x0 + 1).min(width - 1) * bpp, w: sx - x0 as f32 };
    }
    let (lo, hi) = tap_span(xs);
    let hi = hi + bpp - 1;
    CROP_ROWS.with_borrow_mut(|buf| {
        if buf.len() < hi - lo {
            buf.resize(hi - lo, 0.0);
        }
        let row = &mut buf[..hi - lo];
        for y in 0..out_h {
            let sy = (m[4] * y as f32 + m[5]).clamp(0.0, maxy);
            let y0 = sy as usize;
            let (r0, r1) = (frame.row(y0, width), frame.row((y0 + 1).min(height - 1), width));
            vblend(&r0[lo..hi], &r1[lo..hi], sy - y0 as f32, row);
            for (x, t) in xs.iter().enumerate() {
                let s = |o: usize| {
                    let a = row[t.i0 + o];
                    a + (row[t.i1 + o] - a) * t.w
                };
                put(x, y, [s(ro), s(go), s(bo)]);
            }
        }
    });
}

/// [`resize_crop`] for 4:2:0 YUV: luma and chroma taps per output column computed once; per output row, luma and
/// chroma rows blended over the crop's span, then sampled across and converted.
fn resize_crop_yuv(
    f: &Yuv,
    width: usize,
    height: usize,
    m: &Affine,
    out_w: usize,
    out_h: usize,
    mut put: impl FnMut(usize, usize, [f32; 3]),
) {
    let (maxx, maxy) = (width as f32 - 1.0, height as f32 - 1.0);
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let chroma = |s: f32, n: usize| ((s + 0.5) * 0.5 - 0.5).clamp(0.0, n as f32 - 1.0);
    let mut ls = [Tap::default(); FAST_MAX_W];
    let mut cs = [Tap::default(); FAST_MAX_W];
    let (ls, cs) = (&mut ls[..out_w], &mut cs[..out_w]);
    for (x, (tl, tc)) in ls.iter_mut().zip(cs.iter_mut()).enumerate() {
        let sx = (m[0] * x as f32 + m[2]).clamp(0.0, maxx);
        let (x0, c) = (sx as usize, chroma(sx, cw));
        let c0 = c as usize;
        *tl = Tap { i0: x0, i1: (x0 + 1).min(width - 1), w: sx - x0 as f32 };
        *tc = Tap { i0: c0 * f.c_step, i1: (c0 + 1).min(cw - 1) * f.c_step, w: c - c0 as f32 };
    }
    let (llo, lhi) = tap_span(ls);
    let (clo, chi) = tap_span(cs);
    let (ln, cn) = (lhi - llo, chi - clo);
    let k = f.to_rgb;
    CROP_ROWS.with_borrow_mut(|buf| {
        if buf.len() < ln + 2 * cn {
            buf.resize(ln + 2 * cn, 0.0);
        }
        let (ry, rest) = buf.split_at_mut(ln);
        let (ru, rest) = rest.split_at_mut(cn);
        let rv = &mut rest[..cn];
        let (mut hy, mut hu, mut hv) = ([0f32; FAST_MAX_W], [0f32; FAST_MAX_W], [0f32; FAST_MAX_W]);
        for y in 0..out_h {
            let sy = (m[4] * y as f32 + m[5]).clamp(0.0, maxy);
            let y0 = sy as usize;
            let y1 = (y0 + 1).min(height - 1);
            let luma = |r: usize| &f.y[r * f.y_stride + llo..r * f.y_stride + lhi];
            vblend(luma(y0), luma(y1), sy - y0 as f32, ry);
            let c = chroma(sy, ch);
            let c0 = c as usize;
            let (o0, o1) = (c0 * f.c_stride + clo, (c0 + 1).min(ch - 1) * f.c_stride + clo);
            let wc = c - c0 as f32;
            vblend(&f.u[o0..o0 + cn], &f.u[o1..o1 + cn], wc, ru);
            vblend(&f.v[o0..o0 + cn], &f.v[o1..o1 + cn], wc, rv);
            // Sample across first, then convert: the gathers and the arithmetic each run in a tight loop.
            sample_across([&*ry, &*ru, &*rv], &*ls, &*cs, [&mut hy[..], &mut hu[..], &mut hv[..]]);
            for (x, ((&yv, &u), &v)) in hy[..out_w].iter().zip(&hu).zip(&hv).enumerate() {
                put(x, y, k.rgb(yv, u, v).map(|c| c.clamp(0.0, 255.0)));
            }
        }
    });
}

/// Luma as OpenCV's `COLOR_BGR2GRAY` computes it.
#[inline]
pub fn gray(rgb: [f32; 3]) -> f32 {
    0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelLayout;

    #[test]
    fn geometry_pads_to_32() {
        let g = letterbox_geometry(1920, 1080, 640);
        assert_eq!((g.scaled_w, g.scaled_h, g.input_w, g.input_h), (640, 360, 640, 384));
        let g = letterbox_geometry(641, 361, 0);
        assert_eq!((g.scaled_w, g.scaled_h, g.input_w, g.input_h), (641, 361, 672, 384));
        // Smaller frames are not upscaled.
        let g = letterbox_geometry(1, 1, 640);
        assert_eq!((g.scale_x, g.input_w, g.input_h), (1.0, 32, 32));
        let g = letterbox_geometry(450, 300, 640);
        assert_eq!((g.scaled_w, g.scaled_h, g.input_w, g.input_h), (450, 300, 480, 320));
    }

    #[test]
    fn letterbox_is_bgr_planes_and_zero_padded() {
        // 4x2 RGBx frame with stride 20, each pixel (r, g, b) = (10x, 100, 200) + y.
        let (w, h, stride) = (4, 2, 20);
        let mut buf = vec![0u8; stride * h];
        for y in 0..h {
            for x in 0..w {
                let p = y * stride + x * 4;
                buf[p..p + 4].copy_from_slice(&[10 * x as u8 + y as u8, 100, 200, 7]);
            }
        }
        let f = FrameRef::new(&buf, w, h, stride, PixelLayout::Rgbx).unwrap();
        let mut lb = Letterboxer::default();
        let info = lb.run(&f, 0);
        assert_eq!((info.input_w, info.input_h), (32, 32));
        let plane = 32 * 32;
        assert_eq!(lb.input[0], 200.0); // B of (0, 0)
        assert_eq!(lb.input[plane], 100.0); // G
        assert_eq!(lb.input[2 * plane + 3], 30.0); // R of (3, 0)
        assert_eq!(lb.input[2 * plane + 32 + 1], 11.0); // R of (1, 1)
        assert_eq!(lb.input[4], 0.0); // padding column
        assert_eq!(lb.input[2 * 32], 0.0); // padding row
    }

    #[test]
    fn crop_fast_path_matches_general_sampling() {
        let (w, h) = (37usize, 23usize);
        let buf: Vec<u8> = (0..w * h * 4).map(|i| (i * 37 % 251) as u8).collect();
        let f = FrameRef::new(&buf, w, h, w * 4, PixelLayout::Bgra).unwrap();
        let m = crate::align::crop_transform(-3.0, 4.5, 30.0, 21.0, 0.1, 16, 12);
        let mut fast = vec![];
        warp_affine(&f, &m, 16, 12, |_, _, p| fast.push(p));
        // The general path, forced by a negligible shear.
        let mut general = vec![];
        let sheared = [m[0], 1e-30, m[2], 1e-30, m[4], m[5]];
        warp_affine(&f, &sheared, 16, 12, |_, _, p| general.push(p));
        assert_eq!(fast.len(), general.len());
        for (a, b) in fast.iter().zip(&general) {
            for c in 0..3 {
                assert!((a[c] - b[c]).abs() < 1e-3, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn warp_identity_reads_pixels_and_clamps_outside() {
        let (w, h) = (3, 2);
        let buf: Vec<u8> = (0..(w * h * 3) as u8).collect();
        let f = FrameRef::new(&buf, w, h, w * 3, PixelLayout::Rgb).unwrap();
        let mut got = vec![];
        warp_affine(&f, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 3, 2, |_, _, p| got.push(p));
        assert_eq!(got[4], [12.0, 13.0, 14.0]);
        let mut far = vec![];
        warp_affine(&f, &[1.0, 0.0, 100.0, 0.0, 1.0, -50.0], 1, 1, |_, _, p| far.push(p));
        assert_eq!(far[0], [6.0, 7.0, 8.0]); // clamped to (2, 0)
        let mut nan = vec![];
        warp_affine(&f, &[f32::NAN; 6], 1, 1, |_, _, p| nan.push(p));
        assert_eq!(nan[0], [0.0, 1.0, 2.0]);
    }
}

#[cfg(test)]
mod yuv_tests {
    use super::*;
    use crate::frame::{YuvLayout, YuvMatrix};

    #[test]
    fn yuv_crop_fast_path_matches_per_pixel_sampling() {
        let (w, h) = (37usize, 23usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y: Vec<u8> = (0..w * h).map(|i| (i * 37 % 251) as u8).collect();
        let u: Vec<u8> = (0..cw * ch).map(|i| (i * 53 % 241) as u8).collect();
        let v: Vec<u8> = (0..cw * ch).map(|i| (i * 71 % 239) as u8).collect();
        let f = FrameRef::yuv([&y, &u, &v], [w, cw, cw], w, h, YuvLayout::I420, YuvMatrix::BT709).unwrap();
        let Pixels::Yuv(p) = f.pixels() else { unreachable!() };
        let m: Affine = [0.7, 0.0, 3.2, 0.0, 0.55, -1.5];
        let (ow, oh) = (40, 30);
        let mut fast = vec![[0f32; 3]; ow * oh];
        warp_affine(&f, &m, ow, oh, |x, y, rgb| fast[y * ow + x] = rgb);
        for yy in 0..oh {
            for xx in 0..ow {
                let (sx, sy) = source_point(&m, xx, yy, (w - 1) as f32, (h - 1) as f32);
                let slow = p.sample(sx, sy, w, h);
                for c in 0..3 {
                    assert!(
                        (fast[yy * ow + xx][c] - slow[c]).abs() < 1e-2,
                        "({xx}, {yy}) {:?} vs {slow:?}",
                        fast[yy * ow + xx]
                    );
                }
            }
        }
    }
}
