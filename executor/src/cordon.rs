//! The executor's own word on a draining node: it starts no new workload
//! and restores no migration while its node drains.
//!
//! The CLI, the dashboard and the brain already keep work off a draining
//! node (they read the contract's placement fold), but they are not the
//! last line: a request published straight onto the stream, a brain that
//! planned before the drain was announced, or an older CLI would still put
//! work there. The executor reads `node.<its node>.drain_requested` and
//! `node.<its node>.uncordoned` from its own consumer (they come along with
//! its subjects and were skipped before), keeps the latest in its journal
//! in the same commit as the sequence it applied, and answers a start with
//! `workload.start_failed` and a restore with `migration.failed` (the
//! source resumes the workload) naming the drain.

use chrono::{DateTime, Utc};
use loadshift_events::cordon::DrainRequested;
use loadshift_events::NodeName;
use serde::{Deserialize, Serialize};

/// The drain this node is under, as its journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// When it was asked for (the event's time).
    pub since: DateTime<Utc>,
    /// Who asked.
    pub requested_by: String,
    /// Why, in their words (may be empty).
    #[serde(default)]
    pub reason: String,
}

impl DrainRecord {
    /// The drain `r` asked for at `at`.
    pub fn new(at: DateTime<Utc>, r: &DrainRequested) -> Self {
        Self {
            since: at,
            requested_by: r.requested_by.clone(),
            reason: r.reason.clone(),
        }
    }

    /// Why `node` refuses new work, in the words a person reads (and how
    /// to end it).
    pub fn refusal(&self, node: &NodeName) -> String {
        let why = if self.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", self.reason)
        };
        format!(
            "node {node} is draining (asked by {} at {}{why}) and takes no new workload; `loadshift node uncordon {node}` ends the drain",
            self.requested_by,
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_node_who_asked_why_and_the_way_out() {
        let node = NodeName::new("node3").unwrap();
        let r = DrainRequested {
            node: node.clone(),
            requested_by: "alice".into(),
            reason: "kernel update".into(),
        };
        let at = DateTime::parse_from_rfc3339("2026-11-29T23:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let said = DrainRecord::new(at, &r).refusal(&node);
        assert!(said.contains("node node3 is draining"), "{said}");
        assert!(
            said.contains("alice") && said.contains(": kernel update"),
            "{said}"
        );
        assert!(said.contains("2026-11-29 23:00:00 UTC"), "{said}");
        assert!(said.contains("loadshift node uncordon node3"), "{said}");
    }
}
