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
use loadshift_events::{connection, stream, NodeName};
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
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
    let consumer = tokio::spawn(consume::run(js, state.clone()));
    let app = router(state);
    let server = async move {
        match tls {
            Some(config) => {
                axum::serve(tls::TlsListener::new(listener, config)?, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        }
    };
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        r = consumer => {
            match r {
                Ok(Err(e)) => return Err(e).context("following the streams"),
                Ok(Ok(())) => {}
                Err(e) => anyhow::bail!("the stream consumer panicked: {e}"),
            }
        }
    }
    tracing::info!("webui stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the webui");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
