//! Migration benchmark: freeze time (workload stopped → running again) and
//! total time for a process holding 64, 256 and 1024 MiB of touched memory,
//! moved between two executors (two nodes on this machine) — median of 5 —
//! beside the same workload moved the way Docker's CLI does it
//! (`docker checkpoint create` then `docker start --checkpoint`), in the same
//! run.
//!
//! Each size is moved in every mode of `LOADSHIFT_BENCH_MODES` (default
//! `copy,stream`: the object store, and pages streamed straight from the
//! dump to the target), with the CPU-seconds the source's and the target's
//! executor (and the criu they ran) spent per GiB moved.
//!
//! Run: `cargo bench -p loadshift-executor --bench migration` (root, after
//! scripts/setup; the Docker column needs scripts/setup-docker).
//! Sizes and runs: `LOADSHIFT_BENCH_SIZES=64,256` `LOADSHIFT_BENCH_RUNS=5`.
//! `LOADSHIFT_BENCH_LOG=FILE` appends every migration (mode, image bytes,
//! freeze ms, total ms, in the order they ran) to FILE as CSV, so that the
//! planner's estimate can be held against real migrations
//! (`cargo run -p loadshift-brain --example estimate_error -- FILE`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use loadshift_events::migration::{Mode, Timings};
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
    mode: Mode,
    /// CPU-seconds per GiB moved, on the source and on the target.
    cpu_source: f64,
    cpu_target: f64,
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

/// CPU time (user + system, its reaped children's too) of `pid`, seconds.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime, stime, cutime, cstime: fields 14-17.
    f.get(11..15)
        .map_or(f64::NAN, |v| v.iter().sum::<u64>() as f64)
        / ticks
}

/// One migration's outcome: its timings, bytes, and CPU-seconds spent by
/// the source's and the target's executor.
struct Run {
    timings: Timings,
    bytes: u64,
    cpu_source: f64,
    cpu_target: f64,
}

async fn loadshift_runs(
    c: &Cluster,
    memtouch: &std::path::Path,
    mib: u64,
    runs: usize,
    mode: Mode,
) -> Vec<Run> {
    let name = format!("mem{mib}{mode}");
    let bin = memtouch.display().to_string();
    let size = mib.to_string();
    c.run_workload("node2", &name, &[&bin, &size]).await;
    wait_resident(&c.nodes[0].workload_dir(&name).join("stdout"));
    let mut out = Vec::new();
    let (mut from, mut to) = ("node2", "node3");
    let pid = |n: &str| {
        c.nodes
            .iter()
            .find(|x| x.name.as_str() == n)
            .and_then(|x| x.pid())
    };
    for _ in 0..runs {
        let (src0, dst0) = (cpu_seconds(pid(from)), cpu_seconds(pid(to)));
        let id = c.migrate_in(mode, &name, from, to).await;
        let e = c.outcome(id).await;
        let Event::MigrationCompleted(done) = e.event else {
            panic!("migration failed: {e:?}\n{}", c.logs());
        };
        assert_eq!(done.mode, Some(mode), "fell back: {:?}", done.fallback);
        log_migration(mode, done.image_bytes, &done.timings);
        out.push(Run {
            timings: done.timings,
            bytes: done.image_bytes,
            cpu_source: cpu_seconds(pid(from)) - src0,
            cpu_target: cpu_seconds(pid(to)) - dst0,
        });
        std::mem::swap(&mut from, &mut to);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out
}

/// Appends one completed migration to `LOADSHIFT_BENCH_LOG` (when set).
fn log_migration(mode: Mode, image_bytes: u64, t: &Timings) {
    let Ok(path) = std::env::var("LOADSHIFT_BENCH_LOG") else {
        return;
    };
    let line = format!(
        "{mode},{image_bytes},{},{}\n",
        t.downtime_ms.unwrap_or(f64::NAN),
        t.total_ms.unwrap_or(f64::NAN)
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot append to {path}: {e}");
    }
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
    let modes: Vec<Mode> = std::env::var("LOADSHIFT_BENCH_MODES")
        .unwrap_or_else(|_| "copy,stream".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    let memtouch = build_memtouch(c.dir.path());
    let mut rows = Vec::new();
    for &mib in &sizes {
        eprintln!("docker CLI: {mib} MiB x {runs}");
        let dk = docker_runs(mib, runs);
        if let Err(e) = &dk {
            eprintln!("docker CLI path not measured: {e}");
        }
        let dk = dk.ok();
        for &mode in &modes {
            eprintln!("loadshift {mode}: {mib} MiB x {runs}");
            let ls = loadshift_runs(&c, &memtouch, mib, runs, mode).await;
            rows.push(row(mib, mode, &ls, dk.as_deref()));
        }
    }
    print_rows(rows, runs);
}

/// The medians of `ls` (and of Docker's runs `dk`) for `mib` in `mode`.
fn row(mib: u64, mode: Mode, ls: &[Run], dk: Option<&[(f64, f64)]>) -> Row {
    let get =
        |f: fn(&Timings) -> Option<f64>| median(ls.iter().filter_map(|r| f(&r.timings)).collect());
    let per_gib = |f: fn(&Run) -> f64| {
        median(
            ls.iter()
                .map(|r| f(r) / (r.bytes as f64 / 1073741824.0))
                .collect(),
        )
    };
    Row {
        mib,
        mode,
        cpu_source: per_gib(|r| r.cpu_source),
        cpu_target: per_gib(|r| r.cpu_target),
        freeze: get(|t| t.downtime_ms) / 1000.0,
        total: get(|t| t.total_ms) / 1000.0,
        dump: get(|t| t.dump_ms) / 1000.0,
        transfer: get(|t| Some(t.upload_ms? + t.download_ms?)) / 1000.0,
        restore: get(|t| t.restore_ms) / 1000.0,
        image_mib: median(ls.iter().map(|r| r.bytes as f64 / 1048576.0).collect()),
        docker_freeze: dk
            .as_ref()
            .map(|v| median(v.iter().map(|(a, b)| a + b).collect())),
        docker_create: dk
            .as_ref()
            .map(|v| median(v.iter().map(|(a, _)| *a).collect())),
        docker_start: dk
            .as_ref()
            .map(|v| median(v.iter().map(|(_, b)| *b).collect())),
    }
}

fn print_rows(rows: Vec<Row>, runs: usize) {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
    println!("| touched memory | mode | image | loadshift freeze | dump | transfer (upload+download) | restore | loadshift total | CPU-s/GiB source | CPU-s/GiB target | docker CLI freeze (create + start) | docker create | docker start | docker / loadshift |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} MiB | {} | {:.0} MiB | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.2} s | {:.2} | {:.2} | {} s | {} s | {} s | {} |",
            r.mib,
            r.mode,
            r.image_mib,
            r.freeze,
            r.dump,
            r.transfer,
            r.restore,
            r.total,
            r.cpu_source,
            r.cpu_target,
            f(r.docker_freeze),
            f(r.docker_create),
            f(r.docker_start),
            r.docker_freeze.map(|d| format!("{:.1}x", d / r.freeze)).unwrap_or_else(|| "n/a".into()),
        );
    }
    println!("\nmedian of {runs} runs each; freeze = downtime reported by the executors (frozen on the source until running on the target)");
}
