//! `loadshift-brain evaluate`: train and score on Bitbrains-format traces,
//! without NATS or a store, and print one table comparing the model with
//! static CPU thresholds on exactly the same held-back samples.

use std::fmt::Write as _;
use std::path::Path;

use loadshift_events::model::Score;

use crate::labels::LabelConfig;
use crate::model::dataset::{Dataset, Split};
use crate::model::{self, Evaluation, LabelEval, Model, TrainConfig, TrainError};

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// the traces could not be loaded
    #[error(transparent)]
    Trace(#[from] loadshift_trace::TraceError),
    /// training failed
    #[error(transparent)]
    Train(#[from] TrainError),
}

impl EvaluateError {
    /// Whether the operator's input is at fault (no trace files, unreadable
    /// ones, or too little data in them to train on), which the binary
    /// reports with exit code 2, as for any bad input.
    pub fn is_bad_input(&self) -> bool {
        match self {
            EvaluateError::Trace(_) => true,
            EvaluateError::Train(e) => matches!(e, TrainError::NoRows(_)),
        }
    }
}

/// Loads every trace file of `dir` into labelled rows, one node per file.
///
/// # Errors
/// [`EvaluateError::Trace`] when the directory cannot be read.
pub fn load_dataset(dir: &Path, labels: &LabelConfig) -> Result<Dataset, EvaluateError> {
    let traces = loadshift_trace::load(dir, None)?;
    let mut ds = Dataset::default();
    for t in &traces {
        let samples: Vec<_> = t
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| r.to_sample(0, i as u64))
            .collect();
        ds.add_node(t.node.as_str(), samples.iter().map(|s| (0, s)), labels);
    }
    Ok(ds)
}

/// What an evaluation produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The model.
    pub model: Model,
    /// Its scores and the thresholds'.
    pub eval: Evaluation,
    /// Rows trained on (before bagging) and tested on.
    pub train_rows: usize,
    /// Rows held back.
    pub test_rows: usize,
    /// Seconds training took.
    pub train_seconds: f64,
}

/// Trains on `train` (the first `split` of each node's rows when `test` is
/// `None`, else all of it) and scores on the rest (or on `test`).
///
/// # Errors
/// [`EvaluateError`] when a trace cannot be loaded or training fails.
pub fn evaluate(
    train_dir: &Path,
    test_dir: Option<&Path>,
    split: f64,
    cfg: &TrainConfig,
) -> Result<Report, EvaluateError> {
    let ds = load_dataset(train_dir, &cfg.labels)?;
    let (model, eval, train_rows, test_rows, secs) = match test_dir {
        None => {
            let (tr, te) = ds.split(Split::PerNode(split), cfg.labels.horizon);
            let tr: Vec<_> = tr.iter().map(|&i| &ds.rows[i]).collect();
            let te: Vec<_> = te.iter().map(|&i| &ds.rows[i]).collect();
            let (m, e, s) = model::train_and_evaluate(&tr, &te, cfg, 1, &model::TABLE_THRESHOLDS)?;
            (m, e, tr.len(), te.len(), s)
        }
        Some(dir) => {
            let test = load_dataset(dir, &cfg.labels)?;
            let tr: Vec<_> = ds.rows.iter().collect();
            let te: Vec<_> = test.rows.iter().collect();
            let (m, e, s) = model::train_and_evaluate(&tr, &te, cfg, 1, &model::TABLE_THRESHOLDS)?;
            (m, e, tr.len(), te.len(), s)
        }
    };
    Ok(Report {
        model,
        eval,
        train_rows,
        test_rows,
        train_seconds: secs,
    })
}

impl Report {
    /// The table: one line per label and predictor.
    pub fn table(&self) -> String {
        let l = &self.model.config.labels;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trained on {} rows in {:.1} s, tested on {} rows; horizon {} samples, onset at {} %, sustained at {} %",
            self.train_rows, self.train_seconds, self.test_rows, l.horizon, l.onset_pct, l.sustained_pct
        );
        let _ = writeln!(
            out,
            "| label | predictor | precision | recall | F1 | positives / samples |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
        let mut block = |name: &str, e: &LabelEval, cutoff: f32| {
            let mut line = |who: String, s: &Score| {
                let _ = writeln!(
                    out,
                    "| {name} | {who} | {:.3} | {:.3} | {:.3} | {} / {} |",
                    s.precision, s.recall, s.f1, e.positives, e.samples
                );
            };
            line(format!("model (p >= {cutoff:.3})"), &e.model);
            for (t, s) in &e.statics {
                line(format!("cpu >= {t} %"), s);
            }
        };
        block("onset", &self.eval.onset, self.model.onset.cutoff);
        block(
            "sustained",
            &self.eval.sustained,
            self.model.sustained.cutoff,
        );
        out
    }
}
