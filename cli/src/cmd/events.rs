//! `loadshift events tail`: the event log as it happens, one line per event,
//! or the raw envelopes for scripts. A message this build cannot read is
//! named (sequence, subject, reason) and skipped, never fatal: the log may
//! hold events from newer builds.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use loadshift_events::shutdown::Shutdown;

use super::{connect, Common};
use crate::eventlog::{self, Item, Start};
use crate::summary;

/// The `events` commands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    // The help text is the argument struct's doc comment.
    Tail(TailArgs),
}

/// Follow the event log, one line per event, until Ctrl-C.
///
/// Reads the EVENTS stream (node, workload, migration and model events),
/// printing one line per event: time, subject, kind and a short summary.
/// Starts with the next event published, or with the first one kept
/// (`--from-start`); runs until Ctrl-C.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift events tail
  loadshift events tail --subject 'migration.>'
  loadshift events tail --subject 'workload.node2.>' --from-start
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
    let events = eventlog::open(&js, &a.common.nats).await?;
    let start = if a.from_start {
        Start::First
    } else {
        Start::New
    };
    let mut items = Box::pin(eventlog::follow(&events, &a.subject, start).await?);
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(ExitCode::SUCCESS),
            next = items.next() => match next {
                Some(item) => print_item(&item, a.json),
                None => bail!("the EVENTS stream stopped delivering"),
            },
        }
    }
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
