// SPDX-License-Identifier: MIT OR Apache-2.0
//! Writes a PNG of the overlay on a photo so a person can look at it (default: the shared group photo).
//!
//! `cargo run --release --example overlay_snapshot -- [PHOTO] [OUT.png]`

use gstfaceanalyze::analyzer::{AnalyzeParams, Analyzer, AnalyzerConfig};
use gstfaceanalyze::frame::{FrameMut, PixelLayout};
use gstfaceanalyze::overlay::{LabelTemplate, Overlay, OverlayStyle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let photo = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/images/group_photo/t1.jpg").to_string()
    });
    let out = args.next().unwrap_or_else(|| "out/overlay_snapshot.png".to_string());
    let mut img = image::open(&photo).map_err(|e| format!("{photo}: {e}"))?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);

    let mut analyzer = Analyzer::load(&AnalyzerConfig::default())?;
    let mut faces = Vec::new();
    {
        let frame = gstfaceanalyze::frame::FrameRef::new(img.as_raw(), w, h, w * 3, PixelLayout::Rgb)?;
        analyzer.analyze(&frame, &AnalyzeParams::default(), &mut faces)?;
    }
    let template = LabelTemplate::parse("{age} ({age_range}) {emotion} {confidence}")?;
    let style = OverlayStyle { draw_landmarks: true, ..Default::default() };
    let mut frame = FrameMut::new(&mut img, w, h, w * 3, PixelLayout::Rgb)?;
    Overlay::new().draw(&mut frame, &faces, &template, &style);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    img.save(&out)?;
    println!("{} faces drawn into {out}", faces.len());
    Ok(())
}
