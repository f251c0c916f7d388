//! The publisher: drains the buffer into JetStream, in order, with many
//! publishes in flight and every one of them acknowledged.
//!
//! Waiting for each ack before sending the next would cap a replay at one
//! round trip per sample; instead up to `window` publishes are on the wire and
//! their acks are awaited oldest first. An event leaves the buffer only once
//! acknowledged. On any failure every unacknowledged event goes back to the
//! front of the buffer and is sent again with the same id, which JetStream's
//! duplicate window turns into a no-op for those that had been stored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use loadshift_events::connection::{self, NatsError};
use loadshift_events::stream::{self, StreamError, StreamSettings};
use loadshift_events::Envelope;

use crate::buffer::Buffer;

/// Longest pause between two attempts while NATS is away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Why the publisher gave up for good (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// A stream exists with another configuration: an operator must decide.
    #[error(transparent)]
    StreamConflict(StreamError),
}

/// Drains a [`Buffer`] into JetStream.
#[derive(Debug)]
pub struct Publisher {
    js: jetstream::Context,
    buffer: Arc<Buffer>,
    window: usize,
    streams: StreamSettings,
}

/// The oldest un-acknowledged publish first.
type InFlight = VecDeque<(
    Envelope,
    <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture,
)>;

impl Publisher {
    /// A publisher with at most `window` acks outstanding (capped so the
    /// buffer can still drop its oldest waiting event when full).
    pub fn new(
        js: jetstream::Context,
        buffer: Arc<Buffer>,
        window: usize,
        streams: StreamSettings,
    ) -> Self {
        let window = window.clamp(1, buffer.max_window());
        Self {
            js,
            buffer,
            window,
            streams,
        }
    }

    /// Declares the streams (retrying until NATS answers), then publishes
    /// until the buffer is closed and empty.
    ///
    /// # Errors
    /// [`PublisherError::StreamConflict`] when a stream exists with another
    /// configuration; connection problems are retried, never returned.
    pub async fn run(self) -> Result<(), PublisherError> {
        self.declare_streams().await?;
        let mut in_flight: InFlight = VecDeque::with_capacity(self.window);
        let mut backoff = MIN_BACKOFF;
        loop {
            let room = self.window - in_flight.len();
            if room > 0 {
                let batch = if in_flight.is_empty() {
                    match self.buffer.take(room).await {
                        Some(b) => b,
                        None => return Ok(()),
                    }
                } else {
                    self.buffer.try_take(room)
                };
                if let Err(e) = self.send_all(batch, &mut in_flight).await {
                    tracing::warn!("cannot send to NATS, will retry: {e}");
                    self.give_back(&mut in_flight);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            let Some((env, ack)) = in_flight.pop_front() else {
                continue;
            };
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(id = %env.id, "already stored (a retried publish)");
                    }
                    self.buffer.acked(1);
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    tracing::warn!(
                        unacked = in_flight.len() + 1,
                        "publish of {} not acknowledged ({e}); resending from it",
                        env.subject()
                    );
                    in_flight.push_front((env, Box::pin(std::future::pending())));
                    self.give_back(&mut in_flight);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends every event of `batch`; on failure the unsent rest joins the
    /// in-flight ones so [`Publisher::give_back`] returns them all in order.
    async fn send_all(
        &self,
        batch: Vec<Envelope>,
        in_flight: &mut InFlight,
    ) -> Result<(), NatsError> {
        let mut rest = batch.into_iter();
        while let Some(env) = rest.next() {
            match connection::send(&self.js, &env).await {
                Ok(ack) => in_flight.push_back((env, std::future::IntoFuture::into_future(ack))),
                // The contract refuses it (a value out of range, too large):
                // no retry can change that, and retrying would wedge the
                // buffer behind it. Said once, then counted as done.
                Err(e @ NatsError::Encode { .. }) => {
                    tracing::warn!("refusing an event no reader could use: {e}");
                    self.buffer.acked(1);
                }
                Err(e) => {
                    for env in std::iter::once(env).chain(rest) {
                        in_flight.push_back((env, Box::pin(std::future::pending())));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn give_back(&self, in_flight: &mut InFlight) {
        let events: Vec<Envelope> = in_flight.drain(..).map(|(env, _)| env).collect();
        self.buffer.requeue(events);
    }

    async fn declare_streams(&self) -> Result<(), PublisherError> {
        let mut backoff = MIN_BACKOFF;
        let mut attempts = 0u32;
        loop {
            match stream::declare(&self.js, &self.streams).await {
                Ok(()) => {
                    if attempts > 0 {
                        tracing::info!("streams declared; publishing");
                    }
                    return Ok(());
                }
                Err(e @ StreamError::Conflict { .. }) => {
                    return Err(PublisherError::StreamConflict(e))
                }
                Err(e) => {
                    // Say it once loudly, then quietly: NATS may be down for long.
                    if attempts == 0 {
                        tracing::warn!("cannot declare streams yet, sampling into the buffer and retrying: {e}");
                    } else {
                        tracing::debug!("declaring streams, attempt {attempts}: {e}");
                    }
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
