//! `loadshift`: the operator's command line. Parses the command (every
//! option also a `LOADSHIFT_*` variable), sets up logging (stderr, `warn`
//! unless `-v`, colour only on a terminal without `NO_COLOR`), runs it, and
//! turns the outcome into an exit code: 0 ok, 1 failure, 2 bad usage or
//! input (clap's own usage errors exit 2 as well).

use std::process::ExitCode;

use clap::Parser;
use loadshift_cli::cmd::{Cli, Command};
use loadshift_cli::error::InputError;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (level, quiet): (LevelFilter, &[&str]) = match cli.command {
        // `up` narrates what it starts at info; its NATS client's connection
        // chatter is noise between the lines that say where to look.
        Command::Up(_) => (LevelFilter::INFO, &["async_nats", "loadshift_events"]),
        // Every other command prints its answer on stdout and nothing else
        // on stderr unless something is wrong (or -v asks for more).
        _ => (LevelFilter::WARN, &[]),
    };
    cli.command.log().init_with(level, quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.is::<InputError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
