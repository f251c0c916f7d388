//! The sampler: turns a source into numbered telemetry events in the buffer,
//! on the source's schedule.
//!
//! It never talks to NATS, so a slow or absent server cannot delay a sample.
//! A live source pushes with drop-oldest (the present matters more than the
//! past); a trace at `--speed max` pushes with backpressure, since it has no
//! clock to keep up with and must not lose anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use loadshift_events::bounds::Bounded;
use loadshift_events::{Envelope, Event, NodeName};
use tokio::time::{Instant, MissedTickBehavior};

use crate::buffer::Buffer;
use crate::cli::Speed;
use crate::shutdown::{Shutdown, StopReason};
use crate::source::trace::NodeTrace;
use crate::source::LiveSource;

/// How often drops are reported while they go on, so a long outage does not
/// write one line per sample but never hides a drop.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Why sampling ended and how many samples each node produced (the count
/// `node.left` carries).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOutcome {
    /// Why it stopped.
    pub reason: StopReason,
    /// Samples produced per node, in the order the nodes were announced.
    pub samples: Vec<(NodeName, u64)>,
}

/// Reports samples dropped from a full buffer, at most every
/// [`DROP_REPORT_EVERY`], with the exact count.
#[derive(Debug)]
struct DropReport {
    unreported: u64,
    total: u64,
    last: Option<Instant>,
}

impl DropReport {
    fn new() -> Self {
        Self {
            unreported: 0,
            total: 0,
            last: None,
        }
    }

    fn add(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.unreported += n as u64;
        self.total += n as u64;
        if self.last.is_none_or(|t| t.elapsed() >= DROP_REPORT_EVERY) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.unreported > 0 {
            tracing::warn!(
                dropped = self.unreported,
                dropped_total = self.total,
                "buffer full (NATS unreachable?): dropped the {} oldest unsent events",
                self.unreported
            );
            self.unreported = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// Samples a live source every `interval` until shutdown or `limit`.
pub async fn run_live(
    mut source: Box<dyn LiveSource>,
    node: NodeName,
    interval: Duration,
    limit: Option<u64>,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
) -> SamplerOutcome {
    // The first tick after one interval: sources need two readings for a rate.
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut drops = DropReport::new();
    let reason = loop {
        if limit.is_some_and(|l| seq >= l) {
            break StopReason::LimitReached;
        }
        tokio::select! {
            r = shutdown.recv() => break r,
            _ = ticks.tick() => {}
        }
        // sysinfo and file reads block; keep them off the async workers.
        let taken = tokio::task::spawn_blocking(move || {
            let r = source.sample();
            (source, r)
        })
        .await;
        let result = match taken {
            Ok((s, r)) => {
                source = s;
                r
            }
            Err(e) => {
                tracing::error!("the {node} source panicked: {e}");
                break StopReason::SourceFailed;
            }
        };
        match result {
            // A value no reader could use (a source's overflow, a negative
            // share) is refused here, not published to be refused by all.
            Ok(sample) if sample.check().is_err() => {
                let why = sample
                    .check()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!("refusing a sample of {node} no reader could use: {why}");
            }
            Ok(mut sample) => {
                sample.seq = seq;
                seq += 1;
                let env = Envelope::new(node.clone(), Event::TelemetrySample(sample));
                drops.add(buffer.push_drop_oldest(env));
            }
            Err(e) => tracing::warn!("no sample of {node} this tick: {e}"),
        }
    };
    drops.flush();
    SamplerOutcome {
        reason,
        samples: vec![(node, seq)],
    }
}

/// Replay state of one node.
#[derive(Debug)]
struct Cursor {
    row: usize,
    /// Seconds added to the recorded times (grows by one pass per loop).
    shift: i64,
    seq: u64,
}

/// Replays traces: all nodes interleaved by time on one schedule.
///
/// At `Speed::Max` the nodes are merged by trace timestamp, so the log looks
/// like the cluster's own history; at a finite speed each node keeps its own
/// pace from its first row (gap / speed between samples).
pub async fn run_trace(
    traces: Vec<NodeTrace>,
    speed: Speed,
    repeat: bool,
    limit: Option<u64>,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
) -> SamplerOutcome {
    let key = |t: &NodeTrace, c: &Cursor| -> i64 {
        let at = t.rows[c.row].at + c.shift;
        match speed {
            Speed::Max => at,
            Speed::Times(_) => at - t.rows[0].at,
        }
    };
    let mut cursors: Vec<Cursor> = traces
        .iter()
        .map(|_| Cursor {
            row: 0,
            shift: 0,
            seq: 0,
        })
        .collect();
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = traces
        .iter()
        .zip(&cursors)
        .enumerate()
        .filter(|(_, (t, _))| !t.rows.is_empty())
        .map(|(i, (t, c))| Reverse((key(t, c), i)))
        .collect();
    let start = Instant::now();
    let mut total = 0u64;
    let mut drops = DropReport::new();
    let reason = loop {
        let Some(Reverse((due, i))) = heap.pop() else {
            break StopReason::TraceEnded;
        };
        if let Some(r) = shutdown.reason() {
            break r;
        }
        if limit.is_some_and(|l| total >= l) {
            break StopReason::LimitReached;
        }
        let trace = &traces[i];
        let cursor = &mut cursors[i];
        let env = Envelope::new(
            trace.node.clone(),
            Event::TelemetrySample(trace.rows[cursor.row].to_sample(cursor.shift, cursor.seq)),
        );
        match speed {
            Speed::Max => {
                tokio::select! {
                    biased;
                    r = shutdown.recv() => break r,
                    _ = buffer.push_wait(env) => {}
                }
            }
            Speed::Times(factor) => {
                let at = start + Duration::from_secs_f64(due.max(0) as f64 / factor);
                tokio::select! {
                    r = shutdown.recv() => break r,
                    _ = tokio::time::sleep_until(at) => {}
                }
                drops.add(buffer.push_drop_oldest(env));
            }
        }
        cursor.seq += 1;
        total += 1;
        cursor.row += 1;
        if cursor.row == trace.rows.len() {
            if !repeat {
                continue;
            }
            cursor.row = 0;
            cursor.shift += trace.span_secs() + trace.step_secs();
        }
        heap.push(Reverse((key(trace, cursor), i)));
    };
    drops.flush();
    SamplerOutcome {
        reason,
        samples: traces
            .iter()
            .zip(&cursors)
            .map(|(t, c)| (t.node.clone(), c.seq))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown;
    use crate::source::trace::parse_row;

    fn trace(name: &str, times: &[i64]) -> NodeTrace {
        NodeTrace {
            node: NodeName::new(name).unwrap(),
            path: format!("{name}.csv").into(),
            rows: times
                .iter()
                .map(|t| parse_row(&format!("{t};1;1;1;50;1;1;0;0;0;0")).unwrap())
                .collect(),
        }
    }

    fn drain(buffer: &Buffer) -> Vec<(String, u64, i64)> {
        let evs = buffer.try_take(usize::MAX);
        buffer.acked(evs.len());
        evs.into_iter()
            .map(|e| match e.event {
                Event::TelemetrySample(s) => (e.node.to_string(), s.seq, s.at.timestamp()),
                _ => unreachable!(),
            })
            .collect()
    }

    /// Replays `traces` at full speed into a buffer with room for all of
    /// them, until they end (or `limit`); what the replay said and what it
    /// buffered.
    async fn replay_all(
        traces: Vec<NodeTrace>,
        repeat: bool,
        limit: Option<u64>,
    ) -> (SamplerOutcome, Vec<(String, u64, i64)>) {
        let buffer = Arc::new(Buffer::new(100));
        let stop = shutdown::AgentShutdown::new();
        let out = run_trace(
            traces,
            Speed::Max,
            repeat,
            limit,
            buffer.clone(),
            stop.listener(),
        )
        .await;
        (out, drain(&buffer))
    }

    #[tokio::test]
    async fn max_speed_merges_nodes_by_time() {
        let (out, buffered) = replay_all(
            vec![trace("a", &[10, 30]), trace("b", &[20, 40])],
            false,
            None,
        )
        .await;
        assert_eq!(out.reason, StopReason::TraceEnded);
        assert_eq!(
            buffered,
            [
                ("a".into(), 0, 10),
                ("b".into(), 0, 20),
                ("a".into(), 1, 30),
                ("b".into(), 1, 40)
            ]
        );
    }

    #[tokio::test]
    async fn loop_shifts_time_forward_and_limit_stops() {
        let (out, buffered) = replay_all(vec![trace("a", &[0, 300, 600])], true, Some(7)).await;
        assert_eq!(out.reason, StopReason::LimitReached);
        assert_eq!(out.samples[0].1, 7);
        let times: Vec<i64> = buffered.iter().map(|s| s.2).collect();
        assert_eq!(times, [0, 300, 600, 900, 1200, 1500, 1800]);
    }

    #[tokio::test]
    async fn max_speed_waits_for_space_instead_of_dropping() {
        let buffer = Arc::new(Buffer::new(4));
        let stop = shutdown::AgentShutdown::new();
        let rx = stop.listener();
        let replay = tokio::spawn(run_trace(
            vec![trace("a", &(0..50).collect::<Vec<_>>())],
            Speed::Max,
            false,
            None,
            buffer.clone(),
            rx,
        ));
        let mut seen = Vec::new();
        while seen.len() < 50 {
            let evs = buffer.take(2).await.unwrap();
            buffer.acked(evs.len());
            seen.extend(evs.into_iter().map(|e| match e.event {
                Event::TelemetrySample(s) => s.seq,
                _ => unreachable!(),
            }));
        }
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(buffer.dropped_total(), 0);
        assert_eq!(replay.await.unwrap().reason, StopReason::TraceEnded);
    }

    #[tokio::test(start_paused = true)]
    async fn finite_speed_stops_on_shutdown() {
        let buffer = Arc::new(Buffer::new(100));
        let stop = shutdown::AgentShutdown::new();
        let rx = stop.listener();
        let replay = tokio::spawn(run_trace(
            vec![trace("a", &[0, 1_000_000])],
            Speed::Times(1.0),
            false,
            None,
            buffer.clone(),
            rx,
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.trigger().fire(StopReason::Terminate);
        let out = replay.await.unwrap();
        assert_eq!(out.reason, StopReason::Terminate);
        assert_eq!(out.samples[0].1, 1);
    }
}
