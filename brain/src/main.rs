//! `loadshift-brain`: the command line of the brain. Parses options (each also
//! a `LOADSHIFT_*` variable), sets up logging and NATS, and dispatches to the
//! library: `run` (default), `replay --from-start`, `status`.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage (clap's own code).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use loadshift_brain::fold::Folder;
use loadshift_brain::replay::{self, Stage};
use loadshift_brain::service::{self, ServiceConfig};
use loadshift_brain::shutdown;
use loadshift_brain::status::{Report, Snapshot};
use loadshift_brain::store::{Store, StoreError, StoreLock};
use loadshift_events::cli::{LogArgs, NatsArgs};

/// The loadshift brain: folds the TELEMETRY and EVENTS streams into a sled
/// store (per-node time series, node registry, event index, counters) that can
/// always be rebuilt from the log.
///
/// Without a subcommand it runs the service (`run`).
#[derive(Debug, Parser)]
#[command(
    name = "loadshift-brain",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default): fold both streams into the store with
    /// durable consumers, from the store's last applied sequences, until
    /// SIGINT/SIGTERM (the current batch is finished and flushed first). A
    /// missing, corrupt or old store is moved aside to `<store>.broken` and
    /// rebuilt from sequence 1.
    Run(RunArgs),
    /// Rebuild the store from the streams: fold everything from sequence 1
    /// into `<store>.replay`, then swap it into place. Refuses while a brain
    /// runs on the same store. The last stdout line is
    /// `replayed N events in S s (R events/s)`.
    Replay(ReplayArgs),
    /// Show the node registry and the fold's counts. Reads the store, or the
    /// snapshot a running brain keeps next to it (`--digest` needs the store
    /// itself: stop the brain first).
    Status(StatusArgs),
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
struct Common {
    /// The sled store directory. A lock file `<store>.lock` sits next to it;
    /// rebuilds use `<store>.replay`, `<store>.old` and `<store>.broken`.
    #[arg(
        long,
        env = "LOADSHIFT_STORE",
        default_value = "/var/lib/loadshift/brain"
    )]
    store: PathBuf,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Most messages folded per batch (one atomic write, one flush, one ack).
    #[arg(long, env = "LOADSHIFT_BRAIN_BATCH", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// How long a batch waits for more messages once it has one, in ms.
    #[arg(long, env = "LOADSHIFT_BRAIN_LINGER_MS", default_value_t = 50)]
    linger_ms: u64,
}

#[derive(Debug, Clone, Args)]
struct ReplayArgs {
    #[command(flatten)]
    common: Common,
    /// Rebuild from sequence 1 of each stream (the only mode so far; required
    /// so that the command says what it does).
    #[arg(long, env = "LOADSHIFT_REPLAY_FROM_START", required = true)]
    from_start: bool,
    /// Most messages per pull and per batch.
    #[arg(long, env = "LOADSHIFT_REPLAY_BATCH", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// Stop after this stage and drop the messages, to measure reading
    /// (`read`) or reading and decoding (`decode`) alone; `fold` is a real
    /// replay. Measuring touches no store.
    #[arg(long, env = "LOADSHIFT_REPLAY_STAGE", value_enum, default_value_t = Stage::Fold)]
    stage: Stage,
}

#[derive(Debug, Clone, Args)]
struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Print JSON instead of text.
    #[arg(long, env = "LOADSHIFT_STATUS_JSON")]
    json: bool,
    /// Also print the SHA-256 digest of the folded content (series, registry,
    /// kind index, counters, parked); equal digests mean equal folds.
    #[arg(long, env = "LOADSHIFT_STATUS_DIGEST")]
    digest: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    let log = match &command {
        Command::Run(a) => &a.common.log,
        Command::Replay(a) => &a.common.log,
        Command::Status(a) => &a.common.log,
    };
    log.init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Run(a) => run(a).await,
            Command::Replay(a) => replay(a).await,
            Command::Status(a) => status(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn connect(common: &Common) -> anyhow::Result<jetstream::Context> {
    let client =
        loadshift_events::connection::connect(&common.nats.options("loadshift-brain"), false)
            .await
            .context("connecting to NATS")?;
    let js = jetstream::new(client);
    loadshift_events::stream::declare(&js, &common.nats.stream_settings())
        .await
        .context("declaring the streams")?;
    Ok(js)
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let (_tx, mut shutdown) = shutdown::on_signals().context("installing signal handlers")?;
    let js = connect(&a.common).await?;
    let cfg = ServiceConfig {
        batch: a.batch as usize,
        linger: Duration::from_millis(a.linger_ms),
    };
    service::run(&js, &a.common.store, cfg, &mut shutdown)
        .await
        .with_context(|| format!("folding into {}", a.common.store.display()))?;
    Ok(())
}

async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    let (_tx, mut shutdown) = shutdown::on_signals().context("installing signal handlers")?;
    let js = connect(&a.common).await?;
    let done = match a.stage {
        Stage::Fold => replay::replay(&js, &a.common.store, a.batch as usize, &mut shutdown)
            .await
            .with_context(|| format!("replaying into {}", a.common.store.display()))?,
        stage => replay::measure(&js, a.batch as usize, stage)
            .await
            .context("measuring the read rate")?,
    };
    println!("{}", done.line());
    Ok(())
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let path = &a.common.store;
    let now = chrono::Utc::now();
    let report = match StoreLock::acquire(path) {
        Ok(_lock) => {
            let store = Store::open_existing(path)?;
            let folder = Folder::load(&store).context("reading the store")?;
            let mut r = Report::new("store", path, folder.snapshot(), now);
            if a.digest {
                r.digest = Some(store.digest().context("computing the digest")?);
            }
            r
        }
        Err(StoreError::Locked(_)) => {
            if a.digest {
                bail!(
                    "--digest reads the store itself, and a running loadshift-brain holds the store at {}; stop it first",
                    path.display()
                );
            }
            Report::new("snapshot", path, Snapshot::read(path)?, now)
        }
        Err(e) => return Err(e).context(format!("opening {}", path.display())),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
