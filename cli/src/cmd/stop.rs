//! `loadshift workload stop`: ask the node that holds a workload to stop
//! it (SIGTERM, then SIGKILL after the grace period), as an event, and
//! optionally wait for its `workload.exited`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use loadshift_events::workload::{ExitReason, StopRequested};
use loadshift_events::{Event, WorkloadName};

use super::workload::{first_answer, fold, request};
use super::{connect, Common, Requester};
use crate::error::{parse_grace, parse_timeout, InputError};
use crate::eventlog;

/// Stop a workload: SIGTERM, then SIGKILL once the grace period passed.
///
/// Publishes `workload.<N>.stop_requested` on the node N the log says holds
/// the workload. Its executor sends SIGTERM, then SIGKILL if the workload
/// still runs after `--grace`, and announces `workload.<N>.exited` with the
/// reason (`stopped`, or `killed_after_grace`); the name is free again.
/// Like `docker stop`, a workload whose first process sets no SIGTERM
/// handler (it is the init of its PID namespace) ends only at the SIGKILL.
///
/// A workload that is migrating is stopped by whichever node holds it once
/// the migration ends: the source after a rollback, the target after a
/// completion (the source forwards the request); a migration asked for a
/// workload being stopped is refused.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift workload stop counter
  loadshift workload stop counter --grace 30s --wait
  loadshift workload stop counter --grace 0s --wait   (SIGKILL at once after SIGTERM)")]
pub struct StopArgs {
    /// The workload to stop.
    pub name: WorkloadName,
    /// How long it has after SIGTERM before SIGKILL (10s, 1m, 0s).
    #[arg(long, env = "LOADSHIFT_GRACE", default_value = "10s", value_parser = parse_grace)]
    pub grace: Duration,
    /// Wait until it exited and say how.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long to wait beyond the grace period.
    #[arg(long, env = "LOADSHIFT_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    /// Who asks.
    pub requester: Requester,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `workload stop`.
///
/// # Errors
/// An unknown workload (bad input), NATS failing, or no exit in time.
pub async fn run(a: StopArgs) -> anyhow::Result<ExitCode> {
    let (_client, js) = connect(&a.common).await?;
    let placement = fold(&js, &a.common).await?;
    let Some(w) = placement.workloads.get(&a.name) else {
        return Err(InputError::NotRunning(a.name.clone()).into());
    };
    let node = w.node.clone();
    let events = eventlog::open(&js, &a.common.nats).await?;
    let stop = StopRequested {
        workload: a.name.clone(),
        node: node.clone(),
        grace_ms: u64::try_from(a.grace.as_millis()).unwrap_or(u64::MAX),
        requested_by: a.requester.who(),
        forwarded_by: None,
    };
    let (env, seq) = request(&js, &a.requester, Event::WorkloadStopRequested(stop)).await?;
    println!(
        "requested stop of {} on {node} ({}, grace {}; event {}, seq {})",
        a.name,
        w.state_label(),
        humantime::format_duration(a.grace),
        env.id,
        seq
    );
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The exit may come from another node: a migration in flight hands the
    // stop to its target when it completes.
    let line = first_answer(
        &events,
        "workload.*.exited",
        seq,
        a.grace + a.timeout,
        &node,
        |env| match &env.event {
            Event::WorkloadExited(x) if x.workload == a.name => Some(match x.reason {
                ExitReason::Ended => format!(
                    "{} ended on {} before the stop took effect",
                    a.name, env.node
                ),
                reason => format!("{} {reason} on {}", a.name, env.node),
            }),
            _ => None,
        },
    )
    .await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
