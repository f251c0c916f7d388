//! `loadshift migrate`: ask for a workload to be moved, and optionally watch
//! the migration's events until its outcome.
//!
//! The request goes on the source's subject (`migration.<src>.requested`);
//! the executors do the rest. `--wait` follows the stream from right after
//! the request, so no answer can be missed however fast it comes.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use loadshift_events::migration::{Mode, Reason, Requested, Step, Timings};
use loadshift_events::shutdown::{Shutdown, Signal};
use loadshift_events::{connection, Envelope, Event, NodeName, WorkloadName};
use uuid::Uuid;

use super::{connect_and_fold, Common, Requester};
use crate::error::{parse_timeout, InputError};
use crate::eventlog::{self, Start};
use crate::summary;
use loadshift_events::placement::WorkloadState;

/// Move a running workload to another node, live (CRIU checkpoint/restore).
///
/// Publishes `migration.<src>.requested` with a new migration id and prints
/// that id. The source is where the log says the workload runs, unless
/// `--from` names it. With `--wait`, prints every step as it happens and,
/// at the end, the time each step took; exits 0 only if the migration
/// completed (1 if it was refused or rolled back, with the failed step and
/// its reason). `--json` prints JSON lines instead: the request, then each
/// event of the migration as stored (the last one carries the timings).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift migrate counter --to node3
  loadshift migrate counter --to node3 --wait --reason 'node2 maintenance'
  loadshift migrate redis --to node3 --mode stream --wait
  id=$(loadshift migrate counter --to node3) && loadshift events tail --subject 'migration.>'
  loadshift migrate counter --to node3 --wait --json | jq -c 'select(.kind == \"migration.completed\") | .payload.timings'")]
pub struct MigrateArgs {
    /// The workload to move.
    #[arg(env = "LOADSHIFT_WORKLOAD")]
    pub workload: WorkloadName,
    /// Where it should run.
    #[arg(long, env = "LOADSHIFT_MIGRATE_TO")]
    pub to: NodeName,
    /// Where it runs now (default: where the log says it runs).
    #[arg(long, env = "LOADSHIFT_MIGRATE_FROM")]
    pub from: Option<NodeName>,
    /// How the memory travels: `copy` (through the object store), `stream`
    /// (pages straight from the source's dump to the target), `lazy`
    /// (post-copy), or `auto` (the source chooses, as for the planner's
    /// moves). A mode that cannot run falls back (lazy → stream → copy);
    /// `completed` says which ran and why.
    #[arg(long, env = "LOADSHIFT_MIGRATE_MODE", default_value = "auto", value_parser = parse_mode)]
    pub mode: Mode,
    /// Why, in one sentence (default: "requested by <who>").
    #[arg(long, env = "LOADSHIFT_MIGRATE_REASON")]
    pub reason: Option<String>,
    #[command(flatten)]
    /// Who asks.
    pub requester: Requester,
    /// Follow the migration to its outcome, printing each step.
    #[arg(long, env = "LOADSHIFT_WAIT")]
    pub wait: bool,
    /// How long --wait waits (120s, 5m, ...).
    #[arg(long, env = "LOADSHIFT_TIMEOUT", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print JSON lines: `{"migration", "workload", "source", "target",
    /// "seq"}` for the request, then (with --wait) each event of the
    /// migration as stored, instead of the steps and the timings table.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `migrate`.
///
/// # Errors
/// [`InputError`] for an unknown or already migrating workload, a target
/// that is its source or is draining; NATS failing.
pub async fn run(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let (_client, js, placement) = connect_and_fold(&a.common).await?;
    if placement.is_draining(&a.to) {
        return Err(InputError::Draining(a.to.clone()).into());
    }
    let source = match &a.from {
        Some(from) => from.clone(),
        None => {
            let w = placement
                .workloads
                .get(&a.workload)
                .ok_or_else(|| InputError::UnknownWorkload(a.workload.clone()))?;
            if let WorkloadState::Migrating { migration, target } = &w.state {
                return Err(InputError::AlreadyMigrating {
                    workload: a.workload.clone(),
                    source_node: w.node.clone(),
                    target: target.clone(),
                    migration: *migration,
                }
                .into());
            }
            w.node.clone()
        }
    };
    if source == a.to {
        return Err(InputError::SameNode {
            workload: a.workload.clone(),
            node: source,
        }
        .into());
    }
    let events = eventlog::open(&js, &a.common.nats).await?;
    let who = a.requester.who();
    let id = Uuid::now_v7();
    let env = Envelope::new(
        a.requester.as_node.clone(),
        Event::MigrationRequested(Requested {
            migration: id,
            workload: a.workload.clone(),
            source: source.clone(),
            target: a.to.clone(),
            requested_by: who.clone(),
            reason: Reason {
                summary: a
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("requested by {who}")),
                ..Default::default()
            },
            mode: a.mode,
        }),
    );
    let asked = Instant::now();
    let ack = connection::publish(&js, &env)
        .await
        .context("publishing the migration request")?;
    if a.json {
        let request = serde_json::json!({
            "migration": id,
            "workload": a.workload,
            "source": source,
            "target": a.to,
            "seq": ack.sequence,
        });
        println!("{request}");
    } else {
        println!("{id}");
        eprintln!(
            "requested migration of {} from {source} to {} (seq {})",
            a.workload, a.to, ack.sequence
        );
    }
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let answers =
        eventlog::follow(&events, "migration.>", Start::Sequence(ack.sequence + 1)).await?;
    wait_for_outcome(answers, id, asked, a.timeout, a.json).await
}

/// `--wait`: prints every step of migration `id` from `answers` until its
/// outcome, a signal, or `timeout` after the request; with `json`, each
/// step's envelope as stored and none of the words.
async fn wait_for_outcome(
    answers: impl futures::Stream<Item = eventlog::Item>,
    id: Uuid,
    asked: Instant,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // The human lines, which `--json` leaves out.
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let mut stop = shutdown.listener();
    let mut answers = Box::pin(answers);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failure: Option<(Step, String)> = None;
    let mut image_bytes: Option<u64> = None;
    loop {
        let next = tokio::select! {
            signal = stop.recv() => {
                eprintln!(
                    "stopped waiting ({}); migration {id} goes on without us \
                     (follow it with `loadshift events tail --subject 'migration.>'`)",
                    signal.as_str()
                );
                return Ok(ExitCode::from(signal_exit(signal)));
            }
            n = tokio::time::timeout_at(deadline, answers.next()) => n,
        };
        let item = match next {
            Err(_) => bail!(
                "no outcome for migration {id} within {}; it may still be running \
                 (follow it with `loadshift events tail --subject 'migration.>'`)",
                humantime::format_duration(timeout)
            ),
            Ok(None) => bail!("the EVENTS stream ended while waiting for migration {id}"),
            Ok(Some(item)) => item,
        };
        let Some(env) = item.readable() else {
            continue;
        };
        if !is_about(&env.event, id) {
            continue;
        }
        if json {
            println!("{}", String::from_utf8_lossy(&item.raw).trim_end());
        }
        say(step_line(env, asked));
        match &env.event {
            Event::MigrationCheckpointed(c) => image_bytes = Some(c.image_bytes),
            Event::MigrationRestored(r) => image_bytes = Some(r.image_bytes),
            Event::MigrationCompleted(c) => {
                say(format!(
                    "migration {id} completed: {} runs on {} ({})",
                    c.workload,
                    c.target,
                    summary::mode_ran(c)
                ));
                if !json {
                    print_timings(&c.timings, Some(c.image_bytes));
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::MigrationFailed(f) if f.step == Step::Validate => {
                say(format!(
                    "migration {id} refused at step {}: {} ({} still runs on {})",
                    f.step, f.reason, f.workload, f.source
                ));
                return Ok(ExitCode::from(1));
            }
            Event::MigrationFailed(f) => failure = Some((f.step, f.reason.clone())),
            Event::MigrationRolledBack(r) => {
                let why = failure.as_ref().map_or_else(
                    || "failure not seen".to_string(),
                    |(step, reason)| format!("failed at step {step}: {reason}"),
                );
                say(format!(
                    "migration {id} rolled back ({why}); {} runs on {} again",
                    r.workload, r.source
                ));
                if let Some(b) = image_bytes {
                    say(format!("image size: {b} bytes ({})", summary::bytes(b)));
                }
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
    }
}

/// `+0.123s checkpointed  counter node2→node3 image 4.0 KiB, dump 71 ms`:
/// the time since the request, the step, what happened.
fn step_line(env: &Envelope, asked: Instant) -> String {
    let elapsed = asked.elapsed().as_secs_f64();
    let verb = env.kind().as_str().split_once('.').map_or("", |(_, v)| v);
    format!("+{elapsed:.3}s {verb:<13} {}", summary::line(env))
}

/// The exit status a shell gives a command ended by `signal` (128 + its
/// number), so scripts tell "interrupted" from "failed".
fn signal_exit(signal: Signal) -> u8 {
    match signal {
        Signal::Interrupt => 130,
        Signal::Terminate => 143,
    }
}

/// `--mode`: one of the contract's names (clap's error says which exist).
fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: loadshift_events::migration::UnknownMode| e.to_string())
}

/// Whether `event` belongs to migration `id`.
fn is_about(event: &Event, id: Uuid) -> bool {
    match event {
        Event::MigrationRequested(p) => p.migration == id,
        Event::MigrationCheckpointed(p) => p.migration == id,
        Event::MigrationRestored(p) => p.migration == id,
        Event::MigrationCompleted(p) => p.migration == id,
        Event::MigrationFailed(p) => p.migration == id,
        Event::MigrationRolledBack(p) => p.migration == id,
        _ => false,
    }
}

fn print_timings(t: &Timings, image_bytes: Option<u64>) {
    println!("timings (ms):");
    for (name, v) in t.named() {
        let v = v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        println!("  {name:<9} {v:>10}");
    }
    if let Some(b) = image_bytes {
        println!("image size: {b} bytes ({})", summary::bytes(b));
    }
}
