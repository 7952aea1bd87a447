// SPDX-License-Identifier: MIT OR Apache-2.0
//! Bounded property-based fuzzing (proptest) of the pure functions on the streaming path: detector decoding, NMS,
//! mapping back to the frame, age statistics, alignment, warping, letterboxing, drawing, JSON records, label
//! templates, ROI rectangles and tracking, on arbitrary input including NaN, infinities and huge values.
//!
//! Every property asserts invariants, not only "no panic" (a panic is a failure too). The runs are deterministic
//! (fixed seed; `FUZZ_SEED=<u64>` picks another) and bounded; `FUZZ_SCALE=<n>` multiplies the number of cases.
//! Each test prints `FUZZ <name>: <n> executions`.

mod common;

use std::cell::Cell;
use std::fmt::Debug;

use gstfaceanalyze::align::{self, Affine, AlignPoints};
use gstfaceanalyze::face::{AgeEstimate, BBox, Detection, EMOTIONS, EmotionEstimate, Face, NUM_EMOTIONS};
use gstfaceanalyze::frame::{self, FrameMut, FrameRef, PixelLayout, YuvLayout, YuvMatrix};
use gstfaceanalyze::overlay::{LabelTemplate, Overlay, OverlayStyle, Privacy};
use gstfaceanalyze::postprocess::{self, StrideOutputs};
use gstfaceanalyze::preprocess::{self, LetterboxInfo, Letterboxer};
use gstfaceanalyze::results;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Runs `test` on `cases` (times `FUZZ_SCALE`) values of `strategy` and prints how many executions ran
/// (shrinking included); panics with the minimal failing input.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    let scale: u32 = std::env::var("FUZZ_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0xFACE_A7A1_1CE5);
    let config = Config {
        cases: cases * scale.max(1),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let n = Cell::new(0u64);
    let result = runner.run(&strategy, |v| {
        n.set(n.get() + 1);
        test(v)
    });
    eprintln!("FUZZ {name}: {} executions", n.get());
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Any f32, weighted towards the troublesome ones.
fn wild() -> BoxedStrategy<f32> {
    prop_oneof![
        4 => -2.0f32..2.0,
        2 => -1e4f32..1e4,
        1 => any::<f32>(),
        1 => prop_oneof![
            Just(f32::NAN),
            Just(-f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::MAX),
            Just(f32::MIN),
            Just(f32::MIN_POSITIVE),
            Just(-0.0),
            Just(0.0),
            Just(1e30),
            Just(-1e30),
            Just(88.8),
        ],
    ]
    .boxed()
}

/// A coordinate: mostly in a frame-sized range, sometimes wild.
fn coord() -> BoxedStrategy<f32> {
    prop_oneof![6 => -50.0f32..700.0, 1 => wild()].boxed()
}

fn layout() -> impl Strategy<Value = PixelLayout> {
    (0..PixelLayout::ALL.len()).prop_map(|i| PixelLayout::ALL[i])
}

fn bbox() -> impl Strategy<Value = BBox> {
    (coord(), coord(), coord(), coord()).prop_map(|(x, y, w, h)| BBox { x, y, w, h })
}

fn detection() -> impl Strategy<Value = Detection> {
    (bbox(), prop_oneof![4 => 0.0f32..1.0, 1 => wild()], prop::array::uniform10(coord())).prop_map(
        |(bbox, score, l)| Detection {
            bbox,
            score,
            landmarks: [[l[0], l[1]], [l[2], l[3]], [l[4], l[5]], [l[6], l[7]], [l[8], l[9]]],
        },
    )
}

fn age_estimate() -> impl Strategy<Value = AgeEstimate> {
    (wild(), wild(), wild(), wild(), wild()).prop_map(|(value, stddev, low, high, confidence)| AgeEstimate {
        value,
        stddev,
        low,
        high,
        confidence,
    })
}

fn emotion() -> impl Strategy<Value = EmotionEstimate> {
    (prop::array::uniform7(prop_oneof![3 => 0.0f32..1.0, 1 => wild()]), 0usize..10)
        .prop_map(|(probabilities, index)| EmotionEstimate { probabilities, index })
}

fn face() -> impl Strategy<Value = Face> {
    (
        detection(),
        prop::option::of(age_estimate()),
        prop::option::of(wild()),
        prop::option::of(emotion()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(detection, age, gender_male, emotion, track_id)| {
            let mut f = Face { detection, age, gender_male, emotion, ..Default::default() };
            f.track_id = track_id;
            f
        })
}

/// A detection's bits (NaN-safe equality).
fn bits(d: &Detection) -> Vec<u32> {
    let b = d.bbox;
    [b.x, b.y, b.w, b.h, d.score].into_iter().chain(d.landmarks.iter().flatten().copied()).map(f32::to_bits).collect()
}

fn finite_box(b: &BBox) -> bool {
    b.x.is_finite() && b.y.is_finite() && b.w.is_finite() && b.h.is_finite()
}

// ---------------------------------------------------------------------------------------------------------------
// Detector output decoding
// ---------------------------------------------------------------------------------------------------------------

/// (stride, input_w, input_h, threshold, cls, obj, bbox, kps): tensors sometimes exactly the size the input needs,
/// sometimes shorter or longer.
type StrideCase = (usize, usize, usize, f32, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn stride_case() -> impl Strategy<Value = StrideCase> {
    (prop_oneof![Just(8usize), Just(16), Just(32), 1usize..40], 0usize..200, 0usize..200, 0.0f32..1.0).prop_flat_map(
        |(s, w, h, t)| {
            let n = (w / s) * (h / s);
            let len = move |k: usize| prop_oneof![6 => Just(k * n), 1 => 0..=k * n + 12];
            let score = prop_oneof![4 => 0.0f32..1.0, 1 => Just(1.0f32), 1 => wild()];
            (
                Just(s),
                Just(w),
                Just(h),
                Just(t),
                len(1).prop_flat_map(move |l| prop::collection::vec(score.clone(), l)),
                len(1).prop_flat_map(|l| prop::collection::vec(prop_oneof![3 => 0.5f32..1.0, 1 => wild()], l)),
                len(4).prop_flat_map(|l| prop::collection::vec(wild(), l)),
                len(10).prop_flat_map(|l| prop::collection::vec(wild(), l)),
            )
        },
    )
}

#[test]
fn decode_stride_never_emits_non_finite_boxes() {
    fuzz("decode_stride", 2048, stride_case(), |(s, w, h, t, cls, obj, bbox, kps)| {
        let o = StrideOutputs { stride: s, cls: &cls, obj: &obj, bbox: &bbox, kps: &kps };
        let n = (w / s) * (h / s);
        let mut out = vec![Detection::default()];
        let r = postprocess::decode_stride(&o, w, h, t, &mut out);
        let enough = cls.len() >= n && obj.len() >= n && bbox.len() >= 4 * n && kps.len() >= 10 * n;
        prop_assert_eq!(r.is_ok(), enough, "error iff the tensors are too short");
        prop_assert_eq!(out[0], Detection::default(), "what was in `out` stays");
        if !enough {
            prop_assert_eq!(out.len(), 1, "nothing decoded from short tensors");
        }
        prop_assert!(out.len() - 1 <= n);
        for d in &out[1..] {
            let b = d.bbox;
            prop_assert!(finite_box(&b) && b.w > 0.0 && b.h > 0.0, "box {:?}", b);
            prop_assert!(d.score.is_finite() && d.score >= t && d.score <= 1.0, "score {} threshold {}", d.score, t);
        }
        Ok(())
    });
}

#[test]
fn decoded_landmarks_mapped_to_the_frame_lie_inside_it() {
    fuzz("decode_stride+to_frame landmarks", 2048, (stride_case(), 1usize..2000, 1usize..2000), |(c, fw, fh)| {
        let (s, w, h, t, cls, obj, bbox, kps) = c;
        let o = StrideOutputs { stride: s, cls: &cls, obj: &obj, bbox: &bbox, kps: &kps };
        let mut out = Vec::new();
        let _ = postprocess::decode_stride(&o, w, h, t, &mut out);
        let lb = preprocess::letterbox_geometry(fw, fh, 640);
        postprocess::to_frame(&mut out, &lb, fw, fh);
        for d in &out {
            for p in d.landmarks {
                prop_assert!(
                    (0.0..=fw as f32).contains(&p[0]) && (0.0..=fh as f32).contains(&p[1]),
                    "landmark {:?} outside {}x{}",
                    p,
                    fw,
                    fh
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// NMS
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn nms_keeps_sorted_finite_non_overlapping_boxes_and_suppresses_only_overlaps() {
    let strategy = (
        prop::collection::vec(detection(), 0..40),
        prop_oneof![6 => 0.0f32..1.0, 1 => wild()],
        prop_oneof![Just(0usize), 1usize..12],
    );
    fuzz("nms", 2048, strategy, |(input, thr, max_keep)| {
        let mut kept = input.clone();
        postprocess::nms(&mut kept, thr, max_keep);
        prop_assert!(kept.len() <= input.len());
        if max_keep > 0 {
            prop_assert!(kept.len() <= max_keep);
        }
        for k in &kept {
            prop_assert!(!k.score.is_nan() && finite_box(&k.bbox), "kept {:?}", k);
            prop_assert!(input.iter().any(|d| bits(d) == bits(k)), "kept box not from the input");
        }
        prop_assert!(kept.windows(2).all(|w| w[0].score >= w[1].score), "sorted by score");
        if thr.is_nan() {
            prop_assert!(kept.len() <= 1);
            return Ok(());
        }
        for (i, a) in kept.iter().enumerate() {
            for b in &kept[i + 1..] {
                prop_assert!(a.bbox.iou(&b.bbox) <= thr, "kept boxes overlap: {:?} {:?}", a, b);
            }
        }
        // Nothing valid is dropped unless a kept box overlaps it (or the max_keep limit was reached).
        if max_keep == 0 || kept.len() < max_keep {
            for d in input.iter().filter(|d| !d.score.is_nan() && finite_box(&d.bbox)) {
                let suppressed = kept.iter().any(|k| k.bbox.iou(&d.bbox) > thr || bits(k) == bits(d));
                prop_assert!(suppressed, "valid box {:?} dropped without an overlapping kept box", d);
            }
        }
        // Idempotent.
        let mut again = kept.clone();
        postprocess::nms(&mut again, thr, max_keep);
        prop_assert_eq!(again.iter().map(bits).collect::<Vec<_>>(), kept.iter().map(bits).collect::<Vec<_>>());
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Back to the frame
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn to_frame_clips_finite_boxes_into_the_frame() {
    let strategy = (prop::collection::vec(detection(), 0..20), 1usize..4000, 1usize..4000, 0usize..4097);
    fuzz("to_frame", 2048, strategy, |(mut dets, w, h, size)| {
        let input = dets.clone();
        let lb = preprocess::letterbox_geometry(w, h, size);
        prop_assert!(lb.scale_x > 0.0 && lb.scale_y > 0.0 && lb.scale_x.is_finite() && lb.scale_y.is_finite());
        postprocess::to_frame(&mut dets, &lb, w, h);
        let (fw, fh) = (w as f32, h as f32);
        for (d, i) in dets.iter().zip(&input) {
            if finite_box(&i.bbox) {
                let b = d.bbox;
                prop_assert!(finite_box(&b), "{:?} -> {:?}", i.bbox, b);
                prop_assert!(b.x >= 0.0 && b.y >= 0.0 && b.w >= 0.0 && b.h >= 0.0, "{:?}", b);
                prop_assert!(
                    b.x + b.w <= fw * (1.0 + 1e-6) && b.y + b.h <= fh * (1.0 + 1e-6),
                    "{:?} in {}x{}",
                    b,
                    w,
                    h
                );
            }
            for (p, q) in d.landmarks.iter().zip(&i.landmarks) {
                if q[0].is_finite() && q[1].is_finite() {
                    prop_assert!((0.0..=fw).contains(&p[0]) && (0.0..=fh).contains(&p[1]), "{:?} -> {:?}", q, p);
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Age statistics
// ---------------------------------------------------------------------------------------------------------------

fn dlib_ages() -> Vec<f32> {
    std::iter::once(0.25).chain((1..=80).map(|a| a as f32)).collect()
}

fn hse_ages() -> Vec<f32> {
    (1..=100).map(|a| a as f32).collect()
}

/// (probabilities, ages): the two real age bin sets, probabilities mostly valid, sometimes of the wrong length.
fn age_case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    prop_oneof![Just(dlib_ages()), Just(hse_ages())].prop_flat_map(|ages| {
        let n = ages.len();
        let p = prop_oneof![
            // Skewed: almost all mass in one bin, a little in another (possibly far away).
            2 => (0..n, 0..n, 0.5f32..1.0, 0.0f32..0.2).prop_map(move |(i, j, p, r)| {
                let mut v = vec![0.0f32; n];
                v[i] = p;
                v[j] += p * r;
                v
            }),
            // Sparse: a few bins with mass.
            3 => prop::collection::vec(prop_oneof![8 => Just(0.0f32), 2 => 0.0f32..1.0], n),
            3 => prop::collection::vec(0.0f32..1.0, n),
            1 => prop::collection::vec(prop_oneof![3 => 0.0f32..1.0, 1 => wild()], n),
            1 => prop::collection::vec(0.0f32..1.0, 0..n + 3),
        ];
        (p, Just(ages))
    })
}

#[test]
fn age_stats_is_finite_and_ordered_when_some() {
    fuzz("age_stats", 4096, age_case(), |(probs, ages)| {
        let valid = !probs.is_empty()
            && probs.len() == ages.len()
            && probs.iter().all(|p| p.is_finite() && *p >= 0.0)
            && probs.iter().map(|&p| p as f64).sum::<f64>() > 0.0;
        let r = postprocess::age_stats(&probs, &ages);
        prop_assert_eq!(r.is_some(), valid, "Some iff the distribution is valid");
        if let Some(a) = r {
            let (lo_age, hi_age) = (ages[0], ages[ages.len() - 1]);
            for v in [a.value, a.stddev, a.low, a.high, a.confidence] {
                prop_assert!(v.is_finite(), "{:?}", a);
            }
            prop_assert!(a.value >= lo_age - 1e-3 && a.value <= hi_age + 1e-3, "{:?}", a);
            prop_assert!(a.stddev >= 0.0 && (0.0..=1.0 + 1e-5).contains(&a.confidence), "{:?}", a);
            prop_assert!(a.low >= 0.0 && a.low <= a.high, "{:?}", a);
            prop_assert!(a.low >= lo_age - 0.5 - 1e-3 && a.high <= hi_age + 0.5 + 1e-3, "{:?}", a);
        }
        Ok(())
    });
}

#[test]
fn age_stats_range_contains_the_value() {
    fuzz("age_stats range", 4096, age_case(), |(probs, ages)| {
        if let Some(a) = postprocess::age_stats(&probs, &ages) {
            prop_assert!(a.low <= a.value && a.value <= a.high, "{:?}", a);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Alignment
// ---------------------------------------------------------------------------------------------------------------

fn apply(m: &Affine, p: [f32; 2]) -> [f64; 2] {
    let m = m.map(|v| v as f64);
    let (x, y) = (p[0] as f64, p[1] as f64);
    [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]]
}

/// Landmarks: realistic, degenerate (all equal, eyes equal, collinear) or wild.
fn landmarks() -> impl Strategy<Value = [[f32; 2]; 5]> {
    let pt = || (coord(), coord()).prop_map(|(x, y)| [x, y]);
    prop_oneof![
        3 => prop::array::uniform5(pt()),
        1 => pt().prop_map(|p| [p; 5]),
        1 => (pt(), pt()).prop_map(|(a, b)| [a, a, a, b, b]),
        1 => (coord(), coord(), 0.0f32..100.0).prop_map(|(x, y, d)| [[x, y], [x + d, y], [x + 2.0 * d, y], [x, y], [x, y]]),
        1 => prop::array::uniform5((wild(), wild()).prop_map(|(x, y)| [x, y])),
    ]
}

#[test]
fn alignment_of_any_landmarks_is_none_or_a_finite_invertible_map() {
    let strategy = (landmarks(), 1usize..300, 0.0f32..1.0, any::<bool>());
    fuzz("dlib_chip_transform", 4096, strategy, |(lm, size, padding, eyes_only)| {
        let det = Detection { landmarks: lm, ..Default::default() };
        let points = if eyes_only { AlignPoints::Eyes } else { AlignPoints::EyesNose };
        let used = if eyes_only { &lm[..2] } else { &lm[..3] };
        let m = align::dlib_chip_transform(&det, size, padding, points);
        if used.iter().any(|p| p.iter().any(|v| v.is_nan())) || used.iter().all(|p| *p == used[0]) {
            prop_assert!(m.is_none(), "degenerate landmarks {:?} gave {:?}", used, m);
        }
        let realistic = lm.iter().flatten().all(|v| v.abs() < 1e5);
        if let (Some(m), true) = (m, realistic) {
            prop_assert!(m.iter().all(|v| v.is_finite()), "{:?}", m);
            // A similarity: [a, -b, tx, b, a, ty].
            let tol = 1e-3 * (m[0].abs() + m[3].abs()).max(1e-3);
            prop_assert!((m[0] - m[4]).abs() <= tol && (m[1] + m[3]).abs() <= tol, "{:?}", m);
            let inv = align::invert(&m);
            prop_assert!(inv.is_some(), "chip map {:?} not invertible", m);
        }
        Ok(())
    });
}

#[test]
fn similarity_and_invert_round_trip_or_refuse() {
    let pts = prop::collection::vec((coord(), coord()).prop_map(|(x, y)| [x, y]), 0..6);
    fuzz("similarity/invert", 4096, (pts.clone(), pts, prop::array::uniform6(wild())), |(src, dst, raw)| {
        if let Some(m) = align::similarity(&src, &dst) {
            prop_assert!(src.len().min(dst.len()) >= 2);
            prop_assert!(m.iter().all(|v| !v.is_nan()), "{:?}", m);
        }
        // invert of an arbitrary map: None, or a map whose composition is the identity where finite.
        if let Some(inv) = align::invert(&raw) {
            // Well-conditioned maps only: f32 cannot round-trip the others.
            let modest = |v: &f32| *v == 0.0 || (v.is_finite() && v.abs() < 1e2 && v.abs() > 1e-2);
            let det = raw[0] as f64 * raw[4] as f64 - raw[1] as f64 * raw[3] as f64;
            if raw.iter().chain(inv.iter()).all(modest) && det.abs() > 1e-2 {
                for p in [[0.0f32, 0.0], [1.0, 0.0], [0.0, 1.0], [3.5, -2.0]] {
                    let q = apply(&raw, p);
                    let back = apply(&inv, [q[0] as f32, q[1] as f32]);
                    let tol = 1e-2 * (1.0 + q[0].abs() + q[1].abs());
                    prop_assert!(
                        (back[0] - p[0] as f64).abs() < tol && (back[1] - p[1] as f64).abs() < tol,
                        "{:?}",
                        back
                    );
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Pixels: warping and letterboxing
// ---------------------------------------------------------------------------------------------------------------

/// A frame: layout, width, height, row padding, trailing bytes, pixel bytes (padding and trailing bytes 0xEE).
#[derive(Debug, Clone)]
struct Pixels {
    layout: PixelLayout,
    w: usize,
    h: usize,
    stride: usize,
    data: Vec<u8>,
}

impl Pixels {
    fn frame(&self) -> FrameRef<'_> {
        FrameRef::new(&self.data, self.w, self.h, self.stride, self.layout).unwrap()
    }
    fn is_padding(&self, i: usize) -> bool {
        let row = self.w * self.layout.bpp();
        i >= self.stride * (self.h - 1) + row || i % self.stride >= row
    }
    /// Per channel (r, g, b) min and max over the real pixels.
    fn channel_range(&self) -> [(f32, f32); 3] {
        let f = self.frame();
        let mut r = [(255.0f32, 0.0f32); 3];
        for y in 0..self.h {
            for x in 0..self.w {
                for (c, v) in f.rgb(x, y).into_iter().enumerate() {
                    r[c] = (r[c].0.min(v as f32), r[c].1.max(v as f32));
                }
            }
        }
        r
    }
}

fn pixels(max_w: usize, max_h: usize) -> impl Strategy<Value = Pixels> {
    (layout(), 1..=max_w, 1..=max_h, 0usize..9, 0usize..5, any::<u64>()).prop_map(|(layout, w, h, pad, tail, seed)| {
        let stride = w * layout.bpp() + pad;
        let len = stride * (h - 1) + w * layout.bpp() + tail;
        let mut s = seed | 1;
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 200) as u8
            })
            .collect();
        let p = Pixels { layout, w, h, stride, data: Vec::new() };
        for (i, b) in data.iter_mut().enumerate() {
            if p.is_padding(i) {
                *b = 0xEE;
            }
        }
        Pixels { data, ..p }
    })
}

/// Bilinear sampling with border replicate, written out plainly: what `warp_affine` must compute (its fast path
/// for axis-aligned maps included).
fn reference_sample(px: &Pixels, m: &Affine, x: usize, y: usize) -> [f32; 3] {
    let f = px.frame();
    let (xf, yf) = (x as f32, y as f32);
    let sx = m[0] * xf + m[1] * yf + m[2];
    let sy = m[3] * xf + m[4] * yf + m[5];
    let sx = if sx.is_nan() { 0.0 } else { sx.clamp(0.0, px.w as f32 - 1.0) };
    let sy = if sy.is_nan() { 0.0 } else { sy.clamp(0.0, px.h as f32 - 1.0) };
    let (x0, y0) = (sx as usize, sy as usize);
    let (x1, y1) = ((x0 + 1).min(px.w - 1), (y0 + 1).min(px.h - 1));
    let (wx, wy) = (sx - x0 as f32, sy - y0 as f32);
    let (p00, p01, p10, p11) = (f.rgb(x0, y0), f.rgb(x1, y0), f.rgb(x0, y1), f.rgb(x1, y1));
    [0, 1, 2].map(|c| {
        let top = p00[c] as f32 + (p01[c] as f32 - p00[c] as f32) * wx;
        let bot = p10[c] as f32 + (p11[c] as f32 - p10[c] as f32) * wx;
        top + (bot - top) * wy
    })
}

/// Affine maps: arbitrary, or axis-aligned (scale and translate, the crop fast path).
fn affine() -> impl Strategy<Value = Affine> {
    prop_oneof![
        prop::array::uniform6(wild()),
        (wild(), wild(), wild(), wild()).prop_map(|(a, c, e, f)| [a, 0.0, c, 0.0, e, f]),
        (-4.0f32..4.0, -20.0f32..40.0, -4.0f32..4.0, -20.0f32..40.0).prop_map(|(a, c, e, f)| [a, 0.0, c, 0.0, e, f]),
    ]
}

#[test]
fn warp_affine_visits_every_output_pixel_once_and_reads_only_real_pixels() {
    let out_w = prop_oneof![4 => 0usize..10, 1 => 250usize..262];
    let strategy = (pixels(12, 12), affine(), out_w, 0usize..10);
    fuzz("warp_affine", 2048, strategy, |(px, m, ow, oh)| {
        let range = px.channel_range();
        let mut visits = Vec::new();
        let mut bad = None;
        let mut differs = None;
        preprocess::warp_affine(&px.frame(), &m, ow, oh, |x, y, rgb| {
            visits.push((x, y));
            let want = reference_sample(&px, &m, x, y);
            if differs.is_none() && rgb.iter().zip(want).any(|(a, b)| (a - b).abs().is_nan() || (a - b).abs() > 1e-3) {
                differs = Some((x, y, rgb, want));
            }
            for (c, v) in rgb.into_iter().enumerate() {
                // 0xEE padding (238) is above every pixel value (< 200): reading it would show.
                if !(v.is_finite() && v >= range[c].0 - 1e-3 && v <= range[c].1 + 1e-3) {
                    bad = Some((x, y, rgb));
                }
            }
        });
        let expected: Vec<(usize, usize)> = (0..oh).flat_map(|y| (0..ow).map(move |x| (x, y))).collect();
        prop_assert_eq!(visits, expected, "every output pixel once, row by row");
        prop_assert!(bad.is_none(), "sample {:?} outside the frame's channel range {:?}", bad, range);
        prop_assert!(differs.is_none(), "(x, y, got, bilinear reference) {:?} for {:?}", differs, m);
        Ok(())
    });
}

#[test]
fn letterbox_of_any_frame_and_size_is_consistent_finite_and_zero_padded() {
    let strategy = (pixels(300, 300), 0usize..700, 0usize..700);
    fuzz("Letterboxer::run", 192, strategy, |(px, size, size2)| {
        let range = px.channel_range();
        let mut lb = Letterboxer::default();
        // A reused letterboxer (other size first) must give what a fresh one gives, and so must one that fills half
        // of the rows on its helper thread.
        let _ = lb.run(&px.frame(), size2);
        let info = lb.run(&px.frame(), size);
        let mut fresh = Letterboxer::default();
        let info2 = fresh.run(&px.frame(), size);
        prop_assert_eq!(info, info2);
        prop_assert!(lb.input == fresh.input, "reused letterboxer differs from a fresh one");
        let mut parallel = Letterboxer::parallel();
        let _ = parallel.run(&px.frame(), size2);
        prop_assert_eq!(parallel.run(&px.frame(), size), info);
        prop_assert!(parallel.input == fresh.input, "the two-thread letterbox differs from the one-thread one");
        prop_assert_eq!(info, preprocess::letterbox_geometry(px.w, px.h, size));
        let LetterboxInfo { scaled_w, scaled_h, input_w, input_h, .. } = info;
        prop_assert!(scaled_w >= 1 && scaled_h >= 1 && scaled_w <= input_w && scaled_h <= input_h);
        prop_assert!(input_w % 32 == 0 && input_h % 32 == 0);
        let long = px.w.max(px.h);
        if size > 0 && long > size {
            // Larger frames are scaled down to `size` on the long side.
            prop_assert!(scaled_w.max(scaled_h).abs_diff(size) <= 1, "{:?} for size {}", info, size);
        } else {
            // Smaller frames (and size 0) are never upscaled.
            prop_assert_eq!((scaled_w, scaled_h), (px.w, px.h));
        }
        prop_assert_eq!(lb.input.len(), 3 * input_w * input_h);
        let plane = input_w * input_h;
        // Planes are B, G, R.
        for (p, c) in [(0usize, 2usize), (1, 1), (2, 0)] {
            for y in 0..input_h {
                for x in 0..input_w {
                    let v = lb.input[p * plane + y * input_w + x];
                    if x >= scaled_w || y >= scaled_h {
                        prop_assert_eq!(v, 0.0, "padding at ({}, {})", x, y);
                    } else {
                        prop_assert!(v >= range[c].0 - 1e-3 && v <= range[c].1 + 1e-3, "({}, {}) = {}", x, y, v);
                    }
                }
            }
        }
        Ok(())
    });
}

/// A 4:2:0 frame (I420 or NV12) with odd sizes allowed, padded strides and trailing bytes, all 0xEE.
#[derive(Debug, Clone)]
struct YuvPixels {
    nv12: bool,
    w: usize,
    h: usize,
    strides: [usize; 2],
    planes: [Vec<u8>; 3],
}

impl YuvPixels {
    fn frame(&self) -> FrameRef<'_> {
        let (layout, strides) = if self.nv12 {
            (YuvLayout::Nv12, [self.strides[0], self.strides[1], 0])
        } else {
            (YuvLayout::I420, [self.strides[0], self.strides[1], self.strides[1]])
        };
        let [y, u, v] = &self.planes;
        FrameRef::yuv([y, u, v], strides, self.w, self.h, layout, YuvMatrix::BT601).unwrap()
    }

    /// Bilinear luma and chroma at (sx, sy), written out in `Yuv::sample`.
    fn reference(&self, sx: f32, sy: f32) -> [f32; 3] {
        let frame::Pixels::Yuv(y) = self.frame().pixels() else { unreachable!() };
        y.sample(sx, sy, self.w, self.h)
    }
}

fn yuv_pixels(max_w: usize, max_h: usize) -> impl Strategy<Value = YuvPixels> {
    (any::<bool>(), 1..=max_w, 1..=max_h, 0usize..7, 0usize..3, any::<u64>()).prop_map(
        |(nv12, w, h, pad, tail, seed)| {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let crow = if nv12 { 2 * cw } else { cw };
            let strides = [w + pad, crow + pad];
            let mut s = seed | 1;
            let mut plane = |row: usize, rows: usize, stride: usize| -> Vec<u8> {
                let len = stride * (rows - 1) + row + tail;
                (0..len)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        if i % stride < row && i < stride * (rows - 1) + row { (s % 200) as u8 + 20 } else { 0xEE }
                    })
                    .collect()
            };
            let y = plane(w, h, strides[0]);
            let u = plane(crow, ch, strides[1]);
            let v = if nv12 { Vec::new() } else { plane(crow, ch, strides[1]) };
            YuvPixels { nv12, w, h, strides, planes: [y, u, v] }
        },
    )
}

#[test]
fn yuv_warp_and_letterbox_equal_plain_bilinear_sampling() {
    let strategy = (yuv_pixels(41, 23), affine(), 0usize..12, 0usize..8, 0usize..60);
    fuzz("YUV warp_affine + letterbox", 1024, strategy, |(px, m, ow, oh, size)| {
        let (w, h) = (px.w as f32, px.h as f32);
        let mut differs = None;
        preprocess::warp_affine(&px.frame(), &m, ow, oh, |x, y, rgb| {
            let (xf, yf) = (x as f32, y as f32);
            let sx = m[0] * xf + m[1] * yf + m[2];
            let sy = m[3] * xf + m[4] * yf + m[5];
            let sx = if sx.is_nan() { 0.0 } else { sx.clamp(0.0, w - 1.0) };
            let sy = if sy.is_nan() { 0.0 } else { sy.clamp(0.0, h - 1.0) };
            let want = px.reference(sx, sy);
            if differs.is_none() && rgb.iter().zip(want).any(|(a, b)| (a - b).abs().is_nan() || (a - b).abs() > 1e-2) {
                differs = Some((x, y, rgb, want));
            }
        });
        prop_assert!(differs.is_none(), "warp (x, y, got, reference) {:?} for {:?}", differs, m);
        let mut lb = Letterboxer::default();
        let info = lb.run(&px.frame(), size);
        let mut parallel = Letterboxer::parallel();
        // Reused after a packed frame and another size (its tap tables and scratch rows are rebuilt twice).
        let packed = [0x55u8; 7 * 5 * 4];
        let _ = parallel.run(&FrameRef::new(&packed, 7, 5, 28, PixelLayout::Bgrx).unwrap(), 0);
        let _ = parallel.run(&px.frame(), size / 2 + 1);
        prop_assert_eq!(parallel.run(&px.frame(), size), info);
        prop_assert!(parallel.input == lb.input, "the two-thread YUV letterbox differs from the one-thread one");
        let plane = info.input_w * info.input_h;
        for y in 0..info.scaled_h {
            let sy = ((y as f32 + 0.5) / info.scale_y - 0.5).clamp(0.0, h - 1.0);
            for x in 0..info.scaled_w {
                let sx = ((x as f32 + 0.5) / info.scale_x - 0.5).clamp(0.0, w - 1.0);
                let [r, g, b] = px.reference(sx, sy);
                let i = y * info.input_w + x;
                let got = [lb.input[2 * plane + i], lb.input[plane + i], lb.input[i]];
                prop_assert!(
                    got.iter().zip([r, g, b]).all(|(a, b)| (a - b).abs() <= 1e-2),
                    "letterbox ({}, {}) {:?} vs {:?}",
                    x,
                    y,
                    got,
                    [r, g, b]
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Overlay
// ---------------------------------------------------------------------------------------------------------------

fn style() -> impl Strategy<Value = OverlayStyle> {
    (
        prop::option::of(prop_oneof![3 => 0.0f32..300.0, 1 => wild()]),
        prop::option::of(prop_oneof![3 => 0u32..20, 1 => any::<u32>()]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(Privacy::None), Just(Privacy::Blur), Just(Privacy::Pixelate)],
    )
        .prop_map(|(font_size, line_width, draw_boxes, draw_landmarks, draw_labels, privacy)| OverlayStyle {
            font_size,
            line_width,
            draw_boxes,
            draw_landmarks,
            draw_labels,
            privacy,
        })
}

const TEMPLATES: [&str; 5] = ["{age} {emotion}", "", "{age_range} {score} {confidence} {id} {gender}", "x", "{{}}"];

/// Face boxes for small frames: around the frame, far outside, or wild.
fn small_face() -> impl Strategy<Value = Face> {
    let c = || prop_oneof![6 => -20.0f32..60.0, 1 => wild()];
    (face(), c(), c(), c(), c(), prop::array::uniform10(c())).prop_map(|(mut f, x, y, w, h, l)| {
        f.detection.bbox = BBox { x, y, w, h };
        f.detection.landmarks = [[l[0], l[1]], [l[2], l[3]], [l[4], l[5]], [l[6], l[7]], [l[8], l[9]]];
        f
    })
}

#[test]
fn overlay_never_writes_padding_alpha_or_outside_what_it_may_touch() {
    let strategy = (pixels(40, 40), prop::collection::vec(small_face(), 0..5), style(), 0..TEMPLATES.len());
    fuzz("Overlay::draw", 1024, strategy, |(px, faces, style, t)| {
        let template = LabelTemplate::parse(TEMPLATES[t]).unwrap();
        let before = px.data.clone();
        let mut data = px.data.clone();
        {
            let mut frame = FrameMut::new(&mut data, px.w, px.h, px.stride, px.layout).unwrap();
            Overlay::new().draw(&mut frame, &faces, &template, &style);
        }
        let bpp = px.layout.bpp();
        let rgb = px.layout.rgb_offsets();
        for (i, (a, b)) in data.iter().zip(&before).enumerate() {
            if a == b {
                continue;
            }
            prop_assert!(!px.is_padding(i), "padding or trailing byte {} changed", i);
            let within = i % px.stride % bpp;
            prop_assert!(rgb.contains(&within), "alpha/x byte {} changed ({:?})", i, px.layout);
        }
        let valid = |f: &Face| {
            let b = f.detection.bbox;
            finite_box(&b) && (b.x + b.w).is_finite() && (b.y + b.h).is_finite() && b.w > 0.0 && b.h > 0.0
        };
        if !faces.iter().any(valid) && !style.draw_landmarks {
            prop_assert!(data == before, "no drawable face, but pixels changed");
        }
        // Privacy only: nothing outside the (clipped) face boxes changes.
        if !style.draw_boxes && !style.draw_labels && !style.draw_landmarks {
            for y in 0..px.h {
                for x in 0..px.w {
                    let inside = faces.iter().filter(|f| valid(f)).any(|f| {
                        let b = f.detection.bbox;
                        let (x0, y0) = (b.x.round(), b.y.round());
                        let (x1, y1) = ((b.x + b.w).round().max(x0 + 1.0), (b.y + b.h).round().max(y0 + 1.0));
                        (x as f32) >= x0 && (x as f32) < x1 && (y as f32) >= y0 && (y as f32) < y1
                    });
                    let p = y * px.stride + x * bpp;
                    if !inside {
                        prop_assert!(
                            data[p..p + bpp] == before[p..p + bpp],
                            "({}, {}) outside every box changed",
                            x,
                            y
                        );
                    }
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// JSON records, label templates, ROI rectangles
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn frame_record_is_always_valid_json_with_the_values_or_null() {
    let strategy =
        (any::<u64>(), prop::option::of(any::<u64>()), any::<u32>(), any::<u32>(), prop::collection::vec(face(), 0..6));
    fuzz("frame_record", 2048, strategy, |(frame, pts, w, h, faces)| {
        let mut s = String::from("garbage before");
        let start = s.len();
        results::frame_record(&mut s, frame, pts, w, h, &faces);
        prop_assert!(s.starts_with("garbage before"), "appends");
        let line = &s[start..];
        prop_assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        prop_assert_eq!(v["frame"].as_u64(), Some(frame));
        prop_assert_eq!(v["pts"].as_u64(), pts);
        prop_assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(w as u64), Some(h as u64)));
        let jf = v["faces"].as_array().unwrap();
        prop_assert_eq!(jf.len(), faces.len());
        for (j, f) in jf.iter().zip(&faces) {
            let b = f.detection.bbox;
            for (k, x) in [b.x, b.y, b.w, b.h].into_iter().enumerate() {
                let got = &j["box"][k];
                if x.is_finite() {
                    let g = got.as_f64().unwrap();
                    prop_assert!((g - x as f64).abs() <= 0.05 + 1e-6 * (x as f64).abs(), "{} -> {}", x, g);
                } else {
                    prop_assert!(got.is_null(), "{} -> {}", x, got);
                }
            }
            prop_assert_eq!(j["landmarks"].as_array().unwrap().len(), 10);
            prop_assert_eq!(j.get("age").is_some(), f.age.is_some());
            prop_assert_eq!(j.get("emotion").is_some(), f.emotion.is_some());
            if let Some(e) = f.emotion {
                prop_assert!(EMOTIONS.contains(&j["emotion"]["label"].as_str().unwrap()));
                prop_assert_eq!(j["emotion"]["probabilities"].as_object().unwrap().len(), NUM_EMOTIONS);
                let _ = e;
            }
            prop_assert_eq!(j["id"].as_u64(), f.track_id);
        }
        Ok(())
    });
}

#[test]
fn label_templates_parse_or_refuse_and_render_anything() {
    let fmt = prop_oneof![
        ".{0,40}",
        prop::collection::vec(
            prop_oneof![
                Just("{age}"),
                Just("{age_range}"),
                Just("{emotion}"),
                Just("{confidence}"),
                Just("{score}"),
                Just("{id}"),
                Just("{gender}"),
                Just("{{"),
                Just("}}"),
                Just("{"),
                Just("}"),
                Just(" "),
                Just("y"),
                Just("é"),
            ],
            0..10
        )
        .prop_map(|v| v.concat()),
    ];
    fuzz("LabelTemplate", 2048, (fmt, face()), |(f, face)| {
        match LabelTemplate::parse(&f) {
            Ok(t) => {
                let mut out = String::from("old");
                t.render(&face, &mut out);
                prop_assert!(!out.starts_with(' ') && !out.ends_with(' ') && !out.contains("  "), "{:?}", out);
                if !f.contains("NaN") && !f.contains("inf") {
                    prop_assert!(!out.contains("NaN") && !out.contains("inf"), "{:?} from {:?}", out, f);
                }
                if t.is_empty() {
                    prop_assert!(out.is_empty());
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        Ok(())
    });
}

#[test]
fn roi_rect_of_any_box_lies_inside_the_frame() {
    fuzz("roi_rect", 4096, (face(), 1u32..10_000, 1u32..10_000), |(f, w, h)| {
        let (x, y, rw, rh) = gstfaceanalyze::meta::roi_rect(&f, w, h);
        prop_assert!(x <= w && y <= h && x + rw <= w && y + rh <= h, "{:?} in {}x{}", (x, y, rw, rh), w, h);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Tracking
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn tracker_assigns_each_detection_its_own_track_whatever_the_boxes() {
    use gstfaceanalyze::tracker::{Tracker, TrackerParams};
    let frames = prop::collection::vec(prop::collection::vec(detection(), 0..8), 1..12);
    fuzz("Tracker::update", 1024, (frames, 1u64..20), |(frames, timeout)| {
        let mut t = Tracker::new();
        let p = TrackerParams { timeout_frames: timeout, ..Default::default() };
        let mut ended = Vec::new();
        let mut ids_seen = std::collections::HashSet::new();
        for (i, dets) in frames.iter().enumerate() {
            let idx = t.update(dets, i as u64, Some(i as u64 * 40), &p, &mut ended).to_vec();
            prop_assert_eq!(idx.len(), dets.len());
            let n = t.tracks().len();
            prop_assert!(idx.iter().all(|&k| k < n), "index out of range");
            let mut uniq = idx.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), idx.len(), "two detections share a track");
            let ids: Vec<u64> = t.tracks().iter().map(|tr| tr.id).collect();
            let mut u = ids.clone();
            u.sort();
            u.dedup();
            prop_assert_eq!(u.len(), ids.len(), "duplicate track ids");
            ids_seen.extend(ids);
        }
        t.finish(&mut ended);
        prop_assert!(t.tracks().is_empty());
        prop_assert_eq!(ended.len(), ids_seen.len(), "every track ends exactly once");
        for s in &ended {
            let v: serde_json::Value =
                serde_json::from_str(&s.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["type"].as_str(), Some("track"));
        }
        Ok(())
    });
}

#[test]
fn emotion_estimate_label_is_always_a_class() {
    fuzz("EmotionEstimate", 4096, prop::array::uniform7(wild()), |p| {
        let e = EmotionEstimate::from_probabilities(p);
        prop_assert!(e.index < NUM_EMOTIONS);
        prop_assert!(EMOTIONS.contains(&e.label()));
        Ok(())
    });
}

#[test]
fn relu6_rewrite_of_any_bytes_is_none_or_a_model_with_nothing_left_to_rewrite() {
    use gstfaceanalyze::inference::graph::relu6_to_clip;
    let base = common::relu6_onnx();
    assert_eq!(relu6_to_clip(&base).map(|(_, n)| n), Some(1));
    let flips = prop::collection::vec((0..base.len(), any::<u8>()), 0..4);
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        flips.prop_map(move |f| {
            let mut m = base.clone();
            f.into_iter().for_each(|(i, b)| m[i] = b);
            m
        })
    ];
    fuzz("relu6_to_clip", 4096, input, |bytes| {
        if let Some((out, n)) = relu6_to_clip(&bytes) {
            prop_assert!(n >= 1);
            prop_assert!(relu6_to_clip(&out).is_none(), "a rewritten model has no chain left");
        }
        Ok(())
    });
}
