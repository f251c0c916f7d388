//! Post-copy benchmark (issue 13): a process walking 64, 256 and 1024 MiB
//! of touched memory moved lazily between two nodes on this machine with
//! real CRIU (`loadshift_executor::lazy`), median of 5 per size.
//!
//! Reported per size: the freeze (the workload's own view: from the last
//! progress line its source copy wrote to the first its target copy wrote;
//! it prints one every 5 ms), the longest stall between two lines from the
//! freeze to the last page (the freeze, or a wait for faulted pages), the
//! time until the last page arrived (from the start of the dump), the
//! workload's progress per second before, while pages arrive and after,
//! and the CPU-seconds of the source's and the target's criu per GiB.
//!
//! Each size runs without and with CRIU's kernel cache (`/run/criu.kdat`,
//! [`loadshift_executor::kdat`], which the executor writes at start):
//! `LOADSHIFT_BENCH_KDAT=off,on` (the default) or either alone.
//!
//! Run: `cargo bench -p loadshift-executor --bench postcopy` (root, after
//! scripts/setup). Sizes and runs: `LOADSHIFT_BENCH_SIZES=64,256`
//! `LOADSHIFT_BENCH_RUNS=5`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::postcopy::{build_c, wait_lines, TwoNodes, STEP_LIMIT};

/// One lazy move, as measured.
struct Run {
    freeze_ms: f64,
    stall_ms: f64,
    total_ms: f64,
    before: f64,
    during: f64,
    after: f64,
    source_cpu: f64,
    target_cpu: f64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A criu that appends `<command> <user s> <sys s>` to `log` when it ends.
fn timed_criu(dir: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("criu-timed");
    let script = format!(
        "#!/bin/sh\nexec /usr/bin/time -a -o {} -f \"$1 %U %S\" criu \"$@\"\n",
        log.display()
    );
    std::fs::write(&path, script).expect("write the criu wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// CPU-seconds of the source's criu (dump) and the target's (lazy-pages
/// daemon and restore), from the wrapper's log.
fn criu_cpu(log: &Path) -> (f64, f64) {
    let (mut source, mut target) = (0.0, 0.0);
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [cmd, user, sys] = f[..] else { continue };
        let cpu = user.parse::<f64>().unwrap_or(0.0) + sys.parse::<f64>().unwrap_or(0.0);
        if cmd == "dump" {
            source += cpu;
        } else {
            target += cpu;
        }
    }
    (source, target)
}

/// `(unix ms, pages walked)` lines of the workload's output on both nodes.
fn progress(files: &[PathBuf]) -> Vec<(i64, u64)> {
    let mut points: Vec<(i64, u64)> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            let (t, n) = l.split_once(' ')?;
            Some((t.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    points.sort();
    points.dedup();
    points
}

/// Pages walked per second between `from` and `to` (unix ms).
fn rate(points: &[(i64, u64)], from: i64, to: i64) -> f64 {
    let inside: Vec<&(i64, u64)> = points
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 * 1000.0 / (b.0 - a.0) as f64,
        _ => f64::NAN,
    }
}

async fn one_run(walker: &Path, mib: u64, run: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("criu-times");
    let criu = timed_criu(dir.path(), &log);
    let nodes = TwoNodes::with_criu(&format!("postcopy-{mib}-{run}"), dir, criu.clone(), criu);
    let source = nodes
        .start(&[&walker.display().to_string(), &mib.to_string()])
        .await;
    // "ready", then about 1.5 s of progress lines.
    wait_lines(&nodes.stdout(false), 300);
    let frozen = now_ms();
    let (dump, restore) = nodes.lazy_move(&source).await;
    let resumed = now_ms();
    let (served, arrived) = tokio::join!(dump.finish(STEP_LIMIT), restore.finish(STEP_LIMIT));
    served.expect("the source served every page");
    arrived.expect("the target received every page");
    let done = now_ms();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let points = progress(&[nodes.stdout(false), nodes.stdout(true)]);
    // The freeze: from the last line the source's copy wrote to the first
    // the target's wrote.
    let last_source = progress(&[nodes.stdout(false)]).last().map_or(0, |p| p.0);
    let first_target = progress(&[nodes.stdout(true)])
        .into_iter()
        .find(|p| p.0 > last_source)
        .map_or(i64::MAX, |p| p.0);
    let stall = points
        .windows(2)
        .filter(|w| w[1].0 >= frozen && w[0].0 <= done)
        .map(|w| (w[1].0 - w[0].0) as f64)
        .fold(0.0, f64::max);
    let (source_cpu, target_cpu) = criu_cpu(&log);
    Run {
        freeze_ms: (first_target - last_source) as f64,
        stall_ms: stall,
        total_ms: (done - frozen) as f64,
        before: rate(&points, frozen - 1000, frozen),
        during: rate(&points, resumed, done),
        after: rate(&points, done, done + 1000),
        source_cpu,
        target_cpu,
    }
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes = env_list("LOADSHIFT_BENCH_SIZES", "64,256,1024");
    let runs = env_list("LOADSHIFT_BENCH_RUNS", "5")
        .first()
        .copied()
        .unwrap_or(5) as usize;
    let bin = tempfile::tempdir().expect("tempdir");
    let walker = build_c(bin.path(), "pagewalk");
    let caches: Vec<String> = std::env::var("LOADSHIFT_BENCH_KDAT")
        .unwrap_or_else(|_| "off,on".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    println!("| touched memory | kdat cache | freeze (median of {runs}) | freeze min–max | longest stall | until last page | progress/s before | while pages arrive | after | source criu CPU-s/GiB | target criu CPU-s/GiB |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (mib, cache) in sizes
        .iter()
        .flat_map(|m| caches.iter().map(move |c| (*m, c.as_str())))
    {
        if cache == "on" {
            loadshift_executor::kdat::refresh(Path::new("criu"))
                .await
                .expect("write the kdat cache");
        } else {
            let _ = std::fs::remove_file(loadshift_executor::kdat::CACHE);
        }
        let mut all = Vec::new();
        for run in 0..runs {
            all.push(one_run(&walker, mib, run).await);
        }
        let gib = mib as f64 / 1024.0;
        let col = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
        let freezes: Vec<f64> = all.iter().map(|r| r.freeze_ms).collect();
        println!(
            "| {mib} MiB | {cache} | {:.0} ms | {:.0}–{:.0} ms | {:.0} ms | {:.0} ms | {:.0} pages | {:.0} pages | {:.0} pages | {:.2} | {:.2} |",
            col(|r| r.freeze_ms),
            freezes.iter().copied().fold(f64::INFINITY, f64::min),
            freezes.iter().copied().fold(0.0, f64::max),
            col(|r| r.stall_ms),
            col(|r| r.total_ms),
            col(|r| r.before),
            col(|r| r.during),
            col(|r| r.after),
            col(|r| r.source_cpu) / gib,
            col(|r| r.target_cpu) / gib,
        );
    }
}
