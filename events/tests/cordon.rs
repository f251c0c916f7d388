//! Draining a node, as the placement fold reads it: given a log, when one
//! more event, then what the fold says about the drain. The CLI, the
//! dashboard and the brain all read these answers.

use chrono::{DateTime, Duration, Utc};
use loadshift_events::cordon::DRAIN_ATTEMPTS;
use loadshift_events::migration::{Reason, Step, Timings};
use loadshift_events::placement::Placement;
use loadshift_events::Envelope;
use loadshift_testkit::fixtures::{
    drain_blocked, drain_requested, exited, joined, node, started, uncordoned, workload, Move,
};

fn t(s: i64) -> DateTime<Utc> {
    "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
}

/// node2 and node3 joined; a, b and c run on node2; node2 is draining.
fn draining() -> Vec<Envelope> {
    vec![
        joined("node2", t(0)),
        joined("node3", t(0)),
        started("node2", "a", t(1)),
        started("node2", "b", t(1)),
        started("node2", "c", t(1)),
        drain_requested("node2", "alice", t(2)),
    ]
}

#[test]
fn a_draining_node_is_not_placeable_until_uncordoned() {
    let mut p = Placement::from_events(&draining());
    assert!(p.is_draining(&node("node2")));
    assert_eq!(p.placeable_nodes(), vec![&node("node3")]);
    let d = &p.draining[&node("node2")];
    assert_eq!((d.requested_by.as_str(), d.since), ("alice", t(2)));
    p.apply(&uncordoned("node2", "alice", t(3)));
    assert!(!p.is_draining(&node("node2")));
    assert_eq!(p.placeable_nodes(), vec![&node("node2"), &node("node3")]);
    assert!(p.drain_progress(&node("node2")).is_none());
}

#[test]
fn progress_counts_what_is_left_and_what_is_moving_until_the_node_is_empty() {
    let mut p = Placement::from_events(&draining());
    let moves: Vec<Move> = ["a", "b", "c"]
        .iter()
        .map(|w| Move::new(w, "node2", "node3"))
        .collect();
    p.apply(&moves[0].requested(t(3), "brain", Reason::default()));
    let d = p.drain_progress(&node("node2")).unwrap();
    assert_eq!(d.remaining.len(), 3);
    assert_eq!(d.moving, vec![workload("a")]);
    assert!(!d.is_empty() && !d.is_stuck());
    p.apply(&moves[0].completed(t(4), Timings::default()));
    p.apply(&exited("node2", "b", t(5)));
    let d = p.drain_progress(&node("node2")).unwrap();
    assert_eq!(d.remaining, vec![workload("c")]);
    p.apply(&moves[2].requested(t(6), "brain", Reason::default()));
    p.apply(&moves[2].completed(t(7), Timings::default()));
    let d = p.drain_progress(&node("node2")).unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert!(p.is_draining(&node("node2")), "empty is still cordoned");
}

#[test]
fn what_the_brain_says_cannot_move_is_stuck_until_it_leaves_the_node() {
    let mut p = Placement::from_events(&draining());
    for w in ["a", "b", "c"] {
        p.apply(&drain_blocked("node2", w, "node3 has no room", t(3)));
    }
    // A report about a workload that is not on the node says nothing.
    p.apply(&drain_blocked("node2", "ghost", "?", t(3)));
    let d = p.drain_progress(&node("node2")).unwrap();
    assert!(d.is_stuck());
    assert_eq!(d.stuck().len(), 3);
    assert_eq!(d.stuck()[&workload("a")], "node3 has no room");
    // Room appeared: a moves after all and is no longer listed.
    let m = Move::new("a", "node2", "node3");
    p.apply(&m.requested(t(4), "brain", Reason::default()));
    assert!(!p.drain_progress(&node("node2")).unwrap().is_stuck());
    p.apply(&m.completed(t(5), Timings::default()));
    let d = p.drain_progress(&node("node2")).unwrap();
    assert_eq!(d.remaining.len(), 2);
    assert!(!d.stuck().contains_key(&workload("a")));
    assert!(d.is_stuck());
}

#[test]
fn a_workload_whose_migration_fails_twice_is_given_up_and_a_new_drain_retries_it() {
    let mut p = Placement::from_events(&draining());
    for i in 0..DRAIN_ATTEMPTS as i64 {
        let m = Move::new("a", "node2", "node3");
        p.apply(&m.requested(t(3 + i * 3), "brain", Reason::default()));
        p.apply(&m.failed(t(4 + i * 3), Step::Restore, "criu said no"));
        let d = &p.draining[&node("node2")];
        assert!(
            !d.gave_up(&workload("a")),
            "a failure alone is not an outcome"
        );
        p.apply(&m.rolled_back(t(5 + i * 3), None));
    }
    let d = p.drain_progress(&node("node2")).unwrap();
    assert!(d.drain.gave_up(&workload("a")));
    let why = &d.stuck()[&workload("a")];
    assert!(
        why.contains("failed 2 times") && why.contains("criu said no"),
        "{why}"
    );
    // Asking again starts afresh.
    p.apply(&drain_requested("node2", "bob", t(20)));
    let d = &p.draining[&node("node2")];
    assert!(!d.gave_up(&workload("a")));
    assert_eq!(d.requested_by, "bob");
}

#[test]
fn a_failed_migration_off_a_node_that_is_not_draining_counts_for_nothing() {
    let mut log = draining();
    log.pop();
    let mut p = Placement::from_events(&log);
    let m = Move::new("a", "node2", "node3");
    p.apply(&m.requested(t(3), "brain", Reason::default()));
    p.apply(&m.failed(t(4), Step::Validate, "no"));
    p.apply(&drain_requested("node2", "alice", t(5)));
    assert!(p.draining[&node("node2")].failures.is_empty());
}

#[test]
fn drain_events_name_the_drained_node_in_their_subject() {
    for (env, subject) in [
        (
            drain_requested("node2", "alice", t(0)),
            "node.node2.drain_requested",
        ),
        (uncordoned("node2", "alice", t(0)), "node.node2.uncordoned"),
        (
            drain_blocked("node2", "a", "why", t(0)),
            "node.node2.drain_blocked",
        ),
    ] {
        assert_eq!(env.subject(), subject);
        let bytes = env.to_json().unwrap();
        assert_eq!(Envelope::from_message(subject, &bytes).unwrap(), env);
        // The emitter's subject is not the drained node's.
        assert!(Envelope::from_message(&subject.replace("node2", "cli"), &bytes).is_err());
    }
}
