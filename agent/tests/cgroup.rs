//! The cgroup source against a real cgroup on this machine: a busy process
//! held to half a core must show as usage against a 0.5-core capacity, read
//! by the library and published by the binary.
//!
//! Needs root and a cgroup `cpu` controller (v1) or a v2 hierarchy; without
//! either it says so and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use loadshift_agent::source::cgroup::{CgroupSource, DEFAULT_ROOT};
use loadshift_agent::source::LiveSource;
use loadshift_events::Event;
use loadshift_testkit::NatsServer;

/// A cgroup made for one test, with a busy child inside, removed on drop.
struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    child: Child,
}

impl TestCgroup {
    /// `None` when this machine has no cgroup hierarchy we can use.
    fn create(tag: &str) -> Option<Self> {
        let root = Path::new(DEFAULT_ROOT);
        let name = format!("loadshift-test-{tag}-{}", std::process::id());
        let v2 = root.join("cgroup.controllers").exists();
        if !v2 && !root.join("cpu/cpu.cfs_quota_us").exists() {
            eprintln!("SKIP: no cgroup v1 cpu controller at {DEFAULT_ROOT}/cpu and no cgroup v2 hierarchy");
            return None;
        }
        let dirs: Vec<PathBuf> = if v2 {
            vec![root.join(&name)]
        } else {
            ["cpu", "cpuacct", "memory"]
                .iter()
                .map(|c| root.join(c).join(&name))
                .filter(|d| d.parent().is_some_and(Path::exists))
                .collect()
        };
        for d in &dirs {
            std::fs::create_dir(d)
                .unwrap_or_else(|e| panic!("mkdir {}: {e} (root needed)", d.display()));
        }
        if v2 {
            std::fs::write(dirs[0].join("cpu.max"), "50000 100000").expect("set cpu.max");
        } else {
            std::fs::write(dirs[0].join("cpu.cfs_period_us"), "100000").expect("set period");
            std::fs::write(dirs[0].join("cpu.cfs_quota_us"), "50000").expect("set quota");
        }
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start a busy child");
        let cg = Self { name, dirs, child };
        for d in &cg.dirs {
            std::fs::write(d.join("cgroup.procs"), cg.child.id().to_string())
                .unwrap_or_else(|e| panic!("move the child into {}: {e}", d.display()));
        }
        Some(cg)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in &self.dirs {
            // The kernel may need a moment to forget the dead child.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn real_cgroup_has_half_a_core_and_measurable_usage() {
    let Some(cg) = TestCgroup::create("lib") else {
        return;
    };
    let mut source = CgroupSource::open(Path::new(DEFAULT_ROOT), Path::new(&cg.name)).unwrap();
    assert_eq!(source.capacity().cores, 0.5);
    std::thread::sleep(Duration::from_millis(500));
    let s = source.sample().unwrap();
    assert_eq!(s.cpu.capacity_cores, 0.5);
    assert!(s.cpu.usage_pct > 0.0, "no usage measured: {s:?}");
    // The quota holds the child to about half a core: about 100 % of capacity.
    assert!(s.cpu.usage_pct < 150.0, "usage beyond the quota: {s:?}");
    assert!(s.processes.unwrap_or(0) >= 1);
    assert!(s.memory.total_bytes > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_publishes_samples_of_a_real_cgroup() {
    let Some(cg) = TestCgroup::create("bin") else {
        return;
    };
    let server = NatsServer::start();
    let mut child = agent(&server.url())
        .args(["--node", "cg1", "--interval", "200ms"])
        .arg("--source")
        .arg(format!("cgroup:{}", cg.name))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (guarded) until a few samples are stored, then stop the agent.
    until_stored(&server.url(), 5).await;
    let status = term(&mut child);
    assert!(status.success(), "{status}");
    let telemetry = read_stream(&server.url(), "TELEMETRY").await;
    let samples: Vec<_> = telemetry
        .iter()
        .filter_map(|e| match &e.event {
            Event::TelemetrySample(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(samples.len() >= 5);
    assert!(samples.iter().all(|s| s.cpu.capacity_cores == 0.5));
    assert!(samples.iter().any(|s| s.cpu.usage_pct > 0.0), "{samples:?}");
    assert_contiguous("cg1", &seqs_per_node(&telemetry)["cg1"]);
    let events = read_stream(&server.url(), "EVENTS").await;
    let joined = events
        .iter()
        .find_map(|e| match &e.event {
            Event::NodeJoined(j) => Some(j.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(joined.capacity_cores, 0.5);
    assert_eq!(joined.source, format!("cgroup:{}", cg.name));
}
