//! The fold alone, without NATS: samples land in per-node series that scan
//! by node and time in order, joined/left drive the registry, and counters
//! count. Messages are folded the way the consumer folds them: raw subject
//! and bytes in, writes to a real (temporary) sled store out.

mod common;

use common::*;
use loadshift_brain::fold::{Folder, Outcome, Writes};
use loadshift_brain::registry::Membership;
use loadshift_brain::series;
use loadshift_brain::store::{self, Store, StreamId};
use loadshift_events::{Envelope, Kind};

fn fold_all(
    store: &Store,
    folder: &mut Folder,
    msgs: &[(StreamId, u64, Envelope)],
) -> Vec<Outcome> {
    let mut w = Writes::default();
    let out = msgs
        .iter()
        .map(|(s, seq, env)| folder.fold(&mut w, *s, *seq, &env.subject(), &env.to_json().unwrap()))
        .collect();
    folder.finish(&mut w);
    store.commit(w).unwrap();
    out
}

#[test]
fn samples_scan_by_node_and_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s")).unwrap();
    let mut folder = Folder::new();
    let base = 1_700_000_000_000i64;
    // Two nodes, published out of time order.
    let mut msgs = Vec::new();
    let mut seq = 0;
    for i in [5u64, 1, 3, 0, 4, 2] {
        for n in ["node-a", "node-b"] {
            seq += 1;
            msgs.push((
                StreamId::Telemetry,
                seq,
                sample(n, i, base + i as i64 * 1000),
            ));
        }
    }
    let out = fold_all(&store, &mut folder, &msgs);
    assert!(out
        .iter()
        .all(|o| *o == Outcome::Applied(Kind::TelemetrySample)));

    let range = store::series_range("node-a", base + 1000, base + 4000);
    let got: Vec<_> = store
        .db()
        .range(range)
        .map(|r| {
            let (k, v) = r.unwrap();
            let (node, at, _) = store::parse_series_key(&k).unwrap();
            assert_eq!(node, "node-a");
            series::decode(at, &v).unwrap().sample.seq
        })
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    // node-b's points are not mixed in, and all 6 are there.
    let all_b = store
        .db()
        .range(store::series_range("node-b", i64::MIN, i64::MAX))
        .count();
    assert_eq!(all_b, 6);
    // A node name that is a prefix of another does not leak into its range.
    assert_eq!(
        store
            .db()
            .range(store::series_range("node", i64::MIN, i64::MAX))
            .count(),
        0
    );
}

#[test]
fn joined_and_left_drive_the_registry_and_counters_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create(&path).unwrap();
    let mut folder = Folder::new();
    let msgs = vec![
        (StreamId::Events, 1, joined("n1")),
        (StreamId::Events, 2, joined("n2")),
        (StreamId::Telemetry, 1, sample("n1", 0, 1_700_000_000_000)),
        (StreamId::Telemetry, 2, sample("n1", 1, 1_700_000_001_000)),
        (StreamId::Events, 3, left("n2")),
    ];
    fold_all(&store, &mut folder, &msgs);
    // Redelivery of an applied sequence is skipped.
    let again = fold_all(&store, &mut folder, &msgs[..1]);
    assert_eq!(again, vec![Outcome::Skipped]);

    let snap = Folder::load(&store).unwrap().snapshot();
    assert_eq!(snap, folder.snapshot());
    assert_eq!(snap.kinds["telemetry.sample"], 2);
    assert_eq!(snap.kinds["node.joined"], 2);
    assert_eq!(snap.kinds["node.left"], 1);
    assert_eq!(snap.applied["TELEMETRY"], 2);
    assert_eq!(snap.applied["EVENTS"], 3);
    let n1 = &snap.nodes["n1"];
    assert_eq!(n1.samples, 2);
    assert!(matches!(n1.membership, Some((Membership::Joined, _))));
    assert_eq!(n1.capacity().unwrap().memory_bytes, 4 << 30);
    let n2 = &snap.nodes["n2"];
    assert!(matches!(n2.membership, Some((Membership::Left, _))));
    assert_eq!(n2.state_at(n2.last_seen_ms), "left");
    assert_eq!(n1.state_at(n1.last_seen_ms + 1), "joined");
    assert_eq!(n1.state_at(n1.last_seen_ms + 60_000), "silent");

    // The kind index holds every EVENTS message.
    assert_eq!(store.scan(store::prefix::KIND).count(), 3);
}

#[test]
fn garbage_is_parked_and_counted_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s")).unwrap();
    let mut folder = Folder::new();
    let mut w = Writes::default();
    assert_eq!(
        folder.fold(&mut w, StreamId::Telemetry, 1, "telemetry.x", b"{nope"),
        Outcome::Parked
    );
    folder.finish(&mut w);
    store.commit(w).unwrap();
    assert_eq!(folder.snapshot().parked, 1);
    assert_eq!(folder.applied(StreamId::Telemetry), 1);
    assert_eq!(store.scan(store::prefix::PARKED).count(), 1);
}

#[test]
fn the_fold_does_not_depend_on_how_the_streams_interleave() {
    let msgs = [
        (StreamId::Events, 1, joined("n1")),
        (StreamId::Telemetry, 1, sample("n1", 0, 1_700_000_000_000)),
        (StreamId::Telemetry, 2, sample("n1", 1, 1_700_000_001_000)),
        (StreamId::Events, 2, left("n1")),
    ];
    let digest = |order: &[usize]| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let mut folder = Folder::new();
        let picked: Vec<_> = order.iter().map(|i| msgs[*i].clone()).collect();
        for m in picked {
            fold_all(&store, &mut folder, &[m]);
        }
        store.digest().unwrap()
    };
    assert_eq!(digest(&[0, 1, 2, 3]), digest(&[1, 2, 0, 3]));
}
