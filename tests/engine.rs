// SPDX-License-Identifier: MIT OR Apache-2.0
//! Shared sessions across elements (`model-instance-id`): who shares, who does not, and that streams sharing one
//! engine each still get their own correct results.

mod common;

use common::*;
use gst::prelude::*;
use gstfaceanalyze::analyzer::AnalyzerConfig;
use gstfaceanalyze::engine::{self, PRIVATE};

fn cfg(threads: usize) -> AnalyzerConfig {
    let mut c = AnalyzerConfig::default();
    c.session.provider = gstfaceanalyze::inference::ExecutionProvider::Cpu;
    c.session.threads = threads;
    c
}

#[test]
fn equal_configurations_share_and_others_do_not() {
    if !models_available() {
        return;
    }
    let a = engine::acquire(&cfg(1), "").unwrap();
    let b = engine::acquire(&cfg(1), "").unwrap();
    assert!(a.same(&b), "same configuration, default id: shared");
    assert!(!a.same(&engine::acquire(&cfg(2), "").unwrap()), "other thread count: separate");
    assert!(!a.same(&engine::acquire(&cfg(1), "cam-group-2").unwrap()), "other id: separate");
    assert!(!a.same(&engine::acquire(&cfg(1), PRIVATE).unwrap()), "private: separate");
    let c = engine::acquire(&cfg(1), "cam-group-2").unwrap();
    let d = engine::acquire(&cfg(1), "cam-group-2").unwrap();
    assert!(c.same(&d));
    assert_eq!(a.users(), 2);
    drop((a, b));
    // Dropped engines are released: a new acquire loads afresh.
    let e = engine::acquire(&cfg(1), "").unwrap();
    assert_eq!(e.users(), 1);
}

#[test]
fn four_streams_on_one_engine_each_see_their_own_faces() {
    init_gst();
    let Some(one) = data_file("images/face_recognition/examples/obama.jpg") else { return };
    let Some(two) = data_file("images/face_recognition/examples/two_people.jpg") else { return };
    if !models_available() {
        return;
    }
    type Counts = std::sync::Arc<std::sync::Mutex<Vec<usize>>>;
    let pipelines: Vec<(gst::Pipeline, usize, Counts)> = (0..4)
        .map(|i| {
            let (path, want) = if i % 2 == 0 { (&one, 1) } else { (&two, 2) };
            let p = gst::parse::launch(&format!(
                "filesrc location={} ! jpegdec ! imagefreeze num-buffers=15 ! videoconvert ! \
                 faceanalyze name=fa threads=1 model-instance-id=shared-test ! fakesink name=sink",
                path.display()
            ))
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
            let counts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let c2 = counts.clone();
            p.by_name("fa").unwrap().static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer() {
                    c2.lock().unwrap().push(gstfaceanalyze::meta::faces_from_buffer(b).len());
                }
                gst::PadProbeReturn::Ok
            });
            (p, want, counts)
        })
        .collect();
    for (p, _, _) in &pipelines {
        p.set_state(gst::State::Playing).unwrap();
    }
    assert_eq!(engine::live_instances().get("shared-test"), Some(&1), "four elements, one engine");
    for (p, want, counts) in &pipelines {
        let bus = p.bus().unwrap();
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => panic!("{}", e.error()),
                _ => {}
            }
        }
        p.set_state(gst::State::Null).unwrap();
        let counts = counts.lock().unwrap();
        assert_eq!(counts.len(), 15);
        assert!(counts.iter().all(|c| c == want), "{counts:?} (want {want})");
    }
    assert_eq!(engine::live_instances().get("shared-test"), None, "released when the elements stop");
}

/// Faces of one photo classified through `shared` with `batch`, on `streams` threads at once; returns per stream
/// the faces and the largest batch its faces ran in.
fn classify_concurrently(
    shared: &engine::SharedAnalyzer,
    img: &Rgb,
    streams: usize,
    batch: engine::BatchParams,
) -> Vec<(Vec<gstfaceanalyze::face::Face>, usize, std::time::Duration)> {
    use gstfaceanalyze::analyzer::{AnalyzeParams, FrameStats};
    let frame = img.frame();
    let p = AnalyzeParams::default();
    let mut dets = Vec::new();
    shared.with(|a| a.detect(&frame, &p.detector, &mut dets)).unwrap();
    let barrier = std::sync::Barrier::new(streams);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..streams)
            .map(|i| {
                let (dets, barrier, p, frame) = (&dets, &barrier, &p, &frame);
                s.spawn(move || {
                    let job = std::sync::Arc::new(engine::Job::default());
                    // Each stream classifies a different subset so that results are told apart.
                    let mine: Vec<_> = dets.iter().skip(i % 2).copied().collect();
                    let (mut faces, mut stats) = (Vec::new(), FrameStats::default());
                    barrier.wait();
                    let t = std::time::Instant::now();
                    shared.classify(frame, &mine, p, &mut faces, &mut stats, &batch, &job).unwrap();
                    (faces, stats.batch_faces, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn streams_sharing_an_engine_are_classified_in_one_batch_with_the_same_results() {
    let Some(img) = photo("images/group_photo/t1.jpg") else { return };
    if !models_available() {
        return;
    }
    use gstfaceanalyze::analyzer::{AnalyzeParams, FrameStats};
    let a = engine::acquire(&cfg(1), "batching").unwrap();
    let b = engine::acquire(&cfg(1), "batching").unwrap();
    let c = engine::acquire(&cfg(1), "batching").unwrap();
    assert_eq!(a.users(), 3);
    // Reference: each subset alone, unbatched.
    let frame = img.frame();
    let p = AnalyzeParams::default();
    let mut dets = Vec::new();
    a.with(|x| x.detect(&frame, &p.detector, &mut dets)).unwrap();
    assert_eq!(dets.len(), 6);
    let reference: Vec<Vec<_>> = (0..2)
        .map(|k| {
            let mine: Vec<_> = dets.iter().skip(k).copied().collect();
            let mut faces = Vec::new();
            a.with(|x| x.classify(&frame, &mine, &p, &mut faces, &mut FrameStats::default())).unwrap();
            faces
        })
        .collect();
    // A long window so that the three threads surely meet in one batch; a full batch does not wait for it.
    let batch = engine::BatchParams { timeout: std::time::Duration::from_secs(8), max_faces: 6 + 5 + 6 };
    let out = classify_concurrently(&a, &img, 3, batch);
    for (i, (faces, batch_faces, _)) in out.iter().enumerate() {
        assert_eq!(*batch_faces, 17, "stream {i}: all three streams' faces in one batch");
        let r = &reference[i % 2];
        assert_eq!(faces.len(), r.len());
        for (f, g) in faces.iter().zip(r) {
            assert_eq!(f.detection, g.detection);
            let (x, y) = (f.age.unwrap(), g.age.unwrap());
            assert!((x.value - y.value).abs() < 1e-3, "stream {i}: age {} vs {}", x.value, y.value);
            let (pe, pg) = (f.emotion.unwrap().probabilities, g.emotion.unwrap().probabilities);
            assert!(pe.iter().zip(&pg).all(|(u, v)| (u - v).abs() < 1e-4), "stream {i}: {pe:?} vs {pg:?}");
        }
    }
    // Once 17 faces are queued the leader runs at once (inference of 17 faces takes well under 8 s).
    for (i, (_, _, spent)) in out.iter().enumerate() {
        assert!(spent.as_secs() < 7, "stream {i} waited {spent:?} although the batch was full");
    }
    // With batching off, nobody waits or batches.
    let off = engine::BatchParams { timeout: std::time::Duration::ZERO, ..batch };
    assert!(classify_concurrently(&a, &img, 3, off).iter().all(|(_, bf, _)| *bf == 0));
    drop((b, c));
    // Alone on the engine: no batching, no wait, even with a long timeout.
    let alone = classify_concurrently(&a, &img, 1, batch);
    assert_eq!(alone[0].1, 0);
    assert!(alone[0].2.as_secs() < 7, "a lone stream waited {:?}", alone[0].2);
}

#[test]
fn a_batch_leader_waits_no_longer_than_the_timeout() {
    let Some(img) = photo("images/face_recognition/examples/obama.jpg") else { return };
    if !models_available() {
        return;
    }
    let a = engine::acquire(&cfg(1), "batch-timeout").unwrap();
    let _b = engine::acquire(&cfg(1), "batch-timeout").unwrap();
    // Two users, but only one stream sends faces: its leader gives up after the timeout.
    let timeout = std::time::Duration::from_millis(150);
    let (faces, batch_faces, spent) =
        classify_concurrently(&a, &img, 1, engine::BatchParams { timeout, max_faces: 64 }).pop().unwrap();
    assert_eq!(faces.len(), 1);
    assert!(faces[0].age.is_some() && faces[0].emotion.is_some());
    assert_eq!(batch_faces, 1);
    assert!(spent >= timeout, "waited {spent:?}, less than the timeout");
    assert!(spent < timeout + std::time::Duration::from_secs(3), "waited {spent:?}");
}

#[test]
fn busy_wait_runs_on_the_shared_spinning_pool_with_the_same_results() {
    let Some(img) = photo("images/group_photo/t1.jpg") else { return };
    if !models_available() {
        return;
    }
    use gstfaceanalyze::analyzer::{AnalyzeParams, FrameStats};
    let frame = img.frame();
    let p = AnalyzeParams::default();
    let run = |shared: &engine::SharedAnalyzer| {
        let (mut dets, mut faces) = (Vec::new(), Vec::new());
        shared.with(|a| a.detect(&frame, &p.detector, &mut dets)).unwrap();
        shared.with(|a| a.classify(&frame, &dets, &p, &mut faces, &mut FrameStats::default())).unwrap();
        faces
    };
    let sleeping = run(&engine::acquire(&cfg(0), PRIVATE).unwrap());
    assert_eq!(sleeping.len(), 6);
    let mut spin = cfg(0);
    spin.session.busy_wait = true;
    // Two engines on the one process-wide pool, used from two threads at once.
    let (x, y) = (engine::acquire(&spin, "spin-a").unwrap(), engine::acquire(&spin, "spin-b").unwrap());
    assert!(!x.same(&y));
    let both: Vec<Vec<_>> = std::thread::scope(|s| {
        let repeat = |e: &engine::SharedAnalyzer| {
            run(e);
            run(e);
            run(e)
        };
        let hs: Vec<_> = [&x, &y].map(|e| s.spawn(move || repeat(e))).into();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for faces in &both {
        assert_eq!(faces.len(), sleeping.len());
        for (f, g) in faces.iter().zip(&sleeping) {
            assert_eq!(f.detection.bbox, g.detection.bbox);
            let (a, b) = (f.age.unwrap().value, g.age.unwrap().value);
            assert!((a - b).abs() < 1e-3, "age {a} vs {b}");
            assert_eq!(f.emotion.unwrap().label(), g.emotion.unwrap().label());
        }
    }
}

#[test]
fn busy_wait_sessions_add_no_threads_and_default_ones_do() {
    const NAME: &str = "busy_wait_sessions_add_no_threads_and_default_ones_do";
    if !isolated(NAME) {
        // Alone in a process: other tests' threads would blur the count.
        if models_available() {
            run_isolated(NAME, &[]);
        }
        return;
    }
    gstfaceanalyze::inference::runtime::load(None).unwrap();
    let before = thread_count();
    let mut spin = cfg(0);
    spin.session.busy_wait = true;
    let _spinning = engine::acquire(&spin, PRIVATE).unwrap();
    assert_eq!(thread_count(), before, "busy-wait sessions run on the process-wide pool");
    let _own = engine::acquire(&cfg(0), PRIVATE).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        assert!(thread_count() > before, "default sessions have their own pools");
    }
}
