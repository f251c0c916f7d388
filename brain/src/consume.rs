//! Reading the streams and committing the fold, in batches.
//!
//! One loop reads both streams (merged, through the contract's
//! [`loadshift_events::reader`], which survives NATS restarts and large
//! events), folds each message into the batch's [`Writes`] (the fold is
//! pure), passes what the fold observed to the [`Watchers`] (live inference
//! and the planner, in the service), and hands the batch to a committer task
//! that applies it atomically, flushes, and only then acks the last message
//! of each stream (AckPolicy::All acks everything before it). While the committer writes one
//! batch the loop already folds the next, so decode and disk overlap. The same
//! loop serves the service (durable consumers, runs until shutdown) and
//! `replay` (ephemeral consumers, runs up to the streams' last sequences).

use std::pin::pin;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::{Stream, StreamExt};
use loadshift_events::connection::NatsError;
use loadshift_events::reader::{self, Acks, Delivery, ReaderConfig, Start};
use loadshift_events::shutdown::Listener;
use loadshift_events::{Envelope, Event};
use tokio::sync::mpsc;

use crate::fold::{Fold, Folded};
use crate::live::Live;
use crate::planner_service::PlannerService;
use crate::status::Snapshot;
use crate::store::{Store, StoreError, StreamId, Writes};

/// Who watches the fold: live inference (per-node windows and predictions)
/// and the planner, which may decide on a fresh prediction. The service has
/// both; a replay has neither. They are fed here, after the pure fold, so
/// that the fold knows nothing of them.
#[derive(Debug, Default)]
pub struct Watchers {
    /// Live windows and predictions.
    pub live: Option<Live>,
    /// The planner at work.
    pub planner: Option<PlannerService>,
}

impl Watchers {
    /// Passes one folded event on; a decision it leads to is queued in
    /// `writes`, the batch that folded the event ([`crate::outbox`]).
    pub fn observe(&mut self, env: &Envelope, writes: &mut Writes) {
        if let Some(planner) = self.planner.as_mut() {
            planner.observe(env);
            planner.drain(env);
            planner.queue_decisions(writes);
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        match &env.event {
            Event::TelemetrySample(s) => {
                if let Some(view) = live.observe(env.node.as_str(), s) {
                    if let Some(planner) = self.planner.as_mut() {
                        planner.predicted(&env.node, view, env.occurred_at);
                        planner.queue_decisions(writes);
                    }
                }
            }
            Event::WorkloadUsage(u) => live.workloads(env.node.as_str(), u.workloads.len() as u32),
            _ => {}
        }
    }
}

/// Why folding the log stopped with an error: the one error of the
/// service, a replay and a measurement.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// NATS refused or failed a request
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the message stream ended (its reader task died)
    #[error("the {0} message stream ended unexpectedly")]
    StreamEnded(&'static str),
    /// the committer task died
    #[error("the store committer stopped: {0}")]
    Committer(String),
    /// a replay was interrupted before it reached the end
    #[error("replay interrupted at {events} events; the old store is untouched")]
    Interrupted {
        /// Events folded before the interruption.
        events: u64,
    },
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

async fn committer(store: Store, mut rx: mpsc::Receiver<Commit>) -> Result<(), FoldError> {
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
        .map_err(|e| FoldError::Committer(e.to_string()))??;
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

fn reached(folder: &Fold, targets: Option<[u64; 2]>) -> bool {
    targets.is_some_and(|t| {
        StreamId::ALL
            .iter()
            .all(|s| folder.applied(*s) >= t[s.index()])
    })
}

/// The fold and its watchers, fed together by the loop.
struct Folding<'a> {
    fold: &'a mut Fold,
    watchers: &'a mut Watchers,
    stats: LoopStats,
}

/// Folds messages from `messages` into `store` until shutdown, the end of the
/// targets, or an error; the last batch is always committed first.
///
/// # Errors
/// [`FoldError`] when the store cannot be written or a stream ends.
pub async fn fold_loop<S>(
    store: &Store,
    fold: &mut Fold,
    watchers: &mut Watchers,
    messages: S,
    cfg: &LoopConfig,
    shutdown: &mut Listener,
) -> Result<LoopStats, FoldError>
where
    S: Stream<Item = Delivery>,
{
    let (tx, rx) = mpsc::channel::<Commit>(1);
    let committer = tokio::spawn(committer(store.clone(), rx));
    let mut folding = Folding {
        fold,
        watchers,
        stats: LoopStats::default(),
    };
    let result = feed(&mut folding, messages, cfg, shutdown, &tx).await;
    drop(tx);
    let committed = committer
        .await
        .map_err(|e| FoldError::Committer(e.to_string()))?;
    result?;
    committed?;
    Ok(folding.stats)
}

/// One batch being gathered: its writes, the last message of each stream
/// (to ack after the commit) and how many messages it holds.
#[derive(Default)]
struct Batch {
    writes: Writes,
    last: [Option<jetstream::Message>; 2],
    n: usize,
}

async fn feed<S>(
    folding: &mut Folding<'_>,
    messages: S,
    cfg: &LoopConfig,
    shutdown: &mut Listener,
    tx: &mpsc::Sender<Commit>,
) -> Result<(), FoldError>
where
    S: Stream<Item = Delivery>,
{
    let mut chunks = pin!(messages.ready_chunks(1024));
    let mut progress = Progress::new(cfg.progress);
    let mut ended = false;
    while !shutdown.is_shutdown() && !reached(folding.fold, cfg.targets) && !ended {
        let mut batch = Batch::default();
        let first = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            c = chunks.next() => c,
        };
        match first {
            Some(c) => folding.take(&mut batch, cfg, c),
            None => ended = true,
        }
        let deadline = tokio::time::sleep(cfg.linger);
        let mut deadline = pin!(deadline);
        while !ended && batch.n < cfg.batch_max && !reached(folding.fold, cfg.targets) {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                _ = &mut deadline => break,
                c = chunks.next() => match c {
                    Some(c) => folding.take(&mut batch, cfg, c),
                    None => ended = true,
                },
            }
        }
        if batch.n == 0 {
            continue;
        }
        folding.fold.finish(&mut batch.writes);
        let acks = if cfg.ack {
            batch.last.into_iter().flatten().collect()
        } else {
            Vec::new()
        };
        let snapshot = cfg.write_snapshot.then(|| Snapshot::from(&*folding.fold));
        tx.send(Commit {
            batch: batch.writes,
            acks,
            snapshot,
        })
        .await
        .map_err(|_| FoldError::Committer("it exited early".into()))?;
        folding.stats.batches += 1;
        progress.report(&folding.stats, folding.fold, cfg.targets);
    }
    if ended && !shutdown.is_shutdown() && !reached(folding.fold, cfg.targets) {
        return Err(FoldError::StreamEnded("merged"));
    }
    Ok(())
}

impl Folding<'_> {
    fn take(&mut self, batch: &mut Batch, cfg: &LoopConfig, chunk: Vec<Delivery>) {
        for d in chunk {
            if cfg.targets.is_some_and(|t| d.seq > t[d.stream.index()]) {
                continue;
            }
            let folded = self.fold.fold(
                &mut batch.writes,
                d.stream,
                d.seq,
                &d.message.subject,
                &d.message.payload,
            );
            match folded {
                Folded::Applied(env) => {
                    self.stats.events += 1;
                    self.watchers.observe(&env, &mut batch.writes);
                }
                Folded::Parked => {
                    self.stats.events += 1;
                    self.stats.parked += 1;
                }
                Folded::Skipped => self.stats.skipped += 1,
            }
            batch.n += 1;
            batch.last[d.stream.index()] = Some(d.message);
        }
    }
}

/// The replay's progress line on stderr, every few seconds.
struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(on: bool) -> Self {
        Self {
            on,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn report(&mut self, stats: &LoopStats, fold: &Fold, targets: Option<[u64; 2]>) {
        if !self.on || self.last.elapsed() < Duration::from_secs(3) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let of = |s: StreamId| {
            let t = targets.map(|t| t[s.index()]).unwrap_or(0);
            format!("{} {}/{}", s.name(), fold.applied(s), t)
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

/// The durable consumer the service uses on `stream`.
pub fn durable_name(stream: StreamId) -> &'static str {
    match stream {
        StreamId::Telemetry => "brain-telemetry",
        StreamId::Events => "brain-events",
    }
}

/// The service's durable reader of `stream`, (re)created so that it starts
/// right after `applied`, the last sequence the store holds: the store, not
/// the consumer's own ack floor, is the truth after a crash.
///
/// # Errors
/// [`FoldError::Nats`] when the consumer cannot be created.
pub async fn durable(
    js: &jetstream::Context,
    stream: StreamId,
    applied: u64,
    batch: usize,
) -> Result<reader::Reader, FoldError> {
    let mut cfg = ReaderConfig::ephemeral(stream, Start::After(applied), "loadshift-brain fold")
        .durable(durable_name(stream), Acks::All)
        .batch(batch);
    cfg.ack_wait = Duration::from_secs(120);
    cfg.max_ack_pending = (batch * 4).max(1000) as i64;
    let r = reader::open(js, cfg).await?;
    tracing::info!(
        stream = stream.name(),
        consumer = durable_name(stream),
        from = applied + 1,
        "consuming"
    );
    Ok(r)
}

/// An ephemeral reader of `stream` from sequence 1 without acks, for a
/// replay.
///
/// # Errors
/// [`FoldError::Nats`] when the consumer cannot be created.
pub async fn from_start(
    js: &jetstream::Context,
    stream: StreamId,
    batch: usize,
) -> Result<reader::Reader, FoldError> {
    let cfg = ReaderConfig::ephemeral(stream, Start::First, "loadshift-brain replay").batch(batch);
    Ok(reader::open(js, cfg).await?)
}

/// The last sequence each stream holds now (`[TELEMETRY, EVENTS]`).
///
/// # Errors
/// [`FoldError::Nats`] when a stream cannot be asked.
pub async fn last_sequences(js: &jetstream::Context) -> Result<[u64; 2], FoldError> {
    let mut out = [0u64; 2];
    for s in StreamId::ALL {
        out[s.index()] = reader::last_sequence(js, s).await?;
    }
    Ok(out)
}
