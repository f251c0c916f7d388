//! The target's half of a migration: fetch the image (bounded), verify it,
//! claim the migration through the fence, restore, announce `restored`; or
//! say why not; or stand down quietly when the source took the migration
//! back first.

use loadshift_events::migration::{self, Mode, Step};
use loadshift_events::Event;

use super::{Executor, FatalError};
use crate::checkpoint::CheckpointError;
use crate::clock::{ms, within, Clock};
use crate::deadline;
use crate::fence::{Fence, Holder};
use crate::image_store::ImageStore;
use crate::journal::{Change, MigrationRecord, Phase, Role, WorkloadRecord};
use crate::liveness::Peers;
use crate::runtime::{Handle, Runtime};

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence> Executor<R, S, P, C, F> {
    pub(super) async fn checkpointed(
        &self,
        seq: u64,
        p: &migration::Checkpointed,
    ) -> Result<(), FatalError> {
        let m = match self.journal.migration(&p.migration)? {
            Some(m) if m.phase != Phase::Restoring => {
                return self.commit(Change::new().applied(seq))
            }
            Some(m) => m,
            // A workload of that name runs here already: no migration of it
            // can be coming here (a forged `checkpointed` once killed it).
            None if self.journal.workload(&p.workload)?.is_some() => {
                tracing::warn!(migration = %p.migration, workload = %p.workload, source = %p.source,
                    "refused a checkpointed: that workload already runs on this node");
                return self.commit(Change::new().applied(seq));
            }
            None => {
                let m = self.target_record(p);
                let refused = match self.journal.drain()? {
                    Some(drain) => Some(drain.refusal(&self.node)),
                    None => (p.spec.runtime != self.runtime.kind()).then(|| {
                        format!(
                            "node {} runs {} workloads, not {}",
                            self.node,
                            self.runtime.kind(),
                            p.spec.runtime
                        )
                    }),
                };
                if let Some(reason) = refused {
                    return self
                        .give_up_target(seq, m, Step::Restore, reason, false)
                        .await;
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
            deadline_at_ms: None,
            images_settled: false,
            mode: if p.lazy {
                Mode::Lazy
            } else if p.stream.is_some() {
                Mode::Stream
            } else {
                Mode::Copy
            },
            fallback: None,
            // Cleared once what arrived matched: a restart then knows the
            // pages next to the image were checked.
            streamed: p.stream.clone(),
        }
    }

    /// Fetches, verifies and restores the image of a migration in phase
    /// `Restoring`, or finds the copy a restore before a crash started.
    async fn restore_step(&self, seq: u64, m: MigrationRecord) -> Result<(), FatalError> {
        // Delivered again after a crash: a criu restore we started may still
        // be running, or may have finished.
        self.runtime.settle(&m.images).await;
        if let Some(handle) = self.runtime.find_restored(&m.workload, &m.images).await {
            if m.mode == Mode::Lazy && !crate::lazy::all_arrived(&m.images) {
                // Restarted during post-copy: the relay to the source died
                // with the executor before every page arrived.
                let reason = "post-copy lost its source: this node restarted before every page arrived; the half-restored workload was killed here";
                return self
                    .postcopy_lost(seq, m, Some(handle), reason.into())
                    .await;
            }
            return self.adopt_restored(seq, m, handle).await;
        }
        // Down for a while: the source may have taken the migration back.
        let held = match self.ask_fence(self.fence.holder(m.id)).await {
            Ok(Some(Holder::Source)) => {
                return self
                    .stand_down(seq, m, "the source took the migration back")
                    .await
            }
            Ok(Some(Holder::Target)) => true,
            _ => false,
        };
        if held {
            // Claimed before a crash, and no copy runs: that life unpacked
            // the workload's files and stopped short of the restore. Start
            // afresh, and if this attempt fails give the claim back, or the
            // source waits for our word for ever.
            if let Err(e) = self.runtime.remove(&m.workload, None).await {
                tracing::warn!(migration = %m.id, error = %e, "files of an earlier attempt left here");
            }
        }
        // A post-copy needs the door this node offered the source: held in
        // memory, so a restart since the offer lost it (nothing ran here,
        // the source takes the workload back).
        let daemon = match m.mode {
            Mode::Lazy => match self.streams.postcopy.take_daemon_address(m.id) {
                Some(a) => Some(a),
                None => {
                    let reason = "post-copy: no connection to the source's pages (this node restarted since its offer)".to_string();
                    return self
                        .give_up_target(seq, m, Step::Download, reason, held)
                        .await;
                }
            },
            _ => None,
        };
        let m = match self.check_pages(m).await {
            Ok(m) => m,
            Err((m, step, reason)) => {
                return self.give_up_target(seq, m, step, reason, false).await
            }
        };
        let m = match self.fetch_step(m).await {
            Ok(m) => m,
            Err((m, step, reason)) => return self.give_up_target(seq, m, step, reason, held).await,
        };
        // The last moment the source can still take it back: from the claim
        // on, only this node says where the workload runs.
        if self.claim_for_restore(m.id).await != Holder::Target {
            return self
                .stand_down(seq, m, "the source fenced the migration before the restore")
                .await;
        }
        match daemon {
            Some(daemon) => self.restore_lazy(seq, m, daemon).await,
            None => self.restore_claimed(seq, m).await,
        }
    }

    /// Post-copy: restores the workload with its memory on demand from the
    /// source (the lazy-pages daemon reaching it through `daemon`, this
    /// node's end of the relay), then waits for the last page: only then
    /// does it say `restored`, and only then may the source clean up.
    async fn restore_lazy(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        (daemon, pages): (std::net::SocketAddr, u64),
    ) -> Result<(), FatalError> {
        let Some(rt) = self.runtime.postcopy() else {
            let reason = "this node cannot restore with lazy pages".to_string();
            return self
                .give_up_target(seq, m, Step::Restore, reason, true)
                .await;
        };
        let limit = self.deadlines.criu(m.image_bytes);
        let t = self.clock.monotonic();
        let started =
            crate::lazy::LazyRestore::start(rt, &m.workload, &m.images, &m.files, daemon, limit)
                .await;
        let restore = match started {
            Ok(r) => r,
            Err(e) => {
                return self
                    .give_up_target(seq, m, Step::Restore, e.to_string(), true)
                    .await
            }
        };
        let resumed = self.clock.monotonic();
        m.timings.restore_ms = Some(ms(resumed - t));
        m.timings.downtime_ms = m.frozen_at_ms.map(|f| (self.clock.now_ms() - f) as f64);
        tracing::info!(migration = %m.id, downtime = ?m.timings.downtime_ms, "resumed here; its pages follow");
        let handle = restore.handle().clone();
        // The pages come at the pace the workload faults them and the
        // daemon pushes them (about 110 MiB/s here): bounded as generously
        // as the relay that carries them, since the bound kills the workload.
        m.image_bytes = m.image_bytes.saturating_add(pages);
        let bound = self.deadlines.target(pages, None);
        match restore.finish(bound).await {
            Ok(()) => {
                m.timings.postcopy_ms = Some(ms(self.clock.monotonic() - resumed));
                self.finish_target(seq, m, handle)
            }
            Err(e) => self.postcopy_lost(seq, m, None, e.to_string()).await,
        }
    }

    /// Post-copy broke after the workload ran here: its copy (`copy`, when
    /// not killed already) cannot run without the rest of its memory and is
    /// killed. The claim is kept: the source must not resume a workload
    /// that ran here, so the workload is lost, and `failed` says why.
    async fn postcopy_lost(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        copy: Option<Handle>,
        reason: String,
    ) -> Result<(), FatalError> {
        tracing::error!(migration = %m.id, workload = %m.workload, %reason, "post-copy broke: the workload runs nowhere");
        if let Err(e) = self.runtime.remove(&m.workload, copy.as_ref()).await {
            tracing::warn!(migration = %m.id, error = %e, "a broken post-copy left something behind");
        }
        self.runtime.discard_image(&m.images);
        m.phase = Phase::RolledBack;
        m.failed_step = Some(Step::Restore);
        m.images_settled = true;
        let failed = self.failed_event(&m, Step::Restore, reason);
        self.commit(Change::new().put_migration(&m).publish(failed).applied(seq))
    }

    /// Claims migration `id` for the restore, asking again until the fence
    /// answers. A claim whose answer was lost (this node's NATS connection
    /// cut) may still have been made, then or when the client sends it on
    /// reconnecting: a target that gave up on it would hold the fence
    /// without knowing, and the source would wait for its word for ever
    /// with the workload frozen (found by the fault matrix). Asking again
    /// is safe: a claim this side made answers `Target` again.
    async fn claim_for_restore(&self, id: uuid::Uuid) -> Holder {
        loop {
            match self.ask_fence(self.fence.claim(id, Holder::Target)).await {
                Ok(holder) => return holder,
                Err(e) => {
                    tracing::warn!(migration = %id, error = %e, "the fence did not answer the claim; asking again");
                    self.clock.sleep(self.deadlines.floor).await;
                }
            }
        }
    }

    /// A streamed migration: the pages that arrived over the direct
    /// connection must be what the source's dump sent (byte count and
    /// BLAKE3), else nothing is restored. Pages checked before a restart
    /// (the record's `streamed` cleared) are not checked again; pages whose
    /// receipt a restart lost cannot be trusted, and the source resumes.
    async fn check_pages(
        &self,
        mut m: MigrationRecord,
    ) -> Result<MigrationRecord, (MigrationRecord, Step, String)> {
        let Some(sent) = m.streamed.clone() else {
            return Ok(m);
        };
        let limit = self.deadlines.transfer(sent.bytes, None);
        let t = self.clock.monotonic();
        let arrived = match self.streams.receipt(m.id, limit).await {
            Ok(a) => a,
            Err(e) => return Err((m, Step::Download, format!("streamed pages: {e}"))),
        };
        if arrived != sent {
            let reason = format!(
                "streamed pages differ from what the source sent: {} bytes with BLAKE3 {}, the source sent {} bytes with {}",
                arrived.bytes, arrived.blake3, sent.bytes, sent.blake3
            );
            return Err((m, Step::Verify, reason));
        }
        tracing::info!(migration = %m.id, bytes = sent.bytes, waited = ?(self.clock.monotonic() - t), "streamed pages arrived whole");
        m.streamed = None;
        if let Err(e) = self.journal.commit(Change::new().put_migration(&m)) {
            tracing::warn!(migration = %m.id, error = %e, "pages check not kept");
        }
        Ok(m)
    }

    /// Fetches and verifies the image, bounded by its size at the speed
    /// measured here before; a partial image is discarded. `Err` carries the
    /// failed step and why.
    async fn fetch_step(
        &self,
        mut m: MigrationRecord,
    ) -> Result<MigrationRecord, (MigrationRecord, Step, String)> {
        let (object, sha) = (
            m.object.clone().unwrap_or_default(),
            m.sha256.clone().unwrap_or_default(),
        );
        let wdir = self.runtime.workload_dir(&m.workload);
        let speed = self.journal.speed().ok().flatten();
        let limit = self.deadlines.transfer(m.image_bytes, speed);
        let t = self.clock.monotonic();
        // What a fetch before a crash left is partial: never restore from it.
        // (A stream's pages wait next to it; they would go too, so the
        // unpacker writes over what a partial fetch left instead.)
        if m.mode != Mode::Stream {
            self.runtime.discard_image(&m.images);
        }
        crate::fault::crash_point(crate::fault::BEFORE_DOWNLOAD);
        let fetch = self.store.fetch(&object, &sha, &m.images, &wdir);
        let fetched = within(&self.clock, limit, fetch).await;
        let took = self.clock.monotonic() - t;
        m.timings.download_ms = Some(ms(took));
        match fetched {
            Ok(Ok(f)) => {
                m.files = f.manifest.files;
                if let Some(sample) = deadline::speed(f.bytes, took) {
                    let blended = deadline::blend(speed, sample);
                    if let Err(e) = self.journal.commit(Change::new().speed(blended)) {
                        tracing::warn!(error = %e, "measured speed not kept");
                    }
                }
                Ok(m)
            }
            Ok(Err(e @ CheckpointError::Store { .. })) => Err((m, Step::Download, e.to_string())),
            Ok(Err(e)) => Err((m, Step::Verify, e.to_string())),
            Err(e) => {
                self.runtime.discard_image(&m.images);
                let reason = format!("the image did not arrive: {e}");
                Err((m, Step::Download, reason))
            }
        }
    }

    /// Restores a migration this node holds the fence of.
    async fn restore_claimed(&self, seq: u64, mut m: MigrationRecord) -> Result<(), FatalError> {
        let t = self.clock.monotonic();
        match self.restore_within(&m).await {
            Ok(handle) => {
                m.timings.restore_ms = Some(ms(self.clock.monotonic() - t));
                m.timings.downtime_ms = m.frozen_at_ms.map(|f| (self.clock.now_ms() - f) as f64);
                self.finish_target(seq, m, handle)
            }
            Err(e) => self.give_up_target(seq, m, Step::Restore, e, true).await,
        }
    }

    /// A copy a restore before a crash started runs: it may stay only if
    /// this node holds the fence; a restore that lost the race is killed.
    async fn adopt_restored(
        &self,
        seq: u64,
        m: MigrationRecord,
        handle: Handle,
    ) -> Result<(), FatalError> {
        match self.ask_fence(self.fence.claim(m.id, Holder::Target)).await {
            Ok(Holder::Source) | Ok(Holder::Released) => {
                tracing::error!(migration = %m.id, ?handle, "a restored copy runs although the source holds the migration: killing it");
                if let Err(e) = self.runtime.remove(&m.workload, Some(&handle)).await {
                    tracing::error!(migration = %m.id, error = %e, "the late copy was not removed");
                }
                self.stand_down(seq, m, "the source fenced the migration")
                    .await
            }
            // Ours (we claim before every restore), or the fence cannot be
            // asked: the copy runs, and the source waits for our word.
            _ => self.finish_target(seq, m, handle),
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
        // The name now belongs to this node (in the background: this step
        // must not wait on NATS once the journal holds it).
        self.names_moved(&m.workload);
        // The image has served; the restored tasks no longer need it. Only
        // after the commit: until then a restart finds the copy through it.
        self.runtime.discard_image(&m.images);
        m.images_settled = true;
        self.commit(Change::new().put_migration(&m))
    }

    /// Ends a migration this node cannot restore: nothing of it stays here
    /// and the source resumes it. A target that `claimed` the fence gives it
    /// back first, so the source may act on the failure.
    async fn give_up_target(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        step: Step,
        reason: String,
        claimed: bool,
    ) -> Result<(), FatalError> {
        tracing::warn!(migration = %m.id, %step, %reason, "cannot restore here; the source resumes it");
        if let Err(e) = self.runtime.remove(&m.workload, None).await {
            tracing::warn!(migration = %m.id, error = %e, "a failed restore left something behind");
        }
        self.runtime.discard_image(&m.images);
        if claimed {
            if let Err(e) = self.ask_fence(self.fence.release(m.id)).await {
                tracing::error!(migration = %m.id, error = %e, "cannot give the migration back; the source waits for it");
            }
        }
        m.phase = Phase::RolledBack;
        m.failed_step = Some(step);
        m.images_settled = true;
        let failed = self.failed_event(&m, step, reason);
        self.commit(Change::new().put_migration(&m).publish(failed).applied(seq))
    }

    /// Ends a migration the source took back: nothing of it stays here and
    /// nothing is announced (the source already said it all).
    async fn stand_down(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        why: &str,
    ) -> Result<(), FatalError> {
        tracing::warn!(migration = %m.id, why, "standing down; the workload runs on the source");
        self.runtime.discard_image(&m.images);
        m.phase = Phase::RolledBack;
        m.images_settled = true;
        self.commit(Change::new().put_migration(&m).applied(seq))
    }

    /// The source took the migration back. Events come in order, so this
    /// node already handled the `checkpointed` (or never will): what is left
    /// is to make sure its image is gone.
    pub(super) async fn fenced(&self, seq: u64, p: &migration::Fenced) -> Result<(), FatalError> {
        match self.journal.migration(&p.migration)? {
            Some(m) if m.role == Role::Target && m.phase == Phase::Restoring => {
                self.stand_down(seq, m, "fenced by the source").await
            }
            Some(m) if m.role == Role::Target => {
                self.runtime.discard_image(&m.images);
                self.commit(Change::new().applied(seq))
            }
            _ => self.commit(Change::new().applied(seq)),
        }
    }
}
