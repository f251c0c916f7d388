//! The dashboard's HTTP listener, built to survive hostile clients.
//!
//! `axum::serve` keeps a connection that never sends a request for as long
//! as the client likes and accepts without limit: 1,100 half-open
//! connections exhausted the webui's file descriptors and `/healthz`
//! stopped answering. This listener serves HTTP/1.1 with hyper directly and
//! bounds every resource a client can hold:
//!
//! - a request head must arrive within [`HttpLimits::header_timeout`] of
//!   the moment the server waits for it (hyper's header read timeout, which
//!   also runs while a keep-alive connection waits for its next request);
//! - a connection on which no byte moves either way for
//!   [`HttpLimits::idle_timeout`] is closed (a client that stalls a body or
//!   stops reading; live updates send a keep-alive comment well within it);
//! - at most [`HttpLimits::max_connections`] are served at once. At the cap
//!   a new connection takes the place of the oldest one that has not sent a
//!   request yet (a half-open one costs its owner nothing, so it is the
//!   first to go); when every connection is busy with real requests, a small
//!   overflow lane still answers `GET /healthz` and refuses the rest with
//!   503, so the health check keeps working whatever the load.
//!
//! With a TLS acceptor the handshake runs inside an admitted connection,
//! bounded by the header timeout: a client that connects and never
//! finishes it holds a slot that has not sent a request, the first to be
//! given up at the cap.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Connections in the overflow lane at once; beyond it a connection is
/// closed as soon as it is accepted (it costs a descriptor for microseconds).
const OVERFLOW_LANE: usize = 32;

/// How long the overflow lane waits for a request line.
const OVERFLOW_READ: Duration = Duration::from_secs(2);

/// How long a stopping server lets open connections finish; live-update
/// streams never finish on their own, and SIGTERM must take effect in a
/// second or two.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What a client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request head, from when the server waits for it.
    pub header_timeout: Duration,
    /// Time a connection may stay without a byte moving either way.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    /// 512 connections stay well under the usual 1,024 descriptors per
    /// process; 10 s is ample for any real client to send its head.
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts of what the listener did, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections accepted in all.
    pub accepted: AtomicU64,
    /// Connections closed at the cap to make room (never sent a request).
    pub evicted: AtomicU64,
    /// Connections closed for sending nothing, or moving no byte, in time.
    pub timed_out: AtomicU64,
    /// Connections answered by the overflow lane (healthz or 503).
    pub overflow: AtomicU64,
    /// Connections closed at once because even the overflow lane was full.
    pub dropped: AtomicU64,
}

/// The client's address, put in every request's extensions (the login
/// throttle counts failures per address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// One served connection, as the cap sees it.
struct Slot {
    accepted: Instant,
    requested: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

/// The connections being served.
#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Slot>,
}

impl Slots {
    /// A slot for a new connection, evicting the oldest silent one when all
    /// `max` are taken; `None` when every slot serves a real request. Gives
    /// the slot's id and the flags the connection's task shares with it.
    fn admit(&mut self, max: usize) -> Option<(u64, Arc<AtomicBool>, Arc<Notify>)> {
        if self.open.len() >= max && !self.evict_oldest_silent() {
            return None;
        }
        let id = self.next;
        self.next += 1;
        let slot = Slot {
            accepted: Instant::now(),
            requested: Arc::new(AtomicBool::new(false)),
            evict: Arc::new(Notify::new()),
        };
        let handles = (id, slot.requested.clone(), slot.evict.clone());
        self.open.insert(id, slot);
        Some(handles)
    }

    /// The oldest connection that has not sent a request, told to go.
    fn evict_oldest_silent(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, s)| !s.requested.load(Ordering::Relaxed))
            .min_by_key(|(_, s)| s.accepted)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves.
///
/// # Errors
/// Never in practice: failed accepts (out of descriptors, a reset before
/// accept) are logged and retried, as a server must.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_LANE));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let admitted = slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(limits.max_connections);
        match admitted {
            Some((id, requested, evict)) => {
                let conn = Connection {
                    app: app.clone(),
                    limits,
                    stats: stats.clone(),
                    requested,
                    evict,
                    stop: stop_rx.clone(),
                };
                let slots = slots.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => conn.serve(stream, peer).await,
                        Some(acceptor) => conn.serve_tls(acceptor, stream, peer).await,
                    }
                    slots
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .open
                        .remove(&id);
                });
            }
            None => match overflow.clone().try_acquire_owned() {
                Ok(permit) => {
                    stats.overflow.fetch_add(1, Ordering::Relaxed);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        answer_overflow(stream, tls).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }
            },
        }
    }
    // Stop accepting, ask every connection to finish, give them a moment.
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while Instant::now() < deadline
        && !slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One admitted connection's task.
struct Connection {
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    requested: Arc<AtomicBool>,
    evict: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Completes the TLS handshake within the header timeout (or gives the
    /// slot up when evicted or stopped meanwhile), then serves as
    /// [`Connection::serve`].
    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr) {
        let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream));
        let mut stop = self.stop.clone();
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = self.evict.notified() => {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ = stop.changed() => return,
        };
        self.serve(tls, peer).await;
    }

    async fn serve<S>(mut self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = Marking {
            inner: TowerToHyperService::new(self.app.clone()),
            requested: self.requested.clone(),
            peer: Peer(peer.ip()),
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let idle = self.limits.idle_timeout;
        let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        if e.is_timeout() {
                            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    break;
                }
                _ = self.evict.notified() => {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closed at the connection cap: no request yet");
                    break;
                }
                _ = check.tick() => {
                    if activity.quiet_for() >= idle {
                        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "closed: idle");
                        break;
                    }
                }
                _ = self.stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                    break;
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The overflow lane for a plain or TLS connection (the handshake bounded
/// like the read).
async fn answer_overflow(stream: TcpStream, tls: Option<TlsAcceptor>) {
    match tls {
        None => overflow_lane(stream).await,
        Some(acceptor) => {
            let hs = tokio::time::timeout(OVERFLOW_READ, acceptor.accept(stream));
            if let Ok(Ok(tls)) = hs.await {
                overflow_lane(tls).await;
            }
        }
    }
}

/// Answers a connection that came while every slot was busy with real
/// requests: `GET /healthz` gets its answer, anything else a 503, and the
/// connection is closed either way.
async fn overflow_lane<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 512];
    let mut n = 0;
    let head = tokio::time::timeout(OVERFLOW_READ, async {
        while n < buf.len() && !buf[..n].windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    })
    .await;
    if head.is_err() {
        return;
    }
    let line = &buf[..n];
    let health = line.starts_with(b"GET /healthz ") || line.starts_with(b"GET /healthz?");
    let (status, body) = if health {
        ("200 OK", "{\"status\":\"ok\",\"at_connection_cap\":true}")
    } else {
        (
            "503 Service Unavailable",
            "too many connections; try again soon\n",
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A hyper service that notes that its connection sent a request (so the
/// cap does not evict it) and tells the handlers who the client is.
#[derive(Clone)]
struct Marking {
    inner: TowerToHyperService<Router>,
    requested: Arc<AtomicBool>,
    peer: Peer,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Marking {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<Incoming>,
    >>::Response;
    type Error =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        self.requested.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(self.peer);
        self.inner.call(req)
    }
}

/// When a byte last moved on a connection, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream (TCP, or TLS over TCP) that records when bytes move.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
