//! An event the contract refuses (here a node joining with -4 cores) is
//! dropped by the agent's publisher with a warning instead of being retried
//! forever: the events behind it are published, and the buffer drains.

use std::sync::Arc;

use loadshift_agent::buffer::Buffer;
use loadshift_agent::publisher::Publisher;
use loadshift_events::payload::NodeJoined;
use loadshift_events::telemetry::{Cpu, Memory};
use loadshift_events::{Envelope, Event, NodeName, Sample};
use loadshift_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_event_does_not_wedge_the_buffer() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let node = NodeName::new("node2").unwrap();
    let buffer = Arc::new(Buffer::new(100));
    buffer
        .push_wait(Envelope::new(
            node.clone(),
            Event::NodeJoined(NodeJoined {
                source: "host".into(),
                capacity_cores: -4.0,
                memory_bytes: 0,
                agent_version: "0".into(),
            }),
        ))
        .await;
    let sample = Envelope::new(
        node.clone(),
        Event::TelemetrySample(Sample::new(
            chrono::Utc::now(),
            0,
            Cpu {
                usage_pct: 10.0,
                capacity_cores: 2.0,
                per_core_pct: Vec::new(),
            },
            Memory {
                used_bytes: 1,
                total_bytes: 2,
            },
        )),
    );
    buffer.push_wait(sample.clone()).await;
    buffer.close();
    let publisher = Publisher::new(js.clone(), buffer.clone(), 8, Default::default());
    tokio::time::timeout(std::time::Duration::from_secs(60), publisher.run())
        .await
        .expect("the publisher drains the buffer")
        .unwrap();
    assert_eq!(buffer.len(), 0);
    let mut telemetry = js.get_stream("TELEMETRY").await.unwrap();
    assert_eq!(telemetry.info().await.unwrap().state.messages, 1);
    let mut events = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 0);
}
