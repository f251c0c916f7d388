//! A node's recent metrics, bounded: every sample of the last two hours (by
//! default), one averaged point per minute beyond that for a day, nothing
//! older.
//!
//! The dashboard must run for weeks beside a cluster of hundreds of nodes
//! with a fixed memory budget, yet still draw the last 15 minutes at full
//! resolution; two tiers give both. Times are the samples' own (`at`), so a
//! trace replayed at 60x still draws its real shape.

use std::collections::VecDeque;

/// One sample reduced to what the dashboard draws (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Sample time, unix milliseconds.
    pub at_ms: i64,
    /// CPU, percent of the node's capacity.
    pub cpu: f32,
    /// Memory, percent of the node's total (NaN when the total is unknown).
    pub mem: f32,
    /// One-minute load average (NaN when unknown).
    pub load: f32,
    /// PSI cpu some avg10 (NaN when unknown).
    pub psi_cpu: f32,
    /// PSI memory some avg10 (NaN when unknown).
    pub psi_mem: f32,
    /// PSI io some avg10 (NaN when unknown).
    pub psi_io: f32,
}

/// Which value of a [`Point`] to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// CPU percent.
    Cpu,
    /// Memory percent.
    Mem,
    /// Load average.
    Load,
    /// PSI cpu.
    PsiCpu,
    /// PSI memory.
    PsiMem,
    /// PSI io.
    PsiIo,
}

impl Point {
    /// The value of `m` (NaN when unknown).
    pub fn get(&self, m: Metric) -> f32 {
        match m {
            Metric::Cpu => self.cpu,
            Metric::Mem => self.mem,
            Metric::Load => self.load,
            Metric::PsiCpu => self.psi_cpu,
            Metric::PsiMem => self.psi_mem,
            Metric::PsiIo => self.psi_io,
        }
    }
}

/// How much history a series keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesLimits {
    /// Kept at full rate, milliseconds.
    pub full_ms: i64,
    /// Kept downsampled, milliseconds (counted from the newest sample).
    pub coarse_ms: i64,
    /// Width of one downsampled point, milliseconds.
    pub coarse_step_ms: i64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            full_ms: 2 * 3600 * 1000,
            coarse_ms: 24 * 3600 * 1000,
            coarse_step_ms: 60 * 1000,
        }
    }
}

/// Sums of the points falling in one coarse bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    start_ms: i64,
    n: [u32; 6],
    sum: [f32; 6],
}

const METRICS: [Metric; 6] = [
    Metric::Cpu,
    Metric::Mem,
    Metric::Load,
    Metric::PsiCpu,
    Metric::PsiMem,
    Metric::PsiIo,
];

impl Acc {
    fn add(&mut self, p: &Point) {
        for (i, m) in METRICS.iter().enumerate() {
            let v = p.get(*m);
            if v.is_finite() {
                self.n[i] += 1;
                self.sum[i] += v;
            }
        }
    }

    fn point(&self) -> Point {
        let v = |i: usize| {
            if self.n[i] == 0 {
                f32::NAN
            } else {
                self.sum[i] / self.n[i] as f32
            }
        };
        Point {
            at_ms: self.start_ms,
            cpu: v(0),
            mem: v(1),
            load: v(2),
            psi_cpu: v(3),
            psi_mem: v(4),
            psi_io: v(5),
        }
    }
}

/// Two-tier bounded series of one node.
#[derive(Debug, Clone, Default)]
pub struct Series {
    limits: SeriesLimits,
    full: VecDeque<Point>,
    coarse: VecDeque<Point>,
    bucket: Option<Acc>,
    /// Which metrics any sample ever had (in [`METRICS`] order): a node
    /// that never reported one cannot have it (a cgroup has no load
    /// average; cgroup v1, no pressure), and its page says so instead of
    /// drawing an empty chart.
    seen: [bool; 6],
}

impl Series {
    /// An empty series keeping `limits`.
    pub fn new(limits: SeriesLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Adds the newest sample. A sample older than the newest one means the
    /// node's clock (or its trace) started over: the old timeline is dropped
    /// rather than drawn backwards.
    pub fn push(&mut self, p: Point) {
        if self.last().is_some_and(|l| p.at_ms < l.at_ms) {
            self.full.clear();
            self.coarse.clear();
            self.bucket = None;
        }
        for (seen, m) in self.seen.iter_mut().zip(METRICS) {
            *seen |= p.get(m).is_finite();
        }
        self.full.push_back(p);
        let full_from = p.at_ms - self.limits.full_ms;
        while self.full.front().is_some_and(|f| f.at_ms < full_from) {
            let old = self.full.pop_front().expect("front exists");
            self.demote(old);
        }
        let coarse_from = p.at_ms - self.limits.coarse_ms;
        while self.coarse.front().is_some_and(|c| c.at_ms < coarse_from) {
            self.coarse.pop_front();
        }
    }

    fn demote(&mut self, p: Point) {
        let step = self.limits.coarse_step_ms.max(1);
        let start = p.at_ms - p.at_ms.rem_euclid(step);
        match &mut self.bucket {
            Some(acc) if acc.start_ms == start => acc.add(&p),
            slot => {
                if let Some(done) = slot.take() {
                    self.coarse.push_back(done.point());
                }
                let mut acc = Acc {
                    start_ms: start,
                    ..Default::default()
                };
                acc.add(&p);
                *slot = Some(acc);
            }
        }
    }

    /// The newest sample.
    pub fn last(&self) -> Option<&Point> {
        self.full.back()
    }

    /// Points held (both tiers), for memory accounting.
    pub fn len(&self) -> usize {
        self.full.len() + self.coarse.len() + usize::from(self.bucket.is_some())
    }

    /// Whether any sample so far had a value of `m`.
    pub fn reports(&self, m: Metric) -> bool {
        METRICS
            .iter()
            .position(|k| *k == m)
            .is_some_and(|i| self.seen[i])
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }

    /// Every point from `range_ms` before the newest sample to it, oldest first.
    pub fn window(&self, range_ms: i64) -> impl Iterator<Item = Point> + '_ {
        let end = self.last().map(|p| p.at_ms).unwrap_or(0);
        let from = end - range_ms;
        let first_full = self.full.partition_point(|p| p.at_ms < from);
        let coarse_from = self.coarse.partition_point(|p| p.at_ms < from);
        self.coarse
            .range(coarse_from..)
            .copied()
            .chain(
                self.bucket
                    .iter()
                    .map(Acc::point)
                    .filter(move |p| p.at_ms >= from),
            )
            .chain(self.full.range(first_full..).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(at_ms: i64, cpu: f32) -> Point {
        Point {
            at_ms,
            cpu,
            mem: 10.0,
            load: f32::NAN,
            psi_cpu: f32::NAN,
            psi_mem: f32::NAN,
            psi_io: f32::NAN,
        }
    }

    #[test]
    fn keeps_full_rate_then_minutes_then_nothing() {
        let limits = SeriesLimits {
            full_ms: 10_000,
            coarse_ms: 60_000,
            coarse_step_ms: 5_000,
        };
        let mut s = Series::new(limits);
        for i in 0..100 {
            s.push(pt(i * 1000, i as f32));
        }
        // 11 full-rate points: 89..=99 s.
        assert_eq!(s.full.len(), 11);
        // Older points averaged into 5 s buckets, the last day (here 60 s) only.
        assert!(s.coarse.iter().all(|p| p.at_ms >= 99_000 - 60_000));
        assert_eq!(s.coarse.back().unwrap().cpu, 82.0); // mean of 80..=84
        let w: Vec<_> = s.window(15_000).collect();
        assert!(w.windows(2).all(|p| p[0].at_ms <= p[1].at_ms));
        assert_eq!(w.last().unwrap().at_ms, 99_000);
        assert!(w.first().unwrap().at_ms >= 84_000);
    }

    #[test]
    fn a_clock_going_back_starts_a_new_timeline() {
        let mut s = Series::new(SeriesLimits::default());
        s.push(pt(50_000, 1.0));
        s.push(pt(1_000, 2.0));
        assert_eq!(s.len(), 1);
        assert_eq!(s.last().unwrap().cpu, 2.0);
    }

    #[test]
    fn remembers_which_metrics_the_node_ever_reported() {
        let mut s = Series::new(SeriesLimits::default());
        assert!(!s.reports(Metric::Cpu));
        s.push(pt(1_000, 1.0));
        assert!(s.reports(Metric::Cpu) && s.reports(Metric::Mem));
        assert!(!s.reports(Metric::Load) && !s.reports(Metric::PsiIo));
        s.push(Point {
            load: 0.5,
            ..pt(2_000, 1.0)
        });
        s.push(pt(3_000, 1.0));
        assert!(
            s.reports(Metric::Load),
            "once seen, a load average stays possible"
        );
    }
}
