//! A TCP relay a test puts between one client and a real server, so that
//! the test can cut that one client off the network and give it back.
//!
//! It exists for the fault matrix: "a node loses its NATS connection for a
//! few seconds" must hit one executor only, while nats-server, the other
//! executors and the test's own client keep talking. Killing the server
//! would hit everyone, and a network namespace per node needs a bridge the
//! test machines do not all have. The relay forwards bytes unchanged to the
//! real server behind it (it is no mock: every NATS frame is the server's
//! own); [`Relay::cut`] closes every connection through it and refuses new
//! ones until [`Relay::restore`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often the accepting thread looks at whether it should stop.
const POLL: Duration = Duration::from_millis(20);

/// What the relay's threads share.
#[derive(Default)]
struct Shared {
    /// Cut: live connections were closed, new ones are closed at once.
    cut: AtomicBool,
    /// The relay was dropped: its threads end.
    stopped: AtomicBool,
    /// Both ends of every connection alive through the relay, to close
    /// them when cut.
    live: Mutex<Vec<TcpStream>>,
}

/// A TCP relay on a free loopback port in front of `upstream`.
///
/// Dropping it closes every connection through it and stops its threads.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
}

impl Relay {
    /// Starts relaying from a free loopback port to `upstream`.
    ///
    /// # Panics
    /// When no loopback port can be bound (the test cannot run).
    pub fn start(upstream: SocketAddr) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the relay");
        let port = listener
            .local_addr()
            .expect("the relay's local address")
            .port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking relay listener");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::spawn(move || accept(listener, upstream, s));
        Self { port, shared }
    }

    /// The URL a NATS client connects to, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Cuts the client off: closes every connection through the relay and
    /// refuses new ones (they are accepted and closed at once, as a broken
    /// network path looks to a client that retries).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        close_all(&self.shared);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the relay is cut now.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        close_all(&self.shared);
    }
}

fn close_all(shared: &Shared) {
    let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
    for s in live.drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Accepts clients until the relay is dropped; each gets a connection to
/// `upstream` and two copying threads.
fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        {
            let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
            // Forget connections that ended on their own.
            live.retain(|s| s.peer_addr().is_ok());
            live.push(c3);
            live.push(s3);
        }
        thread::spawn(move || copy(client, server));
        thread::spawn(move || copy(s2, c2));
    }
}

/// Copies `from` into `to` until either end closes, then closes both.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port, for the relay to stand in front of.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"ping")?;
        let mut got = [0u8; 4];
        s.read_exact(&mut got)?;
        Ok(got.to_vec())
    }

    #[test]
    fn bytes_go_through_until_cut_and_again_after_restore() {
        let relay = Relay::start(echo());
        assert_eq!(round_trip(relay.port).unwrap(), b"ping");

        let mut held = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        held.write_all(b"a").unwrap();
        let mut one = [0u8; 1];
        held.read_exact(&mut one).unwrap();

        relay.cut();
        assert!(relay.is_cut());
        // The held connection is closed: a read ends (0 bytes or an error).
        let mut rest = [0u8; 1];
        assert!(!matches!(held.read(&mut rest), Ok(1)));
        assert!(
            round_trip(relay.port).is_err(),
            "a new connection gets through a cut relay"
        );

        relay.restore();
        assert_eq!(round_trip(relay.port).unwrap(), b"ping");
    }
}
