//! Crash points for the fault tests.
//!
//! The invariants (a workload is never lost, never runs twice) are only worth
//! what the crashes they survive are worth, and a crash "right after the dump"
//! cannot be timed from outside. So the executor kills itself with SIGKILL at
//! a named point when `LOADSHIFT_FAULTS` lists it (comma separated). Nothing
//! else changes: with the variable unset (always, outside tests) each point is
//! one environment lookup, made only at the rare steps of a migration.

/// The executor is about to commit what a finished dump means.
pub const AFTER_DUMP: &str = "after_dump";
/// criu restore has been started (it outlives us and finishes on its own).
pub const DURING_RESTORE: &str = "during_restore";
/// Flip one byte of the packed image after its digest was taken, as a
/// corrupted store would.
pub const CORRUPT_IMAGE: &str = "corrupt_image";

/// Whether fault `name` is armed.
pub fn armed(name: &str) -> bool {
    std::env::var("LOADSHIFT_FAULTS")
        .map(|v| v.split(',').any(|f| f.trim() == name))
        .unwrap_or(false)
}

/// Dies here, as a crash would, if fault `name` is armed.
pub fn crash_point(name: &str) {
    if armed(name) {
        tracing::error!(fault = name, "LOADSHIFT_FAULTS: crashing on purpose");
        // SAFETY: kill(2) of ourselves with SIGKILL: the crash under test.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
