//! The brain's outbox against a real nats-server: a decision queued with
//! its fold is published until acknowledged, across an outage of NATS; one
//! that cannot be published in time, or at all, is withdrawn with an event,
//! and that event frees its nodes in the planner.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{node, scratch_store};
use loadshift_brain::outbox::{self, OutboxConfig, Queued};
use loadshift_brain::planner::{facts_of, Planner, PlannerConfig};
use loadshift_brain::store::{Store, Writes};
use loadshift_events::migration::{Reason, Requested};
use loadshift_events::{Envelope, Event, WorkloadName};
use loadshift_testkit::NatsServer;

fn request(probability: f32) -> Envelope {
    Envelope::new(
        node("brain"),
        Event::MigrationRequested(Requested {
            migration: uuid::Uuid::now_v7(),
            workload: WorkloadName::new("counter").unwrap(),
            source: node("node2"),
            target: node("node3"),
            requested_by: "brain".into(),
            reason: Reason {
                summary: "node2 heads for overload".into(),
                probability: Some(probability),
                ..Default::default()
            },
            mode: loadshift_events::migration::Mode::Auto,
        }),
    )
}

async fn connect(url: &str) -> jetstream::Context {
    loadshift_testkit::client::declared(url, "outbox-test").await
}

/// A real server, a client, a scratch store and one decision queued in it.
struct Scene {
    nats: NatsServer,
    js: jetstream::Context,
    store: Store,
    env: Envelope,
    queued: Queued,
    _dir: tempfile::TempDir,
}

async fn a_queued_decision() -> Scene {
    let nats = NatsServer::start();
    let js = connect(&nats.url()).await;
    let (_dir, store) = scratch_store();
    let env = request(0.9);
    let queued = queue_and_commit(&store, &env);
    Scene {
        nats,
        js,
        store,
        env,
        queued,
        _dir,
    }
}

fn queue_and_commit(store: &Store, env: &Envelope) -> Queued {
    let mut w = Writes::default();
    let q = outbox::queue(&mut w, env);
    store.commit(w).unwrap();
    q
}

/// Drains until the outbox is empty (NATS may still be reconnecting).
async fn drain_until_empty(js: &jetstream::Context, store: &Store, cfg: &OutboxConfig) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outbox::drain(js, store, cfg).await.unwrap() {
        assert!(Instant::now() < deadline, "the outbox never emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The envelopes in EVENTS, in order.
async fn events(js: &jetstream::Context) -> Vec<(String, Envelope)> {
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        out.push((
            m.subject.to_string(),
            Envelope::from_message(&m.subject, &m.payload).unwrap(),
        ));
    }
    out
}

fn quick(withdraw_after: Duration) -> OutboxConfig {
    OutboxConfig {
        withdraw_after,
        retry_every: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_survives_a_nats_outage_and_is_published_once() {
    let Scene {
        mut nats,
        js,
        store,
        env,
        queued,
        _dir,
    } = a_queued_decision().await;
    assert_eq!(queued, Queued::AsDecided);

    nats.kill();
    let cfg = quick(Duration::from_secs(600));
    assert!(!outbox::drain(&js, &store, &cfg).await.unwrap());
    assert_eq!(outbox::pending(&store).unwrap(), vec![env.clone()]);

    nats.restart();
    drain_until_empty(&js, &store, &cfg).await;
    assert!(outbox::pending(&store).unwrap().is_empty());
    let log = events(&js).await;
    assert_eq!(log.len(), 1, "stored once");
    assert_eq!(log[0].0, "migration.node2.requested");
    assert_eq!(log[0].1, env);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_not_published_in_time_is_withdrawn_and_frees_its_nodes() {
    let Scene {
        mut nats,
        js,
        store,
        env,
        _dir,
        ..
    } = a_queued_decision().await;

    nats.kill();
    // Already late: the first refused attempt withdraws it.
    let cfg = quick(Duration::ZERO);
    assert!(!outbox::drain(&js, &store, &cfg).await.unwrap());
    let pending = outbox::pending(&store).unwrap();
    assert_eq!(pending.len(), 1);
    let Event::MigrationWithdrawn(w) = &pending[0].event else {
        panic!("{pending:?}");
    };
    let Event::MigrationRequested(r) = &env.event else {
        unreachable!()
    };
    assert_eq!(w.migration, r.migration);
    assert!(
        w.reason.contains("not published within 0 s"),
        "{}",
        w.reason
    );

    // The withdrawal itself is published until acknowledged.
    nats.restart();
    drain_until_empty(&js, &store, &cfg).await;
    // The client may still deliver the request it buffered during the
    // outage; if it does, the withdrawal comes after it in the log (one
    // connection, in order), never before.
    let log = events(&js).await;
    let subjects: Vec<&str> = log.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        subjects == ["migration.node2.withdrawn"]
            || subjects == ["migration.node2.requested", "migration.node2.withdrawn"],
        "{subjects:?}"
    );

    // Folded back, it ends the migration the planner counted in flight.
    let mut planner = Planner::new(PlannerConfig::default());
    for f in facts_of(&env, chrono::Utc::now()) {
        planner.apply(&f);
    }
    assert_eq!(planner.in_flight(), 1);
    for (_, e) in &log {
        for f in facts_of(e, chrono::Utc::now()) {
            planner.apply(&f);
        }
    }
    assert_eq!(planner.in_flight(), 0);
}

#[test]
fn a_decision_that_cannot_be_written_is_withdrawn_at_once() {
    let (_dir, store) = scratch_store();
    let env = request(f32::NAN);
    let q = queue_and_commit(&store, &env);
    let Queued::Withdrawn(w) = q else {
        panic!("{q:?}");
    };
    let Event::MigrationWithdrawn(w) = &w.event else {
        panic!("{w:?}");
    };
    assert!(w.reason.contains("reason.probability"), "{}", w.reason);
    let pending = outbox::pending(&store).unwrap();
    assert_eq!(pending.len(), 1);
    assert!(matches!(pending[0].event, Event::MigrationWithdrawn(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_wakes_when_the_fold_queues_a_decision() {
    let nats = NatsServer::start();
    let js = connect(&nats.url()).await;
    let (_dir, store) = scratch_store();
    let shutdown =
        loadshift_events::shutdown::Shutdown::<loadshift_events::shutdown::Signal>::new();
    // A long periodic pass: only the wake-up on the queued key publishes.
    let cfg = OutboxConfig {
        withdraw_after: Duration::from_secs(600),
        retry_every: Duration::from_secs(3600),
    };
    let task = tokio::spawn(outbox::run(
        js.clone(),
        store.clone(),
        cfg,
        shutdown.listener(),
    ));
    let envs: Vec<Envelope> = (0..3).map(|_| request(0.8)).collect();
    for env in &envs {
        queue_and_commit(&store, env);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while events(&js).await.len() < 3 {
        assert!(Instant::now() < deadline, "not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published: Vec<Envelope> = events(&js).await.into_iter().map(|(_, e)| e).collect();
    assert_eq!(published, envs, "in decision order");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outbox::pending(&store).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "not removed after the ack");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown
        .trigger()
        .fire(loadshift_events::shutdown::Signal::Terminate);
    task.await.unwrap();
}

#[test]
fn status_lists_the_decisions_a_stopped_brain_has_not_published() {
    let (dir, store) = scratch_store();
    let env = request(0.8);
    queue_and_commit(&store, &env);
    store.flush().unwrap();
    drop(store);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadshift-brain"))
        .args(["status", "--json", "--store"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outbox = status["outbox"].as_array().expect("the outbox is listed");
    assert_eq!(outbox.len(), 1, "{status}");
    assert_eq!(outbox[0]["id"], env.id.to_string());
    assert_eq!(outbox[0]["subject"], "migration.node2.requested");
}
