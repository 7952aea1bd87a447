// SPDX-License-Identifier: MIT OR Apache-2.0
//! Emotion on a FER2013-style split folder: one subfolder per class (angry, disgust, fear, happy, neutral, sad,
//! surprise) of face images (48x48 gray JPEG in FER2013).
//!
//! By default each image is the face crop. The element crops a detection's box grown by the emotion margin `m` on
//! each side, so the evaluation hands it one detection whose box is the image shrunk by the factor 1/(1+2m) about
//! its centre: grown back by the margin, the crop is exactly the whole image, which the model then sees resized to
//! 64x64 as in the element. With `--detect` the detector runs on the image first and the most confident face is
//! classified; images without a face count as wrong.
//!
//! `--limit N` takes the images round-robin over the classes (each class sorted by file name), so a small run
//! has every class about equally.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::paired::{self, Paired};
use super::{EvalError, EvalOptions, Result, io_err, load_image, num, plot, run_items};
use crate::analyzer::{AnalyzeParams, Analyzer, DEFAULT_THRESHOLD, FrameStats};
use crate::face::{BBox, Detection, EMOTIONS, Face, NUM_EMOTIONS};
use crate::frame::FrameRef;

/// Default detector input size with `--detect`: FER images are 48x48 faces filling the frame; YuNet finds more of
/// them when the image is scaled up than at its native size (see docs/ACCURACY.md).
pub const DETECT_SIZE: usize = 160;
/// The classes of the three-class task (happy, sad, neutral) as model output indices.
pub const THREE_CLASSES: [usize; 3] = [3, 4, 6];

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct EmotionItem {
    pub path: PathBuf,
    pub rel: String,
    /// Index into [`EMOTIONS`].
    pub class: usize,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && matches!(
            p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
            Some("jpg" | "jpeg" | "png")
        )
}

/// Reads the class subfolders; images in folder-name order, each class sorted by file name, then interleaved
/// round-robin over the classes.
pub fn load(dir: &Path) -> Result<Vec<EmotionItem>> {
    if !dir.is_dir() {
        return Err(EvalError::Layout(format!("{} is not a folder", dir.display())));
    }
    let names = EMOTIONS.join(", ");
    let mut subdirs: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    subdirs.sort();
    let mut classes: Vec<Vec<EmotionItem>> = Vec::new();
    for (name, path) in &subdirs {
        let Some(class) = EMOTIONS.iter().position(|e| e.eq_ignore_ascii_case(name)) else {
            let hint = if std::fs::read_dir(path)
                .map(|rd| rd.flatten().any(|e| EMOTIONS.iter().any(|c| e.file_name().eq_ignore_ascii_case(c))))
                .unwrap_or(false)
            {
                format!(" ({} holds class folders itself: pass it instead)", path.display())
            } else {
                String::new()
            };
            return Err(EvalError::Layout(format!(
                "{}: subfolder {name:?} is not a FER2013 class; expected one subfolder per class among {names}{hint}",
                dir.display()
            )));
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io_err(path))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_image(p))
            .collect();
        files.sort();
        classes.push(
            files
                .into_iter()
                .map(|p| {
                    let rel = format!("{name}/{}", p.file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
                    EmotionItem { path: p, rel, class }
                })
                .collect(),
        );
    }
    if classes.iter().all(Vec::is_empty) {
        return Err(EvalError::Layout(format!(
            "{} is not a FER2013-style folder: it needs one subfolder per class ({names}) holding .jpg/.png images",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let longest = classes.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for c in &classes {
            if let Some(it) = c.get(i) {
                out.push(it.clone());
            }
        }
    }
    Ok(out)
}

/// The detection whose crop with `margin` is exactly the whole `width` x `height` image.
pub fn whole_image_detection(width: usize, height: usize, margin: f32) -> Detection {
    let (w, h) = (width as f32, height as f32);
    let f = 1.0 / (1.0 + 2.0 * margin);
    let (bw, bh) = (w * f, h * f);
    let bbox = BBox { x: (w - bw) / 2.0, y: (h - bh) / 2.0, w: bw, h: bh };
    Detection { bbox, score: 1.0, landmarks: [[0.0; 2]; 5] }
}

/// Class probabilities for one image, exactly as the element classifies a face, and the detection used: the whole
/// image as the crop, or (with `detect`) the most confident detected face; `(None, None)` when `detect` finds no
/// face.
pub fn predict(
    a: &mut Analyzer,
    frame: &FrameRef,
    p: &AnalyzeParams,
    detect: bool,
) -> Result<(Option<[f32; NUM_EMOTIONS]>, Option<Detection>)> {
    let det = if detect {
        let mut dets = Vec::new();
        a.detect(frame, &p.detector, &mut dets)?;
        match dets.first() {
            Some(d) => *d,
            None => return Ok((None, None)),
        }
    } else {
        whole_image_detection(frame.width, frame.height, p.emotion.margin)
    };
    let mut faces: Vec<Face> = Vec::new();
    a.classify(frame, std::slice::from_ref(&det), p, &mut faces, &mut FrameStats::default())?;
    Ok((faces.first().and_then(|f| f.emotion).map(|e| e.probabilities), Some(det)))
}

/// Outcome for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct EmotionRecord {
    pub rel: String,
    pub class: usize,
    /// `None`: no face (with `--detect`), or unreadable/invalid (then `error` says why).
    pub probs: Option<[f32; NUM_EMOTIONS]>,
    /// The classified box (the detector's with `--detect`).
    pub bbox: Option<BBox>,
    pub error: Option<String>,
}

/// Accuracy figures over labelled predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct EmotionMetrics {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Per class (model order), `None` where the class has no images.
    pub recall: [Option<f64>; NUM_EMOTIONS],
    pub count: [usize; NUM_EMOTIONS],
    /// Rows: true class; columns: predicted class, then "no face".
    pub confusion: [[usize; NUM_EMOTIONS + 1]; NUM_EMOTIONS],
    pub no_face: usize,
    pub n_3class: usize,
    pub correct_3class: usize,
    pub accuracy_3class: f64,
    /// Rows/columns: happy, sad, neutral.
    pub confusion_3class: [[usize; 3]; 3],
}

fn argmax(v: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x.total_cmp(&best.1).is_gt() {
            best = (i, x);
        }
    }
    best.0
}

/// Metrics of `(true class, probabilities or None for no face)`.
pub fn metrics(items: &[(usize, Option<[f32; NUM_EMOTIONS]>)]) -> EmotionMetrics {
    let mut m = EmotionMetrics {
        n: items.len(),
        correct: 0,
        accuracy: f64::NAN,
        recall: [None; NUM_EMOTIONS],
        count: [0; NUM_EMOTIONS],
        confusion: [[0; NUM_EMOTIONS + 1]; NUM_EMOTIONS],
        no_face: 0,
        n_3class: 0,
        correct_3class: 0,
        accuracy_3class: f64::NAN,
        confusion_3class: [[0; 3]; 3],
    };
    for &(class, probs) in items {
        m.count[class] += 1;
        let pred = probs.map(|p| argmax(p.into_iter()));
        match pred {
            Some(k) => m.confusion[class][k] += 1,
            None => {
                m.confusion[class][NUM_EMOTIONS] += 1;
                m.no_face += 1;
            }
        }
        m.correct += usize::from(pred == Some(class));
        if let Some(t) = THREE_CLASSES.iter().position(|&c| c == class) {
            m.n_3class += 1;
            if let Some(p) = probs {
                let k = argmax(THREE_CLASSES.iter().map(|&c| p[c]));
                m.confusion_3class[t][k] += 1;
                m.correct_3class += usize::from(k == t);
            }
        }
    }
    if m.n > 0 {
        m.accuracy = m.correct as f64 / m.n as f64;
    }
    if m.n_3class > 0 {
        m.accuracy_3class = m.correct_3class as f64 / m.n_3class as f64;
    }
    for c in 0..NUM_EMOTIONS {
        if m.count[c] > 0 {
            m.recall[c] = Some(m.confusion[c][c] as f64 / m.count[c] as f64);
        }
    }
    m
}

impl EmotionMetrics {
    /// Mean of the per-class recalls over the classes present.
    pub fn mean_recall(&self) -> f64 {
        let r: Vec<f64> = self.recall.iter().flatten().copied().collect();
        if r.is_empty() { f64::NAN } else { r.iter().sum::<f64>() / r.len() as f64 }
    }
}

#[derive(Debug, Clone)]
pub struct EmotionReport {
    pub dir: PathBuf,
    pub emotion_model: String,
    pub params: AnalyzeParams,
    pub detect: bool,
    pub records: Vec<EmotionRecord>,
    pub metrics: EmotionMetrics,
    pub wall_s: f64,
    pub threads: usize,
    pub jobs: usize,
}

/// The images [`evaluate`] measures: [`load`], cut to `--limit`.
pub fn items(dir: &Path, opts: &EvalOptions) -> Result<Vec<EmotionItem>> {
    let mut items = load(dir)?;
    if let Some(n) = opts.limit {
        items.truncate(n);
    }
    Ok(items)
}

pub fn evaluate(dir: &Path, opts: &EvalOptions) -> Result<EmotionReport> {
    evaluate_items(dir, &items(dir, opts)?, opts)
}

/// [`evaluate`] on images already listed by [`items`] (the command lists them once for `--baseline`'s check too).
pub fn evaluate_items(dir: &Path, items: &[EmotionItem], opts: &EvalOptions) -> Result<EmotionReport> {
    let start = Instant::now();
    let mut params = opts.params(DETECT_SIZE, DEFAULT_THRESHOLD);
    params.analyze_age = false;
    params.analyze_emotion = true;
    let cfg = opts.analyzer_config(false, true);
    let detect = opts.detect;
    let records = run_items(items, opts, &cfg, "emotion", |a, item| {
        let (probs, det, error) = match load_image(&item.path) {
            Ok(rgb) => {
                let (probs, det) = predict(a, &rgb.frame(), &params, detect)?;
                // A missing result with a box can only be an invalid output.
                let error =
                    (probs.is_none() && det.is_some()).then(|| "the emotion model's output was invalid".to_string());
                (probs, det, error)
            }
            Err(e) => (None, None, Some(e)),
        };
        Ok(EmotionRecord { rel: item.rel.clone(), class: item.class, probs, bbox: det.map(|d| d.bbox), error })
    })?;
    let measured: Vec<(usize, Option<[f32; NUM_EMOTIONS]>)> =
        records.iter().filter(|r| r.error.is_none()).map(|r| (r.class, r.probs)).collect();
    Ok(EmotionReport {
        dir: dir.to_owned(),
        emotion_model: opts.emotion_model.clone(),
        params,
        detect,
        metrics: metrics(&measured),
        records,
        wall_s: start.elapsed().as_secs_f64(),
        threads: opts.threads,
        jobs: opts.jobs,
    })
}

const CROP_TEXT: &str = "each image is the face crop: it is classified as one detection whose box is the image \
    shrunk by 1/(1+2*margin) about its centre, so that the element's crop (box grown by the margin on each side) is \
    exactly the whole image, resized to the model's 64x64";
const DETECT_TEXT: &str = "the detector runs on each image and the most confident face is classified; images \
    without a face count as wrong (column \"no face\" of the confusion matrix)";

impl EmotionReport {
    pub fn failed(&self) -> Vec<(&str, &str)> {
        self.records.iter().filter_map(|r| r.error.as_deref().map(|e| (r.rel.as_str(), e))).collect()
    }

    pub fn to_json(&self, confusion_png: Option<&Path>) -> Value {
        let m = &self.metrics;
        let p = &self.params;
        let recall: Map<String, Value> = (0..NUM_EMOTIONS)
            .filter(|&c| m.count[c] > 0)
            .map(|c| (EMOTIONS[c].to_string(), num(m.recall[c].unwrap_or(f64::NAN), 4)))
            .collect();
        let counts: Map<String, Value> = (0..NUM_EMOTIONS)
            .filter(|&c| m.count[c] > 0)
            .map(|c| (EMOTIONS[c].to_string(), json!(m.count[c])))
            .collect();
        let mut columns: Vec<&str> = EMOTIONS.to_vec();
        columns.push("no face");
        json!({
            "command": "emotion",
            "dir": self.dir.display().to_string(),
            "images": m.n,
            "settings": {
                "emotion_model": self.emotion_model,
                "margin": p.emotion.margin,
                "flip": p.emotion.flip,
                "mode": if self.detect { "detect" } else { "own crop" },
                "how": if self.detect { DETECT_TEXT } else { CROP_TEXT },
                "detection_size": self.detect.then_some(p.detector.size),
                "threshold": self.detect.then_some(p.detector.threshold),
                "threads": self.threads,
                "jobs": self.jobs,
            },
            "accuracy": num(m.accuracy, 4),
            "correct": m.correct,
            "per_class_recall": recall,
            "per_class_count": counts,
            "mean_class_recall": num(m.mean_recall(), 4),
            "accuracy_3class": num(m.accuracy_3class, 4),
            "n_3class": m.n_3class,
            "three_classes": THREE_CLASSES.iter().map(|&c| EMOTIONS[c]).collect::<Vec<_>>(),
            "confusion_3class": m.confusion_3class,
            "confusion_matrix": {
                "rows": "true class",
                "columns": columns,
                "classes": EMOTIONS,
                "counts": m.confusion.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
            },
            "no_face": m.no_face,
            "failed": self.failed().iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "confusion_png": confusion_png.map(|p| p.display().to_string()),
            "wall_s": num(self.wall_s, 2),
            "ms_per_image": num(1000.0 * self.wall_s / self.records.len().max(1) as f64, 3),
        })
    }

    pub fn table(&self) -> String {
        let m = &self.metrics;
        let p = &self.params;
        let mut s = format!(
            "Emotion on {} ({} images), model {}, margin {}, flip {}, {}\n",
            self.dir.display(),
            m.n,
            self.emotion_model,
            p.emotion.margin,
            if p.emotion.flip { "on" } else { "off" },
            if self.detect {
                format!("detector first (detection-size {}, threshold {})", p.detector.size, p.detector.threshold)
            } else {
                "each image as the face crop".to_string()
            }
        );
        s += &format!("  accuracy (7 classes)           {:.4}  ({} of {})\n", m.accuracy, m.correct, m.n);
        s += &format!("  mean class recall              {:.4}\n", m.mean_recall());
        s += &format!(
            "  accuracy happy/sad/neutral     {:.4}  ({} of {}, argmax over those 3)\n",
            m.accuracy_3class, m.correct_3class, m.n_3class
        );
        if self.detect {
            s += &format!("  no face found                  {} (counted wrong)\n", m.no_face);
        }
        s += "\n  confusion (rows true, columns predicted)\n  ";
        s += &format!("{:>9}", "");
        for e in EMOTIONS {
            s += &format!("{:>9}", e);
        }
        if self.detect {
            s += &format!("{:>9}", "no face");
        }
        s += "   recall\n";
        for (c, name) in EMOTIONS.iter().enumerate() {
            if m.count[c] == 0 {
                continue;
            }
            s += &format!("  {:>9}", name);
            for k in 0..NUM_EMOTIONS + usize::from(self.detect) {
                s += &format!("{:>9}", m.confusion[c][k]);
            }
            s += &format!("   {:.3}\n", m.recall[c].unwrap_or(f64::NAN));
        }
        s += &format!(
            "  wall time {:.1} s ({:.2} ms per image)\n",
            self.wall_s,
            1000.0 * self.wall_s / self.records.len().max(1) as f64
        );
        for (p, e) in self.failed().iter().take(10) {
            s += &format!("  not measured: {p}: {e}\n");
        }
        s
    }

    /// Per-image predictions as CSV: `path,class,predicted,p_angry,...,p_neutral,x,y,w,h` (the classified box).
    pub fn predictions_csv(&self) -> String {
        let mut s = format!("path,class,predicted,{},x,y,w,h\n", EMOTIONS.map(|e| format!("p_{e}")).join(","));
        for r in &self.records {
            let pred = r.probs.map(|p| EMOTIONS[argmax(p.into_iter())]).unwrap_or(if r.error.is_some() {
                "error"
            } else {
                "no face"
            });
            let probs = match r.probs {
                // Shortest text that reads back as the same f32: a later --baseline recomputes argmaxes from it.
                Some(p) => p.map(|v| format!("{v}")).join(","),
                None => [""; NUM_EMOTIONS].join(","),
            };
            let b =
                r.bbox.map(|b| format!("{:.2},{:.2},{:.2},{:.2}", b.x, b.y, b.w, b.h)).unwrap_or_else(|| ",,,".into());
            s += &format!("{},{},{pred},{probs},{b}\n", r.rel, EMOTIONS[r.class]);
        }
        s
    }

    /// The confusion matrix as a heat map, rows normalised (each cell: share of the true class, and count).
    pub fn confusion_plot(&self) -> image::RgbImage {
        let m = &self.metrics;
        let cols = NUM_EMOTIONS + usize::from(self.detect);
        let cell = 78i64;
        let (left, top) = (110i64, 110i64);
        let width = (left + cell * cols as i64 + 30) as u32;
        let height = (top + cell * NUM_EMOTIONS as i64 + 70) as u32;
        let mut img = plot::canvas(width, height);
        let title = format!(
            "{} ({}), accuracy {:.1} %, happy/sad/neutral {:.1} %",
            self.emotion_model,
            if self.detect { "detector first" } else { "own crops" },
            100.0 * m.accuracy,
            100.0 * m.accuracy_3class
        );
        plot::text(&mut img, width as f32 / 2.0, 24.0, 15.0, plot::Align::Centre, plot::BLACK, &title);
        plot::text(
            &mut img,
            (left + cell * cols as i64 / 2) as f32,
            52.0,
            14.0,
            plot::Align::Centre,
            plot::BLACK,
            "predicted",
        );
        plot::text_vertical(
            &mut img,
            16.0,
            (top + cell * NUM_EMOTIONS as i64 / 2) as f32,
            14.0,
            plot::BLACK,
            "true class",
        );
        for (k, name) in EMOTIONS.iter().copied().chain(["no face"]).take(cols).enumerate() {
            plot::text(
                &mut img,
                (left + cell * k as i64 + cell / 2) as f32,
                (top - 14) as f32,
                13.0,
                plot::Align::Centre,
                plot::BLACK,
                name,
            );
        }
        for (c, name) in EMOTIONS.iter().enumerate() {
            let y0 = top + cell * c as i64;
            plot::text(
                &mut img,
                (left - 8) as f32,
                (y0 + cell / 2) as f32,
                13.0,
                plot::Align::Right,
                plot::BLACK,
                name,
            );
            for k in 0..cols {
                let x0 = left + cell * k as i64;
                let v = if m.count[c] > 0 { m.confusion[c][k] as f64 / m.count[c] as f64 } else { 0.0 };
                plot::fill_rect(&mut img, x0, y0, x0 + cell, y0 + cell, plot::heat(v));
                let ink = if v > 0.5 { plot::WHITE } else { plot::BLACK };
                if m.count[c] > 0 {
                    let (cx, cy) = ((x0 + cell / 2) as f32, (y0 + cell / 2) as f32);
                    plot::text(&mut img, cx, cy - 8.0, 15.0, plot::Align::Centre, ink, &format!("{:.0} %", 100.0 * v));
                    plot::text(
                        &mut img,
                        cx,
                        cy + 12.0,
                        11.0,
                        plot::Align::Centre,
                        ink,
                        &format!("{}", m.confusion[c][k]),
                    );
                }
            }
        }
        let (x1, y1) = ((left + cell * cols as i64) as f32, (top + cell * NUM_EMOTIONS as i64) as f32);
        for (a, b) in [
            ((left as f32, top as f32), (x1, top as f32)),
            ((x1, top as f32), (x1, y1)),
            ((left as f32, y1), (x1, y1)),
            ((left as f32, top as f32), (left as f32, y1)),
        ] {
            plot::line(&mut img, a, b, 1.0, plot::BLACK);
        }
        plot::text(
            &mut img,
            left as f32,
            y1 + 24.0,
            12.0,
            plot::Align::Left,
            plot::BLACK,
            "cells: share of the true class (row), count below",
        );
        img
    }
}

/// This run against the predictions CSV of an earlier run (`--baseline`), image by image.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineComparison {
    pub baseline: PathBuf,
    /// Over the images both runs measured (no read or model error in either).
    pub seven: Paired,
    /// The happy/sad/neutral images among them, each run's argmax over those three.
    pub three: Paired,
    /// This run's measured images that the baseline does not have (or has as `error`).
    pub missing: usize,
    /// Baseline rows whose image this run did not measure.
    pub extra: usize,
}

/// One usable row of a predictions CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BaselineRow {
    class: usize,
    /// The `predicted` column (`None`: no face).
    predicted: Option<usize>,
    probs: Option<[f32; NUM_EMOTIONS]>,
}

/// A predictions CSV of an earlier run, read and checked before the evaluation starts (a bad file fails at once).
#[derive(Debug, Clone)]
pub struct Baseline {
    pub path: PathBuf,
    /// Path relative to DIR -> row (rows with `error` are left out).
    rows: std::collections::HashMap<String, BaselineRow>,
}

/// Reads a `--predictions` CSV of `faceanalyze-eval emotion`. The path column is unquoted and may hold commas, so
/// the other columns are counted from the right (a path with commas parses; a row with extra commas folds them into
/// its path and then matches no image).
pub fn read_baseline(path: &Path) -> Result<Baseline> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |what: String| EvalError::Layout(format!("{}: {what}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(0), Some(class_col), Some(pred_col)) = (col("path"), col("class"), col("predicted")) else {
        return Err(bad(
            "not a predictions CSV of `faceanalyze-eval emotion --predictions` (header path,class,predicted,...)"
                .into(),
        ));
    };
    let mut prob_cols = [0usize; NUM_EMOTIONS];
    for (c, e) in EMOTIONS.iter().enumerate() {
        prob_cols[c] = col(&format!("p_{e}")).ok_or_else(|| bad(format!("no column p_{e}")))?;
    }
    let class_of = |name: &str| EMOTIONS.iter().position(|e| *e == name);
    let mut rows = std::collections::HashMap::new();
    for row in paired::rows_from_right(path, header.len(), lines) {
        let (line_no, fields) = row?;
        let class = class_of(fields[class_col])
            .ok_or_else(|| bad(format!("line {line_no}: unknown class {:?}", fields[class_col])))?;
        let predicted = match fields[pred_col] {
            "error" => continue,
            "no face" => None,
            name => Some(class_of(name).ok_or_else(|| bad(format!("line {line_no}: unknown prediction {name:?}")))?),
        };
        let empty = prob_cols.iter().filter(|&&k| fields[k].is_empty()).count();
        let probs = match (empty, predicted) {
            (NUM_EMOTIONS, None) => None,
            (0, Some(_)) => {
                let mut p = [0f32; NUM_EMOTIONS];
                for (c, &k) in prob_cols.iter().enumerate() {
                    p[c] = fields[k].parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                        bad(format!("line {line_no}: p_{} {:?} is not a finite number", EMOTIONS[c], fields[k]))
                    })?;
                }
                Some(p)
            }
            _ => {
                return Err(bad(format!(
                    "line {line_no}: prediction {:?} with {} of the 7 probabilities (expected all, or none for no \
                     face)",
                    fields[pred_col],
                    NUM_EMOTIONS - empty
                )));
            }
        };
        if rows.insert(fields[0].to_string(), BaselineRow { class, predicted, probs }).is_some() {
            return Err(bad(format!("line {line_no}: {} appears twice", fields[0])));
        }
    }
    if rows.is_empty() {
        return Err(bad("no measured image in it".into()));
    }
    Ok(Baseline { path: path.to_owned(), rows })
}

impl Baseline {
    /// Before the run: the images it will measure must carry the baseline's labels, and some must be in it.
    pub fn check(&self, items: &[EmotionItem]) -> Result<()> {
        paired::check_shared_labels(
            &self.path,
            items.iter().map(|i| (i.rel.as_str(), self.rows.get(&i.rel).map(|r| EMOTIONS[r.class]), EMOTIONS[i.class])),
        )
    }
}

fn right_3(t: usize, probs: Option<[f32; NUM_EMOTIONS]>) -> bool {
    probs.is_some_and(|p| argmax(THREE_CLASSES.iter().map(|&c| p[c])) == t)
}

impl EmotionReport {
    /// Pairs this run's measured images with the rows of `baseline` by path (after [`Baseline::check`] on the same
    /// images). 7 classes: this run's argmax against the baseline's `predicted` column; happy/sad/neutral: each
    /// run's argmax over those three probabilities.
    pub fn compare(&self, baseline: &Baseline) -> BaselineComparison {
        let mut cmp = BaselineComparison {
            baseline: baseline.path.clone(),
            seven: Paired::default(),
            three: Paired::default(),
            missing: 0,
            extra: baseline.rows.len(),
        };
        for r in self.records.iter().filter(|r| r.error.is_none()) {
            let Some(row) = baseline.rows.get(&r.rel).filter(|row| row.class == r.class) else {
                cmp.missing += 1;
                continue;
            };
            cmp.extra -= 1;
            let this_7 = r.probs.is_some_and(|p| argmax(p.into_iter()) == r.class);
            cmp.seven.add(this_7, row.predicted == Some(r.class));
            if let Some(t) = THREE_CLASSES.iter().position(|&c| c == r.class) {
                cmp.three.add(right_3(t, r.probs), right_3(t, row.probs));
            }
        }
        cmp
    }
}

impl BaselineComparison {
    pub fn table(&self) -> String {
        let mut s = format!("\n  paired against {} ({} images in both", self.baseline.display(), self.seven.n());
        if self.missing > 0 {
            s += &format!("; {} of this run's not in it", self.missing);
        }
        if self.extra > 0 {
            s += &format!("; {} of its rows not measured here", self.extra);
        }
        s += ")\n                                this  baseline  only this  only baseline      z   p (McNemar)\n";
        for (name, p) in [("accuracy (7 classes)", &self.seven), ("accuracy happy/sad/neutral", &self.three)] {
            s += &format!(
                "  {name:<27} {:>7.4} {:>9.4} {:>10} {:>14} {:>6.2} {:>13}\n",
                p.accuracy_this(),
                p.accuracy_baseline(),
                p.only_this,
                p.only_baseline,
                p.z(),
                paired::fmt_p(p.p_exact())
            );
        }
        s += "  (z > 0: this run better; p: McNemar's exact two-sided test on the images only one run got right)\n";
        s
    }

    pub fn to_json(&self) -> Value {
        let one = |p: &Paired| {
            json!({
                "images": p.n(),
                "accuracy": num(p.accuracy_this(), 4),
                "accuracy_baseline": num(p.accuracy_baseline(), 4),
                "both_right": p.both,
                "only_this_right": p.only_this,
                "only_baseline_right": p.only_baseline,
                "both_wrong": p.neither,
                "z": num(p.z(), 3),
                "p_mcnemar_exact": p.p_exact(),
            })
        };
        json!({
            "file": self.baseline.display().to_string(),
            "missing_from_baseline": self.missing,
            "not_measured_here": self.extra,
            "seven_classes": one(&self.seven),
            "three_classes": one(&self.three),
        })
    }
}
