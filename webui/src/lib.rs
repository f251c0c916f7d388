//! loadshift's dashboard: its own projection of the TELEMETRY and EVENTS
//! streams, rendered on the server.
//!
//! The binary ([`main`](../loadshift_webui/index.html)) wires NATS to the
//! router; everything else lives here so tests and benchmarks render pages
//! from hand-built projections without a server.
//!
//! - [`projection`]: the fold of both streams (bounded), [`series`] its
//!   per-node metrics, [`clock`] each node's clock against the wall's;
//! - [`consume`]: the contract's readers replaying both streams into it;
//! - [`pages`]: one handler, one view and one template per page, and the
//!   JSON API built from the same views;
//! - [`svg`]: charts drawn on the server; [`display`]: how values read;
//! - [`sse`]: live fragments; [`actions`]: operator forms, login, CSRF;
//!   [`metrics`]: Prometheus text; [`listener`]: HTTP with bounds a hostile
//!   client cannot stretch; [`tls`]: HTTPS, and the warning when plain HTTP
//!   is served beyond this machine.

pub mod actions;
pub mod clock;
pub mod consume;
pub mod display;
pub mod listener;
pub mod metrics;
pub mod pages;
pub mod projection;
pub mod series;
pub mod sse;
pub mod svg;
pub mod tls;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use loadshift_events::NodeName;
use tokio::sync::watch;

use crate::projection::{Limits, Projection};

/// Knobs of the running dashboard.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A node whose last message is older than this is shown as silent.
    pub silent_after: Duration,
    /// Live fragments are pushed at most this often per client.
    pub live_interval: Duration,
    /// The node name this webui signs its events with.
    pub node: NodeName,
    /// The operator token; actions are off without one.
    pub operator_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            silent_after: Duration::from_secs(30),
            live_interval: Duration::from_secs(1),
            node: NodeName::new("webui").expect("valid node name"),
            operator_token: None,
        }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The fold; handlers read it, the consumer writes it in batches.
    pub projection: RwLock<Projection>,
    /// The projection's version after each batch, for live views.
    pub changes: watch::Sender<u64>,
    /// Knobs.
    pub settings: Settings,
    /// Operator sessions.
    pub operator: actions::Operator,
    /// Where actions publish; `None` in tests without NATS.
    pub publisher: Option<async_nats::jetstream::Context>,
    /// Rendered live fragments, shared by every client of the same view.
    pub live_cache: sse::Cache,
    /// Open SSE connections.
    pub sse_clients: AtomicU64,
    /// What the HTTP listener did (connections, evictions, timeouts).
    pub http: Arc<listener::HttpStats>,
}

/// The state shared by every handler.
pub type Shared = Arc<AppState>;

impl AppState {
    /// A state around `projection`.
    pub fn new(
        projection: Projection,
        settings: Settings,
        publisher: Option<async_nats::jetstream::Context>,
    ) -> Shared {
        let (changes, _) = watch::channel(projection.version);
        Arc::new(Self {
            operator: actions::Operator::new(settings.operator_token.clone()),
            projection: RwLock::new(projection),
            changes,
            settings,
            publisher,
            live_cache: sse::Cache::default(),
            sse_clients: AtomicU64::new(0),
            http: Arc::default(),
        })
    }

    /// An empty state with default bounds.
    pub fn empty(settings: Settings) -> Shared {
        Self::new(Projection::new(Limits::default()), settings, None)
    }

    /// Reads the projection; a panic in another reader does not make the
    /// dashboard unreadable (the fold itself never panics mid-update).
    pub fn read(&self) -> RwLockReadGuard<'_, Projection> {
        self.projection.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the projection and tells live views.
    pub fn update(&self, f: impl FnOnce(&mut Projection)) {
        let version = {
            let mut p = self.projection.write().unwrap_or_else(|e| e.into_inner());
            f(&mut p);
            p.version
        };
        self.changes.send_replace(version);
    }
}

/// Every route of the dashboard.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(pages::cluster::page))
        .route("/nodes/{name}", get(pages::node::page))
        .route("/migrations", get(pages::migrations::page))
        .route("/model", get(pages::model::page))
        .route("/events", get(pages::events::page))
        .route("/sse/cluster", get(pages::cluster::live))
        .route("/sse/nodes/{name}", get(pages::node::live))
        .route("/sse/migrations", get(pages::migrations::live))
        .route("/sse/model", get(pages::model::live))
        .route("/sse/events", get(pages::events::live))
        .route("/api/cluster", get(pages::cluster::api))
        .route("/api/nodes/{name}", get(pages::node::api))
        .route("/api/migrations", get(pages::migrations::api))
        .route("/api/model", get(pages::model::api))
        .route("/api/events", get(pages::events::api))
        .route("/login", get(actions::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/actions/migrate", post(actions::migrate))
        .route("/actions/stop", post(actions::stop))
        .route("/actions/retrain", post(actions::retrain))
        .route("/actions/drain", post(actions::drain))
        .route("/actions/uncordon", post(actions::uncordon))
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/style.css", get(pages::style))
        .with_state(state)
}
