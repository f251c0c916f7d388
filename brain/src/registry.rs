//! The node registry: what the brain knows about each node.
//!
//! The service folds TELEMETRY and EVENTS side by side in whatever order they
//! arrive, while a replay reads them one after the other; both must end in the
//! same registry (the replay-equivalence digest checks it). So every field is
//! merged order-independently: minima, maxima, sums, and "latest by
//! (time, stream, sequence)" for the values that change.

use serde::{Deserialize, Serialize};

/// A position in the log that orders any two facts: time first, then stream
/// tag and sequence to break ties deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Envelope `occurred_at` (or the sample's `at`), ms since the epoch.
    pub at_ms: i64,
    /// Stream tag byte.
    pub stream: u8,
    /// Stream sequence.
    pub seq: u64,
}

/// Capacity of a node, as declared (joined) or observed (a sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU cores.
    pub cores: f32,
    /// Memory bytes (0 when unknown).
    pub memory_bytes: u64,
    /// When it was stated.
    pub stamp: Stamp,
}

/// Whether the node last said it joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// `node.joined` is the latest life-cycle event.
    Joined,
    /// `node.left` is the latest life-cycle event.
    Left,
}

/// One node's registry record (`n<node>` in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Earliest envelope time of any event from the node, ms.
    pub first_seen_ms: i64,
    /// Latest envelope time of any event from the node, ms; "silent" is
    /// derived from it at read time.
    pub last_seen_ms: i64,
    /// Telemetry samples folded.
    pub samples: u64,
    /// Envelope time of the earliest sample, ms (for the typical interval).
    pub first_sample_ms: Option<i64>,
    /// Envelope time of the latest sample, ms.
    pub last_sample_ms: Option<i64>,
    /// Latest life-cycle event and when.
    pub membership: Option<(Membership, Stamp)>,
    /// Capacity from the latest `node.joined`.
    pub declared: Option<Capacity>,
    /// Capacity from the latest sample (by sample time).
    pub observed: Option<Capacity>,
}

impl NodeRecord {
    /// A node first seen at `at_ms`.
    pub fn new(at_ms: i64) -> Self {
        Self {
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
            samples: 0,
            first_sample_ms: None,
            last_sample_ms: None,
            membership: None,
            declared: None,
            observed: None,
        }
    }

    /// Any event from the node was seen at `at_ms`.
    pub fn seen(&mut self, at_ms: i64) {
        self.first_seen_ms = self.first_seen_ms.min(at_ms);
        self.last_seen_ms = self.last_seen_ms.max(at_ms);
    }

    /// A sample was folded.
    pub fn sample(&mut self, occurred_ms: i64, capacity: Capacity) {
        self.samples += 1;
        self.first_sample_ms = Some(
            self.first_sample_ms
                .map_or(occurred_ms, |v| v.min(occurred_ms)),
        );
        self.last_sample_ms = Some(
            self.last_sample_ms
                .map_or(occurred_ms, |v| v.max(occurred_ms)),
        );
        if self.observed.is_none_or(|o| o.stamp < capacity.stamp) {
            self.observed = Some(capacity);
        }
    }

    /// A life-cycle event was folded.
    pub fn membership(&mut self, m: Membership, stamp: Stamp) {
        if self.membership.is_none_or(|(_, s)| s < stamp) {
            self.membership = Some((m, stamp));
        }
    }

    /// A `node.joined` declared a capacity.
    pub fn declared(&mut self, capacity: Capacity) {
        if self.declared.is_none_or(|d| d.stamp < capacity.stamp) {
            self.declared = Some(capacity);
        }
    }

    /// The capacity to show: whichever of declared and observed is newer.
    pub fn capacity(&self) -> Option<Capacity> {
        match (self.declared, self.observed) {
            (Some(d), Some(o)) => Some(if o.stamp.at_ms > d.stamp.at_ms { o } else { d }),
            (d, o) => d.or(o),
        }
    }

    /// The typical time between two samples, ms, once there are two.
    pub fn typical_interval_ms(&self) -> Option<i64> {
        match (self.first_sample_ms, self.last_sample_ms) {
            (Some(a), Some(b)) if self.samples > 1 => Some((b - a) / (self.samples as i64 - 1)),
            _ => None,
        }
    }

    /// The state at `now_ms`: `left` when it said so, `silent` when nothing
    /// came for more than 3 typical intervals or more than 30 s (whichever is
    /// shorter), else `joined` (or `seen` for a node that never sent
    /// `node.joined`).
    pub fn state_at(&self, now_ms: i64) -> &'static str {
        if matches!(self.membership, Some((Membership::Left, _))) {
            return "left";
        }
        let limit = self
            .typical_interval_ms()
            .map_or(30_000, |i| (3 * i.max(1)).min(30_000));
        if now_ms - self.last_seen_ms > limit {
            return "silent";
        }
        match self.membership {
            Some((Membership::Joined, _)) => "joined",
            _ => "seen",
        }
    }
}
