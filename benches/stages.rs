// SPDX-License-Identifier: MIT OR Apache-2.0
//! Per-stage benchmarks on fixed inputs: detector pre-processing at 1080p, the detector, decode + NMS, chip and crop
//! preparation for 10 faces, the age and emotion networks at batch 1/8/32, and the overlay for 10 faces.
//! Stages that need ONNX Runtime and the models are skipped with a message when those are not installed.
//!
//! `cargo bench --bench stages [-- FILTER]`; one intra-op thread unless FACEANALYZE_BENCH_THREADS is set.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gstfaceanalyze::analyzer::{AnalyzeParams, Analyzer, AnalyzerConfig};
use gstfaceanalyze::face::{AgeEstimate, BBox, Detection, EmotionEstimate, Face};
use gstfaceanalyze::frame::{FrameMut, FrameRef, PixelLayout, YuvLayout, YuvMatrix};
use gstfaceanalyze::inference::ExecutionProvider;
use gstfaceanalyze::inference::age::{AgeKind, AgeParams, prepare_batch as age_prepare};
use gstfaceanalyze::inference::emotion::{EmotionParams, prepare_batch as emotion_prepare};
use gstfaceanalyze::overlay::{LabelTemplate, Overlay, OverlayStyle};
use gstfaceanalyze::postprocess::{StrideOutputs, decode_stride, nms};
use gstfaceanalyze::preprocess::Letterboxer;

const W: usize = 1920;
const H: usize = 1080;

/// A deterministic 1080p BGRx test picture.
fn frame_bytes() -> Vec<u8> {
    let mut v = vec![0u8; W * H * 4];
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for (i, px) in v.chunks_exact_mut(4).enumerate() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let (x, y) = (i % W, i / W);
        px.copy_from_slice(&[(x / 8) as u8, (y / 5) as u8, (s & 0x3f) as u8 + ((x + y) / 16) as u8, 255]);
    }
    v
}

/// The BGRx picture as I420 planes (BT.709, limited range; chroma of each 2x2 cell's top-left pixel).
fn i420_of(bgrx: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (cw, ch) = (W / 2, H / 2);
    let (mut y, mut u, mut v) = (vec![0u8; W * H], vec![0u8; cw * ch], vec![0u8; cw * ch]);
    for (i, px) in bgrx.chunks_exact(4).enumerate() {
        let [yy, uu, vv] = YuvMatrix::BT709.from_rgb([px[2], px[1], px[0]]);
        y[i] = yy;
        let (x, r) = (i % W, i / W);
        if x % 2 == 0 && r % 2 == 0 {
            u[(r / 2) * cw + x / 2] = uu;
            v[(r / 2) * cw + x / 2] = vv;
        }
    }
    (y, u, v)
}

/// Ten face-sized detections spread over the frame, with plausible landmarks.
fn ten_faces() -> Vec<Detection> {
    (0..10)
        .map(|i| {
            let (x, y, s) = (100.0 + 170.0 * i as f32, 300.0 + 20.0 * i as f32, 120.0);
            Detection {
                bbox: BBox { x, y, w: s, h: s * 1.25 },
                score: 0.9,
                landmarks: [
                    [x + 0.68 * s, y + 0.5 * s],
                    [x + 0.32 * s, y + 0.5 * s],
                    [x + 0.5 * s, y + 0.72 * s],
                    [x + 0.64 * s, y + 0.95 * s],
                    [x + 0.36 * s, y + 0.95 * s],
                ],
            }
        })
        .collect()
}

fn pure_stages(c: &mut Criterion) {
    let bytes = frame_bytes();
    let frame = FrameRef::new(&bytes, W, H, W * 4, PixelLayout::Bgrx).unwrap();
    let mut lb = Letterboxer::default();
    c.bench_function("preprocess/letterbox 1080p BGRx to 640", |b| b.iter(|| lb.run(&frame, 640)));
    // The same picture as I420 (what decoders produce): converted only at the sampled points.
    let (yp, up, vp) = i420_of(&bytes);
    let yuv = FrameRef::yuv([&yp, &up, &vp], [W, W / 2, W / 2], W, H, YuvLayout::I420, YuvMatrix::BT709).unwrap();
    c.bench_function("preprocess/letterbox 1080p I420 to 640", |b| b.iter(|| lb.run(&yuv, 640)));
    // And as NV12 (interleaved chroma, what hardware decoders produce).
    let uv: Vec<u8> = up.iter().zip(&vp).flat_map(|(&u, &v)| [u, v]).collect();
    let nv12 = FrameRef::yuv([&yp, &uv, &[]], [W, W, 0], W, H, YuvLayout::Nv12, YuvMatrix::BT709).unwrap();
    c.bench_function("preprocess/letterbox 1080p NV12 to 640", |b| b.iter(|| lb.run(&nv12, 640)));
    // The element's letterboxer with more than one thread: half of the rows on a helper thread.
    let mut lb2 = Letterboxer::parallel();
    c.bench_function("preprocess/letterbox 1080p BGRx to 640, two threads", |b| b.iter(|| lb2.run(&frame, 640)));
    c.bench_function("preprocess/letterbox 1080p I420 to 640, two threads", |b| b.iter(|| lb2.run(&yuv, 640)));

    // Decode + NMS on fixed tensors for a 640x384 input: low scores everywhere, 40 clusters of high scores.
    let (iw, ih) = (640usize, 384usize);
    type StrideTensors = (usize, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    let outs: Vec<StrideTensors> = [8usize, 16, 32]
        .iter()
        .map(|&s| {
            let n = (iw / s) * (ih / s);
            let cls: Vec<f32> = (0..n).map(|i| if i % 97 < 3 { 0.95 } else { 0.01 }).collect();
            let obj = vec![0.9f32; n];
            let bbox: Vec<f32> = (0..4 * n).map(|i| [0.5, 0.5, 1.2, 1.4][i % 4]).collect();
            let kps = vec![0.5f32; 10 * n];
            (s, cls, obj, bbox, kps)
        })
        .collect();
    let mut dets = Vec::new();
    c.bench_function("postprocess/decode + nms 640x384", |b| {
        b.iter(|| {
            dets.clear();
            for (s, cls, obj, bbox, kps) in &outs {
                let o = StrideOutputs { stride: *s, cls, obj, bbox, kps };
                decode_stride(&o, iw, ih, 0.6, &mut dets).unwrap();
            }
            nms(&mut dets, 0.3, 0);
            dets.len()
        })
    });

    let faces = ten_faces();
    let mut input = Vec::new();
    c.bench_function("preprocess/dlib chips (aligned) x10", |b| {
        b.iter(|| age_prepare(AgeKind::Dlib, &frame, &faces, &AgeParams::default(), &mut input))
    });
    c.bench_function("preprocess/hse crops x10", |b| {
        b.iter(|| age_prepare(AgeKind::Hse, &frame, &faces, &AgeParams::default(), &mut input))
    });
    c.bench_function("preprocess/emotion crops x10", |b| {
        b.iter(|| emotion_prepare(&frame, &faces, &EmotionParams::default(), &mut input))
    });
    c.bench_function("preprocess/dlib chips (aligned) x10 I420", |b| {
        b.iter(|| age_prepare(AgeKind::Dlib, &yuv, &faces, &AgeParams::default(), &mut input))
    });
    c.bench_function("preprocess/hse crops x10 I420", |b| {
        b.iter(|| age_prepare(AgeKind::Hse, &yuv, &faces, &AgeParams::default(), &mut input))
    });
    c.bench_function("preprocess/emotion crops x10 I420", |b| {
        b.iter(|| emotion_prepare(&yuv, &faces, &EmotionParams::default(), &mut input))
    });

    let mut probs = [0.02f32; 7];
    probs[3] = 0.88;
    let drawn: Vec<Face> = faces
        .iter()
        .enumerate()
        .map(|(i, d)| Face {
            detection: *d,
            age: Some(AgeEstimate { value: 30.0 + i as f32, stddev: 4.0, low: 26.0, high: 38.0, confidence: 0.5 }),
            emotion: Some(EmotionEstimate::from_probabilities(probs)),
            track_id: Some(i as u64),
            ..Default::default()
        })
        .collect();
    let mut canvas = bytes.clone();
    let mut overlay = Overlay::new();
    let template = LabelTemplate::default();
    let style = OverlayStyle::default();
    c.bench_function("overlay/10 faces 1080p", |b| {
        b.iter(|| {
            let mut f = FrameMut::new(&mut canvas, W, H, W * 4, PixelLayout::Bgrx).unwrap();
            overlay.draw(&mut f, &drawn, &template, &style)
        })
    });
}

fn models_ready() -> bool {
    let lib = gstfaceanalyze::inference::runtime::candidates(None).iter().any(|p| p.is_file());
    let dir = gstfaceanalyze::models::default_model_dir();
    let models = gstfaceanalyze::models::known_models().iter().all(|m| dir.join(&m.file).is_file());
    if !(lib && models) {
        eprintln!("SKIPPED model stages: ONNX Runtime or models not installed (run scripts/setup.sh)");
    }
    lib && models
}

fn threads() -> usize {
    std::env::var("FACEANALYZE_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

fn analyzer(age: &str, emotion: &str) -> Analyzer {
    let mut cfg = AnalyzerConfig { age_model: age.into(), emotion_model: emotion.into(), ..Default::default() };
    cfg.session.provider = ExecutionProvider::Cpu;
    cfg.session.threads = threads();
    Analyzer::load(&cfg).expect("models load")
}

fn model_stages(c: &mut Criterion) {
    if !models_ready() {
        return;
    }
    let bytes = frame_bytes();
    let frame = FrameRef::new(&bytes, W, H, W * 4, PixelLayout::Bgrx).unwrap();
    let mut a = analyzer("dlib", "mini");
    let mut dets = Vec::new();
    let p = AnalyzeParams::default();
    c.bench_function("detector/yunet 1080p at 640 (letterbox + run + decode)", |b| {
        b.iter(|| a.detect(&frame, &p.detector, &mut dets).unwrap())
    });

    let ten = ten_faces();
    let batch = |n: usize| -> Vec<Detection> { (0..n).map(|i| ten[i % ten.len()]).collect() };
    let mut faces = Vec::new();
    for (age, emotion, label) in [
        ("dlib", "mini", "age dlib"),
        ("hse", "mini", "age hse"),
        ("dlib", "mini", "emotion mini"),
        ("dlib", "big", "emotion big"),
        ("hse-utk-int8", "mini", "age hse-utk-int8 (default)"),
        ("dlib-int8", "mini", "age dlib-int8"),
        ("dlib", "ensemble", "emotion ensemble"),
        ("dlib", "own-int8", "emotion own-int8 (default)"),
    ] {
        let mut a = analyzer(age, emotion);
        let mut group = c.benchmark_group(label);
        for n in [1usize, 8, 32] {
            let d = batch(n);
            let params = AnalyzeParams {
                analyze_age: label.starts_with("age"),
                analyze_emotion: label.starts_with("emotion"),
                ..Default::default()
            };
            group.throughput(criterion::Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &d, |b, d| {
                b.iter(|| a.classify(&frame, d, &params, &mut faces, &mut Default::default()).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = pure_stages, model_stages
}
criterion_main!(benches);
