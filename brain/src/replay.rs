//! `loadshift-brain replay --from-start`: rebuilds the store from the log.
//!
//! The new store is folded in a sibling directory (`<store>.replay`) from
//! sequence 1 up to each stream's last sequence at start, with ephemeral
//! consumers and large batches, then swapped into place by renames; the
//! durable consumers are removed so that the next service start positions
//! them from the new store's applied sequences. A running brain holds the
//! store's lock, and replay refuses to run beside it.

use std::path::Path;
use std::time::Instant;

use async_nats::jetstream;
use futures::StreamExt;
use loadshift_events::file::FileError;
use loadshift_events::shutdown::Listener;

use crate::consume::{self, FoldError, LoopConfig, Watchers};
use crate::fold::Fold;
use crate::status::Snapshot;
use crate::store::{self, Store, StoreError, StoreLock, StreamId};

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// Messages folded (applied or parked).
    pub events: u64,
    /// Seconds from the first read to the last flush.
    pub secs: f64,
}

impl Replayed {
    /// The line `replay` prints last on stdout.
    pub fn line(&self) -> String {
        let rate = if self.secs > 0.0 {
            (self.events as f64 / self.secs).round() as u64
        } else {
            self.events
        };
        format!(
            "replayed {} events in {:.2} s ({} events/s)",
            self.events, self.secs, rate
        )
    }
}

/// How far a replay goes: `Fold` is the real thing; the others measure the
/// cost of reading alone and of reading plus decoding, without a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Read, decode, fold and write (a real replay).
    Fold,
    /// Read and decode, then drop.
    Decode,
    /// Read, then drop.
    Read,
}

/// Rebuilds the store at `store_path` from both streams.
///
/// # Errors
/// [`FoldError`]; on any error the existing store is left as it was.
pub async fn replay(
    js: &jetstream::Context,
    store_path: &Path,
    batch: usize,
    shutdown: &mut Listener,
) -> Result<Replayed, FoldError> {
    let _lock = StoreLock::acquire_within(store_path, std::time::Duration::from_secs(3))?;
    let targets = consume::last_sequences(js).await?;
    let tmp = store::sibling(store_path, "replay");
    if tmp.exists() {
        store::remove_dir(&tmp)?;
    }
    let started = Instant::now();
    let fresh = Store::create(&tmp)?;
    let mut fold = Fold::new();
    let t = consume::from_start(js, StreamId::Telemetry, batch).await?;
    let e = consume::from_start(js, StreamId::Events, batch).await?;
    let cfg = LoopConfig {
        batch_max: batch,
        linger: std::time::Duration::from_millis(200),
        ack: false,
        write_snapshot: false,
        targets: Some(targets),
        progress: true,
    };
    let stats = consume::fold_loop(
        &fresh,
        &mut fold,
        &mut Watchers::default(),
        futures::stream::select(t, e),
        &cfg,
        shutdown,
    )
    .await?;
    if shutdown.is_shutdown() {
        drop(fresh);
        let _ = store::remove_dir(&tmp);
        return Err(FoldError::Interrupted {
            events: stats.events,
        });
    }
    // The loop committed and flushed its last batch; the snapshot lets
    // `status` work while a later service runs.
    fresh.flush()?;
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = Snapshot::from(&fold).write(&tmp) {
        tracing::warn!(error = %e, "status snapshot not written");
    }
    drop(fresh);
    swap(&tmp, store_path)?;
    for s in StreamId::ALL {
        if let Ok(stream) = js.get_stream(s.name()).await {
            let _ = stream.delete_consumer(consume::durable_name(s)).await;
        }
    }
    Ok(Replayed {
        events: stats.events,
        secs,
    })
}

/// Puts `fresh` where `target` is: the old store goes to `<store>.old` first
/// and is removed once the new one is in place. A crash between the two
/// renames leaves no store, which the next start rebuilds.
fn swap(fresh: &Path, target: &Path) -> Result<(), StoreError> {
    let old = store::sibling(target, "old");
    if old.exists() {
        store::remove_dir(&old)?;
    }
    if target.exists() {
        std::fs::rename(target, &old).map_err(FileError::at("move aside", target))?;
    }
    std::fs::rename(fresh, target).map_err(FileError::at("move into place", fresh))?;
    if old.exists() {
        store::remove_dir(&old)?;
    }
    Ok(())
}

/// Reads both streams to their last sequence and drops the messages after
/// `stage`, to show what reading and decoding cost without the store.
///
/// # Errors
/// [`FoldError`] when the streams cannot be read.
pub async fn measure(
    js: &jetstream::Context,
    batch: usize,
    stage: Stage,
) -> Result<Replayed, FoldError> {
    let targets = consume::last_sequences(js).await?;
    let started = Instant::now();
    let t = consume::from_start(js, StreamId::Telemetry, batch).await?;
    let e = consume::from_start(js, StreamId::Events, batch).await?;
    let mut merged = std::pin::pin!(futures::stream::select(t, e).ready_chunks(1024));
    let mut at = [0u64; 2];
    let mut events = 0u64;
    while StreamId::ALL
        .iter()
        .any(|s| at[s.index()] < targets[s.index()])
    {
        let Some(chunk) = merged.next().await else {
            return Err(FoldError::StreamEnded("merged"));
        };
        for d in chunk {
            let s = d.stream;
            if d.seq > targets[s.index()] {
                continue;
            }
            at[s.index()] = d.seq;
            if stage == Stage::Decode {
                let _ = std::hint::black_box(loadshift_events::Envelope::from_message(
                    &d.message.subject,
                    &d.message.payload,
                ));
            }
            events += 1;
        }
    }
    Ok(Replayed {
        events,
        secs: started.elapsed().as_secs_f64(),
    })
}
