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

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadshift_events::WorkloadName;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::runtime::process::{log_tail, start_ticks, ProcessRuntime};
use crate::runtime::{Handle, RuntimeError, TravellingFile};
use crate::stream::{Link, Offer, OfferRequest, StreamSettings};

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
    listen: SocketAddr,
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
        // Info, not debug (-v4 logs every mapping and page pipe): the lines
        // this module waits for are info.
        args.push("-v3".into());
        let mut dump = Self {
            child: spawn(runtime.criu(), args)?,
            images: images.to_path_buf(),
            workload: handle.clone(),
            listen,
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
            // -v4 logs every page it moves: a GiB's worth of lines.
            "-v2".into(),
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
                .restore_with(name, images, files, &["--lazy-pages", "-v3"])
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
        .await?;
        // The daemon's exit dies with this executor: a restart reads this.
        let done = self.images.join(ALL_ARRIVED);
        if let Err(e) = std::fs::write(&done, b"") {
            tracing::warn!(path = %done.display(), error = %e, "cannot mark the post-copy done");
        }
        Ok(())
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

/// A free port on 127.0.0.1 for a serving dump (only this node's relay
/// connects to it: criu's page server has no authentication).
///
/// # Errors
/// When no port can be had.
pub fn local_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

impl LazyDump {
    /// Serves the pages to the target over `link` (the connection the
    /// target's executor admitted with its one-time token), watched in the
    /// background until the transfer ends, the link's bound passes, or the
    /// saga ends it ([`Serving::finish`], [`Serving::end`]).
    ///
    /// The relay connects to criu only once the target's daemon asks for
    /// its first page: a target that dies before restoring leaves the tree
    /// frozen and whole here, so the source can still take it back.
    pub fn serve(mut self, link: Link) -> Serving {
        let (mut remote, limit) = link.into_parts();
        let pulled = Arc::new(AtomicBool::new(false));
        let listen = self.listen;
        let seen = pulled.clone();
        let relay = tokio::spawn(async move {
            let mut first = [0u8; 1];
            if !matches!(remote.peek(&mut first).await, Ok(n) if n > 0) {
                return;
            }
            let Ok(mut criu) = TcpStream::connect(listen).await else {
                return;
            };
            seen.store(true, Ordering::SeqCst);
            let _ = tokio::io::copy_bidirectional(&mut remote, &mut criu).await;
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let workload = self.workload.clone();
        let seen = pulled.clone();
        let done = tokio::spawn(async move {
            let log = self.log();
            let ended = tokio::select! {
                s = tokio::time::timeout(limit, self.child.wait()) => s.ok().and_then(Result::ok),
                _ = stop_rx => None,
            };
            relay.abort();
            if let Some(status) = ended {
                if status.success() && log_says(&log, ALL_SERVED) {
                    return Ok(());
                }
            } else {
                stop(&mut self.child).await;
            }
            if !seen.load(Ordering::SeqCst) {
                // Nothing left this node: criu let go of the tree, which
                // runs here as before the freeze.
                return Err(LazyError::Unavailable(format!(
                    "the target never asked for a page ({}: {})",
                    log.display(),
                    log_tail(&log, 4)
                )));
            }
            kill_tree(&self.workload).await;
            Err(LazyError::Broken {
                side: "target",
                tail: log_tail(&log, 4),
                log,
            })
        });
        Serving {
            workload,
            pulled,
            stop: Some(stop_tx),
            done,
        }
    }
}

/// The source's half of a post-copy under way: a lazy dump serving its
/// pages to the target, held in memory between the events of its
/// migration ([`PostCopies`]).
pub struct Serving {
    workload: Handle,
    pulled: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), LazyError>>,
}

impl Serving {
    /// Whether the target's daemon asked for pages: from then on the
    /// workload may run on the target, and the tree here must never run
    /// again.
    pub fn pulled(&self) -> bool {
        self.pulled.load(Ordering::SeqCst)
    }

    /// Waits, up to `limit`, for the end of a transfer the target says is
    /// complete; past it the dump is stopped (and the tree here killed).
    ///
    /// # Errors
    /// What the dump saw, for the log: the target's word decides.
    pub async fn finish(mut self, limit: Duration) -> Result<(), LazyError> {
        match tokio::time::timeout(limit, &mut self.done).await {
            Ok(r) => r.unwrap_or_else(|e| Err(joined(e))),
            Err(_) => {
                self.end(false).await;
                Err(LazyError::Deadline {
                    step: "page transfer",
                    limit,
                })
            }
        }
    }

    /// Ends the post-copy from this side. With `keep`, and if the target
    /// never asked for a page, the workload runs here again: its handle.
    /// Otherwise the tree here is killed (the target may run on what it
    /// received) and `None` says the workload does not run here.
    pub async fn end(mut self, keep: bool) -> Option<Handle> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
        let alive = match &self.workload {
            Handle::Process {
                pid,
                start_ticks: t,
            } => start_ticks(*pid) == Some(*t),
            Handle::Container { .. } => false,
        };
        if keep && !self.pulled() && alive {
            return Some(self.workload.clone());
        }
        kill_tree(&self.workload).await;
        None
    }
}

fn joined(e: tokio::task::JoinError) -> LazyError {
    LazyError::Unavailable(format!("the page server's watcher died: {e}"))
}

/// One side of a post-copy this node takes part in.
enum Half {
    /// Target: the 127.0.0.1 address the lazy-pages daemon connects to,
    /// relayed to the source over the admitted connection, and about how
    /// many bytes of pages will come (the source's guess: they travel
    /// apart from the image, whose size `checkpointed` gives).
    Target(SocketAddr, u64),
    /// Source: the serving dump.
    Source(Serving),
}

/// The post-copies under way on this node, by migration: what lives only
/// in this executor's memory between the events of a lazy migration (a
/// restart loses it, and the saga then treats the post-copy as broken).
#[derive(Clone, Default)]
pub struct PostCopies {
    inner: Arc<Mutex<HashMap<Uuid, Half>>>,
}

impl PostCopies {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Half>) -> T) -> T {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    /// Target: offers `req`'s source a door (the same token handshake as a
    /// stream, [`crate::stream::admit`]) and relays the admitted
    /// connection to the lazy-pages daemon the restore will start.
    ///
    /// # Errors
    /// In words, when the door cannot be set up.
    pub(crate) async fn offer(
        &self,
        s: &StreamSettings,
        req: &OfferRequest,
    ) -> Result<Offer, String> {
        let listener = TcpListener::bind((s.advertise, 0))
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", s.advertise))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let local = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("cannot listen for the lazy-pages daemon: {e}"))?;
        let daemon = local.local_addr().map_err(|e| e.to_string())?;
        let token = crate::stream::new_token().map_err(|e| format!("cannot make a token: {e}"))?;
        let limit = s.deadlines.target(req.bytes, None);
        let (migration, tok) = (req.migration, token.clone());
        tokio::spawn(async move {
            let relay = async {
                let mut link = crate::stream::admit(listener, migration, &tok)
                    .await
                    .map_err(|e| e.to_string())?;
                let (mut daemon, _) = local.accept().await.map_err(|e| e.to_string())?;
                tokio::io::copy_bidirectional(&mut daemon, &mut link)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(limit, relay).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(%migration, error = %e, "post-copy relay broke"),
                Err(_) => tracing::warn!(%migration, ?limit, "post-copy relay past its bound"),
            }
        });
        self.with(|m| m.insert(req.migration, Half::Target(daemon, req.bytes)));
        Ok(Offer { address, token })
    }

    /// Target: where the lazy-pages daemon of `migration` finds its source
    /// (once: the relay takes one daemon), and about how many bytes of
    /// pages will come that way.
    pub fn take_daemon_address(&self, migration: Uuid) -> Option<(SocketAddr, u64)> {
        self.with(|m| match m.remove(&migration) {
            Some(Half::Target(a, bytes)) => Some((a, bytes)),
            Some(other) => {
                m.insert(migration, other);
                None
            }
            None => None,
        })
    }

    /// Source: keeps the serving dump of `migration` until its end.
    pub fn keep_serving(&self, migration: Uuid, serving: Serving) {
        self.with(|m| m.insert(migration, Half::Source(serving)));
    }

    /// Source: the serving dump of `migration`, taken to end it.
    pub fn take_serving(&self, migration: Uuid) -> Option<Serving> {
        self.with(|m| match m.remove(&migration) {
            Some(Half::Source(s)) => Some(s),
            Some(other) => {
                m.insert(migration, other);
                None
            }
            None => None,
        })
    }

    /// Source: whether the dump of `migration` serves from this executor
    /// (false after a restart: its relay died with the executor before).
    pub fn is_serving(&self, migration: Uuid) -> bool {
        self.with(|m| matches!(m.get(&migration), Some(Half::Source(_))))
    }
}

/// The mark [`LazyRestore::finish`] leaves in the image folder once the
/// daemon exited 0: its exit status dies with the executor that waited for
/// it, and its log says nothing of it below `-v4`.
const ALL_ARRIVED: &str = "postcopy-done";

/// Whether the post-copy restored in `images` saw its last page arrive
/// (for a target restarted during post-copy). A daemon that ended while
/// nobody watched cannot have succeeded: its connection to the source ran
/// through the executor's relay, which died with it.
pub fn all_arrived(images: &Path) -> bool {
    images.join(ALL_ARRIVED).exists()
}

/// The part of a lazy freeze that does not grow with memory: criu seizing
/// the tree and writing the small images, the images' trip, the restore
/// (BENCHMARKS.md, "Issue 13 (round 3): post-copy": 348 ms at 64 MiB).
const LAZY_FIXED_SECS: f64 = 0.31;
/// What a lazy freeze adds per byte (the dump walks every page into its
/// pipes while the tree is frozen): 917 ms at 1 GiB, about 1.7 GiB/s.
const LAZY_BYTES_PER_SEC: f64 = 1.7 * 1024.0 * 1024.0 * 1024.0;
/// The part of a streamed freeze that does not grow with memory (two
/// page-servers, the handshake, the restore): BENCHMARKS.md, "Issue 13
/// (round 3): streamed freeze", 0.84 s at 64 MiB, 6.5 s at 1 GiB.
const STREAM_FIXED_SECS: f64 = 0.42;
/// Bytes per second a stream moves while frozen before this node measured
/// any: the same rows (about 165 MiB/s).
const STREAM_BYTES_PER_SEC: f64 = 165.0 * 1024.0 * 1024.0;

/// Estimated freeze of a lazy move of `rss` bytes, seconds.
pub fn lazy_freeze_secs(rss: u64) -> f64 {
    LAZY_FIXED_SECS + rss as f64 / LAZY_BYTES_PER_SEC
}

/// Estimated freeze of a streamed move of `rss` bytes, seconds, at the
/// speed this node measured (`bytes_per_sec`, the journal's) when it is
/// faster than the figure measured here.
pub fn stream_freeze_secs(rss: u64, bytes_per_sec: Option<f64>) -> f64 {
    let speed = bytes_per_sec
        .filter(|s| s.is_finite() && *s > STREAM_BYTES_PER_SEC)
        .unwrap_or(STREAM_BYTES_PER_SEC);
    STREAM_FIXED_SECS + rss as f64 / speed
}

/// Whether `auto` should move `rss` bytes with post-copy: its estimated
/// freeze is shorter than a stream's. The price (the workload dies with
/// either node until the last page arrived) is the operator's to refuse,
/// with `--no-postcopy`.
pub fn wins(rss: u64, bytes_per_sec: Option<f64>) -> bool {
    lazy_freeze_secs(rss) < stream_freeze_secs(rss, bytes_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_estimates_follow_the_measured_freezes_and_post_copy_wins_at_each() {
        // BENCHMARKS.md, round 3: lazy 348 / 463 / 917 ms, stream 0.84 /
        // 2.10 / 6.5 s at 64 / 256 / 1024 MiB.
        let close = |est: f64, measured: f64| (est - measured).abs() / measured < 0.25;
        for (mib, lazy, stream) in [(64, 0.348, 0.84), (256, 0.463, 2.10), (1024, 0.917, 6.5)] {
            assert!(
                close(lazy_freeze_secs(mib * MIB), lazy),
                "lazy at {mib} MiB"
            );
            let s = stream_freeze_secs(mib * MIB, None);
            assert!(close(s, stream), "stream at {mib} MiB: {s}");
            assert!(wins(mib * MIB, None), "{mib} MiB");
        }
        // A node that measured a faster network estimates a shorter stream;
        // a nonsense speed is the figure measured here.
        let fast = Some(1024.0 * MIB as f64);
        assert!(stream_freeze_secs(1024 * MIB, fast) < stream_freeze_secs(1024 * MIB, None));
        assert_eq!(
            stream_freeze_secs(MIB, Some(f64::NAN)),
            stream_freeze_secs(MIB, None)
        );
    }

    #[test]
    fn every_page_arrived_only_when_the_daemon_was_seen_to_end_well() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!all_arrived(dir.path()), "nothing seen");
        let log = dir.path().join("lazy-pages.log");
        std::fs::write(&log, "UFFD transferred pages: (16384/16384)\n").unwrap();
        assert!(!all_arrived(dir.path()), "a log is no witness");
        std::fs::write(dir.path().join(ALL_ARRIVED), b"").unwrap();
        assert!(all_arrived(dir.path()));
    }
}
