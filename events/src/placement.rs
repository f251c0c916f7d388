//! Where each workload runs, which migrations are in flight and how the
//! finished ones ended: the one fold of the log that every reader of
//! placement shares.
//!
//! The log, not any executor's memory, says where a workload runs. The CLI
//! reads this fold as it is, the dashboard wraps it with usage and timings,
//! and the brain's planner derives its workload view from it, so the three
//! can no longer disagree. It is pure: [`Placement::apply`] changes state from
//! one envelope and does nothing else, and tells the caller what changed
//! ([`Change`]) so a wrapper can keep its own counters without a second copy
//! of the rules.
//!
//! One rule per event:
//! - `node.joined` / `node.left`: the node's membership;
//! - `node.drain_requested` cordons a node (a new drain starts afresh),
//!   `node.uncordoned` ends it, `node.drain_blocked` records what the brain
//!   said cannot move; a migration off a draining node that ends without
//!   moving counts as a failed attempt ([`crate::cordon`]);
//! - `workload.started` puts the workload on the emitting node, running;
//! - `workload.exited` removes it only when the emitting node is the one it
//!   runs on and it is not migrating (a late exit from a node it left, or
//!   the source's frozen process going away, is not about this placement);
//! - `telemetry.<n>.workloads` places a workload the log never started on the
//!   node that reports it (usage is the only evidence some workloads leave);
//! - `migration.requested` marks a workload running on the source as
//!   migrating; `checkpointed` and `restored` record progress;
//! - `migration.failed` records the failure; at step `validate` (nothing was
//!   frozen, no rollback follows) it is final: refused;
//! - `migration.completed` puts the workload on the target with the target's
//!   pid or container; `migration.rolled_back` leaves it on the source and
//!   keeps its pid (the one the rollback reports, else the one it had).
//!
//! Late events: an event about a migration that is already finished, or that
//! the fold forgot to stay bounded, changes nothing. Migration ids are UUIDv7,
//! ordered by the time they were made; the fold forgets the oldest first and
//! remembers the newest id it forgot, so an unknown id at or below it is late,
//! never a migration in flight again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::cordon::{Drain, DrainProgress};
use crate::migration::{Mode, Reason, Requested, Step, Timings};
use crate::model::WorkloadUsage;
use crate::payload::NodeJoined;
use crate::workload::{Exited, Runtime, Started};
use crate::{Envelope, Event, NodeName, WorkloadName};

/// How many migrations the fold keeps by default: plenty for tables and for
/// the planner's cooldowns, bounded so a long log keeps memory flat.
pub const MIGRATIONS_KEPT: usize = 1_000;

/// The fold's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Workloads that run (or are being moved), by name.
    pub workloads: BTreeMap<WorkloadName, Workload>,
    /// Nodes that announced themselves (`node.joined` / `node.left`).
    pub nodes: BTreeMap<NodeName, NodeSeen>,
    /// Migrations in flight and finished, by id (UUIDv7: oldest first), at
    /// most the number given to [`Placement::new`].
    pub migrations: BTreeMap<Uuid, Migration>,
    /// Nodes being drained (cordoned): never a target, emptied by the brain.
    pub draining: BTreeMap<NodeName, Drain>,
    /// Events applied.
    pub applied: u64,
    kept: usize,
    forgotten_up_to: Option<Uuid>,
}

impl Default for Placement {
    fn default() -> Self {
        Self::new(MIGRATIONS_KEPT)
    }
}

/// One workload's placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    fn new(name: &WorkloadName, node: &NodeName, at: DateTime<Utc>) -> Self {
        Self {
            name: name.clone(),
            node: node.clone(),
            runtime: None,
            state: WorkloadState::Running,
            since: at,
            pid: None,
            container_id: None,
        }
    }

    /// `running` or `migrating node2→node3`, for tables.
    pub fn state_label(&self) -> String {
        match &self.state {
            WorkloadState::Running => "running".to_string(),
            WorkloadState::Migrating { target, .. } => format!("migrating {}→{target}", self.node),
        }
    }

    /// The pid or (short) container id, or `-`, for tables.
    pub fn handle_label(&self) -> String {
        match (&self.pid, &self.container_id) {
            (_, Some(c)) => c.chars().take(12).collect(),
            (Some(p), None) => p.to_string(),
            (None, None) => "-".to_string(),
        }
    }

    fn migrating_under(&self, id: Uuid) -> bool {
        matches!(&self.state, WorkloadState::Migrating { migration, .. } if *migration == id)
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

/// How a migration stands: one vocabulary for tables, filters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No outcome yet.
    InFlight,
    /// A step failed; the rollback is not (yet) reported.
    Failed,
    /// Runs on the target.
    Completed,
    /// Runs on the source again after a failure.
    RolledBack,
    /// Refused at validation; nothing moved.
    Refused,
}

impl Status {
    /// Every status, for filters and metrics.
    pub const ALL: [Status; 5] = [
        Status::InFlight,
        Status::Completed,
        Status::Failed,
        Status::RolledBack,
        Status::Refused,
    ];

    /// The name used in URLs, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InFlight => "in_flight",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::RolledBack => "rolled_back",
            Status::Refused => "refused",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether people should look at it.
    pub fn is_bad(self) -> bool {
        matches!(self, Status::Failed | Status::RolledBack | Status::Refused)
    }

    /// Whether it is an outcome: no later event changes it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::RolledBack | Status::Refused
        )
    }
}

/// How far a migration in flight got, for tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Asked for; the source has not answered yet.
    Requested,
    /// The source dumped and stored it.
    Checkpointed,
    /// The target runs it; the source cleans up.
    Restored,
    /// A step failed; the source rolls back.
    Failed,
}

/// The step that failed and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// Why, as the executor said.
    pub reason: String,
}

/// One migration as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// Why, as the requester said.
    pub reason: Option<Reason>,
    /// When the first event about it happened (ordering and filters).
    pub first_seen: DateTime<Utc>,
    /// When the last event about it happened.
    pub updated_at: DateTime<Utc>,
    /// When it was requested.
    pub requested_at: Option<DateTime<Utc>>,
    /// When the source reported the checkpoint.
    pub checkpointed_at: Option<DateTime<Utc>>,
    /// When the target reported the restore.
    pub restored_at: Option<DateTime<Utc>>,
    /// When it completed, rolled back or was refused.
    pub finished_at: Option<DateTime<Utc>>,
    /// The image size, once known.
    pub image_bytes: Option<u64>,
    /// Every step's timing any event reported.
    pub timings: Timings,
    /// The step that failed, when one did.
    pub failure: Option<Failure>,
    /// Where it stands.
    pub status: Status,
    /// The workload's runtime, from the checkpoint's spec.
    pub runtime: Option<Runtime>,
    /// Its pid on the target, from `restored`.
    pub target_pid: Option<u32>,
    /// Its container on the target, from `restored`.
    pub target_container: Option<String>,
    /// The mode asked for, from `requested`.
    pub requested_mode: Option<Mode>,
    /// The mode that ran, from `completed`.
    pub mode: Option<Mode>,
    /// Why the mode that ran is not the one asked for, from `completed`.
    pub fallback: Option<String>,
}

/// The names every migration event carries.
#[derive(Clone, Copy)]
struct Ids<'a> {
    id: Uuid,
    workload: &'a WorkloadName,
    source: &'a NodeName,
    target: &'a NodeName,
}

macro_rules! ids {
    ($p:expr) => {
        Ids {
            id: $p.migration,
            workload: &$p.workload,
            source: &$p.source,
            target: &$p.target,
        }
    };
}

impl Migration {
    fn new(ids: &Ids<'_>, at: DateTime<Utc>) -> Self {
        Self {
            id: ids.id,
            workload: ids.workload.clone(),
            source: ids.source.clone(),
            target: ids.target.clone(),
            requested_by: None,
            reason: None,
            first_seen: at,
            updated_at: at,
            requested_at: None,
            checkpointed_at: None,
            restored_at: None,
            finished_at: None,
            image_bytes: None,
            timings: Timings::default(),
            failure: None,
            status: Status::InFlight,
            runtime: None,
            target_pid: None,
            target_container: None,
            requested_mode: None,
            mode: None,
            fallback: None,
        }
    }

    /// The last step seen.
    pub fn progress(&self) -> Progress {
        if self.failure.is_some() {
            Progress::Failed
        } else if self.restored_at.is_some() {
            Progress::Restored
        } else if self.checkpointed_at.is_some() {
            Progress::Checkpointed
        } else {
            Progress::Requested
        }
    }

    /// `requested`, `checkpointed`, `restored`, `failed at dump, rolling
    /// back`, for tables.
    pub fn progress_label(&self) -> String {
        match (self.progress(), &self.failure) {
            (Progress::Failed, Some(f)) => format!("failed at {}, rolling back", f.step),
            (Progress::Checkpointed, _) => "checkpointed".into(),
            (Progress::Restored, _) => "restored".into(),
            _ => "requested".into(),
        }
    }

    /// `completed`, `rolled back (failed at restore: why)`, `refused: why`,
    /// or the progress, for tables.
    pub fn outcome_label(&self) -> String {
        match (self.status, &self.failure) {
            (Status::Completed, _) => "completed".into(),
            (Status::RolledBack, Some(f)) => {
                format!("rolled back (failed at {}: {})", f.step, f.reason)
            }
            (Status::RolledBack, None) => "rolled back".into(),
            (Status::Refused, f) => format!(
                "refused: {}",
                f.as_ref().map(|f| f.reason.as_str()).unwrap_or("?")
            ),
            _ => self.progress_label(),
        }
    }
}

/// Whether the fold reads events like `event`: a workload's life and usage
/// and every migration step. Folds that wrap this one route exactly these
/// to it, so the list of kinds is written once.
pub fn reads(event: &Event) -> bool {
    matches!(
        event,
        Event::WorkloadStarted(_)
            | Event::WorkloadExited(_)
            | Event::WorkloadUsage(_)
            | Event::MigrationRequested(_)
            | Event::MigrationCheckpointed(_)
            | Event::MigrationRestored(_)
            | Event::MigrationCompleted(_)
            | Event::MigrationFailed(_)
            | Event::MigrationRolledBack(_)
            | Event::MigrationWithdrawn(_)
            | Event::NodeDrainRequested(_)
            | Event::NodeUncordoned(_)
            | Event::NodeDrainBlocked(_)
    )
}

/// What one event changed, for wrappers that count or reset their own
/// state (the dashboard's outcome counters and usage, the planner's usage).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// The migration the event was about, unless the event was late.
    pub migration: Option<MigrationChange>,
    /// A workload whose earlier usage no longer describes it.
    pub workload: Option<WorkloadChange>,
}

/// A migration's status before and after one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationChange {
    /// Which.
    pub id: Uuid,
    /// Before (`None`: first seen now).
    pub before: Option<Status>,
    /// After.
    pub after: Status,
}

impl MigrationChange {
    /// Whether this event gave it its outcome (a duplicate never does).
    pub fn finished_now(&self) -> bool {
        self.after.is_final() && !self.before.is_some_and(Status::is_final)
    }
}

/// What happened to a workload's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadChange {
    /// It was (re)started.
    Started(WorkloadName),
    /// A migration put it on another node.
    Moved(WorkloadName),
    /// It exited on its node.
    Gone(WorkloadName),
}

impl Placement {
    /// An empty fold keeping at most `migrations_kept` migrations (at least one).
    pub fn new(migrations_kept: usize) -> Self {
        Self {
            workloads: BTreeMap::new(),
            nodes: BTreeMap::new(),
            migrations: BTreeMap::new(),
            draining: BTreeMap::new(),
            applied: 0,
            kept: migrations_kept.max(1),
            forgotten_up_to: None,
        }
    }

    /// The fold of `events`, in order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut p = Self::default();
        for e in events {
            p.apply(e);
        }
        p
    }

    /// Applies one envelope. Kinds that say nothing about placement
    /// (telemetry samples, start requests, model events) only count as applied.
    pub fn apply(&mut self, env: &Envelope) -> Change {
        self.apply_event(&env.node, env.occurred_at, &env.event)
    }

    /// Applies one event emitted by `emitter` at `at`: [`Placement::apply`]
    /// without an envelope, for a decision the caller made itself and will
    /// see again from the log (applying it twice changes nothing).
    pub fn apply_event(&mut self, emitter: &NodeName, at: DateTime<Utc>, event: &Event) -> Change {
        self.applied += 1;
        let change = match event {
            Event::NodeJoined(j) => self.joined(emitter, at, j),
            Event::NodeLeft(_) => self.left(emitter, at),
            Event::WorkloadStarted(s) => self.started(emitter, at, s),
            Event::WorkloadExited(x) => self.exited(emitter, x),
            Event::WorkloadUsage(u) => self.usage(emitter, u),
            Event::MigrationRequested(r) => self.requested(at, r),
            Event::MigrationCheckpointed(c) => self.progress(ids!(c), at, |m| {
                m.checkpointed_at = Some(at);
                m.image_bytes = Some(c.image_bytes);
                m.timings = merge(m.timings, c.timings);
                m.runtime = Some(c.spec.runtime);
            }),
            Event::MigrationRestored(r) => self.progress(ids!(r), at, |m| {
                m.restored_at = Some(at);
                m.image_bytes = Some(r.image_bytes);
                m.timings = merge(m.timings, r.timings);
                m.target_pid = r.pid;
                m.target_container = r.container_id.clone();
            }),
            Event::MigrationCompleted(c) => {
                let change = self.completed(ids!(c), at, c.image_bytes, c.timings);
                if let Some(m) = self.migrations.get_mut(&c.migration) {
                    // Completed before modes existed: a copy.
                    m.mode = Some(c.mode.unwrap_or(Mode::Copy));
                    m.fallback = c.fallback.clone();
                }
                change
            }
            Event::MigrationFailed(f) => self.failed(ids!(f), at, f.step, &f.reason),
            Event::MigrationRolledBack(r) => self.rolled_back(ids!(r), at, r.pid),
            Event::MigrationWithdrawn(w) => self.withdrawn(ids!(w), at, &w.reason),
            Event::NodeDrainRequested(d) => {
                self.draining.insert(d.node.clone(), Drain::new(at, d));
                Change::default()
            }
            Event::NodeUncordoned(u) => {
                self.draining.remove(&u.node);
                Change::default()
            }
            Event::NodeDrainBlocked(b) => {
                let here = self
                    .workloads
                    .get(&b.workload)
                    .is_some_and(|w| w.node == b.node);
                if let (true, Some(d)) = (here, self.draining.get_mut(&b.node)) {
                    d.blocked.insert(b.workload.clone(), b.reason.clone());
                }
                Change::default()
            }
            _ => Change::default(),
        };
        self.note_drain(&change);
        change
    }

    /// Whether `node` is being drained: no workload may be placed or moved
    /// onto it.
    pub fn is_draining(&self, node: &NodeName) -> bool {
        self.draining.contains_key(node)
    }

    /// The nodes a new workload may be placed on: joined, not left, not
    /// draining. The one rule `workload run` without a node and the
    /// dashboard share (the brain's targets also need live telemetry and an
    /// executor, which only it knows).
    pub fn placeable_nodes(&self) -> Vec<&NodeName> {
        self.nodes
            .iter()
            .filter(|(n, seen)| seen.joined && !self.is_draining(n))
            .map(|(n, _)| n)
            .collect()
    }

    /// Where the drain of `node` stands, if it is draining.
    pub fn drain_progress(&self, node: &NodeName) -> Option<DrainProgress> {
        let drain = self.draining.get(node)?;
        let on: Vec<&Workload> = self
            .workloads
            .values()
            .filter(|w| &w.node == node)
            .collect();
        Some(DrainProgress {
            node: node.clone(),
            drain: drain.clone(),
            remaining: on.iter().map(|w| w.name.clone()).collect(),
            moving: on
                .iter()
                .filter(|w| matches!(w.state, WorkloadState::Migrating { .. }))
                .map(|w| w.name.clone())
                .collect(),
        })
    }

    /// What a change means to the drains: a migration off a draining node
    /// that ended without moving is a failed attempt; a workload that left
    /// its node is no longer blocked there.
    fn note_drain(&mut self, change: &Change) {
        if self.draining.is_empty() {
            return;
        }
        if let Some(c) = change.migration.filter(|c| c.finished_now()) {
            if let Some(m) = self
                .migrations
                .get(&c.id)
                .filter(|m| m.status != Status::Completed)
            {
                if let Some(d) = self.draining.get_mut(&m.source) {
                    let why = m.outcome_label();
                    d.failures.entry(m.workload.clone()).or_default().push(why);
                }
            }
        }
        if let Some(WorkloadChange::Moved(w) | WorkloadChange::Gone(w)) = &change.workload {
            for d in self.draining.values_mut() {
                d.forget(w);
            }
        }
    }

    /// The migration `id`, in flight or finished.
    pub fn migration(&self, id: Uuid) -> Option<&Migration> {
        self.migrations.get(&id)
    }

    /// Migrations with no outcome yet, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = &Migration> {
        self.migrations.values().filter(|m| !m.status.is_final())
    }

    /// Whether `node` is the source or target of a migration in flight.
    pub fn busy(&self, node: &NodeName) -> bool {
        self.in_flight()
            .any(|m| &m.source == node || &m.target == node)
    }

    /// The `n` migrations that finished last, latest first.
    pub fn recent_outcomes(&self, n: usize) -> Vec<&Migration> {
        let mut done: Vec<&Migration> = self
            .migrations
            .values()
            .filter(|m| m.status.is_final())
            .collect();
        done.sort_by_key(|m| std::cmp::Reverse((m.finished_at, m.id)));
        done.truncate(n);
        done
    }

    fn joined(&mut self, node: &NodeName, at: DateTime<Utc>, j: &NodeJoined) -> Change {
        let seen = NodeSeen {
            joined: true,
            since: at,
            capacity_cores: Some(j.capacity_cores),
        };
        self.nodes.insert(node.clone(), seen);
        Change::default()
    }

    fn left(&mut self, node: &NodeName, at: DateTime<Utc>) -> Change {
        let capacity_cores = self.nodes.get(node).and_then(|n| n.capacity_cores);
        let seen = NodeSeen {
            joined: false,
            since: at,
            capacity_cores,
        };
        self.nodes.insert(node.clone(), seen);
        Change::default()
    }

    fn started(&mut self, node: &NodeName, at: DateTime<Utc>, s: &Started) -> Change {
        let mut w = Workload::new(&s.workload, node, at);
        w.runtime = Some(s.spec.runtime);
        w.pid = s.pid;
        w.container_id = s.container_id.clone();
        self.workloads.insert(s.workload.clone(), w);
        Change {
            migration: None,
            workload: Some(WorkloadChange::Started(s.workload.clone())),
        }
    }

    fn exited(&mut self, node: &NodeName, x: &Exited) -> Change {
        let here = self
            .workloads
            .get(&x.workload)
            .is_some_and(|w| &w.node == node && w.state == WorkloadState::Running);
        if !here {
            return Change::default();
        }
        self.workloads.remove(&x.workload);
        Change {
            migration: None,
            workload: Some(WorkloadChange::Gone(x.workload.clone())),
        }
    }

    fn usage(&mut self, node: &NodeName, u: &WorkloadUsage) -> Change {
        for w in &u.workloads {
            self.workloads
                .entry(w.workload.clone())
                .or_insert_with(|| Workload::new(&w.workload, node, u.at));
        }
        Change::default()
    }

    fn requested(&mut self, at: DateTime<Utc>, r: &Requested) -> Change {
        let change = self.progress(ids!(r), at, |m| {
            m.requested_by = Some(r.requested_by.clone());
            m.reason = Some(r.reason.clone());
            m.requested_at = Some(at);
            m.requested_mode = Some(r.mode);
        });
        if change
            .migration
            .is_some_and(|c| c.after == Status::InFlight)
        {
            if let Some(w) = self.workloads.get_mut(&r.workload) {
                if w.node == r.source && w.state == WorkloadState::Running {
                    w.state = WorkloadState::Migrating {
                        migration: r.migration,
                        target: r.target.clone(),
                    };
                    w.since = at;
                }
            }
        }
        change
    }

    fn completed(&mut self, ids: Ids<'_>, at: DateTime<Utc>, bytes: u64, t: Timings) -> Change {
        let mut change = self.progress(ids, at, |m| {
            m.image_bytes = Some(bytes);
            m.timings = merge(m.timings, t);
            m.finished_at = Some(at);
            m.status = Status::Completed;
        });
        if change.migration.is_none() {
            return change;
        }
        let Some(m) = self.migrations.get(&ids.id) else {
            return change;
        };
        let (runtime, pid, container) = (m.runtime, m.target_pid, m.target_container.clone());
        if let Some(w) = self.settle(&ids, at, runtime) {
            w.node = ids.target.clone();
            w.pid = pid;
            w.container_id = container;
            change.workload = Some(WorkloadChange::Moved(ids.workload.clone()));
        }
        change
    }

    fn failed(&mut self, ids: Ids<'_>, at: DateTime<Utc>, step: Step, reason: &str) -> Change {
        let refused = step == Step::Validate;
        let change = self.progress(ids, at, |m| {
            m.failure = Some(Failure {
                step,
                reason: reason.to_string(),
            });
            if refused {
                // Nothing was frozen: no rollback follows, it is over now.
                m.status = Status::Refused;
                m.finished_at = Some(at);
            } else {
                m.status = Status::Failed;
            }
        });
        if refused && change.migration.is_some() {
            self.resume(ids.id, at);
        }
        change
    }

    /// The brain took its request back (it could not publish it in time):
    /// over at once, as a refusal, unless an executor already acted on it,
    /// in which case the migration is real and its own outcome ends it.
    fn withdrawn(&mut self, ids: Ids<'_>, at: DateTime<Utc>, reason: &str) -> Change {
        let acted = self
            .migrations
            .get(&ids.id)
            .is_some_and(|m| m.checkpointed_at.is_some() || m.failure.is_some());
        if acted {
            return Change::default();
        }
        self.failed(ids, at, Step::Validate, &format!("withdrawn: {reason}"))
    }

    fn rolled_back(&mut self, ids: Ids<'_>, at: DateTime<Utc>, pid: Option<u32>) -> Change {
        let change = self.progress(ids, at, |m| {
            m.status = Status::RolledBack;
            m.finished_at = Some(at);
        });
        if change.migration.is_none() {
            return change;
        }
        let runtime = self.migrations.get(&ids.id).and_then(|m| m.runtime);
        if let Some(w) = self.settle(&ids, at, runtime) {
            // The pid the rollback reports (a process resumed from its own
            // image), else the one it had: it never left the source.
            w.pid = pid.or(w.pid);
        }
        change
    }

    /// The workload `ids` moved, when the migration still decides where it
    /// runs: migrating under it, or running on its source (the request was
    /// not seen). A workload the log did not know is placed on the source
    /// first. `None` when it runs elsewhere for another reason.
    fn settle(
        &mut self,
        ids: &Ids<'_>,
        at: DateTime<Utc>,
        runtime: Option<Runtime>,
    ) -> Option<&mut Workload> {
        let w = self
            .workloads
            .entry(ids.workload.clone())
            .or_insert_with(|| Workload::new(ids.workload, ids.source, at));
        let ours = w.migrating_under(ids.id)
            || (w.state == WorkloadState::Running && &w.node == ids.source);
        if !ours {
            return None;
        }
        w.state = WorkloadState::Running;
        w.since = at;
        w.runtime = w.runtime.or(runtime);
        Some(w)
    }

    /// The workload migrating under `id` runs on its source again.
    fn resume(&mut self, id: Uuid, at: DateTime<Utc>) {
        for w in self.workloads.values_mut() {
            if w.migrating_under(id) {
                w.state = WorkloadState::Running;
                w.since = at;
            }
        }
    }

    /// Applies `step` to the migration an event is about and reports the
    /// change; does nothing for a late event (finished or forgotten).
    fn progress(
        &mut self,
        ids: Ids<'_>,
        at: DateTime<Utc>,
        step: impl FnOnce(&mut Migration),
    ) -> Change {
        let before = match self.migrations.get(&ids.id) {
            Some(m) if m.status.is_final() => return Change::default(),
            Some(m) => Some(m.status),
            None if self.forgotten_up_to.is_some_and(|f| ids.id <= f) => return Change::default(),
            None => {
                self.make_room();
                None
            }
        };
        let m = self
            .migrations
            .entry(ids.id)
            .or_insert_with(|| Migration::new(&ids, at));
        m.updated_at = at;
        step(m);
        Change {
            migration: Some(MigrationChange {
                id: ids.id,
                before,
                after: m.status,
            }),
            workload: None,
        }
    }

    /// Forgets migrations until one more fits: the oldest finished one
    /// first, the oldest in flight only when none is finished.
    fn make_room(&mut self) {
        while self.migrations.len() >= self.kept {
            let oldest = self
                .migrations
                .values()
                .find(|m| m.status.is_final())
                .or_else(|| self.migrations.values().next())
                .map(|m| m.id);
            let Some(id) = oldest else { return };
            self.migrations.remove(&id);
            self.forgotten_up_to = self.forgotten_up_to.max(Some(id));
        }
    }
}

/// Later events repeat earlier timings and add their own; keep every step
/// any event reported.
fn merge(old: Timings, new: Timings) -> Timings {
    Timings {
        dump_ms: new.dump_ms.or(old.dump_ms),
        upload_ms: new.upload_ms.or(old.upload_ms),
        download_ms: new.download_ms.or(old.download_ms),
        restore_ms: new.restore_ms.or(old.restore_ms),
        cleanup_ms: new.cleanup_ms.or(old.cleanup_ms),
        downtime_ms: new.downtime_ms.or(old.downtime_ms),
        total_ms: new.total_ms.or(old.total_ms),
        postcopy_ms: new.postcopy_ms.or(old.postcopy_ms),
    }
}
