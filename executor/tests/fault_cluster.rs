//! A migration on a real three-server JetStream cluster (routes on loopback
//! ports; EVENTS, the checkpoint store, the fence and the workload-name
//! buckets replicated three times) that loses one server in the middle: the server leading EVENTS,
//! killed -9 the moment the image is announced. Nothing may be lost: the
//! migration completes or rolls back, the workload runs on exactly one
//! node with its counter continuous, and the log holds each step once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_runs_once_on, Cluster, COUNTER};
use loadshift_events::{stream, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_servers_mid_migration_loses_nothing() {
    let mut c = Cluster::on_three_servers(&["node2", "node3"]).await;
    c.run_workload("node2", "ha-counter", COUNTER).await;
    // What the executors created is replicated like the streams: a bucket
    // on one server would lose its keys with it.
    for bucket in [stream::WORKLOAD_NAMES, stream::MIGRATION_FENCES] {
        let kv = c.js.get_key_value(bucket).await.expect(bucket);
        let status = kv.status().await.expect(bucket);
        assert_eq!(status.info.config.num_replicas, 3, "{bucket}");
    }

    let id = c.migrate("ha-counter", "node2", "node3").await;
    c.wait_for(
        Duration::from_secs(60),
        |e| matches!(&e.event, Event::MigrationCheckpointed(p) if p.migration == id),
    )
    .await;
    let leader = events_leader(&c).await;
    match leader.as_str() {
        "s0" => c.server.kill(),
        other => {
            let i: usize = other
                .trim_start_matches('s')
                .parse()
                .unwrap_or_else(|_| panic!("an unknown leader {other}"));
            c.others[i - 1].kill();
        }
    }

    let outcome = c.outcome(id).await;
    let on = match outcome.event {
        Event::MigrationCompleted(_) => "node3",
        Event::MigrationRolledBack(_) => "node2",
        other => panic!("migration ended as {other:?}\n{}", c.logs()),
    };
    println!("killed {leader}, the EVENTS leader; the workload runs on {on}");
    assert_runs_once_on(&mut c, "ha-counter", on).await;
    assert_ne!(events_leader(&c).await, leader, "EVENTS kept a dead leader");

    // The log is whole: every step of the migration is in it exactly once,
    // in the saga's order.
    let steps: Vec<&'static str> = c
        .events()
        .await
        .iter()
        .filter_map(|e| step_of(&e.event, id))
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &steps {
        *counts.entry(s).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "a step was logged twice: {steps:?}"
    );
    assert_eq!(steps.first(), Some(&"requested"), "{steps:?}");
    assert_eq!(steps.get(1), Some(&"checkpointed"), "{steps:?}");

    // Nothing is stuck: both executors take a new migration and finish it.
    let back = c.migrate("ha-counter", on, other(on)).await;
    let outcome = c.outcome(back).await;
    assert!(
        matches!(outcome.event, Event::MigrationCompleted(_)),
        "the migration after the loss: {outcome:?}\n{}",
        c.logs()
    );
    assert_runs_once_on(&mut c, "ha-counter", other(on)).await;
}

fn other(node: &str) -> &'static str {
    if node == "node2" {
        "node3"
    } else {
        "node2"
    }
}

/// The name of the server leading the EVENTS stream now.
async fn events_leader(c: &Cluster) -> String {
    for _ in 0..100 {
        if let Ok(mut s) = c.js.get_stream(stream::EVENTS).await {
            if let Ok(info) = s.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|cl| cl.leader.clone()) {
                    return leader;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("EVENTS has no leader\n{}", c.logs());
}

/// The saga step event `e` is of migration `id`, if it is one.
fn step_of(e: &Event, id: uuid::Uuid) -> Option<&'static str> {
    match e {
        Event::MigrationRequested(p) if p.migration == id => Some("requested"),
        Event::MigrationCheckpointed(p) if p.migration == id => Some("checkpointed"),
        Event::MigrationRestored(p) if p.migration == id => Some("restored"),
        Event::MigrationCompleted(p) if p.migration == id => Some("completed"),
        Event::MigrationFailed(p) if p.migration == id => Some("failed"),
        Event::MigrationFenced(p) if p.migration == id => Some("fenced"),
        Event::MigrationRolledBack(p) if p.migration == id => Some("rolled_back"),
        _ => None,
    }
}
