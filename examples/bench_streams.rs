// SPDX-License-Identifier: MIT OR Apache-2.0
//! Many cameras in one process: N pipelines `appsrc ! faceanalyze ! fakesink` run at once on the same decoded
//! video (decoding not measured), with shared sessions (`model-instance-id` equal) or separate ones, and prints
//! total fps, per-stream fps and the element's per-frame latency percentiles.
//!
//! `cargo run --release --example bench_streams -- [VIDEO] [--streams 1,4,8] [--frames N] [--threads T]
//!  [--format BGRx|I420|...] [--shared-only] [--set PROP=VALUE]...`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

fn decode(video: &str, format: &str, max: usize) -> Result<(gst::Caps, Vec<gst::Buffer>), String> {
    let p = gst::parse::launch(&format!(
        "filesrc location=\"{video}\" ! decodebin ! videoconvert ! video/x-raw,format={format} ! appsink name=s \
         sync=false"
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let sink = p.by_name("s").ok_or("no sink")?.downcast::<gst_app::AppSink>().map_err(|_| "no appsink")?;
    p.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    let (mut caps, mut frames) = (None, Vec::new());
    while frames.len() < max {
        let Ok(sample) = sink.pull_sample() else { break };
        caps = sample.caps().map(|c| c.to_owned());
        frames.extend(sample.buffer_owned());
    }
    p.set_state(gst::State::Null).map_err(|e| e.to_string())?;
    Ok((caps.ok_or("no frames")?, frames))
}

/// Runs `n` streams at once; returns (wall, per-stream frame counts, all latencies).
fn run(
    caps: &gst::Caps,
    frames: &Arc<Vec<gst::Buffer>>,
    n: usize,
    shared: bool,
    props: &[(String, String)],
) -> Result<(Duration, Vec<usize>, Vec<Duration>), String> {
    let mut pipes = Vec::new();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    for i in 0..n {
        let p = gst::parse::launch(
            "appsrc name=src format=time block=true max-buffers=2 ! faceanalyze name=fa ! fakesink sync=false",
        )
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
        let fa = p.by_name("fa").ok_or("fa")?;
        fa.set_property("model-instance-id", if shared { "bench".to_string() } else { format!("bench-{i}") });
        for (k, v) in props {
            fa.set_property_from_str(k, v);
        }
        let starts: Arc<Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
        let s_in = starts.clone();
        fa.static_pad("sink").ok_or("pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(t) = info.buffer().and_then(|b| b.pts()) {
                s_in.lock().unwrap().insert(t.nseconds(), Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
        let l = lat.clone();
        fa.static_pad("src").ok_or("pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(t0) =
                info.buffer().and_then(|b| b.pts()).and_then(|t| starts.lock().unwrap().remove(&t.nseconds()))
            {
                l.lock().unwrap().push(t0.elapsed());
            }
            gst::PadProbeReturn::Ok
        });
        let src = p.by_name("src").ok_or("src")?.downcast::<gst_app::AppSrc>().map_err(|_| "appsrc")?;
        src.set_caps(Some(caps));
        p.set_state(gst::State::Paused).map_err(|e| format!("{e:?}"))?;
        pipes.push((p, src));
    }
    let t0 = Instant::now();
    let mut feeders = Vec::new();
    for (p, src) in &pipes {
        p.set_state(gst::State::Playing).map_err(|e| format!("{e:?}"))?;
        let (src, frames) = (src.clone(), frames.clone());
        feeders.push(std::thread::spawn(move || {
            let d = gst::ClockTime::from_mseconds(33);
            for (i, f) in frames.iter().enumerate() {
                let mut b = f.copy();
                let bm = b.make_mut();
                bm.set_pts(d * i as u64);
                bm.set_duration(d);
                if src.push_buffer(b).is_err() {
                    break;
                }
            }
            let _ = src.end_of_stream();
        }));
    }
    let mut counts = Vec::new();
    for (p, _) in &pipes {
        let bus = p.bus().ok_or("bus")?;
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(3600)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug())),
                _ => {}
            }
        }
        counts.push(frames.len());
    }
    let wall = t0.elapsed();
    for f in feeders {
        let _ = f.join();
    }
    for (p, _) in &pipes {
        let _ = p.set_state(gst::State::Null);
    }
    let l = std::mem::take(&mut *lat.lock().unwrap());
    Ok((wall, counts, l))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstfaceanalyze::plugin_register_static()?;
    let mut video = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/videos/stage_360p.mp4").to_string();
    let (mut streams, mut max, mut threads, mut extra) = (vec![1usize, 4, 8], 100usize, 1u32, Vec::new());
    let mut format = "BGRx".to_string();
    let mut modes = vec![true, false];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--streams" => {
                streams = args.next().ok_or("--streams")?.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?
            }
            "--frames" => max = args.next().ok_or("--frames")?.parse()?,
            "--threads" => threads = args.next().ok_or("--threads")?.parse()?,
            "--format" => format = args.next().ok_or("--format")?,
            "--shared-only" => modes = vec![true],
            "--set" => {
                let kv = args.next().ok_or("--set")?;
                let (k, v) = kv.split_once('=').ok_or("--set K=V")?;
                extra.push((k.to_string(), v.to_string()));
            }
            v => video = v.to_string(),
        }
    }
    let (caps, frames) = decode(&video, &format, max)?;
    let frames = Arc::new(frames);
    let mut props = vec![("threads".to_string(), threads.to_string())];
    props.extend(extra.iter().cloned());
    println!(
        "{}: {} frames per stream ({format}), threads={threads} per element, {:?}, {} cores",
        video.rsplit('/').next().unwrap_or(&video),
        frames.len(),
        extra,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{:>7} {:>9} {:>10} {:>13} {:>8} {:>8}",
        "streams", "engines", "total fps", "fps/stream", "p50 ms", "p95 ms"
    );
    for &n in &streams {
        for &shared in &modes {
            if n == 1 && !shared {
                continue;
            }
            let (wall, counts, mut lat) = run(&caps, &frames, n, shared, &props)?;
            lat.sort();
            let q = |x: f64| lat.get(((lat.len() as f64 - 1.0) * x) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
            let total: usize = counts.iter().sum();
            println!(
                "{:>7} {:>9} {:>10.1} {:>13.1} {:>8.1} {:>8.1}",
                n,
                if shared { "shared" } else { "separate" },
                total as f64 / wall.as_secs_f64(),
                total as f64 / wall.as_secs_f64() / n as f64,
                q(0.5),
                q(0.95)
            );
        }
    }
    Ok(())
}
