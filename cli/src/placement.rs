//! Where each workload runs now, which nodes have been seen and which
//! migrations are in flight, as a fold of the EVENTS stream.
//!
//! The log, not any executor's memory, says where a workload runs; this fold
//! is how the CLI reads it. It is pure ([`apply`] changes state from one
//! envelope and does nothing else), so `workload ls`, `migrate` and `status`
//! agree, and the rules are tested on hand-built event sequences.
//!
//! The rules:
//! - `workload.started` puts the workload on the emitting node;
//! - `workload.exited` from the node it runs on removes it (an exit reported
//!   by another node, or while it migrates, is not about this placement);
//! - `migration.requested` for a workload running on the source marks it
//!   migrating; `checkpointed`, `restored` and a `failed` before a rollback
//!   keep it so;
//! - `migration.completed` puts it on the target, `migration.rolled_back`
//!   back on the source, and `migration.failed` at step `validate` (which has
//!   no rollback: nothing was frozen) leaves it running on the source.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use loadshift_events::migration::{Step, Timings};
use loadshift_events::workload::Runtime;
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use uuid::Uuid;

/// How many finished migrations the fold remembers (status shows the last 5).
pub const OUTCOMES_KEPT: usize = 50;

/// The fold's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Workloads that run (or are being moved), by name.
    pub workloads: BTreeMap<WorkloadName, Workload>,
    /// Nodes that announced themselves (`node.joined` / `node.left`).
    pub nodes: BTreeMap<NodeName, NodeSeen>,
    /// Migrations with no outcome yet, by id.
    pub in_flight: BTreeMap<Uuid, Migration>,
    /// Finished migrations, oldest first, at most [`OUTCOMES_KEPT`].
    pub outcomes: VecDeque<Migration>,
    /// Events applied.
    pub applied: u64,
}

/// One workload's placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Its name.
    pub name: WorkloadName,
    /// Where it runs (the source, while it migrates).
    pub node: NodeName,
    /// Process or container, when an event said so.
    pub runtime: Option<Runtime>,
    /// Running, or being moved.
    pub state: WorkloadState,
    /// When it entered that state.
    pub since: DateTime<Utc>,
    /// Its pid, for a process.
    pub pid: Option<u32>,
    /// Its container id, for docker.
    pub container_id: Option<String>,
}

/// What a workload is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadState {
    /// It runs on its node.
    Running,
    /// A migration to `target` has no outcome yet.
    Migrating {
        /// The migration.
        migration: Uuid,
        /// Where it goes.
        target: NodeName,
    },
}

impl Workload {
    /// `running` or `migrating node2→node3`, for tables.
    pub fn state_label(&self) -> String {
        match &self.state {
            WorkloadState::Running => "running".to_string(),
            WorkloadState::Migrating { target, .. } => format!("migrating {}→{target}", self.node),
        }
    }

    /// The pid or (short) container id, or `-`.
    pub fn handle_label(&self) -> String {
        match (&self.pid, &self.container_id) {
            (_, Some(c)) => c.chars().take(12).collect(),
            (Some(p), None) => p.to_string(),
            (None, None) => "-".to_string(),
        }
    }
}

/// A node's last life-cycle event.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    /// Whether it joined last, or left.
    pub joined: bool,
    /// When.
    pub since: DateTime<Utc>,
    /// The CPU capacity it declared when it joined.
    pub capacity_cores: Option<f32>,
}

/// How far a migration got.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Asked for; the source has not answered yet.
    Requested,
    /// The source dumped and stored it.
    Checkpointed,
    /// The target runs it; the source cleans up.
    Restored,
    /// A step failed; the source rolls back.
    Failed {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
}

/// How a migration ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The workload runs on the target.
    Completed,
    /// The workload runs on the source again after a failure.
    RolledBack {
        /// The step that failed, when the `failed` event was seen.
        step: Option<Step>,
        /// Why, when the `failed` event was seen.
        reason: Option<String>,
    },
    /// The request was refused at validation; nothing moved.
    Refused {
        /// Why.
        reason: String,
    },
}

/// One migration as the log tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Its id.
    pub id: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// From.
    pub source: NodeName,
    /// To.
    pub target: NodeName,
    /// Who asked, when the request was seen.
    pub requested_by: Option<String>,
    /// The last step seen.
    pub progress: Progress,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// When the last event about it happened.
    pub updated_at: DateTime<Utc>,
    /// The image size, once known.
    pub image_bytes: Option<u64>,
    /// The latest timings reported.
    pub timings: Timings,
    /// The workload's runtime, from the checkpoint's spec.
    runtime: Option<Runtime>,
    /// Where it runs on the target, from `restored`.
    target_pid: Option<u32>,
    target_container: Option<String>,
}

impl Migration {
    fn new(
        id: Uuid,
        workload: &WorkloadName,
        source: &NodeName,
        target: &NodeName,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            workload: workload.clone(),
            source: source.clone(),
            target: target.clone(),
            requested_by: None,
            progress: Progress::Requested,
            outcome: None,
            updated_at: at,
            image_bytes: None,
            timings: Timings::default(),
            runtime: None,
            target_pid: None,
            target_container: None,
        }
    }

    /// `requested`, `checkpointed`, `restored`, `failed at dump`, for tables.
    pub fn progress_label(&self) -> String {
        match &self.progress {
            Progress::Requested => "requested".into(),
            Progress::Checkpointed => "checkpointed".into(),
            Progress::Restored => "restored".into(),
            Progress::Failed { step, .. } => format!("failed at {step}, rolling back"),
        }
    }

    /// `completed`, `rolled back (restore: why)`, `refused: why`, for tables.
    pub fn outcome_label(&self) -> String {
        match &self.outcome {
            None => self.progress_label(),
            Some(Outcome::Completed) => "completed".into(),
            Some(Outcome::RolledBack { step, reason }) => match (step, reason) {
                (Some(s), Some(r)) => format!("rolled back (failed at {s}: {r})"),
                _ => "rolled back".into(),
            },
            Some(Outcome::Refused { reason }) => format!("refused: {reason}"),
        }
    }
}

impl Placement {
    /// The fold of `events`, in order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut p = Self::default();
        for e in events {
            apply(&mut p, e);
        }
        p
    }

    /// The migration `id`, in flight or finished.
    pub fn migration(&self, id: Uuid) -> Option<&Migration> {
        self.in_flight
            .get(&id)
            .or_else(|| self.outcomes.iter().rev().find(|m| m.id == id))
    }

    fn migration_entry(
        &mut self,
        id: Uuid,
        workload: &WorkloadName,
        source: &NodeName,
        target: &NodeName,
        at: DateTime<Utc>,
    ) -> Option<&mut Migration> {
        if self.outcomes.iter().any(|m| m.id == id) {
            // A late or duplicated event about a finished migration.
            return None;
        }
        let m = self
            .in_flight
            .entry(id)
            .or_insert_with(|| Migration::new(id, workload, source, target, at));
        m.updated_at = at;
        Some(m)
    }

    fn finish(&mut self, id: Uuid, outcome: Outcome) {
        if let Some(mut m) = self.in_flight.remove(&id) {
            m.outcome = Some(outcome);
            self.outcomes.push_back(m);
            while self.outcomes.len() > OUTCOMES_KEPT {
                self.outcomes.pop_front();
            }
        }
    }
}

/// Applies one event. Kinds that say nothing about placement (telemetry,
/// start requests and failures, model events) only count as applied.
pub fn apply(p: &mut Placement, env: &Envelope) {
    p.applied += 1;
    let at = env.occurred_at;
    match &env.event {
        Event::NodeJoined(j) => {
            p.nodes.insert(
                env.node.clone(),
                NodeSeen {
                    joined: true,
                    since: at,
                    capacity_cores: Some(j.capacity_cores),
                },
            );
        }
        Event::NodeLeft(_) => {
            let capacity_cores = p.nodes.get(&env.node).and_then(|n| n.capacity_cores);
            p.nodes.insert(
                env.node.clone(),
                NodeSeen {
                    joined: false,
                    since: at,
                    capacity_cores,
                },
            );
        }
        Event::WorkloadStarted(s) => {
            p.workloads.insert(
                s.workload.clone(),
                Workload {
                    name: s.workload.clone(),
                    node: env.node.clone(),
                    runtime: Some(s.spec.runtime),
                    state: WorkloadState::Running,
                    since: at,
                    pid: s.pid,
                    container_id: s.container_id.clone(),
                },
            );
        }
        Event::WorkloadExited(x) => {
            let here = p
                .workloads
                .get(&x.workload)
                .is_some_and(|w| w.node == env.node && matches!(w.state, WorkloadState::Running));
            if here {
                p.workloads.remove(&x.workload);
            }
        }
        Event::MigrationRequested(r) => {
            if let Some(m) = p.migration_entry(r.migration, &r.workload, &r.source, &r.target, at) {
                m.requested_by = Some(r.requested_by.clone());
            }
            if p.migration(r.migration)
                .is_some_and(|m| m.outcome.is_none())
            {
                if let Some(w) = p.workloads.get_mut(&r.workload) {
                    if w.node == r.source && w.state == WorkloadState::Running {
                        w.state = WorkloadState::Migrating {
                            migration: r.migration,
                            target: r.target.clone(),
                        };
                        w.since = at;
                    }
                }
            }
        }
        Event::MigrationCheckpointed(c) => {
            if let Some(m) = p.migration_entry(c.migration, &c.workload, &c.source, &c.target, at) {
                m.progress = Progress::Checkpointed;
                m.image_bytes = Some(c.image_bytes);
                m.timings = c.timings;
                m.runtime = Some(c.spec.runtime);
            }
        }
        Event::MigrationRestored(r) => {
            if let Some(m) = p.migration_entry(r.migration, &r.workload, &r.source, &r.target, at) {
                m.progress = Progress::Restored;
                m.image_bytes = Some(r.image_bytes);
                m.timings = r.timings;
                m.target_pid = r.pid;
                m.target_container = r.container_id.clone();
            }
        }
        Event::MigrationCompleted(c) => {
            let (runtime, pid, container) = match p.in_flight.get(&c.migration) {
                Some(m) => (m.runtime, m.target_pid, m.target_container.clone()),
                None => (None, None, None),
            };
            if let Some(m) = p.migration_entry(c.migration, &c.workload, &c.source, &c.target, at) {
                m.image_bytes = Some(c.image_bytes);
                m.timings = c.timings;
            }
            p.finish(c.migration, Outcome::Completed);
            let entry = p
                .workloads
                .entry(c.workload.clone())
                .or_insert_with(|| Workload {
                    name: c.workload.clone(),
                    node: c.target.clone(),
                    runtime,
                    state: WorkloadState::Running,
                    since: at,
                    pid: None,
                    container_id: None,
                });
            let moved_by_this = match &entry.state {
                WorkloadState::Migrating { migration, .. } => *migration == c.migration,
                WorkloadState::Running => entry.node == c.source,
            };
            if moved_by_this {
                entry.node = c.target.clone();
                entry.state = WorkloadState::Running;
                entry.since = at;
                entry.runtime = entry.runtime.or(runtime);
                entry.pid = pid;
                entry.container_id = container;
            }
        }
        Event::MigrationFailed(f) => {
            let step = f.step;
            if let Some(m) = p.migration_entry(f.migration, &f.workload, &f.source, &f.target, at) {
                m.progress = Progress::Failed {
                    step,
                    reason: f.reason.clone(),
                };
            }
            if step == Step::Validate {
                p.finish(
                    f.migration,
                    Outcome::Refused {
                        reason: f.reason.clone(),
                    },
                );
                back_on_source(p, f.migration, None, at);
            }
        }
        Event::MigrationRolledBack(r) => {
            let (step, reason) = match p.in_flight.get(&r.migration).map(|m| &m.progress) {
                Some(Progress::Failed { step, reason }) => (Some(*step), Some(reason.clone())),
                _ => (None, None),
            };
            p.migration_entry(r.migration, &r.workload, &r.source, &r.target, at);
            p.finish(r.migration, Outcome::RolledBack { step, reason });
            back_on_source(p, r.migration, r.pid, at);
        }
        _ => {}
    }
}

/// The workload migrating under `migration` runs on its source again.
fn back_on_source(p: &mut Placement, migration: Uuid, pid: Option<u32>, at: DateTime<Utc>) {
    for w in p.workloads.values_mut() {
        if matches!(&w.state, WorkloadState::Migrating { migration: m, .. } if *m == migration) {
            w.state = WorkloadState::Running;
            w.since = at;
            if pid.is_some() {
                w.pid = pid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::migration::{
        Checkpointed, Completed, Failed, Reason, Requested, Restored, RolledBack,
    };
    use loadshift_events::payload::{NodeJoined, NodeLeft};
    use loadshift_events::workload::{Exited, Started, WorkloadSpec};

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }
    fn w(s: &str) -> WorkloadName {
        WorkloadName::new(s).unwrap()
    }
    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            runtime: Runtime::Process,
            command: vec!["sleep".into(), "100".into()],
            image: None,
            env: Default::default(),
        }
    }
    fn env(node: &str, event: Event) -> Envelope {
        Envelope::new(n(node), event)
    }
    fn started(node: &str, name: &str, pid: u32) -> Envelope {
        env(
            node,
            Event::WorkloadStarted(Started {
                workload: w(name),
                spec: spec(),
                pid: Some(pid),
                container_id: None,
            }),
        )
    }
    fn requested(id: Uuid, name: &str, from: &str, to: &str) -> Envelope {
        env(
            "cli",
            Event::MigrationRequested(Requested {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                requested_by: "alice".into(),
                reason: Reason {
                    summary: "test".into(),
                    ..Default::default()
                },
            }),
        )
    }
    fn checkpointed(id: Uuid, name: &str, from: &str, to: &str) -> Envelope {
        env(
            from,
            Event::MigrationCheckpointed(Checkpointed {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                spec: spec(),
                object: "obj".into(),
                sha256: "00".into(),
                image_bytes: 4096,
                timings: Timings {
                    dump_ms: Some(70.0),
                    ..Default::default()
                },
                frozen_at_ms: 0,
            }),
        )
    }
    fn restored(id: Uuid, name: &str, from: &str, to: &str, pid: u32) -> Envelope {
        env(
            to,
            Event::MigrationRestored(Restored {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                pid: Some(pid),
                container_id: None,
                image_bytes: 4096,
                timings: Timings::default(),
            }),
        )
    }
    fn completed(id: Uuid, name: &str, from: &str, to: &str) -> Envelope {
        env(
            from,
            Event::MigrationCompleted(Completed {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                image_bytes: 4096,
                timings: Timings {
                    downtime_ms: Some(150.0),
                    ..Default::default()
                },
            }),
        )
    }
    fn failed(id: Uuid, name: &str, from: &str, to: &str, step: Step) -> Envelope {
        env(
            to,
            Event::MigrationFailed(Failed {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                step,
                reason: "criu said no".into(),
            }),
        )
    }
    fn rolled_back(id: Uuid, name: &str, from: &str, to: &str, pid: u32) -> Envelope {
        env(
            from,
            Event::MigrationRolledBack(RolledBack {
                migration: id,
                workload: w(name),
                source: n(from),
                target: n(to),
                pid: Some(pid),
            }),
        )
    }
    fn exited(node: &str, name: &str) -> Envelope {
        env(
            node,
            Event::WorkloadExited(Exited {
                workload: w(name),
                code: Some(0),
                signal: None,
            }),
        )
    }

    #[test]
    fn started_puts_the_workload_on_the_emitting_node() {
        let p = Placement::from_events(&[started("node2", "counter", 42)]);
        let wl = &p.workloads[&w("counter")];
        assert_eq!(wl.node, n("node2"));
        assert_eq!(wl.state, WorkloadState::Running);
        assert_eq!(wl.runtime, Some(Runtime::Process));
        assert_eq!(wl.handle_label(), "42");
        assert_eq!(wl.state_label(), "running");
    }

    #[test]
    fn a_completed_migration_moves_it_to_the_target() {
        let id = Uuid::now_v7();
        let events = [
            started("node2", "counter", 42),
            requested(id, "counter", "node2", "node3"),
            checkpointed(id, "counter", "node2", "node3"),
            restored(id, "counter", "node2", "node3", 77),
            completed(id, "counter", "node2", "node3"),
        ];
        let p = Placement::from_events(&events);
        let wl = &p.workloads[&w("counter")];
        assert_eq!(wl.node, n("node3"));
        assert_eq!(wl.state, WorkloadState::Running);
        assert_eq!(wl.pid, Some(77));
        assert!(p.in_flight.is_empty());
        let m = p.migration(id).unwrap();
        assert_eq!(m.outcome, Some(Outcome::Completed));
        assert_eq!(m.timings.downtime_ms, Some(150.0));
        assert_eq!(m.requested_by.as_deref(), Some("alice"));
        // A duplicate of the last event changes nothing.
        let mut again = p.clone();
        apply(&mut again, &events[4]);
        assert_eq!(again.workloads, p.workloads);
        assert_eq!(again.outcomes, p.outcomes);
    }

    #[test]
    fn a_rollback_leaves_it_on_the_source_with_the_failure() {
        let id = Uuid::now_v7();
        let p = Placement::from_events(&[
            started("node2", "counter", 42),
            requested(id, "counter", "node2", "node3"),
            checkpointed(id, "counter", "node2", "node3"),
            failed(id, "counter", "node2", "node3", Step::Restore),
            rolled_back(id, "counter", "node2", "node3", 43),
        ]);
        let wl = &p.workloads[&w("counter")];
        assert_eq!(wl.node, n("node2"));
        assert_eq!(wl.state, WorkloadState::Running);
        assert_eq!(wl.pid, Some(43));
        let m = p.migration(id).unwrap();
        assert_eq!(
            m.outcome,
            Some(Outcome::RolledBack {
                step: Some(Step::Restore),
                reason: Some("criu said no".into())
            })
        );
        assert_eq!(
            m.outcome_label(),
            "rolled back (failed at restore: criu said no)"
        );
    }

    #[test]
    fn a_refused_request_never_moved_it() {
        let id = Uuid::now_v7();
        let p = Placement::from_events(&[
            started("node2", "counter", 42),
            requested(id, "counter", "node2", "node3"),
            failed(id, "counter", "node2", "node3", Step::Validate),
        ]);
        assert_eq!(p.workloads[&w("counter")].state, WorkloadState::Running);
        assert!(p.in_flight.is_empty());
        assert!(matches!(
            p.migration(id).unwrap().outcome,
            Some(Outcome::Refused { .. })
        ));
    }

    #[test]
    fn exited_removes_it_only_from_its_own_node() {
        let p = Placement::from_events(&[
            started("node2", "a", 1),
            started("node2", "b", 2),
            exited("node3", "a"),
            exited("node2", "b"),
        ]);
        assert!(p.workloads.contains_key(&w("a")));
        assert!(!p.workloads.contains_key(&w("b")));
    }

    #[test]
    fn a_request_without_outcome_shows_it_migrating() {
        let id = Uuid::now_v7();
        let mut p = Placement::from_events(&[
            started("node2", "counter", 42),
            requested(id, "counter", "node2", "node3"),
        ]);
        let wl = &p.workloads[&w("counter")];
        assert_eq!(wl.state_label(), "migrating node2→node3");
        assert_eq!(p.in_flight[&id].progress_label(), "requested");
        apply(&mut p, &checkpointed(id, "counter", "node2", "node3"));
        apply(&mut p, &exited("node2", "counter"));
        // The source's dumped process is not an exit of the workload.
        assert_eq!(
            p.workloads[&w("counter")].state_label(),
            "migrating node2→node3"
        );
        assert_eq!(p.in_flight[&id].progress_label(), "checkpointed");
        assert_eq!(p.in_flight[&id].image_bytes, Some(4096));
    }

    #[test]
    fn nodes_join_and_leave() {
        let p = Placement::from_events(&[
            env(
                "node2",
                Event::NodeJoined(NodeJoined {
                    source: "host".into(),
                    capacity_cores: 2.0,
                    memory_bytes: 0,
                    agent_version: "0.1.0".into(),
                }),
            ),
            env(
                "node3",
                Event::NodeJoined(NodeJoined {
                    source: "host".into(),
                    capacity_cores: 4.0,
                    memory_bytes: 0,
                    agent_version: "0.1.0".into(),
                }),
            ),
            env(
                "node3",
                Event::NodeLeft(NodeLeft {
                    reason: "SIGTERM".into(),
                    samples: 3,
                }),
            ),
        ]);
        assert!(p.nodes[&n("node2")].joined);
        assert!(!p.nodes[&n("node3")].joined);
        assert_eq!(p.nodes[&n("node3")].capacity_cores, Some(4.0));
    }
}
