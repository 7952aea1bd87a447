// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `faceanalyze-eval` command line: argument parsing, running one evaluation, printing its table and writing
//! the JSON report and its companions (curve CSV and plot, confusion heat map, per-item predictions).

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EvalError, EvalOptions, Result, age, detect, emotion, plot, sibling, write_json, write_text};
use crate::align::AlignPoints;
use crate::inference::ExecutionProvider;

pub const USAGE: &str = "usage: faceanalyze-eval detect|age|emotion DIR [options]

Measures the element's own analysis (same models, detector, crops and alignment) on labelled data.

  detect DIR    FDDB-style folder: annotations.json or ellipseList.txt; TPR at 0/0.05/0.1/1 false positives per
                image, average precision, FDDB discrete score; curve as CSV and PNG
  age DIR       UTKFace-style folder: manifest.csv (path, age, ...); MAE overall, by decade, ages 21-60, within
                5/10 years, bias by decade; held-back effect of an isotonic calibration
  emotion DIR   FER2013-style split folder: one subfolder per class; 7-class accuracy, per-class recall,
                confusion matrix (table and PNG), happy/sad/neutral accuracy

Options:
  --json FILE             write the JSON report (companions next to it: FILE.csv/.png); without it the curve and
                          heat map go to out/eval-detect.csv/.png and out/eval-emotion.png (out/ as the main
                          command's, created when missing)
  --limit N               only N items (detect: the first N images; age: N spread evenly over the sorted
                          manifest; emotion: round-robin over the classes)
  --detector-model M      yunet | PATH (default yunet)
  --age-model M           hse-utk-int8 | hse-int8 | hse | dlib-int8 | dlib | PATH (default hse-utk-int8)
  --emotion-model M       own-int8 | own | ensemble | mini | big | big-int8 | PATH (default own-int8, the element's)
  --threshold T           detection threshold (default 0.6, the element's; detect: the operating point marked
                          in the report, the sweep always starts at 0.05)
  --detection-size N      detector input long side, 0 = native (default: detect 640 as the element; age 0;
                          emotion --detect 160)
  --emotion-margin M      emotion crop margin per side (default 0.1)
  --emotion-flip          also classify the mirrored crop and average (--no-emotion-flip to force off)
  --age-margin M          HSE crop margin per side (default 0.1)
  --align A               dlib alignment: eyes | eyes-nose (default eyes-nose)
  --detect                emotion: run the detector on each image and classify the most confident face
  --threads N             ONNX Runtime intra-op threads per model (default 0 = ONNX Runtime's choice)
  --jobs N                parallel workers, each with its own analyzer (default 1; with N > 1 and --threads 0
                          each worker gets one thread)
  --provider P            cpu | auto | cuda | tensorrt (default cpu)
  --model-dir DIR         folder of the named models (default: the element's)
  --onnxruntime-library F libonnxruntime.so to load
  --predictions FILE      per-image predictions (detect: every detection with its match) as CSV
  --baseline FILE         age, emotion: pair this run with an earlier run's --predictions FILE, image by image
                          (same labelled images). emotion: both accuracies, the images only one run got right, z
                          and McNemar's exact p; age: both MAEs on the ages each run reported (calibrated if it
                          ran with --calibrate) for all, 21-60 and each decade, the MAE gain with its 95 %
                          interval, Student's paired t and its p, and the exact sign test on which run was
                          closer (a model beats another only when p is small, not when its figure is better)
  --fit-calibration FILE  age: write the calibration fitted on the even half as a Rust constant to FILE
  --calibration-ages S    age: fit and measure the calibration split on all labelled ages (default) or 21-60
  --calibrate S           age: apply the model's built-in calibration table fitted on S (all | 21-60) first
  --split S               age: only the train | dev | test part of the fixed split used by models/train/ (images
                          sorted by path, position i: i % 5 = 0-2 train, 3 dev, 4 test)
  --progress / --quiet    force the progress bar on stderr on / off (default: on when stderr is a terminal)
  -h, --help              this text";

/// Which evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Detect,
    Age,
    Emotion,
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub command: Command,
    pub dir: PathBuf,
    pub opts: EvalOptions,
    pub json: Option<PathBuf>,
    pub predictions: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub fit_calibration: Option<PathBuf>,
    pub calibrate: Option<age::CalibrationSet>,
    pub calibration_set: age::CalibrationSet,
    pub split: Option<age::TrainSplit>,
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| EvalError::Usage(format!("{opt}: {v:?} is not a valid number")))
}

fn parse_fraction(opt: &str, v: &str, max: f32) -> Result<f32> {
    let x: f32 = parse_num(opt, v)?;
    if !(0.0..=max).contains(&x) {
        return Err(EvalError::Usage(format!("{opt}: {x} is outside 0..{max}")));
    }
    Ok(x)
}

/// Parses the arguments after the program name. `Ok(None)` means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Args>> {
    let mut it = args.iter().cloned();
    let mut command = None;
    let mut dir = None;
    let mut opts = EvalOptions { progress: std::io::stderr().is_terminal(), ..EvalOptions::default() };
    let (mut json, mut predictions, mut fit_calibration, mut calibrate) = (None, None, None, None);
    let mut baseline = None;
    let mut calibration_set = age::CalibrationSet::All;
    let mut split = None;
    let set = |opt: &str, v: String| {
        age::CalibrationSet::from_name(&v).ok_or_else(|| EvalError::Usage(format!("{opt} {v}: expected all or 21-60")))
    };
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline.clone().or_else(|| it.next()).ok_or_else(|| EvalError::Usage(format!("{name} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json = Some(PathBuf::from(value()?)),
            "--predictions" => predictions = Some(PathBuf::from(value()?)),
            "--baseline" => baseline = Some(PathBuf::from(value()?)),
            "--fit-calibration" => fit_calibration = Some(PathBuf::from(value()?)),
            "--calibrate" => calibrate = Some(set(&name, value()?)?),
            "--calibration-ages" => calibration_set = set(&name, value()?)?,
            "--split" => {
                let v = value()?;
                let s = age::TrainSplit::from_name(&v)
                    .ok_or_else(|| EvalError::Usage(format!("--split {v}: expected train, dev or test")))?;
                split = Some(s);
            }
            "--limit" => {
                let n: usize = parse_num(&name, &value()?)?;
                if n == 0 {
                    return Err(EvalError::Usage("--limit must be at least 1".into()));
                }
                opts.limit = Some(n);
            }
            "--detector-model" => opts.detector_model = value()?,
            "--age-model" => opts.age_model = value()?,
            "--emotion-model" => opts.emotion_model = value()?,
            "--threshold" => opts.threshold = Some(parse_fraction(&name, &value()?, 1.0)?),
            "--detection-size" => {
                let n: usize = parse_num(&name, &value()?)?;
                if n > 8192 {
                    return Err(EvalError::Usage(format!("--detection-size {n} is larger than 8192")));
                }
                opts.detection_size = Some(n);
            }
            "--emotion-margin" => opts.emotion_margin = Some(parse_fraction(&name, &value()?, 2.0)?),
            "--age-margin" => opts.age_margin = Some(parse_fraction(&name, &value()?, 2.0)?),
            "--emotion-flip" => opts.emotion_flip = Some(true),
            "--no-emotion-flip" => opts.emotion_flip = Some(false),
            "--align" => {
                opts.align = Some(match value()?.as_str() {
                    "eyes" => AlignPoints::Eyes,
                    "eyes-nose" => AlignPoints::EyesNose,
                    v => return Err(EvalError::Usage(format!("--align {v}: expected eyes or eyes-nose"))),
                })
            }
            "--detect" => opts.detect = true,
            "--threads" => opts.threads = parse_num(&name, &value()?)?,
            "--jobs" => opts.jobs = parse_num::<usize>(&name, &value()?)?.max(1),
            "--provider" => {
                opts.provider = match value()?.as_str() {
                    "cpu" => ExecutionProvider::Cpu,
                    "auto" => ExecutionProvider::Auto,
                    "cuda" => ExecutionProvider::Cuda,
                    "tensorrt" => ExecutionProvider::TensorRt,
                    v => return Err(EvalError::Usage(format!("--provider {v}: expected cpu, auto, cuda or tensorrt"))),
                }
            }
            "--model-dir" => opts.model_dir = Some(PathBuf::from(value()?)),
            "--onnxruntime-library" => opts.onnxruntime_library = Some(PathBuf::from(value()?)),
            "--progress" => opts.progress = true,
            "--quiet" | "-q" => opts.progress = false,
            s if s.starts_with('-') => return Err(EvalError::Usage(format!("unknown option {s}"))),
            _ if command.is_none() => {
                command = Some(match a.as_str() {
                    "detect" => Command::Detect,
                    "age" => Command::Age,
                    "emotion" => Command::Emotion,
                    c => {
                        return Err(EvalError::Usage(format!(
                            "unknown sub-command {c:?}: expected detect, age or emotion"
                        )));
                    }
                })
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(&a)),
            _ => return Err(EvalError::Usage(format!("unexpected argument {a:?}: only one DIR may be given"))),
        }
    }
    let command = command.ok_or_else(|| EvalError::Usage("missing sub-command: detect, age or emotion".into()))?;
    let dir = dir.ok_or_else(|| EvalError::Usage("missing DIR".into()))?;
    let only = |set: bool, what: &str, cmd: Command| -> Result<()> {
        if set && command != cmd {
            return Err(EvalError::Usage(format!("{what} only applies to the {cmd:?} sub-command").to_lowercase()));
        }
        Ok(())
    };
    only(fit_calibration.is_some(), "--fit-calibration", Command::Age)?;
    only(calibrate.is_some(), "--calibrate", Command::Age)?;
    only(split.is_some(), "--split", Command::Age)?;
    only(opts.detect, "--detect", Command::Emotion)?;
    if baseline.is_some() && command == Command::Detect {
        return Err(EvalError::Usage("--baseline only applies to the age and emotion sub-commands".into()));
    }
    Ok(Some(Args {
        command,
        dir,
        opts,
        json,
        predictions,
        baseline,
        fit_calibration,
        calibrate,
        calibration_set,
        split,
    }))
}

fn companion(json: Option<&Path>, ext: &str, default: &str) -> PathBuf {
    match json {
        Some(j) => sibling(j, ext),
        None => PathBuf::from(default),
    }
}

/// Runs one parsed command, printing the table to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<()> {
    let print = |out: &mut dyn Write, s: &str| {
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    };
    let mut written: Vec<PathBuf> = Vec::new();
    match args.command {
        Command::Detect => {
            let r = detect::evaluate(&args.dir, &args.opts)?;
            let csv = companion(args.json.as_deref(), "csv", "out/eval-detect.csv");
            let png = companion(args.json.as_deref(), "png", "out/eval-detect.png");
            write_text(&csv, &r.curve.csv())?;
            plot::save_png(&r.plot(), &png)?;
            written.extend([csv.clone(), png.clone()]);
            print(out, &r.table());
            if let Some(j) = &args.json {
                write_json(j, &r.to_json(Some(&csv), Some(&png)))?;
                written.push(j.clone());
            }
            if let Some(p) = &args.predictions {
                write_text(p, &r.detections_csv())?;
                written.push(p.clone());
            }
        }
        Command::Age => {
            let task = age::AgeTask {
                apply_calibration: args.calibrate,
                calibration_set: args.calibration_set,
                split: args.split,
            };
            // As for emotion: the baseline is read and checked before the run.
            let baseline = args.baseline.as_deref().map(age::read_baseline).transpose()?;
            let items = age::items(&args.dir, &args.opts, &task)?;
            if let Some(b) = &baseline {
                b.check(&items)?;
            }
            let r = age::evaluate_items(&args.dir, &items, &args.opts, &task)?;
            let cmp = baseline.as_ref().map(|b| r.compare(b));
            print(out, &r.table());
            if let Some(c) = &cmp {
                print(out, &c.table());
            }
            if let Some(j) = &args.json {
                let mut v = r.to_json();
                if let Some(c) = &cmp {
                    v["baseline"] = c.to_json();
                }
                write_json(j, &v)?;
                written.push(j.clone());
            }
            if let Some(p) = &args.predictions {
                write_text(p, &r.predictions_csv())?;
                written.push(p.clone());
            }
            if let Some(f) = &args.fit_calibration {
                let cmd = std::iter::once("faceanalyze-eval".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" ");
                write_text(f, &r.calibration_source(&cmd))?;
                written.push(f.clone());
            }
        }
        Command::Emotion => {
            // Read and check the baseline first: a bad file must not cost a whole evaluation, and --predictions
            // may overwrite it.
            let baseline = args.baseline.as_deref().map(emotion::read_baseline).transpose()?;
            let items = emotion::items(&args.dir, &args.opts)?;
            if let Some(b) = &baseline {
                b.check(&items)?;
            }
            let r = emotion::evaluate_items(&args.dir, &items, &args.opts)?;
            let cmp = baseline.as_ref().map(|b| r.compare(b));
            let png = companion(args.json.as_deref(), "png", "out/eval-emotion.png");
            plot::save_png(&r.confusion_plot(), &png)?;
            written.push(png.clone());
            print(out, &r.table());
            if let Some(c) = &cmp {
                print(out, &c.table());
            }
            if let Some(j) = &args.json {
                let mut v = r.to_json(Some(&png));
                if let Some(c) = &cmp {
                    v["baseline"] = c.to_json();
                }
                write_json(j, &v)?;
                written.push(j.clone());
            }
            if let Some(p) = &args.predictions {
                write_text(p, &r.predictions_csv())?;
                written.push(p.clone());
            }
        }
    }
    let list = written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    print(out, &format!("  wrote {list}\n"));
    Ok(())
}

/// The whole command: parse, run, report errors; the exit code is 2 for a bad command line, 1 for a failed run.
pub fn main_with_args(args: &[String]) -> ExitCode {
    let parsed = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("faceanalyze-eval: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&parsed, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ EvalError::Usage(_)) => {
            eprintln!("faceanalyze-eval: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("faceanalyze-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
