//! `loadshift-brain run`: the service. It keeps the store folded up to the
//! head of both streams until it is told to stop.
//!
//! Start-up order matters: lock the store path (one brain per store), open or
//! rebuild the store, read its applied sequences, and only then create the
//! durable consumers positioned right after them, so a `kill -9` at any
//! moment neither loses nor double-applies an event.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use loadshift_events::shutdown::Shutdown;

use crate::consume::{self, FoldError, LoopConfig, LoopStats, Watchers};
use crate::fold::Fold;
use crate::planner_service::{self, PlannerService};
use crate::status::Snapshot;
use crate::store::{Opened, Store, StoreLock, StreamId};

/// Tuning of the service loop and its trainer.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Most messages per batch.
    pub batch: usize,
    /// How long a batch waits for more messages once it has one.
    pub linger: Duration,
    /// How models are trained.
    pub train: crate::model::TrainConfig,
    /// Request a retraining this often (`None`: only when asked).
    pub retrain_every: Option<Duration>,
    /// The name the brain publishes its events under.
    pub emitter: loadshift_events::NodeName,
    /// How migrations are planned.
    pub planner: crate::planner::PlannerConfig,
    /// Traces to train the first model from when none was ever trained.
    pub bootstrap_trace: Option<std::path::PathBuf>,
}

/// Runs the service on `store_path` until `shutdown` fires; every task it
/// starts holds one of `shutdown`'s listeners and has finished when this
/// returns.
///
/// # Errors
/// [`FoldError`] when the store or the streams fail.
pub async fn run(
    js: &jetstream::Context,
    store_path: &Path,
    cfg: ServiceConfig,
    shutdown: &Shutdown,
) -> Result<LoopStats, FoldError> {
    let lock = StoreLock::acquire_within(store_path, std::time::Duration::from_secs(3))?;
    let (store, opened) = Store::open_or_rebuild(store_path, &lock)?;
    let mut fold = match Fold::load(&store) {
        Ok(f) => f,
        Err(e) => {
            // Unreadable records are corruption like any other: rebuild.
            drop(store);
            tracing::warn!(
                "store at {} is corrupt ({e}); rebuilding it from the log",
                store_path.display()
            );
            crate::store::remove_dir(store_path)?;
            let (store, _) = Store::open_or_rebuild(store_path, &lock)?;
            return run_with(js, store, Fold::new(), cfg, shutdown).await;
        }
    };
    if let Opened::Fresh(reason) = &opened {
        tracing::info!(%reason, "folding both streams from sequence 1");
        fold = Fold::new();
    }
    run_with(js, store, fold, cfg, shutdown).await
}

async fn run_with(
    js: &jetstream::Context,
    store: Store,
    mut fold: Fold,
    cfg: ServiceConfig,
    shutdown: &Shutdown,
) -> Result<LoopStats, FoldError> {
    if let Err(e) = Snapshot::from(&fold).write(store.path()) {
        tracing::warn!(error = %e, "status snapshot not written");
    }
    tracing::info!(
        store = %store.path().display(),
        telemetry = fold.applied(StreamId::Telemetry),
        events = fold.applied(StreamId::Events),
        "store open; applied sequences"
    );
    let last = consume::last_sequences(js).await?;
    let predictor = crate::live::Live::shared(None);
    crate::training::sync_predictor(&store, fold.model_state(), &predictor);
    let mut live = crate::live::Live::new(predictor.clone());
    let nodes: Vec<String> = Snapshot::from(&fold).nodes.keys().cloned().collect();
    live.warm(&store, &nodes)?;
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut planner = PlannerService::new(
        cfg.planner.clone(),
        cfg.emitter.clone(),
        predictor.clone(),
        out_tx,
    );
    let mut stop = shutdown.listener();
    tokio::select! {
        _ = stop.recv() => return Ok(LoopStats::default()),
        r = planner.rebuild(js) => match r {
            Ok(n) => tracing::info!(events = n, "planner rebuilt from the log"),
            Err(e) => tracing::warn!(error = %e, "planner could not read the log; it starts empty"),
        },
    }
    // Decisions not yet in the log are as good as in flight.
    for env in crate::outbox::pending(&store)? {
        planner.observe(&env);
    }
    let mut watchers = Watchers {
        live: Some(live),
        planner: Some(planner),
    };
    let publisher = tokio::spawn(planner_service::publisher(js.clone(), out_rx));
    let outbox = tokio::spawn(crate::outbox::run(
        js.clone(),
        store.clone(),
        crate::outbox::OutboxConfig::default(),
        shutdown.listener(),
    ));
    let trainer = tokio::spawn(crate::training::run_trainer(
        js.clone(),
        store.clone(),
        crate::training::TrainerConfig {
            train: cfg.train,
            retrain_every: cfg.retrain_every,
            emitter: cfg.emitter.clone(),
            caught_up_at: last[StreamId::Events.index()],
            bootstrap_trace: cfg.bootstrap_trace.clone(),
        },
        predictor,
        shutdown.listener(),
    ));
    let stats = fold_both(js, &store, &mut fold, &mut watchers, &cfg, &mut stop).await;
    // The loop may have stopped on an error: the trainer stops too.
    shutdown
        .trigger()
        .fire(loadshift_events::shutdown::Signal::Terminate);
    let _ = trainer.await;
    // Closing the planner's channel lets the publisher finish what it holds.
    drop(watchers);
    let _ = publisher.await;
    // What the outbox cannot publish in a moment stays for the next start.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), outbox).await;
    let stats = stats?;
    store.flush()?;
    tracing::info!(
        events = stats.events,
        parked = stats.parked,
        batches = stats.batches,
        "stopped; store flushed"
    );
    Ok(stats)
}

/// Folds both streams with durable readers from the fold's applied
/// sequences until `stop` fires.
async fn fold_both(
    js: &jetstream::Context,
    store: &Store,
    fold: &mut Fold,
    watchers: &mut Watchers,
    cfg: &ServiceConfig,
    stop: &mut loadshift_events::shutdown::Listener,
) -> Result<LoopStats, FoldError> {
    let mut readers = Vec::with_capacity(StreamId::ALL.len());
    for s in StreamId::ALL {
        readers.push(consume::durable(js, s, fold.applied(s), cfg.batch).await?);
    }
    let loop_cfg = LoopConfig {
        batch_max: cfg.batch,
        linger: cfg.linger,
        ack: true,
        write_snapshot: true,
        targets: None,
        progress: false,
    };
    consume::fold_loop(
        store,
        fold,
        watchers,
        futures::stream::select_all(readers),
        &loop_cfg,
        stop,
    )
    .await
}
