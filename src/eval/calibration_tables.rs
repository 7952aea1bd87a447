// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fitted age calibration tables: predicted age -> corrected age, applied piecewise linearly by
//! [`super::calibration::apply`] (constant offset outside the first and last knot, never below 0).
//!
//! Each is an isotonic (pool-adjacent-violators) fit of E[true age | predicted age] on the even half of the shared
//! UTKFace development set (8,962 crops sorted by path; even positions fit, odd positions held back), made with the
//! element's own analysis (detector at native size, threshold 0.6, most confident face; HSE margin 0.1; dlib with
//! `--align eyes`). Such a fit carries the age distribution it was fitted on:
//! - `*_CALIBRATION` (all ages; UTKFace is 30 % children and has many faces over 60) lowers the held-back MAE over
//!   all ages (HSE 5.78 -> 5.16, dlib 5.96 -> 5.68) but raises it for ages 21-60 (HSE 5.97 -> 6.80, dlib
//!   6.89 -> 7.45): it pushes every middle-aged prediction up.
//! - `*_CALIBRATION_21_60` (fitted on labelled ages 21-60 only) lowers the held-back 21-60 MAE (HSE 5.97 -> 5.44,
//!   dlib 6.89 -> 6.36) and suits scenes of adults; it is not meant for children.
//!
//! The dlib tables hold for `--align eyes` only. Regenerate with (see docs/ACCURACY.md):
//! `faceanalyze-eval age DIR --age-model hse|dlib [--align eyes] --calibration-ages all|21-60 --fit-calibration OUT.rs`
//! and paste the constant here.

/// hse age calibration: isotonic fit (pool-adjacent-violators, 32 equal-count bins) of the true
/// age on the predicted age, fitted on all labelled ages; piecewise linear between knots, constant offset
/// outside them.
/// Produced 2026-11-27 by `faceanalyze-eval age ../shared/data/utkface --age-model hse --jobs 2 --calibration-ages all --fit-calibration out/eval/cal-hse-all.rs --json out/eval/cal-hse-all.json`
/// on ../shared/data/utkface (8962 images sorted by path; even positions fit (4481), odd positions held back).
/// Held-back (all) MAE 5.775 -> 5.160; ages 21-60 5.967 -> 6.803.
pub const HSE_CALIBRATION: &[(f32, f32)] = &[
    (1.03, 1.24),
    (1.11, 1.33),
    (1.38, 1.63),
    (1.97, 2.18),
    (2.62, 2.56),
    (3.68, 3.03),
    (5.04, 4.55),
    (7.08, 6.91),
    (9.07, 9.03),
    (10.54, 10.30),
    (13.48, 12.33),
    (18.13, 16.13),
    (21.71, 17.67),
    (24.34, 20.43),
    (26.29, 22.09),
    (28.03, 23.24),
    (29.64, 25.93),
    (31.50, 28.58),
    (33.79, 31.01),
    (36.00, 35.14),
    (38.25, 39.82),
    (40.32, 41.04),
    (42.68, 44.55),
    (45.31, 51.33),
    (48.08, 53.36),
    (51.04, 56.70),
    (54.91, 61.77),
    (60.38, 67.33),
    (66.02, 74.39),
    (70.01, 80.91),
];

/// hse age calibration: isotonic fit (pool-adjacent-violators, 32 equal-count bins) of the true
/// age on the predicted age, fitted on labelled ages 21-60 only; piecewise linear between knots, constant offset
/// outside them.
/// Produced 2026-11-27 by `faceanalyze-eval age ../shared/data/utkface --age-model hse --jobs 2 --calibration-ages 21-60 --fit-calibration out/eval/cal-hse-2160.rs --json out/eval/cal-hse-2160.json`
/// on ../shared/data/utkface (8962 images sorted by path; even positions fit (1690), odd positions held back).
/// Held-back (21-60) MAE 5.967 -> 5.443; ages 21-60 5.967 -> 5.443.
pub const HSE_CALIBRATION_21_60: &[(f32, f32)] = &[
    (22.80, 25.51),
    (26.63, 25.60),
    (27.63, 25.94),
    (28.96, 26.55),
    (30.08, 28.08),
    (30.83, 28.81),
    (32.28, 30.90),
    (33.68, 32.00),
    (34.65, 33.42),
    (35.50, 34.32),
    (36.30, 35.75),
    (37.34, 37.06),
    (38.93, 39.22),
    (40.70, 41.00),
    (41.69, 41.40),
    (42.61, 43.92),
    (43.62, 44.36),
    (44.83, 47.57),
    (47.39, 49.34),
    (50.30, 50.08),
    (52.25, 52.36),
    (54.79, 53.34),
    (58.50, 54.32),
    (63.58, 56.32),
];

/// dlib age calibration: isotonic fit (pool-adjacent-violators, 32 equal-count bins) of the true
/// age on the predicted age, fitted on all labelled ages; piecewise linear between knots, constant offset
/// outside them.
/// Produced 2026-11-27 by `faceanalyze-eval age ../shared/data/utkface --age-model dlib --align eyes --jobs 2 --calibration-ages all --fit-calibration out/eval/cal-dlib-all.rs --json out/eval/cal-dlib-all.json`
/// on ../shared/data/utkface (8962 images sorted by path; even positions fit (4481), odd positions held back).
/// Held-back (all) MAE 5.961 -> 5.677; ages 21-60 6.894 -> 7.445.
pub const DLIB_CALIBRATION: &[(f32, f32)] = &[
    (0.25, 1.21),
    (0.26, 1.31),
    (0.50, 1.37),
    (0.96, 1.54),
    (1.09, 2.31),
    (1.89, 2.48),
    (3.09, 3.52),
    (4.75, 5.09),
    (6.62, 6.99),
    (8.53, 8.83),
    (11.43, 10.89),
    (16.06, 13.29),
    (20.02, 15.84),
    (22.63, 18.49),
    (24.33, 21.18),
    (25.93, 22.98),
    (27.48, 25.33),
    (29.04, 26.94),
    (30.48, 30.09),
    (31.95, 31.79),
    (33.76, 35.69),
    (36.19, 37.42),
    (39.23, 41.92),
    (42.17, 45.79),
    (45.18, 49.36),
    (48.31, 52.45),
    (52.33, 54.55),
    (56.26, 59.16),
    (61.07, 61.95),
    (67.53, 68.32),
    (76.27, 74.01),
    (79.91, 83.33),
];

/// dlib age calibration: isotonic fit (pool-adjacent-violators, 32 equal-count bins) of the true
/// age on the predicted age, fitted on labelled ages 21-60 only; piecewise linear between knots, constant offset
/// outside them.
/// Produced 2026-11-27 by `faceanalyze-eval age ../shared/data/utkface --age-model dlib --align eyes --jobs 2 --calibration-ages 21-60 --fit-calibration out/eval/cal-dlib-2160.rs --json out/eval/cal-dlib-2160.json`
/// on ../shared/data/utkface (8962 images sorted by path; even positions fit (1690), odd positions held back).
/// Held-back (21-60) MAE 6.894 -> 6.364; ages 21-60 6.894 -> 6.364.
pub const DLIB_CALIBRATION_21_60: &[(f32, f32)] = &[
    (18.65, 24.85),
    (23.02, 25.79),
    (24.60, 26.55),
    (25.76, 26.89),
    (26.79, 27.43),
    (27.56, 28.48),
    (28.34, 28.83),
    (29.15, 29.75),
    (30.16, 30.00),
    (31.06, 31.48),
    (32.12, 33.09),
    (34.08, 36.04),
    (36.66, 38.48),
    (38.65, 38.89),
    (40.69, 43.22),
    (43.08, 43.48),
    (45.03, 45.00),
    (47.26, 46.90),
    (51.18, 49.37),
    (54.33, 50.81),
    (57.53, 52.70),
    (61.19, 53.51),
    (70.14, 54.60),
];
