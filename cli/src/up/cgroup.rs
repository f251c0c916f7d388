//! A node simulated on this machine is a cgroup: its CPU quota and memory
//! limit are the node's capacity (the agent reads them), and everything the
//! node's executor starts or restores is charged to it. v1 (the `cpu`,
//! `cpuacct` and `memory` hierarchies) and v2 (one folder) are both handled.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroups are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies a node lives in.
const V1: [&str; 3] = ["cpu", "cpuacct", "memory"];
/// The CFS period the quota is a share of.
const PERIOD_US: u64 = 100_000;
/// How many ordinary processes the cluster's parent cgroup weighs as, when
/// the CPU is contended. A quota only caps a node; on a busy machine (other
/// builds, other tests) the kernel would share the cores among every
/// runnable process and a node asking for its full core would get a
/// fraction of it, so a ramp meant to pass 90 % of node2 never gets there.
/// Weighted like this, the nodes together get their quotas unless this many
/// busy processes compete; the quotas still bound what they can take.
const CLUSTER_WEIGHT: u64 = 32;
/// The default weight of a cgroup (and of one process) on v1 and on v2.
const V1_SHARES: u64 = 1024;
const V2_WEIGHT: u64 = 100;

/// Why a node's cgroup could not be set up or taken down.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: cannot {action}: {source}")]
pub struct CgroupError {
    /// The file or folder.
    pub path: PathBuf,
    /// What was attempted.
    pub action: &'static str,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// True on a unified (v2-only) hierarchy.
pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// One node's cgroup, named relative to the hierarchy root (`loadshift-up/node2`).
#[derive(Debug, Clone)]
pub struct NodeCgroup {
    /// The name the agent and executor are given.
    pub rel: String,
}

impl NodeCgroup {
    /// Its folders: three on v1, one on v2.
    pub fn dirs(&self) -> Vec<PathBuf> {
        dirs(&self.rel)
    }

    /// Creates it (or takes over one left by an earlier run, emptied first)
    /// with `cores` of CPU and `memory_bytes` of memory.
    ///
    /// # Errors
    /// [`CgroupError`] when a folder or limit cannot be written (not root?).
    pub fn create(rel: &str, cores: f64, memory_bytes: u64) -> Result<Self, CgroupError> {
        let cg = Self {
            rel: rel.trim_matches('/').to_string(),
        };
        if is_v2() {
            enable_v2_controllers(&cg.rel)?;
        }
        for d in cg.dirs() {
            std::fs::create_dir_all(&d).map_err(io(&d, "create the folder"))?;
        }
        cg.kill_all(Duration::from_secs(5));
        cg.weigh_parents()?;
        let quota = ((cores * PERIOD_US as f64).round() as u64).max(1000);
        if is_v2() {
            let d = Path::new(ROOT).join(&cg.rel);
            write(&d.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            write(&d.join("memory.max"), &memory_bytes.to_string())?;
        } else {
            let cpu = Path::new(ROOT).join("cpu").join(&cg.rel);
            write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            let mem = Path::new(ROOT).join("memory").join(&cg.rel);
            write(
                &mem.join("memory.limit_in_bytes"),
                &memory_bytes.to_string(),
            )?;
        }
        Ok(cg)
    }

    /// Gives the folders above the node (the cluster's, `loadshift-up`)
    /// [`CLUSTER_WEIGHT`] times the default CPU weight; the nodes under it
    /// keep equal weights.
    fn weigh_parents(&self) -> Result<(), CgroupError> {
        let parts: Vec<&str> = self.rel.split('/').collect();
        for depth in 1..parts.len() {
            let parent = parts[..depth].join("/");
            if is_v2() {
                let d = Path::new(ROOT).join(&parent);
                write(
                    &d.join("cpu.weight"),
                    &(V2_WEIGHT * CLUSTER_WEIGHT).to_string(),
                )?;
            } else {
                let d = Path::new(ROOT).join("cpu").join(&parent);
                write(
                    &d.join("cpu.shares"),
                    &(V1_SHARES * CLUSTER_WEIGHT).to_string(),
                )?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into this cgroup.
    ///
    /// # Errors
    /// [`CgroupError`] when the kernel refuses.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in it now.
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .dirs()
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILLs whatever runs in it until it is empty (or `within` passed);
    /// returns how many processes were killed.
    pub fn kill_all(&self, within: Duration) -> usize {
        let deadline = std::time::Instant::now() + within;
        let mut killed = std::collections::BTreeSet::new();
        loop {
            let pids = self.pids();
            if pids.is_empty() || std::time::Instant::now() >= deadline {
                return killed.len();
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory effects; the pid was read from
                // our own node's cgroup, which holds only what we started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes its folders (it must be empty); a missing folder is fine.
    ///
    /// # Errors
    /// [`CgroupError`] when a folder stays busy.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in self.dirs() {
            remove_dir_retrying(&d)?;
        }
        Ok(())
    }
}

/// Removes the parent folder (`loadshift-up`) of the nodes' cgroups when it
/// is empty; one still holding other cgroups is left alone.
pub fn remove_parent(prefix: &str) {
    for d in dirs(prefix) {
        let _ = std::fs::remove_dir(&d);
    }
}

/// Removes `prefix` from every cgroup hierarchy, deepest folder first:
/// Docker makes a container's parent folders in every v1 controller
/// (pids, blkio, devices, ...), not only in those `up` made. An empty
/// cgroup folder can be removed; one still holding processes stays.
pub fn remove_everywhere(prefix: &str) {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return;
    }
    let Ok(hierarchies) = std::fs::read_dir(ROOT) else {
        return;
    };
    for h in hierarchies.flatten() {
        remove_tree(&h.path().join(prefix));
    }
}

fn remove_tree(d: &Path) {
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

fn remove_dir_retrying(d: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(CgroupError {
        path: d.to_path_buf(),
        action: "remove the folder",
        source: last.unwrap_or_else(|| std::io::Error::other("busy")),
    })
}

/// The folders of cgroup `rel`.
pub fn dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_matches('/');
    if is_v2() {
        vec![Path::new(ROOT).join(rel)]
    } else {
        V1.iter()
            .map(|c| Path::new(ROOT).join(c).join(rel))
            .collect()
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path, "write"))
}

/// On v2, a child only gets the cpu and memory files when every ancestor
/// delegates those controllers to its children.
fn enable_v2_controllers(rel: &str) -> Result<(), CgroupError> {
    let mut dir = PathBuf::from(ROOT);
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        write(&dir.join("cgroup.subtree_control"), "+cpu +memory")?;
        dir = dir.join(part);
        std::fs::create_dir_all(&dir).map_err(io(&dir, "create the folder"))?;
    }
    write(&dir.join("cgroup.subtree_control"), "+cpu +memory")
}
