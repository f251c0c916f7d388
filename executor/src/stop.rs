//! Stopping a workload on request: `workload.stop_requested` → SIGTERM →
//! (the grace period) → SIGKILL → `workload.exited` with the reason.
//!
//! A stop is journaled as a [`StopRecord`] before any signal is sent, and
//! carried on by the service's one-second tick, like the saga's deadlines:
//! the event loop never sleeps through a grace period, and an executor
//! restarted in the middle goes on where it stood. The exit itself is
//! noticed where every exit is ([`Executor::watch_exits`]), which reads the
//! reason from the record and frees the name.
//!
//! Stop and migration (docs/saga.md, "Stop and migration"): the executor
//! that holds the workload after the migration's fence stops it. A stop
//! that reaches a source while its workload is frozen for a migration waits
//! for the outcome: rolled back, the source stops it; completed, the source
//! forwards the request to the target. A migration asked for a workload
//! that is being stopped is refused.

use loadshift_events::workload::{ExitReason, StopRequested};
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::fence::Fence;
use crate::image_store::ImageStore;
use crate::journal::{Change, Role};
use crate::liveness::Peers;
use crate::runtime::{Runtime, StopSignal};
use crate::saga::{Executor, FatalError};

/// A stop asked for and not finished: what the tick carries on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// Which workload.
    pub workload: WorkloadName,
    /// Who asked.
    pub requested_by: String,
    /// How long after SIGTERM the SIGKILL comes, in milliseconds.
    pub grace_ms: u64,
    /// When SIGTERM was sent (unix ms); `None` while a migration holds the
    /// workload.
    pub terminated_at_ms: Option<i64>,
    /// Whether the grace period ran out and SIGKILL was sent.
    pub killed: bool,
}

impl StopRecord {
    /// What the exit of a workload with this stop in progress says.
    pub fn reason(&self) -> ExitReason {
        match (self.killed, self.terminated_at_ms) {
            (true, _) => ExitReason::KilledAfterGrace,
            (false, Some(_)) => ExitReason::Stopped,
            (false, None) => ExitReason::Ended,
        }
    }
}

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence> Executor<R, S, P, C, F> {
    /// Applies a stop request addressed to this node.
    ///
    /// # Errors
    /// [`FatalError`] when the journal fails.
    pub async fn stop_requested(&self, seq: u64, p: &StopRequested) -> Result<(), FatalError> {
        if self.journal.stop(&p.workload)?.is_some() {
            tracing::info!(workload = %p.workload, "stop requested again; already stopping");
            return self.commit(Change::new().applied(seq));
        }
        let record = StopRecord {
            workload: p.workload.clone(),
            requested_by: p.requested_by.clone(),
            grace_ms: p.grace_ms,
            terminated_at_ms: None,
            killed: false,
        };
        match self.journal.workload(&p.workload)? {
            Some(w) if w.migrating.is_some() => {
                tracing::info!(workload = %p.workload, "stop held until its migration ends");
                self.commit(Change::new().put_stop(&record).applied(seq))
            }
            // Journaled first, then signalled by the tick: a crash between
            // the two sends SIGTERM once the executor is back.
            Some(_) => {
                self.commit(Change::new().put_stop(&record).applied(seq))?;
                self.carry_on_stops().await
            }
            // A person's request that came late: hand it to where this
            // node sent the workload. One already handed on is not passed
            // on again (two nodes that each moved it to the other would
            // pass a stale stop back and forth).
            None => {
                let forward = match &p.forwarded_by {
                    None => self.forward(&record)?,
                    Some(_) => None,
                };
                if forward.is_none() {
                    tracing::warn!(workload = %p.workload, "stop requested for a workload that does not run here; ignored");
                }
                self.commit(Change::new().publish_all(forward).applied(seq))
            }
        }
    }

    /// Carries every stop in progress one step further: SIGTERM once the
    /// workload is here and free of migrations, SIGKILL once the grace
    /// period passed, the request handed on when a migration took the
    /// workload away. Runs on the service's tick, between events.
    ///
    /// # Errors
    /// [`FatalError`] when the journal fails.
    pub async fn carry_on_stops(&self) -> Result<(), FatalError> {
        for mut s in self.journal.stops()? {
            let Some(w) = self.journal.workload(&s.workload)? else {
                // It left with a completed migration while the stop waited.
                let forward = self.forward(&s)?;
                self.commit(Change::new().remove_stop(&s.workload).publish_all(forward))?;
                continue;
            };
            if w.migrating.is_some() {
                continue;
            }
            let now = self.clock.now_ms();
            let signal = match s.terminated_at_ms {
                None => StopSignal::Terminate,
                Some(t) if !s.killed && now >= t.saturating_add(grace_ms(&s)) => StopSignal::Kill,
                Some(_) => continue,
            };
            if let Err(e) = self.runtime.signal(&w.handle, signal).await {
                tracing::warn!(workload = %s.workload, error = %e, "stop signal not delivered; trying again");
                continue;
            }
            tracing::info!(workload = %s.workload, signal = signal.name(), "stop signal sent");
            match signal {
                StopSignal::Terminate => s.terminated_at_ms = Some(now),
                StopSignal::Kill => s.killed = true,
            }
            self.commit(Change::new().put_stop(&s))?;
        }
        Ok(())
    }

    /// The stop request to hand to the node this node's last completed
    /// migration of the workload took it to; `None` when none did.
    fn forward(&self, s: &StopRecord) -> Result<Option<Envelope>, FatalError> {
        let target: Option<NodeName> = self
            .journal
            .migrations()?
            .into_iter()
            .filter(|m| m.workload == s.workload && m.role == Role::Source)
            .filter(|m| m.phase == crate::journal::Phase::Completed)
            .max_by_key(|m| m.id)
            .map(|m| m.target);
        Ok(target.map(|node| {
            tracing::info!(workload = %s.workload, %node, "stop forwarded to where the workload moved");
            Envelope::new(
                self.node.clone(),
                Event::WorkloadStopRequested(StopRequested {
                    workload: s.workload.clone(),
                    node,
                    grace_ms: s.grace_ms,
                    requested_by: s.requested_by.clone(),
                    forwarded_by: Some(self.node.clone()),
                }),
            )
        }))
    }

    /// Why `name`, found ended, ended: the stop in progress says, else by
    /// itself.
    ///
    /// # Errors
    /// [`FatalError`] when the journal fails.
    pub fn exit_reason(&self, name: &WorkloadName) -> Result<ExitReason, FatalError> {
        Ok(self
            .journal
            .stop(name)?
            .map_or(ExitReason::Ended, |s| s.reason()))
    }
}

/// The grace period in milliseconds, as a clock difference.
fn grace_ms(s: &StopRecord) -> i64 {
    i64::try_from(s.grace_ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_follows_how_far_the_stop_went() {
        let mut s = StopRecord {
            workload: WorkloadName::new("w").unwrap(),
            requested_by: "alice".into(),
            grace_ms: 1_000,
            terminated_at_ms: None,
            killed: false,
        };
        assert_eq!(s.reason(), ExitReason::Ended);
        s.terminated_at_ms = Some(5);
        assert_eq!(s.reason(), ExitReason::Stopped);
        s.killed = true;
        assert_eq!(s.reason(), ExitReason::KilledAfterGrace);
    }
}
