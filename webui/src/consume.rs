//! Reading both streams into the projection.
//!
//! The projection lives in memory, so there is nothing to resume from: on
//! start the webui replays each stream from its first message with the
//! contract's ephemeral readers ([`loadshift_events::reader`]: bounded pulls,
//! re-created after the last message delivered when NATS restarts), then
//! keeps following them. It never creates durable state on the server and
//! never competes with the brain's consumers.

use std::pin::pin;

use async_nats::jetstream;
use futures::StreamExt;
use loadshift_events::connection::NatsError;
use loadshift_events::reader::{self, ReaderConfig, Start};
use loadshift_events::shutdown::Listener;

use crate::projection::{Incoming, StreamKind};
use crate::Shared;

/// Why following the streams stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// a reader could not be opened
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// a reader's task ended (it only does when it panicked)
    #[error("the readers of TELEMETRY and EVENTS stopped")]
    Ended,
}

async fn open(js: &jetstream::Context, kind: StreamKind) -> Result<reader::Reader, NatsError> {
    reader::open(
        js,
        ReaderConfig::ephemeral(kind, Start::First, "loadshift-webui projection (in memory)"),
    )
    .await
}

/// Folds both streams into `st` from their first message until `shutdown`
/// fires; each batch of ready messages is one write of the projection and
/// one notification of the live views.
///
/// # Errors
/// [`ConsumeError`] when a reader cannot be opened (a NATS restart later is
/// ridden out by the readers themselves).
pub async fn run(
    js: jetstream::Context,
    st: Shared,
    mut shutdown: Listener,
) -> Result<(), ConsumeError> {
    let telemetry = open(&js, StreamKind::Telemetry).await?;
    let events = open(&js, StreamKind::Events).await?;
    tracing::info!("replaying TELEMETRY and EVENTS from the start");
    let merged = futures::stream::select(telemetry, events);
    let mut chunks = pin!(merged.ready_chunks(1024));
    loop {
        let chunk = tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            c = chunks.next() => c.ok_or(ConsumeError::Ended)?,
        };
        st.update(|p| {
            for d in &chunk {
                p.apply(Incoming {
                    stream: d.stream,
                    seq: d.seq,
                    subject: d.message.subject.as_str(),
                    payload: &d.message.payload,
                    pending: d.pending,
                });
            }
        });
    }
}
