//! Reading a stream: from its first message, from a sequence, or from now on,
//! in a way no writer and no server restart can stall.
//!
//! Every reader of the log (the brain's fold and its planner, the webui's
//! projection, the executor, the CLI's `ls`, `status`, `events tail` and
//! `--wait`) goes through [`open`]. It exists because the readers each had
//! their own consumer code, and each failed the same ways: twenty 7 MB events
//! made them slow consumers (the server pushed more than a client may hold
//! and cut them off), and a NATS restart ended them ("consumer not found").
//!
//! The reader:
//! - pulls in batches bounded in messages *and bytes*
//!   ([`ReaderConfig::batch_messages`], [`batch_bytes`]), and asks for the
//!   next batch only when half of the last one is consumed, so at most about
//!   one and a half batches are in flight whatever the size of the events;
//! - hands messages over through a bounded channel (in chunks of what was
//!   ready together), so a slow caller slows the pulls, never the server's
//!   view of the connection;
//! - remembers the last stream sequence it delivered and, when the consumer
//!   fails for any reason (server restart, consumer deleted, missed
//!   heartbeats, a gap in delivery), re-creates it right after that sequence,
//!   with a growing pause between attempts: nothing is skipped or repeated.
//!
//! Dropping the [`Reader`] stops its task and, for an ephemeral consumer,
//! lets the server forget it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::connection::NatsError;
use crate::stream::StreamId;

/// The fewest bytes a pull batch may carry. Large enough for thousands of
/// small events per request; small against nats-server's per-connection
/// limit of 64 MB pending, which is what a slow consumer exceeds.
pub const MIN_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How long a pull request waits on the server for messages before it is
/// renewed; heartbeats every [`HEARTBEAT`] tell a live but idle consumer from
/// a dead one.
const EXPIRES: Duration = Duration::from_secs(30);
/// See [`EXPIRES`].
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Most messages handed over at once: what was ready together goes in one
/// channel send, which keeps the hand-over cheap on a fast stream.
const HANDOVER_CHUNK: usize = 256;
/// Longest pause between two attempts to re-create a lost consumer.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message the stream holds.
    First,
    /// The first message published after the reader is opened.
    New,
    /// The message after this sequence (a consumer that applied up to it).
    After(u64),
}

/// How the consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No acks (an ephemeral reader: the CLI, the webui, a replay).
    None,
    /// Acking a message acknowledges all before it (the brain acks the last
    /// message of each committed batch).
    All,
    /// Each message on its own (the executor acks each applied step).
    Explicit,
}

/// What to read and how.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// The stream.
    pub stream: StreamId,
    /// Subjects to keep (empty: all of the stream).
    pub filter: Vec<String>,
    /// Where to start.
    pub start: Start,
    /// A durable consumer's name (`None`: ephemeral). A durable consumer is
    /// deleted and re-created at start, positioned by the caller's own record
    /// of what it applied, never by the server's ack floor.
    pub durable: Option<String>,
    /// How messages are acknowledged.
    pub acks: Acks,
    /// Shown in `nats consumer info`, so an operator knows who reads.
    pub description: String,
    /// Most messages per pull request (and the size of the hand-over channel).
    pub batch_messages: usize,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Most unacknowledged messages the server lets out.
    pub max_ack_pending: i64,
}

impl ReaderConfig {
    /// An ephemeral, unacknowledged reader of all of `stream` from `start`.
    pub fn ephemeral(stream: StreamId, start: Start, description: impl Into<String>) -> Self {
        Self {
            stream,
            filter: Vec::new(),
            start,
            durable: None,
            acks: Acks::None,
            description: description.into(),
            batch_messages: 1000,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: -1,
        }
    }

    /// Keeps only the subjects matching `filter` (`>` keeps all).
    pub fn filter(mut self, filter: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.filter = filter
            .into_iter()
            .map(Into::into)
            .filter(|f: &String| f != ">")
            .collect();
        self
    }

    /// Reads through the durable consumer `name`, acknowledging as `acks` says.
    pub fn durable(mut self, name: impl Into<String>, acks: Acks) -> Self {
        self.durable = Some(name.into());
        self.acks = acks;
        self
    }

    /// Pulls at most `n` messages per request.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch_messages = n.max(1);
        self
    }
}

/// One message as the reader hands it over.
#[derive(Debug)]
pub struct Delivery {
    /// The stream it came from.
    pub stream: StreamId,
    /// Its stream sequence.
    pub seq: u64,
    /// How many messages the consumer still had to deliver after this one.
    pub pending: u64,
    /// The message itself (subject, payload; ack it when acks are on).
    pub message: jetstream::Message,
}

/// A running reader: a [`Stream`] of [`Delivery`] that never ends by itself.
#[derive(Debug)]
pub struct Reader {
    rx: mpsc::Receiver<Vec<Delivery>>,
    ready: std::vec::IntoIter<Delivery>,
    pending_at_open: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// How many messages the consumer had to deliver when it was created:
    /// zero means there was nothing to read yet.
    pub fn pending_at_open(&self) -> u64 {
        self.pending_at_open
    }
}

impl Stream for Reader {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            if let Some(d) = self.ready.next() {
                return Poll::Ready(Some(d));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.ready = chunk.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bytes one pull batch may carry on this connection: at least
/// [`MIN_BATCH_BYTES`], and always more than the server's `max_payload`, so
/// that the largest message the server accepts can be delivered (a message
/// larger than a batch's bytes would never be).
pub fn batch_bytes(js: &jetstream::Context) -> usize {
    let max_payload = js.client().server_info().max_payload;
    MIN_BATCH_BYTES.max(max_payload.saturating_mul(2))
}

/// The last sequence `stream` holds now (0 when it is empty).
///
/// # Errors
/// [`NatsError::Request`] when the stream cannot be asked.
pub async fn last_sequence(js: &jetstream::Context, stream: StreamId) -> Result<u64, NatsError> {
    let name = stream.name();
    let mut s = js
        .get_stream(name)
        .await
        .map_err(NatsError::map("look up the stream", name))?;
    let info = s
        .info()
        .await
        .map_err(NatsError::map("ask for stream info", name))?;
    Ok(info.state.last_sequence)
}

/// Opens a reader. The first consumer is created before this returns, so a
/// missing stream or a refused configuration is reported at once; later
/// failures are ridden out by re-creating the consumer.
///
/// # Errors
/// [`NatsError::Request`] when the stream or the consumer cannot be had.
pub async fn open(js: &jetstream::Context, cfg: ReaderConfig) -> Result<Reader, NatsError> {
    let mut pump = Pump {
        js: js.clone(),
        batch_bytes: batch_bytes(js),
        last: 0,
        cfg,
    };
    if let Start::New = pump.cfg.start {
        pump.cfg.start = Start::After(last_sequence(js, pump.cfg.stream).await?);
    }
    if let Start::After(seq) = pump.cfg.start {
        pump.last = seq;
    }
    let (consumer, pending_at_open) = pump.create().await?;
    let messages = pump.pull(&consumer).await?;
    let (tx, rx) = mpsc::channel((pump.cfg.batch_messages / HANDOVER_CHUNK).max(2));
    let task = tokio::spawn(pump.run(messages, tx));
    Ok(Reader {
        rx,
        ready: Vec::new().into_iter(),
        pending_at_open,
        task,
    })
}

/// The task behind a [`Reader`].
struct Pump {
    js: jetstream::Context,
    cfg: ReaderConfig,
    batch_bytes: usize,
    /// The last stream sequence handed over (or the one to start after).
    last: u64,
}

impl Pump {
    /// (Re)creates the consumer right after [`Pump::last`]; returns it and
    /// how many messages it has to deliver.
    async fn create(&self) -> Result<(jetstream::consumer::PullConsumer, u64), NatsError> {
        let name = self.cfg.stream.name();
        let stream = self
            .js
            .get_stream(name)
            .await
            .map_err(NatsError::map("look up the stream", name))?;
        if let Some(durable) = &self.cfg.durable {
            // Not found is the normal case; anything else shows up again,
            // with the server's words, when creating.
            let _ = stream.delete_consumer(durable).await;
        }
        let deliver_policy = if self.last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.last + 1,
            }
        };
        let ack_policy = match self.cfg.acks {
            Acks::None => AckPolicy::None,
            Acks::All => AckPolicy::All,
            Acks::Explicit => AckPolicy::Explicit,
        };
        // One filter travels in the API subject
        // (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), where the
        // server's permissions can confine a role to its own subjects.
        let (filter_subject, filter_subjects) = match self.cfg.filter.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let mut consumer = stream
            .create_consumer(pull::Config {
                durable_name: self.cfg.durable.clone(),
                description: Some(self.cfg.description.clone()),
                filter_subject,
                filter_subjects,
                deliver_policy,
                ack_policy,
                ack_wait: self.cfg.ack_wait,
                max_ack_pending: self.cfg.max_ack_pending,
                inactive_threshold: if self.cfg.durable.is_none() {
                    Duration::from_secs(60)
                } else {
                    Duration::ZERO
                },
                ..Default::default()
            })
            .await
            .map_err(NatsError::map("create a consumer", name))?;
        let pending = consumer
            .info()
            .await
            .map(|i| i.num_pending)
            .map_err(NatsError::map("ask for consumer info", name))?;
        Ok((consumer, pending))
    }

    async fn pull(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
    ) -> Result<pull::Stream, NatsError> {
        consumer
            .stream()
            .max_messages_per_batch(self.cfg.batch_messages)
            .max_bytes_per_batch(self.batch_bytes)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await
            .map_err(NatsError::map("pull messages", self.cfg.stream.name()))
    }

    async fn run(mut self, mut messages: pull::Stream, tx: mpsc::Sender<Vec<Delivery>>) {
        loop {
            let why = match self.drain(&mut messages, &tx).await {
                Some(why) => why,
                None => return,
            };
            tracing::warn!(
                stream = self.cfg.stream.name(),
                after = self.last,
                reason = %why,
                "reader lost its consumer; re-creating it after the last sequence delivered"
            );
            messages = match self.recreate(&tx).await {
                Some(m) => m,
                None => return,
            };
        }
    }

    /// Hands messages over until the consumer fails (returns why) or the
    /// reader is dropped (returns `None`). Messages that are ready together
    /// go over in one hand-over, so a fast stream costs one wake-up per
    /// chunk, not per message.
    async fn drain(
        &mut self,
        messages: &mut pull::Stream,
        tx: &mpsc::Sender<Vec<Delivery>>,
    ) -> Option<String> {
        let mut expected_delivery: Option<u64> = None;
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return None,
                m = messages.next() => m,
            };
            let mut chunk = Vec::new();
            let mut failed = self.accept(next, &mut expected_delivery, &mut chunk);
            while failed.is_none() && chunk.len() < HANDOVER_CHUNK {
                match messages.next().now_or_never() {
                    Some(next) => failed = self.accept(next, &mut expected_delivery, &mut chunk),
                    None => break,
                }
            }
            if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                return None;
            }
            if failed.is_some() {
                return failed;
            }
        }
    }

    /// Adds one pulled item to `chunk`; returns why the consumer must be
    /// re-created when it must.
    fn accept(
        &mut self,
        next: Option<Result<jetstream::Message, pull::MessagesError>>,
        expected_delivery: &mut Option<u64>,
        chunk: &mut Vec<Delivery>,
    ) -> Option<String> {
        let message = match next {
            None => return Some("the message stream ended".into()),
            Some(Err(e)) => return Some(e.to_string()),
            Some(Ok(m)) => m,
        };
        let (seq, delivery, pending) = match message.info() {
            Ok(i) => (i.stream_sequence, i.consumer_sequence, i.pending),
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e,
                    "message without JetStream metadata; ignored");
                return None;
            }
        };
        // Deliveries are numbered 1, 2, 3... by the consumer; a jump means
        // the client dropped one, so start again after the last good one.
        if let Some(due) = *expected_delivery {
            if due != delivery {
                return Some(format!("delivery {delivery} arrived where {due} was due"));
            }
        }
        *expected_delivery = Some(delivery + 1);
        if seq > self.last {
            self.last = seq;
            chunk.push(Delivery {
                stream: self.cfg.stream,
                seq,
                pending,
                message,
            });
        }
        None
    }

    /// Re-creates the consumer until it works or the reader is dropped.
    async fn recreate(&self, tx: &mpsc::Sender<Vec<Delivery>>) -> Option<pull::Stream> {
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tx.closed() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
            let attempt = async {
                let (consumer, _) = self.create().await?;
                self.pull(&consumer).await
            };
            match attempt.await {
                Ok(m) => {
                    tracing::info!(
                        stream = self.cfg.stream.name(),
                        after = self.last,
                        "reader resumed"
                    );
                    return Some(m);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "consumer not re-created yet");
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }
}

/// Reads what `cfg.stream` holds now, from `cfg.start` up to its last
/// message at the time of the call, handing each message to `each`; returns
/// how many were read.
///
/// It ends at the last sequence the stream held when the reader was opened,
/// or earlier when nothing is pending any more (the last messages matched no
/// filter or were deleted since).
///
/// # Errors
/// [`NatsError::Request`] when the stream cannot be read, and
/// [`NatsError::Stalled`] when no message arrives for `idle` before the end.
pub async fn read_existing(
    js: &jetstream::Context,
    cfg: ReaderConfig,
    idle: Duration,
    mut each: impl FnMut(Delivery),
) -> Result<u64, NatsError> {
    let name = cfg.stream.name();
    let last = last_sequence(js, cfg.stream).await?;
    let mut reader = open(js, cfg).await?;
    if last == 0 || reader.pending_at_open() == 0 {
        return Ok(0);
    }
    let mut n = 0;
    let mut at = 0;
    loop {
        match tokio::time::timeout(idle, reader.next()).await {
            Ok(Some(d)) => {
                at = d.seq;
                let done = d.pending == 0 || d.seq >= last;
                each(d);
                n += 1;
                if done {
                    return Ok(n);
                }
            }
            Ok(None) | Err(_) => {
                return Err(NatsError::Stalled {
                    stream: name,
                    at,
                    last,
                    idle,
                })
            }
        }
    }
}
