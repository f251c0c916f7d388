//! `loadshift-agent`: the command-line edge. Parses arguments, sorts input
//! errors (exit 2) from runtime failures (exit 1), and hands over to the
//! library, where everything testable lives.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadshift_agent::{shutdown, Args, Plan};

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let plan = match Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(plan: Plan) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stopping = shutdown::AgentShutdown::new();
        stopping
            .on_signals()
            .context("cannot install signal handlers")?;
        let result = loadshift_agent::run(plan, &stopping).await;
        // The sampler ends with the run; a task that does not is reported.
        if let Err(e) = stopping
            .completed_within(loadshift_agent::agent::FLUSH_BOUND)
            .await
        {
            tracing::warn!("{e}");
        }
        result.context("agent run failed")?;
        Ok(())
    })
}
