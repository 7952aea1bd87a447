// SPDX-License-Identifier: MIT OR Apache-2.0
//! `faceanalyze-eval`: accuracy of the element's own analysis code on labelled data (FDDB-style detection,
//! UTKFace-style age, FER2013-style emotion folders). All logic lives in `gstfaceanalyze::eval`; see
//! `faceanalyze-eval --help` and docs/ACCURACY.md.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    gstfaceanalyze::eval::cli::main_with_args(&args)
}
