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
use loadshift_events::model::{
    Activated, Deferred, Predicted, TrainRequested, Trained, WorkloadUsage,
};
use loadshift_events::placement::{self, Change, Placement, WorkloadChange};
use loadshift_events::telemetry::Sample;
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use serde::Serialize;

use crate::clock::NodeClock;
use crate::series::{Point, Series, SeriesLimits};

pub use loadshift_events::placement::{Migration, Status, Workload, WorkloadState};
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

/// Onset probabilities kept per node (the brain publishes one when its
/// belief changes noticeably, not per sample: this covers hours).
pub const PREDICTIONS_KEPT: usize = 2000;

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
    /// Its clock against the wall's (a replayed trace lives in its own
    /// time): where the node page draws a migration on its charts.
    pub clock: NodeClock,
    /// When its latest message was emitted (the envelope's wall-clock
    /// `occurred_at`, not a trace sample's own time), to tell a silent node
    /// from a live one.
    pub last_seen: Option<DateTime<Utc>>,
    /// The brain's latest belief about it.
    pub prediction: Option<Predicted>,
    /// Its onset probabilities over time (sample time in unix ms,
    /// probability), oldest first, bounded: the node page draws them under
    /// the CPU chart.
    pub predictions: VecDeque<(i64, f32)>,
    /// Samples folded.
    pub samples: u64,
}

/// What a workload uses, from its node's executor: the dashboard's
/// addition to the placement fold, kept only while the workload stays where
/// it was measured.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Latest CPU use, percent of one core.
    pub cpu_pct: f32,
    /// Latest resident memory.
    pub rss_bytes: u64,
    /// Recent CPU use (unix ms, percent), bounded.
    pub points: VecDeque<(i64, f32)>,
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
    /// Messages that did not decode, by reason ([`loadshift_events::DecodeError::reason`]).
    pub rejected: BTreeMap<&'static str, u64>,
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
#[derive(Debug, Clone)]
pub struct Projection {
    /// Bounds.
    pub limits: Limits,
    /// Nodes by name.
    pub nodes: BTreeMap<NodeName, Node>,
    /// Where workloads run and the migrations (bounded): the contract's
    /// placement fold, the same one the CLI and the planner read.
    pub placement: Placement,
    /// What each placed workload uses, by name.
    pub usage: BTreeMap<WorkloadName, Usage>,
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

/// Bytes of one message's text (its JSON, or a refused message's subject
/// and reason) the Events page keeps. The page shows up to
/// [`crate::pages::events::PER_PAGE`] messages and the projection keeps
/// thousands, so an unbounded message (a hostile client's 7 MB event)
/// would otherwise cost its full size thousands of times over; the page
/// says where to read the whole of it (`nats stream get`).
pub const KEPT_BYTES_PER_EVENT: usize = 4096;

/// `bytes` as text, cut to [`KEPT_BYTES_PER_EVENT`] at a character boundary
/// with a note of the full size.
pub fn kept_text(bytes: &[u8]) -> Arc<str> {
    if bytes.len() <= KEPT_BYTES_PER_EVENT {
        return String::from_utf8_lossy(bytes).into();
    }
    let text = String::from_utf8_lossy(&bytes[..KEPT_BYTES_PER_EVENT]);
    // A multi-byte character cut in two shows as U+FFFD at the end; drop it.
    let text = text.trim_end_matches('\u{FFFD}');
    format!("{text}… (cut: {} bytes in all)", bytes.len()).into()
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

impl Default for Projection {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Projection {
    /// An empty projection keeping `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            nodes: BTreeMap::new(),
            placement: Placement::new(limits.migrations_kept),
            usage: BTreeMap::new(),
            model: ModelState::default(),
            deferrals: VecDeque::new(),
            events_log: VecDeque::new(),
            telemetry_log: VecDeque::new(),
            counters: Counters::default(),
            version: 0,
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
                let raw = kept_text(msg.payload);
                self.log(msg.stream, msg.seq, msg.subject, &env, raw, None);
                self.fold(&env);
            }
            Err(e) => {
                self.counters.parked[i] += 1;
                *self.counters.rejected.entry(e.reason()).or_insert(0) += 1;
                tracing::warn!(
                    stream = msg.stream.name(),
                    subject = %kept_text(msg.subject.as_bytes()),
                    seq = msg.seq,
                    reason = %e,
                    "message refused; shown on the Events page"
                );
                let entry = LoggedEvent {
                    stream: msg.stream,
                    seq: msg.seq,
                    subject: kept_text(msg.subject.as_bytes()).to_string(),
                    kind: "?".into(),
                    node: loadshift_events::subject::node_of(msg.subject)
                        .map_or("?".into(), |n| kept_text(n.as_bytes()).to_string()),
                    occurred_at: None,
                    raw: kept_text(msg.payload),
                    error: Some(kept_text(e.to_string().as_bytes()).to_string()),
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
            clock: NodeClock::default(),
            last_seen: None,
            prediction: None,
            predictions: VecDeque::new(),
            samples: 0,
        })
    }

    fn fold(&mut self, env: &Envelope) {
        let at = env.occurred_at;
        match &env.event {
            Event::TelemetrySample(s) => self.sample(&env.node, at, s),
            Event::NodeJoined(j) => {
                let n = self.node_mut(&env.node);
                n.life = Life::Joined(at);
                n.source = Some(j.source.clone());
                n.capacity_cores = Some(j.capacity_cores);
                n.memory_bytes = (j.memory_bytes > 0).then_some(j.memory_bytes);
                n.last_seen = Some(at);
            }
            Event::NodeLeft(l) => {
                self.node_mut(&env.node).life = Life::Left(at, l.reason.clone());
            }
            Event::NodePredicted(p) => {
                let n = self.node_mut(&p.node);
                n.prediction = Some(p.clone());
                n.predictions.push_back((p.at.timestamp_millis(), p.onset));
                while n.predictions.len() > PREDICTIONS_KEPT {
                    n.predictions.pop_front();
                }
            }
            Event::WorkloadUsage(u) => self.usage(env, u),
            Event::WorkloadStarted(_) => {
                self.node_mut(&env.node);
                self.place(env);
            }
            e if placement::reads(e) => self.place(env),
            Event::MigrationDeferred(d) => {
                let keep = self.limits.decisions_kept;
                push_bounded(&mut self.deferrals, (at, d.clone()), keep);
            }
            Event::ModelTrainRequested(t) => {
                let keep = self.limits.decisions_kept;
                push_bounded(&mut self.model.train_requests, (at, t.clone()), keep);
            }
            Event::ModelTrained(t) => self.trained(at, t),
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

    fn sample(&mut self, node: &NodeName, at: DateTime<Utc>, s: &Sample) {
        let n = self.node_mut(node);
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
        n.clock
            .observe(at.timestamp_millis(), s.at.timestamp_millis());
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

    /// Usage counts only for a workload placed on the reporting node (a late
    /// sample from the source after a move is not this placement's).
    fn usage(&mut self, env: &Envelope, u: &WorkloadUsage) {
        self.node_mut(&env.node).last_seen = Some(env.occurred_at);
        self.placement.apply(env);
        let keep = self.limits.workload_points;
        for w in &u.workloads {
            let here = self
                .placement
                .workloads
                .get(&w.workload)
                .is_some_and(|p| p.node == env.node);
            if !here {
                continue;
            }
            let entry = self.usage.entry(w.workload.clone()).or_default();
            entry.cpu_pct = w.cpu_pct;
            entry.rss_bytes = w.rss_bytes;
            push_bounded(
                &mut entry.points,
                (u.at.timestamp_millis(), w.cpu_pct),
                keep,
            );
        }
    }

    /// Applies a workload or migration event to the placement fold and
    /// counts what it changed: usage measured before a start, a move or an
    /// exit no longer describes the workload.
    fn place(&mut self, env: &Envelope) {
        let Change {
            migration,
            workload,
        } = self.placement.apply(env);
        if let Some(
            WorkloadChange::Started(w) | WorkloadChange::Moved(w) | WorkloadChange::Gone(w),
        ) = workload
        {
            self.usage.remove(&w);
        }
        let Some(c) = migration else { return };
        if c.before.is_none() {
            self.count(Status::InFlight);
        }
        if c.after == Status::Failed && c.before != Some(Status::Failed) {
            self.count(Status::Failed);
        }
        if c.finished_now() {
            self.count(c.after);
            let downtime = self
                .placement
                .migration(c.id)
                .and_then(|m| m.timings.downtime_ms);
            if let (Status::Completed, Some(ms)) = (c.after, downtime) {
                self.observe_downtime(ms / 1000.0);
            }
        }
    }

    fn count(&mut self, status: Status) {
        *self.counters.outcomes.entry(status.as_str()).or_default() += 1;
    }

    fn trained(&mut self, at: DateTime<Utc>, t: &Trained) {
        let version = ModelVersion {
            trained: t.clone(),
            at,
        };
        self.model.versions.insert(t.version, version);
        while self.model.versions.len() > self.limits.models_kept {
            self.model.versions.pop_first();
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
