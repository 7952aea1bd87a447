// SPDX-License-Identifier: MIT OR Apache-2.0
//! What users get out of the element on real media: ROI metas with every field, JSON Lines that agree with them,
//! bus messages, and an overlay that changes the face boxes and nothing else.

mod common;

use std::collections::HashMap;

use common::*;
use gst::prelude::*;
use gstfaceanalyze::face::EMOTIONS;
use gstfaceanalyze::frame::PixelLayout;
use gstfaceanalyze::meta;

/// Per-frame faces as seen downstream: (pts, rects with params).
struct Seen {
    pts: Option<u64>,
    faces: Vec<meta::FaceMeta>,
}

fn check_roi_params(buf: &gst::BufferRef) {
    for m in buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        assert_eq!(m.roi_type(), meta::ROI_TYPE);
        let det = m.param(meta::DETECTION).expect("detection params");
        let conf = det.get::<f64>(meta::F_CONFIDENCE).unwrap();
        assert!((0.0..=1.0).contains(&conf));
        assert_eq!(det.get::<gst::Array>(meta::F_LANDMARKS).unwrap().len(), 10);
        for f in [meta::F_X_MIN, meta::F_Y_MIN, meta::F_X_MAX, meta::F_Y_MAX] {
            assert!((0.0..=1.0).contains(&det.get::<f64>(f).unwrap()), "{f}");
        }
        let age = m.param(meta::AGE).expect("age params");
        let (v, sd, lo, hi, c) = (
            age.get::<f64>(meta::F_VALUE).unwrap(),
            age.get::<f64>(meta::F_STDDEV).unwrap(),
            age.get::<f64>(meta::F_LOW).unwrap(),
            age.get::<f64>(meta::F_HIGH).unwrap(),
            age.get::<f64>(meta::F_CONFIDENCE).unwrap(),
        );
        assert!((0.0..=101.0).contains(&v) && sd >= 0.0 && lo <= v && v <= hi && (0.0..=1.0).contains(&c), "{age}");
        assert!(!age.has_field(meta::F_GENDER_MALE), "gender only when asked for");
        let emo = m.param(meta::EMOTION).expect("emotion params");
        let label = emo.get::<String>(meta::F_LABEL).unwrap();
        assert!(EMOTIONS.contains(&label.as_str()), "{label}");
        let conf = emo.get::<f64>(meta::F_CONFIDENCE).unwrap();
        let probs: Vec<f64> = EMOTIONS.iter().map(|e| emo.get::<f64>(*e).unwrap()).collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{emo}");
        let li = EMOTIONS.iter().position(|e| *e == label).unwrap();
        assert_eq!(conf, probs[li], "confidence is the label's probability");
        // With smoothing the label is held until another class leads it by more than the hysteresis margin.
        let max = probs.iter().cloned().fold(f64::MIN, f64::max);
        assert!(max - conf <= gstfaceanalyze::tracker::HYSTERESIS as f64 + 1e-6, "{emo}");
        let (x, y, w, h) = m.rect();
        assert!(w > 0 && h > 0 && x + w <= 640 && y + h <= 360, "{:?}", m.rect());
    }
}

#[test]
fn stage_video_metas_json_and_messages_agree() {
    init_gst();
    let Some(video) = data_file("videos/stage_360p.mp4") else { return };
    if !models_available() {
        return;
    }
    let dir = scratch_dir("outputs");
    let json = dir.join("faces.jsonl");
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! faceanalyze name=fa threads=2 post-messages=true \
         results-location={} ! appsink name=sink sync=false",
        video.display(),
        json.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let s2 = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().unwrap();
                check_roi_params(buf);
                s2.lock()
                    .unwrap()
                    .push(Seen { pts: buf.pts().map(|t| t.nseconds()), faces: meta::faces_from_buffer(buf) });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == meta::MESSAGE) {
                    messages.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 275, "every frame of the clip");
    let with_faces = seen.iter().filter(|s| !s.faces.is_empty()).count();
    eprintln!("{with_faces} of {} frames have faces", seen.len());
    assert!(with_faces > 100, "the performer's face is found in most frames ({with_faces})");
    for s in seen.iter() {
        for f in &s.faces {
            assert!(f.age.is_some() && f.emotion.is_some(), "every face has age and emotion");
        }
    }

    // Messages: one per frame, same faces.
    assert_eq!(messages.len(), seen.len());
    for (m, s) in messages.iter().zip(seen.iter()) {
        assert_eq!(m.get::<u64>("timestamp").ok(), s.pts);
        assert_eq!(m.get::<gst::Array>("faces").unwrap().len(), s.faces.len());
    }

    // JSON Lines: one parsable object per frame, agreeing with the metas.
    let text = std::fs::read_to_string(&json).unwrap();
    let all: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Frame records; track summaries (`"type": "track"`) are checked in tests/tracking.rs.
    let lines: Vec<&serde_json::Value> = all.iter().filter(|l| l.get("type").is_none()).collect();
    assert_eq!(lines.len(), seen.len());
    let by_pts: HashMap<u64, &Seen> = seen.iter().filter_map(|s| s.pts.map(|p| (p, s))).collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frame"], i as u64);
        assert_eq!((l["width"].as_u64(), l["height"].as_u64()), (Some(640), Some(360)));
        let s = by_pts[&l["pts"].as_u64().unwrap()];
        let faces = l["faces"].as_array().unwrap();
        assert_eq!(faces.len(), s.faces.len(), "frame {i}");
        for (jf, mf) in faces.iter().zip(&s.faces) {
            let b: Vec<f64> = jf["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let (x, y, w, h) = mf.rect;
            assert!((b[0] - x as f64).abs() <= 1.0 && (b[1] - y as f64).abs() <= 1.0, "{b:?} vs {:?}", mf.rect);
            assert!((b[0] + b[2] - (x + w) as f64).abs() <= 1.0 && (b[1] + b[3] - (y + h) as f64).abs() <= 1.0);
            assert!((jf["age"]["value"].as_f64().unwrap() - mf.age.unwrap()).abs() <= 0.051);
            assert_eq!(jf["emotion"]["label"].as_str(), mf.emotion.as_deref());
            assert_eq!(jf["landmarks"].as_array().unwrap().len(), 10);
        }
    }
}

/// Pushes `img` as one frame of `layout` with `pad` bytes of row padding; returns (input bytes, output buffer).
fn push_photo(img: &Rgb, layout: PixelLayout, pad: usize, props: &[(&str, &str)]) -> (Vec<u8>, usize, gst::Buffer) {
    let format = gst_video::VideoFormat::from_string(layout.name());
    let (w, h) = (img.width as u32, img.height as u32);
    // Properties first: READY-only ones are ignored once the harness has started the element.
    let e = gst::ElementFactory::make("faceanalyze").build().unwrap();
    e.set_property_from_str("execution-provider", "cpu");
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    let mut hrn = gst_check::Harness::with_element(&e, Some("sink"), Some("src"));
    let info = gst_video::VideoInfo::builder(format, w, h).fps(gst::Fraction::new(1, 1)).build().unwrap();
    hrn.set_src_caps(info.to_caps().unwrap());
    hrn.play();
    let (bytes, stride) = img.to_layout(layout, pad);
    let mut buf = gst::Buffer::from_slice(bytes.clone());
    gst_video::VideoMeta::add_full(
        buf.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        format,
        w,
        h,
        &[0],
        &[stride as i32],
    )
    .unwrap();
    hrn.push(buf).unwrap();
    (bytes, stride, hrn.pull().unwrap())
}

#[test]
fn overlay_changes_the_box_and_nothing_far_away_in_every_format() {
    init_gst();
    let Some(img) = photo("images/face_recognition/examples/obama.jpg") else { return };
    if !models_available() {
        return;
    }
    for layout in PixelLayout::ALL {
        let pad = 12;
        let (input, stride, out) = push_photo(&img, layout, pad, &[]);
        let output = out.map_readable().unwrap().to_vec();
        let faces = meta::faces_from_buffer(&out);
        assert_eq!(faces.len(), 1, "{layout:?}");
        let (x, y, _, h) = faces[0].rect;
        let bpp = layout.bpp();
        let px = |buf: &[u8], px: usize, py: usize| buf[py * stride + px * bpp..py * stride + (px + 1) * bpp].to_vec();
        // The box's left edge, halfway down, is drawn.
        let (ex, ey) = (x as usize, (y + h / 2) as usize);
        assert_ne!(px(&output, ex, ey), px(&input, ex, ey), "{layout:?}: box border not drawn");
        // Far from the face (bottom corners) nothing changed.
        for (cx, cy) in [(2, img.height - 3), (img.width - 3, img.height - 3)] {
            assert_eq!(px(&output, cx, cy), px(&input, cx, cy), "{layout:?}: pixel far from the face changed");
        }
        // Row padding and alpha/x bytes are never written.
        for row in 0..img.height {
            let end = row * stride + img.width * bpp;
            assert_eq!(&output[end..end + pad], &input[end..end + pad], "{layout:?}: padding changed");
        }
        if let Some(a) = layout.alpha_offset() {
            for row in [0, y as usize + 1, img.height - 1] {
                for col in 0..img.width {
                    assert_eq!(output[row * stride + col * bpp + a], input[row * stride + col * bpp + a], "alpha");
                }
            }
        }
        let changed = output.iter().zip(&input).filter(|(a, b)| a != b).count();
        assert!(changed < output.len() / 10, "{layout:?}: {changed} bytes changed; the overlay must stay local");
    }
}

#[test]
fn draw_false_leaves_the_frame_bit_identical() {
    init_gst();
    let Some(img) = photo("images/face_recognition/examples/two_people.jpg") else { return };
    if !models_available() {
        return;
    }
    for layout in [PixelLayout::Rgb, PixelLayout::Bgrx, PixelLayout::Abgr] {
        let (input, _, out) = push_photo(&img, layout, 5, &[("draw", "false")]);
        assert_eq!(out.map_readable().unwrap().as_slice(), &input[..], "{layout:?}");
        assert_eq!(meta::faces_from_buffer(&out).len(), 2, "metas are still attached");
    }
}

#[test]
fn blur_faces_hides_the_face_without_drawing_boxes() {
    init_gst();
    let Some(img) = photo("images/face_recognition/examples/obama.jpg") else { return };
    if !models_available() {
        return;
    }
    let (input, stride, out) = push_photo(&img, PixelLayout::Rgb, 0, &[("draw", "false"), ("blur-faces", "true")]);
    let output = out.map_readable().unwrap().to_vec();
    let (x, y, w, h) = meta::faces_from_buffer(&out)[0].rect;
    let inside = |buf: &[u8]| {
        let mut v = Vec::new();
        for yy in y + h / 4..y + 3 * h / 4 {
            let s = yy as usize * stride + (x + w / 4) as usize * 3;
            v.extend_from_slice(&buf[s..s + (w / 2) as usize * 3]);
        }
        v
    };
    let diff = inside(&output).iter().zip(inside(&input)).filter(|(a, b)| **a != *b).count();
    assert!(diff > inside(&input).len() / 2, "the face is blurred ({diff} bytes changed)");
    // Outside the face box nothing changed, and no outline was drawn (draw=false): rows above and below the box
    // and the box's own border columns outside it are untouched.
    let changed_outside = (0..img.height)
        .flat_map(|r| (0..img.width).map(move |c| (r, c)))
        .filter(|&(r, c)| {
            let inside = (y as usize..(y + h) as usize).contains(&r) && (x as usize..(x + w) as usize).contains(&c);
            !inside
                && output[r * stride + c * 3..r * stride + c * 3 + 3]
                    != input[r * stride + c * 3..r * stride + c * 3 + 3]
        })
        .count();
    assert_eq!(changed_outside, 0, "pixels outside the face box changed");
    // The box border itself is blurred face, not a drawn outline: its colour is not the outline colour.
    let edge = (y + h / 2) as usize * stride + x as usize * 3;
    assert_ne!(&output[edge..edge + 3], &gstfaceanalyze::overlay::face_color(&Default::default())[..]);
}
