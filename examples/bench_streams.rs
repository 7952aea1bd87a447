// SPDX-License-Identifier: MIT OR Apache-2.0
//! Many cameras in one process: N pipelines `appsrc ! faceanalyze ! fakesink` run at once on the same decoded
//! video (decoding not measured), with shared sessions (`model-instance-id` equal) or separate ones, and prints
//! total fps, per-stream fps and the element's per-frame latency percentiles.
//!
//! `cargo run --release --example bench_streams -- [VIDEO] [--streams 1,4,8] [--frames N] [--threads T]
//!  [--format BGRx|I420|...] [--shared-only] [--warmup N] [--set PROP=VALUE]...`
//!
//! `--warmup N`: each stream first runs its first N frames untimed (GPU providers load kernels and pick
//! algorithms on their first runs); the timed frames then start together in every stream.

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

/// Runs `n` streams at once; returns (wall, per-stream frame counts, all latencies, the provider in use).
///
/// With `warm` > 0 each stream first sends its first `warm` frames untimed (a GPU provider's first runs load
/// kernels and pick algorithms), waits until they are through, and all streams start the timed frames together.
fn run(
    caps: &gst::Caps,
    frames: &Arc<Vec<gst::Buffer>>,
    n: usize,
    shared: bool,
    props: &[(String, String)],
    warm: usize,
) -> Result<(Duration, Vec<usize>, Vec<Duration>, String), String> {
    let warm = warm.min(frames.len());
    let frame_ns = gst::ClockTime::from_mseconds(33).nseconds();
    let mut warm_rx = Vec::new();
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
        let (warm_tx, rx) = std::sync::mpsc::channel::<()>();
        warm_rx.push(rx);
        fa.static_pad("src").ok_or("pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(pts) = info.buffer().and_then(|b| b.pts()) else { return gst::PadProbeReturn::Ok };
            let t0 = starts.lock().unwrap().remove(&pts.nseconds());
            let index = (pts.nseconds() / frame_ns) as usize;
            if index + 1 == warm {
                let _ = warm_tx.send(());
            } else if let (Some(t0), true) = (t0, index >= warm) {
                l.lock().unwrap().push(t0.elapsed());
            }
            gst::PadProbeReturn::Ok
        });
        let src = p.by_name("src").ok_or("src")?.downcast::<gst_app::AppSrc>().map_err(|_| "appsrc")?;
        src.set_caps(Some(caps));
        if let Err(e) = p.set_state(gst::State::Paused) {
            // The element's own error message says why (a provider that cannot start, a missing model...).
            let why = p.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])).and_then(|m| match m.view() {
                gst::MessageView::Error(err) => Some(format!("{} ({:?})", err.error(), err.debug())),
                _ => None,
            });
            for q in pipes.iter().map(|(q, _)| q).chain([&p]) {
                let _ = q.set_state(gst::State::Null);
            }
            return Err(why.unwrap_or_else(|| format!("{e:?}")));
        }
        pipes.push((p, src));
    }
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let start: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut feeders = Vec::new();
    for ((p, src), rx) in pipes.iter().zip(warm_rx) {
        p.set_state(gst::State::Playing).map_err(|e| format!("{e:?}"))?;
        let (src, frames, barrier, start) = (src.clone(), frames.clone(), barrier.clone(), start.clone());
        feeders.push(std::thread::spawn(move || {
            let d = gst::ClockTime::from_mseconds(33);
            let push = |i: usize, f: &gst::Buffer| {
                let mut b = f.copy();
                let bm = b.make_mut();
                bm.set_pts(d * i as u64);
                bm.set_duration(d);
                src.push_buffer(b).is_ok()
            };
            let mut ok = frames[..warm].iter().enumerate().all(|(i, f)| push(i, f));
            // Every feeder reaches the barrier, also one whose stream failed (its error ends the run), and waits for
            // its warm-up frames at most 2 minutes, so no stream holds the others forever.
            if ok && warm > 0 {
                ok = rx.recv_timeout(Duration::from_secs(120)).is_ok();
            }
            if barrier.wait().is_leader() {
                *start.lock().unwrap() = Some(Instant::now());
            }
            if ok {
                let _ = frames.iter().enumerate().all(|(i, f)| push(warm + i, f));
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
    let wall = start.lock().unwrap().map_or(Duration::ZERO, |t| t.elapsed());
    let provider = pipes
        .first()
        .and_then(|(p, _)| p.by_name("fa"))
        .and_then(|fa| fa.property::<Option<String>>("active-provider"))
        .unwrap_or_default();
    for f in feeders {
        let _ = f.join();
    }
    for (p, _) in &pipes {
        let _ = p.set_state(gst::State::Null);
    }
    let l = std::mem::take(&mut *lat.lock().unwrap());
    Ok((wall, counts, l, provider))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstfaceanalyze::plugin_register_static()?;
    let mut video = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/videos/stage_360p.mp4").to_string();
    let (mut streams, mut max, mut threads, mut extra) = (vec![1usize, 4, 8], 100usize, 1u32, Vec::new());
    let mut warm = 0usize;
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
            "--warmup" => warm = args.next().ok_or("--warmup")?.parse()?,
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
        "{:>7} {:>9} {:>10} {:>13} {:>8} {:>8}  provider",
        "streams", "engines", "total fps", "fps/stream", "p50 ms", "p95 ms"
    );
    for &n in &streams {
        for &shared in &modes {
            if n == 1 && !shared {
                continue;
            }
            let (wall, counts, mut lat, provider) = run(&caps, &frames, n, shared, &props, warm)?;
            lat.sort();
            let q = |x: f64| lat.get(((lat.len() as f64 - 1.0) * x) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
            let total: usize = counts.iter().sum();
            println!(
                "{:>7} {:>9} {:>10.1} {:>13.1} {:>8.1} {:>8.1}  {provider}",
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
