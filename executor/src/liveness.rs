//! Is the target alive? The source asks the target's executor itself, over a
//! plain NATS request (not an event: it is a question about now, not a fact to
//! keep), and the answer carries the capacity the target declares and the
//! runtime it runs, so a request to a dead or unsuitable node fails before the
//! workload is frozen.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use loadshift_events::workload::Runtime as RuntimeKind;
use loadshift_events::NodeName;
use serde::{Deserialize, Serialize};

use crate::cgroup::Capacity;

/// What an executor answers when asked whether it is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// Its node.
    pub node: NodeName,
    /// The runtime it runs workloads with.
    pub runtime: RuntimeKind,
    /// The capacity it declares.
    pub capacity: Capacity,
}

/// The subject an executor answers pings on.
pub fn ping_subject(node: &NodeName) -> String {
    format!("loadshift.executor.{node}.ping")
}

/// Answers pings for this node until the subscription ends.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn serve(
    client: async_nats::Client,
    pong: Pong,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(ping_subject(&pong.node)).await?;
    let body = serde_json::to_vec(&pong).unwrap_or_default();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                if let Err(e) = client.publish(reply, body.clone().into()).await {
                    tracing::warn!(error = %e, "cannot answer a ping");
                }
            }
        }
    });
    Ok(())
}

/// Asks `node`'s executor; `Err` says in words why it is not usable.
pub async fn ping(client: &async_nats::Client, node: &NodeName) -> Result<Pong, String> {
    let ask = client.request(ping_subject(node), "".into());
    match tokio::time::timeout(PING_TIMEOUT, ask).await {
        Err(_) => Err(format!(
            "target node {node} did not answer within {} s (its executor is not running)",
            PING_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("target node {node} is not reachable: {e}")),
        Ok(Ok(msg)) => serde_json::from_slice::<Pong>(&msg.payload)
            .map_err(|e| format!("target node {node} answered something unreadable: {e}")),
    }
}

/// How long an executor may take to answer a ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The other executors, as the saga asks them whether they are alive. A
/// trait so that the saga's rules about a dead or unsuitable target are
/// tested against a double that answers as told.
pub trait Peers: Send + Sync + 'static {
    /// Asks `node`'s executor; `Err` says in words why it is not usable.
    fn ping(&self, node: &NodeName) -> impl Future<Output = Result<Pong, String>> + Send;
}

/// Peers reached over NATS requests.
#[derive(Clone)]
pub struct NatsPeers {
    client: async_nats::Client,
}

impl NatsPeers {
    /// Peers asked through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }
}

impl Peers for NatsPeers {
    fn ping(&self, node: &NodeName) -> impl Future<Output = Result<Pong, String>> + Send {
        ping(&self.client, node)
    }
}
