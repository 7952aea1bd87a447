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
