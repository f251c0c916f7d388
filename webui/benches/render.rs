//! Issue 5 benchmark: 200 nodes and 10,000 migrations in the projection.
//! Cluster page render p99 and bytes, SSE fan-out to 50 clients, RSS.
//! Run: `cargo bench -p loadshift-webui --bench render`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use askama::Template;
use chrono::Utc;
use loadshift_testkit::fixtures as fixture;
use loadshift_webui::pages::cluster::{ClusterPage, ClusterView};
use loadshift_webui::pages::Chrome;
use loadshift_webui::projection::{Limits, Projection};
use loadshift_webui::{router, AppState, Settings};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

// One long function on purpose: the benchmark reads top to bottom as the
// report it prints.
fn main() {
    let nodes = 200;
    let samples = 720; // two hours at one sample every 10 s
    let migrations = 10_000;
    let now = Utc::now();
    let rss0 = rss_mib();
    let t0 = Instant::now();
    let mut p = Projection::new(Limits::default());
    for n in 0..nodes {
        let name = format!("node{n:03}");
        p.apply_envelope(&fixture::joined(&name, now - chrono::Duration::hours(2)));
        p.apply_envelope(&fixture::started(
            &name,
            &format!("w{n:03}"),
            now - chrono::Duration::hours(2),
        ));
        for i in 0..samples {
            let t = now - chrono::Duration::seconds(10 * (samples - i) as i64);
            p.apply_envelope(&fixture::sample(
                &name,
                t,
                i as u64,
                20.0 + ((i + n) % 70) as f32,
            ));
        }
        p.apply_envelope(&fixture::predicted(&name, now, (n % 10) as f32 / 10.0, 2));
    }
    for i in 0..migrations {
        let src = format!("node{:03}", i % nodes);
        let dst = format!("node{:03}", (i + 1) % nodes);
        let t = now - chrono::Duration::seconds((migrations - i) as i64);
        for e in fixture::migration_ok(
            uuid::Uuid::now_v7(),
            &format!("w{:03}", i % nodes),
            &src,
            &dst,
            t,
            150.0 + (i % 100) as f64,
            "bench",
        ) {
            p.apply_envelope(&e);
        }
    }
    let fold_s = t0.elapsed().as_secs_f64();
    let rss_folded = rss_mib();

    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let v = ClusterView::build(&p, Utc::now(), Duration::from_secs(30));
        let html = ClusterPage {
            chrome: Chrome::plain("Cluster", "cluster"),
            v,
        }
        .render()
        .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = html.len();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];

    // SSE fan-out: 50 clients on /sse/cluster, one change, time until all 50 got the fragment.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings {
        live_interval: Duration::ZERO,
        ..Settings::default()
    };
    let st = AppState::new(p, settings, None);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(st.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut fanouts = Vec::new();
    for round in 0..5 {
        let mut clients: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                write!(s, "GET /sse/cluster HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s
            })
            .collect();
        while st.sse_clients.load(std::sync::atomic::Ordering::Relaxed) < 50 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        st.update(|p| {
            p.apply_envelope(&fixture::predicted("node000", Utc::now(), 0.99, 2 + round))
        });
        let handles: Vec<_> = clients
            .drain(..)
            .map(|mut s| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut seen = Vec::new();
                    loop {
                        let n = s.read(&mut buf).unwrap();
                        seen.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&seen);
                        if let Some(i) = text.find("event: fragment") {
                            if text[i..].contains("All migrations") {
                                return Instant::now();
                            }
                        }
                    }
                })
            })
            .collect();
        let last = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap();
        fanouts.push((last - t).as_secs_f64() * 1e3);
        while st.sse_clients.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    fanouts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rss_end = rss_mib();
    println!("Issue 5 — dashboard benchmark ({nodes} nodes x {samples} samples, {migrations} migrations)");
    println!(
        "fold of {} events: {fold_s:.1} s",
        nodes * (samples + 3) + migrations * 4
    );
    println!(
        "cluster page render: p50 {p50:.1} ms, p99 {p99:.1} ms (200 renders, view + template)"
    );
    println!(
        "cluster page size: {bytes} bytes ({:.0} KB)",
        bytes as f64 / 1024.0
    );
    println!("SSE fan-out to 50 clients (change -> last client has the fragment): median {:.1} ms, max {:.1} ms over 5 rounds", fanouts[2], fanouts[4]);
    println!("RSS: {rss0:.0} MiB at start, {rss_folded:.0} MiB with the projection, {rss_end:.0} MiB after the SSE rounds");
}
