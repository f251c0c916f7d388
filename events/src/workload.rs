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

impl WorkloadSpec {
    /// A process running `command`, with nothing else set: what most
    /// workloads and most tests are.
    pub fn process(command: Vec<String>) -> Self {
        Self {
            runtime: Runtime::Process,
            command,
            image: None,
            env: BTreeMap::new(),
            no_postcopy: false,
        }
    }
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
    /// Why it ended: on its own, or stopped by a person. Left out when it
    /// ended on its own, so events of earlier builds read the same.
    #[serde(default, skip_serializing_if = "ExitReason::is_ended")]
    pub reason: ExitReason,
}

/// Why a workload ended: an operator reading `workload.exited` must tell a
/// crash from the stop they asked for, and a clean stop from a kill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It ended by itself (or crashed); nobody asked.
    #[default]
    Ended,
    /// A stop was asked for and it ended within the grace period after SIGTERM.
    Stopped,
    /// A stop was asked for and it was still running when the grace period
    /// ran out: SIGKILL ended it.
    KilledAfterGrace,
}

impl ExitReason {
    /// Whether it ended by itself (the default, not written in events).
    pub fn is_ended(&self) -> bool {
        *self == ExitReason::Ended
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::Ended => "ended",
            ExitReason::Stopped => "stopped",
            ExitReason::KilledAfterGrace => "killed after grace",
        })
    }
}

/// A person asks `node` to stop a workload: SIGTERM, then SIGKILL once
/// `grace_ms` passed. An event, like a start, so the log says who stopped
/// what and the executor that holds the workload acts on it in order with
/// its migrations (docs/saga.md, "Stop and migration").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequested {
    /// Which workload.
    pub workload: WorkloadName,
    /// The node that holds it as the requester read the log (named in the
    /// subject); a source that hands it to a target forwards the request.
    pub node: NodeName,
    /// How long it has after SIGTERM before SIGKILL, in milliseconds.
    pub grace_ms: u64,
    /// Who asked (a user name).
    pub requested_by: String,
    /// The source that handed this request on after its migration
    /// completed; `None` for a request a person made. A handed-on request
    /// that finds no workload is not handed on again, so two nodes that
    /// each moved the workload to the other never pass a stale stop back
    /// and forth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<NodeName>,
}

/// The node to place a new workload on, the one rule the CLI states in
/// `workload run --help`: among `candidates` (live nodes with their latest
/// CPU use in percent of their capacity, `None` when they sent none, and
/// how many workloads they run), the lowest CPU; a node without telemetry
/// counts as busier than any with it; ties go to fewer workloads, then to
/// the name. `None` when there is no candidate.
pub fn emptiest_node<'a>(
    candidates: impl IntoIterator<Item = (&'a NodeName, Option<f32>, usize)>,
) -> Option<&'a NodeName> {
    candidates
        .into_iter()
        .min_by(|a, b| {
            let cpu = |c: Option<f32>| c.filter(|v| v.is_finite()).unwrap_or(f32::INFINITY);
            cpu(a.1)
                .total_cmp(&cpu(b.1))
                .then(a.2.cmp(&b.2))
                .then(a.0.cmp(b.0))
        })
        .map(|(n, _, _)| n)
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
    fn the_emptiest_node_has_the_lowest_cpu_then_fewest_workloads() {
        let (a, b, c) = (
            NodeName::new("a").unwrap(),
            NodeName::new("b").unwrap(),
            NodeName::new("c").unwrap(),
        );
        let pick = |v: Vec<(&NodeName, Option<f32>, usize)>| emptiest_node(v).cloned();
        assert_eq!(
            pick(vec![(&a, Some(50.0), 0), (&b, Some(10.0), 3)]),
            Some(b.clone())
        );
        assert_eq!(
            pick(vec![(&a, None, 0), (&b, Some(90.0), 3)]),
            Some(b.clone())
        );
        assert_eq!(
            pick(vec![(&a, Some(5.0), 2), (&b, Some(5.0), 1)]),
            Some(b.clone())
        );
        assert_eq!(pick(vec![(&c, None, 0), (&a, None, 0)]), Some(a.clone()));
        assert_eq!(
            pick(vec![(&a, Some(f32::NAN), 0), (&c, Some(99.0), 5)]),
            Some(c)
        );
        assert_eq!(pick(vec![]), None);
    }

    #[test]
    fn an_exit_of_an_earlier_build_ended_by_itself_and_reads_the_same() {
        let old = r#"{"workload":"w","code":0}"#;
        let x: Exited = serde_json::from_str(old).unwrap();
        assert_eq!(x.reason, ExitReason::Ended);
        assert_eq!(serde_json::to_string(&x).unwrap(), old);
        let stopped = Exited {
            reason: ExitReason::KilledAfterGrace,
            ..x
        };
        let json = serde_json::to_string(&stopped).unwrap();
        assert!(json.contains(r#""reason":"killed_after_grace""#), "{json}");
        assert_eq!(stopped.reason.to_string(), "killed after grace");
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
