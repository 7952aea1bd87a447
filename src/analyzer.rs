// SPDX-License-Identifier: MIT OR Apache-2.0
//! The per-frame analysis the element, tests, benchmarks and the evaluation command share: load the models, then
//! for each frame detect every face and classify them all in one batch per model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::face::{Detection, EmotionEstimate, Face};
use crate::frame::FrameRef;
use crate::inference::age::{AgeKind, AgeModel, AgeOutput, AgeParams};
use crate::inference::detector::{DetectStats, Detector, DetectorParams};
use crate::inference::emotion::{EmotionModel, EmotionParams};
use crate::inference::runtime::{self, ExecutionProvider, RuntimeInfo};
use crate::inference::session::{ModelSession, SessionOptions};
use crate::inference::{InferenceError, Result};
use crate::models::{self, ResolvedModel};

/// Which models to load and how (the element's READY-time properties).
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// ONNX Runtime library; `None` = environment variable, then the project's install location.
    pub onnxruntime_library: Option<PathBuf>,
    /// Folder of the named models; `None` = [`models::default_model_dir`].
    pub model_dir: Option<PathBuf>,
    /// `yunet` or a path.
    pub detector_model: String,
    /// `hse-utk-int8`, `hse-int8`, `hse`, `dlib-int8`, `dlib` or a path.
    pub age_model: String,
    /// `own-int8` (the default), `own`, `ensemble` (mini + big-int8), `mini`, `big`, `big-int8` or a path.
    pub emotion_model: String,
    /// Load the age model.
    pub age: bool,
    /// Load the emotion model.
    pub emotion: bool,
    pub session: SessionOptions,
}

pub const DEFAULT_DETECTOR_MODEL: &str = "yunet";
/// HSE with the project's own age head trained on UTKFace (models/train/), quantised to int8: on the held-back
/// UTKFace split MAE 4.22 (21-60: 4.94) against 5.84 (5.85) for `hse-int8`, no decade worse, at `hse-int8`'s cost.
pub const DEFAULT_AGE_MODEL: &str = "hse-utk-int8";
/// This project's own net (models/train/emotion.py, distilled on a GPU), int8: on FER2013 validation 70.52 % against
/// 68.01 % for the mini + big-int8 ensemble (paired z = 3.8), at under half the ensemble's cost per face
/// (docs/ACCURACY.md).
pub const DEFAULT_EMOTION_MODEL: &str = "own-int8";
/// The emotion choice that averages two networks, and the manifest models it runs.
pub const ENSEMBLE: &str = "ensemble";
pub const ENSEMBLE_MODELS: [&str; 2] = ["mini", "big-int8"];

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            onnxruntime_library: None,
            model_dir: None,
            detector_model: DEFAULT_DETECTOR_MODEL.into(),
            age_model: DEFAULT_AGE_MODEL.into(),
            emotion_model: DEFAULT_EMOTION_MODEL.into(),
            age: true,
            emotion: true,
            session: SessionOptions::default(),
        }
    }
}

/// Per-frame settings (the element's PLAYING-time properties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalyzeParams {
    pub detector: DetectorParams,
    pub age: AgeParams,
    pub emotion: EmotionParams,
    pub analyze_age: bool,
    pub analyze_emotion: bool,
    pub analyze_gender: bool,
}

pub const DEFAULT_DETECTION_SIZE: usize = 640;
pub const DEFAULT_THRESHOLD: f32 = 0.6;
pub const DEFAULT_NMS_THRESHOLD: f32 = 0.3;
pub const DEFAULT_MIN_FACE_SIZE: f32 = 16.0;
pub const DEFAULT_MAX_FACES: usize = 64;

impl Default for AnalyzeParams {
    fn default() -> Self {
        Self {
            detector: DetectorParams {
                size: DEFAULT_DETECTION_SIZE,
                threshold: DEFAULT_THRESHOLD,
                nms_threshold: DEFAULT_NMS_THRESHOLD,
                min_face_size: DEFAULT_MIN_FACE_SIZE,
                max_faces: DEFAULT_MAX_FACES,
            },
            age: AgeParams::default(),
            emotion: EmotionParams::default(),
            analyze_age: true,
            analyze_emotion: true,
            analyze_gender: false,
        }
    }
}

/// What one frame's analysis cost and found, besides the faces.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameStats {
    pub detect: DetectStats,
    /// Faces whose age or emotion output was invalid (NaN, out of range) and was dropped.
    pub invalid_outputs: usize,
    pub t_detect: Duration,
    pub t_age: Duration,
    pub t_emotion: Duration,
    /// Classifier runs (one per model per batch).
    pub age_runs: usize,
    pub emotion_runs: usize,
    /// Faces in the largest cross-stream batch this frame's faces were classified in (0: not batched).
    pub batch_faces: usize,
}

/// Writes classifier outputs into `faces` (one per detection, already filled in): `age` and `emotion` hold one entry
/// per face, or are empty when that model did not run.
pub fn assemble(faces: &mut [Face], age: &[AgeOutput], emotion: &[Option<EmotionEstimate>], gender: bool) {
    for (f, a) in faces.iter_mut().zip(age) {
        f.age = a.age;
        f.gender_male = if gender { a.gender_male } else { None };
    }
    for (f, e) in faces.iter_mut().zip(emotion) {
        f.emotion = *e;
    }
}

/// Loaded models plus reusable per-frame buffers.
#[derive(Debug)]
pub struct Analyzer {
    runtime: RuntimeInfo,
    detector: Detector,
    age: Option<AgeModel>,
    emotion: Option<EmotionModel>,
    dets: Vec<Detection>,
    age_out: Vec<AgeOutput>,
    emotion_out: Vec<Option<EmotionEstimate>>,
    /// Scratch of cross-stream batches ([`crate::engine`]): the concatenated inputs of one batch.
    pub(crate) batch_input: Vec<f32>,
    pub(crate) batch_age: Vec<AgeOutput>,
    pub(crate) batch_emotion: Vec<Option<EmotionEstimate>>,
}

fn load_model(
    rt: &RuntimeInfo,
    resolved: &ResolvedModel,
    contract: &models::ModelSpec,
    opts: &SessionOptions,
) -> Result<ModelSession> {
    models::verify_file(&resolved.path, resolved.known.map(|k| k.sha256.as_str()))?;
    let name = resolved.known.map(|k| k.name.clone()).unwrap_or_else(|| resolved.path.display().to_string());
    ModelSession::load(rt, &resolved.path, &name, contract, opts)
}

fn contract(name: &str) -> Result<&'static models::ModelSpec> {
    models::spec(name).ok_or_else(|| InferenceError::ModelChoice(format!("the model manifest lacks '{name}'")))
}

impl Analyzer {
    /// Loads ONNX Runtime and the configured models, verifying each file and its signature.
    pub fn load(cfg: &AnalyzerConfig) -> Result<Self> {
        let rt = runtime::load(cfg.onnxruntime_library.as_deref())?;
        // Unless sessions are limited to one intra-op thread (as for many streams), the detector's pre-processing
        // may take a second logical CPU too.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parallel = cfg.session.threads != 1 && cores > 1;
        let detector = Detector::new(Self::load_detector(&rt, cfg)?, parallel);
        let age = if cfg.age { Some(Self::load_age(&rt, cfg)?) } else { None };
        let emotion = if cfg.emotion { Some(Self::load_emotion(&rt, cfg)?) } else { None };
        Ok(Self {
            runtime: rt,
            detector,
            age,
            emotion,
            dets: Vec::new(),
            age_out: Vec::new(),
            emotion_out: Vec::new(),
            batch_input: Vec::new(),
            batch_age: Vec::new(),
            batch_emotion: Vec::new(),
        })
    }

    fn model_dir(cfg: &AnalyzerConfig) -> PathBuf {
        cfg.model_dir.clone().filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(models::default_model_dir)
    }

    fn load_detector(rt: &RuntimeInfo, cfg: &AnalyzerConfig) -> Result<ModelSession> {
        let r = models::resolve(&cfg.detector_model, "detector", &Self::model_dir(cfg))
            .map_err(InferenceError::ModelChoice)?;
        load_model(rt, &r, contract("yunet")?, &cfg.session)
    }

    fn load_age(rt: &RuntimeInfo, cfg: &AnalyzerConfig) -> Result<AgeModel> {
        let r = models::resolve(&cfg.age_model, "age", &Self::model_dir(cfg)).map_err(InferenceError::ModelChoice)?;
        let kind_of = |name: &str| if name.starts_with("dlib") { AgeKind::Dlib } else { AgeKind::Hse };
        if let Some(k) = r.known {
            let s = load_model(rt, &r, k, &cfg.session)?;
            return Ok(AgeModel::new(s, kind_of(&k.name)));
        }
        // A user-supplied file: accept it under whichever age contract it satisfies.
        match load_model(rt, &r, contract("dlib")?, &cfg.session) {
            Ok(s) => Ok(AgeModel::new(s, AgeKind::Dlib)),
            Err(InferenceError::Signature { reason: dlib_reason, .. }) => {
                match load_model(rt, &r, contract("hse")?, &cfg.session) {
                    Ok(s) => Ok(AgeModel::new(s, AgeKind::Hse)),
                    Err(InferenceError::Signature { path, reason }) => Err(InferenceError::Signature {
                        path,
                        reason: format!("it matches neither age contract (as dlib: {dlib_reason}; as hse: {reason})"),
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn load_emotion(rt: &RuntimeInfo, cfg: &AnalyzerConfig) -> Result<EmotionModel> {
        let dir = Self::model_dir(cfg);
        // int8 `big` scores as fp32 `big` on FER2013 (65.56 vs 65.42 %) at 2.3x its speed; int8 `mini` is slower.
        let names: &[&str] = if cfg.emotion_model == ENSEMBLE { &ENSEMBLE_MODELS } else { &[] };
        let mut sessions = Vec::new();
        if names.is_empty() {
            let r = models::resolve(&cfg.emotion_model, "emotion", &dir).map_err(InferenceError::ModelChoice)?;
            sessions.push(load_model(rt, &r, contract("mini")?, &cfg.session)?);
        } else {
            for n in names {
                let r = models::resolve(n, "emotion", &dir).map_err(InferenceError::ModelChoice)?;
                sessions.push(load_model(rt, &r, contract(n)?, &cfg.session)?);
            }
        }
        Ok(EmotionModel::new(sessions))
    }

    /// The ONNX Runtime library in use.
    pub fn runtime_path(&self) -> &std::path::Path {
        &self.runtime.path
    }

    /// The execution provider the detector runs on (all models use the same request).
    pub fn provider(&self) -> ExecutionProvider {
        self.detector.session().provider
    }

    /// Why the requested GPU provider is not in use, if it is not.
    pub fn provider_fallback(&self) -> Option<&str> {
        self.detector.session().fallback_reason.as_deref()
    }

    pub fn age_kind(&self) -> Option<AgeKind> {
        self.age.as_ref().map(|a| a.kind())
    }

    pub fn has_emotion(&self) -> bool {
        self.emotion.is_some()
    }

    /// Detection only: faces of `frame` into `out`.
    pub fn detect(&mut self, frame: &FrameRef, p: &DetectorParams, out: &mut Vec<Detection>) -> Result<DetectStats> {
        self.detector.detect(frame, p, out)
    }

    /// Classifies `dets` (age and emotion as enabled) and writes one [`Face`] per detection into `faces`.
    pub fn classify(
        &mut self,
        frame: &FrameRef,
        dets: &[Detection],
        p: &AnalyzeParams,
        faces: &mut Vec<Face>,
        stats: &mut FrameStats,
    ) -> Result<()> {
        faces.clear();
        faces.extend(dets.iter().map(|&detection| Face { detection, ..Default::default() }));
        if dets.is_empty() {
            return Ok(());
        }
        if let (true, Some(age)) = (p.analyze_age, self.age.as_mut()) {
            let t = Instant::now();
            stats.invalid_outputs += age.estimate(frame, dets, &p.age, &mut self.age_out)?;
            stats.age_runs += dets.len().div_ceil(crate::inference::MAX_BATCH);
            stats.t_age += t.elapsed();
        }
        if let (true, Some(em)) = (p.analyze_emotion, self.emotion.as_mut()) {
            let t = Instant::now();
            stats.invalid_outputs += em.estimate(frame, dets, &p.emotion, &mut self.emotion_out)?;
            stats.emotion_runs += em.sessions().len() * dets.len().div_ceil(crate::inference::MAX_BATCH);
            stats.t_emotion += t.elapsed();
        }
        let age = if p.analyze_age && self.age.is_some() { &self.age_out[..] } else { &[] };
        let emotion = if p.analyze_emotion && self.emotion.is_some() { &self.emotion_out[..] } else { &[] };
        assemble(faces, age, emotion, p.analyze_gender);
        Ok(())
    }

    /// The age model, for batches prepared elsewhere ([`crate::engine`]).
    pub fn age_model(&mut self) -> Option<&mut AgeModel> {
        self.age.as_mut()
    }

    /// The emotion model, for batches prepared elsewhere ([`crate::engine`]).
    pub fn emotion_model(&mut self) -> Option<&mut EmotionModel> {
        self.emotion.as_mut()
    }

    /// Detects every face in `frame` and classifies them all: the whole per-frame analysis.
    pub fn analyze(&mut self, frame: &FrameRef, p: &AnalyzeParams, faces: &mut Vec<Face>) -> Result<FrameStats> {
        let mut stats = FrameStats::default();
        let t = Instant::now();
        let mut dets = std::mem::take(&mut self.dets);
        let r = self.detector.detect(frame, &p.detector, &mut dets);
        stats.t_detect = t.elapsed();
        let r = r.and_then(|d| {
            stats.detect = d;
            self.classify(frame, &dets, p, faces, &mut stats)
        });
        self.dets = dets;
        r.map(|()| stats)
    }
}
