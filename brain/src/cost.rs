//! What a migration will cost, estimated before it is asked for, so that the
//! planner can prefer the cheap move among those that relieve a node, and
//! the estimate can be held against what the move then cost.
//!
//! The model is stop-and-copy's, the path every mode falls back to: the
//! workload is frozen while its image moves, so
//!
//! ```text
//! image  = rss + dirty_rate × lead      (memory it will have written by the freeze)
//! freeze = fixed + image / throughput
//! total  = freeze + lead                (request to freeze, clean-up after)
//! ```
//!
//! `fixed` and `throughput` (image bytes per second of freeze beyond the
//! fixed part) are a least-squares line through the last
//! [`Throughput::KEPT`] `migration.completed` events that carry an image
//! size and timings, once they span two sizes; `lead` (the part of a
//! migration outside the freeze) is their mean. The fixed part is learned
//! because it is not small: real migrations here froze 0.8–1.4 s at 64 MiB
//! and 6.5–11.6 s at 1 GiB (BENCHMARKS.md, "Issue 13 (round 3)"), so a
//! rate learned with a fixed 0.1 s underestimated small moves by half and
//! overestimated large ones. With one size only (or none), the fixed part
//! is [`FIXED_FREEZE_SECS`], and until there is a migration the figures
//! measured in BENCHMARKS.md ("Issue 3": 1 GiB frozen 6.61 s) stand in.
//!
//! Copies and streams are learned apart ([`MoveCosts`]): in one run here a
//! streamed 1 GiB froze 7.8 s and a copied one 21.8 s, and one rate learned
//! from both overestimated streams by 74 % (256 MiB) and 135 % (1 GiB)
//! (BENCHMARKS.md, "Issue 13 (round 4)"). The planner asks for `auto`,
//! which streams every image but the smallest when the workload can.

use std::collections::VecDeque;

use loadshift_events::migration::{CostEstimate, Mode, Timings};

/// Images below this are copied by `auto` (the executor's
/// `SMALL_IMAGE_BYTES`: a direct connection costs more than it saves).
pub const AUTO_STREAM_BYTES: u64 = 8 << 20;

/// What earlier migrations cost, per way of moving: the planner's fold of
/// `migration.completed` with the mode that ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MoveCosts {
    /// Copies through the object store (and moves from before modes).
    copied: Throughput,
    /// Pages streamed straight to the target.
    streamed: Throughput,
}

impl MoveCosts {
    /// Learns from a completed migration that ran in `mode` (`None`: from
    /// before modes, a copy). Post-copy's freeze does not grow with the
    /// image and `auto` never picks it: it teaches nothing here.
    pub fn observe(&mut self, mode: Option<Mode>, image_bytes: u64, timings: &Timings) {
        match mode {
            None | Some(Mode::Copy) | Some(Mode::Auto) => self.copied.observe(image_bytes, timings),
            Some(Mode::Stream) => self.streamed.observe(image_bytes, timings),
            Some(Mode::Lazy) => {}
        }
    }

    /// The estimate for a move asked for with `auto`: from streams for an
    /// image `auto` streams once a stream was measured, else from copies
    /// (a cluster whose moves all fell back to copies, such as Docker
    /// nodes, keeps estimating copies).
    pub fn estimate(&self, rss_bytes: u64, dirty_bytes_per_sec: f64) -> CostEstimate {
        let mode = if rss_bytes >= AUTO_STREAM_BYTES {
            Mode::Stream
        } else {
            Mode::Copy
        };
        self.estimate_in(mode, rss_bytes, dirty_bytes_per_sec)
    }

    /// The estimate for a move that runs in `mode` (a stream before any
    /// stream was measured, or post-copy: from copies, the road every mode
    /// falls back to; `auto`: as [`MoveCosts::estimate`]).
    pub fn estimate_in(
        &self,
        mode: Mode,
        rss_bytes: u64,
        dirty_bytes_per_sec: f64,
    ) -> CostEstimate {
        let learned = match mode {
            Mode::Auto => return self.estimate(rss_bytes, dirty_bytes_per_sec),
            Mode::Stream if !self.streamed.recent.is_empty() => &self.streamed,
            _ => &self.copied,
        };
        learned.estimate(rss_bytes, dirty_bytes_per_sec)
    }
}

/// Image bytes moved per second of freeze before any migration was
/// measured here: 1 GiB frozen 6.61 s (BENCHMARKS.md, "Issue 3"), the
/// slowest rate measured, so a fresh cluster overestimates rather than
/// underestimates.
pub const DEFAULT_BYTES_PER_SEC: f64 = 1024.0 * 1024.0 * 1024.0 / 6.61;

/// The part of every freeze that does not grow with memory (CRIU's own
/// start, the process tree, restore set-up), seconds.
pub const FIXED_FREEZE_SECS: f64 = 0.1;

/// The part of a migration outside the freeze (validation, the target's
/// fetch set-up, clean-up) before any migration was measured, seconds.
pub const DEFAULT_LEAD_SECS: f64 = 1.0;

/// What earlier migrations measured: the planner's fold of
/// `migration.completed` (image size, downtime, total).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throughput {
    /// `(image bytes, freeze s, total s)` of the latest measured migrations.
    recent: VecDeque<(u64, f64, f64)>,
}

impl Throughput {
    /// How many recent migrations the estimate learns from: enough to smooth
    /// one slow move, few enough to follow a change of network or disk.
    pub const KEPT: usize = 8;

    /// Learns from a completed migration; one without an image size or
    /// with missing or non-positive timings teaches nothing.
    pub fn observe(&mut self, image_bytes: u64, timings: &Timings) {
        let (Some(freeze_ms), Some(total_ms)) = (timings.downtime_ms, timings.total_ms) else {
            return;
        };
        let usable = freeze_ms.is_finite() && freeze_ms > 0.0 && total_ms >= freeze_ms;
        if image_bytes == 0 || !usable || !total_ms.is_finite() {
            return;
        }
        if self.recent.len() == Self::KEPT {
            self.recent.pop_front();
        }
        self.recent
            .push_back((image_bytes, freeze_ms / 1000.0, total_ms / 1000.0));
    }

    /// `(fixed s, s per byte)`: the least-squares line of freeze over image
    /// bytes, when the recent migrations span sizes far enough apart (a
    /// tenth of their mean) and the line rises from a non-negative start.
    fn line(&self) -> Option<(f64, f64)> {
        let n = self.recent.len() as f64;
        if self.recent.len() < 2 {
            return None;
        }
        let mx = self.recent.iter().map(|(b, _, _)| *b as f64).sum::<f64>() / n;
        let my = self.recent.iter().map(|(_, f, _)| *f).sum::<f64>() / n;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for (b, f, _) in &self.recent {
            let dx = *b as f64 - mx;
            sxx += dx * dx;
            sxy += dx * (f - my);
        }
        if sxx.sqrt() < 0.1 * mx * n.sqrt() {
            return None;
        }
        let slope = sxy / sxx;
        let fixed = my - slope * mx;
        (slope.is_finite() && slope > 0.0 && fixed >= 0.0).then_some((fixed, slope))
    }

    /// The part of a freeze that does not grow with the image, seconds.
    pub fn fixed_secs(&self) -> f64 {
        self.line().map_or(FIXED_FREEZE_SECS, |(fixed, _)| fixed)
    }

    /// Image bytes per second of freeze beyond the fixed part.
    pub fn bytes_per_sec(&self) -> f64 {
        if let Some((_, slope)) = self.line() {
            return 1.0 / slope;
        }
        let bytes: f64 = self.recent.iter().map(|(b, _, _)| *b as f64).sum();
        let secs: f64 = self
            .recent
            .iter()
            .map(|(_, f, _)| (f - FIXED_FREEZE_SECS).max(0.001))
            .sum();
        if self.recent.is_empty() {
            DEFAULT_BYTES_PER_SEC
        } else {
            bytes / secs
        }
    }

    /// Mean time a migration spends outside its freeze, seconds.
    pub fn lead_secs(&self) -> f64 {
        if self.recent.is_empty() {
            return DEFAULT_LEAD_SECS;
        }
        let sum: f64 = self.recent.iter().map(|(_, f, t)| t - f).sum();
        sum / self.recent.len() as f64
    }

    /// The estimate for a workload holding `rss_bytes` that dirties
    /// `dirty_bytes_per_sec` (0 when unknown).
    pub fn estimate(&self, rss_bytes: u64, dirty_bytes_per_sec: f64) -> CostEstimate {
        let lead = self.lead_secs();
        let grown = (dirty_bytes_per_sec.max(0.0) * lead) as u64;
        let image_bytes = rss_bytes.saturating_add(grown);
        let freeze = self.fixed_secs() + image_bytes as f64 / self.bytes_per_sec();
        CostEstimate {
            image_bytes,
            freeze_ms: freeze * 1000.0,
            total_ms: (freeze + lead) * 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn timings(freeze_ms: f64, total_ms: f64) -> Timings {
        Timings {
            downtime_ms: Some(freeze_ms),
            total_ms: Some(total_ms),
            ..Timings::default()
        }
    }

    #[test]
    fn before_any_migration_the_benchmarked_rate_stands_in() {
        let t = Throughput::default();
        let e = t.estimate(1024 * MIB, 0.0);
        assert_eq!(e.image_bytes, 1024 * MIB);
        assert!((e.freeze_ms - (100.0 + 6610.0)).abs() < 1e-6, "{e:?}");
        assert!((e.total_ms - e.freeze_ms - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn measured_migrations_set_the_rate_and_the_lead() {
        let mut t = Throughput::default();
        // 256 MiB frozen 0.6 s (0.5 s beyond the fixed part), 2 s in all;
        // 128 MiB frozen 0.35 s, 1.35 s in all: 384 MiB in 0.75 s.
        t.observe(256 * MIB, &timings(600.0, 2000.0));
        t.observe(128 * MIB, &timings(350.0, 1350.0));
        assert!((t.bytes_per_sec() - 512.0 * MIB as f64).abs() < 1.0);
        assert!((t.lead_secs() - 1.2).abs() < 1e-9);
        // 64 MiB dirtying 10 MiB/s: 12 MiB more by the freeze.
        let e = t.estimate(64 * MIB, 10.0 * MIB as f64);
        assert_eq!(e.image_bytes, 76 * MIB);
        assert!((e.freeze_ms - (100.0 + 76.0 / 512.0 * 1000.0)).abs() < 1e-6);
        assert!((e.total_ms - e.freeze_ms - 1200.0).abs() < 1e-6);
    }

    #[test]
    fn streams_are_estimated_from_streams_once_one_was_measured() {
        let mut costs = MoveCosts::default();
        costs.observe(Some(Mode::Copy), 256 * MIB, &timings(3600.0, 4100.0));
        let copied = costs.estimate(256 * MIB, 0.0);
        costs.observe(Some(Mode::Stream), 256 * MIB, &timings(2100.0, 2400.0));
        costs.observe(Some(Mode::Lazy), 256 * MIB, &timings(100.0, 5000.0));
        let streamed = costs.estimate(256 * MIB, 0.0);
        assert!((streamed.freeze_ms - 2100.0).abs() < 1e-6, "{streamed:?}");
        assert!(copied.freeze_ms > streamed.freeze_ms);
        // An image auto copies is still estimated from copies.
        let small = costs.estimate(4 * MIB, 0.0);
        assert!(
            (small.freeze_ms - (100.0 + 4.0 / 256.0 * 3500.0)).abs() < 1e-6,
            "{small:?}"
        );
    }

    #[test]
    fn a_large_fixed_part_is_learned_so_small_moves_are_not_underestimated() {
        let mut t = Throughput::default();
        // Frozen 0.8 s at 64 MiB and 6.5 s at 1 GiB (round 3's streams,
        // rounded): 5.7 s per 960 MiB, and 0.8 - 64 x 5.7 / 960 = 0.42 s
        // that does not grow with memory (a fixed 0.1 s made 64 MiB 0.52 s).
        for _ in 0..2 {
            t.observe(64 * MIB, &timings(800.0, 1000.0));
            t.observe(1024 * MIB, &timings(6500.0, 7000.0));
        }
        assert!((t.fixed_secs() - 0.42).abs() < 1e-9, "{}", t.fixed_secs());
        let small = t.estimate(64 * MIB, 0.0);
        assert!((small.freeze_ms - 800.0).abs() < 1e-6, "{small:?}");
        let mid = t.estimate(256 * MIB, 0.0);
        let want = 800.0 + 192.0 / 960.0 * 5700.0;
        assert!((mid.freeze_ms - want).abs() < 1e-6, "{mid:?}");
    }

    #[test]
    fn migrations_without_sizes_or_timings_teach_nothing_and_old_ones_age_out() {
        let mut t = Throughput::default();
        t.observe(0, &timings(500.0, 900.0));
        t.observe(64 * MIB, &Timings::default());
        t.observe(64 * MIB, &timings(f64::NAN, 900.0));
        t.observe(64 * MIB, &timings(500.0, 400.0));
        assert_eq!(t, Throughput::default());
        t.observe(MIB, &timings(10_000.0, 10_000.0));
        for _ in 0..Throughput::KEPT {
            t.observe(100 * MIB, &timings(1100.0, 1500.0));
        }
        assert!((t.bytes_per_sec() - 100.0 * MIB as f64).abs() < 1.0);
    }
}
