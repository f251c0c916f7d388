//! One agent run, start to finish: announce the nodes, sample into the
//! buffer while the publisher drains it, and on the way out flush what can be
//! flushed and say goodbye with `node.left`.
//!
//! [`Plan`] is everything decided from the command line before any task
//! starts, so that every input error (a bad source, a missing trace file, an
//! unnamed node) is found up front and reported as a usage error (exit 2).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use loadshift_events::connection::{self, NatsError, NatsOptions};
use loadshift_events::payload::{NodeJoined, NodeLeft};
use loadshift_events::stream::StreamSettings;
use loadshift_events::{Envelope, Event, NodeName};
use tokio::time::Instant;

use crate::buffer::Buffer;
use crate::cli::{Args, SourceSpec, Speed};
use crate::publisher::{Publisher, PublisherError};
use crate::sampler::{self, SamplerOutcome};
use crate::shutdown::{AgentShutdown, StopReason};
use crate::source::cgroup::{self, CgroupError, CgroupSource};
use crate::source::host::HostSource;
use crate::source::trace::{self, NodeTrace, TraceError};
use crate::source::{Capacity, LiveSource};

/// How long a stop asked by a signal may spend flushing; and, for any other
/// stop, how long the flush may go without a single ack before giving up.
pub const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// How long `node.left` waits for buffer space before it pushes out the
/// oldest unsent sample instead.
const LEFT_WAIT: Duration = Duration::from_secs(1);

/// How often a trace replay reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long JetStream requests and publish acks may take before the
/// publisher assumes the server is gone and retries.
const NATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest buffer a trace replay gets unless `--buffer-samples` says
/// otherwise: a full publish window with as much again queued behind it, twice.
const TRACE_MIN_BUFFER_WINDOWS: usize = 4;

/// Why the command line does not describe a run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A source that names one node was given no node name.
    #[error("--node is required with --source {0}")]
    NodeRequired(String),
    /// The trace cannot be loaded.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The cgroup cannot be read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The trace holds no usable row at all.
    #[error("trace {0} holds no usable row")]
    EmptyTrace(String),
}

/// Why a run failed after it started (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS options are unusable (e.g. an unreadable credentials file).
    #[error(transparent)]
    Connect(#[from] NatsError),
    /// The publisher gave up.
    #[error(transparent)]
    Publisher(#[from] PublisherError),
    /// The publisher task panicked.
    #[error("the publisher task failed: {0}")]
    PublisherTask(String),
    /// The sampler task panicked.
    #[error("the sampler task failed: {0}")]
    SamplerTask(String),
    /// Events were still unacknowledged when the flush gave up.
    #[error("{remaining} events were not published before exiting (NATS unreachable?)")]
    Unflushed {
        /// Events left in the buffer.
        remaining: usize,
    },
}

/// The source, opened.
pub enum PlannedSource {
    /// A host or cgroup, sampled every interval.
    Live(Box<dyn LiveSource>),
    /// Traces to replay.
    Trace(Vec<NodeTrace>),
}

impl std::fmt::Debug for PlannedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlannedSource::Live(_) => f.write_str("Live"),
            PlannedSource::Trace(t) => write!(f, "Trace({} nodes)", t.len()),
        }
    }
}

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct Plan {
    /// The opened source.
    pub source: PlannedSource,
    /// The nodes and what each announces.
    pub nodes: Vec<(NodeName, Capacity)>,
    /// The `source` string of `node.joined`.
    pub source_description: String,
    /// Live sampling interval.
    pub interval: Duration,
    /// Trace replay speed.
    pub speed: Speed,
    /// Loop the trace.
    pub repeat: bool,
    /// Total sample limit.
    pub limit: Option<u64>,
    /// Buffer bound, in events.
    pub buffer_capacity: usize,
    /// Publishes in flight at most.
    pub window: usize,
    /// Where NATS is.
    pub nats: NatsOptions,
    /// How the streams are declared.
    pub streams: StreamSettings,
}

impl Plan {
    /// Opens the source the command line names and sizes the buffer.
    ///
    /// # Errors
    /// [`PlanError`]: every one of them is the operator's input to fix.
    pub fn from_args(args: &Args) -> Result<Self, PlanError> {
        let need_node = || {
            args.node
                .clone()
                .ok_or_else(|| PlanError::NodeRequired(args.source.describe()))
        };
        let (source, nodes) = match &args.source {
            SourceSpec::Host => {
                let node = need_node()?;
                let s = HostSource::new();
                let cap = s.capacity();
                (PlannedSource::Live(Box::new(s)), vec![(node, cap)])
            }
            SourceSpec::Cgroup(path) => {
                let node = need_node()?;
                let s = CgroupSource::open(Path::new(cgroup::DEFAULT_ROOT), path)?;
                let cap = s.capacity();
                (PlannedSource::Live(Box::new(s)), vec![(node, cap)])
            }
            SourceSpec::Trace(path) => {
                if path.is_file() && args.node.is_none() {
                    return Err(PlanError::NodeRequired(args.source.describe()));
                }
                let traces = trace::load(path, args.node.as_ref())?;
                if traces.is_empty() {
                    return Err(PlanError::EmptyTrace(path.display().to_string()));
                }
                let nodes = traces
                    .iter()
                    .map(|t| (t.node.clone(), t.capacity()))
                    .collect();
                (PlannedSource::Trace(traces), nodes)
            }
        };
        let max_in_flight = usize::try_from(args.max_in_flight).unwrap_or(usize::MAX);
        let buffer_capacity = match args.buffer_samples {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => {
                let per_interval = args.buffer.as_secs_f64() / args.interval.as_secs_f64();
                let n = (per_interval.ceil() as usize).max(2);
                if matches!(source, PlannedSource::Trace(_)) {
                    n.max(TRACE_MIN_BUFFER_WINDOWS * max_in_flight)
                } else {
                    n
                }
            }
        };
        Ok(Self {
            source,
            nodes,
            source_description: args.source.describe(),
            interval: args.interval,
            speed: args.speed,
            repeat: args.repeat,
            limit: args.limit,
            buffer_capacity,
            window: max_in_flight,
            nats: args
                .nats
                .options(&format!("loadshift-agent {}", node_label(&args.node))),
            streams: args.nats.stream_settings(),
        })
    }
}

fn node_label(node: &Option<NodeName>) -> String {
    node.as_ref()
        .map_or_else(|| "trace".to_string(), |n| n.to_string())
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Why it stopped.
    pub reason: StopReason,
    /// Samples produced per node.
    pub samples: Vec<(NodeName, u64)>,
    /// Events acknowledged by JetStream (samples, joined and left).
    pub published: u64,
    /// Events dropped because the buffer was full.
    pub dropped: u64,
}

/// Runs the agent until the trace ends, `--limit` is reached, or `shutdown`
/// fires (a signal); its tasks hold `shutdown`'s listeners.
///
/// # Errors
/// [`AgentError`] when NATS options are unusable, the streams conflict, or
/// events were left unpublished at exit.
pub async fn run(plan: Plan, stopping: &AgentShutdown) -> Result<Summary, AgentError> {
    let Plan {
        source,
        nodes,
        source_description,
        interval,
        speed,
        repeat,
        limit,
        buffer_capacity,
        window,
        nats,
        streams,
    } = plan;
    let is_trace = matches!(source, PlannedSource::Trace(_));
    let client = connection::connect(&nats, true).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(NATS_TIMEOUT)
        .ack_timeout(NATS_TIMEOUT)
        .build(client.clone());
    let buffer = Arc::new(Buffer::new(buffer_capacity));
    tracing::info!(
        nodes = nodes.len(),
        source = %source_description,
        buffer = buffer.capacity(),
        "agent starting"
    );

    let mut publisher = tokio::spawn(Publisher::new(js, buffer.clone(), window, streams).run());
    announce(&buffer, &nodes, &source_description).await;
    let sampler = match source {
        PlannedSource::Live(src) => tokio::spawn(sampler::run_live(
            src,
            nodes[0].0.clone(),
            interval,
            limit,
            buffer.clone(),
            stopping.listener(),
        )),
        PlannedSource::Trace(traces) => tokio::spawn(sampler::run_trace(
            traces,
            speed,
            repeat,
            limit,
            buffer.clone(),
            stopping.listener(),
        )),
    };
    let started = Instant::now();
    let outcome = follow(sampler, &mut publisher, &buffer, stopping, is_trace).await?;
    leave(&buffer, &outcome).await;
    buffer.close();
    flush(&mut publisher, &buffer, outcome.reason).await?;

    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = outcome.samples.iter().map(|(_, n)| n).sum();
    tracing::info!(
        reason = outcome.reason.as_str(),
        samples = total,
        published = buffer.acked_total(),
        dropped = buffer.dropped_total(),
        "done: {total} samples in {elapsed:.2}s ({:.0} samples/s)",
        total as f64 / elapsed.max(1e-9)
    );
    Ok(Summary {
        reason: outcome.reason,
        samples: outcome.samples,
        published: buffer.acked_total(),
        dropped: buffer.dropped_total(),
    })
}

/// `node.joined` for every node, first in the buffer.
async fn announce(buffer: &Buffer, nodes: &[(NodeName, Capacity)], source: &str) {
    for (node, cap) in nodes {
        let joined = Event::NodeJoined(NodeJoined {
            source: source.to_string(),
            capacity_cores: cap.cores,
            memory_bytes: cap.memory_bytes,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        buffer.push_wait(Envelope::new(node.clone(), joined)).await;
    }
}

/// Waits for the sampler to end, reporting progress; a publisher that fails
/// for good stops the sampler (there is no sampling into the void).
async fn follow(
    mut sampler: tokio::task::JoinHandle<SamplerOutcome>,
    publisher: &mut tokio::task::JoinHandle<Result<(), PublisherError>>,
    buffer: &Buffer,
    stopping: &AgentShutdown,
    is_trace: bool,
) -> Result<SamplerOutcome, AgentError> {
    let started = Instant::now();
    let mut progress = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut last_acked = 0u64;
    let mut publisher_result: Option<Result<(), AgentError>> = None;
    let outcome: SamplerOutcome = loop {
        tokio::select! {
            out = &mut sampler => break out.map_err(|e| AgentError::SamplerTask(e.to_string()))?,
            res = &mut *publisher, if publisher_result.is_none() => {
                let res = flatten(res);
                if let Err(e) = &res {
                    tracing::error!("publisher stopped: {e}");
                }
                publisher_result = Some(res);
                stopping.trigger().fire(StopReason::PublisherFailed);
            }
            _ = progress.tick() => {
                let acked = buffer.acked_total();
                let line = format!(
                    "published {acked} events ({:.0}/s over the last {}s), {} buffered",
                    (acked - last_acked) as f64 / PROGRESS_EVERY.as_secs_f64(),
                    PROGRESS_EVERY.as_secs(),
                    buffer.len()
                );
                if is_trace { tracing::info!("{line}") } else { tracing::debug!("{line}") }
                last_acked = acked;
            }
        }
    };
    if let Some(res) = publisher_result {
        // The publisher is gone: nothing more can be sent, not even `left`.
        res?;
        return Err(AgentError::PublisherTask(
            "ended before the buffer closed".into(),
        ));
    }
    Ok(outcome)
}

/// `node.left` for every node, with why and how many samples.
async fn leave(buffer: &Buffer, outcome: &SamplerOutcome) {
    for (node, samples) in &outcome.samples {
        let left = Event::NodeLeft(NodeLeft {
            reason: outcome.reason.as_str().to_string(),
            samples: *samples,
        });
        let env = Envelope::new(node.clone(), left);
        // Wait a moment for room (a full-speed replay fills the buffer to the
        // brim); only if NATS does not make room, give up the oldest sample.
        let dropped = match tokio::time::timeout(LEFT_WAIT, buffer.push_wait(env.clone())).await {
            Ok(()) => 0,
            Err(_) => buffer.push_drop_oldest(env),
        };
        if dropped > 0 {
            tracing::warn!("buffer full at exit: dropped the {dropped} oldest unsent events to record {node} leaving");
        }
    }
}

fn flatten(
    res: Result<Result<(), PublisherError>, tokio::task::JoinError>,
) -> Result<(), AgentError> {
    res.map_err(|e| AgentError::PublisherTask(e.to_string()))?
        .map_err(AgentError::from)
}

/// Waits for the publisher to drain the closed buffer. A signal bounds this
/// by [`FLUSH_BOUND`] in total (the operator wants the agent gone); any other
/// end waits as long as acks keep coming, giving up after [`FLUSH_BOUND`]
/// without progress.
async fn flush(
    publisher: &mut tokio::task::JoinHandle<Result<(), PublisherError>>,
    buffer: &Buffer,
    reason: StopReason,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let mut last_progress = (Instant::now(), buffer.acked_total());
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            res = &mut *publisher => return flatten(res),
            _ = check.tick() => {
                let acked = buffer.acked_total();
                if acked != last_progress.1 {
                    last_progress = (Instant::now(), acked);
                }
                let give_up = if reason.is_signal() {
                    started.elapsed() >= FLUSH_BOUND
                } else {
                    last_progress.0.elapsed() >= FLUSH_BOUND
                };
                if give_up {
                    publisher.abort();
                    let remaining = buffer.len();
                    tracing::warn!("gave up flushing after {:.1}s: {remaining} events unpublished", started.elapsed().as_secs_f64());
                    return Err(AgentError::Unflushed { remaining });
                }
            }
        }
    }
}
