//! Decision latency: from a telemetry sample published by an agent to the
//! `migration.<src>.requested` the brain publishes because of it, with 200
//! trace-driven nodes at one sample a second each, on this machine.
//!
//! Run: `cargo bench -p loadshift-brain --bench decision` (release; needs
//! nats-server from scripts/setup). 40 of the 200 nodes ramp to overload at
//! staggered times, so there are 40 decisions to time; the other 160 stay
//! flat and, like every node here, report an executor (as real executors do
//! every two seconds) so they can take work. The decision is made while the
//! brain folds the sample that completes the alarm streak, so its latency is
//! the request's `occurred_at` minus that sample's `occurred_at` (both stamped
//! just before publishing, on one clock).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use loadshift_events::{connection, Envelope, Event};

const NODES: usize = 200;
const HOT: usize = 40;
fn name(i: usize) -> String {
    format!("n{i:03}")
}

/// Hot node `i` ramps from sample 15 + i to full CPU over 15 samples; the
/// others stay flat.
fn cpu_of(i: usize) -> impl Fn(usize) -> f64 {
    let start = 15 + i;
    move |r| {
        if i >= HOT {
            10.0 + (i % 7) as f64
        } else if r < start {
            15.0
        } else if r < start + 15 {
            15.0 + (r - start) as f64 * 5.6
        } else {
            99.0
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

// One long function on purpose: the benchmark reads top to bottom as the
// run it measures (set-up, each phase, the table), like the output.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (nats, js, tmp, store) = scene().await;
    let traces = traces_dir(tmp.path());
    let rows = 120;
    for i in 0..NODES {
        write_trace(&traces, &name(i), rows, cpu_of(i));
    }
    let log = tmp.path().join("brain.log");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/traces");
    let brain = Brain::start_with(
        &nats.url(),
        &store,
        &log,
        &[
            "--retrain-every",
            "0",
            "--bootstrap-trace",
            fixture,
            "--linger-ms",
            "5",
        ],
    );
    brain.wait_consuming();
    brain
        .wait_log("bootstrap model active", Duration::from_secs(300))
        .await;
    // Workloads on the hot nodes; every node's executor reports each second.
    for i in 0..HOT {
        let env = workload_started(&name(i), &format!("w{i:03}"));
        connection::publish(&js, &env).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reporter = {
        let js = js.clone();
        tokio::spawn(async move {
            while !*stop_rx.borrow() {
                for i in 0..NODES {
                    let w = format!("w{i:03}");
                    let workloads: &[(&str, f32, u64)] = if i < HOT {
                        &[(&w, 50.0, 64 << 20)]
                    } else {
                        &[]
                    };
                    let _ = connection::send(&js, &workload_usage(&name(i), workloads)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    eprintln!("decision bench: {NODES} nodes at 1 sample/s for {rows} s");
    let mut agents = Command::new(loadshift_testkit::binary("loadshift-agent"))
        .args([
            "--source",
            &format!("trace:{}", traces.display()),
            "--speed",
            "300",
        ])
        .args(["--nats", &nats.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = agents.wait();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let _ = reporter.await;

    // Each request, and the last sample of its source published before it.
    let events = js.get_stream("EVENTS").await.unwrap();
    let telemetry = js.get_stream("TELEMETRY").await.unwrap();
    let mut samples: std::collections::HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> =
        Default::default();
    for seq in 1..=last_seqs(&js).await[0] {
        let Ok(m) = telemetry.get_raw_message(seq).await else {
            continue;
        };
        if let Ok(env) = Envelope::from_message(&m.subject, &m.payload) {
            if matches!(env.event, Event::TelemetrySample(_)) {
                samples
                    .entry(env.node.to_string())
                    .or_default()
                    .push(env.occurred_at);
            }
        }
    }
    let mut latencies = Vec::new();
    for seq in 1..=last_seqs(&js).await[1] {
        let Ok(m) = events.get_raw_message(seq).await else {
            continue;
        };
        let Ok(env) = Envelope::from_message(&m.subject, &m.payload) else {
            continue;
        };
        let Event::MigrationRequested(r) = &env.event else {
            continue;
        };
        let Some(before) = samples
            .get(r.source.as_str())
            .and_then(|v| v.iter().filter(|t| **t <= env.occurred_at).max())
        else {
            continue;
        };
        latencies.push((env.occurred_at - *before).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!("| nodes | samples/s | decisions | decision latency p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {NODES} | {NODES} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    assert_eq!(brain.term(), Some(0));
}
