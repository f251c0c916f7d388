//! Command-line conventions every loadshift binary shares: how to reach NATS
//! and how to log. Each option is also read from a `LOADSHIFT_*` variable, so
//! systemd units and containers configure services without flags.

use std::path::PathBuf;

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::connection::NatsOptions;
use crate::stream::StreamSettings;

/// Where NATS is.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL (several may be given, comma separated).
    #[arg(long, env = "LOADSHIFT_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// NATS identity: an nkey seed file (`<state>/auth/operator.nk` from
    /// `loadshift up`) or a `.creds` file. Servers set up by loadshift refuse
    /// connections without one.
    #[arg(long, env = "LOADSHIFT_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) of the NATS servers; given, the connection
    /// requires TLS (the three-server cluster of deploy/ requires it).
    #[arg(long, env = "LOADSHIFT_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Replicas for the streams when this service creates them (3 on the NATS cluster).
    #[arg(long, env = "LOADSHIFT_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// How long the TELEMETRY stream keeps samples, in hours.
    #[arg(long, env = "LOADSHIFT_TELEMETRY_MAX_AGE_HOURS", default_value_t = 168)]
    pub telemetry_max_age_hours: u64,
    /// How many bytes the TELEMETRY stream keeps at most.
    #[arg(long, env = "LOADSHIFT_TELEMETRY_MAX_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub telemetry_max_bytes: i64,
}

impl NatsArgs {
    /// The connection options for a client called `client_name`.
    pub fn options(&self, client_name: &str) -> NatsOptions {
        NatsOptions {
            url: self.nats.clone(),
            credentials: self.nats_creds.clone(),
            client_name: client_name.to_string(),
            ca: self.nats_ca.clone(),
        }
    }

    /// The stream settings these flags describe.
    pub fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            telemetry_max_age: std::time::Duration::from_secs(self.telemetry_max_age_hours * 3600),
            telemetry_max_bytes: self.telemetry_max_bytes,
            replicas: self.stream_replicas.max(1),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging options.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "LOADSHIFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// More log lines on stderr: each -v shows one level more than the
    /// program's default (RUST_LOG, when set, decides instead).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl LogArgs {
    /// Installs the global tracing subscriber for a service: `info` and up
    /// unless `-v` or `RUST_LOG` says otherwise. Logs go to stderr so stdout
    /// stays for a command's output.
    pub fn init(&self) {
        self.init_with(LevelFilter::INFO, &[]);
    }

    /// Installs the global tracing subscriber with `default` as the level
    /// when neither `-v` nor `RUST_LOG` is given; the `quiet` targets (a
    /// library's connection chatter) are then held at `warn`. A command
    /// line tool passes `WARN` here, so that a successful command prints its
    /// answer and nothing else.
    ///
    /// Colours only when stderr is a terminal and `NO_COLOR` is unset or
    /// empty (<https://no-color.org>): escape codes in a log file or a
    /// journal are noise.
    pub fn init_with(&self, default: LevelFilter, quiet: &[&str]) {
        let filter = match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
            _ => EnvFilter::new(default_directives(default, quiet, self.verbose)),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour_allowed(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .with_writer(std::io::stderr);
        // A second init (tests) is not an error worth crashing for.
        let _ = match self.log_format {
            LogFormat::Pretty => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// The filter for `default` raised by `verbose` levels, with the `quiet`
/// targets held at `warn` while not verbose.
fn default_directives(default: LevelFilter, quiet: &[&str], verbose: u8) -> String {
    const LADDER: [LevelFilter; 6] = [
        LevelFilter::OFF,
        LevelFilter::ERROR,
        LevelFilter::WARN,
        LevelFilter::INFO,
        LevelFilter::DEBUG,
        LevelFilter::TRACE,
    ];
    let at = LADDER.iter().position(|l| *l == default).unwrap_or(3);
    let level = LADDER[(at + usize::from(verbose)).min(LADDER.len() - 1)];
    let mut directives = level.to_string().to_lowercase();
    if verbose == 0 {
        for target in quiet {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    directives
}

/// Whether log lines may carry colour: only on a terminal, and never when
/// `NO_COLOR` is set to something non-empty.
fn colour_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_tool_is_quiet_until_asked() {
        assert_eq!(default_directives(LevelFilter::WARN, &[], 0), "warn");
        assert_eq!(default_directives(LevelFilter::WARN, &[], 1), "info");
        assert_eq!(default_directives(LevelFilter::WARN, &[], 2), "debug");
        assert_eq!(default_directives(LevelFilter::WARN, &[], 9), "trace");
        assert_eq!(default_directives(LevelFilter::INFO, &[], 1), "debug");
    }

    #[test]
    fn quiet_targets_speak_again_with_verbose() {
        assert_eq!(
            default_directives(LevelFilter::INFO, &["async_nats"], 0),
            "info,async_nats=warn"
        );
        assert_eq!(
            default_directives(LevelFilter::INFO, &["async_nats"], 1),
            "debug"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
    }
}
