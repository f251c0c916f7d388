//! Live inference: one [`NodeWindow`] per node, fed by the fold with every
//! sample it folds, and the active model's prediction for each node's latest
//! sample. This is what the planner reads.
//!
//! The windows use the exact code the trainer used to build its rows, so a
//! live feature vector equals the training one for the same samples. They
//! resample telemetry to the active model's step (its `labels.step_ms`; the
//! default 5 minutes before a model is active): a node's window is started
//! again when the active model's step differs from the one it was built
//! for, so a model always reads features of its own time scale.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use loadshift_events::Sample;

use crate::features::{Features, NodeWindow, DAY_MS};
use crate::labels::LabelConfig;
use crate::model::{Prediction, Predictor, SharedPredictor};
use crate::store::{Store, StoreError};

/// The latest view of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Time of its latest sample, ms.
    pub at_ms: i64,
    /// That sample's features.
    pub features: Features,
    /// The active model's prediction for it (`None` without a model).
    pub prediction: Option<Prediction>,
    /// The model version that made it.
    pub model_version: Option<u64>,
}

/// Per-node windows and latest predictions.
#[derive(Debug, Clone, Default)]
pub struct Live {
    windows: HashMap<String, NodeWindow>,
    latest: HashMap<String, NodeView>,
    predictor: SharedPredictor,
}

impl Live {
    /// Empty windows predicting with whatever `predictor` holds.
    pub fn new(predictor: SharedPredictor) -> Self {
        Self {
            windows: HashMap::new(),
            latest: HashMap::new(),
            predictor,
        }
    }

    /// A fresh shared predictor slot.
    pub fn shared(p: Option<Predictor>) -> SharedPredictor {
        Arc::new(RwLock::new(p))
    }

    /// The predictor slot (the trainer swaps models into it).
    pub fn predictor(&self) -> &SharedPredictor {
        &self.predictor
    }

    /// The active model's labels (its step and windows), or the defaults
    /// before any model.
    fn labels(&self) -> LabelConfig {
        self.predictor
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|p| p.model().config.labels))
            .unwrap_or_default()
    }

    /// Feeds one folded sample of `node`; returns its view when the sample
    /// was new (not a repeat or out of order).
    pub fn observe(&mut self, node: &str, s: &Sample) -> Option<&NodeView> {
        let labels = self.labels();
        let step = (labels.step_ms > 0).then_some(labels.step_ms);
        let w = match self.windows.get_mut(node) {
            Some(w) if w.step_ms() == step => w,
            _ => {
                let mut w = labels.window();
                if let Some(old) = self.windows.get(node) {
                    w.set_workloads(old.workloads());
                }
                self.windows.insert(node.to_string(), w);
                self.windows.get_mut(node)?
            }
        };
        let features = w.push(s)?;
        let at_ms = w.last_at_ms().unwrap_or_else(|| s.at.timestamp_millis());
        let p = self
            .predictor
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|p| (p.predict(&features), p.version)));
        let view = NodeView {
            at_ms,
            features,
            prediction: p.map(|(p, _)| p),
            model_version: p.map(|(_, v)| v),
        };
        self.latest.insert(node.to_string(), view);
        self.latest.get(node)
    }

    /// Records how many workloads `node` runs (from `telemetry.workloads`).
    pub fn workloads(&mut self, node: &str, n: u32) {
        let labels = self.labels();
        self.windows
            .entry(node.to_string())
            .or_insert_with(|| labels.window())
            .set_workloads(Some(n));
    }

    /// The latest view of `node`.
    pub fn view(&self, node: &str) -> Option<&NodeView> {
        self.latest.get(node)
    }

    /// Every node's latest view.
    pub fn views(&self) -> impl Iterator<Item = (&str, &NodeView)> {
        self.latest.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Fills the windows of `nodes` from the last 25 hours of stored samples
    /// (each node's own latest time), so a restarted service predicts with
    /// full windows and yesterday's values at once.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn warm(&mut self, store: &Store, nodes: &[String]) -> Result<(), StoreError> {
        for node in nodes {
            let last = store.samples(node, i64::MIN, i64::MAX)?;
            let Some(end) = last.last().map(|(_, p)| p.sample.at.timestamp_millis()) else {
                continue;
            };
            let from = end - DAY_MS - 3_600_000;
            for (_, p) in last
                .iter()
                .filter(|(_, p)| p.sample.at.timestamp_millis() >= from)
            {
                self.observe(node, &p.sample);
            }
        }
        Ok(())
    }
}
