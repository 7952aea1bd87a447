// SPDX-License-Identifier: MIT OR Apache-2.0
//! Face detection on an FDDB-style folder: true-positive rate against false positives per image (ROC-like) and
//! average precision, from one detector run per image at a very low threshold.
//!
//! Layout: `DIR/annotations.json` (a list of `{image, width, height, faces: [{ellipse: {major_axis_radius,
//! minor_axis_radius, angle, center_x, center_y}, bbox_xywh_from_ellipse: [x, y, w, h]}]}`, image paths relative to
//! DIR), or the official `DIR/ellipseList.txt` (or `FDDB-fold-*-ellipseList.txt`), whose image names are relative to
//! DIR (or `DIR/images`, `DIR/originalPics`) with `.jpg` appended.
//!
//! Matching: a detection is a true positive when its box has IoU >= 0.5 with the axis-aligned box of a
//! not-yet-matched ellipse, clipped to the image as the detector's boxes are; detections are matched greedily,
//! most confident first, each face at most once. Greedy NMS keeps the same boxes above any threshold whatever lower
//! threshold it ran at, so one run at the sweep threshold (0.05) gives exact results for every higher threshold.
//! The detector runs with the element's `detection-size`, `nms-threshold` and `min-face-size`, and without the
//! `max-faces` cut.
//!
//! The "discrete FDDB score" uses FDDB's own criterion instead: IoU > 0.5 between the detection rectangle and the
//! ellipse region itself (rasterised), reported at 1000 false positives per 2,845 images (0.3515 per image), the
//! operating point papers usually quote. FDDB's tool matches with a maximum-weight bipartite matching; ours is
//! greedy by score, which differs only when boxes compete for faces.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::{EvalError, EvalOptions, Result, io_err, load_image, num, plot, run_items};
use crate::analyzer::{DEFAULT_DETECTION_SIZE, DEFAULT_THRESHOLD};
use crate::face::{BBox, Detection};

/// The low threshold of the single detector run per image.
pub const SWEEP_THRESHOLD: f32 = 0.05;
pub const IOU_MATCH: f32 = 0.5;
/// The false positives per image the `tpr_at_fppi` object reports.
pub const FPPI_POINTS: [(&str, f64); 4] = [("0", 0.0), ("0.05", 0.05), ("0.1", 0.1), ("1", 1.0)];
/// FDDB's customary operating point: 1000 false positives over its 2,845 images.
pub const FDDB_FPPI: f64 = 1000.0 / 2845.0;
/// Thresholds listed in the report's per-threshold table.
pub const TABLE_THRESHOLDS: [f32; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9];

/// An FDDB face ellipse (angle in radians, of the major axis against the x axis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipse {
    pub major: f32,
    pub minor: f32,
    pub angle: f32,
    pub cx: f32,
    pub cy: f32,
}

impl Ellipse {
    /// The axis-aligned bounding box.
    pub fn bbox(&self) -> BBox {
        let (s, c) = self.angle.sin_cos();
        let hw = ((self.major * c).powi(2) + (self.minor * s).powi(2)).sqrt();
        let hh = ((self.major * s).powi(2) + (self.minor * c).powi(2)).sqrt();
        BBox { x: self.cx - hw, y: self.cy - hh, w: 2.0 * hw, h: 2.0 * hh }
    }

    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = dx * c + dy * s;
        let v = -dx * s + dy * c;
        (u / self.major).powi(2) + (v / self.minor).powi(2) <= 1.0
    }

    /// IoU between the ellipse region and a rectangle, by sampling a grid of about 160 x 160 points over their
    /// union's bounding box.
    pub fn region_iou(&self, r: &BBox) -> f32 {
        let e = self.bbox();
        if e.iou(r) <= 0.0 {
            return 0.0;
        }
        let (x0, y0) = (e.x.min(r.x), e.y.min(r.y));
        let (x1, y1) = (e.x2().max(r.x2()), e.y2().max(r.y2()));
        let step = ((x1 - x0).max(y1 - y0) / 160.0).max(1e-3);
        let (mut inter, mut union) = (0u32, 0u32);
        let mut y = y0 + step / 2.0;
        while y < y1 {
            let mut x = x0 + step / 2.0;
            while x < x1 {
                let in_e = self.contains(x, y);
                let in_r = x >= r.x && x < r.x2() && y >= r.y && y < r.y2();
                inter += u32::from(in_e && in_r);
                union += u32::from(in_e || in_r);
                x += step;
            }
            y += step;
        }
        if union == 0 { 0.0 } else { inter as f32 / union as f32 }
    }
}

/// One ground-truth face: the matching box and, when known, the ellipse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtFace {
    pub bbox: BBox,
    pub ellipse: Option<Ellipse>,
}

/// One image of the set.
#[derive(Debug, Clone)]
pub struct DetectImage {
    pub path: PathBuf,
    /// The name as the annotation gives it.
    pub name: String,
    pub faces: Vec<GtFace>,
}

fn layout_help(dir: &Path) -> String {
    format!(
        "{} is not an FDDB-style folder: it needs annotations.json (a list of {{image, faces: [{{ellipse | \
         bbox_xywh_from_ellipse}}]}}) or ellipseList.txt (official FDDB format, image names relative to the folder \
         with .jpg appended)",
        dir.display()
    )
}

/// Reads the folder's annotations (annotations.json first, else the ellipse lists).
pub fn load(dir: &Path) -> Result<Vec<DetectImage>> {
    if !dir.is_dir() {
        return Err(EvalError::Layout(format!("{} is not a folder", dir.display())));
    }
    let json = dir.join("annotations.json");
    if json.is_file() {
        return load_annotations_json(dir, &json);
    }
    let mut lists: Vec<PathBuf> = Vec::new();
    for d in [dir.to_path_buf(), dir.join("FDDB-folds")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "ellipseList.txt" || (name.starts_with("FDDB-fold-") && name.ends_with("-ellipseList.txt")) {
                    lists.push(e.path());
                }
            }
        }
    }
    lists.sort();
    if lists.is_empty() {
        return Err(EvalError::Layout(layout_help(dir)));
    }
    let mut out = Vec::new();
    for l in &lists {
        out.extend(load_ellipse_list(dir, l)?);
    }
    Ok(out)
}

fn f32_field(v: &Value, key: &str) -> Option<f32> {
    v.get(key).and_then(Value::as_f64).map(|x| x as f32)
}

fn load_annotations_json(dir: &Path, path: &Path) -> Result<Vec<DetectImage>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |why: String| EvalError::Layout(format!("{}: {why}", path.display()));
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let list = v
        .as_array()
        .or_else(|| v.get("images").and_then(Value::as_array))
        .ok_or_else(|| bad("expected a list of images (or {\"images\": [...]})".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let name = item
            .get("image")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("entry {i} has no \"image\" path")))?
            .to_string();
        let faces = item
            .get("faces")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("entry {i} ({name}) has no \"faces\" list")))?;
        let mut gt = Vec::with_capacity(faces.len());
        for (j, f) in faces.iter().enumerate() {
            let ellipse = f.get("ellipse").and_then(|e| {
                Some(Ellipse {
                    major: f32_field(e, "major_axis_radius")?,
                    minor: f32_field(e, "minor_axis_radius")?,
                    angle: f32_field(e, "angle")?,
                    cx: f32_field(e, "center_x")?,
                    cy: f32_field(e, "center_y")?,
                })
            });
            let b = ["bbox_xywh_from_ellipse", "bbox_xywh", "bbox"].iter().find_map(|k| {
                let a = f.get(*k)?.as_array()?;
                let v: Vec<f32> = a.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
                (v.len() == 4).then(|| BBox { x: v[0], y: v[1], w: v[2], h: v[3] })
            });
            let bbox = b.or_else(|| ellipse.map(|e| e.bbox())).ok_or_else(|| {
                bad(format!("face {j} of {name} has neither an ellipse nor bbox_xywh_from_ellipse [x, y, w, h]"))
            })?;
            gt.push(GtFace { bbox, ellipse });
        }
        out.push(DetectImage { path: dir.join(&name), name, faces: gt });
    }
    if out.is_empty() {
        return Err(bad("lists no images".into()));
    }
    Ok(out)
}

fn load_ellipse_list(dir: &Path, path: &Path) -> Result<Vec<DetectImage>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |line: usize, why: &str| EvalError::Layout(format!("{} line {}: {why}", path.display(), line + 1));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let mut out = Vec::new();
    while let Some((ln, name)) = lines.next() {
        let name = name.trim().to_string();
        let (cl, count) = lines.next().ok_or_else(|| bad(ln, "image name without a face count"))?;
        let count: usize = count.trim().parse().map_err(|_| bad(cl, "expected the number of faces"))?;
        let mut faces = Vec::with_capacity(count);
        for _ in 0..count {
            let (fl, f) = lines.next().ok_or_else(|| bad(cl, "fewer ellipse lines than the face count"))?;
            let v: Vec<f32> = f.split_whitespace().filter_map(|t| t.parse().ok()).collect();
            if v.len() < 5 {
                return Err(bad(fl, "expected major_radius minor_radius angle center_x center_y [1]"));
            }
            let e = Ellipse { major: v[0], minor: v[1], angle: v[2], cx: v[3], cy: v[4] };
            faces.push(GtFace { bbox: e.bbox(), ellipse: Some(e) });
        }
        let rel = format!("{name}.jpg");
        let path = [dir.join(&rel), dir.join("images").join(&rel), dir.join("originalPics").join(&rel)]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join(&rel));
        out.push(DetectImage { path, name, faces });
    }
    if out.is_empty() {
        return Err(EvalError::Layout(format!("{} lists no images", path.display())));
    }
    Ok(out)
}

/// A detection reduced to what the evaluation needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub bbox: BBox,
    pub score: f32,
}

/// The detector's output for one image, or why the image could not be read.
#[derive(Debug, Clone)]
pub struct ImageResult {
    pub detections: Vec<Scored>,
    /// Width and height of the decoded image.
    pub size: (usize, usize),
    pub error: Option<String>,
}

/// How a detection is compared with a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// IoU >= 0.5 with the face's axis-aligned box (the main metric).
    BoxIou,
    /// IoU > 0.5 with the ellipse region (FDDB's discrete score); falls back to the box without an ellipse.
    EllipseRegion,
}

/// Greedy matching, most confident first (ties keep input order): whether each detection (in input order) is a
/// true positive.
pub fn match_image(gt: &[GtFace], dets: &[Scored], criterion: Criterion) -> Vec<bool> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
    let mut used = vec![false; gt.len()];
    let mut tp = vec![false; dets.len()];
    for i in order {
        let d = &dets[i].bbox;
        let mut best: Option<(usize, f32)> = None;
        for (j, g) in gt.iter().enumerate() {
            if used[j] {
                continue;
            }
            let (iou, ok) = match (criterion, g.ellipse) {
                (Criterion::EllipseRegion, Some(e)) => {
                    let v = e.region_iou(d);
                    (v, v > IOU_MATCH)
                }
                _ => {
                    let v = g.bbox.iou(d);
                    (v, v >= IOU_MATCH)
                }
            };
            if ok && best.is_none_or(|(_, b)| iou > b) {
                best = Some((j, iou));
            }
        }
        if let Some((j, _)) = best {
            used[j] = true;
            tp[i] = true;
        }
    }
    tp
}

/// One operating point: everything at or above `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub threshold: f32,
    pub tp: usize,
    pub fp: usize,
    pub tpr: f64,
    pub fppi: f64,
    /// 1 where nothing is detected yet.
    pub precision: f64,
}

/// TPR against false positives per image, and precision against recall, over all thresholds.
#[derive(Debug, Clone)]
pub struct Curve {
    pub images: usize,
    pub faces: usize,
    /// First point: threshold +inf, nothing detected; then one point per distinct score, descending.
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// Builds the curve from (score, is true positive) pairs of all images.
    pub fn new(images: usize, faces: usize, mut scored: Vec<(f32, bool)>) -> Self {
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let n_img = images.max(1) as f64;
        let point = |threshold, tp: usize, fp: usize| CurvePoint {
            threshold,
            tp,
            fp,
            tpr: if faces == 0 { 0.0 } else { tp as f64 / faces as f64 },
            fppi: fp as f64 / n_img,
            precision: if tp + fp == 0 { 1.0 } else { tp as f64 / (tp + fp) as f64 },
        };
        let mut points = vec![point(f32::INFINITY, 0, 0)];
        let (mut tp, mut fp) = (0, 0);
        let mut i = 0;
        while i < scored.len() {
            let s = scored[i].0;
            while i < scored.len() && scored[i].0 == s {
                if scored[i].1 {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            points.push(point(s, tp, fp));
        }
        Self { images, faces, points }
    }

    /// The highest TPR reachable with at most `fppi` false positives per image.
    pub fn tpr_at_fppi(&self, fppi: f64) -> f64 {
        self.points.iter().filter(|p| p.fppi <= fppi + 1e-12).map(|p| p.tpr).fold(0.0, f64::max)
    }

    /// All-point interpolated average precision (the area under the precision envelope against recall).
    pub fn average_precision(&self) -> f64 {
        if self.faces == 0 {
            return 0.0;
        }
        let pts = &self.points[1..];
        let mut envelope: Vec<f64> = pts.iter().map(|p| p.precision).collect();
        for i in (0..envelope.len().saturating_sub(1)).rev() {
            envelope[i] = envelope[i].max(envelope[i + 1]);
        }
        let mut ap = 0.0;
        let mut prev_recall = 0.0;
        for (p, e) in pts.iter().zip(&envelope) {
            ap += (p.tpr - prev_recall) * e;
            prev_recall = p.tpr;
        }
        ap
    }

    /// The operating point of `threshold` (all detections scoring at least that).
    pub fn at_threshold(&self, threshold: f32) -> CurvePoint {
        let mut best = self.points[0];
        for p in &self.points {
            if p.threshold >= threshold {
                best = *p;
            }
        }
        best.threshold = threshold;
        best
    }

    /// The CSV of all points: `threshold,tp,fp,tpr,fppi,precision,recall`.
    pub fn csv(&self) -> String {
        let mut s = String::from("threshold,tp,fp,tpr,fppi,precision,recall\n");
        for p in &self.points[1..] {
            s += &format!(
                "{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
                p.threshold, p.tp, p.fp, p.tpr, p.fppi, p.precision, p.tpr
            );
        }
        s
    }
}

/// Everything one detection evaluation found.
#[derive(Debug, Clone)]
pub struct DetectReport {
    pub dir: PathBuf,
    pub detection_size: usize,
    pub threshold: f32,
    pub sweep_threshold: f32,
    pub images: Vec<DetectImage>,
    pub results: Vec<ImageResult>,
    /// Main curve (box IoU).
    pub curve: Curve,
    /// FDDB's ellipse-region criterion.
    pub fddb_curve: Curve,
    pub wall_s: f64,
}

/// Runs the detector on every image (first `--limit` images in annotation order) and builds both curves.
pub fn evaluate(dir: &Path, opts: &EvalOptions) -> Result<DetectReport> {
    let mut images = load(dir)?;
    if let Some(n) = opts.limit {
        images.truncate(n);
    }
    let start = Instant::now();
    let base = opts.params(DEFAULT_DETECTION_SIZE, DEFAULT_THRESHOLD);
    let threshold = base.detector.threshold;
    let mut dp = base.detector;
    dp.threshold = SWEEP_THRESHOLD.min(threshold);
    dp.max_faces = 0;
    let cfg = opts.analyzer_config(false, false);
    let results = run_items(&images, opts, &cfg, "detect", |a, img| {
        let rgb = match load_image(&img.path) {
            Ok(r) => r,
            Err(e) => return Ok(ImageResult { detections: Vec::new(), size: (0, 0), error: Some(e) }),
        };
        let mut dets: Vec<Detection> = Vec::new();
        a.detect(&rgb.frame(), &dp, &mut dets)?;
        Ok(ImageResult {
            detections: dets.iter().map(|d| Scored { bbox: d.bbox, score: d.score }).collect(),
            size: (rgb.width, rgb.height),
            error: None,
        })
    })?;
    // The detector's boxes are clipped to the image; so are the faces' boxes (annotations.json has them clipped
    // already, boxes computed from ellipses reaching past the edge are not).
    for (img, r) in images.iter_mut().zip(&results) {
        if r.error.is_none() {
            for f in &mut img.faces {
                f.bbox = f.bbox.clip(r.size.0 as f32, r.size.1 as f32);
            }
        }
    }
    let (curve, fddb_curve) = curves(&images, &results);
    Ok(DetectReport {
        dir: dir.to_owned(),
        detection_size: dp.size,
        threshold,
        sweep_threshold: dp.threshold,
        images,
        results,
        curve,
        fddb_curve,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Both curves from per-image results; unreadable images are left out with their faces.
pub fn curves(images: &[DetectImage], results: &[ImageResult]) -> (Curve, Curve) {
    let mut out = Vec::new();
    for criterion in [Criterion::BoxIou, Criterion::EllipseRegion] {
        let (mut n_img, mut n_faces, mut scored) = (0, 0, Vec::new());
        for (img, r) in images.iter().zip(results) {
            if r.error.is_some() {
                continue;
            }
            n_img += 1;
            n_faces += img.faces.len();
            let tp = match_image(&img.faces, &r.detections, criterion);
            scored.extend(r.detections.iter().zip(tp).map(|(d, t)| (d.score, t)));
        }
        out.push(Curve::new(n_img, n_faces, scored));
    }
    let fddb = out.pop().expect("two curves");
    (out.pop().expect("two curves"), fddb)
}

const MATCHING_TEXT: &str = "greedy by score, each face once; IoU >= 0.5 between the detection box and the \
    ellipse's axis-aligned box clipped to the image";
const FDDB_TEXT: &str =
    "IoU > 0.5 between detection rectangle and ellipse region (FDDB discrete score), greedy matching";

fn point_json(p: &CurvePoint) -> Value {
    json!({
        "threshold": num(p.threshold as f64, 3),
        "tp": p.tp,
        "fp": p.fp,
        "tpr": num(p.tpr, 4),
        "fppi": num(p.fppi, 4),
        "precision": num(p.precision, 4),
    })
}

impl DetectReport {
    /// Every detection of the sweep as CSV: `image,score,x,y,w,h,tp,best_iou` (box criterion; `best_iou` against
    /// any face of the image, matched or not).
    pub fn detections_csv(&self) -> String {
        let mut s = String::from("image,score,x,y,w,h,tp,best_iou\n");
        for (img, r) in self.images.iter().zip(&self.results) {
            let tp = match_image(&img.faces, &r.detections, Criterion::BoxIou);
            for (d, t) in r.detections.iter().zip(tp) {
                let best = img.faces.iter().map(|g| g.bbox.iou(&d.bbox)).fold(0.0f32, f32::max);
                let b = d.bbox;
                s += &format!(
                    "{},{:.4},{:.1},{:.1},{:.1},{:.1},{},{:.3}\n",
                    img.name,
                    d.score,
                    b.x,
                    b.y,
                    b.w,
                    b.h,
                    u8::from(t),
                    best
                );
            }
        }
        s
    }

    pub fn unreadable(&self) -> Vec<(String, String)> {
        self.images
            .iter()
            .zip(&self.results)
            .filter_map(|(i, r)| r.error.as_ref().map(|e| (i.path.display().to_string(), e.clone())))
            .collect()
    }

    pub fn to_json(&self, csv: Option<&Path>, png: Option<&Path>) -> Value {
        let c = &self.curve;
        let tpr_at: serde_json::Map<String, Value> =
            FPPI_POINTS.iter().map(|(k, f)| (k.to_string(), num(c.tpr_at_fppi(*f), 4))).collect();
        let fddb_at: serde_json::Map<String, Value> =
            FPPI_POINTS.iter().map(|(k, f)| (k.to_string(), num(self.fddb_curve.tpr_at_fppi(*f), 4))).collect();
        json!({
            "command": "detect",
            "dir": self.dir.display().to_string(),
            "images": c.images,
            "faces": c.faces,
            "unreadable": self.unreadable().iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "settings": {
                "detection_size": self.detection_size,
                "operating_threshold": self.threshold,
                "sweep_threshold": self.sweep_threshold,
                "iou_match": IOU_MATCH,
                "max_faces": "no limit",
                "matching": MATCHING_TEXT,
            },
            "tpr_at_fppi": tpr_at,
            "average_precision": num(c.average_precision(), 4),
            "operating_point": point_json(&c.at_threshold(self.threshold)),
            "at_thresholds": TABLE_THRESHOLDS.iter().map(|&t| point_json(&c.at_threshold(t))).collect::<Vec<_>>(),
            "fddb_discrete": {
                "criterion": FDDB_TEXT,
                "fppi": num(FDDB_FPPI, 4),
                "tpr": num(self.fddb_curve.tpr_at_fppi(FDDB_FPPI), 4),
                "tpr_at_fppi": fddb_at,
                "average_precision": num(self.fddb_curve.average_precision(), 4),
                "operating_point": point_json(&self.fddb_curve.at_threshold(self.threshold)),
            },
            "curve_csv": csv.map(|p| p.display().to_string()),
            "plot_png": png.map(|p| p.display().to_string()),
            "wall_s": num(self.wall_s, 2),
        })
    }

    /// The readable summary.
    pub fn table(&self) -> String {
        let c = &self.curve;
        let mut s = format!(
            "Detection on {} ({} images, {} faces; detection-size {}, sweep from {})\n",
            self.dir.display(),
            c.images,
            c.faces,
            self.detection_size,
            self.sweep_threshold
        );
        s += &format!("  average precision      {:.4}\n", c.average_precision());
        for (k, f) in FPPI_POINTS {
            s += &format!("  TPR at {k:>4} FP/image   {:.4}\n", c.tpr_at_fppi(f));
        }
        s += &format!(
            "  FDDB discrete score    {:.4} (ellipse-region IoU > 0.5, at {:.3} FP/image)\n\n",
            self.fddb_curve.tpr_at_fppi(FDDB_FPPI),
            FDDB_FPPI
        );
        s += "  threshold    TPR   FP/image  precision     TP     FP\n";
        let mut ts: Vec<f32> = TABLE_THRESHOLDS.to_vec();
        if !ts.contains(&self.threshold) {
            ts.push(self.threshold);
            ts.sort_by(f32::total_cmp);
        }
        for t in ts {
            let p = c.at_threshold(t);
            let mark = if t == self.threshold { " <- operating threshold" } else { "" };
            s += &format!(
                "  {:>9.2}  {:.4}  {:>8.3}  {:>9.4}  {:>5}  {:>5}{mark}\n",
                t, p.tpr, p.fppi, p.precision, p.tp, p.fp
            );
        }
        s += &format!("  wall time {:.1} s\n", self.wall_s);
        for (p, e) in self.unreadable() {
            s += &format!("  unreadable, left out: {p}: {e}\n");
        }
        s
    }

    /// The two-panel plot: TPR against false positives per image (0..1), and precision against recall.
    pub fn plot(&self) -> image::RgbImage {
        let c = &self.curve;
        let mut img = plot::canvas(1000, 480);
        // Zoom the TPR axis to 0.5..1 when the curve lives there (it usually does).
        let (y_lo, y_step) = if c.tpr_at_fppi(0.05) >= 0.6 { (0.5, 0.05) } else { (0.0, 0.1) };
        let roc = plot::Axes {
            left: 80.0,
            top: 40.0,
            right: 460.0,
            bottom: 380.0,
            x_range: (0.0, 1.0),
            y_range: (y_lo, 1.0),
        };
        let pr = plot::Axes {
            left: 590.0,
            top: 40.0,
            right: 970.0,
            bottom: 380.0,
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
        };
        roc.draw(
            &mut img,
            0.1,
            y_step,
            "false positives per image",
            "true positive rate",
            "TPR vs false positives per image",
        );
        pr.draw(
            &mut img,
            0.1,
            0.1,
            "recall",
            "precision",
            &format!("precision-recall (AP {:.3})", c.average_precision()),
        );
        // The ROC as a staircase in FPPI, and the FDDB-criterion curve for comparison.
        for (curve, colour) in [(&self.fddb_curve, plot::ORANGE), (c, plot::BLUE)] {
            let mut pts = Vec::with_capacity(curve.points.len() * 2);
            for w in curve.points.windows(2) {
                pts.push((w[0].fppi, w[0].tpr));
                pts.push((w[1].fppi, w[0].tpr));
            }
            if let Some(l) = curve.points.last() {
                pts.push((l.fppi, l.tpr));
            }
            roc.polyline(&mut img, &pts, 2.0, colour);
        }
        let pr_pts: Vec<(f64, f64)> = c.points[1..].iter().map(|p| (p.tpr, p.precision)).collect();
        pr.polyline(&mut img, &pr_pts, 2.0, plot::BLUE);
        let op = c.at_threshold(self.threshold);
        plot::disc(&mut img, roc.px(op.fppi.min(1.0), op.tpr), 4.0, plot::RED);
        plot::disc(&mut img, pr.px(op.tpr, op.precision), 4.0, plot::RED);
        let legend_y = 455.0;
        plot::line(&mut img, (80.0, legend_y), (105.0, legend_y), 2.0, plot::BLUE);
        plot::text(&mut img, 110.0, legend_y, 13.0, plot::Align::Left, plot::BLACK, "box IoU >= 0.5");
        plot::line(&mut img, (240.0, legend_y), (265.0, legend_y), 2.0, plot::ORANGE);
        plot::text(&mut img, 270.0, legend_y, 13.0, plot::Align::Left, plot::BLACK, "FDDB ellipse IoU > 0.5");
        plot::disc(&mut img, (450.0, legend_y), 4.0, plot::RED);
        let op_text = format!(
            "threshold {} (TPR {:.3}, {:.3} FP/image, precision {:.3})",
            self.threshold, op.tpr, op.fppi, op.precision
        );
        plot::text(&mut img, 460.0, legend_y, 13.0, plot::Align::Left, plot::BLACK, &op_text);
        img
    }
}
