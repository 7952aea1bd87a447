// SPDX-License-Identifier: MIT OR Apache-2.0
/**
 * SECTION:element-faceanalyze
 *
 * Finds every face in raw video, estimates each face's age and emotion with ONNX models (YuNet detector,
 * HSE or dlib age network, FER2013 Xception emotion networks), draws the results into the frame and attaches
 * one `GstVideoRegionOfInterestMeta` per face (type `face`, parameter structures `detection`, `age`,
 * `emotion`, `track`). It works in place on I420 and NV12 (as decoders produce them: only the detector input
 * and the face crops are converted, and drawing goes into the planes) and on the packed RGB formats.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! faceanalyze ! videoconvert ! autovideosink
 * ]|
 */
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FaceAnalyze(ObjectSubclass<imp::FaceAnalyze>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Which ONNX Runtime execution provider runs the models.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstFaceAnalyzeExecutionProvider")]
pub enum ExecutionProvider {
    #[default]
    #[enum_value(name = "Auto: TensorRT, then CUDA, then CPU, whichever starts first.", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "CPU.", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA (falls back to CPU with a warning unless strict-provider is set).", nick = "cuda")]
    Cuda = 2,
    #[enum_value(
        name = "TensorRT (falls back to CPU with a warning unless strict-provider is set).",
        nick = "tensorrt"
    )]
    TensorRt = 3,
}

impl From<ExecutionProvider> for crate::inference::ExecutionProvider {
    fn from(p: ExecutionProvider) -> Self {
        match p {
            ExecutionProvider::Auto => Self::Auto,
            ExecutionProvider::Cpu => Self::Cpu,
            ExecutionProvider::Cuda => Self::Cuda,
            ExecutionProvider::TensorRt => Self::TensorRt,
        }
    }
}

/// How `blur-faces` hides faces.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstFaceAnalyzeBlurMode")]
pub enum BlurMode {
    #[default]
    #[enum_value(name = "Blur: a strong box blur over the face box.", nick = "blur")]
    Blur = 0,
    #[enum_value(name = "Pixelate: large blocks of average colour over the face box.", nick = "pixelate")]
    Pixelate = 1,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        ExecutionProvider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        BlurMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(Some(plugin), "faceanalyze", gst::Rank::NONE, FaceAnalyze::static_type())
}
