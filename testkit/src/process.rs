//! A child process a test or an example started, stopped with it.

use std::process::{Child, Command, Stdio};

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
