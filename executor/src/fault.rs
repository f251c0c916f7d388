//! Crash points for the fault tests.
//!
//! The invariants (a workload is never lost, never runs twice) are only worth
//! what the crashes they survive are worth, and a crash "right after the dump"
//! cannot be timed from outside. So the executor kills itself with SIGKILL at
//! a named point when `LOADSHIFT_FAULTS` lists it (comma separated). Nothing
//! else changes: with the variable unset (always, outside tests) each point is
//! one environment lookup, made only at the rare steps of a migration.

use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::checkpoint::{CheckpointError, Fetched, Stored};
use crate::image_store::{ImageStore, JetStreamImages};
use crate::runtime::TravellingFile;

/// The executor is about to commit what a finished dump means.
pub const AFTER_DUMP: &str = "after_dump";
/// The target is about to fetch the image (killed as the image starts
/// arriving).
pub const BEFORE_DOWNLOAD: &str = "before_download";
/// criu restore has been started (it outlives us and finishes on its own).
pub const DURING_RESTORE: &str = "during_restore";
/// The target is receiving a streamed dump's pages (killed as the first
/// ones arrive).
pub const DURING_STREAM: &str = "during_stream";
/// Flip one byte of the stored image after its digest was taken, as a
/// corrupted store would (see [`CorruptingStore`]).
pub const CORRUPT_IMAGE: &str = "corrupt_image";

/// Whether fault `name` is armed.
pub fn armed(name: &str) -> bool {
    std::env::var("LOADSHIFT_FAULTS")
        .map(|v| v.split(',').any(|f| f.trim() == name))
        .unwrap_or(false)
}

/// Dies here, as a crash would, if fault `name` is armed.
pub fn crash_point(name: &str) {
    if armed(name) {
        tracing::error!(fault = name, "LOADSHIFT_FAULTS: crashing on purpose");
        // SAFETY: kill(2) of ourselves with SIGKILL: the crash under test.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// An image store that damages every image it stores, after its digest was
/// taken, as a faulty store or disk would: the fault the target's digest
/// check exists for. The executor wraps its store in it only when
/// [`CORRUPT_IMAGE`] is armed, so production code carries no test switch.
pub struct CorruptingStore {
    inner: JetStreamImages,
}

impl CorruptingStore {
    /// Damages what `inner` stores.
    pub fn new(inner: JetStreamImages) -> Self {
        Self { inner }
    }

    /// Rewrites `object` in the store with one byte flipped in its middle.
    async fn damage(&self, object: &str) -> Result<(), CheckpointError> {
        let store = self.inner.object_store();
        let err = |action: &'static str| {
            move |e: &dyn std::fmt::Display| CheckpointError::Store {
                action,
                object: object.to_string(),
                message: e.to_string(),
            }
        };
        let mut bytes = Vec::new();
        let mut obj = store.get(object).await.map_err(|e| err("get")(&e))?;
        obj.read_to_end(&mut bytes)
            .await
            .map_err(|e| err("get")(&e))?;
        let mid = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(mid) {
            *b ^= 0xff;
        }
        store
            .put(object, &mut bytes.as_slice())
            .await
            .map_err(|e| err("put")(&e))?;
        Ok(())
    }
}

impl ImageStore for CorruptingStore {
    async fn put(
        &self,
        object: &str,
        images: &Path,
        workload_dir: &Path,
        files: &[TravellingFile],
    ) -> Result<Stored, CheckpointError> {
        let stored = self.inner.put(object, images, workload_dir, files).await?;
        tracing::error!(
            fault = CORRUPT_IMAGE,
            object,
            "LOADSHIFT_FAULTS: damaging the stored image on purpose"
        );
        self.damage(object).await?;
        Ok(stored)
    }

    async fn fetch(
        &self,
        object: &str,
        sha256: &str,
        images: &Path,
        workload_dir: &Path,
    ) -> Result<Fetched, CheckpointError> {
        self.inner.fetch(object, sha256, images, workload_dir).await
    }

    async fn delete(&self, object: &str) -> Result<(), CheckpointError> {
        self.inner.delete(object).await
    }
}
