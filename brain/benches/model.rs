//! `cargo bench -p loadshift-brain --bench model`: the issue-4 model figures
//! on the whole shared Bitbrains trace (`LOADSHIFT_TRACE` overrides the
//! directory): training time on every sample, live inference time per
//! sample (window update + both forests), and the evaluation table (70/30
//! split by time per VM) to compare with the scikit-learn reference.

use std::path::PathBuf;
use std::time::Instant;

use loadshift_brain::evaluate::{evaluate, load_dataset};
use loadshift_brain::live::Live;
use loadshift_brain::model::{self, Predictor, TrainConfig};

fn main() {
    let dir = std::env::var_os("LOADSHIFT_TRACE").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/traces/bitbrains-rnd/2013-7")
        },
        PathBuf::from,
    );
    let cfg = TrainConfig::default();
    println!("trace: {}; threads: {}", dir.display(), cfg.threads);

    let t0 = Instant::now();
    let ds = load_dataset(&dir, &cfg.labels).expect("trace loads");
    let load_s = t0.elapsed().as_secs_f64();
    let rows: Vec<_> = ds.rows.iter().collect();
    let t1 = Instant::now();
    let m = model::train(&rows, &cfg, 1).expect("trains");
    let train_s = t1.elapsed().as_secs_f64();
    println!(
        "training on all {} samples ({} nodes): {:.1} s (loading and features {:.1} s), {} bag rows",
        rows.len(),
        ds.nodes.len(),
        train_s,
        load_s,
        m.bag_rows
    );

    let traces = loadshift_trace::load(&dir, None).expect("trace loads");
    let samples: Vec<(String, loadshift_events::Sample)> = traces
        .iter()
        .flat_map(|t| {
            t.rows
                .iter()
                .map(|r| (t.node.to_string(), r.to_sample(0, 0)))
        })
        .collect();
    let mut live = Live::new(Live::shared(Some(Predictor::new(m))));
    let t2 = Instant::now();
    let mut alarms = 0u64;
    for (node, s) in &samples {
        if let Some(v) = live.observe(node, s) {
            alarms += u64::from(v.prediction.is_some_and(|p| p.onset_alarm));
        }
    }
    let per = t2.elapsed().as_secs_f64() / samples.len() as f64;
    println!(
        "live inference (window update + both forests) over {} samples: {:.2} µs per sample ({} onset alarms)",
        samples.len(),
        per * 1e6,
        alarms
    );

    let report = evaluate(&dir, None, 0.7, &cfg).expect("evaluates");
    println!("\nevaluate --split 0.7 (reference, scikit-learn: onset F1 0.096, best static 0.062; sustained 0.986, static 0.984)");
    print!("{}", report.table());
}
