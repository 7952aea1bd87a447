// SPDX-License-Identifier: MIT OR Apache-2.0
//! The analysis core on real photos with the real models: detection counts, boxes, ages, emotions, batching, and
//! independence from pixel layout and stride.

mod common;

use common::*;
use gstfaceanalyze::analyzer::AnalyzeParams;
use gstfaceanalyze::face::Face;
use gstfaceanalyze::frame::{FrameRef, PixelLayout};

fn analyze(a: &mut gstfaceanalyze::analyzer::Analyzer, f: &FrameRef, p: &AnalyzeParams) -> Vec<Face> {
    let mut faces = Vec::new();
    a.analyze(f, p, &mut faces).expect("analysis");
    faces
}

#[test]
fn obama_one_face_age_40_to_60_with_both_age_models() {
    let Some(img) = photo("images/face_recognition/examples/obama.jpg") else { return };
    for age_model in ["hse", "dlib"] {
        let Some(mut a) = analyzer(|c| c.age_model = age_model.into()) else { return };
        let faces = analyze(&mut a, &img.frame(), &AnalyzeParams::default());
        assert_eq!(faces.len(), 1, "{age_model}: {faces:?}");
        let f = &faces[0];
        let b = f.detection.bbox;
        eprintln!("{age_model}: box {b:?} age {:?} emotion {:?}", f.age, f.emotion.map(|e| e.label()));
        // The face is in the upper middle of the portrait.
        let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
        assert!(cx > img.width as f32 * 0.3 && cx < img.width as f32 * 0.7, "{b:?}");
        assert!(cy > img.height as f32 * 0.15 && cy < img.height as f32 * 0.6, "{b:?}");
        assert!(b.w > 80.0 && b.h > 80.0, "{b:?}");
        let age = f.age.expect("age");
        assert!((40.0..=60.0).contains(&age.value), "{age_model}: age {age:?}");
        assert!(age.low <= age.value && age.value <= age.high && age.stddev > 0.0, "{age:?}");
        let e = f.emotion.expect("emotion");
        assert!((e.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
}
