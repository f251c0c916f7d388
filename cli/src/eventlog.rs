//! Reading the EVENTS stream: all of it up to now (for the folds behind `ls`,
//! `migrate` and `status`), or following it (for `events tail` and the
//! `--wait` of `run` and `migrate`).
//!
//! Both use ordered consumers: ephemeral, unacknowledged, recreated by the
//! client if a message is missed, so the CLI leaves nothing behind on the
//! server and never skips an event.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull::OrderedConfig, DeliverPolicy},
    stream::Stream as JsStream,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use loadshift_events::cli::NatsArgs;
use loadshift_events::{stream, DecodeError, Envelope};

/// How long reading the log waits for the next message before giving up.
const IDLE: Duration = Duration::from_secs(15);

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// NATS refused or did not answer.
    #[error("cannot {action} on stream {stream}: {message}", stream = stream::EVENTS)]
    Nats {
        /// What was attempted.
        action: &'static str,
        /// What the client or server said.
        message: String,
    },
    /// the stream stopped delivering before reaching its last message
    #[error("the EVENTS stream stopped delivering at sequence {at} of {last} (no message for {}s)", IDLE.as_secs())]
    Stalled {
        /// The last sequence read.
        at: u64,
        /// The last sequence the stream held at the start.
        last: u64,
    },
}

fn nats(action: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LogError {
    move |e| LogError::Nats {
        action,
        message: e.to_string(),
    }
}

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
    fn from_message(m: &jetstream::Message) -> Self {
        let (seq, pending) = m
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .unwrap_or((0, 0));
        let subject = m.subject.to_string();
        Self {
            seq,
            pending,
            decoded: Envelope::from_message(&subject, &m.payload),
            subject,
            raw: m.payload.clone(),
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
}

/// The EVENTS stream; created (as every service does) when this server has
/// none yet, so that a request published by the CLI is stored. An existing
/// stream is used as it is: the CLI never checks or changes its
/// configuration, that is the services' job.
///
/// # Errors
/// [`LogError::Nats`] when it can be neither found nor created.
pub async fn open(js: &jetstream::Context, args: &NatsArgs) -> Result<JsStream, LogError> {
    match js.get_stream(stream::EVENTS).await {
        Ok(s) => Ok(s),
        Err(_) => {
            stream::declare(js, &args.stream_settings())
                .await
                .map_err(|e| nats("declare")(&e))?;
            js.get_stream(stream::EVENTS)
                .await
                .map_err(|e| nats("look up")(&e))
        }
    }
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

/// Follows `events` from `start`, on the subjects matching `filter`
/// (`>` for all).
///
/// # Errors
/// [`LogError::Nats`] when the consumer cannot be created.
pub async fn follow(
    events: &JsStream,
    filter: &str,
    start: Start,
) -> Result<impl Stream<Item = Result<Item, LogError>>, LogError> {
    let deliver_policy = match start {
        Start::First => DeliverPolicy::All,
        Start::New => DeliverPolicy::New,
        Start::Sequence(s) => DeliverPolicy::ByStartSequence {
            start_sequence: s.max(1),
        },
    };
    // `>` is every subject of the stream: no filter at all, which the server
    // accepts whatever the stream's subjects are.
    let filter_subject = if filter == ">" {
        String::new()
    } else {
        filter.to_string()
    };
    let consumer = events
        .create_consumer(OrderedConfig {
            filter_subject,
            deliver_policy,
            description: Some("loadshift cli".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| nats("create a consumer")(&e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| nats("read messages")(&e))?;
    Ok(messages.map(|r| match r {
        Ok(m) => Ok(Item::from_message(&m)),
        Err(e) => Err(nats("read a message")(&e)),
    }))
}

/// Every message the stream holds now, from its first to its last sequence
/// at the time of the call.
///
/// # Errors
/// [`LogError`] when the stream cannot be read to its end.
pub async fn read_all(events: &mut JsStream) -> Result<Vec<Item>, LogError> {
    let info = events.info().await.map_err(|e| nats("ask for info")(&e))?;
    let last = info.state.last_sequence;
    if info.state.messages == 0 || last == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut msgs = Box::pin(follow(events, ">", Start::First).await?);
    let mut at = 0;
    // Done at the last sequence seen at the start, or earlier when nothing is
    // pending any more (the last messages were deleted since).
    while at < last {
        match tokio::time::timeout(IDLE, msgs.next()).await {
            Ok(Some(item)) => {
                let item = item?;
                at = item.seq;
                let drained = item.pending == 0;
                out.push(item);
                if drained {
                    break;
                }
            }
            Ok(None) | Err(_) => return Err(LogError::Stalled { at, last }),
        }
    }
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
