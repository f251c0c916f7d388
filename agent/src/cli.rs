//! The agent's command line: every option, its `LOADSHIFT_*` variable, and the
//! parsing of values that need more than a type (`--source`, `--speed`,
//! durations), so a bad value is refused by clap with exit code 2 before
//! anything starts.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::NodeName;

const LONG_ABOUT: &str = "\
Samples one node and publishes its telemetry to NATS JetStream on \
`telemetry.<node>`, announcing the node with `node.<node>.joined` at start and \
`node.<node>.left` when it stops. While NATS is unreachable, samples are kept \
in a bounded buffer (oldest dropped, with a warning, when it is full) and sent \
in order once NATS is back.

Sources:
  host           this machine, through sysinfo: CPU (total and per core), load,
                 memory, swap, network and disk throughput, process count, PSI.
  cgroup:PATH    a node simulated by one cgroup on this machine: capacity from
                 its CPU quota and memory limit, usage from its counters. PATH is
                 relative to the cgroup hierarchy root (`loadshift/node2`) or an
                 absolute directory. cgroup v1 and v2 are both read.
  trace:FILE     replays one Bitbrains-format CSV file as node `--node`.
  trace:DIR      replays every *.csv file of DIR, one node per file, named after
                 the file stem (`17`), or `<node>-<stem>` when --node is given.

Examples:
  loadshift-agent --node node2
  loadshift-agent --node node2 --source cgroup:loadshift/node2 --interval 500ms
  loadshift-agent --source trace:traces/2013-7 --node vm --speed 600 --loop
  loadshift-agent --source trace:traces/2013-7 --speed max --limit 1000000

Every option can also be set through the environment variable shown with it.";

/// The agent's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadshift-agent",
    version,
    about = "Samples a node (host, cgroup or recorded trace) and publishes its telemetry to NATS JetStream",
    long_about = LONG_ABOUT
)]
pub struct Args {
    /// Node name (letters, digits, '-', '_'). Required for host, cgroup and a
    /// trace FILE; with a trace DIR it prefixes every node name.
    #[arg(long, env = "LOADSHIFT_NODE")]
    pub node: Option<NodeName>,

    /// Where samples come from: `host`, `cgroup:PATH`, `trace:FILE` or `trace:DIR`.
    #[arg(long, env = "LOADSHIFT_SOURCE", default_value = "host")]
    pub source: SourceSpec,

    /// Time between two samples of a live source (host, cgroup), e.g. `1s`, `500ms`.
    #[arg(long, env = "LOADSHIFT_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Trace replay speed: `N` plays N times faster than recorded (each node
    /// sleeps its trace gap divided by N), `max` does not sleep at all (nodes
    /// interleaved by timestamp, sampling waits for buffer space: nothing dropped).
    #[arg(long, env = "LOADSHIFT_SPEED", default_value = "1")]
    pub speed: Speed,

    /// Replay the trace again when it ends, shifting time forward so it keeps increasing.
    #[arg(long = "loop", env = "LOADSHIFT_LOOP")]
    pub repeat: bool,

    /// Stop after this many samples in total, across all nodes.
    #[arg(long, env = "LOADSHIFT_LIMIT")]
    pub limit: Option<u64>,

    /// How much sampling to keep while NATS is unreachable, as a duration
    /// (converted to a sample count through --interval), e.g. `10m`.
    #[arg(long, env = "LOADSHIFT_BUFFER", default_value = "10m", value_parser = parse_duration)]
    pub buffer: Duration,

    /// Buffer size as a number of events; overrides --buffer.
    #[arg(long, env = "LOADSHIFT_BUFFER_SAMPLES", value_parser = clap::value_parser!(u64).range(1..))]
    pub buffer_samples: Option<u64>,

    /// How many publishes may wait for their JetStream ack at once.
    #[arg(long, env = "LOADSHIFT_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight: u64,

    /// NATS connection and stream options.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where samples come from, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// This machine.
    Host,
    /// One cgroup on this machine (relative to the hierarchy root, or absolute).
    Cgroup(PathBuf),
    /// A trace file or a directory of trace files.
    Trace(PathBuf),
}

impl SourceSpec {
    /// The string announced in `node.joined`, so a reader knows what a node is.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Host => "host".to_string(),
            SourceSpec::Cgroup(p) => format!("cgroup:{}", p.display()),
            SourceSpec::Trace(p) => format!("trace:{}", p.display()),
        }
    }
}

/// Why a `--source` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceSpecError {
    /// The kind before `:` is not one the agent knows.
    #[error("unknown source {0:?}: expected `host`, `cgroup:PATH` or `trace:FILE|DIR`")]
    Unknown(String),
    /// `cgroup:` or `trace:` without a path.
    #[error("source `{0}:` needs a path after the colon")]
    MissingPath(&'static str),
}

impl FromStr for SourceSpec {
    type Err = SourceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "host" {
            return Ok(SourceSpec::Host);
        }
        let path_of = |kind: &'static str, rest: &str| {
            if rest.is_empty() {
                Err(SourceSpecError::MissingPath(kind))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        if let Some(rest) = s.strip_prefix("cgroup:") {
            return path_of("cgroup", rest).map(SourceSpec::Cgroup);
        }
        if let Some(rest) = s.strip_prefix("trace:") {
            return path_of("trace", rest).map(SourceSpec::Trace);
        }
        Err(SourceSpecError::Unknown(s.to_string()))
    }
}

/// How fast a trace is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as NATS takes it.
    Max,
    /// This many times real time (finite, above zero).
    Times(f64),
}

/// Why a `--speed` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid speed {0:?}: expected `max` or a number above 0 (times real time)")]
pub struct SpeedError(String);

impl FromStr for Speed {
    type Err = SpeedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let n: f64 = s
            .trim_end_matches(['x', 'X'])
            .parse()
            .map_err(|_| SpeedError(s.to_string()))?;
        if n.is_finite() && n > 0.0 {
            Ok(Speed::Times(n))
        } else {
            Err(SpeedError(s.to_string()))
        }
    }
}

/// Parses `1s`, `500ms`, `10m` (humantime syntax).
///
/// # Errors
/// A message clap prints as is.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); examples: 1s, 500ms, 10m"))
}

/// A duration that must be above zero: a zero interval would spin.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the interval must be above zero".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn sources_parse() {
        assert_eq!("host".parse(), Ok(SourceSpec::Host));
        assert_eq!(
            "cgroup:loadshift/node2".parse(),
            Ok(SourceSpec::Cgroup("loadshift/node2".into()))
        );
        assert_eq!(
            "trace:/tmp/t.csv".parse(),
            Ok(SourceSpec::Trace("/tmp/t.csv".into()))
        );
    }

    #[test]
    fn bad_sources_are_refused_with_a_reason() {
        assert_eq!(
            "hots".parse::<SourceSpec>(),
            Err(SourceSpecError::Unknown("hots".into()))
        );
        assert_eq!(
            "cgroup:".parse::<SourceSpec>(),
            Err(SourceSpecError::MissingPath("cgroup"))
        );
        assert_eq!(
            "trace:".parse::<SourceSpec>(),
            Err(SourceSpecError::MissingPath("trace"))
        );
        assert!(matches!(
            "file:/x".parse::<SourceSpec>(),
            Err(SourceSpecError::Unknown(_))
        ));
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("10".parse(), Ok(Speed::Times(10.0)));
        assert_eq!("2.5x".parse(), Ok(Speed::Times(2.5)));
        for bad in ["0", "-1", "fast", "inf", "NaN", ""] {
            assert!(bad.parse::<Speed>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cli_refuses_bad_values() {
        let parse = |args: &[&str]| Args::try_parse_from([&["loadshift-agent"], args].concat());
        assert!(parse(&["--node", "n1"]).is_ok());
        assert!(parse(&["--node", "a.b"]).is_err());
        assert!(parse(&["--source", "nope"]).is_err());
        assert!(parse(&["--interval", "0s"]).is_err());
        assert!(parse(&["--interval", "soon"]).is_err());
        assert!(parse(&["--speed", "0"]).is_err());
        let a = parse(&["--interval", "250ms", "--buffer", "1m"]).unwrap();
        assert_eq!(a.interval, Duration::from_millis(250));
        assert_eq!(a.buffer, Duration::from_secs(60));
    }
}
