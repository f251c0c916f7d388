//! Precision, recall and F1, and choosing a decision cut-off.
//!
//! A cut-off is chosen for F1 *across base rates* ([`BASE_RATES`]), not at
//! the one base rate of the rows it is read on: overload onsets are rare
//! and their rate moves from one stretch of time to the next (July's five
//! validation slices span 0.07 % to 0.22 % of rows, a factor of 3.3), and
//! the F1-best cut-off moves with it (fewer alarms when onsets are rarer,
//! more when they are common). Reweighting the positives by each factor
//! (recall and the false-alarm rate stay what they were, precision is what
//! it would be) and averaging F1 picks a cut-off that holds over the range
//! instead of the single best point of one month.

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

    /// F1 had positives been `k` times as common as they were here (the
    /// same recall and false alarms per negative): precision at another
    /// base rate.
    pub fn f1_at_base_rate(&self, k: f64) -> f64 {
        let tp = k * self.tp as f64;
        let d = 2.0 * tp + self.fp as f64 + k * self.fn_ as f64;
        if d == 0.0 {
            0.0
        } else {
            2.0 * tp / d
        }
    }

    /// Mean F1 over [`BASE_RATES`]: what a cut-off or a rule is chosen by.
    pub fn robust_f1(&self) -> f64 {
        BASE_RATES
            .iter()
            .map(|k| self.f1_at_base_rate(*k))
            .sum::<f64>()
            / BASE_RATES.len() as f64
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

/// Factors of the observed base rate a cut-off must hold across: from a
/// quarter to four times, symmetric in ratio and wider than the 3.3 times
/// seen between July's own validation slices.
pub const BASE_RATES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// The cut-off on `probs` (flag when `p >= cut`) with the best
/// [`Confusion::robust_f1`] against `truth`, and that score. Ties go to
/// the higher cut-off (fewer alarms).
pub fn robust_cutoff(probs: &[f32], truth: &[bool]) -> (f32, f64) {
    let positives = truth.iter().filter(|t| **t).count() as u64;
    if positives == 0 {
        return (1.0, 0.0);
    }
    let mut order: Vec<usize> = (0..probs.len().min(truth.len())).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut c = Confusion {
        fn_: positives,
        tn: order.len() as u64 - positives,
        ..Confusion::default()
    };
    let (mut best, mut best_score) = (1.0f32, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let p = probs[order[i]];
        // Everything at the same probability is flagged together.
        while i < order.len() && probs[order[i]] == p {
            if truth[order[i]] {
                c.tp += 1;
                c.fn_ -= 1;
            } else {
                c.fp += 1;
                c.tn -= 1;
            }
            i += 1;
        }
        let score = c.robust_f1();
        if score > best_score {
            best_score = score;
            best = p;
        }
    }
    (best, best_score)
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
    fn f1_at_another_base_rate() {
        let c = Confusion {
            tp: 10,
            fp: 10,
            fn_: 10,
            tn: 970,
        };
        assert!((c.f1_at_base_rate(1.0) - c.score().f1).abs() < 1e-12);
        // Twice as many positives: 20 found of 40, 10 false alarms.
        assert!((c.f1_at_base_rate(2.0) - 40.0 / 70.0).abs() < 1e-12);
        assert!(c.f1_at_base_rate(4.0) > c.f1_at_base_rate(2.0));
    }

    #[test]
    fn the_robust_cutoff_flags_more_when_recall_is_cheap_at_higher_base_rates() {
        // One sure positive at 0.9; at 0.5, 2 more positives for 10 false
        // alarms (worse F1 at this base rate, better at 2-4 times it); at
        // 0.1, the last 2 for 30 more.
        let mut probs = vec![0.9];
        let mut truth = vec![true];
        for (p, pos, neg) in [(0.5, 2, 10), (0.1, 2, 30)] {
            probs.extend(std::iter::repeat_n(p, pos + neg));
            truth.extend((0..pos + neg).map(|i| i < pos));
        }
        assert_eq!(best_cutoff(&probs, &truth).0, 0.9);
        let (cut, score) = robust_cutoff(&probs, &truth);
        assert_eq!(cut, 0.5);
        assert!(score > 0.0);
        // No positive: nothing to flag.
        assert_eq!(robust_cutoff(&[0.3], &[false]), (1.0, 0.0));
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
