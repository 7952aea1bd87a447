// SPDX-License-Identifier: MIT OR Apache-2.0
//! The main command: analyse a video (or a photo) end to end and write the annotated result plus per-face JSON.
//!
//! ```text
//! faceanalyze [INPUT] [-o OUTPUT] [--json FILE] [--set PROPERTY=VALUE]...
//! ```
//! Video: `filesrc ! decodebin ! videoconvert ! faceanalyze ! queue ! videoconvert ! x264enc ! mp4mux ! filesink`.
//! Photo (.jpg/.jpeg/.png): the same analysis, written as an annotated PNG or JPEG.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

const USAGE: &str = "usage: faceanalyze [INPUT] [-o OUTPUT] [--json FILE] [--set PROPERTY=VALUE]...

Analyses INPUT (a video file, or a .jpg/.jpeg/.png photo): finds every face, estimates age and emotion, and
writes the annotated video (MP4, H.264) or photo plus one JSON line per frame.

  INPUT                 video or photo; default: ../shared/data/videos/street_1080p.mp4 when present
  -o, --output FILE     annotated output (default: out/<name>.annotated.mp4, or .png/.jpg for photos)
  --json FILE           JSON Lines results (default: out/<name>.faces.jsonl)
  --set PROP=VALUE      any faceanalyze property, e.g. --set age-model=dlib --set threshold=0.7
  -h, --help            this text

Properties: gst-inspect-1.0 faceanalyze (with GST_PLUGIN_PATH=target/release), or README.md.";

struct Args {
    input: PathBuf,
    output: Option<PathBuf>,
    json: Option<PathBuf>,
    props: Vec<(String, String)>,
}

fn default_input() -> Option<PathBuf> {
    let data = std::env::var_os("FACEANALYZE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let p = data.join("videos/street_1080p.mp4");
    p.is_file().then_some(p)
}

fn parse_args() -> Result<Args, String> {
    let mut input = None;
    let mut output = None;
    let mut json = None;
    let mut props = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "-o" | "--output" => output = Some(PathBuf::from(it.next().ok_or("-o needs a file")?)),
            "--json" => json = Some(PathBuf::from(it.next().ok_or("--json needs a file")?)),
            "--set" => {
                let kv = it.next().ok_or("--set needs PROPERTY=VALUE")?;
                let (k, v) = kv.split_once('=').ok_or_else(|| format!("--set {kv}: expected PROPERTY=VALUE"))?;
                props.push((k.to_string(), v.to_string()));
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => {
                if input.replace(PathBuf::from(s)).is_some() {
                    return Err("only one INPUT may be given".into());
                }
            }
        }
    }
    let input = match input {
        Some(i) => i,
        None => {
            let d = default_input().ok_or("no INPUT given and ../shared/data/videos/street_1080p.mp4 is absent")?;
            eprintln!("No input given: using {}", d.display());
            d
        }
    };
    if !input.is_file() {
        return Err(format!("input {} does not exist", input.display()));
    }
    Ok(Args { input, output, json, props })
}

fn is_photo(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("faceanalyze: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faceanalyze: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
    gstfaceanalyze::plugin_register_static().map_err(|e| format!("cannot register faceanalyze: {e}"))?;

    let photo = is_photo(&args.input);
    let stem = args.input.file_stem().and_then(|s| s.to_str()).unwrap_or("input").to_string();
    let out_ext = match args.input.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) {
        Some(e) if photo && e == "png" => "png",
        _ if photo => "jpg",
        _ => "mp4",
    };
    let output = args.output.clone().unwrap_or_else(|| PathBuf::from(format!("out/{stem}.annotated.{out_ext}")));
    let json = args.json.clone().unwrap_or_else(|| PathBuf::from(format!("out/{stem}.faces.jsonl")));
    for p in [&output, &json] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }

    let encode = if photo {
        let enc = if output.extension().and_then(|e| e.to_str()) == Some("png") { "pngenc" } else { "jpegenc" };
        format!("videoconvert ! {enc}")
    } else {
        // zerolatency: no B-frames and no lookahead queue, so x264 holds a few frames instead of dozens. Measured
        // on street_1080p: whole-process peak RSS 440 -> 280 MB and 10-20 % faster, at the same bitrate.
        "queue max-size-buffers=8 ! videoconvert ! x264enc speed-preset=superfast tune=zerolatency ! mp4mux".to_string()
    };
    let desc =
        format!("filesrc name=src ! decodebin ! videoconvert ! faceanalyze name=fa ! {encode} ! filesink name=sink");
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("cannot build the pipeline (are the GStreamer plugins installed?): {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    let by_name = |n: &str| pipeline.by_name(n).ok_or_else(|| format!("no element {n}"));
    by_name("src")?.set_property("location", args.input.to_str().ok_or("input path is not UTF-8")?);
    by_name("sink")?.set_property("location", output.to_str().ok_or("output path is not UTF-8")?);
    let fa = by_name("fa")?;
    fa.set_property("results-location", json.to_str().ok_or("json path is not UTF-8")?);
    for (k, v) in &args.props {
        let Some(pspec) = fa.find_property(k) else {
            return Err(format!("faceanalyze has no property '{k}' (see gst-inspect-1.0 faceanalyze)"));
        };
        if !pspec.flags().contains(gst::glib::ParamFlags::WRITABLE) {
            return Err(format!("property '{k}' is read-only"));
        }
        // GLib panics on a value it cannot parse or that is out of range; turn that into a clear error.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let set = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fa.set_property_from_str(k, v)));
        std::panic::set_hook(hook);
        if set.is_err() {
            return Err(format!("'{v}' is not a valid value for property '{k}' (see gst-inspect-1.0 faceanalyze)"));
        }
    }

    // Count frames and faces as they leave the element.
    let frames = Arc::new(AtomicU64::new(0));
    let faces = Arc::new(AtomicU64::new(0));
    {
        let (frames, faces) = (frames.clone(), faces.clone());
        fa.static_pad("src").ok_or("faceanalyze has no src pad")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                if let Some(buf) = info.buffer() {
                    let n = buf
                        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                        .filter(|m| m.roi_type() == "face")
                        .count();
                    faces.fetch_add(n as u64, Ordering::Relaxed);
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    eprintln!("Analysing {} ...", args.input.display());
    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).map_err(|_| error_from_bus(&pipeline))?;
    let bus = pipeline.bus().ok_or("pipeline has no bus")?;
    let mut last = Instant::now();
    let result = loop {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(250)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break Ok(()),
                gst::MessageView::Error(e) => {
                    break Err(format!(
                        "{} (from {})\n{}",
                        e.error(),
                        msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                        e.debug().unwrap_or_default()
                    ));
                }
                gst::MessageView::Warning(w) => eprintln!("warning: {}", w.error()),
                _ => {}
            }
        }
        if last.elapsed() >= Duration::from_secs(1) && !photo {
            last = Instant::now();
            let n = frames.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "frames {n:>6} | {:6.1} fps | faces {:>7} | {:5.1} s",
                n as f64 / secs,
                faces.load(Ordering::Relaxed),
                secs
            );
        }
    };
    let provider = fa.property::<String>("active-provider");
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let secs = start.elapsed().as_secs_f64();
    let n = frames.load(Ordering::Relaxed);
    println!(
        "Done: {n} frames in {secs:.1} s ({:.1} fps), {} faces, provider {provider}\n  annotated: {}\n  results:   {}",
        n as f64 / secs.max(1e-9),
        faces.load(Ordering::Relaxed),
        output.display(),
        json.display()
    );
    Ok(())
}

fn error_from_bus(pipeline: &gst::Pipeline) -> String {
    let bus = pipeline.bus();
    while let Some(msg) = bus.as_ref().and_then(|b| b.timed_pop(gst::ClockTime::from_seconds(5))) {
        if let gst::MessageView::Error(e) = msg.view() {
            let _ = pipeline.set_state(gst::State::Null);
            return format!("{}\n{}", e.error(), e.debug().unwrap_or_default());
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    "the pipeline could not start".into()
}
