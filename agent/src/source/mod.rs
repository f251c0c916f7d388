//! Where samples come from.
//!
//! A live source ([`host`], [`cgroup`]) is asked for a sample on every tick
//! and answers with what it measures now; a [`trace`] is a recorded series
//! that the sampler replays on its own schedule. Both produce the same
//! [`loadshift_events::Sample`], so the brain never cares which it was.

pub mod cgroup;
pub mod host;
pub mod pressure;
pub mod trace;

use loadshift_events::Sample;

/// What a node offers, announced in `node.joined` (the same type a trace
/// reports, so a replayed VM announces itself like a live node).
pub use loadshift_trace::Capacity;

/// Why a live source could not produce a sample this tick.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A cgroup file could not be read or parsed.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// A source measured on demand, once per tick.
///
/// It is a trait so the sampler's schedule, numbering and buffering are one
/// piece of code for the host and for a cgroup.
pub trait LiveSource: Send + 'static {
    /// Measures now. `seq` is left at 0 for the sampler to number.
    ///
    /// # Errors
    /// [`SourceError`] when the node cannot be read this time (the sampler
    /// logs it and tries again next tick).
    fn sample(&mut self) -> Result<Sample, SourceError>;

    /// The capacity to announce.
    fn capacity(&self) -> Capacity;
}
