//! A child process a test or an example started, stopped with it, and a
//! command run to its end with what it printed shown.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Kills and reaps its child when dropped, however the test ends (a failed
/// assertion included), so that no webui or Prometheus outlives its test
/// and holds a port or a CPU the next test needs.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// Starts `cmd` with no input and its output discarded (a server the
    /// test talks to over the network, not through its pipes); panics
    /// saying `what` could not start.
    pub fn quiet(cmd: &mut Command, what: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Self(child)
    }
}

/// Runs `cmd` to its end and returns what it printed, for a tool a test's
/// set-up needs to succeed (openssl making certificates, a deploy script
/// writing secrets); when it fails, the panic says `what` failed and shows
/// its stderr.
///
/// # Panics
/// When it cannot start or fails.
pub fn succeed(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("start {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `args` to its end (at most `patience`) and shows what it
/// printed on stderr, for the log of a failing test: how the CLI's and the
/// executor's end-to-end tests run the real `loadshift` binary.
///
/// # Panics
/// When it cannot start or does not end in time.
pub async fn finish(mut cmd: tokio::process::Command, args: &[&str], patience: Duration) -> Output {
    let out = tokio::time::timeout(patience, cmd.args(args).output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within {patience:?}"))
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    eprintln!(
        "{args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
