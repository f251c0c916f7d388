//! Command-line conventions every loadshift binary shares: how to reach NATS
//! and how to log. Each option is also read from a `LOADSHIFT_*` variable, so
//! systemd units and containers configure services without flags.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
}

impl LogArgs {
    /// Installs the global tracing subscriber. `RUST_LOG` filters (default
    /// `info`). Logs go to stderr so stdout stays for a command's output.
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        // A second init (tests) is not an error worth crashing for.
        let _ = match self.log_format {
            LogFormat::Pretty => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}
