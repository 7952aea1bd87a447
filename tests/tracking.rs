// SPDX-License-Identifier: MIT OR Apache-2.0
//! Video-aware analysis: stable track ids on synthetic and real sequences, detection every N frames with
//! prediction, fewer classifications with reclassify-interval, smoothing that reduces flicker (and `smoothing=0`
//! that reproduces per-frame results exactly), and one summary per track.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use gst::prelude::*;
use gstfaceanalyze::analyzer::{AnalyzeParams, Analyzer};

use gstfaceanalyze::tracker::TrackSummary;
use gstfaceanalyze::video::{StabilityMeter, VideoAnalyzer, VideoParams};

/// A face cut out of a photo around its detected box (with margin), to paste into synthetic frames.
fn face_patch(a: &mut Analyzer, rel: &str) -> Option<Rgb> {
    let img = photo(rel)?;
    let mut dets = Vec::new();
    a.detect(&img.frame(), &AnalyzeParams::default().detector, &mut dets).unwrap();
    let b = dets.first()?.bbox;
    let m = 0.35;
    let (x0, y0) = ((b.x - b.w * m).max(0.0) as usize, (b.y - b.h * m).max(0.0) as usize);
    let (x1, y1) = (((b.x2() + b.w * m) as usize).min(img.width), ((b.y2() + b.h * m) as usize).min(img.height));
    // Scale the patch to ~110 px wide by nearest neighbour.
    let (pw, ph) = (x1 - x0, y1 - y0);
    let s = 110.0 / pw as f32;
    let (ow, oh) = (110usize, (ph as f32 * s) as usize);
    let mut data = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let sx = x0 + ((x as f32 / s) as usize).min(pw - 1);
            let sy = y0 + ((y as f32 / s) as usize).min(ph - 1);
            let si = (sy * img.width + sx) * 3;
            data[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&img.data[si..si + 3]);
        }
    }
    Some(Rgb { data, width: ow, height: oh })
}

fn paste(canvas: &mut Rgb, patch: &Rgb, x: i32, y: i32) {
    for py in 0..patch.height as i32 {
        for px in 0..patch.width as i32 {
            let (cx, cy) = (x + px, y + py);
            if cx < 0 || cy < 0 || cx >= canvas.width as i32 || cy >= canvas.height as i32 {
                continue;
            }
            let d = (cy as usize * canvas.width + cx as usize) * 3;
            let s = (py as usize * patch.width + px as usize) * 3;
            canvas.data[d..d + 3].copy_from_slice(&patch.data[s..s + 3]);
        }
    }
}

#[test]
fn synthetic_enter_cross_occlude_leave() {
    let Some(mut a) = analyzer(|c| {
        c.age = false;
        c.emotion = false;
    }) else {
        return;
    };
    let Some(pa) = face_patch(&mut a, "images/face_recognition/examples/obama.jpg") else { return };
    let Some(pb) = face_patch(&mut a, "images/face_recognition/examples/biden.jpg") else { return };
    let mut va = VideoAnalyzer::new(a);
    let mut p = VideoParams::default();
    p.analyze.analyze_age = false;
    p.analyze.analyze_emotion = false;
    p.tracker.timeout_frames = 5;
    let (w, h) = (960usize, 540usize);
    let mut ended: Vec<TrackSummary> = Vec::new();
    let mut faces = Vec::new();
    // id seen at each face's position, per frame: ("A" | "B" | "C", id)
    let mut ids: HashMap<&str, HashSet<u64>> = HashMap::new();
    for f in 0..60u64 {
        let mut canvas = Rgb { data: vec![90; w * h * 3], width: w, height: h };
        // A walks right along the top; B walks left lower down; they cross at f ~ 30, 150 px apart vertically.
        let ax = -40 + 16 * f as i32;
        let bx = 900 - 16 * f as i32;
        let occluded = (20..23).contains(&f);
        let mut placed = Vec::new();
        if !occluded {
            paste(&mut canvas, &pa, ax, 40);
            placed.push(("A", ax, 40));
        }
        paste(&mut canvas, &pb, bx, 230);
        placed.push(("B", bx, 230));
        if f >= 40 {
            // C enters late, standing still.
            paste(&mut canvas, &pa, 420, 380 - 200);
            placed.push(("C", 420, 180));
        }
        va.process(&canvas.frame(), f, Some(f * 40_000_000), &p, &mut faces, &mut ended).unwrap();
        for face in &faces {
            let b = face.detection.bbox;
            let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
            // Attribute each reported face to the pasted patch whose centre is nearest.
            let who = placed
                .iter()
                .min_by_key(|(_, x, y)| {
                    let (px, py) = (*x as f32 + 55.0, *y as f32 + pa.height as f32 / 2.0);
                    ((px - cx).powi(2) + (py - cy).powi(2)) as i64
                })
                .unwrap()
                .0;
            ids.entry(who).or_default().insert(face.track_id.unwrap());
        }
        if occluded {
            assert!(faces.len() <= 2, "frame {f}: {faces:?}");
        }
    }
    eprintln!("ids {ids:?}, ended {:?}", ended.iter().map(|t| t.id).collect::<Vec<_>>());
    assert_eq!(ids["A"].len(), 1, "A keeps one id through the path and a 3-frame occlusion: {ids:?}");
    assert_eq!(ids["B"].len(), 1, "B keeps one id through the crossing: {ids:?}");
    assert_eq!(ids["C"].len(), 1, "{ids:?}");
    let (a, b, c) = (ids["A"].iter().next(), ids["B"].iter().next(), ids["C"].iter().next());
    assert!(a != b && a != c && b != c, "distinct ids: {ids:?}");
    // A left the frame at the right (x > 960 from frame ~62 on)... B left on the left: its track has ended.
    let mut all_ended = ended.clone();
    va.finish(&mut all_ended);
    let ended_ids: Vec<u64> = all_ended.iter().map(|t| t.id).collect();
    let unique: HashSet<u64> = ended_ids.iter().copied().collect();
    assert_eq!(unique.len(), ended_ids.len(), "one summary per track");
    for id in [a, b, c].into_iter().flatten() {
        assert!(unique.contains(id), "track {id} has a summary");
    }
}

fn stage_frames(n: usize) -> Option<Vec<(Rgb, Option<u64>)>> {
    let path = data_file("videos/stage_360p.mp4")?;
    Some(decode_frames(&path, n))
}

#[test]
fn inference_interval_still_follows_the_face_on_every_frame() {
    let Some(frames) = stage_frames(90) else { return };
    let Some(mut a) = analyzer(|c| {
        c.age = false;
        c.emotion = false;
    }) else {
        return;
    };
    let det_params = AnalyzeParams::default().detector;
    let mut va = VideoAnalyzer::new(
        analyzer(|c| {
            c.age = false;
            c.emotion = false;
        })
        .unwrap(),
    );
    let mut p = VideoParams { inference_interval: 3, ..Default::default() };
    p.analyze.analyze_age = false;
    p.analyze.analyze_emotion = false;
    let (mut faces, mut ended, mut dets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut checked, mut near) = (0, 0);
    for (i, (img, pts)) in frames.iter().enumerate() {
        let stats = va.process(&img.frame(), i as u64, *pts, &p, &mut faces, &mut ended).unwrap();
        assert_eq!(stats.detected, i % 3 == 0, "frame {i}");
        a.detect(&img.frame(), &det_params, &mut dets).unwrap();
        // Every face the per-frame detector finds (and found on the last detection frame too) has a meta nearby.
        for d in &dets {
            checked += 1;
            if faces.iter().any(|f| f.detection.bbox.iou(&d.bbox) > 0.3) {
                near += 1;
            }
        }
    }
    eprintln!("{near} of {checked} per-frame faces have a tracked box nearby with inference-interval=3");
    assert!(checked > 50);
    assert!(near as f64 >= 0.85 * checked as f64, "{near} of {checked}");
}

#[test]
fn reclassify_interval_cuts_classifier_runs() {
    let Some(frames) = stage_frames(60) else { return };
    let mut counts = Vec::new();
    for interval in [1u64, 5] {
        let Some(a) = analyzer(|c| c.age_model = "dlib".into()) else { return };
        let mut va = VideoAnalyzer::new(a);
        let p = VideoParams { reclassify_interval: interval, ..Default::default() };
        let (mut faces, mut ended) = (Vec::new(), Vec::new());
        let mut face_frames = 0;
        for (i, (img, pts)) in frames.iter().enumerate() {
            va.process(&img.frame(), i as u64, *pts, &p, &mut faces, &mut ended).unwrap();
            face_frames += faces.len() as u64;
            assert!(faces.iter().all(|f| f.age.is_some() && f.emotion.is_some()), "carried results on every frame");
        }
        counts.push((va.total_classified, face_frames));
    }
    eprintln!("classifications (interval 1, 5): {counts:?}");
    let ((c1, f1), (c5, f5)) = (counts[0], counts[1]);
    assert_eq!(c1, f1, "interval 1 classifies every face on every frame");
    assert_eq!(f1, f5, "the same faces are reported");
    assert!(c5 * 3 <= c1, "interval 5 runs at most a third as many classifications: {c5} vs {c1}");
}

#[test]
fn settled_ages_are_classified_less_often_than_emotions() {
    let Some(frames) = stage_frames(150) else { return };
    let Some(a) = analyzer(|c| c.age_model = "dlib".into()) else { return };
    let mut va = VideoAnalyzer::new(a);
    // Reclassify every frame (smoothing on): a settled track's age then comes every AGE_SETTLED_FACTOR frames.
    let p = VideoParams { reclassify_interval: 1, ..Default::default() };
    let (mut faces, mut ended) = (Vec::new(), Vec::new());
    let (mut age_runs, mut emotion_runs) = (0, 0);
    for (i, (img, pts)) in frames.iter().enumerate() {
        let s = va.process(&img.frame(), i as u64, *pts, &p, &mut faces, &mut ended).unwrap();
        age_runs += s.frame.age_runs;
        emotion_runs += s.frame.emotion_runs;
        assert!(faces.iter().all(|f| f.age.is_some() && f.emotion.is_some()), "frame {i}: every face keeps its age");
    }
    let window = p.smoothing as u32;
    let mut long_tracks = 0;
    for t in va.tracker().tracks() {
        assert!(t.age_observations <= t.fuser.total);
        if t.fuser.total >= 2 * window {
            long_tracks += 1;
            // `window` observations to settle, then one in AGE_SETTLED_FACTOR.
            let settled = (t.fuser.total - window) as u64;
            let most = window as u64 + settled.div_ceil(gstfaceanalyze::video::AGE_SETTLED_FACTOR) + 1;
            assert!(
                (t.age_observations as u64) <= most,
                "track {}: {} ages in {}",
                t.id,
                t.age_observations,
                t.fuser.total
            );
            assert!(t.age_observations >= window, "track {}: ages until settled", t.id);
        }
    }
    eprintln!("stage_360p 150 frames: {age_runs} age runs, {emotion_runs} emotion runs, {long_tracks} long tracks");
    assert!(long_tracks >= 1, "stage_360p has faces tracked for {} classifications", 2 * window);
    assert!(age_runs < emotion_runs, "age runs {age_runs} vs emotion runs {emotion_runs}");
    // Without smoothing every classification carries a new age (each result is reported unchanged).
    let mut va = VideoAnalyzer::new(analyzer(|c| c.age_model = "dlib".into()).unwrap());
    let p = VideoParams { smoothing: 0, reclassify_interval: 1, ..Default::default() };
    for (i, (img, pts)) in frames.iter().take(60).enumerate() {
        va.process(&img.frame(), i as u64, *pts, &p, &mut faces, &mut ended).unwrap();
    }
    assert!(va.tracker().tracks().iter().all(|t| t.age_observations == t.fuser.total));
}

#[test]
fn smoothing_none_reproduces_per_frame_results_exactly() {
    let Some(frames) = stage_frames(30) else { return };
    let Some(mut a) = analyzer(|_| {}) else { return };
    let mut va = VideoAnalyzer::new(analyzer(|_| {}).unwrap());
    let p = VideoParams::per_frame(AnalyzeParams::default());
    let (mut faces, mut ended, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    let mut compared = 0;
    for (i, (img, pts)) in frames.iter().enumerate() {
        va.process(&img.frame(), i as u64, *pts, &p, &mut faces, &mut ended).unwrap();
        a.analyze(&img.frame(), &p.analyze, &mut reference).unwrap();
        assert_eq!(faces.len(), reference.len(), "frame {i}");
        for (f, r) in faces.iter().zip(&reference) {
            assert_eq!(f.detection, r.detection);
            assert_eq!(f.age, r.age, "frame {i}");
            assert_eq!(f.emotion, r.emotion, "frame {i}");
            assert!(f.fresh && f.observations == 1);
            compared += 1;
        }
    }
    assert!(compared > 10);
}

fn stability(frames: &[(Rgb, Option<u64>)], p: &VideoParams) -> (f64, f64) {
    let mut va = VideoAnalyzer::new(analyzer(|_| {}).unwrap());
    let mut meter = StabilityMeter::default();
    let (mut faces, mut ended) = (Vec::new(), Vec::new());
    for (i, (img, pts)) in frames.iter().enumerate() {
        va.process(&img.frame(), i as u64, *pts, p, &mut faces, &mut ended).unwrap();
        meter.add(&faces);
    }
    (meter.flips_per_track_second(25.0), meter.age_jitter())
}

#[test]
fn smoothing_reduces_label_flips_and_age_jitter() {
    let Some(path) = data_file("videos/street_1080p.mp4") else { return };
    if !models_available() {
        return;
    }
    let frames = decode_frames(&path, 60);
    let raw = stability(&frames, &VideoParams::per_frame(AnalyzeParams::default()));
    let smooth = stability(&frames, &VideoParams { reclassify_interval: 1, ..Default::default() });
    eprintln!("street: flips/track-s and age jitter: per-frame {raw:?}, smoothing {smooth:?}");
    assert!(smooth.0 < raw.0 * 0.7, "label flips fall: {smooth:?} vs {raw:?}");
    assert!(smooth.1 < raw.1 * 0.7, "age jitter falls: {smooth:?} vs {raw:?}");
}

#[test]
fn one_summary_per_track_at_eos_in_the_element() {
    init_gst();
    let Some(video) = data_file("videos/stage_360p.mp4") else { return };
    if !models_available() {
        return;
    }
    let json = scratch_dir("tracks").join("r.jsonl");
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! faceanalyze age-model=dlib results-location={} ! fakesink",
        video.display(),
        json.display()
    ))
    .unwrap();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut msg_ids = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == gstfaceanalyze::meta::TRACK_MESSAGE) {
                    msg_ids.push(s.get::<u64>("id").unwrap());
                    assert!(s.get::<u64>("frames").unwrap() > 0);
                }
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut seen = HashSet::new();
    for l in lines.iter().filter(|l| l.get("type").is_none()) {
        for f in l["faces"].as_array().unwrap() {
            seen.insert(f["id"].as_u64().expect("tracked faces have ids"));
        }
    }
    let summaries: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "track").collect();
    let sum_ids: Vec<u64> = summaries.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    let unique: HashSet<u64> = sum_ids.iter().copied().collect();
    eprintln!("{} tracks, summaries {sum_ids:?}", seen.len());
    assert_eq!(unique.len(), sum_ids.len(), "exactly one summary per track");
    assert_eq!(unique, seen, "every track that appeared has a summary");
    let msg_unique: HashSet<u64> = msg_ids.iter().copied().collect();
    assert_eq!(msg_unique, unique);
    assert_eq!(msg_ids.len(), sum_ids.len());
    for s in summaries {
        assert!(s["frames"].as_u64().unwrap() > 0 && s["duration_ns"].is_u64());
        let shares: f64 = s["emotions"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 0.01, "{s}");
        assert!(s["age"]["value"].as_f64().unwrap() > 0.0);
    }
}
