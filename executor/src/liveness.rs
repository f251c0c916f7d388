//! Is the target alive? The source asks the target's executor itself, over a
//! plain NATS request (not an event: it is a question about now, not a fact to
//! keep), and the answer carries the capacity the target declares and the
//! runtime it runs, so a request to a dead or unsuitable node fails before the
//! workload is frozen. The subject and the answer are the contract's
//! ([`loadshift_events::liveness`]); this module answers and asks.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
pub use loadshift_events::liveness::{ping_subject, Capacity, Pong};
use loadshift_events::NodeName;

use crate::stream::{Offer, OfferRequest};

/// How long the target has to answer before a migration is refused.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

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
    loadshift_events::liveness::ping(client, node, PING_TIMEOUT)
        .await
        .map_err(|e| format!("target {e}"))
}

/// The other executors, as the saga asks them whether they are alive. A
/// trait so that the saga's rules about a dead or unsuitable target are
/// tested against a double that answers as told.
pub trait Peers: Send + Sync + 'static {
    /// Asks `node`'s executor; `Err` says in words why it is not usable.
    fn ping(&self, node: &NodeName) -> impl Future<Output = Result<Pong, String>> + Send;

    /// Asks `node`'s executor to take one migration's pages over a direct
    /// connection; `Err` says in words why not (the saga then copies).
    fn offer_stream(
        &self,
        node: &NodeName,
        req: &OfferRequest,
    ) -> impl Future<Output = Result<Offer, String>> + Send {
        let _ = req;
        let node = node.clone();
        async move { Err(format!("node {node} was not asked for a direct connection")) }
    }
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

    fn offer_stream(
        &self,
        node: &NodeName,
        req: &OfferRequest,
    ) -> impl Future<Output = Result<Offer, String>> + Send {
        let (client, node, req) = (self.client.clone(), node.clone(), req.clone());
        async move { crate::stream::ask(&client, &node, &req).await }
    }
}
