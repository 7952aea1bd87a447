// SPDX-License-Identifier: MIT OR Apache-2.0
//! Paired comparison of two classifiers on the same images (McNemar's test).
//!
//! Two accuracies measured on the same images are not independent: what decides whether one model beats the other
//! is how many images only one of them gets right. With `b` images right only with the baseline and `c` right only
//! with this run, McNemar's exact test asks how likely a split at least as uneven as `b : c` is when each
//! discordant image is a fair coin: two-sided p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). The normal
//! approximation z = (c - b) / sqrt(b + c) is reported beside it (|z| > 1.96: significant at 5 %).

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
        let n = self.only_this + self.only_baseline;
        let k = self.only_this.min(self.only_baseline);
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
