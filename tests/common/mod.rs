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
