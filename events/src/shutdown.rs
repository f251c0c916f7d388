//! Graceful shutdown, the one way every loadshift program stops (the
//! mini-redis shape): a notifier every task listens to, and a completion
//! signal the program waits on, so it exits as soon as its tasks have
//! finished what they were doing, not after a fixed timeout.
//!
//! - [`Shutdown`] belongs to `main`: it hands out [`Listener`]s and
//!   [`Trigger`]s, turns SIGTERM/SIGINT into a stop ([`Shutdown::on_signals`])
//!   and waits for the tasks ([`Shutdown::completed`]).
//! - Every task holds a [`Listener`]: it asks [`Listener::is_shutdown`]
//!   between steps or waits in [`Listener::recv`] beside its work, and drops
//!   the listener when it has finished; the last one dropped completes the
//!   shutdown.
//! - Whoever decides the program stops (a signal, a trace that ended, a
//!   publisher that failed for good) fires a [`Trigger`] with a reason; the
//!   first reason wins.
//!
//! The reason type is the program's own (the agent writes it into
//! `node.left`); most use [`Signal`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The signal that asked a program to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (systemd stop, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl Signal {
    /// `SIGTERM` or `SIGINT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// `main`'s handle on the shutdown: hands out listeners and triggers, then
/// waits until every listener is gone.
#[derive(Debug)]
pub struct Shutdown<R = Signal> {
    notify: Arc<watch::Sender<Option<R>>>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Asks every task to stop, with a reason. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Trigger<R = Signal>(Arc<watch::Sender<Option<R>>>);

/// A task's view of the shutdown. Clone one into each task; the program's
/// shutdown completes when every clone has been dropped.
#[derive(Debug, Clone)]
pub struct Listener<R = Signal> {
    rx: watch::Receiver<Option<R>>,
    _done: mpsc::Sender<()>,
}

/// Some tasks had not finished when [`Shutdown::completed_within`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tasks still running {} ms after the shutdown began", .0.as_millis())]
pub struct Unfinished(pub Duration);

impl<R: Copy + Send + Sync + 'static> Default for Shutdown<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Copy + Send + Sync + 'static> Shutdown<R> {
    /// A shutdown nobody asked for yet.
    pub fn new() -> Self {
        let (notify, _) = watch::channel(None);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            notify: Arc::new(notify),
            done_tx,
            done_rx,
        }
    }

    /// A listener for one more task.
    pub fn listener(&self) -> Listener<R> {
        Listener {
            rx: self.notify.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// A trigger, for whoever may decide that the program stops.
    pub fn trigger(&self) -> Trigger<R> {
        Trigger(self.notify.clone())
    }

    /// Turns SIGTERM and SIGINT into a stop. A second signal while stopping
    /// exits at once (status 1), for an operator who does not want to wait.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn on_signals(&self) -> std::io::Result<()>
    where
        R: From<Signal>,
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let trigger = self.trigger();
        tokio::spawn(async move {
            let mut seen = false;
            loop {
                let which = tokio::select! {
                    _ = term.recv() => Signal::Terminate,
                    _ = int.recv() => Signal::Interrupt,
                };
                if seen {
                    tracing::warn!("second {} while stopping: exiting now", which.as_str());
                    std::process::exit(1);
                }
                seen = true;
                tracing::info!("{} received: finishing the current step", which.as_str());
                trigger.fire(R::from(which));
            }
        });
        Ok(())
    }

    /// Waits until every [`Listener`] has been dropped: the tasks finished.
    pub async fn completed(self) {
        let Self {
            done_tx,
            mut done_rx,
            ..
        } = self;
        drop(done_tx);
        // Nobody sends: `recv` returns `None` when the last sender is gone.
        let _ = done_rx.recv().await;
    }

    /// [`Shutdown::completed`], giving up after `within` (a task stuck in a
    /// system call must not keep a stopping service alive for ever).
    ///
    /// # Errors
    /// [`Unfinished`] when some task still holds its listener.
    pub async fn completed_within(self, within: Duration) -> Result<(), Unfinished> {
        tokio::time::timeout(within, self.completed())
            .await
            .map_err(|_| Unfinished(within))
    }
}

impl<R: Copy> Trigger<R> {
    /// Asks every task to stop; the first reason wins, so a late SIGTERM
    /// does not rename a stop that was already under way.
    pub fn fire(&self, reason: R) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

impl<R: Copy> Listener<R> {
    /// Whether a stop was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The reason, if a stop was asked for.
    pub fn reason(&self) -> Option<R> {
        *self.rx.borrow()
    }

    /// Waits until a stop is asked for (at once if it already was).
    pub async fn recv(&mut self) -> R {
        loop {
            if let Some(r) = *self.rx.borrow_and_update() {
                return r;
            }
            if self.rx.changed().await.is_err() {
                // Every trigger and the Shutdown are gone: nobody can ask any
                // more, so this never resolves.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_hears_the_first_reason() {
        let s: Shutdown = Shutdown::new();
        let mut a = s.listener();
        let b = a.clone();
        assert!(!b.is_shutdown());
        s.trigger().fire(Signal::Interrupt);
        s.trigger().fire(Signal::Terminate);
        assert_eq!(a.recv().await, Signal::Interrupt);
        assert_eq!(b.reason(), Some(Signal::Interrupt));
        assert_eq!(
            a.recv().await,
            Signal::Interrupt,
            "asking again returns at once"
        );
    }

    #[tokio::test]
    async fn completion_waits_for_the_last_listener() {
        let s: Shutdown = Shutdown::new();
        let mut l = s.listener();
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            l.recv().await;
            // The task's last step, done before it lets go of its listener.
            finished_tx.send(()).unwrap();
            drop(l);
        });
        s.trigger().fire(Signal::Terminate);
        s.completed().await;
        assert!(
            finished_rx.try_recv().is_ok(),
            "completed before the task finished"
        );
    }

    #[tokio::test]
    async fn a_task_that_never_finishes_is_reported() {
        let s: Shutdown = Shutdown::new();
        let held = s.listener();
        let r = s.completed_within(Duration::from_millis(10)).await;
        assert_eq!(r, Err(Unfinished(Duration::from_millis(10))));
        drop(held);
    }
}
