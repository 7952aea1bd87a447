// SPDX-License-Identifier: MIT OR Apache-2.0
//! Emotion classification with the FER2013 Xception nets, all faces of a frame in one batch per network:
//! gray 64x64 crops in [-1, 1], optionally with their mirror images, probabilities averaged over networks and flips.

use super::Result;
use super::session::{ModelSession, output};
use crate::align::crop_transform;
use crate::face::{Detection, EmotionEstimate, NUM_EMOTIONS};
use crate::frame::FrameRef;
use crate::postprocess::all_in_range;
use crate::preprocess::{gray, warp_affine};

const SIZE: usize = 64;
const PER: usize = SIZE * SIZE;

/// Emotion pre-processing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmotionParams {
    /// Crop margin on each side, as a fraction of the box size.
    pub margin: f32,
    /// Also classify the mirrored crop and average (test-time augmentation).
    pub flip: bool,
}

impl Default for EmotionParams {
    fn default() -> Self {
        Self { margin: 0.1, flip: false }
    }
}

/// One or more emotion networks whose probabilities are averaged.
#[derive(Debug)]
pub struct EmotionModel {
    sessions: Vec<ModelSession>,
    input: Vec<f32>,
    acc: Vec<[f32; NUM_EMOTIONS]>,
    valid: Vec<bool>,
}

impl EmotionModel {
    /// `sessions` must not be empty; more than one makes an ensemble.
    pub fn new(sessions: Vec<ModelSession>) -> Self {
        Self { sessions, input: Vec::new(), acc: Vec::new(), valid: Vec::new() }
    }

    pub fn sessions(&self) -> &[ModelSession] {
        &self.sessions
    }

    /// Writes the 64x64 gray crops of `dets` (and, with `flip`, their mirror images after them) into the input.
    pub fn prepare(&mut self, frame: &FrameRef, dets: &[Detection], p: &EmotionParams) {
        prepare_batch(frame, dets, p, &mut self.input);
    }

    /// Classifies every face in `dets`, in batches of at most [`super::MAX_BATCH`] faces per network; `out` gets one
    /// entry per face (None when a network's output was invalid). Returns how many faces got an invalid output.
    pub fn estimate(
        &mut self,
        frame: &FrameRef,
        dets: &[Detection],
        p: &EmotionParams,
        out: &mut Vec<Option<EmotionEstimate>>,
    ) -> Result<usize> {
        out.clear();
        let mut invalid = 0;
        // Bounded batches keep ONNX Runtime's memory bounded on crowded frames.
        for chunk in dets.chunks(super::MAX_BATCH) {
            invalid += self.estimate_chunk(frame, chunk, p, out)?;
        }
        Ok(invalid)
    }

    fn estimate_chunk(
        &mut self,
        frame: &FrameRef,
        dets: &[Detection],
        p: &EmotionParams,
        out: &mut Vec<Option<EmotionEstimate>>,
    ) -> Result<usize> {
        let n = dets.len();
        if n == 0 {
            return Ok(0);
        }
        self.prepare(frame, dets, p);
        let rows = if p.flip { 2 * n } else { n };
        self.acc.clear();
        self.acc.resize(n, [0.0; NUM_EMOTIONS]);
        self.valid.clear();
        self.valid.resize(n, true);
        let shape = [rows, SIZE, SIZE, 1];
        for session in &mut self.sessions {
            let acc = &mut self.acc;
            let valid = &mut self.valid;
            session.run(&shape, &self.input[..rows * PER], |outs| {
                let (_, probs) = output(outs, "predictions")?;
                if probs.len() != rows * NUM_EMOTIONS {
                    return Err(format!("predictions hold {} values, expected {rows}x{NUM_EMOTIONS}", probs.len()));
                }
                for (r, row) in probs.chunks_exact(NUM_EMOTIONS).enumerate() {
                    let face = r % n;
                    if !all_in_range(row, 0.0, 1.0) {
                        valid[face] = false;
                        continue;
                    }
                    for (a, v) in acc[face].iter_mut().zip(row) {
                        *a += v;
                    }
                }
                Ok(())
            })?;
        }
        let mut invalid = 0;
        for (a, ok) in self.acc.iter().zip(&self.valid) {
            let sum: f32 = a.iter().sum();
            if *ok && sum > 0.0 {
                out.push(Some(EmotionEstimate::from_probabilities(a.map(|v| v / sum))));
            } else {
                invalid += 1;
                out.push(None);
            }
        }
        Ok(invalid)
    }
}

/// Writes the 64x64 gray crops of `dets` (and, with `flip`, their mirror images after them) into the input.
pub fn prepare_batch(frame: &FrameRef, dets: &[Detection], p: &EmotionParams, input: &mut Vec<f32>) {
    let n = dets.len();
    let copies = if p.flip { 2 } else { 1 };
    input.resize(copies * n * PER, 0.0);
    let (orig, mirrored) = input.split_at_mut(n * PER);
    for (d, chunk) in dets.iter().zip(orig.chunks_exact_mut(PER)) {
        let b = d.bbox;
        let m = crop_transform(b.x, b.y, b.w, b.h, p.margin, SIZE, SIZE);
        warp_affine(frame, &m, SIZE, SIZE, |x, y, rgb| {
            chunk[y * SIZE + x] = (gray(rgb) / 255.0 - 0.5) * 2.0;
        });
    }
    if p.flip {
        for (src, dst) in orig.chunks_exact(PER).zip(mirrored.chunks_exact_mut(PER)) {
            for (srow, drow) in src.chunks_exact(SIZE).zip(dst.chunks_exact_mut(SIZE)) {
                for (d, s) in drow.iter_mut().zip(srow.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
}
