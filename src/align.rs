// SPDX-License-Identifier: MIT OR Apache-2.0
//! Face alignment: a least-squares similarity transform from detected landmarks onto dlib's 5-point face-chip
//! template (the 2-D closed form of Umeyama's method, without reflection).

use crate::face::Detection;

/// A 2x3 affine map `[a, b, c, d, e, f]`: `x' = a·x + b·y + c`, `y' = d·x + e·y + f`.
pub type Affine = [f32; 6];

/// Least-squares similarity (rotation, uniform scale, translation) that maps `src[i]` onto `dst[i]`.
/// Returns `None` when the source points are degenerate (all equal, or not finite).
pub fn similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let (mut msx, mut msy, mut mdx, mut mdy) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..n {
        msx += src[i][0] as f64;
        msy += src[i][1] as f64;
        mdx += dst[i][0] as f64;
        mdy += dst[i][1] as f64;
    }
    msx /= nf;
    msy /= nf;
    mdx /= nf;
    mdy /= nf;
    let (mut num_a, mut num_b, mut den) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let (x, y) = (src[i][0] as f64 - msx, src[i][1] as f64 - msy);
        let (u, v) = (dst[i][0] as f64 - mdx, dst[i][1] as f64 - mdy);
        num_a += x * u + y * v;
        num_b += x * v - y * u;
        den += x * x + y * y;
    }
    if !(den.is_finite() && den > 1e-9 && num_a.is_finite() && num_b.is_finite()) {
        return None;
    }
    let a = num_a / den;
    let b = num_b / den;
    if a == 0.0 && b == 0.0 {
        return None;
    }
    let tx = mdx - (a * msx - b * msy);
    let ty = mdy - (b * msx + a * msy);
    Some([a as f32, -b as f32, tx as f32, b as f32, a as f32, ty as f32])
}

/// Inverse of a similarity/affine map; `None` when singular.
pub fn invert(m: &Affine) -> Option<Affine> {
    let [a, b, c, d, e, f] = m.map(|v| v as f64);
    let det = a * e - b * d;
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
    Some([ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)].map(|v| v as f32))
}

/// dlib's 5-point face-chip template (unit square): image-left eye centre, image-right eye centre, nose base.
const DLIB_EYE_LEFT: [f32; 2] = [(0.120_575_06 + 0.334_085_06) / 2.0, (0.213_727_45 + 0.229_064_24) / 2.0];
const DLIB_EYE_RIGHT: [f32; 2] = [(0.859_567_46 + 0.646_060_5) / 2.0, (0.213_498_15 + 0.228_967_44) / 2.0];
const DLIB_NOSE: [f32; 2] = [0.490_112_3, 0.627_797_5];

/// Which landmarks drive the alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlignPoints {
    /// Both eyes and the nose tip. YuNet's nose point is the tip while dlib's template point is the nose base, so
    /// this measured 0.63 years worse than `Eyes` on UTKFace (docs/ACCURACY.md).
    EyesNose,
    /// Both eyes only (the default: UTKFace MAE 5.95 vs 6.58 with eyes and nose).
    #[default]
    Eyes,
}

/// The chip-to-frame map (for sampling) of a dlib-style face chip of `size` pixels with `padding`, or `None`
/// when the landmarks are degenerate.
pub fn dlib_chip_transform(det: &Detection, size: usize, padding: f32, points: AlignPoints) -> Option<Affine> {
    let lm = &det.landmarks;
    // YuNet's first two points are the eyes; order them by x so image-left comes first.
    let (el, er) = if lm[0][0] <= lm[1][0] { (lm[0], lm[1]) } else { (lm[1], lm[0]) };
    let to_chip = |p: [f32; 2]| {
        let s = size as f32 / (1.0 + 2.0 * padding);
        [(padding + p[0]) * s, (padding + p[1]) * s]
    };
    let src3 = [el, er, lm[2]];
    let dst3 = [to_chip(DLIB_EYE_LEFT), to_chip(DLIB_EYE_RIGHT), to_chip(DLIB_NOSE)];
    let n = match points {
        AlignPoints::EyesNose => 3,
        AlignPoints::Eyes => 2,
    };
    let fwd = similarity(&src3[..n], &dst3[..n])?;
    invert(&fwd)
}

/// The chip-to-frame map of an axis-aligned crop: `box` grown by `margin` (a fraction of its size on each side)
/// and resized to `out_w` x `out_h` with pixel centres aligned (as `cv2.resize` does).
pub fn crop_transform(x: f32, y: f32, w: f32, h: f32, margin: f32, out_w: usize, out_h: usize) -> Affine {
    let x1 = x - w * margin;
    let y1 = y - h * margin;
    let sx = (w * (1.0 + 2.0 * margin)) / out_w as f32;
    let sy = (h * (1.0 + 2.0 * margin)) / out_h as f32;
    [sx, 0.0, x1 + 0.5 * sx - 0.5, 0.0, sy, y1 + 0.5 * sy - 0.5]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &Affine, p: [f32; 2]) -> [f32; 2] {
        [m[0] * p[0] + m[1] * p[1] + m[2], m[3] * p[0] + m[4] * p[1] + m[5]]
    }

    #[test]
    fn recovers_a_known_similarity() {
        // scale 2, rotation 30 degrees, translation (5, -3)
        let (s, t) = (2.0f32, 30f32.to_radians());
        let m: Affine = [s * t.cos(), -s * t.sin(), 5.0, s * t.sin(), s * t.cos(), -3.0];
        let src = [[0.0, 0.0], [10.0, 0.0], [3.0, 7.0], [-4.0, 2.0]];
        let dst: Vec<[f32; 2]> = src.iter().map(|&p| apply(&m, p)).collect();
        let got = similarity(&src, &dst).unwrap();
        for (g, w) in got.iter().zip(m.iter()) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {m:?}");
        }
        let inv = invert(&got).unwrap();
        let back = apply(&inv, apply(&got, [1.5, -2.5]));
        assert!((back[0] - 1.5).abs() < 1e-4 && (back[1] + 2.5).abs() < 1e-4);
    }

    #[test]
    fn dlib_age_aligns_on_the_eyes_by_default() {
        assert_eq!(crate::inference::age::AgeParams::default().align, AlignPoints::Eyes);
    }

    #[test]
    fn degenerate_points_give_none() {
        assert!(similarity(&[[1.0, 1.0], [1.0, 1.0]], &[[0.0, 0.0], [1.0, 1.0]]).is_none());
        assert!(similarity(&[[f32::NAN, 1.0], [1.0, 1.0]], &[[0.0, 0.0], [1.0, 1.0]]).is_none());
        assert!(similarity(&[[0.0, 0.0]], &[[0.0, 0.0]]).is_none());
        let det = Detection::default();
        assert!(dlib_chip_transform(&det, 64, 0.2, AlignPoints::EyesNose).is_none());
    }

    #[test]
    fn chip_maps_template_points_back_to_landmarks() {
        // An upright face: eyes at (40, 50) and (80, 50) (given right-eye first, as YuNet does), nose at (60, 75).
        let det = Detection {
            landmarks: [[80.0, 50.0], [40.0, 50.0], [60.0, 75.0], [75.0, 95.0], [45.0, 95.0]],
            ..Default::default()
        };
        let m = dlib_chip_transform(&det, 64, 0.2, AlignPoints::Eyes).unwrap();
        let s = 64.0 / 1.4;
        let left_eye_chip = [(0.2 + DLIB_EYE_LEFT[0]) * s, (0.2 + DLIB_EYE_LEFT[1]) * s];
        let p = apply(&m, left_eye_chip);
        assert!((p[0] - 40.0).abs() < 1e-3 && (p[1] - 50.0).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn crop_is_pixel_centre_aligned() {
        // A 10-pixel-wide box resized to 10 pixels maps pixel centres onto themselves.
        let m = crop_transform(20.0, 30.0, 10.0, 10.0, 0.0, 10, 10);
        assert_eq!(apply(&m, [0.0, 0.0]), [20.0, 30.0]);
        assert_eq!(apply(&m, [9.0, 9.0]), [29.0, 39.0]);
    }
}
