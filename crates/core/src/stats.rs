//! The statistics a model's evaluation and the analytics report: proportions
//! with Wilson score intervals, the area under the ROC curve with DeLong's
//! confidence interval, and calibration.
//!
//! Written here rather than taken from a crate: no maintained Rust crate
//! offers DeLong's variance of the AUC, and the Wilson interval is a formula
//! of a few lines. Both are checked in the tests against their definitions
//! (every pair of scores compared) and against published values.

use serde::Serialize;

/// The 97.5th percentile of the standard normal distribution: a two-sided 95%
/// interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A proportion `successes / total` with its Wilson score 95% interval. With
/// no trials there is no estimate: `value`, `lower` and `upper` are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Proportion {
    pub successes: u64,
    pub total: u64,
    pub value: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

impl Proportion {
    pub fn new(successes: u64, total: u64) -> Self {
        assert!(
            successes <= total,
            "a proportion of {successes} successes in {total} trials"
        );
        match wilson(successes, total) {
            Some((lower, upper)) => Self {
                successes,
                total,
                value: Some(successes as f64 / total as f64),
                lower: Some(lower),
                upper: Some(upper),
            },
            None => Self {
                successes,
                total,
                value: None,
                lower: None,
                upper: None,
            },
        }
    }

    /// "0.912 (0.871-0.941) 114/125", or "n/a (0/0)".
    pub fn display(&self) -> String {
        match (self.value, self.lower, self.upper) {
            (Some(value), Some(lower), Some(upper)) => format!(
                "{value:.3} ({lower:.3}-{upper:.3}) {}/{}",
                self.successes, self.total
            ),
            _ => format!("n/a ({}/{})", self.successes, self.total),
        }
    }
}

/// The Wilson score 95% interval of `successes` in `total` trials; `None`
/// when there are no trials.
pub fn wilson(successes: u64, total: u64) -> Option<(f64, f64)> {
    if total == 0 {
        return None;
    }
    let n = total as f64;
    let p = successes as f64 / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 and at `total` successes the bound is exactly 0 or 1; rounding
    // would leave it a hair inside.
    let lower = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let upper = if successes == total {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Some((lower, upper))
}

/// The area under the ROC curve of scores of positive and negative cases, with
/// DeLong's standard error and a 95% interval (clamped to 0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Auc {
    pub value: f64,
    /// `None` with fewer than two positives or two negatives.
    pub standard_error: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub positives: u64,
    pub negatives: u64,
}

impl Auc {
    /// "0.987 (0.975-0.999)".
    pub fn display(&self) -> String {
        match (self.lower, self.upper) {
            (Some(lower), Some(upper)) => {
                format!("{:.3} ({lower:.3}-{upper:.3})", self.value)
            }
            _ if self.standard_error == Some(0.0) => {
                format!("{:.3} (no interval: every pair ordered alike)", self.value)
            }
            _ => format!("{:.3} (no interval: under two of a class)", self.value),
        }
    }
}

/// The AUC of `positives` against `negatives` (the probability that a random
/// positive scores above a random negative, ties counting half), with DeLong's
/// variance computed from midranks (Sun and Xu's fast algorithm), in
/// O(N log N). `None` when either class is empty.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Option<Auc> {
    let (m, n) = (positives.len(), negatives.len());
    if m == 0 || n == 0 {
        return None;
    }
    let combined: Vec<f64> = positives.iter().chain(negatives).copied().collect();
    let ranks = midranks(&combined);
    let ranks_positive = midranks(positives);
    let ranks_negative = midranks(negatives);
    let (mf, nf) = (m as f64, n as f64);
    let sum_positive: f64 = ranks[..m].iter().sum();
    let value = (sum_positive - mf * (mf + 1.0) / 2.0) / (mf * nf);
    // Placement values: for each positive, the share of negatives below it;
    // for each negative, the share of positives above it.
    let v10: Vec<f64> = (0..m)
        .map(|i| (ranks[i] - ranks_positive[i]) / nf)
        .collect();
    let v01: Vec<f64> = (0..n)
        .map(|j| 1.0 - (ranks[m + j] - ranks_negative[j]) / mf)
        .collect();
    let standard_error = (m >= 2 && n >= 2)
        .then(|| (sample_variance(&v10) / mf + sample_variance(&v01) / nf).sqrt());
    // With every pair ordered alike (AUC 0 or 1) DeLong's variance is 0: an
    // interval of one point would claim a certainty small samples do not give,
    // so none is given.
    let interval = standard_error.filter(|&se| se > 0.0);
    Some(Auc {
        value,
        standard_error,
        lower: interval.map(|se| (value - Z_95 * se).max(0.0)),
        upper: interval.map(|se| (value + Z_95 * se).min(1.0)),
        positives: m as u64,
        negatives: n as u64,
    })
}

/// The 1-based rank of each value among `values`, ties given the mean of the
/// ranks they span.
fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold equal values: ranks start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

fn sample_variance(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
}

/// One bin of a reliability diagram: the predictions in `lower..upper` (the
/// last bin includes 1.0), their mean and the observed rate of positives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    pub mean_predicted: Option<f64>,
    pub observed: Option<Proportion>,
}

/// How well probabilities match observed frequencies: the Brier score, the
/// expected calibration error (the count-weighted mean gap between predicted
/// and observed over the bins) and the bins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub brier: f64,
    pub expected_calibration_error: f64,
    pub bins: Vec<CalibrationBin>,
}

/// Calibration of `(probability, positive)` pairs in `bins` equal-width bins
/// over 0..1. `None` without cases.
pub fn calibration(cases: &[(f64, bool)], bins: usize) -> Option<Calibration> {
    if cases.is_empty() || bins == 0 {
        return None;
    }
    let total = cases.len() as f64;
    let brier = cases
        .iter()
        .map(|&(p, y)| (p - if y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / total;
    let mut sums = vec![(0_u64, 0.0_f64, 0_u64); bins];
    for &(p, y) in cases {
        let index = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[index].0 += 1;
        sums[index].1 += p;
        sums[index].2 += u64::from(y);
    }
    let mut gap = 0.0;
    let bins = sums
        .iter()
        .enumerate()
        .map(|(index, &(count, sum, positives))| {
            let mean_predicted = (count > 0).then(|| sum / count as f64);
            if let Some(mean) = mean_predicted {
                gap += count as f64 * (mean - positives as f64 / count as f64).abs();
            }
            CalibrationBin {
                lower: index as f64 / bins as f64,
                upper: (index + 1) as f64 / bins as f64,
                count,
                mean_predicted,
                observed: (count > 0).then(|| Proportion::new(positives, count)),
            }
        })
        .collect();
    Some(Calibration {
        brier,
        expected_calibration_error: gap / total,
        bins,
    })
}

/// The bins of a score distribution: ten equal-width bins over 0..1, the
/// last including 1.
pub const SCORE_BINS: usize = 10;

/// The share of `scores` in each of the [`SCORE_BINS`] bins.
pub fn score_distribution(scores: &[f64]) -> Vec<f64> {
    let mut counts = [0_u64; SCORE_BINS];
    for &score in scores {
        let bin = ((score.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
        counts[bin] += 1;
    }
    let total = scores.len().max(1) as f64;
    counts.iter().map(|&count| count as f64 / total).collect()
}

/// The population stability index of `actual` against `expected` (shares of
/// the same bins): the sum of (a - e) ln(a / e), each share floored at
/// 0.0001 so that an empty bin counts without dividing by zero. Below 0.1 is
/// usually read as stable, 0.1 to 0.25 as a moderate shift, above 0.25 as a
/// large one.
pub fn population_stability_index(expected: &[f64], actual: &[f64]) -> f64 {
    const FLOOR: f64 = 0.0001;
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(FLOOR), a.max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 and
        // 15/148 with the Wilson score method (their method 3).
        let (lower, upper) = wilson(81, 263).unwrap();
        assert!(close(lower, 0.2553, 5e-5), "{lower}");
        assert!(close(upper, 0.3662, 5e-5), "{upper}");
        let (lower, upper) = wilson(15, 148).unwrap();
        assert!(close(lower, 0.0624, 5e-5), "{lower}");
        assert!(close(upper, 0.1605, 5e-5), "{upper}");
        // The extremes stay inside 0..1 and are not degenerate.
        let (lower, upper) = wilson(0, 10).unwrap();
        assert_eq!(lower, 0.0);
        assert!(close(upper, 0.2775, 5e-5), "{upper}");
        let (lower, upper) = wilson(10, 10).unwrap();
        assert!(close(lower, 0.7225, 5e-5), "{lower}");
        assert_eq!(upper, 1.0);
        assert_eq!(wilson(0, 0), None);
        assert_eq!(Proportion::new(0, 0).display(), "n/a (0/0)");
    }

    #[test]
    fn auc_of_separated_reversed_and_tied_scores() {
        let perfect = auc(&[0.9, 0.8, 0.7], &[0.1, 0.2]).unwrap();
        assert_eq!(perfect.value, 1.0);
        assert_eq!(perfect.standard_error, Some(0.0));
        assert_eq!(
            (perfect.lower, perfect.upper),
            (None, None),
            "no interval of one point"
        );
        let reversed = auc(&[0.1, 0.2], &[0.9, 0.8, 0.7]).unwrap();
        assert_eq!(reversed.value, 0.0);
        let tied = auc(&[0.5, 0.5], &[0.5, 0.5]).unwrap();
        assert_eq!(tied.value, 0.5);
        assert!(auc(&[0.5], &[]).is_none());
        assert_eq!(auc(&[0.7], &[0.1, 0.2]).unwrap().standard_error, None);
    }

    #[test]
    fn delong_matches_a_worked_example() {
        // Worked by hand from the definition: positives 0.9 0.8 0.4, negatives
        // 0.7 0.3 0.2 0.1. Placements of the positives over the negatives:
        // 1, 1, 0.75; of the negatives under the positives (the share of positives above each): 2/3, 1, 1, 1.
        // AUC = 2.75 / 3 = 0.916667; S10 = var(1, 1, 0.75) = 0.0208333;
        // S01 = var(2/3, 1, 1, 1) = 0.0277778; variance = S10/3 + S01/4.
        let result = auc(&[0.9, 0.8, 0.4], &[0.7, 0.3, 0.2, 0.1]).unwrap();
        assert!(close(result.value, 2.75 / 3.0, 1e-12));
        let expected = (0.020_833_333_333 / 3.0 + 0.027_777_777_778 / 4.0_f64).sqrt();
        assert!(close(result.standard_error.unwrap(), expected, 1e-9));
        assert_eq!(result.upper, Some(1.0), "clamped to 1");
    }

    /// The AUC and DeLong's variance straight from their definitions: every
    /// positive compared with every negative.
    fn by_pairs(positives: &[f64], negatives: &[f64]) -> (f64, Option<f64>) {
        let psi = |x: f64, y: f64| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let (m, n) = (positives.len() as f64, negatives.len() as f64);
        let v10: Vec<f64> = positives
            .iter()
            .map(|&x| negatives.iter().map(|&y| psi(x, y)).sum::<f64>() / n)
            .collect();
        let v01: Vec<f64> = negatives
            .iter()
            .map(|&y| positives.iter().map(|&x| psi(x, y)).sum::<f64>() / m)
            .collect();
        let value = v10.iter().sum::<f64>() / m;
        let se = (positives.len() >= 2 && negatives.len() >= 2)
            .then(|| (sample_variance(&v10) / m + sample_variance(&v01) / n).sqrt());
        (value, se)
    }

    proptest! {
        #[test]
        fn auc_and_its_error_agree_with_every_pair_compared(
            // Scores on a coarse grid, so that ties are common.
            positives in prop::collection::vec((0_u8..20).prop_map(|v| f64::from(v) / 20.0), 1..40),
            negatives in prop::collection::vec((0_u8..20).prop_map(|v| f64::from(v) / 20.0), 1..40),
        ) {
            let fast = auc(&positives, &negatives).unwrap();
            let (value, se) = by_pairs(&positives, &negatives);
            prop_assert!(close(fast.value, value, 1e-9), "{} vs {}", fast.value, value);
            match (fast.standard_error, se) {
                (Some(a), Some(b)) => prop_assert!(close(a, b, 1e-9), "{a} vs {b}"),
                (None, None) => {}
                other => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn wilson_contains_the_estimate(total in 1_u64..500, share in 0.0_f64..=1.0) {
            let successes = (share * total as f64).round() as u64;
            let proportion = Proportion::new(successes, total);
            let (value, lower, upper) =
                (proportion.value.unwrap(), proportion.lower.unwrap(), proportion.upper.unwrap());
            prop_assert!(lower <= value && value <= upper);
            prop_assert!((0.0..=1.0).contains(&lower) && (0.0..=1.0).contains(&upper));
        }
    }

    #[test]
    fn the_stability_index_is_zero_for_the_same_distribution_and_grows_with_a_shift() {
        let reference =
            score_distribution(&[0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]);
        assert!(reference.iter().all(|&share| (share - 0.1).abs() < 1e-12));
        assert_eq!(population_stability_index(&reference, &reference), 0.0);
        // Worked by hand: half the scores move from bin 0 to bin 9 of a
        // two-bin-heavy reference.
        let expected = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
        let actual = [0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75];
        let psi = population_stability_index(&expected, &actual);
        let by_hand = (0.25 - 0.5) * (0.25_f64 / 0.5).ln() + (0.75 - 0.5) * (0.75_f64 / 0.5).ln();
        assert!(close(psi, by_hand, 1e-12), "{psi} vs {by_hand}");
        let shifted = score_distribution(&[0.95; 10]);
        assert!(population_stability_index(&reference, &shifted) > 0.25);
        assert_eq!(
            score_distribution(&[1.0, 0.0])[9],
            0.5,
            "1.0 falls in the last bin"
        );
    }

    #[test]
    fn calibration_bins_brier_and_error() {
        let cases = [(0.05, false), (0.15, false), (0.95, true), (0.85, false)];
        let result = calibration(&cases, 10).unwrap();
        let brier =
            (0.05_f64.powi(2) + 0.15_f64.powi(2) + 0.05_f64.powi(2) + 0.85_f64.powi(2)) / 4.0;
        assert!(close(result.brier, brier, 1e-12));
        assert_eq!(result.bins.len(), 10);
        assert_eq!(result.bins[8].count, 1);
        assert_eq!(result.bins[9].observed.unwrap().successes, 1);
        // Gaps: 0.05, 0.15, 0.85 (bin 8: predicted 0.85, none positive), 0.05.
        assert!(close(
            result.expected_calibration_error,
            (0.05 + 0.15 + 0.85 + 0.05) / 4.0,
            1e-12
        ));
        assert!(calibration(&[], 10).is_none());
    }
}
