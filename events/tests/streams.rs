//! The contract against a real nats-server: streams declared idempotently,
//! conflicts reported, publishes deduplicated by event id, and the log readable
//! by an independent client (nats-py) as plain JSON.

use std::process::Command;

use loadshift_events::payload::{NodeJoined, NodeLeft};
use loadshift_events::stream::{self, StreamError, StreamSettings};
use loadshift_events::telemetry::{Cpu, Memory, Sample};
use loadshift_events::{connection, Envelope, Event, NodeName};
use loadshift_testkit::NatsServer;

async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
}

fn sample(seq: u64) -> Sample {
    Sample {
        at: chrono::Utc::now(),
        seq,
        cpu: Cpu {
            usage_pct: 10.0 + seq as f32,
            capacity_cores: 2.0,
            per_core_pct: vec![],
        },
        memory: Memory {
            used_bytes: 1 << 20,
            total_bytes: 1 << 30,
        },
        swap: None,
        load: None,
        net: None,
        disk: None,
        processes: None,
        psi: None,
    }
}

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
    let js = jetstream(&server).await;
    stream::declare(&js, &StreamSettings::default())
        .await
        .unwrap();
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
    let js = jetstream(&server).await;
    stream::declare(&js, &StreamSettings::default())
        .await
        .unwrap();
    let node = NodeName::new("node2").unwrap();
    let mut sent = vec![Envelope::new(
        node.clone(),
        Event::NodeJoined(NodeJoined {
            source: "host".into(),
            capacity_cores: 2.0,
            memory_bytes: 1 << 30,
            agent_version: "test".into(),
        }),
    )];
    for seq in 0..5 {
        sent.push(Envelope::new(
            node.clone(),
            Event::TelemetrySample(sample(seq)),
        ));
    }
    sent.push(Envelope::new(
        node.clone(),
        Event::NodeLeft(NodeLeft {
            reason: "SIGTERM".into(),
            samples: 5,
        }),
    ));
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

    let streams = &seen["streams"];
    assert_eq!(streams["TELEMETRY"]["messages"], 5);
    assert_eq!(streams["EVENTS"]["messages"], 2);
    assert_eq!(
        streams["TELEMETRY"]["subjects"],
        serde_json::json!(["telemetry.>"])
    );
    assert_eq!(
        streams["EVENTS"]["subjects"],
        serde_json::json!(["migration.>", "model.>", "node.>", "workload.>"])
    );
    assert_eq!(streams["EVENTS"]["storage"], "file");

    let events = seen["events"].as_array().expect("events");
    assert_eq!(events.len(), sent.len());
    for env in &sent {
        let id = env.id.to_string();
        let e = events
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("event {id} not read back"));
        assert_eq!(e["msg_id"], id, "Nats-Msg-Id is the event id");
        assert_eq!(e["subject"], env.subject());
        assert_eq!(e["kind"], env.kind().as_str());
        assert_eq!(e["node"], "node2");
        assert_eq!(e["schema"], 1);
    }
    let sample_keys = &events
        .iter()
        .find(|e| e["kind"] == "telemetry.sample")
        .expect("a sample")["payload_keys"];
    assert_eq!(
        sample_keys,
        &serde_json::json!(["at", "cpu", "memory", "seq"])
    );
}
