//! The brain's fold under seeded hostile input (`loadshift_testkit::fuzz`),
//! with live features and planning on as in the service: no panic; every
//! message is either applied (it decodes) or parked with its subject and
//! reason, so the consumer moves on and never skips a valid event; and the
//! store it leaves reloads, digests and decodes every sample, so a restart
//! or a `status` can never find it corrupt.
//!
//! `LOADSHIFT_FUZZ_CASES=1000000 cargo test --release -p loadshift-brain --test fuzz`
//! runs the long version (BENCHMARKS.md).

mod common;

use std::cell::RefCell;

use common::scratch_store;
use loadshift_brain::consume::Watchers;
use loadshift_brain::fold::{Fold, Folded};
use loadshift_brain::live::Live;
use loadshift_brain::planner::PlannerConfig;
use loadshift_brain::planner_service::PlannerService;
use loadshift_brain::status::Snapshot;
use loadshift_brain::store::{self, Store, StreamId, Writes};
use loadshift_events::Envelope;
use loadshift_testkit::fuzz::{self, proptest};

/// Messages folded per committed batch.
const BATCH: u64 = 500;

struct Run {
    store: Store,
    folder: Fold,
    watchers: Watchers,
    writes: Writes,
    seqs: [u64; 2],
    applied: u64,
    parked: u64,
}

impl Run {
    fn commit(&mut self) {
        let mut w = std::mem::take(&mut self.writes);
        self.folder.finish(&mut w);
        self.store.commit(w).unwrap();
    }
}

#[test]
fn the_fold_applies_or_parks_every_input_and_leaves_a_sound_store() {
    let (_dir, store) = scratch_store();
    let predictor = Live::shared(None);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let watchers = Watchers {
        live: Some(Live::new(predictor.clone())),
        planner: Some(PlannerService::new(
            PlannerConfig::default(),
            common::node("brain"),
            predictor,
            tx,
        )),
    };
    let run = RefCell::new(Run {
        store,
        folder: Fold::new(),
        watchers,
        writes: Writes::default(),
        seqs: [0, 0],
        applied: 0,
        parked: 0,
    });
    fuzz::runner()
        .run(&fuzz::input(), |input| {
            let mut r = run.borrow_mut();
            let r = &mut *r;
            let stream = if input.subject.starts_with("telemetry") {
                StreamId::Telemetry
            } else {
                StreamId::Events
            };
            r.seqs[stream.index()] += 1;
            let seq = r.seqs[stream.index()];
            let decodes = Envelope::from_message(&input.subject, &input.payload).is_ok();
            let out = r
                .folder
                .fold(&mut r.writes, stream, seq, &input.subject, &input.payload);
            match out {
                Folded::Applied(env) => {
                    proptest::prop_assert!(decodes);
                    // As the service does: live features and the planner.
                    r.watchers.observe(&env, &mut r.writes);
                    r.applied += 1;
                }
                Folded::Parked => {
                    proptest::prop_assert!(!decodes && input.valid.is_none());
                    r.parked += 1;
                }
                Folded::Skipped => proptest::prop_assert!(false, "a new sequence was skipped"),
            }
            if (r.applied + r.parked).is_multiple_of(BATCH) {
                r.commit();
            }
            Ok(())
        })
        .unwrap();
    let mut r = run.into_inner();
    r.commit();
    let snap = Snapshot::from(&r.folder);
    assert_eq!(snap.parked, r.parked);
    assert_eq!(snap.kinds.values().sum::<u64>(), r.applied);
    assert_eq!(
        r.store.scan(store::prefix::PARKED).count() as u64,
        r.parked,
        "every refusal kept with its subject and reason"
    );
    // What a restart and `status` read.
    let loaded = Fold::load(&r.store).unwrap();
    assert_eq!(Snapshot::from(&loaded).parked, r.parked);
    r.store.digest().unwrap();
    for node in snap.nodes.keys() {
        r.store.samples(node, i64::MIN, i64::MAX).unwrap();
    }
    eprintln!(
        "fuzz: {} inputs folded, {} applied, {} parked",
        fuzz::cases(),
        r.applied,
        r.parked
    );
}

/// The real service behind a durable consumer: hostile messages published
/// among valid ones through a real nats-server are parked, and every one
/// that decodes is folded: the consumer moves on and skips nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_folds_every_valid_event_among_hostile_ones() {
    use proptest::strategy::{Strategy, ValueTree};
    let nats = loadshift_testkit::NatsServer::start();
    let js = common::jetstream(&nats.url()).await;
    let mut runner = fuzz::runner();
    let strategy = fuzz::input();
    let (mut good, mut bad) = (0u64, 0u64);
    let mut published = 0;
    while published < 400 {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        // Only what NATS lets a client publish into the streams.
        let s = input.subject.as_str();
        let in_streams = ["telemetry.", "node.", "workload.", "migration.", "model."]
            .iter()
            .any(|p| s.starts_with(p));
        if !in_streams || s.contains(['*', '>', ' ']) || s.ends_with('.') {
            continue;
        }
        js.publish(input.subject.clone(), input.payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        published += 1;
        if Envelope::from_message(&input.subject, &input.payload).is_ok() {
            good += 1;
        } else {
            bad += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("brain");
    let brain = common::Brain::start(&nats.url(), &store, &dir.path().join("brain.log"));
    let last = common::last_seqs(&js).await;
    let v = common::wait_applied(&store, last, std::time::Duration::from_secs(120));
    let folded: u64 = v["kinds"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!((folded, v["parked"].as_u64().unwrap()), (good, bad), "{v}");
    assert!(good > 0 && bad > 0);
    assert_eq!(brain.term(), Some(0));
}
