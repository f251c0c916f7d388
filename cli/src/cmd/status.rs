//! `loadshift status`: the cluster at a glance, from the log plus one live
//! question per node. Everything but the EXECUTOR column is the fold of the
//! EVENTS stream (so it is as fresh as the log); the EXECUTOR column is a
//! ping answered now, or not within a second.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use loadshift_events::liveness::{self, PingError};
use loadshift_events::NodeName;

use super::{connect, Common};
use crate::summary;
use crate::table::Table;
use loadshift_events::placement::Placement;

/// How long a node's executor has to answer the ping.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// How many finished migrations are shown.
const LAST_OUTCOMES: usize = 5;

/// Nodes, workloads and migrations at a glance.
///
/// Shows the nodes seen (from `node.joined` / `node.left`, and whether each
/// executor answers a ping within 1 s), the workloads (as `workload ls`),
/// the migrations in flight and the last 5 outcomes.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift status
  LOADSHIFT_NATS=nats://node1:4222 loadshift status")]
pub struct StatusArgs {
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `status`.
///
/// # Errors
/// NATS failing.
pub async fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let (client, js) = connect(&a.common).await?;
    let p = super::workload::fold(&js, &a.common).await?;
    let nodes = nodes_of(&p);
    let answers = futures::future::join_all(nodes.iter().map(|n| ping(&client, n))).await;
    print!("{}", render(&p, &nodes, &answers));
    Ok(ExitCode::SUCCESS)
}

/// Every node the log names: the ones that joined or left, and the ones
/// workloads run on (an executor may run where no agent announced a node).
fn nodes_of(p: &Placement) -> Vec<NodeName> {
    let mut set: BTreeSet<NodeName> = p.nodes.keys().cloned().collect();
    set.extend(p.workloads.values().map(|w| w.node.clone()));
    set.into_iter().collect()
}

/// Asks `node`'s executor whether it is alive; the answer in words.
async fn ping(client: &async_nats::Client, node: &NodeName) -> String {
    match liveness::ping(client, node, PING_TIMEOUT).await {
        Ok(pong) => format!("answers ({})", pong.runtime),
        Err(PingError::NoAnswer { .. }) => "no answer".to_string(),
        Err(PingError::NotRunning(_)) => "not running".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// The report, as text.
fn render(p: &Placement, nodes: &[NodeName], answers: &[String]) -> String {
    let mut out = String::new();
    out.push_str("NODES\n");
    let mut t = Table::new(&["NODE", "STATE", "SINCE", "CORES", "EXECUTOR"]);
    for (n, answer) in nodes.iter().zip(answers) {
        let (state, since, cores) = match p.nodes.get(n) {
            Some(seen) => (
                if seen.joined { "joined" } else { "left" }.to_string(),
                crate::time::short(seen.since),
                seen.capacity_cores
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
            ),
            None => (
                "no node event".to_string(),
                "-".to_string(),
                "-".to_string(),
            ),
        };
        t.row(vec![n.to_string(), state, since, cores, answer.clone()]);
    }
    out.push_str(&or_none(&t));

    out.push_str("\nWORKLOADS\n");
    out.push_str(&or_none(&super::workload::workloads_table(p)));

    out.push_str("\nMIGRATIONS IN FLIGHT\n");
    let mut t = Table::new(&["ID", "WORKLOAD", "FROM→TO", "STEP", "SINCE", "BY"]);
    for m in p.in_flight() {
        t.row(vec![
            m.id.to_string(),
            m.workload.to_string(),
            format!("{}→{}", m.source, m.target),
            m.progress_label(),
            crate::time::short(m.updated_at),
            m.requested_by.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&or_none(&t));

    out.push_str("\nLAST OUTCOMES\n");
    let mut t = Table::new(&["ID", "WORKLOAD", "FROM→TO", "OUTCOME", "DOWNTIME", "AT"]);
    for m in p.recent_outcomes(LAST_OUTCOMES) {
        t.row(vec![
            m.id.to_string(),
            m.workload.to_string(),
            format!("{}→{}", m.source, m.target),
            m.outcome_label(),
            summary::ms(m.timings.downtime_ms),
            crate::time::short(m.updated_at),
        ]);
    }
    out.push_str(&or_none(&t));
    out
}

fn or_none(t: &Table) -> String {
    if t.is_empty() {
        "(none)\n".to_string()
    } else {
        t.render()
    }
}
