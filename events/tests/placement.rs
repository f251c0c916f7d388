//! The placement fold's rules, given a log, when one more event, then what
//! the fold says: one test per rule, including the three the CLI, the
//! dashboard and the planner used to disagree on (an exit counts only from
//! the workload's node; a rollback keeps the workload and its pid on the
//! source; a late event never makes a migration in flight again).

use chrono::{DateTime, Duration, Utc};
use loadshift_events::migration::{Reason, Step, Timings};
use loadshift_events::placement::{Change, Placement, Status, WorkloadChange, WorkloadState};
use loadshift_events::Envelope;
use loadshift_testkit::fixtures::{
    exited, joined, node, started_as, timings, usage, workload, Move,
};

fn t(s: i64) -> DateTime<Utc> {
    "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
}

fn given(events: &[Envelope]) -> Placement {
    Placement::from_events(events)
}

fn asked() -> Reason {
    Reason {
        summary: "test".into(),
        ..Default::default()
    }
}

/// counter runs on node2 as pid 42, and `m` moves it to node3.
fn counter_moving(m: &Move) -> Vec<Envelope> {
    vec![
        started_as("node2", "counter", t(0), 42),
        m.requested(t(1), "alice", asked()),
    ]
}

fn moved(m: &Move) -> Vec<Envelope> {
    let mut log = counter_moving(m);
    log.push(m.checkpointed(t(2), Timings::default()));
    log.push(m.restored(t(3), 77, Timings::default()));
    log.push(m.completed(t(4), timings(150.0)));
    log
}

#[test]
fn started_puts_the_workload_on_the_emitting_node() {
    let mut p = given(&[]);
    let change = p.apply(&started_as("node2", "counter", t(0), 42));
    let w = &p.workloads[&workload("counter")];
    assert_eq!((w.node.as_str(), w.pid), ("node2", Some(42)));
    assert_eq!(w.state_label(), "running");
    assert_eq!(w.handle_label(), "42");
    assert_eq!(
        change.workload,
        Some(WorkloadChange::Started(workload("counter")))
    );
}

#[test]
fn a_request_marks_it_migrating_and_progress_is_recorded() {
    let m = Move::new("counter", "node2", "node3");
    let mut p = given(&counter_moving(&m));
    assert_eq!(
        p.workloads[&workload("counter")].state_label(),
        "migrating node2→node3"
    );
    assert_eq!(p.in_flight().count(), 1);
    assert!(p.busy(&node("node2")) && p.busy(&node("node3")));
    assert_eq!(p.migration(m.id).unwrap().progress_label(), "requested");
    p.apply(&m.checkpointed(t(2), Timings::default()));
    assert_eq!(p.migration(m.id).unwrap().progress_label(), "checkpointed");
    assert_eq!(
        p.migration(m.id).unwrap().requested_by.as_deref(),
        Some("alice")
    );
}

#[test]
fn a_completed_migration_moves_it_to_the_target_with_the_target_pid() {
    let m = Move::new("counter", "node2", "node3");
    let p = given(&moved(&m));
    let w = &p.workloads[&workload("counter")];
    assert_eq!((w.node.as_str(), w.pid), ("node3", Some(77)));
    assert_eq!(w.state, WorkloadState::Running);
    let done = p.migration(m.id).unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.timings.downtime_ms, Some(150.0));
    assert_eq!(done.outcome_label(), "completed");
    assert_eq!(p.in_flight().count(), 0);
    assert!(!p.busy(&node("node2")));
}

#[test]
fn the_event_that_finishes_a_migration_says_so_once() {
    let m = Move::new("counter", "node2", "node3");
    let mut log = moved(&m);
    let last = log.pop().unwrap();
    let mut p = given(&log);
    let first = p.apply(&last).migration.unwrap();
    assert!(first.finished_now());
    assert_eq!(first.after, Status::Completed);
    let before = p.clone();
    assert_eq!(p.apply(&last), Change::default(), "a duplicate is late");
    assert_eq!(p.workloads, before.workloads);
    assert_eq!(p.migrations, before.migrations);
}

#[test]
fn a_rollback_leaves_it_on_the_source_with_the_pid_it_reports() {
    let m = Move::new("counter", "node2", "node3");
    let mut log = counter_moving(&m);
    log.push(m.failed(t(2), Step::Restore, "criu said no"));
    let mut p = given(&log);
    assert_eq!(p.migration(m.id).unwrap().status, Status::Failed);
    assert_eq!(
        p.migration(m.id).unwrap().progress_label(),
        "failed at restore, rolling back"
    );
    p.apply(&m.rolled_back(t(3), Some(43)));
    let w = &p.workloads[&workload("counter")];
    assert_eq!((w.node.as_str(), w.pid), ("node2", Some(43)));
    assert_eq!(w.state, WorkloadState::Running);
    assert_eq!(
        p.migration(m.id).unwrap().outcome_label(),
        "rolled back (failed at restore: criu said no)"
    );
}

#[test]
fn a_rollback_without_a_pid_keeps_the_pid_it_had() {
    let m = Move::new("counter", "node2", "node3");
    let mut log = counter_moving(&m);
    log.push(m.failed(t(2), Step::Dump, "busy"));
    log.push(m.rolled_back(t(3), None));
    let w = &given(&log).workloads[&workload("counter")];
    assert_eq!((w.node.as_str(), w.pid), ("node2", Some(42)));
}

#[test]
fn a_refused_request_never_moved_it() {
    let m = Move::new("counter", "node2", "node3");
    let mut log = counter_moving(&m);
    log.push(m.failed(t(2), Step::Validate, "no such workload here"));
    let p = given(&log);
    assert_eq!(
        p.workloads[&workload("counter")].state,
        WorkloadState::Running
    );
    assert_eq!(p.migration(m.id).unwrap().status, Status::Refused);
    assert_eq!(
        p.migration(m.id).unwrap().outcome_label(),
        "refused: no such workload here"
    );
    assert_eq!(p.in_flight().count(), 0);
}

#[test]
fn an_exit_counts_only_from_the_node_the_workload_runs_on() {
    let mut p = given(&[
        started_as("node2", "a", t(0), 1),
        started_as("node2", "b", t(0), 2),
    ]);
    assert_eq!(p.apply(&exited("node3", "a", t(1))), Change::default());
    p.apply(&exited("node2", "b", t(1)));
    assert!(p.workloads.contains_key(&workload("a")));
    assert!(!p.workloads.contains_key(&workload("b")));
}

#[test]
fn an_exit_of_the_frozen_source_or_from_a_node_it_left_is_not_its_end() {
    let m = Move::new("counter", "node2", "node3");
    let mut p = given(&counter_moving(&m));
    p.apply(&m.checkpointed(t(2), Timings::default()));
    p.apply(&exited("node2", "counter", t(2)));
    assert_eq!(
        p.workloads[&workload("counter")].state_label(),
        "migrating node2→node3"
    );
    let mut p = given(&moved(&m));
    p.apply(&exited("node2", "counter", t(5)));
    assert_eq!(p.workloads[&workload("counter")].node, node("node3"));
    let change = p.apply(&exited("node3", "counter", t(6)));
    assert_eq!(
        change.workload,
        Some(WorkloadChange::Gone(workload("counter")))
    );
    assert!(p.workloads.is_empty());
}

#[test]
fn a_late_event_about_a_finished_migration_changes_nothing() {
    let m = Move::new("counter", "node2", "node3");
    let mut p = given(&moved(&m));
    let before = p.clone();
    for late in [
        m.requested(t(5), "alice", asked()),
        m.checkpointed(t(5), Timings::default()),
        m.failed(t(5), Step::Cleanup, "late"),
        m.rolled_back(t(5), Some(1)),
    ] {
        assert_eq!(p.apply(&late), Change::default());
    }
    assert_eq!(p.workloads, before.workloads);
    assert_eq!(p.migrations, before.migrations);
}

#[test]
fn a_late_event_about_a_forgotten_migration_is_not_in_flight_again() {
    let old = Move::new("counter", "node2", "node3");
    let mut p = Placement::new(1);
    for e in moved(&old) {
        p.apply(&e);
    }
    let next = Move::new("counter", "node3", "node2");
    p.apply(&next.requested(t(10), "alice", asked()));
    assert!(p.migration(old.id).is_none(), "forgotten to stay bounded");
    p.apply(&next.failed(t(11), Step::Dump, "busy"));
    p.apply(&next.rolled_back(t(12), None));
    // The old migration's events arrive again (a replayed tail).
    for late in [
        old.requested(t(13), "alice", asked()),
        old.restored(t(13), 9, Timings::default()),
    ] {
        assert_eq!(p.apply(&late), Change::default());
    }
    assert_eq!(p.in_flight().count(), 0);
    let w = &p.workloads[&workload("counter")];
    assert_eq!(
        (w.node.as_str(), &w.state),
        ("node3", &WorkloadState::Running)
    );
}

#[test]
fn the_oldest_finished_migration_is_forgotten_before_one_in_flight() {
    let running = Move::new("a", "node2", "node3");
    let done = Move::new("b", "node2", "node4");
    let mut p = Placement::new(2);
    p.apply(&running.requested(t(0), "alice", asked()));
    for e in [
        done.requested(t(1), "alice", asked()),
        done.failed(t(2), Step::Validate, "no"),
    ] {
        p.apply(&e);
    }
    let third = Move::new("c", "node4", "node5");
    p.apply(&third.requested(t(3), "alice", asked()));
    assert!(p.migration(running.id).is_some());
    assert!(p.migration(done.id).is_none());
    assert_eq!(p.in_flight().count(), 2);
}

#[test]
fn usage_places_a_workload_the_log_never_started_and_moves_none() {
    let mut p = given(&[started_as("node2", "known", t(0), 1)]);
    p.apply(&usage("node3", "unknown", t(1), 10.0));
    p.apply(&usage("node3", "known", t(1), 10.0));
    assert_eq!(p.workloads[&workload("unknown")].node, node("node3"));
    assert_eq!(p.workloads[&workload("known")].node, node("node2"));
}

#[test]
fn nodes_join_and_leave_and_outcomes_come_latest_first() {
    let a = Move::new("a", "node2", "node3");
    let b = Move::new("b", "node2", "node3");
    let mut log = vec![joined("node2", t(0)), joined("node3", t(0))];
    log.extend([
        a.requested(t(1), "alice", asked()),
        b.requested(t(2), "alice", asked()),
        b.failed(t(3), Step::Validate, "no"),
        a.failed(t(4), Step::Validate, "no"),
    ]);
    let p = given(&log);
    assert!(p.nodes[&node("node2")].joined);
    assert_eq!(p.nodes[&node("node3")].capacity_cores, Some(2.0));
    let ids: Vec<_> = p.recent_outcomes(5).iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
}
