//! Draining a node for maintenance: the events that say so and the part of
//! the placement fold that remembers it.
//!
//! An operator who wants a node empty (a kernel update, a disk swap) asks
//! for it once: `node.<n>.drain_requested`. From then on the node is
//! *cordoned*: the brain never picks it as a target, `workload run` without a
//! node never places on it, and the brain moves every workload off it through
//! the normal migration saga. What cannot move is said in the log
//! (`node.<n>.drain_blocked`, by the brain, with the reason) so the CLI and
//! the dashboard show the same list. `node.<n>.uncordoned` ends it: the node
//! takes work again. The three readers (CLI, dashboard, brain) read this
//! through [`crate::placement::Placement`], so "is node2 draining?" has one
//! answer everywhere.
//!
//! Compared with `kubectl drain` (cordon, then evict pods that are restarted
//! elsewhere) and `incus cluster evacuate` (stop or live-migrate instances):
//! here nothing restarts; each workload is checkpointed and restored live,
//! one saga per workload, and a workload that cannot move stays running
//! where it is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounds::{no_numbers_to_check, Bounded, OutOfRange};
use crate::{NodeName, WorkloadName};

/// Migrations of one workload off a draining node that may end without
/// moving it (rolled back or refused) before the brain gives it up and
/// reports it: a workload that failed twice will most likely fail again, and
/// retrying it forever would keep freezing it.
pub const DRAIN_ATTEMPTS: usize = 2;

/// Someone asks for `node` to be emptied and to take no new work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequested {
    /// The node to empty (named in the subject).
    pub node: NodeName,
    /// Who asked.
    pub requested_by: String,
    /// Why, in their words (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Someone ends the drain of `node`: it takes work again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uncordoned {
    /// The node (named in the subject).
    pub node: NodeName,
    /// Who asked.
    pub requested_by: String,
}

/// The brain cannot move `workload` off the draining `node` now, and says
/// why, so the operator's `node drain --wait` and the dashboard can list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBlocked {
    /// The draining node (named in the subject).
    pub node: NodeName,
    /// The workload that stays.
    pub workload: WorkloadName,
    /// Why it cannot move (no target with room, failed twice, ...).
    pub reason: String,
}

no_numbers_to_check!(DrainRequested, Uncordoned, DrainBlocked);

/// One node's drain, as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drain {
    /// When it was asked for.
    pub since: DateTime<Utc>,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// Each workload's migrations off the node that ended without moving it
    /// since the drain began, with the reason of each.
    pub failures: BTreeMap<WorkloadName, Vec<String>>,
    /// What the brain last said cannot move, and why; forgotten once the
    /// workload leaves the node.
    pub blocked: BTreeMap<WorkloadName, String>,
}

impl Drain {
    /// A drain asked for by `r` at `at`.
    pub fn new(at: DateTime<Utc>, r: &DrainRequested) -> Self {
        Self {
            since: at,
            requested_by: r.requested_by.clone(),
            reason: r.reason.clone(),
            failures: BTreeMap::new(),
            blocked: BTreeMap::new(),
        }
    }

    /// Whether `workload` failed to move [`DRAIN_ATTEMPTS`] times during
    /// this drain: the brain stops trying it until the drain is asked again.
    pub fn gave_up(&self, workload: &WorkloadName) -> bool {
        self.failures
            .get(workload)
            .is_some_and(|f| f.len() >= DRAIN_ATTEMPTS)
    }

    /// Why `workload` could not move the last time it failed to, if it did.
    pub fn last_failure(&self, workload: &WorkloadName) -> Option<&str> {
        self.failures
            .get(workload)
            .and_then(|f| f.last())
            .map(String::as_str)
    }

    /// The workload left the node (moved or exited): what was said about
    /// it no longer holds.
    pub(crate) fn forget(&mut self, workload: &WorkloadName) {
        self.blocked.remove(workload);
    }
}

/// Where a drain stands, for the CLI's `--wait` and the dashboard: derived
/// from the fold each time, never stored, so it cannot go stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainProgress {
    /// The node.
    pub node: NodeName,
    /// The drain.
    pub drain: Drain,
    /// Workloads still on the node (migrating ones included).
    pub remaining: Vec<WorkloadName>,
    /// Workloads being moved off it now.
    pub moving: Vec<WorkloadName>,
}

impl DrainProgress {
    /// Nothing runs on the node any more.
    pub fn is_empty(&self) -> bool {
        self.remaining.is_empty()
    }

    /// What stays and why: every remaining workload the brain reported
    /// blocked or gave up on, by name.
    pub fn stuck(&self) -> BTreeMap<WorkloadName, String> {
        self.remaining
            .iter()
            .filter(|w| !self.moving.contains(w))
            .filter_map(|w| {
                let why = self.drain.blocked.get(w).cloned().or_else(|| {
                    self.drain.gave_up(w).then(|| {
                        format!(
                            "its migration failed {DRAIN_ATTEMPTS} times (last: {})",
                            self.drain.last_failure(w).unwrap_or("?")
                        )
                    })
                })?;
                Some((w.clone(), why))
            })
            .collect()
    }

    /// Nothing is moving and every workload left is stuck: waiting longer
    /// changes nothing until something else changes (room appears, the
    /// operator drains again).
    pub fn is_stuck(&self) -> bool {
        !self.is_empty() && self.moving.is_empty() && self.stuck().len() == self.remaining.len()
    }
}
