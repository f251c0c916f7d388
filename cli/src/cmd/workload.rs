//! `loadshift workload run` and `loadshift workload ls`: start a workload by
//! publishing the request its node's executor acts on (on the emptiest live
//! node when none is named), and list where every workload runs now
//! according to the log. `stop`, `logs` and `inspect` have files of their own.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use loadshift_events::workload::{Runtime, StartRequested, WorkloadSpec};
use loadshift_events::{connection, Envelope, Event, NodeName, WorkloadName};

use super::{connect, Common, Requester};
use crate::error::{parse_env, parse_timeout, InputError};
use crate::eventlog::{self, Start};
use crate::table::Table;
use loadshift_events::placement::{Placement, Workload};

/// The `workload` commands.
#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    // The help text is the argument struct's doc comment.
    Run(RunArgs),
    Ls(LsArgs),
    Stop(super::stop::StopArgs),
    Logs(super::logs::LogsArgs),
    Inspect(super::inspect::InspectArgs),
}

/// How the workload runs (the contract's `Runtime`, as a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// A plain process tree (checkpointed with the criu CLI).
    Process,
    /// A Docker container (needs --image).
    Docker,
}

impl From<RuntimeArg> for Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Process => Runtime::Process,
            RuntimeArg::Docker => Runtime::Docker,
        }
    }
}

/// Ask a node to start a workload.
///
/// Without `--node` it picks the node itself, by one rule (the contract's
/// `emptiest_node`): among the nodes whose executor answers the liveness
/// ping within 2 s and runs the workload's runtime, the one with the lowest
/// CPU in its latest sample of the last two minutes (a node without one
/// counts as busier than any with one); ties go to the node running fewer
/// workloads, then to the name. It says which node it chose and why.
///
/// Publishes `workload.<N>.start_requested`, which node N's executor acts on, then waits for the node's answer
/// (`workload.<N>.started` or `workload.<N>.start_failed`) and exits 0 only
/// if it started: a program missing on the node is an error, not "started".
/// `--no-wait` returns once the request is stored.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift workload run --node node2 --name counter -- /usr/bin/counter
  loadshift workload run --node node2 --name web --runtime docker --image web:1 --env PORT=8080
  LOADSHIFT_NODE=node3 loadshift workload run --name sleeper --timeout 30s -- sleep 1000
  loadshift workload run --node node2 --name batch --no-wait -- /usr/bin/batch
  loadshift workload run --name counter -- /usr/bin/counter   (on the emptiest live node)

The command after `--` is run as is (no shell); a docker workload without one
runs its image's own command.")]
pub struct RunArgs {
    /// The node that must start it (default: the emptiest live node, by
    /// the rule above).
    #[arg(long, env = "LOADSHIFT_NODE")]
    pub node: Option<NodeName>,
    /// The workload's name, unique in the cluster (letters, digits, '-', '_').
    #[arg(long, env = "LOADSHIFT_WORKLOAD")]
    pub name: WorkloadName,
    /// How it runs.
    #[arg(long, env = "LOADSHIFT_RUNTIME", value_enum, default_value_t = RuntimeArg::Process)]
    pub runtime: RuntimeArg,
    /// The image, for a docker workload.
    #[arg(long, env = "LOADSHIFT_IMAGE")]
    pub image: Option<String>,
    /// An environment variable for the workload, KEY=VALUE (repeatable).
    #[arg(long = "env", env = "LOADSHIFT_ENV", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Never move it with post-copy (`--mode lazy`): a lazy migration
    /// resumes it on the target before its memory arrived, so it dies if the
    /// source dies meanwhile. It travels with the workload; `auto` never
    /// picks lazy for it and `--mode lazy` falls back to a stream.
    #[arg(long, env = "LOADSHIFT_NO_POSTCOPY")]
    pub no_postcopy: bool,
    #[command(flatten)]
    /// Who asks.
    pub requester: Requester,
    /// Wait for the node's answer and print it (the default; kept so that
    /// scripts written with it still work).
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Return once the request is stored, without waiting for the node's
    /// answer (exit 0 then says only that the request was accepted).
    #[arg(long, env = "LOADSHIFT_NO_WAIT")]
    pub no_wait: bool,
    /// How long to wait for the node's answer (60s, 2m, ...).
    #[arg(long, env = "LOADSHIFT_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

impl RunArgs {
    /// The spec these flags describe.
    ///
    /// # Errors
    /// [`InputError`] for a docker workload without image, an image on a
    /// process, or a process without command.
    pub fn spec(&self) -> Result<WorkloadSpec, InputError> {
        match (self.runtime, &self.image) {
            (RuntimeArg::Docker, None) => return Err(InputError::DockerWithoutImage),
            (RuntimeArg::Process, Some(_)) => return Err(InputError::ImageWithoutDocker),
            (RuntimeArg::Process, None) if self.command.is_empty() => {
                return Err(InputError::NoCommand)
            }
            _ => {}
        }
        Ok(WorkloadSpec {
            runtime: self.runtime.into(),
            command: self.command.clone(),
            image: self.image.clone(),
            env: self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            no_postcopy: self.no_postcopy,
        })
    }
}

/// List where every workload runs now.
///
/// Folds the EVENTS stream from its start (started → on that node, migration completed → on the target,
/// rolled back → on the source, exited → gone; a migration with no outcome
/// shows as `migrating src→dst`).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift workload ls
  loadshift workload ls --json | jq -r '.[] | select(.node == \"node2\") | .name'")]
pub struct LsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long, env = "LOADSHIFT_JSON")]
    pub json: bool,
    #[command(flatten)]
    /// NATS and logging.
    pub common: Common,
}

/// `workload run`.
///
/// # Errors
/// Bad input, or NATS failing.
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = a.spec()?;
    let (client, js) = connect(&a.common).await?;
    // Names are unique in the cluster: the log says whether it runs already
    // (the executors also refuse it, and settle two starts that race).
    let placement = fold(&js, &a.common).await?;
    if let Some(w) = placement.workloads.get(&a.name) {
        return Err(InputError::NameTaken {
            workload: a.name.clone(),
            node: w.node.clone(),
        }
        .into());
    }
    let node = match &a.node {
        Some(n) => n.clone(),
        None => {
            let (node, weighed) =
                super::place::choose(&client, &js, &placement, spec.runtime).await?;
            println!(
                "placing {} on {node}: {}",
                a.name,
                super::place::why(&weighed)
            );
            node
        }
    };
    // A draining node takes no new work (`loadshift node uncordon` first);
    // the rule above never picks one.
    if placement.is_draining(&node) {
        return Err(InputError::Draining(node).into());
    }
    let events = eventlog::open(&js, &a.common.nats).await?;
    let (env, seq) = request(
        &js,
        &a.requester,
        Event::WorkloadStartRequested(StartRequested {
            workload: a.name.clone(),
            node: node.clone(),
            spec,
            requested_by: a.requester.who(),
        }),
    )
    .await?;
    println!(
        "requested workload {} on {} (event {}, seq {})",
        a.name, node, env.id, seq
    );
    if a.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let filter = format!("workload.{node}.>");
    let answer = first_answer(&events, &filter, seq, a.timeout, &node, |env| {
        match &env.event {
            Event::WorkloadStarted(s) if s.workload == a.name => {
                let how = match (&s.pid, &s.container_id) {
                    (_, Some(c)) => format!("container {c}"),
                    (Some(p), None) => format!("pid {p}"),
                    (None, None) => "no pid reported".into(),
                };
                Some(Ok(format!("started {} on {} ({how})", a.name, env.node)))
            }
            Event::WorkloadStartFailed(f) if f.workload == a.name => Some(Err(format!(
                "error: {} did not start on {}: {}",
                a.name, env.node, f.reason
            ))),
            _ => None,
        }
    })
    .await?;
    match answer {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(line) => {
            eprintln!("{line}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Publishes `event` as `requester`'s request; returns its envelope and
/// the stream sequence it was stored at (where waiting for the answer
/// starts).
///
/// # Errors
/// When NATS does not store it.
pub async fn request(
    js: &async_nats::jetstream::Context,
    requester: &Requester,
    event: Event,
) -> anyhow::Result<(Envelope, u64)> {
    let what = event.kind().as_str();
    let env = Envelope::new(requester.as_node.clone(), event);
    let ack = connection::publish(js, &env)
        .await
        .with_context(|| format!("publishing the {what} request"))?;
    Ok((env, ack.sequence))
}

/// Follows the log on `filter` after sequence `after` until `answer` says
/// something about an event, or `timeout` passes (an error naming `node`,
/// whose executor should have answered): how `run` and `stop` wait for the
/// node that acts on their request.
///
/// # Errors
/// The timeout, the stream ending, or NATS failing.
pub async fn first_answer<T>(
    events: &eventlog::Log,
    filter: &str,
    after: u64,
    timeout: Duration,
    node: &NodeName,
    mut answer: impl FnMut(&Envelope) -> Option<T>,
) -> anyhow::Result<T> {
    let mut items = Box::pin(eventlog::follow(events, filter, Start::Sequence(after + 1)).await?);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let item = match tokio::time::timeout_at(deadline, items.next()).await {
            Err(_) => bail!(
                "{node} did not answer within {} (is its executor running? `loadshift status` asks)",
                humantime::format_duration(timeout)
            ),
            Ok(None) => bail!("the EVENTS stream ended while waiting for {node}"),
            Ok(Some(item)) => item,
        };
        let Some(env) = item.readable() else {
            continue;
        };
        if let Some(t) = answer(env) {
            return Ok(t);
        }
    }
}

/// One workload as `workload ls --json` and `status --json` print it: one
/// function, so that one jq filter reads both.
pub fn workload_json(w: &Workload) -> serde_json::Value {
    serde_json::json!({
        "name": w.name,
        "node": w.node,
        "runtime": w.runtime.map(|r| r.to_string()),
        "state": w.state_label(),
        "since": w.since,
        "pid": w.pid,
        "container_id": w.container_id,
    })
}

/// `workload ls`.
///
/// # Errors
/// NATS failing.
pub async fn ls(a: LsArgs) -> anyhow::Result<ExitCode> {
    let (_client, js) = connect(&a.common).await?;
    let placement = fold(&js, &a.common).await?;
    if a.json {
        let rows: Vec<_> = placement.workloads.values().map(workload_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", workloads_table(&placement).render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The fold of the whole EVENTS stream as it is now.
///
/// # Errors
/// When the stream cannot be read to its end.
pub async fn fold(
    js: &async_nats::jetstream::Context,
    common: &Common,
) -> anyhow::Result<Placement> {
    let mut events = eventlog::open(js, &common.nats).await?;
    let items = eventlog::read_all(&mut events)
        .await
        .context("reading the EVENTS stream")?;
    Ok(Placement::from_events(eventlog::readable(&items)))
}

/// NAME NODE RUNTIME STATE SINCE PID/CONTAINER, one row per workload.
pub fn workloads_table(p: &Placement) -> Table {
    let mut t = Table::new(&["NAME", "NODE", "RUNTIME", "STATE", "SINCE", "PID/CONTAINER"]);
    for w in p.workloads.values() {
        t.row(vec![
            w.name.to_string(),
            w.node.to_string(),
            w.runtime.map_or_else(|| "-".into(), |r| r.to_string()),
            w.state_label(),
            crate::time::short(w.since),
            w.handle_label(),
        ]);
    }
    t
}

#[cfg(test)]
mod no_postcopy_tests {
    use clap::Parser;

    use super::RunArgs;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn spec_of(flags: &[&str]) -> loadshift_events::workload::WorkloadSpec {
        let argv = ["run", "--node", "node2", "--name", "w"]
            .iter()
            .chain(flags)
            .chain(&["--", "sleep", "9"]);
        Run::try_parse_from(argv).unwrap().args.spec().unwrap()
    }

    #[test]
    fn no_postcopy_marks_the_spec_and_its_absence_does_not() {
        assert!(spec_of(&["--no-postcopy"]).no_postcopy);
        assert!(!spec_of(&[]).no_postcopy);
    }
}
