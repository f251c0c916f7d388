//! `loadshift-brain simulate`: the closed-loop value benchmark. The VMs of a
//! trace run as workloads on `N` simulated nodes; time advances one trace step
//! (5 minutes) at a time; a [`Policy`] may move workloads, each move charged
//! by the [`CostModel`]; overloaded node-minutes, episodes, migrations and
//! GiB moved are counted per policy, so a policy's value is measured as
//! overload avoided per migration, not as a forecast score.
//!
//! Bookkeeping, one step at a time:
//! 1. every node's load is the sum of the demand of the workloads placed on
//!    it (a VM's demand: its CPU % times its cores), plus the CPU its
//!    executor spends dumping a workload that left it at the previous step;
//! 2. a node at or above 90 % of its capacity is overloaded for the whole
//!    step (an *episode* starts when it was not at the step before);
//! 3. the policy sees this step's loads and returns moves; the simulator
//!    refuses a move of a workload still in its cooldown, and applies the
//!    others from the **next** step (both nodes' loads change then), charging
//!    each its freeze and its dump CPU.

pub mod ai;
pub mod policy;
pub mod report;

use std::path::Path;

pub use policy::{Move, Policy, View, WorkloadView};

/// Overload: CPU at or above this share of a node's capacity.
pub const OVERLOAD_PCT: f32 = 90.0;

/// What a migration costs, from the measurements in BENCHMARKS.md
/// ("Issue 3": 1024 MiB frozen 6.61 s, of which 0.67 s dumping).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Image bytes moved per second of freeze.
    pub freeze_bytes_per_sec: f64,
    /// Fixed part of every freeze, seconds.
    pub freeze_fixed_secs: f64,
    /// Seconds of one core the source spends dumping one GiB.
    pub dump_core_secs_per_gib: f64,
    /// No new move of a workload this long after its last one, ms.
    pub cooldown_ms: i64,
}

impl Default for CostModel {
    fn default() -> Self {
        Self {
            // 1024 MiB in 6.61 s: ~155 MiB/s, the slowest rate measured.
            freeze_bytes_per_sec: 1024.0 * 1024.0 * 1024.0 / 6.61,
            freeze_fixed_secs: 0.1,
            dump_core_secs_per_gib: 0.67,
            // The planner's default workload cooldown.
            cooldown_ms: 10 * 60_000,
        }
    }
}

impl CostModel {
    /// Seconds a workload of `bytes` is frozen while it moves.
    pub fn freeze_secs(&self, bytes: u64) -> f64 {
        self.freeze_fixed_secs + bytes as f64 / self.freeze_bytes_per_sec
    }

    /// Core-seconds the source spends dumping `bytes`.
    pub fn dump_core_secs(&self, bytes: u64) -> f64 {
        self.dump_core_secs_per_gib * bytes as f64 / GIB
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The workloads' demand on a common time grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Workload names (one per trace file).
    pub names: Vec<String>,
    /// Step, ms.
    pub step_ms: i64,
    /// Time of each step, ms.
    pub times: Vec<i64>,
    /// `cores[w][t]`: cores workload `w` uses at step `t`.
    pub cores: Vec<Vec<f32>>,
    /// `memory[w][t]`: bytes workload `w` holds at step `t`.
    pub memory: Vec<Vec<u64>>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// the traces could not be loaded
    #[error(transparent)]
    Trace(#[from] loadshift_trace::TraceError),
    /// nothing to simulate
    #[error("{0}")]
    Empty(String),
    /// a bad option
    #[error("{0}")]
    Usage(String),
}

impl Grid {
    /// Resamples every trace of `dir` to one grid of `step_ms`: at each
    /// step a VM shows its latest sample at or before it, if that sample is
    /// at most two steps old (else it is off: no demand).
    ///
    /// # Errors
    /// [`SimulateError`] when the traces cannot be read or hold no row.
    pub fn from_traces(dir: &Path, step_ms: i64) -> Result<Self, SimulateError> {
        let traces = loadshift_trace::load(dir, None)?;
        let rows =
            |t: &loadshift_trace::NodeTrace| t.rows.iter().map(|r| r.at * 1000).collect::<Vec<_>>();
        let start = traces.iter().filter_map(|t| rows(t).first().copied()).min();
        let end = traces.iter().filter_map(|t| rows(t).last().copied()).max();
        let (Some(start), Some(end)) = (start, end) else {
            return Err(SimulateError::Empty(format!(
                "no trace row in {}",
                dir.display()
            )));
        };
        let times: Vec<i64> = (0..=((end - start) / step_ms))
            .map(|i| start + i * step_ms)
            .collect();
        let mut g = Grid {
            names: Vec::new(),
            step_ms,
            times,
            cores: Vec::new(),
            memory: Vec::new(),
        };
        for t in &traces {
            let at = rows(t);
            let (mut c, mut m) = (Vec::new(), Vec::new());
            for &now in &g.times {
                let i = at.partition_point(|a| *a <= now);
                let row = i
                    .checked_sub(1)
                    .map(|j| &t.rows[j])
                    .filter(|r| now - r.at * 1000 <= 2 * step_ms);
                c.push(row.map_or(0.0, |r| (r.cpu_pct.max(0.0) / 100.0) * r.cores.max(0.0)));
                m.push(row.map_or(0, |r| (r.memory_used_kb.max(0.0) * 1024.0) as u64));
            }
            g.names.push(t.node.to_string());
            g.cores.push(c);
            g.memory.push(m);
        }
        Ok(g)
    }

    /// Mean total demand over the grid, cores.
    pub fn mean_total_cores(&self) -> f64 {
        if self.times.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.cores.iter().flatten().map(|c| f64::from(*c)).sum();
        sum / self.times.len() as f64
    }
}

/// Where the workloads start and how big the nodes are.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Cores of every node (all nodes alike).
    pub capacity_cores: f32,
    /// Memory of every node, bytes (reported to the planner).
    pub memory_bytes: u64,
    /// Start node of each workload.
    pub placement: Vec<usize>,
    /// Nodes.
    pub nodes: usize,
}

impl Layout {
    /// The default layout: workload `i` on node `i mod n` (trace files in
    /// name order), and every node sized so that the cluster's mean total
    /// demand is [`DEFAULT_MEAN_LOAD`] of the whole cluster's capacity (at
    /// least the largest single demand, so that every VM fits on an empty
    /// node).
    pub fn default_for(grid: &Grid, nodes: usize) -> Self {
        let n = nodes.max(1);
        let biggest = grid.cores.iter().flatten().copied().fold(0.0f32, f32::max);
        let capacity = ((grid.mean_total_cores() / DEFAULT_MEAN_LOAD / n as f64) as f32)
            .max(biggest / (OVERLOAD_PCT / 100.0))
            .max(0.1);
        let memory: u64 = grid
            .memory
            .iter()
            .map(|m| m.iter().copied().max().unwrap_or(0))
            .sum();
        Self {
            capacity_cores: (capacity * 10.0).ceil() / 10.0,
            memory_bytes: memory.div_ceil(n as u64) * 2,
            placement: (0..grid.names.len()).map(|i| i % n).collect(),
            nodes: n,
        }
    }
}

/// Mean total demand over the whole cluster's capacity in the default
/// layout: busy enough that the spikes of co-located VMs overload nodes,
/// idle enough on average that there is somewhere to move them.
pub const DEFAULT_MEAN_LOAD: f64 = 0.35;

/// What one policy did over the whole grid.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Outcome {
    /// The policy.
    pub policy: String,
    /// Node-minutes at or above 90 % of capacity.
    pub overload_node_minutes: f64,
    /// Overload episodes (a node entering overload).
    pub overload_episodes: u64,
    /// Migrations carried out.
    pub migrations: u64,
    /// GiB moved by them.
    pub gib_moved: f64,
    /// Seconds workloads spent frozen.
    pub freeze_seconds: f64,
    /// Core-seconds spent dumping.
    pub dump_core_seconds: f64,
    /// Moves refused (workload in its cooldown, or a bad move).
    pub refused: u64,
    /// Overload node-minutes avoided per migration, relative to `none`
    /// (filled in by the report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avoided_per_migration: Option<f64>,
}

/// Runs `policy` over `grid` from `layout`.
pub fn run(grid: &Grid, layout: &Layout, policy: &mut dyn Policy, cost: &CostModel) -> Outcome {
    let n = layout.nodes;
    let mut placement = layout.placement.clone();
    let mut last_moved: Vec<Option<i64>> = vec![None; grid.names.len()];
    let mut dump_cores = vec![0f32; n];
    let mut was_over = vec![false; n];
    let mut out = Outcome {
        policy: policy.name().to_string(),
        ..Outcome::default()
    };
    let step_min = grid.step_ms as f64 / 60_000.0;
    for (t, &now) in grid.times.iter().enumerate() {
        let mut load = std::mem::take(&mut dump_cores);
        dump_cores = vec![0f32; n];
        for (w, &node) in placement.iter().enumerate() {
            load[node] += grid.cores[w][t];
        }
        let pct: Vec<f32> = load
            .iter()
            .map(|l| l / layout.capacity_cores * 100.0)
            .collect();
        for (node, p) in pct.iter().enumerate() {
            let over = *p >= OVERLOAD_PCT;
            if over {
                out.overload_node_minutes += step_min;
                if !was_over[node] {
                    out.overload_episodes += 1;
                }
            }
            was_over[node] = over;
        }
        let workloads: Vec<WorkloadView> = placement
            .iter()
            .enumerate()
            .map(|(w, &node)| WorkloadView {
                node,
                cores: grid.cores[w][t],
                memory_bytes: grid.memory[w][t],
                last_moved_ms: last_moved[w],
            })
            .collect();
        let view = View {
            at_ms: now,
            step_ms: grid.step_ms,
            capacity_cores: layout.capacity_cores,
            memory_bytes: layout.memory_bytes,
            load_pct: &pct,
            workloads: &workloads,
            cooldown_ms: cost.cooldown_ms,
        };
        for m in policy.decide(&view) {
            let ok = m.workload < placement.len()
                && m.target < n
                && placement[m.workload] != m.target
                && last_moved[m.workload].is_none_or(|at| now - at >= cost.cooldown_ms);
            if !ok {
                out.refused += 1;
                continue;
            }
            let bytes = grid.memory[m.workload][t];
            let source = placement[m.workload];
            placement[m.workload] = m.target;
            last_moved[m.workload] = Some(now);
            out.migrations += 1;
            out.gib_moved += bytes as f64 / GIB;
            out.freeze_seconds += cost.freeze_secs(bytes);
            let dump = cost.dump_core_secs(bytes);
            out.dump_core_seconds += dump;
            dump_cores[source] += (dump / (grid.step_ms as f64 / 1000.0)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::policy::Scripted;

    /// Two nodes of 1 core, two workloads: `a` (0.6 core) and `b` (0.5 core)
    /// both on node 0, which is overloaded until `a` moves.
    fn tiny() -> (Grid, Layout) {
        let steps = 6;
        let g = Grid {
            names: vec!["a".into(), "b".into()],
            step_ms: 300_000,
            times: (0..steps).map(|i| i * 300_000).collect(),
            cores: vec![vec![0.6; steps as usize], vec![0.5; steps as usize]],
            memory: vec![vec![1 << 30; steps as usize], vec![1 << 20; steps as usize]],
        };
        let l = Layout {
            capacity_cores: 1.0,
            memory_bytes: 8 << 30,
            placement: vec![0, 0],
            nodes: 2,
        };
        (g, l)
    }

    #[test]
    fn nothing_moved_means_every_step_overloaded() {
        let (g, l) = tiny();
        let o = run(&g, &l, &mut policy::Stay, &CostModel::default());
        assert_eq!(o.overload_node_minutes, 30.0);
        assert_eq!(o.overload_episodes, 1);
        assert_eq!(o.migrations, 0);
    }

    #[test]
    fn a_move_changes_both_loads_from_the_next_step_and_is_charged() {
        let (g, l) = tiny();
        // Move `a` at step 1: steps 0 and 1 stay overloaded, step 2 is not,
        // except for the dump CPU charged to node 0 at step 2.
        let mut p = Scripted::new(vec![(
            1,
            Move {
                workload: 0,
                target: 1,
            },
        )]);
        let cost = CostModel::default();
        let o = run(&g, &l, &mut p, &cost);
        assert_eq!(o.migrations, 1);
        assert_eq!(o.gib_moved, 1.0);
        assert!((o.freeze_seconds - cost.freeze_secs(1 << 30)).abs() < 1e-9);
        assert!((o.dump_core_seconds - 0.67).abs() < 1e-9);
        assert_eq!(o.overload_node_minutes, 10.0);
        // What the policy saw: node 0 at 110 % up to step 1, then 50 % plus
        // the dump (0.67 core-s over 300 s) at step 2, then 50 %; node 1 at
        // 0 % until step 2, then 60 %.
        let seen = p.seen();
        assert!((seen[1][0] - 110.0).abs() < 1e-3);
        assert!((seen[2][0] - (50.0 + 0.67 / 300.0 * 100.0)).abs() < 1e-3);
        assert!((seen[3][0] - 50.0).abs() < 1e-3);
        assert_eq!(seen[1][1], 0.0);
        assert!((seen[2][1] - 60.0).abs() < 1e-3);
    }

    #[test]
    fn cooldown_is_honoured() {
        let (g, l) = tiny();
        // Back at step 2 (5 min after: refused, cooldown 10 min), then at
        // step 3 (10 min after: allowed).
        let mut p = Scripted::new(vec![
            (
                0,
                Move {
                    workload: 0,
                    target: 1,
                },
            ),
            (
                1,
                Move {
                    workload: 0,
                    target: 0,
                },
            ),
            (
                2,
                Move {
                    workload: 0,
                    target: 0,
                },
            ),
        ]);
        let o = run(&g, &l, &mut p, &CostModel::default());
        assert_eq!(o.migrations, 2);
        assert_eq!(o.refused, 1);
        // Overloaded at step 0 (before the move) and from step 3 on (back).
        assert_eq!(o.overload_node_minutes, 5.0 + 3.0 * 5.0);
        assert_eq!(o.overload_episodes, 2);
    }
}
