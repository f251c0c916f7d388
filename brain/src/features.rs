//! The one definition of what the model sees about a node.
//!
//! A [`NodeWindow`] takes a node's samples in time order and, for each one,
//! yields a fixed-size [`Features`] vector (names in [`FEATURE_NAMES`]). The
//! trainer builds its rows by pushing stored or traced samples through a
//! `NodeWindow`, and the service pushes every folded sample through one per
//! node: the same code path, so training and live inference can never drift
//! apart.
//!
//! Windows are counted in samples (the labels' horizon is in samples too):
//! *short* is the last [`SHORT`] samples, *long* the last [`LONG`], both
//! including the current one. A gap (an interval more than [`GAP_FACTOR`]
//! times the node's usual step, the median of its last intervals) ends a
//! *segment*: the short and long windows restart, so no window straddles a
//! period the node was not observed. The day-earlier features read a
//! thinned history of the last 25 hours, which survives gaps.
//!
//! The forests read the features that describe the *level and shape* of
//! the load (where CPU is, how far it moved, how spread and how high it was
//! lately); none describes the node's day regime (its recent base rate of
//! overloads, its usual level), and those that name a machine (its size,
//! memory, workload count) are computed but kept out of the forests
//! ([`crate::model::selection::IDENTITY_FEATURES`]): a model is judged on
//! months and VMs it never saw, where what a VM was on its training days
//! does not carry over and how load moves near the overload line does.
//!
//! Values a sample does not carry (memory of a powered-off VM, load, PSI, a
//! day-earlier sample that does not exist yet) are [`MISSING`]: -1000, far
//! below every real value (percentages lie in 0..~110, differences in
//! -110..110), so a tree separates "unknown" from any measurement with one
//! split and never confuses it with a real zero.

use std::collections::VecDeque;

use loadshift_events::Sample;

/// The value of a feature the sample does not provide.
pub const MISSING: f32 = -1000.0;

/// Samples in the short window (the current one included).
pub const SHORT: usize = 3;

/// Samples in the long window (the current one included).
pub const LONG: usize = 12;

/// An interval longer than this many usual steps starts a new segment.
pub const GAP_FACTOR: i64 = 3;

/// Intervals the usual step is the median of.
const STEP_HISTORY: usize = 15;

/// One day, for the same-moment-yesterday features.
pub const DAY_MS: i64 = 86_400_000;

/// The day history keeps at most one sample per this many ms, so a node
/// sampled every second costs 1,500 entries a day, not 86,400.
const DAY_RESOLUTION_MS: i64 = 60_000;

/// The sample nearest to t−24h counts only within this distance.
const DAY_TOLERANCE_MS: i64 = 15 * 60_000;

/// How far after t−24h "what happened next yesterday" looks.
const DAY_AHEAD_MS: i64 = 30 * 60_000;

/// CPU % counted as "high" by `cpu_share_high_long` and `samples_since_high`.
pub const HIGH_PCT: f32 = 80.0;

/// Cap of `samples_since_high` (also its value when never high).
const SINCE_CAP: u32 = 1000;

/// Number of features.
pub const N_FEATURES: usize = 23;

/// A feature vector, in [`FEATURE_NAMES`] order.
pub type Features = [f32; N_FEATURES];

/// Feature names, in the order of [`Features`] (what `model.trained` lists).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "cpu_pct",
    "mem_pct",
    "load1_per_core",
    "psi_cpu_some",
    "psi_memory_some",
    "psi_io_some",
    "cpu_diff_1",
    "cpu_diff_short",
    "cpu_mean_short",
    "cpu_max_short",
    "cpu_std_short",
    "cpu_mean_long",
    "cpu_max_long",
    "cpu_min_long",
    "cpu_std_long",
    "cpu_share_high_long",
    "mem_diff_short",
    "mem_mean_long",
    "cpu_day_ago",
    "cpu_day_ago_max_next",
    "samples_since_high",
    "capacity_cores",
    "workloads",
];

/// Index of a feature by name (for tests and explanations).
pub fn index_of(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

/// One step kept in the day history.
#[derive(Debug, Clone, Copy)]
struct DayObs {
    at_ms: i64,
    cpu: f32,
}

/// The last ~25 hours of one node, thinned to one step per
/// [`DAY_RESOLUTION_MS`]: what the same-moment-yesterday features read.
#[derive(Debug, Clone, Default)]
struct DayHistory {
    steps: VecDeque<DayObs>,
}

impl DayHistory {
    fn push(&mut self, at_ms: i64, cpu: f32) {
        if self
            .steps
            .back()
            .is_some_and(|o| at_ms - o.at_ms < DAY_RESOLUTION_MS)
        {
            return;
        }
        self.steps.push_back(DayObs { at_ms, cpu });
        while self
            .steps
            .front()
            .is_some_and(|o| o.at_ms < at_ms - DAY_MS - 2 * DAY_AHEAD_MS)
        {
            self.steps.pop_front();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Obs {
    cpu: f32,
    mem: f32,
}

/// Samples of one model step being averaged (see [`NodeWindow::with_step`]).
#[derive(Debug, Clone)]
struct Bucket {
    start_ms: i64,
    last_ms: i64,
    cpu: f64,
    mem_used: f64,
    n: u32,
    last: Sample,
}

impl Bucket {
    fn new(s: &Sample) -> Self {
        let at = s.at.timestamp_millis();
        Self {
            start_ms: at,
            last_ms: at,
            cpu: 0.0,
            mem_used: 0.0,
            n: 0,
            last: s.clone(),
        }
    }

    fn add(&mut self, s: &Sample) {
        self.last_ms = s.at.timestamp_millis();
        self.cpu += f64::from(s.cpu.usage_pct);
        self.mem_used += s.memory.used_bytes as f64;
        self.n += 1;
        self.last.clone_from(s);
    }

    /// One sample standing for the whole step: mean CPU and memory in use,
    /// everything else from its last sample, at the step's start.
    fn mean(&self) -> Sample {
        let n = f64::from(self.n.max(1));
        let mut s = self.last.clone();
        s.at = chrono::DateTime::from_timestamp_millis(self.start_ms).unwrap_or(s.at);
        s.cpu.usage_pct = (self.cpu / n) as f32;
        s.memory.used_bytes = (self.mem_used / n) as u64;
        s
    }
}

/// The sliding windows of one node. Push its samples in time order; each
/// accepted sample (or, with a step, each completed step) yields its
/// feature vector.
#[derive(Debug, Clone)]
pub struct NodeWindow {
    /// The model's step in ms (`None`: every sample is a step).
    step_ms: Option<i64>,
    bucket: Option<Bucket>,
    recent: VecDeque<Obs>,
    day: DayHistory,
    intervals: VecDeque<i64>,
    last_at_ms: Option<i64>,
    segment: u64,
    since_high: u32,
    workloads: Option<u32>,
}

impl Default for NodeWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            step_ms: None,
            bucket: None,
            recent: VecDeque::with_capacity(LONG),
            day: DayHistory::default(),
            intervals: VecDeque::with_capacity(STEP_HISTORY),
            last_at_ms: None,
            segment: 0,
            since_high: SINCE_CAP,
            workloads: None,
        }
    }

    /// An empty window that resamples what it is pushed to one sample per
    /// `step_ms` (the step of the model it feeds): samples finer than the
    /// step are averaged (CPU and memory in use) over each step, which is
    /// emitted when a sample of the next step arrives; samples as coarse as
    /// the step (within 10 %) pass through one for one. So a load sampled
    /// every second and the same load sampled every 5 minutes give a 5-minute
    /// model the same feature vectors.
    pub fn with_step(step_ms: i64) -> Self {
        Self {
            step_ms: Some(step_ms.max(1)),
            ..Self::new()
        }
    }

    /// Records how many workloads the node runs now (until told otherwise);
    /// unknown counts as 0.
    pub fn set_workloads(&mut self, n: Option<u32>) {
        self.workloads = n;
    }

    /// The step it resamples to, ms (`None`: every sample is a step).
    pub fn step_ms(&self) -> Option<i64> {
        self.step_ms
    }

    /// The workload count it reports.
    pub fn workloads(&self) -> Option<u32> {
        self.workloads
    }

    /// The segment the last accepted sample belongs to: it changes after a
    /// gap, and labels never look across one.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The time of the last accepted sample.
    pub fn last_at_ms(&self) -> Option<i64> {
        self.last_at_ms
    }

    fn usual_step(&self) -> Option<i64> {
        if self.intervals.len() < 3 {
            return None;
        }
        // A stack copy: this runs for every step of every node, live.
        let mut v = [0i64; STEP_HISTORY];
        let n = self.intervals.len().min(STEP_HISTORY);
        for (d, i) in v.iter_mut().zip(&self.intervals) {
            *d = *i;
        }
        Some(*v[..n].select_nth_unstable(n / 2).1)
    }

    /// Takes the next sample and returns its features, or `None` when the
    /// sample is not after the last one (a repeated timestamp or one out of
    /// order: the first seen wins, as in the trace loader).
    pub fn push(&mut self, s: &Sample) -> Option<Features> {
        let Some(step) = self.step_ms else {
            return self.push_step(s);
        };
        let at = s.at.timestamp_millis();
        let mut out = None;
        if let Some(b) = &self.bucket {
            if at <= b.last_ms {
                return None;
            }
            if at - b.start_ms >= step - step / 10 {
                let mean = b.mean();
                self.bucket = None;
                out = self.push_step(&mean);
            }
        }
        self.bucket.get_or_insert_with(|| Bucket::new(s)).add(s);
        out
    }

    // Long on purpose: every feature is computed here, in the order of
    // FEATURE_NAMES, so the one definition of each sits beside its index.
    /// Takes one step's sample (see [`NodeWindow::push`]).
    fn push_step(&mut self, s: &Sample) -> Option<Features> {
        let at = s.at.timestamp_millis();
        if let Some(last) = self.last_at_ms {
            if at <= last {
                return None;
            }
            let dt = at - last;
            if self.usual_step().is_some_and(|step| dt > GAP_FACTOR * step) {
                self.recent.clear();
                self.segment += 1;
            }
            if self.intervals.len() == STEP_HISTORY {
                self.intervals.pop_front();
            }
            self.intervals.push_back(dt);
        }
        self.last_at_ms = Some(at);

        let cpu = if s.cpu.usage_pct.is_finite() {
            s.cpu.usage_pct.max(0.0)
        } else {
            0.0
        };
        let mem = if s.memory.total_bytes > 0 {
            (s.memory.used_bytes as f64 / s.memory.total_bytes as f64 * 100.0) as f32
        } else {
            MISSING
        };
        if self.recent.len() == LONG {
            self.recent.pop_front();
        }
        self.recent.push_back(Obs { cpu, mem });

        let (day_ago, day_next) = self.day_features(at);
        self.day.push(at, cpu);
        self.since_high = if cpu >= HIGH_PCT {
            0
        } else {
            (self.since_high + 1).min(SINCE_CAP)
        };

        let n = self.recent.len();
        let cpu_at = |back: usize| self.recent[n - 1 - back].cpu;
        let short = n.min(SHORT);
        let stats = |k: usize| {
            let it = self.recent.iter().skip(n - k).map(|o| o.cpu);
            let (mut sum, mut max, mut min) = (0.0f32, f32::MIN, f32::MAX);
            for c in it.clone() {
                sum += c;
                max = max.max(c);
                min = min.min(c);
            }
            let mean = sum / k as f32;
            let var = it.map(|c| (c - mean) * (c - mean)).sum::<f32>() / k as f32;
            (mean, max, min, var.sqrt())
        };
        let (mean_s, max_s, _, std_s) = stats(short);
        let (mean_l, max_l, min_l, std_l) = stats(n);
        let high = self.recent.iter().filter(|o| o.cpu >= HIGH_PCT).count() as f32 / n as f32;
        let (mem_sum, mem_n) = self
            .recent
            .iter()
            .filter(|o| o.mem != MISSING)
            .fold((0f32, 0u32), |(s, k), o| (s + o.mem, k + 1));
        let mem_mean = if mem_n == 0 {
            MISSING
        } else {
            mem_sum / mem_n as f32
        };
        let mem_diff = match (mem, self.recent[n - short].mem) {
            (a, b) if a != MISSING && b != MISSING && short > 1 => a - b,
            _ => MISSING,
        };
        let diff = |back: usize| {
            if n > back {
                cpu - cpu_at(back)
            } else {
                MISSING
            }
        };
        let cores = s.cpu.capacity_cores;
        let load = match s.load {
            Some(l) if cores > 0.0 => l.one / cores,
            _ => MISSING,
        };
        let psi = |v: Option<f32>| v.unwrap_or(MISSING);
        let p = s.psi.unwrap_or_default();
        Some([
            cpu,
            mem,
            load,
            psi(p.cpu_some),
            psi(p.memory_some),
            psi(p.io_some),
            diff(1),
            diff(SHORT - 1),
            mean_s,
            max_s,
            std_s,
            mean_l,
            max_l,
            min_l,
            std_l,
            high,
            mem_diff,
            mem_mean,
            day_ago,
            day_next,
            self.since_high as f32,
            cores,
            self.workloads.unwrap_or(0) as f32,
        ])
    }

    /// CPU at the moment nearest to `at` − 24 h, and the highest CPU in the
    /// half hour after that moment (what followed yesterday).
    fn day_features(&self, at: i64) -> (f32, f32) {
        let target = at - DAY_MS;
        let day = &self.day.steps;
        let i = day.partition_point(|o| o.at_ms < target);
        let near = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| day.get(j))
            .min_by_key(|o| (o.at_ms - target).abs())
            .filter(|o| (o.at_ms - target).abs() <= DAY_TOLERANCE_MS);
        let Some(&DayObs { cpu, .. }) = near else {
            return (MISSING, MISSING);
        };
        let next = day
            .range(i..)
            .take_while(|o| o.at_ms <= target + DAY_AHEAD_MS)
            .map(|o| o.cpu)
            .fold(MISSING, f32::max);
        (cpu, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::telemetry::{Cpu, Memory};

    pub(crate) fn sample(at_s: i64, cpu: f32) -> Sample {
        Sample::new(
            chrono::DateTime::from_timestamp(at_s, 0).unwrap(),
            0,
            Cpu {
                usage_pct: cpu,
                capacity_cores: 2.0,
                per_core_pct: vec![],
            },
            Memory {
                used_bytes: 25,
                total_bytes: 100,
            },
        )
    }

    fn f(v: &Features, name: &str) -> f32 {
        v[index_of(name).unwrap()]
    }

    #[test]
    fn names_and_vector_agree() {
        assert_eq!(FEATURE_NAMES.len(), N_FEATURES);
        let mut names = FEATURE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), N_FEATURES, "feature names are unique");
    }

    #[test]
    fn windows_on_a_known_series() {
        let mut w = NodeWindow::new();
        let cpus = [10.0, 20.0, 60.0, 30.0];
        let mut last = None;
        for (i, c) in cpus.iter().enumerate() {
            last = w.push(&sample(i as i64 * 300, *c));
        }
        let v = last.unwrap();
        assert_eq!(f(&v, "cpu_pct"), 30.0);
        assert_eq!(f(&v, "mem_pct"), 25.0);
        assert_eq!(f(&v, "cpu_diff_1"), -30.0);
        assert_eq!(f(&v, "cpu_diff_short"), 10.0); // 30 - 20
        assert!((f(&v, "cpu_mean_short") - 110.0 / 3.0).abs() < 1e-4);
        assert_eq!(f(&v, "cpu_max_short"), 60.0);
        assert_eq!(f(&v, "cpu_mean_long"), 30.0);
        assert_eq!(f(&v, "cpu_max_long"), 60.0);
        assert_eq!(f(&v, "cpu_min_long"), 10.0);
        // population std of 10,20,60,30 = sqrt(350)
        assert!((f(&v, "cpu_std_long") - 350f32.sqrt()).abs() < 1e-4);
        assert_eq!(f(&v, "cpu_share_high_long"), 0.0);
        assert_eq!(f(&v, "mem_diff_short"), 0.0);
        assert_eq!(f(&v, "load1_per_core"), MISSING);
        assert_eq!(f(&v, "psi_cpu_some"), MISSING);
        assert_eq!(f(&v, "cpu_day_ago"), MISSING);
        assert_eq!(f(&v, "samples_since_high"), SINCE_CAP as f32);
        assert_eq!(f(&v, "capacity_cores"), 2.0);
        assert_eq!(f(&v, "workloads"), 0.0);
    }

    #[test]
    fn first_sample_has_missing_differences_and_zero_capacity_missing_memory() {
        let mut w = NodeWindow::new();
        let mut s = sample(0, 50.0);
        s.memory.total_bytes = 0;
        let v = w.push(&s).unwrap();
        assert_eq!(f(&v, "cpu_diff_1"), MISSING);
        assert_eq!(f(&v, "mem_pct"), MISSING);
        assert_eq!(f(&v, "mem_mean_long"), MISSING);
        assert_eq!(f(&v, "cpu_std_short"), 0.0);
    }

    #[test]
    fn duplicates_and_out_of_order_samples_are_refused() {
        let mut w = NodeWindow::new();
        assert!(w.push(&sample(100, 1.0)).is_some());
        assert!(w.push(&sample(100, 2.0)).is_none());
        assert!(w.push(&sample(50, 2.0)).is_none());
        let v = w.push(&sample(400, 3.0)).unwrap();
        assert_eq!(f(&v, "cpu_diff_1"), 2.0);
    }

    #[test]
    fn a_gap_restarts_the_windows_and_the_segment() {
        let mut w = NodeWindow::new();
        for i in 0..6 {
            w.push(&sample(i * 300, 90.0));
        }
        assert_eq!(w.segment(), 0);
        let v = w.push(&sample(5 * 300 + 3600, 10.0)).unwrap();
        assert_eq!(w.segment(), 1);
        assert_eq!(f(&v, "cpu_max_long"), 10.0);
        assert_eq!(f(&v, "cpu_diff_1"), MISSING);
        assert_eq!(f(&v, "samples_since_high"), 1.0);
    }

    #[test]
    fn same_moment_one_day_earlier() {
        let mut w = NodeWindow::new();
        let step = 300;
        let day = 86_400;
        let mut last = None;
        for i in 0..=(day / step + 2) {
            let t = i * step;
            // A spike to 95 % at 01:00 + 10 min, every day.
            let c = if t % day == 3600 + 600 { 95.0 } else { 5.0 };
            last = w.push(&sample(t, c));
            if t == day + 3600 {
                let v = last.unwrap();
                assert_eq!(f(&v, "cpu_day_ago"), 5.0);
                assert_eq!(f(&v, "cpu_day_ago_max_next"), 95.0);
            }
        }
        let v = last.unwrap();
        assert_eq!(f(&v, "cpu_day_ago"), 5.0);
    }

    #[test]
    fn the_same_load_at_two_steps_gives_the_same_features() {
        // A load that changes every 5 minutes (a ramp, a spike, a plateau),
        // sampled every minute and every 5 minutes, fed to 5-minute windows.
        let level = |t: i64| match t / 300 {
            k if k < 20 => 10.0 + k as f32 * 4.0,
            20 => 95.0,
            k => 40.0 + (k % 7) as f32,
        };
        let run = |every: i64| {
            let mut w = NodeWindow::with_step(300_000);
            (0..=40 * 300)
                .step_by(every as usize)
                .filter_map(|t| w.push(&sample(t, level(t))))
                .collect::<Vec<_>>()
        };
        let fine = run(60);
        let coarse = run(300);
        assert_eq!(fine.len(), 40);
        assert_eq!(fine, coarse);
        // And the horizon means the same: labels of both series agree.
        let cpu = |v: &[Features]| v.iter().map(|x| x[0]).collect::<Vec<_>>();
        let cfg = crate::labels::LabelConfig::default();
        let seg = vec![0; 40];
        assert_eq!(
            crate::labels::label_series(&cpu(&fine), &seg, &cfg),
            crate::labels::label_series(&cpu(&coarse), &seg, &cfg)
        );
        // Without a step, the minute samples would be five times as many
        // steps: a 3-step horizon would look 3 minutes ahead, not 15.
        let mut raw = NodeWindow::new();
        let n = (0..=40 * 300)
            .step_by(60)
            .filter_map(|t| raw.push(&sample(t, level(t))))
            .count();
        assert_eq!(n, 201);
    }

    #[test]
    fn workloads_are_reported() {
        let mut w = NodeWindow::new();
        w.set_workloads(Some(4));
        let v = w.push(&sample(0, 1.0)).unwrap();
        assert_eq!(f(&v, "workloads"), 4.0);
    }
}
