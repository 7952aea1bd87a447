// SPDX-License-Identifier: MIT OR Apache-2.0
//! Monotonic age calibration: an isotonic (pool-adjacent-violators) fit of the true age on the predicted age,
//! kept as a short piecewise-linear table (predicted -> corrected) that the analysis can apply per face.
//!
//! Fitting: the (predicted, true) pairs are sorted by prediction and cut into `max_knots` bins of equal count; the
//! bins' mean true ages are made non-decreasing with pool-adjacent-violators (weighted by bin size); each pooled
//! block gives one knot at its mean prediction. Applying: linear between knots; beyond the first and last knot the
//! correction is a constant offset (slope 1), and the result is never below 0.

/// Pool-adjacent-violators: the non-decreasing sequence closest (weighted least squares) to `values`.
pub fn pav(values: &[f64], weights: &[f64]) -> Vec<f64> {
    // Blocks: (weighted sum, weight, number of inputs).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(values.len());
    for (&v, &w) in values.iter().zip(weights) {
        blocks.push((v * w, w, 1));
        while blocks.len() >= 2 {
            let (s1, w1, n1) = blocks[blocks.len() - 1];
            let (s0, w0, n0) = blocks[blocks.len() - 2];
            if s0 / w0 <= s1 / w1 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s0 + s1, w0 + w1, n0 + n1);
        }
    }
    blocks.iter().flat_map(|&(s, w, n)| std::iter::repeat_n(s / w, n)).collect()
}

/// Fits a calibration table from `(predicted, true)` pairs with at most `max_knots` knots (ascending in both).
pub fn fit(pairs: &[(f32, f32)], max_knots: usize) -> Vec<(f32, f32)> {
    let mut p: Vec<(f64, f64)> =
        pairs.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (x as f64, y as f64)).collect();
    if p.is_empty() || max_knots == 0 {
        return Vec::new();
    }
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = p.len();
    let bins = max_knots.min(n);
    let mut xs = Vec::with_capacity(bins);
    let mut ys = Vec::with_capacity(bins);
    let mut ws = Vec::with_capacity(bins);
    for b in 0..bins {
        let chunk = &p[b * n / bins..(b + 1) * n / bins];
        let w = chunk.len() as f64;
        xs.push(chunk.iter().map(|c| c.0).sum::<f64>() / w);
        ys.push(chunk.iter().map(|c| c.1).sum::<f64>() / w);
        ws.push(w);
    }
    let fitted = pav(&ys, &ws);
    // One knot per pooled block (equal fitted values) and per distinct x.
    let mut knots: Vec<(f64, f64, f64)> = Vec::new(); // (sum w*x, sum w, value)
    for ((&x, &w), &v) in xs.iter().zip(&ws).zip(&fitted) {
        match knots.last_mut() {
            Some(k) if k.2 == v || (k.0 / k.1 - x).abs() < 1e-9 => {
                let total = k.1 + w;
                k.2 = (k.2 * k.1 + v * w) / total;
                k.0 += w * x;
                k.1 = total;
            }
            _ => knots.push((w * x, w, v)),
        }
    }
    knots.iter().map(|k| ((k.0 / k.1) as f32, k.2 as f32)).collect()
}

/// The calibrated age for prediction `x` (unchanged when the table is empty).
pub fn apply(table: &[(f32, f32)], x: f32) -> f32 {
    let (Some(&(x0, y0)), Some(&(xn, yn))) = (table.first(), table.last()) else { return x };
    if !x.is_finite() {
        return x;
    }
    let y = if x <= x0 {
        x + (y0 - x0)
    } else if x >= xn {
        x + (yn - xn)
    } else {
        let i = table.partition_point(|k| k.0 <= x);
        let ((xa, ya), (xb, yb)) = (table[i - 1], table[i]);
        if xb > xa { ya + (yb - ya) * (x - xa) / (xb - xa) } else { ya }
    };
    y.max(0.0)
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Rust source for `pub const NAME: &[(f32, f32)]` with `doc` as its doc comment.
pub fn rust_source(name: &str, table: &[(f32, f32)], doc: &[String]) -> String {
    let mut s = String::new();
    for l in doc {
        s += &format!("/// {l}\n").replace("/// \n", "///\n");
    }
    s += &format!("pub const {name}: &[(f32, f32)] = &[\n");
    for (x, y) in table {
        s += &format!("    ({:.2}, {:.2}),\n", x, y);
    }
    s += "];\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pav_pools_violators() {
        assert_eq!(pav(&[1.0, 3.0, 2.0, 4.0], &[1.0; 4]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(pav(&[3.0, 2.0, 1.0], &[1.0, 1.0, 2.0]), vec![1.75; 3]);
        assert_eq!(pav(&[1.0, 2.0], &[1.0, 1.0]), vec![1.0, 2.0]);
    }

    #[test]
    fn fit_and_apply() {
        // True = 2 * predicted on a grid: the table reproduces it between its knots.
        let pairs: Vec<(f32, f32)> = (0..100).map(|i| (i as f32, 2.0 * i as f32)).collect();
        let t = fit(&pairs, 10);
        assert_eq!(t.len(), 10);
        assert!((apply(&t, 50.0) - 100.0).abs() < 1e-3, "{t:?}");
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        // Outside the knots: constant offset, never negative.
        let (x0, y0) = t[0];
        assert!((apply(&t, x0 - 1.0) - (y0 - 1.0).max(0.0)).abs() < 1e-4);
        let (xn, yn) = *t.last().unwrap();
        assert!((apply(&t, xn + 10.0) - (yn + 10.0)).abs() < 1e-4);
        assert_eq!(apply(&[], 7.0), 7.0);
        // A decreasing relation collapses to one knot at the mean.
        let down: Vec<(f32, f32)> = (0..10).map(|i| (i as f32, 10.0 - i as f32)).collect();
        let t = fit(&down, 5);
        assert_eq!(t.len(), 1);
        assert!((t[0].1 - 5.5).abs() < 1e-5);
    }

    #[test]
    fn date_looks_like_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
