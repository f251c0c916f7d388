//! One service of `loadshift up` as a child process: started with its output
//! appended to a log file, watched, restarted with a growing backoff when it
//! dies (a run of a minute resets the backoff), and stopped on request with
//! SIGTERM, then SIGKILL after a grace period.
//!
//! Every child gets its own process group, so a Ctrl-C in the terminal
//! reaches `loadshift up` alone and the stop happens in order; and a parent
//! death signal, so even a `kill -9` of `loadshift up` takes them along.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadshift_events::shutdown::{Listener, Shutdown};
use tokio::process::{Child, Command};

use super::cgroup::NodeCgroup;

/// The first wait before a restart; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next crash waits [`FIRST_BACKOFF`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its name in logs (`brain`, `agent-node2`, ...).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// A cgroup to put it in once started (the control plane in node1's).
    pub cgroup: Option<NodeCgroup>,
}

/// A running service.
#[derive(Debug)]
pub struct Supervised {
    /// Its name.
    pub name: String,
    /// The pid of the current incarnation (0 while none runs).
    pub pid: Arc<AtomicU32>,
    /// Its own shutdown: `up` stops services one by one, in reverse order.
    shutdown: Shutdown<()>,
}

impl Supervised {
    /// Starts `spec` and keeps it running until [`Supervised::stop`].
    ///
    /// # Errors
    /// When the first start fails (a missing binary is better said at once
    /// than retried forever).
    pub fn start(spec: Spec, grace: Duration) -> std::io::Result<Self> {
        let first = spawn(&spec)?;
        let pid = Arc::new(AtomicU32::new(first.id().unwrap_or(0)));
        let shutdown = Shutdown::new();
        tokio::spawn(keep_running(
            spec.clone(),
            first,
            pid.clone(),
            shutdown.listener(),
            grace,
        ));
        Ok(Self {
            name: spec.name,
            pid,
            shutdown,
        })
    }

    /// Whether an incarnation runs now.
    pub fn is_running(&self) -> bool {
        self.pid.load(Ordering::Relaxed) != 0
    }

    /// Stops it (SIGTERM, then SIGKILL after the grace) and waits until it is gone.
    pub async fn stop(self) {
        self.shutdown.trigger().fire(());
        self.shutdown.completed().await;
    }
}

fn spawn(spec: &Spec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot start {} ({}): {e}",
                spec.name,
                spec.program.display()
            ),
        )
    })?;
    if let (Some(cg), Some(pid)) = (&spec.cgroup, child.id()) {
        if let Err(e) = cg.add(pid) {
            tracing::warn!(service = %spec.name, "not moved into node cgroup {}: {e}", cg.rel);
        }
    }
    Ok(child)
}

async fn keep_running(
    spec: Spec,
    mut child: Child,
    pid: Arc<AtomicU32>,
    mut stop: Listener<()>,
    grace: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                pid.store(0, Ordering::Relaxed);
                if stop.is_shutdown() {
                    return;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                tracing::warn!(
                    service = %spec.name,
                    "exited ({how}) after {:.0?}; restarting in {backoff:?} (log: {})",
                    started.elapsed(),
                    spec.log.display()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.recv() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match spawn(&spec) {
                    Ok(c) => {
                        pid.store(c.id().unwrap_or(0), Ordering::Relaxed);
                        tracing::info!(service = %spec.name, pid = c.id(), "restarted");
                        child = c;
                    }
                    Err(e) => {
                        tracing::warn!(service = %spec.name, "restart failed: {e}");
                        // Try again after the next backoff, through a child
                        // that has already exited.
                        match Command::new("true").spawn() {
                            Ok(c) => child = c,
                            Err(_) => return,
                        }
                    }
                }
            }
            _ = stop.recv() => {
                terminate(&spec.name, &mut child, grace).await;
                pid.store(0, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
async fn terminate(name: &str, child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    // SAFETY: kill(2) of our own child, not yet reaped (so not reused).
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(service = %name, "still running {grace:?} after SIGTERM: SIGKILL");
        let _ = child.kill().await;
    }
}
