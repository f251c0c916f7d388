//! Graceful shutdown, mini-redis style: one broadcast fired on SIGINT or
//! SIGTERM, observed by every loop, so the brain finishes and flushes the
//! batch it is folding instead of dying in the middle of it.

use tokio::sync::broadcast;

/// A loop's view of the shutdown signal.
///
/// It remembers that the signal fired, so a loop that asks again after
/// receiving it does not wait forever.
#[derive(Debug)]
pub struct Shutdown {
    fired: bool,
    rx: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Watches `rx`.
    pub fn new(rx: broadcast::Receiver<()>) -> Self {
        Self { fired: false, rx }
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.fired
    }

    /// Waits until shutdown is requested (at once if it already was).
    pub async fn recv(&mut self) {
        if self.fired {
            return;
        }
        // Lagged or closed both mean "stop": the sender only ever sends stop.
        let _ = self.rx.recv().await;
        self.fired = true;
    }
}

/// Spawns a task that fires a broadcast on SIGINT or SIGTERM; returns the
/// sender (to hand out more receivers) and a first receiver, subscribed
/// before any signal can arrive.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signals() -> std::io::Result<(broadcast::Sender<()>, Shutdown)> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = broadcast::channel(1);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sender = tx.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{which} received; finishing the current batch");
        let _ = sender.send(());
    });
    Ok((tx, Shutdown::new(rx)))
}
