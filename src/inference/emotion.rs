// SPDX-License-Identifier: MIT OR Apache-2.0
//! Emotion classification with the FER2013 Xception nets, all faces of a frame in one batch per network:
//! gray 64x64 crops in [-1, 1], optionally each followed by its mirror image, probabilities averaged over networks
//! and flips.

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
        if dets.is_empty() {
            return Ok(0);
        }
        prepare_batch(frame, dets, p, &mut self.input);
        let input = std::mem::take(&mut self.input);
        let r = self.run_input(&input, dets.len(), p.flip, out);
        self.input = input;
        r
    }

    /// Runs the networks on `n` faces already prepared by [`prepare_batch`] with `flip` (possibly from several
    /// frames), in batches of at most [`super::MAX_BATCH`] faces; appends one entry per face to `out` and returns
    /// how many were invalid.
    pub fn run_prepared(
        &mut self,
        input: &[f32],
        n: usize,
        flip: bool,
        out: &mut Vec<Option<EmotionEstimate>>,
    ) -> Result<usize> {
        let per = input_len(flip);
        let mut invalid = 0;
        for (i, chunk) in input[..n * per].chunks(super::MAX_BATCH * per).enumerate() {
            let m = (n - i * super::MAX_BATCH).min(super::MAX_BATCH);
            invalid += self.run_input(chunk, m, flip, out)?;
        }
        Ok(invalid)
    }

    /// One call per network on `n` prepared faces; appends their averaged outputs to `out`.
    fn run_input(
        &mut self,
        input: &[f32],
        n: usize,
        flip: bool,
        out: &mut Vec<Option<EmotionEstimate>>,
    ) -> Result<usize> {
        let copies = if flip { 2 } else { 1 };
        let rows = copies * n;
        self.acc.clear();
        self.acc.resize(n, [0.0; NUM_EMOTIONS]);
        self.valid.clear();
        self.valid.resize(n, true);
        let shape = [rows, SIZE, SIZE, 1];
        for session in &mut self.sessions {
            let acc = &mut self.acc;
            let valid = &mut self.valid;
            session.run(&shape, &input[..rows * PER], |outs| {
                let (_, probs) = output(outs, "predictions")?;
                if probs.len() != rows * NUM_EMOTIONS {
                    return Err(format!("predictions hold {} values, expected {rows}x{NUM_EMOTIONS}", probs.len()));
                }
                for (r, row) in probs.chunks_exact(NUM_EMOTIONS).enumerate() {
                    let face = r / copies;
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

/// Floats of network input per face (two crops with `flip`).
pub const fn input_len(flip: bool) -> usize {
    if flip { 2 * PER } else { PER }
}

/// Writes the 64x64 gray crops of `dets` into the input, each followed by its mirror image with `flip`, so that a
/// face's rows are contiguous and batches of several frames are plain concatenations.
pub fn prepare_batch(frame: &FrameRef, dets: &[Detection], p: &EmotionParams, input: &mut Vec<f32>) {
    let per = input_len(p.flip);
    input.resize(dets.len() * per, 0.0);
    for (d, chunk) in dets.iter().zip(input.chunks_exact_mut(per)) {
        let (orig, mirrored) = chunk.split_at_mut(PER);
        let b = d.bbox;
        let m = crop_transform(b.x, b.y, b.w, b.h, p.margin, SIZE, SIZE);
        warp_affine(frame, &m, SIZE, SIZE, |x, y, rgb| {
            orig[y * SIZE + x] = (gray(rgb) / 255.0 - 0.5) * 2.0;
        });
        for (srow, drow) in orig.chunks_exact(SIZE).zip(mirrored.chunks_exact_mut(SIZE)) {
            for (d, s) in drow.iter_mut().zip(srow.iter().rev()) {
                *d = *s;
            }
        }
    }
}
