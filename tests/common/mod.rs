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
    fn field_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(((tag << 3) | 2) as u64, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn field_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint((tag << 3) as u64, out);
        varint(v, out);
    }
    // ValueInfoProto { name = 1, type = 2 { tensor_type = 1 { elem_type = 1, shape = 2 { dim = 1 { dim_value = 1 |
    // dim_param = 2 } } } } }
    fn value_info(name: &str, shape: &[i64]) -> Vec<u8> {
        let mut shape_msg = Vec::new();
        for (i, &d) in shape.iter().enumerate() {
            let mut dim = Vec::new();
            if d >= 0 {
                field_varint(1, d as u64, &mut dim);
            } else {
                field_bytes(2, format!("d{i}").as_bytes(), &mut dim);
            }
            field_bytes(1, &dim, &mut shape_msg);
        }
        let mut tensor = Vec::new();
        field_varint(1, 1, &mut tensor); // FLOAT
        field_bytes(2, &shape_msg, &mut tensor);
        let mut ty = Vec::new();
        field_bytes(1, &tensor, &mut ty);
        let mut vi = Vec::new();
        field_bytes(1, name.as_bytes(), &mut vi);
        field_bytes(2, &ty, &mut vi);
        vi
    }
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
    field_bytes(11, &value_info(in_name, in_shape), &mut graph);
    field_bytes(12, &value_info(out_name, in_shape), &mut graph);
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
