//! The real `loadshift-webui` binary against hostile clients: hundreds of
//! half-open connections, connections that send half a request and stop,
//! every slot held by live-update streams, and a token guessed over and
//! over. `/healthz` keeps answering, stalled connections are closed, and
//! guessing is throttled.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadshift_testkit::NatsServer;

struct Webui {
    child: Child,
    port: u16,
}

impl Drop for Webui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(nats: &NatsServer, extra: &[&str]) -> Webui {
    let port = loadshift_testkit::nats::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_loadshift-webui"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            &nats.url(),
        ])
        .args(extra)
        .env("LOADSHIFT_OPERATOR_TOKEN", "right-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loadshift-webui");
    let w = Webui { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(
        w.port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .is_none_or(|r| !r.starts_with("HTTP/1.1 200"))
    {
        assert!(Instant::now() < deadline, "the webui did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    w
}

/// Sends `raw` on a new connection and reads the whole answer.
fn request(port: u16, raw: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn healthz(port: u16) -> String {
    request(
        port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("healthz answers")
}

fn metric(port: u16, line_start: &str) -> u64 {
    let m = request(
        port,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
}

/// Waits until `stream` is closed by the server; a read that times out (the
/// server kept it open for a whole minute) fails the test.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn half_open_connections_cannot_starve_healthz() {
    let nats = NatsServer::start();
    // Timeouts far away: what frees a slot here is the cap's eviction.
    let w = start(
        &nats,
        &[
            "--max-connections",
            "20",
            "--header-timeout-secs",
            "300",
            "--idle-timeout-secs",
            "600",
        ],
    );
    let mut hostile = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
        if i % 2 == 0 {
            // Half a request head, then silence (slowloris).
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        }
        hostile.push(s);
    }
    for _ in 0..5 {
        let h = healthz(w.port);
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert!(h.contains("\"status\":\"ok\""), "{h}");
    }
    assert!(metric(w.port, "loadshift_webui_http_connections ") <= 20);
    assert!(
        metric(
            w.port,
            "loadshift_webui_http_connections_total{outcome=\"evicted\"} "
        ) >= 180
    );
    // The evicted ones were closed, not left hanging on the server's side.
    assert!(closed_by_server(&mut hostile[0]));
}

#[test]
fn healthz_answers_while_every_slot_serves_a_live_stream() {
    let nats = NatsServer::start();
    let w = start(&nats, &["--max-connections", "8"]);
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
        s.write_all(b"GET /sse/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        streams.push(s);
    }
    // Every slot holds a real request: no eviction, the overflow lane answers.
    let h = healthz(w.port);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(h.contains("at_connection_cap"), "{h}");
    let page = request(w.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(
        page.to_ascii_lowercase().contains("retry-after: 5"),
        "{page}"
    );
    drop(streams);
}

#[test]
fn stalled_and_idle_connections_are_closed() {
    let nats = NatsServer::start();
    let w = start(
        &nats,
        &["--header-timeout-secs", "1", "--idle-timeout-secs", "2"],
    );
    // Half a head, never finished.
    let mut half = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    // A kept-alive connection after one request.
    let mut kept = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut half), "half a head kept open");
    assert!(
        closed_by_server(&mut silent),
        "a silent connection kept open"
    );
    assert!(closed_by_server(&mut kept), "an idle keep-alive kept open");
    assert!(
        metric(
            w.port,
            "loadshift_webui_http_connections_total{outcome=\"timed_out\"} "
        ) >= 3
    );
}

fn login(port: u16, token: &str) -> String {
    let body = format!("token={token}&user=eve");
    request(
        port,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap()
}

#[test]
fn repeated_bad_logins_are_throttled() {
    let nats = NatsServer::start();
    let w = start(&nats, &[]);
    // The right token works, and does not count against the address.
    assert!(login(w.port, "right-token").starts_with("HTTP/1.1 303"));
    for _ in 0..5 {
        let r = login(w.port, "guess");
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    }
    let r = login(w.port, "guess");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: "), "{r}");
    assert!(r.contains("Too many failed logins"), "{r}");
    // Locked out means locked out: a lucky guess is refused too.
    assert!(login(w.port, "right-token").starts_with("HTTP/1.1 429"));
    assert_eq!(metric(w.port, "loadshift_webui_login_throttled_total "), 2);
}
