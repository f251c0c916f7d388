//! `loadshift-brain evaluate`: train and score on Bitbrains-format traces,
//! without NATS or a store, and print one table comparing the model with
//! static CPU thresholds on exactly the same held-back samples.

use std::fmt::Write as _;
use std::path::Path;

use loadshift_events::model::Score;

use crate::labels::LabelConfig;
use crate::model::dataset::{Dataset, Split};
use crate::model::{self, Classifier, Evaluation, Model, TrainConfig, TrainError};

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
    /// Its scores and the thresholds' on the test rows.
    pub eval: Evaluation,
    /// Rows trained on (before bagging) and tested on.
    pub train_rows: usize,
    /// Rows held back.
    pub test_rows: usize,
    /// Seconds training took (selection on the validation rows included).
    pub train_seconds: f64,
}

/// The static thresholds scored on the test rows: every 5 % from 10 to 100,
/// so that the rule chosen on validation and the best one after the fact
/// are both among them.
fn test_thresholds() -> Vec<f32> {
    model::baseline_grid()
}

/// Trains on `train` (the first `split` of each node's rows when `test` is
/// `None`, else all of it) and scores on the rest (or on `test`). Every
/// choice is made on later rows of the training data
/// ([`crate::model::selection`]); the test rows are only scored.
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
    let grid = test_thresholds();
    let (model, eval, train_rows, test_rows, secs) = match test_dir {
        None => {
            let (tr, te) = ds.split(Split::PerNode(split), cfg.labels.horizon);
            let tr: Vec<_> = tr.iter().map(|&i| &ds.rows[i]).collect();
            let te: Vec<_> = te.iter().map(|&i| &ds.rows[i]).collect();
            let (m, e, s) = model::train_and_evaluate(&tr, &te, cfg, 1, &grid)?;
            (m, e, tr.len(), te.len(), s)
        }
        Some(dir) => {
            let test = load_dataset(dir, &cfg.labels)?;
            let tr: Vec<_> = ds.rows.iter().collect();
            let te: Vec<_> = test.rows.iter().collect();
            let (m, e, s) = model::train_and_evaluate(&tr, &te, cfg, 1, &grid)?;
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

fn row(out: &mut String, label: &str, who: &str, s: &Score, pos: u64, n: u64) {
    let _ = writeln!(
        out,
        "| {label} | {who} | {:.3} | {:.3} | {:.3} | {pos} / {n} |",
        s.precision, s.recall, s.f1
    );
}

const HEADER: &str = "| label | predictor | precision | recall | F1 | positives / samples |\n| --- | --- | ---: | ---: | ---: | ---: |\n";

fn uses(c: &Classifier) -> String {
    match c.rule_pct {
        Some(pct) => format!("the rule cpu >= {pct} % (the model lost on validation)"),
        None => "the model".to_string(),
    }
}

impl Report {
    // Long on purpose: one table, printed row by row in the order it reads;
    // split, each part would take the same dozen columns as arguments.
    /// The validation table (where every choice was made) and the test
    /// table (rows no choice saw), one line per label and predictor.
    pub fn table(&self) -> String {
        let l = &self.model.config.labels;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trained on {} rows in {:.1} s, tested on {} rows; horizon {} samples, onset at {} %, sustained at {} %",
            self.train_rows, self.train_seconds, self.test_rows, l.horizon, l.onset_pct, l.sustained_pct
        );
        let m = &self.model;
        match &m.selection {
            Some(sel) => {
                let _ = writeln!(
                    out,
                    "\nValidation: rows of the training data later than those each fold learned from (rolling origins at {} of its time span, every node cut at the same moment). Chosen here and only here, each for the best mean F1 across base rates a quarter to four times these rows' own: each forest's hyper-parameters, calibration and cut-off, the static rule's threshold; and whether the planner uses the model (it must beat the rule on the pooled rows and on most origins).",
                    sel.origins.iter().map(|o| format!("{:.0} %", o * 100.0)).collect::<Vec<_>>().join(", ")
                );
                out.push_str(HEADER);
                for (name, c, clf) in [
                    ("onset", &sel.onset, &m.onset),
                    ("sustained", &sel.sustained, &m.sustained),
                ] {
                    row(
                        &mut out,
                        name,
                        &format!("model (calibrated p >= {:.3})", c.cutoff),
                        &c.model,
                        c.positives,
                        c.samples,
                    );
                    row(
                        &mut out,
                        name,
                        &format!("rule chosen on validation: cpu >= {} %", c.rule_pct),
                        &c.rule,
                        c.positives,
                        c.samples,
                    );
                    let list = |v: &[f64]| {
                        v.iter()
                            .map(|f| format!("{f:.3}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let _ = writeln!(
                        out,
                        "| {name} | planner uses {}; mean F1 across base rates x1/4..x4: model {:.3}, rule {:.3}; F1 per origin: model [{}], rule [{}]; candidates' scores: {} | | | | |",
                        uses(clf),
                        c.robust_model,
                        c.robust_rule,
                        list(&c.origin_model),
                        list(&c.origin_rule),
                        list(&c.candidates),
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nToo little history for validation rows: cut-offs from out-of-bag rows, no calibration, the model is used."
                );
            }
        }
        let _ = writeln!(
            out,
            "\nTest: rows no choice saw. \"rule chosen on validation\" is the fair baseline; \"best rule after the fact\" was picked on these very rows (a stretch, not a baseline)."
        );
        out.push_str(HEADER);
        for (name, e, clf, chosen) in [
            (
                "onset",
                &self.eval.onset,
                &m.onset,
                m.selection.as_ref().map(|s| s.onset.rule_pct),
            ),
            (
                "sustained",
                &self.eval.sustained,
                &m.sustained,
                m.selection.as_ref().map(|s| s.sustained.rule_pct),
            ),
        ] {
            let (p, n) = (e.positives, e.samples);
            row(
                &mut out,
                name,
                &format!("model (p >= {:.3})", clf.cutoff),
                &e.model,
                p,
                n,
            );
            row(
                &mut out,
                name,
                &format!("planner ({})", uses(clf)),
                &e.planner,
                p,
                n,
            );
            if let Some(pct) = chosen {
                row(
                    &mut out,
                    name,
                    &format!("rule chosen on validation: cpu >= {pct} %"),
                    &e.static_at(pct),
                    p,
                    n,
                );
            }
            let (best, s) = e.best_static();
            row(
                &mut out,
                name,
                &format!("best rule after the fact: cpu >= {best} %"),
                &s,
                p,
                n,
            );
            for t in model::TABLE_THRESHOLDS {
                row(
                    &mut out,
                    name,
                    &format!("cpu >= {t} %"),
                    &e.static_at(t),
                    p,
                    n,
                );
            }
        }
        out
    }
}
