// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reading faceanalyze's results from an application: a pad probe on the element's src pad and an appsink, both
//! reading the `face` region-of-interest metas, plus the per-frame bus message.
//!
//! `cargo run --example read_results -- VIDEO`

use gst::prelude::*;
use gstfaceanalyze::meta;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstfaceanalyze::plugin_register_static()?;
    let video = std::env::args().nth(1).ok_or("usage: read_results VIDEO")?;

    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{video}\" ! decodebin ! videoconvert ! faceanalyze name=fa draw=false post-messages=true \
         ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;

    // 1. A pad probe sees every buffer as it leaves the element.
    let fa = pipeline.by_name("fa").ok_or("no faceanalyze")?;
    fa.static_pad("src").ok_or("no src pad")?.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buf) = info.buffer() {
            for roi in buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
                if roi.roi_type() != meta::ROI_TYPE {
                    continue;
                }
                let age = roi.param(meta::AGE).and_then(|s| s.get::<f64>(meta::F_VALUE).ok());
                let emotion = roi.param(meta::EMOTION).and_then(|s| s.get::<String>(meta::F_LABEL).ok());
                println!("probe: pts {:?} face {:?} age {age:?} emotion {emotion:?}", buf.pts(), roi.rect());
            }
        }
        gst::PadProbeReturn::Ok
    });

    // 2. An appsink hands whole samples to the application.
    let sink = pipeline.by_name("sink").ok_or("no sink")?.downcast::<gst_app::AppSink>().map_err(|_| "no appsink")?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(|sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(buf) = sample.buffer() {
                    println!("appsink: {} faces", meta::faces_from_buffer(buf).len());
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    // 3. The bus carries one `faceanalyze` element message per frame (post-messages=true).
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug()).into()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == meta::MESSAGE) {
                    let faces = s.get::<gst::Array>("faces").map(|a| a.len()).unwrap_or(0);
                    println!("message: frame {:?} with {faces} faces", s.get::<u64>("frame").ok());
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
