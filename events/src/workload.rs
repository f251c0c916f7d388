//! Workloads: what runs on a node and can be moved, and the events that start
//! them. Workloads are started by event so that the log, not an executor's
//! memory, says where each one runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subject::{validated_name, NodeName, NodeNameError};

/// Why a string cannot be a workload name: the node name's rules, reported
/// as what they are about, so a person who typed a bad workload name is not
/// told their node name is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadNameError {
    /// workload name is empty
    #[error("workload name is empty")]
    Empty,
    /// workload name is longer than 64 bytes
    #[error("workload name {0:?} is longer than 64 bytes")]
    TooLong(String),
    /// workload name holds a character a folder, an object or a subject cannot carry
    #[error("workload name {0:?} may only hold letters, digits, '-' and '_' (it becomes a folder and an object name)")]
    BadCharacter(String),
}

impl From<NodeNameError> for WorkloadNameError {
    fn from(e: NodeNameError) -> Self {
        match e {
            NodeNameError::Empty => Self::Empty,
            NodeNameError::TooLong(s) => Self::TooLong(s),
            NodeNameError::BadCharacter(s) => Self::BadCharacter(s),
        }
    }
}

/// A validated workload name.
///
/// It becomes a folder name under an executor's state dir and an object name
/// in the checkpoint store, so it follows the same rules as a node name
/// (letters, digits, `-`, `_`): no `/`, no `..`, nothing a shell or a subject
/// would read differently.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkloadName(String);

impl WorkloadName {
    /// Checks `name` and wraps it.
    ///
    /// # Errors
    /// [`WorkloadNameError`] when the name is empty, longer than 64 bytes,
    /// or holds anything but ASCII letters, digits, `-` and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, WorkloadNameError> {
        // Same rules as a node name; reuse the one checker.
        NodeName::new(name)
            .map(|n| Self(n.into()))
            .map_err(WorkloadNameError::from)
    }
}

validated_name!(WorkloadName, WorkloadNameError);

/// How a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A plain process tree, checkpointed with the criu CLI.
    Process,
    /// A Docker container, checkpointed through the Docker Engine API.
    Docker,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Process => "process",
            Runtime::Docker => "docker",
        })
    }
}

/// What to run: enough for any executor to start it, or to recreate it on
/// another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Process or container.
    pub runtime: Runtime,
    /// The command and its arguments (for docker: overrides the image's).
    pub command: Vec<String>,
    /// The image, for docker workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The operator declined post-copy for this workload: during a lazy
    /// migration it lives half on each node, and dies if the source dies
    /// before the last page arrived. Part of the spec so it travels with
    /// the workload through every migration; such a workload is never moved
    /// in `lazy` mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_postcopy: bool,
}

/// A person or the brain asks `node` to start a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequested {
    /// The workload's name, unique in the cluster.
    pub workload: WorkloadName,
    /// The node that must start it (named in the subject).
    pub node: NodeName,
    /// What to run.
    pub spec: WorkloadSpec,
    /// Who asked (a user name, `brain`, ...).
    pub requested_by: String,
}

/// The workload runs on the emitting node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    /// Which workload.
    pub workload: WorkloadName,
    /// What runs.
    pub spec: WorkloadSpec,
    /// The workload's pid on the host, for a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The container id, for docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// The emitting node could not start the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartFailed {
    /// Which workload.
    pub workload: WorkloadName,
    /// Why, in words.
    pub reason: String,
}

/// The workload ended on its own (or was stopped) on the emitting node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exited {
    /// Which workload.
    pub workload: WorkloadName,
    /// Its exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_workload_name_is_reported_as_a_workload_name() {
        for bad in ["", "a/b", "../x", &"w".repeat(65)] {
            let e = WorkloadName::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("workload name"), "{bad:?}: {e}");
            assert!(!e.contains("node"), "{bad:?}: {e}");
        }
        assert_eq!(WorkloadName::new("redis-1").unwrap().as_str(), "redis-1");
    }

    #[test]
    fn the_no_postcopy_mark_reads_back_and_specs_from_before_it_allow_post_copy() {
        let old = r#"{"runtime":"process","command":["sleep","9"]}"#;
        let spec: WorkloadSpec = serde_json::from_str(old).unwrap();
        assert!(!spec.no_postcopy);
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            old,
            "unmarked specs read as before"
        );
        let marked = WorkloadSpec {
            no_postcopy: true,
            ..spec
        };
        let json = serde_json::to_string(&marked).unwrap();
        assert!(json.contains(r#""no_postcopy":true"#), "{json}");
        assert_eq!(serde_json::from_str::<WorkloadSpec>(&json).unwrap(), marked);
    }

    #[test]
    fn a_bad_workload_name_in_an_event_says_so() {
        let e = serde_json::from_str::<WorkloadName>("\"a.b\"").unwrap_err();
        assert!(e.to_string().contains("workload name \"a.b\""), "{e}");
    }
}
