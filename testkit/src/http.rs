//! The smallest HTTP client a test needs: one GET on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The whole response (status line, headers and body) to `GET path` on
/// `127.0.0.1:port`, or `None` while nothing answers there; `patience`
/// bounds how long one read may wait. `Connection: close`, so the response
/// ends when the server closes.
///
/// Tests poll a freshly started server with it: a refused connection is
/// "not yet", not a failure.
pub fn get(port: u16, path: &str, patience: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(out)
}
