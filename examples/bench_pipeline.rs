// SPDX-License-Identifier: MIT OR Apache-2.0
//! End-to-end speed of the element alone: decodes a video into memory first (so decoding is not measured), then
//! pushes the frames through `appsrc ! faceanalyze ! fakesink` and prints fps, per-frame latency of the element
//! (p50/p95, from pad probes around it), faces per second, classifications per second and memory.
//!
//! `cargo run --release --example bench_pipeline -- [VIDEO] [--frames N] [--format BGRx|RGB|...] [--mode M]...
//!  [--set PROP=VALUE]...` with modes `defaults`, `every-face` (reclassify-interval=1 smoothing=0),
//! `every-face-fast` (the same with the fast models: age-model=dlib-int8 emotion-model=mini), `detect-only` (analyze-age/emotion=false); default: all four.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn decode(video: &str, format: &str, max: usize) -> Result<(gst::Caps, Vec<gst::Buffer>), String> {
    let p = gst::parse::launch(&format!(
        "filesrc location=\"{video}\" ! decodebin ! videoconvert ! video/x-raw,format={format} ! appsink name=s sync=false"
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let sink = p.by_name("s").ok_or("no sink")?.downcast::<gst_app::AppSink>().map_err(|_| "no appsink")?;
    p.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let mut caps = None;
    let mut frames = Vec::new();
    while frames.len() < max {
        let Ok(sample) = sink.pull_sample() else { break };
        caps = sample.caps().map(|c| c.to_owned());
        if let Some(b) = sample.buffer_owned() {
            frames.push(b);
        }
    }
    p.set_state(gst::State::Null).map_err(|e| e.to_string())?;
    Ok((caps.ok_or("no frames decoded")?, frames))
}

struct Run {
    frames: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    faces: u64,
    classified: u64,
    rss_growth_kib: u64,
}

fn run(caps: &gst::Caps, frames: &[gst::Buffer], props: &[(String, String)]) -> Result<Run, String> {
    let p = gst::parse::launch(
        "appsrc name=src format=time block=true max-buffers=4 ! faceanalyze name=fa ! fakesink sync=false",
    )
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let src = p.by_name("src").ok_or("no src")?.downcast::<gst_app::AppSrc>().map_err(|_| "no appsrc")?;
    src.set_caps(Some(caps));
    let fa = p.by_name("fa").ok_or("no fa")?;
    for (k, v) in props {
        fa.set_property_from_str(k, v);
    }
    let starts: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let faces = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let starts_in = starts.clone();
        fa.static_pad("sink").ok_or("no sink pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                starts_in.lock().unwrap().insert(pts.nseconds(), Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
        let (starts, lat, faces) = (starts.clone(), lat.clone(), faces.clone());
        fa.static_pad("src").ok_or("no src pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                if let Some(t0) = b.pts().and_then(|p| starts.lock().unwrap().remove(&p.nseconds())) {
                    lat.lock().unwrap().push(t0.elapsed());
                }
                let n = b.iter_meta::<gst_video::VideoRegionOfInterestMeta>().count() as u64;
                faces.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }
    // Start (models load here), then measure from the first pushed frame.
    p.set_state(gst::State::Paused).map_err(|e| format!("{e:?}"))?;
    let rss0 = status_kib("VmRSS:");
    p.set_state(gst::State::Playing).map_err(|e| format!("{e:?}"))?;
    let t0 = Instant::now();
    let dur = gst::ClockTime::from_mseconds(40);
    for (i, f) in frames.iter().enumerate() {
        let mut b = f.copy();
        {
            let b = b.make_mut();
            b.set_pts(dur * i as u64);
            b.set_duration(dur);
        }
        src.push_buffer(b).map_err(|e| format!("push: {e:?}"))?;
    }
    let _ = src.end_of_stream();
    let bus = p.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(3600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug())),
            _ => {}
        }
    }
    let wall = t0.elapsed();
    let classified = fa.property::<u64>("faces-classified");
    let rss_growth_kib = status_kib("VmHWM:").saturating_sub(rss0);
    p.set_state(gst::State::Null).map_err(|e| format!("{e:?}"))?;
    let latencies = std::mem::take(&mut *lat.lock().unwrap());
    Ok(Run {
        frames: frames.len(),
        wall,
        latencies,
        faces: faces.load(std::sync::atomic::Ordering::Relaxed),
        classified,
        rss_growth_kib,
    })
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstfaceanalyze::plugin_register_static()?;
    let mut video = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/videos/street_1080p.mp4").to_string();
    let (mut max, mut format, mut modes, mut extra) = (usize::MAX, "BGRx".to_string(), Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => max = args.next().ok_or("--frames N")?.parse()?,
            "--format" => format = args.next().ok_or("--format F")?,
            "--mode" => modes.push(args.next().ok_or("--mode M")?),
            "--set" => {
                let kv = args.next().ok_or("--set K=V")?;
                let (k, v) = kv.split_once('=').ok_or("--set K=V")?;
                extra.push((k.to_string(), v.to_string()));
            }
            v => video = v.to_string(),
        }
    }
    if modes.is_empty() {
        modes = ["defaults", "every-face", "every-face-fast", "detect-only"].map(String::from).to_vec();
    }
    let (caps, frames) = decode(&video, &format, max)?;
    let s = caps.structure(0).ok_or("caps")?;
    println!(
        "{}: {} frames {}x{} {format}, machine: {} cores ({})",
        video.rsplit('/').next().unwrap_or(&video),
        frames.len(),
        s.get::<i32>("width")?,
        s.get::<i32>("height")?,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    println!(
        "{:<16} {:>7} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9}",
        "mode", "frames", "fps", "p50 ms", "p95 ms", "faces/s", "classified/s", "RSS+ MB"
    );
    for mode in &modes {
        let mut props: Vec<(String, String)> = match mode.as_str() {
            "defaults" => vec![],
            "every-face" => vec![("reclassify-interval".into(), "1".into()), ("smoothing".into(), "0".into())],
            "every-face-fast" => vec![
                ("reclassify-interval".into(), "1".into()),
                ("smoothing".into(), "0".into()),
                ("age-model".into(), "dlib-int8".into()),
                ("emotion-model".into(), "mini".into()),
            ],
            "detect-only" => vec![("analyze-age".into(), "false".into()), ("analyze-emotion".into(), "false".into())],
            m => return Err(format!("unknown mode {m}").into()),
        };
        props.extend(extra.iter().cloned());
        let mut r = run(&caps, &frames, &props)?;
        let secs = r.wall.as_secs_f64();
        println!(
            "{:<16} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>11.0} {:>9.0}",
            mode,
            r.frames,
            r.frames as f64 / secs,
            pct(&mut r.latencies, 0.5),
            pct(&mut r.latencies, 0.95),
            r.faces as f64 / secs,
            r.classified as f64 / secs,
            r.rss_growth_kib as f64 / 1024.0
        );
    }
    Ok(())
}
