//! Reading the EVENTS stream: all of it up to now (for the folds behind `ls`,
//! `migrate` and `status`), or following it (for `events tail` and the
//! `--wait` of `run` and `migrate`).
//!
//! Both go through the contract's readers ([`loadshift_events::reader`]):
//! ephemeral and unacknowledged, so the CLI leaves nothing behind on the
//! server; pulled in batches bounded in bytes, so large events cannot make
//! the CLI a slow consumer; re-created right after the last message
//! delivered when NATS restarts, so a `--wait` neither ends nor skips an
//! event.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use loadshift_events::cli::NatsArgs;
use loadshift_events::connection::NatsError;
use loadshift_events::reader::{self, Delivery, ReaderConfig};
use loadshift_events::stream::{self, StreamId};
use loadshift_events::{DecodeError, Envelope};

/// How long reading the log waits for the next message before giving up.
const IDLE: Duration = Duration::from_secs(15);

/// One message of the log, decoded or not.
#[derive(Debug)]
pub struct Item {
    /// Its stream sequence.
    pub seq: u64,
    /// How many messages the consumer still had to deliver after this one.
    pub pending: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The envelope, or why it is not one this build reads.
    pub decoded: Result<Envelope, DecodeError>,
    /// The bytes as stored.
    pub raw: Bytes,
}

impl Item {
    fn from_delivery(d: Delivery) -> Self {
        let subject = d.message.subject.to_string();
        Self {
            seq: d.seq,
            pending: d.pending,
            decoded: Envelope::from_message(&subject, &d.message.payload),
            subject,
            raw: d.message.payload.clone(),
        }
    }

    /// `unreadable event at seq N on SUBJECT: reason`, when it is.
    pub fn unreadable_line(&self) -> Option<String> {
        self.decoded.as_ref().err().map(|e| {
            format!(
                "unreadable event at seq {} on {}: {e}",
                self.seq, self.subject
            )
        })
    }

    /// The event, or `None` after saying on stderr that this one is
    /// unreadable: what a command waiting for an answer does with a bad
    /// event (it goes on reading).
    pub fn readable(&self) -> Option<&Envelope> {
        if let Some(line) = self.unreadable_line() {
            eprintln!("warning: {line}");
        }
        self.decoded.as_ref().ok()
    }
}

/// The EVENTS stream, ready to be read.
#[derive(Debug, Clone)]
pub struct Log {
    js: jetstream::Context,
}

/// The EVENTS stream; created (as every service does) when this server has
/// none yet, so that a request published by the CLI is stored. An existing
/// stream is used as it is: the CLI never checks or changes its
/// configuration, that is the services' job.
///
/// # Errors
/// [`NatsError`] when it can be neither found nor created.
pub async fn open(js: &jetstream::Context, args: &NatsArgs) -> Result<Log, NatsError> {
    if js.get_stream(stream::EVENTS).await.is_err() {
        stream::declare(js, &args.stream_settings())
            .await
            .map_err(NatsError::map("declare the streams", stream::EVENTS))?;
    }
    Ok(Log { js: js.clone() })
}

/// Where following starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message the stream holds.
    First,
    /// The next message published.
    New,
    /// The message at this sequence (or the next one that exists).
    Sequence(u64),
}

fn config(filter: &str, start: Start) -> ReaderConfig {
    let start = match start {
        Start::First => reader::Start::First,
        Start::New => reader::Start::New,
        Start::Sequence(s) => reader::Start::After(s.saturating_sub(1)),
    };
    ReaderConfig::ephemeral(StreamId::Events, start, "loadshift cli").filter([filter])
}

/// Follows the log from `start`, on the subjects matching `filter` (`>` for
/// all). The stream of items never ends by itself.
///
/// # Errors
/// [`NatsError`] when the reader cannot be opened.
pub async fn follow(
    log: &Log,
    filter: &str,
    start: Start,
) -> Result<impl Stream<Item = Item>, NatsError> {
    let r = reader::open(&log.js, config(filter, start)).await?;
    Ok(r.map(Item::from_delivery))
}

/// Follows the TELEMETRY stream from `start`, on the subjects matching
/// `filter` (`events tail --subject 'telemetry.node2'`, the loadshift way
/// of `nats sub 'telemetry.node2'`): the same reader as [`follow`], on the
/// other stream. The stream of items never ends by itself.
///
/// # Errors
/// [`NatsError`] when the reader cannot be opened.
pub async fn follow_telemetry(
    js: &jetstream::Context,
    filter: &str,
    start: Start,
) -> Result<impl Stream<Item = Item>, NatsError> {
    let mut c = config(filter, start);
    c.stream = StreamId::Telemetry;
    let r = reader::open(js, c).await?;
    Ok(r.map(Item::from_delivery))
}

/// Every message the stream holds now, from its first to its last sequence
/// at the time of the call.
///
/// # Errors
/// [`NatsError`] when the stream cannot be read to its end.
pub async fn read_all(log: &mut Log) -> Result<Vec<Item>, NatsError> {
    let mut out = Vec::new();
    reader::read_existing(&log.js, config(">", Start::First), IDLE, |d| {
        out.push(Item::from_delivery(d))
    })
    .await?;
    Ok(out)
}

/// The decoded envelopes of `items`, telling on stderr about the ones that
/// are not readable (they are skipped, as every consumer of the log does).
pub fn readable(items: &[Item]) -> Vec<&Envelope> {
    items
        .iter()
        .filter_map(|i| match &i.decoded {
            Ok(e) => Some(e),
            Err(_) => {
                if let Some(line) = i.unreadable_line() {
                    eprintln!("warning: {line}");
                }
                None
            }
        })
        .collect()
}
