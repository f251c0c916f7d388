//! The brain's model and its predictions, as events: every model trained is
//! a fact with its scores against the static-threshold baseline, so the
//! history of what the brain believed, and why a model was activated, can be
//! read back from the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::subject::NodeName;
use crate::workload::WorkloadName;

/// Someone asks the brain to retrain now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequested {
    /// Who asked (a user name, `schedule`, ...).
    pub requested_by: String,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Precision, recall and F1 of one predictor on one label.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// Of the samples flagged, the share that were right.
    pub precision: f64,
    /// Of the samples that should be flagged, the share that were.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

/// How the model and the best static threshold did on the same held-back
/// samples, for one label.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelScores {
    /// The model.
    pub model: Score,
    /// The best static CPU threshold on the same samples.
    pub baseline: Score,
    /// That threshold, in percent.
    pub baseline_threshold_pct: f64,
    /// Positive samples among the held-back ones.
    pub positives: u64,
    /// Held-back samples scored.
    pub samples: u64,
    /// The predictor the planner uses for this label, on the same held-back
    /// samples: the model, or the static rule when the model lost on the
    /// validation rows (`rule_used`). Absent in events from before.
    #[serde(default)]
    pub planner: Score,
    /// The model lost to the static rule on the validation rows, so the
    /// planner alarms on `cpu now >= validation_rule_pct` for this label.
    #[serde(default)]
    pub rule_used: bool,
    /// The model (calibrated, at its cut-off) on the validation rows: rows
    /// later in time than those it learned from, where its cut-off,
    /// hyper-parameters and the model-or-rule decision were chosen.
    #[serde(default)]
    pub validation_model: Score,
    /// The best static rule on the same validation rows.
    #[serde(default)]
    pub validation_rule: Score,
    /// That rule's CPU threshold, in percent.
    #[serde(default)]
    pub validation_rule_pct: f64,
    /// The model's cut-off on its calibrated probability.
    #[serde(default)]
    pub cutoff: f64,
    /// Validation samples the choices were made on (0: too little history,
    /// the cut-off came from out-of-bag rows).
    #[serde(default)]
    pub validation_samples: u64,
}

impl Trained {
    /// `onset F1 0.58 (rule CPU ≥ 80%: 0.36), sustained F1 0.95 (rule CPU
    /// ≥ 85%: 0.98)` with `decimals` digits: the model beside the best static
    /// rule for each label, written once for the log's one-line summary,
    /// the brain's `train` and its tests' failure messages.
    pub fn scores_beside_the_rule(&self, decimals: usize) -> String {
        let label = |name: &str, s: &LabelScores| {
            format!(
                "{name} F1 {:.decimals$} (rule CPU ≥ {:.0}%: {:.decimals$})",
                s.model.f1, s.baseline_threshold_pct, s.baseline.f1
            )
        };
        format!(
            "{}, {}",
            label("onset", &self.onset),
            label("sustained", &self.sustained)
        )
    }
}

/// A model was trained (it is not active until `model.activated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trained {
    /// Its version, increasing.
    pub version: u64,
    /// The TELEMETRY stream sequences it was trained from (first, last).
    pub telemetry_range: (u64, u64),
    /// The sample times it was trained from (first, last).
    pub time_range: (DateTime<Utc>, DateTime<Utc>),
    /// Feature names, in the order the model reads them.
    pub features: Vec<String>,
    /// Hyper-parameters, by name.
    pub hyper_parameters: Vec<(String, f64)>,
    /// Onset of overload: below the threshold now, at or above it within the horizon.
    pub onset: LabelScores,
    /// Sustained overload: the mean over the horizon at or above the threshold.
    pub sustained: LabelScores,
    /// Feature importances, largest first.
    pub importances: Vec<(String, f64)>,
    /// Rows trained on, after down-sampling the negatives.
    pub train_rows: u64,
    /// Seconds the training took.
    pub train_seconds: f64,
}

/// The brain now predicts with this model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activated {
    /// The version now active.
    pub version: u64,
    /// The version it replaces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
    /// Why it won, in words.
    pub reason: String,
}

/// The brain's current belief about one node (published when it changes
/// noticeably, not for every sample).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicted {
    /// The node it is about (named in the subject).
    pub node: NodeName,
    /// The sample time it was made at.
    pub at: DateTime<Utc>,
    /// Probability of overload onset within the horizon.
    pub onset: f32,
    /// Probability of sustained overload over the horizon.
    pub sustained: f32,
    /// The model version.
    pub model_version: u64,
}

/// The brain would move something off `source` but found no good move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deferred {
    /// The node in trouble (named in the subject).
    pub source: NodeName,
    /// The workload it would have moved, if it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadName>,
    /// The predicted probability that triggered it.
    pub probability: f32,
    /// Why nothing was moved.
    pub reason: String,
}

/// Resource use of the workloads on one node, sampled by its executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadUsage {
    /// When.
    pub at: DateTime<Utc>,
    /// One entry per running workload.
    pub workloads: Vec<WorkloadUse>,
}

/// One workload's use of its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadUse {
    /// Which workload.
    pub workload: WorkloadName,
    /// CPU in percent of one core (100 = one core busy).
    pub cpu_pct: f32,
    /// Resident memory in bytes (what a migration must copy).
    pub rss_bytes: u64,
    /// How fast it dirties private memory, bytes per second: the growth of
    /// `Private_Dirty` in `/proc/PID/smaps_rollup` between two readings
    /// (these kernels have no soft-dirty bits, so pages written again while
    /// already dirty are not seen). The planner adds what the workload will
    /// have written by the time it is frozen to the image it must copy.
    /// Absent from executors that predate it and on a first reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_bytes_per_sec: Option<f64>,
}

impl WorkloadUse {
    /// A reading without a dirty rate (a first reading, a simulated or a
    /// test workload): one constructor, so that a field added later does
    /// not touch every place that builds one.
    pub fn new(workload: WorkloadName, cpu_pct: f32, rss_bytes: u64) -> Self {
        Self {
            workload,
            cpu_pct,
            rss_bytes,
            dirty_bytes_per_sec: None,
        }
    }
}
