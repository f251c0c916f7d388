//! What a migration will cost, estimated before it is asked for, so that the
//! planner can prefer the cheap move among those that relieve a node, and
//! the estimate can be held against what the move then cost.
//!
//! The model is stop-and-copy's, the path every mode falls back to: the
//! workload is frozen while its image moves, so
//!
//! ```text
//! image  = rss + dirty_rate × lead      (memory it will have written by the freeze)
//! freeze = FIXED_FREEZE_SECS + image / throughput
//! total  = freeze + lead                (request to freeze, clean-up after)
//! ```
//!
//! `throughput` (image bytes per second of freeze beyond the fixed part) and
//! `lead` (the part of a migration outside the freeze) are learned from the
//! last [`Throughput::KEPT`] `migration.completed` events that carry an
//! image size and timings; until there is one, the figures measured in
//! BENCHMARKS.md ("Issue 3": 1 GiB frozen 6.61 s) stand in.

use std::collections::VecDeque;

use loadshift_events::migration::{CostEstimate, Timings};

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

    /// Image bytes per second of freeze beyond the fixed part.
    pub fn bytes_per_sec(&self) -> f64 {
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
        let freeze = FIXED_FREEZE_SECS + image_bytes as f64 / self.bytes_per_sec();
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
