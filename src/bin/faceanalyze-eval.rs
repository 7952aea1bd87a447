// SPDX-License-Identifier: MIT OR Apache-2.0
//! `faceanalyze-eval`: accuracy of the element's own analysis code on labelled data (being written).
fn main() {
    eprintln!("faceanalyze-eval: not built yet");
    std::process::exit(2);
}
