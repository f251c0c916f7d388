//! CRIU's cache of what it learned about the kernel (`/run/criu.kdat`).
//!
//! Every criu run probes the kernel before it does anything (about 0.1 s
//! here, measured with `criu check`), unless `/run/criu.kdat` holds the
//! result of an earlier probe. CRIU writes that file only where `/run` is a
//! tmpfs (it is on a systemd host, so it is cleared at every boot), but it
//! reads it wherever it is. On a node whose `/run` is not a tmpfs (this
//! machine), no criu ever finds it, and a post-copy pays the probe three
//! times inside the freeze (the dump's end, the lazy-pages daemon, the
//! restore). So the executor has criu write the cache once at start, in a
//! private mount namespace with a tmpfs `/run`, and puts it in place: fresh
//! at every start, so a new kernel never meets an old cache.

use std::path::Path;

/// Where CRIU looks for its cache.
pub const CACHE: &str = "/run/criu.kdat";

/// Writes a fresh [`CACHE`] for this kernel with `criu` (best effort: a
/// node without it only runs slower).
///
/// # Errors
/// In words, when criu or the private namespace cannot be had, or the file
/// cannot be written.
pub async fn refresh(criu: &Path) -> Result<(), String> {
    let probe = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && \"$0\" check >/dev/null 2>&1; cat /run/criu.kdat")
        .arg(criu)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if probe.stdout.is_empty() {
        return Err(format!(
            "criu ({}) wrote no kernel cache in a private /run ({})",
            criu.display(),
            probe.status
        ));
    }
    // Written aside and renamed, so a criu starting meanwhile reads a whole
    // file or none.
    let tmp = format!("{CACHE}.{}", std::process::id());
    std::fs::write(&tmp, &probe.stdout).map_err(|e| format!("cannot write {tmp}: {e}"))?;
    std::fs::rename(&tmp, CACHE).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot put the cache at {CACHE}: {e}")
    })
}
