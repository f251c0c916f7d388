//! What the model learns to predict, read from the future of the same log.
//!
//! *Overload onset*: a node now below `onset_pct` (default 90 % CPU of its
//! capacity) reaches it within the next `horizon` samples (default 3). It is
//! only defined for samples below the threshold: a node already overloaded
//! cannot start being overloaded, so those samples are neither positives nor
//! negatives (model and static baselines are scored on the same population).
//!
//! *Sustained overload*: the mean CPU over the next `horizon` samples is at
//! or above `sustained_pct` (default 85 %).
//!
//! Labels are computed on a series that is sorted and de-duplicated (what a
//! [`crate::features::NodeWindow`] accepts) and never look across a gap: a
//! sample whose horizon reaches into another segment, or past the end of the
//! series, has no label.

use serde::{Deserialize, Serialize};

/// Thresholds and horizon of both labels, and the step that gives the
/// horizon and the feature windows their duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelConfig {
    /// Steps ahead: the horizon lasts `horizon × step_ms`.
    pub horizon: usize,
    /// CPU % that counts as overload for the onset label.
    pub onset_pct: f32,
    /// Mean CPU % over the horizon that counts as sustained overload.
    pub sustained_pct: f32,
    /// The model's step, ms: samples are resampled to it before features
    /// and labels are computed (see [`crate::features::NodeWindow::with_step`]),
    /// in training and live alike. 0 (models from before): every sample is
    /// a step, whatever its interval.
    #[serde(default)]
    pub step_ms: i64,
}

impl LabelConfig {
    /// The window that resamples to this step.
    pub fn window(&self) -> crate::features::NodeWindow {
        if self.step_ms > 0 {
            crate::features::NodeWindow::with_step(self.step_ms)
        } else {
            crate::features::NodeWindow::new()
        }
    }

    /// How far ahead the labels look, in ms (0 when the step is unknown).
    pub fn horizon_ms(&self) -> i64 {
        self.horizon as i64 * self.step_ms
    }
}

/// The default step: the reference traces' 5 minutes, so that a 3-step
/// horizon is 15 minutes and the windows are 15 minutes and an hour.
pub const DEFAULT_STEP_MS: i64 = 300_000;

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            horizon: 3,
            onset_pct: 90.0,
            sustained_pct: 85.0,
            step_ms: DEFAULT_STEP_MS,
        }
    }
}

/// Both labels of one sample; `None` where the label is not defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Labels {
    /// Overload onset within the horizon.
    pub onset: Option<bool>,
    /// Sustained overload over the horizon.
    pub sustained: Option<bool>,
}

/// Labels of every sample of one node's series: `cpu[i]` and `segment[i]`
/// are the CPU % and segment of its i-th sample, in time order.
///
/// # Panics
/// When `cpu` and `segment` differ in length (a caller bug).
pub fn label_series(cpu: &[f32], segment: &[u64], cfg: &LabelConfig) -> Vec<Labels> {
    assert_eq!(cpu.len(), segment.len(), "one segment per sample");
    let h = cfg.horizon.max(1);
    (0..cpu.len())
        .map(|i| {
            let end = i + h;
            if end >= cpu.len() || segment[end] != segment[i] {
                return Labels::default();
            }
            let ahead = &cpu[i + 1..=end];
            let max = ahead.iter().copied().fold(f32::MIN, f32::max);
            let mean = ahead.iter().sum::<f32>() / h as f32;
            Labels {
                onset: (cpu[i] < cfg.onset_pct).then_some(max >= cfg.onset_pct),
                sustained: Some(mean >= cfg.sustained_pct),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn onset(v: &[Labels]) -> Vec<Option<bool>> {
        v.iter().map(|l| l.onset).collect()
    }

    fn sustained(v: &[Labels]) -> Vec<Option<bool>> {
        v.iter().map(|l| l.sustained).collect()
    }

    #[test]
    fn onset_within_the_horizon() {
        let cpu = [10.0, 20.0, 30.0, 95.0, 95.0, 40.0, 40.0, 40.0];
        let seg = [0; 8];
        let l = label_series(&cpu, &seg, &LabelConfig::default());
        assert_eq!(
            onset(&l),
            [
                Some(true), // 95 at +3
                Some(true), // at +2
                Some(true), // at +1
                None,       // already overloaded
                None,       // already overloaded
                None,       // horizon past the end
                None,
                None,
            ]
        );
    }

    #[test]
    fn onset_threshold_is_inclusive_and_configurable() {
        let cpu = [50.0, 90.0, 10.0, 10.0, 10.0];
        let l = label_series(&cpu, &[0; 5], &LabelConfig::default());
        assert_eq!(l[0].onset, Some(true));
        let cfg = LabelConfig {
            horizon: 1,
            onset_pct: 95.0,
            sustained_pct: 85.0,
            ..LabelConfig::default()
        };
        let l = label_series(&cpu, &[0; 5], &cfg);
        assert_eq!(
            onset(&l),
            [Some(false), Some(false), Some(false), Some(false), None]
        );
    }

    #[test]
    fn sustained_is_the_mean_over_the_horizon() {
        // Next three of sample 0: 80, 90, 86 -> mean 85.33 >= 85.
        // Next three of sample 1: 90, 86, 70 -> mean 82 < 85.
        let cpu = [10.0, 80.0, 90.0, 86.0, 70.0];
        let l = label_series(&cpu, &[0; 5], &LabelConfig::default());
        assert_eq!(sustained(&l), [Some(true), Some(false), None, None, None]);
        // A single spike is an onset but not a sustained overload.
        let cpu = [10.0, 10.0, 100.0, 10.0, 10.0];
        let l = label_series(&cpu, &[0; 5], &LabelConfig::default());
        assert_eq!(l[0].onset, Some(true));
        assert_eq!(l[0].sustained, Some(false));
    }

    #[test]
    fn labels_never_look_across_a_gap() {
        let cpu = [10.0, 10.0, 95.0, 95.0, 95.0, 95.0];
        let seg = [0, 0, 1, 1, 1, 1];
        let l = label_series(&cpu, &seg, &LabelConfig::default());
        assert_eq!(l[0], Labels::default());
        assert_eq!(l[1], Labels::default());
        assert_eq!(l[2].sustained, Some(true));
    }
}
