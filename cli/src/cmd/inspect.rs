//! `loadshift workload inspect`: one workload's story from the log — where
//! it runs and ran, each migration with its timings and outcome, how it
//! ended, and what it uses now.

use std::process::ExitCode;

use clap::Args;
use loadshift_events::model::WorkloadUse;
use loadshift_events::placement::{Migration, Placement};
use loadshift_events::stream::TELEMETRY;
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};

use super::workload::workload_json;
use super::{connect, Common};
use crate::error::InputError;
use crate::eventlog;
use crate::summary::{bytes, ms};
use crate::table::Table;

/// Show one workload: where it runs and ran, its migrations, its use.
///
/// Reads the EVENTS stream from its start: every event about the workload
/// (start, stop, exit, each migration step) in order, each migration with
/// who asked, its outcome, downtime, total time and image size, and its
/// latest CPU and memory use as its executor sampled it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift workload inspect counter
  loadshift workload inspect counter --json | jq '.migrations[] | .timings.downtime_ms'")]
pub struct InspectArgs {
    /// The workload.
    pub name: WorkloadName,
    /// Print one JSON object instead of text.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// The name of the workload `event` is about, for the kinds about one.
fn workload_of(event: &Event) -> Option<&WorkloadName> {
    Some(match event {
        Event::WorkloadStartRequested(p) => &p.workload,
        Event::WorkloadStarted(p) => &p.workload,
        Event::WorkloadStartFailed(p) => &p.workload,
        Event::WorkloadExited(p) => &p.workload,
        Event::WorkloadStopRequested(p) => &p.workload,
        Event::MigrationRequested(p) => &p.workload,
        Event::MigrationCheckpointed(p) => &p.workload,
        Event::MigrationRestored(p) => &p.workload,
        Event::MigrationCompleted(p) => &p.workload,
        Event::MigrationFailed(p) => &p.workload,
        Event::MigrationRolledBack(p) => &p.workload,
        Event::MigrationWithdrawn(p) => &p.workload,
        Event::MigrationFenced(p) => &p.workload,
        Event::MigrationDeferred(p) => p.workload.as_ref()?,
        _ => return None,
    })
}

/// `workload inspect`.
///
/// # Errors
/// A workload the log never mentions (bad input), or NATS failing.
pub async fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let (_client, js) = connect(&a.common).await?;
    let mut log = eventlog::open(&js, &a.common.nats).await?;
    let items = eventlog::read_all(&mut log).await?;
    let all = eventlog::readable(&items);
    let history: Vec<&Envelope> = all
        .iter()
        .copied()
        .filter(|e| workload_of(&e.event) == Some(&a.name))
        .collect();
    if history.is_empty() {
        return Err(InputError::NotRunning(a.name.clone()).into());
    }
    let placement = Placement::from_events(all.iter().copied());
    let now = placement.workloads.get(&a.name);
    let migrations: Vec<&Migration> = placement
        .migrations
        .values()
        .filter(|m| m.workload == a.name)
        .collect();
    let usage = match now {
        Some(w) => latest_use(&js, &w.node, &a.name).await,
        None => None,
    };
    if a.json {
        let doc = serde_json::json!({
            "name": a.name,
            "now": now.map(workload_json),
            "nodes": nodes_it_ran_on(&history),
            "migrations": migrations,
            "usage": usage.as_ref().map(|u| serde_json::json!({"cpu_pct": u.cpu_pct, "rss_bytes": u.rss_bytes})),
            "history": history.iter().map(|e| serde_json::json!({
                "at": e.occurred_at, "kind": e.kind().as_str(), "node": e.node, "summary": crate::summary::line(e),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("workload {}", a.name);
    match now {
        Some(w) => println!(
            "  now      {} on {} ({}) since {}",
            w.state_label(),
            w.node,
            w.handle_label(),
            crate::time::short(w.since)
        ),
        None => println!("  now      not running"),
    }
    let ran_on: Vec<String> = nodes_it_ran_on(&history)
        .iter()
        .map(|n| n.to_string())
        .collect();
    println!("  ran on   {}", ran_on.join(" → "));
    if let Some(u) = &usage {
        println!(
            "  usage    cpu {:.1}% of a core, memory {}",
            u.cpu_pct,
            bytes(u.rss_bytes)
        );
    }
    println!("\nmigrations");
    print!("{}", migrations_table(&migrations).render());
    println!("\nhistory");
    let mut t = Table::new(&["TIME", "NODE", "KIND", "WHAT"]);
    for e in &history {
        t.row(vec![
            crate::time::precise(e.occurred_at),
            e.node.to_string(),
            e.kind().as_str().to_string(),
            crate::summary::line(e),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// The nodes it ran on, in order: where it started and each completed move.
fn nodes_it_ran_on(history: &[&Envelope]) -> Vec<NodeName> {
    let mut out: Vec<NodeName> = Vec::new();
    for e in history {
        let on = match &e.event {
            Event::WorkloadStarted(_) => Some(&e.node),
            Event::MigrationCompleted(c) => Some(&c.target),
            _ => None,
        };
        if let Some(n) = on {
            if out.last() != Some(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// ID FROM→TO BY OUTCOME DOWNTIME TOTAL IMAGE, oldest first.
fn migrations_table(ms_: &[&Migration]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "FROM→TO",
        "BY",
        "OUTCOME",
        "DOWNTIME",
        "TOTAL",
        "IMAGE",
    ]);
    for m in ms_ {
        t.row(vec![
            m.id.to_string(),
            format!("{}→{}", m.source, m.target),
            m.requested_by.clone().unwrap_or_else(|| "-".into()),
            m.outcome_label(),
            ms(m.timings.downtime_ms),
            ms(m.timings.total_ms),
            m.image_bytes.map_or_else(|| "-".into(), bytes),
        ]);
    }
    t
}

/// The latest use of `name` its node's executor reported.
async fn latest_use(
    js: &async_nats::jetstream::Context,
    node: &NodeName,
    name: &WorkloadName,
) -> Option<WorkloadUse> {
    let stream = js.get_stream(TELEMETRY).await.ok()?;
    let msg = stream
        .get_last_raw_message_by_subject(&format!("telemetry.{node}.workloads"))
        .await
        .ok()?;
    match Envelope::from_message(msg.subject.as_str(), &msg.payload)
        .ok()?
        .event
    {
        Event::WorkloadUsage(u) => u.workloads.into_iter().find(|w| &w.workload == name),
        _ => None,
    }
}
