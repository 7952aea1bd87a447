// SPDX-License-Identifier: MIT OR Apache-2.0
//! `faceanalyze`: a GStreamer element that finds faces and estimates their age and emotion with ONNX models.
//!
//! The GStreamer glue lives in [`faceanalyze`]; everything else is plain Rust that tests, benchmarks and the
//! evaluation command use without a pipeline.

pub mod align;
pub mod analyzer;
pub mod engine;
pub mod eval;
pub mod face;
mod faceanalyze;
pub mod frame;
mod helper;
pub mod inference;
pub mod meta;
pub mod models;
pub mod overlay;
pub mod postprocess;
pub mod preprocess;
pub mod results;
pub mod tracker;
pub mod video;

pub use faceanalyze::{BlurMode, ExecutionProvider, FaceAnalyze};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    faceanalyze::register(plugin)
}

gst::plugin_define!(
    faceanalyze,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
