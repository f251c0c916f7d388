//! A process moves between two executors (two nodes on this machine, each
//! with its own state dir and cgroup), with real CRIU and a real nats-server,
//! and keeps running from where it was.

mod common;

use std::time::Duration;

use common::{assert_continuous, counter_values, Cluster};
use loadshift_events::Event;

const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_continues_on_the_target_with_its_output() {
    let mut c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    c.run_workload("node2", "counter", COUNTER).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let id = c.migrate("counter", "node2", "node3").await;
    let done = &c.completed(id).await;
    assert!(done.timings.dump_ms.is_some() && done.timings.restore_ms.is_some());
    assert!(done.timings.downtime_ms.is_some() && done.timings.total_ms.is_some());
    assert!(done.image_bytes > 0);

    // The target's copy of the output keeps growing after the move...
    let out = c.node("node3").workload_dir("counter").join("stdout");
    let before = counter_values(&out).len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let values = counter_values(&out);
    assert!(values.len() > before, "the counter stopped after the move");
    // ...from where it was: no restart, no gap, no repeat.
    assert_continuous(&values);
    // The source kept nothing.
    assert!(!c.node("node2").workload_dir("counter").exists());

    // It runs in node3's cgroup (memory charged there), and only there.
    let r = c.restored(id).await;
    let pid = r.pid.expect("restored pid");
    let cg = common::memory_cgroup_of(pid);
    let node3_cg = c.node("node3").cgroup.clone().unwrap();
    assert!(
        cg.ends_with(&node3_cg),
        "restored workload is in cgroup {cg}, not {node3_cg}"
    );
    assert_eq!(c.copies_of("counter"), vec![pid], "exactly one copy runs");
    let events = c.events().await;
    let started = events
        .iter()
        .filter(|e| matches!(&e.event, Event::WorkloadStarted(_)))
        .count();
    assert_eq!(started, 1, "the workload was started once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_failed_event_not_a_crash() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "counter-bad", COUNTER).await;

    // Unknown workload.
    let id = c.migrate("nosuch", "node2", "node3").await;
    let e = c.outcome(id).await;
    assert!(
        matches!(&e.event, Event::MigrationFailed(f) if f.reason.contains("does not run")),
        "{e:?}"
    );

    // Dead target.
    let id = c.migrate("counter-bad", "node2", "node9").await;
    let e = c.outcome(id).await;
    assert!(
        matches!(&e.event, Event::MigrationFailed(f) if f.reason.contains("node9")),
        "{e:?}"
    );

    // The same request twice: one migration.
    let id = c.migrate("counter-bad", "node2", "node3").await;
    c.completed(id).await;
    let dup = c
        .events()
        .await
        .into_iter()
        .find(|e| matches!(&e.event, Event::MigrationRequested(p) if p.migration == id))
        .expect("request");
    // Republish the very same event under a new envelope id (a person retrying).
    c.publish("test", dup.event.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = c.events().await;
    let completed = events
        .iter()
        .filter(|e| matches!(&e.event, Event::MigrationCompleted(p) if p.migration == id))
        .count();
    assert_eq!(completed, 1);
    let checkpointed = events
        .iter()
        .filter(|e| matches!(&e.event, Event::MigrationCheckpointed(p) if p.migration == id))
        .count();
    assert_eq!(checkpointed, 1, "a duplicate request did nothing twice");
    // Both executors still answer.
    c.wait_ping("node2").await;
    c.wait_ping("node3").await;
    let _ = c.node("node2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_reports_what_each_workload_uses() {
    use futures::StreamExt;
    let c = Cluster::new(&["node2"]).await;
    let client = async_nats::connect(c.server.url()).await.unwrap();
    let mut sub = client.subscribe("telemetry.node2.workloads").await.unwrap();
    c.run_workload("node2", "spin", &["sh", "-c", "while :; do :; done"])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("no usage report with a busy spin within 30 s")
            .expect("subscription");
        let env =
            loadshift_events::Envelope::from_message(msg.subject.as_str(), &msg.payload).unwrap();
        let Event::WorkloadUsage(u) = env.event else {
            panic!("{env:?}")
        };
        let spin = u
            .workloads
            .iter()
            .find(|w| w.workload.as_str() == "spin")
            .expect("spin reported");
        assert!(spin.rss_bytes > 0);
        // The first report has no rate yet; a later one shows the busy loop.
        if spin.cpu_pct > 20.0 {
            break;
        }
    }
}
