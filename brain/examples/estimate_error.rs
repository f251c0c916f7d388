//! The planner's migration estimate held against real migrations: reads
//! the CSV that `LOADSHIFT_BENCH_LOG` makes the executor's migration bench
//! write (mode, image bytes, freeze ms, total ms, in the order they ran),
//! and replays it through [`MoveCosts`] as the planner folds
//! `migration.completed`: before each migration, the estimate from those
//! before it; then the migration is learned. Prints the estimate's error
//! per mode and size (the first migration has nothing to learn from and
//! is left out).
//!
//! Run: `cargo run -p loadshift-brain --example estimate_error -- FILE`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use loadshift_brain::cost::MoveCosts;
use loadshift_events::migration::{Mode, Timings};

/// One migration as the bench logged it.
struct Logged {
    mode: Mode,
    image_bytes: u64,
    freeze_ms: f64,
    total_ms: f64,
}

/// Reads one CSV line; `Err` says what is wrong with it.
fn parse(line: &str) -> Result<Logged, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    let [mode, bytes, freeze, total] = f[..] else {
        return Err(format!("expected 4 fields, found {}", f.len()));
    };
    let num = |s: &str| s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
    Ok(Logged {
        mode: mode
            .parse()
            .map_err(|_| format!("{mode:?} is not a mode"))?,
        image_bytes: bytes.parse().map_err(|e| format!("{bytes:?}: {e}"))?,
        freeze_ms: num(freeze)?,
        total_ms: num(total)?,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: estimate_error FILE (the bench's LOADSHIFT_BENCH_LOG)");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut logged = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match parse(line) {
            Ok(l) => logged.push(l),
            Err(e) => {
                eprintln!("{path}:{}: {e}", i + 1);
                return ExitCode::from(2);
            }
        }
    }
    // (mode, MiB) -> (estimated freeze, actual freeze) pairs, seconds.
    let mut pairs: BTreeMap<(String, u64), Vec<(f64, f64)>> = BTreeMap::new();
    let mut learned = MoveCosts::default();
    for (i, m) in logged.iter().enumerate() {
        if i > 0 {
            // The estimate for the mode that ran (the planner asks for
            // `auto`, which streams a process of this size).
            let e = learned.estimate_in(m.mode, m.image_bytes, 0.0);
            pairs
                .entry((m.mode.to_string(), m.image_bytes >> 20))
                .or_default()
                .push((e.freeze_ms / 1000.0, m.freeze_ms / 1000.0));
        }
        let timings = Timings {
            downtime_ms: Some(m.freeze_ms),
            total_ms: Some(m.total_ms),
            ..Timings::default()
        };
        learned.observe(Some(m.mode), m.image_bytes, &timings);
    }
    println!("| mode | image | migrations | estimated freeze (median) | actual freeze (median) | error (median of (estimate - actual) / actual) | error (median of abs) |");
    println!("|---|---|---|---|---|---|---|");
    for ((mode, mib), v) in &pairs {
        let rel: Vec<f64> = v.iter().map(|(e, a)| (e - a) / a).collect();
        println!(
            "| {mode} | {mib} MiB | {} | {:.3} s | {:.3} s | {:+.0} % | {:.0} % |",
            v.len(),
            median(v.iter().map(|p| p.0).collect()),
            median(v.iter().map(|p| p.1).collect()),
            median(rel.clone()) * 100.0,
            median(rel.iter().map(|r| r.abs()).collect()) * 100.0,
        );
    }
    ExitCode::SUCCESS
}
