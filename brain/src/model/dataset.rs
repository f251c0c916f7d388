//! Rows to train and score on: every sample of every node pushed through a
//! [`NodeWindow`] (the live code), labelled from its own future, and split by
//! time.

use loadshift_events::Sample;

use crate::features::Features;
use crate::labels::{label_series, LabelConfig, Labels};

/// One sample of one node, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index of its node in [`Dataset::nodes`].
    pub node: u32,
    /// Sample time, ms.
    pub at_ms: i64,
    /// TELEMETRY stream sequence it came from (0 for a trace file).
    pub seq: u64,
    /// Its features.
    pub x: Features,
    /// CPU % now (what a static threshold looks at).
    pub cpu: f32,
    /// Its labels.
    pub labels: Labels,
}

/// The rows of many nodes, each node's rows contiguous and in time order.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Node names.
    pub nodes: Vec<String>,
    /// Rows.
    pub rows: Vec<Row>,
}

impl Dataset {
    /// Adds one node's samples (any order, duplicates allowed: they are
    /// sorted, and the first of a repeated time is kept, as the trace loader
    /// and [`NodeWindow`] do), each with its stream sequence.
    pub fn add_node<'a>(
        &mut self,
        name: &str,
        samples: impl IntoIterator<Item = (u64, &'a Sample)>,
        cfg: &LabelConfig,
    ) {
        let mut samples: Vec<(u64, &Sample)> = samples.into_iter().collect();
        samples.sort_by_key(|(seq, s)| (s.at.timestamp_millis(), *seq));
        let node = self.nodes.len() as u32;
        self.nodes.push(name.to_string());
        let mut w = cfg.window();
        let mut rows = Vec::with_capacity(samples.len());
        let mut segments = Vec::with_capacity(samples.len());
        for (seq, s) in samples {
            if let Some(x) = w.push(s) {
                rows.push(Row {
                    node,
                    // The step's own time (a resampled step ends when the
                    // next one's first sample arrives).
                    at_ms: w.last_at_ms().unwrap_or_else(|| s.at.timestamp_millis()),
                    seq,
                    x,
                    cpu: x[0],
                    labels: Labels::default(),
                });
                segments.push(w.segment());
            }
        }
        let cpu: Vec<f32> = rows.iter().map(|r| r.cpu).collect();
        for (r, l) in rows.iter_mut().zip(label_series(&cpu, &segments, cfg)) {
            r.labels = l;
        }
        self.rows.extend(rows);
    }

    fn node_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=self.rows.len() {
            if i == self.rows.len() || self.rows[i].node != self.rows[start].node {
                out.push(start..i);
                start = i;
            }
        }
        out
    }

    /// Splits by time: `Split::PerNode` puts the first `share` of each node's
    /// rows in training (how the reference evaluation split the traces);
    /// `Split::Global` cuts every node at one moment, the `share` quantile
    /// of all sample times, so no training row is later than any test row.
    /// Training rows whose label horizon reaches past the cut are dropped:
    /// never train on the future of a test sample. Returns row indices
    /// `(train, test)`.
    pub fn split(&self, split: Split, horizon: usize) -> (Vec<usize>, Vec<usize>) {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        let cut_time = match split {
            Split::Global(share) => {
                let mut t: Vec<i64> = self.rows.iter().map(|r| r.at_ms).collect();
                if t.is_empty() {
                    return (train, test);
                }
                let k = ((t.len() as f64 * share.clamp(0.0, 1.0)) as usize).min(t.len() - 1);
                Some(*t.select_nth_unstable(k).1)
            }
            Split::PerNode(_) => None,
        };
        for range in self.node_ranges() {
            let rows = &self.rows[range.clone()];
            let cut = match (split, cut_time) {
                (_, Some(t)) => rows.partition_point(|r| r.at_ms < t),
                (Split::PerNode(share), None) => {
                    (rows.len() as f64 * share.clamp(0.0, 1.0)).round() as usize
                }
                (Split::Global(_), None) => rows.len(),
            };
            train.extend((0..cut.saturating_sub(horizon)).map(|i| range.start + i));
            test.extend((cut..rows.len()).map(|i| range.start + i));
        }
        (train, test)
    }
}

/// How [`Dataset::split`] cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// The first share of each node's rows train.
    PerNode(f64),
    /// Everything before the share quantile of all times trains.
    Global(f64),
}
