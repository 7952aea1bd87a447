// SPDX-License-Identifier: MIT OR Apache-2.0
//! Accuracy of the element's own analysis code on labelled data: face detection on FDDB-style folders, age on
//! UTKFace-style folders and emotion on FER2013-style folders.
//!
//! Everything here drives [`Analyzer`] with [`AnalyzeParams`] exactly as the element does (detect, then classify
//! the chosen detections in one call); only the choice of which boxes to classify is the evaluation's own. The
//! `faceanalyze-eval` command is a thin wrapper around [`cli::run`]; tests call the per-task functions directly.

pub mod age;
pub mod calibration;
pub mod calibration_tables;
pub mod cli;
pub mod detect;
pub mod emotion;
pub mod paired;
pub mod plot;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::align::AlignPoints;
use crate::analyzer::{
    AnalyzeParams, Analyzer, AnalyzerConfig, DEFAULT_AGE_MODEL, DEFAULT_DETECTOR_MODEL, DEFAULT_EMOTION_MODEL,
};
use crate::inference::{ExecutionProvider, InferenceError, SessionOptions};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// The folder does not have the layout the sub-command expects.
    #[error("{0}")]
    Layout(String),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(transparent)]
    Analyzer(#[from] InferenceError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io { path: path.to_owned(), source }
}

/// Settings shared by the three sub-commands; `None` fields take the sub-command's default (see each module).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Evaluate only this many items, chosen deterministically (see each loader).
    pub limit: Option<usize>,
    /// `yunet` or a path (the element's `detector-model`).
    pub detector_model: String,
    /// `hse-utk-int8`, `hse-int8`, `hse`, `dlib-int8`, `dlib` or a path (the element's `age-model`).
    pub age_model: String,
    /// `own-int8`, `own`, `ensemble`, `mini`, `big`, `big-int8` or a path (the element's `emotion-model`).
    pub emotion_model: String,
    /// Detection threshold (the element's `threshold`).
    pub threshold: Option<f32>,
    /// Detector input long side, 0 = native (the element's `detection-size`).
    pub detection_size: Option<usize>,
    /// Emotion crop margin ([`crate::inference::emotion::EmotionParams::margin`]).
    pub emotion_margin: Option<f32>,
    /// Mirror averaging for emotion (the element's `emotion-flip`).
    pub emotion_flip: Option<bool>,
    /// HSE crop margin ([`crate::inference::age::AgeParams::hse_margin`]).
    pub age_margin: Option<f32>,
    /// dlib alignment points ([`crate::inference::age::AgeParams::align`]).
    pub align: Option<AlignPoints>,
    /// Emotion: run the detector on each image instead of classifying the whole image.
    pub detect: bool,
    /// ONNX Runtime intra-op threads per model (the element's `threads`; 0 = ONNX Runtime's default).
    pub threads: usize,
    /// Parallel workers, each with its own analyzer (1 = one analyzer, as the element has).
    pub jobs: usize,
    pub provider: ExecutionProvider,
    pub model_dir: Option<PathBuf>,
    pub onnxruntime_library: Option<PathBuf>,
    /// Progress bar on stderr.
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            limit: None,
            detector_model: DEFAULT_DETECTOR_MODEL.into(),
            age_model: DEFAULT_AGE_MODEL.into(),
            emotion_model: DEFAULT_EMOTION_MODEL.into(),
            threshold: None,
            detection_size: None,
            emotion_margin: None,
            emotion_flip: None,
            age_margin: None,
            align: None,
            detect: false,
            threads: 0,
            jobs: 1,
            provider: ExecutionProvider::Cpu,
            model_dir: None,
            onnxruntime_library: None,
            progress: false,
        }
    }
}

impl EvalOptions {
    /// The analyzer configuration (the element's READY-time properties) with only the needed models.
    pub fn analyzer_config(&self, age: bool, emotion: bool) -> AnalyzerConfig {
        let threads = if self.threads == 0 && self.jobs > 1 { 1 } else { self.threads };
        AnalyzerConfig {
            onnxruntime_library: self.onnxruntime_library.clone(),
            model_dir: self.model_dir.clone(),
            detector_model: self.detector_model.clone(),
            age_model: self.age_model.clone(),
            emotion_model: self.emotion_model.clone(),
            age,
            emotion,
            session: SessionOptions { provider: self.provider, threads, ..SessionOptions::default() },
        }
    }

    /// The element's default per-frame parameters with this evaluation's overrides; `detection_size` and
    /// `threshold` are the sub-command's defaults for the fields the options leave unset.
    pub fn params(&self, detection_size: usize, threshold: f32) -> AnalyzeParams {
        let mut p = AnalyzeParams::default();
        p.detector.size = self.detection_size.unwrap_or(detection_size);
        p.detector.threshold = self.threshold.unwrap_or(threshold);
        if let Some(m) = self.emotion_margin {
            p.emotion.margin = m;
        }
        if let Some(f) = self.emotion_flip {
            p.emotion.flip = f;
        }
        if let Some(m) = self.age_margin {
            p.age.hse_margin = m;
        }
        if let Some(a) = self.align {
            p.age.align = a;
        }
        p.analyze_gender = false;
        p
    }
}

pub fn align_name(a: AlignPoints) -> &'static str {
    match a {
        AlignPoints::EyesNose => "eyes-nose",
        AlignPoints::Eyes => "eyes",
    }
}

/// A decoded image as packed RGB.
pub struct RgbImage {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl RgbImage {
    pub fn frame(&self) -> crate::frame::FrameRef<'_> {
        crate::frame::FrameRef::new(&self.data, self.width, self.height, self.width * 3, crate::frame::PixelLayout::Rgb)
            .expect("a decoded image has a consistent size")
    }
}

/// Decodes a JPEG or PNG into RGB; the error is a one-line reason.
pub fn load_image(path: &Path) -> std::result::Result<RgbImage, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    Ok(RgbImage { data: img.into_raw(), width: w as usize, height: h as usize })
}

/// A one-line progress bar on stderr: `\rlabel [#####     ] 123/456`.
pub struct Progress {
    label: String,
    total: usize,
    done: AtomicUsize,
    enabled: bool,
    last: Mutex<Option<Instant>>,
    start: Instant,
}

impl Progress {
    pub fn new(label: &str, total: usize, enabled: bool) -> Self {
        Self {
            label: label.into(),
            total,
            done: AtomicUsize::new(0),
            enabled,
            last: Mutex::new(None),
            start: Instant::now(),
        }
    }

    /// Counts one finished item and redraws at most ten times a second.
    pub fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if done < self.total && last.is_some_and(|t| now.duration_since(t).as_millis() < 100) {
            return;
        }
        *last = Some(now);
        const WIDTH: usize = 30;
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH).min(WIDTH);
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{} {rate:.0}/s",
            self.label,
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.total
        );
        let _ = err.flush();
    }

    pub fn finish(&self) {
        if self.enabled && self.total > 0 {
            eprintln!();
        }
    }
}

/// Runs `f` on every item with `opts.jobs` workers, each owning an analyzer loaded from `cfg`; results come back
/// in item order. The first error stops all workers.
pub fn run_items<T: Sync, R: Send>(
    items: &[T],
    opts: &EvalOptions,
    cfg: &AnalyzerConfig,
    label: &str,
    f: impl Fn(&mut Analyzer, &T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let jobs = opts.jobs.clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The first analyzer is loaded here so that a model or runtime problem is reported once, before any work.
    let first = Analyzer::load(cfg)?;
    let progress = Progress::new(label, items.len(), opts.progress);
    let worker = |mut analyzer: Analyzer| -> Result<Vec<(usize, R)>> {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            match f(&mut analyzer, item) {
                Ok(r) => out.push((i, r)),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            progress.tick();
        }
        Ok(out)
    };
    let results: Vec<Result<Vec<(usize, R)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..jobs)
            .map(|_| {
                s.spawn(|| {
                    let a = Analyzer::load(cfg).inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
                    worker(a)
                })
            })
            .collect();
        let mut all = vec![worker(first)];
        for h in handles {
            all.push(h.join().unwrap_or_else(|_| Err(EvalError::Usage("an evaluation worker panicked".into()))));
        }
        all
    });
    progress.finish();
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for r in results {
        for (i, v) in r? {
            slots[i] = Some(v);
        }
    }
    slots
        .into_iter()
        .collect::<Option<Vec<R>>>()
        .ok_or_else(|| EvalError::Usage("internal error: an item was not evaluated".into()))
}

/// Picks `limit` of `n` items deterministically, spread evenly over the list (all when `limit` is `None` or at
/// least `n`).
pub fn spread_indices(n: usize, limit: Option<usize>) -> Vec<usize> {
    match limit {
        Some(k) if k < n => (0..k).map(|i| i * n / k).collect(),
        _ => (0..n).collect(),
    }
}

/// Writes `value` pretty-printed to `path`, creating the parent folder.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| EvalError::Write { path: path.to_owned(), reason: e.to_string() })?;
    write_text(path, &(text + "\n"))
}

pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::Write { path: path.to_owned(), reason: e.to_string() })?;
    }
    std::fs::write(path, text).map_err(|e| EvalError::Write { path: path.to_owned(), reason: e.to_string() })
}

/// `path` with its extension replaced by `ext` (`report.json` -> `report.csv`).
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    path.with_extension(ext)
}

/// `path` with `suffix` added before its extension (`report.json`, `-confusion`, `png` -> `report-confusion.png`).
pub fn sibling_with_suffix(path: &Path, suffix: &str, ext: &str) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("eval");
    path.with_file_name(format!("{stem}{suffix}.{ext}"))
}

/// Rounds for JSON (keeps reports readable and diffs small).
pub fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// A JSON number, or `null` when not finite.
pub fn num(v: f64, decimals: i32) -> serde_json::Value {
    if v.is_finite() { serde_json::json!(round(v, decimals)) } else { serde_json::Value::Null }
}
