//! A child process a test or an example started, stopped with it.

use std::process::Child;

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
