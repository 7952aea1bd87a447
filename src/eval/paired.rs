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
/// run's (positive: this run closer). The mean gain is the drop in MAE; Student's t on the paired gains (n - 1
/// degrees of freedom) gives its 95 % interval and two-sided p, and the exact sign test counts which run was
/// closer, ties left out.
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

    /// The 95 % interval of the gain: gain -/+ t(0.975, n - 1) x standard error (NaN below two images).
    pub fn ci95(&self) -> (f64, f64) {
        let h = if self.n < 2 { f64::NAN } else { t_critical_95((self.n - 1) as f64) * self.se() };
        (self.gain() - h, self.gain() + h)
    }

    /// gain / standard error: positive when this run is better; 0 when every image has the same error in both,
    /// infinite when every image has the same non-zero gain, NaN below two images.
    pub fn t(&self) -> f64 {
        let (g, se) = (self.gain(), self.se());
        if se.is_nan() {
            f64::NAN
        } else if se == 0.0 {
            if g == 0.0 { 0.0 } else { g.signum() * f64::INFINITY }
        } else {
            g / se
        }
    }

    /// Student's two-sided p of [`Self::t`] with n - 1 degrees of freedom (NaN below two images).
    pub fn p_t(&self) -> f64 {
        if self.n < 2 { f64::NAN } else { t_two_sided_p(self.t(), (self.n - 1) as f64) }
    }

    /// The exact sign test on the images where one run was closer (ties left out).
    pub fn p_sign(&self) -> f64 {
        sign_test_p(self.closer_this, self.closer_baseline)
    }
}

/// Two-sided p of Student's t with `df` degrees of freedom: I_{df / (df + t^2)}(df / 2, 1 / 2).
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    incomplete_beta(df / (df + t * t), 0.5 * df, 0.5).clamp(0.0, 1.0)
}

/// The t with two-sided p = 0.05 at `df` degrees of freedom (12.706 at 1, 1.960 as df grows), by bisection.
pub fn t_critical_95(df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1e3f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_two_sided_p(mid, df) > 0.05 { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x)
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b) (continued fraction, modified Lentz; Numerical Recipes'
/// betai / betacf).
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// A p-value for a table: four decimals, or two significant digits below 0.0001 (where four decimals would print
/// 0.0000).
pub fn fmt_p(p: f64) -> String {
    if p > 0.0 && p < 1e-4 { format!("{p:.1e}") } else { format!("{p:.4}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paired(only_this: usize, only_baseline: usize) -> Paired {
        Paired { both: 50, only_this, only_baseline, neither: 7 }
    }

    #[test]
    fn rows_keep_commas_in_the_path_and_number_lines_from_the_header() {
        // Both --baseline readers split this way: the path is whatever is left of the last columns - 1 commas.
        let csv = Path::new("b.csv");
        let text = "x/a,b.png,3,0.5\n\nx/,c,.png,4,0.25\n";
        let rows: Vec<_> = rows_from_right(csv, 3, text.lines()).collect::<Result<_>>().unwrap();
        assert_eq!(rows, [(2, vec!["x/a,b.png", "3", "0.5"]), (4, vec!["x/,c,.png", "4", "0.25"])]);
        let err = rows_from_right(csv, 3, "x/a.png,3".lines()).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("b.csv: line 2: 2 columns, the header has 3"), "{err}");
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
    fn student_t_against_closed_forms_and_tables() {
        // df = 1 (Cauchy): p = 1 - (2 / pi) atan |t|; df = 2: p = 1 - |t| / sqrt(t^2 + 2).
        for t in [0.0, 0.3, 1.0, 2.5, 12.0, -4.0] {
            let p1 = 1.0 - 2.0 / std::f64::consts::PI * f64::atan(f64::abs(t));
            let p2 = 1.0 - f64::abs(t) / (t * t + 2.0f64).sqrt();
            assert!((t_two_sided_p(t, 1.0) - p1).abs() < 1e-12, "t {t} df 1: {} vs {p1}", t_two_sided_p(t, 1.0));
            assert!((t_two_sided_p(t, 2.0) - p2).abs() < 1e-12, "t {t} df 2: {} vs {p2}", t_two_sided_p(t, 2.0));
        }
        // Two-sided 5 % critical values from the tables; the normal 1.959964 in the limit.
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (10.0, 2.228_138_852),
            (30.0, 2.042_272_456),
        ] {
            assert!((t_critical_95(df) - want).abs() < 1e-8, "df {df}: {} vs {want}", t_critical_95(df));
        }
        assert!((t_critical_95(1e7) - 1.959_963_985).abs() < 1e-6);
        // A large df behaves as the normal, 2 (1 - Phi(3)) = 0.0026998, up to a relative term of about
        // t^2 (t^2 + 1) / (4 df) = 2e-5 here; tiny p keep their digits.
        let r = t_two_sided_p(3.0, 1e6) / 2.699_796_063_260_2e-3 - 1.0;
        assert!(r > 0.0 && r < 5e-5, "{r}");
        assert!(t_two_sided_p(17.6, 1791.0) < 1e-60 && t_two_sided_p(17.6, 1791.0) > 0.0);
        assert_eq!(t_two_sided_p(f64::INFINITY, 3.0), 0.0);
        assert!(t_two_sided_p(f64::NAN, 3.0).is_nan());
        assert_eq!(
            (fmt_p(0.05), fmt_p(3.2e-9), fmt_p(0.0), fmt_p(1.0)),
            ("0.0500".into(), "3.2e-9".into(), "0.0000".into(), "1.0000".into())
        );
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
        assert!((e.t() - 0.8 / se).abs() < 1e-9);
        // 4 degrees of freedom: the interval is 0.8 -/+ 2.776445 se, and t = 0.930 has two-sided p 0.40502.
        let (lo, hi) = e.ci95();
        assert!((hi - lo - 2.0 * 2.776_445_105 * se).abs() < 1e-7 && ((lo + hi) / 2.0 - 0.8).abs() < 1e-12);
        assert!((e.p_t() - 0.405_023).abs() < 1e-5, "{}", e.p_t());
        // Sign test 3 : 1 = 2 (1 + 4) / 16.
        assert!((e.p_sign() - 10.0 / 16.0).abs() < 1e-15);
        // Identical errors: no gain, t 0, both p 1; nothing yet or one image: NaN figures.
        let mut same = PairedErrors::default();
        for v in [1.0, 2.5, 0.0] {
            same.add(v, v);
        }
        assert_eq!((same.gain(), same.t(), same.p_t(), same.p_sign(), same.ties), (0.0, 0.0, 1.0, 1.0, 3));
        let mut one = PairedErrors::default();
        assert!(one.gain().is_nan() && one.se().is_nan() && one.p_t().is_nan());
        one.add(1.0, 3.0);
        assert_eq!(one.gain(), 2.0);
        assert!(one.t().is_nan() && one.p_t().is_nan() && one.ci95().0.is_nan());
        // The same non-zero gain everywhere: t is infinite and p 0.
        let mut shift = PairedErrors::default();
        shift.add(1.0, 2.0);
        shift.add(3.0, 4.0);
        assert_eq!((shift.t(), shift.p_t()), (f64::INFINITY, 0.0));
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
