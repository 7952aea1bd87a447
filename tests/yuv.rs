// SPDX-License-Identifier: MIT OR Apache-2.0
//! I420 and NV12 straight from decoders: the same faces as the RGB path, drawing into the planes, odd sizes and
//! padded strides, and a pipeline with no full-frame `videoconvert`.

mod common;

use common::*;
use gst::prelude::*;
use gst_video::prelude::*;
use gstfaceanalyze::analyzer::AnalyzeParams;
use gstfaceanalyze::face::Face;
use gstfaceanalyze::frame::{FrameRef, PixelLayout, YuvLayout, YuvMatrix};
use gstfaceanalyze::meta;

/// Frame `skip_frames` of `path` decoded in caps `format`, with its info.
fn decode_as(path: &std::path::Path, format: &str, skip_frames: usize) -> (gst::Buffer, gst_video::VideoInfo) {
    decode_buffers(path, format, skip_frames + 1).pop().expect("a decoded frame")
}

fn matrix_of(info: &gst_video::VideoInfo) -> YuvMatrix {
    let c = info.colorimetry();
    let mut m = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::BT709,
        _ => YuvMatrix::BT601,
    };
    m.full_range = c.range() == gst_video::VideoColorRange::Range0_255;
    m
}

/// Runs the analyzer on `buf` as the frame `info` describes.
fn analyze(a: &mut gstfaceanalyze::analyzer::Analyzer, buf: &gst::Buffer, info: &gst_video::VideoInfo) -> Vec<Face> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), info).unwrap();
    let s = frame.plane_stride().iter().map(|&s| s as usize).collect::<Vec<_>>();
    let planes = frame.planes_data();
    let (w, h) = (info.width() as usize, info.height() as usize);
    let fr = match info.format() {
        gst_video::VideoFormat::Rgb => FrameRef::new(planes[0], w, h, s[0], PixelLayout::Rgb).unwrap(),
        f => {
            let layout = YuvLayout::from_name(f.to_str()).unwrap();
            let s2 = s.get(2).copied().unwrap_or(0);
            FrameRef::yuv([planes[0], planes[1], planes[2]], [s[0], s[1], s2], w, h, layout, matrix_of(info)).unwrap()
        }
    };
    let mut faces = Vec::new();
    a.analyze(&fr, &AnalyzeParams::default(), &mut faces).unwrap();
    faces
}

fn iou(a: &Face, b: &Face) -> f32 {
    a.detection.bbox.iou(&b.detection.bbox)
}

#[test]
fn i420_and_nv12_give_the_faces_of_the_rgb_path() {
    let sources = [
        ("images/face_recognition/examples/two_people.jpg", 0, 2),
        ("images/face_recognition/examples/obama.jpg", 0, 1),
        ("videos/stage_360p.mp4", 10, 0),
        ("videos/street_1080p.mp4", 5, 0),
    ];
    let mut files = Vec::new();
    for (rel, skip_frames, expect) in sources {
        let Some(p) = data_file(rel) else { return };
        files.push((p, skip_frames, expect));
    }
    // Float models: the int8 ones (the defaults) amplify the last-bit differences of two colour conversions.
    let Some(mut a) = analyzer(|c| {
        c.age_model = "hse".into();
        c.emotion_model = "mini".into();
    }) else {
        return;
    };
    for (path, skip_frames, expect) in files {
        let (rgb_buf, rgb_info) = decode_as(&path, "RGB", skip_frames);
        let reference = analyze(&mut a, &rgb_buf, &rgb_info);
        assert!(reference.len() >= expect.max(1), "{}: {} faces", path.display(), reference.len());
        for format in ["I420", "NV12"] {
            let (buf, info) = decode_as(&path, format, skip_frames);
            let faces = analyze(&mut a, &buf, &info);
            let name = format!("{} {format}", path.display());
            // Faces near the threshold may come and go with rounding; every confident face must match.
            let mut matched = 0;
            let mut l1s = Vec::new();
            for r in reference.iter().filter(|f| f.detection.score > 0.7) {
                let best = faces.iter().max_by(|x, y| iou(x, r).total_cmp(&iou(y, r))).expect("a face");
                assert!(iou(best, r) > 0.9, "{name}: box {:?} vs {:?}", best.detection.bbox, r.detection.bbox);
                let (ea, eb) = (best.age.unwrap().value, r.age.unwrap().value);
                assert!((ea - eb).abs() < 1.5, "{name}: age {ea} vs {eb}");
                let (pa, pb) = (best.emotion.unwrap().probabilities, r.emotion.unwrap().probabilities);
                l1s.push(pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f32>());
                matched += 1;
            }
            assert!(matched >= expect, "{name}: {matched} confident faces matched");
            // The emotion nets see 48x48 gray chips: on small faces, rounding differences between videoconvert's
            // integer conversion and ours move single probabilities, so bound the mean and the worst case.
            let mean = l1s.iter().sum::<f32>() / l1s.len().max(1) as f32;
            let worst = l1s.iter().cloned().fold(0.0, f32::max);
            eprintln!("{name}: {matched} faces, emotion L1 mean {mean:.3} worst {worst:.3}");
            assert!(mean < 0.12 && worst < 0.5, "{name}: emotion L1 mean {mean} worst {worst}");
            let diff = faces.len().abs_diff(reference.len());
            assert!(diff * 10 <= reference.len().max(10), "{name}: {} faces vs {}", faces.len(), reference.len());
        }
    }
}

/// A 4:2:0 buffer with padded strides described by a VideoMeta: (buffer, plane offsets, strides).
fn yuv_buffer(
    format: gst_video::VideoFormat,
    w: usize,
    h: usize,
    pad: usize,
    fill: impl Fn(usize, usize, usize) -> u8,
) -> (gst::Buffer, Vec<usize>, Vec<usize>) {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (strides, rows): (Vec<usize>, Vec<usize>) = match format {
        gst_video::VideoFormat::I420 => (vec![w + pad, cw + pad, cw + pad], vec![h, ch, ch]),
        _ => (vec![w + pad, 2 * cw + pad], vec![h, ch]),
    };
    let mut offsets = Vec::new();
    let mut data = Vec::new();
    for (p, (&s, &r)) in strides.iter().zip(&rows).enumerate() {
        offsets.push(data.len());
        for y in 0..r {
            for x in 0..s {
                data.push(fill(p, x, y));
            }
        }
    }
    let mut buf = gst::Buffer::from_mut_slice(data);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40));
        let strides_i: Vec<i32> = strides.iter().map(|&s| s as i32).collect();
        gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            format,
            w as u32,
            h as u32,
            &offsets,
            &strides_i,
        )
        .unwrap();
    }
    (buf, offsets, strides)
}

fn harness(format: gst_video::VideoFormat, w: u32, h: u32, props: &[(&str, &str)]) -> gst_check::Harness {
    let e = gst::ElementFactory::make("faceanalyze").build().unwrap();
    e.set_property_from_str("execution-provider", "cpu");
    e.set_property("threads", 1u32);
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    let mut hrn = gst_check::Harness::with_element(&e, Some("sink"), Some("src"));
    let info = gst_video::VideoInfo::builder(format, w, h).fps(gst::Fraction::new(25, 1)).build().unwrap();
    hrn.set_src_caps(info.to_caps().unwrap());
    hrn.play();
    hrn
}

#[test]
fn odd_sizes_and_padded_strides_pass_untouched() {
    init_gst();
    if !models_available() {
        return;
    }
    for format in [gst_video::VideoFormat::I420, gst_video::VideoFormat::Nv12] {
        for (w, h, pad) in [(641usize, 181usize, 0usize), (641, 181, 13), (320, 240, 64), (1, 1, 3), (33, 7, 0)] {
            let mut hrn = harness(format, w as u32, h as u32, &[]);
            let (input, _, _) = yuv_buffer(format, w, h, pad, |p, x, y| ((x * 7 + y * 13 + p * 31) % 251) as u8);
            let before = input.map_readable().unwrap().to_vec();
            hrn.push(input).unwrap();
            let out = hrn.pull().unwrap();
            assert_eq!(out.map_readable().unwrap().as_slice(), &before[..], "{format:?} {w}x{h} pad {pad}");
            assert_eq!(meta::faces_from_buffer(&out).len(), 0);
        }
    }
}

/// A frame pushed through the element: the input bytes, its plane offsets and strides, the output and the size.
struct Pushed {
    input: Vec<u8>,
    offsets: Vec<usize>,
    strides: Vec<usize>,
    out: gst::Buffer,
    w: usize,
    h: usize,
}

/// A photo as one `format` frame with padded strides, through the element with `props`.
fn push_photo(rel: &str, format: gst_video::VideoFormat, props: &[(&str, &str)]) -> Option<Pushed> {
    let path = data_file(rel)?;
    let (src, info) = decode_as(&path, format.to_str(), 0);
    let (w, h) = (info.width() as usize, info.height() as usize);
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(src.as_ref(), &info).unwrap();
    let pad = 9;
    let (buf, offsets, strides) = yuv_buffer(format, w, h, pad, |p, x, y| {
        let s = frame.plane_stride()[p] as usize;
        let row_bytes = strides_row(format, p, w);
        if x < row_bytes { frame.plane_data(p as u32).unwrap()[y * s + x] } else { 0xAB }
    });
    drop(frame);
    let input = buf.map_readable().unwrap().to_vec();
    let mut hrn = harness(format, w as u32, h as u32, props);
    hrn.push(buf).unwrap();
    Some(Pushed { input, offsets, strides, out: hrn.pull().unwrap(), w, h })
}

fn strides_row(format: gst_video::VideoFormat, plane: usize, w: usize) -> usize {
    match (format, plane) {
        (_, 0) => w,
        (gst_video::VideoFormat::I420, _) => w.div_ceil(2),
        _ => 2 * w.div_ceil(2),
    }
}

#[test]
fn overlay_draws_into_the_planes_and_nothing_far_away() {
    init_gst();
    if !models_available() {
        return;
    }
    for format in [gst_video::VideoFormat::I420, gst_video::VideoFormat::Nv12] {
        let Some(Pushed { input, offsets, strides, out, w, h }) =
            push_photo("images/face_recognition/examples/obama.jpg", format, &[])
        else {
            return;
        };
        let output = out.map_readable().unwrap().to_vec();
        let faces = meta::faces_from_buffer(&out);
        assert_eq!(faces.len(), 1, "{format:?}");
        let (x, y, _, fh) = faces[0].rect;
        let luma = |buf: &[u8], px: usize, py: usize| buf[offsets[0] + py * strides[0] + px];
        // The box's left edge, halfway down, is drawn in luma, and its chroma cell too.
        let (ex, ey) = (x as usize + 1, (y + fh / 2) as usize);
        assert_ne!(luma(&output, ex, ey), luma(&input, ex, ey), "{format:?}: box border not drawn");
        let c =
            offsets[1] + (ey / 2) * strides[1] + (ex / 2) * if format == gst_video::VideoFormat::I420 { 1 } else { 2 };
        assert_ne!(output[c], input[c], "{format:?}: box colour not in chroma");
        // Far from the face nothing changed, and the row padding is never written.
        for (cx, cy) in [(2, h - 3), (w - 3, h - 3)] {
            assert_eq!(luma(&output, cx, cy), luma(&input, cx, cy), "{format:?}: far pixel changed");
        }
        for (p, (&off, &s)) in offsets.iter().zip(&strides).enumerate() {
            let row = strides_row(format, p, w);
            let rows = if p == 0 { h } else { h.div_ceil(2) };
            for r in 0..rows {
                let end = off + r * s + row;
                assert!(output[end..off + (r + 1) * s].iter().all(|&b| b == 0xAB), "{format:?}: plane {p} padding");
            }
        }
        let changed = output.iter().zip(&input).filter(|(a, b)| a != b).count();
        assert!(changed > 100 && changed < output.len() / 10, "{format:?}: {changed} bytes changed");

        let Some(Pushed { input, out, .. }) =
            push_photo("images/face_recognition/examples/two_people.jpg", format, &[("draw", "false")])
        else {
            return;
        };
        assert_eq!(out.map_readable().unwrap().as_slice(), &input[..], "{format:?}: draw=false must not write");
        assert_eq!(meta::faces_from_buffer(&out).len(), 2);

        // Blur hides the face: the luma inside the box loses most of its detail.
        let Some(Pushed { input, offsets, strides, out, .. }) = push_photo(
            "images/face_recognition/examples/obama.jpg",
            format,
            &[("draw", "false"), ("blur-faces", "true")],
        ) else {
            return;
        };
        let output = out.map_readable().unwrap().to_vec();
        let f = &meta::faces_from_buffer(&out)[0];
        let (x, y, fw, fh) = f.rect;
        let grad = |buf: &[u8]| -> u64 {
            let mut g = 0u64;
            for py in (y + fh / 4) as usize..(y + 3 * fh / 4) as usize {
                for px in (x + fw / 4) as usize..(x + 3 * fw / 4) as usize {
                    let i = offsets[0] + py * strides[0] + px;
                    g += (buf[i] as i64 - buf[i + 1] as i64).unsigned_abs();
                }
            }
            g
        };
        assert!(grad(&output) * 4 < grad(&input), "{format:?}: blur kept the detail");
    }
}

#[test]
fn decoder_output_needs_no_videoconvert() {
    init_gst();
    let Some(video) = data_file("videos/stage_360p.mp4") else { return };
    if !models_available() {
        return;
    }
    // Count faces per frame on the decoder's own I420 and on BGRx through videoconvert.
    let run = |convert: &str| -> (String, Vec<usize>) {
        let p = gst::parse::launch(&format!(
            "filesrc location={} ! decodebin ! {convert} faceanalyze execution-provider=cpu name=fa ! appsink \
             name=sink sync=false",
            video.display()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let mut counts = Vec::new();
        let mut format = String::new();
        while counts.len() < 40 {
            let Ok(s) = sink.pull_sample() else { break };
            format = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap().format().to_str().to_string();
            counts.push(meta::faces_from_buffer(s.buffer().unwrap()).len());
        }
        p.set_state(gst::State::Null).unwrap();
        (format, counts)
    };
    let (f_yuv, yuv) = run("");
    let (f_rgb, rgb) = run("videoconvert ! video/x-raw,format=BGRx !");
    assert_eq!(f_yuv, "I420", "the decoder's format reaches the element");
    assert_eq!(f_rgb, "BGRx");
    assert_eq!(yuv.len(), 40);
    let (ty, tr) = (yuv.iter().sum::<usize>(), rgb.iter().sum::<usize>());
    assert!(tr > 40, "faces on stage_360p: {tr}");
    assert!(ty.abs_diff(tr) * 20 <= tr, "I420 {ty} faces vs BGRx {tr} over 40 frames");
}

#[test]
fn conversion_matches_videoconvert() {
    for (rel, skip_frames) in [("videos/street_1080p.mp4", 5), ("images/face_recognition/examples/obama.jpg", 0)] {
        let Some(path) = data_file(rel) else { return };
        let (rgb, rinfo) = decode_as(&path, "RGB", skip_frames);
        for format in ["I420", "NV12"] {
            let (yuv, info) = decode_as(&path, format, skip_frames);
            let rf = gst_video::VideoFrameRef::from_buffer_ref_readable(rgb.as_ref(), &rinfo).unwrap();
            let yf = gst_video::VideoFrameRef::from_buffer_ref_readable(yuv.as_ref(), &info).unwrap();
            let s: Vec<usize> = yf.plane_stride().iter().map(|&s| s as usize).collect();
            let p = yf.planes_data();
            let (w, h) = (info.width() as usize, info.height() as usize);
            let layout = YuvLayout::from_name(format).unwrap();
            let strides = [s[0], s[1], s.get(2).copied().unwrap_or(0)];
            let f = FrameRef::yuv([p[0], p[1], p[2]], strides, w, h, layout, matrix_of(&info)).unwrap();
            let (rs, rd) = (rf.plane_stride()[0] as usize, rf.plane_data(0).unwrap());
            let (mut sum, mut n, mut worst) = (0u64, 0u64, 0u8);
            let mut signed = [0i64; 3];
            for y in (0..h).step_by(3) {
                for x in (0..w).step_by(3) {
                    let ours = f.rgb(x, y);
                    for c in 0..3 {
                        let d = ours[c].abs_diff(rd[y * rs + x * 3 + c]);
                        signed[c] += ours[c] as i64 - rd[y * rs + x * 3 + c] as i64;
                        sum += d as u64;
                        n += 1;
                        worst = worst.max(d);
                    }
                }
            }
            let mean = sum as f64 / n as f64;
            let bias = signed.map(|v| v as f64 / (n / 3) as f64);
            eprintln!("{rel} {format}: mean |diff| {mean:.2}, worst {worst}, bias {bias:.2?}");
            // Ours is the textbook formula in floating point; videoconvert's 8-bit fixed-point path comes out 2-3
            // levels darker on street_1080p. A wrong matrix (BT.601 for BT.709: worst 13), a wrong range (mean 6.9)
            // or swapped planes fail these bounds.
            assert!(mean < 4.0 && worst < 10, "{rel} {format}: mean |diff| {mean:.2}, worst {worst}");
        }
    }
}
