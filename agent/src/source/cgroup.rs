//! A node simulated by one cgroup on this machine.
//!
//! Several loadshift nodes can share one machine, each a cgroup whose CPU
//! quota and memory limit are its capacity. This module reads that cgroup's
//! files. It takes the hierarchy root as a parameter (`/sys/fs/cgroup` in
//! production) so that tests can point it at a temporary directory imitating
//! the v1 or the v2 layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use loadshift_events::telemetry::{Cpu, Memory, Pressure};
use loadshift_events::Sample;

use super::{pressure, Capacity, LiveSource, SourceError};

/// The usual mount point of the cgroup hierarchy.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// v1 memory limits at or above this mean "no limit" (the kernel writes
/// `PAGE_COUNTER_MAX` pages, about 2^63 bytes, rounded to the page size).
const V1_UNLIMITED: u64 = 1 << 62;

/// Why a cgroup cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup directory for a controller is not there.
    #[error("cgroup {cgroup:?} not found: looked for {looked}")]
    NotFound {
        /// The cgroup as given.
        cgroup: PathBuf,
        /// The directories tried.
        looked: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what the kernel writes there.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
    },
}

/// Where one cgroup's files are, for either hierarchy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupFiles {
    /// cgroup v1: one directory per controller.
    V1 {
        /// The `cpu` controller's directory (quota).
        cpu: PathBuf,
        /// The `cpuacct` controller's directory (usage).
        cpuacct: PathBuf,
        /// The `memory` controller's directory.
        memory: PathBuf,
    },
    /// cgroup v2: one directory holds everything.
    V2 {
        /// The cgroup's directory.
        dir: PathBuf,
    },
}

impl CgroupFiles {
    /// Finds cgroup `path` under hierarchy `root`, telling v2 from v1 by
    /// `root/cgroup.controllers` (only a v2 root has it).
    ///
    /// `path` is relative to the root (`loadshift/node2`), or absolute: a
    /// directory under `root` (for v1, under a controller's mount, which is
    /// then stripped), or any other directory, read as one directory holding
    /// every file.
    ///
    /// # Errors
    /// [`CgroupError::NotFound`] when a needed directory does not exist.
    pub fn locate(root: &Path, path: &Path) -> Result<Self, CgroupError> {
        let not_found = |looked: &[&Path]| CgroupError::NotFound {
            cgroup: path.to_path_buf(),
            looked: looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if root.join("cgroup.controllers").exists() {
            let dir = if path.is_absolute() {
                path.to_path_buf()
            } else {
                root.join(path)
            };
            return if dir.is_dir() {
                Ok(CgroupFiles::V2 { dir })
            } else {
                Err(not_found(&[&dir]))
            };
        }
        let relative = if path.is_absolute() {
            match path.strip_prefix(root) {
                // Drop the controller mount (`cpu`, `cpu,cpuacct`, ...).
                Ok(under_root) => under_root.components().skip(1).collect::<PathBuf>(),
                Err(_) if path.is_dir() => {
                    let dir = path.to_path_buf();
                    return Ok(CgroupFiles::V1 {
                        cpu: dir.clone(),
                        cpuacct: dir.clone(),
                        memory: dir,
                    });
                }
                Err(_) => return Err(not_found(&[path])),
            }
        } else {
            path.to_path_buf()
        };
        let first_dir = |mounts: &[&str]| -> Result<PathBuf, CgroupError> {
            let candidates: Vec<PathBuf> = mounts
                .iter()
                .map(|m| root.join(m).join(&relative))
                .collect();
            candidates
                .iter()
                .find(|d| d.is_dir())
                .cloned()
                .ok_or_else(|| {
                    not_found(&candidates.iter().map(PathBuf::as_path).collect::<Vec<_>>())
                })
        };
        Ok(CgroupFiles::V1 {
            cpu: first_dir(&["cpu", "cpu,cpuacct", "cpuacct,cpu"])?,
            cpuacct: first_dir(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"])?,
            memory: first_dir(&["memory"])?,
        })
    }

    /// CPU cores the quota allows; `host_cpus` when there is no quota.
    ///
    /// # Errors
    /// [`CgroupError`] when the quota files are unreadable or malformed.
    pub fn cpu_capacity(&self, host_cpus: f32) -> Result<f32, CgroupError> {
        let cores = match self {
            CgroupFiles::V1 { cpu, .. } => {
                let quota_path = cpu.join("cpu.cfs_quota_us");
                let quota: i64 = parse_file(&quota_path)?;
                if quota < 0 {
                    host_cpus
                } else {
                    let period: i64 = parse_file(&cpu.join("cpu.cfs_period_us"))?;
                    if period <= 0 {
                        return Err(CgroupError::Parse {
                            path: cpu.join("cpu.cfs_period_us"),
                            content: period.to_string(),
                        });
                    }
                    quota as f32 / period as f32
                }
            }
            CgroupFiles::V2 { dir } => {
                let path = dir.join("cpu.max");
                match std::fs::read_to_string(&path) {
                    // No cpu controller enabled for this cgroup: no quota.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => host_cpus,
                    Err(source) => return Err(CgroupError::Read { path, source }),
                    Ok(text) => parse_cpu_max(&text, host_cpus).ok_or(CgroupError::Parse {
                        path,
                        content: text.trim().to_string(),
                    })?,
                }
            }
        };
        Ok(cores.min(host_cpus))
    }

    /// CPU time the cgroup used since it was created, in nanoseconds.
    ///
    /// # Errors
    /// [`CgroupError`] when the counter is unreadable or malformed.
    pub fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        match self {
            CgroupFiles::V1 { cpuacct, .. } => parse_file(&cpuacct.join("cpuacct.usage")),
            CgroupFiles::V2 { dir } => {
                let path = dir.join("cpu.stat");
                let text = read(&path)?;
                text.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|us| us.saturating_mul(1000))
                    .ok_or(CgroupError::Parse {
                        path,
                        content: text.trim().to_string(),
                    })
            }
        }
    }

    /// Memory used and the limit; the limit is `host_total` when unlimited
    /// (or set above what the machine has).
    ///
    /// # Errors
    /// [`CgroupError`] when the files are unreadable or malformed.
    pub fn memory(&self, host_total: u64) -> Result<Memory, CgroupError> {
        let (limit, used) = match self {
            CgroupFiles::V1 { memory, .. } => {
                let limit: u64 = parse_file(&memory.join("memory.limit_in_bytes"))?;
                let used: u64 = parse_file(&memory.join("memory.usage_in_bytes"))?;
                (
                    if limit >= V1_UNLIMITED {
                        None
                    } else {
                        Some(limit)
                    },
                    used,
                )
            }
            CgroupFiles::V2 { dir } => {
                let max_path = dir.join("memory.max");
                let text = read(&max_path)?;
                let limit = match text.trim() {
                    "max" => None,
                    v => Some(v.parse::<u64>().map_err(|_| CgroupError::Parse {
                        path: max_path.clone(),
                        content: v.to_string(),
                    })?),
                };
                (limit, parse_file(&dir.join("memory.current"))?)
            }
        };
        Ok(Memory {
            used_bytes: used,
            total_bytes: limit.map_or(host_total, |l| l.min(host_total)),
        })
    }

    /// Processes in the cgroup (`cgroup.procs`, or `tasks` on old v1 setups).
    ///
    /// # Errors
    /// [`CgroupError::Read`] when neither file can be read.
    pub fn processes(&self) -> Result<u32, CgroupError> {
        let dir = match self {
            CgroupFiles::V1 { cpu, .. } => cpu,
            CgroupFiles::V2 { dir } => dir,
        };
        let text = read(&dir.join("cgroup.procs")).or_else(|_| read(&dir.join("tasks")))?;
        Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u32)
    }

    /// PSI of the cgroup: only v2 has per-cgroup pressure files.
    pub fn pressure(&self) -> Option<Pressure> {
        match self {
            CgroupFiles::V1 { .. } => None,
            CgroupFiles::V2 { dir } => pressure::read_all(|r| dir.join(format!("{r}.pressure"))),
        }
    }
}

/// `cpu.max`: `max PERIOD` (no quota) or `QUOTA PERIOD`.
fn parse_cpu_max(text: &str, host_cpus: f32) -> Option<f32> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" {
        return Some(host_cpus);
    }
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0 && quota >= 0.0).then(|| (quota / period) as f32)
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_file<T: std::str::FromStr>(path: &Path) -> Result<T, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
    })
}

/// Samples one cgroup: usage as a share of its own quota, so a node with half
/// a core that uses half a core is at 100 %.
#[derive(Debug)]
pub struct CgroupSource {
    files: CgroupFiles,
    host_cpus: f32,
    host_memory: u64,
    last: (Instant, u64),
}

impl CgroupSource {
    /// Opens cgroup `path` under `root` and takes the first CPU reading, so
    /// the first sample already has a usage.
    ///
    /// # Errors
    /// [`CgroupError`] when the cgroup is not there or its files are unreadable.
    pub fn open(root: &Path, path: &Path) -> Result<Self, CgroupError> {
        let files = CgroupFiles::locate(root, path)?;
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f32;
        let usage = files.cpu_usage_ns()?;
        // Fail now, not on the first tick, if the capacity files are broken.
        files.cpu_capacity(host_cpus)?;
        files.memory(sys.total_memory())?;
        Ok(Self {
            files,
            host_cpus,
            host_memory: sys.total_memory(),
            last: (Instant::now(), usage),
        })
    }

    /// Where the files are read from.
    pub fn files(&self) -> &CgroupFiles {
        &self.files
    }
}

impl LiveSource for CgroupSource {
    fn sample(&mut self) -> Result<Sample, SourceError> {
        let now = Instant::now();
        let usage = self.files.cpu_usage_ns()?;
        let capacity = self.files.cpu_capacity(self.host_cpus)?;
        let (then, before) = self.last;
        self.last = (now, usage);
        let elapsed_ns = now.duration_since(then).as_nanos() as f64;
        let used_cores = if elapsed_ns > 0.0 {
            usage.saturating_sub(before) as f64 / elapsed_ns
        } else {
            0.0
        };
        let usage_pct = if capacity > 0.0 {
            (used_cores / capacity as f64 * 100.0) as f32
        } else {
            0.0
        };
        Ok(Sample {
            at: Utc::now(),
            seq: 0,
            cpu: Cpu {
                usage_pct,
                capacity_cores: capacity,
                per_core_pct: Vec::new(),
            },
            memory: self.files.memory(self.host_memory)?,
            swap: None,
            load: None,
            net: None,
            disk: None,
            processes: Some(self.files.processes()?),
            psi: self.files.pressure(),
        })
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            cores: self
                .files
                .cpu_capacity(self.host_cpus)
                .unwrap_or(self.host_cpus),
            memory_bytes: self
                .files
                .memory(self.host_memory)
                .map_or(self.host_memory, |m| m.total_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const GIB: u64 = 1 << 30;

    fn write(dir: &Path, file: &str, content: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(file), content).unwrap();
    }

    /// A v1 root with separate cpu, cpuacct and memory mounts, as on this
    /// project's machines.
    fn v1_root(quota: &str, limit: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("cpu/loadshift/node2");
        write(&cpu, "cpu.cfs_quota_us", quota);
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(&cpu, "cgroup.procs", "12\n13\n14\n");
        let acct = root.path().join("cpuacct/loadshift/node2");
        write(&acct, "cpuacct.usage", "5000000000\n");
        let mem = root.path().join("memory/loadshift/node2");
        write(&mem, "memory.limit_in_bytes", limit);
        write(&mem, "memory.usage_in_bytes", "1048576\n");
        root
    }

    fn v2_root(cpu_max: &str, memory_max: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cgroup.controllers", "cpu io memory pids\n");
        let dir = root.path().join("loadshift/node3");
        write(&dir, "cpu.max", cpu_max);
        write(
            &dir,
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        );
        write(&dir, "memory.max", memory_max);
        write(&dir, "memory.current", "2097152\n");
        write(&dir, "cgroup.procs", "7\n");
        write(
            &dir,
            "cpu.pressure",
            "some avg10=4.20 avg60=1.00 avg300=0.10 total=99\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        write(
            &dir,
            "memory.pressure",
            "some avg10=0.50 avg60=0 avg300=0 total=1\nfull avg10=0.25 avg60=0 avg300=0 total=1\n",
        );
        root
    }

    /// What a node's cgroup files say, read at once: its CPU capacity on a
    /// host of `host_cpus` cores (8 GiB of memory), the CPU time used, its
    /// memory and its processes.
    #[derive(Debug, PartialEq)]
    struct Reading {
        capacity: f32,
        usage_ns: u64,
        memory: Memory,
        processes: u32,
    }

    fn read(f: &CgroupFiles, host_cpus: f32) -> Reading {
        Reading {
            capacity: f.cpu_capacity(host_cpus).unwrap(),
            usage_ns: f.cpu_usage_ns().unwrap(),
            memory: f.memory(8 * GIB).unwrap(),
            processes: f.processes().unwrap(),
        }
    }

    /// The files of the node a root made by [`v1_root`] or [`v2_root`] holds.
    fn located(root: &tempfile::TempDir) -> CgroupFiles {
        let v1 = root.path().join("cpu").exists();
        let node = if v1 {
            "loadshift/node2"
        } else {
            "loadshift/node3"
        };
        CgroupFiles::locate(root.path(), Path::new(node)).unwrap()
    }

    #[test]
    fn quota_usage_memory_and_procs_in_v1_and_v2() {
        let v1_root = v1_root("50000\n", "536870912\n");
        let v2_root = v2_root("50000 100000\n", "1073741824\n");
        let (v1, v2) = (located(&v1_root), located(&v2_root));
        assert!(matches!(v1, CgroupFiles::V1 { .. }));
        assert!(matches!(v2, CgroupFiles::V2 { .. }));
        // Half a core of quota: of 2 cores, then of 4.
        let half = |usage_ns, used_bytes, total_bytes, processes| Reading {
            capacity: 0.5,
            usage_ns,
            memory: Memory {
                used_bytes,
                total_bytes,
            },
            processes,
        };
        assert_eq!(read(&v1, 2.0), half(5_000_000_000, 1 << 20, 512 << 20, 3));
        assert_eq!(read(&v2, 4.0), half(2_500_000_000, 2 << 20, GIB, 1));
        assert_eq!(v1.pressure(), None, "v1 has no pressure files");
        let p = v2.pressure().unwrap();
        assert_eq!(p.cpu_some, Some(4.2));
        assert_eq!(p.memory_full, Some(0.25));
        assert_eq!(p.io_some, None);
    }

    #[test]
    fn no_limit_means_the_host_in_v1_and_v2() {
        let v1 = v1_root("-1\n", "9223372036854771712\n");
        let v2 = v2_root("max 100000\n", "max\n");
        for f in [located(&v1), located(&v2)] {
            assert_eq!(f.cpu_capacity(2.0).unwrap(), 2.0, "{f:?}");
            assert_eq!(f.memory(8 * GIB).unwrap().total_bytes, 8 * GIB, "{f:?}");
        }
    }

    #[test]
    fn v1_absolute_path_under_a_controller_mount() {
        let root = v1_root("150000\n", "1073741824\n");
        let abs = root.path().join("cpu/loadshift/node2");
        let f = CgroupFiles::locate(root.path(), &abs).unwrap();
        assert_eq!(f.cpu_usage_ns().unwrap(), 5_000_000_000);
        assert_eq!(f.cpu_capacity(2.0).unwrap(), 1.5);
        assert_eq!(f.memory(8 * GIB).unwrap().total_bytes, GIB);
    }

    #[test]
    fn missing_cgroup_names_where_it_looked() {
        let root = v1_root("-1\n", "1\n");
        let e = CgroupFiles::locate(root.path(), Path::new("nope")).unwrap_err();
        assert!(
            matches!(&e, CgroupError::NotFound { looked, .. } if looked.contains("cpu/nope")),
            "{e}"
        );
        let root = v2_root("max\n", "max\n");
        assert!(CgroupFiles::locate(root.path(), Path::new("nope")).is_err());
    }

    #[test]
    fn garbage_in_a_file_is_an_error_not_a_panic() {
        let root = v2_root("lots 100000\n", "many\n");
        let f = CgroupFiles::locate(root.path(), Path::new("loadshift/node3")).unwrap();
        assert!(matches!(
            f.cpu_capacity(2.0),
            Err(CgroupError::Parse { .. })
        ));
        assert!(matches!(f.memory(GIB), Err(CgroupError::Parse { .. })));
    }

    #[test]
    fn source_measures_usage_against_the_quota() {
        let root = v1_root("50000\n", "536870912\n");
        let mut s = CgroupSource::open(root.path(), Path::new("loadshift/node2")).unwrap();
        // Half a core's worth of CPU time over the sampling gap is 100 %
        // of a half-core quota; write more usage and expect a positive share.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(
            root.path().join("cpuacct/loadshift/node2/cpuacct.usage"),
            "5010000000\n",
        )
        .unwrap();
        let sample = s.sample().unwrap();
        assert_eq!(sample.cpu.capacity_cores, 0.5);
        assert!(sample.cpu.usage_pct > 0.0, "{sample:?}");
        assert_eq!(sample.processes, Some(3));
        assert_eq!(s.capacity().cores, 0.5);
    }
}
