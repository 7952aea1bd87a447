// SPDX-License-Identifier: MIT OR Apache-2.0
//! The element itself: registration and documentation, every accepted format and stride through a Harness,
//! real pipelines, and clean start errors for a missing ONNX Runtime and for bad models.

mod common;

use common::*;
use gst::prelude::*;
use gst_video::VideoFormat;

const FORMATS: [VideoFormat; 10] = [
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Argb,
    VideoFormat::Abgr,
];

#[test]
fn element_is_registered_and_documented() {
    init_gst();
    let factory = gst::ElementFactory::find("faceanalyze").expect("faceanalyze registered");
    assert_eq!(factory.metadata(gst::ELEMENT_METADATA_KLASS), Some("Filter/Analyzer/Video"));
    let e = factory.create().build().unwrap();
    let props = e.list_properties();
    assert!(props.len() >= 25, "{} properties", props.len());
    for p in props.iter().filter(|p| p.owner_type() == e.type_()) {
        let blurb = p.blurb().unwrap_or_default();
        assert!(!p.nick().is_empty() && p.nick() != p.name(), "{} has no nick", p.name());
        assert!(blurb.len() > 20 && blurb.ends_with('.'), "{}: blurb is not a sentence: {blurb:?}", p.name());
    }
    // Enum properties round-trip.
    e.set_property_from_str("execution-provider", "cpu");
    assert_eq!(
        e.property::<gstfaceanalyze::ExecutionProvider>("execution-provider"),
        gstfaceanalyze::ExecutionProvider::Cpu
    );
    e.set_property("threshold", 0.75f32);
    assert_eq!(e.property::<f32>("threshold"), 0.75);
    // An invalid label template is refused and the previous one kept.
    e.set_property("label-format", "{age} {nonsense}");
    assert_eq!(e.property::<String>("label-format"), "{age} {emotion}");
    assert_eq!(e.property::<String>("active-provider"), "");
}

/// A gradient frame (no faces) of `format`, `width` x `height`, rows padded by `pad` bytes and described by a
/// VideoMeta so that the element must honour the stride.
fn gradient_buffer(format: VideoFormat, width: u32, height: u32, pad: usize, pts: u64) -> gst::Buffer {
    let info = gst_video::VideoInfo::builder(format, width, height).build().unwrap();
    let bpp = info.format_info().pixel_stride()[0] as usize;
    let stride = width as usize * bpp + pad;
    let mut data = vec![0u8; stride * height as usize];
    for y in 0..height as usize {
        for x in 0..stride {
            data[y * stride + x] = ((x * 7 + y * 13) % 251) as u8;
        }
    }
    let mut buf = gst::Buffer::from_mut_slice(data);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            format,
            width,
            height,
            &[0],
            &[stride as i32],
        )
        .unwrap();
    }
    buf
}

fn harness(props: &[(&str, &str)]) -> gst_check::Harness {
    // Properties first: READY-only ones are ignored once the harness has started the element.
    let e = gst::ElementFactory::make("faceanalyze").build().unwrap();
    e.set_property_from_str("execution-provider", "cpu");
    e.set_property("threads", 1u32);
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    gst_check::Harness::with_element(&e, Some("sink"), Some("src"))
}

#[test]
fn every_format_odd_width_and_padded_stride_pass_untouched() {
    init_gst();
    if !models_available() {
        return;
    }
    for format in FORMATS {
        for (width, pad) in [(641u32, 0usize), (641, 13), (320, 64)] {
            let mut h = harness(&[]);
            let caps =
                gst_video::VideoInfo::builder(format, width, 181).fps(gst::Fraction::new(25, 1)).build().unwrap();
            h.set_src_caps(caps.to_caps().unwrap());
            h.play();
            let input = gradient_buffer(format, width, 181, pad, 1_000_000);
            let before = input.map_readable().unwrap().to_vec();
            h.push(input).unwrap();
            let out = h.pull().unwrap();
            assert_eq!(out.pts(), Some(gst::ClockTime::from_nseconds(1_000_000)), "{format:?}");
            assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(40)));
            assert_eq!(
                out.map_readable().unwrap().as_slice(),
                &before[..],
                "{format:?} {width} pad {pad}: pixels changed"
            );
            assert_eq!(gstfaceanalyze::meta::faces_from_buffer(&out).len(), 0, "no face on a gradient");
        }
    }
}

#[test]
fn videotestsrc_pipeline_reaches_eos() {
    init_gst();
    if !models_available() {
        return;
    }
    let p = gst::parse::launch(
        "videotestsrc num-buffers=12 ! video/x-raw,width=321,height=241 ! videoconvert ! faceanalyze threads=1 ! fakesink",
    )
    .unwrap();
    let msgs = run_to_end(&p, 60);
    assert!(msgs.iter().any(|m| m.contains("eos")), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m.starts_with("error")), "{msgs:?}");
}

/// Plays `p` until EOS or an error (at most `secs`), returns "eos" / "error: TEXT" / "warning: TEXT" lines.
fn run_to_end(p: &gst::Element, secs: u64) -> Vec<String> {
    let bus = p.bus().unwrap();
    let _ = p.set_state(gst::State::Playing);
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else { continue };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                out.push("eos".into());
                break;
            }
            gst::MessageView::Error(e) => {
                out.push(format!("error: {} ({:?})", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Warning(w) => out.push(format!("warning: {}", w.error())),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    out
}

/// Starts `videotestsrc ! faceanalyze PROPS ! fakesink` and returns the error text posted on the bus.
fn start_error(props: &str) -> String {
    init_gst();
    let p = gst::parse::launch(&format!("videotestsrc num-buffers=3 ! videoconvert ! faceanalyze {props} ! fakesink"))
        .unwrap();
    let msgs = run_to_end(&p, 30);
    msgs.into_iter().find(|m| m.starts_with("error")).unwrap_or_else(|| panic!("no error starting with {props}"))
}

#[test]
fn missing_onnxruntime_is_a_clear_start_error() {
    let e = start_error("onnxruntime-library=/nonexistent/libonnxruntime.so.1.31.1");
    assert!(e.contains("ONNX Runtime library not found"), "{e}");
    assert!(e.contains("/nonexistent/libonnxruntime.so.1.31.1") && e.contains("scripts/setup.sh"), "{e}");
}

#[test]
fn a_library_that_is_not_onnxruntime_is_a_clear_start_error() {
    // A real shared object without ONNX Runtime's entry point. Only meaningful before ONNX Runtime is loaded in
    // this process, so it runs in a child process of this test binary.
    if std::env::var("FA_CHILD_WRONG_LIB").is_ok() {
        let arch = std::env::consts::ARCH;
        let lib = [format!("/lib/{arch}-linux-gnu/libz.so.1"), format!("/usr/lib/{arch}-linux-gnu/libz.so.1")]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("libz present");
        let e = start_error(&format!("onnxruntime-library={lib}"));
        assert!(e.contains("cannot load ONNX Runtime") && e.contains("OrtGetApiBase"), "{e}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "a_library_that_is_not_onnxruntime_is_a_clear_start_error", "--nocapture"])
        .env("FA_CHILD_WRONG_LIB", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn missing_model_names_the_file() {
    if !models_available() {
        return;
    }
    let dir = scratch_dir("empty-models");
    let e = start_error(&format!("model-dir={}", dir.display()));
    assert!(e.contains("yunet_n_dynamic.onnx") && e.contains("does not exist"), "{e}");
}

#[test]
fn truncated_model_fails_its_checksum() {
    if !models_available() {
        return;
    }
    let dir = scratch_dir("truncated-models");
    let src = gstfaceanalyze::models::default_model_dir();
    for m in gstfaceanalyze::models::known_models() {
        std::fs::copy(src.join(&m.file), dir.join(&m.file)).unwrap();
    }
    // The default emotion model's file, cut in half.
    let file = &gstfaceanalyze::models::spec(gstfaceanalyze::analyzer::DEFAULT_EMOTION_MODEL).unwrap().file;
    let f = dir.join(file);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = start_error(&format!("model-dir={}", dir.display()));
    assert!(e.contains(file.as_str()) && e.contains("damaged"), "{e}");
    // The same truncated file given as a path (no checksum known for a custom name) fails to load.
    let custom = dir.join("my_emotion.onnx");
    std::fs::write(&custom, &bytes[..bytes.len() / 2]).unwrap();
    let e = start_error(&format!("emotion-model={}", custom.display()));
    assert!(e.contains("my_emotion.onnx") && e.contains("cannot load model"), "{e}");
}

#[test]
fn model_with_wrong_signature_is_refused() {
    if !models_available() {
        return;
    }
    let dir = scratch_dir("wrong-signature");
    let f = dir.join("tiny.onnx");
    std::fs::write(&f, tiny_onnx("x", &[-1, 3], "y", None)).unwrap();
    let e = start_error(&format!("age-model={}", f.display()));
    assert!(e.contains("tiny.onnx") && e.contains("neither age contract"), "{e}");
    let e = start_error(&format!("emotion-model={}", f.display()));
    assert!(e.contains("tiny.onnx") && e.contains("input 'gray_pm1' is missing"), "{e}");
    // Right names but wrong fixed dimensions.
    let g = dir.join("wrong_dims.onnx");
    std::fs::write(&g, tiny_onnx("gray_pm1", &[-1, 48, 48, 1], "predictions", None)).unwrap();
    let e = start_error(&format!("emotion-model={}", g.display()));
    assert!(e.contains("wrong_dims.onnx") && e.contains("dimension 1 is 48, expected 64"), "{e}");
    // A model that needs a custom operator domain.
    let c = dir.join("custom_op.onnx");
    std::fs::write(&c, tiny_onnx("input", &[-1, 3, -1, -1], "cls_8", Some("com.example.custom"))).unwrap();
    let e = start_error(&format!("detector-model={}", c.display()));
    assert!(e.contains("custom_op.onnx") && e.contains("cannot load model"), "{e}");
}

#[test]
fn unknown_model_name_is_a_settings_error() {
    if !models_available() {
        return;
    }
    let e = start_error("age-model=resnet");
    assert!(e.contains("unknown age model 'resnet'") && e.contains("dlib"), "{e}");
}
