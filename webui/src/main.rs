//! `loadshift-webui`: the dashboard, a projection of the streams rendered on
//! the server.
//!
//! For now it does what every service does first and nothing it cannot yet do
//! for real: it connects to NATS, declares the streams (so a fresh cluster is
//! usable whichever service starts first), and stays connected until told to
//! stop. The pages arrive with the dashboard.

use anyhow::Context;
use clap::Parser;
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::{connection, stream};

/// Serves loadshift's dashboard: nodes, predictions, migrations, models and the event log.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Address the dashboard will listen on.
    #[arg(long, env = "LOADSHIFT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    let client = connection::connect(&cli.nats.options("loadshift-webui"), false)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    stream::declare(&js, &cli.nats.stream_settings())
        .await
        .context("declaring the streams")?;
    tracing::info!(listen = %cli.listen, "webui connected; streams declared; waiting for SIGINT/SIGTERM");
    shutdown_signal().await;
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
