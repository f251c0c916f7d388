//! The migration saga, this node's half of it.
//!
//! Each incoming event is handled in order; a handler decides, acts through
//! its effects (runtime, image store, peers, fence, clock), and writes the
//! outcome to the [`Journal`] together with the events to announce and the
//! stream sequence it applied, in one atomic commit. Before a step with side
//! effects (a dump, a restore) the phase is written first, so an executor
//! killed in the middle finds, when the event is delivered again, where it
//! stood and finishes or undoes the step. docs/saga.md draws the whole state
//! machine; [`source`] and [`target`] hold each side's rules.
//!
//! Source: `requested` → validate → dump → pack and upload → `checkpointed`;
//! then `restored` → clean up → `completed`; or `failed`, or no word from the
//! target before the deadline → fence → restore from its own image →
//! `rolled_back`. Target: `checkpointed` → download → verify → claim → restore
//! → `restored`, or `failed`, or stand down when the source fenced first.
//!
//! The mode (docs/saga.md, "Modes") is chosen by the source when the request
//! arrives ([`source`]'s `choose_mode`): a copy dumps locally and stores the
//! whole image; a stream sends the pages straight to the target during the
//! dump and stores only the rest; everything after the dump is the same.

use std::path::PathBuf;

use std::future::Future;

use loadshift_events::migration::{self, Step};
use loadshift_events::workload;
use loadshift_events::{Envelope, Event, NodeName};

use crate::admission::Names;
use crate::clock::{within, Clock, SystemClock};
use crate::deadline::Deadlines;
use crate::fence::{Fence, FenceError, KvFence};
use crate::image_store::{ImageStore, JetStreamImages};
use crate::journal::{Change, Journal, JournalError, MigrationRecord, WorkloadRecord};
use crate::liveness::{NatsPeers, Peers};
use crate::runtime::Runtime;

mod source;
mod target;

/// One node's executor: its journal and the effects it acts through.
///
/// Every effect sits behind a trait (the runtime, the image store, the peers,
/// the clock, the fence), the way youki puts each kernel call behind
/// `Syscall`: the service runs it with the real ones (the defaults), the
/// saga's unit tests with recording doubles, and one piece of code is tested
/// both ways.
pub struct Executor<R, S = JetStreamImages, P = NatsPeers, C = SystemClock, F = KvFence> {
    /// The node it acts for.
    pub node: NodeName,
    /// How it runs workloads.
    pub runtime: R,
    /// What it did.
    pub journal: Journal,
    /// Where images travel.
    pub store: S,
    /// The other executors, asked whether they are alive.
    pub peers: P,
    /// Time: stamps, step durations, deadlines.
    pub clock: C,
    /// Who holds each migration once the source stops waiting or the target
    /// starts restoring.
    pub fence: F,
    /// How long each wait may last.
    pub deadlines: Deadlines,
    /// Where images are written (tmpfs: ~30x faster than disk here).
    pub images_root: PathBuf,
    /// Woken after a commit that queued events.
    pub outbox: std::sync::Arc<tokio::sync::Notify>,
    /// The cluster's workload-name registry ([`crate::admission`]: a
    /// JetStream key-value bucket only executors reach).
    pub names: std::sync::Arc<dyn Names>,
    /// The streams this node offered as a target, and what arrived on each
    /// ([`crate::stream`]); empty on a node that takes none.
    pub streams: crate::stream::Streams,
}

/// A failure the executor cannot turn into an event: its journal is broken.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FatalError(#[from] JournalError);

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence> Executor<R, S, P, C, F> {
    fn envelope(&self, event: Event) -> Envelope {
        Envelope::new(self.node.clone(), event)
    }

    /// Claims `name` for this node in the registry.
    async fn claim_name(&self, name: &loadshift_events::WorkloadName) -> Result<(), String> {
        self.names.claim(name, &self.node).await
    }

    /// Gives `name` up: it no longer runs here.
    async fn release_name(&self, name: &loadshift_events::WorkloadName) {
        self.names.release(name, &self.node).await;
    }

    /// Records in the background that `name` now runs here.
    fn names_moved(&self, name: &loadshift_events::WorkloadName) {
        self.names.moved(name, &self.node);
    }

    /// Writes `change` and wakes the outbox.
    pub(crate) fn commit(&self, change: Change) -> Result<(), FatalError> {
        self.journal.commit(change)?;
        self.outbox.notify_one();
        Ok(())
    }

    /// Applies one event from the EVENTS stream, at sequence `seq`.
    ///
    /// # Errors
    /// [`FatalError`] only when the journal fails; every other failure becomes
    /// an event.
    pub async fn apply(&self, seq: u64, env: &Envelope) -> Result<(), FatalError> {
        if seq <= self.journal.applied()? {
            return Ok(());
        }
        match &env.event {
            Event::WorkloadStartRequested(p) if p.node == self.node => self.start(seq, p).await,
            Event::WorkloadStopRequested(p) if p.node == self.node => {
                self.stop_requested(seq, p).await
            }
            Event::MigrationRequested(p) if p.source == self.node => self.requested(seq, p).await,
            // Only the source's own executor announces its dump.
            Event::MigrationCheckpointed(p) if p.target == self.node && env.node == p.source => {
                self.checkpointed(seq, p).await
            }
            Event::MigrationRestored(p) if p.source == self.node => self.restored(seq, p).await,
            Event::MigrationFailed(p) if p.source == self.node => self.failed(seq, p).await,
            Event::MigrationFenced(p) if p.target == self.node => self.fenced(seq, p).await,
            Event::NodeDrainRequested(p) if p.node == self.node => {
                let drain = crate::cordon::DrainRecord::new(env.occurred_at, p);
                self.commit(Change::new().put_drain(&drain).applied(seq))
            }
            Event::NodeUncordoned(p) if p.node == self.node => {
                self.commit(Change::new().remove_drain().applied(seq))
            }
            // Our own announcements (started, completed, rolled_back, ...)
            // come back to us too; nothing to do but note them.
            _ => self.commit(Change::new().applied(seq)),
        }
    }

    async fn start(&self, seq: u64, p: &workload::StartRequested) -> Result<(), FatalError> {
        if self.journal.workload(&p.workload)?.is_some() {
            tracing::info!(workload = %p.workload, "start requested again; it already runs here");
            return self.commit(Change::new().applied(seq));
        }
        let outcome = if let Some(drain) = self.journal.drain()? {
            Err(drain.refusal(&self.node))
        } else if p.spec.runtime != self.runtime.kind() {
            Err(format!(
                "node {} runs {} workloads, not {}",
                self.node,
                self.runtime.kind(),
                p.spec.runtime
            ))
        } else if let Err(reason) = self.runtime.check(&p.spec) {
            Err(reason)
        } else if let Err(reason) = self.claim_name(&p.workload).await {
            Err(reason)
        } else {
            self.runtime
                .start(&p.workload, &p.spec)
                .await
                .map_err(|e| e.to_string())
        };
        match outcome {
            Ok(handle) => {
                tracing::info!(workload = %p.workload, ?handle, "workload started");
                let started = self.envelope(Event::WorkloadStarted(workload::Started {
                    workload: p.workload.clone(),
                    spec: p.spec.clone(),
                    pid: handle.pid(),
                    container_id: handle.container_id(),
                }));
                self.commit(
                    Change::new()
                        .put_workload(&WorkloadRecord {
                            name: p.workload.clone(),
                            spec: p.spec.clone(),
                            handle,
                            migrating: None,
                        })
                        .publish(started)
                        .applied(seq),
                )
            }
            Err(reason) => {
                self.release_name(&p.workload).await;
                tracing::warn!(workload = %p.workload, %reason, "workload did not start");
                let failed = self.envelope(Event::WorkloadStartFailed(workload::StartFailed {
                    workload: p.workload.clone(),
                    reason,
                }));
                self.commit(Change::new().publish(failed).applied(seq))
            }
        }
    }

    /// Asks the fence, bounded by the floor: an unreachable fence is an
    /// error the caller retries later, never a wait without end.
    async fn ask_fence<T>(
        &self,
        question: impl Future<Output = Result<T, FenceError>>,
    ) -> Result<T, String> {
        match within(&self.clock, self.deadlines.floor, question).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("migration fence: {e}")),
        }
    }

    fn failed_event(&self, m: &MigrationRecord, step: Step, reason: String) -> Envelope {
        self.envelope(Event::MigrationFailed(migration::Failed {
            migration: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            step,
            reason,
        }))
    }

    /// Notices workloads that ended on their own; runs between events, in
    /// the same task, so it never races a migration.
    ///
    /// # Errors
    /// When the journal fails.
    pub async fn watch_exits(&self) -> Result<(), FatalError> {
        for w in self.journal.workloads()? {
            if w.migrating.is_some() || self.runtime.is_running(&w.handle).await {
                continue;
            }
            let reason = self.exit_reason(&w.name)?;
            tracing::info!(workload = %w.name, %reason, "workload exited");
            self.release_name(&w.name).await;
            let event = self.envelope(Event::WorkloadExited(workload::Exited {
                workload: w.name.clone(),
                code: None,
                signal: (reason == workload::ExitReason::KilledAfterGrace).then_some(libc::SIGKILL),
                reason,
            }));
            self.commit(
                Change::new()
                    .remove_workload(&w.name)
                    .remove_stop(&w.name)
                    .publish(event),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
