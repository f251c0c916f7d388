//! NATS dies and comes back while the agent samples: every sample taken in
//! between is stored once, in the end, with no gap and no duplicate.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use loadshift_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn nothing_lost_nothing_duplicated_across_a_restart() {
    let mut server = NatsServer::start();
    let url = server.url();
    let mut child = agent(&url)
        .args(["--node", "r1", "--source", "host", "--interval", "100ms"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Instant::now() + Duration::from_secs(120);
    while stream_count(&url, "TELEMETRY").await < 10 {
        assert!(Instant::now() < guard, "no samples before the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = stream_count(&url, "TELEMETRY").await;

    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();

    // Wait until the backlog is stored and the agent is back to its steady
    // pace (a few samples per poll), so SIGTERM's bounded flush has little left.
    let mut last = stream_count(&url, "TELEMETRY").await;
    loop {
        assert!(
            Instant::now() < guard,
            "agent did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stream_count(&url, "TELEMETRY").await;
        if now > before + 40 && now - last <= 15 {
            break;
        }
        last = now;
    }
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));

    let telemetry = read_stream(&url, "TELEMETRY").await;
    let seqs = seqs_per_node(&telemetry);
    assert_contiguous("r1", &seqs["r1"]);
    let left = left_per_node(&read_stream(&url, "EVENTS").await);
    assert_eq!(left["r1"], ("SIGTERM".to_string(), seqs["r1"].len() as u64));
}
