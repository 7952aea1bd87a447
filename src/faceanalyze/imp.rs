// SPDX-License-Identifier: MIT OR Apache-2.0
//! GObject/BaseTransform glue of `faceanalyze`: properties, start/stop, caps, and per frame "read settings, map
//! the frame, call the analysis, draw, attach the results". No analysis code lives here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use super::{BlurMode, ExecutionProvider};
use crate::analyzer::{self, AnalyzeParams, AnalyzerConfig};
use crate::engine;
use crate::face::Face;
use crate::frame::{FrameMut, FrameRef, PixelLayout, YuvLayout, YuvMatrix};
use crate::inference::InferenceError;
use crate::inference::session::SessionOptions;
use crate::meta;
use crate::overlay::{DEFAULT_LABEL_FORMAT, LabelTemplate, Overlay, OverlayStyle, Privacy};
use crate::results::ResultsWriter;
use crate::tracker::{MAX_WINDOW, TrackSummary, TrackerParams};
use crate::video::{self, VideoAnalyzer, VideoParams};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("faceanalyze", gst::DebugColorFlags::empty(), Some("Face detection, age and emotion"))
});

const DEFAULT_DETECTION_SIZE: u32 = analyzer::DEFAULT_DETECTION_SIZE as u32;
const MAX_DETECTION_SIZE: u32 = 4096;
const DEFAULT_THRESHOLD: f32 = analyzer::DEFAULT_THRESHOLD;
const DEFAULT_NMS_THRESHOLD: f32 = analyzer::DEFAULT_NMS_THRESHOLD;
const DEFAULT_MIN_FACE_SIZE: u32 = analyzer::DEFAULT_MIN_FACE_SIZE as u32;
const DEFAULT_MAX_FACES: u32 = analyzer::DEFAULT_MAX_FACES as u32;
const MAX_MAX_FACES: u32 = 1024;
const DEFAULT_THREADS: u32 = 0;
const MAX_THREADS: u32 = 64;
const MAX_FONT_SIZE: u32 = 256;

/// Settings read on every frame (copied out under the lock, no allocation).
#[derive(Debug, Clone, Copy)]
struct Live {
    detection_size: u32,
    threshold: f32,
    nms_threshold: f32,
    min_face_size: u32,
    max_faces: u32,
    analyze_age: bool,
    analyze_emotion: bool,
    analyze_gender: bool,
    emotion_flip: bool,
    draw: bool,
    draw_landmarks: bool,
    font_size: u32,
    blur_faces: bool,
    blur_mode: BlurMode,
    post_messages: bool,
    inference_interval: u32,
    reclassify_interval: u32,
    max_classify_per_frame: u32,
    smoothing: u32,
    track_timeout: u32,
    batch_timeout_us: u64,
    max_batch_size: u32,
}

#[derive(Debug, Clone)]
struct Settings {
    onnxruntime_library: String,
    model_dir: String,
    detector_model: String,
    age_model: String,
    emotion_model: String,
    provider: ExecutionProvider,
    strict_provider: bool,
    threads: u32,
    busy_wait: bool,
    trt_cache_dir: String,
    trt_fp16: bool,
    model_instance_id: String,
    results_location: String,
    label_format: String,
    template: Arc<LabelTemplate>,
    live: Live,
}

impl Default for Settings {
    fn default() -> Self {
        let p = AnalyzeParams::default();
        Self {
            onnxruntime_library: String::new(),
            model_dir: String::new(),
            detector_model: analyzer::DEFAULT_DETECTOR_MODEL.into(),
            age_model: analyzer::DEFAULT_AGE_MODEL.into(),
            emotion_model: analyzer::DEFAULT_EMOTION_MODEL.into(),
            provider: ExecutionProvider::Auto,
            strict_provider: false,
            threads: DEFAULT_THREADS,
            busy_wait: false,
            trt_cache_dir: String::new(),
            trt_fp16: false,
            model_instance_id: String::new(),
            results_location: String::new(),
            label_format: DEFAULT_LABEL_FORMAT.into(),
            template: Arc::new(LabelTemplate::default()),
            live: Live {
                detection_size: DEFAULT_DETECTION_SIZE,
                threshold: DEFAULT_THRESHOLD,
                nms_threshold: DEFAULT_NMS_THRESHOLD,
                min_face_size: DEFAULT_MIN_FACE_SIZE,
                max_faces: DEFAULT_MAX_FACES,
                analyze_age: true,
                analyze_emotion: true,
                analyze_gender: false,
                emotion_flip: p.emotion.flip,
                draw: true,
                draw_landmarks: false,
                font_size: 0,
                blur_faces: false,
                blur_mode: BlurMode::Blur,
                post_messages: false,
                inference_interval: video::DEFAULT_INFERENCE_INTERVAL as u32,
                reclassify_interval: video::DEFAULT_RECLASSIFY_INTERVAL as u32,
                max_classify_per_frame: video::DEFAULT_MAX_CLASSIFY_PER_FRAME as u32,
                batch_timeout_us: engine::DEFAULT_BATCH_TIMEOUT_US,
                max_batch_size: engine::DEFAULT_MAX_BATCH_SIZE as u32,
                smoothing: video::DEFAULT_SMOOTHING as u32,
                track_timeout: TrackerParams::default().timeout_frames as u32,
            },
        }
    }
}

/// Negotiated video geometry.
#[derive(Debug, Clone)]
struct Video {
    info: gst_video::VideoInfo,
    format: Format,
}

/// How the negotiated format's pixels are read.
#[derive(Debug, Clone, Copy)]
enum Format {
    Packed(PixelLayout),
    Yuv(YuvLayout, YuvMatrix),
}

impl Format {
    fn from_info(info: &gst_video::VideoInfo) -> Option<Self> {
        let name = info.format().to_str();
        if let Some(l) = PixelLayout::from_name(name) {
            return Some(Format::Packed(l));
        }
        let layout = YuvLayout::from_name(name)?;
        let c = info.colorimetry();
        let mut matrix = match c.matrix() {
            gst_video::VideoColorMatrix::Bt709 => YuvMatrix::BT709,
            gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::BT2020,
            gst_video::VideoColorMatrix::Bt601 | gst_video::VideoColorMatrix::Fcc => YuvMatrix::BT601,
            // GStreamer's own default for unspecified YUV colorimetry: BT.709 from 720 lines up.
            _ if info.height() >= 720 => YuvMatrix::BT709,
            _ => YuvMatrix::BT601,
        };
        matrix.full_range = c.range() == gst_video::VideoColorRange::Range0_255;
        Some(Format::Yuv(layout, matrix))
    }

    fn name(&self) -> &'static str {
        match self {
            Format::Packed(l) => l.name(),
            Format::Yuv(l, _) => l.name(),
        }
    }
}

struct State {
    video_analyzer: VideoAnalyzer,
    ended: Vec<TrackSummary>,
    video: Option<Video>,
    faces: Vec<Face>,
    overlay: Overlay,
    results: Option<ResultsWriter>,
    results_path: PathBuf,
    frame_no: u64,
    warned_max_faces: bool,
    warned_invalid: bool,
    warned_inference: bool,
    /// The sessions run on a GPU provider: only then do streams wait for cross-stream batches (on this project's
    /// CPU, batching measured 7-10 % slower than none, docs/PERFORMANCE.md).
    gpu: bool,
}

#[derive(Default)]
pub struct FaceAnalyze {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    started: AtomicBool,
    /// Read-only `active-provider`.
    active_provider: Mutex<String>,
    /// Read-only `faces-classified`.
    faces_classified: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for FaceAnalyze {
    const NAME: &'static str = "GstFaceAnalyze";
    type Type = super::FaceAnalyze;
    type ParentType = gst_base::BaseTransform;
}

/// Properties that only take effect at start (READY -> PAUSED).
const READY_ONLY: &[&str] = &[
    "onnxruntime-library",
    "model-dir",
    "detector-model",
    "age-model",
    "emotion-model",
    "execution-provider",
    "strict-provider",
    "threads",
    "busy-wait",
    "trt-cache-dir",
    "trt-fp16",
    "model-instance-id",
    "results-location",
];

impl ObjectImpl for FaceAnalyze {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("onnxruntime-library")
                    .nick("ONNX Runtime library")
                    .blurb(
                        "Path of libonnxruntime.so (1.31.x). Empty: the FACEANALYZE_ONNXRUNTIME or ORT_DYLIB_PATH \
                         environment variable, then the project's .deps/onnxruntime/lib installed by scripts/setup.sh. \
                         Changeable in NULL/READY only.",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-dir")
                    .nick("Model directory")
                    .blurb(
                        "Folder holding the named models. Empty: FACEANALYZE_MODEL_DIR, then the project's \
                         models/onnx filled by scripts/setup.sh. Changeable in NULL/READY only.",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("detector-model")
                    .nick("Face detector model")
                    .blurb("The face detector: the name 'yunet' or a path to an ONNX file with YuNet's signature. Changeable in NULL/READY only.")
                    .default_value(Some(analyzer::DEFAULT_DETECTOR_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("age-model")
                    .nick("Age model")
                    .blurb("The age network: 'hse-utk-int8' (the default: HSE with this project's own age head trained on UTKFace, in int8; the most accurate, but UTKFace is a research-use dataset), 'hse-int8' (HSE in int8, as accurate as 'hse' and 3.5 times faster), 'hse' (float), 'dlib-int8' or 'dlib' (fastest, less accurate), or a path to an ONNX file with the HSE or dlib signature. Changeable in NULL/READY only.")
                    .default_value(Some(analyzer::DEFAULT_AGE_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("emotion-model")
                    .nick("Emotion model")
                    .blurb("The emotion network: 'own-int8' (the default: this project's own network in int8, 70.5 % on FER2013 against 68.0 % for 'ensemble', at under half its cost; FER2013 is a research-use dataset), 'own' (the same in float), 'ensemble' (mini and big-int8 averaged), 'mini', 'big', 'big-int8' (big quantised to int8), or a path to an ONNX file with the FER2013 signature (64x64 gray in [-1, 1], 7 probabilities). Changeable in NULL/READY only.")
                    .default_value(Some(analyzer::DEFAULT_EMOTION_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("execution-provider", ExecutionProvider::Auto)
                    .nick("Execution provider")
                    .blurb("Where the models run; the provider actually used is in active-provider. Changeable in NULL/READY only.")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("strict-provider")
                    .nick("Strict provider")
                    .blurb("Fail to start when the requested GPU provider cannot start, instead of falling back to CPU with a warning. Changeable in NULL/READY only.")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("active-provider")
                    .nick("Active provider")
                    .blurb("The execution provider the models run on once started (cpu, cuda or tensorrt); empty before start.")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Inference threads")
                    .blurb("ONNX Runtime intra-op threads per model. 0 uses one per physical core, the fastest for one stream; set 1 or 2 when many streams share the CPU. Unless it is 1 (or the machine has one logical CPU), the detector's pre-processing also uses a second thread. Changeable in NULL/READY only.")
                    .maximum(MAX_THREADS)
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("busy-wait")
                    .nick("Busy-wait between operators")
                    .blurb("Let ONNX Runtime's worker threads spin between operators and models instead of sleeping (with threads=0 they share one process-wide pool). About 1.2x faster when the element has the CPU to itself, for example on frames from appsrc; slower when a decoder, an encoder or other streams run in the same process, hence off by default. Changeable in NULL/READY only.")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("trt-cache-dir")
                    .nick("TensorRT engine cache directory")
                    .blurb("Folder where TensorRT engines are cached so that the second start is fast. Empty: no cache. Changeable in NULL/READY only.")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("trt-fp16")
                    .nick("TensorRT half precision")
                    .blurb("Let TensorRT run the models in fp16 where the GPU supports it (faster; check accuracy with faceanalyze-eval). Ignored by other providers. Changeable in NULL/READY only.")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-instance-id")
                    .nick("Model instance id")
                    .blurb("Elements of one process with the same id and the same models, provider and threads share one set of inference sessions (memory and thread pools loaded once). Empty shares with every element configured alike; 'private' never shares. Changeable in NULL/READY only.")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("detection-size")
                    .nick("Detection size")
                    .blurb("The frame is scaled so that its long side has this many pixels before detection; 0 detects at the frame's own size. Larger finds smaller faces and costs more.")
                    .maximum(MAX_DETECTION_SIZE)
                    .default_value(DEFAULT_DETECTION_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Detection threshold")
                    .blurb("Minimum detector confidence for a face to be reported.")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecFloat::builder("nms-threshold")
                    .nick("NMS threshold")
                    .blurb("Overlapping detections whose intersection over union exceeds this are merged into the most confident one.")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_NMS_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-face-size")
                    .nick("Minimum face size")
                    .blurb("Faces whose box is smaller than this many frame pixels on its longer side are ignored.")
                    .maximum(8192)
                    .default_value(DEFAULT_MIN_FACE_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-faces")
                    .nick("Maximum faces")
                    .blurb("At most this many faces per frame are reported and classified, the most confident first; a warning is posted once when a frame has more.")
                    .minimum(1)
                    .maximum(MAX_MAX_FACES)
                    .default_value(DEFAULT_MAX_FACES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("analyze-age")
                    .nick("Analyze age")
                    .blurb("Estimate each face's age. When false at start the age model is not loaded at all.")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("analyze-emotion")
                    .nick("Analyze emotion")
                    .blurb("Estimate each face's emotion. When false at start the emotion model is not loaded at all.")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("analyze-gender")
                    .nick("Analyze gender")
                    .blurb("Report the HSE age model's male probability as gender_male in the age metadata and gender in the JSON (HSE model only).")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("emotion-flip")
                    .nick("Emotion flip averaging")
                    .blurb("Also classify the mirrored face crop and average the two (twice the emotion cost; on FER2013 +1 point with mini, +0.2 with the ensemble, -0.2 with the default own-int8).")
                    .default_value(AnalyzeParams::default().emotion.flip)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw")
                    .nick("Draw overlay")
                    .blurb("Draw a box and a label per face into the frame. When false the frame is never mapped writable.")
                    .default_value(true)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw-landmarks")
                    .nick("Draw landmarks")
                    .blurb("Also draw the five facial landmarks (eyes, nose tip, mouth corners) as dots.")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("label-format")
                    .nick("Label format")
                    .blurb("Template of each face's label with the fields {age}, {age_range}, {emotion}, {confidence}, {score}, {id} and {gender}; {{ and }} are literal braces. Empty draws no label.")
                    .default_value(Some(DEFAULT_LABEL_FORMAT))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("font-size")
                    .nick("Font size")
                    .blurb("Label text height in pixels; 0 scales it with the frame height.")
                    .maximum(MAX_FONT_SIZE)
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("blur-faces")
                    .nick("Blur faces")
                    .blurb("Hide every face region (see blur-mode), for deployments that must not show faces. Works with draw=false too.")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("blur-mode", BlurMode::Blur)
                    .nick("Blur mode")
                    .blurb("How blur-faces hides a face: a strong blur or pixelation.")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a 'faceanalyze' element message per analysed frame on the bus with its timestamp and faces.")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("inference-interval")
                    .nick("Inference interval")
                    .blurb("Run the face detector every this many frames; in between, tracked faces move on by their estimated motion and still get metadata on every frame.")
                    .minimum(1)
                    .maximum(1000)
                    .default_value(video::DEFAULT_INFERENCE_INTERVAL as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("reclassify-interval")
                    .nick("Reclassify interval")
                    .blurb("Classify a tracked face's age and emotion again after this many frames (new faces and faces that got clearly larger at once); in between it keeps its fused result. 1 classifies every face on every frame.")
                    .minimum(1)
                    .maximum(10000)
                    .default_value(video::DEFAULT_RECLASSIFY_INTERVAL as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-classify-per-frame")
                    .nick("Maximum classifications per frame")
                    .blurb("Classify at most this many faces per frame, new tracks first, then those waiting longest; 0 means no limit.")
                    .maximum(MAX_MAX_FACES)
                    .default_value(video::DEFAULT_MAX_CLASSIFY_PER_FRAME as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("batch-timeout")
                    .nick("Batch timeout")
                    .blurb("Microseconds this stream may wait for faces from other streams sharing its models (model-instance-id) so that all are classified in one batch; 0 never waits. Applies on GPU providers only: on CPU, and for a stream alone on its models, nothing waits.")
                    .maximum(1_000_000)
                    .default_value(engine::DEFAULT_BATCH_TIMEOUT_US)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-batch-size")
                    .nick("Maximum batch size")
                    .blurb("Stop waiting for other streams once a cross-stream batch holds this many faces.")
                    .minimum(1)
                    .maximum(1024)
                    .default_value(engine::DEFAULT_MAX_BATCH_SIZE as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("smoothing")
                    .nick("Smoothing")
                    .blurb("Fuse each track's last this many classifications (age as a confidence-weighted median, emotion as averaged probabilities with hysteresis); 0 reports every classification unchanged.")
                    .maximum(MAX_WINDOW as u32)
                    .default_value(video::DEFAULT_SMOOTHING as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("track-timeout")
                    .nick("Track timeout")
                    .blurb("A face not detected for more than this many frames ends its track (a summary is posted); a face that comes back sooner keeps its id. At least twice inference-interval is used.")
                    .minimum(1)
                    .maximum(100_000)
                    .default_value(TrackerParams::default().timeout_frames as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("faces-classified")
                    .nick("Faces classified")
                    .blurb("How many face classifications (age and emotion) ran since start; shows what reclassify-interval saves.")
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("results-location")
                    .nick("Results location")
                    .blurb("Write one JSON object per analysed frame to this file (JSON Lines, flushed per frame). Empty: off. A path that cannot be created fails the start. Changeable in NULL/READY only.")
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if READY_ONLY.contains(&name) && self.started.load(Ordering::SeqCst) {
            gst::warning!(CAT, imp = self, "Property '{name}' can only be changed in the NULL or READY state; ignored");
            return;
        }
        let mut s = lock(&self.settings);
        let string = || value.get::<Option<String>>().expect("type checked upstream").unwrap_or_default();
        match name {
            "onnxruntime-library" => s.onnxruntime_library = string(),
            "model-dir" => s.model_dir = string(),
            "detector-model" => s.detector_model = string(),
            "age-model" => s.age_model = string(),
            "emotion-model" => s.emotion_model = string(),
            "execution-provider" => s.provider = value.get().expect("type checked upstream"),
            "strict-provider" => s.strict_provider = value.get().expect("type checked upstream"),
            "threads" => s.threads = value.get().expect("type checked upstream"),
            "busy-wait" => s.busy_wait = value.get().expect("type checked upstream"),
            "trt-cache-dir" => s.trt_cache_dir = string(),
            "trt-fp16" => s.trt_fp16 = value.get().expect("type checked upstream"),
            "model-instance-id" => s.model_instance_id = string(),
            "results-location" => s.results_location = string(),
            "detection-size" => s.live.detection_size = value.get().expect("type checked upstream"),
            "threshold" => s.live.threshold = value.get().expect("type checked upstream"),
            "nms-threshold" => s.live.nms_threshold = value.get().expect("type checked upstream"),
            "min-face-size" => s.live.min_face_size = value.get().expect("type checked upstream"),
            "max-faces" => s.live.max_faces = value.get().expect("type checked upstream"),
            "analyze-age" => s.live.analyze_age = value.get().expect("type checked upstream"),
            "analyze-emotion" => s.live.analyze_emotion = value.get().expect("type checked upstream"),
            "analyze-gender" => s.live.analyze_gender = value.get().expect("type checked upstream"),
            "emotion-flip" => s.live.emotion_flip = value.get().expect("type checked upstream"),
            "draw" => s.live.draw = value.get().expect("type checked upstream"),
            "draw-landmarks" => s.live.draw_landmarks = value.get().expect("type checked upstream"),
            "label-format" => {
                let f = string();
                match LabelTemplate::parse(&f) {
                    Ok(t) => {
                        s.template = Arc::new(t);
                        s.label_format = f;
                    }
                    Err(e) => {
                        gst::warning!(CAT, imp = self, "Invalid label-format '{f}': {e}; keeping '{}'", s.label_format);
                    }
                }
            }
            "font-size" => s.live.font_size = value.get().expect("type checked upstream"),
            "blur-faces" => s.live.blur_faces = value.get().expect("type checked upstream"),
            "blur-mode" => s.live.blur_mode = value.get().expect("type checked upstream"),
            "post-messages" => s.live.post_messages = value.get().expect("type checked upstream"),
            "inference-interval" => s.live.inference_interval = value.get().expect("type checked upstream"),
            "reclassify-interval" => s.live.reclassify_interval = value.get().expect("type checked upstream"),
            "max-classify-per-frame" => s.live.max_classify_per_frame = value.get().expect("type checked upstream"),
            "batch-timeout" => s.live.batch_timeout_us = value.get().expect("type checked upstream"),
            "max-batch-size" => s.live.max_batch_size = value.get().expect("type checked upstream"),
            "smoothing" => s.live.smoothing = value.get().expect("type checked upstream"),
            "track-timeout" => s.live.track_timeout = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
        gst::info!(CAT, imp = self, "Set {name} to {value:?}");
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "active-provider" {
            return lock(&self.active_provider).to_value();
        }
        if pspec.name() == "faces-classified" {
            return self.faces_classified.load(Ordering::Relaxed).to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "onnxruntime-library" => s.onnxruntime_library.to_value(),
            "model-dir" => s.model_dir.to_value(),
            "detector-model" => s.detector_model.to_value(),
            "age-model" => s.age_model.to_value(),
            "emotion-model" => s.emotion_model.to_value(),
            "execution-provider" => s.provider.to_value(),
            "strict-provider" => s.strict_provider.to_value(),
            "threads" => s.threads.to_value(),
            "busy-wait" => s.busy_wait.to_value(),
            "trt-cache-dir" => s.trt_cache_dir.to_value(),
            "trt-fp16" => s.trt_fp16.to_value(),
            "model-instance-id" => s.model_instance_id.to_value(),
            "results-location" => s.results_location.to_value(),
            "detection-size" => s.live.detection_size.to_value(),
            "threshold" => s.live.threshold.to_value(),
            "nms-threshold" => s.live.nms_threshold.to_value(),
            "min-face-size" => s.live.min_face_size.to_value(),
            "max-faces" => s.live.max_faces.to_value(),
            "analyze-age" => s.live.analyze_age.to_value(),
            "analyze-emotion" => s.live.analyze_emotion.to_value(),
            "analyze-gender" => s.live.analyze_gender.to_value(),
            "emotion-flip" => s.live.emotion_flip.to_value(),
            "draw" => s.live.draw.to_value(),
            "draw-landmarks" => s.live.draw_landmarks.to_value(),
            "label-format" => s.label_format.to_value(),
            "font-size" => s.live.font_size.to_value(),
            "blur-faces" => s.live.blur_faces.to_value(),
            "blur-mode" => s.live.blur_mode.to_value(),
            "post-messages" => s.live.post_messages.to_value(),
            "inference-interval" => s.live.inference_interval.to_value(),
            "reclassify-interval" => s.live.reclassify_interval.to_value(),
            "max-classify-per-frame" => s.live.max_classify_per_frame.to_value(),
            "batch-timeout" => s.live.batch_timeout_us.to_value(),
            "max-batch-size" => s.live.max_batch_size.to_value(),
            "smoothing" => s.live.smoothing.to_value(),
            "track-timeout" => s.live.track_timeout.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for FaceAnalyze {}

impl ElementImpl for FaceAnalyze {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Face analysis",
                "Filter/Analyzer/Video",
                "Finds faces and estimates their age and emotion with ONNX models; draws the results and attaches \
                 them as region-of-interest metadata",
                "faceanalyze developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use gst_video::VideoFormat as F;
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list([
                    F::Rgb,
                    F::Bgr,
                    F::Rgbx,
                    F::Bgrx,
                    F::Xrgb,
                    F::Xbgr,
                    F::Rgba,
                    F::Bgra,
                    F::Argb,
                    F::Abgr,
                    F::I420,
                    F::Nv12,
                ])
                .build();
            vec![
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps)
                    .expect("valid src template"),
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps)
                    .expect("valid sink template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

fn start_error(e: &InferenceError) -> gst::ErrorMessage {
    use crate::models::ModelFileError as M;
    let text = e.to_string();
    match e {
        InferenceError::RuntimeNotFound { .. } | InferenceError::RuntimeLoad { .. } => {
            gst::error_msg!(gst::LibraryError::Init, ["{}", text])
        }
        InferenceError::ModelFile(M::Missing { .. }) => gst::error_msg!(gst::ResourceError::NotFound, ["{}", text]),
        InferenceError::ModelFile(_) => gst::error_msg!(gst::ResourceError::OpenRead, ["{}", text]),
        InferenceError::ModelChoice(_) => gst::error_msg!(gst::LibraryError::Settings, ["{}", text]),
        _ => gst::error_msg!(gst::LibraryError::Init, ["{}", text]),
    }
}

impl FaceAnalyze {
    fn config(s: &Settings) -> AnalyzerConfig {
        let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
        AnalyzerConfig {
            onnxruntime_library: path(&s.onnxruntime_library),
            model_dir: path(&s.model_dir),
            detector_model: s.detector_model.clone(),
            age_model: s.age_model.clone(),
            emotion_model: s.emotion_model.clone(),
            age: s.live.analyze_age,
            emotion: s.live.analyze_emotion,
            session: SessionOptions {
                provider: s.provider.into(),
                strict_provider: s.strict_provider,
                threads: s.threads as usize,
                busy_wait: s.busy_wait,
                rewrite_relu6: true,
                trt_cache_dir: path(&s.trt_cache_dir),
                trt_fp16: s.trt_fp16,
            },
        }
    }

    fn video_params(live: &Live) -> VideoParams {
        VideoParams {
            analyze: Self::params(live),
            tracker: TrackerParams { timeout_frames: live.track_timeout as u64, ..Default::default() },
            inference_interval: live.inference_interval.max(1) as u64,
            reclassify_interval: live.reclassify_interval.max(1) as u64,
            max_classify_per_frame: live.max_classify_per_frame as usize,
            batch: engine::BatchParams {
                timeout: std::time::Duration::from_micros(live.batch_timeout_us),
                max_faces: live.max_batch_size as usize,
            },
            smoothing: live.smoothing as usize,
        }
    }

    fn params(live: &Live) -> AnalyzeParams {
        let mut p = AnalyzeParams::default();
        p.detector.size = live.detection_size as usize;
        p.detector.threshold = live.threshold;
        p.detector.nms_threshold = live.nms_threshold;
        p.detector.min_face_size = live.min_face_size as f32;
        p.detector.max_faces = live.max_faces as usize;
        p.analyze_age = live.analyze_age;
        p.analyze_emotion = live.analyze_emotion;
        p.analyze_gender = live.analyze_gender;
        p.emotion.flip = live.emotion_flip;
        p
    }

    fn style(live: &Live, template_empty: bool) -> OverlayStyle {
        OverlayStyle {
            font_size: (live.font_size > 0).then_some(live.font_size as f32),
            line_width: None,
            draw_boxes: true,
            draw_landmarks: live.draw_landmarks,
            draw_labels: !template_empty,
            privacy: match (live.blur_faces, live.blur_mode) {
                (false, _) => Privacy::None,
                (true, BlurMode::Blur) => Privacy::Blur,
                (true, BlurMode::Pixelate) => Privacy::Pixelate,
            },
        }
    }

    /// Draws into the frame: boxes and labels when `draw`, and the privacy filter when `blur-faces`.
    fn draw(
        &self,
        buf: &mut gst::BufferRef,
        video: &Video,
        state: &mut State,
        live: &Live,
        template: &LabelTemplate,
    ) -> Result<(), gst::FlowError> {
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &video.info).map_err(|_| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["Cannot map the frame for drawing"]);
            gst::FlowError::Error
        })?;
        let (w, h) = (video.info.width() as usize, video.info.height() as usize);
        let strides = frame.plane_stride();
        let stride = |i: usize| strides.get(i).map_or(0, |&s| s.max(0) as usize);
        let (s0, s1, s2) = (stride(0), stride(1), stride(2));
        let [p0, p1, p2, _] = frame.planes_data_mut();
        let fm = match video.format {
            Format::Packed(layout) => FrameMut::new(p0, w, h, s0, layout),
            Format::Yuv(layout, matrix) => FrameMut::yuv([p0, p1, p2], [s0, s1, s2], w, h, layout, matrix),
        };
        let mut fm = fm.map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["Frame does not match the caps: {e}"]);
            gst::FlowError::Error
        })?;
        let mut style = Self::style(live, template.is_empty());
        if !live.draw {
            // blur-faces alone: hide faces without boxes or labels.
            style.draw_labels = false;
            style.draw_landmarks = false;
            style.draw_boxes = false;
        }
        state.overlay.draw(&mut fm, &state.faces, template, &style);
        Ok(())
    }
}

impl BaseTransformImpl for FaceAnalyze {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let mut state = lock(&self.state);
        let settings = lock(&self.settings).clone();
        let cfg = Self::config(&settings);
        let shared = engine::acquire(&cfg, &settings.model_instance_id).map_err(|e| {
            gst::error!(CAT, imp = self, "Failed to start: {e}");
            start_error(&e)
        })?;
        let (provider, runtime, age_kind, fallback) = shared.with(|a| {
            (
                a.provider().name(),
                a.runtime_path().display().to_string(),
                a.age_kind().map(|k| k.name()),
                a.provider_fallback().map(str::to_owned),
            )
        });
        gst::info!(
            CAT,
            imp = self,
            "Started with ONNX Runtime {runtime}, provider {provider}, age {age_kind:?}, emotion {}, sessions shared by \
             {} element(s)",
            settings.emotion_model,
            shared.users()
        );
        if let Some(reason) = fallback {
            if settings.provider != ExecutionProvider::Auto {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    ["Execution provider {:?} is not available, running on {provider}: {reason}", settings.provider]
                );
            } else {
                gst::info!(CAT, imp = self, "auto picked {provider}: {reason}");
            }
        }
        let results_path = PathBuf::from(&settings.results_location);
        let results = if settings.results_location.is_empty() {
            None
        } else {
            Some(ResultsWriter::create(&results_path).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    ["Cannot create results-location {}: {e}", results_path.display()]
                )
            })?)
        };
        *lock(&self.active_provider) = provider.to_string();
        self.faces_classified.store(0, Ordering::Relaxed);
        *state = Some(State {
            video_analyzer: VideoAnalyzer::shared(shared),
            gpu: provider != "cpu",
            ended: Vec::new(),
            video: None,
            faces: Vec::with_capacity(DEFAULT_MAX_FACES as usize),
            overlay: Overlay::new(),
            results,
            results_path,
            frame_no: 0,
            warned_max_faces: false,
            warned_invalid: false,
            warned_inference: false,
        });
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut state = lock(&self.state);
        if let Some(s) = state.as_mut() {
            // Tracks still open when stopping without EOS end here.
            s.video_analyzer.finish(&mut s.ended);
            self.emit_ended(s);
            self.finish_results(s);
        }
        *state = None;
        self.started.store(false, Ordering::SeqCst);
        lock(&self.active_provider).clear();
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {incaps:?}"))?;
        let format = Format::from_info(&info)
            .ok_or_else(|| gst::loggable_error!(CAT, "Unsupported format {:?}", info.format()))?;
        let mut state = lock(&self.state);
        let Some(state) = state.as_mut() else {
            return Err(gst::loggable_error!(CAT, "Caps before start"));
        };
        gst::debug!(CAT, imp = self, "Configured for caps {incaps} to {outcaps}");
        let resized =
            state.video.as_ref().is_some_and(|v| (v.info.width(), v.info.height()) != (info.width(), info.height()));
        if resized {
            // Boxes of the old geometry mean nothing in the new one: end those tracks.
            state.video_analyzer.flush(&mut state.ended);
            self.emit_ended(state);
        }
        state.video = Some(Video { info, format });
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) => {
                if let Some(s) = lock(&self.state).as_mut() {
                    s.video_analyzer.finish(&mut s.ended);
                    self.emit_ended(s);
                    self.finish_results(s);
                }
            }
            gst::EventView::FlushStop(_) => {
                if let Some(s) = lock(&self.state).as_mut() {
                    s.video_analyzer.flush(&mut s.ended);
                    self.emit_ended(s);
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let (live, template) = {
            let s = lock(&self.settings);
            (s.live, Arc::clone(&s.template))
        };
        let Some(video) = state.video.clone() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ["Have no caps yet"]);
            return Err(gst::FlowError::NotNegotiated);
        };
        let (w, h) = (video.info.width(), video.info.height());
        let mut params = Self::video_params(&live);
        if !state.gpu {
            params.batch.timeout = std::time::Duration::ZERO;
        }
        let pts = buf.pts();

        // Analyse on a read-only mapping.
        let result = {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &video.info).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ["Buffer of {} bytes does not match the caps ({}x{} {})", buf.size(), w, h, video.format.name()]
                );
                gst::FlowError::Error
            })?;
            let strides = frame.plane_stride();
            let stride = |i: usize| strides.get(i).map_or(0, |&s| s.max(0) as usize);
            let planes = frame.planes_data();
            let fr = match video.format {
                Format::Packed(layout) => FrameRef::new(planes[0], w as usize, h as usize, stride(0), layout),
                Format::Yuv(layout, matrix) => FrameRef::yuv(
                    [planes[0], planes[1], planes[2]],
                    [stride(0), stride(1), stride(2)],
                    w as usize,
                    h as usize,
                    layout,
                    matrix,
                ),
            }
            .map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Format, ["Frame does not match the caps: {e}"]);
                gst::FlowError::Error
            })?;
            let frame_no = state.frame_no;
            state.video_analyzer.process(
                &fr,
                frame_no,
                pts.map(|p| p.nseconds()),
                &params,
                &mut state.faces,
                &mut state.ended,
            )
        };
        match result {
            Ok(vstats) => {
                let stats = vstats.frame;
                if let Some(e) = &vstats.classify_error {
                    self.warn_inference_once(state, e);
                }
                self.faces_classified.fetch_add(vstats.classified as u64, Ordering::Relaxed);
                gst::trace!(
                    CAT,
                    imp = self,
                    "frame {}: {} faces ({} classified), detect {:?}, age {:?}, emotion {:?}",
                    state.frame_no,
                    state.faces.len(),
                    vstats.classified,
                    stats.t_detect,
                    stats.t_age,
                    stats.t_emotion
                );
                if stats.detect.found > state.faces.len() && !state.warned_max_faces {
                    state.warned_max_faces = true;
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Decode,
                        [
                            "A frame has {} faces; only the {} most confident are analysed (max-faces). Warned once.",
                            stats.detect.found,
                            state.faces.len()
                        ]
                    );
                }
                if stats.invalid_outputs > 0 && !state.warned_invalid {
                    state.warned_invalid = true;
                    gst::element_imp_warning!(
                        self,
                        gst::LibraryError::Failed,
                        [
                            "A model produced invalid values (NaN, infinite or out of range) for {} faces; their \
                             results are left out. Warned once.",
                            stats.invalid_outputs
                        ]
                    );
                }
            }
            Err(e) => {
                state.faces.clear();
                self.warn_inference_once(state, &e.to_string());
            }
        }

        if (live.draw || live.blur_faces) && !state.faces.is_empty() {
            self.draw(buf, &video, state, &live, &template)?;
        }
        meta::add_roi_metas(buf, &state.faces, w, h);
        if live.post_messages {
            let s = meta::frame_message(state.frame_no, pts, w, h, &state.faces);
            let _ = self.obj().post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
        if let Some(writer) = state.results.as_mut()
            && let Err(e) = writer.write_frame(state.frame_no, pts.map(|p| p.nseconds()), w, h, &state.faces)
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Write,
                [
                    "Cannot write results to {}: {e}. Results writing stops; the video keeps flowing.",
                    state.results_path.display()
                ]
            );
            state.results = None;
        }
        self.emit_ended(state);
        state.frame_no += 1;
        Ok(gst::FlowSuccess::Ok)
    }
}

impl FaceAnalyze {
    fn warn_inference_once(&self, state: &mut State, e: &str) {
        if !state.warned_inference {
            state.warned_inference = true;
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Failed,
                ["Inference failed, frames pass on without (new) results: {e}. Warned once."]
            );
        } else {
            gst::debug!(CAT, imp = self, "Inference failed: {e}");
        }
    }

    /// Posts a `faceanalyze-track` message and writes a summary record for every track that ended.
    fn emit_ended(&self, state: &mut State) {
        for t in state.ended.drain(..) {
            let msg = gst::message::Element::builder(meta::track_message(&t)).src(&*self.obj()).build();
            let _ = self.obj().post_message(msg);
            if let Some(w) = state.results.as_mut()
                && let Err(e) = w.write_raw(&t.to_json())
            {
                gst::warning!(CAT, imp = self, "Cannot write a track summary: {e}");
            }
        }
    }

    fn finish_results(&self, state: &mut State) {
        if let Some(w) = state.results.as_mut()
            && let Err(e) = w.finish()
        {
            gst::warning!(CAT, imp = self, "Cannot flush results to {}: {e}", state.results_path.display());
        }
    }
}
