//! Is a node's executor alive? Asked over a plain NATS request on
//! [`ping_subject`] (not an event: it is a question about now, not a fact to
//! keep). The answer, [`Pong`], carries the runtime the executor runs and the
//! capacity it declares, so a migration to a dead or unsuitable node fails
//! before the workload is frozen, and `loadshift status` and `up` can tell a
//! running executor from a missing one.
//!
//! It lives in the contract because three programs speak it (the executor
//! answers; the source executor, the CLI and the tests ask): one subject and
//! one answer type, never a literal or a raw JSON read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::subject::NodeName;
use crate::workload::Runtime;

/// The capacity an executor declares for its node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Cores (a quota may give fractions).
    pub cores: f32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// What an executor answers when asked whether it is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// Its node.
    pub node: NodeName,
    /// The runtime it runs workloads with.
    pub runtime: Runtime,
    /// The capacity it declares.
    pub capacity: Capacity,
}

/// `loadshift.executor.<node>.ping`: the subject `node`'s executor answers
/// pings on.
pub fn ping_subject(node: &NodeName) -> String {
    format!("loadshift.executor.{node}.ping")
}

/// Why a node's executor is not usable, in the words a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// nobody answered in time
    #[error("node {node} did not answer within {} ms (its executor is not running or is stuck)", within.as_millis())]
    NoAnswer {
        /// The node asked.
        node: NodeName,
        /// How long it was given.
        within: Duration,
    },
    /// no executor listens for this node at all
    #[error("node {0} has no executor running (no responders)")]
    NotRunning(NodeName),
    /// NATS could not carry the question
    #[error("node {node} is not reachable: {message}")]
    Unreachable {
        /// The node asked.
        node: NodeName,
        /// What the client said.
        message: String,
    },
    /// the answer is not a [`Pong`] this build reads
    #[error("node {node} answered something unreadable: {message}")]
    Unreadable {
        /// The node asked.
        node: NodeName,
        /// What serde said.
        message: String,
    },
}

/// Asks `node`'s executor whether it is alive, waiting at most `within`.
///
/// # Errors
/// [`PingError`] saying why the executor is not usable.
pub async fn ping(
    client: &async_nats::Client,
    node: &NodeName,
    within: Duration,
) -> Result<Pong, PingError> {
    let ask = client.request(ping_subject(node), "".into());
    match tokio::time::timeout(within, ask).await {
        Err(_) => Err(PingError::NoAnswer {
            node: node.clone(),
            within,
        }),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            Err(PingError::NotRunning(node.clone()))
        }
        Ok(Err(e)) => Err(PingError::Unreachable {
            node: node.clone(),
            message: e.to_string(),
        }),
        Ok(Ok(msg)) => {
            serde_json::from_slice::<Pong>(&msg.payload).map_err(|e| PingError::Unreadable {
                node: node.clone(),
                message: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_names_the_node() {
        let n = NodeName::new("node2").unwrap();
        assert_eq!(ping_subject(&n), "loadshift.executor.node2.ping");
    }

    #[test]
    fn a_pong_reads_back_as_written() {
        let p = Pong {
            node: NodeName::new("node3").unwrap(),
            runtime: Runtime::Docker,
            capacity: Capacity {
                cores: 1.5,
                memory_bytes: 1 << 30,
            },
        };
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(serde_json::from_slice::<Pong>(&json).unwrap(), p);
    }
}
