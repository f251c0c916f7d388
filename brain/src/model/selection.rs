//! Every choice a model carries, made on rows later in time than the rows
//! it learned from: rolling-origin (time-series) validation.
//!
//! Why: a cut-off chosen on out-of-bag rows of balanced bootstraps of the
//! training month, or on the month it is then scored on, does not carry over
//! to the next month (its base rate of overloads differs). Here the training
//! rows are cut at [`ORIGINS`] (shares of their time span, one moment for all
//! nodes) and the nodes split into [`GROUPS`] groups: a fold learns from the
//! other groups' rows before an origin (minus the last `horizon` rows of
//! each node, whose labels look past the origin) and predicts this group's
//! rows between that origin and the next (or the end): later rows of nodes
//! it never saw. The validation rows
//! of all folds, pooled, are never trained on by the forest that predicts
//! them; on them, and only on them:
//! - each candidate's raw probabilities are calibrated (isotonic, see
//!   [`super::calibration`]) and its cut-off is read for the best F1
//!   *across base rates* ([`super::score::robust_cutoff`]): the rate of
//!   overloads differs from one month to the next, and a cut-off that only
//!   fits the validation rows' own rate does not carry over;
//! - the candidate hyper-parameters with the best such score win;
//! - the static rule (`cpu now >= pct`) is chosen on the same rows by the
//!   same score;
//! - the model is used for the label only if it beats that rule there, on
//!   the pooled rows *and* on most of the origins' own rows (a win that
//!   holds over time, not one stretch of it); otherwise the planner uses
//!   the rule (never worse than its baseline).
//!
//! Test rows (another month, the store's held-back share) never reach this
//! module: callers pass training rows only.

use std::collections::BTreeMap;

use loadshift_events::model::Score;
use serde::{Deserialize, Serialize};

use super::calibration::Isotonic;
use super::dataset::Row;
use super::forest::{self, ForestParams};
use super::score::{robust_cutoff, Confusion};
use super::TrainError;
use crate::features::Features;

/// Rolling origins, as shares of the training rows' time span: five, from
/// a quarter of it, so that the pooled validation rows span three quarters
/// of the training data and hold as many onsets as possible (overload
/// onsets are rare, 0.1 to 0.5 % of rows, and a cut-off read off a few
/// hundred of them is noisy). Each fold still learns from at least a
/// quarter of the span.
pub const ORIGINS: [f64; 5] = [0.25, 0.4, 0.55, 0.7, 0.85];

/// One fold: indices of the rows it trains on and of those it validates on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fold {
    /// Which origin (index into the origins) it starts at.
    pub origin: usize,
    /// Rows before the origin (minus each node's last `horizon`).
    pub train: Vec<usize>,
    /// Rows from the origin to the next one.
    pub valid: Vec<usize>,
}

/// Node groups of [`folds`]: node `n` is in group `n mod GROUPS`.
pub const GROUPS: u32 = 2;

/// The folds of `rows` at `origins` (increasing shares of the time span),
/// grouped by node: for each origin and each node group, a fold learns from
/// the *other* groups' rows before the origin and validates on this group's
/// rows from the origin to the next one. Validation rows are thus later
/// than every training row and come from nodes the fold never saw, as the
/// next month of a cluster (or another cluster) will.
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
    let groups = GROUPS.min(by_node.len() as u32).max(1);
    let mut out = Vec::new();
    for (k, &cut) in cuts.iter().enumerate() {
        let end = cuts.get(k + 1).copied().unwrap_or(i64::MAX);
        for g in 0..groups {
            let mut f = Fold {
                origin: k,
                ..Fold::default()
            };
            for (node, idx) in &by_node {
                let before = idx.partition_point(|&i| rows[i].at_ms < cut);
                let validates = groups == 1 || node % groups == g;
                let trains = groups == 1 || node % groups != g;
                if trains {
                    f.train
                        .extend_from_slice(&idx[..before.saturating_sub(horizon)]);
                }
                if validates {
                    f.valid.extend(
                        idx[before..]
                            .iter()
                            .copied()
                            .take_while(|&i| rows[i].at_ms < end),
                    );
                }
            }
            out.push(f);
        }
    }
    out
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
    /// The model's F1 on each origin's validation rows (at its cut-off),
    /// in origin order; origins without a positive row are left out.
    #[serde(default)]
    pub origin_model: Vec<f64>,
    /// The rule's F1 on the same rows.
    #[serde(default)]
    pub origin_rule: Vec<f64>,
    /// The model's mean F1 across base rates
    /// ([`super::score::Confusion::robust_f1`]), what it was chosen by.
    #[serde(default)]
    pub robust_model: f64,
    /// The rule's.
    #[serde(default)]
    pub robust_rule: f64,
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

/// Features that name a machine more than they describe its load: its
/// size, its memory level and the count of its workloads. Trees that read
/// them can learn each training VM by heart, which validation on other
/// nodes ([`folds`]) exposes.
pub const IDENTITY_FEATURES: [&str; 5] = [
    "capacity_cores",
    "mem_pct",
    "mem_mean_long",
    "mem_diff_short",
    "workloads",
];

/// The bit mask of [`IDENTITY_FEATURES`].
pub fn identity_mask() -> u64 {
    IDENTITY_FEATURES
        .iter()
        .filter_map(|n| crate::features::index_of(n))
        .fold(0u64, |m, i| m | (1 << i))
}

/// The hyper-parameters tried for onset: the configured (plain) forest,
/// and one whose bags hold three times fewer negatives per positive (the
/// balanced end, which sees each positive more often). Two shapes only:
/// every choice made on one month's validation rows is a chance to fit
/// that month, and the rest of the forest's shape is set by construction
/// (identity features out, see [`IDENTITY_FEATURES`]).
pub fn candidates(base: &ForestParams) -> Vec<ForestParams> {
    vec![
        *base,
        ForestParams {
            neg_per_pos: base.neg_per_pos / 3.0,
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

/// The pooled validation rows of one label: truth, CPU now and the origin
/// of each.
struct Pooled {
    truth: Vec<bool>,
    cpu: Vec<f32>,
    origin: Vec<usize>,
}

impl Pooled {
    /// The confusion of `flag` on all rows, and its F1 on each origin that
    /// holds a positive row.
    fn judge(&self, flag: impl Fn(usize) -> bool) -> (Confusion, Vec<f64>) {
        let n = self.origin.iter().max().map_or(0, |m| m + 1);
        let mut all = Confusion::default();
        let mut per = vec![Confusion::default(); n];
        for (i, (t, o)) in self.truth.iter().zip(&self.origin).enumerate() {
            let f = flag(i);
            all.add(f, *t);
            per[*o].add(f, *t);
        }
        let f1 = per
            .iter()
            .filter(|c| c.tp + c.fn_ > 0)
            .map(|c| c.score().f1)
            .collect();
        (all, f1)
    }
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
                f.origin,
            )
        })
        .filter(|((_, ty, _), (_, vy, _), _)| {
            ty.iter().any(|l| *l) && ty.iter().any(|l| !*l) && !vy.is_empty()
        })
        .collect();
    let mut pooled = Pooled {
        truth: Vec::new(),
        cpu: Vec::new(),
        origin: Vec::new(),
    };
    for (_, (_, vy, vc), o) in &usable {
        pooled.truth.extend_from_slice(vy);
        pooled.cpu.extend_from_slice(vc);
        pooled.origin.extend(std::iter::repeat_n(*o, vy.len()));
    }
    let truth = &pooled.truth;
    if usable.is_empty() || !truth.iter().any(|t| *t) {
        return Err(TrainError::NoRows(label));
    }
    let mut best: Option<(f64, ForestParams, Isotonic, f32, Vec<f32>)> = None;
    let mut tried = Vec::new();
    for params in candidates {
        let mut raw = Vec::with_capacity(truth.len());
        for ((tx, ty, _), (vx, _, _), _) in &usable {
            let fitted = forest::fit_forest(tx, ty, params, threads)
                .map_err(|source| TrainError::Forest { label, source })?;
            raw.extend(vx.iter().map(|x| fitted.probability(x)));
        }
        let iso = Isotonic::fit(&raw, truth);
        let calibrated: Vec<f32> = raw.iter().map(|p| iso.apply(*p)).collect();
        let (cut, score) = robust_cutoff(&calibrated, truth);
        tried.push(score);
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, *params, iso, cut, calibrated));
        }
    }
    let Some((_, params, calibration, cutoff, calibrated)) = best else {
        return Err(TrainError::NoRows(label));
    };
    let (model, origin_model) = pooled.judge(|i| calibrated[i] >= cutoff);
    let (rule_pct, _) = best_rule(&pooled.cpu, truth, grid);
    let (rule, origin_rule) = pooled.judge(|i| pooled.cpu[i] >= rule_pct);
    let wins = origin_model
        .iter()
        .zip(&origin_rule)
        .filter(|(m, r)| m > r)
        .count();
    let use_rule = model.robust_f1() <= rule.robust_f1() || 2 * wins <= origin_model.len();
    Ok(LabelChoice {
        params,
        calibration,
        cutoff,
        model: model.score(),
        rule_pct,
        rule: rule.score(),
        use_rule,
        candidates: tried,
        positives: truth.iter().filter(|t| **t).count() as u64,
        samples: truth.len() as u64,
        robust_model: model.robust_f1(),
        robust_rule: rule.robust_f1(),
        origin_model,
        origin_rule,
    })
}

/// The static rule `cpu >= pct` of `grid` with the best F1 across base
/// rates ([`Confusion::robust_f1`]) on these rows (ties: the higher
/// threshold, fewer alarms), and its plain scores there.
pub fn best_rule(cpu: &[f32], truth: &[bool], grid: &[f32]) -> (f32, Score) {
    let mut best = (
        grid.last().copied().unwrap_or(100.0),
        -1.0,
        Score::default(),
    );
    for &t in grid {
        let mut c = Confusion::default();
        for (v, l) in cpu.iter().zip(truth) {
            c.add(*v >= t, *l);
        }
        let r = c.robust_f1();
        if r > best.1 || (r == best.1 && t > best.0) {
            best = (t, r, c.score());
        }
    }
    (best.0, best.2)
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
        let f = folds(&refs, 3, &[0.5, 0.75]);
        // Two origins, two node groups.
        assert_eq!(f.len(), 4);
        for fold in &f {
            let last_train = fold.train.iter().map(|&i| rows[i].at_ms).max().unwrap();
            let first_valid = fold.valid.iter().map(|&i| rows[i].at_ms).min().unwrap();
            assert!(last_train < first_valid);
            // The horizon gap: each node loses its last 3 rows before the origin.
            assert_eq!(first_valid - last_train, 4000);
            // Grouped by node: a fold never validates on a node it learned from.
            let node = |i: &usize| rows[*i].node;
            let trained: std::collections::BTreeSet<u32> = fold.train.iter().map(node).collect();
            assert!(fold.valid.iter().all(|i| !trained.contains(&node(i))));
        }
        // Validation slices do not overlap and reach the end: 25 rows of one
        // node per fold.
        assert!(f.iter().all(|x| x.valid.len() == 25));
        let mut all: Vec<usize> = f.iter().flat_map(|x| x.valid.clone()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
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
