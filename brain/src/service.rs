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

use crate::consume::{self, ConsumeError, LoopConfig, LoopStats};
use crate::fold::Folder;
use crate::shutdown::Shutdown;
use crate::store::{Opened, Store, StoreError, StoreLock, StreamId};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// the store could not be locked, opened or written
    #[error(transparent)]
    Store(#[from] StoreError),
    /// consuming failed
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

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

/// Runs the service on `store_path` until `shutdown` fires.
///
/// # Errors
/// [`ServiceError`] when the store or the streams fail.
pub async fn run(
    js: &jetstream::Context,
    store_path: &Path,
    cfg: ServiceConfig,
    shutdown: &mut Shutdown,
) -> Result<LoopStats, ServiceError> {
    let lock = StoreLock::acquire_within(store_path, std::time::Duration::from_secs(3))?;
    let (store, opened) = Store::open_or_rebuild(store_path, &lock)?;
    let mut folder = match Folder::load(&store) {
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
            return run_with(js, store, Folder::new(), cfg, shutdown).await;
        }
    };
    if let Opened::Fresh(reason) = &opened {
        tracing::info!(%reason, "folding both streams from sequence 1");
        folder = Folder::new();
    }
    run_with(js, store, folder, cfg, shutdown).await
}

async fn run_with(
    js: &jetstream::Context,
    store: Store,
    mut folder: Folder,
    cfg: ServiceConfig,
    shutdown: &mut Shutdown,
) -> Result<LoopStats, ServiceError> {
    if let Err(e) = folder.snapshot().write(store.path()) {
        tracing::warn!(error = %e, "status snapshot not written");
    }
    tracing::info!(
        store = %store.path().display(),
        telemetry = folder.applied(StreamId::Telemetry),
        events = folder.applied(StreamId::Events),
        "store open; applied sequences"
    );
    let last = consume::last_sequences(js).await?;
    let predictor = crate::live::Live::shared(None);
    let state = folder.model_state();
    crate::training::sync_predictor(&store, state, &predictor);
    let mut live = crate::live::Live::new(predictor.clone());
    let nodes: Vec<String> = folder.snapshot().nodes.keys().cloned().collect();
    live.warm(&store, &nodes)?;
    folder.enable_live(live);
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut planning = crate::planning::Planning::new(
        cfg.planner.clone(),
        cfg.emitter.clone(),
        predictor.clone(),
        out_tx,
    );
    match planning.rebuild(js).await {
        Ok(n) => tracing::info!(events = n, "planner rebuilt from the log"),
        Err(e) => tracing::warn!(error = %e, "planner could not read the log; it starts empty"),
    }
    // Decisions not yet in the log are as good as in flight.
    for env in crate::outbox::pending(&store)? {
        planning.observe(&env);
    }
    folder.enable_planning(planning);
    let publisher = tokio::spawn(crate::planning::publisher(js.clone(), out_rx));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let outbox = tokio::spawn(crate::outbox::run(
        js.clone(),
        store.clone(),
        crate::outbox::OutboxConfig::default(),
        stop_rx.clone(),
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
        stop_rx,
    ));
    let t = consume::durable(
        js,
        StreamId::Telemetry,
        folder.applied(StreamId::Telemetry),
        cfg.batch,
    )
    .await?;
    let e = consume::durable(
        js,
        StreamId::Events,
        folder.applied(StreamId::Events),
        cfg.batch,
    )
    .await?;
    let loop_cfg = LoopConfig {
        batch_max: cfg.batch,
        linger: cfg.linger,
        ack: true,
        write_snapshot: true,
        targets: None,
        progress: false,
    };
    let stats = consume::fold_loop(
        &store,
        &mut folder,
        futures::stream::select(t, e),
        &loop_cfg,
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = trainer.await;
    // Closing the planner's outbox lets the publisher finish what it holds.
    folder.disable_planning();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), publisher).await;
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
