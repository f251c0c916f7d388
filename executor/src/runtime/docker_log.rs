//! A container's output across its migrations.
//!
//! A container writes into its docker log, which belongs to the container:
//! a restored container is a new one and starts a fresh log, and the old
//! one goes when the source removes the old container. So that `loadshift
//! workload logs` reads a container the way it reads a process (one byte
//! offset meaning the same on every node, every line once and in order),
//! the source saves the old container's whole log into the workload's
//! folder once its checkpoint has stopped it ([`ContainerLogs::save`]), and
//! those files travel with the image like a process's output files. What a
//! reader sees on any node is the saved files followed by the running
//! container's own log ([`ContainerLogs::whole`]).
//!
//! The marker [`SAVED_UP_TO`] names the container whose log the saved files
//! end with. It is the commit point of a save (written after the new files,
//! before they replace the old ones), so a save cut short by a crash is
//! finished or redone, never done twice, and a reader never counts the
//! same container's log twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use loadshift_events::output::OutputStream;

use super::RuntimeError;

/// The marker file in the workload's folder: the id of the container whose
/// log the saved `stdout` and `stderr` end with.
pub const SAVED_UP_TO: &str = "log.saved_up_to";

/// The two streams, in the order they are saved.
const STREAMS: [OutputStream; 2] = [OutputStream::Stdout, OutputStream::Stderr];

/// How long a checkpointed container is waited for to be marked stopped:
/// the daemon marks it so only after its log copier has drained the
/// container's pipes, so its log is whole from then on.
const STOPPED_WITHIN: Duration = Duration::from_secs(10);

/// How often a reader starts over when a save committed while it read.
const READ_ATTEMPTS: u32 = 3;

/// Reads and saves containers' logs through the Docker Engine API.
#[derive(Clone)]
pub struct ContainerLogs {
    docker: Docker,
}

impl ContainerLogs {
    /// Reads through `docker` (the runtime's own client).
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    /// The whole log of container `id` for `stream`, without timestamps;
    /// `None` when the daemon knows no such container (removed: the source
    /// of a completed migration removes it just before it forgets the
    /// workload).
    ///
    /// # Errors
    /// [`RuntimeError::Docker`] when the daemon refuses otherwise.
    pub async fn container_log(
        &self,
        id: &str,
        stream: OutputStream,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        let options = LogsOptionsBuilder::default()
            .stdout(stream == OutputStream::Stdout)
            .stderr(stream == OutputStream::Stderr)
            .timestamps(false)
            .follow(false)
            .build();
        let mut chunks = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => out.extend_from_slice(&chunk.into_bytes()),
                Err(e) if super::docker::status_of(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(RuntimeError::Docker(format!("logs of {id}: {e}"))),
            }
        }
        Ok(Some(out))
    }

    /// What a reader of `stream` sees now: the saved output in `dir`
    /// followed by container `id`'s log, unless the saved output already
    /// ends with it (a checkpointed container, stopped until its migration
    /// ends). `None` when the container is gone.
    ///
    /// # Errors
    /// [`RuntimeError`] when a file or the container's log cannot be read.
    pub async fn whole(
        &self,
        dir: &Path,
        id: &str,
        stream: OutputStream,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        for _ in 0..READ_ATTEMPTS {
            // Marker, file, marker: a save that commits in between changes
            // the marker, and the read starts over.
            let before = saved_up_to(dir)?;
            let saved = read_saved(dir, stream, before.as_deref() == Some(id))?;
            if saved_up_to(dir)? != before {
                continue;
            }
            if before.as_deref() == Some(id) {
                return Ok(Some(saved));
            }
            let Some(log) = self.container_log(id, stream).await? else {
                return Ok(None);
            };
            let mut all = saved;
            all.extend(log);
            return Ok(Some(all));
        }
        Err(RuntimeError::Docker(format!(
            "the saved output in {} kept changing while it was read",
            dir.display()
        )))
    }

    /// Appends the final log of container `id` (just checkpointed, so it
    /// no longer writes) to the saved output in `dir`, once: a second call
    /// for the same container only finishes what a crash cut short. Never
    /// fails the migration: a log that cannot be read costs its lines (said
    /// in the executor's log), not the workload, and the saved files exist
    /// afterwards either way (they travel with the image).
    pub async fn save(&self, dir: &Path, id: &str) {
        let Err(e) = self.try_save(dir, id).await else {
            return;
        };
        tracing::warn!(container = %id, folder = %dir.display(), error = %e, "the container's output was not saved; its lines are missing from `workload logs`");
        if saved_up_to(dir).ok().flatten().as_deref() == Some(id) {
            // Committed; only a rename failed: readers here use the
            // pending files, and the next save finishes the renames.
            return;
        }
        // Not committed: drop the half-made files and mark the container
        // as saved without its lines, so that this node serves what
        // travels (an offset must mean the same on every node) and the
        // files the image carries exist.
        for stream in STREAMS {
            let _ = std::fs::remove_file(pending(dir, stream));
            let path = dir.join(stream.file_name());
            if !path.exists() {
                if let Err(e) = std::fs::write(&path, b"") {
                    tracing::warn!(file = %path.display(), error = %e, "cannot create the saved output");
                }
            }
        }
        let marker = dir.join(SAVED_UP_TO);
        if let Err(e) = std::fs::write(&marker, id) {
            tracing::warn!(file = %marker.display(), error = %e, "cannot write the saved output's marker");
        }
    }

    async fn try_save(&self, dir: &Path, id: &str) -> Result<(), RuntimeError> {
        std::fs::create_dir_all(dir).map_err(RuntimeError::io("create", dir))?;
        if saved_up_to(dir)?.as_deref() != Some(id) {
            self.wait_stopped(id).await;
            for stream in STREAMS {
                let mut next = read_saved(dir, stream, false)?;
                let log = self.container_log(id, stream).await?.ok_or_else(|| {
                    RuntimeError::Docker(format!("container {id} is gone with its log"))
                })?;
                next.extend(log);
                let path = pending(dir, stream);
                std::fs::write(&path, next).map_err(RuntimeError::io("write", &path))?;
            }
            let tmp = dir.join(format!("{SAVED_UP_TO}.tmp"));
            std::fs::write(&tmp, id).map_err(RuntimeError::io("write", &tmp))?;
            let marker = dir.join(SAVED_UP_TO);
            std::fs::rename(&tmp, &marker).map_err(RuntimeError::io("rename", &tmp))?;
        }
        // Committed: the pending files replace the saved ones.
        for stream in STREAMS {
            let from = pending(dir, stream);
            match std::fs::rename(&from, dir.join(stream.file_name())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RuntimeError::io("rename", &from)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits (bounded) until the daemon marks container `id` stopped.
    async fn wait_stopped(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + STOPPED_WITHIN;
        while tokio::time::Instant::now() < deadline {
            match self.docker.inspect_container(id, None).await {
                Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(container = %id, "still marked running {STOPPED_WITHIN:?} after its checkpoint; saving its log as it is");
    }
}

/// The new saved file of `stream`, written before the marker commits it.
fn pending(dir: &Path, stream: OutputStream) -> PathBuf {
    dir.join(format!("{}.next", stream.file_name()))
}

/// The container the saved output ends with, if any.
fn saved_up_to(dir: &Path) -> Result<Option<String>, RuntimeError> {
    let marker = dir.join(SAVED_UP_TO);
    match std::fs::read_to_string(&marker) {
        Ok(id) => Ok(Some(id.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", &marker)(e)),
    }
}

/// The saved output of `stream` (empty when nothing was saved yet). With
/// `committed`, a save's pending file is the saved output when it is still
/// there (the marker already names its container).
fn read_saved(dir: &Path, stream: OutputStream, committed: bool) -> Result<Vec<u8>, RuntimeError> {
    let mut candidates = vec![dir.join(stream.file_name())];
    if committed {
        candidates.insert(0, pending(dir, stream));
    }
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => return Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("read", &path)(e)),
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_saved_reads_as_empty_and_names_no_container() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(saved_up_to(d.path()).unwrap(), None);
        assert!(read_saved(d.path(), OutputStream::Stdout, false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_committed_save_is_read_from_its_pending_file_until_it_is_renamed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stdout"), b"old\n").unwrap();
        std::fs::write(pending(d.path(), OutputStream::Stdout), b"old\nnew\n").unwrap();
        std::fs::write(d.path().join(SAVED_UP_TO), b"abc\n").unwrap();
        assert_eq!(saved_up_to(d.path()).unwrap().as_deref(), Some("abc"));
        let committed = read_saved(d.path(), OutputStream::Stdout, true).unwrap();
        assert_eq!(committed, b"old\nnew\n");
        let uncommitted = read_saved(d.path(), OutputStream::Stdout, false).unwrap();
        assert_eq!(uncommitted, b"old\n");
    }
}
