//! Unpacking a checkpoint archive as the untrusted input it is.
//!
//! The executor runs as root, so an archive that could name a link, an
//! absolute path or `..` would write anywhere on the machine (the issue's
//! `images/x -> /some/dir` then `images/x/file` did). Here only plain files
//! and folders are accepted, each path must be relative with plain
//! components under `images/` or `files/`, no folder on the way may be a
//! link, and files are created new (`O_EXCL | O_NOFOLLOW`) without set-id
//! bits. The first entry that breaks a rule stops everything, before it
//! writes a byte; the caller removes what earlier entries wrote.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use loadshift_events::file::FileError;

use crate::checkpoint::Manifest;

/// Largest manifest accepted: it lists a few files.
const MAX_MANIFEST: u64 = 1024 * 1024;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// the tar stream is unreadable
    #[error("unreadable archive: {0}")]
    Tar(String),
    /// an entry is a link, a device, a fifo or anything but a file or folder
    #[error("entry {path} is a {kind}: only plain files and folders are accepted")]
    Kind {
        /// The entry.
        path: String,
        /// What it is.
        kind: String,
    },
    /// an entry's path is absolute, holds `..` or lands outside the image
    #[error("entry {0} escapes its folder")]
    Escapes(String),
    /// an entry is neither the manifest nor under images/ or files/
    #[error("unexpected entry {0}")]
    Unexpected(String),
    /// the manifest is missing, too large or unreadable
    #[error("manifest: {0}")]
    Manifest(String),
    /// writing failed
    #[error(transparent)]
    Io(#[from] FileError),
}

/// Whether `p` is relative and made of plain names only.
fn plain(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Creates the folders from `root` down to `dir` (inside it), refusing any
/// that exists as a link or as something other than a folder.
fn make_dirs(root: &Path, dir: &Path) -> Result<(), UnpackError> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| UnpackError::Escapes(dir.display().to_string()))?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(UnpackError::Escapes(at.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(FileError::at("create", &at))?
            }
            Err(e) => return Err(FileError::at("inspect", &at)(e).into()),
        }
    }
    Ok(())
}

/// Unpacks `input` into `images` (entries `images/…`) and `workload_dir`
/// (entries `files/<name>`), returning the manifest.
///
/// # Errors
/// [`UnpackError`] at the first entry that breaks a rule (nothing of that
/// entry is written) or when writing fails.
pub fn unpack<R: Read>(
    input: R,
    images: &Path,
    workload_dir: &Path,
) -> Result<Manifest, UnpackError> {
    for dir in [images, workload_dir] {
        std::fs::create_dir_all(dir).map_err(FileError::at("create", dir))?;
    }
    let mut manifest = None;
    let mut archive = tar::Archive::new(input);
    let tar_err = |e: std::io::Error| UnpackError::Tar(e.to_string());
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry.path().map_err(tar_err)?.into_owned();
        let shown = path.display().to_string();
        if !plain(&path) {
            return Err(UnpackError::Escapes(shown));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(UnpackError::Kind {
                path: shown,
                kind: format!("{kind:?}").to_lowercase(),
            });
        }
        let mut parts = path.components();
        let top = parts.next().map(|c| c.as_os_str().to_owned());
        let rest: PathBuf = parts.collect();
        let (root, dest) = match top.as_ref().and_then(|t| t.to_str()) {
            Some("manifest.json") if rest.as_os_str().is_empty() && kind.is_file() => {
                manifest = Some(read_manifest(&mut entry)?);
                continue;
            }
            Some("images") => (images, images.join(&rest)),
            Some("files") if kind.is_file() && rest.components().count() == 1 => {
                (workload_dir, workload_dir.join(&rest))
            }
            _ => return Err(UnpackError::Unexpected(shown)),
        };
        if kind.is_dir() {
            make_dirs(root, &dest)?;
            continue;
        }
        let parent = dest
            .parent()
            .ok_or_else(|| UnpackError::Escapes(shown.clone()))?;
        make_dirs(root, parent)?;
        // Owner may read and write; never set-id, sticky or others' write.
        let mode = (entry.header().mode().unwrap_or(0o644) & 0o755) | 0o600;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&dest)
            .map_err(FileError::at("create", &dest))?;
        std::io::copy(&mut entry, &mut file).map_err(FileError::at("write", &dest))?;
        file.flush().map_err(FileError::at("write", &dest))?;
    }
    manifest.ok_or_else(|| UnpackError::Manifest("no manifest.json".into()))
}

fn read_manifest<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Manifest, UnpackError> {
    if entry.header().size().unwrap_or(u64::MAX) > MAX_MANIFEST {
        return Err(UnpackError::Manifest("larger than 1 MiB".into()));
    }
    let mut s = Vec::new();
    entry
        .take(MAX_MANIFEST)
        .read_to_end(&mut s)
        .map_err(|e| UnpackError::Manifest(e.to_string()))?;
    let m: Manifest =
        serde_json::from_slice(&s).map_err(|e| UnpackError::Manifest(e.to_string()))?;
    // A file's name becomes a path in the workload's folder on restore.
    if let Some(f) = m
        .files
        .iter()
        .find(|f| Path::new(&f.name).components().count() != 1 || !plain(Path::new(&f.name)))
    {
        return Err(UnpackError::Manifest(format!(
            "file name {:?} is not a plain name",
            f.name
        )));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive with `entries` written raw (the tar builder itself
    /// refuses some of the paths an attacker would write).
    fn archive(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let manifest = br#"{"files":[]}"#;
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_path("manifest.json").unwrap();
        h.set_cksum();
        tar.append(&h, manifest.as_slice()).unwrap();
        for (name, kind, link, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o6755);
            let raw = &mut h.as_gnu_mut().unwrap().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                let l = &mut h.as_gnu_mut().unwrap().linkname;
                l[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            tar.append(&h, *body).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn dirs(tmp: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        (tmp.path().join("img"), tmp.path().join("w"), outside)
    }

    fn nothing_in(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn a_symlink_is_refused_before_anything_is_written_through_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, w, outside) = dirs(&tmp);
        let target = outside.display().to_string();
        let bytes = archive(&[
            ("images/x", tar::EntryType::Symlink, &target, b""),
            ("images/x/file", tar::EntryType::Regular, "", b"owned"),
        ]);
        let err = unpack(bytes.as_slice(), &img, &w).unwrap_err();
        assert!(matches!(err, UnpackError::Kind { .. }), "{err}");
        assert!(nothing_in(&outside));
        assert!(!img.join("x").exists());
    }

    #[test]
    fn hard_links_devices_and_fifos_are_refused() {
        for kind in [
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Block,
            tar::EntryType::Fifo,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (img, w, _) = dirs(&tmp);
            let bytes = archive(&[("images/x", kind, "/etc/shadow", b"")]);
            assert!(unpack(bytes.as_slice(), &img, &w).is_err(), "{kind:?}");
            assert!(!img.join("x").exists());
        }
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused_before_anything_is_written() {
        for name in [
            "images/../../outside/evil",
            "files/../outside/evil",
            "/tmp/evil",
            "images/a/../../../outside/evil",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (img, w, outside) = dirs(&tmp);
            let bytes = archive(&[(name, tar::EntryType::Regular, "", b"owned")]);
            let err = unpack(bytes.as_slice(), &img, &w).unwrap_err();
            assert!(
                matches!(err, UnpackError::Escapes(_) | UnpackError::Unexpected(_)),
                "{name}: {err}"
            );
            assert!(nothing_in(&outside), "{name} wrote outside");
        }
    }

    #[test]
    fn a_link_already_in_the_image_folder_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, w, outside) = dirs(&tmp);
        std::fs::create_dir_all(&img).unwrap();
        std::os::unix::fs::symlink(&outside, img.join("x")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), img.join("leaf")).unwrap();
        for name in ["images/x/file", "images/leaf"] {
            let bytes = archive(&[(name, tar::EntryType::Regular, "", b"owned")]);
            assert!(unpack(bytes.as_slice(), &img, &w).is_err(), "{name}");
        }
        assert!(nothing_in(&outside));
    }

    #[test]
    fn files_lose_set_id_bits_and_the_manifest_names_plain_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, w, _) = dirs(&tmp);
        let bytes = archive(&[("images/pages-1.img", tar::EntryType::Regular, "", b"p")]);
        unpack(bytes.as_slice(), &img, &w).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(img.join("pages-1.img"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o7000, 0);

        let mut tar = tar::Builder::new(Vec::new());
        let m = br#"{"files":[{"name":"../../etc/passwd","original_path":"/x"}]}"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(m.len() as u64);
        h.set_path("manifest.json").unwrap();
        h.set_cksum();
        tar.append(&h, m.as_slice()).unwrap();
        let bytes = tar.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (img, w, _) = dirs(&tmp);
        let err = unpack(bytes.as_slice(), &img, &w).unwrap_err();
        assert!(matches!(err, UnpackError::Manifest(_)), "{err}");
    }
}
