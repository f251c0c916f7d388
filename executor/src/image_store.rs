//! Where checkpoint images travel between nodes, behind a trait.
//!
//! The saga stores an image, fetches it on the other side and deletes it when
//! the migration ends; how (JetStream's object store, streamed in chunks) is
//! [`crate::checkpoint`]'s business. With the store behind [`ImageStore`], the
//! saga's rules are tested against a recording double (a store that fails,
//! hangs or damages an image on purpose) without a server, while the
//! integration tests keep the real one.

use std::future::Future;
use std::path::Path;

use async_nats::jetstream::{self, object_store::ObjectStore};

use crate::checkpoint::{self, CheckpointError, Fetched, Stored};
use crate::runtime::TravellingFile;

/// What the saga needs from the place images travel through.
pub trait ImageStore: Send + Sync + 'static {
    /// Packs `images` and the workload's `files` (found in `workload_dir`) and
    /// stores them as `object`.
    fn put(
        &self,
        object: &str,
        images: &Path,
        workload_dir: &Path,
        files: &[TravellingFile],
    ) -> impl Future<Output = Result<Stored, CheckpointError>> + Send;

    /// Fetches `object` into `images` and `workload_dir`, refusing it (and
    /// removing what was unpacked) unless its SHA-256 is `sha256`.
    fn fetch(
        &self,
        object: &str,
        sha256: &str,
        images: &Path,
        workload_dir: &Path,
    ) -> impl Future<Output = Result<Fetched, CheckpointError>> + Send;

    /// Removes `object` once its migration ended.
    fn delete(&self, object: &str) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// The `CHECKPOINTS` object store in JetStream.
#[derive(Clone)]
pub struct JetStreamImages {
    js: jetstream::Context,
    store: ObjectStore,
}

impl JetStreamImages {
    /// Images go to `store`, whose chunks `js` publishes.
    pub fn new(js: jetstream::Context, store: ObjectStore) -> Self {
        Self { js, store }
    }

    /// The object store, for a decorator that must reach the stored bytes.
    pub fn object_store(&self) -> &ObjectStore {
        &self.store
    }
}

impl ImageStore for JetStreamImages {
    fn put(
        &self,
        object: &str,
        images: &Path,
        workload_dir: &Path,
        files: &[TravellingFile],
    ) -> impl Future<Output = Result<Stored, CheckpointError>> + Send {
        checkpoint::pack_and_upload(&self.js, object, images, workload_dir, files)
    }

    fn fetch(
        &self,
        object: &str,
        sha256: &str,
        images: &Path,
        workload_dir: &Path,
    ) -> impl Future<Output = Result<Fetched, CheckpointError>> + Send {
        checkpoint::download_and_unpack(&self.store, object, sha256, images, workload_dir)
    }

    fn delete(&self, object: &str) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        checkpoint::delete(&self.store, object)
    }
}
