//! The webui's projection keeps following the log across a NATS restart
//! (it used to exit with "consumer not found"), without skipping or
//! repeating an event, and its consumer stops when the shutdown fires.

use std::time::Duration;

use async_nats::jetstream;
use loadshift_events::connection;
use loadshift_events::payload::NodeJoined;
use loadshift_events::shutdown::{Shutdown, Signal};
use loadshift_events::{Envelope, Event, NodeName};
use loadshift_testkit::NatsServer;
use loadshift_webui::{consume, AppState, Settings, Shared};

/// A generous bound on waiting for the projection; only a stuck consumer
/// reaches it.
const PATIENCE: Duration = Duration::from_secs(120);

fn joined(node: &str) -> Envelope {
    Envelope::new(
        NodeName::new(node).unwrap(),
        Event::NodeJoined(NodeJoined {
            source: "test".into(),
            capacity_cores: 2.0,
            memory_bytes: 1 << 30,
            agent_version: "test".into(),
        }),
    )
}

/// Publishes `env`, retrying while the client reconnects (its id makes a
/// retry harmless).
async fn publish(js: &jetstream::Context, env: &Envelope) {
    while connection::publish(js, env).await.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn seqs_when(st: &Shared, n: usize) -> Vec<u64> {
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let seqs: Vec<u64> = st.read().events_log.iter().map(|e| e.seq).collect();
            if seqs.len() >= n {
                return seqs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    waited.expect("the projection stopped following the log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_follows_the_log_across_a_nats_restart() {
    let mut server = NatsServer::start();
    let js = loadshift_testkit::client::declared(&server.url(), "webui-test").await;
    publish(&js, &joined("node1")).await;
    publish(&js, &joined("node2")).await;

    let st = AppState::empty(Settings::default());
    let shutdown: Shutdown = Shutdown::new();
    let consumer = tokio::spawn(consume::run(js.clone(), st.clone(), shutdown.listener()));
    assert_eq!(seqs_when(&st, 2).await, vec![1, 2]);

    server.restart();
    publish(&js, &joined("node3")).await;
    publish(&js, &joined("node4")).await;
    assert_eq!(seqs_when(&st, 4).await, vec![1, 2, 3, 4]);

    shutdown.trigger().fire(Signal::Terminate);
    consumer
        .await
        .expect("the consumer task")
        .expect("a stop is not an error");
    shutdown.completed().await;
}
