//! Checkpoint images in transit: packed with the workload's own files into one
//! tar, named by the migration, stored in the `CHECKPOINTS` object store with
//! its SHA-256, and checked by the target before anything is restored.

use std::io::Read;
use std::path::{Path, PathBuf};

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use loadshift_events::stream::CHECKPOINT_CHUNK_BYTES;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::runtime::TravellingFile;

/// Why an image could not be packed, stored, fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// a local file operation failed
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
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

/// A packed image, ready to store.
pub struct Packed {
    /// The tar archive.
    pub bytes: Vec<u8>,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Packs the image folder and the workload's travelling files.
///
/// # Errors
/// [`CheckpointError::Io`] when a file cannot be read.
pub fn pack(
    images: &Path,
    workload_dir: &Path,
    files: &[TravellingFile],
) -> Result<Packed, CheckpointError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io {
            action,
            path,
            source,
        }
    };
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    let manifest = serde_json::to_vec(&Manifest {
        files: files.to_vec(),
    })
    .unwrap_or_default();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", manifest.as_slice())
        .map_err(io("pack manifest of", images))?;
    tar.append_dir_all("images", images)
        .map_err(io("pack image folder", images))?;
    for f in files {
        let path = workload_dir.join(&f.name);
        tar.append_path_with_name(&path, format!("files/{}", f.name))
            .map_err(io("pack", &path))?;
    }
    let bytes = tar.into_inner().map_err(io("finish archive of", images))?;
    let sha256 = sha256_hex(&bytes);
    Ok(Packed { bytes, sha256 })
}

/// Checks `bytes` against the digest the source announced, then unpacks the
/// image into `images` and the files into `workload_dir`.
///
/// # Errors
/// [`CheckpointError::Digest`] for a corrupt image (nothing is unpacked),
/// [`CheckpointError::Archive`] for an unreadable one.
pub fn verify_and_unpack(
    object: &str,
    bytes: &[u8],
    expected_sha256: &str,
    images: &Path,
    workload_dir: &Path,
) -> Result<Manifest, CheckpointError> {
    let actual = sha256_hex(bytes);
    if actual != expected_sha256 {
        return Err(CheckpointError::Digest {
            object: object.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    let archive_err = |message: String| CheckpointError::Archive {
        object: object.to_string(),
        message,
    };
    for dir in [images, workload_dir] {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut manifest = None;
    let mut archive = tar::Archive::new(bytes);
    let entries = archive.entries().map_err(|e| archive_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| archive_err(e.to_string()))?
            .into_owned();
        let mut parts = path.components();
        let top = parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let rest: PathBuf = parts.collect();
        let dest = match top.as_deref() {
            Some("manifest.json") => {
                let mut s = Vec::new();
                entry
                    .read_to_end(&mut s)
                    .map_err(|e| archive_err(e.to_string()))?;
                manifest = Some(
                    serde_json::from_slice::<Manifest>(&s)
                        .map_err(|e| archive_err(e.to_string()))?,
                );
                continue;
            }
            Some("images") if rest.as_os_str().is_empty() => continue,
            Some("images") => images.join(&rest),
            Some("files") => workload_dir.join(&rest),
            _ => return Err(archive_err(format!("unexpected entry {}", path.display()))),
        };
        // unpack_in refuses paths escaping the folder; we build the
        // destination ourselves, so check the same way.
        if rest
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(archive_err(format!(
                "entry {} escapes its folder",
                path.display()
            )));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CheckpointError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        entry.unpack(&dest).map_err(|source| CheckpointError::Io {
            action: "unpack",
            path: dest.clone(),
            source,
        })?;
    }
    manifest.ok_or_else(|| archive_err("no manifest.json".into()))
}

/// Stores an image.
///
/// # Errors
/// [`CheckpointError::Store`] when the object store fails.
pub async fn upload(
    store: &ObjectStore,
    object: &str,
    bytes: Vec<u8>,
) -> Result<(), CheckpointError> {
    let meta = ObjectMetadata {
        name: object.to_string(),
        chunk_size: Some(CHECKPOINT_CHUNK_BYTES),
        ..Default::default()
    };
    let mut reader = std::io::Cursor::new(bytes);
    store
        .put(meta, &mut reader)
        .await
        .map(|_| ())
        .map_err(|e| CheckpointError::Store {
            action: "put",
            object: object.to_string(),
            message: e.to_string(),
        })
}

/// Fetches an image.
///
/// # Errors
/// [`CheckpointError::Store`] when it is missing or the transfer fails.
pub async fn download(store: &ObjectStore, object: &str) -> Result<Vec<u8>, CheckpointError> {
    let err = |message: String| CheckpointError::Store {
        action: "get",
        object: object.to_string(),
        message,
    };
    let mut obj = store.get(object).await.map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::with_capacity(obj.info().size);
    obj.read_to_end(&mut bytes)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(bytes)
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
    fn round_trip_restores_every_file() {
        let (tmp, images, wdir, files) = setup();
        let packed = pack(&images, &wdir, &files).unwrap();
        assert_eq!(packed.sha256, sha256_hex(&packed.bytes));
        let (img2, w2) = (tmp.path().join("img2"), tmp.path().join("w2"));
        let m = verify_and_unpack("o", &packed.bytes, &packed.sha256, &img2, &w2).unwrap();
        assert_eq!(m.files, files);
        assert_eq!(
            std::fs::read(img2.join("pages-1.img")).unwrap(),
            vec![7u8; 10_000]
        );
        assert_eq!(std::fs::read(img2.join("sub/x")).unwrap(), b"x");
        assert_eq!(std::fs::read(w2.join("stdout")).unwrap(), b"1\n2\n");
    }

    #[test]
    fn a_corrupt_image_is_refused_before_unpacking() {
        let (tmp, images, wdir, files) = setup();
        let mut packed = pack(&images, &wdir, &files).unwrap();
        let n = packed.bytes.len() / 2;
        packed.bytes[n] ^= 0xff;
        let img2 = tmp.path().join("img2");
        let err = verify_and_unpack(
            "o",
            &packed.bytes,
            &packed.sha256,
            &img2,
            &tmp.path().join("w2"),
        )
        .unwrap_err();
        assert!(matches!(err, CheckpointError::Digest { .. }), "{err}");
        assert!(!img2.exists());
    }

    #[test]
    fn garbage_with_a_matching_digest_is_an_archive_error() {
        let tmp = tempfile::tempdir().unwrap();
        let junk = b"not a tar at all, not even close".repeat(40);
        let err = verify_and_unpack(
            "o",
            &junk,
            &sha256_hex(&junk),
            &tmp.path().join("i"),
            &tmp.path().join("w"),
        )
        .unwrap_err();
        assert!(matches!(err, CheckpointError::Archive { .. }), "{err}");
    }
}
