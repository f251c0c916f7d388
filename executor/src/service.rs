//! The executor as a service: one ordered consumer of the events addressed
//! to this node, one outbox publisher, and the exit watcher, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
};
use futures::StreamExt;
use loadshift_events::{connection, stream, Envelope};
use tokio::sync::{watch, Notify};

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
    /// JetStream refused or failed
    #[error("JetStream {action}: {message}")]
    Nats {
        /// What was attempted.
        action: &'static str,
        /// What the server or client said.
        message: String,
    },
    /// the journal failed
    #[error(transparent)]
    Fatal(#[from] FatalError),
}

fn nats_err(action: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ServiceError {
    move |e| ServiceError::Nats {
        action,
        message: e.to_string(),
    }
}

/// The durable consumer's name for `node`.
pub fn consumer_name(node: &str) -> String {
    format!("executor-{node}")
}

/// Creates (or re-creates) this node's consumer so that it starts right
/// after the last sequence the journal applied: the journal, not the server,
/// is the truth about what was applied.
async fn consumer(
    js: &jetstream::Context,
    node: &str,
    applied: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ServiceError> {
    let events = js
        .get_stream(stream::EVENTS)
        .await
        .map_err(|e| nats_err("get stream EVENTS")(&e))?;
    let name = consumer_name(node);
    let _ = events.delete_consumer(&name).await;
    let deliver_policy = if applied == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: applied + 1,
        }
    };
    events
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("loadshift executor of node {node}")),
            filter_subjects: vec![format!("workload.{node}.>"), format!("migration.{node}.>")],
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            // A dump or restore of a big workload takes seconds; never let the
            // server redeliver while we still work on it.
            ack_wait: Duration::from_secs(600),
            max_ack_pending: 16,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("create consumer")(&e))
}

/// Publishes what the journal's outbox holds, oldest first, until shutdown.
pub async fn publish_outbox(
    js: jetstream::Context,
    journal: Journal,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
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
                        if *stop.borrow() {
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
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => { if *stop.borrow() { return; } }
        }
    }
}

/// Consumes this node's events and applies them until `stop` turns true.
///
/// # Errors
/// [`ServiceError`] when JetStream or the journal fails.
pub async fn run<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence>(
    exec: &Executor<R, S, P, C, F>,
    js: &jetstream::Context,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let node = exec.node.to_string();
    let consumer = consumer(js, &node, exec.journal.applied().map_err(FatalError::from)?).await?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats_err("consume")(&e))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut usage = crate::usage::UsageSampler::default();
    let mut ticks = 0u64;
    tracing::info!(node, "executor ready");
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                exec.watch_exits().await?;
                exec.expire_deadlines().await?;
                exec.sweep_images().await?;
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
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(ServiceError::Nats { action: "consume", message: "the consumer's message stream ended".into() });
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer hiccup; going on");
                        continue;
                    }
                };
                let seq = match msg.info() {
                    Ok(i) => i.stream_sequence,
                    Err(e) => {
                        tracing::warn!(error = %e, "message without stream info; skipped");
                        continue;
                    }
                };
                match Envelope::from_message(msg.subject.as_str(), &msg.payload) {
                    Ok(env) => exec.apply(seq, &env).await?,
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
