//! Where `workload run` without `--node` starts a workload: the node the
//! contract's rule ([`emptiest_node`]) picks among the nodes whose executor
//! answers the liveness ping now and runs the workload's runtime, by the
//! latest CPU sample each sent in the last two minutes and the number of
//! workloads the log places on each.
//!
//! The candidates are the nodes that joined (their agent said so) and the
//! nodes that run a workload; a node whose executor does not answer within
//! [`PING_WITHIN`] is not one, so a dead node is never chosen.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use async_nats::jetstream;
use loadshift_events::liveness::ping;
use loadshift_events::placement::Placement;
use loadshift_events::stream::TELEMETRY;
use loadshift_events::workload::{emptiest_node, Runtime};
use loadshift_events::{subject, Envelope, Event, NodeName};

/// How long each candidate's executor has to answer.
pub const PING_WITHIN: Duration = Duration::from_secs(2);

/// How old a CPU sample may be and still describe the node now.
pub const RECENT: Duration = Duration::from_secs(120);

/// One node that could take the workload, with what the rule weighs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: NodeName,
    /// Its latest recent CPU use, percent of its capacity.
    pub cpu_pct: Option<f32>,
    /// How many workloads the log places on it.
    pub workloads: usize,
}

/// The node to start a `runtime` workload on, with the candidates weighed.
///
/// # Errors
/// When no node answers (the message says what to do).
pub async fn choose(
    client: &async_nats::Client,
    js: &jetstream::Context,
    placement: &Placement,
    runtime: Runtime,
) -> anyhow::Result<(NodeName, Vec<Candidate>)> {
    let known: BTreeSet<NodeName> = placement
        .nodes
        .iter()
        .filter(|(_, seen)| seen.joined)
        .map(|(n, _)| n.clone())
        .chain(placement.workloads.values().map(|w| w.node.clone()))
        .collect();
    let answers =
        futures::future::join_all(known.iter().map(|n| ping(client, n, PING_WITHIN))).await;
    let mut candidates = Vec::new();
    for (node, answer) in known.iter().zip(answers) {
        match answer {
            Ok(pong) if pong.runtime == runtime => candidates.push(Candidate {
                node: node.clone(),
                cpu_pct: recent_cpu(js, node).await,
                workloads: placement
                    .workloads
                    .values()
                    .filter(|w| &w.node == node)
                    .count(),
            }),
            Ok(pong) => {
                tracing::info!(%node, runs = %pong.runtime, "not a candidate: another runtime")
            }
            Err(e) => tracing::info!(%node, error = %e, "not a candidate"),
        }
    }
    let chosen =
        emptiest_node(candidates.iter().map(|c| (&c.node, c.cpu_pct, c.workloads))).cloned();
    match chosen {
        Some(node) => Ok((node, candidates)),
        None => bail!(
            "no node to place a {runtime} workload on: none of the nodes the log knows ({}) has a {runtime} executor answering; pass --node NODE",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            }
        ),
    }
}

/// The candidates as one line, emptiest first by the rule:
/// `node3 cpu 4.0%, 0 workloads; node2 cpu 71.5%, 1 workload`.
pub fn why(candidates: &[Candidate]) -> String {
    let mut left: Vec<&Candidate> = candidates.iter().collect();
    let mut ordered = Vec::new();
    while let Some(next) =
        emptiest_node(left.iter().map(|c| (&c.node, c.cpu_pct, c.workloads))).cloned()
    {
        left.retain(|c| {
            if c.node == next {
                ordered.push(format!(
                    "{} cpu {}, {} workload{}",
                    c.node,
                    c.cpu_pct
                        .map_or("unknown".to_string(), |v| format!("{v:.1}%")),
                    c.workloads,
                    if c.workloads == 1 { "" } else { "s" }
                ));
                false
            } else {
                true
            }
        });
    }
    ordered.join("; ")
}

/// `node`'s latest CPU sample, when it is recent.
async fn recent_cpu(js: &jetstream::Context, node: &NodeName) -> Option<f32> {
    let stream = js.get_stream(TELEMETRY).await.ok()?;
    let msg = stream
        .get_last_raw_message_by_subject(&subject::telemetry(node))
        .await
        .ok()?;
    match Envelope::from_message(msg.subject.as_str(), &msg.payload)
        .ok()?
        .event
    {
        // By the sample's own time: a replayed trace's samples (stamped in
        // their year) do not describe the node now, and the rule falls back
        // to the number of workloads.
        Event::TelemetrySample(s) if recent(s.at, chrono::Utc::now()) => Some(s.cpu.usage_pct),
        _ => None,
    }
}

/// Whether a sample taken `at` describes a node at `now`.
fn recent(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> bool {
    (now - at).to_std().map_or(true, |age| age <= RECENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_older_than_two_minutes_does_not_describe_the_node() {
        let now = chrono::Utc::now();
        assert!(recent(now - chrono::Duration::seconds(30), now));
        assert!(!recent(now - chrono::Duration::seconds(300), now));
        // A clock a little ahead of ours is not "old".
        assert!(recent(now + chrono::Duration::seconds(2), now));
    }
}
