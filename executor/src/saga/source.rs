//! The source's half of a migration: validate, dump, store the image,
//! announce it, then wait (bounded) for the target's word; clean up after
//! `restored`, or take the migration back through the fence and resume the
//! workload here.

use std::path::PathBuf;
use std::time::Duration;

use loadshift_events::migration::{self, Mode, Step, Timings};
use loadshift_events::workload::WorkloadSpec;
use loadshift_events::Event;

use super::{Executor, FatalError};
use crate::clock::{ms, within, Clock};
use crate::deadline;
use crate::fault;
use crate::fence::{Fence, Holder};
use crate::image_store::ImageStore;
use crate::journal::{Change, MigrationRecord, Phase, Role, WorkloadRecord};
use crate::liveness::Peers;
use crate::runtime::{Handle, Runtime};
use crate::stream::{Link, OfferRequest};

/// Below this much resident memory `auto` copies: the object store is the
/// road for small images (a direct connection costs two page-servers and a
/// handshake, more than such an image's transfer).
pub const SMALL_IMAGE_BYTES: u64 = 8 << 20;

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence> Executor<R, S, P, C, F> {
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
        if self
            .journal
            .stop(&p.workload)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err(format!("workload {} is being stopped", p.workload));
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
        let pong = within(
            &self.clock,
            crate::liveness::PING_TIMEOUT,
            self.peers.ping(&p.target),
        )
        .await
        .map_err(|_| format!("target node {} did not answer in time", p.target))??;
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

    pub(super) async fn requested(
        &self,
        seq: u64,
        p: &migration::Requested,
    ) -> Result<(), FatalError> {
        if let Some(m) = self.journal.migration(&p.migration)? {
            // Delivered again: after a crash mid-step, or a duplicate request.
            return self.drive_source(seq, m, None).await;
        }
        let w = match self.validate(p).await {
            Ok(w) => w,
            Err(reason) => {
                tracing::warn!(migration = %p.migration, %reason, "migration refused");
                let record = self.refused_record(p);
                let failed = self.failed_event(&record, Step::Validate, reason);
                return self.commit(
                    Change::new()
                        .put_migration(&record)
                        .publish(failed)
                        .applied(seq),
                );
            }
        };
        let rss = within(
            &self.clock,
            self.deadlines.floor,
            self.runtime.usage(&w.handle),
        )
        .await
        .ok()
        .flatten()
        .map_or(0, |u| u.rss_bytes);
        let (mode, fallback, link) = self.choose_mode(p, rss, w.spec.no_postcopy).await;
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
            // Until the image is stored, its size is guessed from what the
            // workload holds in memory (it bounds the upload).
            image_bytes: rss,
            files: self.runtime.travelling_files(&p.workload),
            timings: Timings::default(),
            requested_at_ms: self.clock.now_ms(),
            frozen_at_ms: None,
            failed_step: None,
            deadline_at_ms: None,
            images_settled: false,
            mode,
            fallback,
            streamed: None,
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
        self.drive_source(seq, record, link).await
    }

    /// The mode this migration runs in, why it is not the requested one
    /// (when it is not), and for a stream the connection the target
    /// admitted: all settled before anything is frozen, so a stream that
    /// cannot be set up costs only the fall back to a copy.
    ///
    /// Post-copy (`lazy`, `crate::lazy`) falls back to a stream, which
    /// falls back to a copy (lazy → stream → copy). `auto` picks it when the
    /// workload allows it and its estimated freeze beats a stream's
    /// ([`crate::lazy::wins`]); a workload marked `no_postcopy` is never
    /// moved lazily whatever was asked.
    async fn choose_mode(
        &self,
        p: &migration::Requested,
        rss: u64,
        no_postcopy: bool,
    ) -> (Mode, Option<String>, Option<Link>) {
        let refusal = self.postcopy_refusal(p, no_postcopy);
        let (try_lazy, mut fallback) = match p.mode {
            Mode::Auto if rss < SMALL_IMAGE_BYTES => return (Mode::Copy, None, None),
            Mode::Auto => {
                let speed = self.journal.speed().ok().flatten();
                (refusal.is_none() && crate::lazy::wins(rss, speed), None)
            }
            Mode::Stream => (false, None),
            Mode::Lazy => (refusal.is_none(), refusal),
            Mode::Copy => return (Mode::Copy, None, None),
        };
        if try_lazy {
            match self.open_stream(p, rss, true).await {
                Ok(link) => return (Mode::Lazy, None, Some(link)),
                Err(why) => {
                    fallback = Some(format!("post-copy: no direct connection ({why})"));
                }
            }
        }
        match self.open_stream(p, rss, false).await {
            Ok(link) => (Mode::Stream, fallback, Some(link)),
            Err(why) => {
                let why = format!("no direct connection ({why}): copied through the object store");
                fallback = Some(match fallback {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
                tracing::warn!(migration = %p.migration, reason = ?fallback, "falling back to a copy");
                (Mode::Copy, fallback, None)
            }
        }
    }

    /// Why this workload may not be moved with post-copy, if it may not.
    fn postcopy_refusal(&self, p: &migration::Requested, no_postcopy: bool) -> Option<String> {
        if no_postcopy {
            return Some(format!(
                "post-copy refused: {} is marked --no-postcopy (it must not die with its source)",
                p.workload
            ));
        }
        if self.runtime.postcopy().is_none() {
            return Some(format!(
                "post-copy: {} workloads cannot be moved with lazy pages",
                self.runtime.kind()
            ));
        }
        None
    }

    /// Asks the target for a stream (or, `lazy`, for the door of a
    /// post-copy) and connects to it; `Err` says why not.
    async fn open_stream(
        &self,
        p: &migration::Requested,
        rss: u64,
        lazy: bool,
    ) -> Result<Link, String> {
        if !self.runtime.streams_pages() {
            return Err(format!(
                "{} workloads cannot stream their pages",
                self.runtime.kind()
            ));
        }
        let req = OfferRequest {
            migration: p.migration,
            source: self.node.clone(),
            bytes: rss,
            lazy,
        };
        let offer = self.peers.offer_stream(&p.target, &req).await?;
        // The page stream gets what a store's upload of the same bytes would.
        // A post-copy's link lives from the dump to the last page, which
        // trickle at the pace the workload faults them (about 110 MiB/s
        // here, BENCHMARKS.md): the target's whole wait, at the unmeasured
        // speed, since its end kills the workload.
        let speed = self.journal.speed().ok().flatten();
        let limit = if lazy {
            self.deadlines.target(rss, None)
        } else {
            self.deadlines.transfer(rss, speed)
        };
        crate::stream::connect(&offer, p.migration, limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// What the journal keeps of a request refused before anything happened.
    fn refused_record(&self, p: &migration::Requested) -> MigrationRecord {
        MigrationRecord {
            id: p.migration,
            role: Role::Source,
            phase: Phase::Refused,
            workload: p.workload.clone(),
            spec: WorkloadSpec {
                runtime: self.runtime.kind(),
                command: vec![],
                image: None,
                env: Default::default(),
                no_postcopy: false,
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
            deadline_at_ms: None,
            images_settled: true,
            mode: p.mode,
            fallback: None,
            streamed: None,
        }
    }

    /// Carries a source-side migration forward from wherever it stands.
    /// `link` is the target's admitted connection for a stream that has not
    /// dumped yet (none when the request is delivered again).
    async fn drive_source(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        link: Option<Link>,
    ) -> Result<(), FatalError> {
        let Some(w) = self.journal.workload(&m.workload)? else {
            // Already cleaned up (completed), or refused: nothing left to do.
            return self.commit(Change::new().applied(seq));
        };
        if m.phase == Phase::Dumping {
            if let Err((reason, handle)) = self.dump_step(&mut m, &w, link).await {
                let failed = self.failed_event(&m, Step::Dump, reason);
                return self
                    .give_up_source(seq, m, Step::Dump, Some(failed), handle)
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
        link: Option<Link>,
    ) -> Result<(), (String, Option<Handle>)> {
        if m.mode == Mode::Lazy && link.is_none() {
            // Restarted during a lazy dump: its relay died with the executor
            // before `checkpointed`, so no target runs it. A criu that
            // outlived us is stopped (it lets go of the tree), and the
            // workload is copied instead.
            self.runtime.abandon(&m.images);
            self.runtime.settle(&m.images).await;
            self.runtime.discard_image(&m.images);
            m.mode = Mode::Copy;
            m.fallback = Some("the source restarted during its lazy dump: copied instead".into());
        }
        self.runtime.settle(&m.images).await;
        let restarted = "the source restarted during its streamed dump: copied instead";
        if self.runtime.dump_complete(&m.images) {
            if m.mode == Mode::Stream && m.streamed.is_none() {
                // What the stream sent is not known: the safety copy of the
                // pages joins the image, and the whole of it travels.
                m.mode = Mode::Copy;
                m.fallback = Some(restarted.into());
                if let Err(e) = crate::stream::merge_pages(&m.images) {
                    return Err((format!("cannot merge the streamed pages: {e}"), None));
                }
            }
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
        let dumped = match (m.mode, link) {
            (Mode::Stream, Some(link)) => self
                .dump_streamed_within(m, &w.handle, link)
                .await
                .map(Some),
            (Mode::Lazy, Some(link)) => self.dump_lazy(m, &w.handle, link).await.map(|()| None),
            (mode, _) => {
                if mode == Mode::Stream {
                    m.mode = Mode::Copy;
                    m.fallback = Some(restarted.into());
                }
                self.dump_within(m, &w.handle).await.map(|()| None)
            }
        };
        if let Err(e) = dumped.map(|pages| m.streamed = pages) {
            tracing::warn!(migration = %m.id, error = %e, "dump failed; the workload keeps running here");
            self.runtime.discard_image(&m.images);
            let handle = self
                .runtime
                .is_running(&w.handle)
                .await
                .then(|| w.handle.clone());
            return Err((e, handle));
        }
        m.timings.dump_ms = Some(ms(self.clock.monotonic() - t));
        fault::crash_point(fault::AFTER_DUMP);
        Ok(())
    }

    /// Freezes the workload and dumps all but its pages into `m.images`,
    /// then serves the pages to the target over `link` until the post-copy
    /// ends (kept in [`crate::lazy::PostCopies`]).
    async fn dump_lazy(
        &self,
        m: &MigrationRecord,
        handle: &Handle,
        link: Link,
    ) -> Result<(), String> {
        let Some(rt) = self.runtime.postcopy() else {
            return Err("this runtime cannot move a workload with lazy pages".into());
        };
        let listen = crate::lazy::local_port()
            .map_err(|e| format!("no local port for the page server: {e}"))?;
        let limit = self.deadlines.criu(m.image_bytes);
        let dump = crate::lazy::LazyDump::start(rt, handle, &m.images, listen, limit)
            .await
            .map_err(|e| e.to_string())?;
        self.streams.postcopy.keep_serving(m.id, dump.serve(link));
        Ok(())
    }

    /// Ends this node's half of a post-copy: with `keep`, the workload runs
    /// here again if the target never asked for a page (its handle);
    /// otherwise the tree here is killed. After a restart (the dump's relay
    /// died with the executor), a criu that outlived it is stopped first.
    async fn end_postcopy_here(&self, m: &MigrationRecord, keep: bool) -> Option<Handle> {
        if let Some(serving) = self.streams.postcopy.take_serving(m.id) {
            return serving.end(keep).await;
        }
        self.runtime.abandon(&m.images);
        self.runtime.settle(&m.images).await;
        let w = self.journal.workload(&m.workload).ok().flatten()?;
        if keep && self.runtime.is_running(&w.handle).await {
            return Some(w.handle);
        }
        if let Err(e) = self.runtime.remove(&m.workload, Some(&w.handle)).await {
            tracing::warn!(migration = %m.id, error = %e, "the source's copy was not removed");
        }
        None
    }

    /// Stores the dumped image (bounded by its size at the speed measured
    /// here before) and announces `checkpointed` with the deadline for the
    /// target; on failure the workload resumes here from its own image.
    async fn upload_step(&self, seq: u64, mut m: MigrationRecord) -> Result<(), FatalError> {
        let t = self.clock.monotonic();
        let object = m.id.to_string();
        let wdir = self.runtime.workload_dir(&m.workload);
        let speed = self.journal.speed()?;
        let limit = self.deadlines.transfer(m.image_bytes, speed);
        let put = self.store.put(&object, &m.images, &wdir, &m.files);
        let stored = match within(&self.clock, limit, put).await {
            Ok(Ok(stored)) => stored,
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("the image was not stored within {}", secs(limit)),
                };
                tracing::warn!(migration = %m.id, %reason, "upload failed; resuming here");
                // A cut-off upload may have left part of the object.
                m.object = Some(object);
                let handle = self.resume_here(&m).await;
                let failed = self.failed_event(&m, Step::Upload, reason);
                return self
                    .give_up_source(seq, m, Step::Upload, Some(failed), handle)
                    .await;
            }
        };
        let took = self.clock.monotonic() - t;
        m.timings.upload_ms = Some(ms(took));
        // The pages travel apart in a stream (measured) and in a post-copy
        // (what the workload held: the image size is still that guess).
        let pages = match (&m.streamed, m.mode) {
            (Some(s), _) => s.bytes,
            (None, Mode::Lazy) => m.image_bytes,
            (None, _) => 0,
        };
        m.image_bytes = stored.bytes + pages;
        m.sha256 = Some(stored.sha256.clone());
        m.object = Some(object.clone());
        m.phase = Phase::AwaitingTarget;
        let mut change = Change::new();
        let speed = match deadline::speed(stored.bytes, took) {
            Some(sample) => {
                let blended = deadline::blend(speed, sample);
                change = change.speed(blended);
                Some(blended)
            }
            None => speed,
        };
        let wait = self.deadlines.target(m.image_bytes, speed);
        m.deadline_at_ms = Some(self.clock.now_ms().saturating_add(millis(wait)));
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
            stream: m.streamed.clone(),
            lazy: m.mode == Mode::Lazy,
        }));
        tracing::info!(migration = %m.id, bytes = stored.bytes, wait = %secs(wait), "checkpointed; waiting for the target");
        self.commit(change.put_migration(&m).publish(event).applied(seq))
    }

    /// Restores the workload on this node from its own image, after a failed
    /// step. `None` when even that failed (the error is logged).
    async fn resume_here(&self, m: &MigrationRecord) -> Option<Handle> {
        if m.mode == Mode::Lazy {
            // Still frozen under its serving dump (no image holds its pages).
            return self.end_postcopy_here(m, true).await;
        }
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
                let limit = self.deadlines.transfer(m.image_bytes, None);
                let fetch = self.store.fetch(object, sha, &m.images, &wdir);
                match within(&self.clock, limit, fetch).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(migration = %m.id, error = %e, "no image to resume from");
                        return None;
                    }
                    Err(e) => {
                        tracing::error!(migration = %m.id, error = %e, "no image to resume from");
                        self.runtime.discard_image(&m.images);
                        return None;
                    }
                }
            }
        }
        match self.restore_within(m).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(migration = %m.id, error = %e, "cannot resume the workload from its own image");
                None
            }
        }
    }

    /// Ends a source-side migration that failed at `step`: the workload runs
    /// here again with `handle` (or it is lost, which is logged loudly).
    /// `announce` is what to say first (a failure found here, or the fence);
    /// a failure the target announced is not repeated.
    async fn give_up_source(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        step: Step,
        announce: Option<loadshift_events::Envelope>,
        handle: Option<Handle>,
    ) -> Result<(), FatalError> {
        m.phase = Phase::RolledBack;
        m.failed_step = Some(step);
        m.deadline_at_ms = None;
        // A workload that runs nowhere keeps its image, for a person.
        m.images_settled = handle.is_none();
        let mut change = Change::new().put_migration(&m);
        if let Some(event) = announce {
            change = change.publish(event);
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
            m.images_settled = true;
            self.commit(Change::new().put_migration(&m))?;
        }
        Ok(())
    }

    /// Removes a migration's image here and in the store (best effort: a
    /// failure costs space, and is logged).
    async fn remove_images(&self, m: &MigrationRecord) {
        self.runtime.discard_image(&m.images);
        if let Some(object) = &m.object {
            match within(&self.clock, self.deadlines.floor, self.store.delete(object)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(migration = %m.id, error = %e, "stored image not removed")
                }
                Err(e) => {
                    tracing::warn!(migration = %m.id, error = %e, "stored image not removed")
                }
            }
        }
    }

    pub(super) async fn restored(
        &self,
        seq: u64,
        p: &migration::Restored,
    ) -> Result<(), FatalError> {
        let Some(mut m) = self.journal.migration(&p.migration)? else {
            return self.commit(Change::new().applied(seq));
        };
        if m.role != Role::Source || m.phase != Phase::AwaitingTarget {
            return self.commit(Change::new().applied(seq));
        }
        // Only a target that holds the fence restores; a `restored` without
        // its claim is forged or confused, and cleaning up on it would lose
        // the workload. An unreachable fence does not veto the target's word.
        match self.ask_fence(self.fence.holder(m.id)).await {
            Ok(Some(Holder::Target)) => {}
            Ok(holder) => {
                tracing::warn!(migration = %m.id, ?holder, "`restored` from a target that does not hold the migration; ignored");
                return self.commit(Change::new().applied(seq));
            }
            Err(e) => {
                tracing::warn!(migration = %m.id, error = %e, "cannot check the fence; trusting the target's `restored`")
            }
        }
        let t = self.clock.monotonic();
        let mut leftover = None;
        if m.mode == Mode::Lazy {
            // The target has every page (its daemon's word): the dump here
            // ends, and so does its tree.
            leftover = self.journal.workload(&m.workload)?.map(|w| w.handle);
            if let Some(serving) = self.streams.postcopy.take_serving(m.id) {
                let limit = self.deadlines.floor;
                if let Err(e) = serving.finish(limit).await {
                    tracing::warn!(migration = %m.id, error = %e, "the serving dump did not end well; the target has every page");
                }
            }
        }
        if let Err(e) = self.runtime.remove(&m.workload, leftover.as_ref()).await {
            tracing::warn!(migration = %m.id, error = %e, "cleanup left something behind");
        }
        self.remove_images(&m).await;
        m.timings.download_ms = p.timings.download_ms;
        m.timings.restore_ms = p.timings.restore_ms;
        m.timings.downtime_ms = p.timings.downtime_ms;
        m.timings.postcopy_ms = p.timings.postcopy_ms;
        m.timings.cleanup_ms = Some(ms(self.clock.monotonic() - t));
        m.timings.total_ms = Some((self.clock.now_ms() - m.requested_at_ms) as f64);
        m.phase = Phase::Completed;
        m.deadline_at_ms = None;
        m.images_settled = true;
        let done = self.envelope(Event::MigrationCompleted(migration::Completed {
            migration: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            image_bytes: m.image_bytes,
            timings: m.timings,
            mode: Some(m.mode),
            fallback: m.fallback.clone(),
        }));
        tracing::info!(migration = %m.id, mode = %m.mode, timings = ?m.timings, "migration completed");
        self.commit(
            Change::new()
                .put_migration(&m)
                .remove_workload(&m.workload)
                .publish(done)
                .applied(seq),
        )
    }

    /// The target (or someone) says the migration failed. The source takes
    /// it back through the fence, as when its deadline passes: a failure
    /// announced while the target already holds the migration is not the
    /// target's (it releases its claim before saying so) and changes nothing.
    pub(super) async fn failed(&self, seq: u64, p: &migration::Failed) -> Result<(), FatalError> {
        let Some(mut m) = self.journal.migration(&p.migration)? else {
            return self.commit(Change::new().applied(seq));
        };
        if m.role != Role::Source || m.phase != Phase::AwaitingTarget {
            // Our own failure announcement, or already handled.
            return self.commit(Change::new().applied(seq));
        }
        tracing::warn!(migration = %m.id, step = %p.step, reason = %p.reason, "the target reports a failure");
        // Due now: if the fence cannot be asked now, the deadline check
        // asks again until it can.
        m.deadline_at_ms = Some(self.clock.now_ms());
        m.failed_step = Some(p.step);
        self.commit(Change::new().put_migration(&m).applied(seq))?;
        self.take_back(
            seq,
            m,
            p.step,
            format!("the target failed at {}: {}", p.step, p.reason),
            true,
        )
        .await
    }

    /// Takes back every migration whose target is past its deadline: runs
    /// on the service's tick, between events, so it never races one.
    ///
    /// # Errors
    /// When the journal fails.
    pub async fn expire_deadlines(&self) -> Result<(), FatalError> {
        let now = self.clock.now_ms();
        for m in self.journal.migrations()? {
            // A post-copy this executor no longer serves (it restarted: the
            // relay died with it) cannot end well: take it back now.
            let orphan = m.mode == Mode::Lazy && !self.streams.postcopy.is_serving(m.id);
            let due = m.deadline_at_ms.is_some_and(|d| now >= d || orphan);
            if m.role != Role::Source || m.phase != Phase::AwaitingTarget || !due {
                continue;
            }
            let step = m.failed_step.unwrap_or(Step::Restore);
            let waited =
                Duration::from_millis(u64::try_from(now - m.requested_at_ms).unwrap_or_default());
            let reason = format!(
                "the target {} did not restore within the deadline ({} since the request)",
                m.target,
                secs(waited)
            );
            let seq = self.journal.applied()?;
            self.take_back(seq, m, step, reason, false).await?;
        }
        Ok(())
    }

    /// Finishes the image removals a crash interrupted: a migration over
    /// (or restored, on the target) whose images were not yet removed.
    /// Runs on the service's tick, like the deadlines.
    ///
    /// # Errors
    /// When the journal fails.
    pub async fn sweep_images(&self) -> Result<(), FatalError> {
        for mut m in self.journal.migrations()? {
            let over = m.phase.is_final() || m.phase == Phase::Restored;
            if m.images_settled || !over {
                continue;
            }
            tracing::info!(migration = %m.id, "removing the images a crash left behind");
            if m.role == Role::Source {
                self.remove_images(&m).await;
            } else {
                // The stored object is the source's to delete.
                self.runtime.discard_image(&m.images);
            }
            m.images_settled = true;
            self.commit(Change::new().put_migration(&m))?;
        }
        Ok(())
    }

    /// Claims the migration for the source and, if that holds, resumes the
    /// workload here and announces the fence; if the target holds it, waits
    /// for the target's word (only it knows whether its copy runs). A
    /// post-copy the target says failed (`target_failed`) while it holds the
    /// migration broke after the workload ran there: it killed its copy, and
    /// the tree here must not run again either (the workload is lost).
    async fn take_back(
        &self,
        seq: u64,
        mut m: MigrationRecord,
        step: Step,
        reason: String,
        target_failed: bool,
    ) -> Result<(), FatalError> {
        let holder = match self.ask_fence(self.fence.claim(m.id, Holder::Source)).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(migration = %m.id, error = %e, "cannot take the migration back yet; trying again on the next tick");
                return Ok(());
            }
        };
        let announce = match holder {
            Holder::Target if target_failed && m.mode == Mode::Lazy => {
                tracing::error!(migration = %m.id, workload = %m.workload, %reason, "post-copy broke after the workload ran on the target: it runs nowhere");
                self.end_postcopy_here(&m, false).await;
                self.remove_images(&m).await;
                return self.give_up_source(seq, m, step, None, None).await;
            }
            Holder::Target => {
                tracing::warn!(migration = %m.id, %reason, "the target holds the migration: waiting for its word");
                m.deadline_at_ms = None;
                return self.commit(Change::new().put_migration(&m));
            }
            // The target gave up after claiming; it said so itself.
            Holder::Released => None,
            Holder::Source => {
                tracing::warn!(migration = %m.id, %reason, "fenced: the workload resumes here");
                let waited = self.clock.now_ms() - m.frozen_at_ms.unwrap_or(m.requested_at_ms);
                Some(self.envelope(Event::MigrationFenced(migration::Fenced {
                    migration: m.id,
                    workload: m.workload.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    waited_ms: waited as f64,
                    reason,
                })))
            }
        };
        let handle = self.resume_here(&m).await;
        self.give_up_source(seq, m, step, announce, handle).await
    }
}

/// A duration in seconds for messages.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
