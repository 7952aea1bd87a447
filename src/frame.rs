// SPDX-License-Identifier: MIT OR Apache-2.0
//! Borrowed views of a video frame: packed RGB-family (data, stride, channel order) or planar 4:2:0 YUV (I420,
//! NV12: planes, strides and colour matrix).
//!
//! Everything that reads or writes pixels (pre-processing, overlay) takes these views, so it works on any accepted
//! format and on rows padded beyond the visible width, without GStreamer. YUV frames are never converted whole:
//! pre-processing converts only the pixels it samples, and the overlay draws into the planes.

/// The packed RGB-family layouts the element accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelLayout {
    Rgb,
    Bgr,
    Rgbx,
    Bgrx,
    Xrgb,
    Xbgr,
    Rgba,
    Bgra,
    Argb,
    Abgr,
}

impl PixelLayout {
    pub const ALL: [PixelLayout; 10] = [
        PixelLayout::Rgb,
        PixelLayout::Bgr,
        PixelLayout::Rgbx,
        PixelLayout::Bgrx,
        PixelLayout::Xrgb,
        PixelLayout::Xbgr,
        PixelLayout::Rgba,
        PixelLayout::Bgra,
        PixelLayout::Argb,
        PixelLayout::Abgr,
    ];

    /// Bytes per pixel.
    pub const fn bpp(self) -> usize {
        match self {
            PixelLayout::Rgb | PixelLayout::Bgr => 3,
            _ => 4,
        }
    }

    /// Byte offsets of the red, green and blue channels inside one pixel.
    pub const fn rgb_offsets(self) -> [usize; 3] {
        match self {
            PixelLayout::Rgb | PixelLayout::Rgbx | PixelLayout::Rgba => [0, 1, 2],
            PixelLayout::Bgr | PixelLayout::Bgrx | PixelLayout::Bgra => [2, 1, 0],
            PixelLayout::Xrgb | PixelLayout::Argb => [1, 2, 3],
            PixelLayout::Xbgr | PixelLayout::Abgr => [3, 2, 1],
        }
    }

    /// Byte offset of the alpha channel, for layouts that have one.
    pub const fn alpha_offset(self) -> Option<usize> {
        match self {
            PixelLayout::Rgba | PixelLayout::Bgra => Some(3),
            PixelLayout::Argb | PixelLayout::Abgr => Some(0),
            _ => None,
        }
    }

    /// The GStreamer caps format name (`"RGB"`, `"BGRx"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            PixelLayout::Rgb => "RGB",
            PixelLayout::Bgr => "BGR",
            PixelLayout::Rgbx => "RGBx",
            PixelLayout::Bgrx => "BGRx",
            PixelLayout::Xrgb => "xRGB",
            PixelLayout::Xbgr => "xBGR",
            PixelLayout::Rgba => "RGBA",
            PixelLayout::Bgra => "BGRA",
            PixelLayout::Argb => "ARGB",
            PixelLayout::Abgr => "ABGR",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// Why a buffer cannot be viewed as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {width}x{height} is empty")]
    Empty { width: usize, height: usize },
    #[error("stride {stride} is smaller than a row of {width} pixels of {bpp} bytes")]
    StrideTooSmall { stride: usize, width: usize, bpp: usize },
    #[error("buffer of {len} bytes is too small for {height} rows of stride {stride}")]
    BufferTooSmall { len: usize, height: usize, stride: usize },
    #[error("{plane} plane stride {stride} is smaller than its row of {row} bytes")]
    PlaneStrideTooSmall { plane: &'static str, stride: usize, row: usize },
    #[error("{plane} plane of {len} bytes is too small for {rows} rows of stride {stride}")]
    PlaneTooSmall { plane: &'static str, len: usize, rows: usize, stride: usize },
}

fn check(len: usize, width: usize, height: usize, stride: usize, layout: PixelLayout) -> Result<(), FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::Empty { width, height });
    }
    let row = width.saturating_mul(layout.bpp());
    if stride < row {
        return Err(FrameError::StrideTooSmall { stride, width, bpp: layout.bpp() });
    }
    // The last row only needs `width * bpp` bytes.
    let need = (height - 1).checked_mul(stride).and_then(|v| v.checked_add(row));
    if need.is_none_or(|n| len < n) {
        return Err(FrameError::BufferTooSmall { len, height, stride });
    }
    Ok(())
}

/// The planar 4:2:0 YUV layouts the element accepts (what decoders and cameras produce).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum YuvLayout {
    /// Three planes: Y, then U and V at half width and height.
    I420,
    /// Two planes: Y, then U and V interleaved at half width and height.
    Nv12,
}

impl YuvLayout {
    pub const ALL: [YuvLayout; 2] = [YuvLayout::I420, YuvLayout::Nv12];

    /// The GStreamer caps format name.
    pub const fn name(self) -> &'static str {
        match self {
            YuvLayout::I420 => "I420",
            YuvLayout::Nv12 => "NV12",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// A YUV ↔ RGB conversion: the luma weights of red and blue and the value range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvMatrix {
    pub kr: f32,
    pub kb: f32,
    /// 0..255 for Y, U and V (JPEG); otherwise 16..235 for Y and 16..240 for U and V (video).
    pub full_range: bool,
}

impl YuvMatrix {
    /// ITU-R BT.601 (standard definition), limited range.
    pub const BT601: YuvMatrix = YuvMatrix { kr: 0.299, kb: 0.114, full_range: false };
    /// ITU-R BT.709 (high definition), limited range.
    pub const BT709: YuvMatrix = YuvMatrix { kr: 0.2126, kb: 0.0722, full_range: false };
    /// ITU-R BT.2020, limited range.
    pub const BT2020: YuvMatrix = YuvMatrix { kr: 0.2627, kb: 0.0593, full_range: false };

    /// Red, green, blue (0..255, not clamped) of one Y, U, V sample.
    #[inline]
    pub fn to_rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        self.coefficients().rgb(y, u, v)
    }

    /// The conversion folded into five multipliers, for per-pixel loops.
    pub fn coefficients(&self) -> YuvToRgb {
        let (ys, cs, y0) = if self.full_range { (1.0, 1.0, 0.0) } else { (255.0 / 219.0, 255.0 / 224.0, 16.0) };
        let kg = 1.0 - self.kr - self.kb;
        let (rv, bu) = (2.0 * (1.0 - self.kr), 2.0 * (1.0 - self.kb));
        YuvToRgb { ys, y0, rv: rv * cs, bu: bu * cs, gu: self.kb * bu / kg * cs, gv: self.kr * rv / kg * cs }
    }

    /// Y, U, V (0..255, not rounded or clamped) of an RGB colour.
    #[inline]
    pub fn from_rgb_f32(&self, rgb: [f32; 3]) -> [f32; 3] {
        let kg = 1.0 - self.kr - self.kb;
        let y = self.kr * rgb[0] + kg * rgb[1] + self.kb * rgb[2];
        let u = (rgb[2] - y) / (2.0 * (1.0 - self.kb));
        let v = (rgb[0] - y) / (2.0 * (1.0 - self.kr));
        if self.full_range {
            [y, u + 128.0, v + 128.0]
        } else {
            [16.0 + y * (219.0 / 255.0), 128.0 + u * (224.0 / 255.0), 128.0 + v * (224.0 / 255.0)]
        }
    }

    /// Y, U, V bytes of an RGB colour.
    #[inline]
    pub fn from_rgb(&self, rgb: [u8; 3]) -> [u8; 3] {
        self.from_rgb_f32(rgb.map(f32::from)).map(|v| v.round().clamp(0.0, 255.0) as u8)
    }
}

/// A YUV to RGB conversion as multipliers: `r = ys (y - y0) + rv (v - 128)`, `g = ys (y - y0) - gu (u - 128) -
/// gv (v - 128)`, `b = ys (y - y0) + bu (u - 128)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvToRgb {
    pub ys: f32,
    pub y0: f32,
    pub rv: f32,
    pub gu: f32,
    pub gv: f32,
    pub bu: f32,
}

impl YuvToRgb {
    #[inline(always)]
    pub fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (y, u, v) = (self.ys * (y - self.y0), u - 128.0, v - 128.0);
        [y + self.rv * v, y - self.gu * u - self.gv * v, y + self.bu * u]
    }
}

/// Geometry of a 4:2:0 frame: the chroma plane is `ceil(width / 2)` x `ceil(height / 2)`.
pub const fn chroma_size(width: usize, height: usize) -> (usize, usize) {
    (width.div_ceil(2), height.div_ceil(2))
}

fn check_plane(len: usize, row: usize, rows: usize, stride: usize, what: &'static str) -> Result<(), FrameError> {
    if stride < row {
        return Err(FrameError::PlaneStrideTooSmall { plane: what, stride, row });
    }
    let need = (rows - 1).checked_mul(stride).and_then(|v| v.checked_add(row));
    if need.is_none_or(|n| len < n) {
        return Err(FrameError::PlaneTooSmall { plane: what, len, rows, stride });
    }
    Ok(())
}

/// Validates the planes of a 4:2:0 frame; `planes` holds Y then U, V (I420) or Y then UV (NV12).
fn check_yuv(
    lens: [usize; 3],
    strides: [usize; 3],
    width: usize,
    height: usize,
    layout: YuvLayout,
) -> Result<(), FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::Empty { width, height });
    }
    let (cw, ch) = chroma_size(width, height);
    check_plane(lens[0], width, height, strides[0], "Y")?;
    match layout {
        YuvLayout::I420 => {
            check_plane(lens[1], cw, ch, strides[1], "U")?;
            check_plane(lens[2], cw, ch, strides[2], "V")
        }
        YuvLayout::Nv12 => check_plane(lens[1], 2 * cw, ch, strides[1], "UV"),
    }
}

/// The pixels of a packed frame.
#[derive(Clone, Copy, Debug)]
pub struct Packed<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub layout: PixelLayout,
}

/// The planes of a 4:2:0 YUV frame, with U and V as separate views (for NV12 they share the interleaved plane and
/// step by 2).
#[derive(Clone, Copy, Debug)]
pub struct Yuv<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub c_stride: usize,
    /// Bytes from one chroma sample to the next in a row: 1 for I420, 2 for NV12.
    pub c_step: usize,
    pub layout: YuvLayout,
    /// The conversion of the frame's colour matrix and range, folded once per frame.
    pub to_rgb: YuvToRgb,
}

/// The pixel storage of a frame.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    Packed(Packed<'a>),
    Yuv(Yuv<'a>),
}

/// A read-only frame: packed RGB-family or planar 4:2:0 YUV.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    pub width: usize,
    pub height: usize,
    pixels: Pixels<'a>,
}

impl<'a> FrameRef<'a> {
    /// A packed frame of `height` rows `stride` bytes apart.
    pub fn new(
        data: &'a [u8],
        width: usize,
        height: usize,
        stride: usize,
        layout: PixelLayout,
    ) -> Result<Self, FrameError> {
        check(data.len(), width, height, stride, layout)?;
        Ok(Self { width, height, pixels: Pixels::Packed(Packed { data, stride, layout }) })
    }

    /// A planar 4:2:0 frame: `planes` are Y, U, V (I420) or Y, UV and an unused third (NV12), with their
    /// `strides`.
    pub fn yuv(
        planes: [&'a [u8]; 3],
        strides: [usize; 3],
        width: usize,
        height: usize,
        layout: YuvLayout,
        matrix: YuvMatrix,
    ) -> Result<Self, FrameError> {
        check_yuv(planes.map(<[u8]>::len), strides, width, height, layout)?;
        let (u, v, c_step) = match layout {
            YuvLayout::I420 => (planes[1], planes[2], 1),
            YuvLayout::Nv12 => (planes[1], &planes[1][1..], 2),
        };
        let to_rgb = matrix.coefficients();
        let yuv = Yuv { y: planes[0], u, v, y_stride: strides[0], c_stride: strides[1], c_step, layout, to_rgb };
        Ok(Self { width, height, pixels: Pixels::Yuv(yuv) })
    }

    pub fn pixels(&self) -> Pixels<'a> {
        self.pixels
    }

    /// The caps format name (`"BGRx"`, `"I420"`, ...).
    pub fn format_name(&self) -> &'static str {
        match self.pixels {
            Pixels::Packed(p) => p.layout.name(),
            Pixels::Yuv(y) => y.layout.name(),
        }
    }

    /// Red, green, blue of pixel (x, y); callers keep the point inside the frame.
    #[inline]
    pub fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        match self.pixels {
            Pixels::Packed(p) => {
                let [r, g, b] = p.layout.rgb_offsets();
                let o = y * p.stride + x * p.layout.bpp();
                [p.data[o + r], p.data[o + g], p.data[o + b]]
            }
            Pixels::Yuv(v) => v.rgb_at(x, y).map(|c| c.round().clamp(0.0, 255.0) as u8),
        }
    }
}

impl<'a> Packed<'a> {
    /// The `width * bpp` bytes of row `y` of a `width`-pixel frame (callers keep `y` inside the frame).
    #[inline]
    pub fn row(&self, y: usize, width: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + width * self.layout.bpp()]
    }
}

impl Yuv<'_> {
    /// The Y, U, V samples of pixel (x, y) (chroma of its 2x2 cell), as RGB, not clamped.
    #[inline]
    pub fn rgb_at(&self, x: usize, y: usize) -> [f32; 3] {
        let c = (y / 2) * self.c_stride + (x / 2) * self.c_step;
        self.to_rgb.rgb(self.y[y * self.y_stride + x] as f32, self.u[c] as f32, self.v[c] as f32)
    }

    /// Bilinear RGB (0..255, clamped) at the continuous luma position (sx, sy), which the caller keeps inside
    /// `[0, width - 1] x [0, height - 1]`. Chroma samples sit at the centre of their 2x2 luma cells.
    #[inline]
    pub fn sample(&self, sx: f32, sy: f32, width: usize, height: usize) -> [f32; 3] {
        let (cw, ch) = chroma_size(width, height);
        let yv = bilinear(self.y, self.y_stride, 1, sx, sy, width, height);
        let cx = ((sx + 0.5) * 0.5 - 0.5).clamp(0.0, cw as f32 - 1.0);
        let cy = ((sy + 0.5) * 0.5 - 0.5).clamp(0.0, ch as f32 - 1.0);
        let u = bilinear(self.u, self.c_stride, self.c_step, cx, cy, cw, ch);
        let v = bilinear(self.v, self.c_stride, self.c_step, cx, cy, cw, ch);
        self.to_rgb.rgb(yv, u, v).map(|c| c.clamp(0.0, 255.0))
    }
}

/// Bilinear sample of a one-channel plane at (sx, sy) inside `[0, w - 1] x [0, h - 1]`.
#[inline]
fn bilinear(p: &[u8], stride: usize, step: usize, sx: f32, sy: f32, w: usize, h: usize) -> f32 {
    let (x0, y0) = (sx as usize, sy as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (wx, wy) = (sx - x0 as f32, sy - y0 as f32);
    let at = |x: usize, y: usize| p[y * stride + x * step] as f32;
    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * wx;
    let bot = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * wx;
    top + (bot - top) * wy
}

/// The writable planes of a 4:2:0 YUV frame.
#[derive(Debug)]
pub struct YuvMut<'a> {
    pub y: &'a mut [u8],
    /// The U plane (I420) or the interleaved UV plane (NV12).
    pub c0: &'a mut [u8],
    /// The V plane (I420); empty for NV12.
    pub c1: &'a mut [u8],
    pub y_stride: usize,
    pub c_stride: usize,
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
}

impl YuvMut<'_> {
    /// Byte index of U and V of chroma cell (cx, cy) and the plane each lives in (0 = `c0`, 1 = `c1`).
    #[inline]
    pub fn chroma_index(&self, cx: usize, cy: usize) -> ((usize, usize), (usize, usize)) {
        match self.layout {
            YuvLayout::I420 => {
                let i = cy * self.c_stride + cx;
                ((0, i), (1, i))
            }
            YuvLayout::Nv12 => {
                let i = cy * self.c_stride + 2 * cx;
                ((0, i), (0, i + 1))
            }
        }
    }

    #[inline]
    pub fn chroma(&self, cx: usize, cy: usize) -> [u8; 2] {
        let ((pu, iu), (pv, iv)) = self.chroma_index(cx, cy);
        let get = |p: usize, i: usize| if p == 0 { self.c0[i] } else { self.c1[i] };
        [get(pu, iu), get(pv, iv)]
    }

    #[inline]
    pub fn set_chroma(&mut self, cx: usize, cy: usize, uv: [u8; 2]) {
        let ((pu, iu), (pv, iv)) = self.chroma_index(cx, cy);
        for ((p, i), val) in [((pu, iu), uv[0]), ((pv, iv), uv[1])] {
            if p == 0 {
                self.c0[i] = val;
            } else {
                self.c1[i] = val;
            }
        }
    }
}

/// The writable pixel storage of a frame.
#[derive(Debug)]
pub enum PixelsMut<'a> {
    Packed { data: &'a mut [u8], stride: usize, layout: PixelLayout },
    Yuv(YuvMut<'a>),
}

/// A writable frame: packed RGB-family or planar 4:2:0 YUV.
#[derive(Debug)]
pub struct FrameMut<'a> {
    pub width: usize,
    pub height: usize,
    pub pixels: PixelsMut<'a>,
}

impl<'a> FrameMut<'a> {
    /// A packed frame of `height` rows `stride` bytes apart.
    pub fn new(
        data: &'a mut [u8],
        width: usize,
        height: usize,
        stride: usize,
        layout: PixelLayout,
    ) -> Result<Self, FrameError> {
        check(data.len(), width, height, stride, layout)?;
        Ok(Self { width, height, pixels: PixelsMut::Packed { data, stride, layout } })
    }

    /// A planar 4:2:0 frame from its planes (Y, U, V for I420; Y, UV and an unused third for NV12) and their
    /// strides.
    pub fn yuv(
        planes: [&'a mut [u8]; 3],
        strides: [usize; 3],
        width: usize,
        height: usize,
        layout: YuvLayout,
        matrix: YuvMatrix,
    ) -> Result<Self, FrameError> {
        check_yuv([planes[0].len(), planes[1].len(), planes[2].len()], strides, width, height, layout)?;
        let [y, c0, c1] = planes;
        let c1 = if layout == YuvLayout::I420 { c1 } else { &mut [] };
        let yuv = YuvMut { y, c0, c1, y_stride: strides[0], c_stride: strides[1], layout, matrix };
        Ok(Self { width, height, pixels: PixelsMut::Yuv(yuv) })
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        let pixels = match &self.pixels {
            PixelsMut::Packed { data, stride, layout } => {
                Pixels::Packed(Packed { data, stride: *stride, layout: *layout })
            }
            PixelsMut::Yuv(m) => {
                let (u, v, c_step): (&[u8], &[u8], usize) = match m.layout {
                    YuvLayout::I420 => (m.c0, m.c1, 1),
                    YuvLayout::Nv12 => (m.c0, &m.c0[1..], 2),
                };
                Pixels::Yuv(Yuv {
                    y: m.y,
                    u,
                    v,
                    y_stride: m.y_stride,
                    c_stride: m.c_stride,
                    c_step,
                    layout: m.layout,
                    to_rgb: m.matrix.coefficients(),
                })
            }
        };
        FrameRef { width: self.width, height: self.height, pixels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_geometry() {
        let buf = vec![0u8; 100];
        assert!(matches!(FrameRef::new(&buf, 0, 5, 10, PixelLayout::Rgb), Err(FrameError::Empty { .. })));
        assert!(matches!(FrameRef::new(&buf, 5, 5, 10, PixelLayout::Rgbx), Err(FrameError::StrideTooSmall { .. })));
        assert!(matches!(FrameRef::new(&buf, 5, 8, 15, PixelLayout::Rgb), Err(FrameError::BufferTooSmall { .. })));
        // The last row needs only width*bpp bytes: 5 rows of stride 16 + 15 = 95 <= 100.
        assert!(FrameRef::new(&buf, 5, 6, 16, PixelLayout::Rgb).is_ok());
        assert!(FrameRef::new(&buf, 5, 7, 16, PixelLayout::Rgb).is_err());
    }

    #[test]
    fn channel_offsets_match_names() {
        for l in PixelLayout::ALL {
            let name = l.name();
            let [r, g, b] = l.rgb_offsets();
            assert_eq!(&name[r..=r], "R");
            assert_eq!(&name[g..=g], "G");
            assert_eq!(&name[b..=b], "B");
            assert_eq!(PixelLayout::from_name(name), Some(l));
            assert_eq!(l.bpp(), name.len());
        }
    }

    #[test]
    fn yuv_matrices_round_trip_and_match_reference_values() {
        for m in [YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020] {
            for full_range in [false, true] {
                let m = YuvMatrix { full_range, ..m };
                for rgb in [[0u8, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [12, 200, 99]] {
                    let [y, u, v] = m.from_rgb(rgb);
                    let back = m.to_rgb(y as f32, u as f32, v as f32);
                    for c in 0..3 {
                        assert!((back[c] - rgb[c] as f32).abs() < 2.5, "{m:?} {rgb:?} -> {back:?}");
                    }
                }
            }
        }
        // Limited-range BT.601 white and black are Y 235 / 16 with neutral chroma; red has V 240.
        assert_eq!(YuvMatrix::BT601.from_rgb([255, 255, 255]), [235, 128, 128]);
        assert_eq!(YuvMatrix::BT601.from_rgb([0, 0, 0]), [16, 128, 128]);
        assert_eq!(YuvMatrix::BT601.from_rgb([255, 0, 0])[2], 240);
    }

    #[test]
    fn yuv_frames_validate_planes_and_sample_like_rgb() {
        // 5x3 I420 (chroma 3x2), strides padded.
        let (w, h) = (5, 3);
        let y: Vec<u8> = (0..8 * h).map(|i| (i * 9 % 256) as u8).collect();
        let u = vec![100u8; 4 * 2];
        let v = vec![150u8; 4 * 2];
        let f = FrameRef::yuv([&y, &u, &v], [8, 4, 4], w, h, YuvLayout::I420, YuvMatrix::BT709).unwrap();
        assert_eq!(f.format_name(), "I420");
        let Pixels::Yuv(p) = f.pixels() else { panic!("yuv") };
        for (px, py) in [(0, 0), (4, 2), (2, 1)] {
            let exact = p.sample(px as f32, py as f32, w, h);
            let direct = f.rgb(px, py);
            for c in 0..3 {
                assert!((exact[c] - direct[c] as f32).abs() <= 0.5 + 1e-3, "({px}, {py})");
            }
        }
        // Short planes and strides are refused, not read past.
        assert!(FrameRef::yuv([&y[..20], &u, &v], [8, 4, 4], w, h, YuvLayout::I420, YuvMatrix::BT709).is_err());
        assert!(FrameRef::yuv([&y, &u, &v], [8, 2, 4], w, h, YuvLayout::I420, YuvMatrix::BT709).is_err());
        assert!(FrameRef::yuv([&y, &u[..3], &v], [8, 4, 4], w, h, YuvLayout::I420, YuvMatrix::BT709).is_err());
        // NV12: one interleaved chroma plane of 2 * 3 bytes per row.
        let uv: Vec<u8> = [100u8, 150].repeat(6);
        let f = FrameRef::yuv([&y, &uv, &[]], [8, 6, 0], w, h, YuvLayout::Nv12, YuvMatrix::BT709).unwrap();
        let g = FrameRef::yuv([&y, &u, &v], [8, 4, 4], w, h, YuvLayout::I420, YuvMatrix::BT709).unwrap();
        for py in 0..h {
            for px in 0..w {
                assert_eq!(f.rgb(px, py), g.rgb(px, py));
            }
        }
        assert!(FrameRef::yuv([&y, &uv[..5], &[]], [8, 6, 0], w, h, YuvLayout::Nv12, YuvMatrix::BT709).is_err());
    }
}
