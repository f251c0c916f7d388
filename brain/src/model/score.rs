//! Precision, recall and F1, and choosing a decision cut-off.

use loadshift_events::model::Score;

/// Counts of one binary predictor against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Flagged and positive.
    pub tp: u64,
    /// Flagged and negative.
    pub fp: u64,
    /// Not flagged and positive.
    pub fn_: u64,
    /// Not flagged and negative.
    pub tn: u64,
}

impl Confusion {
    /// Adds one sample.
    pub fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// Precision, recall and F1 (0 where undefined).
    pub fn score(&self) -> Score {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Score {
            precision,
            recall,
            f1,
        }
    }
}

/// The cut-off on `probs` (flag when `p >= cut`) with the best F1 against
/// `truth`, and that F1. Ties go to the higher cut-off (fewer alarms).
pub fn best_cutoff(probs: &[f32], truth: &[bool]) -> (f32, f64) {
    let positives = truth.iter().filter(|t| **t).count() as f64;
    if positives == 0.0 {
        return (1.0, 0.0);
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let (mut tp, mut flagged) = (0f64, 0f64);
    let (mut best, mut best_f1) = (1.0f32, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let p = probs[order[i]];
        // Everything at the same probability is flagged together.
        while i < order.len() && probs[order[i]] == p {
            tp += f64::from(u8::from(truth[order[i]]));
            flagged += 1.0;
            i += 1;
        }
        let f1 = 2.0 * tp / (flagged + positives);
        if f1 > best_f1 {
            best_f1 = f1;
            best = p;
        }
    }
    (best, best_f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_scores() {
        let mut c = Confusion::default();
        for (p, a) in [(true, true), (true, false), (false, true), (false, false)] {
            c.add(p, a);
        }
        c.add(true, true);
        let s = c.score();
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Confusion::default().score(), Score::default());
    }

    #[test]
    fn cutoff_maximises_f1() {
        let probs = [0.9, 0.8, 0.7, 0.2, 0.1];
        let truth = [true, true, false, true, false];
        let (cut, f1) = best_cutoff(&probs, &truth);
        // Flagging down to 0.2: 3 of 4 right, all 3 positives found.
        assert_eq!(cut, 0.2);
        assert!((f1 - 6.0 / 7.0).abs() < 1e-12);
    }
}
