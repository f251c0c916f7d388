//! Is the target alive? The source asks the target's executor itself, over a
//! plain NATS request (not an event: it is a question about now, not a fact to
//! keep), and the answer carries the capacity the target declares and the
//! runtime it runs, so a request to a dead or unsuitable node fails before the
//! workload is frozen. The subject and the answer are the contract's
//! ([`loadshift_events::liveness`]); this module answers and asks.

use std::time::Duration;

use futures::StreamExt;
pub use loadshift_events::liveness::{ping_subject, Capacity, Pong};
use loadshift_events::NodeName;

/// How long the target has to answer before a migration is refused.
const PING_WITHIN: Duration = Duration::from_secs(3);

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
    loadshift_events::liveness::ping(client, node, PING_WITHIN)
        .await
        .map_err(|e| format!("target {e}"))
}
