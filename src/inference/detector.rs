// SPDX-License-Identifier: MIT OR Apache-2.0
//! YuNet face detection on a frame: letterbox, one inference, decode, NMS, back to frame pixels.

use super::Result;
use super::session::{ModelSession, output};
use crate::face::Detection;
use crate::frame::FrameRef;
use crate::postprocess::{STRIDES, StrideOutputs, decode_stride, nms, to_frame};
use crate::preprocess::{LetterboxInfo, Letterboxer};

/// Detection settings (the element's `detection-size`, `threshold`, `nms-threshold`, `min-face-size`,
/// `max-faces`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorParams {
    /// Long side of the detector input in pixels; 0 = the frame's own size.
    pub size: usize,
    pub threshold: f32,
    pub nms_threshold: f32,
    /// Faces whose box is smaller than this on its longer side (frame pixels) are dropped.
    pub min_face_size: f32,
    /// Keep at most this many faces, the most confident first (0 = no limit).
    pub max_faces: usize,
}

/// Per-call outcome besides the faces.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectStats {
    /// Faces found before the `max-faces` cut.
    pub found: usize,
    pub letterbox: LetterboxInfo,
}

const OUTPUT_NAMES: [[&str; 4]; 3] = [
    ["cls_8", "obj_8", "bbox_8", "kps_8"],
    ["cls_16", "obj_16", "bbox_16", "kps_16"],
    ["cls_32", "obj_32", "bbox_32", "kps_32"],
];

/// The face detector with its reusable input buffer and candidate list.
#[derive(Debug)]
pub struct Detector {
    session: ModelSession,
    letterbox: Letterboxer,
    candidates: Vec<Detection>,
}

impl Detector {
    /// `parallel`: the letterbox fills half of its rows on a helper thread (see [`Letterboxer::parallel`]).
    pub fn new(session: ModelSession, parallel: bool) -> Self {
        let letterbox = if parallel { Letterboxer::parallel() } else { Letterboxer::default() };
        Self { session, letterbox, candidates: Vec::new() }
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Finds faces in `frame` and writes them to `out` (cleared first), most confident first.
    pub fn detect(&mut self, frame: &FrameRef, p: &DetectorParams, out: &mut Vec<Detection>) -> Result<DetectStats> {
        out.clear();
        let lb = self.letterbox.run(frame, p.size);
        let cands = &mut self.candidates;
        cands.clear();
        let shape = [1, 3, lb.input_h, lb.input_w];
        self.session.run(&shape, &self.letterbox.input, |outs| {
            for (names, &stride) in OUTPUT_NAMES.iter().zip(STRIDES.iter()) {
                let so = StrideOutputs {
                    stride,
                    cls: output(outs, names[0])?.1,
                    obj: output(outs, names[1])?.1,
                    bbox: output(outs, names[2])?.1,
                    kps: output(outs, names[3])?.1,
                };
                decode_stride(&so, lb.input_w, lb.input_h, p.threshold, cands)?;
            }
            Ok(())
        })?;
        nms(cands, p.nms_threshold, 0);
        to_frame(cands, &lb, frame.width, frame.height);
        out.extend(cands.iter().filter(|d| d.bbox.w.max(d.bbox.h) >= p.min_face_size && d.bbox.area() > 0.0));
        let found = out.len();
        if p.max_faces > 0 {
            out.truncate(p.max_faces);
        }
        Ok(DetectStats { found, letterbox: lb })
    }
}
