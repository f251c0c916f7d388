//! `loadshift workload logs`: a workload's output, read through NATS from
//! the executor of whichever node runs it now, following it across its
//! migrations (the contract's `output` module says why a byte offset means
//! the same on every node: no line twice, none skipped, in order).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use loadshift_events::output::{
    output_subject, OutputReply, OutputRequest, OutputStream, ReadFrom, MAX_CHUNK_BYTES,
};
use loadshift_events::{NodeName, WorkloadName};

use super::workload::fold;
use super::{connect, Common};
use crate::error::InputError;

/// How long an executor has to answer one request.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How often `-f` asks for new output.
const POLL: Duration = Duration::from_millis(500);

/// With `-f`, after how many answers without new output the log is read
/// again to see whether the workload exited (reading it is the costly part).
const EXIT_CHECK_EVERY: u32 = 6;

/// Print a workload's output, from the node that runs it.
///
/// Asks that node's executor (`loadshift.executor.<N>.logs`, a NATS
/// request: output never goes into a stream). The output travels with the
/// workload when it migrates, so it is whole: lines written before a
/// migration and after it come in order, none twice. With `-f` it keeps
/// printing new lines, follows the workload to its new node when it moves,
/// and ends when the workload exits. A container's output is its docker
/// log, saved into its image at each checkpoint so that it too reads whole
/// across moves.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift workload logs counter
  loadshift workload logs counter --tail 20 -f
  loadshift workload logs counter --stderr")]
pub struct LogsArgs {
    /// The workload.
    pub name: WorkloadName,
    /// Keep printing new lines (across migrations) until it exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Start with the last N lines instead of the first.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Its standard error instead of its standard output.
    #[arg(long)]
    pub stderr: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `workload logs`.
///
/// # Errors
/// An unknown workload (bad input), NATS failing, or a node that cannot
/// serve it.
pub async fn run(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let (client, js) = connect(&a.common).await?;
    let Some(mut node) = where_it_runs(&js, &a).await? else {
        return Err(InputError::NotRunning(a.name.clone()).into());
    };
    let stream = if a.stderr {
        OutputStream::Stderr
    } else {
        OutputStream::Stdout
    };
    let mut from = a.tail.map_or(ReadFrom::Offset(0), ReadFrom::LastLines);
    let mut out = std::io::stdout().lock();
    let mut idle = 0u32;
    loop {
        let req = OutputRequest {
            workload: a.name.clone(),
            stream,
            from,
            max_bytes: MAX_CHUNK_BYTES,
        };
        match ask(&client, &node, &req).await? {
            OutputReply::Lines {
                text,
                next_offset,
                size,
                ..
            } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
                from = ReadFrom::Offset(next_offset);
                if !text.is_empty() && next_offset < size {
                    continue;
                }
                if !a.follow {
                    return Ok(ExitCode::SUCCESS);
                }
                idle = if text.is_empty() { idle + 1 } else { 0 };
                // Once in a while, with nothing new: has it exited? (Its
                // node keeps serving what it wrote, so nothing is lost.)
                if idle.is_multiple_of(EXIT_CHECK_EVERY) && where_it_runs(&js, &a).await?.is_none()
                {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            OutputReply::NotHere { .. } => match where_it_runs(&js, &a).await? {
                // It moved: ask its new node from the same offset.
                Some(now) if now != node => {
                    tracing::info!(from = %node, to = %now, "the workload moved; following it");
                    node = now;
                    continue;
                }
                // The log has not caught up with the move yet.
                Some(_) if a.follow => {}
                Some(_) => bail!("{node} no longer runs {}; try again", a.name),
                None if a.follow => return Ok(ExitCode::SUCCESS),
                None => return Err(InputError::NotRunning(a.name.clone()).into()),
            },
            OutputReply::Unavailable { reason } => bail!("{node}: {reason}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The node the log says holds the workload now (the source, while it
/// migrates: its file is final until the move ends).
async fn where_it_runs(
    js: &async_nats::jetstream::Context,
    a: &LogsArgs,
) -> anyhow::Result<Option<NodeName>> {
    Ok(fold(js, &a.common)
        .await?
        .workloads
        .get(&a.name)
        .map(|w| w.node.clone()))
}

/// Asks `node`'s executor for some output.
async fn ask(
    client: &async_nats::Client,
    node: &NodeName,
    req: &OutputRequest,
) -> anyhow::Result<OutputReply> {
    let body = serde_json::to_vec(req).context("encoding the request")?;
    let msg = tokio::time::timeout(
        ANSWER_WITHIN,
        client.request(output_subject(node), body.into()),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "{node} did not answer within {} s (is its executor running?)",
            ANSWER_WITHIN.as_secs()
        )
    })?
    .with_context(|| format!("asking {node} for the output"))?;
    serde_json::from_slice(&msg.payload)
        .with_context(|| format!("{node} answered something unreadable"))
}
