//! Streamed stop-and-copy: the workload's memory pages go from the source's
//! `criu dump` straight to a `criu page-server` on the target while the dump
//! runs, instead of being dumped, uploaded, downloaded and only then
//! restored. Only the small rest of the image (and the workload's files)
//! still travels through the object store.
//!
//! CRIU's page-server has no authentication, so neither criu ever faces the
//! network: each listens or connects on 127.0.0.1 only, and the two
//! executors join them through a relay of their own. The target listens on
//! its advertised address for one migration, and admits exactly one
//! connection that opens with the migration's id and the one-time token it
//! handed the source (in the private reply to the source's offer request,
//! never in the event log); a wrong token is refused and the listener keeps
//! waiting until its deadline, and the token is spent on the first good
//! connection (the listener closes), so a replay finds nobody. Both relays
//! hash the bytes the dump sent (BLAKE3: every byte is hashed on both nodes
//! while the workload is frozen, and it is several times faster than
//! SHA-256 here); the target restores only if its digest is the one the
//! source announces in `checkpointed` (and CRIU checks its own images on
//! restore).
//!
//! The source's relay also keeps the raw page stream in a file next to the
//! source's own image (the "record"), written before each piece is
//! forwarded: the dump is done only once the target acknowledged every
//! page, so a finished dump has a whole record. If the target fails after
//! the dump, the source replays the record into a local page-server
//! ([`settle_pages`]) and resumes the workload from a whole image, as a copy
//! would. Recording is one memory copy into tmpfs during the freeze; the
//! page-server's work (which round 3 did during the freeze, as a "tee") is
//! paid only on that rare rollback. Its cost is tmpfs the size of the pages
//! for the migration's length.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use loadshift_events::migration::{stream_offer_subject, StreamedPages};
use loadshift_events::NodeName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// How long the source may take to open the connection and be admitted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an admitted-to-be connection may take to present its token.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a page-server may take to be ready.
const PAGE_SERVER_READY: Duration = Duration::from_secs(10);
/// Bytes of a token (hex on the wire: twice as many characters).
const TOKEN_BYTES: usize = 32;
/// The target's answer to a handshake.
const ADMITTED: u8 = 1;
/// The target's answer to a wrong or spent token.
const REFUSED: u8 = 0;
/// Relay buffer size.
const RELAY_BUF: usize = 1 << 20;
/// The raw page stream the source's relay keeps in [`pages_dir`] (not an
/// `.img`: [`merge_pages`] leaves it where it is).
const RECORD: &str = "pages.stream";

/// Why pages could not be streamed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// the target's address could not be reached
    #[error("cannot connect to the target's page stream at {address}: {message}")]
    Connect {
        /// Where.
        address: SocketAddr,
        /// What the OS said (or that it took too long).
        message: String,
    },
    /// the target refused the token
    #[error("the target at {0} refused the migration's token")]
    Refused(SocketAddr),
    /// a socket or file operation failed
    #[error("page stream: {action}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// a criu page-server failed
    #[error("criu page-server: {0}")]
    PageServer(String),
    /// nothing (or not all) arrived in time
    #[error("the page stream did not finish within {0:?}")]
    Timeout(Duration),
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> StreamError {
    move |source| StreamError::Io { action, source }
}

/// What the source asks the target's executor for (a plain NATS request on
/// [`stream_offer_subject`], like the ping: a question about now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// The migration the pages belong to.
    pub migration: Uuid,
    /// Who will send them.
    pub source: NodeName,
    /// About how many bytes (bounds how long the target waits for them).
    pub bytes: u64,
    /// Post-copy: the target will pull the pages (its lazy-pages daemon
    /// asks the source's serving dump) instead of receiving a stream
    /// ([`crate::lazy::offer`]). The door and its token are the same.
    #[serde(default)]
    pub lazy: bool,
}

/// Where to send one migration's pages, and the one-time token that opens
/// the door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The target's listening address.
    pub address: SocketAddr,
    /// Hex; admitted once.
    pub token: String,
}

/// The folder a page-server writes one migration's pages into, next to its
/// image folder: kept apart so the image folder holds only what the dump
/// wrote (and a fetch or a discard of it never touches the pages).
pub fn pages_dir(images: &Path) -> PathBuf {
    let mut name = images.as_os_str().to_owned();
    name.push(".pages");
    PathBuf::from(name)
}

/// Moves the streamed pages (if any) into the image folder before a
/// restore: CRIU reads one folder.
///
/// # Errors
/// When a file cannot be moved.
pub fn merge_pages(images: &Path) -> std::io::Result<()> {
    let pages = pages_dir(images);
    let entries = match std::fs::read_dir(&pages) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::fs::create_dir_all(images)?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".img") {
            std::fs::rename(entry.path(), images.join(name))?;
        }
    }
    Ok(())
}

/// A fresh one-time token.
pub(crate) fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact_std(&mut bytes)?;
    Ok(crate::checkpoint::hex(bytes))
}

/// `read_exact` for a std file, named apart from tokio's.
trait ReadExactStd {
    fn read_exact_std(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadExactStd for std::fs::File {
    fn read_exact_std(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        std::io::Read::read_exact(self, buf)
    }
}

/// What opens a connection: the migration id, then the token.
fn handshake(migration: Uuid, token: &str) -> Vec<u8> {
    let mut v = migration.as_bytes().to_vec();
    v.extend_from_slice(token.as_bytes());
    v
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An admitted connection to the target, ready to carry pages, and how
/// long the whole page stream may last: a target that stops reading or
/// answering must not keep the workload frozen (when the bound passes the
/// relay drops both ends, criu dump fails and resumes the workload).
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    limit: Duration,
}

impl Link {
    /// The admitted connection and its bound, for a post-copy's relay
    /// ([`crate::lazy`]), which carries the pages the other way round.
    pub fn into_parts(self) -> (TcpStream, Duration) {
        (self.stream, self.limit)
    }
}

/// Connects to the target's offer and presents the token: done before the
/// workload is frozen, so a target that cannot be reached costs nothing
/// but a fall back to the object store.
///
/// # Errors
/// [`StreamError::Connect`] when the address cannot be reached in time,
/// [`StreamError::Refused`] when the target refuses the token.
pub async fn connect(offer: &Offer, migration: Uuid, limit: Duration) -> Result<Link, StreamError> {
    let address = offer.address;
    let connect_err = |message: String| StreamError::Connect { address, message };
    let attempt = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(&handshake(migration, &offer.token))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let mut answer = [REFUSED];
        match stream.read_exact(&mut answer).await {
            Ok(_) if answer[0] == ADMITTED => Ok(Link { stream, limit }),
            _ => Err(StreamError::Refused(address)),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| connect_err(format!("no answer within {CONNECT_TIMEOUT:?}")))?
}

/// A `criu page-server` listening on 127.0.0.1, writing into one folder.
pub struct PageServer {
    child: tokio::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl PageServer {
    /// Starts one serving a single connection into `dir` and waits until it
    /// listens (criu's `--status-fd`).
    ///
    /// # Errors
    /// When it cannot be started or does not become ready.
    pub async fn start(criu: &Path, dir: &Path) -> Result<Self, StreamError> {
        std::fs::create_dir_all(dir).map_err(io("create the pages folder"))?;
        let port = free_port().map_err(io("find a free port"))?;
        let (ready_rx, ready_tx) = pipe().map_err(io("make a pipe"))?;
        let status_fd = ready_tx.as_raw_fd();
        let mut cmd = tokio::process::Command::new(criu);
        cmd.args(["page-server", "-D"])
            .arg(dir)
            .args(["--address", "127.0.0.1", "--port", &port.to_string()])
            .args(["-o", "page-server.log", "-v2", "--status-fd", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: dup2 is async-signal-safe; nothing else runs between fork
        // and exec here.
        unsafe {
            cmd.as_std_mut().pre_exec(move || {
                if libc::dup2(status_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| StreamError::PageServer(format!("cannot run {}: {e}", criu.display())))?;
        drop(ready_tx);
        let mut server = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let ready = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::from(ready_rx);
            let mut b = [1u8];
            f.read_exact_std(&mut b).map(|_| b[0] == 0)
        });
        match tokio::time::timeout(PAGE_SERVER_READY, ready).await {
            Ok(Ok(Ok(true))) => Ok(server),
            _ => {
                let _ = server.child.start_kill();
                Err(StreamError::PageServer(format!(
                    "not ready; see {}",
                    server.dir.join("page-server.log").display()
                )))
            }
        }
    }

    /// Waits until it exits (it closes its images only then) and says
    /// whether it wrote them whole.
    ///
    /// # Errors
    /// When it failed (its log's end in the message).
    pub async fn finish(mut self) -> Result<(), StreamError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(io("wait for page-server"))?;
        if status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("page-server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        Err(StreamError::PageServer(format!(
            "{status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )))
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A pipe: (read end, write end), both close-on-exec (the write end is
/// handed to criu by `dup2`, which clears the flag on the copy).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fresh descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies what `from` sends to `to`, hashing it, until `from` ends; then
/// half-closes `to`. With a `record`, each piece is appended to it before
/// it is forwarded (so whatever the far end acknowledged is recorded). The
/// byte count and digest are those of the page stream.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut record: Option<std::fs::File>,
) -> Result<StreamedPages, StreamError> {
    let mut buf = vec![0u8; RELAY_BUF];
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    loop {
        let n = from.read(&mut buf).await.map_err(io("read pages"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        if let Some(f) = record.as_mut() {
            // A write into tmpfs: a memory copy, short enough to make here
            // rather than hand to a blocking thread per megabyte.
            std::io::Write::write_all(f, &buf[..n]).map_err(io("record pages"))?;
        }
        to.write_all(&buf[..n]).await.map_err(io("forward pages"))?;
    }
    let _ = to.shutdown().await;
    Ok(StreamedPages {
        bytes,
        sha256: String::new(),
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// Turns a source's record (if any) back into page images with a local
/// page-server, then moves them into the image folder (the source's
/// rollback after a streamed dump: a whole image, as a copy would have).
/// Without a record this is [`merge_pages`].
///
/// # Errors
/// When the page-server cannot take the record whole, or a file cannot be
/// moved.
pub async fn settle_pages(criu: &Path, images: &Path) -> Result<(), StreamError> {
    replay_record(criu, images).await?;
    merge_pages(images).map_err(io("merge pages into the image"))
}

/// Replays the source's record of `images`' page stream (if there is one)
/// into a local page-server writing into [`pages_dir`], then removes it:
/// the page images are then what the target's page-server wrote from the
/// same bytes. `Ok(false)` when there was no record.
///
/// # Errors
/// When the page-server cannot take the record whole.
pub async fn replay_record(criu: &Path, images: &Path) -> Result<bool, StreamError> {
    let dir = pages_dir(images);
    let record = dir.join(RECORD);
    if !record.exists() {
        return Ok(false);
    }
    let server = PageServer::start(criu, &dir).await?;
    let address = server.address();
    let path = record.clone();
    match tokio::task::spawn_blocking(move || feed(&path, address)).await {
        Ok(Ok(())) => server.finish().await?,
        Ok(Err(e)) => return Err(io("replay the page record")(e)),
        Err(e) => return Err(StreamError::PageServer(format!("replay died: {e}"))),
    }
    std::fs::remove_file(&record).map_err(io("remove the page record"))?;
    Ok(true)
}

/// Sends the file at `record` to the page-server at `address` (the kernel
/// copies it: `std::io::copy` from a file to a socket is `sendfile`),
/// draining its answers, then closes the connection.
fn feed(record: &Path, address: SocketAddr) -> std::io::Result<()> {
    let mut file = std::fs::File::open(record)?;
    let mut conn = std::net::TcpStream::connect(address)?;
    let mut answers = conn.try_clone()?;
    let drain = std::thread::spawn(move || std::io::copy(&mut answers, &mut std::io::sink()));
    std::io::copy(&mut file, &mut conn)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let _ = drain.join();
    Ok(())
}

/// The source's end: a port on 127.0.0.1 for `criu dump --page-server`,
/// relayed to the target over `link` and recorded into [`pages_dir`] of the
/// image (the safety copy [`settle_pages`] turns into page images).
pub struct SourceRelay {
    /// Where criu dump sends its pages.
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<Result<StreamedPages, StreamError>>,
}

impl SourceRelay {
    /// Creates the record and starts the relay.
    ///
    /// # Errors
    /// When the record or the local port cannot be set up.
    pub async fn start(link: Link, images: &Path) -> Result<Self, StreamError> {
        let dir = pages_dir(images);
        std::fs::create_dir_all(&dir).map_err(io("create the pages folder"))?;
        let record =
            std::fs::File::create(dir.join(RECORD)).map_err(io("create the page record"))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(io("listen for criu dump"))?;
        let address = listener.local_addr().map_err(io("local address"))?;
        let limit = link.limit;
        let relay = async move {
            let (dump, _) = listener.accept().await.map_err(io("accept criu dump"))?;
            let _ = dump.set_nodelay(true);
            let (dump_rx, mut dump_tx) = dump.into_split();
            let (mut link_rx, link_tx) = link.stream.into_split();
            // criu dump waits for the target's answers.
            let answers = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut link_rx, &mut dump_tx).await;
                let _ = dump_tx.shutdown().await;
            });
            let sent = pump(dump_rx, link_tx, Some(record)).await;
            let _ = answers.await;
            sent
        };
        let task = tokio::spawn(async move {
            tokio::time::timeout(limit, relay)
                .await
                .map_err(|_| StreamError::Timeout(limit))?
        });
        Ok(Self { address, task })
    }

    /// What was sent, once criu dump is done.
    ///
    /// # Errors
    /// When the relay or the record failed.
    pub async fn finish(self) -> Result<StreamedPages, StreamError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(StreamError::PageServer(format!("relay died: {e}"))),
        }
    }

    /// Stops the relay (the dump failed).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Waits on `listener` for the one connection presenting `migration` and
/// `token`, refusing every other, then relays it to `backend` (the
/// page-server on 127.0.0.1) until the sender is done; the listener closes
/// at admission, so the token cannot be used twice.
///
/// # Errors
/// [`StreamError::Timeout`] when no good connection came (or finished)
/// within `limit`; I/O errors of the relay.
pub async fn receive(
    listener: TcpListener,
    migration: Uuid,
    token: String,
    backend: SocketAddr,
    limit: Duration,
) -> Result<StreamedPages, StreamError> {
    let work = async {
        let link = admit(listener, migration, &token).await?;
        let server = TcpStream::connect(backend)
            .await
            .map_err(io("connect to the page-server"))?;
        let (server_rx, server_tx) = server.into_split();
        let (link_rx, link_tx) = link.into_split();
        if crate::fault::armed(crate::fault::DURING_STREAM) {
            let _ = link_rx.readable().await;
            crate::fault::crash_point(crate::fault::DURING_STREAM);
        }
        let answers = tokio::spawn(async move {
            let (mut r, mut w) = (server_rx, link_tx);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
        let got = pump(link_rx, server_tx, None).await;
        let _ = answers.await;
        got
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| StreamError::Timeout(limit))?
}

/// Waits on `listener` for the one connection presenting `migration` and
/// `token`, refusing every other; closes the listener at admission, so the
/// token cannot be used twice. Unbounded: the caller bounds it.
///
/// # Errors
/// When the listener fails.
pub(crate) async fn admit(
    listener: TcpListener,
    migration: Uuid,
    token: &str,
) -> Result<TcpStream, StreamError> {
    let expected = handshake(migration, token);
    let link = loop {
        let (mut conn, peer) = listener.accept().await.map_err(io("accept"))?;
        let mut got = vec![0u8; expected.len()];
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.read_exact(&mut got)).await;
        if matches!(read, Ok(Ok(_))) && same(&got, &expected) {
            conn.write_all(&[ADMITTED]).await.map_err(io("admit"))?;
            break conn;
        }
        tracing::warn!(%migration, %peer, "page stream: wrong token or handshake refused");
        let _ = conn.write_all(&[REFUSED]).await;
    };
    drop(listener);
    let _ = link.set_nodelay(true);
    Ok(link)
}

type Receipt = tokio::sync::oneshot::Receiver<Result<StreamedPages, String>>;

/// The target's side: the streams it offered, each a receiver running in
/// the background until its pages arrived, and what arrived. Shared between
/// the offer responder and the saga, which collects the receipt when
/// `checkpointed` comes. Held in memory only: a target restarted in between
/// has lost the receipt and refuses the migration (the source resumes).
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Mutex<std::collections::HashMap<Uuid, Receipt>>>,
    settings: Option<Arc<StreamSettings>>,
    /// The post-copies under way on this node, either side
    /// ([`crate::lazy::PostCopies`]): the same door, other halves.
    pub postcopy: crate::lazy::PostCopies,
}

/// What the target needs to offer streams.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The criu binary.
    pub criu: PathBuf,
    /// The address other executors reach this node on.
    pub advertise: IpAddr,
    /// Where image folders are (pages go next to them).
    pub images_root: PathBuf,
    /// The node's deadlines (the saga's): a receiver waits for its pages
    /// as long as a download and restore of as many bytes may take.
    pub deadlines: crate::deadline::Deadlines,
}

impl Default for Streams {
    /// A node that offers no streams (the saga's unit tests, Docker nodes).
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            settings: None,
            postcopy: Default::default(),
        }
    }
}

impl Streams {
    /// A node that offers streams with `settings`.
    pub fn new(settings: StreamSettings) -> Self {
        Self {
            inner: Arc::default(),
            settings: Some(Arc::new(settings)),
            postcopy: Default::default(),
        }
    }

    /// Sets up a receiver for `req`'s pages: a page-server into its pages
    /// folder, a listener on the advertised address, a fresh token.
    ///
    /// # Errors
    /// In words, when this node offers no streams or cannot set one up.
    pub async fn offer(&self, req: &OfferRequest) -> Result<Offer, String> {
        let Some(s) = self.settings.clone() else {
            return Err("this node does not take streamed pages".into());
        };
        if req.lazy {
            return self.postcopy.offer(&s, req).await;
        }
        let images = s.images_root.join(req.migration.to_string());
        let pages = pages_dir(&images);
        let server = PageServer::start(&s.criu, &pages)
            .await
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind((s.advertise, 0))
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", s.advertise))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let token = new_token().map_err(|e| format!("cannot make a token: {e}"))?;
        let limit = s.deadlines.target(req.bytes, None);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (migration, backend) = (req.migration, server.address());
        let tok = token.clone();
        tokio::spawn(async move {
            let got = receive(listener, migration, tok, backend, limit).await;
            let done = match got {
                Ok(pages) => server.finish().await.map(|_| pages),
                Err(e) => Err(e),
            };
            if let Err(e) = &done {
                tracing::warn!(%migration, error = %e, "streamed pages did not arrive");
                crate::runtime::image_dir::discard(&pages);
            }
            let _ = tx.send(done.map_err(|e| e.to_string()));
        });
        if let Ok(mut map) = self.inner.lock() {
            map.insert(req.migration, rx);
        }
        Ok(Offer { address, token })
    }

    /// What arrived for `migration`, waiting at most `limit` for the
    /// receiver to finish.
    ///
    /// # Errors
    /// In words, when nothing was offered here (or a restart lost it), the
    /// stream failed, or it did not finish in time.
    pub async fn receipt(&self, migration: Uuid, limit: Duration) -> Result<StreamedPages, String> {
        let rx = self
            .inner
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&migration));
        let Some(rx) = rx else {
            return Err(
                "no streamed pages are known here (the target restarted, or never offered)".into(),
            );
        };
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the page receiver stopped".into()),
            Err(_) => Err(format!(
                "the streamed pages did not finish within {limit:?}"
            )),
        }
    }
}

/// Answers offer requests for `node` until the subscription ends.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn serve(
    client: async_nats::Client,
    node: &NodeName,
    streams: Streams,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(stream_offer_subject(node)).await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let answer: Result<Offer, String> =
                match serde_json::from_slice::<OfferRequest>(&msg.payload) {
                    Ok(req) => streams.offer(&req).await,
                    Err(e) => Err(format!("unreadable offer request: {e}")),
                };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = client.publish(reply, body.into()).await {
                tracing::warn!(error = %e, "cannot answer an offer request");
            }
        }
    });
    Ok(())
}

/// Asks `node`'s executor for a stream offer.
///
/// # Errors
/// In words, when it does not answer in time, or refuses.
pub async fn ask(
    client: &async_nats::Client,
    node: &NodeName,
    req: &OfferRequest,
) -> Result<Offer, String> {
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.request(stream_offer_subject(node), body.into()),
    )
    .await
    .map_err(|_| format!("node {node} did not answer the offer request in time"))?
    .map_err(|e| format!("node {node}: {e}"))?;
    serde_json::from_slice::<Result<Offer, String>>(&answer.payload)
        .map_err(|e| format!("node {node} answered something unreadable: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// A stand-in page-server: a real TCP listener that keeps what it gets.
    async fn sink() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut v = Vec::new();
            c.read_to_end(&mut v).await.unwrap();
            v
        });
        (addr, h)
    }

    async fn receiver(
        token: &str,
        migration: Uuid,
    ) -> (
        Offer,
        tokio::task::JoinHandle<Result<StreamedPages, StreamError>>,
        tokio::task::JoinHandle<Vec<u8>>,
    ) {
        let (backend, kept) = sink().await;
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let offer = Offer {
            address: l.local_addr().unwrap(),
            token: token.to_string(),
        };
        let t = token.to_string();
        let h = tokio::spawn(receive(l, migration, t, backend, Duration::from_secs(30)));
        (offer, h, kept)
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_the_right_one_admitted_once() {
        let m = Uuid::now_v7();
        let token = new_token().unwrap();
        let (offer, got, kept) = receiver(&token, m).await;
        let wrong = Offer {
            token: new_token().unwrap(),
            ..offer.clone()
        };
        assert!(matches!(
            connect(&wrong, m, LIMIT).await.unwrap_err(),
            StreamError::Refused(_)
        ));
        // The right token for another migration is wrong too.
        assert!(connect(&offer, Uuid::now_v7(), LIMIT).await.is_err());
        let mut link = connect(&offer, m, LIMIT).await.unwrap();
        link.stream.write_all(b"pages pages").await.unwrap();
        // The same token again: the door is closed.
        assert!(connect(&offer, m, LIMIT).await.is_err());
        link.stream.shutdown().await.unwrap();
        drop(link);
        let pages = got.await.unwrap().unwrap();
        assert_eq!(kept.await.unwrap(), b"pages pages");
        assert_eq!(pages.bytes, 11);
        assert_eq!(
            pages.blake3,
            blake3::hash(b"pages pages").to_hex().to_string()
        );
        assert_eq!(pages.sha256, "", "the slower digest is no longer taken");
    }

    #[test]
    fn pages_merge_into_the_image_folder_and_a_missing_folder_is_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("m1");
        merge_pages(&images).unwrap();
        std::fs::create_dir_all(pages_dir(&images)).unwrap();
        std::fs::write(pages_dir(&images).join("pages-1.img"), b"p").unwrap();
        std::fs::write(pages_dir(&images).join("page-server.log"), b"l").unwrap();
        merge_pages(&images).unwrap();
        assert_eq!(std::fs::read(images.join("pages-1.img")).unwrap(), b"p");
        assert!(!images.join("page-server.log").exists());
    }
}
