//! A real browser against the real binary: nats-server (testkit), the
//! `loadshift-webui` binary, a realistic event log published over NATS, and
//! headless Chromium loading each page. Asserts on what a person reads,
//! saves screenshots under `target/`, then follows a second migration as it
//! lands in the log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use loadshift_events::connection;
use loadshift_testkit::fixtures as fixture;
use loadshift_testkit::{browser, Killed, NatsServer};

fn http_get(port: u16, path: &str) -> Option<String> {
    let out = loadshift_testkit::http::get(port, path, Duration::from_secs(5))?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dom(url: &str) -> String {
    browser::dom(url)
}

fn screenshot(name: &str, url: &str) {
    browser::screenshot(
        url,
        &browser::target_dir().join(format!("webui-{name}.png")),
    );
}

// One long test on purpose: a person's visit, page after page, in the
// order they would click; split, each part would repeat the browser set-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reads_the_cluster_and_follows_a_migration() {
    let nats = NatsServer::start();
    let js = loadshift_testkit::client::declared(&nats.url(), "browser-test").await;
    let now = Utc::now();
    let mut cluster = fixture::cluster(now);
    for env in &mut cluster {
        // The active model (v2) gets a cut-off for node3's prediction to cross.
        if let loadshift_events::Event::ModelTrained(t) = &mut env.event {
            t.onset.cutoff = 0.62;
        }
    }
    for env in cluster.into_iter().chain(chart_story(now)) {
        connection::publish(&js, &env).await.unwrap();
    }

    let port = loadshift_testkit::nats::free_port();
    let _webui = Killed(
        Command::new(env!("CARGO_BIN_EXE_loadshift-webui"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--nats",
                &nats.url(),
            ])
            .env("LOADSHIFT_OPERATOR_TOKEN", "test-token")
            // The fixture's last samples are seconds old when the webui
            // starts; on a busy machine the pages below take longer than the
            // default 30 s to visit, and the nodes would read as silent. This
            // test is about what the pages show, not about the clock.
            .env("LOADSHIFT_SILENT_AFTER_SECS", "3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start loadshift-webui"),
    );
    wait_for("the webui to fold the log", || {
        http_get(port, "/api/migrations")
            .is_some_and(|b| b.contains("redis-cache") && b.contains("batch-job"))
    });
    let base = format!("http://127.0.0.1:{port}");

    let cluster = dom(&format!("{base}/"));
    let wanted = ["node1", "node2", "node3", "overload likely (91%)"];
    assert_shows("cluster", &cluster, &wanted);
    assert_shows("cluster", &cluster, &["redis-cache", "187 ms"]);
    // The cards' sparklines carry their time axes too.
    assert_shows(
        "cluster",
        &cluster,
        &[
            r#"<g class="axis">"#,
            r#"<text class="tick""#,
            "on each node's clock",
        ],
    );
    screenshot("cluster", &format!("{base}/"));

    let node = dom(&format!("{base}/nodes/node2?range=1h"));
    assert!(node.contains("Migrations into node2") && node.contains("redis-cache"));
    let hot = dom(&format!("{base}/nodes/node3"));
    assert!(
        hot.contains("Predicted overload onset probability")
            && hot.contains(r#"class="migration out""#),
        "node3's page lacks its prediction chart or the migration mark"
    );
    // The CPU chart's time axis, its move out and the cut-off crossings,
    // as the browser built them.
    assert_shows(
        "node3",
        &hot,
        &[
            r#"<g class="axis">"#,
            r#"<text class="tick""#,
            r#"<line class="crossing up""#,
            ">p↑</text>",
            ">out</text>",
            "Times are UTC on the node's clock",
        ],
    );
    screenshot("node", &format!("{base}/nodes/node3"));
    let v1 = dom(&format!("{base}/nodes/node4"));
    assert_shows(
        "node4",
        &v1,
        &[
            "Load average not drawn",
            "a cgroup v1 node has no pressure files",
        ],
    );
    assert!(
        !v1.contains("Pressure (PSI avg10"),
        "node4 has an empty PSI chart"
    );
    screenshot("node-cgroup-v1", &format!("{base}/nodes/node4"));
    let trace = dom(&format!("{base}/nodes/vm7?range=6h"));
    assert_shows(
        "vm7",
        &trace,
        &["own clock", "2013-08-01 07:25", r#"<path class="cpu""#],
    );
    screenshot("node-trace", &format!("{base}/nodes/vm7?range=6h"));

    let migrations = dom(&format!("{base}/migrations"));
    let moved = [
        "node3 heads for overload",
        "dump 71 ms",
        "187 ms",
        "48.0 MiB",
    ];
    assert_shows("migrations", &migrations, &moved);
    assert_shows(
        "migrations",
        &migrations,
        &["failed at restore", "rolled_back"],
    );
    screenshot("migrations", &format!("{base}/migrations"));

    let model = dom(&format!("{base}/model"));
    assert!(model.contains("Active: model v2") && model.contains("cpu_slope_5m"));
    assert!(
        model.contains("validation (where the choices were made)")
            && model.contains("the planner uses"),
        "the model page lacks validation beside test, or what the planner uses"
    );
    screenshot("model", &format!("{base}/model"));

    let events = dom(&format!("{base}/events?subject=migration.node3.%3E"));
    assert!(events.contains("nats stream get EVENTS") && events.contains("migration.completed"));
    screenshot("events", &format!("{base}/events"));

    let metrics = http_get(port, "/metrics").unwrap();
    assert!(metrics.contains("loadshift_webui_migrations_total{outcome=\"completed\"} 1"));
    assert!(metrics.contains("loadshift_webui_nodes{state=\"joined\"} 5"));

    // A second migration happens: the page shows it after a reload.
    let id = uuid::Uuid::now_v7();
    for env in fixture::migration_ok(
        id,
        "batch-job",
        "node1",
        "node3",
        Utc::now(),
        242.0,
        "second move: node1 is next",
    ) {
        connection::publish(&js, &env).await.unwrap();
    }
    wait_for("the second migration in the page", || {
        let page = dom(&format!("{base}/migrations"));
        page.contains("second move: node1 is next") && page.contains("242 ms")
    });
    let after = dom(&format!("{base}/nodes/node3"));
    assert!(after.contains("batch-job"), "batch-job now runs on node3");
    screenshot("migrations-after", &format!("{base}/migrations"));
}

/// What the node pages' charts must explain, beside the fixture cluster:
/// node3's prediction crossing the cut-off (0.62) down then up, a cgroup
/// v1 node (node4) without load or pressure, and a node replaying a 2013
/// trace (vm7).
fn chart_story(now: chrono::DateTime<Utc>) -> Vec<loadshift_events::Envelope> {
    let mut out = Vec::new();
    for (secs, p) in [(90, 0.4), (60, 0.91)] {
        out.push(fixture::predicted(
            "node3",
            now - chrono::Duration::seconds(secs),
            p,
            2,
        ));
    }
    out.extend(fixture::cgroup_v1_node("node4", now));
    out.extend(fixture::replayed_trace_node("vm7", now, 90));
    out
}

/// Fails naming the first of `wanted` that `page` (its DOM) lacks.
fn assert_shows(name: &str, page: &str, wanted: &[&str]) {
    for s in wanted {
        assert!(page.contains(s), "{name} page lacks {s:?}");
    }
}
