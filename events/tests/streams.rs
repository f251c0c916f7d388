//! The contract against a real nats-server: streams declared idempotently,
//! conflicts reported, publishes deduplicated by event id, and the log readable
//! by an independent client (nats-py) as plain JSON.

use std::process::Command;

use loadshift_events::stream::{self, StreamError, StreamSettings};
use loadshift_events::{connection, Envelope, Event, NodeName};
use loadshift_testkit::NatsServer;

mod common;
use common::{assert_read_back, declared, jetstream, node_session, sample};

async fn messages(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("stream exists")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

#[tokio::test]
async fn declaring_twice_is_harmless_and_a_conflict_is_named() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    let settings = StreamSettings::default();
    stream::declare(&js, &settings)
        .await
        .expect("first declare");
    stream::declare(&js, &settings)
        .await
        .expect("second declare");

    let other = StreamSettings {
        telemetry_max_age: std::time::Duration::from_secs(3600),
        ..settings
    };
    let err = stream::declare(&js, &other).await.expect_err("conflict");
    let msg = err.to_string();
    assert!(matches!(err, StreamError::Conflict { .. }), "{msg}");
    assert!(
        msg.contains("TELEMETRY") && msg.contains("max_age"),
        "{msg}"
    );
    assert!(msg.contains("nats stream info TELEMETRY"), "{msg}");
}

#[tokio::test]
async fn a_retried_publish_is_stored_once() {
    let server = NatsServer::start();
    let js = declared(&server).await;
    let env = Envelope::new(
        NodeName::new("n1").unwrap(),
        Event::TelemetrySample(sample(0)),
    );
    let first = connection::publish(&js, &env).await.unwrap();
    let again = connection::publish(&js, &env).await.unwrap();
    assert!(!first.duplicate);
    assert!(
        again.duplicate,
        "the server recognised the retry by Nats-Msg-Id"
    );
    assert_eq!(messages(&js, stream::TELEMETRY).await, 1);
}

#[tokio::test]
async fn an_independent_client_reads_the_log_as_plain_json() {
    let server = NatsServer::start();
    let js = declared(&server).await;
    let node = NodeName::new("node2").unwrap();
    let sent = node_session(&node, 5);
    for env in &sent {
        connection::publish(&js, env).await.unwrap();
    }

    let python = std::env::var("LOADSHIFT_PYTHON")
        .unwrap_or_else(|_| "/opt/loadshift/pyenv/bin/python".to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/read_streams.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(server.url())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}); scripts/setup installs nats-py there")
        });
    assert!(
        out.status.success(),
        "read_streams.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");

    let events = assert_read_back(&seen, &sent, "node2", 5);
    assert_eq!(
        seen["streams"]["TELEMETRY"]["subjects"],
        serde_json::json!(["telemetry.>"])
    );
    let sample_keys = &events
        .iter()
        .find(|e| e["kind"] == "telemetry.sample")
        .expect("a sample")["payload_keys"];
    assert_eq!(
        sample_keys,
        &serde_json::json!(["at", "cpu", "memory", "seq"])
    );
}
