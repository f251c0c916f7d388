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

use super::{connect_and_fold, workload, Common};
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
  loadshift status --json | jq -r '.nodes[] | select(.executor != \"answers\") | .node'
  LOADSHIFT_NATS=nats://node1:4222 loadshift status")]
pub struct StatusArgs {
    /// Print one JSON object (`nodes`, `workloads`, `in_flight`,
    /// `outcomes`) instead of the tables.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `status`.
///
/// # Errors
/// NATS failing.
pub async fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let (client, _js, p) = connect_and_fold(&a.common).await?;
    let nodes = nodes_of(&p);
    let answers = futures::future::join_all(nodes.iter().map(|n| ping(&client, n))).await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&p, &nodes, &answers))?
        );
    } else {
        print!("{}", render(&p, &nodes, &answers));
    }
    Ok(ExitCode::SUCCESS)
}

/// Every node the log names: the ones that joined or left, and the ones
/// workloads run on (an executor may run where no agent announced a node).
pub fn nodes_of(p: &Placement) -> Vec<NodeName> {
    let mut set: BTreeSet<NodeName> = p.nodes.keys().cloned().collect();
    set.extend(p.workloads.values().map(|w| w.node.clone()));
    set.into_iter().collect()
}

/// What a node's executor said to the ping.
#[derive(Debug, Clone, PartialEq)]
enum PingAnswer {
    /// It answered, naming its runtime.
    Answers(String),
    /// Nobody listens on its subject.
    NotRunning,
    /// Nothing within [`PING_TIMEOUT`].
    Silent,
    /// The request failed otherwise.
    Error(String),
}

impl PingAnswer {
    /// `answers (docker)`, `not running`, ...: the EXECUTOR column.
    fn label(&self) -> String {
        match self {
            PingAnswer::Answers(r) => format!("answers ({r})"),
            PingAnswer::NotRunning => "not running".to_string(),
            PingAnswer::Silent => "no answer".to_string(),
            PingAnswer::Error(e) => format!("error: {e}"),
        }
    }

    /// The same, for `--json`: a word to match on, and the detail apart.
    fn json(&self) -> serde_json::Value {
        let (word, runtime, error) = match self {
            PingAnswer::Answers(r) => ("answers", Some(r.clone()), None),
            PingAnswer::NotRunning => ("not_running", None, None),
            PingAnswer::Silent => ("no_answer", None, None),
            PingAnswer::Error(e) => ("error", None, Some(e.clone())),
        };
        serde_json::json!({ "state": word, "runtime": runtime, "error": error })
    }
}

/// Asks `node`'s executor whether it is alive.
async fn ping(client: &async_nats::Client, node: &NodeName) -> PingAnswer {
    match liveness::ping(client, node, PING_TIMEOUT).await {
        Ok(pong) => PingAnswer::Answers(pong.runtime.to_string()),
        Err(PingError::NoAnswer { .. }) => PingAnswer::Silent,
        Err(PingError::NotRunning(_)) => PingAnswer::NotRunning,
        Err(e) => PingAnswer::Error(e.to_string()),
    }
}

/// The report, as text.
fn render(p: &Placement, nodes: &[NodeName], answers: &[PingAnswer]) -> String {
    let mut out = String::new();
    out.push_str("NODES\n");
    let mut t = Table::new(&["NODE", "STATE", "SINCE", "CORES", "EXECUTOR"]);
    for (n, answer) in nodes.iter().zip(answers) {
        let (state, since, cores) = match p.nodes.get(n) {
            Some(seen) => (
                super::node::state_label(p, n),
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
        t.row(vec![n.to_string(), state, since, cores, answer.label()]);
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

/// The report as one JSON value: the same rows as the tables, with times
/// in RFC 3339 and numbers as numbers, for scripts.
fn report_json(p: &Placement, nodes: &[NodeName], answers: &[PingAnswer]) -> serde_json::Value {
    let nodes: Vec<_> = nodes
        .iter()
        .zip(answers)
        .map(|(n, answer)| {
            let seen = p.nodes.get(n);
            serde_json::json!({
                "node": n,
                "state": seen.map_or("no_node_event", |s| if s.joined { "joined" } else { "left" }),
                "since": seen.map(|s| s.since),
                "capacity_cores": seen.and_then(|s| s.capacity_cores),
                "draining": super::node::drain_json(p, n),
                "executor": answer.json(),
            })
        })
        .collect();
    // The keys of `workload ls --json`, so one jq filter reads both.
    let workloads: Vec<_> = p.workloads.values().map(workload::workload_json).collect();
    // A migration as the contract's placement fold serializes it (its
    // steps' times, timings, failure and status), so status and the
    // dashboard's /api/migrations say the same thing.
    serde_json::json!({
        "nodes": nodes,
        "workloads": workloads,
        "in_flight": p.in_flight().collect::<Vec<_>>(),
        "outcomes": p.recent_outcomes(LAST_OUTCOMES),
    })
}

fn or_none(t: &Table) -> String {
    if t.is_empty() {
        "(none)\n".to_string()
    } else {
        t.render()
    }
}
