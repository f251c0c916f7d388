//! The fold alone, without NATS: samples land in per-node series that scan
//! by node and time in order, joined/left drive the registry, and counters
//! count. Messages are folded the way the consumer folds them: raw subject
//! and bytes in, writes to a real (temporary) sled store out.

mod common;

use common::*;
use loadshift_brain::fold::{Fold, Folded};
use loadshift_brain::registry::Membership;
use loadshift_brain::status::Snapshot;
use loadshift_brain::store::{self, Store, StreamId, Writes};
use loadshift_events::{Envelope, Kind};

fn fold_all(store: &Store, folder: &mut Fold, msgs: &[(StreamId, u64, Envelope)]) -> Vec<Folded> {
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
    let (_dir, store) = scratch_store();
    let mut folder = Fold::new();
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
    assert!(out.iter().all(|o| o.kind() == Some(Kind::TelemetrySample)));
    // One batch: one chunk per node.
    assert_eq!(store.scan(store::prefix::SERIES).count(), 2);

    assert_eq!(
        sample_seqs(&store, "node-a", base + 1000, base + 4000),
        vec![1, 2, 3]
    );
    // node-b's points are not mixed in, and all 6 are there.
    assert_eq!(
        sample_seqs(&store, "node-b", i64::MIN, i64::MAX),
        vec![0, 1, 2, 3, 4, 5]
    );
    // A node name that is a prefix of another does not leak into its range.
    assert!(sample_seqs(&store, "node", i64::MIN, i64::MAX).is_empty());
    assert!(sample_seqs(&store, "node-a", base + 3000, base + 3000).is_empty());
    assert_eq!(store.sample_count().unwrap(), 12);
}

#[test]
fn out_of_order_samples_across_chunks_scan_merged_in_time_order() {
    let (_dir, store) = scratch_store();
    let mut folder = Fold::new();
    let base = 1_700_000_000_000i64;
    let at = |i: u64| base + i as i64 * 1000;
    // Three batches (three chunks) whose time spans overlap: a late batch
    // brings samples older than those already stored, and one sample shares
    // its time with another from an earlier chunk.
    let batches: [&[u64]; 3] = [&[10, 12, 14], &[11, 3, 13], &[1, 15, 2]];
    let mut seq = 0;
    for batch in batches {
        let msgs: Vec<_> = batch
            .iter()
            .map(|i| {
                seq += 1;
                (StreamId::Telemetry, seq, sample("n1", *i, at(*i)))
            })
            .collect();
        fold_all(&store, &mut folder, &msgs);
    }
    seq += 1;
    let twin = sample("n1", 99, at(12));
    fold_all(&store, &mut folder, &[(StreamId::Telemetry, seq, twin)]);
    assert_eq!(store.scan(store::prefix::SERIES).count(), 4);

    let all = store.samples("n1", i64::MIN, i64::MAX).unwrap();
    let times: Vec<_> = all
        .iter()
        .map(|(_, p)| (p.sample.at.timestamp_millis() - base) / 1000)
        .collect();
    assert_eq!(times, vec![1, 2, 3, 10, 11, 12, 12, 13, 14, 15]);
    // Equal times keep stream order: sample 12 (seq 2) before its twin (seq 10).
    let twelves: Vec<_> = all
        .iter()
        .filter(|(_, p)| p.sample.at.timestamp_millis() == at(12))
        .map(|(s, p)| (*s, p.sample.seq))
        .collect();
    assert_eq!(twelves, vec![(2, 12), (10, 99)]);
    // A window that cuts through every chunk takes its samples from each.
    assert_eq!(
        sample_seqs(&store, "n1", at(2), at(13)),
        vec![2, 3, 10, 11, 12, 99]
    );
    // The window ends before most chunks start.
    assert_eq!(sample_seqs(&store, "n1", at(1), at(3)), vec![1, 2]);
    assert_eq!(store.sample_count().unwrap(), 10);
}

fn sample_seqs(store: &Store, node: &str, from: i64, to: i64) -> Vec<u64> {
    store
        .samples(node, from, to)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.sample.seq)
        .collect()
}

#[test]
fn joined_and_left_drive_the_registry_and_counters_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create(&path).unwrap();
    let mut folder = Fold::new();
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
    assert_eq!(again, vec![Folded::Skipped]);

    let snap = Snapshot::from(&Fold::load(&store).unwrap());
    assert_eq!(snap, Snapshot::from(&folder));
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
    let (_dir, store) = scratch_store();
    let mut folder = Fold::new();
    let mut w = Writes::default();
    assert_eq!(
        folder.fold(&mut w, StreamId::Telemetry, 1, "telemetry.x", b"{nope"),
        Folded::Parked
    );
    folder.finish(&mut w);
    store.commit(w).unwrap();
    assert_eq!(Snapshot::from(&folder).parked, 1);
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
        let (_dir, store) = scratch_store();
        let mut folder = Fold::new();
        let picked: Vec<_> = order.iter().map(|i| msgs[*i].clone()).collect();
        for m in picked {
            fold_all(&store, &mut folder, &[m]);
        }
        store.digest().unwrap()
    };
    assert_eq!(digest(&[0, 1, 2, 3]), digest(&[1, 2, 0, 3]));
}

#[test]
fn the_digest_is_over_samples_not_chunk_boundaries() {
    let base = 1_700_000_000_000i64;
    let msgs: Vec<_> = (0..12u64)
        .map(|i| {
            let n = if i % 3 == 0 { "n2" } else { "n1" };
            // Out of time order, so chunk keys differ between cuts.
            let at = base + ((i * 7) % 12) as i64 * 1000;
            (StreamId::Telemetry, i + 1, sample(n, i, at))
        })
        .chain([(StreamId::Events, 1, joined("n1"))])
        .collect();
    let fold = |cut: usize| {
        let (_dir, store) = scratch_store();
        let mut folder = Fold::new();
        for part in msgs.chunks(cut) {
            fold_all(&store, &mut folder, part);
        }
        (
            store.digest().unwrap(),
            store.scan(store::prefix::SERIES).count(),
        )
    };
    let (one_batch, chunks_one) = fold(msgs.len());
    let (many, chunks_many) = fold(1);
    let (some, _) = fold(5);
    assert_eq!((chunks_one, chunks_many), (2, 12));
    assert_eq!(one_batch, many);
    assert_eq!(one_batch, some);
    // And it does see the samples: one fewer gives another digest.
    let (_dir, store) = scratch_store();
    fold_all(&store, &mut Fold::new(), &msgs[1..]);
    assert_ne!(store.digest().unwrap(), one_batch);
}
