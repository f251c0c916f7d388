//! Migration planning: which node to relieve, which workload to move, where.
//!
//! Imitates cqrs-es: [`Planner::apply`] folds facts from the log into state
//! and holds no rules (where workloads run and which migrations are in
//! flight is the contract's placement fold, the one the CLI and the
//! dashboard read, so the three never disagree); [`Planner::handle`] holds every rule and returns the
//! decision (a `migration.<src>.requested` or a `migration.<src>.deferred`)
//! without changing state. Decisions are published as events and come back
//! through the log like everything else, so a replay or a restart rebuilds the
//! in-flight migrations and cooldowns from the log itself and never issues a
//! migration twice; a brain restarted in the middle of a migration sees it in
//! flight and waits for its outcome.
//!
//! The rules, in order:
//! 1. Hysteresis: a node is in trouble when its predicted onset or sustained
//!    overload probability stayed at or above `level` for `k` predictions in a
//!    row, or when its latest sample is already at or above the threshold.
//! 2. At most one migration in flight per node (as source or target), and a
//!    cooldown per node and per workload, so nothing ping-pongs.
//! 3. Relief, then cost: a node in trouble is expected at its threshold
//!    (or above, if it is already there); a move *relieves* it when it takes
//!    away enough CPU to bring that expected load down to `relief_pct`.
//!    Among the moves that relieve it, the cheapest by estimated freeze
//!    ([`crate::cost`]: resident memory, dirty rate and the throughput of
//!    earlier migrations) wins. When no single move relieves it, the move
//!    that takes away the most CPU, if it takes away at least
//!    `min_relief_pct` points: no move is better than one that relieves
//!    nothing.
//! 4. Each workload goes to the target whose load after taking it is lowest
//!    and below the threshold; never a node that left, went silent, or is
//!    itself predicted to overload; and it must have room for the
//!    workload's memory.
//! 5. No good move: a deferral with the reason, once per node cooldown.
//!
//! A node an operator drains is never a target, and its workloads move off
//! by the rules of [`drain`] (their own functions, sharing the target
//! choice above).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use loadshift_events::migration::{CostEstimate, Reason, Requested};
use loadshift_events::model::Deferred;
use loadshift_events::placement::{self, Change, Placement, WorkloadChange};
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use uuid::Uuid;

mod drain;
use crate::cost::MoveCosts;
pub use drain::{DrainDecision, DRAIN_IN_FLIGHT};

/// The planner's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerConfig {
    /// Probability at or above which a prediction counts as "in trouble"
    /// even without the model's own alarm (its cut-off, chosen in training).
    pub level: f32,
    /// How many predictions in a row must be in trouble (hysteresis).
    pub k: u32,
    /// CPU percent of capacity a target must stay below after the move,
    /// and the load a node in trouble is expected to reach.
    pub threshold_pct: f32,
    /// CPU percent of capacity a node in trouble should be brought down to
    /// (from its expected load): the headroom a move must make for the
    /// rise the model predicts. Chosen on July's simulation (BENCHMARKS.md,
    /// "Issue 9/13 (round 3)").
    pub relief_pct: f32,
    /// Points of a node's capacity below which a move relieves nothing:
    /// such a move costs a freeze and changes nothing, so none is made.
    pub min_relief_pct: f32,
    /// No new migration of a workload this long after its last one.
    pub workload_cooldown: Duration,
    /// No new migration from or to a node this long after its last one.
    pub node_cooldown: Duration,
    /// A node with no sample for this long is silent: never a target.
    pub silent_after: Duration,
    /// How far back a target's and a workload's highest CPU is remembered:
    /// a target is judged by the load it may come back to (a bursty
    /// neighbour idle right now), not only by its latest sample. As long as
    /// `workload_cooldown` by default: a workload moved onto a target stays
    /// there that long, so the target's past over that duration is what it
    /// is judged by (a fixed day rejected almost every target of a month
    /// whose nodes all burst daily: BENCHMARKS.md, "Issue 9 (round 4)").
    pub peak_window: Duration,
    /// Who the requests say asked.
    pub requested_by: String,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            // The model's alarms (its cut-offs, chosen on out-of-bag rows)
            // decide; a raw probability this high counts too.
            level: 0.99,
            k: 3,
            threshold_pct: 90.0,
            relief_pct: RELIEF_PCT,
            min_relief_pct: MIN_RELIEF_PCT,
            workload_cooldown: Duration::from_secs(600),
            node_cooldown: Duration::from_secs(120),
            silent_after: Duration::from_secs(30),
            peak_window: Duration::from_secs(600),
            requested_by: "brain".into(),
        }
    }
}

/// The default of [`PlannerConfig::relief_pct`], chosen on July's
/// simulation (60, 75 and 85 gave 21,660, 21,445 and 21,440 overloaded
/// node-minutes there: the middle one).
pub const RELIEF_PCT: f32 = 75.0;

/// The default of [`PlannerConfig::min_relief_pct`], chosen on July.
pub const MIN_RELIEF_PCT: f32 = 2.0;

/// A fact the planner learns from the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A node joined with this capacity.
    NodeJoined {
        /// Which.
        node: NodeName,
        /// Its memory in bytes (0 = unknown).
        memory_bytes: u64,
    },
    /// A node left on purpose.
    NodeLeft {
        /// Which.
        node: NodeName,
    },
    /// A telemetry sample (only what planning needs).
    Sample {
        /// Which node.
        node: NodeName,
        /// When it was received (wall clock: silence is about now).
        seen_at: DateTime<Utc>,
        /// CPU percent of the node's capacity.
        cpu_pct: f32,
        /// Cores.
        capacity_cores: f32,
        /// Memory in use and in total, bytes.
        memory_used: u64,
        /// Total memory.
        memory_total: u64,
    },
    /// The model's prediction for a node.
    Prediction {
        /// Which node.
        node: NodeName,
        /// Onset probability.
        onset: f32,
        /// Sustained probability.
        sustained: f32,
        /// Either probability is at or above the model's own cut-off.
        alarm: bool,
        /// The model version.
        model_version: u64,
        /// The features that weighed most.
        top_features: Vec<(String, f64)>,
    },
    /// An event of the log about workloads or migrations (started, exited,
    /// usage, every migration step): the placement fold applies it, and the
    /// planner keeps what only it needs (usage, executor liveness, cooldowns).
    Logged(Box<Envelope>),
    /// A migration the planner decided on, before the log brings it back
    /// (applying both changes nothing more than one).
    MigrationRequested {
        /// Its id.
        id: Uuid,
        /// The workload.
        workload: WorkloadName,
        /// From.
        source: NodeName,
        /// To.
        target: NodeName,
        /// When (the event's time).
        at: DateTime<Utc>,
    },
    /// A deferral was recorded for a node.
    Deferred {
        /// The node.
        node: NodeName,
        /// When.
        at: DateTime<Utc>,
    },
}

impl Fact {
    /// The request `r`, decided at `at`, as the planner applies its own
    /// decision before the log brings it back.
    pub fn requested(r: &Requested, at: DateTime<Utc>) -> Self {
        Fact::MigrationRequested {
            id: r.migration,
            workload: r.workload.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            at,
        }
    }
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move a workload: publish as `migration.<source>.requested`.
    Migrate(Requested),
    /// Nothing good to do: publish as `migration.<source>.deferred`.
    Defer(Deferred),
}

#[derive(Debug, Clone, Default)]
struct NodeState {
    joined: bool,
    left: bool,
    seen_at: Option<DateTime<Utc>>,
    cpu_pct: f32,
    capacity_cores: f32,
    memory_used: u64,
    memory_total: u64,
    onset: f32,
    sustained: f32,
    alarm: bool,
    model_version: u64,
    top_features: Vec<(String, f64)>,
    /// Predictions in a row at or above the level.
    streak: u32,
    last_migration: Option<DateTime<Utc>>,
    last_deferred: Option<DateTime<Utc>>,
    /// When its executor last reported: a node without one cannot take work.
    executor_seen: Option<DateTime<Utc>>,
    /// Its highest CPU over the peak window.
    peak: Peak,
}

impl NodeState {
    /// The load a target may come back to: its latest or its recent peak.
    fn expected_pct(&self) -> f32 {
        self.cpu_pct.max(self.peak.max())
    }
}

/// The highest value seen over a sliding window of time (a monotonic
/// queue: amortised O(1) per value), where the latest sample says only
/// where a load is now.
#[derive(Debug, Clone, Default)]
struct Peak {
    /// Values in decreasing order, each with when it was seen.
    kept: VecDeque<(DateTime<Utc>, f32)>,
}

impl Peak {
    fn push(&mut self, at: DateTime<Utc>, value: f32, window: Duration) {
        while self.kept.back().is_some_and(|(_, v)| *v <= value) {
            self.kept.pop_back();
        }
        self.kept.push_back((at, value));
        while self
            .kept
            .front()
            .is_some_and(|(t, _)| !within(Some(*t), at, window) && *t < at)
        {
            self.kept.pop_front();
        }
    }

    fn max(&self) -> f32 {
        self.kept.front().map_or(0.0, |(_, v)| *v)
    }
}

/// What a workload uses, as its executor last reported.
#[derive(Debug, Clone, Copy, Default)]
struct Use {
    cpu_pct: f32,
    /// Its highest CPU over the peak window.
    peak_cpu_pct: f32,
    rss_bytes: u64,
    dirty_bytes_per_sec: f64,
}

/// One possible move off a node in trouble: a workload, its best target,
/// what it takes off the source and what it is expected to cost.
#[derive(Debug, Clone)]
struct Candidate<'a> {
    workload: &'a WorkloadName,
    used: Use,
    /// Points of the source's capacity the move takes away.
    relief: f32,
    target: &'a NodeName,
    target_after: f32,
    estimate: CostEstimate,
}

/// The planner's state, folded from the log.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    config: PlannerConfig,
    nodes: BTreeMap<NodeName, NodeState>,
    /// Where workloads run and what is in flight.
    placement: Placement,
    /// Usage of the workloads with a report, by name.
    usage: BTreeMap<WorkloadName, Use>,
    /// Their CPU peaks.
    usage_peaks: BTreeMap<WorkloadName, Peak>,
    /// When each workload was last asked to move.
    last_migration: BTreeMap<WorkloadName, DateTime<Utc>>,
    /// What earlier migrations measured, for cost estimates.
    throughput: MoveCosts,
}

fn within(since: Option<DateTime<Utc>>, now: DateTime<Utc>, d: Duration) -> bool {
    since.is_some_and(|t| (now - t).to_std().map(|e| e < d).unwrap_or(true))
}

impl Planner {
    /// An empty planner.
    pub fn new(config: PlannerConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// Migrations requested and not yet over.
    pub fn in_flight(&self) -> usize {
        self.placement.in_flight().count()
    }

    /// Where workloads run, as the planner sees it.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Folds one fact. Never fails and holds no rules: a fact is a fact.
    pub fn apply(&mut self, fact: &Fact) {
        match fact {
            Fact::NodeJoined { node, memory_bytes } => {
                let n = self.nodes.entry(node.clone()).or_default();
                n.joined = true;
                n.left = false;
                if *memory_bytes > 0 {
                    n.memory_total = *memory_bytes;
                }
            }
            Fact::NodeLeft { node } => {
                self.nodes.entry(node.clone()).or_default().left = true;
            }
            Fact::Sample {
                node,
                seen_at,
                cpu_pct,
                capacity_cores,
                memory_used,
                memory_total,
            } => {
                let n = self.nodes.entry(node.clone()).or_default();
                n.seen_at = Some(*seen_at);
                n.cpu_pct = *cpu_pct;
                n.peak.push(*seen_at, *cpu_pct, self.config.peak_window);
                n.capacity_cores = *capacity_cores;
                n.memory_used = *memory_used;
                if *memory_total > 0 {
                    n.memory_total = *memory_total;
                }
            }
            Fact::Prediction {
                node,
                onset,
                sustained,
                alarm,
                model_version,
                top_features,
            } => {
                let level = self.config.level;
                let n = self.nodes.entry(node.clone()).or_default();
                n.onset = *onset;
                n.sustained = *sustained;
                n.alarm = *alarm;
                n.model_version = *model_version;
                n.top_features = top_features.clone();
                n.streak = if *alarm || onset.max(*sustained) >= level {
                    n.streak + 1
                } else {
                    0
                };
            }
            Fact::Logged(env) => self.logged(env),
            Fact::MigrationRequested {
                id,
                workload,
                source,
                target,
                at,
            } => {
                let request = Requested {
                    migration: *id,
                    workload: workload.clone(),
                    source: source.clone(),
                    target: target.clone(),
                    requested_by: self.config.requested_by.clone(),
                    reason: Reason::default(),
                    mode: loadshift_events::migration::Mode::Auto,
                };
                let event = Event::MigrationRequested(request);
                self.placement.apply_event(source, *at, &event);
                self.cool_down(workload, [source, target], *at);
            }
            Fact::Deferred { node, at } => {
                self.nodes.entry(node.clone()).or_default().last_deferred = Some(*at);
            }
        }
    }

    /// An event of the log through the placement fold, then what only the
    /// planner keeps.
    fn logged(&mut self, env: &Envelope) {
        let change: Change = self.placement.apply(env);
        if let Some(WorkloadChange::Gone(w)) = &change.workload {
            self.usage.remove(w);
            self.usage_peaks.remove(w);
            self.last_migration.remove(w);
        }
        match &env.event {
            Event::WorkloadUsage(u) => {
                let n = self.nodes.entry(env.node.clone()).or_default();
                n.executor_seen = Some(env.occurred_at);
                for w in &u.workloads {
                    let peak = self.usage_peaks.entry(w.workload.clone()).or_default();
                    peak.push(u.at, w.cpu_pct, self.config.peak_window);
                    let used = Use {
                        cpu_pct: w.cpu_pct,
                        peak_cpu_pct: peak.max(),
                        rss_bytes: w.rss_bytes,
                        dirty_bytes_per_sec: w.dirty_bytes_per_sec.unwrap_or(0.0),
                    };
                    self.usage.insert(w.workload.clone(), used);
                }
            }
            Event::MigrationCompleted(c) => {
                self.throughput.observe(c.mode, c.image_bytes, &c.timings)
            }
            Event::MigrationRequested(r) => {
                self.cool_down(&r.workload, [&r.source, &r.target], env.occurred_at);
            }
            _ => {}
        }
    }

    /// A migration was asked for: the workload and both nodes rest, and
    /// the source's trouble streak starts again.
    fn cool_down(&mut self, workload: &WorkloadName, nodes: [&NodeName; 2], at: DateTime<Utc>) {
        self.last_migration.insert(workload.clone(), at);
        if self.placement.is_draining(nodes[0]) {
            // An operator's drain, not the load: its nodes do not rest
            // (`drain` paces itself).
            return;
        }
        for n in nodes {
            let s = self.nodes.entry(n.clone()).or_default();
            s.last_migration = Some(at);
            s.streak = 0;
        }
    }

    fn busy(&self, node: &NodeName) -> bool {
        self.placement.busy(node)
    }

    fn alive(&self, n: &NodeState, now: DateTime<Utc>) -> bool {
        !n.left && within(n.seen_at, now, self.config.silent_after)
    }

    /// Decides what to do about `node` after its latest prediction; `None`
    /// when nothing is to be done (or said). Changes nothing: the caller
    /// publishes the decision and applies it as a fact.
    pub fn handle(&self, node: &NodeName, now: DateTime<Utc>) -> Option<Decision> {
        let cfg = &self.config;
        let src = self.nodes.get(node)?;
        // In trouble: predicted to overload k times in a row, or overloaded
        // already (a prediction that came too late, or none at all, must not
        // leave the node worse off than a reactive balancer would).
        let overloaded = src.cpu_pct >= cfg.threshold_pct;
        if (src.streak < cfg.k && !overloaded) || self.busy(node) || src.left {
            return None;
        }
        if within(src.last_migration, now, cfg.node_cooldown) {
            return None;
        }
        let probability = src.onset.max(src.sustained);
        let defer = |workload: Option<WorkloadName>, reason: String| {
            if within(src.last_deferred, now, cfg.node_cooldown) {
                return None;
            }
            Some(Decision::Defer(Deferred {
                source: node.clone(),
                workload,
                probability,
                reason,
            }))
        };
        let c = match self.choose(node, src, now) {
            Ok(c) => c,
            Err((workload, reason)) => return defer(workload, reason),
        };
        let source_after = src.cpu_pct - c.relief;
        let (wname, target) = (c.workload, c.target);
        Some(Decision::Migrate(Requested {
            migration: Uuid::now_v7(),
            workload: wname.clone(),
            source: node.clone(),
            target: target.clone(),
            requested_by: cfg.requested_by.clone(),
            reason: Reason {
                summary: format!(
                    "{node} predicted to overload (p={probability:.2}, model v{}); moving {wname} ({:.0}% of a core, {} MiB, about {:.1} s frozen) to {target}",
                    src.model_version,
                    c.used.cpu_pct,
                    c.used.rss_bytes >> 20,
                    c.estimate.freeze_ms / 1000.0,
                ),
                probability: Some(probability),
                model_version: Some(src.model_version),
                top_features: src.top_features.clone(),
                source_load_after_pct: Some(source_after.max(0.0)),
                target_load_after_pct: Some(c.target_after),
                estimate: Some(c.estimate),
            },
            mode: loadshift_events::migration::Mode::Auto,
        }))
    }

    /// The move off `node` (whose state is `src`): the cheapest that brings
    /// its expected load down to `relief_pct`, else the one that takes away
    /// most, if that is at least `min_relief_pct`; or the workload it
    /// would have moved (if any) and why nothing can move.
    fn choose(
        &self,
        node: &NodeName,
        src: &NodeState,
        now: DateTime<Utc>,
    ) -> Result<Candidate<'_>, (Option<WorkloadName>, String)> {
        let cfg = &self.config;
        let cooldown = cfg.workload_cooldown;
        let movable: Vec<(&WorkloadName, Use)> = self
            .placement
            .workloads
            .values()
            .filter(|w| &w.node == node)
            .filter(|w| !within(self.last_migration.get(&w.name).copied(), now, cooldown))
            .filter_map(|w| self.usage.get(&w.name).map(|u| (&w.name, *u)))
            .collect();
        if movable.is_empty() {
            return Err((
                None,
                format!(
                    "no workload on {node} can move (none with known usage outside its cooldown)"
                ),
            ));
        }
        let share = |u: &Use| u.cpu_pct / src.capacity_cores.max(0.01);
        let mut candidates = Vec::new();
        let mut refused = None;
        for (name, used) in &movable {
            match self.target(node, *used, now) {
                Ok((target, target_after)) => candidates.push(Candidate {
                    workload: name,
                    used: *used,
                    relief: share(used),
                    target,
                    target_after,
                    estimate: self
                        .throughput
                        .estimate(used.rss_bytes, used.dirty_bytes_per_sec),
                }),
                Err(detail) => {
                    // Said about the workload that would relieve most.
                    if refused.as_ref().is_none_or(|(_, s, _)| share(used) > *s) {
                        refused = Some(((*name).clone(), share(used), detail));
                    }
                }
            }
        }
        let expected = src.cpu_pct.max(cfg.threshold_pct);
        let needed = expected - cfg.relief_pct;
        let cheapest = candidates
            .iter()
            .filter(|c| c.relief >= needed)
            .min_by(|a, b| {
                (a.estimate.freeze_ms.total_cmp(&b.estimate.freeze_ms))
                    .then(a.target_after.total_cmp(&b.target_after))
                    .then(a.workload.cmp(b.workload))
            });
        let largest = || {
            candidates
                .iter()
                .filter(|c| c.relief >= cfg.min_relief_pct)
                .max_by(|a, b| {
                    (a.relief.total_cmp(&b.relief))
                        .then(b.estimate.freeze_ms.total_cmp(&a.estimate.freeze_ms))
                        .then(b.workload.cmp(a.workload))
                })
        };
        if let Some(c) = cheapest.or_else(largest) {
            return Ok(c.clone());
        }
        Err(match refused {
            Some((w, _, detail)) if candidates.is_empty() => {
                let reason = format!("no target for {w}: {detail}");
                (Some(w), reason)
            }
            _ => (
                None,
                format!(
                    "no move relieves {node}: no workload that can move takes away {:.0} points of its CPU",
                    cfg.min_relief_pct
                ),
            ),
        })
    }

    /// The target whose load after taking `w` stays lowest, under the
    /// threshold, with its load after; or why no node fits.
    fn target(
        &self,
        node: &NodeName,
        w: Use,
        now: DateTime<Utc>,
    ) -> Result<(&NodeName, f32), String> {
        let mut best: Option<(&NodeName, f32)> = None;
        let mut why_not = Vec::new();
        for (name, t) in self.nodes.iter().filter(|(name, _)| *name != node) {
            let after =
                t.expected_pct() + w.cpu_pct.max(w.peak_cpu_pct) / t.capacity_cores.max(0.01);
            match self.refusal(name, t, w, after, now) {
                Some(r) => why_not.push(format!("{name} {r}")),
                None => {
                    if best.is_none_or(|(bn, b)| after < b || (after == b && name < bn)) {
                        best = Some((name, after));
                    }
                }
            }
        }
        best.ok_or_else(|| {
            if why_not.is_empty() {
                "no other node".to_string()
            } else {
                why_not.join(", ")
            }
        })
    }

    /// Why node `name` cannot take `w` (its load would be `after`), if it cannot.
    fn refusal(
        &self,
        name: &NodeName,
        t: &NodeState,
        w: Use,
        after: f32,
        now: DateTime<Utc>,
    ) -> Option<&'static str> {
        let cfg = &self.config;
        if !self.alive(t, now) {
            Some("left or silent")
        } else if self.placement.is_draining(name) {
            Some("is draining")
        } else if !within(t.executor_seen, now, cfg.silent_after) {
            Some("has no executor")
        } else if t.capacity_cores <= 0.0 {
            Some("declares no CPU")
        } else if self.busy(name) {
            Some("has a migration in flight")
        } else if within(t.last_migration, now, cfg.node_cooldown) {
            Some("in cooldown")
        } else if t.alarm || t.onset.max(t.sustained) >= cfg.level {
            Some("predicted to overload")
        } else if after >= cfg.threshold_pct {
            Some("would be overloaded after the move")
        } else if t.memory_total > 0 && t.memory_total.saturating_sub(t.memory_used) < w.rss_bytes {
            Some("has no room for its memory")
        } else {
            None
        }
    }
}

/// The facts an event of the log tells the planner (none for most kinds).
///
/// `seen_at` is when the brain folded it: silence is judged against the
/// brain's clock, not a replayed trace's.
pub fn facts_of(env: &Envelope, seen_at: DateTime<Utc>) -> Vec<Fact> {
    let node = env.node.clone();
    match &env.event {
        Event::NodeJoined(j) => vec![Fact::NodeJoined {
            node,
            memory_bytes: j.memory_bytes,
        }],
        Event::NodeLeft(_) => vec![Fact::NodeLeft { node }],
        Event::TelemetrySample(s) => vec![Fact::Sample {
            node,
            seen_at,
            cpu_pct: s.cpu.usage_pct,
            capacity_cores: s.cpu.capacity_cores,
            memory_used: s.memory.used_bytes,
            memory_total: s.memory.total_bytes,
        }],
        e if placement::reads(e) => vec![Fact::Logged(Box::new(env.clone()))],
        Event::MigrationDeferred(d) => vec![Fact::Deferred {
            node: d.source.clone(),
            at: env.occurred_at,
        }],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::migration::{Step, Timings};
    use loadshift_events::model::{WorkloadUsage, WorkloadUse};
    use loadshift_testkit::fixtures::{self, Move};

    fn n(s: &str) -> NodeName {
        fixtures::node(s)
    }
    fn w(s: &str) -> WorkloadName {
        fixtures::workload(s)
    }
    /// An event of the log, as the planner is given it.
    fn logged(env: Envelope) -> Fact {
        Fact::Logged(Box::new(env))
    }
    /// `node`'s executor reports `workloads` (name, CPU %, RSS) at `at`.
    fn usage_at(node: &str, at: DateTime<Utc>, workloads: &[(&str, f32, u64)]) -> Fact {
        let usage = WorkloadUsage {
            at,
            workloads: workloads
                .iter()
                .map(|(name, cpu_pct, rss_bytes)| WorkloadUse::new(w(name), *cpu_pct, *rss_bytes))
                .collect(),
        };
        logged(fixtures::at(
            Envelope::new(n(node), Event::WorkloadUsage(usage)),
            at,
        ))
    }
    fn now() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }
    fn sample(node: &str, cpu: f32) -> Fact {
        sample_at(node, cpu, now())
    }
    fn sample_at(node: &str, cpu: f32, at: DateTime<Utc>) -> Fact {
        Fact::Sample {
            node: n(node),
            seen_at: at,
            cpu_pct: cpu,
            capacity_cores: 2.0,
            memory_used: 1 << 30,
            memory_total: 8 << 30,
        }
    }
    fn executor_at(node: &str, at: DateTime<Utc>) -> Fact {
        usage_at(node, at, &[])
    }
    fn predict(node: &str, p: f32) -> Fact {
        Fact::Prediction {
            node: n(node),
            onset: p,
            sustained: 0.0,
            alarm: p >= 0.5,
            model_version: 3,
            top_features: vec![("cpu_now".into(), 0.4)],
        }
    }

    /// given(facts).when(node).then: the cqrs-es shape.
    fn given(facts: &[Fact]) -> Planner {
        let mut p = Planner::new(PlannerConfig::default());
        for f in facts {
            p.apply(f);
        }
        p
    }

    fn cluster() -> Vec<Fact> {
        let mut f = vec![];
        for (node, cpu) in [("node2", 85.0), ("node3", 20.0), ("node4", 50.0)] {
            f.push(Fact::NodeJoined {
                node: n(node),
                memory_bytes: 8 << 30,
            });
            f.push(sample(node, cpu));
        }
        f.push(logged(fixtures::started("node2", "small", now())));
        f.push(logged(fixtures::started("node2", "big", now())));
        f.push(usage_at(
            "node2",
            now(),
            &[("small", 60.0, 64 << 20), ("big", 80.0, 2 << 30)],
        ));
        for node in ["node3", "node4"] {
            f.push(executor_at(node, now()));
        }
        f
    }

    fn trouble(node: &str, times: usize) -> Vec<Fact> {
        (0..times).map(|_| predict(node, 0.9)).collect()
    }

    #[test]
    fn moves_the_cheapest_relieving_workload_to_the_emptiest_node_after_k_predictions() {
        let mut facts = cluster();
        facts.extend(trouble("node2", 2));
        assert_eq!(
            given(&facts).handle(&n("node2"), now()),
            None,
            "two is below k=3"
        );
        facts.extend(trouble("node2", 1));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(
            r.workload,
            w("small"),
            "both relieve node2 (30 and 40 points, 15 needed): 64 MiB is cheaper than 2 GiB"
        );
        assert_eq!(r.target, n("node3"));
        assert_eq!(r.reason.probability, Some(0.9));
        assert_eq!(r.reason.model_version, Some(3));
        assert_eq!(r.reason.target_load_after_pct, Some(50.0));
        assert_eq!(r.reason.source_load_after_pct, Some(55.0));
        assert!(!r.reason.top_features.is_empty());
    }

    #[test]
    fn a_calm_prediction_resets_the_streak() {
        let mut facts = cluster();
        facts.extend(trouble("node2", 2));
        facts.push(predict("node2", 0.1));
        facts.extend(trouble("node2", 2));
        assert_eq!(given(&facts).handle(&n("node2"), now()), None);
    }

    #[test]
    fn nothing_while_a_migration_is_in_flight_and_nothing_during_cooldown() {
        let mut facts = cluster();
        facts.extend(trouble("node2", 3));
        let p = given(&facts);
        let Some(Decision::Migrate(r)) = p.handle(&n("node2"), now()) else {
            panic!()
        };
        // The decision comes back from the log as a fact.
        facts.push(Fact::MigrationRequested {
            id: r.migration,
            workload: r.workload.clone(),
            source: r.source.clone(),
            target: r.target.clone(),
            at: now(),
        });
        facts.extend(trouble("node2", 3));
        assert_eq!(
            given(&facts).handle(&n("node2"), now()),
            None,
            "in flight: wait for the outcome"
        );
        let m = Move::with_id(
            r.migration,
            r.workload.as_str(),
            r.source.as_str(),
            r.target.as_str(),
        );
        facts.push(logged(m.completed(now(), Timings::default())));
        facts.extend(trouble("node2", 3));
        let soon = now() + chrono::Duration::seconds(60);
        assert_eq!(
            given(&facts).handle(&n("node2"), soon),
            None,
            "node cooldown"
        );
        let later = now() + chrono::Duration::seconds(300);
        let mut p = given(&facts);
        for (node, cpu) in [("node2", 85.0), ("node3", 20.0), ("node4", 30.0)] {
            p.apply(&sample_at(node, cpu, later));
            p.apply(&executor_at(node, later));
        }
        // `small` moved and is in its own cooldown; `big` is what is left.
        let Some(Decision::Migrate(r2)) = p.handle(&n("node2"), later) else {
            panic!("expected a second move")
        };
        assert_eq!(r2.workload, w("big"));
    }

    #[test]
    fn replaying_the_log_rebuilds_the_in_flight_migration() {
        let mut facts = cluster();
        facts.extend(trouble("node2", 3));
        let id = Uuid::now_v7();
        facts.push(Fact::MigrationRequested {
            id,
            workload: w("small"),
            source: n("node2"),
            target: n("node3"),
            at: now(),
        });
        // A restarted brain folds the same facts: it waits, whatever it predicts.
        let mut p = given(&facts);
        for _ in 0..5 {
            p.apply(&predict("node2", 0.99));
        }
        assert_eq!(p.in_flight(), 1);
        assert_eq!(
            p.handle(&n("node2"), now() + chrono::Duration::seconds(3600)),
            None
        );
    }

    #[test]
    fn defers_with_the_reason_when_no_target_fits() {
        let mut facts = cluster();
        facts.push(sample("node3", 89.0));
        facts.push(Fact::NodeLeft { node: n("node4") });
        facts.extend(trouble("node2", 3));
        let Some(Decision::Defer(d)) = given(&facts).handle(&n("node2"), now()) else {
            panic!()
        };
        assert_eq!(d.source, n("node2"));
        assert!(
            d.reason.contains("node3 would be overloaded"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("node4 left or silent"), "{}", d.reason);
        // Said once per cooldown, not on every prediction.
        facts.push(Fact::Deferred {
            node: n("node2"),
            at: now(),
        });
        assert_eq!(given(&facts).handle(&n("node2"), now()), None);
    }

    #[test]
    fn silent_and_overload_predicted_nodes_are_never_targets() {
        let mut facts = cluster();
        facts.push(sample_at(
            "node3",
            5.0,
            now() - chrono::Duration::seconds(120),
        ));
        facts.push(predict("node4", 0.8));
        facts.extend(trouble("node2", 3));
        let Some(Decision::Defer(d)) = given(&facts).handle(&n("node2"), now()) else {
            panic!()
        };
        assert!(
            d.reason.contains("node3 left or silent")
                && d.reason.contains("node4 predicted to overload"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_log_tells_the_planner_where_workloads_run_and_what_is_in_flight() {
        let m = Move::new("small", "node2", "node3");
        let mut p = given(&cluster());
        let asked = m.requested(now(), "brain", Reason::default());
        for f in facts_of(&asked, now()) {
            p.apply(&f);
        }
        assert_eq!(p.in_flight(), 1);
        for f in facts_of(&m.completed(now(), Timings::default()), now()) {
            p.apply(&f);
        }
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.placement().workloads[&w("small")].node, n("node3"));
    }

    #[test]
    fn its_own_decision_and_the_same_request_from_the_log_are_one_migration() {
        let m = Move::new("small", "node2", "node3");
        let mut p = given(&cluster());
        p.apply(&Fact::MigrationRequested {
            id: m.id,
            workload: m.workload.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            at: now(),
        });
        p.apply(&logged(m.requested(now(), "brain", Reason::default())));
        assert_eq!(p.in_flight(), 1);
        p.apply(&logged(m.failed(now(), Step::Restore, "criu said no")));
        p.apply(&logged(m.rolled_back(now(), None)));
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.placement().workloads[&w("small")].node, n("node2"));
    }

    #[test]
    fn an_exit_reported_by_a_node_the_workload_left_does_not_end_it() {
        let m = Move::new("small", "node2", "node3");
        let mut facts = cluster();
        facts.push(logged(m.requested(now(), "brain", Reason::default())));
        facts.push(logged(m.completed(now(), Timings::default())));
        facts.push(logged(fixtures::exited("node2", "small", now())));
        let p = given(&facts);
        assert_eq!(p.placement().workloads[&w("small")].node, n("node3"));
        let mut p = p;
        p.apply(&logged(fixtures::exited("node3", "small", now())));
        assert!(!p.placement().workloads.contains_key(&w("small")));
    }

    #[test]
    fn a_node_without_an_executor_is_never_a_target() {
        let mut facts = cluster();
        // node5 is idle and alive, but only an agent runs there (a control
        // plane node): nothing can be restored on it.
        facts.push(Fact::NodeJoined {
            node: n("node5"),
            memory_bytes: 8 << 30,
        });
        facts.push(sample("node5", 1.0));
        facts.push(sample("node3", 89.5));
        facts.push(sample("node4", 89.5));
        facts.extend(trouble("node2", 3));
        let Some(Decision::Defer(d)) = given(&facts).handle(&n("node2"), now()) else {
            panic!()
        };
        assert!(d.reason.contains("node5 has no executor"), "{}", d.reason);
    }

    /// node2 (2 cores) at `cpu` % with `workloads` (name, % of a core, RSS),
    /// node3 idle, node4 half busy, node2 in trouble.
    fn in_trouble(cpu: f32, workloads: &[(&str, f32, u64)]) -> Vec<Fact> {
        let mut f = vec![];
        for (node, load) in [("node2", cpu), ("node3", 10.0), ("node4", 50.0)] {
            f.push(Fact::NodeJoined {
                node: n(node),
                memory_bytes: 8 << 30,
            });
            f.push(sample(node, load));
            f.push(executor_at(node, now()));
        }
        for (name, _, _) in workloads {
            f.push(logged(fixtures::started("node2", name, now())));
        }
        f.push(usage_at("node2", now(), workloads));
        f.extend(trouble("node2", 3));
        f
    }

    #[test]
    fn a_cheap_relieving_move_wins_over_a_costly_one_and_over_a_cheaper_one_that_does_not_relieve()
    {
        // Expected at 90 %, to be brought to 75 %: 15 points needed. `crumb`
        // is cheapest but takes 6; `big` and `mid` both relieve, `mid` copies
        // a quarter of the memory.
        let facts = in_trouble(
            80.0,
            &[
                ("crumb", 12.0, 8 << 20),
                ("mid", 40.0, 512 << 20),
                ("big", 70.0, 2 << 30),
            ],
        );
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(r.workload, w("mid"));
        assert_eq!(r.target, n("node3"), "the target lowest after the move");
        let expected = MoveCosts::default().estimate(512 << 20, 0.0);
        assert_eq!(r.reason.estimate, Some(expected));
        assert!(
            r.reason.summary.contains("s frozen"),
            "{}",
            r.reason.summary
        );
    }

    #[test]
    fn when_no_single_move_relieves_the_one_that_takes_away_most() {
        // At 130 %: 55 points needed, none takes that much; `big` takes 35.
        let facts = in_trouble(130.0, &[("mid", 40.0, 512 << 20), ("big", 70.0, 2 << 30)]);
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(r.workload, w("big"));
        assert_eq!(r.reason.source_load_after_pct, Some(95.0));
    }

    #[test]
    fn no_move_rather_than_one_that_relieves_nothing() {
        // Both idle workloads take away under `min_relief_pct` (2) points
        // of node2 (1.5 and 0.5 of its 2 cores).
        assert_eq!(MIN_RELIEF_PCT, 2.0);
        let facts = in_trouble(92.0, &[("idle", 3.0, 8 << 20), ("idler", 1.0, 1 << 20)]);
        let Some(Decision::Defer(d)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a deferral");
        };
        assert!(d.reason.contains("no move relieves node2"), "{}", d.reason);
    }

    #[test]
    fn the_estimate_follows_the_throughput_of_earlier_migrations() {
        let mut facts = in_trouble(80.0, &[("mid", 40.0, 96 << 20)]);
        let earlier = Move::new("gone", "node4", "node3");
        let timings = Timings {
            downtime_ms: Some(600.0),
            total_ms: Some(1600.0),
            ..Timings::default()
        };
        facts.push(logged(earlier.completed(now(), timings)));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        // 48 MiB (the fixture's image) in 0.5 s beyond the fixed 0.1 s:
        // 96 MiB freezes 1.1 s, and the migration lasts 1 s more.
        assert_eq!(fixtures::IMAGE_BYTES, 48 << 20);
        let e = r.reason.estimate.expect("an estimate");
        assert!((e.freeze_ms - 1100.0).abs() < 1e-6, "{e:?}");
        assert!((e.total_ms - 2100.0).abs() < 1e-6, "{e:?}");
    }

    #[test]
    fn a_target_is_judged_by_the_load_it_may_come_back_to() {
        // node3 is idle now but was at 85 % five minutes ago (a bursty
        // neighbour, within the peak window): node4, steady at 50 %, is the
        // target whose load after the move stays lowest.
        let mut facts = vec![sample_at(
            "node3",
            85.0,
            now() - chrono::Duration::seconds(300),
        )];
        facts.extend(in_trouble(80.0, &[("mid", 40.0, 512 << 20)]));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(r.target, n("node4"));
        assert_eq!(r.reason.target_load_after_pct, Some(70.0));
    }

    #[test]
    fn a_peak_older_than_the_peak_window_no_longer_counts_against_a_target() {
        // Given node3 at 85 % once, 11 minutes ago (the default window is
        // 10 minutes: as long as a moved workload must stay), and idle since.
        let mut facts = vec![sample_at(
            "node3",
            85.0,
            now() - chrono::Duration::seconds(660),
        )];
        facts.extend(in_trouble(80.0, &[("mid", 40.0, 512 << 20)]));
        assert_eq!(
            PlannerConfig::default().peak_window,
            PlannerConfig::default().workload_cooldown
        );
        // When node2 is relieved, then the idle node3 is the target again.
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(r.target, n("node3"));
        assert_eq!(r.reason.target_load_after_pct, Some(30.0));
    }

    #[test]
    fn a_node_already_overloaded_is_relieved_without_waiting_for_k_predictions() {
        let mut facts = in_trouble(95.0, &[("mid", 40.0, 512 << 20)]);
        facts.push(predict("node2", 0.1));
        let Some(Decision::Migrate(r)) = given(&facts).handle(&n("node2"), now()) else {
            panic!("expected a migration");
        };
        assert_eq!(r.workload, w("mid"));
        facts.push(sample("node2", 80.0));
        assert_eq!(given(&facts).handle(&n("node2"), now()), None);
    }
}
