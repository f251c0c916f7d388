//! Checkpoint images in transit: packed with the workload's own files into one
//! tar, named by the migration, stored in the `CHECKPOINTS` object store with
//! its SHA-256, and checked by the target before anything is restored.
//!
//! Everything streams, because the workload is frozen the whole time: the
//! source tars the image straight into object-store chunks while it hashes
//! them, with many chunks in flight (async-nats' own `put` waits for each
//! chunk's ack before sending the next); the target unpacks chunks as they
//! arrive while it hashes them, and throws everything away if the digest is
//! not the one the source announced. Nothing is restored from an image whose
//! digest did not match.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;

use async_nats::jetstream::{self, object_store::ObjectStore};
use base64::Engine;
use loadshift_events::file::FileError;
use loadshift_events::stream::{CHECKPOINTS, CHECKPOINT_CHUNK_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::runtime::TravellingFile;

/// How many chunks may wait for their ack at once.
const CHUNKS_IN_FLIGHT: usize = 32;

/// Why an image could not be packed, stored, fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// a local file operation failed
    #[error(transparent)]
    Io(#[from] FileError),
    /// the object store refused or failed
    #[error("object store {action} of {object}: {message}")]
    Store {
        /// put, get or delete.
        action: &'static str,
        /// The object.
        object: String,
        /// What the server or client said.
        message: String,
    },
    /// the image is not what the source stored
    #[error("image {object} is corrupt: SHA-256 is {actual}, the source stored {expected}")]
    Digest {
        /// The object.
        object: String,
        /// What the source announced.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// the archive is unreadable
    #[error("image {object} is not a loadshift checkpoint archive: {message}")]
    Archive {
        /// The object.
        object: String,
        /// What is wrong.
        message: String,
    },
}

/// What the archive says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The workload's files and where they were on the source.
    pub files: Vec<TravellingFile>,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of what the source packed, hex.
    pub sha256: String,
}

/// What arrived on the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Its size in bytes.
    pub bytes: u64,
}

pub(crate) fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the archive: `manifest.json`, `images/…`, `files/<name>`.
///
/// # Errors
/// When a file cannot be read or the writer fails.
pub fn write_archive<W: Write>(
    out: W,
    images: &Path,
    workload_dir: &Path,
    files: &[TravellingFile],
) -> std::io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let manifest = serde_json::to_vec(&Manifest {
        files: files.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", manifest.as_slice())?;
    tar.append_dir_all("images", images)?;
    for f in files {
        tar.append_path_with_name(workload_dir.join(&f.name), format!("files/{}", f.name))?;
    }
    tar.into_inner()
}

/// Unpacks an archive into `images` and `workload_dir` as untrusted input
/// (see [`crate::unpack`]: no links, no paths outside those folders).
///
/// # Errors
/// A message saying what is wrong with the archive.
pub fn read_archive<R: Read>(
    input: R,
    images: &Path,
    workload_dir: &Path,
) -> Result<Manifest, String> {
    crate::unpack::unpack(input, images, workload_dir).map_err(|e| e.to_string())
}

/// A `Write` that cuts what it is given into object-store chunks, hashing
/// it, and hands each chunk to the async side.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    hasher: Sha256,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHECKPOINT_CHUNK_BYTES));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the uploader stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHECKPOINT_CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        if self.buf.len() == CHECKPOINT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Packs the image and the workload's files and stores them as `object`,
/// streaming.
///
/// # Errors
/// [`CheckpointError::Io`] when a file cannot be read,
/// [`CheckpointError::Store`] when the store refuses.
pub async fn pack_and_upload(
    js: &jetstream::Context,
    object: &str,
    images: &Path,
    workload_dir: &Path,
    files: &[TravellingFile],
) -> Result<Stored, CheckpointError> {
    let store_err = |message: String| CheckpointError::Store {
        action: "put",
        object: object.to_string(),
        message,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (img, wdir, fl, obj) = (
        images.to_path_buf(),
        workload_dir.to_path_buf(),
        files.to_vec(),
        object.to_string(),
    );
    let packer = tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHECKPOINT_CHUNK_BYTES),
            hasher: Sha256::new(),
        };
        // Sealed with the executors' key, when this executor has one.
        let sealed = crate::seal::Writer::new(writer, crate::seal::key(), &obj)?;
        let mut writer = write_archive(sealed, &img, &wdir, &fl)?.finish()?;
        writer.send()?;
        Ok::<_, std::io::Error>(hex(writer.hasher.finalize()))
    });

    let nuid = uuid::Uuid::now_v7().simple().to_string();
    let chunk_subject = format!("$O.{CHECKPOINTS}.C.{nuid}");
    let mut in_flight = VecDeque::new();
    let mut stored_hash = Sha256::new();
    let (mut size, mut chunks) = (0u64, 0u64);
    let mut failure = None;
    while let Some(chunk) = rx.recv().await {
        stored_hash.update(&chunk);
        size += chunk.len() as u64;
        chunks += 1;
        match js.publish(chunk_subject.clone(), chunk.into()).await {
            Ok(ack) => in_flight.push_back(ack),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
        if in_flight.len() >= CHUNKS_IN_FLIGHT {
            if let Some(ack) = in_flight.pop_front() {
                if let Err(e) = ack.await {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
    }
    drop(rx);
    for ack in in_flight {
        if let Err(e) = ack.await {
            failure.get_or_insert(e.to_string());
        }
    }
    let packed = packer
        .await
        .map_err(|e| store_err(format!("packer died: {e}")))?;
    let purge = || async {
        if let Ok(s) = js.get_stream(format!("OBJ_{CHECKPOINTS}")).await {
            let _ = s.purge().filter(&chunk_subject).await;
        }
    };
    let sha256 = match packed {
        Ok(sha) => sha,
        Err(source) => {
            purge().await;
            return Err(FileError::at("pack", images)(source).into());
        }
    };
    if let Some(message) = failure {
        purge().await;
        return Err(store_err(message));
    }
    let chunked = Chunked {
        nuid: &nuid,
        size,
        chunks,
        digest: stored_hash.finalize().to_vec(),
    };
    publish_object_info(js, object, &chunked)
        .await
        .map_err(store_err)?;
    Ok(Stored {
        bytes: size,
        sha256,
    })
}

/// What the chunks of a stored object add up to.
struct Chunked<'a> {
    nuid: &'a str,
    size: u64,
    chunks: u64,
    /// SHA-256 of the bytes as stored.
    digest: Vec<u8>,
}

/// Publishes the object's own record, as async-nats and the NATS CLI read
/// it, after its chunks: from then on the object exists. Its digest is of
/// what was stored, so the store itself stays consistent.
async fn publish_object_info(
    js: &jetstream::Context,
    object: &str,
    chunked: &Chunked<'_>,
) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE;
    let info = serde_json::json!({
        "name": object,
        "bucket": CHECKPOINTS,
        "nuid": chunked.nuid,
        "size": chunked.size,
        "chunks": chunked.chunks,
        "mtime": chrono::Utc::now().to_rfc3339(),
        "digest": format!("SHA-256={}", b64.encode(&chunked.digest)),
        "options": { "max_chunk_size": CHECKPOINT_CHUNK_BYTES },
    });
    let meta_subject = format!("$O.{CHECKPOINTS}.M.{}", b64.encode(object));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    let ack = js
        .publish_with_headers(meta_subject, headers, info.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A `Read` over chunks handed over by the async side, hashing them.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    hasher: Sha256,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.hasher.update(&chunk);
                    self.current = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Fetches `object` and unpacks it as it arrives into `images` and
/// `workload_dir`; if its digest is not `expected_sha256`, everything
/// unpacked is removed and [`CheckpointError::Digest`] returned.
///
/// # Errors
/// [`CheckpointError::Store`] when the fetch fails, `Digest` for a corrupt
/// image, `Archive` for an unreadable one.
pub async fn download_and_unpack(
    store: &ObjectStore,
    object: &str,
    expected_sha256: &str,
    images: &Path,
    workload_dir: &Path,
) -> Result<Fetched, CheckpointError> {
    let err = |message: String| CheckpointError::Store {
        action: "get",
        object: object.to_string(),
        message,
    };
    let mut obj = store.get(object).await.map_err(|e| err(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (img, wdir, name) = (
        images.to_path_buf(),
        workload_dir.to_path_buf(),
        object.to_string(),
    );
    let unpacker = tokio::task::spawn_blocking(move || {
        let mut reader = ChunkReader {
            rx,
            current: Vec::new(),
            pos: 0,
            hasher: Sha256::new(),
        };
        // Each sealed segment is authenticated before its bytes reach the
        // unpacker; the rest (and the last segment) is authenticated after.
        let mut opened = crate::seal::Reader::new(&mut reader, crate::seal::key(), &name);
        let result = read_archive(&mut opened, &img, &wdir).and_then(|m| {
            std::io::copy(&mut opened, &mut std::io::sink())
                .map(|_| m)
                .map_err(|e| e.to_string())
        });
        // Hash what the archive reader did not need (padding, or all of it
        // after an error), so the digest covers every byte.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        (result, hex(reader.hasher.finalize()))
    });
    let mut bytes = 0u64;
    let mut failure = None;
    loop {
        let mut buf = Vec::with_capacity(CHECKPOINT_CHUNK_BYTES);
        match obj.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                bytes += n as u64;
                if tx.send(buf).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let (result, actual) = unpacker
        .await
        .map_err(|e| err(format!("unpacker died: {e}")))?;
    let wipe = || {
        let _ = std::fs::remove_dir_all(images);
        let _ = std::fs::remove_dir_all(workload_dir);
    };
    if let Some(message) = failure {
        wipe();
        return Err(err(message));
    }
    if actual != expected_sha256 {
        wipe();
        return Err(CheckpointError::Digest {
            object: object.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    match result {
        Ok(manifest) => Ok(Fetched { manifest, bytes }),
        Err(message) => {
            wipe();
            Err(CheckpointError::Archive {
                object: object.to_string(),
                message,
            })
        }
    }
}

/// Removes an image once the migration is over.
///
/// # Errors
/// [`CheckpointError::Store`] when the object store fails.
pub async fn delete(store: &ObjectStore, object: &str) -> Result<(), CheckpointError> {
    store
        .delete(object)
        .await
        .map_err(|e| CheckpointError::Store {
            action: "delete",
            object: object.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<TravellingFile>) {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("img");
        let wdir = tmp.path().join("w");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::create_dir_all(&wdir).unwrap();
        std::fs::write(images.join("pages-1.img"), vec![7u8; 10_000]).unwrap();
        std::fs::write(images.join("sub/x"), b"x").unwrap();
        std::fs::write(wdir.join("stdout"), b"1\n2\n").unwrap();
        let files = vec![TravellingFile {
            name: "stdout".into(),
            original_path: wdir.join("stdout"),
        }];
        (tmp, images, wdir, files)
    }

    #[test]
    fn an_archive_round_trips_every_file() {
        let (tmp, images, wdir, files) = setup();
        let bytes = write_archive(Vec::new(), &images, &wdir, &files).unwrap();
        let (img2, w2) = (tmp.path().join("img2"), tmp.path().join("w2"));
        let m = read_archive(bytes.as_slice(), &img2, &w2).unwrap();
        assert_eq!(m.files, files);
        assert_eq!(
            std::fs::read(img2.join("pages-1.img")).unwrap(),
            vec![7u8; 10_000]
        );
        assert_eq!(std::fs::read(img2.join("sub/x")).unwrap(), b"x");
        assert_eq!(std::fs::read(w2.join("stdout")).unwrap(), b"1\n2\n");
    }

    #[test]
    fn garbage_is_an_archive_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let junk = b"not a tar at all, not even close".repeat(40);
        assert!(read_archive(
            junk.as_slice(),
            &tmp.path().join("i"),
            &tmp.path().join("w")
        )
        .is_err());
    }

    #[test]
    fn an_entry_escaping_its_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let body = b"owned";
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        // Write the name raw: the builder itself refuses `..`.
        h.as_gnu_mut().unwrap().name[..17].copy_from_slice(b"files/../../evil\0");
        h.set_cksum();
        tar.append(&h, body.as_slice()).unwrap();
        let bytes = tar.into_inner().unwrap();
        let err = read_archive(
            bytes.as_slice(),
            &tmp.path().join("i"),
            &tmp.path().join("w"),
        )
        .unwrap_err();
        assert!(err.contains("escapes"), "{err}");
        assert!(!tmp.path().join("evil").exists());
    }
}
