// SPDX-License-Identifier: MIT OR Apache-2.0
//! One ONNX Runtime session per model: provider selection with fallback, signature check against the model
//! contract, and a single-input run.

use std::path::{Path, PathBuf};

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionOutputs};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::runtime::{ExecutionProvider, RuntimeInfo};
use super::{InferenceError, Result};
use crate::models::{ModelSpec, TensorSpec};

/// How sessions are created.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: ExecutionProvider,
    /// Fail instead of falling back to CPU when the asked-for GPU provider cannot start.
    pub strict_provider: bool,
    /// Intra-op threads per session (0 = ONNX Runtime's default, one per physical core).
    pub threads: usize,
    /// Pool threads spin between operators and models instead of sleeping (see `runtime::global_pool`).
    pub busy_wait: bool,
    /// Rewrite ReLU6 chains to `Clip` when loading (see [`super::graph`]); identical outputs. On by default; off only
    /// to compare with the graph as published.
    pub rewrite_relu6: bool,
    /// Folder for TensorRT engine caches (empty = no cache).
    pub trt_cache_dir: Option<PathBuf>,
    pub trt_fp16: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            provider: ExecutionProvider::Auto,
            strict_provider: false,
            threads: 0,
            busy_wait: false,
            rewrite_relu6: true,
            trt_cache_dir: None,
            trt_fp16: false,
        }
    }
}

/// A loaded, signature-checked model.
pub struct ModelSession {
    session: Session,
    /// Short name used in messages (the manifest name or the file name).
    pub name: String,
    pub path: PathBuf,
    /// The provider the session runs on (`cpu`, `cuda`, `tensorrt`).
    pub provider: ExecutionProvider,
    /// Why a GPU provider was not used, when `auto` or an explicit GPU provider fell back to CPU.
    pub fallback_reason: Option<String>,
    input_name: String,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession").field("name", &self.name).field("provider", &self.provider).finish()
    }
}

fn err_text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn gpu_dispatch(
    provider: ExecutionProvider,
    opts: &SessionOptions,
    model: &Path,
) -> Option<ep::ExecutionProviderDispatch> {
    match provider {
        // cuDNN's default, exhaustive search benchmarks every convolution algorithm for each new input shape.
        // The classifiers' batch size changes with the number of faces, so new shapes keep coming: on an H200 one
        // stream ran at 1.9 fps with a 6.3 ms median and 2 s stalls (docs/PERFORMANCE.md, GPU), most likely that
        // search. The heuristic choice costs nothing per shape.
        ExecutionProvider::Cuda => Some(
            ep::CUDA::default()
                .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Heuristic)
                .build()
                .error_on_failure(),
        ),
        ExecutionProvider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_fp16(opts.trt_fp16);
            if let Some(dir) = opts.trt_cache_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
                trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
                // A model loaded from memory (rewritten graph) has no file name for TensorRT to key its cache on:
                // name the engines after the file, so that models of the same shape never share one.
                if let Some(stem) = model.file_stem() {
                    trt = trt.with_engine_cache_prefix(stem.to_string_lossy());
                }
            }
            Some(trt.build().error_on_failure())
        }
        _ => None,
    }
}

fn provider_compiled_in(provider: ExecutionProvider) -> bool {
    match provider {
        ExecutionProvider::Cuda => ep::CUDA::is_available().unwrap_or(false),
        ExecutionProvider::TensorRt => ep::TensorRT::is_available().unwrap_or(false),
        _ => true,
    }
}

impl ModelSession {
    /// Loads `path` on the requested provider and checks it against `spec`'s contract.
    pub fn load(
        runtime: &RuntimeInfo,
        path: &Path,
        name: &str,
        spec: &ModelSpec,
        opts: &SessionOptions,
    ) -> Result<Self> {
        let attempts: &[ExecutionProvider] = match opts.provider {
            ExecutionProvider::Auto => &[ExecutionProvider::TensorRt, ExecutionProvider::Cuda, ExecutionProvider::Cpu],
            ExecutionProvider::Cuda => &[ExecutionProvider::Cuda, ExecutionProvider::Cpu],
            ExecutionProvider::TensorRt => &[ExecutionProvider::TensorRt, ExecutionProvider::Cpu],
            ExecutionProvider::Cpu => &[ExecutionProvider::Cpu],
        };
        // Read and rewritten once, whichever provider takes it (see `super::graph`).
        let rewritten = opts
            .rewrite_relu6
            .then(|| std::fs::read(path).ok())
            .flatten()
            .and_then(|bytes| super::graph::relu6_to_clip(&bytes))
            .map(|(model, _)| model);
        let mut reasons = Vec::new();
        for &provider in attempts {
            if provider != ExecutionProvider::Cpu && !provider_compiled_in(provider) {
                reasons.push(format!(
                    "{}: not in this ONNX Runtime build ({})",
                    provider.name(),
                    runtime.path.display()
                ));
                continue;
            }
            let gpu_asked = matches!(opts.provider, ExecutionProvider::Cuda | ExecutionProvider::TensorRt);
            if provider == ExecutionProvider::Cpu && opts.strict_provider && gpu_asked {
                return Err(InferenceError::Provider { provider: opts.provider.name(), reason: reasons.join("; ") });
            }
            match Self::build(runtime, path, rewritten.as_deref(), provider, opts) {
                Ok(session) => {
                    check_signature(&session, spec)
                        .map_err(|reason| InferenceError::Signature { path: path.to_owned(), reason })?;
                    let input_name = spec.inputs[0].name.clone();
                    let fallback_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
                    return Ok(Self {
                        session,
                        name: name.to_owned(),
                        path: path.to_owned(),
                        provider,
                        fallback_reason,
                        input_name,
                    });
                }
                Err(reason) if provider == ExecutionProvider::Cpu => {
                    return Err(InferenceError::ModelLoad { path: path.to_owned(), reason });
                }
                Err(reason) => reasons.push(format!("{}: {reason}", provider.name())),
            }
        }
        Err(InferenceError::Provider { provider: opts.provider.name(), reason: reasons.join("; ") })
    }

    /// A session from `rewritten` (the ReLU6-rewritten model bytes) when given and accepted, else from the file.
    fn build(
        runtime: &RuntimeInfo,
        path: &Path,
        rewritten: Option<&[u8]>,
        provider: ExecutionProvider,
        opts: &SessionOptions,
    ) -> std::result::Result<Session, String> {
        if let Some(model) = rewritten {
            // Should ONNX Runtime refuse the rewritten graph, the file as published still loads below.
            if let Ok(session) = Self::builder(runtime, path, provider, opts)?.commit_from_memory(model) {
                return Ok(session);
            }
        }
        Self::builder(runtime, path, provider, opts)?.commit_from_file(path).map_err(err_text)
    }

    fn builder(
        runtime: &RuntimeInfo,
        path: &Path,
        provider: ExecutionProvider,
        opts: &SessionOptions,
    ) -> std::result::Result<SessionBuilder, String> {
        let mut b = Session::builder(&runtime.environment)
            .map_err(err_text)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(err_text)?
            .with_inter_threads(1)
            .map_err(err_text)?
            .with_log_level(ort::logging::LogLevel::Error)
            .map_err(err_text)?
            // Denormal activations make these networks up to 9x slower (dlib age: 10.4 -> 1.15 ms per face); this
            // flushes them on ONNX Runtime's pool threads, `FlushDenormals` on the calling thread.
            .with_flush_to_zero()
            .map_err(err_text)?;
        // `busy-wait` with `threads=0` runs on the process-wide spinning pool (see `runtime::global_pool`), which
        // `ort` uses when the environment has one. Otherwise the session gets its own pool whose threads sleep when
        // idle: the streaming thread does other work between runs (pre-processing, tracking, drawing), and
        // decoders, encoders and other streams need the cores.
        if !opts.busy_wait || opts.threads > 0 {
            b = b.with_independent_thread_pool().map_err(err_text)?;
            b = b.with_intra_op_spinning(opts.busy_wait).map_err(err_text)?;
            if opts.threads > 0 {
                b = b.with_intra_threads(opts.threads).map_err(err_text)?;
            }
        }
        if let Some(d) = gpu_dispatch(provider, opts, path) {
            b = b.with_execution_providers([d]).map_err(err_text)?;
        }
        Ok(b)
    }

    /// Runs the model on one input tensor of `shape` and hands the outputs to `f`.
    pub fn run<R>(
        &mut self,
        shape: &[usize],
        data: &[f32],
        f: impl FnOnce(&SessionOutputs<'_>) -> std::result::Result<R, String>,
    ) -> Result<R> {
        let run_err = |reason: String| InferenceError::Run { model: self.name.clone(), reason };
        let tensor = TensorRef::from_array_view((shape, data)).map_err(|e| run_err(e.to_string()))?;
        let _ftz = FlushDenormals::new();
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| InferenceError::Run { model: self.name.clone(), reason: e.to_string() })?;
        f(&outputs).map_err(|reason| InferenceError::Run { model: self.name.clone(), reason })
    }
}

/// Flush-to-zero and denormals-are-zero on the current thread while alive; the previous mode is restored on drop,
/// so the streaming thread's floating-point mode is unchanged for other elements. With one intra-op thread ONNX
/// Runtime computes on the calling thread, where its own `set_denormal_as_zero` option does not apply.
struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    fn new() -> Self {
        const FTZ_DAZ: u32 = 0x8040;
        let mut saved: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write the SSE control register of this thread only; FTZ and DAZ change
        // how denormal floats round, nothing else. SSE is part of the x86_64 baseline.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack, preserves_flags));
            let mode = saved | FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &mode, options(nostack, preserves_flags));
        }
        Self { saved }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn new() -> Self {
        Self {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the register value read in `new` on the same thread (the guard is not Send).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, preserves_flags));
        }
    }
}

/// The f32 data and shape of output `name`.
pub fn output<'a>(outputs: &'a SessionOutputs<'_>, name: &str) -> std::result::Result<(&'a [i64], &'a [f32]), String> {
    let v = outputs.get(name).ok_or_else(|| format!("no output '{name}'"))?;
    let (shape, data) = v.try_extract_tensor::<f32>().map_err(|e| format!("output '{name}': {e}"))?;
    Ok((shape, data))
}

fn type_name(t: TensorElementType) -> &'static str {
    match t {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float16 => "float16",
        TensorElementType::Float64 => "float64",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Int8 => "int8",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int64 => "int64",
        _ => "other",
    }
}

fn check_tensor(kind: &str, want: &TensorSpec, got: Option<&ValueType>) -> std::result::Result<(), String> {
    let Some(got) = got else {
        return Err(format!("{kind} '{}' is missing", want.name));
    };
    let (Some(ty), Some(shape)) = (got.tensor_type(), got.tensor_shape()) else {
        return Err(format!("{kind} '{}' is not a tensor", want.name));
    };
    if type_name(ty) != want.element_type {
        return Err(format!(
            "{kind} '{}' has element type {}, expected {}",
            want.name,
            type_name(ty),
            want.element_type
        ));
    }
    if shape.len() != want.shape.len() {
        return Err(format!(
            "{kind} '{}' has rank {} (shape {:?}), expected rank {} (shape {:?})",
            want.name,
            shape.len(),
            &shape[..],
            want.shape.len(),
            want.shape
        ));
    }
    for (i, (&g, &w)) in shape.iter().zip(&want.shape).enumerate() {
        if w >= 0 && g >= 0 && g != w {
            return Err(format!(
                "{kind} '{}' dimension {i} is {g}, expected {w} (shape {:?}, expected {:?})",
                want.name,
                &shape[..],
                want.shape
            ));
        }
    }
    Ok(())
}

/// Checks names, element types, ranks and fixed dimensions of a session against a contract.
pub fn check_signature(session: &Session, spec: &ModelSpec) -> std::result::Result<(), String> {
    if session.inputs().len() != spec.inputs.len() {
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        return Err(format!("has {} inputs {names:?}, expected {}", names.len(), spec.inputs.len()));
    }
    for want in &spec.inputs {
        let got = session.inputs().iter().find(|i| i.name() == want.name).map(|i| i.dtype());
        check_tensor("input", want, got)?;
    }
    for want in &spec.outputs {
        let got = session.outputs().iter().find(|o| o.name() == want.name).map(|o| o.dtype());
        check_tensor("output", want, got)?;
    }
    Ok(())
}
