//! The executor as a service: one ordered consumer of the events addressed
//! to this node, one outbox publisher, and the exit watcher, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use loadshift_events::connection::{self, NatsError};
use loadshift_events::reader::{self, Acks, ReaderConfig, Start};
use loadshift_events::shutdown::Listener;
use loadshift_events::stream::StreamId;
use loadshift_events::Envelope;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::fence::Fence;
use crate::image_store::ImageStore;
use crate::journal::Journal;
use crate::liveness::Peers;
use crate::runtime::Runtime;
use crate::saga::{Executor, FatalError};

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// NATS refused or failed
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// the journal failed
    #[error(transparent)]
    Fatal(#[from] FatalError),
}

/// The durable consumer's name for `node`.
pub fn consumer_name(node: &str) -> String {
    format!("executor-{node}")
}

/// This node's reader, (re)created so that it starts right after the last
/// sequence the journal applied: the journal, not the server, is the truth
/// about what was applied. The reader rides out NATS restarts by itself.
async fn reader(
    js: &jetstream::Context,
    node: &str,
    applied: u64,
) -> Result<reader::Reader, ServiceError> {
    let mut cfg = ReaderConfig::ephemeral(
        StreamId::Events,
        Start::After(applied),
        format!("loadshift executor of node {node}"),
    )
    .filter([format!("*.{node}.>")])
    .durable(consumer_name(node), Acks::Explicit)
    .batch(16);
    // One filter, `*.<node>.>`, so that it travels in the API subject
    // (`$JS.API.CONSUMER.CREATE.EVENTS.executor-<node>.*.<node>.>`), where
    // the server's permissions confine an executor to its own node's
    // subjects; `node.<node>.*` comes along and is skipped.
    // A dump or restore of a big workload takes seconds; never let the
    // server redeliver while we still work on it.
    cfg.ack_wait = Duration::from_secs(600);
    cfg.max_ack_pending = 16;
    Ok(reader::open(js, cfg).await?)
}

/// Publishes what the journal's outbox holds, oldest first, until shutdown.
pub async fn publish_outbox(
    js: jetstream::Context,
    journal: Journal,
    notify: Arc<Notify>,
    mut stop: Listener,
) {
    loop {
        let pending = match journal.outbox() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        for (key, bytes) in pending {
            let env = match Envelope::from_json(&bytes) {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!(error = %e, "dropping an unreadable outbox entry");
                    let _ = journal.outbox_done(&key);
                    continue;
                }
            };
            loop {
                match connection::publish(&js, &env).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if stop.is_shutdown() {
                            return;
                        }
                    }
                }
            }
            tracing::debug!(subject = %env.subject(), id = %env.id, "published");
            if let Err(e) = journal.outbox_done(&key) {
                tracing::error!(error = %e, "cannot clear an outbox entry; it will be republished (deduplicated)");
            }
        }
        if stop.is_shutdown() {
            // The pass above announced what the last step decided.
            return;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            // One more pass, then out.
            _ = stop.recv() => {}
        }
    }
}

/// Consumes this node's events and applies them until `stop` fires.
///
/// # Errors
/// [`ServiceError`] when JetStream or the journal fails.
pub async fn run<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence>(
    exec: &Executor<R, S, P, C, F>,
    js: &jetstream::Context,
    mut stop: Listener,
) -> Result<(), ServiceError> {
    let node = exec.node.to_string();
    let applied = exec.journal.applied().map_err(FatalError::from)?;
    let mut messages = tokio::select! {
        r = reader(js, &node, applied) => r?,
        // NATS may be away at start: waiting for it is no reason to ignore
        // SIGTERM.
        _ = stop.recv() => return Ok(()),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut usage = crate::usage::UsageSampler::default();
    let mut ticks = 0u64;
    tracing::info!(node, "executor ready");
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            _ = tick.tick() => {
                // A deadline may resume a workload here (a criu restore):
                // a step like any other, abandoned on SIGTERM.
                let chores = async {
                    exec.watch_exits().await?;
                    exec.carry_on_stops().await?;
                    exec.expire_deadlines().await?;
                    exec.sweep_images().await
                };
                if abandoned(chores, &mut stop).await? {
                    return Ok(());
                }
                ticks += 1;
                if ticks.is_multiple_of(2) {
                    // Telemetry, not state: published directly, best effort.
                    if let Some(env) = usage.sample(exec).await? {
                        if let Err(e) = connection::publish(js, &env).await {
                            tracing::debug!(error = %e, "workload usage not published");
                        }
                    }
                }
            }
            d = messages.next() => {
                let Some(d) = d else {
                    return Err(NatsError::request("read messages", consumer_name(&node), "the reader stopped").into());
                };
                let (seq, msg) = (d.seq, d.message);
                match Envelope::from_message(msg.subject.as_str(), &msg.payload) {
                    Ok(env) => {
                        if abandoned(exec.apply(seq, &env), &mut stop).await? {
                            // Not acknowledged, not journaled as applied: it
                            // is delivered again at the next start.
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, seq, error = %e, "bad event skipped");
                        exec.journal.commit(crate::journal::Change::new().applied(seq)).map_err(FatalError::from)?;
                    }
                }
                if let Err(e) = msg.ack().await {
                    tracing::warn!(seq, error = %e, "ack failed; the journal already has it applied");
                }
            }
        }
    }
}

/// Runs one saga step (or the tick's chores) unless shutdown comes first;
/// `true` when it was abandoned for shutdown.
///
/// SIGTERM must be honoured within a second or two in every state, and a
/// dump, an upload, a download or a restore can take far longer. Dropping
/// the step is safe because the saga journals each phase before its side
/// effect (write-ahead): the next start finds where the step stood and
/// finishes or undoes it, exactly as after a kill -9. A criu already
/// running is left to finish on its own (the next start waits for it),
/// never killed half-way: a dump killed while its code runs inside the
/// workload may take the workload with it.
async fn abandoned<F>(step: F, stop: &mut Listener) -> Result<bool, FatalError>
where
    F: std::future::Future<Output = Result<(), FatalError>>,
{
    tokio::select! {
        done = step => done.map(|()| false),
        _ = stop.recv() => {
            tracing::warn!("stopping in the middle of a step; the journal says where it stood and the next start goes on from there");
            Ok(true)
        }
    }
}

/// Makes this process the reaper of orphans below it, so workloads restored
/// by criu (which exits after restoring) become our children and are reaped
/// when they end, whatever PID 1 does.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on us.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper; restored workloads are reaped by PID 1");
    }
}
