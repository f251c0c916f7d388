//! What an operator sees: the `loadshift` binary against a real nats-server
//! prints its answer on stdout and nothing on stderr when all is well (no
//! NATS client chatter, no colour codes in a pipe), `-v` brings the log
//! lines back, `--json` gives the same facts as the tables, and
//! `events tail` says what a model event means.

mod common;

use common::*;
use loadshift_events::model::Predicted;
use loadshift_events::workload::Runtime;
use loadshift_events::Event;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small log: two nodes, one workload on node2.
async fn some_history(h: &Harness) {
    h.publish("node2", joined(2.0)).await;
    h.publish("node3", joined(4.0)).await;
    h.publish(
        "node2",
        started("counter", Runtime::Process, Some(4242), None),
    )
    .await;
}

/// Runs the binary as an operator would: without the harness's RUST_LOG,
/// so that the command's own default decides what reaches stderr.
async fn run_plain(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut cmd = h.cli();
    cmd.env_remove("RUST_LOG").env_remove("NO_COLOR");
    common::finish(cmd, args).await
}

/// A harness with [`some_history`] in the log, and what `loadshift args`
/// answered there, run as an operator would; it must have succeeded.
async fn after_some_history(args: &[&str]) -> (Harness, std::process::Output) {
    let h = Harness::new().await;
    some_history(&h).await;
    let out = run_plain(&h, args).await;
    assert_eq!(out.status.code(), Some(0));
    (h, out)
}

#[tokio::test]
async fn status_and_workload_ls_print_only_their_answer() {
    let (h, out) = after_some_history(&["status"]).await;
    assert!(stdout(&out).contains("counter"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "", "status wrote to stderr");

    let out = run_plain(&h, &["workload", "ls"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("node2"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "", "workload ls wrote to stderr");
}

#[tokio::test]
async fn verbose_brings_the_logs_back_without_colour_in_a_pipe() {
    let (_h, out) = after_some_history(&["status", "-v"]).await;
    let err = stderr(&out);
    assert!(
        err.contains("INFO"),
        "-v shows info lines on stderr: {err:?}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "stderr is a pipe here, so no escape codes: {err:?}"
    );
    // The answer stays alone on stdout.
    assert!(!stdout(&out).contains("INFO"));
}

#[tokio::test]
async fn status_json_has_the_facts_of_the_tables() {
    let (h, out) = after_some_history(&["status", "--json"]).await;
    assert_eq!(stderr(&out), "");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json prints one JSON value");
    let nodes = v["nodes"].as_array().expect("nodes");
    let names: Vec<_> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["node2", "node3"]);
    assert_eq!(nodes[1]["capacity_cores"], 4.0);
    assert_eq!(nodes[0]["state"], "joined");
    // Nobody plays node2's executor in this test.
    assert_eq!(nodes[0]["executor"]["state"], "not_running");
    let workloads = v["workloads"].as_array().expect("workloads");
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0]["name"], "counter");
    assert_eq!(workloads[0]["node"], "node2");
    assert_eq!(workloads[0]["pid"], 4242);
    assert_eq!(v["in_flight"], serde_json::json!([]));
    assert_eq!(v["outcomes"], serde_json::json!([]));

    // A finished migration: an outcome with its timings, as numbers.
    let id = uuid::Uuid::now_v7();
    h.publish(
        "cli",
        Event::MigrationRequested(loadshift_events::migration::Requested {
            migration: id,
            workload: w("counter"),
            source: n("node2"),
            target: n("node3"),
            requested_by: "tester".into(),
            reason: Default::default(),
            mode: loadshift_events::migration::Mode::Auto,
        }),
    )
    .await;
    h.publish(
        "node2",
        Event::MigrationCompleted(loadshift_events::migration::Completed {
            migration: id,
            workload: w("counter"),
            source: n("node2"),
            target: n("node3"),
            image_bytes: 4096,
            timings: timings(),
            mode: None,
            fallback: None,
        }),
    )
    .await;
    let out = run_plain(&h, &["status", "--json"]).await;
    assert_eq!(stderr(&out), "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["workloads"][0]["node"], "node3");
    let done = &v["outcomes"][0];
    assert_eq!(done["id"], id.to_string().as_str());
    assert_eq!(done["status"], "completed");
    assert_eq!(done["timings"]["downtime_ms"], 149.0);
    assert_eq!(done["image_bytes"], 4096);
}

#[tokio::test]
async fn events_tail_says_what_a_prediction_means() {
    let h = Harness::new().await;
    h.publish(
        "brain",
        Event::NodePredicted(Predicted {
            node: n("node3"),
            at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            onset: 0.81,
            sustained: 0.12,
            model_version: 3,
        }),
    )
    .await;
    let mut child = h.spawn(&["events", "tail", "--from-start"]);
    let lines = lines_until(&mut child, |l| !l.is_empty()).await;
    let line = lines.first().expect("tail printed the prediction");
    assert!(
        line.contains("node.predicted")
            && line.contains("node3 onset 0.81 sustained 0.12 (model v3"),
        "{line}"
    );
}

#[tokio::test]
async fn events_streams_lists_what_the_server_keeps_and_tail_reads_telemetry() {
    let h = Harness::new().await;
    some_history(&h).await;
    let sample: loadshift_events::telemetry::Sample = serde_json::from_str(
        r#"{"at":"2026-11-25T08:30:00Z","seq":7,"cpu":{"usage_pct":42.5,"capacity_cores":2.0,"per_core_pct":[]},"memory":{"used_bytes":1048576,"total_bytes":2097152}}"#,
    )
    .expect("a sample");
    h.publish("node2", Event::TelemetrySample(sample)).await;

    let out = run_plain(&h, &["events", "streams", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let by_name = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {rows}"))
            .clone()
    };
    assert_eq!(by_name("EVENTS")["messages"], 3);
    assert_eq!(by_name("TELEMETRY")["messages"], 1);
    let table = stdout(&run_plain(&h, &["events", "streams"]).await);
    assert!(table.starts_with("STREAM"), "{table}");
    assert!(table.contains("TELEMETRY"), "{table}");

    // `nats sub 'telemetry.node2'`, the loadshift way.
    let mut child = h.spawn(&[
        "events",
        "tail",
        "--subject",
        "telemetry.node2",
        "--from-start",
    ]);
    let lines = lines_until(&mut child, |l| !l.is_empty()).await;
    let line = lines.first().expect("tail printed the sample");
    assert!(
        line.contains("telemetry.node2") && line.contains("cpu 42.5% of 2 cores"),
        "{line}"
    );
}

/// Runs `loadshift status -v` on a pseudo-terminal (util-linux's `script`),
/// with NO_COLOR set to `no_color`; what the terminal showed.
async fn status_on_a_terminal(h: &Harness, no_color: Option<&str>) -> String {
    let command = format!("{} status -v", env!("CARGO_BIN_EXE_loadshift"));
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("LOADSHIFT_NATS", h.server.url())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("script did not finish within 60 s")
        .expect("run script (util-linux)");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    stdout(&out)
}

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let h = Harness::new().await;
    some_history(&h).await;
    let coloured = status_on_a_terminal(&h, None).await;
    assert!(
        coloured.contains("INFO") && coloured.contains('\u{1b}'),
        "a terminal gets coloured log lines: {coloured:?}"
    );
    let plain = status_on_a_terminal(&h, Some("1")).await;
    assert!(
        plain.contains("INFO") && !plain.contains('\u{1b}'),
        "NO_COLOR=1 turns colour off: {plain:?}"
    );
}

#[tokio::test]
async fn migrate_wait_json_prints_the_request_then_each_event_as_stored() {
    use loadshift_events::migration::{Completed, Restored};
    let h = Harness::new().await;
    let mut sub = h.counter_on_node2().await;
    let mut cmd = h.cli();
    cmd.env_remove("RUST_LOG")
        .args(["migrate", "counter", "--to", "node3", "--wait", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start loadshift");
    let r = next_request(&mut sub).await;
    // What the two executors would say (the checkpoint step left out: the
    // CLI prints what comes, it does not insist on every step).
    h.publish(
        "node3",
        Event::MigrationRestored(Restored {
            migration: r.migration,
            workload: r.workload.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            pid: Some(77),
            container_id: None,
            image_bytes: 4096,
            timings: timings(),
        }),
    )
    .await;
    h.publish(
        "node2",
        Event::MigrationCompleted(Completed {
            migration: r.migration,
            workload: r.workload.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            image_bytes: 4096,
            timings: timings(),
            mode: None,
            fallback: None,
        }),
    )
    .await;
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the CLI did not return")
        .unwrap();
    eprintln!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let id = r.migration.to_string();
    assert_eq!(lines[0]["migration"], id.as_str());
    assert_eq!(lines[0]["source"], "node2");
    assert_eq!(lines[0]["target"], "node3");
    let kinds: Vec<_> = lines[1..].iter().map(|l| l["kind"].clone()).collect();
    // The request is the first line; the events after it follow as stored.
    assert_eq!(kinds, ["migration.restored", "migration.completed"]);
    let last = lines.last().unwrap();
    assert_eq!(last["payload"]["migration"], id.as_str());
    assert_eq!(last["payload"]["timings"]["downtime_ms"], 149.0);
}
