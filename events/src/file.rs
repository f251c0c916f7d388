//! A failed file operation, said once for every crate.
//!
//! The brain's store, the executor's images and runtimes and the CLI's
//! credentials all fail the same way on a file: an action on a path, and
//! what the system answered. Each crate's error enum wraps this one
//! (`#[error(transparent)] Io(#[from] FileError)`) instead of spelling the
//! three fields again.

use std::path::{Path, PathBuf};

/// What was attempted on which path, and what the system said.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FileError {
    /// What was attempted ("create directory", "write").
    pub action: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// The error for `action` on `path`, for `map_err`:
    /// `fs::write(p, b).map_err(FileError::at("write", p))?`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}
