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
use loadshift_brain::fold::Fold;
use loadshift_brain::labels::LabelConfig;
use loadshift_brain::model::TrainConfig;
use loadshift_brain::replay::{self, Stage};
use loadshift_brain::service::{self, ServiceConfig};
use loadshift_brain::status::{Report, Snapshot};
use loadshift_brain::store::{Store, StoreError, StoreLock};
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::shutdown::Shutdown;
use loadshift_events::NodeName;

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
    /// Train and score on Bitbrains-format traces, without NATS or a store:
    /// prints one table with precision, recall and F1 of the model and of
    /// static CPU thresholds (60/70/80/90 %) on exactly the same held-back
    /// samples, for overload onset and sustained overload.
    Evaluate(EvaluateArgs),
    /// Train a model from what the store holds (what the service or a
    /// replay folded): the latest 30 % of the time span is held back for
    /// scoring. Stores the model, publishes `model.trained` and, when it
    /// beats the active model (or, for the first, the best static
    /// threshold) on the held-back samples, `model.activated`. Refuses
    /// while a brain runs on the store: the service trains itself when a
    /// `model.train_requested` event arrives.
    Train(TrainArgs),
    /// Closed-loop value benchmark: place the VMs of `--trace` as workloads
    /// on `--nodes` nodes (VM i on node i mod N, every node sized so that
    /// the mean total demand is 35 % of the cluster), advance 5 minutes at a
    /// time and let each policy move workloads (each move charged a freeze
    /// from its memory at the throughput measured in BENCHMARKS.md, dump
    /// CPU on the source, a 10-minute cooldown). `ai` is the brain's planner
    /// with a model trained on `--train` (every choice made on later rows of
    /// it); `threshold` an Incus-style reactive rebalancer; `spread` a
    /// DRS-style balancer every 5 minutes; `none` moves nothing. Prints one
    /// table row per policy, or with `--json` one JSON object per line.
    Simulate(SimulateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PolicyName {
    Ai,
    Threshold,
    Spread,
    None,
}

#[derive(Debug, Clone, Args)]
struct SimulateArgs {
    /// A directory of Bitbrains-format `.csv` traces: the workloads.
    #[arg(long, env = "LOADSHIFT_SIMULATE_TRACE")]
    trace: PathBuf,
    /// Nodes to place them on.
    #[arg(long, env = "LOADSHIFT_SIMULATE_NODES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    nodes: u32,
    /// One policy (default: all four, `none` first).
    #[arg(long, value_enum)]
    policy: Option<PolicyName>,
    /// Traces to train the `ai` policy's model on (an earlier month).
    #[arg(long, env = "LOADSHIFT_SIMULATE_TRAIN")]
    train: Option<PathBuf>,
    /// One JSON object per policy instead of the table.
    #[arg(long)]
    json: bool,
    /// A model file: read the `ai` policy's model from it when it exists
    /// (instead of training on `--train`), else train and write it there,
    /// so that planner settings can be compared on one model.
    #[arg(long, env = "LOADSHIFT_SIMULATE_MODEL")]
    model_file: Option<PathBuf>,
    /// The `ai` planner's `relief_pct` (default: the planner's, chosen on
    /// July). Choose it on an earlier month than the one reported.
    #[arg(long, value_parser = parse_pct)]
    relief_pct: Option<f32>,
    /// The `ai` planner's `min_relief_pct` (default: the planner's).
    #[arg(long, value_parser = parse_pct)]
    min_relief_pct: Option<f32>,
    /// The `ai` planner's cooldown per node (default: the simulation's).
    #[arg(long, value_parser = parse_every)]
    node_cooldown: Option<Duration>,
    /// The `ai` planner's peak window (default: its workload cooldown).
    #[arg(long, value_parser = parse_every)]
    peak_window: Option<Duration>,
    /// The `ai` planner's cooldown per workload (default: the simulation's,
    /// chosen on July).
    #[arg(long, value_parser = parse_every)]
    workload_cooldown: Option<Duration>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// Bad input found after parsing: exit code 2, like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

#[derive(Debug, Clone, Args)]
struct TrainArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    model: ModelArgs,
    /// The name the brain publishes its events under.
    #[arg(long, env = "LOADSHIFT_BRAIN_NAME", default_value = "brain")]
    name: NodeName,
}

fn parse_pct(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a percentage between 0 and 1000")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_every(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Model options shared by `evaluate`, `train`, `run` and `simulate`.
#[derive(Debug, Clone, Args)]
struct ModelArgs {
    /// The model's step: telemetry finer than this is averaged over each
    /// step before features and labels are computed, in training and live
    /// alike, so the windows (3 and 12 steps) and the horizon are durations
    /// (`5m`: the reference traces' step; `1s` for a model of 1 s telemetry).
    #[arg(long, env = "LOADSHIFT_STEP", default_value = "5m", value_parser = parse_step)]
    step: Duration,
    /// How far ahead the labels look: a duration (`15m`), or a bare number
    /// of steps; rounded to whole steps (at least one).
    #[arg(long, env = "LOADSHIFT_HORIZON", default_value = "15m")]
    horizon: String,
    /// CPU % of capacity that counts as overload (onset label).
    #[arg(long, env = "LOADSHIFT_THRESHOLD", default_value_t = 90.0)]
    threshold: f32,
    /// Mean CPU % over the horizon that counts as sustained overload.
    #[arg(long, env = "LOADSHIFT_SUSTAINED_THRESHOLD", default_value_t = 85.0)]
    sustained_threshold: f32,
    /// Trees per forest (default 100).
    #[arg(long, env = "LOADSHIFT_TREES", value_parser = clap::value_parser!(u16).range(1..=2000))]
    trees: Option<u16>,
    /// Deepest a tree may grow (default 12).
    #[arg(long, env = "LOADSHIFT_MAX_DEPTH", value_parser = clap::value_parser!(u16).range(1..=64))]
    max_depth: Option<u16>,
}

fn parse_step(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("the step must be at least 1 ms".into());
    }
    Ok(d)
}

impl ModelArgs {
    fn config(&self) -> Result<TrainConfig, BadInput> {
        let step_ms = self.step.as_millis().min(i64::MAX as u128) as i64;
        let h = self.horizon.trim();
        let horizon = match h.parse::<u32>() {
            Ok(n) => n as usize,
            Err(_) => {
                let d = humantime::parse_duration(h).map_err(|e| {
                    BadInput(format!(
                        "--horizon {h:?}: a duration (15m) or a number of steps: {e}"
                    ))
                })?;
                ((d.as_millis() as f64 / step_ms as f64).round() as usize).max(1)
            }
        };
        if !(1..=1000).contains(&horizon) {
            return Err(BadInput(format!(
                "--horizon {h:?} is {horizon} steps of {}; between 1 and 1000 steps, please",
                humantime::format_duration(self.step)
            )));
        }
        let mut c = TrainConfig::default().with_trees(self.trees, self.max_depth);
        c.labels = LabelConfig {
            horizon,
            onset_pct: self.threshold,
            sustained_pct: self.sustained_threshold,
            step_ms,
        };
        Ok(c)
    }
}

#[derive(Debug, Clone, Args)]
struct EvaluateArgs {
    /// A directory of Bitbrains-format `.csv` traces, one node per file.
    #[arg(long, env = "LOADSHIFT_EVALUATE_TRACE")]
    trace: PathBuf,
    /// Share of each node's samples (the earliest) to train on; the rest is
    /// held back for scoring.
    #[arg(
        long,
        env = "LOADSHIFT_EVALUATE_SPLIT",
        default_value_t = 0.7,
        conflicts_with = "test"
    )]
    split: f64,
    /// Train on all of `--trace` and score on this directory instead.
    #[arg(long, env = "LOADSHIFT_EVALUATE_TEST")]
    test: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    log: LogArgs,
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
    /// Request a retraining this often (`30m`, `1h`, ...; `0`: only when a
    /// `model.train_requested` event asks).
    #[arg(long, env = "LOADSHIFT_RETRAIN_EVERY", default_value = "1h", value_parser = parse_every)]
    retrain_every: Duration,
    /// The name the brain publishes its events under.
    #[arg(long, env = "LOADSHIFT_BRAIN_NAME", default_value = "brain")]
    name: NodeName,
    #[command(flatten)]
    model: ModelArgs,
    /// Predictions in a row that must raise an alarm before a node is
    /// relieved (hysteresis).
    #[arg(long, env = "LOADSHIFT_PLAN_K", default_value_t = 3)]
    plan_k: u32,
    /// A raw probability at or above this counts as an alarm too (the
    /// model's own cut-offs always do).
    #[arg(long, env = "LOADSHIFT_PLAN_LEVEL", default_value_t = 0.99)]
    plan_level: f32,
    /// A target must stay below this CPU percent after taking the workload.
    #[arg(long, env = "LOADSHIFT_PLAN_THRESHOLD", default_value_t = 90.0)]
    plan_threshold: f32,
    /// No new migration of a workload this long after its last one.
    #[arg(long, env = "LOADSHIFT_WORKLOAD_COOLDOWN", default_value = "10m", value_parser = parse_every)]
    workload_cooldown: Duration,
    /// No new migration from or to a node this long after its last one.
    #[arg(long, env = "LOADSHIFT_NODE_COOLDOWN", default_value = "2m", value_parser = parse_every)]
    node_cooldown: Duration,
    /// When no model has ever been trained, train the first one from this
    /// folder of Bitbrains-format traces (a fresh cluster has no history of
    /// its own yet); later models come from the cluster's own log.
    #[arg(long, env = "LOADSHIFT_BOOTSTRAP_TRACE")]
    bootstrap_trace: Option<std::path::PathBuf>,
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
        Command::Evaluate(a) => &a.log,
        Command::Train(a) => &a.common.log,
        Command::Simulate(a) => &a.log,
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
            Command::Evaluate(a) => evaluate(a),
            Command::Train(a) => train(a).await,
            Command::Simulate(a) => simulate(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            if is_bad_input(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Bad usage or input exits 2 (the README's promise); everything else 1.
fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<BadInput>().is_some()
            || c.downcast_ref::<loadshift_brain::evaluate::EvaluateError>()
                .is_some_and(|e| e.is_bad_input())
    })
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

/// How long a stopping brain waits for its tasks after the fold stopped.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let js = connect(&a.common).await?;
    let cfg = ServiceConfig {
        batch: a.batch as usize,
        linger: Duration::from_millis(a.linger_ms),
        train: a.model.config()?,
        retrain_every: (!a.retrain_every.is_zero()).then_some(a.retrain_every),
        emitter: a.name.clone(),
        planner: loadshift_brain::planner::PlannerConfig {
            level: a.plan_level,
            k: a.plan_k,
            threshold_pct: a.plan_threshold,
            workload_cooldown: a.workload_cooldown,
            node_cooldown: a.node_cooldown,
            requested_by: a.name.to_string(),
            ..Default::default()
        },
        bootstrap_trace: a.bootstrap_trace.clone(),
    };
    let result = service::run(&js, &a.common.store, cfg, &shutdown).await;
    if let Err(e) = shutdown.completed_within(STOP_PATIENCE).await {
        tracing::warn!("{e}; exiting anyway");
    }
    result.with_context(|| format!("folding into {}", a.common.store.display()))?;
    Ok(())
}

async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let mut stop = shutdown.listener();
    let js = connect(&a.common).await?;
    let done = match a.stage {
        Stage::Fold => replay::replay(&js, &a.common.store, a.batch as usize, &mut stop)
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
            let fold = Fold::load(&store).context("reading the store")?;
            let mut r = Report::new("store", path, Snapshot::from(&fold), now);
            if a.digest {
                r.digest = Some(store.digest().context("computing the digest")?);
            }
            let waiting = loadshift_brain::outbox::pending(&store).context("reading the outbox")?;
            r.outbox = Some(waiting.iter().map(Into::into).collect());
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

fn evaluate(a: EvaluateArgs) -> anyhow::Result<()> {
    if !(a.split > 0.0 && a.split < 1.0) {
        return Err(BadInput(format!(
            "--split must be between 0 and 1 (exclusive), not {}",
            a.split
        ))
        .into());
    }
    let cfg = a.model.config()?;
    let report = loadshift_brain::evaluate::evaluate(&a.trace, a.test.as_deref(), a.split, &cfg)
        .with_context(|| format!("evaluating on {}", a.trace.display()))?;
    print!("{}", report.table());
    Ok(())
}

async fn train(a: TrainArgs) -> anyhow::Result<()> {
    let path = &a.common.store;
    let _lock = match StoreLock::acquire(path) {
        Err(StoreError::Locked(_)) => bail!(
            "a running loadshift-brain holds the store at {}; it trains when asked: publish a model.train_requested event",
            path.display()
        ),
        other => other?,
    };
    let store = Store::open_existing(path)?;
    let fold = Fold::load(&store).context("reading the store")?;
    let cfg = a.model.config()?;
    let state = *fold.model_state();
    let outcome = tokio::task::spawn_blocking(move || {
        loadshift_brain::training::train_from_store(&store, &cfg, &state)
    })
    .await
    .context("the training task")?
    .context("training")?;
    let js = connect(&a.common).await?;
    loadshift_brain::training::publish(&js, &a.name, &outcome)
        .await
        .context("publishing the model events")?;
    let t = &outcome.trained;
    println!(
        "model {} trained on {} bag rows in {:.1} s: {}; {}",
        t.version,
        t.train_rows,
        t.train_seconds,
        t.scores_beside_the_rule(3),
        match &outcome.activated {
            Some(act) => format!("activated ({})", act.reason),
            None => "not activated".to_string(),
        }
    );
    Ok(())
}

/// The `ai` policy's model: read from `--model-file` when it exists, else
/// trained on `--train` (and written to `--model-file` when given).
fn simulated_model(a: &SimulateArgs) -> anyhow::Result<loadshift_brain::model::Model> {
    if let Some(path) = a.model_file.as_deref().filter(|p| p.exists()) {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| BadInput(format!("{} is not a model: {e}", path.display())).into());
    }
    let dir = a.train.as_deref().unwrap_or(std::path::Path::new("."));
    let cfg = a.model.config()?;
    let ds = loadshift_brain::evaluate::load_dataset(dir, &cfg.labels)
        .map_err(|e| BadInput(format!("reading {}: {e}", dir.display())))?;
    let rows: Vec<_> = ds.rows.iter().collect();
    let m = loadshift_brain::model::train(&rows, &cfg, 1)
        .with_context(|| format!("training on {}", dir.display()))?;
    if let Some(path) = a.model_file.as_deref() {
        let json = serde_json::to_vec(&m).context("encoding the model")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(m)
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    use loadshift_brain::simulate::{self, ai::Ai, policy, report, CostModel, Grid, Layout};
    let wanted: Vec<PolicyName> = match a.policy {
        Some(p) => vec![p],
        None => vec![
            PolicyName::None,
            PolicyName::Threshold,
            PolicyName::Spread,
            PolicyName::Ai,
        ],
    };
    let have_model = a.model_file.as_deref().is_some_and(|p| p.exists());
    if wanted.contains(&PolicyName::Ai) && a.train.is_none() && !have_model {
        return Err(BadInput(
            "the ai policy needs a model: pass --train DIR (traces of an earlier period)".into(),
        )
        .into());
    }
    let grid = Grid::from_traces(&a.trace, 300_000)
        .map_err(|e| BadInput(format!("reading {}: {e}", a.trace.display())))?;
    let layout = Layout::default_for(&grid, a.nodes as usize);
    let cost = CostModel::default();
    let mut outcomes = Vec::new();
    for p in wanted {
        let o = match p {
            PolicyName::None => simulate::run(&grid, &layout, &mut policy::Stay, &cost),
            PolicyName::Threshold => {
                simulate::run(&grid, &layout, &mut policy::Threshold::default(), &cost)
            }
            PolicyName::Spread => {
                simulate::run(&grid, &layout, &mut policy::Spread::default(), &cost)
            }
            PolicyName::Ai => {
                let predictor = loadshift_brain::model::Predictor::new(simulated_model(&a)?);
                let mut planner = Ai::planner_config();
                planner.relief_pct = a.relief_pct.unwrap_or(planner.relief_pct);
                planner.min_relief_pct = a.min_relief_pct.unwrap_or(planner.min_relief_pct);
                planner.node_cooldown = a.node_cooldown.unwrap_or(planner.node_cooldown);
                planner.workload_cooldown =
                    a.workload_cooldown.unwrap_or(planner.workload_cooldown);
                // The peak window follows the workload cooldown unless given.
                planner.peak_window = a.peak_window.unwrap_or(planner.workload_cooldown);
                let mut ai = Ai::new(predictor, planner, layout.nodes, grid.names.len())?;
                simulate::run(&grid, &layout, &mut ai, &cost)
            }
        };
        outcomes.push(o);
    }
    report::relative_to_none(&mut outcomes);
    if a.json {
        print!("{}", report::json(&outcomes));
    } else {
        print!(
            "{}",
            report::table(&layout, grid.names.len(), grid.times.len(), &outcomes)
        );
    }
    Ok(())
}
