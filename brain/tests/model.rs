//! The model on real trace data, without NATS: it beats static thresholds on
//! overload onset, and the features the trainer builds equal the ones live
//! inference computes for the same samples.

use std::path::PathBuf;
use std::process::Command;

use loadshift_brain::evaluate::{evaluate, load_dataset};
use loadshift_brain::features::N_FEATURES;
use loadshift_brain::labels::LabelConfig;
use loadshift_brain::labels::Labels;
use loadshift_brain::live::Live;
use loadshift_brain::model::dataset::Row;
use loadshift_brain::model::score::best_cutoff;
use loadshift_brain::model::selection::best_rule;
use loadshift_brain::model::{onset_of, sustained_of, train, Predictor, TrainConfig};
use loadshift_testkit::process::succeed;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

fn small() -> TrainConfig {
    TrainConfig::default().with_trees(Some(20), None)
}

#[test]
fn choices_come_from_validation_and_the_planner_follows_them() {
    let r = evaluate(&fixture(), None, 0.7, &small()).unwrap();
    let onset = &r.eval.onset;
    assert!(onset.positives >= 20, "{}", r.table());
    let sel = r
        .model
        .selection
        .as_ref()
        .expect("chosen on validation rows");
    for (choice, clf, e) in [
        (&sel.onset, &r.model.onset, &r.eval.onset),
        (&sel.sustained, &r.model.sustained, &r.eval.sustained),
    ] {
        assert!(choice.samples > 0 && choice.positives > 0);
        assert_eq!(clf.cutoff, choice.cutoff);
        // The model is used only when it beats the rule across base rates
        // on the pooled rows and on most origins' own rows.
        let wins = choice
            .origin_model
            .iter()
            .zip(&choice.origin_rule)
            .filter(|(m, r)| m > r)
            .count();
        assert_eq!(choice.origin_model.len(), choice.origin_rule.len());
        assert_eq!(
            choice.use_rule,
            choice.robust_model <= choice.robust_rule || 2 * wins <= choice.origin_model.len()
        );
        // What the planner uses scores, on the test rows, as the model or
        // as the rule chosen on validation, whichever was chosen.
        if choice.use_rule {
            assert_eq!(clf.rule_pct, Some(choice.rule_pct));
            assert_eq!(e.planner, e.static_at(choice.rule_pct), "{}", r.table());
        } else {
            assert_eq!(clf.rule_pct, None);
            assert_eq!(e.planner, e.model, "{}", r.table());
        }
    }
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
        let mut views = Vec::new();
        for tr in &t.rows {
            if let Some(v) = live.observe(t.node.as_str(), &tr.to_sample(0, 0)) {
                views.push(v.clone());
            }
        }
        assert_eq!(views.len(), rows.len());
        for (row, view) in rows.iter().zip(&views) {
            assert_eq!(view.at_ms, row.at_ms);
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
    assert!(hot.0.onset_alarm && hot.0.onset >= p.model().onset.cutoff);
    let top = p.top_features(&hot.1.x, 3);
    assert_eq!(top.len(), 3);
    assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
    assert!(top[0].1 > 0.0);
}

#[test]
fn evaluate_command_prints_one_table() {
    let out = succeed(
        Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
            .args(["evaluate", "--trees", "20", "--trace"])
            .arg(fixture()),
        "brain evaluate",
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

/// Writes the fixture's traces to `dir` with every CPU % turned upside
/// down (100 − cpu): rows whose answers differ completely from the real ones.
fn poisoned_copy(dir: &std::path::Path) {
    for e in std::fs::read_dir(fixture()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("csv") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let mut f: Vec<String> = line.split(";\t").map(str::to_string).collect();
            if i > 0 && f.len() > 4 {
                if let Ok(v) = f[4].trim().parse::<f64>() {
                    f[4] = format!("{}", (100.0 - v).max(0.0));
                }
            }
            out.push_str(&f.join(";\t"));
            out.push('\n');
        }
        std::fs::write(dir.join(p.file_name().unwrap()), out).unwrap();
    }
}

#[test]
fn selection_never_sees_the_test_rows() {
    let tmp = tempfile::tempdir().unwrap();
    poisoned_copy(tmp.path());
    let clean = evaluate(&fixture(), Some(&fixture()), 0.7, &small()).unwrap();
    let poisoned = evaluate(&fixture(), Some(tmp.path()), 0.7, &small()).unwrap();
    // Every choice is the same whatever the test rows say ...
    assert!(clean.model.selection.is_some(), "{}", clean.table());
    assert_eq!(clean.model, poisoned.model);
    // ... and the poisoned rows would have changed at least one of them
    // had they been seen: the rule or the cut-off best on them differs.
    let sel = clean.model.selection.as_ref().unwrap();
    let rows = load_dataset(tmp.path(), &LabelConfig::default()).unwrap();
    let grid = loadshift_brain::model::baseline_grid();
    let mut differs = false;
    for (clf, choice, pick) in [
        (
            &clean.model.onset,
            &sel.onset,
            onset_of as fn(&Row) -> Option<bool>,
        ),
        (&clean.model.sustained, &sel.sustained, sustained_of),
    ] {
        let (mut probs, mut truth, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows.rows {
            if let Some(l) = pick(r) {
                probs.push(clf.probability(&r.x));
                truth.push(l);
                cpu.push(r.cpu);
            }
        }
        let (cut, _) = best_cutoff(&probs, &truth);
        let (pct, _) = best_rule(&cpu, &truth, &grid);
        differs |= cut != choice.cutoff || pct != choice.rule_pct;
    }
    assert!(differs, "{}", poisoned.table());
}

/// Rows of two nodes, 5 minutes apart, with CPU spread over 0..100 and
/// another feature (`psi_cpu_some`) spread independently; `label` gives
/// both labels of a row from (cpu, other).
fn synthetic(label: fn(f32, f32) -> bool) -> Vec<Row> {
    let other = loadshift_brain::features::index_of("psi_cpu_some").unwrap();
    let mut rows = Vec::new();
    let mut seed = 12345u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % 1000) as f32 / 10.0
    };
    for node in 0..2u32 {
        for i in 0..3000i64 {
            let (cpu, o) = (next(), next());
            let mut x = [0f32; N_FEATURES];
            x[0] = cpu;
            x[other] = o;
            let l = Some(label(cpu, o));
            rows.push(Row {
                node,
                at_ms: i * 300_000,
                seq: 0,
                x,
                cpu,
                labels: Labels {
                    onset: l,
                    sustained: l,
                },
            });
        }
    }
    rows
}

#[test]
fn the_planner_uses_the_rule_when_the_model_loses_on_validation() {
    // The truth is exactly a static rule: no model can beat it.
    let rows = synthetic(|cpu, _| cpu >= 70.0);
    let refs: Vec<&Row> = rows.iter().collect();
    let m = train(&refs, &small(), 1).unwrap();
    let sel = m.selection.clone().expect("enough rows to validate on");
    assert!(sel.onset.use_rule, "{sel:?}");
    assert_eq!(sel.onset.rule_pct, 70.0);
    assert_eq!(m.onset.rule_pct, Some(70.0));
    // Alarms come from the rule, whatever the forest says.
    let p = Predictor::new(m.clone());
    for r in &rows {
        assert_eq!(p.predict(&r.x).onset_alarm, r.cpu >= 70.0);
    }
    // And `model.trained` says so.
    let e = loadshift_brain::model::evaluate(&m, &refs, &loadshift_brain::model::baseline_grid());
    let ev = e.onset.to_event_with(70.0, &m.onset, Some(&sel.onset));
    assert!(ev.rule_used);
    assert_eq!(ev.validation_rule_pct, 70.0);
    assert_eq!(ev.planner.f1, 1.0);

    // The truth depends on another feature: the model wins and is used.
    let rows = synthetic(|_, other| other >= 50.0);
    let refs: Vec<&Row> = rows.iter().collect();
    let m = train(&refs, &small(), 1).unwrap();
    let sel = m.selection.clone().unwrap();
    assert!(!sel.onset.use_rule, "{sel:?}");
    assert!(sel.onset.model.f1 > sel.onset.rule.f1);
    assert_eq!(m.onset.rule_pct, None);
}

#[test]
fn simulate_command_prints_one_json_object_per_policy_and_refuses_bad_input() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
            .arg("simulate")
            .args(args)
            .output()
            .unwrap()
    };
    let fx = fixture();
    let fx = fx.to_str().unwrap();
    for policy in ["none", "threshold", "spread"] {
        let out = run(&["--trace", fx, "--nodes", "2", "--policy", policy, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["policy"], policy);
        for key in ["overload_node_minutes", "migrations", "gib_moved"] {
            assert!(v[key].is_number(), "{key} in {text}");
        }
        if policy == "none" {
            assert_eq!(v["migrations"], 0);
        }
    }
    // No model for the ai policy, a missing trace, no nodes: usage errors.
    for bad in [
        vec!["--trace", fx, "--policy", "ai"],
        vec!["--trace", "/nonexistent/traces", "--policy", "none"],
        vec!["--trace", fx, "--nodes", "0", "--policy", "none"],
    ] {
        let out = run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
}
