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
use crate::journal::{Journal, MigrationRecord, Phase, Role, WorkloadRecord};

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
    /// The peers that answer it, again after a restart.
    alive: Vec<String>,
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
            alive: alive.iter().map(|n| n.to_string()).collect(),
            seq: 0,
            _dir: dir,
        }
    }

    /// A source node2 whose target node3 answers.
    fn source() -> Self {
        Self::new("node2", &Shared::default(), &["node3"])
    }

    /// A source node2 whose target node3 answers, `counter` running on it.
    async fn source_running() -> Self {
        let mut node = Self::source();
        node.running("counter").await;
        node
    }

    /// A source node2 that was asked to move `counter` to node3 as
    /// migration `id` and announced its checkpoint, all it did forgotten.
    async fn source_awaiting_target(id: Uuid) -> Self {
        let mut node = Self::source_running().await;
        node.asked_to_move(id).await;
        node.look_away();
        node
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

    /// When: the request to move `counter` from node2 to node3 as
    /// migration `id` arrives.
    async fn asked_to_move(&mut self, id: Uuid) -> u64 {
        self.deliver(&requested(id, "counter", "node2", "node3"))
            .await
    }

    /// When: the request to move `counter` as migration `id` arrives and
    /// `op` does `how` (hangs, or the executor dies right after it); returns
    /// the request, still unacknowledged, and its sequence.
    fn asked_to_move_and_killed(&mut self, id: Uuid, op: Op, how: Misbehaviour) -> (u64, Envelope) {
        let req = requested(id, "counter", "node2", "node3");
        (self.killed_in(op, how, &req), req)
    }

    /// When: `env` arrives, and `op` does `how` (hangs, or the executor
    /// dies right after it); the event stays unacknowledged. Returns its
    /// sequence.
    fn killed_in(&mut self, op: Op, how: Misbehaviour, env: &Envelope) -> u64 {
        self.script.set(op, how);
        self.deliver_and_crash(env)
    }

    /// When: `event`, emitted by `emitter`, arrives.
    async fn deliver_from(&mut self, emitter: &str, event: Event) -> u64 {
        self.deliver(&Envelope::new(node_name(emitter), event))
            .await
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

    /// When: the service's tick runs long after every deadline.
    async fn tick_long_after_the_deadline(&self) {
        self.shared.clock.advance(FLOOR * 100);
        self.tick().await;
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

    /// When: the executor, killed at sequence `seq`, starts again with the
    /// same peers and gets the unacknowledged `env` once more.
    async fn back_after_crash(&mut self, seq: u64, env: &Envelope) {
        let alive = self.alive.clone();
        self.restart(&alive.iter().map(String::as_str).collect::<Vec<_>>());
        self.redeliver(seq, env).await;
    }

    /// Whether `counter` runs on this node's host.
    fn runs_counter(&self) -> bool {
        self.host.runs(&workload_name("counter"))
    }

    /// `counter`'s record in this node's journal, if it has one.
    fn counter_record(&self) -> Option<WorkloadRecord> {
        self.journal
            .workload(&workload_name("counter"))
            .expect("journal")
    }

    /// How many times this node did `op` (a fetch, a dump, ...).
    fn times(&self, op: Op) -> usize {
        self.effects.count(|e| {
            matches!(
                (op, e),
                (Op::Dump, Effect::Dump(_))
                    | (Op::Restore, Effect::Restore(_))
                    | (Op::Remove, Effect::Remove(_))
                    | (Op::Put, Effect::Put(_))
                    | (Op::Fetch, Effect::Fetch(_))
                    | (Op::Delete, Effect::Delete(_))
            )
        })
    }

    /// Then-assertions from here on see only what happens next: the
    /// events announced so far are taken, the effects so far forgotten.
    fn look_away(&self) {
        self.published();
        self.effects.clear();
    }

    /// Whether this node still keeps an image of migration `id`.
    fn keeps_images(&self, id: Uuid) -> bool {
        self.host.has_image(&self.images(id))
    }

    /// When and then: the target's `failed` (the first of `from_target`)
    /// reaches this source, which rolls back and runs `counter` again.
    async fn resumes_when_told(&mut self, from_target: &[Event]) {
        self.deliver_from("node3", from_target[0].clone()).await;
        assert_eq!(kinds(&self.published()), vec!["migration.rolled_back"]);
        assert!(self.runs_counter(), "resumed here");
    }

    /// Then: migration `id` rolled back here and left no image here.
    fn then_rolled_back_with_no_image(&self, id: Uuid) {
        assert_eq!(self.migration(id).phase, Phase::RolledBack);
        assert!(!self.keeps_images(id), "an image of {id} is left");
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

/// `checkpointed` as the source would have sent it had `change` been so.
fn checkpointed_but(
    checkpointed: &Envelope,
    change: impl FnOnce(&mut migration::Checkpointed),
) -> Envelope {
    let Event::MigrationCheckpointed(mut c) = checkpointed.event.clone() else {
        panic!("not a checkpointed: {checkpointed:?}")
    };
    change(&mut c);
    Envelope::new(node_name("node2"), Event::MigrationCheckpointed(c))
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

/// Then: among `events`, a `failed` at `step`; returns its reason.
fn failure_at(events: &[Event], step: Step) -> String {
    let (failed, reason) = failed_step(events).unwrap_or_else(|| panic!("no failed in {events:?}"));
    assert_eq!(failed, step, "{reason}");
    reason
}

/// Then: `events` are exactly a `failed` at `step` and the `rolled_back`
/// after it; returns the failure's reason.
fn then_failed_and_rolled_back(events: &[Event], step: Step) -> String {
    assert_eq!(
        kinds(events),
        vec!["migration.failed", "migration.rolled_back"]
    );
    failure_at(events, step)
}

/// Then: `events` are exactly the source's `fenced` and the `rolled_back`
/// after it: the source took the migration back.
fn then_fenced_and_rolled_back(events: &[Event]) {
    assert_eq!(
        kinds(events),
        vec!["migration.fenced", "migration.rolled_back"]
    );
}

/// Then: `counter` runs on `there` and not on `here`: moved, never twice.
fn then_runs_on(there: &Node, not_here: &Node) {
    assert!(there.runs_counter(), "runs on {}", there.name);
    assert!(!not_here.runs_counter(), "left {}", not_here.name);
}

/// A `restored` for migration `id` of `counter` from node2 to node3, as
/// `emitter` sends it (a late or forged one: the tests' targets send theirs).
fn restored_from(emitter: &str, id: Uuid) -> Envelope {
    Envelope::new(
        node_name(emitter),
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
    )
}

// ---- the source ----

#[tokio::test]
async fn a_request_dumps_stores_and_announces_the_checkpoint() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();

    src.asked_to_move(id).await;

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
    let w = src.counter_record().expect("counter is recorded");
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
    let reason = failure_at(&src.published(), Step::Validate);
    assert!(reason.contains("does not run"), "{reason}");
    assert_eq!(src.migration(id).phase, Phase::Refused);
}

#[tokio::test]
async fn a_request_to_a_silent_target_is_refused_and_the_workload_keeps_running() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();

    src.deliver(&requested(id, "counter", "node2", "node9"))
        .await;

    assert_eq!(src.effects.all(), vec![Effect::Ping("node9".into())]);
    let reason = failure_at(&src.published(), Step::Validate);
    assert!(reason.contains("node9"), "{reason}");
    assert!(src.runs_counter());
    let w = src.counter_record().expect("counter is recorded");
    assert_eq!(w.migrating, None);
}

#[tokio::test]
async fn a_request_to_a_target_of_another_runtime_is_refused() {
    let mut src = Node::source_running().await;
    if let Ok(mut a) = src.exec.peers.alive.lock() {
        a.insert(node_name("node3"), RuntimeKind::Docker);
    }
    let id = Uuid::now_v7();

    src.asked_to_move(id).await;

    let reason = failure_at(&src.published(), Step::Validate);
    assert!(reason.contains("docker"), "{reason}");
    assert_eq!(src.times(Op::Dump), 0);
}

#[tokio::test]
async fn the_same_request_twice_moves_the_workload_once() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    let req = requested(id, "counter", "node2", "node3");
    src.deliver(&req).await;
    src.published();

    src.deliver(&req).await;

    assert_eq!(src.times(Op::Dump), 1);
    assert!(src.published().is_empty(), "nothing announced twice");
}

#[tokio::test]
async fn a_failed_dump_or_upload_resumes_the_workload_here_and_keeps_no_image() {
    for (op, step) in [(Op::Dump, Step::Dump), (Op::Put, Step::Upload)] {
        let mut src = Node::source_running().await;
        src.script.set(op, Misbehaviour::Fail("it failed".into()));
        let id = Uuid::now_v7();

        src.asked_to_move(id).await;

        then_failed_and_rolled_back(&src.published(), step);
        assert!(src.runs_counter(), "{step:?}: resumed from its own image");
        assert_eq!(src.times(Op::Put), 0, "{step:?}: nothing stored");
        let m = src.migration(id);
        assert_eq!((m.phase, m.failed_step), (Phase::RolledBack, Some(step)));
        assert!(!src.keeps_images(id), "{step:?}: the image is gone");
        let w = src.counter_record().expect("counter is recorded");
        assert_eq!(w.migrating, None, "{step:?}");
    }
}

#[tokio::test]
async fn restored_on_the_target_cleans_up_here_and_completes() {
    let id = Uuid::now_v7();
    let (mut src, dst, restored) = restored_pair(id).await;
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
    assert!(src.counter_record().is_none());
    // Runs exactly once, on the target; no image left anywhere.
    then_runs_on(&dst, &src);
    assert!(src.shared.bucket.objects().is_empty());
    assert!(!dst.keeps_images(id));
}

#[tokio::test]
async fn the_targets_failure_resumes_the_workload_here_without_repeating_it() {
    let id = Uuid::now_v7();
    let mut src = Node::source_awaiting_target(id).await;
    // The target claimed the restore, failed, and gave the migration back.
    given_the_target_claimed_then_released(&src.shared.fence, id).await;

    src.deliver(&failed_from("node3", id, Step::Restore)).await;

    assert_eq!(kinds(&src.published()), vec!["migration.rolled_back"]);
    assert!(src.runs_counter());
    assert_eq!(src.migration(id).failed_step, Some(Step::Restore));
    assert!(
        src.shared.bucket.objects().is_empty(),
        "the stored image is gone"
    );
    assert!(!src.keeps_images(id), "the local image is gone");
}

#[tokio::test]
async fn a_late_restored_for_a_migration_already_over_changes_nothing() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    src.asked_to_move(id).await;
    let events = src.published();
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    src.look_away();
    assert!(!events.is_empty());

    src.deliver(&restored_from("node3", id)).await;

    assert!(src.effects.all().is_empty());
    assert!(src.published().is_empty());
    assert!(src.runs_counter(), "still runs here");
}

// ---- the source, killed at each point and started again ----

#[tokio::test]
async fn killed_before_the_dump_it_dumps_when_it_returns() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    let (seq, req) = src.asked_to_move_and_killed(id, Op::Dump, Misbehaviour::Hang);
    assert_eq!(
        src.migration(id).phase,
        Phase::Dumping,
        "journaled before the dump"
    );
    assert!(src.runs_counter());

    src.back_after_crash(seq, &req).await;

    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
}

#[tokio::test]
async fn killed_after_the_dump_it_uploads_that_image_without_dumping_again() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    let (seq, req) = src.asked_to_move_and_killed(id, Op::Dump, Misbehaviour::CrashAfter);
    assert!(!src.runs_counter(), "dumped: frozen");

    src.back_after_crash(seq, &req).await;

    assert_eq!(src.times(Op::Dump), 1);
    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
}

#[tokio::test]
async fn killed_after_the_upload_it_announces_the_checkpoint_once() {
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    let (seq, req) = src.asked_to_move_and_killed(id, Op::Put, Misbehaviour::CrashAfter);
    assert_eq!(src.migration(id).phase, Phase::Uploading);
    assert!(
        src.published().is_empty(),
        "nothing announced before the commit"
    );

    src.back_after_crash(seq, &req).await;

    assert_eq!(kinds(&src.published()), vec!["migration.checkpointed"]);
    assert_eq!(
        src.shared.bucket.objects().len(),
        1,
        "stored once, under one name"
    );
}

#[tokio::test]
async fn killed_during_cleanup_it_completes_when_it_returns() {
    let id = Uuid::now_v7();
    let (mut src, dst, restored) = restored_pair(id).await;
    let seq = src.killed_in(Op::Delete, Misbehaviour::Hang, &restored);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);

    src.back_after_crash(seq, &restored).await;

    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    assert!(src.shared.bucket.objects().is_empty());
    then_runs_on(&dst, &src);
}

#[tokio::test]
async fn killed_while_resuming_it_finds_the_resumed_copy_instead_of_a_second_one() {
    let id = Uuid::now_v7();
    let mut src = Node::source_awaiting_target(id).await;
    src.script.set(Op::Restore, Misbehaviour::CrashAfter);
    let failed = failed_from("node3", id, Step::Restore);
    let seq = src.deliver_and_crash(&failed);
    assert!(src.runs_counter(), "criu finished without us");

    src.back_after_crash(seq, &failed).await;
    // The failure was journaled (its event is applied) with the take-back
    // due at once: the service's next tick finishes it.
    src.exec.expire_deadlines().await.expect("journal works");

    then_fenced_and_rolled_back(&src.published());
    assert_eq!(src.times(Op::Restore), 1);
    let w = src.counter_record().expect("counter is recorded");
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
    src.asked_to_move(id).await;
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
    assert!(dst.counter_record().is_some());
}

#[tokio::test]
async fn a_damaged_image_is_refused_and_nothing_stays_on_the_target() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.shared.bucket.damage(&id.to_string());

    dst.deliver(&checkpointed).await;

    let reason = failure_at(&dst.published(), Step::Verify);
    assert!(reason.contains("SHA-256"), "{reason}");
    assert_eq!(dst.times(Op::Restore), 0);
    assert!(!dst.runs_counter());
    dst.then_rolled_back_with_no_image(id);
}

#[tokio::test]
async fn an_image_that_cannot_be_fetched_fails_the_download_step() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.script
        .set(Op::Fetch, Misbehaviour::Fail("no responders".into()));

    dst.deliver(&checkpointed).await;

    failure_at(&dst.published(), Step::Download);
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

    failure_at(&dst.published(), Step::Restore);
    assert!(dst
        .effects
        .all()
        .contains(&Effect::Remove("counter".into())));
    assert!(!dst.keeps_images(id));
}

#[tokio::test]
async fn a_checkpoint_for_another_runtime_is_refused_by_the_target() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let docker = checkpointed_but(&checkpointed, |c| c.spec.runtime = RuntimeKind::Docker);

    dst.deliver(&docker).await;

    let reason = failure_at(&dst.published(), Step::Restore);
    assert!(reason.contains("docker"), "{reason}");
    assert_eq!(dst.times(Op::Fetch), 0);
}

#[tokio::test]
async fn a_checkpoint_delivered_twice_is_restored_once() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.deliver(&checkpointed).await;
    dst.published();

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.times(Op::Restore), 1);
    assert!(dst.published().is_empty());
}

// ---- the target, killed at each point and started again ----

#[tokio::test]
async fn killed_during_the_download_it_fetches_afresh_when_it_returns() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let seq = dst.killed_in(Op::Fetch, Misbehaviour::Hang, &checkpointed);
    assert_eq!(dst.migration(id).phase, Phase::Restoring);

    dst.back_after_crash(seq, &checkpointed).await;

    assert_eq!(kinds(&dst.published()), vec!["migration.restored"]);
    assert!(dst.runs_counter());
}

#[tokio::test]
async fn killed_after_the_restore_it_reports_that_copy_instead_of_restoring_again() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let seq = dst.killed_in(Op::Restore, Misbehaviour::CrashAfter, &checkpointed);
    assert!(dst.runs_counter(), "criu finished without us");

    dst.back_after_crash(seq, &checkpointed).await;

    assert_eq!(kinds(&dst.published()), vec!["migration.restored"]);
    assert_eq!(dst.times(Op::Restore), 1);
    assert_eq!(dst.host.state().running.len(), 1, "one copy");
}

/// The source (node2) and target (node3) of migration `id` after the
/// target restored `counter`; returns the `restored` it announced, which
/// the source has not had yet.
async fn restored_pair(id: Uuid) -> (Node, Node, Envelope) {
    let (src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.deliver(&checkpointed).await;
    let restored = the_restored(&dst.published());
    (src, dst, restored)
}

// ---- the whole road, both nodes ----

#[tokio::test]
async fn a_whole_migration_leaves_one_copy_on_the_target_and_no_image() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = checkpointed_pair(id).await;
    dst.deliver(&checkpointed).await;
    src.deliver(&the_restored(&dst.published())).await;

    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    then_runs_on(&dst, &src);
    assert!(src.shared.bucket.objects().is_empty());
    assert!(src.counter_record().is_none());
    assert!(dst.counter_record().is_some());
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
    then_runs_on(&src, &dst);
    // Every image of it is gone.
    assert!(src.shared.bucket.objects().is_empty());
    src.then_rolled_back_with_no_image(id);
}

#[tokio::test]
async fn a_target_that_comes_back_after_the_fence_does_not_restore() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    src.tick_long_after_the_deadline().await;

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.times(Op::Restore), 0);
    assert_eq!(dst.times(Op::Fetch), 0);
    assert!(dst.published().is_empty(), "the source said it all");
    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
    then_runs_on(&src, &dst);
}

#[tokio::test]
async fn a_target_that_loses_the_race_after_fetching_discards_the_image_and_never_restores() {
    let id = Uuid::now_v7();
    let (src, mut dst, checkpointed) = awaiting_target(id).await;
    src.shared.fence.let_the_source_win_the_next_race();

    dst.deliver(&checkpointed).await;

    assert_eq!(dst.times(Op::Fetch), 1);
    assert_eq!(dst.times(Op::Restore), 0);
    assert!(!dst.keeps_images(id), "the fetched image is discarded");
    assert!(dst.published().is_empty());
    // The source, at its deadline, finds the fence its own and resumes.
    src.tick_long_after_the_deadline().await;
    then_runs_on(&src, &dst);
}

#[tokio::test]
async fn a_forged_failure_while_the_target_downloads_fences_it_out() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();

    src.deliver(&failed_from("mallory", id, Step::Download))
        .await;
    dst.deliver(&checkpointed).await;

    then_fenced_and_rolled_back(&src.published());
    assert!(src.runs_counter());
    assert!(!dst.runs_counter(), "never twice");
    assert_eq!(dst.times(Op::Restore), 0);
}

#[tokio::test]
async fn a_failure_announced_while_the_target_holds_the_migration_changes_nothing() {
    let id = Uuid::now_v7();
    let (mut src, dst, restored) = restored_pair(id).await;
    src.look_away();

    src.deliver(&failed_from("mallory", id, Step::Restore))
        .await;

    assert!(src.published().is_empty());
    assert_eq!(src.times(Op::Restore), 0);
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    // The target's own word still ends it.
    src.deliver(&restored).await;
    assert_eq!(kinds(&src.published()), vec!["migration.completed"]);
    then_runs_on(&dst, &src);
}

#[tokio::test]
async fn a_forged_restored_from_a_target_that_holds_nothing_is_ignored() {
    let id = Uuid::now_v7();
    let (mut src, _dst, _c) = awaiting_target(id).await;
    src.look_away();

    src.deliver(&restored_from("mallory", id)).await;

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
    assert!(!src.runs_counter(), "not resumed: never twice");
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
    then_fenced_and_rolled_back(&src.published());
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

    src.resumes_when_told(&failed).await;
}

#[tokio::test]
async fn an_upload_that_never_ends_is_cut_at_its_deadline_and_the_workload_resumes() {
    let mut src = Node::source_running().await;
    src.script.set(Op::Put, Misbehaviour::Hang);
    let id = Uuid::now_v7();

    src.deliver_while_time_passes(&requested(id, "counter", "node2", "node3"), FLOOR)
        .await;

    let reason = then_failed_and_rolled_back(&src.published(), Step::Upload);
    assert!(reason.contains("not stored within"), "{reason}");
    assert!(src.runs_counter());
    assert!(!src.keeps_images(id));
}

#[tokio::test]
async fn a_download_that_never_ends_is_cut_and_its_partial_image_discarded() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = awaiting_target(id).await;
    dst.script.set(Op::Fetch, Misbehaviour::Hang);

    dst.deliver_while_time_passes(&checkpointed, FLOOR * 100)
        .await;

    let reason = failure_at(&dst.published(), Step::Download);
    assert!(reason.contains("did not arrive"), "{reason}");
    assert!(!dst.keeps_images(id));
    assert_eq!(dst.shared.fence.holder_of(id), None, "never claimed");
}

#[tokio::test]
async fn a_restored_copy_found_after_a_crash_is_killed_if_the_source_holds_the_fence() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = awaiting_target(id).await;
    let seq = dst.killed_in(Op::Restore, Misbehaviour::CrashAfter, &checkpointed);
    assert!(dst.runs_counter());
    // Whatever let it happen, the fence no longer says the target holds
    // it (here: given back), so the source may run the workload.
    dst.shared.fence.release(id).await.unwrap();

    dst.back_after_crash(seq, &checkpointed).await;

    assert!(!dst.runs_counter(), "the late copy is killed");
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
    src.tick_long_after_the_deadline().await;
    let fenced = src
        .published()
        .into_iter()
        .find(|e| matches!(e, Event::MigrationFenced(_)))
        .expect("fenced");
    dst.restart(&["node2"]);

    dst.deliver_from("node2", fenced).await;

    assert_eq!(dst.migration(id).phase, Phase::RolledBack);
    assert!(!dst.keeps_images(id));
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
    assert!(!src.keeps_images(id));
    assert!(src.migration(id).images_settled);
    assert!(src.runs_counter(), "still runs here");
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

    assert!(!dst.keeps_images(id));
    assert!(dst.migration(id).images_settled);
    assert!(dst.runs_counter(), "the copy stays");
}

#[tokio::test]
async fn the_image_of_a_workload_that_runs_nowhere_is_kept_for_a_person() {
    let mut src = Node::source_running().await;
    src.script
        .set(Op::Put, Misbehaviour::Fail("server gone".into()));
    src.script.set(
        Op::Restore,
        Misbehaviour::Fail("criu restore failed".into()),
    );
    let id = Uuid::now_v7();
    src.asked_to_move(id).await;
    src.effects.clear();

    src.exec.sweep_images().await.unwrap();

    assert!(!src.runs_counter());
    assert!(src.keeps_images(id), "kept");
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
    let mut src = Node::source_running().await;
    src.script.set(Op::Dump, Misbehaviour::Hang);
    let id = Uuid::now_v7();

    deliver_while_time_keeps_passing(&mut src, &requested(id, "counter", "node2", "node3")).await;

    let reason = then_failed_and_rolled_back(&src.published(), Step::Dump);
    assert!(reason.contains("was killed"), "{reason}");
    assert!(src.runs_counter());
    src.then_rolled_back_with_no_image(id);
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
    assert!(!dst.runs_counter());
    assert!(!dst.keeps_images(id));
    assert_eq!(
        src.shared.fence.holder_of(id),
        Some(Holder::Released),
        "the claim is given back"
    );

    src.resumes_when_told(&failed).await;
}

#[tokio::test]
async fn a_target_killed_between_its_claim_and_its_restore_gives_the_claim_back_if_it_then_fails() {
    let id = Uuid::now_v7();
    let (mut src, mut dst, checkpointed) = awaiting_target(id).await;
    src.published();
    let seq = dst.killed_in(Op::Restore, Misbehaviour::Hang, &checkpointed);
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
    src.resumes_when_told(&failed).await;
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
    let mut src = Node::source_running().await;

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
    assert!(!dst.runs_counter());
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
    let mut src = Node::source_running().await;
    let id = Uuid::now_v7();
    src.asked_to_move(id).await;
    src.deliver(&stop("counter", "node2")).await;
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    assert!(src.runs_counter(), "not resumed");
    src.look_away();

    src.tick_stops().await;

    then_stopped_by_sigterm(&src);
}

#[tokio::test]
async fn a_migration_of_a_workload_being_stopped_is_refused() {
    let mut src = Node::source_running().await;
    // Still running after SIGTERM (the double ends at once; put it back).
    src.deliver(&stop("counter", "node2")).await;
    let handle = src.host.run(&workload_name("counter"));
    let mut w = src.counter_record().expect("counter is recorded");
    w.handle = handle;
    src.journal
        .commit(crate::journal::Change::new().put_workload(&w))
        .unwrap();
    src.look_away();

    src.deliver(&requested(Uuid::now_v7(), "counter", "node2", "node3"))
        .await;

    let reason = failure_at(&src.published(), Step::Validate);
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
    then_runs_on(&dst, &src);
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

    let reason = failure_at(&dst.published(), Step::Download);
    assert!(reason.contains("streamed pages"), "{reason}");
    assert!(!dst.runs_counter());
    dst.then_rolled_back_with_no_image(id);
}

// ---- post-copy (lazy) ----

#[tokio::test]
async fn a_post_copy_announced_to_a_target_that_offered_no_door_fails_before_the_claim() {
    let id = Uuid::now_v7();
    let (_src, mut dst, checkpointed) = checkpointed_pair(id).await;
    let Event::MigrationCheckpointed(mut c) = checkpointed.event.clone() else {
        unreachable!()
    };
    // Given: the source says post-copy, and this target holds no door for
    // it (it restarted since its offer, or never made one).
    c.lazy = true;
    // When: the announcement arrives.
    dst.deliver(&Envelope::new(
        node_name("node2"),
        Event::MigrationCheckpointed(c),
    ))
    .await;
    // Then: nothing runs here, the fence stays free (the source may take
    // the workload back), and the failure says why.
    let (step, reason) = failed_step(&dst.published()).expect("a failure");
    assert_eq!(step, Step::Download);
    assert!(reason.contains("post-copy"), "{reason}");
    assert!(!dst.host.runs(&workload_name("counter")));
    assert_eq!(dst.shared.fence.holder_of(id), None);
    let m = dst.migration(id);
    assert_eq!((m.mode, m.phase), (Mode::Lazy, Phase::RolledBack));
}

#[tokio::test]
async fn a_source_whose_post_copy_broke_on_the_target_never_resumes_the_workload() {
    use crate::fence::Fence;
    let id = Uuid::now_v7();
    let (mut src, _dst, _c) = awaiting_target(id).await;
    // Given: a post-copy (as the journal of a source that restarted during
    // it: no serving dump in memory), and a target that claimed it, ran the
    // workload and lost its pages.
    let m = MigrationRecord {
        mode: Mode::Lazy,
        ..src.migration(id)
    };
    src.journal
        .commit(crate::journal::Change::new().put_migration(&m))
        .unwrap();
    assert_eq!(
        src.shared.fence.claim(id, Holder::Target).await.unwrap(),
        Holder::Target
    );
    src.effects.clear();
    // When: the target says so.
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    // Then: the source does not resume from its image (the target's copy
    // ran), says nothing more, and keeps no workload nor image.
    let events = src.published();
    assert!(kinds(&events).is_empty(), "{:?}", kinds(&events));
    assert_eq!(
        src.effects.count(|e| matches!(e, Effect::Restore(_))),
        0,
        "resumed a workload that ran on the target"
    );
    assert_eq!(src.migration(id).phase, Phase::RolledBack);
    assert!(src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_none());
    assert!(!src.host.has_image(&src.images(id)));
}

#[tokio::test]
async fn the_same_failure_in_a_copy_leaves_the_source_waiting_for_its_target() {
    use crate::fence::Fence;
    let id = Uuid::now_v7();
    let (mut src, _dst, _c) = awaiting_target(id).await;
    // Given: a copy the target claimed.
    src.shared.fence.claim(id, Holder::Target).await.unwrap();
    // When: a failure arrives while the target holds it.
    src.deliver(&failed_from("node3", id, Step::Restore)).await;
    // Then: only the target knows whether its copy runs: nothing changes.
    assert_eq!(src.migration(id).phase, Phase::AwaitingTarget);
    assert!(src
        .journal
        .workload(&workload_name("counter"))
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn auto_on_a_runtime_without_post_copy_streams_or_copies_without_a_fallback() {
    let mut src = Node::source();
    src.running("counter").await;
    let id = Uuid::now_v7();
    // The doubles' runtime has no post-copy: auto does not try it, so the
    // move is no fall back from what auto chose.
    src.deliver(&requested(id, "counter", "node2", "node3"))
        .await;
    let m = src.migration(id);
    assert_ne!(m.mode, Mode::Lazy);
    assert!(
        m.fallback
            .as_deref()
            .is_none_or(|f| !f.contains("post-copy")),
        "{:?}",
        m.fallback
    );
}
