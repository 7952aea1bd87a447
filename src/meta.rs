// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the element attaches to buffers and posts on the bus: one `GstVideoRegionOfInterestMeta` per face with
//! parameter structures, and the per-frame element message. All names live here (README "Metadata emitted").
//!
//! Field names follow DL Streamer's habit (`label`, `confidence`, normalised `x_min`..`y_max` in `detection`) so
//! tools written for `gvadetect`/`gvaclassify` output read ours.

use gst::prelude::*;

use crate::face::{EMOTIONS, Face};

/// ROI type of every face meta.
pub const ROI_TYPE: &str = "face";

/// Parameter structure `detection`: `confidence` (f64), `landmarks` (array of 10 f64: x1,y1..x5,y5 in frame
/// pixels, order right eye, left eye, nose tip, right mouth corner, left mouth corner), `x_min`, `y_min`, `x_max`,
/// `y_max` (f64, box normalised to 0..1 like DL Streamer).
pub const DETECTION: &str = "detection";
pub const F_CONFIDENCE: &str = "confidence";
pub const F_LANDMARKS: &str = "landmarks";
pub const F_X_MIN: &str = "x_min";
pub const F_Y_MIN: &str = "y_min";
pub const F_X_MAX: &str = "x_max";
pub const F_Y_MAX: &str = "y_max";

/// Parameter structure `age`: `value`, `stddev`, `low`, `high` (years, f64), `confidence` (f64, mass within ±5
/// years); plus `gender_male` (f64 probability) only when `analyze-gender=true`.
pub const AGE: &str = "age";
pub const F_VALUE: &str = "value";
pub const F_STDDEV: &str = "stddev";
pub const F_LOW: &str = "low";
pub const F_HIGH: &str = "high";
pub const F_GENDER_MALE: &str = "gender_male";

/// Parameter structure `emotion`: `label` (string), `confidence` (f64), and one f64 field per class
/// (`angry`, `disgust`, `fear`, `happy`, `sad`, `surprise`, `neutral`).
pub const EMOTION: &str = "emotion";
pub const F_LABEL: &str = "label";

/// Parameter structure `track`: `id` (u64), `fresh` (bool: age/emotion computed on this frame rather than carried
/// from an earlier one), `observations` (u32: classifications fused into the result).
pub const TRACK: &str = "track";
pub const F_ID: &str = "id";
pub const F_FRESH: &str = "fresh";
pub const F_OBSERVATIONS: &str = "observations";

/// Element message posted when a track ends (timeout, flush or EOS): `id` (u64), `first_pts`, `last_pts`,
/// `duration` (u64 ns, when known), `frames` (u64), `age`, `age_low`, `age_high` (f64, when aged), one f64 field
/// per emotion with its share of the track's frames (when classified), `best_pts` (u64, when known).
pub const TRACK_MESSAGE: &str = "faceanalyze-track";

/// Element message posted per analysed frame when `post-messages=true`: `frame` (u64), `timestamp` (u64 ns, or
/// absent), `width`, `height` (u32), `faces` (array of `face` structures: `x`, `y`, `width`, `height` (f64 frame
/// pixels) and the `detection`, `age`, `emotion`, `track` structures above as fields).
pub const MESSAGE: &str = "faceanalyze";
pub const MESSAGE_FACE: &str = "face";

/// The `detection` structure of a face in a `width` x `height` frame.
pub fn detection_structure(face: &Face, width: u32, height: u32) -> gst::Structure {
    let d = &face.detection;
    let landmarks = gst::Array::new(d.landmarks.iter().flat_map(|p| [p[0] as f64, p[1] as f64]));
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    gst::Structure::builder(DETECTION)
        .field(F_CONFIDENCE, d.score as f64)
        .field(F_LANDMARKS, landmarks)
        .field(F_X_MIN, d.bbox.x as f64 / w)
        .field(F_Y_MIN, d.bbox.y as f64 / h)
        .field(F_X_MAX, d.bbox.x2() as f64 / w)
        .field(F_Y_MAX, d.bbox.y2() as f64 / h)
        .build()
}

/// The `age` structure, when the face has an age.
pub fn age_structure(face: &Face) -> Option<gst::Structure> {
    let a = face.age?;
    let mut b = gst::Structure::builder(AGE)
        .field(F_VALUE, a.value as f64)
        .field(F_STDDEV, a.stddev as f64)
        .field(F_LOW, a.low as f64)
        .field(F_HIGH, a.high as f64)
        .field(F_CONFIDENCE, a.confidence as f64);
    if let Some(g) = face.gender_male {
        b = b.field(F_GENDER_MALE, g as f64);
    }
    Some(b.build())
}

/// The `emotion` structure, when the face has an emotion.
pub fn emotion_structure(face: &Face) -> Option<gst::Structure> {
    let e = face.emotion?;
    let mut b = gst::Structure::builder(EMOTION).field(F_LABEL, e.label()).field(F_CONFIDENCE, e.confidence() as f64);
    for (name, p) in EMOTIONS.iter().zip(e.probabilities) {
        b = b.field(*name, p as f64);
    }
    Some(b.build())
}

/// The `track` structure, when the face has a track id.
pub fn track_structure(face: &Face) -> Option<gst::Structure> {
    face.track_id.map(|id| {
        gst::Structure::builder(TRACK)
            .field(F_ID, id)
            .field(F_FRESH, face.fresh)
            .field(F_OBSERVATIONS, face.observations)
            .build()
    })
}

/// Integer ROI rectangle of a face box (rounded outwards, clipped to the frame).
pub fn roi_rect(face: &Face, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let b = face.detection.bbox.clip(width as f32, height as f32);
    let x1 = b.x.floor().max(0.0) as u32;
    let y1 = b.y.floor().max(0.0) as u32;
    let x2 = (b.x2().ceil() as u32).min(width);
    let y2 = (b.y2().ceil() as u32).min(height);
    (x1, y1, x2.saturating_sub(x1), y2.saturating_sub(y1))
}

/// Adds one ROI meta per face to `buffer`; metas already on the buffer are kept.
pub fn add_roi_metas(buffer: &mut gst::BufferRef, faces: &[Face], width: u32, height: u32) {
    for face in faces {
        let mut m = gst_video::VideoRegionOfInterestMeta::add(buffer, ROI_TYPE, roi_rect(face, width, height));
        if let Some(id) = face.track_id {
            m.set_id(i32::try_from(id).unwrap_or(i32::MAX));
        }
        m.add_param(detection_structure(face, width, height));
        if let Some(s) = age_structure(face) {
            m.add_param(s);
        }
        if let Some(s) = emotion_structure(face) {
            m.add_param(s);
        }
        if let Some(s) = track_structure(face) {
            m.add_param(s);
        }
    }
}

/// The per-frame element message structure.
pub fn frame_message(
    frame: u64,
    timestamp: Option<gst::ClockTime>,
    width: u32,
    height: u32,
    faces: &[Face],
) -> gst::Structure {
    let list = gst::Array::new(faces.iter().map(|f| {
        let b = f.detection.bbox;
        let mut s = gst::Structure::builder(MESSAGE_FACE)
            .field("x", b.x as f64)
            .field("y", b.y as f64)
            .field("width", b.w as f64)
            .field("height", b.h as f64)
            .field(DETECTION, detection_structure(f, width, height));
        if let Some(a) = age_structure(f) {
            s = s.field(AGE, a);
        }
        if let Some(e) = emotion_structure(f) {
            s = s.field(EMOTION, e);
        }
        if let Some(t) = track_structure(f) {
            s = s.field(TRACK, t);
        }
        s.build().to_send_value()
    }));
    let mut b = gst::Structure::builder(MESSAGE).field("frame", frame).field("width", width).field("height", height);
    if let Some(ts) = timestamp {
        b = b.field("timestamp", ts.nseconds());
    }
    b.field("faces", list).build()
}

/// The `faceanalyze-track` message structure of an ended track.
pub fn track_message(t: &crate::tracker::TrackSummary) -> gst::Structure {
    let mut b = gst::Structure::builder(TRACK_MESSAGE).field(F_ID, t.id).field("frames", t.frames);
    for (name, v) in [("first_pts", t.first_pts), ("last_pts", t.last_pts), ("best_pts", t.best_pts)] {
        if let Some(v) = v {
            b = b.field(name, v);
        }
    }
    if let (Some(a), Some(z)) = (t.first_pts, t.last_pts) {
        b = b.field("duration", z.saturating_sub(a));
    }
    if let Some((v, lo, hi)) = t.age {
        b = b.field("age", v as f64).field("age_low", lo as f64).field("age_high", hi as f64);
    }
    if let Some(e) = t.emotions {
        for (name, s) in EMOTIONS.iter().zip(e) {
            b = b.field(*name, s as f64);
        }
    }
    b.build()
}

/// A face read back from a buffer's ROI metas (what a downstream application sees).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMeta {
    pub rect: (u32, u32, u32, u32),
    pub confidence: f64,
    pub landmarks: Vec<f64>,
    pub age: Option<f64>,
    pub emotion: Option<String>,
    pub emotion_confidence: Option<f64>,
    pub track_id: Option<u64>,
}

/// Reads the `face` ROI metas of a buffer.
pub fn faces_from_buffer(buffer: &gst::BufferRef) -> Vec<FaceMeta> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| m.roi_type() == ROI_TYPE)
        .map(|m| {
            let det = m.param(DETECTION);
            let landmarks = det
                .and_then(|d| d.get::<gst::Array>(F_LANDMARKS).ok())
                .map(|a| a.iter().filter_map(|v| v.get::<f64>().ok()).collect())
                .unwrap_or_default();
            FaceMeta {
                rect: m.rect(),
                confidence: det.and_then(|d| d.get::<f64>(F_CONFIDENCE).ok()).unwrap_or(f64::NAN),
                landmarks,
                age: m.param(AGE).and_then(|s| s.get::<f64>(F_VALUE).ok()),
                emotion: m.param(EMOTION).and_then(|s| s.get::<String>(F_LABEL).ok()),
                emotion_confidence: m.param(EMOTION).and_then(|s| s.get::<f64>(F_CONFIDENCE).ok()),
                track_id: m.param(TRACK).and_then(|s| s.get::<u64>(F_ID).ok()),
            }
        })
        .collect()
}
