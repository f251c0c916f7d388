//! Crash points for the fault matrix (`scripts/faults`).
//!
//! The outbox's promise (a decision recorded is published, once, whatever
//! moment the brain dies at) is only worth the crashes it survives, and
//! "after the decision was stored, before NATS has it" cannot be timed from
//! outside. So the brain kills itself with SIGKILL at a named point when
//! `LOADSHIFT_FAULTS` lists it (comma separated), as the executor does.
//! With the variable unset (always, outside tests) a point costs one
//! environment lookup per published decision.

/// A migration request is in the outbox (stored with the fold that decided
/// it) and about to be published for the first time.
pub const BEFORE_PUBLISH: &str = "brain_before_publish";
/// JetStream acknowledged a migration request, which is still in the
/// outbox (the next start publishes it again, under the same id).
pub const AFTER_PUBLISH: &str = "brain_after_publish";

/// Dies here, as a crash would, if fault `name` is armed.
pub fn crash_point(name: &str) {
    let armed =
        std::env::var("LOADSHIFT_FAULTS").is_ok_and(|v| v.split(',').any(|f| f.trim() == name));
    if armed {
        tracing::error!(fault = name, "LOADSHIFT_FAULTS: crashing on purpose");
        // SAFETY: kill(2) of ourselves with SIGKILL: the crash under test
        // (no destructor runs, no store is flushed).
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
