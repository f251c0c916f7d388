//! The host source, end to end: plausible samples while running, and a clean
//! `node.left` with exit code 0 on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use loadshift_events::Event;
use loadshift_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn host_samples_then_sigterm_leaves_cleanly() {
    let server = NatsServer::start();
    let mut child = agent(&server.url())
        .args(["--node", "host1", "--source", "host", "--interval", "250ms"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    until_stored(&server.url(), 3).await;
    let status = term(&mut child);
    assert_eq!(status.code(), Some(0));

    let telemetry = read_stream(&server.url(), "TELEMETRY").await;
    assert!(telemetry.len() >= 3);
    for e in &telemetry {
        let Event::TelemetrySample(s) = &e.event else {
            panic!("not a sample: {e:?}")
        };
        assert_eq!(e.node.as_str(), "host1");
        assert!(s.cpu.capacity_cores >= 1.0);
        assert_eq!(s.cpu.per_core_pct.len(), s.cpu.capacity_cores as usize);
        assert!((0.0..=100.5).contains(&s.cpu.usage_pct), "{s:?}");
        assert!(s.memory.total_bytes > 0 && s.memory.used_bytes <= s.memory.total_bytes);
        assert!(s.load.is_some() && s.net.is_some() && s.disk.is_some());
        assert!(s.processes.unwrap_or(0) > 0);
        assert!((chrono::Utc::now() - s.at).num_seconds().abs() < 600);
    }
    let seqs = seqs_per_node(&telemetry);
    assert_contiguous("host1", &seqs["host1"]);
    let left = left_per_node(&read_stream(&server.url(), "EVENTS").await);
    assert_eq!(
        left["host1"],
        ("SIGTERM".to_string(), seqs["host1"].len() as u64)
    );
}
