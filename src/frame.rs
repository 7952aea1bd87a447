// SPDX-License-Identifier: MIT OR Apache-2.0
//! Borrowed views of a packed RGB-family video frame: data, size, stride and channel order.
//!
//! Everything that reads or writes pixels (pre-processing, overlay) takes these views, so it works on any accepted
//! format and on rows padded beyond `width * bpp`, without GStreamer.

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

/// A read-only packed frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub layout: PixelLayout,
}

impl<'a> FrameRef<'a> {
    pub fn new(
        data: &'a [u8],
        width: usize,
        height: usize,
        stride: usize,
        layout: PixelLayout,
    ) -> Result<Self, FrameError> {
        check(data.len(), width, height, stride, layout)?;
        Ok(Self { data, width, height, stride, layout })
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The `width * bpp` bytes of row `y` (callers keep `y < height`).
    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * self.layout.bpp()]
    }

    /// Red, green, blue of pixel (x, y); callers keep the point inside the frame.
    #[inline]
    pub fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let [r, g, b] = self.layout.rgb_offsets();
        let p = y * self.stride + x * self.layout.bpp();
        [self.data[p + r], self.data[p + g], self.data[p + b]]
    }
}

/// A writable packed frame.
#[derive(Debug)]
pub struct FrameMut<'a> {
    data: &'a mut [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub layout: PixelLayout,
}

impl<'a> FrameMut<'a> {
    pub fn new(
        data: &'a mut [u8],
        width: usize,
        height: usize,
        stride: usize,
        layout: PixelLayout,
    ) -> Result<Self, FrameError> {
        check(data.len(), width, height, stride, layout)?;
        Ok(Self { data, width, height, stride, layout })
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef { data: self.data, width: self.width, height: self.height, stride: self.stride, layout: self.layout }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }

    /// Writes an RGB colour into pixel (x, y), leaving padding/alpha bytes as they are.
    #[inline]
    pub fn put_rgb(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        let [r, g, b] = self.layout.rgb_offsets();
        let p = y * self.stride + x * self.layout.bpp();
        self.data[p + r] = rgb[0];
        self.data[p + g] = rgb[1];
        self.data[p + b] = rgb[2];
    }

    /// Blends an RGB colour into pixel (x, y) with coverage `a` in 0..=1.
    #[inline]
    pub fn blend_rgb(&mut self, x: usize, y: usize, rgb: [u8; 3], a: f32) {
        let offs = self.layout.rgb_offsets();
        let p = y * self.stride + x * self.layout.bpp();
        for (c, off) in offs.into_iter().enumerate() {
            let old = self.data[p + off] as f32;
            self.data[p + off] = (old + (rgb[c] as f32 - old) * a).round().clamp(0.0, 255.0) as u8;
        }
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
}
