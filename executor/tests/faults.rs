//! Crashes and corruption in the middle of a migration. Each ends with the
//! workload running on exactly one node, its counter continuous, and a
//! `completed` or `failed` + `rolled_back` in the log.

mod common;

use std::time::Duration;

use common::{assert_runs_once_on, Cluster, COUNTER};
use loadshift_events::migration::Step;
use loadshift_events::Event;
use loadshift_executor::fault;

/// A two-node cluster with `workload` counting on node2 and `fault` armed
/// on `faulty`, and the id of the migration to node3 just requested: how
/// each crash test begins.
async fn migrating_with_fault(workload: &str, faulty: &str, fault: &str) -> (Cluster, uuid::Uuid) {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", workload, COUNTER).await;
    c.arm_fault(faulty, fault).await;
    let id = c.migrate(workload, "node2", "node3").await;
    (c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_killed_after_the_dump_finishes_the_move_when_it_returns() {
    let (mut c, id) = migrating_with_fault("counter-a", "node2", fault::AFTER_DUMP).await;
    assert!(
        c.node("node2").wait_exit(Duration::from_secs(60)),
        "the source did not crash at the fault point\n{}",
        c.logs()
    );
    // Dumped, not yet stored: the workload runs nowhere right now, and its
    // image waits on tmpfs.
    assert!(c.copies_of("counter-a").is_empty());

    c.node("node2").restart();
    c.completed(id).await;
    assert_runs_once_on(&mut c, "counter-a", "node3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_killed_during_restore_reports_the_restore_when_it_returns() {
    let (mut c, id) = migrating_with_fault("counter-b", "node3", fault::DURING_RESTORE).await;
    c.crash_and_restart("node3");
    c.completed(id).await;
    assert_runs_once_on(&mut c, "counter-b", "node3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_image_is_refused_and_the_workload_resumes_on_the_source() {
    let (mut c, id) = migrating_with_fault("counter-c", "node2", fault::CORRUPT_IMAGE).await;
    c.rolled_back(id).await;
    let f = c.failed(id).await;
    assert_eq!(f.step, Step::Verify);
    assert!(f.reason.contains("SHA-256"), "{}", f.reason);
    assert_runs_once_on(&mut c, "counter-c", "node2").await;
    assert!(
        !c.node("node3").workload_dir("counter-c").exists(),
        "the target kept a copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_and_kept_down_loses_the_migration_and_the_workload_resumes_on_the_source()
{
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "counter-d", COUNTER).await;
    c.node("node2")
        .restart_with_env(&[("LOADSHIFT_DEADLINE_FLOOR", "2s")]);
    c.node("node3")
        .restart_with_env(&[("LOADSHIFT_FAULTS", fault::BEFORE_DOWNLOAD)]);
    c.wait_ping("node2").await;
    c.wait_ping("node3").await;

    let id = c.migrate("counter-d", "node2", "node3").await;
    assert!(
        c.node("node3").wait_exit(Duration::from_secs(60)),
        "the target did not crash as the image started arriving\n{}",
        c.logs()
    );
    // The target stays down: the source's deadline passes and it takes the
    // workload back.
    c.rolled_back(id).await;
    let f = c.fenced(id).await;
    assert!(f.waited_ms >= 2000.0, "fenced before the floor: {f:?}");
    assert_runs_once_on(&mut c, "counter-d", "node2").await;
    // No image is left, on the source's tmpfs or in the store.
    assert!(!c.images.path().join("node2").join(id.to_string()).exists());
    let store =
        c.js.get_object_store(loadshift_events::stream::CHECKPOINTS)
            .await
            .expect("store");
    // It is removed right after the rollback is announced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store
        .info(id.to_string())
        .await
        .is_ok_and(|info| !info.deleted)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "image still stored\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The target comes back: it must not restore a second copy. A request
    // queued behind the migration's events tells when it read them all.
    c.node("node3").restart();
    c.wait_ping("node3").await;
    c.run_workload("node3", "marker-d", COUNTER).await;
    assert_runs_once_on(&mut c, "counter-d", "node2").await;
    assert!(
        c.node("node3").log().contains("standing down"),
        "the returning target did not see the fence\n{}",
        c.logs()
    );
    let restored = c
        .events()
        .await
        .into_iter()
        .filter(|e| matches!(&e.event, Event::MigrationRestored(r) if r.migration == id))
        .count();
    assert_eq!(restored, 0, "the late target restored it\n{}", c.logs());
}
