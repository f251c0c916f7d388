//! Reading both streams into the projection.
//!
//! The projection lives in memory, so there is nothing to resume from: on
//! start the webui replays each stream from its first message with an
//! ordered consumer (ephemeral, no acks, recreated by the client after a
//! gap or a reconnect), then keeps following it. It never creates durable
//! state on the server and never competes with the brain's consumers.

use std::pin::pin;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::{StreamExt, TryStreamExt};

use crate::projection::{Incoming, StreamKind};
use crate::Shared;

/// Why following the streams stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// JetStream refused a request
    #[error("JetStream {action} on stream {stream}: {message}")]
    Nats {
        /// What was attempted.
        action: &'static str,
        /// The stream.
        stream: &'static str,
        /// What the server or client said.
        message: String,
    },
    /// a message stream ended or failed for good
    #[error("reading stream {stream} failed: {message}")]
    Read {
        /// The stream.
        stream: &'static str,
        /// What the client said.
        message: String,
    },
}

async fn ordered(
    js: &jetstream::Context,
    kind: StreamKind,
) -> Result<jetstream::consumer::pull::Ordered, ConsumeError> {
    let err = |action: &'static str| {
        move |e: &dyn std::fmt::Display| ConsumeError::Nats {
            action,
            stream: kind.name(),
            message: e.to_string(),
        }
    };
    let stream = js
        .get_stream(kind.name())
        .await
        .map_err(|e| err("get stream")(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            description: Some("loadshift-webui projection (in memory)".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| err("create consumer")(&e))?;
    consumer.messages().await.map_err(|e| err("pull")(&e))
}

/// Folds both streams into `st` from their first message until the process
/// stops; each batch of ready messages is one write of the projection and one
/// notification of the live views.
///
/// # Errors
/// [`ConsumeError`] when a consumer cannot be created or its stream fails
/// for good (the ordered consumer already retries transient failures).
pub async fn run(js: jetstream::Context, st: Shared) -> Result<(), ConsumeError> {
    let telemetry = ordered(&js, StreamKind::Telemetry)
        .await?
        .map_ok(|m| (StreamKind::Telemetry, m))
        .map_err(|e| (StreamKind::Telemetry, e.to_string()));
    let events = ordered(&js, StreamKind::Events)
        .await?
        .map_ok(|m| (StreamKind::Events, m))
        .map_err(|e| (StreamKind::Events, e.to_string()));
    tracing::info!("replaying TELEMETRY and EVENTS from the start");
    let merged = futures::stream::select(telemetry, events);
    let mut chunks = pin!(merged.ready_chunks(1024));
    while let Some(chunk) = chunks.next().await {
        let mut msgs = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item {
                Ok(m) => msgs.push(m),
                Err((kind, message)) => {
                    return Err(ConsumeError::Read {
                        stream: kind.name(),
                        message,
                    })
                }
            }
        }
        st.update(|p| {
            for (kind, m) in &msgs {
                let Ok(info) = m.info() else {
                    tracing::warn!(subject = %m.subject, "message without JetStream metadata; ignored");
                    continue;
                };
                p.apply(Incoming {
                    stream: *kind,
                    seq: info.stream_sequence,
                    subject: m.subject.as_str(),
                    payload: &m.payload,
                    pending: info.pending,
                });
            }
        });
    }
    Err(ConsumeError::Read {
        stream: "TELEMETRY+EVENTS",
        message: "the message streams ended".into(),
    })
}
