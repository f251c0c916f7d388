//! The planner at work inside the service (its rules are in
//! [`crate::planner`]; this is the glue): every folded event becomes the
//! planner's facts, every new prediction may become a decision, and decisions
//! go through the store's outbox ([`crate::outbox`]): queued in the fold batch
//! that made them, published until acknowledged. The brain's beliefs
//! (`node.<n>.predicted`) are only news and go straight to a publisher.
//!
//! Only fresh predictions decide: a sample older than the planner's silence
//! limit (a restart catching up, a replay) updates the state but never
//! triggers a move. The planner is rebuilt from the whole EVENTS stream at
//! start, so migrations requested before a restart are known in flight and
//! never requested twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use loadshift_events::model::Predicted;
use loadshift_events::reader::{self, ReaderConfig, Start};
use loadshift_events::stream::StreamId;
use loadshift_events::{Envelope, Event, NodeName};
use tokio::sync::mpsc;

use crate::live::NodeView;
use crate::model::SharedPredictor;
use crate::planner::{facts_of, Decision, DrainDecision, Fact, Planner, PlannerConfig};

/// How long rebuilding may wait for the next message before giving up.
const REBUILD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a node's belief is republished even when it did not change.
const PREDICTED_REFRESH_SECS: i64 = 30;

/// The planner, its outbox and what it last said about each node.
#[derive(Debug, Clone)]
pub struct PlannerService {
    planner: Planner,
    emitter: NodeName,
    out: mpsc::UnboundedSender<Envelope>,
    predictor: SharedPredictor,
    said: HashMap<NodeName, (f32, f32, DateTime<Utc>)>,
    /// When the first fresh telemetry was folded: before that (and for one
    /// silence limit after, while every node's next report comes in) the
    /// views of the nodes may be behind the log, so what a drain cannot move
    /// is not said yet (a node would look silent that is not).
    live_since: Option<DateTime<Utc>>,
    decided: Vec<Envelope>,
}

impl PlannerService {
    /// A planner publishing through `out` under the name `emitter`.
    pub fn new(
        config: PlannerConfig,
        emitter: NodeName,
        predictor: SharedPredictor,
        out: mpsc::UnboundedSender<Envelope>,
    ) -> Self {
        Self {
            planner: Planner::new(config),
            emitter,
            out,
            predictor,
            said: HashMap::new(),
            live_since: None,
            decided: Vec::new(),
        }
    }

    /// Folds the whole EVENTS stream as it is now (facts only, no
    /// decisions); returns how many events it read.
    ///
    /// # Errors
    /// [`loadshift_events::connection::NatsError`] when the stream cannot be
    /// read to its end.
    pub async fn rebuild(
        &mut self,
        js: &async_nats::jetstream::Context,
    ) -> Result<u64, loadshift_events::connection::NatsError> {
        let cfg =
            ReaderConfig::ephemeral(StreamId::Events, Start::First, "loadshift-brain planner");
        reader::read_existing(js, cfg, REBUILD_IDLE, |d| {
            if let Ok(env) = Envelope::from_message(d.message.subject.as_str(), &d.message.payload)
            {
                self.observe(&env);
            }
        })
        .await
    }

    /// Folds one event of the log.
    pub fn observe(&mut self, env: &Envelope) {
        for f in facts_of(env, env.occurred_at) {
            self.planner.apply(&f);
        }
    }

    /// A new prediction for `node`, made from a sample that occurred at
    /// `occurred_at`: folds it, republishes the belief when it changed, and
    /// decides when it is fresh.
    pub fn predicted(&mut self, node: &NodeName, view: &NodeView, occurred_at: DateTime<Utc>) {
        let (Some(p), Some(version)) = (view.prediction, view.model_version) else {
            return;
        };
        self.planner.apply(&Fact::Prediction {
            node: node.clone(),
            onset: p.onset,
            sustained: p.sustained,
            alarm: p.onset_alarm || p.sustained_alarm,
            model_version: version,
            top_features: Vec::new(),
        });
        let now = Utc::now();
        if !self.fresh(occurred_at, now) {
            return;
        }
        let changed = match self.said.get(node) {
            None => true,
            Some((o, s, at)) => {
                (o - p.onset).abs() >= 0.1
                    || (s - p.sustained).abs() >= 0.1
                    || (now - *at).num_seconds() >= PREDICTED_REFRESH_SECS
            }
        };
        if changed {
            self.said.insert(node.clone(), (p.onset, p.sustained, now));
            self.send(Event::NodePredicted(Predicted {
                node: node.clone(),
                at: chrono::DateTime::from_timestamp_millis(view.at_ms).unwrap_or(now),
                onset: p.onset,
                sustained: p.sustained,
                model_version: version,
            }));
        }
        match self.planner.handle(node, now) {
            Some(Decision::Migrate(mut r)) => {
                r.reason.top_features = self
                    .predictor
                    .read()
                    .ok()
                    .and_then(|g| g.as_ref().map(|m| m.top_features(&view.features, 3)))
                    .unwrap_or_default();
                tracing::info!(migration = %r.migration, workload = %r.workload, source = %r.source, target = %r.target, reason = %r.reason.summary, "requesting a migration");
                self.planner.apply(&Fact::requested(&r, now));
                self.decide(Event::MigrationRequested(r));
            }
            Some(Decision::Defer(d)) => {
                tracing::info!(source = %d.source, reason = %d.reason, "deferring");
                self.planner.apply(&Fact::Deferred {
                    node: d.source.clone(),
                    at: now,
                });
                self.decide(Event::MigrationDeferred(d));
            }
            None => {}
        }
    }

    /// After a telemetry event `env` (a sample or a usage report, about
    /// one a second per node): what the drain rules decide now
    /// ([`Planner::drain`]), each decision applied before the next is asked
    /// for. Only on fresh telemetry, like predictions: a brain catching up
    /// reads stale loads. What cannot move is said only once the brain has
    /// been folding fresh telemetry for a silence limit (every node has
    /// reported by then); moves are made at once.
    pub fn drain(&mut self, env: &Envelope) {
        let telemetry = matches!(
            env.event,
            Event::TelemetrySample(_) | Event::WorkloadUsage(_)
        );
        let now = Utc::now();
        if !telemetry || !self.fresh(env.occurred_at, now) {
            return;
        }
        let live_since = *self.live_since.get_or_insert(now);
        if self.planner.placement().draining.is_empty() {
            return;
        }
        let settled = (now - live_since)
            .to_std()
            .is_ok_and(|d| d >= self.planner.config().silent_after);
        // Each decision changes what the next one sees (a migration in
        // flight, a report made); at most one per workload on the node.
        let bound = self.planner.placement().workloads.len() + 1;
        for _ in 0..bound {
            let event = match self.planner.drain(now) {
                Some(DrainDecision::Migrate(r)) => {
                    tracing::info!(migration = %r.migration, workload = %r.workload, source = %r.source, target = %r.target, "draining: requesting a migration");
                    self.planner.apply(&Fact::requested(&r, now));
                    Event::MigrationRequested(r)
                }
                Some(DrainDecision::Blocked(_)) if !settled => return,
                Some(DrainDecision::Blocked(b)) => {
                    tracing::info!(node = %b.node, workload = %b.workload, reason = %b.reason, "draining: cannot move");
                    Event::NodeDrainBlocked(b)
                }
                None => return,
            };
            let env = Envelope::new(self.emitter.clone(), event);
            if matches!(env.event, Event::NodeDrainBlocked(_)) {
                self.planner.apply(&Fact::Logged(Box::new(env.clone())));
            }
            self.decided.push(env);
        }
    }

    /// Whether an event that occurred at `occurred_at` is news at `now`
    /// (younger than the planner's silence limit; a clock slightly ahead
    /// counts as news): only news may lead to a decision.
    fn fresh(&self, occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        (now - occurred_at)
            .to_std()
            .map(|d| d < self.planner.config().silent_after)
            .unwrap_or(true)
    }

    /// Moves the decisions made since the last call into `batch`'s outbox.
    /// A request that cannot be written is withdrawn at once, and its
    /// nodes are free again.
    pub fn queue_decisions(&mut self, batch: &mut crate::store::Writes) {
        for env in std::mem::take(&mut self.decided) {
            if let crate::outbox::Queued::Withdrawn(w) = crate::outbox::queue(batch, &env) {
                self.planner.apply(&Fact::Logged(w));
            }
        }
    }

    fn decide(&mut self, event: Event) {
        self.decided
            .push(Envelope::new(self.emitter.clone(), event));
    }

    fn send(&self, event: Event) {
        let _ = self.out.send(Envelope::new(self.emitter.clone(), event));
    }
}

/// Publishes what the planner decided, in order, until the channel closes.
pub async fn publisher(
    js: async_nats::jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
) {
    while let Some(env) = rx.recv().await {
        for attempt in 0..5 {
            match loadshift_events::connection::publish(&js, &env).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, subject = %env.subject(), "publish failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
}
