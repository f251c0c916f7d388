//! The `loadshift` binary against a real nats-server: what it publishes,
//! what it prints for a known log, and how it exits. Executors are played by
//! the test itself, publishing the events a real one would, so that each
//! outcome (completed, rolled back) can be asked for.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use loadshift_events::migration::{Reason, Requested, Step};
use loadshift_events::workload::Runtime;
use loadshift_events::Event;
use loadshift_testkit::fixtures::{self, Move, IMAGE_BYTES};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn workload_run_publishes_the_start_request_on_the_nodes_subject() {
    let h = Harness::new().await;
    let out = h
        .run(&[
            "workload",
            "run",
            "--node",
            "node2",
            "--name",
            "counter",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--requested-by",
            "alice",
            "--no-wait",
            "--",
            "sleep",
            "1000",
        ])
        .await;
    assert!(succeeded(&out).contains("requested workload counter on node2"));

    let events = h.events().await;
    assert_eq!(events.len(), 1);
    let (subject, env) = &events[0];
    assert_eq!(subject, "workload.node2.start_requested");
    assert_eq!(env.node.as_str(), "cli");
    let Event::WorkloadStartRequested(r) = &env.event else {
        panic!("not a start request: {env:?}");
    };
    assert_eq!(r.workload.as_str(), "counter");
    assert_eq!(r.node.as_str(), "node2");
    assert_eq!(r.requested_by, "alice");
    assert_eq!(r.spec.runtime, Runtime::Process);
    assert_eq!(r.spec.command, ["sleep", "1000"]);
    assert_eq!(r.spec.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(r.spec.env.get("B").map(String::as_str), Some("x=y"));

    // Options from the environment, the requester from $USER.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        h.cli()
            .args(["workload", "run", "--", "sleep", "5"])
            .env("LOADSHIFT_NODE", "node3")
            .env("LOADSHIFT_WORKLOAD", "web")
            .env("LOADSHIFT_RUNTIME", "docker")
            .env("LOADSHIFT_IMAGE", "web:1")
            .env("LOADSHIFT_CLI_NODE", "ops1")
            .env("LOADSHIFT_NO_WAIT", "true")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = h.events().await;
    let (subject, env) = &events[1];
    assert_eq!(subject, "workload.node3.start_requested");
    assert_eq!(env.node.as_str(), "ops1");
    let Event::WorkloadStartRequested(r) = &env.event else {
        panic!("not a start request: {env:?}");
    };
    assert_eq!(r.spec.runtime, Runtime::Docker);
    assert_eq!(r.spec.image.as_deref(), Some("web:1"));
    assert_eq!(r.requested_by, "tester");
}

#[tokio::test]
async fn workload_run_refuses_bad_input_with_exit_2() {
    let h = Harness::new().await;
    // The arguments after `workload run --node`, and what stderr must say.
    let cases = [
        (
            "a.b --name x -- true",
            "node name \"a.b\" may only hold letters, digits",
        ),
        (
            "node2 --name a/b -- true",
            "workload name \"a/b\" may only hold letters, digits",
        ),
        (
            "node2 --name x --runtime docker",
            "a docker workload needs an image",
        ),
        ("node2 --name x", "a process workload needs a command"),
        ("node2 --name x --env NOEQUAL -- true", "is not KEY=VALUE"),
        (
            "node2 --name x --wait --timeout soon -- true",
            "is not a duration",
        ),
    ];
    for (rest, message) in cases {
        let mut args = vec!["workload", "run", "--node"];
        args.extend(rest.split_whitespace());
        let out = h.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(message),
            "{args:?}: stderr lacks {message:?}"
        );
    }
    assert!(h.events().await.is_empty(), "bad input published something");
}

#[tokio::test]
async fn workload_run_wait_reports_the_nodes_answer() {
    let h = Harness::new().await;
    let child = h.run_waiting_on_node2("counter", &["sleep", "1000"]).await;
    h.publish(
        "node2",
        started("counter", Runtime::Process, Some(4242), None),
    )
    .await;
    let out = finished(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("started counter on node2 (pid 4242)"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn migrate_wait_prints_each_step_and_the_timings() {
    let h = Harness::new().await;
    let (child, r) = migrate_counter_waiting(&h, &["--reason", "maintenance"]).await;
    assert_eq!(r.workload.as_str(), "counter");
    assert_eq!((r.source.as_str(), r.target.as_str()), ("node2", "node3"));
    assert_eq!(r.requested_by, "tester");
    assert_eq!(r.reason.summary, "maintenance");
    assert_eq!(r.migration.get_version_num(), 7);

    // What the two executors would say.
    for e in moving(&r).went_through(Utc::now(), 77, timings()) {
        h.put(&e).await;
    }

    let out = finished(child).await;
    let text = stdout(&out);
    eprintln!("{text}\n{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text.lines().next(), Some(r.migration.to_string().as_str()));
    for expected in [
        "checkpointed",
        "restored",
        "counter node2→node3 runs on node3 (pid 77)",
        "completed",
        &format!("migration {} completed: counter runs on node3", r.migration),
        "timings (ms):",
        &format!("image size: {IMAGE_BYTES} bytes (48.0 MiB)"),
    ] {
        assert!(text.contains(expected), "stdout lacks {expected:?}");
    }
    for (name, ms) in [
        ("dump", "71.0"),
        ("upload", "12.0"),
        ("download", "9.0"),
        ("restore", "57.0"),
        ("cleanup", "3.0"),
        ("downtime", "149.0"),
        ("total", "160.0"),
    ] {
        assert!(
            text.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(name) && f.next() == Some(ms)
            }),
            "no timing line for {name} = {ms}"
        );
    }
    // Steps print in the order they happened.
    let pos = |s: &str| text.find(s).unwrap_or(usize::MAX);
    assert!(pos("checkpointed") < pos("restored") && pos("restored") < pos("timings"));
}

#[tokio::test]
async fn migrate_wait_exits_1_with_the_failed_step_when_rolled_back() {
    let h = Harness::new().await;
    let (child, r) = migrate_counter_waiting(&h, &[]).await;
    assert_eq!(r.reason.summary, "requested by tester");
    let m = moving(&r);
    h.put(&m.failed(Utc::now(), Step::Restore, "criu restore: File exists"))
        .await;
    h.put(&m.rolled_back(Utc::now(), Some(43))).await;
    let out = finished(child).await;
    let text = stdout(&out);
    eprintln!("{text}\n{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("failed at step restore: criu restore: File exists"));
    assert!(text.contains("rolled back"));
    assert!(text.contains("counter runs on node2 again"));

    // The fold now shows it back on node2, so a new request is accepted
    // and a request to where it already runs is refused.
    let out = h.run(&["migrate", "counter", "--to", "node2"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already runs on node2"));
}

#[tokio::test]
async fn migrate_refuses_unknown_and_already_migrating_workloads_with_exit_2() {
    let h = Harness::new().await;
    let out = h.run(&["migrate", "ghost", "--to", "node3"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("workload ghost is unknown"));

    h.publish(
        "node2",
        started("counter", Runtime::Process, Some(42), None),
    )
    .await;
    let first = h.run(&["migrate", "counter", "--to", "node3"]).await;
    assert_eq!(first.status.code(), Some(0));
    let id = stdout(&first).trim().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "not an id: {id:?}");
    let events = h.events().await;
    assert_eq!(events.last().unwrap().0, "migration.node2.requested");

    let second = h.run(&["migrate", "counter", "--to", "node3"]).await;
    assert_eq!(second.status.code(), Some(2));
    assert!(stderr(&second).contains("already migrating from node2 to node3"));
    assert!(stderr(&second).contains(&id));
    assert_eq!(
        h.events().await.len(),
        events.len(),
        "a refused request was published"
    );
}

/// A log with: two nodes, a workload moved node2→node3, one being moved
/// (no outcome yet), one that exited, one refused migration.
async fn known_log(h: &Harness) -> (uuid::Uuid, uuid::Uuid) {
    h.publish("node2", joined(2.0)).await;
    h.publish("node3", joined(4.0)).await;
    h.publish("node2", started("alpha", Runtime::Process, Some(11), None))
        .await;
    h.publish(
        "node2",
        started("beta", Runtime::Docker, None, Some("0123456789abcdef0123")),
    )
    .await;
    h.publish("node3", started("gamma", Runtime::Process, Some(33), None))
        .await;
    let asked = || Reason {
        summary: "node2 heads for overload".into(),
        ..Default::default()
    };
    let now = Utc::now();
    let moved = Move::new("alpha", "node2", "node3");
    h.put(&moved.requested(now, "brain", asked())).await;
    h.put(&moved.restored(now, 22, timings())).await;
    h.put(&moved.completed(now, timings())).await;
    let moving = Move::new("beta", "node2", "node3");
    h.put(&moving.requested(now, "brain", asked())).await;
    h.put(&fixtures::exited("node3", "gamma", now)).await;
    (moved.id, moving.id)
}

/// `counter` runs on node2 and `loadshift migrate counter --to node3 --wait`
/// (plus `extra`) runs; returns it and the request it published.
async fn migrate_counter_waiting(
    h: &Harness,
    extra: &[&str],
) -> (tokio::process::Child, Requested) {
    let mut sub = h.counter_on_node2().await;
    let mut args = vec![
        "migrate",
        "counter",
        "--to",
        "node3",
        "--wait",
        "--timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    let child = h.spawn(&args);
    let r = next_request(&mut sub).await;
    (child, r)
}

/// The CLI's output once it returns (at most 30 s).
/// The names of the migration `r` asks for, to answer it as executors would.
fn moving(r: &Requested) -> Move {
    Move::with_id(
        r.migration,
        r.workload.as_str(),
        r.source.as_str(),
        r.target.as_str(),
    )
}

fn row_of<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{text}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn workload_ls_prints_where_each_workload_runs() {
    let h = Harness::new().await;
    known_log(&h).await;
    // A message no build can read is skipped, with a warning.
    h.put_raw("workload.node2.started", "not json").await;
    let out = h.run(&["workload", "ls"]).await;
    let text = succeeded(&out);
    let header: Vec<_> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "NODE", "RUNTIME", "STATE", "SINCE", "PID/CONTAINER"]
    );
    let alpha = row_of(&text, "alpha");
    assert_eq!(
        [alpha[1], alpha[2], alpha[3], alpha[5]],
        ["node3", "process", "running", "22"]
    );
    let beta = row_of(&text, "beta");
    assert_eq!(
        [beta[1], beta[2], beta[3], beta[4], beta[6]],
        [
            "node2",
            "docker",
            "migrating",
            "node2→node3",
            "0123456789ab"
        ]
    );
    assert!(!text.contains("gamma"), "an exited workload is listed");
    assert_eq!(text.lines().count(), 3);
    assert!(stderr(&out).contains("unreadable event at seq"));

    let out = h.run(&["workload", "ls", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["name"], "alpha");
    assert_eq!(rows[0]["node"], "node3");
    assert_eq!(rows[1]["state"], "migrating node2→node3");
}

#[tokio::test]
async fn status_shows_nodes_workloads_and_migrations() {
    let h = Harness::new().await;
    let (moved, moving) = known_log(&h).await;
    // node3's executor answers pings; node2's does not run.
    let mut pings = h
        .client
        .subscribe(loadshift_events::liveness::ping_subject(
            &loadshift_events::NodeName::new("node3").unwrap(),
        ))
        .await
        .unwrap();
    let client = h.client.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(m) = pings.next().await {
            if let Some(reply) = m.reply {
                let body = serde_json::to_vec(&loadshift_events::liveness::Pong {
                    node: loadshift_events::NodeName::new("node3").unwrap(),
                    runtime: loadshift_events::workload::Runtime::Process,
                    capacity: loadshift_events::liveness::Capacity {
                        cores: 1.0,
                        memory_bytes: 1 << 30,
                    },
                })
                .unwrap();
                let _ = client.publish(reply, body.into()).await;
            }
        }
    });
    h.client.flush().await.unwrap();
    let out = h.run(&["status"]).await;
    let text = succeeded(&out);
    for section in [
        "NODES",
        "WORKLOADS",
        "MIGRATIONS IN FLIGHT",
        "LAST OUTCOMES",
    ] {
        assert!(text.lines().any(|l| l == section), "no {section} section");
    }
    let node2 = row_of(&text, "node2");
    assert_eq!([node2[1], node2[3]], ["joined", "2"]);
    assert!(node2[4..].join(" ") == "not running" || node2[4..].join(" ") == "no answer");
    let node3 = row_of(&text, "node3");
    assert_eq!(node3[4..].join(" "), "answers (process)");
    assert_eq!(row_of(&text, "alpha")[1], "node3");
    let in_flight = row_of(&text, &moving.to_string());
    assert_eq!(&in_flight[1..4], ["beta", "node2→node3", "requested"]);
    let done = row_of(&text, &moved.to_string());
    assert_eq!(
        &done[1..6],
        ["alpha", "node2→node3", "completed", "149", "ms"]
    );
}

#[tokio::test]
async fn events_tail_prints_one_line_per_event() {
    let h = Harness::new().await;
    known_log(&h).await;
    h.put_raw("node.node9.joined", "{\"broken\":").await;
    let mut child = h.spawn(&["events", "tail", "--from-start"]);
    // One event published while it follows.
    let client_js = h.js.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let env = loadshift_events::Envelope::new(n("node4"), joined(8.0));
        let _ = loadshift_events::connection::publish(&client_js, &env).await;
    });
    let lines = lines_until(&mut child, |l| l.iter().any(|l| l.contains("node4 joined"))).await;
    let text = lines.join("\n");
    eprintln!("{text}");
    assert_eq!(lines.len(), 12, "10 events, 1 unreadable, 1 live");
    let completed = lines
        .iter()
        .find(|l| l.contains("migration.node2.completed"))
        .expect("completed line");
    assert!(completed.contains("migration.completed"));
    assert!(completed.contains("alpha node2→node3 stream: downtime 149 ms"));
    assert!(lines[0].contains("node.node2.joined") && lines[0].contains("node.joined"));
    assert!(lines
        .iter()
        .any(|l| l
            .starts_with("unreadable event at seq 11 on node.node9.joined: malformed envelope")));
    assert!(text.contains("gamma exited on node3 with code 0"));

    // --subject filters, --json prints envelopes.
    let mut child = h.spawn(&[
        "events",
        "tail",
        "--from-start",
        "--json",
        "--subject",
        "migration.>",
    ]);
    let lines = lines_until(&mut child, |l| l.len() >= 4).await;
    assert_eq!(lines.len(), 4);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON envelope per line");
        assert!(v["kind"].as_str().unwrap().starts_with("migration."));
    }
}
