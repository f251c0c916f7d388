//! The log and the object store read by a second independent client, the
//! official NATS JavaScript client (`@nats-io/transport-node`,
//! `@nats-io/jetstream`, `@nats-io/obj` on node), against a real
//! nats-server: both streams' messages as plain JSON with their ids as
//! `Nats-Msg-Id`, and the CHECKPOINTS object store's listing. nats-py is the
//! first (tests/streams.rs); two clients in two languages reading the same
//! bytes is what "any client reads it as is" means.
//!
//! The packages are pinned by tests/js/package-lock.json and installed by
//! scripts/setup (`npm ci` into /opt/loadshift/js); LOADSHIFT_NODE_MODULES
//! points elsewhere, LOADSHIFT_NODE at another node binary.

use std::path::PathBuf;
use std::process::Command;

use loadshift_events::stream::{self, StreamSettings};
use loadshift_events::{connection, NodeName};
use loadshift_testkit::process::succeed;
use loadshift_testkit::NatsServer;

mod common;
use common::{assert_read_back, jetstream, node_session};

/// Where `npm ci` put the packages.
fn node_modules() -> PathBuf {
    std::env::var_os("LOADSHIFT_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/loadshift/js/node_modules"))
}

/// Runs tests/js/read_streams.js against `url` and returns its summary.
fn read_with_javascript(url: &str) -> serde_json::Value {
    let modules = node_modules();
    assert!(
        modules.join("@nats-io/jetstream").is_dir(),
        "{} has no @nats-io/jetstream; scripts/setup installs it (npm ci of events/tests/js)",
        modules.display()
    );
    let node = std::env::var("LOADSHIFT_NODE").unwrap_or_else(|_| "node".to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/read_streams.js");
    let out = succeed(
        Command::new(&node)
            .arg(script)
            .arg(url)
            .env("NODE_PATH", &modules),
        &format!("{node} read_streams.js (scripts/setup installs nodejs)"),
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}

#[tokio::test]
async fn the_javascript_client_reads_both_streams_and_the_object_store() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    let settings = StreamSettings::default();
    stream::declare(&js, &settings).await.expect("declare");

    let node = NodeName::new("node2").unwrap();
    let sent = node_session(&node, 4);
    for env in &sent {
        connection::publish(&js, env).await.expect("publish");
    }

    // An image in flight, as a source executor leaves it for the target.
    let store = stream::checkpoint_store(&js, &settings)
        .await
        .expect("object store");
    let image = vec![7u8; 3 * stream::CHECKPOINT_CHUNK_BYTES / 2];
    let mut reader: &[u8] = &image;
    store
        .put("migration-0193-counter", &mut reader)
        .await
        .expect("put an image");

    let seen = read_with_javascript(&server.url());

    let events = assert_read_back(&seen, &sent, "node2", 4);
    let left = events
        .iter()
        .find(|e| e["kind"] == "node.left")
        .expect("node.left read back");
    assert_eq!(left["stream"], "EVENTS");
    assert_eq!(
        left["payload_keys"],
        serde_json::json!(["reason", "samples"])
    );

    let objects = seen["objects"].as_array().expect("objects");
    assert_eq!(
        objects.len(),
        1,
        "the object store lists one image: {objects:?}"
    );
    assert_eq!(objects[0]["bucket"], stream::CHECKPOINTS);
    assert_eq!(objects[0]["name"], "migration-0193-counter");
    assert_eq!(objects[0]["size"], image.len());
}
