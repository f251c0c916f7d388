//! Why the agent stops. The stopping itself is the contract's one shutdown
//! ([`loadshift_events::shutdown`]): the sampler and the orchestration each
//! hold a [`Shutdown`] listener and check it between steps, so nothing is cut
//! in the middle of a publish; this module adds the agent's reasons, which
//! it writes into `node.left`.

use loadshift_events::shutdown::{Listener, Signal, Trigger};

/// Why the agent stops; its text is the `reason` of `node.left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM (systemd stop, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// A trace replay reached its end.
    TraceEnded,
    /// `--limit` samples were produced.
    LimitReached,
    /// The publisher failed for good; the agent must not sample into the void.
    PublisherFailed,
    /// The source itself broke (a panic while reading it).
    SourceFailed,
}

impl StopReason {
    /// The reason written into `node.left`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Terminate => "SIGTERM",
            StopReason::Interrupt => "SIGINT",
            StopReason::TraceEnded => "trace ended",
            StopReason::LimitReached => "sample limit reached",
            StopReason::PublisherFailed => "publisher failed",
            StopReason::SourceFailed => "source failed",
        }
    }

    /// Whether an operator asked for the stop, which bounds the final flush
    /// by time rather than by progress.
    pub fn is_signal(self) -> bool {
        matches!(self, StopReason::Terminate | StopReason::Interrupt)
    }
}

impl From<Signal> for StopReason {
    fn from(s: Signal) -> Self {
        match s {
            Signal::Terminate => StopReason::Terminate,
            Signal::Interrupt => StopReason::Interrupt,
        }
    }
}

/// The agent's shutdown, with its reasons.
pub type AgentShutdown = loadshift_events::shutdown::Shutdown<StopReason>;
/// A task's view of the agent's shutdown.
pub type Shutdown = Listener<StopReason>;
/// Whoever decides the agent stops.
pub type ShutdownTrigger = Trigger<StopReason>;
