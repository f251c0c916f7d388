//! `/metrics` read by the real thing: Debian's `prometheus` package (set up
//! by scripts/setup). `promtool check metrics` lints the text the webui
//! serves, and a real Prometheus server scraping the real binary on
//! loopback ends up with every metric family in its database, read back
//! through its HTTP API as a dashboard or an alert rule would.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use loadshift_events::{connection, stream};
use loadshift_testkit::fixtures as fixture;
use loadshift_testkit::{Killed, NatsServer};

/// The body of `GET path` (HTTP/1.0, so that neither server chunks it).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then_some(())?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// Polls `f` until it gives a value; the deadline only bounds a hang.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metric names a family of `/metrics` text is stored under in
/// Prometheus (a histogram as its `_bucket`, `_sum` and `_count`).
fn series_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// Asks Prometheus's HTTP API; the `data` of a successful answer.
fn prometheus_api(port: u16, path: &str) -> Option<serde_json::Value> {
    let body = http_get(port, path)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// The value of the single sample an instant query returns.
fn instant(port: u16, query: &str) -> Option<f64> {
    let data = prometheus_api(port, &format!("/api/v1/query?query={query}"))?;
    let result = data["result"].as_array()?;
    let [one] = result.as_slice() else {
        return None;
    };
    one["value"][1].as_str()?.parse().ok()
}

/// Starts the webui on a free loopback port, reading `nats_url`.
fn start_webui(nats_url: &str) -> (Killed, u16) {
    let port = loadshift_testkit::nats::free_port();
    let webui = Killed::quiet(
        Command::new(env!("CARGO_BIN_EXE_loadshift-webui")).args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            nats_url,
        ]),
        "loadshift-webui",
    );
    (webui, port)
}

/// Runs `promtool check metrics` on `metrics`; panics with what it said
/// unless it said nothing and exited 0.
fn promtool_check(metrics: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a Prometheus server on a free loopback port that scrapes
/// `127.0.0.1:target_port` every second, its database in `dir`.
fn start_prometheus(dir: &std::path::Path, target_port: u16) -> (Killed, u16) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: loadshift-webui\n    static_configs:\n\
             \x20     - targets: ['127.0.0.1:{target_port}']\n"
        ),
    )
    .unwrap();
    let port = loadshift_testkit::nats::free_port();
    let prometheus = Killed::quiet(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        "prometheus (scripts/setup installs it)",
    );
    (prometheus, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_metrics_and_a_real_prometheus_scrapes_every_family() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    stream::declare(&js, &Default::default()).await.unwrap();
    for env in fixture::cluster(Utc::now()) {
        connection::publish(&js, &env).await.unwrap();
    }
    let (_webui, webui_port) = start_webui(&nats.url());
    // The fixture has one completed migration: once it is folded, every
    // family has a non-trivial value.
    let metrics = wait_for("the webui to fold the log", || {
        http_get(webui_port, "/metrics")
            .filter(|m| m.contains("loadshift_webui_migrations_total{outcome=\"completed\"} 1"))
    });

    // 1. promtool's linter, on exactly what a scraper gets.
    promtool_check(&metrics);

    // 2. A real server scraping the webui every second.
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, prom_port) = start_prometheus(dir.path(), webui_port);
    // The target is up once a scrape went through.
    let up = wait_for("Prometheus to scrape the webui", || {
        instant(prom_port, "up%7Bjob%3D%22loadshift-webui%22%7D").filter(|v| *v == 1.0)
    });
    assert_eq!(up, 1.0);
    let targets = prometheus_api(prom_port, "/api/v1/targets").expect("targets");
    let active = &targets["activeTargets"][0];
    assert_eq!(active["health"], "up", "{active}");
    assert_eq!(active["lastError"], "", "{active}");

    // Every family the webui serves is a series in Prometheus.
    let wanted = series_names(&metrics);
    assert!(wanted.len() >= 9, "families found: {wanted:?}");
    let names = wait_for("every family to be stored", || {
        let data = prometheus_api(prom_port, "/api/v1/label/__name__/values")?;
        let have: BTreeSet<String> = data
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        wanted.is_subset(&have).then_some(have)
    });
    assert!(names.contains("loadshift_webui_migration_downtime_seconds_bucket"));

    // And the values are the webui's: the fixture's one completed migration.
    assert_eq!(
        instant(
            prom_port,
            "loadshift_webui_migrations_total%7Boutcome%3D%22completed%22%7D"
        ),
        Some(1.0)
    );
    assert_eq!(
        instant(
            prom_port,
            "loadshift_webui_migration_downtime_seconds_count"
        ),
        Some(1.0)
    );
}
