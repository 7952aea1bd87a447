// SPDX-License-Identifier: MIT OR Apache-2.0
//! Helpers shared by the integration tests: where the shared data lives, skipping with a reason (a failure under
//! `CI=true`), loading photos, and building analyzers on the real models.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Once;

use gstfaceanalyze::analyzer::{Analyzer, AnalyzerConfig};
use gstfaceanalyze::frame::{FrameRef, PixelLayout};

/// `$FACEANALYZE_SHARED`, else `../shared` beside the repository.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("FACEANALYZE_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

/// `$FACEANALYZE_DATA`, else `<shared>/data`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("FACEANALYZE_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => shared_dir().join("data"),
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints why a test is skipped; under `CI=true` a missing prerequisite fails the test instead.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("prerequisite missing under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A file of the shared data, or `None` after printing a skip reason.
pub fn data_file(rel: &str) -> Option<PathBuf> {
    let p = data_dir().join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip(&format!("shared data {} is absent", p.display()));
        None
    }
}

/// An RGB image: bytes, width, height.
pub struct Rgb {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl Rgb {
    pub fn frame(&self) -> FrameRef<'_> {
        FrameRef::new(&self.data, self.width, self.height, self.width * 3, PixelLayout::Rgb).unwrap()
    }

    /// The same picture in another layout with `pad` extra bytes per row (padding filled with 0xAB, x/alpha with
    /// 0xFF).
    pub fn to_layout(&self, layout: PixelLayout, pad: usize) -> (Vec<u8>, usize) {
        let bpp = layout.bpp();
        let stride = self.width * bpp + pad;
        let mut out = vec![0xABu8; stride * self.height];
        let [r, g, b] = layout.rgb_offsets();
        for y in 0..self.height {
            for x in 0..self.width {
                let s = (y * self.width + x) * 3;
                let d = y * stride + x * bpp;
                if bpp == 4 {
                    out[d..d + 4].fill(0xFF);
                }
                out[d + r] = self.data[s];
                out[d + g] = self.data[s + 1];
                out[d + b] = self.data[s + 2];
            }
        }
        (out, stride)
    }
}

pub fn load_rgb(path: &std::path::Path) -> Rgb {
    let img = image::open(path).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    Rgb { data: img.into_raw(), width: w as usize, height: h as usize }
}

/// A shared photo as RGB, or `None` after a skip reason.
pub fn photo(rel: &str) -> Option<Rgb> {
    data_file(rel).map(|p| load_rgb(&p))
}

/// Whether ONNX Runtime and the models are installed; prints a skip reason when not.
pub fn models_available() -> bool {
    let lib = gstfaceanalyze::inference::runtime::candidates(None);
    if !lib.iter().any(|p| p.is_file()) {
        skip(&format!("ONNX Runtime is not installed (looked at {lib:?}); run scripts/setup.sh"));
        return false;
    }
    let dir = gstfaceanalyze::models::default_model_dir();
    for m in gstfaceanalyze::models::known_models() {
        if !dir.join(&m.file).is_file() {
            skip(&format!("model {} is not in {}; run scripts/setup.sh", m.file, dir.display()));
            return false;
        }
    }
    true
}

/// An analyzer on the real models with `edit` applied to the default configuration (one thread, CPU).
pub fn analyzer(edit: impl FnOnce(&mut AnalyzerConfig)) -> Option<Analyzer> {
    if !models_available() {
        return None;
    }
    let mut cfg = AnalyzerConfig::default();
    cfg.session.provider = gstfaceanalyze::inference::ExecutionProvider::Cpu;
    cfg.session.threads = 1;
    edit(&mut cfg);
    Some(Analyzer::load(&cfg).unwrap_or_else(|e| panic!("analyzer failed to load: {e}")))
}

/// GStreamer initialised and the plugin registered statically, once per test binary.
pub fn init_gst() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfaceanalyze::plugin_register_static().expect("register faceanalyze");
    });
}

/// A tiny ONNX model written by hand (protobuf): `Identity` from input `in_name` to output `out_name`, float32,
/// with the given shapes (`-1` = a named dynamic dimension) and optionally a node in a custom operator domain.
pub fn tiny_onnx(in_name: &str, in_shape: &[i64], out_name: &str, custom_domain: Option<&str>) -> Vec<u8> {
    use pb::{field_bytes, field_varint, value_info};
    // NodeProto { input = 1, output = 2, name = 3, op_type = 4, domain = 7 }
    let mut node = Vec::new();
    field_bytes(1, in_name.as_bytes(), &mut node);
    field_bytes(2, out_name.as_bytes(), &mut node);
    field_bytes(3, b"n0", &mut node);
    field_bytes(4, if custom_domain.is_some() { b"MyCustomOp" } else { b"Identity" }, &mut node);
    if let Some(d) = custom_domain {
        field_bytes(7, d.as_bytes(), &mut node);
    }
    // GraphProto { node = 1, name = 2, input = 11, output = 12 }
    let mut graph = Vec::new();
    field_bytes(1, &node, &mut graph);
    field_bytes(2, b"tiny", &mut graph);
    field_bytes(11, &value_info(in_name, in_shape, false), &mut graph);
    field_bytes(12, &value_info(out_name, in_shape, false), &mut graph);
    // ModelProto { ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 { domain = 1, version = 2 } }
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(2, b"faceanalyze-tests", &mut model);
    field_bytes(7, &graph, &mut model);
    let mut opset = Vec::new();
    field_varint(2, 13, &mut opset);
    field_bytes(8, &opset, &mut model);
    if let Some(d) = custom_domain {
        let mut o = Vec::new();
        field_bytes(1, d.as_bytes(), &mut o);
        field_varint(2, 1, &mut o);
        field_bytes(8, &o, &mut model);
    }
    model
}

/// A model `y = Max(Min(Relu(x), 6), 0)` on `x: [1, 4]` (ReLU6 as tf2onnx writes it), opset 13.
pub fn relu6_onnx() -> Vec<u8> {
    use pb::{field_bytes, field_varint, value_info};
    let node = |op: &str, inputs: &[&str], output: &str| {
        let mut n = Vec::new();
        inputs.iter().for_each(|i| field_bytes(1, i.as_bytes(), &mut n));
        field_bytes(2, output.as_bytes(), &mut n);
        field_bytes(4, op.as_bytes(), &mut n);
        n
    };
    // TensorProto { data_type = 2 (1 = FLOAT), name = 8, raw_data = 9 }, no dims: a scalar.
    let scalar = |name: &str, v: f32| {
        let mut t = Vec::new();
        field_varint(2, 1, &mut t);
        field_bytes(8, name.as_bytes(), &mut t);
        field_bytes(9, &v.to_le_bytes(), &mut t);
        t
    };
    let mut graph = Vec::new();
    field_bytes(1, &node("Relu", &["x"], "r"), &mut graph);
    field_bytes(1, &node("Min", &["r", "six"], "m"), &mut graph);
    field_bytes(1, &node("Max", &["m", "zero"], "y"), &mut graph);
    field_bytes(2, b"relu6", &mut graph);
    field_bytes(5, &scalar("six", 6.0), &mut graph);
    field_bytes(5, &scalar("zero", 0.0), &mut graph);
    field_bytes(11, &value_info("x", &[1, 4], false), &mut graph);
    field_bytes(12, &value_info("y", &[1, 4], false), &mut graph);
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(7, &graph, &mut model);
    let mut opset = Vec::new();
    field_varint(2, 13, &mut opset);
    field_bytes(8, &opset, &mut model);
    model
}

/// A unique scratch folder under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "faceanalyze-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------------------------------
// Reliability helpers (tests/reliability.rs, tests/fuzz.rs)
// ---------------------------------------------------------------------------------------------------------------

/// What a [`poison_onnx`] model outputs for every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// `Log(-Exp(mean(x)))`: NaN for every input.
    Nan,
    /// `Log(mean(x) - mean(x))`: -infinity for every finite input.
    NegInf,
    /// `Exp(Exp(mean(x) - mean(x)))`: e (2.718..), finite but outside a probability's 0..1.
    AboveOne,
}

/// A hand-written ONNX model (protobuf, opset 13) with the signature `in_name` (float32, `in_shape`, `-1` = the
/// shared dynamic batch dimension `N`) to one float32 output `[N, width]` per `(name, width)` in `outputs`, whose
/// values are poisoned at run time as `poison` says. The graph: `Flatten(axis=1)`, `ReduceMean(axes=[1])` (one
/// value per batch row), the poison ops, then `Concat` of `width` copies along axis 1. Shapes stay dynamic, so
/// ONNX Runtime cannot fold anything at load time.
pub fn poison_onnx(in_name: &str, in_shape: &[i64], outputs: &[(&str, i64)], poison: Poison) -> Vec<u8> {
    let declared: Vec<(&str, i64, i64)> = outputs.iter().map(|&(n, w)| (n, w, w)).collect();
    poison_onnx_declared(in_name, in_shape, &declared, poison)
}

/// [`poison_onnx`] whose outputs are declared `[N, declared]` in the graph (what a signature check sees) but hold
/// `[N, actual]` values at run time: a model that passes the start checks and then fails on every frame.
pub fn poison_onnx_declared(in_name: &str, in_shape: &[i64], outputs: &[(&str, i64, i64)], poison: Poison) -> Vec<u8> {
    use pb::{field_bytes, field_varint, value_info};
    // AttributeProto { name = 1, i = 3, ints = 8, type = 20 (INT = 2, INTS = 7) }
    enum Attr<'a> {
        Int(&'a str, i64),
        Ints(&'a str, &'a [i64]),
    }
    fn attribute(a: &Attr) -> Vec<u8> {
        let mut m = Vec::new();
        match a {
            Attr::Int(name, v) => {
                field_bytes(1, name.as_bytes(), &mut m);
                field_varint(3, *v as u64, &mut m);
                field_varint(20, 2, &mut m);
            }
            Attr::Ints(name, vs) => {
                field_bytes(1, name.as_bytes(), &mut m);
                for v in *vs {
                    field_varint(8, *v as u64, &mut m);
                }
                field_varint(20, 7, &mut m);
            }
        }
        m
    }
    // NodeProto { input = 1, output = 2, name = 3, op_type = 4, attribute = 5 }
    let mut nodes: Vec<Vec<u8>> = Vec::new();
    let mut node = |op: &str, inputs: &[&str], output: &str, attrs: &[Attr]| {
        let mut n = Vec::new();
        for i in inputs {
            field_bytes(1, i.as_bytes(), &mut n);
        }
        field_bytes(2, output.as_bytes(), &mut n);
        field_bytes(3, format!("n{}", nodes.len()).as_bytes(), &mut n);
        field_bytes(4, op.as_bytes(), &mut n);
        for a in attrs {
            field_bytes(5, &attribute(a), &mut n);
        }
        nodes.push(n);
    };
    node("Flatten", &[in_name], "flat", &[Attr::Int("axis", 1)]);
    node("ReduceMean", &["flat"], "mean", &[Attr::Ints("axes", &[1]), Attr::Int("keepdims", 1)]);
    match poison {
        Poison::Nan => {
            node("Exp", &["mean"], "pos", &[]);
            node("Neg", &["pos"], "neg", &[]);
            node("Log", &["neg"], "bad", &[]);
        }
        Poison::NegInf => {
            node("Sub", &["mean", "mean"], "zero", &[]);
            node("Log", &["zero"], "bad", &[]);
        }
        Poison::AboveOne => {
            node("Sub", &["mean", "mean"], "zero", &[]);
            node("Exp", &["zero"], "one", &[]);
            node("Exp", &["one"], "bad", &[]);
        }
    }
    for (name, _, width) in outputs {
        let copies: Vec<&str> = (0..*width).map(|_| "bad").collect();
        node("Concat", &copies, name, &[Attr::Int("axis", 1)]);
    }
    // GraphProto { node = 1, name = 2, input = 11, output = 12 }
    let mut graph = Vec::new();
    for n in &nodes {
        field_bytes(1, n, &mut graph);
    }
    field_bytes(2, b"poison", &mut graph);
    field_bytes(11, &value_info(in_name, in_shape, true), &mut graph);
    for (name, declared, _) in outputs {
        field_bytes(12, &value_info(name, &[-1, *declared], true), &mut graph);
    }
    // ModelProto { ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 { version = 2 } }
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(2, b"faceanalyze-tests", &mut model);
    field_bytes(7, &graph, &mut model);
    let mut opset = Vec::new();
    field_varint(2, 13, &mut opset);
    field_bytes(8, &opset, &mut model);
    model
}

/// Resident memory of this process in KiB (`VmRSS` of /proc/self/status), 0 where it cannot be read.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Threads of this process (entries of /proc/self/task).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Runs the test `name` of the current test binary alone in a child process with `FA_ISOLATED=name` and
/// `MALLOC_ARENA_MAX=1` set (so that it can measure the process: memory, threads) and returns its output; panics
/// with the output when it fails.
/// Inside the child, [`isolated`] returns true for that test.
pub fn run_isolated(name: &str, extra_args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .args(extra_args)
        .env("FA_ISOLATED", name)
        // One malloc arena: glibc gives new threads (each pipeline start has new streaming threads) their own
        // arenas, whose retained free memory would read as growth. Fragmentation is not a leak.
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "isolated {name} failed: {text}");
    assert!(text.contains("1 passed"), "isolated {name} did not run: {text}");
    text
}

/// Whether this process is the child [`run_isolated`] started for test `name`.
pub fn isolated(name: &str) -> bool {
    std::env::var("FA_ISOLATED").is_ok_and(|v| v == name)
}

/// Decodes up to `max` frames of a video (or one photo) in caps format `format` (`decodebin ! videoconvert`):
/// the buffers with their video info.
pub fn decode_buffers(path: &std::path::Path, format: &str, max: usize) -> Vec<(gst::Buffer, gst_video::VideoInfo)> {
    use gst::prelude::*;
    init_gst();
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format={format} ! appsink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while out.len() < max {
        let Ok(sample) = sink.pull_sample() else { break };
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        out.push((sample.buffer_owned().unwrap(), info));
    }
    p.set_state(gst::State::Null).unwrap();
    out
}

/// Decodes up to `max` frames of a video into RGB images (with their timestamps).
pub fn decode_frames(path: &std::path::Path, max: usize) -> Vec<(Rgb, Option<u64>)> {
    use gst_video::prelude::*;
    decode_buffers(path, "RGB", max)
        .into_iter()
        .map(|(buf, info)| {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
            let (w, h) = (info.width() as usize, info.height() as usize);
            let stride = frame.plane_stride()[0] as usize;
            let src = frame.plane_data(0).unwrap();
            let mut data = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                data.extend_from_slice(&src[y * stride..y * stride + w * 3]);
            }
            (Rgb { data, width: w, height: h }, buf.pts().map(|t| t.nseconds()))
        })
        .collect()
}

/// Peak resident memory of this process in KiB (`VmHWM` of /proc/self/status), 0 where it cannot be read.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// [`rss_kib`] after handing the allocator's free memory back to the system (glibc `malloc_trim(0)`), so that the
/// figure follows live memory rather than what the allocator keeps cached; plain [`rss_kib`] elsewhere.
pub fn trimmed_rss_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free memory of the process' own allocator.
        unsafe {
            malloc_trim(0);
        }
    }
    rss_kib()
}

/// Hand-written protobuf encoding for the tiny ONNX fixtures above.
mod pb {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    pub fn field_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(((tag << 3) | 2) as u64, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    pub fn field_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint((tag << 3) as u64, out);
        varint(v, out);
    }

    /// ValueInfoProto { name = 1, type = 2 { tensor_type = 1 { elem_type = 1 (FLOAT), shape = 2 { dim = 1
    /// { dim_value = 1 | dim_param = 2 } } } } }. A `-1` dimension is dynamic: named `N` (one shared batch
    /// dimension) when `shared_batch`, else `d<index>` (independent dimensions).
    pub fn value_info(name: &str, shape: &[i64], shared_batch: bool) -> Vec<u8> {
        let mut shape_msg = Vec::new();
        for (i, &d) in shape.iter().enumerate() {
            let mut dim = Vec::new();
            if d >= 0 {
                field_varint(1, d as u64, &mut dim);
            } else if shared_batch {
                field_bytes(2, b"N", &mut dim);
            } else {
                field_bytes(2, format!("d{i}").as_bytes(), &mut dim);
            }
            field_bytes(1, &dim, &mut shape_msg);
        }
        let mut tensor = Vec::new();
        field_varint(1, 1, &mut tensor);
        field_bytes(2, &shape_msg, &mut tensor);
        let mut ty = Vec::new();
        field_bytes(1, &tensor, &mut ty);
        let mut vi = Vec::new();
        field_bytes(1, name.as_bytes(), &mut vi);
        field_bytes(2, &ty, &mut vi);
        vi
    }
}
