//! A checkpoint image's folder on this node (tmpfs), as the host sees it.
//!
//! Both real runtimes share these: a criu started before a crash outlives
//! the executor and may still write into the folder, and a folder whose
//! migration ended must go. They sit behind [`super::Runtime`] so that the
//! saga itself never scans `/proc` nor removes anything, and its tests run
//! without a kernel.

use std::path::Path;
use std::time::Duration;

/// How long a criu from before a crash is waited for, at most.
const STRAY_CRIU_WAIT: Duration = Duration::from_secs(60);
/// How often `/proc` is looked at meanwhile.
const STRAY_CRIU_POLL: Duration = Duration::from_millis(100);

/// Waits while a criu from before a crash still works on `images` (it
/// outlives the executor that started it, and must finish before anyone
/// decides where the workload runs); gives up after a minute, loudly.
pub async fn wait_for_stray_criu(images: &Path) {
    let needle = images.to_string_lossy().into_owned();
    if needle.is_empty() {
        return;
    }
    let rounds = STRAY_CRIU_WAIT.as_millis() / STRAY_CRIU_POLL.as_millis();
    for _ in 0..rounds {
        if !criu_works_on(&needle) {
            return;
        }
        tokio::time::sleep(STRAY_CRIU_POLL).await;
    }
    tracing::warn!(images = %images.display(), "a criu still works on this image after {STRAY_CRIU_WAIT:?}; going on");
}

/// Whether a process whose command line names criu and `needle` runs.
fn criu_works_on(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                return false;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("criu") && cmd.contains(needle)
        })
}

/// Removes an image folder and everything in it, and the pages a streamed
/// migration put next to it ([`crate::stream::pages_dir`]); a folder already
/// gone is fine, any other failure is logged (a leftover costs tmpfs, not
/// safety).
pub fn discard(images: &Path) {
    if images.as_os_str().is_empty() {
        return;
    }
    remove_folder(&crate::stream::pages_dir(images));
    remove_folder(images);
}

fn remove_folder(images: &Path) {
    match std::fs::remove_dir_all(images) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(images = %images.display(), error = %e, "image folder not removed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarding_removes_the_folder_and_tolerates_its_absence() {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("m1");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(images.join("sub/pages-1.img"), b"x").unwrap();
        discard(&images);
        assert!(!images.exists());
        discard(&images);
        assert!(!images.exists());
    }

    #[tokio::test]
    async fn no_stray_criu_means_no_wait() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!criu_works_on(
            &tmp.path().join("nobody-dumps-here").to_string_lossy()
        ));
        wait_for_stray_criu(&tmp.path().join("x")).await;
    }
}
