//! `loadshift-webui`: the dashboard.
//!
//! Connects to NATS, declares the streams (so a fresh cluster works whichever
//! service starts first), replays both streams into its own in-memory
//! projection and serves the pages while it keeps following them. It needs
//! nothing of the brain, so it keeps showing the cluster while the brain is
//! down.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::shutdown::Shutdown;
use loadshift_events::{connection, stream, NodeName};
use loadshift_webui::listener::{self, HttpLimits};
use loadshift_webui::projection::{Limits, Projection};
use loadshift_webui::{consume, router, tls, AppState, Settings};

/// Serves loadshift's dashboard: nodes, predictions, migrations, models and the event log.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Address the dashboard listens on.
    #[arg(long, env = "LOADSHIFT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Token an operator types to log in; without one, actions (migrate, retrain) are off.
    #[arg(long, env = "LOADSHIFT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Name this webui signs the events it publishes with.
    #[arg(long, env = "LOADSHIFT_NODE", default_value = "webui")]
    node: NodeName,
    /// Seconds without a message after which a node shows as silent.
    #[arg(long, env = "LOADSHIFT_SILENT_AFTER_SECS", default_value_t = 30)]
    silent_after_secs: u64,
    /// Least milliseconds between two live updates of one page.
    #[arg(long, env = "LOADSHIFT_LIVE_INTERVAL_MS", default_value_t = 1000)]
    live_interval_ms: u64,
    /// EVENTS messages kept for the Events page.
    #[arg(long, env = "LOADSHIFT_EVENTS_KEPT", default_value_t = 10_000)]
    events_kept: usize,
    /// Migrations kept with their details (all-time counts are kept regardless).
    #[arg(long, env = "LOADSHIFT_MIGRATIONS_KEPT", default_value_t = 20_000)]
    migrations_kept: usize,
    /// Connections served at once; at the cap a new one replaces the oldest
    /// that has not sent a request, and /healthz is answered regardless.
    #[arg(long, env = "LOADSHIFT_HTTP_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has to send a request head (also the longest a
    /// kept-alive connection waits for its next request).
    #[arg(long, env = "LOADSHIFT_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a connection may stay without a byte moving either way.
    #[arg(long, env = "LOADSHIFT_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Certificate chain (PEM) to serve HTTPS with; needs --tls-key.
    #[arg(long, env = "LOADSHIFT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "LOADSHIFT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// How long open connections (live pages keep theirs open) may finish
/// after a stop was asked for, before they are cut.
const GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    tls::warn_if_exposed(cli.listen, tls.is_some());
    let client = connection::connect(&cli.nats.options("loadshift-webui"), false)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    stream::declare(&js, &cli.nats.stream_settings())
        .await
        .context("declaring the streams")?;
    let limits = Limits {
        events_kept: cli.events_kept.max(1),
        migrations_kept: cli.migrations_kept.max(1),
        ..Limits::default()
    };
    let settings = Settings {
        silent_after: Duration::from_secs(cli.silent_after_secs),
        live_interval: Duration::from_millis(cli.live_interval_ms),
        node: cli.node.clone(),
        operator_token: cli.operator_token.clone(),
    };
    if settings.operator_token.is_none() {
        tracing::info!("no operator token: the dashboard is read-only");
    }
    let state = AppState::new(Projection::new(limits), settings, Some(js.clone()));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    tracing::info!(listen = %cli.listen, https = tls.is_some(), "dashboard serving");
    let consumer = tokio::spawn(consume::run(js, state.clone(), shutdown.listener()));
    let mut stop = shutdown.listener();
    let http = HttpLimits {
        max_connections: cli.max_connections.max(1),
        header_timeout: Duration::from_secs(cli.header_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(cli.idle_timeout_secs.max(1)),
    };
    let stats = state.http.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let server = listener::serve(listener, router(state), http, stats, acceptor, async move {
        stop.recv().await;
    });
    let mut stop = shutdown.listener();
    let result = tokio::select! {
        r = server => r.context("serving HTTP"),
        r = consumer => match r {
            Ok(r) => r.context("following the streams"),
            Err(e) => Err(anyhow::anyhow!("the stream consumer panicked: {e}")),
        },
        // Live pages never end their responses by themselves.
        _ = async { stop.recv().await; tokio::time::sleep(GRACE).await } => Ok(()),
    };
    drop(stop);
    shutdown
        .trigger()
        .fire(loadshift_events::shutdown::Signal::Terminate);
    if let Err(e) = shutdown.completed_within(GRACE).await {
        tracing::warn!("{e}; exiting anyway");
    }
    result?;
    tracing::info!("webui stopped");
    Ok(())
}
