//! The closed loop against a real nats-server: real agents replay traces in
//! which one node ramps up to overload; the brain (with a model it trained
//! itself) requests exactly one migration from that node to the emptiest
//! node that can take work, none while the cooldown lasts, and none after a
//! restart of the brain.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use loadshift_events::migration::Requested;
use loadshift_events::{connection, Event};

async fn requests(js: &async_nats::jetstream::Context) -> Vec<Requested> {
    logged!(js, Event::MigrationRequested)
}

/// Plays the executors: node `hot` runs two workloads, the others none; each
/// reports every second, as executors do.
async fn executors(js: async_nats::jetstream::Context, stop: tokio::sync::watch::Receiver<bool>) {
    for w in ["steady", "heavy"] {
        connection::publish(&js, &workload_started("hot", w))
            .await
            .unwrap();
    }
    while !*stop.borrow() {
        let hot: &[(&str, f32, u64)] = &[("steady", 30.0, 512 << 20), ("heavy", 60.0, 64 << 20)];
        for (n, workloads) in [("hot", hot), ("idle", &[][..]), ("busy", &[][..])] {
            let _ = connection::publish(&js, &workload_usage(n, workloads)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_ramps_up_and_the_brain_moves_one_workload_once() {
    let (nats, js, tmp, store) = scene().await;
    let traces = traces_dir(tmp.path());
    // One sample a second at --speed 300: `hot` idles for 20 s, ramps to
    // full CPU over 20 s and stays there; `idle` and `busy` stay flat.
    let rows = 400;
    write_trace(&traces, "hot", rows, |i| match i {
        0..20 => 15.0,
        20..40 => 15.0 + (i - 20) as f64 * 4.5,
        _ => 99.0,
    });
    write_trace(&traces, "idle", rows, |_| 10.0);
    write_trace(&traces, "busy", rows, |_| 55.0);

    let log = tmp.path().join("brain.log");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/traces");
    let args = [
        "--retrain-every",
        "0",
        "--trees",
        "30",
        "--bootstrap-trace",
        fixture,
        "--node-cooldown",
        "10m",
    ];
    let brain = Brain::start_with(&nats.url(), &store, &log, &args);
    brain.wait_consuming();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let players = tokio::spawn(executors(js.clone(), stop_rx));
    // Wait for the bootstrap model before the load starts.
    brain
        .wait_log("bootstrap model active", Duration::from_secs(180))
        .await;
    let source = format!("trace:{}", traces.display());
    let mut agents = agent(
        &nats.url(),
        &["--source", &source, "--speed", "300"],
        &tmp.path().join("agents.log"),
    );

    // Exactly one request, from the hot node, to the emptiest one.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let r = requests(&js).await;
        if let Some(first) = r.first() {
            break first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no migration requested: {}",
            brain.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(first.source.as_str(), "hot");
    assert_eq!(
        first.target.as_str(),
        "idle",
        "the emptiest node that can take work"
    );
    assert_eq!(
        first.workload.as_str(),
        "heavy",
        "the most relief, and the cheaper image"
    );
    assert_eq!(first.requested_by, "brain");
    assert!(first.reason.probability.is_some() && first.reason.model_version.is_some());

    // The node stays hot, but the cooldown holds (nobody answers the request,
    // so it also stays in flight).
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(requests(&js).await.len(), 1, "{}", brain.log_text());

    // A restarted brain rebuilds the in-flight migration from the log.
    assert_eq!(brain.term(), Some(0));
    let brain = Brain::start_with(&nats.url(), &store, &log, &args);
    brain.wait_consuming();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(requests(&js).await.len(), 1, "{}", brain.log_text());

    let _ = stop_tx.send(true);
    let _ = players.await;
    let _ = agents.kill();
    let _ = agents.wait();
    assert_eq!(brain.term(), Some(0));
}
