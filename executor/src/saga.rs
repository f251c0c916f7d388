//! The migration saga, this node's half of it.
//!
//! Each incoming event is handled in order; a handler decides, acts through
//! the [`Runtime`], and writes the outcome to the [`Journal`] together with the
//! events to announce and the stream sequence it applied, in one atomic
//! commit. Before a step with side effects (a dump, a restore) the phase is
//! written first, so an executor killed in the middle finds, when the event is
//! delivered again, where it stood and finishes or undoes the step.
//!
//! Source: `requested` → validate → dump → pack and upload → `checkpointed`;
//! then `restored` → clean up → `completed`, or `failed` → restore from its own
//! image → `rolled_back`. Target: `checkpointed` → download → verify → restore
//! → `restored`, or `failed`.

use std::path::PathBuf;

use loadshift_events::migration::{self, Step, Timings};
use loadshift_events::workload::{self, WorkloadSpec};
use loadshift_events::{Envelope, Event, NodeName};

use crate::checkpoint::CheckpointError;
use crate::clock::{ms, Clock, SystemClock};
use crate::fault;
use crate::image_store::{ImageStore, JetStreamImages};
use crate::journal::{Change, Journal, JournalError, MigrationRecord, Phase, Role, WorkloadRecord};
use crate::liveness::{NatsPeers, Peers};
use crate::runtime::{Handle, Runtime};

/// One node's executor: its journal and the effects it acts through.
///
/// Every effect sits behind a trait (the runtime, the image store, the peers,
/// the clock), the way youki puts each kernel call behind `Syscall`: the
/// service runs it with the real ones (the defaults), the saga's unit tests
/// with recording doubles, and one piece of code is tested both ways.
pub struct Executor<R, S = JetStreamImages, P = NatsPeers, C = SystemClock> {
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
    /// Where images are written (tmpfs: ~30x faster than disk here).
    pub images_root: PathBuf,
    /// Woken after a commit that queued events.
    pub outbox: std::sync::Arc<tokio::sync::Notify>,
}

/// A failure the executor cannot turn into an event: its journal is broken.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FatalError(#[from] JournalError);

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock> Executor<R, S, P, C> {
    fn envelope(&self, event: Event) -> Envelope {
        Envelope::new(self.node.clone(), event)
    }

    fn commit(&self, change: Change) -> Result<(), FatalError> {
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
            Event::MigrationRequested(p) if p.source == self.node => self.requested(seq, p).await,
            Event::MigrationCheckpointed(p) if p.target == self.node => {
                self.checkpointed(seq, p).await
            }
            Event::MigrationRestored(p) if p.source == self.node => self.restored(seq, p).await,
            Event::MigrationFailed(p) if p.source == self.node => self.failed(seq, p).await,
            // Our own announcements (started, completed, rolled_back, ...)
            // come back to us too; nothing to do but note them.
            _ => self.commit(Change::new().applied(seq)),
        }
    }

    async fn start(&self, seq: u64, p: &workload::StartRequested) -> Result<(), FatalError> {
        if let Some(w) = self.journal.workload(&p.workload)? {
            tracing::info!(workload = %p.workload, "start requested again; it already runs here");
            let _ = w;
            return self.commit(Change::new().applied(seq));
        }
        let outcome = if p.spec.runtime != self.runtime.kind() {
            Err(format!(
                "node {} runs {} workloads, not {}",
                self.node,
                self.runtime.kind(),
                p.spec.runtime
            ))
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
                tracing::warn!(workload = %p.workload, %reason, "workload did not start");
                let failed = self.envelope(Event::WorkloadStartFailed(workload::StartFailed {
                    workload: p.workload.clone(),
                    reason,
                }));
                self.commit(Change::new().publish(failed).applied(seq))
            }
        }
    }

    /// Checks a request; `Err` is the reason to refuse it.
    async fn validate(&self, p: &migration::Requested) -> Result<WorkloadRecord, String> {
        let Some(w) = self
            .journal
            .workload(&p.workload)
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "workload {} does not run on node {}",
                p.workload, self.node
            ));
        };
        if let Some(other) = w.migrating {
            return Err(format!(
                "workload {} is already migrating (migration {other})",
                p.workload
            ));
        }
        if p.target == self.node {
            return Err(format!(
                "workload {} already runs on the target {}",
                p.workload, p.target
            ));
        }
        if !self.runtime.is_running(&w.handle).await {
            return Err(format!(
                "workload {} is no longer running on node {}",
                p.workload, self.node
            ));
        }
        let pong = self.peers.ping(&p.target).await?;
        if pong.runtime != w.spec.runtime {
            return Err(format!(
                "target node {} runs {} workloads; {} is a {} workload",
                p.target, pong.runtime, p.workload, w.spec.runtime
            ));
        }
        if pong.capacity.cores <= 0.0 {
            return Err(format!("target node {} declares no CPU capacity", p.target));
        }
        Ok(w)
    }

    async fn requested(&self, seq: u64, p: &migration::Requested) -> Result<(), FatalError> {
        if let Some(m) = self.journal.migration(&p.migration)? {
            // Delivered again: after a crash mid-step, or a duplicate request.
            return self.drive_source(seq, m).await;
        }
        let w = match self.validate(p).await {
            Ok(w) => w,
            Err(reason) => {
                tracing::warn!(migration = %p.migration, %reason, "migration refused");
                let record = MigrationRecord {
                    id: p.migration,
                    role: Role::Source,
                    phase: Phase::Refused,
                    workload: p.workload.clone(),
                    spec: WorkloadSpec {
                        runtime: self.runtime.kind(),
                        command: vec![],
                        image: None,
                        env: Default::default(),
                    },
                    source: p.source.clone(),
                    target: p.target.clone(),
                    images: PathBuf::new(),
                    object: None,
                    sha256: None,
                    image_bytes: 0,
                    files: vec![],
                    timings: Timings::default(),
                    requested_at_ms: self.clock.now_ms(),
                    frozen_at_ms: None,
                    failed_step: Some(Step::Validate),
                };
                let failed = self.failed_event(&record, Step::Validate, reason);
                return self.commit(
                    Change::new()
                        .put_migration(&record)
                        .publish(failed)
                        .applied(seq),
                );
            }
        };
        let record = MigrationRecord {
            id: p.migration,
            role: Role::Source,
            phase: Phase::Dumping,
            workload: p.workload.clone(),
            spec: w.spec.clone(),
            source: p.source.clone(),
            target: p.target.clone(),
            images: self.images_root.join(p.migration.to_string()),
            object: None,
            sha256: None,
            image_bytes: 0,
            files: self.runtime.travelling_files(&p.workload),
            timings: Timings::default(),
            requested_at_ms: self.clock.now_ms(),
            frozen_at_ms: None,
            failed_step: None,
        };
        // Write-ahead: from here on the workload is being moved.
        self.commit(
            Change::new()
                .put_migration(&record)
                .put_workload(&WorkloadRecord {
                    migrating: Some(p.migration),
                    ..w
                }),
        )?;
        self.drive_source(seq, record).await
    }

    /// Carries a source-side migration forward from wherever it stands.
    async fn drive_source(&self, seq: u64, mut m: MigrationRecord) -> Result<(), FatalError> {
        let Some(w) = self.journal.workload(&m.workload)? else {
            // Already cleaned up (completed), or refused: nothing left to do.
            return self.commit(Change::new().applied(seq));
        };
        if m.phase == Phase::Dumping {
            if let Err((reason, handle)) = self.dump_step(&mut m, &w).await {
                return self
                    .give_up_source(seq, m, Step::Dump, Some(reason), handle)
                    .await;
            }
            m.phase = Phase::Uploading;
            self.commit(Change::new().put_migration(&m))?;
        }
        if m.phase == Phase::Uploading {
            return self.upload_step(seq, m).await;
        }
        // Waiting for the target, or over: nothing more for this event.
        self.commit(Change::new().applied(seq))
    }

    /// Dumps the workload into `m.images` unless a dump from before a crash
    /// is already complete there. `Err` carries the reason and the workload's
    /// handle when it still runs here.
    async fn dump_step(
        &self,
        m: &mut MigrationRecord,
        w: &WorkloadRecord,
    ) -> Result<(), (String, Option<Handle>)> {
        self.runtime.settle(&m.images).await;
        if self.runtime.dump_complete(&m.images) {
            return Ok(());
        }
        if !self.runtime.is_running(&w.handle).await {
            let reason = format!(
                "workload {} stopped running before it could be dumped",
                m.workload
            );
            return Err((reason, None));
        }
        // A partial dump from before a crash is worthless: start afresh.
        self.runtime.discard_image(&m.images);
        m.frozen_at_ms = Some(self.clock.now_ms());
        let t = self.clock.monotonic();
        if let Err(e) = self.runtime.dump(&m.workload, &w.handle, &m.images).await {
            tracing::warn!(migration = %m.id, error = %e, "dump failed; the workload keeps running here");
            self.runtime.discard_image(&m.images);
            let handle = self
                .runtime
                .is_running(&w.handle)
                .await
                .then(|| w.handle.clone());
            return Err((e.to_string(), handle));
        }
        m.timings.dump_ms = Some(ms(self.clock.monotonic() - t));
        fault::crash_point(fault::AFTER_DUMP);
        Ok(())
    }

    /// Stores the dumped image and announces `checkpointed`; on failure the
    /// workload resumes here from its own image.
    async fn upload_step(&self, seq: u64, mut m: MigrationRecord) -> Result<(), FatalError> {
        let t = self.clock.monotonic();
        let object = m.id.to_string();
        let wdir = self.runtime.workload_dir(&m.workload);
        let stored = self.store.put(&object, &m.images, &wdir, &m.files).await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(migration = %m.id, error = %e, "upload failed; resuming here");
                let handle = self.resume_here(&m).await;
                return self
                    .give_up_source(seq, m, Step::Upload, Some(e.to_string()), handle)
                    .await;
            }
        };
        m.timings.upload_ms = Some(ms(self.clock.monotonic() - t));
        m.image_bytes = stored.bytes;
        m.sha256 = Some(stored.sha256.clone());
        m.object = Some(object.clone());
        m.phase = Phase::AwaitingTarget;
        let event = self.envelope(Event::MigrationCheckpointed(migration::Checkpointed {
            migration: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            spec: m.spec.clone(),
            object,
            sha256: stored.sha256,
            image_bytes: stored.bytes,
            timings: m.timings,
            frozen_at_ms: m.frozen_at_ms.unwrap_or_else(|| self.clock.now_ms()),
        }));
        tracing::info!(migration = %m.id, bytes = stored.bytes, "checkpointed; waiting for the target");
        self.commit(Change::new().put_migration(&m).publish(event).applied(seq))
    }

    /// Restores the workload on this node from its own image, after a failed
    /// step. `None` when even that failed (the error is logged).
    async fn resume_here(&self, m: &MigrationRecord) -> Option<Handle> {
        self.runtime.settle(&m.images).await;
        // Killed during an earlier attempt: that restore may have finished
        // without us, and a second one would collide with it.
        if let Some(h) = self.runtime.find_restored(&m.workload, &m.images).await {
            return Some(h);
        }
        if !self.runtime.dump_complete(&m.images) {
            if let (Some(object), Some(sha)) = (&m.object, &m.sha256) {
                // tmpfs lost (reboot): the stored image is the same one.
                let wdir = self.runtime.workload_dir(&m.workload);
                match self.store.fetch(object, sha, &m.images, &wdir).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(migration = %m.id, error = %e, "no image to resume from");
                        return None;
                    }
                }
            }
        }
        match self
            .runtime
            .restore(&m.workload, &m.spec, &m.images, &m.files)
            .await
        {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(migration = %m.id, error = %e, "cannot resume the workload from its own image");
                None
            }
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

    /// Ends a source-side migration that failed at `step`: the workload runs
    /// here again with `handle` (or it is lost, which is logged loudly).
    /// `reason` is the failure to announce, when it was found here.
    async fn give_up_source(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        step: Step,
        reason: Option<String>,
        handle: Option<Handle>,
    ) -> Result<(), FatalError> {
        m.phase = Phase::RolledBack;
        m.failed_step = Some(step);
        let mut change = Change::new().put_migration(&m);
        // A failure found here is announced here; one the target announced
        // is not repeated.
        if let Some(reason) = reason {
            change = change.publish(self.failed_event(&m, step, reason));
        }
        let resumed = handle.is_some();
        match handle {
            Some(handle) => {
                let rolled = self.envelope(Event::MigrationRolledBack(migration::RolledBack {
                    migration: m.id,
                    workload: m.workload.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    pid: handle.pid(),
                }));
                change = change
                    .put_workload(&WorkloadRecord {
                        name: m.workload.clone(),
                        spec: m.spec.clone(),
                        handle,
                        migrating: None,
                    })
                    .publish(rolled);
            }
            None => {
                tracing::error!(migration = %m.id, workload = %m.workload, "the workload does not run anywhere; its image stays in {} (stored as {:?})", m.images.display(), m.object);
                change = change.remove_workload(&m.workload);
            }
        }
        self.commit(change.applied(seq))?;
        if resumed {
            // Running again from its own image: the image has served. Only
            // after the commit, because until then a restart looks for the
            // resumed copy through the image folder.
            self.remove_images(&m).await;
        }
        Ok(())
    }

    /// Removes a migration's image here and in the store (best effort: a
    /// failure costs space, and is logged).
    async fn remove_images(&self, m: &MigrationRecord) {
        self.runtime.discard_image(&m.images);
        if let Some(object) = &m.object {
            if let Err(e) = self.store.delete(object).await {
                tracing::warn!(migration = %m.id, error = %e, "stored image not removed");
            }
        }
    }

    async fn checkpointed(&self, seq: u64, p: &migration::Checkpointed) -> Result<(), FatalError> {
        let m = match self.journal.migration(&p.migration)? {
            Some(m) if m.phase != Phase::Restoring => {
                return self.commit(Change::new().applied(seq))
            }
            Some(m) => m,
            None => {
                let m = self.target_record(p);
                if p.spec.runtime != self.runtime.kind() {
                    let reason = format!(
                        "node {} runs {} workloads, not {}",
                        self.node,
                        self.runtime.kind(),
                        p.spec.runtime
                    );
                    return self.give_up_target(seq, m, Step::Restore, reason).await;
                }
                // Write-ahead: from here on an image may arrive here.
                self.commit(Change::new().put_migration(&m))?;
                m
            }
        };
        self.restore_step(seq, m).await
    }

    /// What the target knows of a migration when its image is announced.
    fn target_record(&self, p: &migration::Checkpointed) -> MigrationRecord {
        MigrationRecord {
            id: p.migration,
            role: Role::Target,
            phase: Phase::Restoring,
            workload: p.workload.clone(),
            spec: p.spec.clone(),
            source: p.source.clone(),
            target: p.target.clone(),
            images: self.images_root.join(p.migration.to_string()),
            object: Some(p.object.clone()),
            sha256: Some(p.sha256.clone()),
            image_bytes: p.image_bytes,
            files: vec![],
            timings: p.timings,
            requested_at_ms: self.clock.now_ms(),
            frozen_at_ms: Some(p.frozen_at_ms),
            failed_step: None,
        }
    }

    /// Fetches, verifies and restores the image of a migration in phase
    /// `Restoring`, or finds the copy a restore before a crash started.
    async fn restore_step(&self, seq: u64, mut m: MigrationRecord) -> Result<(), FatalError> {
        // Delivered again after a crash: a criu restore we started may still
        // be running, or may have finished.
        self.runtime.settle(&m.images).await;
        if let Some(handle) = self.runtime.find_restored(&m.workload, &m.images).await {
            return self.finish_target(seq, m, handle);
        }
        let (object, sha) = (
            m.object.clone().unwrap_or_default(),
            m.sha256.clone().unwrap_or_default(),
        );
        let wdir = self.runtime.workload_dir(&m.workload);
        let t = self.clock.monotonic();
        // What a fetch before a crash left is partial: never restore from it.
        self.runtime.discard_image(&m.images);
        let fetched = self.store.fetch(&object, &sha, &m.images, &wdir).await;
        m.timings.download_ms = Some(ms(self.clock.monotonic() - t));
        let manifest = match fetched {
            Ok(f) => f.manifest,
            Err(e @ CheckpointError::Store { .. }) => {
                return self
                    .give_up_target(seq, m, Step::Download, e.to_string())
                    .await
            }
            Err(e) => {
                return self
                    .give_up_target(seq, m, Step::Verify, e.to_string())
                    .await
            }
        };
        m.files = manifest.files;
        let t = self.clock.monotonic();
        match self
            .runtime
            .restore(&m.workload, &m.spec, &m.images, &m.files)
            .await
        {
            Ok(handle) => {
                m.timings.restore_ms = Some(ms(self.clock.monotonic() - t));
                m.timings.downtime_ms = m.frozen_at_ms.map(|f| (self.clock.now_ms() - f) as f64);
                self.finish_target(seq, m, handle)
            }
            Err(e) => {
                self.give_up_target(seq, m, Step::Restore, e.to_string())
                    .await
            }
        }
    }

    fn finish_target(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        handle: Handle,
    ) -> Result<(), FatalError> {
        m.phase = Phase::Restored;
        tracing::info!(migration = %m.id, workload = %m.workload, ?handle, "restored here");
        let event = self.envelope(Event::MigrationRestored(migration::Restored {
            migration: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            pid: handle.pid(),
            container_id: handle.container_id(),
            image_bytes: m.image_bytes,
            timings: m.timings,
        }));
        self.commit(
            Change::new()
                .put_workload(&WorkloadRecord {
                    name: m.workload.clone(),
                    spec: m.spec.clone(),
                    handle,
                    migrating: None,
                })
                .put_migration(&m)
                .publish(event)
                .applied(seq),
        )?;
        // The image has served; the restored tasks no longer need it.
        self.runtime.discard_image(&m.images);
        Ok(())
    }

    async fn give_up_target(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        step: Step,
        reason: String,
    ) -> Result<(), FatalError> {
        tracing::warn!(migration = %m.id, %step, %reason, "cannot restore here; the source resumes it");
        // Nothing of it may stay here: the source will run it again.
        let _ = self.runtime.remove(&m.workload, None).await;
        self.runtime.discard_image(&m.images);
        m.phase = Phase::RolledBack;
        m.failed_step = Some(step);
        let failed = self.failed_event(&m, step, reason);
        self.commit(Change::new().put_migration(&m).publish(failed).applied(seq))
    }

    async fn restored(&self, seq: u64, p: &migration::Restored) -> Result<(), FatalError> {
        let Some(mut m) = self.journal.migration(&p.migration)? else {
            return self.commit(Change::new().applied(seq));
        };
        if m.role != Role::Source || m.phase != Phase::AwaitingTarget {
            return self.commit(Change::new().applied(seq));
        }
        let t = self.clock.monotonic();
        if let Err(e) = self.runtime.remove(&m.workload, None).await {
            tracing::warn!(migration = %m.id, error = %e, "cleanup left something behind");
        }
        self.remove_images(&m).await;
        m.timings.download_ms = p.timings.download_ms;
        m.timings.restore_ms = p.timings.restore_ms;
        m.timings.downtime_ms = p.timings.downtime_ms;
        m.timings.cleanup_ms = Some(ms(self.clock.monotonic() - t));
        m.timings.total_ms = Some((self.clock.now_ms() - m.requested_at_ms) as f64);
        m.phase = Phase::Completed;
        let done = self.envelope(Event::MigrationCompleted(migration::Completed {
            migration: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            image_bytes: m.image_bytes,
            timings: m.timings,
        }));
        tracing::info!(migration = %m.id, timings = ?m.timings, "migration completed");
        self.commit(
            Change::new()
                .put_migration(&m)
                .remove_workload(&m.workload)
                .publish(done)
                .applied(seq),
        )
    }

    async fn failed(&self, seq: u64, p: &migration::Failed) -> Result<(), FatalError> {
        let Some(m) = self.journal.migration(&p.migration)? else {
            return self.commit(Change::new().applied(seq));
        };
        if m.role != Role::Source || m.phase != Phase::AwaitingTarget {
            // Our own failure announcement, or already handled.
            return self.commit(Change::new().applied(seq));
        }
        tracing::warn!(migration = %m.id, step = %p.step, reason = %p.reason, "target failed; resuming here");
        let handle = self.resume_here(&m).await;
        self.give_up_source(seq, m, p.step, None, handle).await
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
            tracing::info!(workload = %w.name, "workload exited");
            let event = self.envelope(Event::WorkloadExited(workload::Exited {
                workload: w.name.clone(),
                code: None,
                signal: None,
            }));
            self.commit(Change::new().remove_workload(&w.name).publish(event))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
