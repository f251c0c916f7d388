//! Every choice a model carries, made on rows later in time than the rows
//! it learned from: rolling-origin (time-series) validation.
//!
//! Why: a cut-off chosen on out-of-bag rows of balanced bootstraps of the
//! training month, or on the month it is then scored on, does not carry over
//! to the next month (its base rate of overloads differs). Here the training
//! rows are cut at [`ORIGINS`] (shares of their time span, one moment for all
//! nodes, so every node's later rows validate its earlier ones): fold *k*
//! learns from everything before origin *k* (minus the last `horizon` rows of
//! each node, whose labels look past the origin) and predicts the rows
//! between origin *k* and the next origin (or the end). The validation rows
//! of all folds, pooled, are never trained on by the forest that predicts
//! them; on them, and only on them:
//! - each candidate's raw probabilities are calibrated (isotonic, see
//!   [`super::calibration`]) and its best-F1 cut-off is read;
//! - the candidate hyper-parameters with the best validation F1 win;
//! - the best static rule (`cpu now >= pct`) is chosen on the same rows;
//! - the model is used for the label only if it beats that rule there;
//!   otherwise the planner uses the rule (never worse than its baseline).
//!
//! Test rows (another month, the store's held-back share) never reach this
//! module: callers pass training rows only.

use std::collections::BTreeMap;

use loadshift_events::model::Score;
use serde::{Deserialize, Serialize};

use super::calibration::Isotonic;
use super::dataset::Row;
use super::forest::{self, ForestParams};
use super::score::{best_cutoff, Confusion};
use super::TrainError;
use crate::features::Features;

/// Rolling origins, as shares of the training rows' time span.
pub const ORIGINS: [f64; 2] = [0.5, 0.75];

/// One fold: indices of the rows it trains on and of those it validates on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fold {
    /// Rows before the origin (minus each node's last `horizon`).
    pub train: Vec<usize>,
    /// Rows from the origin to the next one.
    pub valid: Vec<usize>,
}

/// The folds of `rows` at `origins` (increasing shares of the time span).
pub fn folds(rows: &[&Row], horizon: usize, origins: &[f64]) -> Vec<Fold> {
    let mut times: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
    if times.is_empty() {
        return Vec::new();
    }
    times.sort_unstable();
    let at = |share: f64| times[((times.len() as f64 * share) as usize).min(times.len() - 1)];
    let cuts: Vec<i64> = origins.iter().map(|s| at(s.clamp(0.0, 1.0))).collect();
    // Each node's rows, in time order.
    let mut by_node: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_node.entry(r.node).or_default().push(i);
    }
    for v in by_node.values_mut() {
        v.sort_by_key(|&i| rows[i].at_ms);
    }
    cuts.iter()
        .enumerate()
        .map(|(k, &cut)| {
            let end = cuts.get(k + 1).copied().unwrap_or(i64::MAX);
            let mut f = Fold::default();
            for idx in by_node.values() {
                let before = idx.partition_point(|&i| rows[i].at_ms < cut);
                f.train
                    .extend_from_slice(&idx[..before.saturating_sub(horizon)]);
                f.valid.extend(
                    idx[before..]
                        .iter()
                        .copied()
                        .take_while(|&i| rows[i].at_ms < end),
                );
            }
            f
        })
        .collect()
}

/// What was chosen for one label, and the validation scores it was chosen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelChoice {
    /// The winning hyper-parameters.
    pub params: ForestParams,
    /// Raw probability to calibrated probability.
    pub calibration: Isotonic,
    /// Flag when the calibrated probability is at or above this.
    pub cutoff: f32,
    /// The model (calibrated, at the cut-off) on the validation rows.
    pub model: Score,
    /// The static rule chosen on the same rows: `cpu now >= rule_pct`.
    pub rule_pct: f32,
    /// That rule on the same rows.
    pub rule: Score,
    /// The model did not beat the rule: the planner uses the rule.
    pub use_rule: bool,
    /// Validation F1 of every candidate, in the order tried.
    pub candidates: Vec<f64>,
    /// Positive validation rows.
    pub positives: u64,
    /// Validation rows scored.
    pub samples: u64,
}

/// What [`select`] chose for both labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Overload onset.
    pub onset: LabelChoice,
    /// Sustained overload.
    pub sustained: LabelChoice,
    /// The origins used.
    pub origins: Vec<f64>,
}

/// The hyper-parameters tried for a label: the configured ones first, then
/// a smoother forest (bigger leaves, shallower: steadier probabilities) and
/// one with more negatives per positive (a bag closer to the true base rate).
pub fn candidates(base: &ForestParams) -> Vec<ForestParams> {
    vec![
        *base,
        ForestParams {
            min_samples_leaf: base.min_samples_leaf.max(20),
            max_depth: base.max_depth.min(8),
            ..*base
        },
        ForestParams {
            neg_per_pos: base.neg_per_pos * 4.0,
            ..*base
        },
    ]
}

/// One label's rows of a fold: features, truth and CPU now.
fn labelled(
    rows: &[&Row],
    idx: &[usize],
    pick: fn(&Row) -> Option<bool>,
) -> (Vec<Features>, Vec<bool>, Vec<f32>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut cpu = Vec::new();
    for &i in idx {
        if let Some(l) = pick(rows[i]) {
            x.push(rows[i].x);
            y.push(l);
            cpu.push(rows[i].cpu);
        }
    }
    (x, y, cpu)
}

/// Chooses hyper-parameters, calibration, cut-off and model-or-rule for one
/// label on the pooled validation rows of `folds`.
///
/// # Errors
/// [`TrainError::NoRows`] when no fold has both classes to train on and
/// validation rows to score (too little history to choose on).
pub fn choose_label(
    rows: &[&Row],
    folds: &[Fold],
    label: &'static str,
    pick: fn(&Row) -> Option<bool>,
    candidates: &[ForestParams],
    grid: &[f32],
    threads: usize,
) -> Result<LabelChoice, TrainError> {
    let usable: Vec<_> = folds
        .iter()
        .map(|f| {
            (
                labelled(rows, &f.train, pick),
                labelled(rows, &f.valid, pick),
            )
        })
        .filter(|((_, ty, _), (_, vy, _))| {
            ty.iter().any(|l| *l) && ty.iter().any(|l| !*l) && !vy.is_empty()
        })
        .collect();
    let truth: Vec<bool> = usable
        .iter()
        .flat_map(|(_, (_, vy, _))| vy.iter().copied())
        .collect();
    if usable.is_empty() || !truth.iter().any(|t| *t) {
        return Err(TrainError::NoRows(label));
    }
    let cpu: Vec<f32> = usable
        .iter()
        .flat_map(|(_, (_, _, c))| c.iter().copied())
        .collect();
    let mut best: Option<(f64, ForestParams, Isotonic, f32, Score)> = None;
    let mut tried = Vec::new();
    for params in candidates {
        let mut raw = Vec::with_capacity(truth.len());
        for ((tx, ty, _), (vx, _, _)) in &usable {
            let fitted = forest::fit(tx, ty, params, threads)
                .map_err(|source| TrainError::Forest { label, source })?;
            raw.extend(vx.iter().map(|x| fitted.forest.probability(x)));
        }
        let iso = Isotonic::fit(&raw, &truth);
        let calibrated: Vec<f32> = raw.iter().map(|p| iso.apply(*p)).collect();
        let (cut, f1) = best_cutoff(&calibrated, &truth);
        tried.push(f1);
        if best.as_ref().is_none_or(|b| f1 > b.0) {
            let mut c = Confusion::default();
            for (p, t) in calibrated.iter().zip(&truth) {
                c.add(*p >= cut, *t);
            }
            best = Some((f1, *params, iso, cut, c.score()));
        }
    }
    let Some((_, params, calibration, cutoff, model)) = best else {
        return Err(TrainError::NoRows(label));
    };
    let (rule_pct, rule) = best_rule(&cpu, &truth, grid);
    Ok(LabelChoice {
        params,
        calibration,
        cutoff,
        model,
        rule_pct,
        rule,
        use_rule: model.f1 <= rule.f1,
        candidates: tried,
        positives: truth.iter().filter(|t| **t).count() as u64,
        samples: truth.len() as u64,
    })
}

/// The static rule `cpu >= pct` of `grid` with the best F1 on these rows
/// (ties: the higher threshold, fewer alarms).
pub fn best_rule(cpu: &[f32], truth: &[bool], grid: &[f32]) -> (f32, Score) {
    let mut best = (grid.last().copied().unwrap_or(100.0), Score::default());
    for &t in grid {
        let mut c = Confusion::default();
        for (v, l) in cpu.iter().zip(truth) {
            c.add(*v >= t, *l);
        }
        let s = c.score();
        if s.f1 > best.1.f1 || (s.f1 == best.1.f1 && t > best.0) {
            best = (t, s);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::N_FEATURES;
    use crate::labels::Labels;

    fn row(node: u32, at_ms: i64, cpu: f32) -> Row {
        let mut x = [0f32; N_FEATURES];
        x[0] = cpu;
        Row {
            node,
            at_ms,
            seq: 0,
            x,
            cpu,
            labels: Labels::default(),
        }
    }

    #[test]
    fn validation_rows_are_later_than_every_training_row() {
        let rows: Vec<Row> = (0..2)
            .flat_map(|n| (0..100).map(move |i| row(n, i * 1000, 0.0)))
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let f = folds(&refs, 3, &ORIGINS);
        assert_eq!(f.len(), 2);
        for fold in &f {
            let last_train = fold.train.iter().map(|&i| rows[i].at_ms).max().unwrap();
            let first_valid = fold.valid.iter().map(|&i| rows[i].at_ms).min().unwrap();
            assert!(last_train < first_valid);
            // The horizon gap: each node loses its last 3 rows before the origin.
            assert_eq!(first_valid - last_train, 4000);
        }
        // Validation slices do not overlap and reach the end.
        assert_eq!(f[0].valid.len(), 2 * 25);
        assert_eq!(f[1].valid.len(), 2 * 25);
    }

    #[test]
    fn best_rule_on_known_rows() {
        let cpu = [10.0, 60.0, 70.0, 95.0];
        let truth = [false, false, true, true];
        let (pct, s) = best_rule(&cpu, &truth, &[50.0, 65.0, 90.0]);
        assert_eq!(pct, 65.0);
        assert_eq!(s.f1, 1.0);
    }
}
