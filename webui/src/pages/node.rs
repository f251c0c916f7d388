//! The Node page: one node's series, larger, over a chosen range; its
//! workloads with their own usage; the migrations in and out of it; and,
//! for an operator, "migrate this workload to…".

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

use super::cluster::{node_state, overload};
use super::{not_found, read_view, Chrome, MigrationRow, St};
use crate::display;
use crate::projection::{Life, Node, Projection, Usage, Workload, WorkloadState};
use crate::series::{Metric, Point};
use crate::sse;
use crate::svg::{self, Axis, Chart, LineSpec};
use crate::AppState;
use loadshift_events::model::LabelScores;
use loadshift_events::NodeName;

/// The ranges the picker offers: label and milliseconds.
pub const RANGES: [(&str, i64); 5] = [
    ("15m", 15 * 60_000),
    ("1h", 3_600_000),
    ("2h", 2 * 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 24 * 3_600_000),
];

/// `?range=1h`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeQuery {
    /// One of [`RANGES`]' labels.
    pub range: Option<String>,
}

/// A workload on this node.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRow {
    /// Name.
    pub name: String,
    /// `process`, `docker` or `?`.
    pub runtime: String,
    /// `running` or `migrating → node3`.
    pub state: String,
    /// Since.
    pub since: String,
    /// Latest CPU, percent of one core.
    pub cpu: String,
    /// Latest RSS.
    pub rss: String,
    /// Its CPU over the last samples.
    #[serde(skip)]
    pub spark: Chart,
}

/// One chart with its name and top value.
#[derive(Debug, Clone, Serialize)]
pub struct NamedChart {
    /// What it shows.
    pub name: String,
    /// The drawing.
    #[serde(skip)]
    pub chart: Chart,
}

/// The Node page's content.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// `joined`, `silent`, `left`.
    pub state: &'static str,
    /// Life-cycle line (`joined 2026-...`, `left ...: SIGTERM`).
    pub life: String,
    /// Telemetry source.
    pub source: String,
    /// Capacity line.
    pub capacity: String,
    /// Overload probabilities, `onset 12% · sustained 3% (model v2)`.
    pub prediction: String,
    /// Whether the brain thinks overload is likely.
    pub prob_high: bool,
    /// The range shown.
    pub range: String,
    /// The ranges offered.
    pub ranges: Vec<&'static str>,
    /// Charts.
    pub charts: Vec<NamedChart>,
    /// One line per chart left out because the node cannot have its series
    /// (a cgroup has no load average, cgroup v1 no pressure).
    pub omitted: Vec<String>,
    /// Which clock the charts' times are on, and where the range ends.
    pub clock: String,
    /// Whether the pressure chart is drawn (its legend goes with it).
    pub pressure_drawn: bool,
    /// Latest values.
    pub latest: String,
    /// Its workloads.
    pub workloads: Vec<WorkloadRow>,
    /// Migrations away from it, newest first.
    pub migrations_out: Vec<MigrationRow>,
    /// Migrations onto it, newest first.
    pub migrations_in: Vec<MigrationRow>,
    /// Other nodes a workload could go to (joined ones, not draining).
    pub targets: Vec<String>,
    /// Its drain, when an operator is emptying it ([`super::drain_line`]).
    pub draining: Option<String>,
    /// The series drawn, for the JSON API (downsampled).
    pub series: Vec<Point>,
}

const MIGRATIONS_SHOWN: usize = 50;

impl NodeView {
    /// The view of node `name` over `range`, or `None` when unknown.
    pub fn build(
        p: &Projection,
        name: &str,
        range: Option<&str>,
        now: DateTime<Utc>,
        silent_after: Duration,
    ) -> Option<Self> {
        let n = p.nodes.values().find(|n| n.name.as_str() == name)?;
        let (range, range_ms) = RANGES
            .iter()
            .find(|(l, _)| Some(*l) == range)
            .copied()
            .unwrap_or(RANGES[0]);
        let points: Vec<Point> = n.series.window(range_ms).collect();
        let (charts, omitted) = charts(p, n, &points, range_ms);
        let rows = |out: bool| -> Vec<MigrationRow> {
            p.placement
                .migrations
                .values()
                .rev()
                .filter(|m| {
                    if out {
                        m.source == n.name
                    } else {
                        m.target == n.name
                    }
                })
                .take(MIGRATIONS_SHOWN)
                .map(MigrationRow::of)
                .collect()
        };
        let series = {
            let step = (points.len() / 240).max(1);
            points.iter().step_by(step).copied().collect()
        };
        Some(Self {
            name: n.name.to_string(),
            state: node_state(n, now, silent_after),
            life: match &n.life {
                Life::Unannounced => "no node.joined in the kept log".into(),
                Life::Joined(at) => format!("joined {}", display::time(*at)),
                Life::Left(at, why) => format!("left {}: {why}", display::time(*at)),
            },
            source: n.source.clone().unwrap_or_else(|| "?".into()),
            capacity: format!(
                "{} cores, {}",
                n.capacity_cores
                    .map(|c| format!("{c}"))
                    .unwrap_or_else(|| "?".into()),
                n.memory_bytes
                    .map(display::bytes)
                    .unwrap_or_else(|| "memory ?".into())
            ),
            prediction: match &n.prediction {
                Some(pr) => format!(
                    "onset {} · sustained {} (model v{}, at {})",
                    display::prob(pr.onset),
                    display::prob(pr.sustained),
                    pr.model_version,
                    display::time(pr.at)
                ),
                None => "no prediction yet".into(),
            },
            prob_high: overload(n).is_some_and(|p| p >= 0.5),
            range: range.to_string(),
            ranges: RANGES.iter().map(|(l, _)| *l).collect(),
            pressure_drawn: charts.iter().any(|c| c.chart.title == "PSI"),
            omitted,
            charts,
            clock: clock_line(n, now),
            latest: latest(n, now),
            workloads: workload_rows(p, &n.name),
            migrations_out: rows(true),
            migrations_in: rows(false),
            targets: p
                .nodes
                .values()
                .filter(|o| o.name != n.name && matches!(o.life, Life::Joined(_)))
                .filter(|o| !p.placement.is_draining(&o.name))
                .map(|o| o.name.to_string())
                .collect(),
            draining: super::drain_line(&p.placement, &n.name),
            series,
        })
    }
}

/// How many columns and px the large charts have.
const COLUMNS: usize = 240;
const WIDTH: u32 = 720;

/// What the node page draws over one range: where it ends (the node's
/// newest sample, on its own clock), how long it is, and the moments
/// marked on the CPU chart.
struct Frame {
    end: i64,
    range_ms: i64,
    /// Migrations in and out, on the node's clock, with their mark.
    moves: Vec<(i64, (&'static str, &'static str))>,
}

impl Frame {
    /// A chart of `specs` over the frame, framed and with its time axis.
    fn chart(&self, points: &[Point], specs: &[LineSpec], height: u32) -> Chart {
        let mut chart = svg::chart(
            points,
            specs,
            self.end,
            self.range_ms,
            COLUMNS,
            WIDTH,
            height,
        );
        chart.axis = Some(Axis::time(self.end, self.range_ms, WIDTH));
        chart
    }

    /// Draws every mark of `marks` that falls in the frame.
    fn mark(&self, chart: &mut Chart, marks: &[(i64, (&'static str, &'static str))]) {
        for (at, what) in marks {
            chart.mark_time(*what, *at, self.end, self.range_ms);
        }
    }
}

/// The node's large charts over `points`, and a one-line reason for each
/// series the node cannot have: CPU (with migrations in and out and the
/// moments the prediction crossed its cut-off), then the brain's predicted
/// onset probability with the model's cut-off, then memory, load and
/// pressure.
fn charts(
    p: &Projection,
    n: &Node,
    points: &[Point],
    range_ms: i64,
) -> (Vec<NamedChart>, Vec<String>) {
    let frame = Frame {
        end: n.series.last().map(|l| l.at_ms).unwrap_or(0),
        range_ms,
        moves: migration_marks(p, n),
    };
    let max_of = |m: Metric| {
        points
            .iter()
            .map(|p| p.get(m))
            .filter(|v| v.is_finite())
            .fold(0.0f32, f32::max)
    };
    let line = |metric: Metric, class: &'static str, max: f32| LineSpec { metric, class, max };
    let big = |name: &'static str, title: &'static str, specs: &[LineSpec], top: &'static str| {
        let mut chart = frame.chart(points, specs, 120);
        chart.framed = Some(top);
        chart.title = title;
        NamedChart {
            name: name.to_string(),
            chart,
        }
    };
    let cutoff = onset_score(p).map(|s| s.cutoff as f32).filter(|c| *c > 0.0);
    let mut cpu = big(
        "CPU (% of capacity)",
        "CPU",
        &[line(Metric::Cpu, "cpu", 100.0)],
        "100%",
    );
    frame.mark(&mut cpu.chart, &frame.moves);
    if let Some(c) = cutoff {
        frame.mark(&mut cpu.chart, &crossings(&n.predictions, c));
    }
    let mut out = vec![
        cpu,
        prediction_chart(p, n, &frame),
        big(
            "Memory (% of total)",
            "Memory",
            &[line(Metric::Mem, "mem", 100.0)],
            "100%",
        ),
    ];
    let mut omitted = Vec::new();
    if reports(n, &[Metric::Load], "Load average", &mut omitted) {
        let load_max = max_of(Metric::Load)
            .max(n.capacity_cores.unwrap_or(1.0))
            .ceil();
        out.push(big(
            "Load average (1 min; top: capacity or peak)",
            "Load",
            &[line(Metric::Load, "load", load_max)],
            "",
        ));
    }
    let pressure = [Metric::PsiCpu, Metric::PsiMem, Metric::PsiIo];
    if reports(n, &pressure, "Pressure (PSI)", &mut omitted) {
        let psi_max = pressure
            .into_iter()
            .map(max_of)
            .fold(10.0f32, f32::max)
            .ceil();
        out.push(big(
            "Pressure (PSI avg10: cpu, memory, io)",
            "PSI",
            &[
                line(Metric::PsiCpu, "psi", psi_max),
                line(Metric::PsiMem, "mem", psi_max),
                line(Metric::PsiIo, "io", psi_max),
            ],
            "",
        ));
    }
    (out, omitted)
}

/// Whether `n` ever reported any of `metrics`; if it has samples but never
/// did, its chart is left out and `omitted` gets the one-line reason, told
/// from the node's source (an empty box would read as a fault).
fn reports(n: &Node, metrics: &[Metric], chart: &str, omitted: &mut Vec<String>) -> bool {
    if n.series.is_empty() || metrics.iter().any(|m| n.series.reports(*m)) {
        return true;
    }
    let source = n.source.as_deref().unwrap_or("?");
    let why = match source.split(':').next() {
        Some("cgroup") if chart.starts_with("Pressure") => {
            "a cgroup v1 node has no pressure files (only cgroup v2 keeps PSI per cgroup)"
        }
        Some("cgroup") => "a cgroup has no load average of its own (only a whole host has one)",
        Some("trace") => "the recorded trace has no such column",
        Some("host") => "this host's kernel does not expose it (/proc/pressure is missing)",
        _ => "none of its samples carried one",
    };
    omitted.push(format!(
        "{chart} not drawn: {} (source {source}) never reported one: {why}.",
        n.name
    ));
    false
}

/// When each migration in or out of `n` was requested, on the node's
/// clock (the wall-clock request mapped through its samples), marked `in`
/// or `out`.
fn migration_marks(p: &Projection, n: &Node) -> Vec<(i64, (&'static str, &'static str))> {
    p.placement
        .migrations
        .values()
        .filter_map(|m| {
            let wall = m.requested_at.unwrap_or(m.first_seen).timestamp_millis();
            let mark = if m.source == n.name {
                ("migration out", "out")
            } else if m.target == n.name {
                ("migration in", "in")
            } else {
                return None;
            };
            Some((n.clock.node_time(wall), mark))
        })
        .collect()
}

/// The moments the onset probability crossed `cutoff`, up (`p↑`: from below
/// to at or above it) or down (`p↓`), oldest first.
fn crossings(
    preds: &VecDeque<(i64, f32)>,
    cutoff: f32,
) -> Vec<(i64, (&'static str, &'static str))> {
    preds
        .iter()
        .zip(preds.iter().skip(1))
        .filter_map(
            |((_, before), (at, now))| match (*before >= cutoff, *now >= cutoff) {
                (false, true) => Some((*at, ("crossing up", "p↑"))),
                (true, false) => Some((*at, ("crossing down", "p↓"))),
                _ => None,
            },
        )
        .collect()
}

/// The active model's onset scores (its cut-off and whether the planner
/// uses the rule instead), if a model is active.
fn onset_score(p: &Projection) -> Option<&LabelScores> {
    p.model
        .active
        .and_then(|v| p.model.versions.get(&v))
        .map(|v| &v.trained.onset)
}

/// The latest probability at or before the end of each column (a
/// prediction holds until the next one); NaN before the first.
fn held_columns(preds: &[(i64, f32)], end_ms: i64, range_ms: i64, n: usize) -> Vec<f32> {
    let from = end_ms - range_ms;
    (0..n)
        .map(|i| {
            let col_end = from + ((i as i64 + 1) * range_ms) / n as i64;
            let k = preds.partition_point(|(at, _)| *at <= col_end);
            k.checked_sub(1).map_or(f32::NAN, |j| preds[j].1)
        })
        .collect()
}

/// The brain's onset probability for `n` over the frame, its cut-off as a
/// horizontal rule and the migrations as vertical ones.
fn prediction_chart(p: &Projection, n: &Node, frame: &Frame) -> NamedChart {
    let preds: Vec<(i64, f32)> = n.predictions.iter().copied().collect();
    let cols = held_columns(&preds, frame.end, frame.range_ms, COLUMNS);
    let d = svg::path(&cols, 1.0, WIDTH, 80);
    let mut chart = Chart {
        width: WIDTH,
        height: 80,
        lines: if d.is_empty() {
            Vec::new()
        } else {
            vec![svg::Line { class: "prob", d }]
        },
        framed: Some("p = 1"),
        title: "Predicted overload probability",
        rules: Vec::new(),
        axis: Some(Axis::time(frame.end, frame.range_ms, WIDTH)),
    };
    let name = match onset_score(p) {
        Some(s) if s.cutoff > 0.0 => {
            chart.mark_level("cutoff", s.cutoff as f32, 1.0);
            if s.rule_used {
                format!(
                    "Predicted overload onset probability (dashed: the model's cut-off p ≥ {:.3}; the planner uses the rule CPU ≥ {:.0}% instead)",
                    s.cutoff, s.validation_rule_pct
                )
            } else {
                format!(
                    "Predicted overload onset probability (dashed: the planner's cut-off p ≥ {:.3})",
                    s.cutoff
                )
            }
        }
        _ => "Predicted overload onset probability (no cut-off known yet)".to_string(),
    };
    frame.mark(&mut chart, &frame.moves);
    NamedChart { name, chart }
}

/// Which clock the charts use, in one line: the node's own, ending at its
/// newest sample; said outright when that is not the dashboard's clock.
fn clock_line(n: &Node, now: DateTime<Utc>) -> String {
    let Some(last) = n.series.last() else {
        return "No sample yet: the charts are empty until the node reports.".into();
    };
    let newest = DateTime::from_timestamp_millis(last.at_ms)
        .map(display::time)
        .unwrap_or_else(|| "?".into());
    if n.clock.is_wall_clock() {
        return format!(
            "Times are UTC on the node's clock (the dashboard's); the range ends at its newest sample, {newest}."
        );
    }
    let offset = n.clock.offset_ms().unwrap_or(0);
    let span = display::ago(now, now - chrono::Duration::milliseconds(offset.abs()));
    let side = if offset < 0 { "behind" } else { "ahead of" };
    format!(
        "Times are the node's own clock, {} {side} the dashboard's (a replayed trace keeps its recorded time): \
         the range ends at its newest sample, {newest}; migrations are drawn at the sample the node sent when they were requested.",
        span.trim_end_matches(" ago")
    )
}

/// The latest values line.
fn latest(n: &Node, now: DateTime<Utc>) -> String {
    let last = n.series.last();
    let get = |m: Metric| last.map(|l| l.get(m)).unwrap_or(f32::NAN);
    format!(
        "CPU {} · memory {} · load {} · PSI cpu {} mem {} io {} · {} samples · seen {}",
        display::pct(get(Metric::Cpu)),
        display::pct(get(Metric::Mem)),
        display::num(get(Metric::Load)),
        display::pct(get(Metric::PsiCpu)),
        display::pct(get(Metric::PsiMem)),
        display::pct(get(Metric::PsiIo)),
        n.samples,
        n.last_seen
            .map(|t| display::ago(now, t))
            .unwrap_or_else(|| "never".into())
    )
}

/// The workloads placed on `node`, each with its own usage.
fn workload_rows(p: &Projection, node: &NodeName) -> Vec<WorkloadRow> {
    p.placement
        .workloads
        .values()
        .filter(|w| &w.node == node)
        .map(|w| workload_row(w, p.usage.get(&w.name)))
        .collect()
}

fn workload_row(w: &Workload, usage: Option<&Usage>) -> WorkloadRow {
    let pts: Vec<Point> = usage
        .into_iter()
        .flat_map(|u| u.points.iter())
        .map(|(at, cpu)| Point {
            at_ms: *at,
            cpu: *cpu,
            mem: f32::NAN,
            load: f32::NAN,
            psi_cpu: f32::NAN,
            psi_mem: f32::NAN,
            psi_io: f32::NAN,
        })
        .collect();
    let wend = pts.last().map(|p| p.at_ms).unwrap_or(0);
    let wmax = pts.iter().map(|p| p.cpu).fold(100.0f32, f32::max);
    let spec = LineSpec {
        metric: Metric::Cpu,
        class: "wl",
        max: wmax,
    };
    WorkloadRow {
        name: w.name.to_string(),
        runtime: w
            .runtime
            .map(|r| r.to_string())
            .unwrap_or_else(|| "?".into()),
        state: match &w.state {
            WorkloadState::Running => "running".into(),
            WorkloadState::Migrating { target, .. } => format!("migrating → {target}"),
        },
        since: display::time(w.since),
        cpu: usage.map_or_else(|| "–".into(), |u| display::pct(u.cpu_pct)),
        rss: usage.map_or_else(|| "–".into(), |u| display::bytes(u.rss_bytes)),
        spark: svg::chart(&pts, &[spec], wend, 15 * 60_000, 30, 120, 24)
            .with_time_axis(wend, 15 * 60_000),
    }
}

/// The whole page.
#[derive(Template, WebTemplate)]
#[template(path = "node.html")]
pub struct NodePage {
    /// Around it.
    pub chrome: Chrome,
    /// The content.
    pub v: NodeView,
}

/// Its live region.
#[derive(Template)]
#[template(path = "node_live.html")]
pub struct NodeLive {
    /// The content.
    pub v: NodeView,
}

/// Node `name`'s view now, as every handler of the page builds it.
fn view_now(p: &Projection, st: &AppState, name: &str, range: Option<&str>) -> Option<NodeView> {
    NodeView::build(p, name, range, Utc::now(), st.settings.silent_after)
}

/// `GET /nodes/{name}`.
pub async fn page(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<RangeQuery>,
    headers: HeaderMap,
) -> Response {
    let (v, caught_up) = read_view(&st, |p| view_now(p, &st, &name, q.range.as_deref()));
    let Some(v) = v else {
        return not_found(&format!("node {name}"));
    };
    let live = format!("/sse/nodes/{}?range={}", v.name, v.range);
    let title = format!("Node {}", v.name);
    let chrome = Chrome::new(&st, &headers, title, "cluster", live, caught_up);
    NodePage { chrome, v }.into_response()
}

/// `GET /sse/nodes/{name}`.
pub async fn live(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<RangeQuery>,
) -> impl IntoResponse {
    let key = format!("node/{name}/{}", q.range.as_deref().unwrap_or(""));
    sse::stream(st, key, move |st| {
        let v = view_now(&st.read(), st, &name, q.range.as_deref());
        v.map(|v| NodeLive { v }.render().unwrap_or_default())
            .unwrap_or_default()
    })
}

/// `GET /api/nodes/{name}`.
pub async fn api(State(st): St, Path(name): Path<String>, Query(q): Query<RangeQuery>) -> Response {
    match view_now(&st.read(), &st, &name, q.range.as_deref()) {
        Some(v) => Json(v).into_response(),
        None => not_found(&format!("node {name}")),
    }
}
