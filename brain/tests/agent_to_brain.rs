//! End to end, from each source kind: the real agent publishes into a real
//! JetStream and the real brain folds it; the brain's registry ends up with
//! exactly what the streams hold.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::{agent, last_seqs, wait_applied, wait_exit, Brain};
use loadshift_testkit::NatsServer;

fn term(child: &mut Child) -> Option<i32> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(child, Duration::from_secs(30))
}

/// A v1 (or v2) cgroup with half a core, removed on drop.
struct TestCgroup {
    rel: String,
    dirs: Vec<std::path::PathBuf>,
}

impl TestCgroup {
    fn new() -> Self {
        let rel = format!("loadshift-e2e-{}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let dirs: Vec<_> = if root.join("cgroup.controllers").exists() {
            vec![root.join(&rel)]
        } else {
            ["cpu", "cpuacct", "memory"]
                .iter()
                .map(|c| root.join(c).join(&rel))
                .collect()
        };
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        if root.join("cgroup.controllers").exists() {
            std::fs::write(dirs[0].join("cpu.max"), "50000 100000").unwrap();
        } else {
            std::fs::write(dirs[0].join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(dirs[0].join("cpu.cfs_quota_us"), "50000").unwrap();
        }
        Self { rel, dirs }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

// One long test on purpose: one scene (every source kind at once) read
// top to bottom; split, each part would repeat the scene.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_kind_reaches_the_brain_exactly() {
    let server = NatsServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("brain");
    let log = tmp.path().join("brain.log");
    let alog = tmp.path().join("agents.log");
    let brain = Brain::start(&url, &store, &log);
    brain.wait_consuming();

    // A recorded trace: three nodes, as fast as NATS takes them; it exits.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/fixtures/traces"
    );
    let mut trace = agent(
        &url,
        &[
            "--node",
            "fx",
            "--source",
            &format!("trace:{fixture}"),
            "--speed",
            "max",
        ],
        &alog,
    );
    // This host, and a node simulated by a cgroup, for a couple of seconds.
    let cg = TestCgroup::new();
    let mut host = agent(
        &url,
        &["--node", "h1", "--source", "host", "--interval", "200ms"],
        &alog,
    );
    let mut cgroup = agent(
        &url,
        &[
            "--node",
            "c1",
            "--source",
            &format!("cgroup:{}", cg.rel),
            "--interval",
            "200ms",
        ],
        &alog,
    );
    assert_eq!(
        wait_exit(&mut trace, Duration::from_secs(60)),
        Some(0),
        "{}",
        std::fs::read_to_string(&alog).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(term(&mut host), Some(0));
    assert_eq!(term(&mut cgroup), Some(0));

    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let last = last_seqs(&js).await;
    let status = wait_applied(&store, last, Duration::from_secs(60));
    let node_of = |name: &str| -> serde_json::Value {
        status["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_else(|| panic!("node {name} missing: {status}"))
    };

    // Every node's sample count equals what its subject holds in the stream.
    let telemetry = js.get_stream("TELEMETRY").await.unwrap();
    let mut total = 0;
    for node in ["fx-1", "fx-2", "fx-3", "h1", "c1"] {
        let mut info = telemetry
            .info_with_subjects(format!("telemetry.{node}"))
            .await
            .unwrap();
        let mut in_stream = 0;
        while let Some(Ok((_, n))) = futures::StreamExt::next(&mut info).await {
            in_stream += n;
        }
        let folded = node_of(node)["samples"].as_u64().unwrap_or(0);
        assert_eq!(node_of(node)["state"], "left", "{status}");
        assert!(in_stream > 0, "no samples from {node}");
        assert_eq!(folded, in_stream as u64, "node {node}: {status}");
        total += folded;
    }
    let live =
        node_of("h1")["samples"].as_u64().unwrap() + node_of("c1")["samples"].as_u64().unwrap();
    assert_eq!(
        total,
        897 + live,
        "the three trace nodes hold the fixture's 897 rows"
    );
    assert_eq!(status["kinds"]["telemetry.sample"].as_u64(), Some(total));
    // The cgroup node declared its quota as its capacity.
    let cores = node_of("c1")["capacity_cores"].as_f64().unwrap();
    assert!((cores - 0.5).abs() < 1e-6, "{status}");
    // Every node joined and left, and the brain counted both.
    assert_eq!(status["kinds"]["node.joined"].as_u64(), Some(5), "{status}");
    assert_eq!(status["kinds"]["node.left"].as_u64(), Some(5), "{status}");
    assert_eq!(brain.term(), Some(0));
}
