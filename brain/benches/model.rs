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

/// CPU seconds this process has used so far (user + system, from
/// /proc/self/stat in clock ticks of 1/100 s): what a shared machine's load
/// does not inflate, unlike wall time. `None` off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th and stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds spent since `start` (0 when unknown).
fn cpu_since(start: Option<f64>) -> f64 {
    match (start, cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    }
}

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
    let (t1, c1) = (Instant::now(), cpu_seconds());
    let m = model::train(&rows, &cfg, 1).expect("trains");
    let train_s = t1.elapsed().as_secs_f64();
    let train_cpu = cpu_since(c1);
    println!(
        "training on all {} samples ({} nodes), validation folds included: {:.1} s wall, {:.1} CPU-s on {} threads (loading and features {:.1} s), {} bag rows",
        rows.len(),
        ds.nodes.len(),
        train_s,
        train_cpu,
        cfg.threads,
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
    let (t2, c2) = (Instant::now(), cpu_seconds());
    let mut alarms = 0u64;
    for (node, s) in &samples {
        if let Some(v) = live.observe(node, s) {
            alarms += u64::from(v.prediction.is_some_and(|p| p.onset_alarm));
        }
    }
    let per = t2.elapsed().as_secs_f64() / samples.len() as f64;
    let per_cpu = cpu_since(c2) / samples.len() as f64;
    println!(
        "live inference (window update + both forests) over {} samples: {:.2} µs wall, {:.2} µs CPU per sample ({} onset alarms)",
        samples.len(),
        per * 1e6,
        per_cpu * 1e6,
        alarms
    );

    let report = evaluate(&dir, None, 0.7, &cfg).expect("evaluates");
    println!("\nevaluate --split 0.7 (reference, scikit-learn: onset F1 0.096, best static 0.062; sustained 0.986, static 0.984)");
    print!("{}", report.table());
}
