//! `loadshift-executor`: one per worker node; it will run workloads and drive
//! its half of each migration with CRIU or Docker.
//!
//! For now it does what every service does first and nothing it cannot yet do
//! for real: it connects to NATS, declares the streams (so a fresh cluster is
//! usable whichever service starts first), and stays connected until told to
//! stop. Checkpoint/restore arrives with the migration saga.

use anyhow::Context;
use clap::Parser;
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::{connection, stream, NodeName};

/// Runs workloads on one worker node and moves them with CRIU checkpoint/restore.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node this executor acts for (letters, digits, '-' and '_').
    #[arg(long, env = "LOADSHIFT_NODE")]
    node: NodeName,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    let client = connection::connect(
        &cli.nats
            .options(&format!("loadshift-executor-{}", cli.node)),
        false,
    )
    .await
    .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    stream::declare(&js, &cli.nats.stream_settings())
        .await
        .context("declaring the streams")?;
    tracing::info!(node = %cli.node, "executor connected; streams declared; waiting for SIGINT/SIGTERM");
    shutdown_signal().await;
    tracing::info!("executor stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this executor");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
