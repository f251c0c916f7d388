//! Values no reader can use, published by a hostile or broken client
//! straight to NATS: `usage_pct: 1e39` (finite JSON, infinite as f32), a
//! negative CPU share, a node joining with -4 cores. The brain parks each
//! with its reason and never stores it, so `status` keeps working, a
//! restart does not find a corrupt store, and a rebuild from the log (which
//! folds the same events again) succeeds with the same digest.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use loadshift_brain::fold::{Fold, Folded};
use loadshift_brain::status::Snapshot;
use loadshift_brain::store::{self, StreamId, Writes};

/// `env` as JSON with `path` (a JSON pointer) set to `value`, written the
/// way a foreign client would: past the contract's own encoder.
fn tampered(env: &loadshift_events::Envelope, path: &str, value: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
    *v.pointer_mut(path).unwrap() = value;
    serde_json::to_vec(&v).unwrap()
}

fn hostile_messages() -> Vec<(String, Vec<u8>)> {
    let base = 1_700_000_000_000i64;
    let s = sample("node2", 900, base);
    vec![
        (
            "telemetry.node2".into(),
            tampered(&s, "/payload/cpu/usage_pct", serde_json::json!(1e39)),
        ),
        (
            "telemetry.node2".into(),
            tampered(&s, "/payload/cpu/usage_pct", serde_json::json!(-50.0)),
        ),
        (
            "node.node2.joined".into(),
            tampered(
                &joined("node2"),
                "/payload/capacity_cores",
                serde_json::json!(-4),
            ),
        ),
    ]
}

#[test]
fn an_out_of_range_sample_is_parked_with_its_reason_and_the_store_reloads() {
    let (_dir, store) = scratch_store();
    let mut folder = Fold::new();
    let mut w = Writes::default();
    let good = sample("node2", 1, 1_700_000_000_000);
    let good_bytes = good.to_json().unwrap();
    assert!(matches!(
        folder.fold(
            &mut w,
            StreamId::Telemetry,
            1,
            "telemetry.node2",
            &good_bytes
        ),
        Folded::Applied(_)
    ));
    for (i, (subject, bytes)) in hostile_messages().iter().enumerate() {
        let stream = if subject.starts_with("telemetry") {
            StreamId::Telemetry
        } else {
            StreamId::Events
        };
        let seq = 2 + i as u64;
        assert!(
            matches!(
                folder.fold(&mut w, stream, seq, subject, bytes),
                Folded::Parked
            ),
            "{subject}"
        );
    }
    folder.finish(&mut w);
    store.commit(w).unwrap();
    // The parked record says why.
    let reasons: Vec<String> = store
        .scan(store::prefix::PARKED)
        .map(|r| String::from_utf8_lossy(&r.unwrap().1).into_owned())
        .collect();
    assert_eq!(reasons.len(), 3);
    for why in [
        "cpu.usage_pct = inf",
        "cpu.usage_pct = -50",
        "capacity_cores = -4",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "{why}: {reasons:?}"
        );
    }
    // What status and a restart read decodes: only the good sample is there.
    let loaded = Fold::load(&store).unwrap();
    let snap = Snapshot::from(&loaded);
    assert_eq!(snap.parked, 3);
    let node = &snap.nodes["node2"];
    assert!(node.declared.is_none(), "{node:?}");
    assert_eq!(node.observed.as_ref().map(|c| c.cores), Some(2.0));
    assert_eq!(node.samples, 1);
    assert_eq!(store.sample_count().unwrap(), 1);
    store.digest().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_restart_and_rebuild_survive_values_no_reader_can_use() {
    let (nats, js, dir, store) = scene().await;
    publish_all(&js, [joined("node2")]).await;
    publish_samples(&js, &["node2"], 20, 0).await;
    for (subject, bytes) in hostile_messages() {
        js.publish(subject, bytes.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    publish_samples(&js, &["node2"], 20, 20).await;

    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain.log"));
    let last = last_seqs(&js).await;
    let v = wait_applied(&store, last, Duration::from_secs(60));
    assert_eq!(v["parked"], 3, "{v}");
    assert_eq!(v["kinds"]["telemetry.sample"], 40, "{v}");
    assert_eq!(brain.term(), Some(0));

    // Stopped: status reads the store itself, digest included.
    let live = status(&store, &["--digest"]);
    let node2 = &live["nodes"][0];
    assert_eq!(node2["name"], "node2", "{live}");
    assert_eq!(node2["capacity_cores"], 2.0, "{live}");
    assert_eq!(node2["samples"], 40, "{live}");

    // A restart finds the store sound (no "corrupt, rebuilding").
    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain2.log"));
    brain.wait_consuming();
    let log = brain.log_text();
    assert!(!log.contains("corrupt"), "{log}");
    assert_eq!(brain.term(), Some(0));

    // A rebuild folds the same hostile events again and ends where the live
    // fold did.
    run_ok(
        Command::new(BIN)
            .args(["replay", "--from-start", "--store"])
            .arg(&store)
            .args(["--nats", &nats.url()]),
    );
    let rebuilt = status(&store, &["--digest"]);
    assert_eq!(rebuilt["digest"], live["digest"]);
    assert_eq!(rebuilt["parked"], 3);
}
