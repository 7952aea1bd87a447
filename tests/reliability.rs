// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reliability: bad input, faults and long runs never break a pipeline. Caps renegotiation, extreme frame sizes,
//! wrong buffer sizes, gaps and seeks, state cycles with model swaps, crowds beyond max-faces, property changes
//! from another thread, models that output NaN, unwritable and full results files, a soak and many pipelines at
//! once. docs/RELIABILITY.md lists what each test proves and the figures measured.
//!
//! Tests that measure the process (memory, threads) run alone in a child process of this test binary
//! (`common::run_isolated`), so that the other tests running in parallel do not disturb the figures.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::glib;
use gst::prelude::*;
use gst_video::VideoFormat;
use gstfaceanalyze::frame::PixelLayout;
use gstfaceanalyze::meta;

const OBAMA: &str = "images/face_recognition/examples/obama.jpg";
const GROUP: &str = "images/group_photo/t1.jpg";
const STAGE: &str = "videos/stage_360p.mp4";

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn format_of(layout: PixelLayout) -> VideoFormat {
    VideoFormat::from_string(layout.name())
}

fn caps(layout: PixelLayout, w: usize, h: usize) -> gst::Caps {
    gst_video::VideoInfo::builder(format_of(layout), w as u32, h as u32)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
        .to_caps()
        .unwrap()
}

/// A buffer of `bytes` holding a `w` x `h` frame of `layout` with row `stride`, described by a VideoMeta.
fn frame_buffer(
    bytes: Vec<u8>,
    layout: PixelLayout,
    w: usize,
    h: usize,
    stride: usize,
    pts: Option<u64>,
) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(bytes);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(pts.map(gst::ClockTime::from_nseconds));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            format_of(layout),
            w as u32,
            h as u32,
            &[0],
            &[stride as i32],
        )
        .unwrap();
    }
    buf
}

/// `img` as one frame of `layout` with `pad` bytes of row padding.
fn photo_buffer(img: &Rgb, layout: PixelLayout, pad: usize, pts: Option<u64>) -> gst::Buffer {
    let (bytes, stride) = img.to_layout(layout, pad);
    frame_buffer(bytes, layout, img.width, img.height, stride, pts)
}

/// `img` resized to `w` x `h`.
fn scaled(img: &Rgb, w: usize, h: usize) -> Rgb {
    let src = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone()).unwrap();
    let r = image::imageops::resize(&src, w as u32, h as u32, image::imageops::FilterType::Triangle);
    Rgb { data: r.into_raw(), width: w, height: h }
}

/// A `w` x `h` canvas filled with one grey.
fn canvas(w: usize, h: usize, grey: u8) -> Rgb {
    Rgb { data: vec![grey; w * h * 3], width: w, height: h }
}

/// Copies `src` into `dst` with its top-left corner at (x, y), clipped to `dst`.
fn paste(dst: &mut Rgb, src: &Rgb, x: usize, y: usize) {
    for row in 0..src.height.min(dst.height.saturating_sub(y)) {
        let n = src.width.min(dst.width.saturating_sub(x)) * 3;
        let d = ((y + row) * dst.width + x) * 3;
        let s = row * src.width * 3;
        dst.data[d..d + n].copy_from_slice(&src.data[s..s + n]);
    }
}

/// Pseudo-random bytes (xorshift), deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Errors, warnings and EOS seen on a bus.
#[derive(Debug, Default)]
struct Msgs {
    eos: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
    timed_out: bool,
}

impl Msgs {
    /// Records `msg`; true when it ends the stream (EOS or error).
    fn take(&mut self, msg: &gst::Message) -> bool {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                self.eos = true;
                true
            }
            gst::MessageView::Error(e) => {
                self.errors.push(format!("{} ({:?})", e.error(), e.debug()));
                true
            }
            gst::MessageView::Warning(w) => {
                self.warnings.push(format!("{} ({:?})", w.error(), w.debug()));
                false
            }
            _ => false,
        }
    }

    fn drain(&mut self, bus: &gst::Bus) {
        while let Some(m) = bus.pop() {
            self.take(&m);
        }
    }

    fn warnings_with(&self, text: &str) -> usize {
        self.warnings.iter().filter(|w| w.contains(text)).count()
    }
}

/// Waits on `bus` until EOS or an error, at most `secs`.
fn wait_end(bus: &gst::Bus, secs: u64, msgs: &mut Msgs) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if Instant::now() >= deadline {
            msgs.timed_out = true;
            return;
        }
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100))
            && msgs.take(&m)
        {
            return;
        }
    }
}

/// Plays `p` until EOS or an error (at most `secs`), then sets it to NULL.
fn play_to_end(p: &gst::Element, secs: u64) -> Msgs {
    let bus = p.bus().unwrap();
    let mut msgs = Msgs::default();
    if p.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus. (Going down can fail too when an element refuses every transition, e.g. after
        // a panic.)
        msgs.drain(&bus);
        let _ = p.set_state(gst::State::Null);
        return msgs;
    }
    wait_end(&bus, secs, &mut msgs);
    p.set_state(gst::State::Null).unwrap();
    msgs.drain(&bus);
    msgs
}

/// Sets a pipeline to NULL when dropped, also when a test fails half-way (a PLAYING pipeline must not be
/// disposed).
struct NullOnDrop(gst::Element);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn launch(desc: &str) -> gst::Element {
    init_gst();
    gst::parse::launch(desc).unwrap_or_else(|e| panic!("{desc}: {e}"))
}

/// A Harness around `faceanalyze` on the CPU with one thread, `props` applied, and a bus to read messages from.
///
/// The properties are set before the Harness wraps the element: the Harness starts it at once, and READY-only
/// properties set afterwards are ignored.
fn harness(props: &[(&str, &str)]) -> (gst_check::Harness, gst::Bus) {
    init_gst();
    let e = gst::ElementFactory::make("faceanalyze").build().unwrap();
    e.set_property_from_str("execution-provider", "cpu");
    e.set_property("threads", 1u32);
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    let h = gst_check::Harness::with_element(&e, Some("sink"), Some("src"));
    (h, bus)
}

fn has_property(e: &gst::Element, name: &str) -> bool {
    e.find_property(name).is_some()
}

/// The frame records (not track summaries) of a JSON Lines results file; every line must parse.
fn frame_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .filter(|v| v.get("frame").is_some())
        .collect()
}

type Rect = (f64, f64, f64, f64);

fn iou(a: Rect, b: Rect) -> f64 {
    let iw = ((a.0 + a.2).min(b.0 + b.2) - a.0.max(b.0)).max(0.0);
    let ih = ((a.1 + a.3).min(b.1 + b.3) - a.1.max(b.1)).max(0.0);
    let inter = iw * ih;
    let union = a.2 * a.3 + b.2 * b.3 - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn rect_f(r: (u32, u32, u32, u32)) -> Rect {
    (r.0 as f64, r.1 as f64, r.2 as f64, r.3 as f64)
}

/// Checks every ROI meta of `buf` lies inside a `w` x `h` frame and its normalised box agrees with that size.
fn check_rois_inside(buf: &gst::BufferRef, w: u32, h: u32, what: &str) {
    for m in buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        let (x, y, rw, rh) = m.rect();
        assert!(rw > 0 && rh > 0 && x + rw <= w && y + rh <= h, "{what}: ROI {:?} outside {w}x{h}", m.rect());
        let det = m.param(meta::DETECTION).expect("detection params");
        let xmax = det.get::<f64>(meta::F_X_MAX).unwrap();
        let ymax = det.get::<f64>(meta::F_Y_MAX).unwrap();
        let xmin = det.get::<f64>(meta::F_X_MIN).unwrap();
        assert!((0.0..=1.0).contains(&xmax) && (0.0..=1.0).contains(&ymax), "{what}: {det}");
        // The normalised box is the pixel box over the new size (within a pixel of rounding).
        assert!((xmin * w as f64 - x as f64).abs() <= 1.01, "{what}: x_min {xmin} vs rect x {x} of {w}");
        assert!((xmax * w as f64 - (x + rw) as f64).abs() <= 1.01, "{what}: x_max {xmax} vs {:?}", m.rect());
    }
}

/// The face box of the whole obama photo as the element reports it (one face).
fn obama_reference(img: &Rgb) -> Rect {
    let (mut h, _bus) = harness(&[]);
    h.set_src_caps(caps(PixelLayout::Rgb, img.width, img.height));
    h.play();
    h.push(photo_buffer(img, PixelLayout::Rgb, 0, Some(0))).unwrap();
    let out = h.pull().unwrap();
    let faces = meta::faces_from_buffer(&out);
    assert_eq!(faces.len(), 1, "the portrait has one face: {faces:?}");
    rect_f(faces[0].rect)
}

/// The reference face box after scaling the photo by `s` and placing it at (ox, oy).
fn mapped(r: Rect, s: f64, ox: f64, oy: f64) -> Rect {
    (r.0 * s + ox, r.1 * s + oy, r.2 * s, r.3 * s)
}

/// A pad probe on `pad` that counts buffers and records each buffer's face count.
fn count_faces_probe(pad: &gst::Pad) -> Arc<Mutex<Vec<usize>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer() {
            s.lock().unwrap().push(meta::faces_from_buffer(buf).len());
        }
        gst::PadProbeReturn::Ok
    });
    seen
}

fn small_obama() -> Option<Rgb> {
    let img = photo(OBAMA)?;
    Some(scaled(&img, 228, 284))
}

fn obama_pipeline_head(w: usize, h: usize, format: &str) -> Option<String> {
    let p = data_file(OBAMA)?;
    Some(format!(
        "filesrc location={} ! jpegdec ! videoconvert ! videoscale ! video/x-raw,format={format},width={w},height={h}",
        p.display()
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Caps renegotiation
// ---------------------------------------------------------------------------------------------------------------

/// (width, height, layout, row padding, photo height, photo x, photo y)
const RENEGOTIATIONS: [(usize, usize, PixelLayout, usize, usize, usize, usize); 4] = [
    (640, 360, PixelLayout::Bgrx, 8, 320, 300, 20),
    (1281, 721, PixelLayout::Rgb, 3, 640, 90, 50),
    (320, 240, PixelLayout::Abgr, 0, 220, 10, 10),
    (640, 360, PixelLayout::Bgrx, 8, 320, 20, 30),
];

/// Pushes the obama photo through caps changes (size, format and stride together) and checks every frame's face
/// box against where the photo was placed in that frame. Returns the failures instead of panicking on the first.
fn renegotiate(extra: &[(&str, &str)], frames_per_caps: usize) -> Option<Vec<String>> {
    let img = photo(OBAMA)?;
    if !models_available() {
        return None;
    }
    let reference = obama_reference(&img);
    let dir = scratch_dir("renegotiate");
    let json = dir.join("r.jsonl");
    let json_s = json.display().to_string();
    let mut props = vec![("results-location", json_s.as_str())];
    props.extend_from_slice(extra);
    let (mut h, bus) = harness(&props);
    let mut failures = Vec::new();
    let mut sizes = Vec::new();
    let mut pts = 0u64;
    let mut started = false;
    for (i, &(w, hgt, layout, pad, ph, px, py)) in RENEGOTIATIONS.iter().enumerate() {
        let s = ph as f64 / img.height as f64;
        let pw = (img.width as f64 * s).round() as usize;
        let mut frame = canvas(w, hgt, 90);
        paste(&mut frame, &scaled(&img, pw, ph), px, py);
        let expected = mapped(reference, s, px as f64, py as f64);
        h.set_src_caps(caps(layout, w, hgt));
        if !started {
            h.play();
            started = true;
        }
        for k in 0..frames_per_caps {
            h.push(photo_buffer(&frame, layout, pad, Some(pts))).unwrap();
            pts += 40_000_000;
            let out = h.pull().unwrap();
            sizes.push((w, hgt));
            check_rois_inside(&out, w as u32, hgt as u32, &format!("caps {i} {w}x{hgt} {layout:?} frame {k}"));
            let faces = meta::faces_from_buffer(&out);
            if faces.len() != 1 {
                failures.push(format!("caps {i} {w}x{hgt} frame {k}: {} faces, expected 1", faces.len()));
                continue;
            }
            let got = rect_f(faces[0].rect);
            let v = iou(got, expected);
            if v < 0.5 {
                failures.push(format!(
                    "caps {i} {w}x{hgt} {layout:?} frame {k}: face box {got:?} is not around the placed face \
                     {expected:?} (IoU {v:.2})"
                ));
            }
        }
    }
    let mut msgs = Msgs::default();
    msgs.drain(&bus);
    assert!(msgs.errors.is_empty(), "{:?}", msgs.errors);
    drop(h);
    // The results file has one record per frame with that frame's own size.
    let records = frame_records(&json);
    assert_eq!(records.len(), sizes.len());
    for (r, (w, hgt)) in records.iter().zip(&sizes) {
        assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(*w as u64), Some(*hgt as u64)), "{r}");
        for f in r["faces"].as_array().unwrap() {
            let b: Vec<f64> = f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[0] + b[2] <= *w as f64 + 0.05 && b[1] + b[3] <= *hgt as f64 + 0.05);
        }
    }
    Some(failures)
}

#[test]
fn caps_renegotiation_mid_stream_gives_boxes_for_the_new_size() {
    let Some(failures) = renegotiate(&[], 3) else { return };
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn caps_renegotiation_with_inference_interval_drops_old_tracks() {
    init_gst();
    if !has_property(&gst::ElementFactory::make("faceanalyze").build().unwrap(), "inference-interval") {
        return skip("faceanalyze has no inference-interval property");
    }
    let Some(failures) = renegotiate(&[("inference-interval", "5")], 3) else { return };
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Frame sizes and strides
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn tiny_odd_and_padded_frames_in_every_format_pass_through() {
    init_gst();
    if !models_available() {
        return;
    }
    let sizes = [(1usize, 1usize), (2, 1), (1, 3), (16, 16), (33, 17), (641, 361)];
    let mut rng = Rng(0x5eed);
    for layout in PixelLayout::ALL {
        let (mut h, bus) = harness(&[]);
        let e = h.element().unwrap();
        let mut pts = 0u64;
        let mut started = false;
        for (w, hgt) in sizes {
            h.set_src_caps(caps(layout, w, hgt));
            if !started {
                h.play();
                started = true;
            }
            for (variant, det_size) in [(0, 640u32), (1, 0), (2, 1), (3, 64)] {
                e.set_property("detection-size", det_size);
                let buf = match variant {
                    // GStreamer's default strides, no VideoMeta: the buffer is exactly the caps' size.
                    0 => {
                        let info = gst_video::VideoInfo::from_caps(&caps(layout, w, hgt)).unwrap();
                        let mut b = gst::Buffer::from_mut_slice(rng.bytes(info.size()));
                        b.get_mut().unwrap().set_pts(gst::ClockTime::from_nseconds(pts));
                        b
                    }
                    // Tight rows (stride = width * bpp, often not a multiple of 4) and padded rows.
                    v => {
                        let pad = [0, 0, 1, 61][v];
                        let stride = w * layout.bpp() + pad;
                        frame_buffer(rng.bytes(stride * hgt), layout, w, hgt, stride, Some(pts))
                    }
                };
                let before = buf.map_readable().unwrap().to_vec();
                h.push(buf).unwrap_or_else(|e| panic!("{layout:?} {w}x{hgt} variant {variant}: {e:?}"));
                let out = h.pull().unwrap();
                assert_eq!(out.pts(), Some(gst::ClockTime::from_nseconds(pts)));
                check_rois_inside(&out, w as u32, hgt as u32, &format!("{layout:?} {w}x{hgt}"));
                if meta::faces_from_buffer(&out).is_empty() {
                    assert_eq!(out.map_readable().unwrap().as_slice(), &before[..], "no face, no change");
                }
                pts += 40_000_000;
            }
        }
        let mut msgs = Msgs::default();
        msgs.drain(&bus);
        assert!(msgs.errors.is_empty(), "{layout:?}: {:?}", msgs.errors);
    }
}

#[test]
fn an_8k_frame_finds_the_face_in_bounded_time_and_memory() {
    if !isolated("an_8k_frame_finds_the_face_in_bounded_time_and_memory") {
        if data_file(OBAMA).is_some() && models_available() {
            let out = run_isolated("an_8k_frame_finds_the_face_in_bounded_time_and_memory", &[]);
            for l in out.lines().filter_map(|l| l.find("FIGURES").map(|i| &l[i..])) {
                eprintln!("{l}");
            }
        }
        return;
    }
    let img = photo(OBAMA).unwrap();
    let reference = obama_reference(&img);
    let (w, hgt) = (7680usize, 4320usize);
    let (ph, px, py) = (2000usize, 4100usize, 1500usize);
    let s = ph as f64 / img.height as f64;
    let mut frame = canvas(w, hgt, 120);
    paste(&mut frame, &scaled(&img, (img.width as f64 * s).round() as usize, ph), px, py);
    let expected = mapped(reference, s, px as f64, py as f64);
    let (mut h, bus) = harness(&[]);
    h.set_src_caps(caps(PixelLayout::Bgrx, w, hgt));
    h.play();
    let buf = photo_buffer(&frame, PixelLayout::Bgrx, 64, Some(0));
    drop(frame);
    let rss0 = rss_kib();
    let t = Instant::now();
    h.push(buf).unwrap();
    let out = h.pull().unwrap();
    let elapsed = t.elapsed();
    let rss1 = rss_kib();
    let faces = meta::faces_from_buffer(&out);
    println!(
        "FIGURES 8k: {} faces in {:.2} s, RSS {} MiB -> {} MiB",
        faces.len(),
        elapsed.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024
    );
    assert_eq!(faces.len(), 1, "{faces:?}");
    let got = rect_f(faces[0].rect);
    assert!(iou(got, expected) > 0.5, "{got:?} vs {expected:?}");
    // Hang guards, not speed claims: one 8K frame is letterboxed to 640 pixels before inference.
    assert!(elapsed < Duration::from_secs(120), "{elapsed:?}");
    // The element maps the frame in place: it must not copy a 133 MB frame or allocate per-pixel buffers.
    assert!(rss1.saturating_sub(rss0) < 300 * 1024, "RSS grew {} MiB", (rss1 - rss0) / 1024);
    let mut msgs = Msgs::default();
    msgs.drain(&bus);
    assert!(msgs.errors.is_empty(), "{:?}", msgs.errors);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad buffers
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn buffer_smaller_than_its_caps_is_an_error_and_a_restart_recovers() {
    init_gst();
    if !models_available() {
        return;
    }
    // Harness: the push fails with a flow error and the element posts an error.
    let (mut h, bus) = harness(&[]);
    h.set_src_caps(caps(PixelLayout::Rgb, 320, 240));
    h.play();
    let small = gst::Buffer::from_mut_slice(vec![7u8; 1000]);
    assert_eq!(h.push(small), Err(gst::FlowError::Error));
    let mut msgs = Msgs::default();
    msgs.drain(&bus);
    assert_eq!(msgs.errors.len(), 1, "{msgs:?}");
    assert!(msgs.errors[0].contains("1000 bytes") && msgs.errors[0].contains("320x240"), "{:?}", msgs.errors);
    // A buffer larger than the caps is fine (trailing bytes ignored).
    let mut big = gst::Buffer::from_mut_slice(vec![7u8; 320 * 240 * 3 + 4096]);
    big.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    h.push(big).unwrap();
    h.pull().unwrap();
    drop(h);

    // A real pipeline: the error reaches the application; after NULL and PLAYING again the same element works.
    let p = launch(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width=320,height=240,framerate=25/1 \
         ! faceanalyze name=fa threads=1 execution-provider=cpu ! appsink name=sink sync=false",
    )
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = p.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let _ = src.push_buffer(gst::Buffer::from_mut_slice(vec![1u8; 999]));
    let mut msgs = Msgs::default();
    wait_end(&bus, 30, &mut msgs);
    assert_eq!(msgs.errors.len(), 1, "{msgs:?}");
    assert!(msgs.errors[0].contains("does not match the caps"), "{:?}", msgs.errors);
    p.set_state(gst::State::Null).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    for i in 0..3u64 {
        let mut b = gst::Buffer::from_mut_slice(vec![(i * 40) as u8; 320 * 240 * 3]);
        b.get_mut().unwrap().set_pts(gst::ClockTime::from_mseconds(40 * i));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut n = 0;
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        assert_eq!(s.buffer().unwrap().size(), 320 * 240 * 3);
        n += 1;
    }
    let mut msgs = Msgs::default();
    wait_end(&bus, 30, &mut msgs);
    assert!(msgs.eos && msgs.errors.is_empty(), "{msgs:?}");
    assert_eq!(n, 3, "every buffer after the restart comes out");
    p.set_state(gst::State::Null).unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Gaps, discontinuities, missing timestamps, seeks, empty streams
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn gaps_discont_and_missing_timestamps_pass_through() {
    let Some(img) = small_obama() else { return };
    if !models_available() {
        return;
    }
    let dir = scratch_dir("gaps");
    let json = dir.join("g.jsonl");
    let (mut h, bus) = harness(&[("results-location", &json.display().to_string()), ("post-messages", "true")]);
    h.set_src_caps(caps(PixelLayout::Rgb, img.width, img.height));
    h.play();
    let ms = |v: u64| v * 1_000_000;
    // pts 0; a GAP for 40..80 ms; DISCONT at 200 ms; no timestamps at all; a timestamp going backwards.
    let plan: [(Option<u64>, bool); 5] =
        [(Some(0), false), (Some(ms(200)), true), (None, false), (None, true), (Some(ms(120)), false)];
    let mut outs = Vec::new();
    for (i, &(pts, discont)) in plan.iter().enumerate() {
        if i == 1 {
            assert!(
                h.push_event(
                    gst::event::Gap::builder(gst::ClockTime::from_mseconds(40))
                        .duration(gst::ClockTime::from_mseconds(40))
                        .build()
                )
            );
        }
        let mut buf = photo_buffer(&img, PixelLayout::Rgb, 0, pts);
        {
            let b = buf.get_mut().unwrap();
            if pts.is_none() {
                b.set_dts(gst::ClockTime::NONE);
                b.set_duration(gst::ClockTime::NONE);
            }
            if discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        h.push(buf).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.pts().map(|t| t.nseconds()), pts, "timestamps are passed on unchanged");
        assert_eq!(out.flags().contains(gst::BufferFlags::DISCONT), discont);
        outs.push(meta::faces_from_buffer(&out).len());
    }
    assert!(outs.iter().all(|&n| n == 1), "the face is found in every frame: {outs:?}");
    // The gap went downstream as an event.
    let mut gap = false;
    while let Some(ev) = h.try_pull_event() {
        gap |= ev.type_() == gst::EventType::Gap;
    }
    assert!(gap, "GAP event forwarded");
    // Per-frame messages: the frames without a timestamp have none.
    let mut stamps = Vec::new();
    let mut msgs = Msgs::default();
    while let Some(m) = bus.pop() {
        msgs.take(&m);
        if let gst::MessageView::Element(e) = m.view()
            && let Some(s) = e.structure().filter(|s| s.name() == meta::MESSAGE)
        {
            stamps.push(s.get::<u64>("timestamp").ok());
        }
    }
    assert!(msgs.errors.is_empty() && msgs.warnings.is_empty(), "{msgs:?}");
    assert_eq!(stamps, plan.iter().map(|p| p.0).collect::<Vec<_>>());
    drop(h);
    let records = frame_records(&json);
    let pts: Vec<Option<u64>> = records.iter().map(|r| r["pts"].as_u64()).collect();
    assert_eq!(pts, plan.iter().map(|p| p.0).collect::<Vec<_>>(), "one record per buffer, none for the gap");
    assert!(records.iter().all(|r| r["pts"].is_u64() || r["pts"].is_null()));
}

#[test]
fn flushing_seek_on_a_real_file_then_eos() {
    init_gst();
    let Some(video) = data_file(STAGE) else { return };
    if !models_available() {
        return;
    }
    let dir = scratch_dir("seek");
    let json = dir.join("s.jsonl");
    let p = launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! faceanalyze name=fa threads=2 detection-size=320 \
         age-model=dlib results-location={} ! fakesink sync=false",
        video.display(),
        json.display()
    ));
    let fa = p.downcast_ref::<gst::Bin>().unwrap().by_name("fa").unwrap();
    // Buffers before and after the flush, with their timestamps.
    let frames = Arc::new(Mutex::new((Vec::<u64>::new(), Vec::<u64>::new())));
    let flushed = Arc::new(AtomicBool::new(false));
    {
        let (frames, flushed) = (frames.clone(), flushed.clone());
        fa.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && ev.type_() == gst::EventType::FlushStop
                {
                    flushed.store(true, Ordering::SeqCst);
                }
                if let Some(b) = info.buffer() {
                    let mut f = frames.lock().unwrap();
                    let pts = b.pts().map_or(u64::MAX, |t| t.nseconds());
                    if flushed.load(Ordering::SeqCst) { f.1.push(pts) } else { f.0.push(pts) }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let entered = Arc::new(AtomicUsize::new(0));
    {
        let entered = entered.clone();
        fa.static_pad("sink").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            entered.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    }
    let bus = p.bus().unwrap();
    let _guard = NullOnDrop(p.clone());
    p.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while frames.lock().unwrap().0.len() < 10 {
        assert!(Instant::now() < deadline, "no frames");
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(20))
            && let gst::MessageView::Error(e) = m.view()
        {
            panic!("{} {:?}", e.error(), e.debug());
        }
    }
    let fps = gst_video::VideoInfo::from_caps(&fa.static_pad("sink").unwrap().current_caps().unwrap()).unwrap().fps();
    let dur = p.query_duration::<gst::ClockTime>().expect("duration");
    let mid = dur / 2;
    p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, mid).expect("seek");
    let mut msgs = Msgs::default();
    wait_end(&bus, 180, &mut msgs);
    p.set_state(gst::State::Null).unwrap();
    assert!(msgs.eos, "EOS after the seek: {msgs:?}");
    assert!(msgs.errors.is_empty(), "{msgs:?}");
    let (before, after) = frames.lock().unwrap().clone();
    assert!(flushed.load(Ordering::SeqCst), "the flush went through the element");
    let frame_ns = 1_000_000_000 * fps.denom() as u64 / fps.numer().max(1) as u64;
    let total = (dur.nseconds() / frame_ns) as usize;
    eprintln!("{} frames before the seek, {} after (clip {total})", before.len(), after.len());
    // The decoder restarts at the keyframe before the middle (this clip: 0.85 s before it) and may pass the frames
    // before the segment start on; the element passes on whatever it gets, in order.
    let gop = 2_000_000_000;
    assert!(after.iter().all(|&t| t + gop >= mid.nseconds()), "frames after the seek start near the middle");
    assert!(after.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(after.len() <= total / 2 + (gop / frame_ns) as usize, "{} frames after the seek", after.len());
    assert!(after.len() + 5 >= total / 2 - 30, "{} frames after the seek of {total}", after.len());
    // One valid record per analysed frame (track summaries, if any, valid JSON too): every frame that went
    // downstream, plus at most the frames caught by the flush between analysis and push.
    let records = frame_records(&json).len();
    let (out, into) = (before.len() + after.len(), entered.load(Ordering::SeqCst));
    assert!(out <= records && records <= into, "{out} frames out, {records} records, {into} frames in");
}

#[test]
fn eos_without_any_buffer_leaves_an_empty_results_file() {
    init_gst();
    if !models_available() {
        return;
    }
    let dir = scratch_dir("empty");
    let json = dir.join("e.jsonl");
    let p = launch(&format!(
        "videotestsrc num-buffers=0 ! video/x-raw,width=64,height=48 ! videoconvert ! faceanalyze threads=1 \
         results-location={} ! fakesink",
        json.display()
    ));
    let msgs = play_to_end(&p, 30);
    assert!(msgs.eos && msgs.errors.is_empty() && !msgs.timed_out, "{msgs:?}");
    assert!(json.exists(), "the results file is created at start");
    assert!(frame_records(&json).is_empty());
    // The same with an appsrc that ends before caps were ever set.
    let json2 = dir.join("e2.jsonl");
    let p = launch(&format!(
        "appsrc name=src format=time ! faceanalyze threads=1 results-location={} ! fakesink",
        json2.display()
    ));
    let src = p.downcast_ref::<gst::Bin>().unwrap().by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    src.end_of_stream().unwrap();
    let msgs = play_to_end(&p, 30);
    assert!(msgs.eos && msgs.errors.is_empty(), "{msgs:?}");
    assert_eq!(std::fs::read_to_string(&json2).unwrap(), "");
}

// ---------------------------------------------------------------------------------------------------------------
// State cycles and model swaps
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn thirty_state_cycles_with_model_swaps_keep_working_and_memory_flat() {
    const NAME: &str = "thirty_state_cycles_with_model_swaps_keep_working_and_memory_flat";
    if !isolated(NAME) {
        if data_file(OBAMA).is_some() && models_available() {
            let out = run_isolated(NAME, &[]);
            for l in out.lines().filter_map(|l| l.find("FIGURES").map(|i| &l[i..])) {
                eprintln!("{l}");
            }
        }
        return;
    }
    let head = obama_pipeline_head(228, 284, "BGRx").unwrap();
    let dir = scratch_dir("cycles");
    let json = dir.join("c.jsonl");
    let p = launch(&format!(
        "{head} ! imagefreeze num-buffers=2 ! faceanalyze name=fa threads=1 execution-provider=cpu \
         results-location={} ! fakesink sync=false",
        json.display()
    ));
    let fa = p.downcast_ref::<gst::Bin>().unwrap().by_name("fa").unwrap();
    let _guard = NullOnDrop(p.clone());
    let configs = [("hse", "mini"), ("dlib", "mini"), ("hse", "ensemble"), ("dlib", "ensemble"), ("hse", "big")];
    let mut rss = Vec::new();
    for cycle in 0..30 {
        let (age, emotion) = configs[(cycle / 3) % configs.len()];
        fa.set_property("age-model", age);
        fa.set_property("emotion-model", emotion);
        assert_eq!(fa.property::<String>("active-provider"), "", "cycle {cycle}: no provider before start");
        let interrupted = cycle % 3 == 2;
        if interrupted {
            // Up and straight down again, racing the streaming thread.
            p.set_state(gst::State::Playing).unwrap();
            let _ = p.state(gst::ClockTime::from_seconds(30));
            assert_eq!(fa.property::<String>("active-provider"), "cpu", "cycle {cycle}");
            p.set_state(gst::State::Null).unwrap();
        } else {
            let msgs = play_to_end(&p, 60);
            assert!(msgs.eos && msgs.errors.is_empty() && !msgs.timed_out, "cycle {cycle} {age}/{emotion}: {msgs:?}");
            let records = frame_records(&json);
            assert_eq!(records.len(), 2, "cycle {cycle}");
            for r in &records {
                let faces = r["faces"].as_array().unwrap();
                assert_eq!(faces.len(), 1, "cycle {cycle} {age}/{emotion}: {r}");
                assert!(faces[0]["age"]["value"].is_number(), "cycle {cycle} {age}: age missing: {r}");
                assert!(faces[0]["emotion"]["label"].is_string(), "cycle {cycle} {emotion}: emotion missing: {r}");
            }
        }
        assert_eq!(fa.property::<String>("active-provider"), "", "cycle {cycle}: provider cleared at stop");
        rss.push(trimmed_rss_kib());
    }
    // Leak check: the highest RSS of cycles 20..30 against that of cycles 5..15 (the same configurations), measured
    // after malloc_trim so that memory the allocator keeps cached does not count. A leaked model per start would
    // add 0.3 to 25 MB per cycle.
    let early = rss[5..15].iter().max().copied().unwrap();
    let late = rss[20..30].iter().max().copied().unwrap();
    println!(
        "FIGURES cycles: 30 NULL-PLAYING-NULL cycles, peak RSS of cycles 5-15 {} MiB, of cycles 20-30 {} MiB",
        early / 1024,
        late / 1024
    );
    assert!(late.saturating_sub(early) < 8 * 1024, "RSS grew {} KiB over 15 cycles: {rss:?}", late - early);
}

// ---------------------------------------------------------------------------------------------------------------
// A crowd beyond max-faces
// ---------------------------------------------------------------------------------------------------------------

/// A 2560x1440 frame tiled with face crops (cut out of the obama portrait and the group photo) in 80-pixel cells.
fn crowd() -> Option<Rgb> {
    let obama = photo(OBAMA)?;
    let group = photo(GROUP)?;
    let mut a = analyzer(|_| {})?;
    let mut crops = Vec::new();
    for img in [&obama, &group] {
        let mut faces = Vec::new();
        a.analyze(&img.frame(), &Default::default(), &mut faces).unwrap();
        for f in &faces {
            let b = f.detection.bbox;
            let side = b.w.max(b.h) * 1.5;
            let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
            let x0 = (cx - side / 2.0).max(0.0) as usize;
            let y0 = (cy - side / 2.0).max(0.0) as usize;
            let s = (side as usize).min(img.width - x0).min(img.height - y0);
            let mut crop = canvas(s, s, 0);
            for row in 0..s {
                let src = ((y0 + row) * img.width + x0) * 3;
                crop.data[row * s * 3..(row + 1) * s * 3].copy_from_slice(&img.data[src..src + s * 3]);
            }
            crops.push(scaled(&crop, 76, 76));
        }
    }
    assert!(crops.len() >= 5, "{} face crops", crops.len());
    let mut frame = canvas(2560, 1440, 128);
    let mut k = 0;
    for cy in 0..1440 / 80 {
        for cx in 0..2560 / 80 {
            paste(&mut frame, &crops[k % crops.len()], cx * 80 + 2, cy * 80 + 2);
            k += 1;
        }
    }
    Some(frame)
}

#[test]
fn hundreds_of_faces_are_capped_at_max_faces_with_one_warning() {
    let Some(frame) = crowd() else { return };
    for max_faces in [Some(50u32), None] {
        let mut props = vec![("detection-size", "1280"), ("age-model", "dlib")];
        let mf = max_faces.map(|m| m.to_string());
        if let Some(m) = &mf {
            props.push(("max-faces", m.as_str()));
        }
        let (mut h, bus) = harness(&props);
        let expected = h.element().unwrap().property::<u32>("max-faces") as usize;
        h.set_src_caps(caps(PixelLayout::Rgb, frame.width, frame.height));
        h.play();
        let t = Instant::now();
        for i in 0..3u64 {
            h.push(photo_buffer(&frame, PixelLayout::Rgb, 0, Some(i * 40_000_000))).unwrap();
            let out = h.pull().unwrap();
            let n = out.iter_meta::<gst_video::VideoRegionOfInterestMeta>().count();
            assert_eq!(n, expected, "frame {i}: ROI metas = max-faces");
        }
        let elapsed = t.elapsed();
        let mut msgs = Msgs::default();
        msgs.drain(&bus);
        assert!(msgs.errors.is_empty(), "{msgs:?}");
        let warned: Vec<&String> = msgs.warnings.iter().filter(|w| w.contains("max-faces")).collect();
        assert_eq!(warned.len(), 1, "warned exactly once over 3 frames: {:?}", msgs.warnings);
        // "A frame has N faces; ..."
        let found: usize = warned[0]
            .split_whitespace()
            .skip_while(|w| *w != "has")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("face count in {:?}", warned[0]));
        eprintln!("max-faces {expected}: {found} faces found, 3 frames in {:.1} s", elapsed.as_secs_f64());
        assert!(found >= 200, "the crowd has hundreds of faces, found {found}");
        assert!(elapsed < Duration::from_secs(300), "hang guard: {elapsed:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Properties from another thread
// ---------------------------------------------------------------------------------------------------------------

/// A valid random value for a writable property of the element (bounded where a value would only cost time),
/// as a value or, for enums, as a nick.
enum Setting {
    Value(glib::Value),
    Nick(String),
}

fn random_setting(pspec: &glib::ParamSpec, rng: &mut Rng) -> Option<Setting> {
    let name = pspec.name();
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt>() {
        let max = match name {
            // 4096 is valid but makes one frame cost seconds; the range is covered by the fuzz tests.
            "detection-size" => 800,
            "inference-interval" | "reclassify-interval" | "track-timeout" => p.maximum().min(50),
            _ => p.maximum(),
        };
        let lo = p.minimum();
        return Some(Setting::Value((lo + rng.below((max - lo) as u64 + 1) as u32).to_value()));
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecFloat>() {
        let v = p.minimum() as f64 + rng.unit() * (p.maximum() as f64 - p.minimum() as f64);
        return Some(Setting::Value((v as f32).to_value()));
    }
    if pspec.downcast_ref::<glib::ParamSpecBoolean>().is_some() {
        return Some(Setting::Value((rng.below(2) == 1).to_value()));
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecEnum>() {
        let class = p.enum_class();
        let values = class.values();
        return Some(Setting::Nick(values[rng.below(values.len() as u64) as usize].nick().to_string()));
    }
    if pspec.downcast_ref::<glib::ParamSpecString>().is_some() {
        let label = ["{age} {emotion}", "", "{age_range} {score} {id}", "{nonsense}", "{", "}}{{", "{gender}y"];
        let v = match name {
            "label-format" => label[rng.below(label.len() as u64) as usize].to_string(),
            // READY-only: ignored while PLAYING, whatever they say.
            _ => format!("/nonexistent/{}", rng.next()),
        };
        return Some(Setting::Value(v.to_value()));
    }
    None
}

#[test]
fn properties_hammered_from_another_thread_while_playing() {
    init_gst();
    let Some(head) = obama_pipeline_head(228, 284, "BGRx") else { return };
    if !models_available() {
        return;
    }
    let p = launch(&format!(
        "{head} ! imagefreeze ! faceanalyze name=fa threads=1 execution-provider=cpu ! fakesink name=sink sync=false"
    ));
    let fa = p.downcast_ref::<gst::Bin>().unwrap().by_name("fa").unwrap();
    // Per output frame: (faces, any emotion, pixels changed by the element).
    let seen = Arc::new(Mutex::new(Vec::<(usize, bool, bool)>::new()));
    let input_hash = Arc::new(Mutex::new(0u64));
    {
        let ih = input_hash.clone();
        fa.static_pad("sink").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                *ih.lock().unwrap() = fnv(&b.map_readable().unwrap());
            }
            gst::PadProbeReturn::Ok
        });
        let (ih, s) = (input_hash.clone(), seen.clone());
        fa.static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                let faces = meta::faces_from_buffer(b);
                let changed = fnv(&b.map_readable().unwrap()) != *ih.lock().unwrap();
                s.lock().unwrap().push((faces.len(), faces.iter().any(|f| f.emotion.is_some()), changed));
            }
            gst::PadProbeReturn::Ok
        });
    }
    let bus = p.bus().unwrap();
    let _guard = NullOnDrop(p.clone());
    p.set_state(gst::State::Playing).unwrap();
    let mut msgs = Msgs::default();

    // Every writable property of the element, changed in a loop from two threads while frames flow.
    let stop = Arc::new(AtomicBool::new(false));
    let sets = Arc::new(AtomicUsize::new(0));
    let pspecs: Vec<glib::ParamSpec> = fa
        .list_properties()
        .iter()
        .filter(|p| p.owner_type() == fa.type_() && p.flags().contains(glib::ParamFlags::WRITABLE))
        .cloned()
        .collect();
    assert!(pspecs.len() >= 20, "{} writable properties", pspecs.len());
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (fa, stop, sets, pspecs) = (fa.clone(), stop.clone(), sets.clone(), pspecs.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                while !stop.load(Ordering::SeqCst) {
                    for ps in &pspecs {
                        match random_setting(ps, &mut rng) {
                            Some(Setting::Value(v)) => fa.set_property_from_value(ps.name(), &v),
                            Some(Setting::Nick(n)) => fa.set_property_from_str(ps.name(), &n),
                            None => continue,
                        }
                        let _ = fa.property_value(ps.name());
                        sets.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let frames_at_start = seen.lock().unwrap().len();
    while t0.elapsed() < Duration::from_secs(6) {
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
            msgs.take(&m);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("setter thread panicked");
    }
    let frames_hammered = seen.lock().unwrap().len() - frames_at_start;
    eprintln!("{} property sets while {frames_hammered} frames flowed", sets.load(Ordering::Relaxed));
    assert!(msgs.errors.is_empty(), "{msgs:?}");
    assert!(frames_hammered > 0, "frames kept flowing while properties changed");

    // Back to a known configuration; faces are found again.
    for (k, v) in [
        ("detection-size", "320"),
        ("threshold", "0.6"),
        ("nms-threshold", "0.3"),
        ("min-face-size", "16"),
        ("max-faces", "64"),
        ("draw", "true"),
        ("blur-faces", "false"),
        ("analyze-age", "true"),
        ("analyze-emotion", "true"),
        ("label-format", "{age} {emotion}"),
        ("post-messages", "false"),
    ] {
        fa.set_property_from_str(k, v);
    }
    for k in ["inference-interval", "reclassify-interval"] {
        if has_property(&fa, k) {
            fa.set_property(k, 1u32);
        }
    }
    let wait_frames = |n: usize| {
        let target = seen.lock().unwrap().len() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "frames stopped flowing (deadlock?)");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_frames(3);
    let c = seen.lock().unwrap().len();
    wait_frames(3);
    assert!(seen.lock().unwrap()[c..].iter().all(|s| s.0 == 1 && s.2), "face found and drawn again");

    // READY-only properties are ignored while PLAYING.
    for k in ["results-location", "age-model", "emotion-model", "model-dir", "detector-model", "trt-cache-dir"] {
        let before = fa.property::<Option<String>>(k);
        fa.set_property(k, "/somewhere/else.onnx");
        assert_eq!(fa.property::<Option<String>>(k), before, "{k} changed while PLAYING");
    }
    let threads_before = fa.property::<u32>("threads");
    fa.set_property("threads", 7u32);
    assert_eq!(fa.property::<u32>("threads"), threads_before);
    fa.set_property_from_str("execution-provider", "cuda");
    assert_eq!(
        fa.property::<gstfaceanalyze::ExecutionProvider>("execution-provider"),
        gstfaceanalyze::ExecutionProvider::Cpu
    );

    // PLAYING properties take effect at the next frame boundary: at most the one frame in flight still has the
    // old value.
    let switch = |k: &str, v: &str| {
        fa.set_property_from_str(k, v);
        let c = seen.lock().unwrap().len();
        wait_frames(4);
        seen.lock().unwrap()[c + 1..].to_vec()
    };
    let after = switch("threshold", "1.0");
    assert!(after.iter().all(|s| s.0 == 0), "threshold=1.0 leaves no face: {after:?}");
    let after = switch("threshold", "0.6");
    assert!(after.iter().all(|s| s.0 == 1 && s.2), "faces back and drawn: {after:?}");
    let after = switch("draw", "false");
    assert!(after.iter().all(|s| s.0 == 1 && !s.2), "draw=false leaves the pixels alone: {after:?}");
    let after = switch("analyze-emotion", "false");
    assert!(after.iter().all(|s| s.0 == 1 && !s.1), "analyze-emotion=false: no emotion: {after:?}");

    // EOS still goes through: no deadlock. (imagefreeze ignores an EOS sent to the pipeline, so it goes to the
    // element's sink pad, serialised with the streaming thread.)
    assert!(fa.static_pad("sink").unwrap().send_event(gst::event::Eos::new()));
    wait_end(&bus, 60, &mut msgs);
    assert!(msgs.eos && !msgs.timed_out && msgs.errors.is_empty(), "{msgs:?}");
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn analyze_flags_apply_on_frames_between_detections() {
    init_gst();
    let Some(img) = small_obama() else { return };
    if !models_available() {
        return;
    }
    let (mut h, _bus) = harness(&[]);
    let e = h.element().unwrap();
    if !has_property(&e, "inference-interval") {
        return skip("faceanalyze has no inference-interval property");
    }
    e.set_property("inference-interval", 3u32);
    e.set_property("analyze-gender", true);
    h.set_src_caps(caps(PixelLayout::Rgb, img.width, img.height));
    h.play();
    let mut pts = 0;
    let mut push = |h: &mut gst_check::Harness| {
        h.push(photo_buffer(&img, PixelLayout::Rgb, 0, Some(pts))).unwrap();
        pts += 40_000_000;
        let out = h.pull().unwrap();
        let metas: Vec<(bool, bool, bool)> = out
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| {
                let age = m.param(meta::AGE);
                (age.is_some(), m.param(meta::EMOTION).is_some(), age.is_some_and(|a| a.has_field(meta::F_GENDER_MALE)))
            })
            .collect();
        metas
    };
    for _ in 0..4 {
        assert_eq!(push(&mut h), vec![(true, true, true)]);
    }
    e.set_property("analyze-age", false);
    e.set_property("analyze-emotion", false);
    e.set_property("analyze-gender", false);
    let got: Vec<_> = (0..6).map(|_| push(&mut h)).collect();
    assert!(got.iter().all(|m| m == &vec![(false, false, false)]), "age/emotion still reported: {got:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Models that output NaN, infinity or out-of-range values
// ---------------------------------------------------------------------------------------------------------------

/// Per ROI meta: (has detection, has age, has emotion).
type RoiParams = Vec<(bool, bool, bool)>;

fn poison_run(model_prop: &str, file: &std::path::Path) -> Option<(RoiParams, Msgs)> {
    let img = small_obama()?;
    if !models_available() {
        return None;
    }
    let (mut h, bus) = harness(&[(model_prop, &file.display().to_string()), ("post-messages", "false")]);
    h.set_src_caps(caps(PixelLayout::Rgb, img.width, img.height));
    h.play();
    let mut rois = Vec::new();
    for i in 0..6u64 {
        h.push(photo_buffer(&img, PixelLayout::Rgb, 0, Some(i * 40_000_000))).unwrap();
        let out = h.pull().unwrap();
        for m in out.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
            rois.push((
                m.param(meta::DETECTION).is_some(),
                m.param(meta::AGE).is_some(),
                m.param(meta::EMOTION).is_some(),
            ));
        }
    }
    let mut msgs = Msgs::default();
    msgs.drain(&bus);
    Some((rois, msgs))
}

#[test]
fn emotion_model_producing_nan_inf_or_out_of_range_values_is_left_out_with_one_warning() {
    init_gst();
    if !models_available() {
        return;
    }
    let dir = scratch_dir("poison");
    for poison in [Poison::Nan, Poison::NegInf, Poison::AboveOne] {
        let f = dir.join(format!("emotion_{poison:?}.onnx"));
        std::fs::write(&f, poison_onnx("gray_pm1", &[-1, 64, 64, 1], &[("predictions", 7)], poison)).unwrap();
        let Some((rois, msgs)) = poison_run("emotion-model", &f) else { return };
        assert!(msgs.errors.is_empty(), "{poison:?}: the stream goes on: {msgs:?}");
        assert_eq!(rois.len(), 6, "{poison:?}: the face is still reported on every frame: {rois:?}");
        assert!(rois.iter().all(|&(d, a, e)| d && a && !e), "{poison:?}: detection and age, no emotion: {rois:?}");
        assert_eq!(msgs.warnings_with("invalid values"), 1, "{poison:?}: {:?}", msgs.warnings);
    }
}

#[test]
fn age_model_producing_nan_is_left_out_with_one_warning() {
    init_gst();
    if !models_available() {
        return;
    }
    let dir = scratch_dir("poison-age");
    let f = dir.join("age_nan.onnx");
    std::fs::write(&f, poison_onnx("images", &[-1, 3, 64, 64], &[("probabilities", 81)], Poison::Nan)).unwrap();
    let Some((rois, msgs)) = poison_run("age-model", &f) else { return };
    assert!(msgs.errors.is_empty(), "{msgs:?}");
    assert_eq!(rois.len(), 6, "{rois:?}");
    assert!(rois.iter().all(|&(d, a, e)| d && !a && e), "detection and emotion, no age: {rois:?}");
    assert_eq!(msgs.warnings_with("invalid values"), 1, "{:?}", msgs.warnings);
}

#[test]
fn emotion_model_failing_at_run_time_warns_once_and_frames_flow() {
    init_gst();
    if !models_available() {
        return;
    }
    // Declared [N, 7] (passes the signature check at start), 8 values per row at run time.
    let dir = scratch_dir("failing-model");
    let f = dir.join("emotion_wrong_width.onnx");
    std::fs::write(&f, poison_onnx_declared("gray_pm1", &[-1, 64, 64, 1], &[("predictions", 7, 8)], Poison::AboveOne))
        .unwrap();
    let Some((rois, msgs)) = poison_run("emotion-model", &f) else { return };
    assert!(msgs.errors.is_empty(), "the stream goes on: {msgs:?}");
    assert_eq!(msgs.warnings_with("Inference failed"), 1, "{:?}", msgs.warnings);
    // Frames whose analysis failed carry no results at all (the detection is dropped with them).
    eprintln!("{} ROI metas over 6 frames with a failing emotion model", rois.len());
    assert!(rois.iter().all(|&(d, _, e)| d && !e), "{rois:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Results file faults
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn results_location_that_cannot_be_created_fails_the_start() {
    init_gst();
    if !models_available() {
        return;
    }
    // Tests run as root, which ignores permission bits: /proc refuses new files for everyone.
    for path in ["/proc/faceanalyze.jsonl", "/nonexistent-folder/faces.jsonl"] {
        let p = launch(&format!(
            "videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48 ! videoconvert ! faceanalyze threads=1 \
             results-location={path} ! fakesink"
        ));
        let msgs = play_to_end(&p, 30);
        assert!(!msgs.eos, "{path}: must not run");
        assert_eq!(msgs.errors.len(), 1, "{path}: {msgs:?}");
        assert!(msgs.errors[0].contains("Cannot create results-location") && msgs.errors[0].contains(path), "{msgs:?}");
    }
}

#[test]
fn results_on_a_full_disk_warn_once_and_the_video_flows_to_eos() {
    init_gst();
    if !std::path::Path::new("/dev/full").exists() {
        return skip("/dev/full is absent");
    }
    if !models_available() {
        return;
    }
    let p = launch(
        "videotestsrc num-buffers=30 ! video/x-raw,width=64,height=48 ! videoconvert \
         ! faceanalyze name=fa threads=1 results-location=/dev/full ! fakesink sync=false",
    );
    let fa = p.downcast_ref::<gst::Bin>().unwrap().by_name("fa").unwrap();
    let seen = count_faces_probe(&fa.static_pad("src").unwrap());
    let msgs = play_to_end(&p, 60);
    assert!(msgs.eos && msgs.errors.is_empty(), "{msgs:?}");
    assert_eq!(msgs.warnings_with("Cannot write results"), 1, "{:?}", msgs.warnings);
    assert!(msgs.warnings.iter().any(|w| w.contains("/dev/full")), "{:?}", msgs.warnings);
    assert_eq!(seen.lock().unwrap().len(), 30, "every frame reached the sink");
}

// ---------------------------------------------------------------------------------------------------------------
// Soak and many pipelines
// ---------------------------------------------------------------------------------------------------------------

/// Pushes `frames` small frames (a face in 3 of every 200, else noise or flat grey) through one element with
/// `detection-size=64`, age (dlib) and emotion on, and returns (RSS after the warm-up, RSS at the end) in KiB,
/// both after malloc_trim.
fn soak(frames: u64) -> (u64, u64) {
    let img = photo(OBAMA).unwrap();
    let (w, h) = (64usize, 80usize);
    let face = scaled(&img, w, h);
    let mut shifted = canvas(w, h, 60);
    paste(&mut shifted, &scaled(&img, 56, 70), 6, 8);
    let mut rng = Rng(42);
    let noise = Rgb { data: rng.bytes(w * h * 3), width: w, height: h };
    let flat = canvas(w, h, 128);
    let dir = scratch_dir("soak");
    let json = dir.join("soak.jsonl");
    let (mut hr, bus) = harness(&[
        ("detection-size", "64"),
        ("age-model", "dlib"),
        ("min-face-size", "8"),
        ("results-location", &json.display().to_string()),
    ]);
    if has_property(&hr.element().unwrap(), "reclassify-interval") {
        // Classify every face frame, not only new tracks.
        hr.element().unwrap().set_property("reclassify-interval", 1u32);
    }
    hr.set_src_caps(caps(PixelLayout::Rgb, w, h));
    hr.play();
    let warmup = 5_000.min(frames / 4);
    let (mut rss_warm, mut with_faces) = (0, 0u64);
    let mut msgs = Msgs::default();
    let t = Instant::now();
    for i in 0..frames {
        let src = match (i % 200, i % 2) {
            (0, _) | (1, _) => &face,
            (2, _) => &shifted,
            (_, 0) => &noise,
            _ => &flat,
        };
        hr.push(photo_buffer(src, PixelLayout::Rgb, 0, Some(i * 40_000_000))).unwrap();
        let out = hr.pull().unwrap();
        with_faces += u64::from(out.iter_meta::<gst_video::VideoRegionOfInterestMeta>().count() > 0);
        if i % 1000 == 0 {
            msgs.drain(&bus);
        }
        if i + 1 == warmup {
            rss_warm = trimmed_rss_kib();
        }
        if (i + 1) % 20_000 == 0 {
            println!("soak: {} frames, RSS {} KiB, {:.1} s", i + 1, trimmed_rss_kib(), t.elapsed().as_secs_f64());
        }
    }
    let rss_end = trimmed_rss_kib();
    msgs.drain(&bus);
    assert!(msgs.errors.is_empty(), "{msgs:?}");
    drop(hr);
    let lines = std::fs::read_to_string(&json).unwrap().lines().filter(|l| l.contains("\"frame\"")).count();
    assert_eq!(lines as u64, frames, "one results line per frame");
    println!(
        "FIGURES soak: {frames} frames ({with_faces} with a face) in {:.1} s, RSS after {warmup} frames {} KiB, \
         at the end {} KiB",
        t.elapsed().as_secs_f64(),
        rss_warm,
        rss_end
    );
    assert!(with_faces >= frames / 100, "faces were found and classified ({with_faces})");
    (rss_warm, rss_end)
}

#[test]
fn soak_100k_frames_memory_flat() {
    const NAME: &str = "soak_100k_frames_memory_flat";
    if !isolated(NAME) {
        if data_file(OBAMA).is_some() && models_available() {
            let out = run_isolated(NAME, &[]);
            for l in out.lines().filter_map(|l| l.find("FIGURES").or(l.find("soak:")).map(|i| &l[i..])) {
                eprintln!("{l}");
            }
        }
        return;
    }
    let (a, b) = soak(100_000);
    assert!(b.saturating_sub(a) < 8 * 1024, "RSS grew {} KiB", b.saturating_sub(a));
}

/// Runs `n` pipelines at once to EOS; returns frames per pipeline.
fn pipelines_round(n: usize, frames: u32) -> Vec<usize> {
    let head = obama_pipeline_head(64, 80, "RGB").unwrap();
    let mut all = Vec::new();
    for _ in 0..n {
        let p = launch(&format!(
            "{head} ! imagefreeze num-buffers={frames} ! faceanalyze name=fa threads=1 execution-provider=cpu \
             detection-size=64 min-face-size=8 age-model=dlib ! fakesink sync=false"
        ));
        let fa = p.downcast_ref::<gst::Bin>().unwrap().by_name("fa").unwrap();
        let seen = count_faces_probe(&fa.static_pad("src").unwrap());
        all.push((NullOnDrop(p), seen));
    }
    for (p, _) in &all {
        p.0.set_state(gst::State::Playing).unwrap();
    }
    let mut counts = Vec::new();
    for (i, (p, seen)) in all.iter().enumerate() {
        let mut msgs = Msgs::default();
        wait_end(&p.0.bus().unwrap(), 300, &mut msgs);
        assert!(msgs.eos && msgs.errors.is_empty() && !msgs.timed_out, "pipeline {i}: {msgs:?}");
        p.0.set_state(gst::State::Null).unwrap();
        let s = seen.lock().unwrap();
        assert!(s.iter().filter(|&&f| f == 1).count() > s.len() / 2, "pipeline {i}: the face is found");
        counts.push(s.len());
    }
    drop(all);
    counts
}

#[test]
fn eight_pipelines_at_once_reach_eos_and_release_memory_and_threads() {
    const NAME: &str = "eight_pipelines_at_once_reach_eos_and_release_memory_and_threads";
    if !isolated(NAME) {
        if data_file(OBAMA).is_some() && models_available() {
            let out = run_isolated(NAME, &[]);
            for l in out.lines().filter_map(|l| l.find("FIGURES").map(|i| &l[i..])) {
                eprintln!("{l}");
            }
        }
        return;
    }
    init_gst();
    // Warm-up: ONNX Runtime loaded, GStreamer's pools populated.
    assert_eq!(pipelines_round(1, 5), vec![5]);
    // GStreamer's thread pools let idle threads go after a while: wait (at most 5 s) for the count to settle.
    let settle = |limit: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while thread_count() > limit && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        (trimmed_rss_kib(), thread_count())
    };
    let (rss0, threads0) = settle(0);
    let frames = 200;
    let t = Instant::now();
    assert_eq!(pipelines_round(8, frames), vec![frames as usize; 8]);
    let (rss1, threads1) = settle(threads0);
    assert_eq!(pipelines_round(8, frames), vec![frames as usize; 8]);
    let (rss2, threads2) = settle(threads0);
    println!(
        "FIGURES pipelines: 8 pipelines x {frames} frames, two rounds in {:.1} s; RSS {} / {} / {} KiB, threads {} / \
         {} / {} (before / after round 1 / after round 2)",
        t.elapsed().as_secs_f64(),
        rss0,
        rss1,
        rss2,
        threads0,
        threads1,
        threads2
    );
    // 8 pipelines have at least 16 streaming threads; a leak of one per pipeline would leave 8 per round.
    assert!(threads1 <= threads0 + 2, "threads left behind by round 1: {threads0} -> {threads1}");
    assert!(threads2 <= threads0 + 2, "threads left behind by round 2: {threads0} -> {threads2}");
    // RSS after malloc_trim. 8 leaked analyzers (the dlib age model alone is 11 MB) would add over 100 MB a round.
    assert!(rss1.saturating_sub(rss0) < 16 * 1024, "RSS grew {} KiB over round 1", rss1.saturating_sub(rss0));
    assert!(rss2.saturating_sub(rss1) < 8 * 1024, "RSS grew {} KiB from round 1 to round 2", rss2.saturating_sub(rss1));
}

#[test]
fn a_crowd_with_max_faces_1024_keeps_memory_bounded() {
    const NAME: &str = "a_crowd_with_max_faces_1024_keeps_memory_bounded";
    if !isolated(NAME) {
        if data_file(OBAMA).is_some() && models_available() {
            let out = run_isolated(NAME, &[]);
            for l in out.lines().filter_map(|l| l.find("FIGURES").map(|i| &l[i..])) {
                eprintln!("{l}");
            }
        }
        return;
    }
    let frame = crowd().unwrap();
    let (mut h, bus) = harness(&[("detection-size", "1280"), ("max-faces", "1024")]);
    h.set_src_caps(caps(PixelLayout::Rgb, frame.width, frame.height));
    h.play();
    let buf = photo_buffer(&frame, PixelLayout::Rgb, 0, Some(0));
    drop(frame);
    let peak0 = peak_rss_kib();
    let t = Instant::now();
    h.push(buf).unwrap();
    let out = h.pull().unwrap();
    let peak1 = peak_rss_kib();
    let n = out.iter_meta::<gst_video::VideoRegionOfInterestMeta>().count();
    println!(
        "FIGURES crowd: {n} faces classified in one frame in {:.1} s, peak RSS {} MiB -> {} MiB",
        t.elapsed().as_secs_f64(),
        peak0 / 1024,
        peak1 / 1024
    );
    let mut msgs = Msgs::default();
    msgs.drain(&bus);
    assert!(msgs.errors.is_empty(), "{msgs:?}");
    assert!(n >= 500, "every face of the crowd is reported ({n})");
    // Chunks of 32 faces would need well under 200 MB.
    assert!(peak1.saturating_sub(peak0) < 1536 * 1024, "peak RSS grew {} MiB", (peak1 - peak0) / 1024);
}

// ---------------------------------------------------------------------------------------------------------------
// What a panic on the streaming path would do (gstreamer-rs 0.25 behaviour, with an element of this test)
// ---------------------------------------------------------------------------------------------------------------

mod panicky {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use gst::glib;
    use gst::subclass::prelude::*;
    use gst_base::subclass::prelude::*;

    /// An in-place BaseTransform that panics on its second buffer, like `faceanalyze` would if one of its
    /// `unwrap`/index operations fired.
    #[derive(Default)]
    pub struct Imp {
        n: AtomicUsize,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Imp {
        const NAME: &'static str = "FaceAnalyzeTestPanicky";
        type Type = Panicky;
        type ParentType = gst_base::BaseTransform;
    }

    impl ObjectImpl for Imp {}
    impl GstObjectImpl for Imp {}

    impl ElementImpl for Imp {
        fn pad_templates() -> &'static [gst::PadTemplate] {
            static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst::Caps::new_any();
                vec![
                    gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps).unwrap(),
                    gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps).unwrap(),
                ]
            });
            T.as_ref()
        }
    }

    impl BaseTransformImpl for Imp {
        const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = false;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        fn transform_ip(&self, _buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
            if self.n.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("injected panic in transform_ip");
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }

    glib::wrapper! {
        pub struct Panicky(ObjectSubclass<Imp>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
    }
}

#[test]
fn a_panic_in_transform_ip_becomes_an_element_error_and_the_element_stays_dead() {
    init_gst();
    let run = |p: &gst::Pipeline| {
        let msgs = play_to_end(p.upcast_ref(), 30);
        assert!(!msgs.timed_out, "{msgs:?}");
        msgs
    };
    let p = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").property("num-buffers", 5i32).build().unwrap();
    let el = gst::glib::Object::new::<panicky::Panicky>();
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    p.add_many([&src, el.upcast_ref(), &sink]).unwrap();
    gst::Element::link_many([&src, el.upcast_ref(), &sink]).unwrap();
    // The panic is caught (catch_unwind in gstreamer-rs' vfunc trampoline) and posted as an error message: the
    // process survives, the pipeline stops with an error.
    let msgs = run(&p);
    assert!(!msgs.eos, "{msgs:?}");
    assert_eq!(msgs.errors.len(), 1, "{msgs:?}");
    assert!(msgs.errors[0].contains("Panicked: injected panic in transform_ip"), "{msgs:?}");
    // The element remembers it panicked: started again, it refuses at once with "Panicked" (no message text), and
    // only a new element instance works again.
    let msgs = run(&p);
    assert!(!msgs.eos && msgs.errors.iter().any(|e| e.starts_with("Panicked")), "{msgs:?}");
    drop(p);
}
