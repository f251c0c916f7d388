//! `loadshift`: the operator's command line. Parses the command (every
//! option also a `LOADSHIFT_*` variable), sets up logging, runs it, and
//! turns the outcome into an exit code: 0 ok, 1 failure, 2 bad usage or
//! input (clap's own usage errors exit 2 as well).

use std::process::ExitCode;

use clap::Parser;
use loadshift_cli::cmd::Cli;
use loadshift_cli::error::InputError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, loadshift_cli::cmd::Command::Up(_))
        && std::env::var_os("RUST_LOG").is_none()
    {
        // `up` talks to NATS only to start things: its client's connection
        // chatter is noise between the lines that say where to look.
        std::env::set_var("RUST_LOG", "info,async_nats=warn,loadshift_events=warn");
    }
    cli.command.log().init();
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
