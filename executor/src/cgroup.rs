//! The node's cgroup: the executor joins it, so every workload it starts and
//! every workload criu restores for it is charged to this node; and its quota
//! and limit are the capacity the node declares.

use std::path::{Path, PathBuf};

/// Where cgroups are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers a node's cgroup lives in.
const V1_CONTROLLERS: [&str; 3] = ["cpu", "cpuacct", "memory"];

/// Why the node's cgroup could not be joined.
#[derive(Debug, thiserror::Error)]
#[error("cannot join cgroup {path}: {source} (create it first, e.g. `mkdir -p {path}`)")]
pub struct CgroupError {
    /// The cgroup folder.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// CPU and memory a node offers.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    /// Cores (a quota may give fractions).
    pub cores: f32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The folders of cgroup `rel` (relative to the hierarchy root).
fn dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if is_v2() {
        vec![Path::new(ROOT).join(rel)]
    } else {
        V1_CONTROLLERS
            .iter()
            .map(|c| Path::new(ROOT).join(c).join(rel))
            .collect()
    }
}

/// Moves this whole process (every thread) into cgroup `rel`.
///
/// # Errors
/// [`CgroupError`] when a folder is missing or the write is refused.
pub fn join(rel: &str) -> Result<(), CgroupError> {
    let pid = std::process::id().to_string();
    for dir in dirs(rel) {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, &pid).map_err(|source| CgroupError {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The node's capacity: the cgroup's quota and limit when given, else the host's.
pub fn capacity(rel: Option<&str>) -> Capacity {
    let host_cores = std::thread::available_parallelism()
        .map(|n| n.get() as f32)
        .unwrap_or(1.0);
    let host_mem = host_memory().unwrap_or(0);
    let Some(rel) = rel else {
        return Capacity {
            cores: host_cores,
            memory_bytes: host_mem,
        };
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let rel = rel.trim_start_matches('/');
    let (cores, mem) = if is_v2() {
        let dir = Path::new(ROOT).join(rel);
        let cores = read(dir.join("cpu.max")).and_then(|s| {
            let mut it = s.split_whitespace();
            let q: f32 = it.next()?.parse().ok()?;
            let p: f32 = it.next()?.parse().ok()?;
            Some(q / p)
        });
        let mem = read(dir.join("memory.max")).and_then(|s| s.parse::<u64>().ok());
        (cores, mem)
    } else {
        let cpu = Path::new(ROOT).join("cpu").join(rel);
        let q = read(cpu.join("cpu.cfs_quota_us")).and_then(|s| s.parse::<f32>().ok());
        let p = read(cpu.join("cpu.cfs_period_us")).and_then(|s| s.parse::<f32>().ok());
        let cores = match (q, p) {
            (Some(q), Some(p)) if q > 0.0 && p > 0.0 => Some(q / p),
            _ => None,
        };
        let mem = read(
            Path::new(ROOT)
                .join("memory")
                .join(rel)
                .join("memory.limit_in_bytes"),
        )
        .and_then(|s| s.parse::<u64>().ok());
        (cores, mem)
    };
    Capacity {
        cores: cores.unwrap_or(host_cores).min(host_cores),
        memory_bytes: mem
            .filter(|m| *m < host_mem || host_mem == 0)
            .unwrap_or(host_mem),
    }
}

fn host_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
