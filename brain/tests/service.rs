//! The service against a real nats-server: it folds exactly what the streams
//! hold, survives SIGKILL without losing or double-applying, rebuilds a
//! corrupt store, and parks bad input while applying the good around it.

mod common;

use std::time::Duration;

use common::*;
use loadshift_testkit::NatsServer;

const NODES: [&str; 3] = ["node1", "node2", "node3"];

#[tokio::test(flavor = "multi_thread")]
async fn folds_what_the_streams_hold_and_stops_on_sigterm() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    publish_all(&js, NODES.iter().map(|n| joined(n))).await;
    publish_samples(&js, &NODES, 400, 0).await;
    publish_all(&js, [left("node3")]).await;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("brain");
    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain.log"));
    let last = last_seqs(&js).await;
    let v = wait_applied(&store, last, Duration::from_secs(60));
    assert_eq!(v["source"], "snapshot", "{v}");
    let log = brain.log_text();
    assert_eq!(brain.term(), Some(0), "{log}");

    let [telemetry, events] = stream_counts(&js).await;
    assert_eq!((telemetry, events), (1200, 4));
    let v = status(&store, &[]);
    assert_eq!(v["source"], "store");
    assert_eq!(v["kinds"]["telemetry.sample"], telemetry);
    assert_eq!(v["kinds"]["node.joined"], 3);
    assert_eq!(v["kinds"]["node.left"], 1);
    assert_eq!(v["parked"], 0);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["samples"], 400, "{n}");
        assert_eq!(n["capacity_cores"], 2.0);
        assert_eq!(n["memory_bytes"], 4u64 << 30);
    }
    assert_eq!(nodes[2]["state"], "left");
    assert_eq!(series_samples(&store), telemetry);

    // The text form names every node.
    let out = std::process::Command::new(BIN)
        .args(["status", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for n in NODES {
        assert!(text.contains(n), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_never_loses_nor_double_applies() {
    let (nats, js, dir, store) = scene().await;
    let log = dir.path().join("brain.log");

    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for round in 0..40u64 {
                publish_samples(&js, &NODES, 50, round * 50).await;
                if round % 10 == 0 {
                    publish_all(&js, [joined("node1")]).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Kill at varied moments: right after start, mid-fold, after a while.
    for (i, wait_ms) in [150u64, 700, 60, 1100, 400].into_iter().enumerate() {
        let brain = Brain::start(&nats.url(), &store, &log);
        tokio::time::sleep(Duration::from_millis(wait_ms + 37 * i as u64)).await;
        brain.kill9();
    }
    publisher.await.unwrap();

    let brain = Brain::start(&nats.url(), &store, &log);
    let last = last_seqs(&js).await;
    wait_applied(&store, last, Duration::from_secs(60));
    let text = brain.log_text();
    assert_eq!(brain.term(), Some(0), "{text}");

    let [telemetry, events] = stream_counts(&js).await;
    assert_eq!(telemetry, 40 * 50 * 3);
    let v = status(&store, &[]);
    assert_eq!(v["kinds"]["telemetry.sample"], telemetry, "{v}");
    assert_eq!(v["kinds"]["node.joined"], events, "{v}");
    let samples: u64 = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["samples"].as_u64().unwrap())
        .sum();
    assert_eq!(samples, telemetry);
    assert_eq!(series_samples(&store), telemetry);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_old_store_is_rebuilt_from_the_log() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    publish_all(&js, [joined("node1")]).await;
    publish_samples(&js, &["node1", "node2"], 300, 0).await;
    let last = last_seqs(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("brain");
    let log = dir.path().join("brain.log");

    let brain = Brain::start(&nats.url(), &store, &log);
    wait_applied(&store, last, Duration::from_secs(60));
    assert_eq!(brain.term(), Some(0));

    // Garbage over every file sled wrote.
    for entry in walk(&store) {
        std::fs::write(&entry, b"\xde\xad\xbe\xef garbage garbage garbage").unwrap();
    }
    let text = caught_up_and_stopped(&nats.url(), &store, &log, last);
    assert!(text.contains("rebuilding it from the log"), "{text}");
    let v = status(&store, &[]);
    assert_eq!(v["kinds"]["telemetry.sample"], 600, "{v}");
    assert_eq!(v["kinds"]["node.joined"], 1);
    assert_eq!(series_samples(&store), 600);

    // An older schema marker: same story.
    {
        let s = loadshift_brain::store::Store::open_existing(&store).unwrap();
        s.db().insert(b"mschema", &0u32.to_be_bytes()).unwrap();
        s.flush().unwrap();
    }
    std::fs::write(&log, "").unwrap();
    let text = caught_up_and_stopped(&nats.url(), &store, &log, last);
    assert!(text.contains("is old (store schema 0"), "{text}");
    let v = status(&store, &[]);
    assert_eq!(v["kinds"]["telemetry.sample"], 600, "{v}\n{text}");
}

/// Starts a brain on `store`, lets it catch up to `last`, stops it
/// cleanly and returns what it logged.
fn caught_up_and_stopped(
    url: &str,
    store: &std::path::Path,
    log: &std::path::Path,
    last: [u64; 2],
) -> String {
    let brain = Brain::start(url, store, log);
    brain.wait_consuming();
    wait_applied(store, last, Duration::from_secs(60));
    let text = brain.log_text();
    assert_eq!(brain.term(), Some(0));
    text
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_parked_and_counted_and_the_good_is_applied() {
    let (nats, js, dir, store) = scene().await;
    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain.log"));

    publish_samples(&js, &["node1"], 10, 0).await;
    let good = sample("node1", 99, 1_700_000_500_000).to_json().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let raw = |js: &async_nats::jetstream::Context, subject: &'static str, bytes: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, bytes.into())
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    raw(&js, "telemetry.node1", b"\x00\x01 not json at all".to_vec()).await;
    v["kind"] = "telemetry.unheard_of".into();
    raw(&js, "telemetry.node1", serde_json::to_vec(&v).unwrap()).await;
    v["kind"] = "telemetry.sample".into();
    v["schema"] = 99.into();
    raw(&js, "telemetry.node1", serde_json::to_vec(&v).unwrap()).await;
    v["schema"] = 1.into();
    raw(&js, "telemetry.node2", serde_json::to_vec(&v).unwrap()).await; // subject/node mismatch
    raw(&js, "node.node1.joined", b"{}".to_vec()).await;
    publish_samples(&js, &["node1"], 10, 10).await;
    publish_all(&js, [joined("node1")]).await;

    let last = last_seqs(&js).await;
    let v = wait_applied(&store, last, Duration::from_secs(60));
    assert_eq!(v["parked"], 5, "{v}");
    assert_eq!(v["kinds"]["telemetry.sample"], 20, "{v}");
    assert_eq!(v["kinds"]["node.joined"], 1, "{v}");
    let log = brain.log_text();
    assert_eq!(brain.term(), Some(0), "{log}");
    assert!(log.contains("parking a message"), "{log}");
    assert!(log.contains("unknown event kind"), "{log}");

    let s = loadshift_brain::store::Store::open_existing(&store).unwrap();
    let parked: Vec<_> = s
        .scan(loadshift_brain::store::prefix::PARKED)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(parked.len(), 5);
    assert!(parked
        .iter()
        .any(|(_, v)| v.windows(8).any(|w| w == b"not json")));
}
