//! A checkpoint image's folder on this node (tmpfs), as the host sees it.
//!
//! Both real runtimes share these: a criu started before a crash outlives
//! the executor and may still write into the folder, a criu past its
//! deadline must be killed, and a folder whose migration ended must go. They sit behind [`super::Runtime`] so that the
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
    !criu_pids(needle).is_empty()
}

/// The criu processes working on `images` (their command line names it):
/// public so that a test kills exactly the criu the executor would wait
/// for or kill, found the same way.
pub fn criu_working_on(images: &Path) -> Vec<i32> {
    criu_pids(&images.to_string_lossy())
}

/// The pids of the processes whose command line names criu and `needle`.
fn criu_pids(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.contains("criu") && cmd.contains(needle)).then_some(pid)
        })
        .collect()
}

/// Kills every criu working on `images` and the processes below it: a
/// dump or restore past its deadline must end, and the tasks a killed
/// restore was building (its children, the init of the workload's PID
/// namespace among them) must not run half-restored. A dump's workload is
/// not below criu: when criu dies, the kernel detaches it and it runs on.
pub fn kill_criu(images: &Path) {
    let needle = images.to_string_lossy().into_owned();
    if needle.is_empty() {
        return;
    }
    for pid in criu_pids(&needle) {
        // Listed before criu dies: its children are then reparented.
        let below = descendants(pid);
        for p in std::iter::once(pid).chain(below) {
            // SAFETY: kill(2) of a criu working on our image, or of a task
            // that criu was restoring.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        tracing::warn!(pid, images = %images.display(), "killed a criu past its deadline");
    }
}

/// Every process below `pid`, from /proc's children lists.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for t in tasks {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
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

    #[test]
    fn the_processes_below_one_are_found_across_generations() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut below = Vec::new();
        for _ in 0..200 {
            below = descendants(pid);
            if below.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for p in &below {
            // SAFETY: kill(2) of the sleeps this test started.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(below.len(), 2, "{below:?}");
        assert!(!below.contains(&pid));
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
