//! Graceful shutdown, mini-redis style: one sender says "stop, and why"; the
//! sampler and the orchestration each hold a receiver and check it between
//! steps, so nothing is cut in the middle of a publish.

use tokio::sync::watch;

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

/// The sending half: whoever decides the agent stops.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<Option<StopReason>>);

/// The receiving half, cheap to clone into every task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Option<StopReason>>);

/// A new trigger and its receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks every task to stop; the first reason wins, so a late SIGTERM does
    /// not rename a trace that already ended.
    pub fn trigger(&self, reason: StopReason) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// A receiver for a task started later.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// The reason, if a stop was asked for.
    pub fn requested(&self) -> Option<StopReason> {
        *self.0.borrow()
    }

    /// Waits until a stop is asked for.
    pub async fn wait(&mut self) -> StopReason {
        loop {
            if let Some(r) = *self.0.borrow_and_update() {
                return r;
            }
            if self.0.changed().await.is_err() {
                // The trigger is gone: nobody can ask any more, so never resolve.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Turns SIGTERM and SIGINT into a stop request. A second signal while
/// stopping exits at once, for an operator who does not want to wait.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn listen_for_signals(trigger: ShutdownTrigger) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = false;
        loop {
            let reason = tokio::select! {
                _ = term.recv() => StopReason::Terminate,
                _ = int.recv() => StopReason::Interrupt,
            };
            if seen {
                tracing::warn!("second {} while stopping: exiting now", reason.as_str());
                std::process::exit(1);
            }
            seen = true;
            tracing::info!("{} received: flushing and leaving", reason.as_str());
            trigger.trigger(reason);
        }
    });
    Ok(())
}
