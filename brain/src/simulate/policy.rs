//! The policies a simulation compares: what a node sees and what it may
//! move. `none` ([`Stay`]) moves nothing; [`Threshold`] is a reactive
//! rebalancer shaped like Incus's (`cluster.rebalance.*`: an interval, a
//! load gap between the busiest and the idlest node, one instance per run,
//! a cooldown per instance); [`Spread`] is a DRS-style balancer that every
//! five minutes makes the moves that lower the spread of node loads most.
//! The `ai` policy is the brain's own planner ([`super::ai`]).

/// A move a policy asks for: `workload` to node `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Index of the workload.
    pub workload: usize,
    /// Index of the target node.
    pub target: usize,
}

/// One workload as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadView {
    /// Its node.
    pub node: usize,
    /// Cores it uses now.
    pub cores: f32,
    /// Bytes it holds now (its image size if moved).
    pub memory_bytes: u64,
    /// When it last moved, ms.
    pub last_moved_ms: Option<i64>,
}

/// The cluster at one step, as every policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Now, ms.
    pub at_ms: i64,
    /// The step, ms.
    pub step_ms: i64,
    /// Cores of each node.
    pub capacity_cores: f32,
    /// Memory of each node, bytes.
    pub memory_bytes: u64,
    /// CPU % of capacity of each node now.
    pub load_pct: &'a [f32],
    /// Every workload.
    pub workloads: &'a [WorkloadView],
    /// The simulator's cooldown per workload, ms.
    pub cooldown_ms: i64,
}

impl View<'_> {
    /// Whether workload `w` may move now.
    pub fn movable(&self, w: usize) -> bool {
        self.workloads[w]
            .last_moved_ms
            .is_none_or(|at| self.at_ms - at >= self.cooldown_ms)
    }

    /// Node load in % of capacity if `cores` were added to it.
    pub fn with(&self, node: usize, cores: f32) -> f32 {
        self.load_pct[node] + cores / self.capacity_cores * 100.0
    }
}

/// A balancing policy.
pub trait Policy {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// The moves to make after seeing this step (applied from the next).
    fn decide(&mut self, view: &View<'_>) -> Vec<Move>;
}

/// `none`: never moves anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stay;

impl Policy for Stay {
    fn name(&self) -> &'static str {
        "none"
    }

    fn decide(&mut self, _: &View<'_>) -> Vec<Move> {
        Vec::new()
    }
}

/// `threshold`: every `interval_ms`, when the busiest node is at least
/// `gap_pct` points above the idlest, moves one workload (batch 1) from the
/// busiest to the idlest: the one that best evens the pair without making
/// the idlest the busier, outside its `cooldown_ms` (Incus's defaults are a
/// 20 % threshold, batch 1 and a one-hour cooldown; its interval is set by
/// the operator: here every step).
#[derive(Debug, Clone)]
pub struct Threshold {
    /// How often it runs, ms.
    pub interval_ms: i64,
    /// Load gap, percentage points, from which it acts.
    pub gap_pct: f32,
    /// No new move of a workload this long after its last one, ms.
    pub cooldown_ms: i64,
    last_run: Option<i64>,
}

impl Default for Threshold {
    fn default() -> Self {
        Self {
            interval_ms: 5 * 60_000,
            gap_pct: 20.0,
            cooldown_ms: 60 * 60_000,
            last_run: None,
        }
    }
}

/// Whether a periodic balancer runs at `at_ms`: at the first step, then
/// once `interval_ms` has passed since its last run (which it records).
fn due(last_run: &mut Option<i64>, interval_ms: i64, at_ms: i64) -> bool {
    if last_run.is_some_and(|t| at_ms - t < interval_ms) {
        return false;
    }
    *last_run = Some(at_ms);
    true
}

impl Policy for Threshold {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn decide(&mut self, v: &View<'_>) -> Vec<Move> {
        if !due(&mut self.last_run, self.interval_ms, v.at_ms) {
            return Vec::new();
        }
        let by_load = |a: &usize, b: &usize| v.load_pct[*a].total_cmp(&v.load_pct[*b]);
        let (Some(busy), Some(idle)) = (
            (0..v.load_pct.len()).max_by(by_load),
            (0..v.load_pct.len()).min_by(by_load),
        ) else {
            return Vec::new();
        };
        let gap = v.load_pct[busy] - v.load_pct[idle];
        if busy == idle || gap < self.gap_pct {
            return Vec::new();
        }
        let best = v
            .workloads
            .iter()
            .enumerate()
            .filter(|(w, x)| {
                x.node == busy
                    && x.cores > 0.0
                    && v.movable(*w)
                    && x.last_moved_ms
                        .is_none_or(|t| v.at_ms - t >= self.cooldown_ms)
            })
            .map(|(w, x)| {
                let share = x.cores / v.capacity_cores * 100.0;
                (w, (gap - 2.0 * share).abs(), share < gap)
            })
            .filter(|(_, _, evens)| *evens)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        best.map(|(w, _, _)| Move {
            workload: w,
            target: idle,
        })
        .into_iter()
        .collect()
    }
}

/// `spread`: every `interval_ms` (5 minutes, DRS's default), up to
/// `max_moves` greedy moves, each the one that lowers the standard deviation
/// of node loads most, as long as it lowers it by at least `min_gain_pct`.
#[derive(Debug, Clone)]
pub struct Spread {
    /// How often it runs, ms.
    pub interval_ms: i64,
    /// Most moves per run.
    pub max_moves: usize,
    /// Least decrease of the standard deviation (percentage points) a move
    /// must bring.
    pub min_gain_pct: f32,
    last_run: Option<i64>,
}

impl Default for Spread {
    fn default() -> Self {
        Self {
            interval_ms: 5 * 60_000,
            max_moves: 2,
            min_gain_pct: 1.0,
            last_run: None,
        }
    }
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt()
}

impl Policy for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn decide(&mut self, v: &View<'_>) -> Vec<Move> {
        if !due(&mut self.last_run, self.interval_ms, v.at_ms) {
            return Vec::new();
        }
        let mut load = v.load_pct.to_vec();
        let mut moved = vec![false; v.workloads.len()];
        let mut out = Vec::new();
        while out.len() < self.max_moves {
            let now = std_dev(&load);
            let mut best: Option<(f32, Move)> = None;
            for (w, x) in v.workloads.iter().enumerate() {
                if moved[w] || x.cores <= 0.0 || !v.movable(w) {
                    continue;
                }
                let share = x.cores / v.capacity_cores * 100.0;
                for t in 0..load.len() {
                    if t == x.node {
                        continue;
                    }
                    load[x.node] -= share;
                    load[t] += share;
                    let s = std_dev(&load);
                    load[x.node] += share;
                    load[t] -= share;
                    if best.is_none_or(|b| s < b.0) {
                        best = Some((
                            s,
                            Move {
                                workload: w,
                                target: t,
                            },
                        ));
                    }
                }
            }
            match best {
                Some((s, m)) if now - s >= self.min_gain_pct => {
                    let x = v.workloads[m.workload];
                    let share = x.cores / v.capacity_cores * 100.0;
                    load[x.node] -= share;
                    load[m.target] += share;
                    moved[m.workload] = true;
                    out.push(m);
                }
                _ => break,
            }
        }
        out
    }
}

/// A policy that makes the moves it is given at the steps given, and
/// records the loads it saw (for tests of the simulator's bookkeeping).
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    moves: Vec<(usize, Move)>,
    step: usize,
    seen: Vec<Vec<f32>>,
}

impl Scripted {
    /// Moves at step indices.
    pub fn new(moves: Vec<(usize, Move)>) -> Self {
        Self {
            moves,
            ..Self::default()
        }
    }

    /// The node loads seen at every step.
    pub fn seen(&self) -> &[Vec<f32>] {
        &self.seen
    }
}

impl Policy for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn decide(&mut self, v: &View<'_>) -> Vec<Move> {
        self.seen.push(v.load_pct.to_vec());
        let step = self.step;
        self.step += 1;
        self.moves
            .iter()
            .filter(|(s, _)| *s == step)
            .map(|(_, m)| *m)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(load: &'a [f32], w: &'a [WorkloadView]) -> View<'a> {
        View {
            at_ms: 0,
            step_ms: 300_000,
            capacity_cores: 1.0,
            memory_bytes: 0,
            load_pct: load,
            workloads: w,
            cooldown_ms: 600_000,
        }
    }

    fn wl(node: usize, cores: f32) -> WorkloadView {
        WorkloadView {
            node,
            cores,
            memory_bytes: 1 << 20,
            last_moved_ms: None,
        }
    }

    #[test]
    fn threshold_moves_one_workload_from_busiest_to_idlest() {
        let w = [wl(0, 0.6), wl(0, 0.3), wl(1, 0.1)];
        let load = [90.0, 10.0, 40.0];
        let m = Threshold::default().decide(&view(&load, &w));
        // Gap 80: moving 0.3 (30 points) evens best without overshooting.
        assert_eq!(
            m,
            vec![Move {
                workload: 1,
                target: 1
            }]
        );
        let calm = [50.0, 40.0, 45.0];
        assert!(Threshold::default().decide(&view(&calm, &w)).is_empty());
    }

    #[test]
    fn spread_lowers_the_imbalance() {
        let w = [wl(0, 0.5), wl(0, 0.4), wl(1, 0.1)];
        let load = [90.0, 10.0];
        let m = Spread::default().decide(&view(&load, &w));
        assert_eq!(
            m[0],
            Move {
                workload: 1,
                target: 1
            }
        );
    }
}
