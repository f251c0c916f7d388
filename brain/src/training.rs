//! Training from the store, storing models, and the service's trainer.
//!
//! Exactly-once without extra bookkeeping: the fold records the EVENTS
//! sequence of the latest `model.train_requested` and, when it folds a
//! `model.trained`, marks every request before it as answered
//! ([`ModelState`]). Both sit in the fold's own atomic batch, so they are as
//! durable as the fold. The trainer trains when the folded state shows an
//! unanswered request, and only once the fold has caught up with what the
//! EVENTS stream held at start (so a `model.trained` published just before a
//! crash is seen before deciding). A crash before `model.trained` is
//! published leaves the request unanswered and it is trained again; a crash
//! after it does not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use loadshift_events::model::{Activated, TrainRequested, Trained};
use loadshift_events::{Envelope, Event, NodeName};
use serde::{Deserialize, Serialize};

use crate::model::dataset::{Dataset, Split};
use crate::model::{self, Evaluation, Model, Predictor, SharedPredictor, TrainConfig};
use crate::store::{prefix, Store, StoreError, StreamId};

/// Share of the store's time span trained on; the rest is held back.
pub const TRAIN_SHARE: f64 = 0.7;

/// The model state the fold keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelState {
    /// EVENTS sequence of the latest `model.train_requested`.
    pub requested: u64,
    /// The latest request a `model.trained` followed.
    pub answered: u64,
    /// The highest version trained.
    pub latest_version: u64,
    /// The active version (0: none).
    pub active: u64,
}

impl ModelState {
    /// Its key.
    pub fn key() -> Vec<u8> {
        let mut k = vec![prefix::MODEL];
        k.extend_from_slice(b"state");
        k
    }

    /// A request at `seq` was folded.
    pub fn requested(&mut self, seq: u64) {
        self.requested = self.requested.max(seq);
    }

    /// A `model.trained` was folded.
    pub fn trained(&mut self, version: u64) {
        self.answered = self.requested;
        self.latest_version = self.latest_version.max(version);
    }

    /// A `model.activated` was folded.
    pub fn activated(&mut self, version: u64) {
        self.active = version;
    }

    /// Whether a request waits for a model.
    pub fn pending(&self) -> bool {
        self.requested > self.answered
    }

    /// As stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads it from the store (default when absent).
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be read or decoded.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        match store.db().get(Self::key()) {
            Ok(None) => Ok(Self::default()),
            Ok(Some(v)) => serde_json::from_slice(&v).map_err(|e| StoreError::BadRecord {
                key: "Mstate".into(),
                reason: e.to_string(),
            }),
            Err(source) => Err(StoreError::Sled {
                path: store.path().to_path_buf(),
                source,
            }),
        }
    }
}

fn model_key(version: u64) -> Vec<u8> {
    let mut k = vec![prefix::MODEL];
    k.extend_from_slice(b"model\0");
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Why training from the store failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// training failed
    #[error(transparent)]
    Train(#[from] model::TrainError),
    /// a model record does not decode
    #[error("model {version}: {reason}")]
    BadModel {
        /// Its version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// the reference traces for the first model could not be read
    #[error("bootstrap traces: {0}")]
    Bootstrap(String),
}

/// Stores `m` under its version and flushes.
///
/// # Errors
/// [`TrainingError`] when it cannot be written.
pub fn store_model(store: &Store, m: &Model) -> Result<(), TrainingError> {
    let json = serde_json::to_vec(m).map_err(|e| TrainingError::BadModel {
        version: m.version,
        reason: e.to_string(),
    })?;
    store
        .db()
        .insert(model_key(m.version), json)
        .map_err(|source| StoreError::Sled {
            path: store.path().to_path_buf(),
            source,
        })?;
    store.flush()?;
    Ok(())
}

/// The model stored under `version`, if any.
///
/// # Errors
/// [`TrainingError`] when it cannot be read or decoded.
pub fn load_model(store: &Store, version: u64) -> Result<Option<Model>, TrainingError> {
    let v = store
        .db()
        .get(model_key(version))
        .map_err(|source| StoreError::Sled {
            path: store.path().to_path_buf(),
            source,
        })?;
    v.map(|v| {
        serde_json::from_slice(&v).map_err(|e| TrainingError::BadModel {
            version,
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// The highest version stored.
///
/// # Errors
/// [`TrainingError`] when the store cannot be read.
pub fn latest_stored_version(store: &Store) -> Result<u64, TrainingError> {
    let mut lo = vec![prefix::MODEL];
    lo.extend_from_slice(b"model\0");
    let last = store
        .db()
        .scan_prefix(&lo)
        .keys()
        .last()
        .transpose()
        .map_err(|source| StoreError::Sled {
            path: store.path().to_path_buf(),
            source,
        })?;
    Ok(last
        .and_then(|k| <[u8; 8]>::try_from(&k[k.len().saturating_sub(8)..]).ok())
        .map_or(0, u64::from_be_bytes))
}

/// What one training produced: the model (stored), and the events to publish.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The model.
    pub model: Model,
    /// Its scores on the held-back rows.
    pub eval: Evaluation,
    /// `model.trained`.
    pub trained: Trained,
    /// `model.activated`, when it beat the active model (or the baseline).
    pub activated: Option<Activated>,
}

/// Trains a new version from everything the store holds, scores it (and the
/// active model, if any) on the held-back latest 30 % of time, and stores it.
///
/// # Errors
/// [`TrainingError`] when the store cannot be read or training fails.
pub fn train_from_store(
    store: &Store,
    cfg: &TrainConfig,
    state: &ModelState,
) -> Result<Outcome, TrainingError> {
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for item in store.scan(prefix::NODE) {
        let (k, _) = item?;
        nodes.push(String::from_utf8_lossy(&k[1..]).into_owned());
    }
    let mut ds = Dataset::default();
    for node in &nodes {
        let points = store.samples(node, i64::MIN, i64::MAX)?;
        ds.add_node(
            node,
            points.iter().map(|(seq, p)| (*seq, &p.sample)),
            &cfg.labels,
        );
    }
    train_dataset(store, &ds, cfg, state, t0, false)
}

/// Trains the first model from a folder of Bitbrains-format traces, scored
/// and stored exactly as one trained from the store.
///
/// # Errors
/// [`TrainingError`] when the traces cannot be read or training fails.
pub fn train_from_trace(
    store: &Store,
    dir: &std::path::Path,
    cfg: &TrainConfig,
    state: &ModelState,
) -> Result<Outcome, TrainingError> {
    let t0 = Instant::now();
    let ds = crate::evaluate::load_dataset(dir, &cfg.labels)
        .map_err(|e| TrainingError::Bootstrap(e.to_string()))?;
    train_dataset(store, &ds, cfg, state, t0, true)
}

/// Trains, scores and stores a model from `ds`: every choice (cut-offs,
/// hyper-parameters, model-or-rule per label) is made on later rows of the
/// training share ([`crate::model::selection`]); the latest 30 % of time is
/// held back and only scored.
///
/// The first model (none active) is always activated: each of its labels
/// already falls back to the static rule when the forest lost on the
/// validation rows, so planning with it is never worse, on those rows, than
/// the rule it is compared with, and a brain without a predictor would not
/// plan at all. A later model replaces the active one only when it beats it
/// on the same held-back rows (`bootstrap` no longer changes that rule; it
/// only names where the rows came from).
fn train_dataset(
    store: &Store,
    ds: &Dataset,
    cfg: &TrainConfig,
    state: &ModelState,
    t0: Instant,
    bootstrap: bool,
) -> Result<Outcome, TrainingError> {
    let (tr, te) = ds.split(Split::Global(TRAIN_SHARE), cfg.labels.horizon);
    let train_rows: Vec<_> = tr.iter().map(|&i| &ds.rows[i]).collect();
    let test_rows: Vec<_> = te.iter().map(|&i| &ds.rows[i]).collect();
    let version = state
        .latest_version
        .max(latest_stored_version(store)?)
        .saturating_add(1);
    let grid = model::baseline_grid();
    let (m, eval, _) = model::train_and_evaluate(&train_rows, &test_rows, cfg, version, &grid)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    // The baseline's threshold is chosen where the model's cut-off is: on
    // the validation rows (later training rows), or, without enough history
    // for those, on the training rows. Never on the held-back rows.
    let (onset_pct, sustained_pct) = match &m.selection {
        Some(sel) => (sel.onset.rule_pct, sel.sustained.rule_pct),
        None => {
            let on_train = model::evaluate(&m, &train_rows, &grid);
            (
                on_train.onset.best_static().0,
                on_train.sustained.best_static().0,
            )
        }
    };
    // Compare with the active model on the same rows, or with the baseline.
    let active = if state.active > 0 {
        load_model(store, state.active)?.filter(Model::matches_features)
    } else {
        None
    };
    let source = if bootstrap {
        "reference traces"
    } else {
        "this cluster's history"
    };
    let win = match &active {
        Some(a) => {
            let e = model::evaluate(a, &test_rows, &grid);
            model::beats(&eval, e.onset.planner.f1, e.sustained.planner.f1).then(|| {
                format!(
                    "onset F1 {:.3} > {:.3} and sustained F1 {:.3} vs {:.3} of active model {}, on {} held-back samples of {source}",
                    eval.onset.planner.f1,
                    e.onset.planner.f1,
                    eval.sustained.planner.f1,
                    e.sustained.planner.f1,
                    a.version,
                    eval.sustained.samples
                )
            })
        }
        None => Some(format!(
            "first model, from {source}: onset uses the {}, sustained the {} (chosen on {} later validation samples); on {} held-back samples onset F1 {:.3} vs {:.3} and sustained F1 {:.3} vs {:.3} of static thresholds {onset_pct}%/{sustained_pct}%",
            uses(&m.onset),
            uses(&m.sustained),
            m.selection.as_ref().map_or(0, |s| s.onset.samples),
            eval.sustained.samples,
            eval.onset.planner.f1,
            eval.onset.static_at(onset_pct).f1,
            eval.sustained.planner.f1,
            eval.sustained.static_at(sustained_pct).f1,
        )),
    };
    let telemetry: Vec<u64> = train_rows
        .iter()
        .map(|r| r.seq)
        .filter(|s| crate::store::tagged_seq(StreamId::Telemetry, *s) == *s && *s < 1 << 63)
        .collect();
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH)
    };
    let trained = Trained {
        version,
        telemetry_range: (
            telemetry.iter().copied().min().unwrap_or(0),
            telemetry.iter().copied().max().unwrap_or(0),
        ),
        time_range: (
            time(train_rows.iter().map(|r| r.at_ms).min()),
            time(train_rows.iter().map(|r| r.at_ms).max()),
        ),
        features: m.features.clone(),
        hyper_parameters: cfg.named(),
        onset: eval.onset.to_event_with(
            onset_pct,
            &m.onset,
            m.selection.as_ref().map(|s| &s.onset),
        ),
        sustained: eval.sustained.to_event_with(
            sustained_pct,
            &m.sustained,
            m.selection.as_ref().map(|s| &s.sustained),
        ),
        importances: m.named_importances(),
        train_rows: m.bag_rows,
        train_seconds,
    };
    let activated = win.map(|reason| Activated {
        version,
        replaces: active.as_ref().map(|a| a.version),
        reason,
    });
    store_model(store, &m)?;
    Ok(Outcome {
        model: m,
        eval,
        trained,
        activated,
    })
}

/// Which predictor a label uses, in words.
fn uses(c: &model::Classifier) -> String {
    match c.rule_pct {
        Some(pct) => format!("static rule cpu >= {pct}% (the model lost on validation)"),
        None => format!("model (p >= {:.3})", c.cutoff),
    }
}

/// Publishes an outcome's events (`model.trained`, then `model.activated`).
///
/// # Errors
/// [`loadshift_events::connection::NatsError`] when NATS does not store one.
pub async fn publish(
    js: &jetstream::Context,
    emitter: &NodeName,
    o: &Outcome,
) -> Result<(), loadshift_events::connection::NatsError> {
    let trained = Envelope::new(emitter.clone(), Event::ModelTrained(o.trained.clone()));
    loadshift_events::connection::publish(js, &trained).await?;
    if let Some(a) = &o.activated {
        let env = Envelope::new(emitter.clone(), Event::ModelActivated(a.clone()));
        loadshift_events::connection::publish(js, &env).await?;
    }
    Ok(())
}

/// The trainer's schedule and identity.
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// Training options.
    pub train: TrainConfig,
    /// Ask for a retraining this often (`None`: never).
    pub retrain_every: Option<Duration>,
    /// The name the brain publishes under.
    pub emitter: NodeName,
    /// The EVENTS sequence the fold must reach before acting.
    pub caught_up_at: u64,
    /// Traces to train the first model from when none was ever trained.
    pub bootstrap_trace: Option<std::path::PathBuf>,
}

/// Runs `train` on a plain thread and waits for it, unless a shutdown
/// comes first (`None`). Not spawn_blocking: a shutdown must not wait for a
/// training in progress (the request stays unanswered and is trained again
/// after the restart). `Err` when the thread died.
async fn off_thread<T: Send + 'static>(
    stop: &mut loadshift_events::shutdown::Listener,
    train: impl FnOnce() -> T + Send + 'static,
) -> Option<Result<T, tokio::sync::oneshot::error::RecvError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(train());
    });
    tokio::select! {
        _ = stop.recv() => None,
        r = rx => Some(r),
    }
}

// Long on purpose: the trainer's one loop, with its three triggers (the
// bootstrap, a request, the schedule) side by side.
/// The service's trainer: polls the committed model state, trains in a
/// thread of its own when a request is unanswered, publishes, and swaps the
/// active model into `predictor`. Returns when `stop` fires.
pub async fn run_trainer(
    js: jetstream::Context,
    store: Store,
    cfg: TrainerConfig,
    predictor: SharedPredictor,
    mut stop: loadshift_events::shutdown::Listener,
) {
    let cfg = Arc::new(cfg);
    let mut served = 0u64;
    let mut bootstrapped = false;
    let mut next_schedule = cfg.retrain_every.map(|d| Instant::now() + d);
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let state = match ModelState::load(&store) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "model state unreadable");
                continue;
            }
        };
        sync_predictor(&store, &state, &predictor);
        if next_schedule.is_some_and(|t| Instant::now() >= t) {
            next_schedule = cfg.retrain_every.map(|d| Instant::now() + d);
            let env = Envelope::new(
                cfg.emitter.clone(),
                Event::ModelTrainRequested(TrainRequested {
                    requested_by: "schedule".into(),
                    reason: Some("--retrain-every".into()),
                }),
            );
            if let Err(e) = loadshift_events::connection::publish(&js, &env).await {
                tracing::warn!(error = %e, "scheduled training request not published");
            }
        }
        let caught_up = store.applied(StreamId::Events).unwrap_or(0) >= cfg.caught_up_at;
        if caught_up && !bootstrapped && state.latest_version == 0 && state.active == 0 {
            if let Some(dir) = cfg.bootstrap_trace.clone() {
                bootstrapped = true;
                tracing::info!(traces = %dir.display(), "no model yet: training the first one from reference traces");
                let (st, c) = (store.clone(), cfg.clone());
                let train = move || train_from_trace(&st, &dir, &c.train, &state);
                let Some(outcome) = off_thread(&mut stop, train).await else {
                    return;
                };
                match outcome {
                    Ok(Ok(o)) => {
                        if let Err(e) = publish(&js, &cfg.emitter, &o).await {
                            tracing::warn!(error = %e, "bootstrap model events not published");
                        } else if o.activated.is_some() {
                            tracing::info!(version = o.model.version, "bootstrap model active");
                            if let Ok(mut g) = predictor.write() {
                                *g = Some(Predictor::new(o.model));
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "bootstrap training failed"),
                    Err(_) => tracing::warn!("the bootstrap training thread died"),
                }
                continue;
            }
        }
        if !caught_up || !state.pending() || state.requested <= served {
            continue;
        }
        let request = state.requested;
        tracing::info!(request, "training a model");
        let (st, c) = (store.clone(), cfg.clone());
        let train = move || train_from_store(&st, &c.train, &state);
        let Some(outcome) = off_thread(&mut stop, train).await else {
            return;
        };
        match outcome {
            Ok(Ok(o)) => {
                if let Err(e) = publish(&js, &cfg.emitter, &o).await {
                    tracing::warn!(error = %e, "model events not published; will train again");
                    continue;
                }
                served = request;
                tracing::info!(
                    version = o.model.version,
                    onset_f1 = o.eval.onset.model.f1,
                    sustained_f1 = o.eval.sustained.model.f1,
                    activated = o.activated.is_some(),
                    "model trained"
                );
                if o.activated.is_some() {
                    if let Ok(mut g) = predictor.write() {
                        *g = Some(Predictor::new(o.model));
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, request, "training failed; waiting for the next request");
                served = request;
            }
            Err(_) => tracing::warn!("the training thread died"),
        }
    }
}

/// Loads the folded active version into `predictor` when it differs.
pub fn sync_predictor(store: &Store, state: &ModelState, predictor: &SharedPredictor) {
    let current = predictor
        .read()
        .ok()
        .and_then(|g| g.as_ref().map(|p| p.version));
    if state.active == 0 || current == Some(state.active) {
        return;
    }
    match load_model(store, state.active) {
        Ok(Some(m)) if m.matches_features() => {
            if let Ok(mut g) = predictor.write() {
                tracing::info!(version = m.version, "predicting with model");
                *g = Some(Predictor::new(m));
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "active model unreadable"),
    }
}
