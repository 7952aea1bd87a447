// SPDX-License-Identifier: MIT OR Apache-2.0
//! Model outputs to results: YuNet decoding, greedy NMS, and statistics of an age distribution.

use crate::face::{AgeEstimate, BBox, Detection};
use crate::preprocess::LetterboxInfo;

/// YuNet's three feature strides.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// The raw outputs of one YuNet stride for one image: `cls`/`obj` `[n]`, `bbox` `[n, 4]`, `kps` `[n, 10]`.
#[derive(Debug, Clone, Copy)]
pub struct StrideOutputs<'a> {
    pub stride: usize,
    pub cls: &'a [f32],
    pub obj: &'a [f32],
    pub bbox: &'a [f32],
    pub kps: &'a [f32],
}

/// Decodes one stride into `out` (in detector-input pixels), keeping cells whose score reaches `threshold`.
/// Returns an error when the tensors do not match the input size.
pub fn decode_stride(
    o: &StrideOutputs,
    input_w: usize,
    input_h: usize,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), String> {
    let s = o.stride;
    let cols = input_w / s;
    let n = cols * (input_h / s);
    if o.cls.len() < n || o.obj.len() < n || o.bbox.len() < 4 * n || o.kps.len() < 10 * n {
        return Err(format!(
            "stride {s}: outputs hold {}/{}/{}/{} values, expected {n}/{n}/{}/{} for a {input_w}x{input_h} input",
            o.cls.len(),
            o.obj.len(),
            o.bbox.len(),
            o.kps.len(),
            4 * n,
            10 * n
        ));
    }
    let sf = s as f32;
    for i in 0..n {
        // Threshold before decoding; NaN scores never pass (comparison is false).
        let score = (o.cls[i].clamp(0.0, 1.0) * o.obj[i].clamp(0.0, 1.0)).sqrt();
        if score.is_nan() || score < threshold {
            continue;
        }
        let (c, r) = ((i % cols) as f32, (i / cols) as f32);
        let b = &o.bbox[4 * i..4 * i + 4];
        let cx = (c + b[0]) * sf;
        let cy = (r + b[1]) * sf;
        let w = b[2].exp() * sf;
        let h = b[3].exp() * sf;
        if !(cx.is_finite() && cy.is_finite() && w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
            continue;
        }
        let k = &o.kps[10 * i..10 * i + 10];
        let mut landmarks = [[0.0f32; 2]; 5];
        for (j, p) in landmarks.iter_mut().enumerate() {
            *p = [(c + k[2 * j]) * sf, (r + k[2 * j + 1]) * sf];
        }
        if !landmarks.iter().flatten().all(|v| v.is_finite()) {
            continue;
        }
        out.push(Detection { bbox: BBox { x: cx - w / 2.0, y: cy - h / 2.0, w, h }, score, landmarks });
    }
    Ok(())
}

/// Greedy non-maximum suppression in place: sorts by score (via `total_cmp`) and keeps a box only when its IoU
/// with every kept box is at most `iou_threshold`; stops after `max_keep` boxes (0 = no limit). Boxes with a NaN
/// score or non-finite coordinates are dropped.
pub fn nms(dets: &mut Vec<Detection>, iou_threshold: f32, max_keep: usize) {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let limit = if max_keep == 0 { usize::MAX } else { max_keep };
    let mut kept = 0;
    for i in 0..dets.len() {
        if kept >= limit {
            break;
        }
        let cand = dets[i];
        let b = cand.bbox;
        if cand.score.is_nan() || !(b.x.is_finite() && b.y.is_finite() && b.w.is_finite() && b.h.is_finite()) {
            continue;
        }
        if dets[..kept].iter().all(|k| k.bbox.iou(&cand.bbox) <= iou_threshold) {
            dets[kept] = cand;
            kept += 1;
        }
    }
    dets.truncate(kept);
}

/// Maps detections from detector-input pixels back to the frame and clips them to it.
pub fn to_frame(dets: &mut [Detection], lb: &LetterboxInfo, width: usize, height: usize) {
    let (sx, sy) = (1.0 / lb.scale_x, 1.0 / lb.scale_y);
    let (w, h) = (width as f32, height as f32);
    for d in dets {
        let b = BBox { x: d.bbox.x * sx, y: d.bbox.y * sy, w: d.bbox.w * sx, h: d.bbox.h * sy };
        d.bbox = b.clip(w, h);
        for p in &mut d.landmarks {
            *p = [(p[0] * sx).clamp(0.0, w), (p[1] * sy).clamp(0.0, h)];
        }
    }
}

/// Softmax in place (max subtracted first).
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x /= sum);
    }
}

/// Whether every value is finite and within `lo..=hi` (with a small tolerance).
pub fn all_in_range(v: &[f32], lo: f32, hi: f32) -> bool {
    v.iter().all(|x| x.is_finite() && *x >= lo - 1e-4 && *x <= hi + 1e-4)
}

/// Statistics of an age distribution `probs` over `ages` (years per bin): expectation, standard deviation,
/// 10th/90th percentiles (linear inside bins), and the mass within ±5 years of the expectation.
/// Returns `None` when the distribution is not a finite, non-negative vector with a positive sum.
pub fn age_stats(probs: &[f32], ages: &[f32]) -> Option<AgeEstimate> {
    if probs.is_empty() || probs.len() != ages.len() || !all_in_range(probs, 0.0, f32::MAX) {
        return None;
    }
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let mean: f64 = probs.iter().zip(ages).map(|(&p, &a)| p as f64 * a as f64).sum::<f64>() / total;
    let var: f64 = probs.iter().zip(ages).map(|(&p, &a)| p as f64 * (a as f64 - mean).powi(2)).sum::<f64>() / total;
    let percentile = |q: f64| -> f64 {
        let target = q * total;
        let mut acc = 0.0;
        for (i, &p) in probs.iter().enumerate() {
            let p = p as f64;
            if acc + p >= target && p > 0.0 {
                // Spread each bin's mass uniformly over [age - 0.5, age + 0.5].
                let frac = ((target - acc) / p).clamp(0.0, 1.0);
                return ages[i] as f64 - 0.5 + frac;
            }
            acc += p;
        }
        ages[ages.len() - 1] as f64
    };
    let near: f64 =
        probs.iter().zip(ages).filter(|&(_, &a)| (a as f64 - mean).abs() <= 5.0).map(|(&p, _)| p as f64).sum::<f64>()
            / total;
    Some(AgeEstimate {
        value: mean as f32,
        stddev: var.sqrt() as f32,
        // A skewed distribution can have its mean outside the 10th-90th percentile range; widen the range so it
        // always contains the reported age.
        low: percentile(0.1).max(0.0).min(mean) as f32,
        high: percentile(0.9).max(mean) as f32,
        confidence: near as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, w: f32, h: f32, score: f32) -> Detection {
        Detection { bbox: BBox { x, y, w, h }, score, landmarks: [[0.0; 2]; 5] }
    }

    #[test]
    fn decodes_one_cell_by_hand() {
        // A 32x16 input at stride 8: 4 columns x 2 rows = 8 cells. Cell 5 = column 1, row 1.
        let n = 8;
        let mut cls = vec![0.0; n];
        let mut obj = vec![0.0; n];
        let mut bbox = vec![0.0; 4 * n];
        let mut kps = vec![0.0; 10 * n];
        cls[5] = 0.81;
        obj[5] = 1.0;
        bbox[20..24].copy_from_slice(&[0.5, 0.25, 0.0, 2f32.ln()]);
        kps[50..60].copy_from_slice(&[0.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 1.0, 1.0]);
        // A NaN score elsewhere must not pass.
        cls[0] = f32::NAN;
        obj[0] = 1.0;
        let o = StrideOutputs { stride: 8, cls: &cls, obj: &obj, bbox: &bbox, kps: &kps };
        let mut out = vec![];
        decode_stride(&o, 32, 16, 0.5, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre ((1 + 0.5) * 8, (1 + 0.25) * 8) = (12, 10); size (8, 16)
        assert_eq!(d.bbox, BBox { x: 8.0, y: 2.0, w: 8.0, h: 16.0 });
        assert_eq!(d.landmarks[1], [16.0, 8.0]);
        assert_eq!(d.landmarks[2], [12.0, 12.0]);
        // Threshold above the score: nothing.
        out.clear();
        decode_stride(&o, 32, 16, 0.95, &mut out).unwrap();
        assert!(out.is_empty());
        // Too-short tensors are an error, not a panic.
        let short = StrideOutputs { cls: &cls[..3], ..o };
        assert!(decode_stride(&short, 32, 16, 0.5, &mut out).is_err());
    }

    #[test]
    fn nms_keeps_best_of_overlaps_and_handles_nan() {
        let mut d = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.8),
            det(1.0, 1.0, 10.0, 10.0, 0.9),
            det(50.0, 50.0, 10.0, 10.0, 0.7),
            det(f32::NAN, 0.0, 10.0, 10.0, 0.95),
            det(0.0, 0.0, 10.0, 10.0, f32::NAN),
        ];
        nms(&mut d, 0.3, 0);
        let scores: Vec<f32> = d.iter().map(|x| x.score).collect();
        // A box with NaN coordinates and a NaN score are both dropped.
        assert_eq!(scores, vec![0.9, 0.7]);
        let mut d2 = vec![det(0.0, 0.0, 5.0, 5.0, 0.5), det(20.0, 0.0, 5.0, 5.0, 0.6), det(40.0, 0.0, 5.0, 5.0, 0.7)];
        nms(&mut d2, 0.3, 2);
        assert_eq!(d2.len(), 2);
        assert_eq!(d2[0].score, 0.7);
    }

    #[test]
    fn maps_back_and_clips() {
        let lb = LetterboxInfo { scale_x: 0.5, scale_y: 0.5, ..Default::default() };
        let mut d = [det(-2.0, 10.0, 20.0, 400.0, 0.9)];
        to_frame(&mut d, &lb, 100, 100);
        assert_eq!(d[0].bbox, BBox { x: 0.0, y: 20.0, w: 36.0, h: 80.0 });
    }

    #[test]
    fn age_statistics_by_hand() {
        // Half the mass at 20, half at 40.
        let ages = [20.0, 30.0, 40.0];
        let s = age_stats(&[0.5, 0.0, 0.5], &ages).unwrap();
        assert!((s.value - 30.0).abs() < 1e-5);
        assert!((s.stddev - 10.0).abs() < 1e-5);
        assert!((s.low - 19.7).abs() < 1e-4, "{s:?}");
        assert!((s.high - 40.3).abs() < 1e-4, "{s:?}");
        assert_eq!(s.confidence, 0.0);
        let peaked = age_stats(&[0.0, 1.0, 0.0], &ages).unwrap();
        assert_eq!((peaked.value, peaked.stddev, peaked.confidence), (30.0, 0.0, 1.0));
        assert!(age_stats(&[f32::NAN, 1.0, 0.0], &ages).is_none());
        assert!(age_stats(&[0.0, 0.0, 0.0], &ages).is_none());
        assert!(age_stats(&[1.0], &ages).is_none());
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = [1000.0, 1000.0, -1000.0];
        softmax(&mut v);
        assert!((v[0] - 0.5).abs() < 1e-6 && v[2] == 0.0);
    }
}
