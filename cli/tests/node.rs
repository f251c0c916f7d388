//! `loadshift node drain / uncordon / ls` against a real nats-server: what
//! they publish, what `--wait` prints as the drain goes and how it ends.
//! The brain and the executors are played by the test, publishing what
//! real ones would, so that both endings (empty, stuck) can be asked for;
//! cli/tests/up.rs drains with the real ones.

mod common;

use chrono::Utc;
use common::*;
use loadshift_events::migration::Reason;
use loadshift_events::Event;
use loadshift_testkit::fixtures::{self, Move};

/// node2 (running a and b) and node3 joined.
async fn two_nodes(h: &Harness) {
    let now = Utc::now();
    for n in ["node2", "node3"] {
        h.put(&fixtures::joined(n, now)).await;
    }
    for w in ["a", "b"] {
        h.put(&fixtures::started("node2", w, now)).await;
    }
}

/// Starts `node drain node2 --wait` (plus `extra`) and returns it once its
/// request is in the log.
async fn draining(h: &Harness, extra: &[&str]) -> tokio::process::Child {
    let mut sub = h
        .client
        .subscribe("node.node2.drain_requested")
        .await
        .unwrap();
    let mut args = vec!["node", "drain", "node2", "--wait", "--timeout", "30s"];
    args.extend_from_slice(extra);
    let child = h.spawn(&args);
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
        .await
        .expect("no drain request within 30 s");
    child
}

async fn output(child: tokio::process::Child) -> std::process::Output {
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("node drain did not return")
        .unwrap();
    eprintln!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    out
}

/// node2's row of `node ls --json`.
async fn node2_listed(h: &Harness) -> serde_json::Value {
    let out = h.run(&["node", "ls", "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    rows.into_iter()
        .find(|n| n["node"] == "node2")
        .expect("node2 listed")
}

#[tokio::test]
async fn drain_wait_prints_each_move_and_ends_when_the_node_is_empty() {
    let h = Harness::new().await;
    two_nodes(&h).await;
    let child = draining(&h, &["--reason", "kernel update"]).await;
    let now = Utc::now();
    for w in ["a", "b"] {
        let m = Move::new(w, "node2", "node3");
        h.put(&m.requested(now, "brain", Reason::default())).await;
        h.put(&m.completed(now, timings())).await;
    }
    let out = output(child).await;
    let text = succeeded(&out);
    for line in [
        "draining node2: 2 workload(s) to move",
        "moving a to node3",
        "moved b to node3 (frozen 149 ms)",
        "node2 is empty (2 moved in ",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let asked = h
        .events()
        .await
        .into_iter()
        .find_map(|(subject, env)| match env.event {
            Event::NodeDrainRequested(d) => Some((subject, d)),
            _ => None,
        });
    let (subject, d) = asked.expect("a drain request in the log");
    assert_eq!(subject, "node.node2.drain_requested");
    assert_eq!(
        (d.requested_by.as_str(), d.reason.as_str()),
        ("tester", "kernel update")
    );

    // Listed as drained; a migration to it is refused; uncordon gives it back.
    let ls = stdout(&h.run(&["node", "ls"]).await);
    assert!(
        ls.lines().any(|l| l.starts_with("node2")
            && l.contains("joined, drained")
            && l.contains("by tester")),
        "{ls}"
    );
    let status = stdout(&h.run(&["status"]).await);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("node2") && l.contains("joined, drained")),
        "{status}"
    );
    let started = h
        .run(&[
            "workload", "run", "--node", "node2", "--name", "c", "--", "sleep", "9",
        ])
        .await;
    assert_eq!(
        started.status.code(),
        Some(2),
        "no new workload on a draining node"
    );
    // Without --node, the placement rule does not even consider it (no
    // executor answers here, so nothing is placed; the candidates are named).
    let placed = h
        .run(&["workload", "run", "--name", "c", "--", "sleep", "9"])
        .await;
    let why = String::from_utf8_lossy(&placed.stderr);
    assert!(why.contains("knows (node3)"), "{why}");
    let refused = h.run(&["migrate", "a", "--to", "node2"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("node2 is draining"));
    assert_eq!(
        h.run(&["node", "uncordon", "node2"]).await.status.code(),
        Some(0)
    );
    let node2 = node2_listed(&h).await;
    assert_eq!(node2["draining"], serde_json::Value::Null);
    assert_eq!(node2["state"], "joined");
}

#[tokio::test]
async fn drain_wait_exits_1_with_what_cannot_move_and_why() {
    let h = Harness::new().await;
    two_nodes(&h).await;
    let child = draining(&h, &[]).await;
    let now = Utc::now();
    let m = Move::new("a", "node2", "node3");
    h.put(&m.requested(now, "brain", Reason::default())).await;
    h.put(&m.completed(now, timings())).await;
    h.put(&fixtures::drain_blocked(
        "node2",
        "b",
        "no target: node3 has no room for its memory",
        now,
    ))
    .await;
    let out = output(child).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("node2 is not empty; these cannot move:"),
        "{text}"
    );
    assert!(
        text.contains("  b: no target: node3 has no room for its memory"),
        "{text}"
    );
    let node2 = node2_listed(&h).await;
    assert_eq!(
        node2["draining"]["stuck"]["b"],
        "no target: node3 has no room for its memory"
    );
}

#[tokio::test]
async fn drain_refuses_a_node_the_log_does_not_know_with_exit_2() {
    let h = Harness::new().await;
    two_nodes(&h).await;
    let out = h.run(&["node", "drain", "node9"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node node9 is unknown"));
    let out = h.run(&["node", "drain", "no.such"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(h
        .events()
        .await
        .iter()
        .all(|(_, e)| !matches!(e.event, Event::NodeDrainRequested(_))));
}
