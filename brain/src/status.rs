//! `loadshift-brain status`: the node registry and the fold's counts, for an
//! operator (text) or a script (`--json`).
//!
//! sled lets one process open a store, and that process is the running
//! brain; so after every committed batch the service also writes a small
//! snapshot file (`brain-status.json` inside the store directory) that
//! `status` reads when the store is busy. When no brain runs, `status` reads
//! the store itself (and only then can it compute the `--digest`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::registry::NodeRecord;

/// The snapshot file's name inside the store directory.
pub const SNAPSHOT_FILE: &str = "brain-status.json";

/// Why status cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// the snapshot file is missing or unreadable
    #[error(
        "a running brain holds the store and its status snapshot {path} cannot be read: {reason}"
    )]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// the snapshot could not be written
    #[error("cannot write status snapshot {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The fold's summary: registry, counts per kind, parked count and applied
/// sequence per stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// Registry records by node name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Events folded per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Messages parked.
    pub parked: u64,
    /// Last applied sequence per stream name.
    pub applied: BTreeMap<String, u64>,
}

impl From<&crate::fold::Fold> for Snapshot {
    /// What `status` shows, as of `fold`.
    fn from(fold: &crate::fold::Fold) -> Self {
        use loadshift_events::stream::StreamId;
        use loadshift_events::Kind;
        Snapshot {
            nodes: fold
                .nodes()
                .map(|(k, r)| (k.to_string(), r.clone()))
                .collect(),
            kinds: Kind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), fold.count(*k)))
                .collect(),
            parked: fold.parked(),
            applied: StreamId::ALL
                .iter()
                .map(|s| (s.name().to_string(), fold.applied(*s)))
                .collect(),
        }
    }
}

impl Snapshot {
    /// Writes the snapshot file into `store_dir` atomically (temp + rename),
    /// so a reader never sees half a file.
    ///
    /// # Errors
    /// [`StatusError::Write`].
    pub fn write(&self, store_dir: &Path) -> Result<(), StatusError> {
        let path = store_dir.join(SNAPSHOT_FILE);
        let tmp = store_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let json = serde_json::to_vec(self).unwrap_or_default();
        std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| StatusError::Write { path, source })
    }

    /// Reads the snapshot a running brain wrote.
    ///
    /// # Errors
    /// [`StatusError::Snapshot`].
    pub fn read(store_dir: &Path) -> Result<Self, StatusError> {
        let path = store_dir.join(SNAPSHOT_FILE);
        let err = |reason: String| StatusError::Snapshot {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
    }
}

/// One node as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// `joined`, `left`, `silent` or `seen`.
    pub state: &'static str,
    /// First event from it.
    pub first_seen: Option<DateTime<Utc>>,
    /// Latest event from it.
    pub last_seen: Option<DateTime<Utc>>,
    /// CPU cores (declared or observed, whichever is newer).
    pub capacity_cores: Option<f32>,
    /// Memory bytes.
    pub memory_bytes: Option<u64>,
    /// Samples folded.
    pub samples: u64,
    /// Typical time between samples, ms.
    pub typical_interval_ms: Option<i64>,
}

/// The whole `status` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `store` (read directly) or `snapshot` (a running brain's snapshot).
    pub source: &'static str,
    /// The store directory.
    pub store: PathBuf,
    /// Nodes, by name.
    pub nodes: Vec<NodeView>,
    /// Events folded per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Messages parked.
    pub parked: u64,
    /// Last applied sequence per stream.
    pub applied: BTreeMap<String, u64>,
    /// Store digest, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The decisions NATS has not acknowledged yet (the outbox), when the
    /// store was read directly: what a stopped or crashed brain publishes
    /// at its next start. A running brain empties it as it goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Vec<Waiting>>,
}

/// A decision waiting in the outbox: the fault matrix checks that each
/// one a crashed brain recorded reaches the log after its restart, and an
/// operator sees why a migration has not been asked for yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waiting {
    /// The event's id, also its `Nats-Msg-Id` (the log stores it once).
    pub id: uuid::Uuid,
    /// The subject it goes to.
    pub subject: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
}

impl From<&loadshift_events::Envelope> for Waiting {
    fn from(env: &loadshift_events::Envelope) -> Self {
        Self {
            id: env.id,
            subject: env.subject(),
            decided_at: env.occurred_at,
        }
    }
}

impl Report {
    /// Builds the report, deriving each node's state at `now`.
    pub fn new(source: &'static str, store: &Path, snap: Snapshot, now: DateTime<Utc>) -> Self {
        let now_ms = now.timestamp_millis();
        let nodes = snap
            .nodes
            .iter()
            .map(|(name, r)| {
                let cap = r.capacity();
                NodeView {
                    name: name.clone(),
                    state: r.state_at(now_ms),
                    first_seen: DateTime::from_timestamp_millis(r.first_seen_ms),
                    last_seen: DateTime::from_timestamp_millis(r.last_seen_ms),
                    capacity_cores: cap.map(|c| c.cores),
                    memory_bytes: cap.map(|c| c.memory_bytes),
                    samples: r.samples,
                    typical_interval_ms: r.typical_interval_ms(),
                }
            })
            .collect();
        Self {
            source,
            store: store.to_path_buf(),
            nodes,
            kinds: snap.kinds,
            parked: snap.parked,
            applied: snap.applied,
            digest: None,
            outbox: None,
        }
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let t = |d: Option<DateTime<Utc>>| {
            d.map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "store {} ({})",
            self.store.display(),
            if self.source == "store" {
                "read directly"
            } else {
                "snapshot of the running brain"
            }
        );
        let _ = writeln!(
            out,
            "{:<20} {:<7} {:<19} {:<19} {:>6} {:>10} {:>10}",
            "NODE", "STATE", "FIRST SEEN", "LAST SEEN", "CORES", "MEMORY", "SAMPLES"
        );
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "{:<20} {:<7} {:<19} {:<19} {:>6} {:>10} {:>10}",
                n.name,
                n.state,
                t(n.first_seen),
                t(n.last_seen),
                n.capacity_cores
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "-".into()),
                n.memory_bytes
                    .map(|m| format!("{:.1}GiB", m as f64 / (1u64 << 30) as f64))
                    .unwrap_or_else(|| "-".into()),
                n.samples
            );
        }
        // Kinds never seen are left out of the text (nineteen zeros hide the
        // few that matter); `--json` lists every kind.
        let _ = writeln!(out, "events by kind:");
        for (k, v) in self.kinds.iter().filter(|(_, v)| **v > 0) {
            let _ = writeln!(out, "  {k:<24} {v}");
        }
        let _ = writeln!(out, "parked: {}", self.parked);
        let applied: Vec<String> = self
            .applied
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "applied: {}", applied.join(", "));
        if let Some(d) = &self.digest {
            let _ = writeln!(out, "digest: {d}");
        }
        if let Some(waiting) = &self.outbox {
            let _ = writeln!(out, "outbox: {} not yet published", waiting.len());
            for w in waiting {
                let _ = writeln!(
                    out,
                    "  {} {} (decided {})",
                    w.id,
                    w.subject,
                    t(Some(w.decided_at))
                );
            }
        }
        out
    }
}
