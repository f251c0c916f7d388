//! What the contract's server tests share: a JetStream context on a test
//! server, a node's short life as events, and the check that a foreign
//! client read every one of them back. The nats-py and JavaScript tests read
//! the same log, so they build it and check it with the same code.

#![allow(dead_code)] // each test binary uses its own part of this module

use loadshift_events::payload::{NodeJoined, NodeLeft};
use loadshift_events::stream::{self, StreamSettings};
use loadshift_events::telemetry::{Cpu, Memory, Sample};
use loadshift_events::{Envelope, Event, NodeName};
use loadshift_testkit::NatsServer;

/// A JetStream context on `server`.
pub async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
}

/// A JetStream context on `server` with both streams declared as a service
/// declares them.
pub async fn declared(server: &NatsServer) -> async_nats::jetstream::Context {
    let js = jetstream(server).await;
    stream::declare(&js, &StreamSettings::default())
        .await
        .expect("declare the streams");
    js
}

/// A minimal sample: only the fields every source measures.
pub fn sample(seq: u64) -> Sample {
    Sample::new(
        chrono::Utc::now(),
        seq,
        Cpu {
            usage_pct: 10.0 + seq as f32,
            capacity_cores: 2.0,
            per_core_pct: vec![],
        },
        Memory {
            used_bytes: 1 << 20,
            total_bytes: 1 << 30,
        },
    )
}

/// `node` joins, sends `samples` samples and leaves: two events for EVENTS
/// and `samples` for TELEMETRY.
pub fn node_session(node: &NodeName, samples: u64) -> Vec<Envelope> {
    let mut sent = vec![Envelope::new(
        node.clone(),
        Event::NodeJoined(NodeJoined {
            source: "host".into(),
            capacity_cores: 2.0,
            memory_bytes: 1 << 30,
            agent_version: "test".into(),
        }),
    )];
    for seq in 0..samples {
        sent.push(Envelope::new(
            node.clone(),
            Event::TelemetrySample(sample(seq)),
        ));
    }
    sent.push(Envelope::new(
        node.clone(),
        Event::NodeLeft(NodeLeft {
            reason: "SIGTERM".into(),
            samples,
        }),
    ));
    sent
}

/// Checks a foreign client's summary of the log `sent` (a [`node_session`]
/// of `node` with `samples` samples) made: both streams' counts and settings,
/// and every event read back with its id as `Nats-Msg-Id`, its subject,
/// kind, node and schema. Returns the events as the client read them.
pub fn assert_read_back<'a>(
    seen: &'a serde_json::Value,
    sent: &[Envelope],
    node: &str,
    samples: u64,
) -> &'a [serde_json::Value] {
    let streams = &seen["streams"];
    assert_eq!(streams["TELEMETRY"]["messages"], samples);
    assert_eq!(streams["EVENTS"]["messages"], 2);
    assert_eq!(
        streams["EVENTS"]["subjects"],
        serde_json::json!(["migration.>", "model.>", "node.>", "workload.>"])
    );
    assert_eq!(streams["EVENTS"]["storage"], "file");
    let events = seen["events"].as_array().expect("events");
    assert_eq!(events.len(), sent.len());
    for env in sent {
        let id = env.id.to_string();
        let e = events
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("event {id} not read back"));
        assert_eq!(e["msg_id"], id, "Nats-Msg-Id is the event id");
        assert_eq!(e["subject"], env.subject());
        assert_eq!(e["kind"], env.kind().as_str());
        assert_eq!(e["node"], node);
        assert_eq!(e["schema"], 1);
    }
    events
}
