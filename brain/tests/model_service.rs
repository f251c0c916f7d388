//! The service trains when asked, against a real nats-server: a brain that
//! folded trace samples answers `model.train_requested` with `model.trained`
//! and `model.activated`, and a restart neither trains nor publishes again
//! for the same request.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use loadshift_events::model::{TrainRequested, Trained};
use loadshift_events::{Envelope, Event};
use loadshift_testkit::NatsServer;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

async fn kinds(js: &async_nats::jetstream::Context) -> Vec<String> {
    use futures::StreamExt;
    let stream = js.get_stream("EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let n = last_seqs(js).await[1];
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let mut msgs = consumer
        .fetch()
        .max_messages(n as usize)
        .messages()
        .await
        .unwrap();
    while let Some(m) = msgs.next().await {
        let m = m.unwrap();
        let env = Envelope::from_message(&m.subject, &m.payload).unwrap();
        out.push(env.kind().as_str().to_string());
    }
    out
}

/// Every `model.trained` so far.
async fn trained_events(js: &async_nats::jetstream::Context) -> Vec<Trained> {
    logged!(js, Event::ModelTrained)
}

/// The scores of every `model.trained` so far, to explain a missing
/// activation in a failure message.
async fn trained_scores(js: &async_nats::jetstream::Context) -> Vec<String> {
    let mut out = Vec::new();
    let stream = js.get_stream("EVENTS").await.unwrap();
    for seq in 1..=last_seqs(js).await[1] {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(env) = Envelope::from_message(&m.subject, &m.payload) else {
            continue;
        };
        if let Event::ModelTrained(t) = &env.event {
            out.push(format!("v{}: {}", t.version, t.scores_beside_the_rule(3)));
        }
    }
    out
}

async fn wait_kind(
    js: &async_nats::jetstream::Context,
    kind: &str,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let k = kinds(js).await;
        if k.iter().any(|x| x == kind) {
            return k;
        }
        if Instant::now() >= deadline {
            let scores = trained_scores(js).await;
            panic!("no {kind} within {limit:?}: {k:?}; trained: {scores:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trains_once_per_request_and_survives_a_restart() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let traces = loadshift_trace::load(&fixture(), None).unwrap();
    let mut envs = Vec::new();
    for t in &traces {
        for (i, r) in t.rows.iter().enumerate() {
            envs.push(Envelope::new(
                t.node.clone(),
                Event::TelemetrySample(r.to_sample(0, i as u64)),
            ));
        }
    }
    publish_all(&js, envs).await;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("brain");
    let log = dir.path().join("brain.log");
    let args = ["--retrain-every", "0", "--trees", "30"];
    let brain = Brain::start_with(&nats.url(), &store, &log, &args);
    brain.wait_consuming();
    publish_all(
        &js,
        [Envelope::new(
            node("operator"),
            Event::ModelTrainRequested(TrainRequested {
                requested_by: "test".into(),
                reason: None,
            }),
        )],
    )
    .await;
    wait_kind(&js, "model.trained", Duration::from_secs(120)).await;
    // The first model is always activated: each label already falls back
    // to the static rule where the forest lost on the validation rows.
    let trained = trained_events(&js).await;
    assert_eq!(trained.len(), 1);
    let t = &trained[0];
    assert!(t.onset.validation_samples > 0, "chosen on validation rows");
    let expected: &[&str] = &["model.train_requested", "model.trained", "model.activated"];
    wait_kind(&js, "model.activated", Duration::from_secs(30)).await;
    let k = kinds(&js).await;
    assert_eq!(
        k,
        expected,
        "scores {:?}\n{}",
        trained_scores(&js).await,
        brain.log_text()
    );
    // The brain folds its own events back.
    let last = last_seqs(&js).await;
    wait_applied(&store, last, Duration::from_secs(30));
    assert_eq!(brain.term(), Some(0));

    let brain = Brain::start_with(&nats.url(), &store, &log, &args);
    brain.wait_consuming();
    // Give a wrongly re-triggered training ample time to show.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log_text = brain.log_text();
    assert_eq!(brain.term(), Some(0));
    assert_eq!(kinds(&js).await.len(), expected.len(), "{log_text}");
    assert_eq!(
        log_text.matches("training a model").count(),
        1,
        "{log_text}"
    );

    // The trained event carries scores, features and the training range.
    let v = status(&store, &[]);
    assert_eq!(v["kinds"]["model.trained"], 1);
    let s = loadshift_brain::store::Store::open_existing(&store).unwrap();
    let state = loadshift_brain::training::ModelState::load(&s).unwrap();
    assert_eq!(state.active, 1);
    assert!(!state.pending());
    let m = loadshift_brain::training::load_model(&s, 1)
        .unwrap()
        .unwrap();
    assert!(m.matches_features());
}
