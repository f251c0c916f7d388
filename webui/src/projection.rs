//! The dashboard's own fold of both streams, in memory.
//!
//! The webui never reads the brain's store: it replays TELEMETRY and EVENTS
//! from the start when it starts and keeps folding them, so it shows the
//! cluster even while the brain is down, and what it shows is what the log
//! says. Everything it keeps is bounded (series by time, the event log,
//! migrations and model versions by count), so memory stays flat however long
//! the log is; all-time counts (migrations by outcome, downtime histogram)
//! are counters, not lists.
//!
//! [`Projection::apply`] changes state from one message and does nothing
//! else, so pages are tested from hand-built events without a server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use loadshift_events::migration::{Reason, Step, Timings};
use loadshift_events::model::{Activated, Deferred, Predicted, TrainRequested, Trained};
use loadshift_events::workload::Runtime;
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use serde::Serialize;
use uuid::Uuid;

use crate::series::{Point, Series, SeriesLimits};

/// The two streams the webui folds: the contract's one stream enum.
pub use loadshift_events::stream::StreamId as StreamKind;

/// How much the projection keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Per-node series.
    pub series: SeriesLimits,
    /// EVENTS messages kept for the Events page.
    pub events_kept: usize,
    /// TELEMETRY messages kept for the Events page.
    pub telemetry_kept: usize,
    /// Migrations kept with their details.
    pub migrations_kept: usize,
    /// Model versions kept.
    pub models_kept: usize,
    /// Deferrals, activations and train requests kept.
    pub decisions_kept: usize,
    /// Usage points kept per workload.
    pub workload_points: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            series: SeriesLimits::default(),
            events_kept: 10_000,
            telemetry_kept: 1_000,
            migrations_kept: 20_000,
            models_kept: 200,
            decisions_kept: 200,
            workload_points: 900,
        }
    }
}

/// Where a node is in its life, from `node.joined` / `node.left`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Life {
    /// Samples arrived but no `node.joined` was seen (kept history starts later).
    Unannounced,
    /// Joined at this time.
    Joined(DateTime<Utc>),
    /// Left at this time, for this reason.
    Left(DateTime<Utc>, String),
}

/// One node as the dashboard knows it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name.
    pub name: NodeName,
    /// Joined or left.
    pub life: Life,
    /// Telemetry source it declared (`host`, `trace:...`).
    pub source: Option<String>,
    /// Declared CPU capacity.
    pub capacity_cores: Option<f32>,
    /// Declared memory.
    pub memory_bytes: Option<u64>,
    /// Its metrics.
    pub series: Series,
    /// When its latest message was emitted (the envelope's wall-clock
    /// `occurred_at`, not a trace sample's own time), to tell a silent node
    /// from a live one.
    pub last_seen: Option<DateTime<Utc>>,
    /// The brain's latest belief about it.
    pub prediction: Option<Predicted>,
    /// Samples folded.
    pub samples: u64,
}

/// A workload's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum WorkloadState {
    /// Runs on its node.
    Running,
    /// Being moved by this migration.
    Migrating {
        /// The migration.
        migration: Uuid,
        /// Where to.
        target: NodeName,
    },
}

/// One workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its name.
    pub name: WorkloadName,
    /// Where it runs (the source while it migrates).
    pub node: NodeName,
    /// Process or docker, when known.
    pub runtime: Option<Runtime>,
    /// Running or migrating.
    pub state: WorkloadState,
    /// Since when.
    pub since: DateTime<Utc>,
    /// Latest CPU use, percent of one core.
    pub cpu_pct: Option<f32>,
    /// Latest resident memory.
    pub rss_bytes: Option<u64>,
    /// Recent CPU use (unix ms, percent), bounded.
    pub usage: VecDeque<(i64, f32)>,
}

/// How a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No outcome yet.
    InFlight,
    /// Runs on the target.
    Completed,
    /// A step failed; the rollback is not (yet) reported.
    Failed,
    /// Runs on the source again after a failure.
    RolledBack,
    /// Refused at validation; nothing moved.
    Refused,
}

impl Outcome {
    /// Every outcome, for filters and metrics.
    pub const ALL: [Outcome; 5] = [
        Outcome::InFlight,
        Outcome::Completed,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Refused,
    ];

    /// The name used in URLs, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InFlight => "in_flight",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Refused => "refused",
        }
    }

    /// Parses [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether people should look at it.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::RolledBack | Outcome::Refused
        )
    }
}

/// One migration as the log tells it.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    /// Its id.
    pub id: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// From.
    pub source: NodeName,
    /// To.
    pub target: NodeName,
    /// Who asked.
    pub requested_by: Option<String>,
    /// Why, as the requester said.
    pub reason: Option<Reason>,
    /// When each event happened.
    pub requested_at: Option<DateTime<Utc>>,
    /// `checkpointed`.
    pub checkpointed_at: Option<DateTime<Utc>>,
    /// `restored`.
    pub restored_at: Option<DateTime<Utc>>,
    /// `completed`, `rolled_back` or a validation refusal.
    pub finished_at: Option<DateTime<Utc>>,
    /// The first time any event about it was seen (for ordering and filters).
    pub first_seen: DateTime<Utc>,
    /// The image size, once known.
    pub image_bytes: Option<u64>,
    /// The latest timings reported.
    pub timings: Timings,
    /// The step that failed and why.
    pub failure: Option<(Step, String)>,
    /// Where it stands.
    pub outcome: Outcome,
}

/// A trained model version.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    /// What `model.trained` said.
    pub trained: Trained,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the log says about the brain's models.
#[derive(Debug, Clone, Default)]
pub struct ModelState {
    /// Trained versions by number, bounded.
    pub versions: BTreeMap<u64, ModelVersion>,
    /// The active version.
    pub active: Option<u64>,
    /// Activations, newest last.
    pub activations: VecDeque<(DateTime<Utc>, Activated)>,
    /// Train requests, newest last.
    pub train_requests: VecDeque<(DateTime<Utc>, TrainRequested)>,
}

/// One message as the Events page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedEvent {
    /// Its stream.
    pub stream: StreamKind,
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its kind (`?` when it did not decode).
    pub kind: String,
    /// The emitting node.
    pub node: String,
    /// When it happened, per its envelope.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The JSON as stored.
    #[serde(skip)]
    pub raw: Arc<str>,
    /// Why it could not be folded, if it could not.
    pub error: Option<String>,
}

/// Upper bounds of the downtime histogram, seconds.
pub const DOWNTIME_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// All-time counters, independent of what the bounded lists still hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Messages folded per stream (applied or parked).
    pub folded: [u64; 2],
    /// Messages that did not decode, per stream.
    pub parked: [u64; 2],
    /// Last stream sequence folded, per stream.
    pub last_seq: [u64; 2],
    /// Messages the stream held beyond the last one folded, per stream.
    pub pending: [u64; 2],
    /// Migrations that reached each outcome (in_flight: requests seen).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Downtime histogram: counts per bucket of [`DOWNTIME_BUCKETS`] (not cumulative) plus +Inf.
    pub downtime_counts: [u64; 11],
    /// Sum of downtimes, seconds.
    pub downtime_sum: f64,
    /// Number of downtimes observed.
    pub downtime_count: u64,
}

/// One message read from a stream.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Which stream.
    pub stream: StreamKind,
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: &'a str,
    /// Its bytes.
    pub payload: &'a [u8],
    /// How many messages the stream holds after it.
    pub pending: u64,
}

/// The whole projection.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Bounds.
    pub limits: Limits,
    /// Nodes by name.
    pub nodes: BTreeMap<NodeName, Node>,
    /// Workloads by name.
    pub workloads: BTreeMap<WorkloadName, Workload>,
    /// Migrations by id (UUIDv7: ordered by creation), bounded.
    pub migrations: BTreeMap<Uuid, Migration>,
    /// Models.
    pub model: ModelState,
    /// Deferred moves, newest last.
    pub deferrals: VecDeque<(DateTime<Utc>, Deferred)>,
    /// Recent EVENTS messages, newest last.
    pub events_log: VecDeque<LoggedEvent>,
    /// Recent TELEMETRY messages, newest last.
    pub telemetry_log: VecDeque<LoggedEvent>,
    /// Counters.
    pub counters: Counters,
    /// Bumped on every change, so live views know when to re-render.
    pub version: u64,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, max: usize) {
    q.push_back(item);
    while q.len() > max {
        q.pop_front();
    }
}

fn nan_or(v: Option<f32>) -> f32 {
    v.unwrap_or(f32::NAN)
}

impl Projection {
    /// An empty projection keeping `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Folds one message read from a stream; one that does not decode is
    /// counted and shown on the Events page with the reason, never fatal.
    pub fn apply(&mut self, msg: Incoming<'_>) {
        let i = msg.stream.index();
        self.counters.folded[i] += 1;
        self.counters.last_seq[i] = self.counters.last_seq[i].max(msg.seq);
        self.counters.pending[i] = msg.pending;
        self.version += 1;
        match Envelope::from_message(msg.subject, msg.payload) {
            Ok(env) => {
                let raw: Arc<str> = String::from_utf8_lossy(msg.payload).into();
                self.log(msg.stream, msg.seq, msg.subject, &env, raw, None);
                self.fold(&env);
            }
            Err(e) => {
                self.counters.parked[i] += 1;
                let entry = LoggedEvent {
                    stream: msg.stream,
                    seq: msg.seq,
                    subject: msg.subject.to_string(),
                    kind: "?".into(),
                    node: loadshift_events::subject::node_of(msg.subject)
                        .unwrap_or("?")
                        .to_string(),
                    occurred_at: None,
                    raw: String::from_utf8_lossy(msg.payload).into(),
                    error: Some(e.to_string()),
                };
                self.push_log(entry);
            }
        }
    }

    /// Folds an envelope directly (tests and benchmarks build projections
    /// this way); it is logged with the stream's next sequence.
    pub fn apply_envelope(&mut self, env: &Envelope) {
        let stream = match env.event {
            Event::TelemetrySample(_) | Event::WorkloadUsage(_) => StreamKind::Telemetry,
            _ => StreamKind::Events,
        };
        let bytes = env.to_json().unwrap_or_default();
        let seq = self.counters.last_seq[stream.index()] + 1;
        self.apply(Incoming {
            stream,
            seq,
            subject: &env.subject(),
            payload: &bytes,
            pending: 0,
        });
    }

    fn log(
        &mut self,
        stream: StreamKind,
        seq: u64,
        subject: &str,
        env: &Envelope,
        raw: Arc<str>,
        error: Option<String>,
    ) {
        self.push_log(LoggedEvent {
            stream,
            seq,
            subject: subject.to_string(),
            kind: env.kind().as_str().to_string(),
            node: env.node.to_string(),
            occurred_at: Some(env.occurred_at),
            raw,
            error,
        });
    }

    fn push_log(&mut self, e: LoggedEvent) {
        match e.stream {
            StreamKind::Events => push_bounded(&mut self.events_log, e, self.limits.events_kept),
            StreamKind::Telemetry => {
                push_bounded(&mut self.telemetry_log, e, self.limits.telemetry_kept)
            }
        }
    }

    fn node_mut(&mut self, name: &NodeName) -> &mut Node {
        let limits = self.limits.series;
        self.nodes.entry(name.clone()).or_insert_with(|| Node {
            name: name.clone(),
            life: Life::Unannounced,
            source: None,
            capacity_cores: None,
            memory_bytes: None,
            series: Series::new(limits),
            last_seen: None,
            prediction: None,
            samples: 0,
        })
    }

    fn fold(&mut self, env: &Envelope) {
        let at = env.occurred_at;
        match &env.event {
            Event::TelemetrySample(s) => {
                let n = self.node_mut(&env.node);
                n.samples += 1;
                n.last_seen = Some(at);
                if n.capacity_cores.is_none() {
                    n.capacity_cores = Some(s.cpu.capacity_cores);
                }
                let mem = if s.memory.total_bytes > 0 {
                    (s.memory.used_bytes as f64 * 100.0 / s.memory.total_bytes as f64) as f32
                } else {
                    f32::NAN
                };
                let psi = s.psi.unwrap_or_default();
                n.series.push(Point {
                    at_ms: s.at.timestamp_millis(),
                    cpu: s.cpu.usage_pct,
                    mem,
                    load: nan_or(s.load.map(|l| l.one)),
                    psi_cpu: nan_or(psi.cpu_some),
                    psi_mem: nan_or(psi.memory_some),
                    psi_io: nan_or(psi.io_some),
                });
            }
            Event::NodeJoined(j) => {
                let n = self.node_mut(&env.node);
                n.life = Life::Joined(at);
                n.source = Some(j.source.clone());
                n.capacity_cores = Some(j.capacity_cores);
                n.memory_bytes = (j.memory_bytes > 0).then_some(j.memory_bytes);
                n.last_seen = Some(at);
            }
            Event::NodeLeft(l) => {
                let n = self.node_mut(&env.node);
                n.life = Life::Left(at, l.reason.clone());
            }
            Event::NodePredicted(p) => {
                self.node_mut(&p.node).prediction = Some(p.clone());
            }
            Event::WorkloadUsage(u) => {
                let node = env.node.clone();
                self.node_mut(&node).last_seen = Some(at);
                let keep = self.limits.workload_points;
                for w in &u.workloads {
                    let entry =
                        self.workloads
                            .entry(w.workload.clone())
                            .or_insert_with(|| Workload {
                                name: w.workload.clone(),
                                node: node.clone(),
                                runtime: None,
                                state: WorkloadState::Running,
                                since: u.at,
                                cpu_pct: None,
                                rss_bytes: None,
                                usage: VecDeque::new(),
                            });
                    if entry.node != node {
                        // Usage from a node it is not placed on (a late sample
                        // from the source after a move): not this placement's.
                        continue;
                    }
                    entry.cpu_pct = Some(w.cpu_pct);
                    entry.rss_bytes = Some(w.rss_bytes);
                    push_bounded(&mut entry.usage, (u.at.timestamp_millis(), w.cpu_pct), keep);
                }
            }
            Event::WorkloadStarted(s) => {
                self.node_mut(&env.node);
                self.workloads.insert(
                    s.workload.clone(),
                    Workload {
                        name: s.workload.clone(),
                        node: env.node.clone(),
                        runtime: Some(s.spec.runtime),
                        state: WorkloadState::Running,
                        since: at,
                        cpu_pct: None,
                        rss_bytes: None,
                        usage: VecDeque::new(),
                    },
                );
            }
            Event::WorkloadExited(x) => {
                let here = self.workloads.get(&x.workload).is_some_and(|w| {
                    w.node == env.node && matches!(w.state, WorkloadState::Running)
                });
                if here {
                    self.workloads.remove(&x.workload);
                }
            }
            Event::MigrationRequested(r) => {
                let m = self.migration_mut(r.migration, &r.workload, &r.source, &r.target, at);
                m.requested_by = Some(r.requested_by.clone());
                m.reason = Some(r.reason.clone());
                m.requested_at = Some(at);
                let in_flight = m.outcome == Outcome::InFlight;
                if in_flight {
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
            }
            Event::MigrationCheckpointed(c) => {
                let m = self.migration_mut(c.migration, &c.workload, &c.source, &c.target, at);
                m.checkpointed_at = Some(at);
                m.image_bytes = Some(c.image_bytes);
                m.timings = merge(m.timings, c.timings);
            }
            Event::MigrationRestored(r) => {
                let m = self.migration_mut(r.migration, &r.workload, &r.source, &r.target, at);
                m.restored_at = Some(at);
                m.image_bytes = Some(r.image_bytes);
                m.timings = merge(m.timings, r.timings);
            }
            Event::MigrationCompleted(c) => {
                let m = self.migration_mut(c.migration, &c.workload, &c.source, &c.target, at);
                m.image_bytes = Some(c.image_bytes);
                m.timings = merge(m.timings, c.timings);
                m.finished_at = Some(at);
                let downtime = m.timings.downtime_ms;
                let newly = self.finish(c.migration, Outcome::Completed);
                if newly {
                    if let Some(ms) = downtime {
                        self.observe_downtime(ms / 1000.0);
                    }
                }
                let w = self
                    .workloads
                    .entry(c.workload.clone())
                    .or_insert_with(|| Workload {
                        name: c.workload.clone(),
                        node: c.source.clone(),
                        runtime: None,
                        state: WorkloadState::Running,
                        since: at,
                        cpu_pct: None,
                        rss_bytes: None,
                        usage: VecDeque::new(),
                    });
                let moved_by_this = match &w.state {
                    WorkloadState::Migrating { migration, .. } => *migration == c.migration,
                    WorkloadState::Running => w.node == c.source,
                };
                if moved_by_this {
                    w.node = c.target.clone();
                    w.state = WorkloadState::Running;
                    w.since = at;
                    w.cpu_pct = None;
                    w.rss_bytes = None;
                    w.usage.clear();
                }
            }
            Event::MigrationFailed(f) => {
                let refused = f.step == Step::Validate;
                let m = self.migration_mut(f.migration, &f.workload, &f.source, &f.target, at);
                m.failure = Some((f.step, f.reason.clone()));
                let in_flight = m.outcome == Outcome::InFlight;
                if refused {
                    m.finished_at = Some(at);
                    self.finish(f.migration, Outcome::Refused);
                    self.back_on_source(&f.workload, f.migration, at);
                } else if in_flight {
                    m.outcome = Outcome::Failed;
                    *self.counters.outcomes.entry("failed").or_default() += 1;
                }
            }
            Event::MigrationRolledBack(r) => {
                let m = self.migration_mut(r.migration, &r.workload, &r.source, &r.target, at);
                m.finished_at = Some(at);
                self.finish(r.migration, Outcome::RolledBack);
                self.back_on_source(&r.workload, r.migration, at);
            }
            Event::MigrationDeferred(d) => {
                let keep = self.limits.decisions_kept;
                push_bounded(&mut self.deferrals, (at, d.clone()), keep);
            }
            Event::ModelTrainRequested(t) => {
                let keep = self.limits.decisions_kept;
                push_bounded(&mut self.model.train_requests, (at, t.clone()), keep);
            }
            Event::ModelTrained(t) => {
                self.model.versions.insert(
                    t.version,
                    ModelVersion {
                        trained: t.clone(),
                        at,
                    },
                );
                while self.model.versions.len() > self.limits.models_kept {
                    self.model.versions.pop_first();
                }
            }
            Event::ModelActivated(a) => {
                self.model.active = Some(a.version);
                let keep = self.limits.decisions_kept;
                push_bounded(&mut self.model.activations, (at, a.clone()), keep);
            }
            // Requests to start are the executors' business; the fact that
            // follows (`started` / `start_failed`) is what the page shows.
            _ => {}
        }
    }

    fn migration_mut(
        &mut self,
        id: Uuid,
        workload: &WorkloadName,
        source: &NodeName,
        target: &NodeName,
        at: DateTime<Utc>,
    ) -> &mut Migration {
        if !self.migrations.contains_key(&id) {
            *self.counters.outcomes.entry("in_flight").or_default() += 1;
            while self.migrations.len() >= self.limits.migrations_kept.max(1) {
                self.migrations.pop_first();
            }
        }
        self.migrations.entry(id).or_insert_with(|| Migration {
            id,
            workload: workload.clone(),
            source: source.clone(),
            target: target.clone(),
            requested_by: None,
            reason: None,
            requested_at: None,
            checkpointed_at: None,
            restored_at: None,
            finished_at: None,
            first_seen: at,
            image_bytes: None,
            timings: Timings::default(),
            failure: None,
            outcome: Outcome::InFlight,
        })
    }

    /// Sets a final outcome once; true when this call set it (a replayed
    /// or duplicated final event counts once).
    fn finish(&mut self, id: Uuid, outcome: Outcome) -> bool {
        let Some(m) = self.migrations.get_mut(&id) else {
            return false;
        };
        if matches!(
            m.outcome,
            Outcome::Completed | Outcome::RolledBack | Outcome::Refused
        ) {
            return false;
        }
        m.outcome = outcome;
        *self.counters.outcomes.entry(outcome.as_str()).or_default() += 1;
        true
    }

    fn back_on_source(&mut self, workload: &WorkloadName, migration: Uuid, at: DateTime<Utc>) {
        if let Some(w) = self.workloads.get_mut(workload) {
            if matches!(&w.state, WorkloadState::Migrating { migration: m, .. } if *m == migration)
            {
                w.state = WorkloadState::Running;
                w.since = at;
            }
        }
    }

    fn observe_downtime(&mut self, secs: f64) {
        let c = &mut self.counters;
        let i = DOWNTIME_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DOWNTIME_BUCKETS.len());
        c.downtime_counts[i] += 1;
        c.downtime_sum += secs;
        c.downtime_count += 1;
    }

    /// Whether both streams were folded up to what they held when last read.
    pub fn caught_up(&self) -> bool {
        self.counters.pending.iter().all(|p| *p == 0)
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
    }
}
