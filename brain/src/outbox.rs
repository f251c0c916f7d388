//! The brain's decisions, kept until NATS has them.
//!
//! The planner counts a migration in flight (its source and target busy) the
//! moment it decides. If the decision then never reaches the log, nothing in
//! the log can ever end it, and both nodes stay blocked until a restart.
//! So a decision (`migration.requested`, `migration.deferred`) is queued in
//! the store in the same sled batch as the fold that made it
//! ([`queue`], called from the fold), and [`run`] publishes what the outbox
//! holds, in decision order, until JetStream acknowledges each; only then is
//! it removed. A crash in between republishes it at the next start with the
//! same id, which JetStream's duplicate window stores once.
//!
//! A request that cannot be published at all (it does not encode) or not
//! within [`OutboxConfig::withdraw_after`] is withdrawn: in one sled write it
//! is replaced by a `migration.withdrawn` event, which is published like any
//! other and, once folded back from the log, frees the two nodes in every
//! planner. A late request is worse than none (the overload it was meant to
//! prevent has come or gone), and the deadline is shorter than the duplicate
//! window, so a request JetStream stored without the ack reaching us is
//! still recognised while it is retried.
//!
//! A withdrawn request may still reach the log: the NATS client keeps what
//! it could not send during an outage and sends it on reconnect. It then
//! comes before its withdrawal (one connection, in order), so every reader
//! sees `requested` then `withdrawn`. The contract's placement fold ends the
//! migration at `withdrawn` only if no executor has acted on it yet; for the
//! source executor never to act on a withdrawn request, it must refuse a
//! request older than [`OutboxConfig::withdraw_after`] (its `occurred_at` is
//! the decision's time), which the brain has necessarily withdrawn.
//!
//! | key | value |
//! | --- | --- |
//! | `o`, event id (16 bytes, UUIDv7: time-ordered) | the event as written to the log |
//!
//! The outbox is not a fold of the log, so it is not in the store's digest.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use futures::FutureExt;
use loadshift_events::migration::Withdrawn;
use loadshift_events::shutdown::Listener;
use loadshift_events::{Envelope, Event};

use crate::store::{prefix, Store, StoreError, Writes};

/// How the publisher retries and when it gives a request up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// A `migration.requested` still unpublished this long after it was
    /// decided is withdrawn (kept below JetStream's 120 s duplicate window).
    pub withdraw_after: Duration,
    /// Pause between two attempts while NATS does not acknowledge.
    pub retry_every: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            withdraw_after: Duration::from_secs(60),
            retry_every: Duration::from_millis(500),
        }
    }
}

/// The outbox key of the event `id`.
pub fn key(id: uuid::Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix::OUTBOX;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// What [`queue`] did with a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// Queued as decided.
    AsDecided,
    /// It cannot be written to the log; this withdrawal was queued instead,
    /// and the caller must apply it now (it frees the migration's nodes).
    Withdrawn(Box<Envelope>),
    /// It cannot be written and is not a migration request (a deferral):
    /// dropped, with a warning.
    Dropped,
}

/// Queues `env` in `batch`, the fold batch that decided it.
pub fn queue(batch: &mut Writes, env: &Envelope) -> Queued {
    match env.encode() {
        Ok(bytes) => {
            batch.put(&key(env.id), &bytes);
            Queued::AsDecided
        }
        Err(e) => {
            let reason = format!("the decision cannot be written to the log: {e}");
            match withdrawal(env, &reason) {
                Some(w) => {
                    tracing::warn!(migration = %id_of(env), %reason, "withdrawing a decision");
                    if let Ok(bytes) = w.encode() {
                        batch.put(&key(w.id), &bytes);
                    }
                    Queued::Withdrawn(Box::new(w))
                }
                None => {
                    tracing::warn!(kind = env.kind().as_str(), %reason, "dropping a decision");
                    Queued::Dropped
                }
            }
        }
    }
}

fn id_of(env: &Envelope) -> uuid::Uuid {
    match &env.event {
        Event::MigrationRequested(r) => r.migration,
        _ => env.id,
    }
}

/// The `migration.withdrawn` that takes back `env`, when `env` is a request.
pub fn withdrawal(env: &Envelope, reason: &str) -> Option<Envelope> {
    let Event::MigrationRequested(r) = &env.event else {
        return None;
    };
    Some(Envelope::new(
        env.node.clone(),
        Event::MigrationWithdrawn(Withdrawn {
            migration: r.migration,
            workload: r.workload.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            reason: reason.chars().take(500).collect(),
        }),
    ))
}

/// The events waiting in the outbox, oldest decision first. An entry that
/// does not decode (written by another build) is removed with a warning:
/// it could never be published.
///
/// # Errors
/// [`StoreError`] when the store cannot be read.
pub fn pending(store: &Store) -> Result<Vec<Envelope>, StoreError> {
    let mut out = Vec::new();
    for item in store.scan(prefix::OUTBOX) {
        let (k, v) = item?;
        match Envelope::from_json(&v) {
            Ok(env) => out.push(env),
            Err(e) => {
                tracing::warn!(error = %e, "removing an outbox entry that does not decode");
                store.db().remove(k).map_err(|e| sled_err(store, e))?;
            }
        }
    }
    Ok(out)
}

fn sled_err(store: &Store, source: sled::Error) -> StoreError {
    StoreError::Sled {
        path: store.path().to_path_buf(),
        source,
    }
}

/// Replaces the queued `env` by its withdrawal, in one sled write.
fn withdraw(store: &Store, env: &Envelope, reason: &str) -> Result<(), StoreError> {
    let Some(w) = withdrawal(env, reason) else {
        return Ok(());
    };
    let mut batch = sled::Batch::default();
    batch.remove(key(env.id).as_slice());
    if let Ok(bytes) = w.encode() {
        batch.insert(key(w.id).as_slice(), bytes);
    }
    store
        .db()
        .apply_batch(batch)
        .map_err(|e| sled_err(store, e))?;
    store.flush()
}

/// How long ago `env` was decided.
fn age(env: &Envelope) -> Duration {
    (Utc::now() - env.occurred_at).to_std().unwrap_or_default()
}

/// One pass over the outbox: publishes each entry in order, removing it
/// once acknowledged; stops at the first that NATS does not take (order
/// matters: a withdrawal must never overtake its request). Returns whether
/// the outbox was emptied.
///
/// # Errors
/// [`StoreError`] when the store cannot be written.
pub async fn drain(
    js: &jetstream::Context,
    store: &Store,
    cfg: &OutboxConfig,
) -> Result<bool, StoreError> {
    for env in pending(store)? {
        let request = matches!(env.event, Event::MigrationRequested(_));
        if request {
            crate::fault::crash_point(crate::fault::BEFORE_PUBLISH);
        }
        match loadshift_events::connection::publish(js, &env).await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(id = %env.id, "already in the log (a retried publish)");
                }
                if request {
                    crate::fault::crash_point(crate::fault::AFTER_PUBLISH);
                }
                store
                    .db()
                    .remove(key(env.id))
                    .map_err(|e| sled_err(store, e))?;
            }
            Err(e) => {
                let late = age(&env) >= cfg.withdraw_after;
                if late && request {
                    let reason = format!(
                        "not published within {} s of the decision: {e}",
                        cfg.withdraw_after.as_secs()
                    );
                    tracing::warn!(migration = %id_of(&env), %reason, "withdrawing a decision");
                    withdraw(store, &env, &reason)?;
                } else {
                    tracing::warn!(error = %e, subject = %env.subject(), "decision not published yet; retrying");
                }
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Publishes the outbox until `stop` fires: at once when the fold queues
/// something (a sled watch on the prefix), and every
/// [`OutboxConfig::retry_every`] while something is left. At stop, one last
/// pass; whatever NATS still refuses stays for the next start.
pub async fn run(js: jetstream::Context, store: Store, cfg: OutboxConfig, mut stop: Listener) {
    let mut queued = store.db().watch_prefix([prefix::OUTBOX]);
    loop {
        let emptied = match drain(&js, &store, &cfg).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read or write the outbox");
                false
            }
        };
        if stop.is_shutdown() {
            return;
        }
        let pause = if emptied {
            // Nothing left: wait for the fold (the periodic pass only
            // guards against a missed wake-up).
            cfg.retry_every.max(Duration::from_secs(5))
        } else {
            cfg.retry_every
        };
        tokio::select! {
            _ = &mut queued => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.recv() => {}
        }
        // sled's watch channel is bounded and a full one would block the
        // fold's writes: take every event waiting, one pass covers them all.
        while (&mut queued).now_or_never().flatten().is_some() {}
    }
}
