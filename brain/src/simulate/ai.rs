//! The `ai` policy: the brain's own [`Planner`] fed the same facts the
//! service feeds it (node joined, samples, workload usage, the predictor's
//! belief about each node from the same [`NodeWindow`] code), deciding with
//! the same `handle`, its decisions applied back as facts, as the service
//! applies the events it publishes. Only the clock differs: the trace's.

use chrono::{DateTime, Utc};
use loadshift_events::migration::{Completed, Timings};
use loadshift_events::model::{WorkloadUsage, WorkloadUse};
use loadshift_events::telemetry::{Cpu, Memory};
use loadshift_events::workload::{Started, WorkloadSpec};
use loadshift_events::{Envelope, Event, NodeName, Sample, WorkloadName};
use uuid::Uuid;

use super::policy::{Move, Policy, View};
use super::SimulateError;
use crate::features::NodeWindow;
use crate::model::Predictor;
use crate::planner::{Decision, Fact, Planner, PlannerConfig};

/// The `ai` planner's cooldown per node in the simulation. Chosen on July
/// (BENCHMARKS.md, "Issue 9 (round 4): simulate"): among 5 and 15 minutes,
/// with a workload cooldown and peak window of 30 min, 1 h, 2 h or 4 h,
/// 15 minutes and 2 h gave the lowest mean ratio of overloaded node-minutes
/// to `none` over eight July layouts.
pub const SIM_NODE_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The `ai` planner's cooldown per workload in the simulation, and its peak
/// window (chosen on July with [`SIM_NODE_COOLDOWN`]).
pub const SIM_WORKLOAD_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// The planner and the predictor, as one policy.
#[derive(Debug)]
pub struct Ai {
    planner: Planner,
    predictor: Predictor,
    windows: Vec<NodeWindow>,
    nodes: Vec<NodeName>,
    workloads: Vec<WorkloadName>,
    /// Which workloads the planner has been told started (once each: a
    /// move afterwards reaches it as a completed migration).
    announced: Vec<bool>,
    joined: bool,
}

/// `event` as the log would carry it: emitted by `node` at `at`.
fn logged(node: &NodeName, event: Event, at: DateTime<Utc>) -> Fact {
    let mut env = Envelope::new(node.clone(), event);
    env.occurred_at = at;
    Fact::Logged(Box::new(env))
}

impl Ai {
    /// A planner with `config` for `nodes` nodes and `workloads` workloads.
    ///
    /// # Errors
    /// [`SimulateError::Usage`] if a generated name is refused (cannot
    /// happen for the names used: `node<i>`, `vm<i>`).
    pub fn new(
        predictor: Predictor,
        config: PlannerConfig,
        nodes: usize,
        workloads: usize,
    ) -> Result<Self, SimulateError> {
        let bad = |e: &dyn std::fmt::Display| SimulateError::Usage(e.to_string());
        let window = predictor.model().config.labels.window();
        Ok(Self {
            planner: Planner::new(config),
            predictor,
            windows: vec![window; nodes],
            nodes: (0..nodes)
                .map(|i| NodeName::new(format!("node{i}")).map_err(|e| bad(&e)))
                .collect::<Result<_, _>>()?,
            workloads: (0..workloads)
                .map(|i| WorkloadName::new(format!("vm{i}")).map_err(|e| bad(&e)))
                .collect::<Result<_, _>>()?,
            announced: vec![false; workloads],
            joined: false,
        })
    }

    /// The planner configuration the simulation uses: the service's
    /// defaults, with the hysteresis of one model step (one prediction per
    /// 5-minute sample here: three in a row would wait 15 minutes, the whole
    /// horizon), a cooldown of [`SIM_NODE_COOLDOWN`] per node and of
    /// [`SIM_WORKLOAD_COOLDOWN`] per workload, and a peak window as long as
    /// the workload cooldown: a workload moved onto a target must stay
    /// there that long, so the target is judged by its peak over that same
    /// duration (the service's defaults are tied the same way, 10 minutes
    /// each), not over a fixed day.
    pub fn planner_config() -> PlannerConfig {
        PlannerConfig {
            k: 1,
            node_cooldown: SIM_NODE_COOLDOWN,
            workload_cooldown: SIM_WORKLOAD_COOLDOWN,
            silent_after: std::time::Duration::from_secs(600),
            peak_window: SIM_WORKLOAD_COOLDOWN,
            requested_by: "simulate".into(),
            ..PlannerConfig::default()
        }
    }

    fn observe(&mut self, v: &View<'_>, now: DateTime<Utc>) {
        for (i, node) in self.nodes.iter().enumerate() {
            let on: Vec<usize> = (0..v.workloads.len())
                .filter(|&w| v.workloads[w].node == i)
                .collect();
            let used: u64 = on.iter().map(|&w| v.workloads[w].memory_bytes).sum();
            let sample = Sample::new(
                now,
                0,
                Cpu {
                    usage_pct: v.load_pct[i],
                    capacity_cores: v.capacity_cores,
                    per_core_pct: Vec::new(),
                },
                Memory {
                    used_bytes: used,
                    total_bytes: v.memory_bytes,
                },
            );
            self.planner.apply(&Fact::Sample {
                node: node.clone(),
                seen_at: now,
                cpu_pct: v.load_pct[i],
                capacity_cores: v.capacity_cores,
                memory_used: used,
                memory_total: v.memory_bytes,
            });
            for &w in &on {
                if !self.announced[w] {
                    self.announced[w] = true;
                    let started = Started {
                        workload: self.workloads[w].clone(),
                        spec: WorkloadSpec::process(vec![format!("vm{w}")]),
                        pid: None,
                        container_id: None,
                    };
                    let fact = logged(node, Event::WorkloadStarted(started), now);
                    self.planner.apply(&fact);
                }
            }
            let usage = WorkloadUsage {
                at: now,
                workloads: on
                    .iter()
                    .map(|&w| {
                        let x = v.workloads[w];
                        WorkloadUse::new(self.workloads[w].clone(), x.cores * 100.0, x.memory_bytes)
                    })
                    .collect(),
            };
            let fact = logged(node, Event::WorkloadUsage(usage), now);
            self.planner.apply(&fact);
            self.windows[i].set_workloads(Some(on.len() as u32));
            if let Some(x) = self.windows[i].push(&sample) {
                let p = self.predictor.predict(&x);
                self.planner.apply(&Fact::Prediction {
                    node: node.clone(),
                    onset: p.onset,
                    sustained: p.sustained,
                    alarm: p.onset_alarm || p.sustained_alarm,
                    model_version: self.predictor.version,
                    top_features: Vec::new(),
                });
            }
        }
    }
}

impl Policy for Ai {
    fn name(&self) -> &'static str {
        "ai"
    }

    fn decide(&mut self, v: &View<'_>) -> Vec<Move> {
        let now = DateTime::from_timestamp_millis(v.at_ms).unwrap_or(DateTime::UNIX_EPOCH);
        if !self.joined {
            self.joined = true;
            for node in &self.nodes {
                self.planner.apply(&Fact::NodeJoined {
                    node: node.clone(),
                    memory_bytes: v.memory_bytes,
                });
            }
        }
        self.observe(v, now);
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].clone();
            match self.planner.handle(&node, now) {
                Some(Decision::Migrate(r)) => {
                    let w = self.workloads.iter().position(|x| *x == r.workload);
                    let t = self.nodes.iter().position(|x| *x == r.target);
                    let id = Uuid::now_v7();
                    self.planner.apply(&Fact::MigrationRequested {
                        id,
                        workload: r.workload.clone(),
                        source: r.source.clone(),
                        target: r.target.clone(),
                        at: now,
                    });
                    // A move is over well within a step (seconds, against
                    // 5 minutes): the simulator applies it from the next.
                    let completed = Completed {
                        migration: id,
                        workload: r.workload.clone(),
                        source: r.source.clone(),
                        target: r.target.clone(),
                        image_bytes: 0,
                        timings: Timings::default(),
                        mode: None,
                        fallback: None,
                    };
                    let fact = logged(&r.source, Event::MigrationCompleted(completed), now);
                    self.planner.apply(&fact);
                    if let (Some(workload), Some(target)) = (w, t) {
                        out.push(Move { workload, target });
                    }
                }
                Some(Decision::Defer(_)) => {
                    self.planner.apply(&Fact::Deferred { node, at: now });
                }
                None => {}
            }
        }
        out
    }
}
