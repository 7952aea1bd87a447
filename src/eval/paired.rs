// SPDX-License-Identifier: MIT OR Apache-2.0
//! Paired comparisons of two runs on the same images: classifiers (McNemar's test) and regressors (the paired
//! difference of absolute errors, with a sign test).
//!
//! Two accuracies measured on the same images are not independent: what decides whether one model beats the other
//! is how many images only one of them gets right. With `b` images right only with the baseline and `c` right only
//! with this run, McNemar's exact test asks how likely a split at least as uneven as `b : c` is when each
//! discordant image is a fair coin: two-sided p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). The normal
//! approximation z = (c - b) / sqrt(b + c) is reported beside it (|z| > 1.96: significant at 5 %).

use std::fmt::Display;
use std::path::Path;

use super::{EvalError, Result};

/// The data rows of a `--predictions` CSV (`lines` after the header), each split into `columns` fields. The first
/// column is an unquoted path that may hold commas, so the other columns are counted from the right (a row with
/// extra commas folds them into its path and then matches no image). Yields (line number, fields); a row with
/// fewer fields is an error.
pub fn rows_from_right<'a>(
    path: &'a Path,
    columns: usize,
    lines: impl Iterator<Item = &'a str> + 'a,
) -> impl Iterator<Item = Result<(usize, Vec<&'a str>)>> + 'a {
    lines.enumerate().filter(|(_, l)| !l.is_empty()).map(move |(i, line)| {
        let mut fields: Vec<&str> = line.rsplitn(columns, ',').collect();
        fields.reverse();
        if fields.len() != columns {
            return Err(EvalError::Layout(format!(
                "{}: line {}: {} columns, the header has {columns}",
                path.display(),
                i + 2,
                fields.len()
            )));
        }
        Ok((i + 2, fields))
    })
}

/// Before a paired run: each image to measure that the baseline `path` has must carry the same label there (the
/// baseline's label is `Some`), and at least one must be in it. `items`: (path relative to DIR, the baseline's
/// label, the label here).
pub fn check_shared_labels<'a, L: PartialEq + Display>(
    path: &Path,
    items: impl ExactSizeIterator<Item = (&'a str, Option<L>, L)>,
) -> Result<()> {
    let n = items.len();
    let mut shared = 0;
    for (rel, there, here) in items {
        if let Some(there) = there {
            if there != here {
                return Err(EvalError::Layout(format!(
                    "{}: {rel} is labelled {there} there and {here} here: not the same labelled images",
                    path.display()
                )));
            }
            shared += 1;
        }
    }
    if shared == 0 && n > 0 {
        return Err(EvalError::Layout(format!(
            "{}: none of the {n} images to measure is in it (paths are relative to DIR, as in --predictions)",
            path.display()
        )));
    }
    Ok(())
}

/// Counts of the four outcomes over the images both runs measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paired {
    pub both: usize,
    pub only_this: usize,
    pub only_baseline: usize,
    pub neither: usize,
}

impl Paired {
    pub fn add(&mut self, this_right: bool, baseline_right: bool) {
        match (this_right, baseline_right) {
            (true, true) => self.both += 1,
            (true, false) => self.only_this += 1,
            (false, true) => self.only_baseline += 1,
            (false, false) => self.neither += 1,
        }
    }

    pub fn n(&self) -> usize {
        self.both + self.only_this + self.only_baseline + self.neither
    }

    fn share(&self, k: usize) -> f64 {
        if self.n() == 0 { f64::NAN } else { k as f64 / self.n() as f64 }
    }

    pub fn accuracy_this(&self) -> f64 {
        self.share(self.both + self.only_this)
    }

    pub fn accuracy_baseline(&self) -> f64 {
        self.share(self.both + self.only_baseline)
    }

    /// (c - b) / sqrt(b + c): positive when this run is better; NaN without discordant images.
    pub fn z(&self) -> f64 {
        let d = self.only_this + self.only_baseline;
        if d == 0 { f64::NAN } else { (self.only_this as f64 - self.only_baseline as f64) / (d as f64).sqrt() }
    }

    /// McNemar's exact two-sided p-value (1 without discordant images).
    pub fn p_exact(&self) -> f64 {
        sign_test_p(self.only_this, self.only_baseline)
    }
}

/// The exact two-sided sign test of `a` against `b` outcomes: min(1, 2 P(X <= min(a, b))), X ~ Binomial(a + b, 1/2)
/// (1 when both are 0). McNemar's exact test is this on the discordant images.
pub fn sign_test_p(a: usize, b: usize) -> f64 {
    let n = a + b;
    let k = a.min(b);
    // ln C(n, i) - n ln 2, summed in log space (2^-n underflows for n > 1074).
    let mut ln_term = -(n as f64) * std::f64::consts::LN_2;
    let mut terms = Vec::with_capacity(k + 1);
    terms.push(ln_term);
    for i in 1..=k {
        ln_term += ((n - i + 1) as f64).ln() - (i as f64).ln();
        terms.push(ln_term);
    }
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = top.exp() * terms.iter().map(|t| (t - top).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// Two regressors (age models) on the same images: per image, the gain is the baseline's absolute error minus this
/// run's (positive: this run closer). The mean gain is the drop in MAE; its standard error gives a 95 % interval
/// and z (normal approximation, fine from a few dozen images); the sign test counts which run was closer, exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairedErrors {
    pub n: usize,
    sum_this: f64,
    sum_baseline: f64,
    /// Welford's running mean and sum of squared deviations of the gain.
    mean_gain: f64,
    m2_gain: f64,
    pub closer_this: usize,
    pub closer_baseline: usize,
    pub ties: usize,
}

impl PairedErrors {
    /// One image: this run's and the baseline's absolute errors.
    pub fn add(&mut self, this_abs: f64, baseline_abs: f64) {
        self.n += 1;
        self.sum_this += this_abs;
        self.sum_baseline += baseline_abs;
        let gain = baseline_abs - this_abs;
        let delta = gain - self.mean_gain;
        self.mean_gain += delta / self.n as f64;
        self.m2_gain += delta * (gain - self.mean_gain);
        match this_abs.partial_cmp(&baseline_abs) {
            Some(std::cmp::Ordering::Less) => self.closer_this += 1,
            Some(std::cmp::Ordering::Greater) => self.closer_baseline += 1,
            _ => self.ties += 1,
        }
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.n == 0 { f64::NAN } else { sum / self.n as f64 }
    }

    pub fn mae_this(&self) -> f64 {
        self.mean(self.sum_this)
    }

    pub fn mae_baseline(&self) -> f64 {
        self.mean(self.sum_baseline)
    }

    /// MAE of the baseline minus MAE of this run (positive: this run better).
    pub fn gain(&self) -> f64 {
        if self.n == 0 { f64::NAN } else { self.mean_gain }
    }

    /// Standard error of the mean gain (NaN below two images).
    pub fn se(&self) -> f64 {
        if self.n < 2 { f64::NAN } else { (self.m2_gain / (self.n - 1) as f64 / self.n as f64).sqrt() }
    }

    /// The 95 % interval of the gain (normal approximation).
    pub fn ci95(&self) -> (f64, f64) {
        let h = 1.959_963_984_540_054 * self.se();
        (self.gain() - h, self.gain() + h)
    }

    /// gain / standard error: positive when this run is better; 0 when every image has the same error in both.
    pub fn z(&self) -> f64 {
        let (g, se) = (self.gain(), self.se());
        if se.is_nan() || g.is_nan() {
            f64::NAN
        } else if se == 0.0 {
            if g == 0.0 { 0.0 } else { g.signum() * f64::INFINITY }
        } else {
            g / se
        }
    }

    /// Two-sided p of z (normal approximation); 1 when z is 0 or undefined.
    pub fn p_normal(&self) -> f64 {
        let z = self.z();
        if z.is_nan() { 1.0 } else { erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0) }
    }

    /// The exact sign test on the images where one run was closer (ties left out).
    pub fn p_sign(&self) -> f64 {
        sign_test_p(self.closer_this, self.closer_baseline)
    }
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paired(only_this: usize, only_baseline: usize) -> Paired {
        Paired { both: 50, only_this, only_baseline, neither: 7 }
    }

    #[test]
    fn exact_p_values_by_hand() {
        // 2 P(X <= 1), X ~ Bin(10, 1/2) = 2 (1 + 10) / 1024.
        assert!((paired(9, 1).p_exact() - 22.0 / 1024.0).abs() < 1e-15);
        assert!((paired(1, 9).p_exact() - 22.0 / 1024.0).abs() < 1e-15);
        // 2 P(X <= 0), X ~ Bin(6, 1/2) = 2 / 64.
        assert!((paired(0, 6).p_exact() - 2.0 / 64.0).abs() < 1e-15);
        // An even split, and none discordant, give 1; so does 2 P(X <= 2), X ~ Bin(5, 1/2) = 2 (1 + 5 + 10) / 32.
        for (c, b) in [(5, 5), (0, 0), (3, 2)] {
            assert!((paired(c, b).p_exact() - 1.0).abs() < 1e-12, "{c} {b}");
        }
    }

    #[test]
    fn large_counts_do_not_underflow() {
        // 189 against 159 (348 discordant); the reference values are exact sums of binomial coefficients
        // (Python's math.comb and fractions).
        let p = paired(189, 159).p_exact();
        assert!((p - 0.11992448075351288).abs() < 1e-12, "{p}");
        assert!((paired(189, 159).z() - 30.0 / 348f64.sqrt()).abs() < 1e-12);
        // 2000 against 1000: 2^-3000 alone would underflow to 0.
        let p = paired(2000, 1000).p_exact();
        assert!((p / 1.0090148627941341e-75 - 1.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn erfc_against_known_values() {
        // erfc(0) = 1; erfc(1.959964 / sqrt 2) = 0.05; erfc(2) and erfc(-1) from tables; erfc(6) = 2.15e-17.
        for (x, want) in [
            (0.0, 1.0),
            (1.959_963_984_540_054 / std::f64::consts::SQRT_2, 0.05),
            (2.0, 4.677_734_981_047_266e-3),
            (-1.0, 1.842_700_792_949_715),
            (6.0, 2.151_973_671_249_892e-17),
        ] {
            assert!((erfc(x) / want - 1.0).abs() < 2e-7, "erfc({x}) = {} vs {want}", erfc(x));
        }
    }

    #[test]
    fn paired_errors_by_hand() {
        // Gains 1, 2, 3, -2, 0: mean 0.8, sample variance (0.04 + 1.44 + 4.84 + 7.84 + 0.64) / 4 = 3.7.
        let mut e = PairedErrors::default();
        for (this, base) in [(1.0, 2.0), (0.0, 2.0), (2.0, 5.0), (4.0, 2.0), (3.0, 3.0)] {
            e.add(this, base);
        }
        assert_eq!((e.n, e.closer_this, e.closer_baseline, e.ties), (5, 3, 1, 1));
        assert!((e.mae_this() - 2.0).abs() < 1e-12 && (e.mae_baseline() - 2.8).abs() < 1e-12);
        assert!((e.gain() - 0.8).abs() < 1e-12);
        let se = (3.7f64 / 5.0).sqrt();
        assert!((e.se() - se).abs() < 1e-12, "{}", e.se());
        assert!((e.z() - 0.8 / se).abs() < 1e-9);
        let (lo, hi) = e.ci95();
        assert!((hi - lo - 2.0 * 1.959_963_984_540_054 * se).abs() < 1e-9 && ((lo + hi) / 2.0 - 0.8).abs() < 1e-12);
        // Two-sided normal p of z = 0.930: 0.3522.
        assert!((e.p_normal() - 0.352_2).abs() < 1e-3, "{}", e.p_normal());
        // Sign test 3 : 1 = 2 (1 + 4) / 16.
        assert!((e.p_sign() - 10.0 / 16.0).abs() < 1e-15);
        // Identical errors: no gain, z 0, both p 1; nothing yet: NaN figures, p 1.
        let mut same = PairedErrors::default();
        for v in [1.0, 2.5, 0.0] {
            same.add(v, v);
        }
        assert_eq!((same.gain(), same.z(), same.p_normal(), same.p_sign(), same.ties), (0.0, 0.0, 1.0, 1.0, 3));
        let none = PairedErrors::default();
        assert!(none.gain().is_nan() && none.se().is_nan() && none.p_normal() == 1.0);
        // The same non-zero gain everywhere: z is infinite and p 0.
        let mut shift = PairedErrors::default();
        shift.add(1.0, 2.0);
        shift.add(3.0, 4.0);
        assert_eq!((shift.z(), shift.p_normal()), (f64::INFINITY, 0.0));
    }

    #[test]
    fn accuracies_and_counts() {
        let mut p = Paired::default();
        for (a, b) in [(true, true), (true, false), (false, true), (false, false), (true, false)] {
            p.add(a, b);
        }
        assert_eq!(p, Paired { both: 1, only_this: 2, only_baseline: 1, neither: 1 });
        assert_eq!((p.n(), p.accuracy_this(), p.accuracy_baseline()), (5, 0.6, 0.4));
        assert!(Paired::default().accuracy_this().is_nan() && Paired::default().z().is_nan());
    }
}
