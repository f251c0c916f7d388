//! A node's own clock against the wall clock.
//!
//! A node's samples carry the node's time (`Sample::at`), and so do the
//! brain's predictions about it (stamped with the sample they were made
//! from); a replayed trace's node lives in 2013 and runs 60 times faster
//! than the wall. Its charts therefore end at its newest sample, on its
//! own clock. Migrations, though, are stamped by the wall clock of the
//! executors and the brain. This is the one place where the two meet: each
//! sample's envelope says when (wall clock) the node said what its clock
//! read, and a migration is drawn at the node time the node showed when
//! the migration happened. Nothing upstream rewrites trace time, so the
//! brain's features keep the trace's real spacing.

use std::collections::VecDeque;

/// A live node's clock drifts from the wall by its publish latency only;
/// an anchor is kept when the offset moved by more than this since the
/// last one (every sample of a sped-up replay), or after
/// [`ANCHOR_EVERY_MS`] of wall time.
const DRIFT_MS: i64 = 1_000;

/// A steady clock still gets an anchor this often, so that a node whose
/// clock jumps later keeps its earlier mapping.
const ANCHOR_EVERY_MS: i64 = 60_000;

/// Anchors kept per node: a live node's cover 8 hours; a trace replayed
/// with 5-minute samples, 42 hours of its own time (more than the longest
/// range drawn).
const ANCHORS_KEPT: usize = 512;

/// Offsets within this are reported as "the node's clock is the
/// dashboard's" rather than as a replay.
const SAME_CLOCK_MS: i64 = 5 * 60_000;

/// Pairs of (wall ms, node ms), oldest first, bounded.
#[derive(Debug, Clone, Default)]
pub struct NodeClock {
    anchors: VecDeque<(i64, i64)>,
}

impl NodeClock {
    /// Records that at wall time `wall_ms` the node's clock read `node_ms`.
    pub fn observe(&mut self, wall_ms: i64, node_ms: i64) {
        if let Some(&(w, n)) = self.anchors.back() {
            let drift = ((node_ms - wall_ms) - (n - w)).abs();
            // A sample older than the newest anchor (a replay starting
            // over, a late publish) re-anchors only when its offset is new.
            if drift <= DRIFT_MS && wall_ms - w < ANCHOR_EVERY_MS {
                return;
            }
            if wall_ms < w {
                self.anchors.clear();
            }
        }
        self.anchors.push_back((wall_ms, node_ms));
        while self.anchors.len() > ANCHORS_KEPT {
            self.anchors.pop_front();
        }
    }

    /// The node time at wall time `wall_ms`: interpolated between the two
    /// anchors around it, else the nearest anchor's offset; unchanged when
    /// nothing is known yet (the node's clock is then taken as the wall's).
    pub fn node_time(&self, wall_ms: i64) -> i64 {
        let k = self.anchors.partition_point(|(w, _)| *w <= wall_ms);
        match (
            k.checked_sub(1).map(|i| self.anchors[i]),
            self.anchors.get(k),
        ) {
            (Some((w0, n0)), Some(&(w1, n1))) if w1 > w0 => {
                n0 + ((wall_ms - w0) as f64 * (n1 - n0) as f64 / (w1 - w0) as f64).round() as i64
            }
            (Some((w, n)), _) | (None, Some(&(w, n))) => wall_ms + (n - w),
            (None, None) => wall_ms,
        }
    }

    /// How far the node's clock is ahead of the wall (negative: behind),
    /// as of its newest sample; `None` before any.
    pub fn offset_ms(&self) -> Option<i64> {
        self.anchors.back().map(|(w, n)| n - w)
    }

    /// Whether the node's clock is, for a person reading a chart, the
    /// wall clock.
    pub fn is_wall_clock(&self) -> bool {
        self.offset_ms().is_none_or(|o| o.abs() <= SAME_CLOCK_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T2013: i64 = 1_375_315_200_000;
    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn a_live_node_keeps_few_anchors_and_maps_to_itself() {
        let mut c = NodeClock::default();
        for i in 0..600 {
            c.observe(NOW + i * 1000 + 3, NOW + i * 1000);
        }
        assert!(c.anchors.len() <= 11, "{}", c.anchors.len());
        assert!(c.is_wall_clock());
        assert!((c.node_time(NOW + 42_000) - (NOW + 42_000)).abs() <= DRIFT_MS);
    }

    #[test]
    fn a_sped_up_replay_maps_wall_times_between_its_samples() {
        // A 5-minute trace step every 5 s of wall time (60x).
        let mut c = NodeClock::default();
        for i in 0..100 {
            c.observe(NOW + i * 5_000, T2013 + i * 300_000);
        }
        assert!(!c.is_wall_clock());
        assert_eq!(c.node_time(NOW + 10_000), T2013 + 600_000);
        // Half way between two samples: half a step.
        assert_eq!(c.node_time(NOW + 12_500), T2013 + 750_000);
        // After the newest sample: its offset holds.
        assert_eq!(
            c.node_time(NOW + 495_000 + 1_000),
            T2013 + 99 * 300_000 + 1_000
        );
        // Before the oldest: the oldest offset.
        assert_eq!(c.node_time(NOW - 1_000), T2013 - 1_000);
        assert_eq!(c.offset_ms(), Some(T2013 + 99 * 300_000 - (NOW + 495_000)));
    }

    #[test]
    fn a_clock_without_samples_is_the_wall() {
        let c = NodeClock::default();
        assert_eq!(c.node_time(NOW), NOW);
        assert!(c.is_wall_clock() && c.offset_ms().is_none());
    }
}
