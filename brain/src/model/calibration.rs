//! Isotonic calibration: a monotone map from a forest's raw probability to
//! the share of positives observed at that probability on rows the forest
//! never saw (later validation rows).
//!
//! Why: every tree is grown on a *balanced* bootstrap (as many positives as
//! negatives, or a few negatives per positive), so the forest's raw output
//! says "overload" far more often than overloads happen; a cut-off read off
//! that scale does not carry over to a month with another base rate. Fitting
//! the map on out-of-time rows (pool-adjacent-violators, as scikit-learn's
//! `IsotonicRegression`) turns the score back into a frequency, which is what
//! the planner's probability level and the dashboard mean by "probability".

use serde::{Deserialize, Serialize};

/// A non-decreasing step function: a raw probability up to `upper[i]` (and
/// above `upper[i-1]`) maps to `value[i]`; above the last bound, the last
/// value. Empty: the identity (a model trained before calibration existed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Isotonic {
    /// Upper raw bound of each block, increasing.
    pub upper: Vec<f32>,
    /// Calibrated probability of each block, non-decreasing.
    pub value: Vec<f32>,
}

impl Isotonic {
    /// Fits the map to raw probabilities `probs` and their truth
    /// (pool-adjacent-violators on rows sorted by raw probability).
    pub fn fit(probs: &[f32], truth: &[bool]) -> Self {
        let mut order: Vec<usize> = (0..probs.len().min(truth.len())).collect();
        order.sort_unstable_by(|&a, &b| probs[a].total_cmp(&probs[b]));
        // Blocks: (sum of positives, rows, highest raw probability).
        let mut blocks: Vec<(f64, f64, f32)> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let p = probs[order[i]];
            let (mut pos, mut n) = (0.0, 0.0);
            while i < order.len() && probs[order[i]] == p {
                pos += f64::from(u8::from(truth[order[i]]));
                n += 1.0;
                i += 1;
            }
            blocks.push((pos, n, p));
            while blocks.len() >= 2 {
                let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
                if a.0 / a.1 <= b.0 / b.1 {
                    break;
                }
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (a.0 + b.0, a.1 + b.1, b.2);
            }
        }
        Self {
            upper: blocks.iter().map(|b| b.2).collect(),
            value: blocks.iter().map(|b| (b.0 / b.1) as f32).collect(),
        }
    }

    /// The calibrated probability of a raw one.
    pub fn apply(&self, raw: f32) -> f32 {
        if self.upper.is_empty() {
            return raw;
        }
        let i = self.upper.partition_point(|u| *u < raw);
        self.value[i.min(self.value.len() - 1)]
    }

    /// Whether it is the identity (never fitted).
    pub fn is_identity(&self) -> bool {
        self.upper.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_violators_and_maps_to_frequencies() {
        // Raw 0.1: 0 of 2 positive; 0.5: 1 of 1; 0.6: 0 of 1 (violates the
        // order, pooled with 0.5 to 1 of 2); 0.9: 2 of 2.
        let probs = [0.1, 0.1, 0.5, 0.6, 0.9, 0.9];
        let truth = [false, false, true, false, true, true];
        let iso = Isotonic::fit(&probs, &truth);
        assert_eq!(iso.upper, vec![0.1, 0.6, 0.9]);
        assert_eq!(iso.value, vec![0.0, 0.5, 1.0]);
        assert_eq!(iso.apply(0.05), 0.0);
        assert_eq!(iso.apply(0.55), 0.5);
        assert_eq!(iso.apply(0.7), 1.0);
        assert_eq!(iso.apply(0.99), 1.0);
        assert_eq!(Isotonic::default().apply(0.3), 0.3);
    }
}
