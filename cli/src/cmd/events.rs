//! `loadshift events tail`: the event log as it happens, one line per event,
//! or the raw envelopes for scripts. A message this build cannot read is
//! named (sequence, subject, reason) and skipped, never fatal: the log may
//! hold events from newer builds. `loadshift events streams`: what the
//! server keeps (the NATS CLI's `nats stream ls`, which these machines
//! cannot install).

use std::process::ExitCode;

use std::pin::Pin;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::{Stream, StreamExt};
use loadshift_events::shutdown::Shutdown;
use serde::Serialize;

use super::{connect, Common};
use crate::eventlog::{self, Item, Start};
use crate::summary;
use crate::table::Table;

/// The `events` commands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    // The help text is the argument struct's doc comment.
    Tail(TailArgs),
    Streams(StreamsArgs),
}

/// Follow the event log, one line per event, until Ctrl-C.
///
/// Reads the EVENTS stream (node, workload, migration and model events),
/// printing one line per event: time, subject, kind and what happened (a
/// prediction's probabilities, a model's scores beside the static rule's, a
/// migration's timings, ...). A `--subject` under `telemetry.` reads the
/// TELEMETRY stream instead. Starts with the next event published, or with
/// the first one kept (`--from-start`); runs until Ctrl-C.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift events tail
  loadshift events tail --subject 'migration.>'
  loadshift events tail --subject 'workload.node2.>' --from-start
  loadshift events tail --subject 'telemetry.node2'
  loadshift events tail --json | jq -c 'select(.kind == \"migration.completed\") | .payload.timings'")]
pub struct TailArgs {
    /// Only subjects matching this NATS filter (`>` is every subject).
    #[arg(long, env = "LOADSHIFT_SUBJECT", default_value = ">")]
    pub subject: String,
    /// Start with the first event the stream keeps instead of the next one.
    #[arg(long, env = "LOADSHIFT_FROM_START")]
    pub from_start: bool,
    /// Print each envelope's JSON as stored, one per line (unreadable
    /// messages are then reported on stderr).
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `events tail`.
///
/// # Errors
/// NATS failing.
pub async fn tail(a: TailArgs) -> anyhow::Result<ExitCode> {
    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let mut stop = shutdown.listener();
    let (_client, js) = connect(&a.common).await?;
    let start = if a.from_start {
        Start::First
    } else {
        Start::New
    };
    let mut items: Pin<Box<dyn Stream<Item = Item> + Send>> = if reads_telemetry(&a.subject) {
        Box::pin(eventlog::follow_telemetry(&js, &a.subject, start).await?)
    } else {
        let events = eventlog::open(&js, &a.common.nats).await?;
        Box::pin(eventlog::follow(&events, &a.subject, start).await?)
    };
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(ExitCode::SUCCESS),
            next = items.next() => match next {
                Some(item) => print_item(&item, a.json),
                None => bail!("the stream stopped delivering"),
            },
        }
    }
}

/// Whether `filter` names TELEMETRY subjects (`telemetry.node2`,
/// `telemetry.>`): every other subject is in EVENTS.
fn reads_telemetry(filter: &str) -> bool {
    filter.split('.').next() == Some("telemetry")
}

/// List the streams the server keeps, with their size and sequences.
///
/// Every JetStream stream on the server: loadshift's TELEMETRY and EVENTS,
/// and the object store's OBJ_CHECKPOINTS (the images of migrations in
/// flight; `loadshift status` names those migrations). What
/// `nats stream ls` shows.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift events streams
  loadshift events streams --json | jq '.[] | {name, messages}'")]
pub struct StreamsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// One stream as `events streams` shows it.
#[derive(Debug, Serialize)]
struct StreamRow {
    name: String,
    subjects: Vec<String>,
    messages: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    consumers: usize,
}

/// `events streams`.
///
/// # Errors
/// NATS failing.
pub async fn streams(a: StreamsArgs) -> anyhow::Result<ExitCode> {
    let (_client, js) = connect(&a.common).await?;
    let mut rows = Vec::new();
    let mut list = js.streams();
    while let Some(info) = list.next().await {
        let info = info.context("listing the streams")?;
        let state = &info.state;
        rows.push(StreamRow {
            name: info.config.name.clone(),
            subjects: info.config.subjects.clone(),
            messages: state.messages,
            bytes: state.bytes,
            first_seq: state.first_sequence,
            last_seq: state.last_sequence,
            consumers: state.consumer_count,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "STREAM",
        "SUBJECTS",
        "MESSAGES",
        "SIZE",
        "SEQUENCES",
        "CONSUMERS",
    ]);
    for r in &rows {
        t.row(vec![
            r.name.clone(),
            r.subjects.join(","),
            r.messages.to_string(),
            summary::bytes(r.bytes),
            format!("{}–{}", r.first_seq, r.last_seq),
            r.consumers.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn print_item(item: &Item, json: bool) {
    match &item.decoded {
        Ok(_) if json => println!("{}", String::from_utf8_lossy(&item.raw).trim_end()),
        Ok(env) => println!(
            "{}  {:<32} {:<24} {}",
            crate::time::precise(env.occurred_at),
            item.subject,
            env.kind().as_str(),
            summary::line(env)
        ),
        Err(_) => {
            if let Some(line) = item.unreadable_line() {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_subjects_are_read_from_their_own_stream() {
        assert!(reads_telemetry("telemetry.node2"));
        assert!(reads_telemetry("telemetry.>"));
        assert!(reads_telemetry("telemetry.*.workloads"));
        assert!(!reads_telemetry(">"));
        assert!(!reads_telemetry("migration.>"));
        assert!(!reads_telemetry("node.telemetry.x"));
    }
}
