//! The model on real trace data, without NATS: it beats static thresholds on
//! overload onset, and the features the trainer builds equal the ones live
//! inference computes for the same samples.

use std::path::PathBuf;
use std::process::Command;

use loadshift_brain::evaluate::{evaluate, load_dataset};
use loadshift_brain::labels::LabelConfig;
use loadshift_brain::live::Live;
use loadshift_brain::model::{Predictor, TrainConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

fn small() -> TrainConfig {
    TrainConfig::default().with_trees(Some(30), None)
}

#[test]
fn model_beats_every_static_threshold_on_onset() {
    let r = evaluate(&fixture(), None, 0.7, &small()).unwrap();
    let onset = &r.eval.onset;
    assert!(onset.positives >= 20, "{}", r.table());
    let (_, best) = onset.best_static();
    assert!(
        onset.model.f1 > best.f1 + 0.05,
        "model onset F1 must beat the best static threshold:\n{}",
        r.table()
    );
    assert!(
        r.eval.sustained.model.f1 >= r.eval.sustained.best_static().1.f1 - 0.02,
        "{}",
        r.table()
    );
    // Same data, same seed: the same model.
    let again = evaluate(&fixture(), None, 0.7, &small()).unwrap();
    assert_eq!(again.model, r.model);
}

#[test]
fn training_rows_and_live_inference_share_the_feature_code() {
    let labels = LabelConfig::default();
    let ds = load_dataset(&fixture(), &labels).unwrap();
    let traces = loadshift_trace::load(&fixture(), None).unwrap();
    let mut live = Live::new(Live::shared(None));
    let mut compared = 0;
    for (n, t) in traces.iter().enumerate() {
        let rows: Vec<_> = ds.rows.iter().filter(|r| r.node == n as u32).collect();
        assert_eq!(rows.len(), t.rows.len());
        for (row, tr) in rows.iter().zip(&t.rows) {
            let view = live
                .observe(t.node.as_str(), &tr.to_sample(0, 0))
                .unwrap()
                .clone();
            assert_eq!(view.features, row.x, "node {} at {}", t.node, row.at_ms);
            compared += 1;
        }
    }
    assert!(compared > 10_000);
}

#[test]
fn predictor_predicts_and_explains() {
    let r = evaluate(&fixture(), None, 0.7, &small()).unwrap();
    let p = Predictor::new(r.model.clone());
    let ds = load_dataset(&fixture(), &LabelConfig::default()).unwrap();
    let hot = ds
        .rows
        .iter()
        .map(|row| (p.predict(&row.x), row))
        .max_by(|a, b| a.0.onset.total_cmp(&b.0.onset))
        .unwrap();
    assert!(hot.0.onset > 0.5);
    let top = p.top_features(&hot.1.x, 3);
    assert_eq!(top.len(), 3);
    assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
    assert!(top[0].1 > 0.0);
}

#[test]
fn evaluate_command_prints_one_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
        .args(["evaluate", "--trees", "20", "--trace"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "| onset | model",
        "| onset | cpu >= 60 %",
        "| onset | cpu >= 90 %",
        "| sustained | model",
        "| sustained | cpu >= 80 %",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
        .args(["evaluate", "--split", "1.5", "--trace"])
        .arg(fixture())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// The README promises exit code 2 for bad input: an empty folder, a folder
/// of garbage, a missing one, all say what is wrong and exit 2 (not 1, which
/// means the tool itself failed).
#[test]
fn evaluate_on_an_empty_or_garbage_folder_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join("1.csv"), "not;a;trace\n\x01\x02\n").unwrap();
    std::fs::write(garbage.path().join("2.csv"), "").unwrap();
    let missing = empty.path().join("nope");
    for dir in [empty.path(), garbage.path(), missing.as_path()] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
            .args(["evaluate", "--trees", "5", "--trace"])
            .arg(dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", dir.display());
        assert!(err.contains("error: evaluating on"), "{err}");
    }
}
