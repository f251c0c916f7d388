//! A trace replayed at full speed into a real nats-server is stored exactly:
//! every sample once, each node announced and retired; and bad input is
//! reported, never a crash.

mod common;

use std::time::Duration;

use common::*;
use loadshift_agent::source::trace;
use loadshift_events::{Event, NodeName};
use loadshift_testkit::NatsServer;

const GUARD: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn fixture_replay_publishes_every_sample_once() {
    let server = NatsServer::start();
    let prefix = NodeName::new("fx").unwrap();
    // The expected counts come from the same loader the agent uses.
    let traces = trace::load(&fixture_dir(), Some(&prefix)).unwrap();
    assert_eq!(traces.len(), 3);
    let expected: u64 = traces.iter().map(|t| t.rows.len() as u64).sum();
    assert_eq!(expected, 897);

    let mut cmd = agent(&server.url());
    cmd.arg("--source")
        .arg(format!("trace:{}", fixture_dir().display()))
        .args(["--node", "fx", "--speed", "max"]);
    let out = run_to_end(cmd, GUARD);
    assert!(
        out.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(stream_count(&server.url(), "TELEMETRY").await, expected);
    let telemetry = read_stream(&server.url(), "TELEMETRY").await;
    let seqs = seqs_per_node(&telemetry);
    assert_eq!(
        seqs.keys().cloned().collect::<Vec<_>>(),
        ["fx-1", "fx-2", "fx-3"]
    );
    for t in &traces {
        let s = &seqs[t.node.as_str()];
        assert_eq!(s.len(), t.rows.len());
        assert_contiguous(t.node.as_str(), s);
    }
    // A decoded sample carries the trace's own time and units.
    let first = telemetry
        .iter()
        .find_map(|e| match &e.event {
            Event::TelemetrySample(s) if e.node.as_str() == "fx-1" && s.seq == 0 => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.at.timestamp(), 1372629804);
    assert_eq!(first.cpu.capacity_cores, 2.0);
    assert_eq!(first.memory.total_bytes, 8218624 * 1024);

    let events = read_stream(&server.url(), "EVENTS").await;
    assert_eq!(events.len(), 6, "3 joined + 3 left: {events:?}");
    let joined: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::NodeJoined(j) => Some((e.node.to_string(), j.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 3);
    for (_, j) in &joined {
        assert!(j.source.starts_with("trace:"));
        assert_eq!(j.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(j.capacity_cores > 0.0 && j.memory_bytes > 0);
    }
    for (node, (reason, samples)) in left_per_node(&events) {
        assert_eq!(reason, "trace ended");
        assert_eq!(samples, seqs[&node].len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_stops_after_exactly_that_many_samples() {
    let server = NatsServer::start();
    let mut cmd = agent(&server.url());
    cmd.arg("--source")
        .arg(format!("trace:{}", fixture_dir().display()))
        .args(["--speed", "max", "--loop", "--limit", "2000"]);
    let out = run_to_end(cmd, GUARD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let telemetry = read_stream(&server.url(), "TELEMETRY").await;
    assert_eq!(telemetry.len(), 2000);
    for (node, s) in seqs_per_node(&telemetry) {
        assert_contiguous(&node, &s);
    }
    // Looping keeps time moving forward for every node.
    for node in ["1", "2", "3"] {
        let mut times: Vec<i64> = telemetry
            .iter()
            .filter(|e| e.node.as_str() == node)
            .filter_map(|e| match &e.event {
                Event::TelemetrySample(s) => Some((s.seq, s.at.timestamp())),
                _ => None,
            })
            .map(|(_, t)| t)
            .collect();
        let n = times.len();
        times.dedup();
        assert_eq!(times.len(), n, "node {node}: repeated times after a loop");
    }
    let left = left_per_node(&read_stream(&server.url(), "EVENTS").await);
    assert!(left.values().all(|(r, _)| r == "sample limit reached"));
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_lines_are_skipped_and_good_rows_published() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(fixture_dir().join("1.csv")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(21).collect(); // header + 20 rows
    let mut junk = Vec::new();
    junk.extend_from_slice(lines[0].as_bytes());
    junk.push(b'\n');
    for (i, l) in lines.drain(1..).enumerate() {
        junk.extend_from_slice(l.as_bytes());
        junk.push(b'\n');
        match i % 5 {
            0 => junk.extend_from_slice(&[0, 159, 146, 150, 255, 254, 7, b'\n']),
            1 => junk.extend_from_slice(b"1372629804;\t2;\t3\n"),
            2 => junk.extend_from_slice(b"1;2;3;4;5;6;7;8;9;10;11;12;13\n"),
            _ => {}
        }
    }
    junk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // no final newline
    let file = dir.path().join("junk.csv");
    std::fs::write(&file, &junk).unwrap();

    let mut cmd = agent(&server.url());
    cmd.arg("--source")
        .arg(format!("trace:{}", file.display()))
        .args(["--node", "junk", "--speed", "max"]);
    let out = run_to_end(cmd, GUARD);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    assert!(
        stderr.contains("junk.csv:3"),
        "no file:line warning: {stderr}"
    );
    let telemetry = read_stream(&server.url(), "TELEMETRY").await;
    assert_eq!(telemetry.len(), 20);
    assert_contiguous("junk", &seqs_per_node(&telemetry)["junk"]);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    // No NATS needed: these are refused before connecting.
    let url = "nats://127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (
            &["--node", "n", "--source", "trace:/nonexistent/trace.csv"],
            "/nonexistent/trace.csv",
        ),
        (&["--source", "host"], "--node is required"),
        (&["--node", "a.b"], "a.b"),
        (&["--node", "n", "--source", "floppy"], "unknown source"),
        (
            &["--node", "n", "--source", "cgroup:no/such/cgroup-xyz"],
            "not found",
        ),
        (&["--node", "n", "--interval", "soon"], "invalid duration"),
    ];
    for (args, needle) in cases {
        let mut cmd = agent(url);
        cmd.args(*args);
        let out = run_to_end(cmd, GUARD);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
