//! The saga's rules, given/when/then, against recording doubles of every
//! effect: given what a node's journal, host and the store hold, when an
//! event is delivered (or delivered again after a crash at a chosen point),
//! then these effects happened, these events were announced and the journal
//! says this. The same rules run against real CRIU, Docker and NATS in
//! `executor/tests/`.

use std::sync::Arc;

use futures::FutureExt;
use loadshift_events::migration::{self, Mode, Reason, Step};
use loadshift_events::workload::{self, Runtime as RuntimeKind, WorkloadSpec};
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use uuid::Uuid;

use super::Executor;
use crate::clock::Clock as _;
use crate::deadline::Deadlines;
use crate::doubles::{
    Bucket, Effect, Effects, FakeFence, FakeNames, FakePeers, Host, ManualClock, Misbehaviour, Op,
    RecordingImages, RecordingRuntime, Script,
};
use crate::fence::Fence as _;
use crate::fence::Holder;
use crate::journal::{Journal, MigrationRecord, Phase, Role};

type TestExecutor = Executor<RecordingRuntime, RecordingImages, FakePeers, ManualClock, FakeFence>;

/// What every node of a test shares: the store, the fence, the name
/// registry and the time.
#[derive(Clone)]
struct Shared {
    bucket: Bucket,
    fence: FakeFence,
    names: FakeNames,
    clock: ManualClock,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            bucket: Bucket::default(),
            fence: FakeFence::default(),
            names: FakeNames::default(),
            clock: ManualClock::at(1_000_000),
        }
    }
}

/// The floor of every test node's deadlines.
const FLOOR: std::time::Duration = std::time::Duration::from_secs(10);

/// One node: its executor, and the world that outlives the executor.
struct Node {
    name: NodeName,
    exec: TestExecutor,
    journal: Journal,
    host: Host,
    effects: Effects,
    script: Script,
    shared: Shared,
    seq: u64,
    _dir: tempfile::TempDir,
}

fn node_name(s: &str) -> NodeName {
    NodeName::new(s).expect("node name")
}

fn workload_name(s: &str) -> WorkloadName {
    WorkloadName::new(s).expect("workload name")
}

fn spec() -> WorkloadSpec {
    WorkloadSpec::process(vec!["counter".into()])
}

/// What an executor is built from; all of it outlives the executor.
struct Parts<'a> {
    journal: &'a Journal,
    host: &'a Host,
    effects: &'a Effects,
    script: &'a Script,
    shared: &'a Shared,
}

fn executor(name: &NodeName, parts: Parts<'_>, alive: &[&str]) -> TestExecutor {
    let Parts {
        journal,
        host,
        effects,
        script,
        shared,
    } = parts;
    let peers = FakePeers {
        effects: effects.clone(),
        ..Default::default()
    };
    for n in alive {
        if let Ok(mut a) = peers.alive.lock() {
            a.insert(node_name(n), RuntimeKind::Process);
        }
    }
    Executor {
        node: name.clone(),
        runtime: RecordingRuntime {
            kind: RuntimeKind::Process,
            host: host.clone(),
            effects: effects.clone(),
            script: script.clone(),
        },
        journal: journal.clone(),
        store: RecordingImages {
            bucket: shared.bucket.clone(),
            host: host.clone(),
            effects: effects.clone(),
            script: script.clone(),
        },
        peers,
        clock: shared.clock.clone(),
        fence: shared.fence.clone(),
        deadlines: Deadlines { floor: FLOOR },
        images_root: std::path::Path::new("/fake/images").join(name.as_str()),
        names: Arc::new(shared.names.clone()),
        outbox: Arc::new(tokio::sync::Notify::new()),
        streams: Default::default(),
    }
}

impl Node {
    /// A node whose peers `alive` answer pings, sharing store, fence and time.
    fn new(name: &str, shared: &Shared, alive: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("journal");
        let name = node_name(name);
        let (host, effects, script) = (Host::default(), Effects::default(), Script::default());
        let parts = Parts {
            journal: &journal,
            host: &host,
            effects: &effects,
            script: &script,
            shared,
        };
        let exec = executor(&name, parts, alive);
        Self {
            name,
            exec,
            journal,
            host,
            effects,
            script,
            shared: shared.clone(),
            seq: 0,
            _dir: dir,
        }
    }

    /// A source node2 whose target node3 answers.
    fn source() -> Self {
        Self::new("node2", &Shared::default(), &["node3"])
    }

    /// Given: workload `name` was started here (through the saga itself).
    async fn running(&mut self, name: &str) {
        self.running_as(name, spec()).await;
    }

    /// Given: workload `name` of `spec` runs here.
    async fn running_as(&mut self, name: &str, spec: WorkloadSpec) {
        self.start_requested(name, spec).await;
        self.published();
        self.effects.clear();
    }

    /// When: a request to start workload `name` here arrives.
    async fn running_or_refused(&mut self, name: &str) {
        self.start_requested(name, spec()).await;
    }

    /// When: a request to start workload `name` of `spec` here arrives.
    async fn start_requested(&mut self, name: &str, spec: WorkloadSpec) {
        let env = Envelope::new(
            node_name("cli"),
            Event::WorkloadStartRequested(workload::StartRequested {
                workload: workload_name(name),
                node: self.name.clone(),
                spec,
                requested_by: "test".into(),
            }),
        );
        self.deliver(&env).await;
    }

    /// When: `env` arrives as the next event of the stream.
    async fn deliver(&mut self, env: &Envelope) -> u64 {
        self.seq += 1;
        self.exec.apply(self.seq, env).await.expect("journal works");
        self.seq
    }

    /// When: `env`, at sequence `seq`, arrives again (redelivered after a
    /// crash, or duplicated).
    async fn redeliver(&self, seq: u64, env: &Envelope) {
        self.exec.apply(seq, env).await.expect("journal works");
    }

    /// When: `env` arrives and the executor dies where the script says; the
    /// event stays unacknowledged.
    fn deliver_and_crash(&mut self, env: &Envelope) -> u64 {
        self.seq += 1;
        let outcome = self.exec.apply(self.seq, env).now_or_never();
        assert!(
            outcome.is_none(),
            "the executor was meant to die in this step, but it finished: {outcome:?}"
        );
        self.seq
    }

    /// When: `env` arrives, and while the saga waits, time moves on by `d`
    /// (a wait on something that never answers meets its deadline).
    async fn deliver_while_time_passes(&mut self, env: &Envelope, d: std::time::Duration) {
        self.seq += 1;
        let clock = self.shared.clock.clone();
        let (outcome, ()) = tokio::join!(self.exec.apply(self.seq, env), async {
            // Let the saga reach its wait first.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            clock.advance(d);
        });
        outcome.expect("journal works");
    }

    /// When: the service's tick runs (once a second in the service).
    async fn tick(&self) {
        self.exec.expire_deadlines().await.expect("journal works");
    }

    /// The executor starts again over the same journal, host and store, with
    /// nothing scripted to go wrong.
    fn restart(&mut self, alive: &[&str]) {
        self.script.clear();
        let parts = Parts {
            journal: &self.journal,
            host: &self.host,
            effects: &self.effects,
            script: &self.script,
            shared: &self.shared,
        };
        self.exec = executor(&self.name, parts, alive);
    }

    /// Then: the events announced since the last look (the outbox, drained
    /// as the publisher would).
    fn published(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for (key, bytes) in self.journal.outbox().expect("outbox") {
            out.push(Envelope::from_json(&bytes).expect("outbox entry").event);
            self.journal.outbox_done(&key).expect("outbox done");
        }
        out
    }

    fn migration(&self, id: Uuid) -> MigrationRecord {
        self.journal
            .migration(&id)
            .expect("journal")
            .expect("migration recorded")
    }

    fn images(&self, id: Uuid) -> std::path::PathBuf {
        self.exec.images_root.join(id.to_string())
    }
}

fn requested(id: Uuid, workload: &str, source: &str, target: &str) -> Envelope {
    requested_in(Mode::Auto, id, workload, source, target)
}

fn requested_in(mode: Mode, id: Uuid, workload: &str, source: &str, target: &str) -> Envelope {
    Envelope::new(
        node_name("brain"),
        Event::MigrationRequested(migration::Requested {
            migration: id,
            workload: workload_name(workload),
            source: node_name(source),
            target: node_name(target),
            requested_by: "test".into(),
            reason: Reason::default(),
            mode,
        }),
    )
}

fn failed_from(emitter: &str, id: Uuid, step: Step) -> Envelope {
    Envelope::new(
        node_name(emitter),
        Event::MigrationFailed(migration::Failed {
            migration: id,
            workload: workload_name("counter"),
            source: node_name("node2"),
            target: node_name("node3"),
            step,
            reason: "the target could not restore".into(),
        }),
    )
}

/// The one event of `events` that is a `checkpointed`, as the target gets it.
fn the_checkpointed(events: &[Event], emitter: &str) -> Envelope {
    let c = events
        .iter()
        .find(|e| matches!(e, Event::MigrationCheckpointed(_)))
        .unwrap_or_else(|| panic!("no checkpointed in {events:?}"));
    Envelope::new(node_name(emitter), c.clone())
}

fn the_restored(events: &[Event]) -> Envelope {
    let r = events
        .iter()
        .find(|e| matches!(e, Event::MigrationRestored(_)))
        .unwrap_or_else(|| panic!("no restored in {events:?}"));
    Envelope::new(node_name("node3"), r.clone())
}

async fn given_the_target_claimed_then_released(fence: &FakeFence, id: Uuid) {
    use crate::fence::Fence;
    assert_eq!(
        fence.claim(id, Holder::Target).await.unwrap(),
        Holder::Target
    );
    fence.release(id).await.unwrap();
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind().as_str()).collect()
}

fn failed_step(events: &[Event]) -> Option<(Step, String)> {
    events.iter().find_map(|e| match e {
        Event::MigrationFailed(f) => Some((f.step, f.reason.clone())),
        _ => None,
    })
}

// ---- the source ----

#[tokio::test]
async fn a_request_dumps_stores_and_announces_the_checkpoint() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;

    assert_eq!(
        src.effects.all(),
        vec![
            Effect::Ping("node3".into()),
            Effect::Discard(src.images(id)),
            Effect::Dump("counter".into()),
            Effect::Put(id.to_string()),
        ]
    );
    let events = src.published();
    assert_eq!(kinds(&events), vec!["migration.checkpointed"]);
    let m = src.migration(id);
    assert_eq!((m.role, m.phase), (Role::Source, Phase::AwaitingTarget));
    assert!(m.timings.dump_ms.is_some() && m.timings.upload_ms.is_some());
    let w = src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .unwrap();
    assert_eq!(w.migrating, Some(id), "the workload is marked as moving");
    assert!(src.shared.bucket.objects().contains_key(&id.to_string()));
}

#[tokio::test]
async fn a_request_for_a_workload_not_here_is_refused_before_anything_happens() {
    let mut src = Node::source();
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "nosuch", "node2", "node3"))
        .await;

    assert!(src.effects.all().is_empty());
    let (step, reason) = failed_step(&src.published()).expect("a failed event");
    assert_eq!(step, Step::Validate);
    assert!(reason.contains("does not run"), "{reason}");
    assert_eq!(src.migration(id).phase, Phase::Refused);
}

#[tokio::test]
async fn a_request_to_a_silent_target_is_refused_and_the_workload_keeps_running() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node9"))
        .await;

    assert_eq!(src.effects.all(), vec![Effect::Ping("node9".into())]);
    let (step, reason) = failed_step(&src.published()).expect("a failed event");
    assert_eq!(step, Step::Validate);
    assert!(reason.contains("node9"), "{reason}");
    assert!(src.host.runs(&workload_name("counter")));
    let w = src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .unwrap();
    assert_eq!(w.migrating, None);
}

#[tokio::test]
async fn a_request_to_a_target_of_another_runtime_is_refused() {
    let mut src = Node::source();
    src.running("counter").await;
    if let Ok(mut a) = src.exec.peers.alive.lock() {
        a.insert(node_name("node3"), RuntimeKind::Docker);
    }
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;

    let (step, reason) = failed_step(&src.published()).expect("a failed event");
    assert_eq!(step, Step::Validate);
    assert!(reason.contains("docker"), "{reason}");
    assert_eq!(src.effects.count(|e| matches!(e, Effect::Dump(_))), 0);
}

#[tokio::test]
async fn the_same_request_twice_moves_the_workload_once() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    let req = requested(id, "counter", "node2", "node3");
    src.deliver(&req).await;
    src.published();

    src.deliver(&req).await;

    assert_eq!(src.effects.count(|e| matches!(e, Effect::Dump(_))), 1);
    assert!(src.published().is_empty(), "nothing announced twice");
}

#[tokio::test]
async fn a_failed_dump_leaves_the_workload_running_and_says_why() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script
        .set(Op::Dump, Misbehaviour::Fail("criu dump failed".into()));
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;

    let events = src.published();
    assert_eq!(
        kinds(&events),
        vec!["migration.failed", "migration.rolled_back"]
    );
    assert_eq!(failed_step(&events).map(|f| f.0), Some(Step::Dump));
    assert!(src.host.runs(&workload_name("counter")));
    assert_eq!(src.effects.count(|e| matches!(e, Effect::Put(_))), 0);
    let m = src.migration(id);
    assert_eq!(
        (m.phase, m.failed_step),
        (Phase::RolledBack, Some(Step::Dump))
    );
    assert!(
        !src.host.has_image(&src.images(id)),
        "no partial image kept"
    );
}

#[tokio::test]
async fn a_failed_upload_resumes_the_workload_here_and_removes_its_image() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script
        .set(Op::Put, Misbehaviour::Fail("server gone".into()));
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;

    let events = src.published();
    assert_eq!(
        kinds(&events),
        vec!["migration.failed", "migration.rolled_back"]
    );
    assert_eq!(failed_step(&events).map(|f| f.0), Some(Step::Upload));
    assert!(
        src.host.runs(&workload_name("counter")),
        "resumed from its own image"
    );
    assert!(!src.host.has_image(&src.images(id)), "the image has served");
    let w = src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .unwrap();
    assert_eq!(w.migrating, None);
}

#[tokio::test]
async fn restored_on_the_target_cleans_up_here_and_completes() {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    let mut dst = Node::new("node3", &shared, &["node2"]);
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    let checkpointed = the_checkpointed(&src.published(), "node2");
    dst.deliver(&checkpointed).await;
    let restored = the_restored(&dst.published());
    src.effects.clear();

    src.deliver(&restored).await;

    assert_eq!(
        src.effects.all(),
        vec![
            Effect::Remove("counter".into()),
            Effect::Discard(src.images(id)),
            Effect::Delete(id.to_string()),
        ]
    );
    let events = src.published();
    assert_eq!(kinds(&events), vec!["migration.completed"]);
    let Event::MigrationCompleted(done) = &events[0] else {
        unreachable!()
    };
    assert!(done.timings.total_ms.is_some() && done.timings.cleanup_ms.is_some());
    assert_eq!(src.migration(id).phase, Phase::Completed);
    assert!(src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_none());
    // Runs exactly once, on the target; no image left anywhere.
    assert!(!src.host.runs(&workload_name("counter")));
    assert!(dst.host.runs(&workload_name("counter")));
    assert!(shared.bucket.objects().is_empty());
    assert!(!dst.host.has_image(&dst.images(id)));
}

#[tokio::test]
async fn the_targets_failure_resumes_the_workload_here_without_repeating_it() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    src.published();
    src.effects.clear();
    // The target claimed the restore, failed, and gave the migration back.
    given_the_target_claimed_then_released(&src.shared.fence, id).await;

    src.deliver(&failed_from("node3", id, Step::Restore)).await;

    assert_eq!(kinds(&src.published()), vec!["migration.rolled_back"]);
    assert!(src.host.runs(&workload_name("counter")));
    assert_eq!(src.migration(id).failed_step, Some(Step::Restore));
    assert!(
        src.shared.bucket.objects().is_empty(),
        "the stored image is gone"
    );
    assert!(
        !src.host.has_image(&src.images(id)),
        "the local image is gone"
    );
}

#[tokio::test]
async fn a_late_restored_for_a_migration_already_over_changes_nothing() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    let events = src.published();
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    src.published();
    src.effects.clear();
    let late = Envelope::new(
        node_name("node3"),
        Event::MigrationRestored(migration::Restored {
            migration: id,
            workload: workload_name("counter"),
            source: node_name("node2"),
            target: node_name("node3"),
            pid: Some(1),
            container_id: None,
            image_bytes: 1,
            timings: Default::default(),
        }),
    );
    assert!(!events.is_empty());

    src.deliver(&late).await;

    assert!(src.effects.all().is_empty());
    assert!(src.published().is_empty());
    assert!(src.host.runs(&workload_name("counter")), "still runs here");
}

// ---- the source, killed at each point and started again ----

#[tokio::test]
async fn killed_before_the_dump_it_dumps_when_it_returns() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script.set(Op::Dump, Misbehaviour::Hang);
    let id = Uuid::now_v7();
    let req = requested(id, "counter", "node2", "node3");
    let seq = src.deliver_and_crash(&req);
    assert_eq!(
        src.migration(id).phase,
        Phase::Dumping,
        "journaled before the dump"
    );
    assert!(src.host.runs(&workload_name("counter")));

    src.restart(&["node3"]);
    src.redeliver(seq, &req).await;

    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
}

#[tokio::test]
async fn killed_after_the_dump_it_uploads_that_image_without_dumping_again() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script.set(Op::Dump, Misbehaviour::CrashAfter);
    let id = Uuid::now_v7();
    let req = requested(id, "counter", "node2", "node3");
    let seq = src.deliver_and_crash(&req);
    assert!(!src.host.runs(&workload_name("counter")), "dumped: frozen");

    src.restart(&["node3"]);
    src.redeliver(seq, &req).await;

    assert_eq!(src.effects.count(|e| matches!(e, Effect::Dump(_))), 1);
    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
}

#[tokio::test]
async fn killed_after_the_upload_it_announces_the_checkpoint_once() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script.set(Op::Put, Misbehaviour::CrashAfter);
    let id = Uuid::now_v7();
    let req = requested(id, "counter", "node2", "node3");
    let seq = src.deliver_and_crash(&req);
    assert_eq!(src.migration(id).phase, Phase::Uploading);
    assert!(
        src.published().is_empty(),
        "nothing announced before the commit"
    );

    src.restart(&["node3"]);
    src.redeliver(seq, &req).await;

    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
    assert_eq!(
        src.shared.bucket.objects().len(),
        1,
        "stored once, under one name"
    );
}

#[tokio::test]
async fn killed_during_cleanup_it_completes_when_it_returns() {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    let mut dst = Node::new("node3", &shared, &["node2"]);
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    dst.deliver(&the_checkpointed(&src.published(), "node2"))
        .await;
    let restored = the_restored(&dst.published());
    src.script.set(Op::Delete, Misbehaviour::Hang);
    let seq = src.deliver_and_crash(&restored);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);

    src.restart(&["node3"]);
    src.redeliver(seq, &restored).await;

    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    assert!(shared.bucket.objects().is_empty());
    assert!(dst.host.runs(&workload_name("counter")));
    assert!(!src.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn killed_while_resuming_it_finds_the_resumed_copy_instead_of_a_second_one() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    src.published();
    src.script.set(Op::Restore, Misbehaviour::CrashAfter);
    let failed = failed_from("node3", id, Step::Restore);
    let seq = src.deliver_and_crash(&failed);
    assert!(
        src.host.runs(&workload_name("counter")),
        "criu finished without us"
    );

    src.restart(&["node3"]);
    src.redeliver(seq, &failed).await;
    // The failure was journaled (its event is applied) with the take-back
    // due at once: the service's next tick finishes it.
    src.exec.expire_deadlines().await.expect("journal works");

    assert_eq!(
        kinds(&src.published()),
        vec!["migration.fenced", "migration.rolled_back"]
    );
    assert_eq!(src.effects.count(|e| matches!(e, Effect::Restore(_))), 1);
    let w = src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .unwrap();
    assert!(src.host.state().running.values().any(|h| *h == w.handle));
}

// ---- the target ----

/// A target node3 and a source node2 sharing a store, the source having
/// dumped `counter` for migration `id`; returns the `checkpointed` event.
async fn checkpointed_pair(id: Uuid) -> (Node, Node, Envelope) {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    let dst = Node::new("node3", &shared, &["node2"]);
    src.running("counter").await;
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    let c = the_checkpointed(&src.published(), "node2");
    (src, dst, c)
}

#[tokio::test]
async fn a_start_of_a_name_another_node_runs_is_refused() {
    let shared = Shared::default();
    let mut node3 = Node::new("node3", &shared, &[]);
    node3.running("counter").await;
    let mut node2 = Node::new("node2", &shared, &[]);

    node2.running_or_refused("counter").await;

    let events = node2.published();
    assert_eq!(kinds(&events), vec!["workload.start_failed"]);
    let Event::WorkloadStartFailed(f) = &events[0] else {
        unreachable!()
    };
    assert!(f.reason.contains("already runs on node3"), "{}", f.reason);
    assert!(node2.effects.all().is_empty(), "nothing was started");
    assert_eq!(shared.names.holder("counter"), Some(node_name("node3")));
}

#[tokio::test]
async fn a_restore_hands_the_name_to_the_target() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = checkpointed_pair(id).await;
    assert_eq!(src.shared.names.holder("counter"), Some(node_name("node2")));

    dst.deliver(&checkpointed).await;

    assert_eq!(src.shared.names.holder("counter"), Some(node_name("node3")));
}

#[tokio::test]
async fn a_checkpoint_is_fetched_restored_and_announced() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;

    dst.deliver(&checkpointed).await;

    assert_eq!(
        dst.effects.all(),
        vec![
            Effect::Discard(dst.images(id)),
            Effect::Fetch(id.to_string()),
            Effect::Restore("counter".into()),
            Effect::Discard(dst.images(id)),
        ]
    );
    let events = dst.published();
    assert_eq!(kinds(&events), vec!["migration.restored"]);
    let Event::MigrationRestored(r) = &events[0] else {
        unreachable!()
    };
    assert!(r.timings.downtime_ms.is_some() && r.timings.restore_ms.is_some());
    let m = dst.migration(id);
    assert_eq!((m.role, m.phase), (Role::Target, Phase::Restored));
    assert!(dst
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_damaged_image_is_refused_and_nothing_stays_on_the_target() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.shared.bucket.damage(&id.to_string());

    dst.deliver(&checkpointed).await;

    let (step, reason) = failed_step(&dst.published()).expect("a failed event");
    assert_eq!(step, Step::Verify);
    assert!(reason.contains("SHA-256"), "{reason}");
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 0);
    assert!(!dst.host.runs(&workload_name("counter")));
    assert!(!dst.host.has_image(&dst.images(id)));
    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
}

#[tokio::test]
async fn an_image_that_cannot_be_fetched_fails_the_download_step() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.script
        .set(Op::Fetch, Misbehaviour::Fail("no responders".into()));

    dst.deliver(&checkpointed).await;

    assert_eq!(
        failed_step(&dst.published()).map(|f| f.0),
        Some(Step::Download)
    );
}

#[tokio::test]
async fn a_failed_restore_says_so_and_leaves_nothing_behind() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.script.set(
        Op::Restore,
        Misbehaviour::Fail("criu restore failed".into()),
    );

    dst.deliver(&checkpointed).await;

    assert_eq!(
        failed_step(&dst.published()).map(|f| f.0),
        Some(Step::Restore)
    );
    assert!(dst
        .effects
        .all()
        .contains(&Effect::Remove("counter".into())));
    assert!(!dst.host.has_image(&dst.images(id)));
}

#[tokio::test]
async fn a_checkpoint_for_another_runtime_is_refused_by_the_target() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let Event::MigrationCheckpointed(mut c) = checkpointed.event.clone() else {
        unreachable!()
    };
    c.spec.runtime = RuntimeKind::Docker;

    dst.deliver(&Envelope::new(
        node_name("node2"),
        Event::MigrationCheckpointed(c),
    ))
    .await;

    let (step, reason) = failed_step(&dst.published()).expect("a failed event");
    assert_eq!(step, Step::Restore);
    assert!(reason.contains("docker"), "{reason}");
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Fetch(_))), 0);
}

#[tokio::test]
async fn a_checkpoint_delivered_twice_is_restored_once() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.deliver(&checkpointed).await;
    dst.published();

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 1);
    assert!(dst.published().is_empty());
}

// ---- the target, killed at each point and started again ----

#[tokio::test]
async fn killed_during_the_download_it_fetches_afresh_when_it_returns() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.script.set(Op::Fetch, Misbehaviour::Hang);
    let seq = dst.deliver_and_crash(&checkpointed);
    assert_eq!(dst.migration(id).phase, Phase::Restoring);

    dst.restart(&["node2"]);
    dst.redeliver(seq, &checkpointed).await;

    assert_eq!(kinds(&dst.published()), vec!["migration.restored"]);
    assert!(dst.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn killed_after_the_restore_it_reports_that_copy_instead_of_restoring_again() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.script.set(Op::Restore, Misbehaviour::CrashAfter);
    let seq = dst.deliver_and_crash(&checkpointed);
    assert!(
        dst.host.runs(&workload_name("counter")),
        "criu finished without us"
    );

    dst.restart(&["node2"]);
    dst.redeliver(seq, &checkpointed).await;

    assert_eq!(kinds(&dst.published()), vec!["migration.restored"]);
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 1);
    assert_eq!(dst.host.state().running.len(), 1, "one copy");
}

// ---- the whole road, both nodes ----

#[tokio::test]
async fn a_whole_migration_leaves_one_copy_on_the_target_and_no_image() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.deliver(&checkpointed).await;
    src.deliver(&the_restored(&dst.published())).await;

    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    assert!(!src.host.runs(&workload_name("counter")));
    assert!(dst.host.runs(&workload_name("counter")));
    assert!(src.shared.bucket.objects().is_empty());
    assert!(src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_none());
    assert!(dst
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_some());
}

// ---- deadlines and the fence ----

/// The source (node2) and target (node3) of migration `id` after the source
/// announced its image, the target not having acted yet.
async fn awaiting_target(id: Uuid) -> (Node, Node, Envelope) {
    checkpointed_pair(id).await
}

#[tokio::test]
async fn the_targets_deadline_follows_the_image_size_and_the_measured_speed() {
    let id = Uuid::now_v7();
    let (src, _dst, _c) = awaiting_target(id).await;

    let m = src.migration(id);
    let speed = src.journal.speed().unwrap();
    let wait = Deadlines { floor: FLOOR }.target(m.image_bytes, speed);
    assert_eq!(
        m.deadline_at_ms,
        Some(src.shared.clock.now_ms() + wait.as_millis() as i64)
    );
    assert!(
        wait >= FLOOR + FLOOR,
        "download and restore each get the floor at least"
    );
}

#[tokio::test]
async fn before_its_deadline_a_silent_target_is_waited_for() {
    let id = Uuid::now_v7();
    let (src, _dst, _c) = awaiting_target(id).await;
    let m = src.migration(id);
    let left = m.deadline_at_ms.unwrap() - src.shared.clock.now_ms();
    src.shared
        .clock
        .advance(std::time::Duration::from_millis(left as u64 - 1));

    src.tick().await;

    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    assert!(src.published().is_empty());
    assert_eq!(src.shared.fence.holder_of(id), None);
}

#[tokio::test]
async fn past_its_deadline_a_silent_target_is_fenced_and_the_workload_resumes_here() {
    let id = Uuid::now_v7();
    let (src, dst, _c) = awaiting_target(id).await;
    src.published();
    let m = src.migration(id);
    let left = m.deadline_at_ms.unwrap() - src.shared.clock.now_ms();
    src.shared
        .clock
        .advance(std::time::Duration::from_millis(left as u64));

    src.tick().await;

    let events = src.published();
    assert_eq!(
        kinds(&events),
        vec!["migration.fenced", "migration.rolled_back"]
    );
    let Event::MigrationFenced(f) = &events[0] else {
        unreachable!()
    };
    assert_eq!(f.target.as_str(), "node3");
    assert!(f.reason.contains("deadline"), "{}", f.reason);
    assert_eq!(src.shared.fence.holder_of(id), Some(Holder::Source));
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!dst.host.runs(&workload_name("counter")));
    // Every image of it is gone.
    assert!(src.shared.bucket.objects().is_empty());
    assert!(!src.host.has_image(&src.images(id)));
    assert_eq!(src.migration(id).phase, Phase::RolledBack);
}

#[tokio::test]
async fn a_target_that_comes_back_after_the_fence_does_not_restore() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    src.shared.clock.advance(FLOOR * 100);
    src.tick().await;

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 0);
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Fetch(_))), 0);
    assert!(dst.published().is_empty(), "the source said it all");
    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
    assert!(!dst.host.runs(&workload_name("counter")));
    assert!(src.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_target_that_loses_the_race_after_fetching_discards_the_image_and_never_restores() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    src.shared.fence.let_the_source_win_the_next_race();

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Fetch(_))), 1);
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 0);
    assert!(
        !dst.host.has_image(&dst.images(id)),
        "the fetched image is discarded"
    );
    assert!(dst.published().is_empty());
    // The source, at its deadline, finds the fence its own and resumes.
    src.shared.clock.advance(FLOOR * 100);
    src.tick().await;
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!dst.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_forged_failure_while_the_target_downloads_fences_it_out() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();

    src.deliver(&failed_from("mallory", id, Step::Download))
        .await;
    dst.deliver(&checkpointed).await;

    assert_eq!(
        kinds(&src.published()),
        vec!["migration.fenced", "migration.rolled_back"]
    );
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!dst.host.runs(&workload_name("counter")), "never twice");
    assert_eq!(dst.effects.count(|e| matches!(e, Effect::Restore(_))), 0);
}

#[tokio::test]
async fn a_failure_announced_while_the_target_holds_the_migration_changes_nothing() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.deliver(&checkpointed).await;
    let restored = the_restored(&dst.published());
    src.published();
    src.effects.clear();

    src.deliver(&failed_from("mallory", id, Step::Restore))
        .await;

    assert!(src.published().is_empty());
    assert_eq!(src.effects.count(|e| matches!(e, Effect::Restore(_))), 0);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    // The target's own word still ends it.
    src.deliver(&restored).await;
    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    assert!(dst.host.runs(&workload_name("counter")));
    assert!(!src.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_forged_restored_from_a_target_that_holds_nothing_is_ignored() {
    let id = Uuid::now_v7();
    let (mut src, _dst, _c) = awaiting_target(id).await;
    src.published();
    src.effects.clear();
    let forged = Envelope::new(
        node_name("mallory"),
        Event::MigrationRestored(migration::Restored {
            migration: id,
            workload: workload_name("counter"),
            source: node_name("node2"),
            target: node_name("node3"),
            pid: Some(1),
            container_id: None,
            image_bytes: 1,
            timings: Default::default(),
        }),
    );

    src.deliver(&forged).await;

    assert!(src.effects.all().is_empty(), "nothing cleaned up");
    assert!(src.published().is_empty());
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    assert!(src.shared.bucket.objects().contains_key(&id.to_string()));
}

#[tokio::test]
async fn a_target_holding_the_migration_past_the_deadline_is_waited_for() {
    let id = Uuid::now_v7();
    let (mut src, dst, _c) = awaiting_target(id).await;
    src.published();
    // The target claimed and is restoring (slowly).
    assert_eq!(
        crate::fence::Fence::claim(&dst.shared.fence, id, Holder::Target)
            .await
            .unwrap(),
        Holder::Target
    );
    src.shared.clock.advance(FLOOR * 100);

    src.tick().await;

    assert!(src.published().is_empty());
    assert!(
        !src.host.runs(&workload_name("counter")),
        "not resumed: never twice"
    );
    let m = src.migration(id);
    assert_eq!((m.phase, m.deadline_at_ms), (Phase::AwaitingTarget, None));
    let _ = &mut src;
}

#[tokio::test]
async fn a_claim_the_fence_does_not_answer_is_asked_again_not_given_up() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();
    let (fence, clock) = (dst.shared.fence.clone(), dst.shared.clock.clone());
    fence.set_down(true);
    let back = async {
        // The target waits to ask again; meanwhile the fence comes back.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        fence.set_down(false);
        clock.advance(FLOOR);
    };

    tokio::join!(dst.deliver(&checkpointed), back);

    assert_eq!(fence.holder_of(id), Some(Holder::Target));
    assert_eq!(kinds(&dst.published()), vec!["migration.restored"]);
    assert!(dst.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_fence_out_of_reach_delays_the_take_back_to_a_later_tick() {
    let id = Uuid::now_v7();
    let (src, _dst, _c) = awaiting_target(id).await;
    src.published();
    src.shared.fence.set_down(true);
    src.shared.clock.advance(FLOOR * 100);

    src.tick().await;

    assert!(src.published().is_empty());
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    src.shared.fence.set_down(false);
    src.tick().await;
    assert_eq!(
        kinds(&src.published()),
        vec!["migration.fenced", "migration.rolled_back"]
    );
}

#[tokio::test]
async fn a_failed_restore_gives_the_migration_back_and_the_source_resumes_it() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();
    dst.script.set(
        Op::Restore,
        Misbehaviour::Fail("criu restore failed".into()),
    );
    dst.deliver(&checkpointed).await;
    let failed = dst.published();
    assert_eq!(src.shared.fence.holder_of(id), Some(Holder::Released));

    let env = Envelope::new(node_name("node3"), failed[0].clone());
    src.deliver(&env).await;

    assert_eq!(kinds(&src.published()), vec!["migration.rolled_back"]);
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!dst.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn an_upload_that_never_ends_is_cut_at_its_deadline_and_the_workload_resumes() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script.set(Op::Put, Misbehaviour::Hang);
    let id = Uuid::now_v7();

    src.deliver_while_time_passes(&requested(id, "counter", "node2", "node3"), FLOOR)
        .await;

    let events = src.published();
    assert_eq!(
        kinds(&events),
        vec!["migration.failed", "migration.rolled_back"]
    );
    let (step, reason) = failed_step(&events).unwrap();
    assert_eq!(step, Step::Upload);
    assert!(reason.contains("not stored within"), "{reason}");
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!src.host.has_image(&src.images(id)));
}

#[tokio::test]
async fn a_download_that_never_ends_is_cut_and_its_partial_image_discarded() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.script.set(Op::Fetch, Misbehaviour::Hang);

    dst.deliver_while_time_passes(&checkpointed, FLOOR * 100)
        .await;

    let (step, reason) = failed_step(&dst.published()).expect("a failed event");
    assert_eq!(step, Step::Download);
    assert!(reason.contains("did not arrive"), "{reason}");
    assert!(!dst.host.has_image(&dst.images(id)));
    assert_eq!(dst.shared.fence.holder_of(id), None, "never claimed");
}

#[tokio::test]
async fn a_restored_copy_found_after_a_crash_is_killed_if_the_source_holds_the_fence() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.script.set(Op::Restore, Misbehaviour::CrashAfter);
    let seq = dst.deliver_and_crash(&checkpointed);
    assert!(dst.host.runs(&workload_name("counter")));
    // Whatever let it happen, the fence no longer says the target holds
    // it (here: given back), so the source may run the workload.
    dst.shared.fence.release(id).await.unwrap();

    dst.restart(&["node2"]);
    dst.redeliver(seq, &checkpointed).await;

    assert!(
        !dst.host.runs(&workload_name("counter")),
        "the late copy is killed"
    );
    assert!(dst.published().is_empty());
    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
}

#[tokio::test]
async fn a_fence_announced_to_a_target_still_restoring_makes_it_stand_down() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.script.set(Op::Fetch, Misbehaviour::Hang);
    let _ = dst.deliver_and_crash(&checkpointed);
    src.published();
    src.shared.clock.advance(FLOOR * 100);
    src.tick().await;
    let fenced = src
        .published()
        .into_iter()
        .find(|e| matches!(e, Event::MigrationFenced(_)))
        .expect("fenced");
    dst.restart(&["node2"]);

    dst.deliver(&Envelope::new(node_name("node2"), fenced))
        .await;

    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
    assert!(!dst.host.has_image(&dst.images(id)));
}

// ---- images a crash left behind ----

#[tokio::test]
async fn a_source_killed_before_removing_the_images_of_a_rollback_removes_them_on_its_tick() {
    let id = Uuid::now_v7();
    let (mut src, _dst, _c) = awaiting_target(id).await;
    src.published();
    src.script.set(Op::Delete, Misbehaviour::Hang);
    let failed = failed_from("node3", id, Step::Download);
    src.deliver_and_crash(&failed);
    assert_eq!(src.migration(id).phase, Phase::RolledBack);
    assert!(src.shared.bucket.objects().contains_key(&id.to_string()));

    src.restart(&["node3"]);
    src.exec.sweep_images().await.unwrap();

    assert!(src.shared.bucket.objects().is_empty());
    assert!(!src.host.has_image(&src.images(id)));
    assert!(src.migration(id).images_settled);
    assert!(src.host.runs(&workload_name("counter")), "still runs here");
}

#[tokio::test]
async fn a_target_killed_before_removing_a_restored_image_removes_it_on_its_tick() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.deliver(&checkpointed).await;
    // Given the state a crash right after the `restored` commit leaves: the
    // image still there, not yet settled.
    let mut m = dst.migration(id);
    m.images_settled = false;
    dst.journal
        .commit(crate::journal::Change::new().put_migration(&m))
        .unwrap();
    dst.host.state().images.insert(dst.images(id));

    dst.exec.sweep_images().await.unwrap();

    assert!(!dst.host.has_image(&dst.images(id)));
    assert!(dst.migration(id).images_settled);
    assert!(dst.host.runs(&workload_name("counter")), "the copy stays");
}

#[tokio::test]
async fn the_image_of_a_workload_that_runs_nowhere_is_kept_for_a_person() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script
        .set(Op::Put, Misbehaviour::Fail("server gone".into()));
    src.script.set(
        Op::Restore,
        Misbehaviour::Fail("criu restore failed".into()),
    );
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    src.effects.clear();

    src.exec.sweep_images().await.unwrap();

    assert!(!src.host.runs(&workload_name("counter")));
    assert!(src.host.has_image(&src.images(id)), "kept");
    assert!(src.effects.all().is_empty());
}

// ---- criu itself bounded ----

/// When: `env` is delivered to `node` while time keeps passing, a second at
/// each moment the saga waits, until it is done (a wait that starts late
/// in the step still sees its deadline pass).
async fn deliver_while_time_keeps_passing(node: &mut Node, env: &Envelope) {
    node.seq += 1;
    let clock = node.shared.clock.clone();
    let apply = node.exec.apply(node.seq, env);
    tokio::pin!(apply);
    loop {
        tokio::select! {
            biased;
            done = &mut apply => {
                done.expect("journal works");
                return;
            }
            () = tokio::task::yield_now() => clock.advance(std::time::Duration::from_secs(1)),
        }
    }
}

#[tokio::test]
async fn a_dump_that_never_ends_is_killed_at_its_deadline_and_the_workload_runs_on() {
    let mut src = Node::source();
    src.running("counter").await;
    src.script.set(Op::Dump, Misbehaviour::Hang);
    let id = Uuid::now_v7();

    deliver_while_time_keeps_passing(&mut src, &requested(id, "counter", "node2", "node3")).await;

    let events = src.published();
    assert_eq!(
        kinds(&events),
        vec!["migration.failed", "migration.rolled_back"]
    );
    let (step, reason) = failed_step(&events).unwrap();
    assert_eq!(step, Step::Dump);
    assert!(reason.contains("was killed"), "{reason}");
    assert!(src.host.runs(&workload_name("counter")));
    assert!(!src.host.has_image(&src.images(id)));
    assert_eq!(src.migration(id).phase, Phase::RolledBack);
}

#[tokio::test]
async fn a_restore_that_never_ends_is_killed_and_the_source_resumes_the_workload() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();
    dst.script.set(Op::Restore, Misbehaviour::Hang);

    deliver_while_time_keeps_passing(&mut dst, &checkpointed).await;

    let failed = dst.published();
    let (step, reason) = failed_step(&failed).expect("a failed event");
    assert_eq!(step, Step::Restore);
    assert!(reason.contains("was killed"), "{reason}");
    assert!(!dst.host.runs(&workload_name("counter")));
    assert!(!dst.host.has_image(&dst.images(id)));
    assert_eq!(
        src.shared.fence.holder_of(id),
        Some(Holder::Released),
        "the claim is given back"
    );

    src.deliver(&Envelope::new(node_name("node3"), failed[0].clone()))
        .await;
    assert_eq!(kinds(&src.published()), vec!["migration.rolled_back"]);
    assert!(src.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_target_killed_between_its_claim_and_its_restore_gives_the_claim_back_if_it_then_fails() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();
    dst.script.set(Op::Restore, Misbehaviour::Hang);
    let seq = dst.deliver_and_crash(&checkpointed);
    assert_eq!(dst.shared.fence.holder_of(id), Some(Holder::Target));

    dst.restart(&["node2"]);
    dst.script
        .set(Op::Fetch, Misbehaviour::Fail("the store is away".into()));
    dst.redeliver(seq, &checkpointed).await;

    let failed = dst.published();
    assert_eq!(failed_step(&failed).map(|f| f.0), Some(Step::Download));
    assert_eq!(
        dst.shared.fence.holder_of(id),
        Some(Holder::Released),
        "the claim of the life before the crash is given back"
    );
    src.deliver(&Envelope::new(node_name("node3"), failed[0].clone()))
        .await;
    assert_eq!(kinds(&src.published()), vec!["migration.rolled_back"]);
    assert!(src.host.runs(&workload_name("counter")));
}

/// A person asks `node` to stop `workload`, with a 10 s grace.
fn stop(workload: &str, node: &str) -> Envelope {
    Envelope::new(
        node_name("cli"),
        Event::WorkloadStopRequested(workload::StopRequested {
            workload: workload_name(workload),
            node: node_name(node),
            grace_ms: 10_000,
            requested_by: "alice".into(),
            forwarded_by: None,
        }),
    )
}

impl Node {
    /// When: the service's tick notices exits and carries stops on.
    async fn tick_stops(&self) {
        self.exec.watch_exits().await.expect("journal works");
        self.exec.carry_on_stops().await.expect("journal works");
        self.exec.watch_exits().await.expect("journal works");
    }
}

/// The reason of the one `workload.exited` among `events`.
fn exit_reason(events: &[Event]) -> Option<workload::ExitReason> {
    let mut exits = events.iter().filter_map(|e| match e {
        Event::WorkloadExited(x) => Some(x.reason),
        _ => None,
    });
    let first = exits.next();
    assert!(exits.next().is_none(), "more than one exit: {events:?}");
    first
}

/// Then: `counter` got SIGTERM, and its one exit says it was stopped.
fn then_stopped_by_sigterm(node: &Node) {
    assert_eq!(
        node.effects.all(),
        vec![Effect::Signal("counter".into(), "SIGTERM")]
    );
    assert_eq!(
        exit_reason(&node.published()),
        Some(workload::ExitReason::Stopped)
    );
}

#[tokio::test]
async fn a_stop_sends_sigterm_and_the_exit_says_it_was_stopped() {
    let mut src = Node::source();
    src.running("counter").await;

    src.deliver(&stop("counter", "node2")).await;
    src.tick_stops().await;

    then_stopped_by_sigterm(&src);
    assert!(src.journal.stops().unwrap().is_empty());
    assert!(src.journal.workloads().unwrap().is_empty());
}

#[tokio::test]
async fn a_stop_meeting_a_migration_is_held_then_handed_to_the_target_it_completed_on() {
    let (mut src, mut dst, checkpointed) = checkpointed_pair(Uuid::now_v7()).await;
    src.effects.clear();

    src.deliver(&stop("counter", "node2")).await;
    src.tick_stops().await;
    // Held: the workload is frozen for the migration, no signal, no event.
    assert!(src.effects.all().is_empty());
    assert!(src.published().is_empty());

    dst.deliver(&checkpointed).await;
    src.deliver(&the_restored(&dst.published())).await;
    src.published();
    src.tick_stops().await;

    let forwarded: Vec<Event> = src.published();
    assert!(
        matches!(forwarded.as_slice(), [Event::WorkloadStopRequested(r)] if r.node == node_name("node3") && r.requested_by == "alice"),
        "{forwarded:?}"
    );
    assert!(src.journal.stops().unwrap().is_empty());
    let Some(Event::WorkloadStopRequested(r)) = forwarded.first() else {
        unreachable!()
    };
    dst.deliver(&Envelope::new(
        node_name("node2"),
        Event::WorkloadStopRequested(r.clone()),
    ))
    .await;
    dst.tick_stops().await;
    assert_eq!(
        exit_reason(&dst.published()),
        Some(workload::ExitReason::Stopped)
    );
    assert!(!dst.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_stop_handed_on_that_finds_no_workload_is_not_handed_on_again() {
    // node2 moved counter to node3 earlier; node3 moved it back and it ended.
    let (mut src, mut dst, checkpointed) = checkpointed_pair(Uuid::now_v7()).await;
    dst.deliver(&checkpointed).await;
    src.deliver(&the_restored(&dst.published())).await;
    src.published();
    // A person's late stop reaches node2: handed to node3 once...
    src.deliver(&stop("counter", "node2")).await;
    let handed = src.published();
    let [Event::WorkloadStopRequested(r)] = handed.as_slice() else {
        panic!("{handed:?}")
    };
    assert_eq!(r.forwarded_by, Some(node_name("node2")));
    // ...and node2, given it back handed on, passes it nowhere.
    let mut back = r.clone();
    back.node = node_name("node2");
    back.forwarded_by = Some(node_name("node3"));
    src.deliver(&Envelope::new(
        node_name("node3"),
        Event::WorkloadStopRequested(back),
    ))
    .await;
    assert!(src.published().is_empty());
}

#[tokio::test]
async fn a_stop_held_by_a_migration_that_rolls_back_is_carried_out_here() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    src.deliver(&stop("counter", "node2")).await;
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    assert!(src.host.runs(&workload_name("counter")), "not resumed");
    src.published();
    src.effects.clear();

    src.tick_stops().await;

    then_stopped_by_sigterm(&src);
}

#[tokio::test]
async fn a_migration_of_a_workload_being_stopped_is_refused() {
    let mut src = Node::source();
    src.running("counter").await;
    // Still running after SIGTERM (the double ends at once; put it back).
    src.deliver(&stop("counter", "node2")).await;
    let handle = src.host.run(&workload_name("counter"));
    let mut w = src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .unwrap();
    w.handle = handle;
    src.journal
        .commit(crate::journal::Change::new().put_workload(&w))
        .unwrap();
    src.published();
    src.effects.clear();

    src.deliver(&requested(Uuid::now_v7(), "counter", "node2", "node3"))
        .await;

    let (step, reason) = failed_step(&src.published()).expect("refused");
    assert_eq!(step, Step::Validate);
    assert!(reason.contains("being stopped"), "{reason}");
    assert!(src
        .effects
        .all()
        .iter()
        .all(|e| !matches!(e, Effect::Dump(_))));
}

#[tokio::test]
async fn a_lazy_request_without_a_direct_connection_falls_back_to_a_copy_and_says_why() {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    let mut dst = Node::new("node3", &shared, &["node2"]);
    src.running("counter").await;
    let id = Uuid::now_v7();
    // The doubles' peers offer no stream: lazy → stream → copy.
    src.deliver(&requested_in(Mode::Lazy, id, "counter", "node2", "node3"))
        .await;
    let checkpointed = the_checkpointed(&src.published(), "node2");
    let Event::MigrationCheckpointed(c) = &checkpointed.event else {
        unreachable!()
    };
    assert!(c.stream.is_none(), "a copy streams nothing");
    dst.deliver(&checkpointed).await;
    src.deliver(&the_restored(&dst.published())).await;

    let events = src.published();
    let Some(Event::MigrationCompleted(done)) = events.last() else {
        panic!("no completed in {events:?}")
    };
    assert_eq!(done.mode, Some(Mode::Copy));
    let why = done.fallback.clone().unwrap_or_default();
    assert!(
        why.contains("post-copy") && why.contains("no direct connection"),
        "{why}"
    );
    assert!(dst.host.runs(&workload_name("counter")));
    assert!(!src.host.runs(&workload_name("counter")));
}

#[tokio::test]
async fn a_workload_marked_no_postcopy_is_never_moved_lazily_and_the_fallback_says_so() {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    src.running_as(
        "counter",
        WorkloadSpec {
            no_postcopy: true,
            ..spec()
        },
    )
    .await;
    let id = Uuid::now_v7();
    src.deliver(&requested_in(Mode::Lazy, id, "counter", "node2", "node3"))
        .await;
    let m = src.migration(id);
    assert_ne!(m.mode, Mode::Lazy);
    let why = m.fallback.unwrap_or_default();
    assert!(why.contains("--no-postcopy"), "{why}");
    // The mark travels with the workload: the image's spec carries it.
    let checkpointed = the_checkpointed(&src.published(), "node2");
    let Event::MigrationCheckpointed(c) = &checkpointed.event else {
        unreachable!()
    };
    assert!(c.spec.no_postcopy);
}

#[tokio::test]
async fn a_copy_asked_for_runs_as_a_copy_with_no_fallback() {
    let shared = Shared::default();
    let mut src = Node::new("node2", &shared, &["node3"]);
    src.running("counter").await;
    let id = Uuid::now_v7();
    src.deliver(&requested_in(Mode::Copy, id, "counter", "node2", "node3"))
        .await;
    let m = src.migration(id);
    assert_eq!((m.mode, m.fallback), (Mode::Copy, None));
}

#[tokio::test]
async fn streamed_pages_the_target_never_received_fail_the_migration_and_leave_nothing() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let Event::MigrationCheckpointed(mut c) = checkpointed.event.clone() else {
        unreachable!()
    };
    // As if the source streamed pages here, to a target that restarted
    // since (its receipt is gone): nothing may be restored from them.
    c.stream = Some(loadshift_events::migration::StreamedPages {
        bytes: 4096,
        sha256: String::new(),
        blake3: "00".repeat(32),
    });
    dst.deliver(&Envelope::new(
        node_name("node2"),
        Event::MigrationCheckpointed(c),
    ))
    .await;

    let (step, reason) = failed_step(&dst.published()).expect("a failure");
    assert_eq!(step, Step::Download);
    assert!(reason.contains("streamed pages"), "{reason}");
    assert!(!dst.host.runs(&workload_name("counter")));
    assert!(!dst.host.has_image(&dst.images(id)));
    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
}
