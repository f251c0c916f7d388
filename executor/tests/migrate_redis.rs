//! redis-server with 100,000 keys moves between two nodes (cgroups) with real
//! CRIU: afterwards every key is there, it answers on the same port from the
//! target node, and its memory is charged to the target's cgroup.

mod common;

use std::time::Duration;

use common::{redis_cli, wait_pong, Cluster};
use loadshift_events::migration::Mode;
use loadshift_events::Event;

fn cgroup_memory_usage(rel: &str) -> u64 {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let file = if root.join("cgroup.controllers").exists() {
        root.join(rel).join("memory.current")
    } else {
        root.join("memory").join(rel).join("memory.usage_in_bytes")
    };
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_100k_keys_moves_and_keeps_every_key() {
    redis_moves_in(Mode::Copy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_100k_keys_streamed_keeps_every_key() {
    redis_moves_in(Mode::Stream).await;
}

/// Moves a redis holding 100k keys in `mode`, and checks that mode ran.
async fn redis_moves_in(mode: Mode) {
    let mut c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    let port = loadshift_testkit::nats::free_port();
    let dir = c.dir.path().display().to_string();
    let args = common::redis_args(port, &dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.run_workload("node2", "redis", &args).await;
    let sample = common::populate_100k_keys(port);
    assert_eq!(redis_cli(port, &["dbsize"]), "100000");

    let id = c.migrate_in(mode, "redis", "node2", "node3").await;
    let done = &c.completed(id).await;
    assert_eq!(done.mode, Some(mode), "{:?}", done.fallback);
    assert!(
        done.image_bytes > 10 << 20,
        "an image of {} bytes cannot hold 100k keys",
        done.image_bytes
    );

    // Same port, every key, same values: it answers from node3 now.
    wait_pong(port);
    assert_eq!(redis_cli(port, &["dbsize"]), "100000");
    assert_eq!(redis_cli(port, &["get", "key:4242"]), sample);
    assert_eq!(redis_cli(port, &["set", "after", "move"]), "OK");

    // redis rewrites its process title over its environment, so find its
    // copies by the pids the executors reported: the one started on node2
    // is gone, the restored one runs.
    let started = c
        .wait_for(Duration::from_secs(5), |e| {
            matches!(&e.event, Event::WorkloadStarted(_))
        })
        .await;
    let Event::WorkloadStarted(s) = started.event else {
        unreachable!()
    };
    let old_pid = s.pid.expect("pid");
    assert!(
        loadshift_executor::runtime::process::start_ticks(old_pid).is_none(),
        "the source copy still runs"
    );
    let r = c.restored(id).await;
    let pid = r.pid.expect("restored pid");
    assert!(
        loadshift_executor::runtime::process::start_ticks(pid).is_some(),
        "the restored copy is not running"
    );
    let node3 = c.node("node3").cgroup.clone().expect("cgroup");
    let cg = common::memory_cgroup_of(pid);
    assert!(
        cg.ends_with(&node3),
        "redis runs in {cg}, not node3's {node3}"
    );
    let (rss, usage) = (rss_bytes(pid), cgroup_memory_usage(&node3));
    assert!(rss > 10 << 20, "redis RSS is only {rss}");
    assert!(
        usage >= rss * 8 / 10,
        "node3's cgroup is charged {usage} bytes for a redis of {rss}"
    );
    let _ = c.node("node2");
}
