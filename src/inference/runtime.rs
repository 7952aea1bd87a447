// SPDX-License-Identifier: MIT OR Apache-2.0
//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`), once per process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{InferenceError, Result};

/// Environment variable naming the ONNX Runtime library (checked before `ORT_DYLIB_PATH`).
pub const LIBRARY_ENV: &str = "FACEANALYZE_ONNXRUNTIME";
/// The library file name the set-up script installs.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Where the set-up script installs ONNX Runtime: `<project>/.deps/onnxruntime/lib/`.
pub fn project_library_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/onnxruntime/lib").join(LIBRARY_FILE)
}

/// The execution providers the element can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExecutionProvider {
    /// TensorRT, then CUDA, then CPU: the first that starts.
    #[default]
    Auto,
    Cpu,
    Cuda,
    TensorRt,
}

impl ExecutionProvider {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Auto => "auto",
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::TensorRt => "tensorrt",
        }
    }
}

/// Which library was loaded.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub path: PathBuf,
    pub environment: ort::environment::Environment,
}

static LOADED: Mutex<Option<RuntimeInfo>> = Mutex::new(None);

/// The candidate paths, in order: the explicit path (property), `$FACEANALYZE_ONNXRUNTIME`, `$ORT_DYLIB_PATH`,
/// the project's own install location. An explicit or environment path is used alone when set, so that a wrong
/// setting gives an error instead of silently loading another library.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return vec![p.to_owned()];
    }
    for var in [LIBRARY_ENV, "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return vec![PathBuf::from(v)];
        }
    }
    vec![project_library_path()]
}

/// Loads ONNX Runtime (once per process) and returns the shared environment.
///
/// ONNX Runtime can only be loaded once per process: when a library is already loaded and another path is asked
/// for, the loaded one is used and the returned info says which.
pub fn load(explicit: Option<&Path>) -> Result<RuntimeInfo> {
    let tried = candidates(explicit);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(path) = tried.iter().find(|p| p.is_file()).cloned() else {
        return Err(InferenceError::RuntimeNotFound {
            tried: tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        });
    };
    if let Some(info) = loaded.as_ref() {
        return Ok(info.clone());
    }
    // `ort` asserts on a few impossible conditions while loading; never let that unwind into GStreamer.
    let built = std::panic::catch_unwind(|| -> std::result::Result<_, String> {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        builder
            .with_name("faceanalyze")
            .with_telemetry(false)
            .with_global_thread_pool(global_pool().map_err(|e| e.to_string())?)
            .build()
            .map_err(|e| e.to_string())
    });
    let environment = match built {
        Ok(Ok(env)) => env,
        Ok(Err(reason)) => return Err(InferenceError::RuntimeLoad { path, reason }),
        Err(_) => {
            return Err(InferenceError::RuntimeLoad { path, reason: "the library could not be initialised".into() });
        }
    };
    let info = RuntimeInfo { path, environment };
    *loaded = Some(info.clone());
    Ok(info)
}

/// The process-wide intra-op pool that sessions with `busy-wait=true` and `threads=0` share: one thread per
/// physical core, spinning between operators and models, denormals flushed.
///
/// One pool rather than one spinning pool per session: the detector and the classifiers run one after another,
/// so spinning per-session pools compete with the next model's pool for the cores (measured on two cores: every
/// face every frame 34 -> 18 fps). Shared, spinning only bridges the gaps between operators and models: the
/// element alone on decoded frames runs about 1.2x faster (YuNet 640x384 on two cores: 4.8 -> 3.6 ms). With a
/// decoder or encoder in the same process the spinning threads take their cores and the whole pipeline is
/// slower, so it is not the default. The pool exists from the first load on whether used or not (its threads then
/// sleep), since ONNX Runtime creates it with the environment, once per process.
fn global_pool() -> ort::Result<ort::environment::GlobalThreadPoolOptions> {
    ort::environment::GlobalThreadPoolOptions::default()
        .with_inter_threads(1)?
        .with_spin_control(true)?
        .with_flush_to_zero()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_used_alone() {
        let c = candidates(Some(Path::new("/nonexistent/libonnxruntime.so")));
        assert_eq!(c, vec![PathBuf::from("/nonexistent/libonnxruntime.so")]);
        let err = load(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err().to_string();
        assert!(err.contains("ONNX Runtime library not found"), "{err}");
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains("scripts/setup.sh"), "{err}");
    }
}
