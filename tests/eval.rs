// SPDX-License-Identifier: MIT OR Apache-2.0
//! The evaluation command (`gstfaceanalyze::eval`, `faceanalyze-eval`) on tiny folders built from the shared data:
//! its numbers equal those computed here from the analyzer's own per-item predictions, and equal known values
//! where the labels are constructed from those predictions; wrong layouts fail with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gstfaceanalyze::analyzer::{AnalyzeParams, Analyzer};
use gstfaceanalyze::eval::{self, EvalError, EvalOptions};
use gstfaceanalyze::face::{BBox, Detection, EMOTIONS, Face, NUM_EMOTIONS};
use gstfaceanalyze::frame::FrameRef;

const BIN: &str = env!("CARGO_BIN_EXE_faceanalyze-eval");

/// One thread, CPU, no progress bar: the same settings as `common::analyzer`, so results agree bit for bit.
fn opts() -> EvalOptions {
    EvalOptions { threads: 1, jobs: 1, progress: false, ..EvalOptions::default() }
}

fn link_or_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    #[cfg(unix)]
    if std::os::unix::fs::symlink(src, dst).is_ok() {
        return;
    }
    std::fs::copy(src, dst).unwrap();
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn run_bin(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().expect("run faceanalyze-eval");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// `faceanalyze-eval COMMAND DIR --baseline BASELINE`: its JSON report, after checking that it succeeded and
/// printed the paired table.
fn paired_report(command: &str, dir: &Path, baseline: &Path, extra: &[&str]) -> serde_json::Value {
    let j = dir.join(format!("{command}-paired.json"));
    let mut args =
        vec![command, dir.to_str().unwrap(), "--baseline", baseline.to_str().unwrap(), "--json", j.to_str().unwrap()];
    args.extend(["--threads", "1"].iter().chain(extra));
    let (code, out, err) = run_bin(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paired against"), "{out}");
    serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

// ---------------------------------------------------------------------------------------------------------------
// Wrong layouts (no models needed)

#[test]
fn wrong_layouts_fail_with_a_clear_message() {
    let empty = scratch_dir("eval-empty");
    let e = empty.to_str().unwrap();
    for (cmd, needle) in
        [("detect", "annotations.json"), ("age", "manifest.csv"), ("emotion", "one subfolder per class")]
    {
        let (code, _, err) = run_bin(&[cmd, e]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains(needle) && err.contains(e), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    assert!(matches!(eval::detect::load(&empty), Err(EvalError::Layout(_))));
    assert!(matches!(eval::age::load(&empty), Err(EvalError::Layout(_))));
    assert!(matches!(eval::emotion::load(&empty), Err(EvalError::Layout(_))));

    // A folder that does not exist.
    let (code, _, err) = run_bin(&["age", "/nonexistent/utkface"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a folder"), "{err}");

    // Emotion: a subfolder that is not a class, and the parent of split folders.
    let fer = scratch_dir("eval-fer-bad");
    std::fs::create_dir_all(fer.join("happy")).unwrap();
    std::fs::create_dir_all(fer.join("smiling")).unwrap();
    let err = eval::emotion::load(&fer).unwrap_err().to_string();
    assert!(err.contains("\"smiling\" is not a FER2013 class"), "{err}");
    let parent = scratch_dir("eval-fer-parent");
    std::fs::create_dir_all(parent.join("validation/happy")).unwrap();
    let err = eval::emotion::load(&parent).unwrap_err().to_string();
    assert!(err.contains("holds class folders itself"), "{err}");

    // Age: a manifest without an age column, and an age that is not a number.
    let utk = scratch_dir("eval-utk-bad");
    std::fs::write(utk.join("manifest.csv"), "path,years\na.jpg,3\n").unwrap();
    let err = eval::age::load(&utk).unwrap_err().to_string();
    assert!(err.contains("path and age"), "{err}");
    std::fs::write(utk.join("manifest.csv"), "path,age\na.jpg,three\n").unwrap();
    let err = eval::age::load(&utk).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("three"), "{err}");

    // Detect: a face without geometry, a truncated ellipse list, JSON that is not a list.
    let fddb = scratch_dir("eval-fddb-bad");
    std::fs::write(fddb.join("annotations.json"), r#"[{"image": "a.jpg", "faces": [{"note": 1}]}]"#).unwrap();
    let err = eval::detect::load(&fddb).unwrap_err().to_string();
    assert!(err.contains("neither an ellipse nor bbox_xywh_from_ellipse"), "{err}");
    std::fs::write(fddb.join("annotations.json"), r#"{"faces": 3}"#).unwrap();
    let err = eval::detect::load(&fddb).unwrap_err().to_string();
    assert!(err.contains("expected a list of images"), "{err}");
    std::fs::remove_file(fddb.join("annotations.json")).unwrap();
    std::fs::write(fddb.join("ellipseList.txt"), "img_1\n2\n10 5 0 50 50 1\n").unwrap();
    let err = eval::detect::load(&fddb).unwrap_err().to_string();
    assert!(err.contains("fewer ellipse lines"), "{err}");

    // Bad command lines exit with 2.
    for args in [&["emotion"][..], &["smile", e], &["age", e, "--threshold", "2"], &["detect", e, "--detect"]] {
        let (code, _, err) = run_bin(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure metrics with known answers (no models needed)

#[test]
fn detection_curve_and_ap_by_hand() {
    use eval::detect::{Criterion, Curve, GtFace, Scored, match_image};
    // Two images, three faces; detections 0.9 TP, 0.8 FP, 0.7 TP.
    let c = Curve::new(2, 3, vec![(0.8, false), (0.9, true), (0.7, true)]);
    assert_eq!(c.points.len(), 4);
    assert!((c.tpr_at_fppi(0.0) - 1.0 / 3.0).abs() < 1e-12);
    assert!((c.tpr_at_fppi(0.5) - 2.0 / 3.0).abs() < 1e-12);
    // AP: recall 1/3 at precision 1, recall 2/3 at precision 2/3.
    assert!((c.average_precision() - (1.0 / 3.0 + (1.0 / 3.0) * (2.0 / 3.0))).abs() < 1e-12);
    let p = c.at_threshold(0.75);
    assert_eq!((p.tp, p.fp), (1, 1));
    // Ties form one point.
    let t = Curve::new(1, 2, vec![(0.5, true), (0.5, false), (0.5, true)]);
    assert_eq!(t.points.len(), 2);
    assert!((t.average_precision() - 2.0 / 3.0).abs() < 1e-12);

    // Greedy matching: the more confident box takes the face; each face once; IoU 0.5 is enough.
    let gt = [GtFace { bbox: BBox { x: 0.0, y: 0.0, w: 10.0, h: 10.0 }, ellipse: None }];
    let dets = [
        Scored { bbox: BBox { x: 0.0, y: 0.0, w: 10.0, h: 10.0 }, score: 0.5 },
        Scored { bbox: BBox { x: 0.0, y: 0.0, w: 10.0, h: 5.0 }, score: 0.9 },
    ];
    assert_eq!(match_image(&gt, &dets, Criterion::BoxIou), vec![false, true]);
    let low = [Scored { bbox: BBox { x: 0.0, y: 0.0, w: 10.0, h: 4.9 }, score: 0.9 }];
    assert_eq!(match_image(&gt, &low, Criterion::BoxIou), vec![false]);

    // An FDDB ellipse: its box, and the region IoU of an inscribed ellipse against that box (pi/4).
    let e = eval::detect::Ellipse { major: 87.549_99, minor: 57.012_64, angle: 1.518_436, cx: 236.4994, cy: 111.7199 };
    let b = e.bbox();
    assert!((b.x - 179.4).abs() < 0.1 && (b.y - 24.2).abs() < 0.1, "{b:?}");
    assert!((b.w - 114.2).abs() < 0.1 && (b.h - 175.0).abs() < 0.1, "{b:?}");
    let upright = eval::detect::Ellipse { major: 50.0, minor: 30.0, angle: 0.0, cx: 100.0, cy: 100.0 };
    let iou = upright.region_iou(&upright.bbox());
    assert!((iou - std::f32::consts::FRAC_PI_4).abs() < 0.01, "{iou}");
}

#[test]
fn age_and_emotion_metrics_by_hand() {
    let m = eval::age::metrics(&[(5.0, 7.0), (25.0, 20.0), (30.0, 41.0), (65.0, 65.0)]);
    assert!((m.mae - 18.0 / 4.0).abs() < 1e-9);
    assert!((m.bias - (2.0 - 5.0 + 11.0) / 4.0).abs() < 1e-9);
    assert!((m.within_5 - 0.75).abs() < 1e-9 && (m.within_10 - 0.75).abs() < 1e-9);
    assert_eq!(m.n_21_60, 2);
    assert!((m.mae_21_60 - 8.0).abs() < 1e-9);
    let labels: Vec<&str> = m.decades.iter().map(|d| d.label.as_str()).collect();
    assert_eq!(labels, ["0-9", "20-29", "30-39", "60-69"]);
    assert!((m.decades[2].bias - 11.0).abs() < 1e-9);
    assert_eq!(eval::age::decade_label(104.0), "100+");

    let mut p_happy = [0.0f32; NUM_EMOTIONS];
    p_happy[3] = 0.6;
    p_happy[0] = 0.4;
    let mut p_angry_then_sad = [0.0f32; NUM_EMOTIONS];
    p_angry_then_sad[0] = 0.5;
    p_angry_then_sad[4] = 0.3;
    p_angry_then_sad[6] = 0.2;
    // happy right; sad wrong in 7 classes but right among happy/sad/neutral; neutral without a face.
    let m = eval::emotion::metrics(&[(3, Some(p_happy)), (4, Some(p_angry_then_sad)), (6, None)]);
    assert_eq!((m.n, m.correct, m.no_face), (3, 1, 1));
    assert!((m.accuracy - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((m.n_3class, m.correct_3class), (3, 2));
    assert_eq!(m.confusion[4][0], 1);
    assert_eq!(m.confusion[6][NUM_EMOTIONS], 1);
    assert_eq!(m.recall[3], Some(1.0));
    assert_eq!(m.recall[1], None);
}

// ---------------------------------------------------------------------------------------------------------------
// Emotion

/// What the element's analysis says about one FER image classified as the whole crop: computed here from the
/// analyzer directly, with the box worked out independently of the evaluation code.
fn own_crop_probs(a: &mut Analyzer, frame: &FrameRef, p: &AnalyzeParams) -> [f32; NUM_EMOTIONS] {
    let m = p.emotion.margin;
    let (w, h) = (frame.width as f32, frame.height as f32);
    // Grown by m on each side the box must be the whole image: w = bw * (1 + 2m).
    let (bw, bh) = (w / (1.0 + 2.0 * m), h / (1.0 + 2.0 * m));
    let det = Detection { bbox: BBox { x: bw * m, y: bh * m, w: bw, h: bh }, score: 1.0, landmarks: [[0.0; 2]; 5] };
    let mut faces: Vec<Face> = Vec::new();
    a.classify(frame, &[det], p, &mut faces, &mut Default::default()).unwrap();
    faces[0].emotion.expect("emotion").probabilities
}

#[test]
fn emotion_matches_own_predictions_and_a_relabelled_folder() {
    let Some(val) = data_file("fer2013/validation") else { return };
    let Some(mut a) = analyzer(|c| c.age = false) else { return };
    let dir = scratch_dir("eval-fer");
    let mut files = Vec::new(); // (path in the test folder, class index)
    for class in ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"] {
        for (k, src) in sorted_files(&val.join(class)).into_iter().take(3).enumerate() {
            // One file name with a comma: the predictions CSV writes paths unquoted, and --baseline must still
            // read it (columns counted from the right).
            let name = src.file_name().unwrap().to_str().unwrap();
            let name = if class == "fear" && k == 0 { format!("with, comma {name}") } else { name.to_string() };
            let dst = dir.join(class).join(name);
            link_or_copy(&src, &dst);
            files.push((dst, EMOTIONS.iter().position(|e| *e == class).unwrap()));
        }
    }
    let p = AnalyzeParams { analyze_age: false, ..Default::default() };
    let preds: Vec<[f32; NUM_EMOTIONS]> =
        files.iter().map(|(f, _)| own_crop_probs(&mut a, &load_rgb(f).frame(), &p)).collect();
    let n = files.len();
    let correct = files.iter().zip(&preds).filter(|((_, c), pr)| argmax(&pr[..]) == *c).count();
    let three = [3usize, 4, 6];
    let (mut n3, mut c3) = (0, 0);
    for ((_, c), pr) in files.iter().zip(&preds) {
        if let Some(t) = three.iter().position(|x| x == c) {
            n3 += 1;
            c3 += usize::from(argmax(&three.map(|k| pr[k])) == t);
        }
    }

    let r = eval::emotion::evaluate(&dir, &opts()).unwrap();
    let m = &r.metrics;
    eprintln!("{}", r.table());
    assert_eq!((m.n, m.correct, m.n_3class, m.correct_3class), (n, correct, n3, c3));
    assert!((m.accuracy - correct as f64 / n as f64).abs() < 1e-12);
    for rec in &r.records {
        let i = files.iter().position(|(f, _)| f.ends_with(&rec.rel)).expect("record of a test file");
        let got = rec.probs.expect("probabilities");
        for (x, y) in got.iter().zip(&preds[i]) {
            assert!((x - y).abs() <= 1e-6, "{}: {got:?} vs {:?}", rec.rel, preds[i]);
        }
    }
    for (c, name) in EMOTIONS.iter().enumerate() {
        let of_c: Vec<usize> = (0..n).filter(|&i| files[i].1 == c).collect();
        let hits = of_c.iter().filter(|&&i| argmax(&preds[i][..]) == c).count();
        assert_eq!(m.recall[c], Some(hits as f64 / 3.0), "{name}");
        assert_eq!(m.confusion[c].iter().sum::<usize>(), 3);
    }
    // Two workers give the same records.
    let r2 = eval::emotion::evaluate(&dir, &EvalOptions { jobs: 2, ..opts() }).unwrap();
    assert_eq!(r2.records, r.records);

    // Known a priori: put every image into the folder of its own predicted class, except two that go into a
    // wrong folder (one that is not among happy/sad/neutral). Accuracy must be (n - 2) / n and the happy/sad/
    // neutral accuracy 1.
    let relabelled = scratch_dir("eval-fer-relabelled");
    let mut wrong = 0;
    for ((f, _), pr) in files.iter().zip(&preds) {
        let k = argmax(&pr[..]);
        let folder = if wrong < 2 && !three.contains(&k) {
            wrong += 1;
            // A different non-three class.
            [0usize, 1, 2, 5].into_iter().find(|&c| c != k).unwrap()
        } else {
            k
        };
        link_or_copy(f, &relabelled.join(EMOTIONS[folder]).join(f.file_name().unwrap()));
    }
    assert_eq!(wrong, 2, "need two images predicted outside happy/sad/neutral");
    let r = eval::emotion::evaluate(&relabelled, &opts()).unwrap();
    assert_eq!(r.metrics.correct, n - 2);
    assert!((r.metrics.accuracy - (n - 2) as f64 / n as f64).abs() < 1e-12);
    assert_eq!(r.metrics.accuracy_3class, 1.0);

    // With --detect: the detector's most confident face, or "no face" (counted wrong), as computed here.
    let det_opts = EvalOptions { detect: true, ..opts() };
    let r = eval::emotion::evaluate(&dir, &det_opts).unwrap();
    let mut dp = p;
    dp.detector.size = eval::emotion::DETECT_SIZE;
    let (mut no_face, mut right) = (0, 0);
    for (f, c) in &files {
        let img = load_rgb(f);
        let mut dets = Vec::new();
        a.detect(&img.frame(), &dp.detector, &mut dets).unwrap();
        match dets.first() {
            None => no_face += 1,
            Some(d) => {
                let mut faces = Vec::new();
                a.classify(&img.frame(), std::slice::from_ref(d), &dp, &mut faces, &mut Default::default()).unwrap();
                right += usize::from(faces[0].emotion.unwrap().index == *c);
            }
        }
    }
    eprintln!("--detect: {no_face} without a face, {right} right");
    assert_eq!((r.metrics.no_face, r.metrics.correct), (no_face, right));

    // The command writes the report and the heat map.
    let json = dir.join("report.json");
    let (code, out, err) =
        run_bin(&["emotion", dir.to_str().unwrap(), "--json", json.to_str().unwrap(), "--threads", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["accuracy"].as_f64().unwrap(), eval::round(correct as f64 / n as f64, 4));
    for key in ["per_class_recall", "accuracy_3class", "confusion_matrix"] {
        assert!(!v[key].is_null(), "{key} missing: {v}");
    }
    assert_eq!(v["per_class_recall"].as_object().unwrap().len(), 7);
    assert!(dir.join("report.png").is_file());

    // --baseline, paired with this run's own predictions: every image concordant, p = 1.
    let preds_csv = dir.join("preds.csv");
    let (d, pc) = (dir.to_str().unwrap(), preds_csv.to_str().unwrap());
    let (code, out, err) =
        run_bin(&["emotion", d, "--predictions", pc, "--json", json.to_str().unwrap(), "--threads", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let paired_json = |baseline: &Path| paired_report("emotion", &dir, baseline, &[])["baseline"].clone();
    let b = paired_json(&preds_csv);
    for key in ["seven_classes", "three_classes"] {
        assert_eq!((b[key]["only_this_right"].as_u64(), b[key]["only_baseline_right"].as_u64()), (Some(0), Some(0)));
        assert!((b[key]["p_mcnemar_exact"].as_f64().unwrap() - 1.0).abs() < 1e-12, "{b}");
    }
    assert_eq!(b["seven_classes"]["images"].as_u64(), Some(n as u64));
    assert_eq!(b["seven_classes"]["accuracy"], b["seven_classes"]["accuracy_baseline"]);
    assert_eq!(b["three_classes"]["images"].as_u64(), Some(n3 as u64));

    // Known a priori: an edited baseline that gets up to two of this run's wrong images right and up to three of
    // its right ones wrong (one-hot probabilities), all outside happy/sad/neutral so that protocol stays concordant.
    let text = std::fs::read_to_string(&preds_csv).unwrap();
    assert!(text.contains("\nfear/with, comma "), "the file name with a comma is written as it is");
    let (mut made_wrong, mut made_right) = (0, 0);
    let mut edited = String::new();
    for (i, line) in text.lines().enumerate() {
        let f = csv_fields(line);
        let class = EMOTIONS.iter().position(|e| *e == f[1]);
        let mut line = line.to_string();
        if let Some(c) = class.filter(|c| i > 0 && !three.contains(c)) {
            let right = f[2] == f[1];
            // The predicted class and one-hot probabilities for it.
            let predict = |k: usize| {
                let mut cols = vec![EMOTIONS[k]];
                cols.extend((0..NUM_EMOTIONS).map(|j| if j == k { "1" } else { "0" }));
                cols
            };
            let new = if right && made_wrong < 3 {
                made_wrong += 1;
                Some(predict((c + 1) % NUM_EMOTIONS))
            } else if !right && made_right < 2 {
                made_right += 1;
                Some(predict(c))
            } else {
                None
            };
            if let Some(cols) = new {
                line = [&f[..2], &cols[..], &f[10..]].concat().join(",");
            }
        }
        edited += &line;
        edited += "\n";
    }
    assert!(made_wrong > 0 && made_right > 0, "need right and wrong images outside happy/sad/neutral");
    let edited_csv = dir.join("edited.csv");
    std::fs::write(&edited_csv, &edited).unwrap();
    let b = paired_json(&edited_csv);
    let s = &b["seven_classes"];
    assert_eq!(
        (s["only_this_right"].as_u64(), s["only_baseline_right"].as_u64()),
        (Some(made_wrong), Some(made_right))
    );
    let expect = eval::paired::Paired {
        both: correct - made_wrong as usize,
        only_this: made_wrong as usize,
        only_baseline: made_right as usize,
        neither: n - correct - made_right as usize,
    };
    assert_eq!(s["both_right"].as_u64(), Some(expect.both as u64));
    assert!((s["p_mcnemar_exact"].as_f64().unwrap() - expect.p_exact()).abs() < 1e-12, "{s}");
    assert_eq!(b["three_classes"]["only_this_right"].as_u64(), Some(0));

    // A baseline of other labels, without rows, with a half-filled row, or no file at all, fails with a clear
    // message before any image is measured.
    let header = text.lines().next().unwrap();
    let first_row = text.lines().nth(1).unwrap();
    let half =
        csv_fields(first_row).into_iter().enumerate().map(|(i, f)| if i == 4 { "" } else { f }).collect::<Vec<_>>();
    let relabelled = text.replacen(&format!(",{},", first_class_not_surprise(&text)), ",surprise,", 1);
    let cases = [
        ("relabelled.csv", relabelled, "not the same labelled images"),
        ("header.csv", format!("{header}\n"), "no measured image"),
        ("half.csv", format!("{header}\n{}\n", half.join(",")), "of the 7 probabilities"),
    ];
    for (name, content, message) in cases {
        let f = dir.join(name);
        std::fs::write(&f, content).unwrap();
        let (code, out, err) = run_bin(&["emotion", d, "--baseline", f.to_str().unwrap(), "--threads", "1"]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains(message) && !out.contains("accuracy"), "{name}: {out}{err}");
    }
    let (code, out, err) = run_bin(&["emotion", d, "--baseline", dir.join("none.csv").to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cannot read") && !out.contains("accuracy"), "{out}{err}");
}

/// The fields of an emotion predictions CSV line, counted from the right: the path may hold commas.
fn csv_fields(line: &str) -> Vec<&str> {
    let mut f: Vec<&str> = line.rsplitn(14, ',').collect();
    f.reverse();
    assert_eq!(f.len(), 14, "{line}");
    f
}

/// The class of the first data row of a predictions CSV (one that is not `surprise`, so relabelling changes it).
fn first_class_not_surprise(csv: &str) -> &str {
    csv.lines().skip(1).map(|l| csv_fields(l)[1]).find(|c| *c != "surprise").unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Age

/// The element's age for the most confident face of an image (or the fallback box), computed here.
fn age_of(a: &mut Analyzer, frame: &FrameRef, p: &AnalyzeParams) -> (f32, bool) {
    let mut dets = Vec::new();
    a.detect(frame, &p.detector, &mut dets).unwrap();
    let found = !dets.is_empty();
    let det = dets.first().copied().unwrap_or_else(|| {
        // The documented fallback: the middle 60 % of the image.
        let (w, h) = (frame.width as f32, frame.height as f32);
        let mut d = eval::age::fallback_detection(frame.width, frame.height);
        assert_eq!(d.bbox, BBox { x: 0.2 * w, y: 0.2 * h, w: 0.6 * w, h: 0.6 * h });
        d.score = 0.0;
        d
    });
    let mut faces: Vec<Face> = Vec::new();
    a.classify(frame, &[det], p, &mut faces, &mut Default::default()).unwrap();
    (faces[0].age.expect("age").value, found)
}

#[test]
fn age_mae_matches_own_predictions_and_is_exact_for_shifted_labels() {
    let Some(utk) = data_file("utkface") else { return };
    let dir = scratch_dir("eval-utk");
    let picks = [
        "crop_part1/1_0_0_20161219140623097.jpg.chip.jpg",
        "crop_part1/26_0_0_20170102233359482.jpg.chip.jpg",
        "crop_part1/45_0_0_20170104000913421.jpg.chip.jpg",
        "crop_part1/70_0_0_20170104185838254.jpg.chip.jpg",
    ];
    let mut rels: Vec<String> = Vec::new();
    for p in picks {
        let src = utk.join(p);
        if !src.is_file() {
            skip(&format!("{} is absent", src.display()));
            return;
        }
        link_or_copy(&src, &dir.join(p));
        rels.push(p.to_string());
    }
    // A flat gray image has no face: it takes the fallback box.
    image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128])).save(dir.join("crop_part1/blank.png")).unwrap();
    rels.push("crop_part1/blank.png".into());
    rels.sort();

    for model in ["hse", "dlib"] {
        let Some(mut a) = analyzer(|c| {
            c.emotion = false;
            c.age_model = model.into();
        }) else {
            return;
        };
        let mut p = AnalyzeParams { analyze_emotion: false, ..Default::default() };
        p.detector.size = 0;
        let preds: Vec<(f32, bool)> =
            rels.iter().map(|r| age_of(&mut a, &load_rgb(&dir.join(r)).frame(), &p)).collect();
        assert_eq!(preds.iter().filter(|(_, found)| !found).count(), 1, "{model}: only the blank has no face");
        let o = EvalOptions { age_model: model.into(), ..opts() };

        // True labels from the file names: MAE as computed here.
        let truth: Vec<f32> = rels
            .iter()
            .map(|r| {
                let name = r.rsplit('/').next().unwrap();
                name.split('_').next().unwrap().parse().unwrap_or(30.0)
            })
            .collect();
        let mut csv = String::from("path,age,gender\n");
        for (r, t) in rels.iter().zip(&truth) {
            csv += &format!("{r},{t},0\n");
        }
        std::fs::write(dir.join("manifest.csv"), &csv).unwrap();
        let rep = eval::age::evaluate(&dir, &o, &Default::default()).unwrap();
        eprintln!("{}", rep.table());
        let mae: f64 =
            preds.iter().zip(&truth).map(|((p, _), t)| (*p as f64 - *t as f64).abs()).sum::<f64>() / rels.len() as f64;
        assert!((rep.metrics.mae - mae).abs() < 1e-6, "{model}: {} vs {mae}", rep.metrics.mae);
        assert_eq!(rep.no_face(), 1);
        for (rec, (pr, _)) in rep.records.iter().zip(&preds) {
            assert!((rec.pred.unwrap() - pr).abs() < 1e-5, "{model} {}: {:?} vs {pr}", rec.rel, rec.pred);
        }

        // Known a priori: labels = prediction + 3 (positions 0, 2, 4) or - 3 years (1, 3), so MAE = RMSE = 3,
        // bias (predicted - true) = (3 * -3 + 2 * 3) / 5 = -3/5, everything within 5 years. Position 0 is the
        // one-year-old, so no label goes below 0.
        let mut csv = String::from("path,age\n");
        for (i, (r, (pr, _))) in rels.iter().zip(&preds).enumerate() {
            let k = if i % 2 == 0 { 3.0 } else { -3.0 };
            csv += &format!("{r},{:.4}\n", pr + k);
        }
        std::fs::write(dir.join("manifest.csv"), &csv).unwrap();
        let rep = eval::age::evaluate(&dir, &o, &Default::default()).unwrap();
        let m = &rep.metrics;
        assert!((m.mae - 3.0).abs() < 1e-3, "{model}: MAE {}", m.mae);
        assert!((m.rmse - 3.0).abs() < 1e-3, "{model}: RMSE {}", m.rmse);
        assert!((m.bias + 3.0 / 5.0).abs() < 1e-3, "{model}: bias {}", m.bias);
        assert_eq!((m.within_5, m.within_10), (1.0, 1.0));
    }

    // The command writes JSON with the promised fields and the calibration table as Rust.
    let json = dir.join("age.json");
    let rs = dir.join("cal.rs");
    let (code, out, err) = run_bin(&[
        "age",
        dir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--fit-calibration",
        rs.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["mae", "mae_by_decade", "bias_by_decade", "within_5", "within_10", "mae_21_60", "no_face"] {
        assert!(!v[key].is_null(), "{key} missing: {v}");
    }
    assert_eq!(v["no_face"]["count"], 1);
    let src = std::fs::read_to_string(&rs).unwrap();
    assert!(src.contains("pub const HSE_CALIBRATION: &[(f32, f32)] = &["), "{src}");

    // --baseline, paired with this run's own predictions: the same MAE, every image a tie, p = 1.
    let (d, preds) = (dir.to_str().unwrap(), dir.join("age-preds.csv"));
    let (code, out, err) = run_bin(&["age", d, "--predictions", preds.to_str().unwrap(), "--threads", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let paired = |baseline: &Path| {
        let v = paired_report("age", &dir, baseline, &[]);
        (v["mae"].as_f64().unwrap(), v["baseline"].clone())
    };
    let (mae, b) = paired(&preds);
    assert_eq!(b["all"]["images"].as_u64(), Some(5), "{b}");
    assert_eq!((b["all"]["ties"].as_u64(), b["all"]["gain"].as_f64()), (Some(5), Some(0.0)), "{b}");
    assert_eq!((b["all"]["p_sign_exact"].as_f64(), b["all"]["p_t"].as_f64()), (Some(1.0), Some(1.0)), "{b}");
    assert_eq!(b["column"], "reported");
    assert!((b["all"]["mae_baseline"].as_f64().unwrap() - mae).abs() < 1e-3, "{b}");

    // Known a priori: a baseline that reports every labelled age exactly (MAE 0), with one image left out. This
    // run is off on each of the four paired images (checked), so the gain is minus its MAE over them, the baseline
    // is closer on all four and the sign test gives 2 / 2^4.
    let text = std::fs::read_to_string(&preds).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[..4], ["path", "age", "predicted", "reported"]);
    let mut this_err = 0.0;
    let mut edited = String::from(text.lines().next().unwrap());
    for line in text.lines().skip(1).take(4) {
        let mut f: Vec<String> = line.split(',').map(String::from).collect();
        let e = (f[3].parse::<f64>().unwrap() - f[1].parse::<f64>().unwrap()).abs();
        assert!(e > 0.0, "{line}");
        this_err += e;
        f[3] = f[1].clone();
        edited += &format!("\n{}", f.join(","));
    }
    let perfect = dir.join("age-perfect.csv");
    std::fs::write(&perfect, edited + "\n").unwrap();
    let (_, b) = paired(&perfect);
    let all = &b["all"];
    assert_eq!((all["images"].as_u64(), b["missing_from_baseline"].as_u64()), (Some(4), Some(1)), "{b}");
    assert_eq!((all["closer_baseline"].as_u64(), all["closer_this"].as_u64()), (Some(4), Some(0)), "{b}");
    assert_eq!(all["mae_baseline"].as_f64(), Some(0.0), "{b}");
    assert!((all["gain"].as_f64().unwrap() + this_err / 4.0).abs() < 1e-3, "{b} vs {}", this_err / 4.0);
    assert!((all["p_sign_exact"].as_f64().unwrap() - 2.0 / 16.0).abs() < 1e-12, "{b}");

    // With --calibrate, `reported` holds the calibrated ages: a calibrated run pairs with its own file without a
    // difference, and its baseline MAE is that run's (calibrated) MAE, not the uncalibrated one.
    let cal_preds = dir.join("age-cal-preds.csv");
    let (code, out, err) = run_bin(&[
        "age",
        d,
        "--calibrate",
        "all",
        "--predictions",
        cal_preds.to_str().unwrap(),
        "--json",
        dir.join("age-cal.json").to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("age-cal.json")).unwrap()).unwrap();
    let cal_mae = cal["mae"].as_f64().unwrap();
    assert!((cal_mae - mae).abs() > 1e-3, "the calibration changes the MAE: {cal_mae} vs {mae}");
    let b = &paired_report("age", &dir, &cal_preds, &["--calibrate", "all"])["baseline"]["all"];
    assert_eq!((b["ties"].as_u64(), b["gain"].as_f64()), (Some(5), Some(0.0)), "{b}");
    let (_, b) = paired(&cal_preds);
    assert!((b["all"]["mae_baseline"].as_f64().unwrap() - cal_mae).abs() < 1e-3, "{b} vs {cal_mae}");
    assert!(b["all"]["ties"].as_u64() < Some(5), "the uncalibrated run differs from the calibrated file: {b}");

    // A baseline of other labels, or of another command, fails before any measuring; detect has no --baseline.
    let relabelled =
        text.replacen(&format!(",{},", text.lines().nth(1).unwrap().split(',').nth(1).unwrap()), ",99,", 1);
    let other = dir.join("age-other.csv");
    std::fs::write(&other, relabelled).unwrap();
    let (code, out, err) = run_bin(&["age", d, "--baseline", other.to_str().unwrap(), "--threads", "1"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not the same labelled images") && !out.contains("MAE"), "{out}{err}");
    std::fs::write(&other, "path,class,predicted\n").unwrap();
    let (code, _, err) = run_bin(&["age", d, "--baseline", other.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not a predictions CSV of `faceanalyze-eval age"), "{err}");
    let (code, _, err) = run_bin(&["detect", d, "--baseline", preds.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--baseline only applies to the age and emotion"), "{err}");

    // The fixed training split: positions 0-2 of 5 are train, 3 dev, 4 test.
    use eval::age::{AgeTask, TrainSplit};
    for (split, want) in
        [(TrainSplit::Train, &rels[..3]), (TrainSplit::Dev, &rels[3..4]), (TrainSplit::Test, &rels[4..])]
    {
        let task = AgeTask { split: Some(split), ..Default::default() };
        let rep = eval::age::evaluate(&dir, &opts(), &task).unwrap();
        let got: Vec<&str> = rep.records.iter().map(|r| r.rel.as_str()).collect();
        assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>(), "{split:?}");
    }
    let (code, out, err) = run_bin(&["age", dir.to_str().unwrap(), "--split", "dev", "--threads", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[dev split] (1 images)"), "{out}");
    let (code, _, err) = run_bin(&["age", dir.to_str().unwrap(), "--split", "holdout"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected train, dev or test"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Detection

fn ellipse_json(b: &BBox) -> serde_json::Value {
    // The ellipse inscribed in the box (major axis along the longer side).
    let (major, minor, angle) =
        if b.w >= b.h { (b.w / 2.0, b.h / 2.0, 0.0) } else { (b.h / 2.0, b.w / 2.0, std::f32::consts::FRAC_PI_2) };
    serde_json::json!({
        "major_axis_radius": major, "minor_axis_radius": minor, "angle": angle,
        "center_x": b.x + b.w / 2.0, "center_y": b.y + b.h / 2.0,
    })
}

#[test]
fn detection_is_perfect_on_its_own_boxes_and_two_thirds_with_a_bogus_face() {
    let names = ["images/face_recognition/examples/obama.jpg", "images/face_recognition/examples/biden.jpg"];
    let Some(srcs) = names.iter().map(|n| data_file(n)).collect::<Option<Vec<_>>>() else { return };
    let Some(mut a) = analyzer(|c| {
        c.age = false;
        c.emotion = false;
    }) else {
        return;
    };
    let p = AnalyzeParams::default();
    let dir = scratch_dir("eval-fddb");
    let mut boxes = Vec::new();
    for (i, s) in srcs.iter().enumerate() {
        link_or_copy(s, &dir.join(format!("img_{i}.jpg")));
        let mut dets = Vec::new();
        a.detect(&load_rgb(s).frame(), &p.detector, &mut dets).unwrap();
        assert_eq!(dets.len(), 1, "{s:?}: one face at the element's defaults");
        boxes.push(dets[0].bbox);
    }
    let annotations = |bogus: bool| {
        let list: Vec<serde_json::Value> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut faces = vec![
                    serde_json::json!({"ellipse": ellipse_json(b), "bbox_xywh_from_ellipse": [b.x, b.y, b.w, b.h]}),
                ];
                if bogus && i == 1 {
                    // 10x10 in the corner: no detection of at least min-face-size (16 px) can reach IoU 0.5.
                    faces.push(serde_json::json!({"bbox_xywh_from_ellipse": [1.0, 1.0, 10.0, 10.0]}));
                }
                serde_json::json!({"image": format!("img_{i}.jpg"), "faces": faces})
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    };

    std::fs::write(dir.join("annotations.json"), annotations(false)).unwrap();
    let r = eval::detect::evaluate(&dir, &opts()).unwrap();
    eprintln!("{}", r.table());
    let c = &r.curve;
    assert_eq!((c.images, c.faces), (2, 2));
    for (_, f) in eval::detect::FPPI_POINTS {
        assert_eq!(c.tpr_at_fppi(f), 1.0);
    }
    assert_eq!(c.average_precision(), 1.0);
    let op = c.at_threshold(p.detector.threshold);
    assert_eq!((op.tp, op.fp), (2, 0));
    // Ellipses inscribed in the boxes overlap them by pi/4: the FDDB criterion agrees.
    assert_eq!(r.fddb_curve.tpr_at_fppi(eval::detect::FDDB_FPPI), 1.0);

    std::fs::write(dir.join("annotations.json"), annotations(true)).unwrap();
    let r = eval::detect::evaluate(&dir, &opts()).unwrap();
    assert_eq!(r.curve.faces, 3);
    for (_, f) in eval::detect::FPPI_POINTS {
        assert!((r.curve.tpr_at_fppi(f) - 2.0 / 3.0).abs() < 1e-12);
    }
    assert!((r.curve.average_precision() - 2.0 / 3.0).abs() < 1e-12);

    // The official ellipse list (names without .jpg) gives the same.
    std::fs::remove_file(dir.join("annotations.json")).unwrap();
    let mut list = String::new();
    for (i, b) in boxes.iter().enumerate() {
        let e = ellipse_json(b);
        list += &format!(
            "img_{i}\n1\n{} {} {} {} {}  1\n",
            e["major_axis_radius"], e["minor_axis_radius"], e["angle"], e["center_x"], e["center_y"]
        );
    }
    std::fs::write(dir.join("ellipseList.txt"), &list).unwrap();
    let r = eval::detect::evaluate(&dir, &opts()).unwrap();
    assert_eq!(r.curve.faces, 2);
    assert_eq!(r.curve.tpr_at_fppi(0.0), 1.0);
    assert_eq!(r.curve.average_precision(), 1.0);

    // The command: JSON fields, curve CSV and plot next to it.
    let json = dir.join("out/detect.json");
    let (code, out, err) =
        run_bin(&["detect", dir.to_str().unwrap(), "--json", json.to_str().unwrap(), "--threads", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let tpr = v["tpr_at_fppi"].as_object().unwrap();
    for k in ["0", "0.05", "0.1", "1"] {
        assert_eq!(tpr[k].as_f64(), Some(1.0), "{v}");
    }
    assert_eq!(v["average_precision"].as_f64(), Some(1.0));
    assert!(v["fddb_discrete"]["tpr"].as_f64().is_some(), "{v}");
    let csv = std::fs::read_to_string(dir.join("out/detect.csv")).unwrap();
    assert!(csv.starts_with("threshold,tp,fp,tpr,fppi,precision,recall\n"), "{csv}");
    let png = image::open(dir.join("out/detect.png")).unwrap();
    assert!(png.width() > 500 && png.height() > 300);
}
