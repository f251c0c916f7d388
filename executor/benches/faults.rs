//! The fault matrix at length: `scripts/faults [--count N] [--seed S]`
//! (or `cargo bench -p loadshift-executor --bench faults -- --count N --seed S`);
//! `--only KIND` (repeatable) draws the faults from those kinds only;
//! `--containers` moves a Docker container (scripts/setup-docker) instead of
//! a process.
//! Prints a table, one row per injected fault with the time it took to heal,
//! and ends with `faults: N injected, L lost, D duplicated, S stuck`; exits
//! 1 unless all three are 0, 2 on bad arguments.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;

/// The options, from the command line.
struct Options {
    count: usize,
    seed: u64,
    /// The kinds drawn from (all by default).
    kinds: Vec<common::matrix::Fault>,
    /// What the counter runs as (`--containers`: Docker).
    workloads: common::matrix::Workloads,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        count: 20,
        seed: 1,
        kinds: Vec::new(),
        workloads: common::matrix::Workloads::Processes,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--count" => {
                let v = value("--count")?;
                o.count = v.parse().map_err(|e| format!("--count {v}: {e}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v.parse().map_err(|e| format!("--seed {v}: {e}"))?;
            }
            "--only" => {
                let v = value("--only")?;
                let kind = common::matrix::Fault::from_slug(&v).ok_or_else(|| {
                    let known: Vec<&str> = common::matrix::Fault::ALL
                        .iter()
                        .map(|f| f.slug())
                        .collect();
                    format!("--only {v}: not a fault kind (one of {})", known.join(", "))
                })?;
                o.kinds.push(kind);
            }
            "--containers" => o.workloads = common::matrix::Workloads::Containers,
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let mut o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\nusage: scripts/faults [--count N] [--seed S] [--only KIND]... [--containers]");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if o.kinds.is_empty() {
        o.kinds = common::matrix::Fault::ALL.to_vec();
    }
    let tally = rt.block_on(common::matrix::run_kinds(
        o.count,
        o.seed,
        &o.kinds,
        o.workloads,
    ));
    let heals: Vec<f64> = tally
        .outcomes
        .iter()
        .map(|o| o.heal.as_secs_f64())
        .collect();
    if !heals.is_empty() {
        let mut sorted = heals.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "heal time: median {:.1} s, max {:.1} s (seed {})",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            o.seed
        );
    }
    print_kinds(&tally);
    // The output ends with the tally, as the issue asks.
    println!("{}", tally.summary());
    let clean = tally
        .outcomes
        .iter()
        .all(|o| !o.lost && !o.duplicated && !o.stuck);
    if clean && tally.outcomes.len() == o.count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One line per fault kind: how many, and the time they took to heal.
fn print_kinds(tally: &common::matrix::Tally) {
    println!("\n| kind | injected | heal median | heal max | lost | duplicated | stuck |");
    println!("|---|---|---|---|---|---|---|");
    for kind in common::matrix::Fault::ALL {
        let rows: Vec<&common::matrix::Outcome> =
            tally.outcomes.iter().filter(|o| o.fault == kind).collect();
        if rows.is_empty() {
            continue;
        }
        let mut heals: Vec<f64> = rows.iter().map(|o| o.heal.as_secs_f64()).collect();
        heals.sort_by(f64::total_cmp);
        let count = |f: fn(&common::matrix::Outcome) -> bool| rows.iter().filter(|o| f(o)).count();
        println!(
            "| {kind} | {} | {:.1} s | {:.1} s | {} | {} | {} |",
            rows.len(),
            heals[heals.len() / 2],
            heals[heals.len() - 1],
            count(|o| o.lost),
            count(|o| o.duplicated),
            count(|o| o.stuck)
        );
    }
}
