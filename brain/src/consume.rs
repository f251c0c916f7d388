//! Reading the streams and committing the fold, in batches.
//!
//! One loop reads both streams (merged), decodes and folds each message into
//! the batch's [`Writes`], and hands the batch to a committer task that applies it
//! atomically, flushes, and only then acks the last message of each stream
//! (AckPolicy::All acks everything before it). While the committer writes one
//! batch the loop already folds the next, so decode and disk overlap. The same
//! loop serves the service (durable consumers, runs until shutdown) and
//! `replay` (ephemeral consumers, runs up to the streams' last sequences).

use std::pin::pin;
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::fold::{Folder, Outcome, Writes};
use crate::shutdown::Shutdown;
use crate::status::Snapshot;
use crate::store::{Store, StoreError, StreamId};

/// One message of one stream, as the merged reader yields it.
pub type Tagged = (StreamId, Result<jetstream::Message, pull::MessagesError>);

/// Why consuming stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// JetStream refused or failed a request
    #[error("JetStream {action} on stream {stream}: {message}")]
    Nats {
        /// What was attempted.
        action: &'static str,
        /// The stream.
        stream: &'static str,
        /// What the server or client said.
        message: String,
    },
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the message stream ended (its consumer was deleted)
    #[error("the {0} message stream ended unexpectedly (was the consumer deleted?)")]
    StreamEnded(&'static str),
    /// the committer task died
    #[error("the store committer stopped: {0}")]
    Committer(String),
}

/// How the fold loop batches and when it stops.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Most messages per batch (one sled batch and one flush each).
    pub batch_max: usize,
    /// How long a batch waits for more messages once it has one.
    pub linger: Duration,
    /// Ack the last message of each stream after the commit (durable consumers).
    pub ack: bool,
    /// Write the status snapshot after each commit (the service).
    pub write_snapshot: bool,
    /// Stop once each stream reached this sequence (replay); messages beyond
    /// it are ignored.
    pub targets: Option<[u64; 2]>,
    /// Print progress on stderr every few seconds (replay).
    pub progress: bool,
}

/// What a fold loop did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopStats {
    /// Messages folded (applied or parked).
    pub events: u64,
    /// Messages parked.
    pub parked: u64,
    /// Redelivered messages skipped.
    pub skipped: u64,
    /// Batches committed.
    pub batches: u64,
}

struct Commit {
    batch: Writes,
    acks: Vec<jetstream::Message>,
    snapshot: Option<Snapshot>,
}

async fn committer(store: Store, mut rx: mpsc::Receiver<Commit>) -> Result<(), ConsumeError> {
    while let Some(c) = rx.recv().await {
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let n = c.batch.keys();
            s.commit(c.batch)?;
            tracing::debug!(keys = n, ms = t0.elapsed().as_secs_f64() * 1e3, "committed");
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| ConsumeError::Committer(e.to_string()))??;
        for m in c.acks {
            // A lost ack only means a redelivery, which the fold skips.
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "ack failed; the messages will be redelivered and skipped");
            }
        }
        if let Some(snap) = c.snapshot {
            if let Err(e) = snap.write(store.path()) {
                tracing::warn!(error = %e, "status snapshot not written");
            }
        }
    }
    Ok(())
}

fn reached(folder: &Folder, targets: Option<[u64; 2]>) -> bool {
    targets.is_some_and(|t| {
        StreamId::ALL
            .iter()
            .all(|s| folder.applied(*s) >= t[s.index()])
    })
}

/// Folds messages from `messages` into `store` until shutdown, the end of the
/// targets, or an error; the last batch is always committed first.
///
/// # Errors
/// [`ConsumeError`] when the store cannot be written or a stream ends.
pub async fn fold_loop<S>(
    store: &Store,
    folder: &mut Folder,
    messages: S,
    cfg: &LoopConfig,
    shutdown: &mut Shutdown,
) -> Result<LoopStats, ConsumeError>
where
    S: Stream<Item = Tagged>,
{
    let (tx, rx) = mpsc::channel::<Commit>(1);
    let committer = tokio::spawn(committer(store.clone(), rx));
    let result = feed(folder, messages, cfg, shutdown, &tx).await;
    drop(tx);
    let committed = committer
        .await
        .map_err(|e| ConsumeError::Committer(e.to_string()))?;
    let stats = result?;
    committed?;
    Ok(stats)
}

async fn feed<S>(
    folder: &mut Folder,
    messages: S,
    cfg: &LoopConfig,
    shutdown: &mut Shutdown,
    tx: &mpsc::Sender<Commit>,
) -> Result<LoopStats, ConsumeError>
where
    S: Stream<Item = Tagged>,
{
    let mut chunks = pin!(messages.ready_chunks(1024));
    let mut stats = LoopStats::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut ended: Option<&'static str> = None;
    while !shutdown.is_shutdown() && !reached(folder, cfg.targets) && ended.is_none() {
        let mut batch = Writes::default();
        let mut last: [Option<jetstream::Message>; 2] = [None, None];
        let mut n = 0usize;
        let first = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            c = chunks.next() => c,
        };
        match first {
            Some(c) => take(folder, &mut batch, &mut last, &mut n, &mut stats, cfg, c),
            None => {
                ended = Some("merged");
            }
        }
        let deadline = tokio::time::sleep(cfg.linger);
        let mut deadline = pin!(deadline);
        while ended.is_none() && n < cfg.batch_max && !reached(folder, cfg.targets) {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                _ = &mut deadline => break,
                c = chunks.next() => match c {
                    Some(c) => take(folder, &mut batch, &mut last, &mut n, &mut stats, cfg, c),
                    None => ended = Some("merged"),
                },
            }
        }
        if n == 0 {
            continue;
        }
        folder.finish(&mut batch);
        let acks = if cfg.ack {
            last.into_iter().flatten().collect()
        } else {
            Vec::new()
        };
        let snapshot = cfg.write_snapshot.then(|| folder.snapshot());
        tx.send(Commit {
            batch,
            acks,
            snapshot,
        })
        .await
        .map_err(|_| ConsumeError::Committer("it exited early".into()))?;
        stats.batches += 1;
        if cfg.progress && last_progress.elapsed() >= Duration::from_secs(3) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let of = |s: StreamId| {
                let t = cfg.targets.map(|t| t[s.index()]).unwrap_or(0);
                format!("{} {}/{}", s.name(), folder.applied(s), t)
            };
            eprintln!(
                "replay: {} events folded ({:.0} events/s); {}, {}",
                stats.events,
                stats.events as f64 / secs,
                of(StreamId::Telemetry),
                of(StreamId::Events)
            );
        }
    }
    match ended {
        Some(which) if !shutdown.is_shutdown() && !reached(folder, cfg.targets) => {
            Err(ConsumeError::StreamEnded(which))
        }
        _ => Ok(stats),
    }
}

fn take(
    folder: &mut Folder,
    batch: &mut Writes,
    last: &mut [Option<jetstream::Message>; 2],
    n: &mut usize,
    stats: &mut LoopStats,
    cfg: &LoopConfig,
    chunk: Vec<Tagged>,
) {
    for (stream, item) in chunk {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                // Missed heartbeats and the like: the client recovers by itself.
                tracing::warn!(stream = stream.name(), error = %e, "pull error");
                continue;
            }
        };
        let seq = match msg.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                tracing::warn!(stream = stream.name(), subject = %msg.subject, error = %e,
                    "message without JetStream metadata; ignored");
                continue;
            }
        };
        if cfg.targets.is_some_and(|t| seq > t[stream.index()]) {
            continue;
        }
        match folder.fold(batch, stream, seq, &msg.subject, &msg.payload) {
            Outcome::Applied(_) => stats.events += 1,
            Outcome::Parked => {
                stats.events += 1;
                stats.parked += 1;
            }
            Outcome::Skipped => stats.skipped += 1,
        }
        *n += 1;
        last[stream.index()] = Some(msg);
    }
}

fn nats_err(
    action: &'static str,
    stream: StreamId,
) -> impl Fn(&dyn std::fmt::Display) -> ConsumeError {
    move |e| ConsumeError::Nats {
        action,
        stream: stream.name(),
        message: e.to_string(),
    }
}

/// The service's durable consumer on `stream`, (re)created so that it starts
/// right after `applied`, the last sequence the store holds: the store, not
/// the consumer's own ack floor, is the truth after a crash.
///
/// # Errors
/// [`ConsumeError::Nats`] when the consumer cannot be created.
pub async fn durable(
    js: &jetstream::Context,
    stream: StreamId,
    applied: u64,
    batch: usize,
) -> Result<impl Stream<Item = Tagged>, ConsumeError> {
    let s = js
        .get_stream(stream.name())
        .await
        .map_err(|e| nats_err("get stream", stream)(&e))?;
    // Not found is the normal case after a replay; anything else shows up
    // again, with the server's words, when creating.
    let _ = s.delete_consumer(stream.durable_name()).await;
    let deliver_policy = if applied == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: applied + 1,
        }
    };
    let consumer = s
        .create_consumer(pull::Config {
            durable_name: Some(stream.durable_name().to_string()),
            description: Some("loadshift-brain fold".into()),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(120),
            max_ack_pending: (batch * 4).max(1000) as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("create consumer", stream)(&e))?;
    tracing::info!(
        stream = stream.name(),
        consumer = stream.durable_name(),
        from = applied + 1,
        "consuming"
    );
    pull_messages(&consumer, stream, batch).await
}

/// An ephemeral consumer reading `stream` from sequence 1 without acks, for a
/// replay.
///
/// # Errors
/// [`ConsumeError::Nats`] when the consumer cannot be created.
pub async fn from_start(
    js: &jetstream::Context,
    stream: StreamId,
    batch: usize,
) -> Result<impl Stream<Item = Tagged>, ConsumeError> {
    let s = js
        .get_stream(stream.name())
        .await
        .map_err(|e| nats_err("get stream", stream)(&e))?;
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            description: Some("loadshift-brain replay".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("create consumer", stream)(&e))?;
    pull_messages(&consumer, stream, batch).await
}

async fn pull_messages(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    stream: StreamId,
    batch: usize,
) -> Result<impl Stream<Item = Tagged>, ConsumeError> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| nats_err("pull", stream)(&e))?;
    Ok(messages.map(move |r| (stream, r)))
}

/// The last sequence each stream holds now (`[TELEMETRY, EVENTS]`).
///
/// # Errors
/// [`ConsumeError::Nats`] when a stream cannot be asked.
pub async fn last_sequences(js: &jetstream::Context) -> Result<[u64; 2], ConsumeError> {
    let mut out = [0u64; 2];
    for s in StreamId::ALL {
        let mut stream = js
            .get_stream(s.name())
            .await
            .map_err(|e| nats_err("get stream", s)(&e))?;
        let info = stream.info().await.map_err(|e| nats_err("info", s)(&e))?;
        out[s.index()] = info.state.last_sequence;
    }
    Ok(out)
}
