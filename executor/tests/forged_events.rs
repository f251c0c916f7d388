//! Events that ask an executor to act on a workload must be consistent with
//! what it knows: a `checkpointed` naming a workload that runs on its target
//! (the forged event deleted that workload's folder) is refused, and
//! the workload goes on untouched.

mod common;

use common::Cluster;
use loadshift_events::migration::{Checkpointed, Timings};
use loadshift_events::workload::WorkloadSpec;
use loadshift_events::{Event, NodeName, WorkloadName};

fn forged(source: &str, target: &str, workload: &str) -> Event {
    Event::MigrationCheckpointed(Checkpointed {
        migration: uuid::Uuid::now_v7(),
        workload: WorkloadName::new(workload).unwrap(),
        source: NodeName::new(source).unwrap(),
        target: NodeName::new(target).unwrap(),
        spec: WorkloadSpec::process(vec!["sh".into(), "-c".into(), "id > owned".into()]),
        object: "no-such-image".into(),
        sha256: "00".repeat(32),
        image_bytes: 1,
        timings: Timings::default(),
        frozen_at_ms: 0,
        stream: None,
        lazy: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_for_a_workload_running_on_its_target_is_refused() {
    let c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "victim", &["sleep", "1000"]).await;
    let folder = c.nodes[0].workload_dir("victim");
    assert!(folder.exists());

    // As the attacker did (claiming node3 dumped it), and as an
    // envelope whose emitter is not the source it names.
    c.publish("node3", forged("node3", "node2", "victim")).await;
    c.publish("mallory", forged("node3", "node2", "victim"))
        .await;
    // The executor handles its events in order: once a later start is
    // answered, the forged ones were handled.
    c.run_workload("node2", "marker", &["sleep", "1000"]).await;

    assert_eq!(
        c.copies_of("victim").len(),
        1,
        "the workload was killed\n{}",
        c.logs()
    );
    assert!(folder.exists(), "the workload's folder was deleted");
    assert!(c.logs().contains("refused"), "{}", c.logs());
}
