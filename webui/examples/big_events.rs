//! What twenty 7 MB events cost a webui: its resident memory before and
//! after it folds them, and the size of the Events page that shows them.
//!
//! A hostile client on a nats-server that still allows 8 MB messages (the
//! old `max_payload`) publishes them on `node.node2.joined`. Run it against
//! two builds to compare (BENCHMARKS.md):
//!
//! ```sh
//! cargo run -p loadshift-webui --example big_events -- /work/main/target/debug/loadshift-webui target/debug/loadshift-webui
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadshift_testkit::Killed;

const EVENTS: usize = 20;
const EVENT_BYTES: usize = 7 << 20;

fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    loadshift_testkit::http::get(port, path, Duration::from_secs(60))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn measure(bin: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats_port = loadshift_testkit::nats::free_port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "max_payload: 8MB\njetstream {{ store_dir: \"{}\", max_file_store: 1TB }}\n",
            dir.path().join("js").display()
        ),
    )
    .expect("write nats.conf");
    let _nats = Killed(
        Command::new("nats-server")
            .args(["-c"])
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    let url = format!("nats://127.0.0.1:{nats_port}");
    let client = loop {
        if let Ok(c) = async_nats::connect(&url).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let js = async_nats::jetstream::new(client);
    loadshift_events::stream::declare(&js, &Default::default())
        .await
        .expect("declare the streams");
    let port = loadshift_testkit::nats::free_port();
    let webui = Killed(
        Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--nats", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the webui"),
    );
    let pid = webui.0.id();
    wait("the webui", || get(port, "/healthz").is_some());
    let before = rss_mib(pid);
    let body = format!("{{\"junk\":\"{}\"}}", "x".repeat(EVENT_BYTES));
    for _ in 0..EVENTS {
        js.publish("node.node2.joined", body.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let done = format!("loadshift_webui_events_folded_total{{stream=\"EVENTS\"}} {EVENTS}");
    wait("the fold", || {
        get(port, "/metrics").is_some_and(|m| String::from_utf8_lossy(&m).contains(&done))
    });
    let after = rss_mib(pid);
    let page = get(port, "/events").map_or(0, |p| p.len());
    println!(
        "{bin}: resident {before:.0} MiB before, {after:.0} MiB after {EVENTS} events of {} MiB; /events page {:.2} MiB",
        EVENT_BYTES >> 20,
        page as f64 / (1 << 20) as f64
    );
}

#[tokio::main]
async fn main() {
    let bins: Vec<String> = std::env::args().skip(1).collect();
    if bins.is_empty() {
        eprintln!("usage: big_events WEBUI_BINARY...");
        std::process::exit(2);
    }
    for bin in &bins {
        measure(bin).await;
    }
}
