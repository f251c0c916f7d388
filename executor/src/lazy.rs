//! Post-copy migration with CRIU's lazy pages: the workload runs on the
//! target as soon as everything but its memory is there, and its memory
//! follows (faulted pages first, the rest pushed in the background).
//!
//! Three long-lived criu processes do it (docs/saga.md, "Post-copy"): on the
//! source a `criu dump --lazy-pages` that freezes the tree, writes the small
//! images and then serves the pages it kept ([`LazyDump`]); on the target a
//! `criu lazy-pages` daemon that fetches them and a `criu restore
//! --lazy-pages` that starts the tree with its memory handed to that daemon
//! ([`LazyRestore`]). Every wait is bounded by a deadline the caller gives.
//!
//! Until the last page arrived the workload lives on two nodes at once, half
//! on each: if either side breaks, neither half can run alone. So a broken
//! post-copy kills the workload on both sides, never resumes it anywhere;
//! this is the risk an operator declines with `--no-postcopy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use loadshift_events::WorkloadName;
use tokio::process::{Child, Command};

use crate::runtime::process::{log_tail, start_ticks, ProcessRuntime};
use crate::runtime::{Handle, RuntimeError, TravellingFile};

/// What `fs.pipe-max-size` must allow: CRIU's page server sizes its read
/// pipe to 819 pages (3354624 bytes), and without `CAP_SYS_RESOURCE` (the
/// executor has none here) that fails above the limit and the first page
/// request dies with `splice: Bad file descriptor`.
pub const PIPE_BYTES_NEEDED: u64 = 4 << 20;

/// The kernel's limit on a pipe's size for unprivileged callers.
const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// How often a criu's log or exit is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(10);

/// What the dump's log says once its small images are written and its page
/// server listens: the moment the target may start restoring.
const SERVING: &str = "Starting page server";

/// What the dump's log says when the target holds every page.
const ALL_SERVED: &str = "Lazy pages transfer finished successfully";

/// Why post-copy did not happen, or broke.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// this host cannot do post-copy (the caller falls back to another mode)
    #[error("post-copy is not possible on this node: {0}")]
    Unavailable(String),
    /// a criu step failed before the workload ran on the target
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// a step did not end in time
    #[error("post-copy {step} did not finish within {limit:?}")]
    Deadline {
        /// Which wait.
        step: &'static str,
        /// Its bound.
        limit: Duration,
    },
    /// the pages stopped coming after the workload resumed on the target:
    /// the workload is lost on both nodes
    #[error("post-copy lost its {side} before every page arrived; the workload was killed on this node ({log}: {tail})")]
    Broken {
        /// `source` (seen from the target) or `target` (seen from the source).
        side: &'static str,
        /// The log of the criu that saw it.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
}

/// Makes sure CRIU's lazy page server can size its pipe (see
/// [`PIPE_BYTES_NEEDED`]), raising the kernel's limit when it is lower.
///
/// # Errors
/// [`LazyError::Unavailable`] when the limit is too low and cannot be raised.
pub fn ensure_pipe_size() -> Result<(), LazyError> {
    let now = std::fs::read_to_string(PIPE_MAX_SIZE)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if now >= PIPE_BYTES_NEEDED {
        return Ok(());
    }
    std::fs::write(PIPE_MAX_SIZE, PIPE_BYTES_NEEDED.to_string()).map_err(|e| {
        LazyError::Unavailable(format!(
            "{PIPE_MAX_SIZE} is {now}, CRIU's lazy page server needs {PIPE_BYTES_NEEDED}, and raising it failed: {e}"
        ))
    })?;
    tracing::info!(
        from = now,
        to = PIPE_BYTES_NEEDED,
        "raised fs.pipe-max-size for CRIU's lazy page server"
    );
    Ok(())
}

/// The source's half: a frozen workload whose small images are written and
/// whose pages are served on an address until the target has them all.
///
/// Dropping it leaves criu serving and the tree frozen, on purpose: only
/// [`LazyDump::finish`] may decide that the transfer is over, and until
/// then the target may still need pages.
pub struct LazyDump {
    child: Child,
    images: PathBuf,
    workload: Handle,
}

impl LazyDump {
    /// Freezes the workload behind `handle` and dumps it lazily into
    /// `images`, serving its pages on `listen`. Returns once the small
    /// images are complete (the target may fetch them and restore), within
    /// `limit`.
    ///
    /// # Errors
    /// [`LazyError::Unavailable`] when this host cannot serve pages,
    /// [`LazyError::Runtime`] when criu failed, [`LazyError::Deadline`] when
    /// it was too slow. In every case the workload runs here again (criu
    /// resumes the tree of a failed or killed dump).
    pub async fn start(
        runtime: &ProcessRuntime,
        handle: &Handle,
        images: &Path,
        listen: SocketAddr,
        limit: Duration,
    ) -> Result<Self, LazyError> {
        let Handle::Process { pid, .. } = handle else {
            return Err(LazyError::Unavailable(
                "post-copy moves process workloads only".into(),
            ));
        };
        ensure_pipe_size()?;
        std::fs::create_dir_all(images).map_err(RuntimeError::io("create image folder", images))?;
        let mut args = runtime.dump_args(*pid, images);
        args.extend(serve_args(listen));
        args.push("--lazy-pages".into());
        let mut dump = Self {
            child: spawn(runtime.criu(), args)?,
            images: images.to_path_buf(),
            workload: handle.clone(),
        };
        let log = dump.log();
        let ready = tokio::time::timeout(limit, async {
            loop {
                if log_says(&log, SERVING) {
                    return Ok(());
                }
                if let Some(status) = dump.child.try_wait().ok().flatten() {
                    return Err(criu_failed("lazy dump", status, &log));
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(dump),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // Killing criu lets go of the tree, which runs on.
                stop(&mut dump.child).await;
                Err(LazyError::Deadline {
                    step: "dump",
                    limit,
                })
            }
        }
    }

    /// The folder holding the small images, to send to the target.
    pub fn images(&self) -> &Path {
        &self.images
    }

    /// The pid of the serving criu (for tests that kill the source).
    pub fn criu_pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn log(&self) -> PathBuf {
        self.images.join("dump.log")
    }

    /// Waits until the target holds every page (criu then ends the frozen
    /// tree here), within `limit`.
    ///
    /// `Ok` is criu's word, not proof: its page server also ends well when
    /// the target's daemon closes the connection early (seen when the
    /// target dies). Only the target's [`LazyRestore::finish`] knows that
    /// every page arrived, so the migration is complete on the target's word.
    ///
    /// # Errors
    /// [`LazyError::Broken`] when the transfer broke or did not end in time:
    /// the tree here is killed, because the target may already run on what
    /// it received (criu would resume it here: two half copies).
    pub async fn finish(mut self, limit: Duration) -> Result<(), LazyError> {
        let log = self.log();
        let served = |log: &Path| log_says(log, ALL_SERVED);
        end_or_kill(
            &mut self.child,
            &self.workload,
            log,
            "target",
            limit,
            served,
        )
        .await
    }
}

/// The target's half: the workload restored and running, its pages
/// arriving from the source.
pub struct LazyRestore {
    daemon: Child,
    images: PathBuf,
    workload: Handle,
}

impl LazyRestore {
    /// Starts the lazy-pages daemon against the source's page server at
    /// `source`, then restores the workload from the small images in
    /// `images` (its travelling files already in place, as for
    /// [`crate::runtime::Runtime::restore`]), within `limit`. Returns as soon
    /// as the workload runs here.
    ///
    /// # Errors
    /// [`LazyError::Runtime`] or [`LazyError::Deadline`] when the daemon or
    /// the restore failed; nothing of the workload runs here then.
    pub async fn start(
        runtime: &ProcessRuntime,
        name: &WorkloadName,
        images: &Path,
        files: &[TravellingFile],
        source: SocketAddr,
        limit: Duration,
    ) -> Result<Self, LazyError> {
        let log = images.join("lazy-pages.log");
        let mut args: Vec<std::ffi::OsString> = vec![
            "lazy-pages".into(),
            "--page-server".into(),
            "-D".into(),
            images.into(),
            "-o".into(),
            "lazy-pages.log".into(),
            "-v4".into(),
        ];
        args.extend(serve_args(source));
        let mut daemon = spawn(runtime.criu(), args)?;
        let socket = images.join("lazy-pages.socket");
        let restored = tokio::time::timeout(limit, async {
            while !socket.exists() {
                if let Some(status) = daemon.try_wait().ok().flatten() {
                    return Err(LazyError::from(criu_failed("lazy-pages", status, &log)));
                }
                tokio::time::sleep(POLL).await;
            }
            Ok(runtime
                .restore_with(name, images, files, &["--lazy-pages"])
                .await?)
        })
        .await;
        match restored {
            Ok(Ok(workload)) => Ok(Self {
                daemon,
                images: images.to_path_buf(),
                workload,
            }),
            Ok(Err(e)) => {
                stop(&mut daemon).await;
                Err(e)
            }
            Err(_) => {
                stop(&mut daemon).await;
                if let Some(found) = restored_pid(images) {
                    kill_tree(&found).await;
                }
                Err(LazyError::Deadline {
                    step: "restore",
                    limit,
                })
            }
        }
    }

    /// How to find the restored workload.
    pub fn handle(&self) -> &Handle {
        &self.workload
    }

    /// The pid of the lazy-pages daemon (for tests that kill the target).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.id()
    }

    /// Waits until the last page arrived (the daemon exits 0), within
    /// `limit`: only then may the source clean up.
    ///
    /// # Errors
    /// [`LazyError::Broken`] when the pages stopped coming (the source died,
    /// or the limit passed): the half-restored workload is killed here, as
    /// it cannot run without the rest of its memory.
    pub async fn finish(mut self, limit: Duration) -> Result<(), LazyError> {
        let log = self.images.join("lazy-pages.log");
        end_or_kill(
            &mut self.daemon,
            &self.workload,
            log,
            "source",
            limit,
            |_| true,
        )
        .await
    }
}

/// `--address A --port P`, for the page server and for its client.
fn serve_args(addr: SocketAddr) -> [std::ffi::OsString; 4] {
    [
        "--address".into(),
        addr.ip().to_string().into(),
        "--port".into(),
        addr.port().to_string().into(),
    ]
}

fn spawn(criu: &Path, args: Vec<std::ffi::OsString>) -> Result<Child, RuntimeError> {
    Command::new(criu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            program: criu.display().to_string(),
            source,
        })
}

fn criu_failed(action: &'static str, status: ExitStatus, log: &Path) -> RuntimeError {
    RuntimeError::Criu {
        action,
        status: status.to_string(),
        log: log.to_path_buf(),
        tail: log_tail(log, 12),
    }
}

/// Waits up to `limit` for `child` (one half of a post-copy) to end well
/// (exit 0 and `log_ok` of its log); otherwise stops it, kills the
/// workload's tree here and says the transfer broke on the `side` named.
async fn end_or_kill(
    child: &mut Child,
    workload: &Handle,
    log: PathBuf,
    side: &'static str,
    limit: Duration,
    log_ok: impl Fn(&Path) -> bool,
) -> Result<(), LazyError> {
    let ended = tokio::time::timeout(limit, child.wait()).await;
    if let Ok(Ok(status)) = &ended {
        if status.success() && log_ok(&log) {
            return Ok(());
        }
    }
    if ended.is_err() {
        stop(child).await;
    }
    kill_tree(workload).await;
    Err(LazyError::Broken {
        side,
        tail: log_tail(&log, 4),
        log,
    })
}

fn log_says(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle))
}

/// SIGKILL and reap a criu we gave up on.
async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The tree a lazy restore started, from its pidfile (a restore cut off by
/// its deadline may have started it all the same).
fn restored_pid(images: &Path) -> Option<Handle> {
    let pid: u32 = std::fs::read_to_string(images.join("restore.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Handle::Process {
        pid,
        start_ticks: start_ticks(pid)?,
    })
}

/// How long a killed tree may take to be gone (its memory is freed first).
const DEATH_WAIT: Duration = Duration::from_secs(5);

/// SIGKILL of the workload's root, the init of its PID namespace (the
/// kernel ends every other process in it); returns once it is gone, or
/// after [`DEATH_WAIT`], so the caller's "no copy runs" holds when it says so.
async fn kill_tree(handle: &Handle) {
    let Handle::Process {
        pid,
        start_ticks: want,
    } = handle
    else {
        return;
    };
    let alive = || start_ticks(*pid) == Some(*want);
    if !alive() {
        return;
    }
    // SAFETY: kill(2) of a pid checked by its start time.
    unsafe {
        libc::kill(*pid as i32, libc::SIGKILL);
    }
    let _ = tokio::time::timeout(DEATH_WAIT, async {
        while alive() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}
