//! `replay --from-start` against a real nats-server: it rebuilds exactly the
//! store the live service built (same digest), reports its rate in the
//! documented line, and refuses to run beside a live brain.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn replay(url: &str, store: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["replay", "--from-start", "--batch", "700", "--store"])
        .arg(store)
        .args(["--nats", url])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_the_same_store_as_the_live_fold() {
    let (nats, js, dir, store) = scene().await;
    // The brain folds while events arrive, so its batches interleave the two
    // streams differently from the replay's.
    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain.log"));
    for round in 0..5u64 {
        publish_all(&js, [joined("node1"), joined("node2")]).await;
        publish_samples(&js, &["node1", "node2", "node3"], 200, round * 200).await;
        if round == 3 {
            publish_all(&js, [left("node2")]).await;
            js.publish("telemetry.node1", "garbage".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let last = last_seqs(&js).await;
    wait_applied(&store, last, Duration::from_secs(60));

    // A running brain holds the store: replay must refuse and say why.
    let out = replay(&nats.url(), &store);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another loadshift-brain holds the store at"),
        "{err}"
    );
    assert!(err.contains("stop it first"), "{err}");

    assert_eq!(brain.term(), Some(0));
    let live = status(&store, &["--digest"]);
    let live_digest = live["digest"].as_str().unwrap().to_string();
    assert_eq!(live_digest.len(), 64);

    let out = replay(&nats.url(), &store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap();
    let [t, e] = stream_counts(&js).await;
    let total = t + e;
    let rest = line
        .strip_prefix(&format!("replayed {total} events in "))
        .unwrap_or_else(|| panic!("unexpected last line {line:?}, want N = {total}"));
    let (secs, rate) = rest.split_once(" s (").unwrap();
    let (int, frac) = secs.split_once('.').unwrap();
    assert!(
        int.parse::<u64>().is_ok() && frac.len() == 2 && frac.parse::<u64>().is_ok(),
        "{line}"
    );
    let rate = rate.strip_suffix(" events/s)").unwrap();
    assert!(rate.parse::<u64>().is_ok(), "{line}");

    let replayed = status(&store, &["--digest"]);
    assert_eq!(replayed["digest"].as_str().unwrap(), live_digest);
    assert_eq!(replayed["kinds"], live["kinds"]);
    assert_eq!(replayed["parked"], 1);
    assert_eq!(replayed["applied"], live["applied"]);

    // The service picks up after a replay without refolding anything.
    let brain = Brain::start(&nats.url(), &store, &dir.path().join("brain2.log"));
    publish_samples(&js, &["node1"], 5, 10_000).await;
    let last = last_seqs(&js).await;
    let v = wait_applied(&store, last, Duration::from_secs(60));
    // t counts the one parked garbage message too.
    assert_eq!(v["kinds"]["telemetry.sample"], t - 1 + 5);
    assert_eq!(v["parked"], 1);
    assert_eq!(brain.term(), Some(0));
}
