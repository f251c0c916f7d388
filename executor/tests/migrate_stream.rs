//! Streamed stop-and-copy between two executors (two nodes on this machine)
//! with real CRIU and a real nats-server: the pages go from the source's
//! dump straight to the target's page-server over the token-admitted relay,
//! the workload goes on without a gap; a target killed while the pages
//! arrive leaves the workload running on the source, and so does a target
//! lost after they all arrived (the source replays its own record of the
//! stream into a whole image and resumes from it); a target that cannot
//! take a direct connection gets a copy, and `completed` says why; a
//! target's offer admits its token once, and no other.

mod common;

use std::time::Duration;

use common::{assert_continuous, assert_runs_once_on, counter_values, Cluster, COUNTER};
use loadshift_events::migration::Mode;
use loadshift_events::NodeName;
use loadshift_executor::{fault, stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_counter_continues_on_the_target_without_a_gap() {
    let mut c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    c.run_workload("node2", "counter-s", COUNTER).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let id = c
        .migrate_in(Mode::Stream, "counter-s", "node2", "node3")
        .await;
    let done = &c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Stream), "{done:?}\n{}", c.logs());
    assert_eq!(done.fallback, None);
    assert!(done.timings.dump_ms.is_some() && done.timings.restore_ms.is_some());
    let cp = c.checkpointed(id).await;
    let pages = cp.stream.expect("the pages were streamed");
    assert!(pages.bytes > 0);
    assert!(
        done.image_bytes >= pages.bytes + cp.image_bytes,
        "the image counts the streamed pages"
    );

    assert_runs_once_on(&mut c, "counter-s", "node3").await;
    assert!(!c.node("node2").workload_dir("counter-s").exists());
    assert_eq!(c.leftovers(id), Vec::<String>::new(), "images left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_while_pages_arrive_leaves_the_workload_on_the_source() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "counter-k", COUNTER).await;
    c.arm_fault("node3", fault::DURING_STREAM).await;

    let id = c
        .migrate_in(Mode::Stream, "counter-k", "node2", "node3")
        .await;
    c.rolled_back(id).await;
    assert!(
        c.node("node3").wait_exit(Duration::from_secs(10)),
        "the fault did not kill the target"
    );

    // It goes on on the source, from where it was, once.
    assert_runs_once_on(&mut c, "counter-k", "node2").await;

    // The target, back, restores nothing and its pages are gone with the
    // source's image once the sweep's TTL passes; the source kept nothing.
    c.node("node3").restart();
    c.wait_ping("node3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.copies_of("counter-k").len(), 1, "exactly one copy runs");
    assert!(
        c.leftovers(id).iter().all(|n| n.ends_with(".pages")),
        "the source left {:?}",
        c.leftovers(id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_lost_after_the_pages_arrived_leaves_the_workload_on_the_source() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "counter-l", COUNTER).await;
    c.arm_fault("node3", fault::BEFORE_DOWNLOAD).await;

    let id = c
        .migrate_in(Mode::Stream, "counter-l", "node2", "node3")
        .await;
    // Every page reached the target (the dump ended, so the source's
    // workload is gone) before the target died.
    let pages = c
        .checkpointed(id)
        .await
        .stream
        .expect("the pages were streamed");
    assert!(pages.bytes > 0 && !pages.blake3.is_empty(), "{pages:?}");
    c.rolled_back(id).await;
    assert!(
        c.node("node3").wait_exit(Duration::from_secs(10)),
        "the fault did not kill the target"
    );

    // Resumed on the source from the record of the stream, from where it
    // was, once.
    assert_runs_once_on(&mut c, "counter-l", "node2").await;
    let record = c
        .node("node2")
        .images
        .join("node2")
        .join(format!("{id}.pages"))
        .join("pages.stream");
    assert!(!record.exists(), "the record outlived its replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_cannot_take_a_direct_connection_gets_a_copy_and_the_reason() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "counter-f", COUNTER).await;
    // TEST-NET-1: an address node3 cannot listen on, as when the address it
    // advertises is not reachable.
    c.node("node3")
        .restart_with_env(&[("LOADSHIFT_ADVERTISE", "192.0.2.1")]);
    c.wait_ping("node3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let id = c
        .migrate_in(Mode::Stream, "counter-f", "node2", "node3")
        .await;
    let done = &c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Copy));
    let why = done.fallback.clone().unwrap_or_default();
    assert!(
        why.contains("no direct connection") && why.contains("192.0.2.1"),
        "{why}"
    );
    let out = c.node("node3").workload_dir("counter-f").join("stdout");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_continuous(&counter_values(&out));
    assert_eq!(c.copies_of("counter-f").len(), 1, "exactly one copy runs");
    assert_eq!(c.leftovers(id), Vec::<String>::new(), "images left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_offer_admits_its_token_once_and_nothing_else() {
    let c = Cluster::new(&["node2", "node3"]).await;
    let req = stream::OfferRequest {
        migration: uuid::Uuid::now_v7(),
        source: NodeName::new("node2").unwrap(),
        bytes: 1 << 20,
        lazy: false,
    };
    let offer = stream::ask(&c.js.client(), &NodeName::new("node3").unwrap(), &req)
        .await
        .expect("node3 offers a stream");
    let limit = Duration::from_secs(30);

    let forged = stream::Offer {
        token: "00".repeat(32),
        ..offer.clone()
    };
    let refused = stream::connect(&forged, req.migration, limit).await;
    assert!(
        matches!(refused, Err(stream::StreamError::Refused(_))),
        "{refused:?}"
    );
    // The right token for another migration is a wrong one.
    assert!(stream::connect(&offer, uuid::Uuid::now_v7(), limit)
        .await
        .is_err());
    let admitted = stream::connect(&offer, req.migration, limit)
        .await
        .expect("the token admits once");
    let replayed = stream::connect(&offer, req.migration, limit).await;
    assert!(replayed.is_err(), "a replayed token was admitted");
    drop(admitted);

    // What did not arrive whole is not kept.
    let pages = c
        .images
        .path()
        .join("node3")
        .join(format!("{}.pages", req.migration));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pages.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pages.exists(), "a broken stream left its pages");
}
