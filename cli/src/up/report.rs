//! What `loadshift up` prints on stop: per node, how long it spent at or
//! above 90 % of its CPU capacity, and per migration its lead time (from
//! the prediction that triggered it to the overload that came, or "before
//! any overload").
//!
//! It is one fold over the log (the TELEMETRY samples and the EVENTS), so
//! the same numbers come out whatever the scenario put on the nodes, and
//! the fold is tested on hand-made events rather than on a live run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use loadshift_brain::simulate::Outcome;
use loadshift_events::migration::Requested;
use loadshift_events::{Envelope, Event, NodeName};
use uuid::Uuid;

/// Overload: CPU at or above this share of a node's capacity (the same
/// line as the simulator's and the issue's targets).
pub const OVERLOAD_PCT: f32 = 90.0;

/// A sample counts for the time until the node's next sample, but never
/// more than this many of the node's usual gaps (an agent that stopped
/// for a while does not make its last sample last that long).
const MAX_GAPS_PER_SAMPLE: f64 = 3.0;

/// One node's time at or above [`OVERLOAD_PCT`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOverload {
    /// The node.
    pub node: NodeName,
    /// Seconds it spent at or above the line.
    pub overloaded_secs: f64,
    /// Seconds its samples cover.
    pub sampled_secs: f64,
    /// When it first reached the line, if it did.
    pub first_overload: Option<DateTime<Utc>>,
    /// Times it went from below the line to at or above it.
    pub episodes: u64,
    /// Its highest sample, percent of capacity (how near the line it came).
    pub peak_pct: f32,
}

/// How a migration's timing compares with its source's overload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lead {
    /// The source did not reach the line between the prediction and the
    /// end of the move: the move came before any overload.
    BeforeAnyOverload,
    /// The source reached the line this many seconds after the prediction,
    /// before the move ended.
    Ahead(f64),
    /// The source was already at the line when predicted, since this many
    /// seconds: the move reacted instead of predicting.
    Late(f64),
}

/// One migration of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationLead {
    /// The request as the log has it: the migration's id, the workload
    /// moved, from, to, who asked (`brain`, an operator) and why (the
    /// probability it quotes).
    pub request: Requested,
    /// When the prediction behind it was made: the brain's last
    /// `node.predicted` about the source at or before the request, else the
    /// request itself.
    pub predicted_at: DateTime<Utc>,
    /// When it completed, failed or rolled back, if it did.
    pub ended_at: Option<DateTime<Utc>>,
    /// Whether it completed.
    pub completed: bool,
    /// Bytes of the image moved, when it completed.
    pub image_bytes: u64,
    /// Milliseconds the workload was frozen, when it completed.
    pub downtime_ms: f64,
    /// Milliseconds its source spent dumping, when it completed.
    pub dump_ms: f64,
    /// Its lead time.
    pub lead: Lead,
}

/// Everything printed on stop.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StopReport {
    /// Per node, in name order.
    pub nodes: Vec<NodeOverload>,
    /// Per migration, in request order.
    pub migrations: Vec<MigrationLead>,
}

/// A node's samples: time and CPU percent of its capacity, in time order.
type Series = Vec<(DateTime<Utc>, f32)>;

struct Request<'a> {
    at: DateTime<Utc>,
    req: &'a Requested,
}

impl StopReport {
    /// Folds the log's envelopes (in any order; both streams mixed), keeping
    /// only those that happened at or after `since` (an `up` that reuses its
    /// state folder also holds earlier runs).
    pub fn fold<'a>(
        envelopes: impl IntoIterator<Item = &'a Envelope>,
        since: DateTime<Utc>,
    ) -> Self {
        let mut series: BTreeMap<NodeName, Series> = BTreeMap::new();
        let mut predictions: BTreeMap<NodeName, Vec<DateTime<Utc>>> = BTreeMap::new();
        let mut requests: Vec<Request<'a>> = Vec::new();
        let mut ends: BTreeMap<Uuid, (DateTime<Utc>, bool)> = BTreeMap::new();
        let mut costs: BTreeMap<Uuid, (u64, f64, f64)> = BTreeMap::new();
        for env in envelopes {
            if env.occurred_at < since {
                continue;
            }
            match &env.event {
                Event::TelemetrySample(s) => series
                    .entry(env.node.clone())
                    .or_default()
                    .push((s.at, s.cpu.usage_pct)),
                Event::NodePredicted(p) => {
                    predictions.entry(p.node.clone()).or_default().push(p.at)
                }
                Event::MigrationRequested(r) => requests.push(Request {
                    at: env.occurred_at,
                    req: r,
                }),
                Event::MigrationCompleted(c) => {
                    ends.insert(c.migration, (env.occurred_at, true));
                    let t = &c.timings;
                    costs.insert(
                        c.migration,
                        (
                            c.image_bytes,
                            t.downtime_ms.unwrap_or(0.0),
                            t.dump_ms.unwrap_or(0.0),
                        ),
                    );
                }
                Event::MigrationFailed(f) => {
                    ends.entry(f.migration).or_insert((env.occurred_at, false));
                }
                _ => {}
            }
        }
        for s in series.values_mut() {
            s.sort_by_key(|(at, _)| *at);
        }
        for p in predictions.values_mut() {
            p.sort();
        }
        requests.sort_by_key(|r| r.at);
        let nodes = series
            .iter()
            .map(|(node, s)| node_overload(node, s))
            .collect();
        let migrations = requests
            .iter()
            .map(|r| {
                let predicted_at = predictions
                    .get(&r.req.source)
                    .and_then(|p| p[..p.partition_point(|t| *t <= r.at)].last().copied())
                    .unwrap_or(r.at);
                let end = ends.get(&r.req.migration).copied();
                let (image_bytes, downtime_ms, dump_ms) =
                    costs.get(&r.req.migration).copied().unwrap_or_default();
                let empty = Series::new();
                let source = series.get(&r.req.source).unwrap_or(&empty);
                MigrationLead {
                    request: r.req.clone(),
                    predicted_at,
                    ended_at: end.map(|(at, _)| at),
                    completed: end.is_some_and(|(_, ok)| ok),
                    image_bytes,
                    downtime_ms,
                    dump_ms,
                    lead: lead(source, predicted_at, end.map(|(at, _)| at)),
                }
            })
            .collect();
        Self { nodes, migrations }
    }

    /// The text printed on stop.
    pub fn render(&self) -> String {
        let nodes = self.nodes.iter().map(|n| {
            let first = n.first_overload.map_or(String::new(), |t| {
                format!(", first at {}", t.format("%H:%M:%S"))
            });
            format!(
                "{:<8} {:>6.0} s of {:.0} s sampled (peak {:.0} %){first}",
                n.node.as_str(),
                n.overloaded_secs,
                n.sampled_secs,
                n.peak_pct
            )
        });
        let mut out = section(
            &format!(
                "time at CPU >= {OVERLOAD_PCT:.0} % of capacity, per node (from the TELEMETRY samples):"
            ),
            "no telemetry sample in this run",
            nodes,
        );
        out += &section(
            "migrations, lead time from the prediction to the source's overload:",
            "none",
            self.migrations.iter().map(migration_line),
        );
        out
    }
}

/// A section of the report: its heading, then one indented line per item,
/// or `none` in their place.
fn section(heading: &str, none: &str, lines: impl Iterator<Item = String>) -> String {
    let mut out = format!("{heading}\n");
    let mut empty = true;
    for line in lines {
        empty = false;
        let _ = writeln!(out, "  {line}");
    }
    if empty {
        let _ = writeln!(out, "  {none}");
    }
    out
}

impl StopReport {
    /// The run as a row of the simulator's value table (the same
    /// [`Outcome`] `loadshift-brain simulate` prints), for the nodes in
    /// `nodes`: time in overload counted in trace minutes (real seconds
    /// times `speed`), the completed migrations' bytes, freeze and dump
    /// time as measured, and failed ones as refused.
    pub fn outcome(&self, policy: &str, nodes: &[NodeName], speed: f64) -> Outcome {
        let mut o = Outcome {
            policy: policy.to_string(),
            ..Outcome::default()
        };
        for n in self.nodes.iter().filter(|n| nodes.contains(&n.node)) {
            o.overload_node_minutes += n.overloaded_secs * speed / 60.0;
            o.overload_episodes += n.episodes;
        }
        for m in &self.migrations {
            match (m.completed, m.ended_at) {
                (true, _) => {
                    o.migrations += 1;
                    o.gib_moved += m.image_bytes as f64 / (1u64 << 30) as f64;
                    o.freeze_seconds += m.downtime_ms / 1000.0;
                    o.dump_core_seconds += m.dump_ms / 1000.0;
                }
                (false, Some(_)) => o.refused += 1,
                (false, None) => {}
            }
        }
        o
    }
}

fn migration_line(m: &MigrationLead) -> String {
    let r = &m.request;
    let p = r
        .reason
        .probability
        .map_or(String::new(), |p| format!(", p={p:.2}"));
    let end = match (m.ended_at, m.completed) {
        (Some(at), true) => format!(
            "completed {:.1} s after the prediction",
            secs(at - m.predicted_at)
        ),
        (Some(at), false) => format!(
            "failed {:.1} s after the prediction",
            secs(at - m.predicted_at)
        ),
        (None, _) => "not finished".to_string(),
    };
    let lead = match m.lead {
        Lead::BeforeAnyOverload => "before any overload".to_string(),
        Lead::Ahead(s) => format!("lead time {s:.1} s (overload came before the move ended)"),
        Lead::Late(s) => format!("late: the source was overloaded {s:.1} s before the prediction"),
    };
    format!(
        "{} {} -> {} (by {}{p}), predicted {}, {end}: {lead}",
        r.workload.as_str(),
        r.source.as_str(),
        r.target.as_str(),
        r.requested_by,
        m.predicted_at.format("%H:%M:%S%.3f"),
    )
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// The node's median gap between samples, seconds.
fn usual_gap(s: &Series) -> f64 {
    let mut gaps: Vec<f64> = s.windows(2).map(|w| secs(w[1].0 - w[0].0)).collect();
    if gaps.is_empty() {
        return 1.0;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2].max(0.0)
}

fn node_overload(node: &NodeName, s: &Series) -> NodeOverload {
    let usual = usual_gap(s);
    let cap = usual * MAX_GAPS_PER_SAMPLE;
    let mut out = NodeOverload {
        node: node.clone(),
        overloaded_secs: 0.0,
        sampled_secs: 0.0,
        first_overload: None,
        episodes: 0,
        peak_pct: 0.0,
    };
    let mut was_over = false;
    for (i, (at, pct)) in s.iter().enumerate() {
        // The last sample stands for one usual gap.
        let span = s
            .get(i + 1)
            .map_or(usual, |(next, _)| secs(*next - *at))
            .clamp(0.0, cap);
        out.sampled_secs += span;
        out.peak_pct = out.peak_pct.max(*pct);
        let over = *pct >= OVERLOAD_PCT;
        if over {
            out.overloaded_secs += span;
            out.first_overload.get_or_insert(*at);
            if !was_over {
                out.episodes += 1;
            }
        }
        was_over = over;
    }
    out
}

/// The lead of a move predicted at `predicted` and ended at `end` on a
/// source whose samples are `s`.
fn lead(s: &Series, predicted: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Lead {
    let before = s.partition_point(|(at, _)| *at <= predicted);
    // Already at the line when predicted: since when?
    if before > 0 && s[before - 1].1 >= OVERLOAD_PCT {
        let onset = s[..before]
            .iter()
            .rev()
            .take_while(|(_, p)| *p >= OVERLOAD_PCT)
            .last()
            .map_or(predicted, |(at, _)| *at);
        return Lead::Late(secs(predicted - onset));
    }
    let after = s[before..]
        .iter()
        .take_while(|(at, _)| end.is_none_or(|e| *at <= e))
        .find(|(_, p)| *p >= OVERLOAD_PCT);
    match after {
        Some((at, _)) => Lead::Ahead(secs(*at - predicted)),
        None => Lead::BeforeAnyOverload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::migration::{Completed, Reason, Requested, Timings};
    use loadshift_events::model::Predicted;
    use loadshift_events::telemetry::{Cpu, Memory, Sample};
    use loadshift_events::WorkloadName;

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + chrono::TimeDelta::seconds(s)
    }

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn env(from: &str, when: i64, event: Event) -> Envelope {
        let mut e = Envelope::new(node(from), event);
        e.occurred_at = at(when);
        e
    }

    fn sample(n: &str, when: i64, pct: f32) -> Envelope {
        env(
            n,
            when,
            Event::TelemetrySample(Sample::new(
                at(when),
                when as u64,
                Cpu {
                    usage_pct: pct,
                    capacity_cores: 1.0,
                    per_core_pct: vec![],
                },
                Memory {
                    used_bytes: 0,
                    total_bytes: 1 << 30,
                },
            )),
        )
    }

    fn predicted(n: &str, when: i64) -> Envelope {
        env(
            "brain",
            when,
            Event::NodePredicted(Predicted {
                node: node(n),
                at: at(when),
                onset: 0.9,
                sustained: 0.5,
                model_version: 1,
            }),
        )
    }

    fn requested(id: Uuid, when: i64) -> Envelope {
        env(
            "brain",
            when,
            Event::MigrationRequested(Requested {
                migration: id,
                workload: WorkloadName::new("w1").unwrap(),
                source: node("node2"),
                target: node("node3"),
                requested_by: "brain".into(),
                reason: Reason {
                    summary: "predicted overload".into(),
                    probability: Some(0.9),
                    model_version: Some(1),
                    top_features: vec![],
                    ..Reason::default()
                },
                mode: loadshift_events::migration::Mode::Auto,
            }),
        )
    }

    fn completed(id: Uuid, when: i64) -> Envelope {
        env(
            "node3",
            when,
            Event::MigrationCompleted(Completed {
                migration: id,
                workload: WorkloadName::new("w1").unwrap(),
                source: node("node2"),
                target: node("node3"),
                image_bytes: 1 << 20,
                timings: Timings::default(),
                mode: None,
                fallback: None,
            }),
        )
    }

    /// node2 at 50, 80, 95, 95, 60 % on 1 s samples; node3 idle.
    fn ramp(extra: Vec<Envelope>) -> Vec<Envelope> {
        let mut v: Vec<Envelope> = [50.0, 80.0, 95.0, 95.0, 60.0]
            .iter()
            .enumerate()
            .map(|(i, p)| sample("node2", i as i64, *p))
            .collect();
        v.extend((0..5).map(|i| sample("node3", i, 10.0)));
        v.extend(extra);
        v
    }

    /// The ramp with one migration: predicted at `p`, requested at `r`,
    /// completed at `c` (seconds), folded into a report.
    fn one_move(p: i64, r: i64, c: i64) -> StopReport {
        let id = Uuid::now_v7();
        let log = ramp(vec![
            predicted("node2", p),
            requested(id, r),
            completed(id, c),
        ]);
        StopReport::fold(&log, t0())
    }

    #[test]
    fn seconds_at_the_line_follow_the_samples() {
        let log = ramp(vec![]);
        let r = StopReport::fold(&log, t0());
        assert_eq!(r.nodes.len(), 2);
        let n2 = &r.nodes[0];
        assert_eq!(n2.node.as_str(), "node2");
        assert_eq!(n2.overloaded_secs, 2.0);
        assert_eq!(n2.sampled_secs, 5.0);
        assert_eq!(n2.first_overload, Some(at(2)));
        assert_eq!(n2.episodes, 1);
        assert_eq!(n2.peak_pct, 95.0);
        assert!(r.render().contains("(peak 95 %)"), "{}", r.render());
        assert_eq!(r.nodes[1].overloaded_secs, 0.0);
        assert!(r.migrations.is_empty());
        assert!(r.render().contains("none"));
    }

    #[test]
    fn an_agent_outage_does_not_stretch_a_sample() {
        let log = vec![
            sample("node2", 0, 95.0),
            sample("node2", 1, 95.0),
            sample("node2", 2, 95.0),
            sample("node2", 100, 10.0),
        ];
        let r = StopReport::fold(&log, t0());
        // 1 + 1 + at most 3 usual gaps.
        assert_eq!(r.nodes[0].overloaded_secs, 5.0);
    }

    #[test]
    fn a_move_ending_before_the_line_is_before_any_overload() {
        let r = one_move(0, 1, 1);
        let m = &r.migrations[0];
        assert_eq!(m.predicted_at, at(0));
        assert!(m.completed);
        assert_eq!(m.lead, Lead::BeforeAnyOverload);
        assert!(r.render().contains("before any overload"), "{}", r.render());
    }

    #[test]
    fn the_run_as_a_row_of_the_value_table() {
        let r = one_move(0, 1, 4);
        // 2 s at the line on node2, at 300x: 600 trace seconds, 10 minutes.
        let o = r.outcome("ai (live)", &[node("node2"), node("node3")], 300.0);
        assert_eq!(o.policy, "ai (live)");
        assert_eq!(o.overload_node_minutes, 10.0);
        assert_eq!(o.overload_episodes, 1);
        assert_eq!(o.migrations, 1);
        assert_eq!(o.gib_moved, 1.0 / 1024.0);
        // Only the nodes asked for.
        let o = r.outcome("ai (live)", &[node("node3")], 300.0);
        assert_eq!(o.overload_node_minutes, 0.0);
    }

    #[test]
    fn an_overload_before_the_move_ends_gives_the_lead_time() {
        let r = one_move(0, 1, 4);
        assert_eq!(r.migrations[0].lead, Lead::Ahead(2.0));
        assert!(r.render().contains("lead time 2.0 s"), "{}", r.render());
    }

    #[test]
    fn a_prediction_made_in_overload_is_late() {
        let r = one_move(3, 3, 4);
        assert_eq!(r.migrations[0].lead, Lead::Late(1.0));
    }

    #[test]
    fn without_a_prediction_the_request_is_the_prediction_and_earlier_runs_are_skipped() {
        let id = Uuid::now_v7();
        let mut log = ramp(vec![requested(id, 1)]);
        log.push(sample("node9", -10, 99.0));
        let r = StopReport::fold(&log, t0());
        assert_eq!(r.nodes.len(), 2);
        let m = &r.migrations[0];
        assert_eq!(m.predicted_at, at(1));
        assert!(!m.completed);
        // Not finished: any later overload of the source counts.
        assert_eq!(m.lead, Lead::Ahead(1.0));
        assert!(r.render().contains("not finished"));
    }
}
