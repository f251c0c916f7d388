//! What the agent's integration tests share: running the real binary against
//! a real nats-server, and reading back what it stored.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use loadshift_events::{Envelope, Event};

/// The committed trace fixture.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

/// The agent binary, configured for `nats_url`, logs to stderr.
pub fn agent(nats_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadshift-agent"));
    cmd.arg("--nats")
        .arg(nats_url)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    // Keep the tests independent of the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("LOADSHIFT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the agent to completion, failing the test after `guard`.
pub fn run_to_end(mut cmd: Command, guard: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadshift-agent");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(guard) {
        Ok(out) => out.expect("wait for loadshift-agent"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("loadshift-agent did not finish within {guard:?}");
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}

/// Waits for a child, killing it and failing the test after `guard`.
pub fn wait_exit(child: &mut Child, guard: Duration) -> ExitStatus {
    let deadline = Instant::now() + guard;
    loop {
        if let Some(status) = child.try_wait().expect("poll loadshift-agent") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadshift-agent did not exit within {guard:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a whole stream back, decoding every message as the contract says.
pub async fn read_stream(nats_url: &str, stream: &str) -> Vec<Envelope> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream exists");
    let info = s.info().await.expect("stream info").clone();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::with_capacity(info.state.messages as usize);
    for seq in first..=last {
        if info.state.messages == 0 {
            break;
        }
        let m = s.get_raw_message(seq).await.expect("message by sequence");
        out.push(Envelope::from_message(&m.subject, &m.payload).expect("a valid envelope"));
    }
    assert_eq!(out.len() as u64, info.state.messages);
    out
}

/// How many messages a stream holds now (0 if it does not exist yet).
pub async fn stream_count(nats_url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until TELEMETRY holds `at_least` samples; the minute only bounds
/// a hang, it is not a timing the test asserts.
pub async fn until_stored(nats_url: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_count(nats_url, "TELEMETRY").await < at_least {
        assert!(Instant::now() < deadline, "no samples stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the agent as an init system would (SIGTERM) and waits for it.
pub fn term(child: &mut Child) -> ExitStatus {
    signal(child.id(), "TERM");
    wait_exit(child, Duration::from_secs(30))
}

/// Telemetry sequence numbers per node, sorted.
pub fn seqs_per_node(events: &[Envelope]) -> BTreeMap<String, Vec<u64>> {
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        if let Event::TelemetrySample(s) = &e.event {
            map.entry(e.node.to_string()).or_default().push(s.seq);
        }
    }
    for v in map.values_mut() {
        v.sort_unstable();
    }
    map
}

/// `left` events per node: (reason, samples).
pub fn left_per_node(events: &[Envelope]) -> BTreeMap<String, (String, u64)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::NodeLeft(l) => Some((e.node.to_string(), (l.reason.clone(), l.samples))),
            _ => None,
        })
        .collect()
}

/// Asserts 0..n with no gap and no duplicate.
pub fn assert_contiguous(node: &str, seqs: &[u64]) {
    let want: Vec<u64> = (0..seqs.len() as u64).collect();
    assert!(
        seqs == want.as_slice(),
        "node {node}: sequence numbers are not 0..{} without gap or duplicate: {:?}",
        seqs.len(),
        first_problem(seqs)
    );
}

fn first_problem(seqs: &[u64]) -> String {
    for (i, s) in seqs.iter().enumerate() {
        if *s != i as u64 {
            return format!("at index {i} found {s}");
        }
    }
    "none".into()
}
