//! The planner's drain rules: emptying a node an operator cordoned
//! (`node.<n>.drain_requested`, folded by the contract's placement fold).
//!
//! Kept apart from the load-driven rules of [`super::Planner::handle`]: a
//! drain is an operator's order, not a prediction, so it ignores the
//! overload streak and the workload cooldown, but it chooses each target
//! exactly as a load-driven move does ([`super::Planner::target`]: the
//! lowest load after the move, under the threshold, with room for the
//! workload's memory, never a node predicted to overload, silent, without
//! executor or itself draining). The rules, in order, per draining node:
//! 1. A workload whose migration off the node failed
//!    [`DRAIN_ATTEMPTS`] times is given up and reported
//!    (`node.<n>.drain_blocked`) until the drain is asked again.
//! 2. At most [`DRAIN_IN_FLIGHT`] migrations off the node at once, and none
//!    while a node that just received one of them has not reported a sample
//!    since (its load would be read without the workload it just got).
//! 3. The smallest workload first (by resident memory, then name): the
//!    quick moves empty most of the node soonest.
//! 4. No target fits: reported with the reason, once per reason, and only
//!    when nothing is moving off the node (a target busy with our own move
//!    is not a reason). The brain keeps trying; room that appears is used.
//!
//! [`Planner::drain`] returns one decision per call: the service applies it
//! before asking again, so two moves never choose the same target from the
//! same stale view.

use chrono::{DateTime, Utc};
use loadshift_events::cordon::{Drain, DrainBlocked, DRAIN_ATTEMPTS};
use loadshift_events::migration::{Mode, Reason, Requested};
use loadshift_events::placement::{Status, WorkloadState};
use loadshift_events::{NodeName, WorkloadName};
use uuid::Uuid;

use super::{within, Planner, Use};

/// Migrations off one draining node at once: enough to use two targets
/// together, few enough that the source's executor (which freezes and dumps
/// each) and the network are not swamped.
pub const DRAIN_IN_FLIGHT: usize = 2;

/// What the drain rules decided.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainDecision {
    /// Move a workload off a draining node: publish as
    /// `migration.<source>.requested`.
    Migrate(Requested),
    /// Say what cannot move and why: publish as `node.<n>.drain_blocked`.
    Blocked(DrainBlocked),
}

impl Planner {
    /// The next thing to do about the draining nodes, if any: one decision
    /// per call, which the caller publishes and applies before asking again.
    pub fn drain(&self, now: DateTime<Utc>) -> Option<DrainDecision> {
        self.placement
            .draining
            .iter()
            .find_map(|(node, drain)| self.drain_node(node, drain, now))
    }

    fn drain_node(
        &self,
        node: &NodeName,
        drain: &Drain,
        now: DateTime<Utc>,
    ) -> Option<DrainDecision> {
        let waiting = self.waiting_on(node);
        let blocked = |w: &WorkloadName, reason: String| {
            (drain.blocked.get(w) != Some(&reason)).then(|| {
                DrainDecision::Blocked(DrainBlocked {
                    node: node.clone(),
                    workload: w.clone(),
                    reason,
                })
            })
        };
        if let Some(d) = waiting
            .iter()
            .filter(|(w, _)| drain.gave_up(w))
            .find_map(|(w, _)| blocked(w, gave_up_reason(drain, w)))
        {
            return Some(d);
        }
        let moving = self
            .placement
            .in_flight()
            .filter(|m| &m.source == node)
            .count();
        if moving >= DRAIN_IN_FLIGHT || self.settling(now) {
            return None;
        }
        let source_has_executor = self
            .nodes
            .get(node)
            .is_some_and(|n| within(n.executor_seen, now, self.config.silent_after));
        let mut reports = Vec::new();
        for (w, used) in waiting.iter().filter(|(w, _)| !drain.gave_up(w)) {
            if !source_has_executor {
                reports.push((
                    w,
                    format!("no executor on {node} reports: nothing can checkpoint it"),
                ));
                continue;
            }
            match self.target(node, *used, now) {
                Ok((target, after)) => {
                    return Some(DrainDecision::Migrate(
                        self.drain_request(node, drain, w, *used, target, after),
                    ))
                }
                Err(detail) => reports.push((w, format!("no target: {detail}"))),
            }
        }
        if moving > 0 {
            return None;
        }
        reports.into_iter().find_map(|(w, why)| blocked(w, why))
    }

    /// The workloads running on `node` (not already moving), smallest
    /// first, with their last reported use (none reported: counted as
    /// using nothing, so an unmeasured workload can still leave).
    fn waiting_on(&self, node: &NodeName) -> Vec<(WorkloadName, Use)> {
        let mut v: Vec<(WorkloadName, Use)> = self
            .placement
            .workloads
            .values()
            .filter(|w| &w.node == node && w.state == WorkloadState::Running)
            .map(|w| {
                (
                    w.name.clone(),
                    self.usage.get(&w.name).copied().unwrap_or_default(),
                )
            })
            .collect();
        v.sort_by(|a, b| {
            a.1.rss_bytes
                .cmp(&b.1.rss_bytes)
                .then_with(|| a.0.cmp(&b.0))
        });
        v
    }

    /// Whether a node that received a workload from a draining node has
    /// not reported a sample since: its load, read now, would leave out
    /// what it just took.
    fn settling(&self, now: DateTime<Utc>) -> bool {
        self.placement.migrations.values().any(|m| {
            m.status == Status::Completed
                && self.placement.is_draining(&m.source)
                && m.finished_at.is_some_and(|done| {
                    within(Some(done), now, self.config.silent_after)
                        && self
                            .nodes
                            .get(&m.target)
                            .is_some_and(|t| t.seen_at.is_none_or(|seen| seen <= done))
                })
        })
    }

    fn drain_request(
        &self,
        node: &NodeName,
        drain: &Drain,
        w: &WorkloadName,
        used: Use,
        target: &NodeName,
        after: f32,
    ) -> Requested {
        Requested {
            migration: Uuid::now_v7(),
            workload: w.clone(),
            source: node.clone(),
            target: target.clone(),
            requested_by: self.config.requested_by.clone(),
            reason: Reason {
                summary: format!(
                    "draining {node} (asked by {}); moving {w} ({:.0}% of a core, {} MiB) to {target}",
                    drain.requested_by,
                    used.cpu_pct,
                    used.rss_bytes >> 20
                ),
                target_load_after_pct: Some(after),
                ..Default::default()
            },
            // The source picks how the memory travels, as for any move.
            mode: Mode::Auto,
        }
    }
}

fn gave_up_reason(drain: &Drain, w: &WorkloadName) -> String {
    format!(
        "its migration failed {DRAIN_ATTEMPTS} times during this drain (last: {}); drain again to retry",
        drain.last_failure(w).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Decision, Fact, PlannerConfig};
    use chrono::Duration;
    use loadshift_events::migration::{Step, Timings};
    use loadshift_events::model::{WorkloadUsage, WorkloadUse};
    use loadshift_events::{Envelope, Event};
    use loadshift_testkit::fixtures::{self, Move};

    fn now() -> DateTime<Utc> {
        "2026-11-29T10:00:00Z".parse().unwrap()
    }
    fn n(s: &str) -> NodeName {
        fixtures::node(s)
    }
    fn log(env: Envelope) -> Fact {
        Fact::Logged(Box::new(env))
    }

    /// A node with `cpu` percent of two cores busy and `free` bytes of
    /// memory left, seen at `at`, whose executor reports `workloads`
    /// (name, CPU % of a core, RSS).
    fn node_at(
        name: &str,
        cpu: f32,
        free: u64,
        at: DateTime<Utc>,
        workloads: &[(&str, f32, u64)],
    ) -> Vec<Fact> {
        let report = WorkloadUsage {
            at,
            workloads: workloads
                .iter()
                // From JSON, as it travels: fields added later (with their
                // defaults) do not break the fixture.
                .map(|(w, cpu_pct, rss_bytes)| {
                    serde_json::from_value::<WorkloadUse>(serde_json::json!({
                        "workload": w, "cpu_pct": cpu_pct, "rss_bytes": rss_bytes,
                    }))
                    .expect("a usage report")
                })
                .collect(),
        };
        let mut facts = vec![Fact::NodeJoined {
            node: n(name),
            memory_bytes: 8 << 30,
        }];
        facts.extend(
            workloads
                .iter()
                .map(|(w, _, _)| log(fixtures::started(name, w, at))),
        );
        facts.push(Fact::Sample {
            node: n(name),
            seen_at: at,
            cpu_pct: cpu,
            capacity_cores: 2.0,
            memory_used: (8 << 30) - free,
            memory_total: 8 << 30,
        });
        facts.push(log(fixtures::at(
            Envelope::new(n(name), Event::WorkloadUsage(report)),
            at,
        )));
        facts
    }

    /// node2 runs big, mid and tiny and is being drained; node3 is idle,
    /// node4 half busy; each has 4 GiB free.
    fn draining_node2() -> Vec<Fact> {
        let mut f = node_at(
            "node2",
            60.0,
            4 << 30,
            now(),
            &[
                ("big", 30.0, 1 << 30),
                ("mid", 20.0, 256 << 20),
                ("tiny", 10.0, 16 << 20),
            ],
        );
        f.extend(node_at("node3", 10.0, 4 << 30, now(), &[]));
        f.extend(node_at("node4", 50.0, 4 << 30, now(), &[]));
        f.push(log(fixtures::drain_requested("node2", "alice", now())));
        f
    }

    /// node2 runs `workloads` and drains; node3, the only other node, has
    /// `free` bytes of memory left.
    fn one_drains_to_one(workloads: &[(&str, f32, u64)], free: u64) -> Vec<Fact> {
        let mut facts = node_at("node2", 60.0, 4 << 30, now(), workloads);
        facts.extend(node_at("node3", 10.0, free, now(), &[]));
        facts.push(log(fixtures::drain_requested("node2", "alice", now())));
        facts
    }

    fn given(facts: &[Fact]) -> Planner {
        let mut p = Planner::new(PlannerConfig::default());
        for f in facts {
            p.apply(f);
        }
        p
    }

    /// Applies a decided request as the service does, and returns it.
    fn decided(p: &mut Planner) -> Requested {
        let Some(DrainDecision::Migrate(r)) = p.drain(now()) else {
            panic!("expected a migration, got {:?}", p.drain(now()))
        };
        p.apply(&Fact::requested(&r, now()));
        r
    }

    fn blocked(p: &Planner) -> DrainBlocked {
        match p.drain(now()) {
            Some(DrainDecision::Blocked(b)) => b,
            other => panic!("expected a report of what cannot move, got {other:?}"),
        }
    }

    #[test]
    fn the_smallest_workloads_leave_first_for_the_emptiest_nodes_a_bounded_number_at_a_time() {
        let mut p = given(&draining_node2());
        let first = decided(&mut p);
        assert_eq!(
            (first.workload.as_str(), first.target.as_str()),
            ("tiny", "node3")
        );
        assert_eq!(first.requested_by, "brain");
        assert!(
            first
                .reason
                .summary
                .contains("draining node2 (asked by alice)"),
            "{}",
            first.reason.summary
        );
        let second = decided(&mut p);
        assert_eq!(
            (second.workload.as_str(), second.target.as_str()),
            ("mid", "node4"),
            "node3 is busy with tiny"
        );
        assert_eq!(p.drain(now()), None, "{DRAIN_IN_FLIGHT} in flight: wait");
    }

    #[test]
    fn a_move_that_lands_waits_for_its_target_to_report_and_leaves_no_cooldown() {
        let mut p = given(&draining_node2());
        let landed = now() + Duration::seconds(2);
        let both = [decided(&mut p), decided(&mut p)];
        for r in both {
            let m = Move::with_id(r.migration, r.workload.as_str(), "node2", r.target.as_str());
            p.apply(&log(m.completed(landed, Timings::default())));
        }
        assert_eq!(
            p.drain(now()),
            None,
            "node3 and node4 have not reported since their workload landed"
        );
        let later = now() + Duration::seconds(3);
        for f in node_at("node3", 15.0, 4 << 30, later, &[("tiny", 10.0, 16 << 20)]) {
            p.apply(&f);
        }
        for f in node_at("node4", 60.0, 3 << 30, later, &[("mid", 20.0, 256 << 20)]) {
            p.apply(&f);
        }
        let Some(DrainDecision::Migrate(last)) = p.drain(later) else {
            panic!("big should leave now")
        };
        assert_eq!(
            (last.workload.as_str(), last.target.as_str()),
            ("big", "node3"),
            "no node cooldown after a drain move"
        );
    }

    #[test]
    fn a_draining_node_is_never_a_target_until_uncordoned() {
        // node3 is idle but draining; node2 heads for overload.
        let mut facts = node_at("node2", 85.0, 4 << 30, now(), &[("hot", 60.0, 64 << 20)]);
        facts.extend(node_at("node3", 5.0, 4 << 30, now(), &[]));
        facts.extend(node_at("node4", 50.0, 4 << 30, now(), &[]));
        facts.push(log(fixtures::drain_requested("node3", "alice", now())));
        let trouble = Fact::Prediction {
            node: n("node2"),
            onset: 0.9,
            sustained: 0.0,
            alarm: true,
            model_version: 1,
            top_features: vec![],
        };
        facts.extend(std::iter::repeat_n(trouble, 3));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a move")
        };
        assert_eq!(r.target, n("node4"), "node3 is emptier but draining");
        facts.push(log(fixtures::uncordoned("node3", "alice", now())));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a move")
        };
        assert_eq!(r.target, n("node3"), "uncordoned: a target again");
        assert_eq!(given(&facts).drain(now()), None, "nothing drains");
    }

    #[test]
    fn no_target_with_room_is_reported_once_with_the_reason() {
        let facts = one_drains_to_one(&[("big", 30.0, 3 << 30)], 1 << 30);
        let mut p = given(&facts);
        let b = blocked(&p);
        assert_eq!(b.workload.as_str(), "big");
        assert_eq!(b.reason, "no target: node3 has no room for its memory");
        // The report comes back from the log: said once.
        p.apply(&log(fixtures::at(
            Envelope::new(n("brain"), Event::NodeDrainBlocked(b)),
            now(),
        )));
        assert_eq!(p.drain(now()), None);
        assert!(p
            .placement()
            .drain_progress(&n("node2"))
            .unwrap()
            .is_stuck());
    }

    #[test]
    fn a_workload_whose_migration_failed_twice_is_given_up_and_reported() {
        let facts = one_drains_to_one(&[("flaky", 30.0, 64 << 20)], 4 << 30);
        let mut p = given(&facts);
        for _ in 0..DRAIN_ATTEMPTS {
            let r = decided(&mut p);
            let m = Move::with_id(r.migration, "flaky", "node2", "node3");
            p.apply(&log(m.failed(now(), Step::Restore, "criu restore failed")));
            p.apply(&log(m.rolled_back(now(), None)));
        }
        let b = blocked(&p);
        assert!(
            b.reason.contains("failed 2 times") && b.reason.contains("criu restore failed"),
            "{}",
            b.reason
        );
    }

    #[test]
    fn a_source_without_executor_reports_why_nothing_can_leave() {
        let facts = one_drains_to_one(&[("a", 30.0, 64 << 20)], 4 << 30);
        let later = now() + Duration::seconds(60);
        let mut p = given(&facts);
        p.apply(&Fact::Sample {
            node: n("node3"),
            seen_at: later,
            cpu_pct: 10.0,
            capacity_cores: 2.0,
            memory_used: 1 << 30,
            memory_total: 8 << 30,
        });
        let Some(DrainDecision::Blocked(b)) = p.drain(later) else {
            panic!()
        };
        assert!(b.reason.contains("no executor on node2"), "{}", b.reason);
    }
}
