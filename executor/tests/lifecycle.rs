//! A workload's life as an operator sees it, end to end: the real
//! `loadshift` binary against real executors, CRIU and nats-server. A stop
//! ends a workload that handles SIGTERM and kills one that ignores it after
//! the grace; its output reads whole across a migration; a start without
//! `--node` lands on the emptiest live node; a stop racing a migration ends
//! with one outcome, the workload stopped once, where the fence left it.

mod common;

use std::time::Duration;

use common::Cluster;
use loadshift_events::cordon::{DrainRequested, Uncordoned};
use loadshift_events::workload::{ExitReason, StopRequested};
use loadshift_events::{connection, Envelope, Event, NodeName, WorkloadName};
use loadshift_testkit::fixtures;

/// Ends at SIGTERM, saying so (and says when its handler is in place: a
/// SIGTERM before that is ignored, the init of a PID namespace having no
/// handler yet).
const POLITE: &[&str] = &[
    "sh",
    "-c",
    "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
];

/// Ignores SIGTERM.
const STUBBORN: &[&str] = &["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"];

/// Counts, one number a line, and ends at SIGTERM.
const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done",
];

/// The `workload.exited` events of `name`, with their emitter.
async fn exits(c: &Cluster, name: &str) -> Vec<(NodeName, ExitReason)> {
    c.events()
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Event::WorkloadExited(x) if x.workload.as_str() == name => Some((e.node, x.reason)),
            _ => None,
        })
        .collect()
}

/// Publishes a stop of `name` addressed to `node`, as the CLI would.
async fn ask_stop(c: &Cluster, name: &str, node: &str, grace_ms: u64) -> Envelope {
    let stop = StopRequested {
        workload: WorkloadName::new(name).unwrap(),
        node: NodeName::new(node).unwrap(),
        grace_ms,
        requested_by: "tester".into(),
        forwarded_by: None,
    };
    c.publish("cli", Event::WorkloadStopRequested(stop)).await
}

/// Waits (at most 60 s) until the file at `path` holds the line `line`.
async fn wait_for_line(path: &std::path::Path, line: &str) {
    for _ in 0..600 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never said {line:?}", path.display());
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_workload_at_sigterm_and_frees_its_name() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "polite", POLITE).await;
    let said = c.node("node2").workload_dir("polite").join("stdout");
    wait_for_line(&said, "ready").await;
    let out = c
        .loadshift(&["workload", "stop", "polite", "--grace", "60s", "--wait"])
        .await;
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout_of(&out).contains("polite stopped on node2"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(
        exits(&c, "polite").await,
        [(NodeName::new("node2").unwrap(), ExitReason::Stopped)]
    );
    assert!(c.copies_of("polite").is_empty(), "it still runs");
    // Its trap ran: it was asked, not killed.
    assert_eq!(std::fs::read_to_string(&said).unwrap(), "ready\nbye\n");
    // The name is free: another node may start a workload of that name.
    c.run_workload("node3", "polite", POLITE).await;
    // A stop, or the output, of a workload that does not run is bad input.
    for verb in ["stop", "logs"] {
        let out = c.loadshift(&["workload", verb, "nosuch"]).await;
        assert_eq!(out.status.code(), Some(2), "{verb}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch does not run"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_ignores_sigterm_is_killed_after_the_grace_and_cannot_be_moved_meanwhile() {
    let c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "stubborn", STUBBORN).await;
    let stop = ask_stop(&c, "stubborn", "node2", 4_000).await;
    // Published after the stop, applied after it: refused, nothing frozen.
    let id = c.migrate("stubborn", "node2", "node3").await;
    let refused = c.outcome(id).await;
    assert!(
        matches!(&refused.event, Event::MigrationFailed(f) if f.reason.contains("being stopped")),
        "{refused:?}"
    );
    let exited = c
        .wait_for(
            Duration::from_secs(60),
            |e| matches!(&e.event, Event::WorkloadExited(x) if x.workload.as_str() == "stubborn"),
        )
        .await;
    let Event::WorkloadExited(x) = &exited.event else {
        unreachable!()
    };
    assert_eq!(x.reason, ExitReason::KilledAfterGrace);
    assert_eq!(x.signal, Some(9));
    assert!(exited.occurred_at >= stop.occurred_at);
    assert!(c.copies_of("stubborn").is_empty(), "it still runs");
    // The log's placement forgot it.
    let out = c.loadshift(&["workload", "ls", "--json"]).await;
    assert!(!stdout_of(&out).contains("stubborn"), "{}", stdout_of(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_goes_on_after_its_executor_restarts() {
    let mut c = Cluster::new(&["node2"]).await;
    c.run_workload("node2", "stubborn", STUBBORN).await;
    ask_stop(&c, "stubborn", "node2", 3_000).await;
    // SIGTERM is sent once the stop is journaled; wait for that, then crash.
    let log = || c.nodes[0].log();
    for _ in 0..600 {
        if log().contains("stop signal sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.node("node2").restart();
    c.wait_ping("node2").await;
    let exited = c
        .wait_for(
            Duration::from_secs(60),
            |e| matches!(&e.event, Event::WorkloadExited(x) if x.workload.as_str() == "stubborn"),
        )
        .await;
    assert!(
        matches!(&exited.event, Event::WorkloadExited(x) if x.reason == ExitReason::KilledAfterGrace),
        "{exited:?}"
    );
    assert_eq!(exits(&c, "stubborn").await.len(), 1);
    assert!(c.copies_of("stubborn").is_empty(), "it still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_workload_across_a_migration_in_order_and_once() {
    let mut c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    c.run_workload("node2", "counter", COUNTER).await;
    common::logs::follow_across_a_move(&mut c, "counter").await;
    assert!(
        !c.node("node2").workload_dir("counter").exists(),
        "the source kept its output"
    );

    // Inspect tells where it ran and the move.
    let out = c.loadshift(&["workload", "inspect", "counter"]).await;
    let said = stdout_of(&out);
    assert!(said.contains("ran on   node2 → node3"), "{said}");
    assert!(
        said.contains("node2→node3") && said.contains("completed"),
        "{said}"
    );
}

/// `n` announces itself with one recent sample at `cpu` percent, as its
/// agent would.
async fn agent_says(c: &Cluster, n: &str, seq: u64, cpu: f32) {
    let now = chrono::Utc::now();
    for env in [fixtures::joined(n, now), fixtures::sample(n, now, seq, cpu)] {
        connection::publish(&c.js, &env).await.expect("publish");
    }
}

/// Where the start request of `name` went.
async fn asked_node(c: &Cluster, name: &str) -> String {
    let e: Envelope = c
        .wait_for(
            Duration::from_secs(5),
            |e| matches!(&e.event, Event::WorkloadStartRequested(r) if r.workload.as_str() == name),
        )
        .await;
    match e.event {
        Event::WorkloadStartRequested(r) => r.node.to_string(),
        _ => unreachable!(),
    }
}

/// `loadshift workload run` of a sleeper named `name`, without `--node`.
async fn run_anywhere(c: &Cluster, name: &str, tag: &str) -> std::process::Output {
    c.loadshift(&[
        "workload", "run", "--name", name, "--env", tag, "--", "sleep", "1000",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_a_node_lands_on_the_emptiest_live_node() {
    let c = Cluster::new(&["node2", "node3"]).await;
    let tag = format!("LOADSHIFT_TEST_TAG={}", c.tag());
    // node9 joined once but has no executor: never chosen, however idle.
    agent_says(&c, "node9", 1, 0.0).await;
    agent_says(&c, "node2", 1, 80.0).await;
    agent_says(&c, "node3", 1, 5.0).await;
    let out = run_anywhere(&c, "first", &tag).await;
    assert!(out.status.success());
    assert!(
        stdout_of(&out).contains("placing first on node3"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(asked_node(&c, "first").await, "node3");
    // The load turns: the rule follows it.
    agent_says(&c, "node3", 2, 95.0).await;
    agent_says(&c, "node2", 2, 10.0).await;
    let out = run_anywhere(&c, "second", &tag).await;
    assert!(out.status.success());
    assert_eq!(asked_node(&c, "second").await, "node2");
}

/// Starts `racer` on node2, asks node3 to take it and node2 to stop it,
/// back to back: node2 applies the stop while the workload is frozen for
/// the migration (it dumps before it reads the next event) and holds it
/// until the migration's outcome. Checks the one outcome: one clean stop,
/// from `holder` (where the fence left it), the request handed on to the
/// target only when it moved there, no copy left; and `inspect` tells it.
async fn race_a_stop_with_a_migration(c: &Cluster, holder: &str) {
    let id = c.migrate("racer", "node2", "node3").await;
    ask_stop(c, "racer", "node2", 60_000).await;
    let outcome = c.outcome(id).await;
    let held_by = match &outcome.event {
        Event::MigrationCompleted(_) => "node3",
        Event::MigrationRolledBack(_) => "node2",
        other => panic!("migration ended as {other:?}"),
    };
    assert_eq!(held_by, holder, "{}", c.logs());
    c.wait_for(
        Duration::from_secs(60),
        |e| matches!(&e.event, Event::WorkloadExited(x) if x.workload.as_str() == "racer"),
    )
    .await;
    assert_eq!(
        exits(c, "racer").await,
        [(NodeName::new(holder).unwrap(), ExitReason::Stopped)]
    );
    let forwarded = c.events().await.into_iter().any(|e| {
        e.node.as_str() == "node2"
            && matches!(&e.event, Event::WorkloadStopRequested(r) if r.node.as_str() == "node3")
    });
    assert_eq!(forwarded, holder == "node3");
    assert!(c.copies_of("racer").is_empty(), "a copy still runs");
    let out = c
        .loadshift(&["workload", "inspect", "racer", "--json"])
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
    assert!(doc["now"].is_null(), "{doc}");
    assert_eq!(doc["migrations"].as_array().map(Vec::len), Some(1), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_racing_a_migration_that_completes_is_carried_out_by_the_target() {
    let mut c = Cluster::with_cgroups(&["node2", "node3"], true).await;
    c.run_workload("node2", "racer", COUNTER).await;
    wait_for_line(&c.node("node2").workload_dir("racer").join("stdout"), "0").await;
    race_a_stop_with_a_migration(&c, "node3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_racing_a_migration_that_rolls_back_is_carried_out_by_the_source() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "racer", COUNTER).await;
    wait_for_line(&c.node("node2").workload_dir("racer").join("stdout"), "0").await;
    // node2 damages its image on the way: node3 refuses it, node2 resumes.
    c.arm_fault("node2", loadshift_executor::fault::CORRUPT_IMAGE)
        .await;
    race_a_stop_with_a_migration(&c, "node2").await;
}

/// Publishes `event` about node `node`'s drain as an operator's tool would,
/// straight onto the stream (no CLI check on the way).
fn drain_event(node: &str, drain: bool) -> Event {
    let node = NodeName::new(node).unwrap();
    if drain {
        Event::NodeDrainRequested(DrainRequested {
            node,
            requested_by: "test".into(),
            reason: "maintenance".into(),
        })
    } else {
        Event::NodeUncordoned(Uncordoned {
            node,
            requested_by: "test".into(),
        })
    }
}

/// The executor of a draining node refuses, itself, what the CLI and the
/// brain would not have sent: a start and a migration published straight
/// onto the stream. The migration's source resumes the workload; once the
/// node is uncordoned both go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_refuses_starts_and_migrations_that_bypass_the_cli() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    c.run_workload("node2", "mover", COUNTER).await;
    c.publish("test", drain_event("node3", true)).await;

    let e = c
        .start_workload("node3", "newcomer", c.process_spec(COUNTER))
        .await;
    assert!(
        matches!(&e.event, Event::WorkloadStartFailed(f) if f.reason.contains("node node3 is draining")),
        "{e:?}"
    );
    assert!(c.copies_of("newcomer").is_empty(), "it started anyway");

    let id = c.migrate("mover", "node2", "node3").await;
    c.rolled_back(id).await;
    let failed = c
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.event {
            Event::MigrationFailed(f) if f.migration == id => Some((e.node, f)),
            _ => None,
        })
        .expect("a failed event");
    assert_eq!(failed.0.as_str(), "node3", "{failed:?}");
    assert!(failed.1.reason.contains("maintenance"), "{failed:?}");
    common::assert_runs_once_on(&mut c, "mover", "node2").await;

    c.publish("test", drain_event("node3", false)).await;
    c.completed(c.migrate("mover", "node2", "node3").await)
        .await;
    // (Another name: waiting for `newcomer` would find its refusal.)
    c.run_workload("node3", "latecomer", COUNTER).await;
}
