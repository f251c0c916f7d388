//! The verbs of `loadshift`, one struct and one file per command (as
//! youki's `liboci-cli` does): `workload run/ls` (workload.rs, placement
//! in place.rs), `workload stop/logs/inspect` (stop.rs, logs.rs,
//! inspect.rs), `migrate`, `node drain/uncordon/ls` (node.rs), `events tail`,
//! `status`, `up`. This file holds the top-level parser and what
//! every command shares: how to reach NATS and how to log.

use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::placement::Placement;
use loadshift_events::NodeName;

pub mod auth;
pub mod events;
pub mod inspect;
pub mod logs;
pub mod migrate;
pub mod node;
pub mod place;
pub mod status;
pub mod stop;
pub mod up;
pub mod workload;

/// The loadshift operator's command line: start workloads, see where they
/// run, move them, and watch the event log.
///
/// Everything it shows is read from the EVENTS stream in NATS JetStream, and
/// everything it asks for is an event published there: the executors act on
/// them. Every option can also be set with a `LOADSHIFT_*` environment
/// variable (shown in each command's `--help`).
///
/// Exit codes: 0 done, 1 failed (or the workload did not start, or the
/// migration did not complete), 2 bad usage or input.
#[derive(Debug, Parser)]
#[command(
    name = "loadshift",
    version,
    after_help = "Examples:
  loadshift workload run --node node2 --name counter -- /usr/bin/counter --every 1s
  loadshift workload ls
  loadshift workload logs counter -f
  loadshift workload stop counter --wait
  loadshift migrate counter --to node3 --wait
  loadshift node drain node2 --wait
  loadshift events tail --subject 'migration.>'
  loadshift status
  loadshift up --scenario ramp

NATS is found at --nats (LOADSHIFT_NATS, default nats://127.0.0.1:4222)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, stop, list, read and inspect workloads.
    #[command(subcommand)]
    Workload(workload::WorkloadCommand),
    // The help text of a command is its argument struct's doc comment.
    Migrate(migrate::MigrateArgs),
    /// Drain a node for maintenance, give it back, list the nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Read the event log.
    #[command(subcommand)]
    Events(events::EventsCommand),
    Status(status::StatusArgs),
    Up(up::UpArgs),
    /// Write the NATS identities of a deployment.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
}

impl Command {
    /// How the command logs.
    pub fn log(&self) -> &LogArgs {
        match self {
            Command::Up(a) => &a.log,
            Command::Auth(_) => &NO_LOG,
            other => &other.common().expect("every other command has Common").log,
        }
    }

    /// The NATS and logging options of the commands that talk to a
    /// running cluster (`up` starts one instead: `None`).
    pub fn common(&self) -> Option<&Common> {
        Some(match self {
            Command::Workload(c) => c.common(),
            Command::Migrate(a) => &a.common,
            Command::Node(c) => c.common(),
            Command::Events(c) => c.common(),
            Command::Status(a) => &a.common,
            Command::Up(_) | Command::Auth(_) => return None,
        })
    }

    /// Runs the command; the exit code says how it went.
    ///
    /// # Errors
    /// Anything that stopped the command; an [`crate::error::InputError`] in
    /// the chain means bad input (exit 2), anything else a failure (exit 1).
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Workload(c) => c.run().await,
            Command::Migrate(a) => migrate::run(a).await,
            Command::Node(c) => c.run().await,
            Command::Events(c) => c.run().await,
            Command::Status(a) => status::run(a).await,
            Command::Up(a) => up::run(a).await,
            Command::Auth(auth::AuthCommand::Init(a)) => auth::init(a),
        }
    }
}

/// Each group of subcommands, listed once: every subcommand's arguments
/// carry [`Common`], and the function that runs it; so that [`Command`]
/// lists groups, not every subcommand twice.
macro_rules! subcommands {
    ($group:ty { $($subcommand:ident => $run:path),+ $(,)? }) => {
        impl $group {
            fn common(&self) -> &Common {
                match self {
                    $(Self::$subcommand(a) => &a.common),+
                }
            }

            async fn run(self) -> anyhow::Result<ExitCode> {
                match self {
                    $(Self::$subcommand(a) => $run(a).await),+
                }
            }
        }
    };
}

subcommands!(workload::WorkloadCommand {
    Run => workload::run,
    Ls => workload::ls,
    Stop => stop::run,
    Logs => logs::run,
    Inspect => inspect::run,
});
subcommands!(node::NodeCommand {
    Drain => node::drain,
    Uncordon => node::uncordon,
    Ls => node::ls,
});
subcommands!(events::EventsCommand {
    Tail => events::tail,
    Streams => events::streams,
});

/// The logging of commands that take no logging options (`auth`).
static NO_LOG: LogArgs = LogArgs {
    log_format: loadshift_events::cli::LogFormat::Pretty,
    verbose: 0,
};

/// Options every command takes: NATS and logging.
#[derive(Debug, Clone, Args)]
pub struct Common {
    #[command(flatten)]
    /// Where NATS is.
    pub nats: NatsArgs,
    #[command(flatten)]
    /// How to log (to stderr).
    pub log: LogArgs,
}

/// Who publishes a request: the envelope's emitting node and the person.
#[derive(Debug, Clone, Args)]
pub struct Requester {
    /// The node name the request's envelope is emitted by (it must be a
    /// valid node name; the CLI is not a node, so it defaults to `cli`).
    #[arg(long, env = "LOADSHIFT_CLI_NODE", default_value = "cli")]
    pub as_node: NodeName,
    /// Who asks, recorded in the event (default: $USER, or `operator`).
    #[arg(long, env = "LOADSHIFT_REQUESTED_BY")]
    pub requested_by: Option<String>,
}

impl Requester {
    /// `--requested-by`, else `$USER`, else `operator`.
    pub fn who(&self) -> String {
        self.requested_by
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "operator".to_string())
    }
}

/// Connects to NATS as `loadshift-cli`.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect(common: &Common) -> anyhow::Result<(async_nats::Client, jetstream::Context)> {
    let client =
        loadshift_events::connection::connect(&common.nats.options("loadshift-cli"), false)
            .await
            .context("connecting to NATS")?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// What most commands start from: the connection, and where everything
/// runs as the EVENTS stream tells it now.
///
/// # Errors
/// NATS failing.
pub async fn connect_and_fold(
    common: &Common,
) -> anyhow::Result<(async_nats::Client, jetstream::Context, Placement)> {
    let (client, js) = connect(common).await?;
    let placement = workload::fold(&js, common).await?;
    Ok((client, js, placement))
}
