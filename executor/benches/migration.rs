//! Migration benchmark: freeze time (workload stopped → running again) and
//! total time for a process holding 64, 256 and 1024 MiB of touched memory,
//! moved between two executors (two nodes on this machine) — median of 5 —
//! beside the same workload moved the way Docker's CLI does it
//! (`docker checkpoint create` then `docker start --checkpoint`), in the same
//! run.
//!
//! Run: `cargo bench -p loadshift-executor --bench migration` (root, after
//! scripts/setup; the Docker column needs scripts/setup-docker).
//! Sizes and runs: `LOADSHIFT_BENCH_SIZES=64,256` `LOADSHIFT_BENCH_RUNS=5`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use loadshift_events::migration::Timings;
use loadshift_events::Event;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn build_memtouch(dir: &std::path::Path) -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/memtouch.c");
    let out = dir.join("memtouch");
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("gcc");
    assert!(status.success(), "building memtouch failed");
    out
}

/// Waits until `file` holds `memtouch: N MiB resident` and a counter line.
fn wait_resident(file: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let s = std::fs::read_to_string(file).unwrap_or_default();
        if s.contains("resident") && s.lines().count() > 2 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("memtouch did not fill its memory: {}", file.display());
}

struct Row {
    mib: u64,
    freeze: f64,
    total: f64,
    dump: f64,
    transfer: f64,
    restore: f64,
    image_mib: f64,
    docker_freeze: Option<f64>,
    docker_create: Option<f64>,
    docker_start: Option<f64>,
}

async fn loadshift_runs(
    c: &Cluster,
    memtouch: &std::path::Path,
    mib: u64,
    runs: usize,
) -> Vec<(Timings, u64)> {
    let name = format!("mem{mib}");
    let bin = memtouch.display().to_string();
    let size = mib.to_string();
    c.run_workload("node2", &name, &[&bin, &size]).await;
    wait_resident(&c.nodes[0].workload_dir(&name).join("stdout"));
    let mut out = Vec::new();
    let (mut from, mut to) = ("node2", "node3");
    for _ in 0..runs {
        let id = c.migrate(&name, from, to).await;
        let e = c.outcome(id).await;
        let Event::MigrationCompleted(done) = e.event else {
            panic!("migration failed: {e:?}\n{}", c.logs());
        };
        out.push((done.timings, done.image_bytes));
        std::mem::swap(&mut from, &mut to);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Docker's own path on one container: checkpoint create, then start from
/// it. Returns (create s, start s) per run.
fn docker_runs(mib: u64, runs: usize) -> Result<Vec<(f64, f64)>, String> {
    docker(&["info", "--format", "{{.ExperimentalBuild}}"]).and_then(|v| {
        if v == "true" {
            Ok(())
        } else {
            Err("experimental is off".into())
        }
    })?;
    let name = format!("loadshift-bench-{mib}-{}", std::process::id());
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "loadshift/counter:test",
        "memtouch",
        &mib.to_string(),
    ])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !docker(&["logs", &id])
        .unwrap_or_default()
        .contains("resident")
    {
        if Instant::now() > deadline {
            let _ = docker(&["rm", "-f", &id]);
            return Err("memtouch container did not fill its memory".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Vec::new();
    for i in 0..runs {
        let cp = format!("cp{i}");
        let t = Instant::now();
        docker(&["checkpoint", "create", &id, &cp])?;
        let create = t.elapsed().as_secs_f64();
        let t = Instant::now();
        docker(&["start", "--checkpoint", &cp, &id])?;
        let start = t.elapsed().as_secs_f64();
        out.push((create, start));
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = docker(&["rm", "-f", &id]);
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::var("LOADSHIFT_BENCH_SIZES")
        .unwrap_or_else(|_| "64,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("LOADSHIFT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    let memtouch = build_memtouch(c.dir.path());
    let mut rows = Vec::new();
    for &mib in &sizes {
        eprintln!("loadshift: {mib} MiB x {runs}");
        let ls = loadshift_runs(&c, &memtouch, mib, runs).await;
        eprintln!("docker CLI: {mib} MiB x {runs}");
        let dk = docker_runs(mib, runs);
        if let Err(e) = &dk {
            eprintln!("docker CLI path not measured: {e}");
        }
        let get =
            |f: fn(&Timings) -> Option<f64>| median(ls.iter().filter_map(|(t, _)| f(t)).collect());
        let dk = dk.ok();
        rows.push(Row {
            mib,
            freeze: get(|t| t.downtime_ms) / 1000.0,
            total: get(|t| t.total_ms) / 1000.0,
            dump: get(|t| t.dump_ms) / 1000.0,
            transfer: get(|t| Some(t.upload_ms? + t.download_ms?)) / 1000.0,
            restore: get(|t| t.restore_ms) / 1000.0,
            image_mib: median(ls.iter().map(|(_, b)| *b as f64 / 1048576.0).collect()),
            docker_freeze: dk
                .as_ref()
                .map(|v| median(v.iter().map(|(a, b)| a + b).collect())),
            docker_create: dk
                .as_ref()
                .map(|v| median(v.iter().map(|(a, _)| *a).collect())),
            docker_start: dk
                .as_ref()
                .map(|v| median(v.iter().map(|(_, b)| *b).collect())),
        });
    }
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
    println!("| touched memory | image | loadshift freeze | dump | transfer (upload+download) | restore | loadshift total | docker CLI freeze (create + start) | docker create | docker start | docker / loadshift |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} MiB | {:.0} MiB | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {} s | {} s | {} s | {} |",
            r.mib,
            r.image_mib,
            r.freeze,
            r.dump,
            r.transfer,
            r.restore,
            r.total,
            f(r.docker_freeze),
            f(r.docker_create),
            f(r.docker_start),
            r.docker_freeze.map(|d| format!("{:.1}x", d / r.freeze)).unwrap_or_else(|| "n/a".into()),
        );
    }
    println!("\nmedian of {runs} runs each; freeze = downtime reported by the executors (frozen on the source until running on the target)");
}
