// SPDX-License-Identifier: MIT OR Apache-2.0
//! Heap allocations per frame once warm, counted with a counting global allocator (this test binary only).
//!
//! Our own per-frame code (pre-processing, decoding, NMS, tracking, fusion, overlay, JSON) must not allocate once
//! warm. Each ONNX Runtime call through `ort` still allocates a few small Rust vectors (input/output name lists and
//! the output map) and ONNX Runtime allocates its output tensors in C++; the test bounds the Rust side to that
//! per-call overhead and prints the figures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use gstfaceanalyze::frame::{FrameMut, PixelLayout};
use gstfaceanalyze::overlay::{LabelTemplate, Overlay, OverlayStyle};
use gstfaceanalyze::results::frame_record;
use gstfaceanalyze::video::{VideoAnalyzer, VideoParams};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The counter is process-wide: tests take this lock so that they do not count each other's allocations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

#[test]
fn warm_frames_allocate_only_inside_ort_calls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(img) = photo("images/group_photo/t1.jpg") else { return };
    // Two threads, as the element's default on this machine: the detector's letterbox then uses its helper thread.
    let Some(a) = analyzer(|c| c.session.threads = 2) else { return };
    let mut va = VideoAnalyzer::new(a);
    let p = VideoParams::per_frame(Default::default());
    let (mut faces, mut ended) = (Vec::with_capacity(64), Vec::with_capacity(64));
    let mut canvas = img.data.clone();
    let mut overlay = Overlay::new();
    let template = LabelTemplate::default();
    let style = OverlayStyle::default();
    let mut json = String::with_capacity(1 << 16);
    let mut frame_step = |i: u64, faces: &mut Vec<_>, ended: &mut Vec<_>| {
        let stats = va.process(&img.frame(), i, Some(i), &p, faces, ended).unwrap();
        let mut f = FrameMut::new(&mut canvas, img.width, img.height, img.width * 3, PixelLayout::Rgb).unwrap();
        overlay.draw(&mut f, faces, &template, &style);
        json.clear();
        frame_record(&mut json, i, Some(i), img.width as u32, img.height as u32, faces);
        stats
    };
    for i in 0..5 {
        frame_step(i, &mut faces, &mut ended);
    }
    let mut per_frame = Vec::new();
    for i in 5..15 {
        let (n, stats) = count(|| frame_step(i, &mut faces, &mut ended));
        assert_eq!(faces.len(), 6);
        // One detector call, one age call, one emotion call.
        let ort_calls = 1 + stats.frame.age_runs + stats.frame.emotion_runs;
        per_frame.push((n, ort_calls));
    }
    eprintln!("FIGURES allocations per warm frame (6 faces, detect + age + emotion): {per_frame:?}");
    // Measured: 14 per ort run() call (name lists, value lists, the output map); our own code adds none.
    for (n, calls) in per_frame {
        assert!(n <= 16 * calls as u64, "{n} allocations for {calls} ONNX Runtime calls");
    }

    // The pure stages alone allocate nothing once warm.
    let (n, _) = count(|| {
        let mut f = FrameMut::new(&mut canvas, img.width, img.height, img.width * 3, PixelLayout::Rgb).unwrap();
        overlay.draw(&mut f, &faces, &template, &style);
        json.clear();
        frame_record(&mut json, 99, Some(99), img.width as u32, img.height as u32, &faces);
    });
    assert_eq!(n, 0, "overlay and JSON allocate nothing once warm");
}

#[test]
fn yuv_frames_allocate_nothing_outside_ort_calls() {
    use gstfaceanalyze::frame::{FrameRef, YuvLayout, YuvMatrix};
    use gstfaceanalyze::preprocess::Letterboxer;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(img) = photo("images/group_photo/t1.jpg") else { return };
    let Some(a) = analyzer(|_| {}) else { return };
    // The photo as I420 (chroma from each cell's top-left pixel is enough here).
    let (w, h) = (img.width, img.height);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let m = YuvMatrix::BT601;
    let (mut y, mut u, mut v) = (vec![0u8; w * h], vec![0u8; cw * ch], vec![0u8; cw * ch]);
    for py in 0..h {
        for px in 0..w {
            let s = (py * w + px) * 3;
            let [yy, uu, vv] = m.from_rgb([img.data[s], img.data[s + 1], img.data[s + 2]]);
            y[py * w + px] = yy;
            if px % 2 == 0 && py % 2 == 0 {
                u[(py / 2) * cw + px / 2] = uu;
                v[(py / 2) * cw + px / 2] = vv;
            }
        }
    }
    let mut va = VideoAnalyzer::new(a);
    let p = VideoParams::per_frame(Default::default());
    let (mut faces, mut ended) = (Vec::with_capacity(64), Vec::with_capacity(64));
    let (mut overlay, template, style) = (Overlay::new(), LabelTemplate::default(), OverlayStyle::default());
    // The element's own letterboxer fills half of the rows on a helper thread (with more than one thread).
    let mut lb = Letterboxer::parallel();
    // Each frame starts from the clean photo: the overlay drawn into the previous one could hide a face (a label
    // box over a neighbour) and change what the detector sees.
    let (y0, u0, v0) = (y.clone(), u.clone(), v.clone());
    let mut step = |i: u64, y: &mut Vec<u8>, u: &mut Vec<u8>, v: &mut Vec<u8>| {
        y.copy_from_slice(&y0);
        u.copy_from_slice(&u0);
        v.copy_from_slice(&v0);
        let stats = {
            let frame = FrameRef::yuv([y, u, v], [w, cw, cw], w, h, YuvLayout::I420, m).unwrap();
            lb.run(&frame, 640);
            va.process(&frame, i, Some(i), &p, &mut faces, &mut ended).unwrap()
        };
        let (_, pure) = count(|| {
            let mut f = FrameMut::yuv([y, u, v], [w, cw, cw], w, h, YuvLayout::I420, m).unwrap();
            overlay.draw(&mut f, &faces, &template, &style);
        });
        (stats, faces.len(), pure)
    };
    for i in 0..3 {
        step(i, &mut y, &mut u, &mut v);
    }
    let mut per_frame = Vec::new();
    for i in 3..8 {
        let (n, (stats, found, _)) = count(|| step(i, &mut y, &mut u, &mut v));
        assert_eq!(found, 6, "the six faces of t1.jpg in I420");
        per_frame.push((n, 1 + stats.frame.age_runs + stats.frame.emotion_runs));
    }
    eprintln!("FIGURES allocations per warm I420 frame (6 faces): {per_frame:?}");
    for (n, calls) in per_frame {
        assert!(n <= 16 * calls as u64, "{n} allocations for {calls} ONNX Runtime calls");
    }
    let (n, _) = count(|| {
        lb.run(&FrameRef::yuv([&y, &u, &v], [w, cw, cw], w, h, YuvLayout::I420, m).unwrap(), 640);
        let mut f = FrameMut::yuv([&mut y, &mut u, &mut v], [w, cw, cw], w, h, YuvLayout::I420, m).unwrap();
        overlay.draw(&mut f, &faces, &template, &style);
    });
    assert_eq!(n, 0, "YUV letterbox (two threads) and overlay allocate nothing once warm");
}
