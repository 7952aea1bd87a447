// SPDX-License-Identifier: MIT OR Apache-2.0
//! JSON Lines results: one object per analysed frame, written into a reused string and flushed line by line so
//! the file is usable even when the process is killed.
//!
//! `{"frame": 12, "pts": 480000000, "width": 1920, "height": 1080, "faces": [{"id": 3, "box": [x, y, w, h],
//! "confidence": 0.93, "landmarks": [x1, y1, ..., x5, y5], "age": {"value": 34.2, "stddev": 4.1, "low": 29,
//! "high": 40, "confidence": 0.6}, "emotion": {"label": "happy", "confidence": 0.81, "probabilities": {...}}}]}`

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::face::{EMOTIONS, Face};

/// Writes a JSON number with up to `decimals` decimals; non-finite values become `null`.
fn num(out: &mut String, v: f32, decimals: usize) {
    if v.is_finite() {
        let start = out.len();
        let _ = write!(out, "{:.*}", decimals, v);
        // Trim trailing zeros of the fraction ("34.20" -> "34.2", "29.00" -> "29").
        if out[start..].contains('.') {
            while out.ends_with('0') {
                out.pop();
            }
            if out.ends_with('.') {
                out.pop();
            }
        }
        if &out[start..] == "-0" {
            out.truncate(start);
            out.push('0');
        }
    } else {
        out.push_str("null");
    }
}

/// Appends the JSON object of one frame (no newline) to `out`.
pub fn frame_record(out: &mut String, frame: u64, pts: Option<u64>, width: u32, height: u32, faces: &[Face]) {
    let _ = write!(out, "{{\"frame\":{frame},\"pts\":");
    match pts {
        Some(p) => {
            let _ = write!(out, "{p}");
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"width\":{width},\"height\":{height},\"faces\":[");
    for (i, f) in faces.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        face_object(out, f);
    }
    out.push_str("]}");
}

fn face_object(out: &mut String, f: &Face) {
    out.push('{');
    if let Some(id) = f.track_id {
        let _ = write!(out, "\"id\":{id},\"fresh\":{},\"observations\":{},", f.fresh, f.observations);
    }
    let b = f.detection.bbox;
    out.push_str("\"box\":[");
    for (i, v) in [b.x, b.y, b.w, b.h].into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        num(out, v, 1);
    }
    out.push_str("],\"confidence\":");
    num(out, f.detection.score, 4);
    out.push_str(",\"landmarks\":[");
    for (i, v) in f.detection.landmarks.iter().flatten().enumerate() {
        if i > 0 {
            out.push(',');
        }
        num(out, *v, 1);
    }
    out.push(']');
    if let Some(a) = f.age {
        out.push_str(",\"age\":{\"value\":");
        num(out, a.value, 1);
        out.push_str(",\"stddev\":");
        num(out, a.stddev, 1);
        out.push_str(",\"low\":");
        num(out, a.low.round(), 0);
        out.push_str(",\"high\":");
        num(out, a.high.round(), 0);
        out.push_str(",\"confidence\":");
        num(out, a.confidence, 3);
        out.push('}');
    }
    if let Some(g) = f.gender_male {
        out.push_str(",\"gender\":{\"male\":");
        num(out, g, 3);
        out.push('}');
    }
    if let Some(e) = f.emotion {
        let _ = write!(out, ",\"emotion\":{{\"label\":\"{}\",\"confidence\":", e.label());
        num(out, e.confidence(), 3);
        out.push_str(",\"probabilities\":{");
        for (i, (name, p)) in EMOTIONS.iter().zip(e.probabilities).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":");
            num(out, p, 4);
        }
        out.push_str("}}");
    }
    out.push('}');
}

/// A JSON Lines file written frame by frame.
#[derive(Debug)]
pub struct ResultsWriter {
    file: std::io::BufWriter<std::fs::File>,
    line: String,
}

impl ResultsWriter {
    /// Creates (truncates) the file; its folder must exist.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self { file: std::io::BufWriter::new(file), line: String::with_capacity(4096) })
    }

    /// Writes one frame record and flushes it.
    pub fn write_frame(
        &mut self,
        frame: u64,
        pts: Option<u64>,
        width: u32,
        height: u32,
        faces: &[Face],
    ) -> std::io::Result<()> {
        self.line.clear();
        frame_record(&mut self.line, frame, pts, width, height, faces);
        self.line.push('\n');
        self.write_line()
    }

    /// Writes an already formatted JSON object (e.g. a track summary) as one line and flushes it.
    pub fn write_raw(&mut self, json: &str) -> std::io::Result<()> {
        self.line.clear();
        self.line.push_str(json);
        self.line.push('\n');
        self.write_line()
    }

    fn write_line(&mut self) -> std::io::Result<()> {
        self.file.write_all(self.line.as_bytes())?;
        self.file.flush()
    }

    /// Flushes and syncs the file.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{AgeEstimate, BBox, Detection, EmotionEstimate};

    #[test]
    fn record_parses_and_keeps_names() {
        let mut p = [0.0f32; 7];
        p[3] = 0.81;
        p[6] = 0.19;
        let f = Face {
            detection: Detection {
                bbox: BBox { x: 10.0, y: 20.5, w: 30.0, h: 40.0 },
                score: 0.93,
                landmarks: [[1.0, 2.0]; 5],
            },
            age: Some(AgeEstimate { value: 34.24, stddev: 4.1, low: 29.2, high: 39.6, confidence: 0.5 }),
            gender_male: None,
            emotion: Some(EmotionEstimate::from_probabilities(p)),
            track_id: Some(3),
            fresh: false,
            observations: 4,
        };
        let nan = Face { detection: Detection { score: f32::NAN, ..Default::default() }, ..Default::default() };
        let mut s = String::new();
        frame_record(&mut s, 12, Some(480_000_000), 1920, 1080, &[f, nan]);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["frame"], 12);
        assert_eq!(v["pts"], 480_000_000u64);
        let f0 = &v["faces"][0];
        assert_eq!(f0["id"], 3);
        assert_eq!((f0["fresh"].as_bool(), f0["observations"].as_u64()), (Some(false), Some(4)));
        let b: Vec<f64> = f0["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(b, [10.0, 20.5, 30.0, 40.0]);
        assert_eq!(f0["landmarks"].as_array().unwrap().len(), 10);
        assert_eq!(f0["age"]["value"], 34.2);
        assert_eq!(f0["age"]["low"], 29.0);
        assert_eq!(f0["age"]["high"], 40.0);
        assert_eq!(f0["emotion"]["label"], "happy");
        assert_eq!(f0["emotion"]["probabilities"]["neutral"], 0.19);
        let f1 = &v["faces"][1];
        assert!(f1["confidence"].is_null());
        assert!(f1.get("age").is_none() && f1.get("emotion").is_none() && f1.get("id").is_none());
        let mut empty = String::new();
        frame_record(&mut empty, 0, None, 1, 1, &[]);
        assert_eq!(empty, r#"{"frame":0,"pts":null,"width":1,"height":1,"faces":[]}"#);
    }
}
