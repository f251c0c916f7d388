//! Whether a webui still answers `/healthz` while a client holds 1,100
//! half-open connections (connected, nothing sent), the webui running with
//! the usual 1,024 file descriptors. Run it against two builds to compare
//! (BENCHMARKS.md); the shell must allow this process more descriptors:
//!
//! ```sh
//! cargo build -p loadshift-webui --example half_open
//! (ulimit -n 4096; target/debug/examples/half_open /work/main/target/debug/loadshift-webui target/debug/loadshift-webui)
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadshift_testkit::Killed;

const HALF_OPEN: usize = 1_100;

/// `/healthz` on a new connection within 10 s: the status line and the
/// time it took.
fn healthz(port: u16) -> (String, Duration) {
    let t0 = Instant::now();
    let answer = (|| {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().map(str::to_string)
    })();
    (answer.unwrap_or_else(|| "no answer".into()), t0.elapsed())
}

fn measure(bin: &str, nats_url: &str) {
    let port = loadshift_testkit::nats::free_port();
    // The usual descriptor limit of a service, whatever this shell allows.
    let _webui = Killed(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n 1024; exec {bin} --listen 127.0.0.1:{port} --nats {nats_url}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the webui"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !healthz(port).0.contains("200") {
        assert!(Instant::now() < deadline, "the webui did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut held = Vec::new();
    for _ in 0..HALF_OPEN {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("connection {} refused: {e}", held.len());
                break;
            }
        }
    }
    // Give the server a moment to accept them all.
    std::thread::sleep(Duration::from_secs(2));
    let (first, t) = healthz(port);
    println!(
        "{bin}: {} half-open connections held; /healthz: {first} in {} ms",
        held.len(),
        t.as_millis()
    );
}

fn main() {
    let bins: Vec<String> = std::env::args().skip(1).collect();
    if bins.is_empty() {
        eprintln!("usage: half_open WEBUI_BINARY...");
        std::process::exit(2);
    }
    let nats = loadshift_testkit::NatsServer::start();
    for bin in &bins {
        measure(bin, &nats.url());
    }
}
