//! Starts are checked: a program that does not exist is a
//! `workload.start_failed` with the reason, and a workload name belongs to
//! one node of the cluster at a time, even when two starts race, and after
//! a migration moved it.

mod common;

use std::time::Duration;

use common::Cluster;
use loadshift_events::workload::{Runtime, WorkloadSpec};
use loadshift_events::{Envelope, Event};

fn sleeper(c: &Cluster) -> WorkloadSpec {
    WorkloadSpec {
        runtime: Runtime::Process,
        command: vec!["sleep".into(), "1000".into()],
        image: None,
        env: [("LOADSHIFT_TEST_TAG".to_string(), c.tag())]
            .into_iter()
            .collect(),
        no_postcopy: false,
    }
}

/// Asks `node` to start `name` and returns that node's answer (the common
/// helper takes the first answer of any node).
async fn start(c: &Cluster, node: &str, name: &str, spec: WorkloadSpec) -> Envelope {
    c.request_start(node, name, spec).await;
    answer(c, node, name).await
}

/// `node`'s first answer about `name` after it was last asked.
async fn answer(c: &Cluster, node: &str, name: &str) -> Envelope {
    let asked = c
        .events()
        .await
        .iter()
        .filter(|e| matches!(&e.event, Event::WorkloadStartRequested(r) if r.workload.as_str() == name && r.node.as_str() == node))
        .count();
    let mut seen = 0;
    c.wait_for(Duration::from_secs(60), |e| {
        let about = match &e.event {
            Event::WorkloadStarted(s) => s.workload.as_str() == name,
            Event::WorkloadStartFailed(f) => f.workload.as_str() == name,
            _ => false,
        };
        if about && e.node.as_str() == node {
            seen += 1;
            return seen == asked;
        }
        false
    })
    .await
}

fn failure(e: &Envelope) -> Option<String> {
    match &e.event {
        Event::WorkloadStartFailed(f) => Some(f.reason.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_exist_is_refused_with_the_reason() {
    let c = Cluster::new(&["node2"]).await;
    let mut spec = sleeper(&c);
    spec.command = vec!["/no/such/program".into()];
    let answer = start(&c, "node2", "ghost", spec).await;
    let reason = failure(&answer).expect("a start_failed");
    assert!(reason.contains("/no/such/program"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_runs_on_one_node_only() {
    let c = Cluster::new(&["node2", "node3"]).await;
    start(&c, "node2", "solo", sleeper(&c)).await;
    let again = start(&c, "node3", "solo", sleeper(&c)).await;
    let reason = failure(&again).expect("the second start was refused");
    assert!(reason.contains("already runs on node2"), "{reason}");
    assert_eq!(c.copies_of("solo").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_starts_of_one_name_end_with_one_workload() {
    let c = Cluster::new(&["node2", "node3"]).await;
    for round in 0..3 {
        let name = format!("twin-{round}");
        let (a, b) = tokio::join!(
            start(&c, "node2", &name, sleeper(&c)),
            start(&c, "node3", &name, sleeper(&c)),
        );
        let started = [&a, &b]
            .iter()
            .filter(|e| matches!(e.event, Event::WorkloadStarted(_)))
            .count();
        assert_eq!(started, 1, "{a:?}\n{b:?}\n{}", c.logs());
        assert_eq!(c.copies_of(&name).len(), 1, "{}", c.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_follows_a_migration_and_is_freed_by_an_exit() {
    let c = Cluster::new(&["node2", "node3"]).await;
    start(&c, "node2", "mover", sleeper(&c)).await;
    let id = c.migrate("mover", "node2", "node3").await;
    c.completed(id).await;
    // Once the target has it, the source may not start it again.
    let back = start(&c, "node2", "mover", sleeper(&c)).await;
    let reason = failure(&back).expect("a start of a name that moved away");
    assert!(reason.contains("already runs on node3"), "{reason}");

    // A workload that ends frees its name.
    let mut brief = sleeper(&c);
    // Long enough to be seen running (a program that ends at once may be
    // gone before its start is confirmed, and is then a failed start).
    brief.command = vec!["sleep".into(), "1".into()];
    start(&c, "node2", "brief", brief).await;
    c.wait_for(
        Duration::from_secs(60),
        |e| matches!(&e.event, Event::WorkloadExited(x) if x.workload.as_str() == "brief"),
    )
    .await;
    let later = start(&c, "node3", "brief", sleeper(&c)).await;
    assert!(
        matches!(later.event, Event::WorkloadStarted(_)),
        "{later:?}\n{}",
        c.logs()
    );
}
