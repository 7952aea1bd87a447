// SPDX-License-Identifier: MIT OR Apache-2.0
//! Age on a UTKFace-style folder: `DIR/manifest.csv` with at least the columns `path` (relative to DIR) and `age`.
//!
//! Each image goes through the element's own steps: the detector on the whole image (UTKFace crops are 200x200, so
//! the default detection size here is 0 = native; the element's 640 would blow the face up past the ~300 px YuNet
//! finds well), the most confident face, then the age model with its own crop or alignment. When no face is found
//! the evaluation uses a fixed box instead (see [`fallback_detection`]) and reports how many images needed it.
//!
//! `--limit N` takes N images spread evenly over the manifest sorted by path. The calibration split is over the
//! evaluated images in that order: even positions fit, odd positions are held back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::calibration;
use super::calibration_tables::{DLIB_CALIBRATION, DLIB_CALIBRATION_21_60, HSE_CALIBRATION, HSE_CALIBRATION_21_60};
use super::paired::{self, PairedErrors};
use super::{EvalError, EvalOptions, Result, align_name, io_err, load_image, num, run_items, spread_indices};
use crate::analyzer::{AnalyzeParams, DEFAULT_THRESHOLD, FrameStats};
use crate::face::{BBox, Detection, Face};
use crate::inference::age::AgeKind;

/// The no-face fallback box, as fractions of the image (x, y, w, h): the middle 60 % of the crop, where UTKFace's
/// aligned crops put the face.
pub const FALLBACK_BOX: [f32; 4] = [0.2, 0.2, 0.6, 0.6];
/// dlib's 5-point template in unit coordinates (eye centres, nose base) plus mouth corners at a typical place; the
/// fallback box's landmarks are these points scaled into the box, so the dlib alignment maps the box onto its chip.
pub const TEMPLATE_LANDMARKS: [[f32; 2]; 5] = [
    [0.752_814, 0.221_233], // image-right eye centre (mean of dlib p0, p1)
    [0.227_330, 0.221_396], // image-left eye centre (mean of dlib p2, p3)
    [0.490_112, 0.627_798], // nose (dlib p4)
    [0.650, 0.820],
    [0.350, 0.820],
];
/// Number of knots of a fitted calibration table (at most).
pub const CALIBRATION_KNOTS: usize = 32;

const CALIBRATION_METHOD_TEXT: &str = "isotonic regression (pool-adjacent-violators) of true age on predicted age \
    over 32 equal-count bins; piecewise linear between knots, constant offset outside";

pub const FALLBACK_TEXT: &str = "no face found at the threshold: the age model was run on a fixed box covering the \
    middle 60 % of the image (x, y, w, h = 0.2, 0.2, 0.6, 0.6 of the crop), with landmarks placed from dlib's \
    5-point template inside that box so the dlib alignment still applies; these images count in every figure";

/// The fallback detection for an image of `width` x `height`.
pub fn fallback_detection(width: usize, height: usize) -> Detection {
    let (w, h) = (width as f32, height as f32);
    let bbox = BBox { x: FALLBACK_BOX[0] * w, y: FALLBACK_BOX[1] * h, w: FALLBACK_BOX[2] * w, h: FALLBACK_BOX[3] * h };
    let landmarks = TEMPLATE_LANDMARKS.map(|p| [bbox.x + p[0] * bbox.w, bbox.y + p[1] * bbox.h]);
    Detection { bbox, score: 0.0, landmarks }
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeItem {
    pub path: PathBuf,
    /// The manifest's path.
    pub rel: String,
    pub age: f32,
}

/// Splits one CSV line (double quotes allowed, `""` inside quotes).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Reads `DIR/manifest.csv`, sorted by path.
pub fn load(dir: &Path) -> Result<Vec<AgeItem>> {
    if !dir.is_dir() {
        return Err(EvalError::Layout(format!("{} is not a folder", dir.display())));
    }
    let manifest = dir.join("manifest.csv");
    if !manifest.is_file() {
        return Err(EvalError::Layout(format!(
            "{} is not a UTKFace-style folder: it has no manifest.csv (columns path, age, ...; paths relative to \
             the folder)",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&manifest).map_err(io_err(&manifest))?;
    let bad = |why: String| EvalError::Layout(format!("{}: {why}", manifest.display()));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad("is empty".into()))?;
    let cols: Vec<String> = csv_fields(header).iter().map(|c| c.trim().to_ascii_lowercase()).collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(pc), Some(ac)) = (col("path"), col("age")) else {
        return Err(bad(format!("the header needs the columns path and age, it has: {}", cols.join(", "))));
    };
    let mut out = Vec::new();
    for (ln, line) in lines {
        let f = csv_fields(line);
        let (Some(rel), Some(age)) = (f.get(pc), f.get(ac)) else {
            return Err(bad(format!("line {} has fewer columns than the header", ln + 1)));
        };
        let age: f32 = age
            .trim()
            .parse()
            .ok()
            .filter(|a: &f32| a.is_finite() && *a >= 0.0)
            .ok_or_else(|| bad(format!("line {}: age {age:?} is not a number of years", ln + 1)))?;
        out.push(AgeItem { path: dir.join(rel.trim()), rel: rel.trim().to_string(), age });
    }
    if out.is_empty() {
        return Err(bad("lists no images".into()));
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Where the classified face came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSource {
    Detected,
    Fallback,
}

/// The analysis of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeRecord {
    pub rel: String,
    pub age: f32,
    /// Predicted age (before any calibration); `None` when the image was unreadable or the output invalid.
    pub pred: Option<f32>,
    pub source: FaceSource,
    pub detection: Detection,
    pub error: Option<String>,
}

/// Detects faces in `frame`, takes the most confident (or the fallback box) and estimates its age, exactly as
/// the element's `analyze` does for that face.
pub fn predict(
    a: &mut crate::analyzer::Analyzer,
    frame: &crate::frame::FrameRef,
    p: &AnalyzeParams,
) -> Result<(Option<f32>, FaceSource, Detection)> {
    let mut dets = Vec::new();
    a.detect(frame, &p.detector, &mut dets)?;
    let (det, source) = match dets.first() {
        Some(d) => (*d, FaceSource::Detected),
        None => (fallback_detection(frame.width, frame.height), FaceSource::Fallback),
    };
    let mut faces: Vec<Face> = Vec::new();
    a.classify(frame, std::slice::from_ref(&det), p, &mut faces, &mut FrameStats::default())?;
    Ok((faces.first().and_then(|f| f.age).map(|e| e.value), source, det))
}

/// Per-decade figures (decades by the true age; 100 and above in one bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct DecadeStats {
    pub label: String,
    pub n: usize,
    pub mae: f64,
    /// Mean signed error, predicted minus true.
    pub bias: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgeMetrics {
    pub n: usize,
    pub mae: f64,
    pub rmse: f64,
    pub bias: f64,
    pub within_5: f64,
    pub within_10: f64,
    pub mae_21_60: f64,
    pub n_21_60: usize,
    pub decades: Vec<DecadeStats>,
}

/// The ages of the 21-60 figures (the target's range).
pub const AGES_21_60: std::ops::RangeInclusive<f32> = 21.0..=60.0;

/// The decade of an age: 0 for 0-9, ..., 10 for 100 and above.
pub fn decade_index(age: f32) -> usize {
    ((age.max(0.0) / 10.0).floor() as usize).min(10)
}

pub fn decade_label(age: f32) -> String {
    let d = decade_index(age);
    if d == 10 { "100+".into() } else { format!("{}-{}", d * 10, d * 10 + 9) }
}

/// Metrics of `(true, predicted)` pairs.
pub fn metrics(pairs: &[(f32, f32)]) -> AgeMetrics {
    let n = pairs.len();
    let mean = |v: &mut dyn Iterator<Item = f64>, n: usize| if n == 0 { f64::NAN } else { v.sum::<f64>() / n as f64 };
    let err = |&(t, p): &(f32, f32)| p as f64 - t as f64;
    let mid: Vec<&(f32, f32)> = pairs.iter().filter(|(t, _)| AGES_21_60.contains(t)).collect();
    let mut decades = Vec::new();
    for d in 0..=10 {
        let in_d: Vec<&(f32, f32)> = pairs.iter().filter(|(t, _)| decade_index(*t) == d).collect();
        if in_d.is_empty() {
            continue;
        }
        decades.push(DecadeStats {
            label: decade_label(d as f32 * 10.0),
            n: in_d.len(),
            mae: mean(&mut in_d.iter().map(|x| err(x).abs()), in_d.len()),
            bias: mean(&mut in_d.iter().map(|x| err(x)), in_d.len()),
        });
    }
    AgeMetrics {
        n,
        mae: mean(&mut pairs.iter().map(|x| err(x).abs()), n),
        rmse: mean(&mut pairs.iter().map(|x| err(x).powi(2)), n).sqrt(),
        bias: mean(&mut pairs.iter().map(err), n),
        within_5: mean(&mut pairs.iter().map(|x| f64::from(u8::from(err(x).abs() <= 5.0))), n),
        within_10: mean(&mut pairs.iter().map(|x| f64::from(u8::from(err(x).abs() <= 10.0))), n),
        mae_21_60: mean(&mut mid.iter().map(|x| err(x).abs()), mid.len()),
        n_21_60: mid.len(),
        decades,
    }
}

impl AgeMetrics {
    pub fn to_json(&self) -> Value {
        let by = |f: &dyn Fn(&DecadeStats) -> Value| -> Map<String, Value> {
            self.decades.iter().map(|d| (d.label.clone(), f(d))).collect()
        };
        json!({
            "n": self.n,
            "mae": num(self.mae, 3),
            "rmse": num(self.rmse, 3),
            "bias": num(self.bias, 3),
            "within_5": num(self.within_5, 4),
            "within_10": num(self.within_10, 4),
            "mae_21_60": num(self.mae_21_60, 3),
            "n_21_60": self.n_21_60,
            "mae_by_decade": by(&|d| num(d.mae, 3)),
            "bias_by_decade": by(&|d| num(d.bias, 3)),
            "count_by_decade": by(&|d| json!(d.n)),
        })
    }
}

/// Which faces a calibration is fitted on. A fit of E[true | predicted] carries the age distribution of the faces
/// it was fitted on: fitted on all of UTKFace (30 % children, many over 60) it pushes middle-aged predictions up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationSet {
    /// Every labelled age.
    All,
    /// Labelled ages 21 to 60 (adults, the CORAL protocol's range).
    Adults,
}

impl CalibrationSet {
    pub fn name(self) -> &'static str {
        match self {
            CalibrationSet::All => "all",
            CalibrationSet::Adults => "21-60",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "all" => Some(CalibrationSet::All),
            "21-60" | "adults" => Some(CalibrationSet::Adults),
            _ => None,
        }
    }

    pub fn contains(self, age: f32) -> bool {
        match self {
            CalibrationSet::All => true,
            CalibrationSet::Adults => AGES_21_60.contains(&age),
        }
    }

    /// The name of the constant in [`super::calibration_tables`].
    pub fn const_name(self, kind: AgeKind) -> &'static str {
        match (kind, self) {
            (AgeKind::Hse, CalibrationSet::All) => "HSE_CALIBRATION",
            (AgeKind::Hse, CalibrationSet::Adults) => "HSE_CALIBRATION_21_60",
            (AgeKind::Dlib, CalibrationSet::All) => "DLIB_CALIBRATION",
            (AgeKind::Dlib, CalibrationSet::Adults) => "DLIB_CALIBRATION_21_60",
        }
    }
}

/// The isotonic calibration measured on a fixed split.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationSplit {
    pub set: CalibrationSet,
    pub table: Vec<(f32, f32)>,
    pub fit_n: usize,
    pub raw: AgeMetrics,
    pub calibrated: AgeMetrics,
}

/// Fits on the even positions of `pairs` (true, predicted) and measures on the odd positions, each half keeping
/// only the labelled ages of `set`.
pub fn calibration_split(pairs: &[(f32, f32)], set: CalibrationSet) -> CalibrationSplit {
    let fit: Vec<(f32, f32)> =
        pairs.iter().step_by(2).filter(|(t, _)| set.contains(*t)).map(|&(t, p)| (p, t)).collect();
    let held: Vec<(f32, f32)> = pairs.iter().skip(1).step_by(2).filter(|(t, _)| set.contains(*t)).copied().collect();
    let table = calibration::fit(&fit, CALIBRATION_KNOTS);
    let cal: Vec<(f32, f32)> = held.iter().map(|&(t, p)| (t, calibration::apply(&table, p))).collect();
    CalibrationSplit { set, fit_n: fit.len(), raw: metrics(&held), calibrated: metrics(&cal), table }
}

/// What the age evaluation does besides measuring.
#[derive(Debug, Clone)]
pub struct AgeTask {
    /// Apply the model's built-in calibration table of this set ([`super::calibration_tables`]) before measuring.
    pub apply_calibration: Option<CalibrationSet>,
    /// The faces the calibration split fits on and is measured on.
    pub calibration_set: CalibrationSet,
    /// Only the images of this part of the fixed training split (see [`TrainSplit`]).
    pub split: Option<TrainSplit>,
}

impl Default for AgeTask {
    fn default() -> Self {
        Self { apply_calibration: None, calibration_set: CalibrationSet::All, split: None }
    }
}

/// The fixed split of a UTKFace-style folder used to train and choose the project's own age models
/// (`models/train/`): images sorted by manifest path; position `i` goes to `train` when `i % 5` is 0, 1 or 2, to
/// `dev` (choices) when it is 3 and to `test` (held back: the reported figure) when it is 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainSplit {
    Train,
    Dev,
    Test,
}

impl TrainSplit {
    pub fn of(position: usize) -> Self {
        match position % 5 {
            0..=2 => TrainSplit::Train,
            3 => TrainSplit::Dev,
            _ => TrainSplit::Test,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TrainSplit::Train => "train",
            TrainSplit::Dev => "dev",
            TrainSplit::Test => "test",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [TrainSplit::Train, TrainSplit::Dev, TrainSplit::Test].into_iter().find(|t| t.name() == s)
    }
}

#[derive(Debug, Clone)]
pub struct AgeReport {
    pub dir: PathBuf,
    pub age_model: String,
    pub kind: AgeKind,
    pub params: AnalyzeParams,
    pub records: Vec<AgeRecord>,
    /// Over every image with a prediction (fallback ones included), after the applied calibration if any.
    pub metrics: AgeMetrics,
    /// Before the applied calibration (only when one was applied).
    pub raw_metrics: Option<AgeMetrics>,
    /// The built-in table applied, if any.
    pub applied: Option<CalibrationSet>,
    /// Over the images whose face was detected.
    pub detected: AgeMetrics,
    pub fallback: AgeMetrics,
    pub split: CalibrationSplit,
    /// The part of the fixed training split evaluated (`None`: every image).
    pub train_split: Option<TrainSplit>,
    pub wall_s: f64,
    pub threads: usize,
    pub jobs: usize,
}

pub fn builtin_table(kind: AgeKind, set: CalibrationSet) -> &'static [(f32, f32)] {
    match (kind, set) {
        (AgeKind::Hse, CalibrationSet::All) => HSE_CALIBRATION,
        (AgeKind::Hse, CalibrationSet::Adults) => HSE_CALIBRATION_21_60,
        (AgeKind::Dlib, CalibrationSet::All) => DLIB_CALIBRATION,
        (AgeKind::Dlib, CalibrationSet::Adults) => DLIB_CALIBRATION_21_60,
    }
}

pub fn evaluate(dir: &Path, opts: &EvalOptions, task: &AgeTask) -> Result<AgeReport> {
    evaluate_items(dir, &items(dir, opts, task)?, opts, task)
}

/// The images an evaluation measures: the manifest sorted by path, the `--split` part of it, `--limit` spread.
pub fn items(dir: &Path, opts: &EvalOptions, task: &AgeTask) -> Result<Vec<AgeItem>> {
    let mut all = load(dir)?;
    if let Some(split) = task.split {
        let mut pos = 0..;
        all.retain(|_| pos.next().map(TrainSplit::of) == Some(split));
    }
    Ok(spread_indices(all.len(), opts.limit).into_iter().map(|i| all[i].clone()).collect())
}

/// [`evaluate`] on images already listed by [`items`] (the command lists them once for `--baseline`'s check too).
pub fn evaluate_items(dir: &Path, items: &[AgeItem], opts: &EvalOptions, task: &AgeTask) -> Result<AgeReport> {
    let start = Instant::now();
    let mut params = opts.params(0, DEFAULT_THRESHOLD);
    params.analyze_age = true;
    params.analyze_emotion = false;
    let cfg = opts.analyzer_config(true, false);
    let kind = OnceLock::new();
    let records = run_items(items, opts, &cfg, "age", |a, item| {
        if let Some(k) = a.age_kind() {
            let _ = kind.set(k);
        }
        let rgb = match load_image(&item.path) {
            Ok(r) => r,
            Err(e) => {
                return Ok(AgeRecord {
                    rel: item.rel.clone(),
                    age: item.age,
                    pred: None,
                    source: FaceSource::Fallback,
                    detection: Detection::default(),
                    error: Some(e),
                });
            }
        };
        let (pred, source, detection) = predict(a, &rgb.frame(), &params)?;
        let error = pred.is_none().then(|| "the age model's output was invalid".to_string());
        Ok(AgeRecord { rel: item.rel.clone(), age: item.age, pred, source, detection, error })
    })?;
    let kind = kind.get().copied().unwrap_or(AgeKind::Hse);
    let table: &[(f32, f32)] = match task.apply_calibration {
        Some(set) => {
            let t = builtin_table(kind, set);
            if t.is_empty() {
                return Err(EvalError::Usage(format!(
                    "there is no built-in calibration table {} for the {} model",
                    set.const_name(kind),
                    kind.name()
                )));
            }
            t
        }
        None => &[],
    };
    let pairs = |filter: &dyn Fn(&AgeRecord) -> bool, cal: bool| -> Vec<(f32, f32)> {
        records
            .iter()
            .filter(|r| filter(r))
            .filter_map(|r| r.pred.map(|p| (r.age, if cal { calibration::apply(table, p) } else { p })))
            .collect()
    };
    let raw_all = pairs(&|_| true, false);
    Ok(AgeReport {
        dir: dir.to_owned(),
        age_model: opts.age_model.clone(),
        kind,
        params,
        metrics: metrics(&pairs(&|_| true, true)),
        raw_metrics: task.apply_calibration.map(|_| metrics(&raw_all)),
        applied: task.apply_calibration,
        detected: metrics(&pairs(&|r| r.source == FaceSource::Detected, true)),
        fallback: metrics(&pairs(&|r| r.source == FaceSource::Fallback && r.error.is_none(), true)),
        split: calibration_split(&raw_all, task.calibration_set),
        train_split: task.split,
        records,
        wall_s: start.elapsed().as_secs_f64(),
        threads: opts.threads,
        jobs: opts.jobs,
    })
}

impl AgeReport {
    pub fn no_face(&self) -> usize {
        self.records.iter().filter(|r| r.source == FaceSource::Fallback && r.pred.is_some()).count()
    }

    pub fn failed(&self) -> Vec<(&str, &str)> {
        self.records.iter().filter_map(|r| r.error.as_deref().map(|e| (r.rel.as_str(), e))).collect()
    }

    pub fn to_json(&self) -> Value {
        let mut v = self.metrics.to_json();
        let o = v.as_object_mut().expect("metrics are an object");
        o.insert(
            "images".into(),
            json!(match self.train_split {
                Some(t) => format!(
                    "{} split: sorted by path, positions i with i % 5 {}",
                    t.name(),
                    match t {
                        TrainSplit::Train => "in 0..=2",
                        TrainSplit::Dev => "= 3",
                        TrainSplit::Test => "= 4",
                    }
                ),
                None => "all".into(),
            }),
        );
        let p = &self.params;
        let n_images = self.records.len();
        let applied = match self.applied {
            Some(set) => json!({
                "table": set.const_name(self.kind),
                "before": self.raw_metrics.as_ref().map(AgeMetrics::to_json),
            }),
            None => Value::Null,
        };
        let knots: Vec<Value> =
            self.split.table.iter().map(|(x, y)| json!([num(*x as f64, 2), num(*y as f64, 2)])).collect();
        let extra = json!({
            "command": "age",
            "dir": self.dir.display().to_string(),
            "images": n_images,
            "settings": {
                "age_model": self.age_model,
                "age_kind": self.kind.name(),
                "hse_margin": p.age.hse_margin,
                "dlib_padding": p.age.dlib_padding,
                "align": align_name(p.age.align),
                "detection_size": p.detector.size,
                "threshold": p.detector.threshold,
                "face": "the most confident detection",
                "threads": self.threads,
                "jobs": self.jobs,
            },
            "no_face": {
                "count": self.no_face(),
                "share": num(self.no_face() as f64 / n_images.max(1) as f64, 4),
                "fallback": FALLBACK_TEXT,
                "mae_of_these": num(self.fallback.mae, 3),
            },
            "failed": self.failed().iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "detected_only": {
                "n": self.detected.n,
                "mae": num(self.detected.mae, 3),
                "mae_21_60": num(self.detected.mae_21_60, 3),
            },
            "calibration_applied": applied,
            "calibration_split": {
                "method": CALIBRATION_METHOD_TEXT,
                "split": "images sorted by manifest path; even positions fit, odd positions held back",
                "ages": self.split.set.name(),
                "fit_n": self.split.fit_n,
                "held_back_n": self.split.raw.n,
                "knots": knots,
                "held_back_raw": self.split.raw.to_json(),
                "held_back_calibrated": self.split.calibrated.to_json(),
            },
            "wall_s": num(self.wall_s, 2),
            "ms_per_image": num(1000.0 * self.wall_s / n_images.max(1) as f64, 2),
        });
        for (k, val) in extra.as_object().expect("object").iter() {
            o.insert(k.clone(), val.clone());
        }
        v
    }

    pub fn table(&self) -> String {
        let m = &self.metrics;
        let p = &self.params;
        let model = match self.kind {
            AgeKind::Hse => format!("{} (hse, margin {})", self.age_model, p.age.hse_margin),
            AgeKind::Dlib => format!("{} (dlib, align {})", self.age_model, align_name(p.age.align)),
        };
        let mut s = format!(
            "Age on {}{} ({} images), model {model}, detection-size {}, threshold {}\n",
            self.dir.display(),
            self.train_split.map(|t| format!(" [{} split]", t.name())).unwrap_or_default(),
            self.records.len(),
            p.detector.size,
            p.detector.threshold
        );
        if let Some(set) = self.applied {
            s += &format!("  (built-in calibration {} applied)\n", set.const_name(self.kind));
        }
        s += &format!("  MAE {:.3}  RMSE {:.3}  bias {:+.3}\n", m.mae, m.rmse, m.bias);
        s += &format!("  MAE ages 21-60 {:.3} (n {})\n", m.mae_21_60, m.n_21_60);
        s += &format!("  within 5 years {:.1} %  within 10 years {:.1} %\n", 100.0 * m.within_5, 100.0 * m.within_10);
        s += &format!(
            "  no face found: {} ({:.1} %), MAE of those {:.2}; detected-only MAE {:.3}\n",
            self.no_face(),
            100.0 * self.no_face() as f64 / self.records.len().max(1) as f64,
            self.fallback.mae,
            self.detected.mae
        );
        s += &format!(
            "  calibration split ({} ages, fit {} / held back {}): held-back MAE {:.3} -> {:.3} calibrated; \
             21-60 {:.3} -> {:.3}\n\n",
            self.split.set.name(),
            self.split.fit_n,
            self.split.raw.n,
            self.split.raw.mae,
            self.split.calibrated.mae,
            self.split.raw.mae_21_60,
            self.split.calibrated.mae_21_60
        );
        s += "  decade      n     MAE    bias  | held-back MAE raw -> calibrated (bias)\n";
        for d in &m.decades {
            let held = self.split.raw.decades.iter().find(|h| h.label == d.label);
            let cal = self.split.calibrated.decades.iter().find(|h| h.label == d.label);
            let right = match (held, cal) {
                (Some(h), Some(c)) => {
                    format!("{:>6.2} ({:+.2}) -> {:>6.2} ({:+.2})", h.mae, h.bias, c.mae, c.bias)
                }
                _ => String::new(),
            };
            s += &format!("  {:<7} {:>5}  {:>6.2}  {:>+6.2}  | {right}\n", d.label, d.n, d.mae, d.bias);
        }
        s += &format!(
            "  wall time {:.1} s ({:.1} ms per image)\n",
            self.wall_s,
            1000.0 * self.wall_s / self.records.len().max(1) as f64
        );
        for (p, e) in self.failed().iter().take(10) {
            s += &format!("  not measured: {p}: {e}\n");
        }
        s
    }

    /// The age the headline figures use for `r`: its prediction, through the applied calibration table if any.
    pub fn reported(&self, r: &AgeRecord) -> Option<f32> {
        let table = self.applied.map(|set| builtin_table(self.kind, set)).unwrap_or_default();
        r.pred.map(|p| if table.is_empty() { p } else { calibration::apply(table, p) })
    }

    /// Per-image predictions as CSV: `path,age,predicted,reported,face,score,x,y,w,h`. `predicted` is the model's
    /// age, `reported` the one the figures use (calibrated with `--calibrate`), both written exactly (shortest text
    /// that reads back as the same f32), so that `--baseline` pairs a run with its own file without a difference.
    pub fn predictions_csv(&self) -> String {
        let mut s = String::from("path,age,predicted,reported,face,score,x,y,w,h\n");
        for r in &self.records {
            let b = r.detection.bbox;
            s += &format!(
                "{},{},{},{},{},{:.4},{:.1},{:.1},{:.1},{:.1}\n",
                r.rel,
                r.age,
                r.pred.map(|p| p.to_string()).unwrap_or_default(),
                self.reported(r).map(|p| p.to_string()).unwrap_or_default(),
                match r.source {
                    FaceSource::Detected => "detected",
                    FaceSource::Fallback => "fallback",
                },
                r.detection.score,
                b.x,
                b.y,
                b.w,
                b.h
            );
        }
        s
    }

    /// The fitted calibration table as Rust source (a `pub const` for [`super::calibration_tables`]).
    pub fn calibration_source(&self, command: &str) -> String {
        let name = self.split.set.const_name(self.kind);
        let ages = match self.split.set {
            CalibrationSet::All => "all labelled ages".to_string(),
            CalibrationSet::Adults => "labelled ages 21-60 only".to_string(),
        };
        let doc = vec![
            format!(
                "{} age calibration: isotonic fit (pool-adjacent-violators, 32 equal-count bins) of the true",
                self.kind.name()
            ),
            format!("age on the predicted age, fitted on {ages}; piecewise linear between knots, constant offset"),
            "outside them.".into(),
            format!("Produced {} by `{command}`", calibration::today()),
            format!(
                "on {} ({} images sorted by path; even positions fit ({}), odd positions held back).",
                self.dir.display(),
                self.records.len(),
                self.split.fit_n
            ),
            format!(
                "Held-back ({}) MAE {:.3} -> {:.3}; ages 21-60 {:.3} -> {:.3}.",
                self.split.set.name(),
                self.split.raw.mae,
                self.split.calibrated.mae,
                self.split.raw.mae_21_60,
                self.split.calibrated.mae_21_60
            ),
        ];
        calibration::rust_source(name, &self.split.table, &doc)
    }
}

/// A predictions CSV of an earlier `faceanalyze-eval age` run (`--baseline`), read and checked before the
/// evaluation starts.
#[derive(Debug, Clone)]
pub struct AgeBaseline {
    pub path: PathBuf,
    /// The column paired on: `reported`, or `predicted` in files written before that column existed.
    pub column: &'static str,
    /// Path relative to DIR -> (labelled age, its age in `column`; `None`: not measured in that run).
    rows: HashMap<String, (f32, Option<f32>)>,
}

/// Reads a `--predictions` CSV of `faceanalyze-eval age`. It pairs on the `reported` column: the age that run's
/// figures used, calibrated if it ran with `--calibrate`. Files written before that column existed pair on
/// `predicted`, which such a run wrote rounded to 3 decimals and uncalibrated (the table says so). The path column
/// is unquoted and may hold commas, so the other columns are counted from the right.
pub fn read_baseline(path: &Path) -> Result<AgeBaseline> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |what: String| EvalError::Layout(format!("{}: {what}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let column = if col("reported").is_some() { "reported" } else { "predicted" };
    let (Some(0), Some(age_col), Some(pred_col)) = (col("path"), col("age"), col(column)) else {
        return Err(bad(
            "not a predictions CSV of `faceanalyze-eval age --predictions` (header path,age,predicted,...)".into(),
        ));
    };
    let number = |line_no: usize, what: &str, v: &str| {
        v.parse()
            .ok()
            .filter(|a: &f32| a.is_finite())
            .ok_or_else(|| bad(format!("line {line_no}: {what} {v:?} is not a number of years")))
    };
    let mut rows = HashMap::new();
    for row in paired::rows_from_right(path, header.len(), lines) {
        let (line_no, fields) = row?;
        let age = number(line_no, "age", fields[age_col])?;
        // Empty: not measured in that run (unreadable image or invalid model output); its label is still checked.
        let value = match fields[pred_col] {
            "" => None,
            v => Some(number(line_no, column, v)?),
        };
        if rows.insert(fields[0].to_string(), (age, value)).is_some() {
            return Err(bad(format!("line {line_no}: {} appears twice", fields[0])));
        }
    }
    if !rows.values().any(|(_, v)| v.is_some()) {
        return Err(bad("no measured image in it".into()));
    }
    Ok(AgeBaseline { path: path.to_owned(), column, rows })
}

impl AgeBaseline {
    /// Before the run: the images it will measure must carry the baseline's labels, and some must be in it.
    pub fn check(&self, items: &[AgeItem]) -> Result<()> {
        paired::check_shared_labels(
            &self.path,
            items.iter().map(|i| (i.rel.as_str(), self.rows.get(&i.rel).map(|r| r.0), i.age)),
        )
    }
}

/// This run against an earlier run's predictions, image by image: overall, ages 21-60 and by decade.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeComparison {
    pub baseline: PathBuf,
    /// The baseline's column paired on (see [`AgeBaseline::column`]).
    pub column: &'static str,
    pub all: PairedErrors,
    pub mid: PairedErrors,
    /// By decade of the labelled age, youngest first.
    pub decades: Vec<(String, PairedErrors)>,
    /// This run's measured images that the baseline does not have, or has without a prediction.
    pub missing: usize,
    /// The baseline's measured images that this run did not measure.
    pub extra: usize,
}

impl AgeReport {
    /// Pairs this run's measured images (reported ages) with the rows of `baseline` by path, after
    /// [`AgeBaseline::check`] on the same images.
    pub fn compare(&self, baseline: &AgeBaseline) -> AgeComparison {
        let mut cmp = AgeComparison {
            baseline: baseline.path.clone(),
            column: baseline.column,
            all: PairedErrors::default(),
            mid: PairedErrors::default(),
            decades: Vec::new(),
            missing: 0,
            extra: 0,
        };
        let mut paired_paths = std::collections::HashSet::new();
        let mut decades: Vec<Option<PairedErrors>> = vec![None; 11];
        for r in &self.records {
            let Some(this) = self.reported(r) else { continue };
            let Some(&(_, Some(base))) = baseline.rows.get(&r.rel).filter(|(age, _)| *age == r.age) else {
                cmp.missing += 1;
                continue;
            };
            paired_paths.insert(r.rel.as_str());
            let (t, b) = ((this as f64 - r.age as f64).abs(), (base as f64 - r.age as f64).abs());
            cmp.all.add(t, b);
            if AGES_21_60.contains(&r.age) {
                cmp.mid.add(t, b);
            }
            decades[decade_index(r.age)].get_or_insert_with(PairedErrors::default).add(t, b);
        }
        cmp.extra =
            baseline.rows.iter().filter(|(rel, (_, v))| v.is_some() && !paired_paths.contains(rel.as_str())).count();
        cmp.decades = decades
            .into_iter()
            .enumerate()
            .filter_map(|(d, e)| e.map(|e| (decade_label(d as f32 * 10.0), e)))
            .collect();
        cmp
    }
}

impl AgeComparison {
    pub fn table(&self) -> String {
        let mut s = format!(
            "\n  paired against {} ({} images in both; its `{}` column",
            self.baseline.display(),
            self.all.n,
            self.column
        );
        if self.column == "predicted" {
            s += ", an older file: rounded to 3 decimals, and uncalibrated if that run used --calibrate";
        }
        if self.missing > 0 {
            s += &format!("; {} of this run's not measured there", self.missing);
        }
        if self.extra > 0 {
            s += &format!("; {} of its images not measured here", self.extra);
        }
        s += ")\n";
        s += &format!(
            "  {:<7} {:>5}  {:>8}  {:>8}  {:>7}  {:>18}  {:>6}  {:>7}  {:>6} {:>6} {:>5}  {:>8}\n",
            "ages",
            "n",
            "MAE this",
            "baseline",
            "gain",
            "95 % interval",
            "t",
            "p (t)",
            "closer",
            "base",
            "tie",
            "p (sign)"
        );
        let rows = [("all", &self.all), ("21-60", &self.mid)]
            .into_iter()
            .chain(self.decades.iter().map(|(l, e)| (l.as_str(), e)));
        for (name, e) in rows {
            let (lo, hi) = e.ci95();
            s += &format!(
                "  {name:<7} {:>5}  {:>8.3}  {:>8.3}  {:>+7.3}  {:>18}  {:>6.2}  {:>7}  {:>6} {:>6} {:>5}  {:>8}\n",
                e.n,
                e.mae_this(),
                e.mae_baseline(),
                e.gain(),
                format!("[{lo:+.3}, {hi:+.3}]"),
                e.t(),
                paired::fmt_p(e.p_t()),
                e.closer_this,
                e.closer_baseline,
                e.ties,
                paired::fmt_p(e.p_sign())
            );
        }
        s += "  (gain: the baseline's MAE minus this run's, > 0: this run better, with its 95 % interval; t and p (t): \
              Student's paired t\n   test of the gain; closer / base / tie: images where this run, the baseline, or \
              neither was closer; p (sign): exact sign test)\n";
        s
    }

    pub fn to_json(&self) -> Value {
        let one = |e: &PairedErrors| {
            let (lo, hi) = e.ci95();
            json!({
                "images": e.n,
                "mae": num(e.mae_this(), 4),
                "mae_baseline": num(e.mae_baseline(), 4),
                "gain": num(e.gain(), 4),
                "gain_ci95": [num(lo, 4), num(hi, 4)],
                "t": num(e.t(), 3),
                "p_t": if e.p_t().is_nan() { Value::Null } else { json!(e.p_t()) },
                "closer_this": e.closer_this,
                "closer_baseline": e.closer_baseline,
                "ties": e.ties,
                "p_sign_exact": e.p_sign(),
            })
        };
        let by: Map<String, Value> = self.decades.iter().map(|(l, e)| (l.clone(), one(e))).collect();
        json!({
            "file": self.baseline.display().to_string(),
            "column": self.column,
            "missing_from_baseline": self.missing,
            "not_measured_here": self.extra,
            "all": one(&self.all),
            "ages_21_60": one(&self.mid),
            "by_decade": by,
        })
    }
}
