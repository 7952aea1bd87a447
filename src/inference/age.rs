// SPDX-License-Identifier: MIT OR Apache-2.0
//! Age estimation, all faces of a frame in one batch: dlib age v1 on aligned 64x64 chips, or HSE faceres on
//! 224x224 crops. Both give a distribution over years; the estimate is its expectation with spread and range.

use super::Result;
use super::session::{ModelSession, output};
use crate::align::{AlignPoints, crop_transform, dlib_chip_transform};
use crate::face::{AgeEstimate, Detection};
use crate::frame::FrameRef;
use crate::postprocess::{age_stats, all_in_range};
use crate::preprocess::warp_affine;

/// Which age network (each has its own input contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeKind {
    /// dlib `dnn_age_predictor_v1`: aligned chip, RGB, (p - mean) / 256, NCHW 64x64; 81 bins (0.25, 1..80).
    Dlib,
    /// HSE faceres: box crop with margin, BGR minus Caffe means, NHWC 224x224; 100 bins (1..100) + gender.
    Hse,
}

impl AgeKind {
    pub fn name(self) -> &'static str {
        match self {
            AgeKind::Dlib => "dlib",
            AgeKind::Hse => "hse",
        }
    }
}

const DLIB_SIZE: usize = 64;
const DLIB_MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];
const HSE_SIZE: usize = 224;
const HSE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// Age pre-processing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgeParams {
    /// HSE crop margin on each side, as a fraction of the box size.
    pub hse_margin: f32,
    /// dlib chip padding (dlib's `get_face_chip_details` padding).
    pub dlib_padding: f32,
    /// Landmarks used for the dlib alignment.
    pub align: AlignPoints,
}

impl Default for AgeParams {
    fn default() -> Self {
        Self { hse_margin: 0.1, dlib_padding: 0.2, align: AlignPoints::default() }
    }
}

/// The age network with its reusable batch input.
#[derive(Debug)]
pub struct AgeModel {
    session: ModelSession,
    kind: AgeKind,
    ages: Vec<f32>,
    input: Vec<f32>,
}

/// Per-face age result: estimate (None when the network's output was invalid) and male probability (HSE only).
#[derive(Debug, Clone, Copy, Default)]
pub struct AgeOutput {
    pub age: Option<AgeEstimate>,
    pub gender_male: Option<f32>,
}

impl AgeModel {
    pub fn new(session: ModelSession, kind: AgeKind) -> Self {
        let ages = match kind {
            AgeKind::Dlib => std::iter::once(0.25).chain((1..=80).map(|a| a as f32)).collect(),
            AgeKind::Hse => (1..=100).map(|a| a as f32).collect(),
        };
        Self { session, kind, ages, input: Vec::new() }
    }

    pub fn kind(&self) -> AgeKind {
        self.kind
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Estimates the age of every face in `dets`, in batches of at most [`super::MAX_BATCH`] faces; `out` gets one
    /// entry per face.
    /// Returns how many faces got an invalid (non-finite or out-of-range) output.
    pub fn estimate(
        &mut self,
        frame: &FrameRef,
        dets: &[Detection],
        p: &AgeParams,
        out: &mut Vec<AgeOutput>,
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
        p: &AgeParams,
        out: &mut Vec<AgeOutput>,
    ) -> Result<usize> {
        if dets.is_empty() {
            return Ok(0);
        }
        prepare_batch(self.kind, frame, dets, p, &mut self.input);
        run_input(&mut self.session, self.kind, &self.ages, &self.input, dets.len(), out)
    }

    /// Runs the network on `n` faces already prepared by [`prepare_batch`] (possibly from several frames), in
    /// batches of at most [`super::MAX_BATCH`]; appends one entry per face to `out` and returns how many were
    /// invalid.
    pub fn run_prepared(&mut self, input: &[f32], n: usize, out: &mut Vec<AgeOutput>) -> Result<usize> {
        let per = input_len(self.kind);
        let mut invalid = 0;
        for (i, chunk) in input[..n * per].chunks(super::MAX_BATCH * per).enumerate() {
            let m = (n - i * super::MAX_BATCH).min(super::MAX_BATCH);
            invalid += run_input(&mut self.session, self.kind, &self.ages, chunk, m, out)?;
        }
        Ok(invalid)
    }
}

/// Floats of network input per face.
pub const fn input_len(kind: AgeKind) -> usize {
    match kind {
        AgeKind::Dlib => 3 * DLIB_SIZE * DLIB_SIZE,
        AgeKind::Hse => 3 * HSE_SIZE * HSE_SIZE,
    }
}

/// One inference call on `n` prepared faces; appends their outputs to `out`.
fn run_input(
    session: &mut ModelSession,
    kind: AgeKind,
    ages: &[f32],
    input: &[f32],
    n: usize,
    out: &mut Vec<AgeOutput>,
) -> Result<usize> {
    let shape: [usize; 4] = match kind {
        AgeKind::Dlib => [n, 3, DLIB_SIZE, DLIB_SIZE],
        AgeKind::Hse => [n, HSE_SIZE, HSE_SIZE, 3],
    };
    session.run(&shape, &input[..n * input_len(kind)], |outs| {
        let (probs_name, gender_name) = match kind {
            AgeKind::Dlib => ("probabilities", None),
            AgeKind::Hse => ("age_pred/Softmax:0", Some("gender_pred/Sigmoid:0")),
        };
        let (_, probs) = output(outs, probs_name)?;
        let bins = ages.len();
        if probs.len() != n * bins {
            return Err(format!("{probs_name} holds {} values, expected {n}x{bins}", probs.len()));
        }
        let gender = match gender_name {
            Some(g) => Some(output(outs, g)?.1).filter(|g| g.len() == n),
            None => None,
        };
        let mut invalid = 0;
        for (i, row) in probs.chunks_exact(bins).enumerate() {
            let age = if all_in_range(row, 0.0, 1.0) { age_stats(row, ages) } else { None };
            invalid += usize::from(age.is_none());
            let gender_male = gender.and_then(|g| g.get(i).copied()).filter(|v| v.is_finite());
            out.push(AgeOutput { age, gender_male: gender_male.map(|v| v.clamp(0.0, 1.0)) });
        }
        Ok(invalid)
    })
}

/// Writes the batch input of `kind` for `dets` into `input` (resized to fit): aligned chips for dlib, crops for
/// HSE, straight from the frame.
pub fn prepare_batch(kind: AgeKind, frame: &FrameRef, dets: &[Detection], p: &AgeParams, input: &mut Vec<f32>) {
    let per = input_len(kind);
    input.resize(per * dets.len(), 0.0);
    for (d, chunk) in dets.iter().zip(input.chunks_exact_mut(per)) {
        match kind {
            AgeKind::Dlib => {
                let b = d.bbox;
                let m = dlib_chip_transform(d, DLIB_SIZE, p.dlib_padding, p.align).unwrap_or_else(|| {
                    // Degenerate landmarks: fall back to the box with the same padding.
                    crop_transform(b.x, b.y, b.w, b.h, p.dlib_padding, DLIB_SIZE, DLIB_SIZE)
                });
                let plane = DLIB_SIZE * DLIB_SIZE;
                warp_affine(frame, &m, DLIB_SIZE, DLIB_SIZE, |x, y, rgb| {
                    let i = y * DLIB_SIZE + x;
                    for c in 0..3 {
                        chunk[c * plane + i] = (rgb[c] - DLIB_MEAN_RGB[c]) / 256.0;
                    }
                });
            }
            AgeKind::Hse => {
                let b = d.bbox;
                let m = crop_transform(b.x, b.y, b.w, b.h, p.hse_margin, HSE_SIZE, HSE_SIZE);
                warp_affine(frame, &m, HSE_SIZE, HSE_SIZE, |x, y, rgb| {
                    let i = 3 * (y * HSE_SIZE + x);
                    chunk[i] = rgb[2] - HSE_MEAN_BGR[0];
                    chunk[i + 1] = rgb[1] - HSE_MEAN_BGR[1];
                    chunk[i + 2] = rgb[0] - HSE_MEAN_BGR[2];
                });
            }
        }
    }
}
