//! The smallest HTTP client a test needs: one GET on loopback, or one
//! request with a session cookie and a form (the dashboard's actions).

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

/// The whole response, as text, to `method path` on `127.0.0.1:port`,
/// carrying `cookie` (a `name=value` pair) and, for a POST, `form` as an
/// urlencoded body; `None` while nothing answers there.
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    patience: Duration,
) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(s, "{head}\r\n{body}").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
