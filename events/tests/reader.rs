//! The stream reader against a real nats-server: large events do not make
//! it a slow consumer, and a server restart neither ends it nor makes it skip
//! or repeat a message.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use loadshift_events::reader::{self, ReaderConfig, Start};
use loadshift_events::stream::StreamId;
use loadshift_testkit::NatsServer;

/// A generous bound on how long a message may take to arrive; a test only
/// fails on it when the reader is truly stuck, never because it is slow.
const PATIENCE: Duration = Duration::from_secs(120);

async fn jetstream(server: &NatsServer) -> jetstream::Context {
    loadshift_testkit::client::declared(&server.url(), "reader-test").await
}

async fn publish_raw(js: &jetstream::Context, subject: &str, payload: Vec<u8>) -> u64 {
    js.publish(subject.to_string(), payload.into())
        .await
        .expect("send")
        .await
        .expect("stored")
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_large_events_reach_a_reader_that_reads_slowly() {
    const SIZE: usize = 7 * 1024 * 1024;
    let server = NatsServer::start_with_max_payload(Some(8 * 1024 * 1024));
    let js = jetstream(&server).await;
    publish_raw(&js, "model.small", b"{}".to_vec()).await;
    for i in 0..20u8 {
        publish_raw(&js, "model.large", vec![i; SIZE]).await;
    }
    publish_raw(&js, "model.small", b"{}".to_vec()).await;

    // All of it as `ls` and a replay read it.
    let mut seen = Vec::new();
    let n = reader::read_existing(
        &js,
        ReaderConfig::ephemeral(StreamId::Events, Start::First, "test"),
        PATIENCE,
        |d| seen.push((d.seq, d.message.payload.len())),
    )
    .await
    .expect("read the stream to its end");
    assert_eq!(n, 22);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=22).collect::<Vec<_>>()
    );
    assert_eq!(seen.iter().filter(|s| s.1 == SIZE).count(), 20);

    // A follower that takes its time between messages still gets each one
    // once, in order: the server never pushes more than a batch's bytes.
    let mut follower = reader::open(
        &js,
        ReaderConfig::ephemeral(StreamId::Events, Start::First, "test").batch(500),
    )
    .await
    .expect("open a follower");
    for want in 1..=22u64 {
        let d = tokio::time::timeout(PATIENCE, follower.next())
            .await
            .expect("the follower stalled")
            .expect("the reader never ends by itself");
        assert_eq!(d.seq, want);
        // Slow on purpose: the old readers let the server push everything
        // meanwhile and were cut off as slow consumers.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_rides_out_a_server_restart_without_skipping_or_repeating() {
    let mut server = NatsServer::start();
    let js = jetstream(&server).await;
    for i in 0..5 {
        publish_raw(&js, "model.before", format!("{i}").into_bytes()).await;
    }
    let mut r = reader::open(
        &js,
        ReaderConfig::ephemeral(StreamId::Events, Start::First, "test")
            .filter(["model.>"])
            .batch(2),
    )
    .await
    .expect("open the reader");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(PATIENCE, r.next())
            .await
            .expect("first messages")
            .expect("reader open");
        seqs.push(d.seq);
    }

    server.restart();
    // The client reconnects by itself; publishing waits until it has.
    let mut stored = 5;
    for i in 0..5 {
        let sent = loop {
            let msg = PublishMessage::build()
                .payload(format!("{i}").into())
                .message_id(format!("after-{i}"));
            match js.send_publish("model.after".to_string(), msg).await {
                Ok(ack) => match ack.await {
                    Ok(a) => break a.sequence,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                },
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        stored = stored.max(sent);
    }
    while seqs.last().copied().unwrap_or(0) < stored {
        let d = tokio::time::timeout(PATIENCE, r.next())
            .await
            .expect("the reader did not resume after the restart")
            .expect("reader open");
        seqs.push(d.seq);
    }
    assert_eq!(seqs, (1..=stored).collect::<Vec<_>>());
    assert_eq!(stored, 10, "a retried publish was stored twice");
}
