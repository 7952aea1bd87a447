// SPDX-License-Identifier: MIT OR Apache-2.0
//! Everything that talks to ONNX Runtime lives here: finding and loading the library, creating sessions on an
//! execution provider, checking model signatures, and running the three models in batches.

pub mod age;
pub mod detector;
pub mod emotion;
pub mod graph;
pub mod runtime;
pub mod session;

use std::path::PathBuf;

pub use runtime::{ExecutionProvider, RuntimeInfo};
pub use session::{ModelSession, SessionOptions};

/// Errors of the inference layer. The element turns them into GStreamer errors at its boundary.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library not found (tried: {tried}). Run scripts/setup.sh, or point the \
         onnxruntime-library property or the FACEANALYZE_ONNXRUNTIME environment variable at \
         libonnxruntime.so.1.31.x (from the onnxruntime==1.31.1 wheel on PyPI, onnxruntime/capi/)"
    )]
    RuntimeNotFound { tried: String },
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}. faceanalyze needs libonnxruntime.so 1.31.x \
         (run scripts/setup.sh, or set onnxruntime-library / FACEANALYZE_ONNXRUNTIME)"
    )]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error(transparent)]
    ModelFile(#[from] crate::models::ModelFileError),
    #[error("{0}")]
    ModelChoice(String),
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("model {path} does not have the expected signature: {reason}")]
    Signature { path: PathBuf, reason: String },
    #[error("execution provider {provider} is not usable: {reason}")]
    Provider { provider: &'static str, reason: String },
    #[error("inference with {model} failed: {reason}")]
    Run { model: String, reason: String },
}

pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

/// The most faces classified in one inference call; larger sets run in several calls, so that a crowded frame
/// cannot make ONNX Runtime allocate (and keep) gigabytes for one huge batch.
pub const MAX_BATCH: usize = 16;
