//! `loadshift node drain`, `node uncordon` and `node ls`: empty a node for
//! maintenance and give it back, the way `kubectl drain` / `kubectl
//! uncordon` and `incus cluster evacuate` / `restore` do, except that nothing
//! restarts: the brain moves each workload live through the migration saga.
//!
//! The CLI only asks (`node.<n>.drain_requested`, `node.<n>.uncordoned`)
//! and reads the log: whether a node is draining, what is left on it and
//! what cannot move is the contract's placement fold
//! ([`loadshift_events::placement::Placement::drain_progress`]), the same
//! answer the dashboard and the brain read.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use loadshift_events::cordon::{DrainProgress, DrainRequested, Uncordoned};
use loadshift_events::placement::Placement;
use loadshift_events::{connection, Envelope, Event, NodeName};

use super::{connect_and_fold, Common, Requester};
use crate::error::{parse_timeout, InputError};
use crate::eventlog::{self, Start};
use crate::table::Table;

/// The `node` commands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    // The help text is the argument struct's doc comment.
    Drain(DrainArgs),
    Uncordon(UncordonArgs),
    Ls(NodeLsArgs),
}

/// Empty a node for maintenance: no new workload or migration goes to it,
/// and the brain moves every workload off it, live.
///
/// Publishes `node.<N>.drain_requested`. The brain then migrates the
/// node's workloads one saga each (at most two at a time), choosing each
/// target as it plans moves (lowest load after the move, room for the
/// workload's memory, never a node predicted to overload). With `--wait`,
/// prints each workload as it moves and ends when the node is empty (exit
/// 0) or when what is left cannot move (exit 1, with each workload and why:
/// no target with room, its migration failed twice, ...). The node stays
/// cordoned either way until `loadshift node uncordon`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift node drain node2 --wait --reason 'kernel update'
  loadshift node drain node2 && loadshift node ls
  loadshift node drain node2 --wait --json | jq '.stuck'
  loadshift node uncordon node2")]
pub struct DrainArgs {
    /// The node to empty.
    pub node: NodeName,
    /// Why, in one sentence (shown in `node ls` and on the dashboard).
    #[arg(long, env = "LOADSHIFT_DRAIN_REASON", default_value = "")]
    pub reason: String,
    #[command(flatten)]
    /// Who asks.
    pub requester: Requester,
    /// Follow the drain until the node is empty or nothing more can move.
    #[arg(long, env = "LOADSHIFT_WAIT")]
    pub wait: bool,
    /// How long --wait waits (10m, 90s, ...).
    #[arg(long, env = "LOADSHIFT_TIMEOUT", default_value = "10m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print one JSON object at the end (`node`, `seq`, `seconds`, `empty`,
    /// `moved`, `stuck`) instead of the progress lines.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// End a node's drain: it takes workloads and migrations again.
///
/// Publishes `node.<N>.uncordoned`. Nothing moves back by itself: the node
/// is simply a candidate again for new workloads and for the brain's moves.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift node uncordon node2")]
pub struct UncordonArgs {
    /// The node to give back.
    pub node: NodeName,
    #[command(flatten)]
    /// Who asks.
    pub requester: Requester,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// List the nodes: joined or left, draining or not, and what runs there.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift node ls
  loadshift node ls --json | jq -r '.[] | select(.draining != null) | .node'")]
pub struct NodeLsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// Whether the log knows `node`: it joined (or left), or a workload runs there.
fn known(p: &Placement, node: &NodeName) -> bool {
    p.nodes.contains_key(node) || p.workloads.values().any(|w| &w.node == node)
}

/// `node drain`.
///
/// # Errors
/// [`InputError::UnknownNode`] for a node the log does not know; NATS failing.
pub async fn drain(a: DrainArgs) -> anyhow::Result<ExitCode> {
    let (_client, js, before) = connect_and_fold(&a.common).await?;
    if !known(&before, &a.node) {
        return Err(InputError::UnknownNode(a.node.clone()).into());
    }
    let mut events = eventlog::open(&js, &a.common.nats).await?;
    let env = Envelope::new(
        a.requester.as_node.clone(),
        Event::NodeDrainRequested(DrainRequested {
            node: a.node.clone(),
            requested_by: a.requester.who(),
            reason: a.reason.trim().chars().take(500).collect(),
        }),
    );
    let asked = std::time::Instant::now();
    let ack = connection::publish(&js, &env)
        .await
        .context("publishing the drain request")?;
    let on = before
        .workloads
        .values()
        .filter(|w| w.node == a.node)
        .count();
    if !a.json {
        println!(
            "draining {}: {on} workload(s) to move (seq {}); no new work goes there until `loadshift node uncordon {}`",
            a.node, ack.sequence, a.node
        );
    }
    if !a.wait {
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "node": a.node, "seq": ack.sequence })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut watch = Watch {
        node: &a.node,
        json: a.json,
        moved: Vec::new(),
    };
    // The fold up to now holds our request (what came after it is shown,
    // however fast it came); follow from right after the last one read.
    let items = eventlog::read_all(&mut events)
        .await
        .context("reading the EVENTS stream")?;
    let mut p = Placement::default();
    for item in &items {
        if let Ok(env) = &item.decoded {
            p.apply(env);
            if item.seq > ack.sequence {
                watch.saw(env);
            }
        }
    }
    let from = items.last().map_or(ack.sequence, |i| i.seq) + 1;
    let answers = eventlog::follow(&events, ">", Start::Sequence(from)).await?;
    let deadline = tokio::time::Instant::now() + a.timeout;
    let mut answers = Box::pin(answers);
    loop {
        let Some(progress) = p.drain_progress(&a.node) else {
            eprintln!("error: {} was uncordoned before it was empty", a.node);
            return Ok(ExitCode::from(1));
        };
        if progress.is_empty() || progress.is_stuck() {
            return Ok(watch.finish(&progress, ack.sequence, asked.elapsed()));
        }
        let item = match tokio::time::timeout_at(deadline, answers.next()).await {
            Err(_) => bail!(
                "{} is not empty after {} ({} left: {}); is the brain running? (`loadshift status`)",
                a.node,
                humantime::format_duration(a.timeout),
                progress.remaining.len(),
                names(&progress.remaining)
            ),
            Ok(None) => bail!("the EVENTS stream ended while draining {}", a.node),
            Ok(Some(item)) => item,
        };
        if let Ok(env) = &item.decoded {
            p.apply(env);
            watch.saw(env);
        }
    }
}

/// What `--wait` has seen of one drain.
struct Watch<'a> {
    node: &'a NodeName,
    json: bool,
    moved: Vec<(String, String)>,
}

impl Watch<'_> {
    /// Prints the line an event about the drained node deserves.
    fn saw(&mut self, env: &Envelope) {
        let line = match &env.event {
            Event::MigrationRequested(r) if &r.source == self.node => {
                format!(
                    "moving {} to {} (migration {})",
                    r.workload, r.target, r.migration
                )
            }
            Event::MigrationCompleted(c) if &c.source == self.node => {
                self.moved
                    .push((c.workload.to_string(), c.target.to_string()));
                format!(
                    "moved {} to {} (frozen {})",
                    c.workload,
                    c.target,
                    crate::summary::ms(c.timings.downtime_ms)
                )
            }
            Event::MigrationFailed(f) if &f.source == self.node => {
                format!(
                    "{} did not move: failed at {}: {}",
                    f.workload, f.step, f.reason
                )
            }
            Event::NodeDrainBlocked(b) if &b.node == self.node => {
                format!("{} cannot move: {}", b.workload, b.reason)
            }
            Event::WorkloadExited(x) if &env.node == self.node => {
                format!("{} exited on {}", x.workload, self.node)
            }
            _ => return,
        };
        if !self.json {
            println!("{line}");
        }
    }

    /// The last word: empty (0), or what stays and why (1).
    fn finish(&self, progress: &DrainProgress, seq: u64, took: Duration) -> ExitCode {
        let stuck = progress.stuck();
        if self.json {
            let moved: Vec<_> = self
                .moved
                .iter()
                .map(|(w, t)| serde_json::json!({ "workload": w, "target": t }))
                .collect();
            let out = serde_json::json!({
                "node": self.node,
                "seq": seq,
                "seconds": took.as_secs_f64(),
                "empty": progress.is_empty(),
                "moved": moved,
                "stuck": stuck,
            });
            println!("{out}");
        } else if progress.is_empty() {
            println!(
                "{} is empty ({} moved in {:.1} s); it stays cordoned until `loadshift node uncordon {}`",
                self.node,
                self.moved.len(),
                took.as_secs_f64(),
                self.node
            );
        } else {
            println!("{} is not empty; these cannot move:", self.node);
            for (w, why) in &stuck {
                println!("  {w}: {why}");
            }
            println!(
                "the brain keeps trying as room appears; `loadshift node drain {}` again retries failed ones",
                self.node
            );
        }
        if progress.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

fn names(v: &[loadshift_events::WorkloadName]) -> String {
    v.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", ")
}

/// `node uncordon`.
///
/// # Errors
/// [`InputError::UnknownNode`] for a node the log does not know; NATS failing.
pub async fn uncordon(a: UncordonArgs) -> anyhow::Result<ExitCode> {
    let (_client, js, p) = connect_and_fold(&a.common).await?;
    if !known(&p, &a.node) {
        return Err(InputError::UnknownNode(a.node.clone()).into());
    }
    if !p.is_draining(&a.node) {
        println!("{} is not draining; nothing to do", a.node);
        return Ok(ExitCode::SUCCESS);
    }
    let env = Envelope::new(
        a.requester.as_node.clone(),
        Event::NodeUncordoned(Uncordoned {
            node: a.node.clone(),
            requested_by: a.requester.who(),
        }),
    );
    let ack = connection::publish(&js, &env)
        .await
        .context("publishing the uncordon request")?;
    println!(
        "{} takes work again (seq {}); nothing moves back by itself",
        a.node, ack.sequence
    );
    Ok(ExitCode::SUCCESS)
}

/// `joined`, `joined, draining`, `left`, ...: one label for `node ls` and
/// `status`.
pub fn state_label(p: &Placement, node: &NodeName) -> String {
    let base = match p.nodes.get(node) {
        Some(seen) if seen.joined => "joined",
        Some(_) => "left",
        None => "no node event",
    };
    match p.drain_progress(node) {
        Some(d) if d.is_empty() => format!("{base}, drained"),
        Some(_) => format!("{base}, draining"),
        None => base.to_string(),
    }
}

/// The `draining` object of a node in `--json`: `null` when it is not.
pub fn drain_json(p: &Placement, node: &NodeName) -> serde_json::Value {
    p.drain_progress(node).map_or(serde_json::Value::Null, |d| {
        serde_json::json!({
            "since": d.drain.since,
            "requested_by": d.drain.requested_by,
            "reason": d.drain.reason,
            "remaining": d.remaining,
            "moving": d.moving,
            "stuck": d.stuck(),
        })
    })
}

/// `node ls`.
///
/// # Errors
/// NATS failing.
pub async fn ls(a: NodeLsArgs) -> anyhow::Result<ExitCode> {
    let (_client, _js, p) = connect_and_fold(&a.common).await?;
    let nodes = super::status::nodes_of(&p);
    let count = |n: &NodeName| p.workloads.values().filter(|w| &w.node == n).count();
    if a.json {
        let rows: Vec<_> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n,
                    "state": state_label(&p, n),
                    "capacity_cores": p.nodes.get(n).and_then(|s| s.capacity_cores),
                    "workloads": count(n),
                    "draining": drain_json(&p, n),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["NODE", "STATE", "WORKLOADS", "CORES", "DRAIN"]);
    for n in &nodes {
        let drain = p.drain_progress(n).map_or_else(
            || "-".to_string(),
            |d| {
                format!(
                    "since {} by {}{}",
                    crate::time::short(d.drain.since),
                    d.drain.requested_by,
                    match d.stuck().len() {
                        0 => String::new(),
                        k => format!(", {k} cannot move"),
                    }
                )
            },
        );
        t.row(vec![
            n.to_string(),
            state_label(&p, n),
            count(n).to_string(),
            p.nodes
                .get(n)
                .and_then(|s| s.capacity_cores)
                .map_or_else(|| "-".into(), |c| c.to_string()),
            drain,
        ]);
    }
    if t.is_empty() {
        println!("(no nodes)");
    } else {
        print!("{}", t.render());
    }
    Ok(ExitCode::SUCCESS)
}
