//! The Cluster page: one card per node with its recent CPU, memory, load and
//! PSI, the brain's belief about it, its workloads and its state; nodes in
//! trouble come first and are outlined.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

use super::{read_view, Chrome, MigrationRow, St};
use crate::display;
use crate::projection::{Life, Node, Projection, Status, WorkloadState};
use crate::series::{Metric, Point};
use crate::sse;
use crate::svg::{self, Chart, LineSpec};

/// How far back the sparklines go.
pub const SPARK_RANGE_MS: i64 = 15 * 60 * 1000;
/// Columns per sparkline: about one per 40 s, few enough to keep 200 cards small.
pub const SPARK_COLUMNS: usize = 24;

/// A node's state as people read it.
pub fn node_state(n: &Node, now: DateTime<Utc>, silent_after: Duration) -> &'static str {
    if matches!(n.life, Life::Left(..)) {
        return "left";
    }
    let silent = n
        .last_seen
        .is_none_or(|t| (now - t).to_std().unwrap_or_default() > silent_after);
    if silent {
        "silent"
    } else {
        "joined"
    }
}

/// Overload probability the brain gave, the larger of onset and sustained.
pub fn overload(n: &Node) -> Option<f32> {
    n.prediction.as_ref().map(|p| p.onset.max(p.sustained))
}

/// A workload named on a card.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadTag {
    /// Its name.
    pub name: String,
    /// Where it is going, while it migrates.
    pub migrating_to: Option<String>,
}

/// One node's card.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCard {
    /// Its name.
    pub name: String,
    /// `joined`, `silent` or `left`.
    pub state: &'static str,
    /// Whether it needs a look.
    pub trouble: bool,
    /// Why, in words (empty when fine).
    pub why: String,
    /// Latest CPU.
    pub cpu: String,
    /// Latest memory.
    pub mem: String,
    /// Latest load.
    pub load: String,
    /// Latest PSI cpu / memory / io.
    pub psi: String,
    /// Overload probability, when the brain predicted.
    pub prob: Option<String>,
    /// Whether that probability is high.
    pub prob_high: bool,
    /// Its workloads.
    pub workloads: Vec<WorkloadTag>,
    /// When it was last heard from.
    pub last_seen: String,
    /// Its drain, when an operator is emptying it ([`super::drain_line`]).
    pub draining: Option<String>,
    /// CPU and memory, last 15 minutes.
    #[serde(skip)]
    pub cpu_mem: Chart,
    /// Load and PSI, last 15 minutes.
    #[serde(skip)]
    pub load_psi: Chart,
}

/// Counts at the top of the page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Nodes joined and talking.
    pub joined: usize,
    /// Nodes joined but quiet.
    pub silent: usize,
    /// Nodes that left.
    pub left: usize,
    /// Nodes in trouble.
    pub trouble: usize,
    /// Workloads placed.
    pub workloads: usize,
    /// Migrations under way.
    pub in_flight: usize,
    /// Active model version.
    pub model: Option<u64>,
}

/// The Cluster page's content.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// Counts.
    pub totals: Totals,
    /// Cards, trouble first, then by name.
    pub nodes: Vec<NodeCard>,
    /// The latest few migrations.
    pub recent: Vec<MigrationRow>,
}

fn max_finite(points: &[Point], m: Metric) -> f32 {
    points
        .iter()
        .map(|p| p.get(m))
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
}

impl ClusterView {
    /// The view of `p` at `now`.
    pub fn build(p: &Projection, now: DateTime<Utc>, silent_after: Duration) -> Self {
        let mut totals = Totals {
            model: p.model.active,
            workloads: p.placement.workloads.len(),
            in_flight: p
                .placement
                .migrations
                .values()
                .rev()
                .take(1000)
                .filter(|m| m.status == Status::InFlight)
                .count(),
            ..Default::default()
        };
        let mut by_node: std::collections::BTreeMap<&str, Vec<WorkloadTag>> = Default::default();
        for w in p.placement.workloads.values() {
            by_node
                .entry(w.node.as_str())
                .or_default()
                .push(WorkloadTag {
                    name: w.name.to_string(),
                    migrating_to: match &w.state {
                        WorkloadState::Migrating { target, .. } => Some(target.to_string()),
                        WorkloadState::Running => None,
                    },
                });
        }
        let mut points = Vec::new();
        let mut nodes: Vec<NodeCard> = p
            .nodes
            .values()
            .map(|n| {
                let state = node_state(n, now, silent_after);
                match state {
                    "left" => totals.left += 1,
                    "silent" => totals.silent += 1,
                    _ => totals.joined += 1,
                }
                points.clear();
                points.extend(n.series.window(SPARK_RANGE_MS));
                let workloads = by_node.remove(n.name.as_str()).unwrap_or_default();
                let mut card = NodeCard::of(n, state, &points, workloads, now);
                card.draining = super::drain_line(&p.placement, &n.name);
                totals.trouble += usize::from(card.trouble);
                card
            })
            .collect();
        nodes.sort_by(|a, b| b.trouble.cmp(&a.trouble).then_with(|| a.name.cmp(&b.name)));
        let recent = p
            .placement
            .migrations
            .values()
            .rev()
            .take(5)
            .map(MigrationRow::of)
            .collect();
        Self {
            totals,
            nodes,
            recent,
        }
    }
}

impl NodeCard {
    /// Node `n`'s card, in `state`, with its recent `points`.
    fn of(
        n: &Node,
        state: &'static str,
        points: &[Point],
        workloads: Vec<WorkloadTag>,
        now: DateTime<Utc>,
    ) -> Self {
        let last = n.series.last();
        let get = |m: Metric| last.map(|l| l.get(m)).unwrap_or(f32::NAN);
        let prob = overload(n);
        let why = trouble(state, prob, get);
        let (cpu_mem, load_psi) = sparklines(n, points);
        NodeCard {
            name: n.name.to_string(),
            state,
            trouble: !why.is_empty() && state != "left",
            why: why.join(", "),
            cpu: display::pct(get(Metric::Cpu)),
            mem: display::pct(get(Metric::Mem)),
            load: display::num(get(Metric::Load)),
            psi: format!(
                "{}/{}/{}",
                display::pct(get(Metric::PsiCpu)),
                display::pct(get(Metric::PsiMem)),
                display::pct(get(Metric::PsiIo))
            ),
            prob: prob.map(display::prob),
            prob_high: prob.is_some_and(|p| p >= 0.5),
            workloads,
            last_seen: n
                .last_seen
                .map(|t| display::ago(now, t))
                .unwrap_or_else(|| "never".into()),
            draining: None,
            cpu_mem,
            load_psi,
        }
    }
}

/// Why a node in `state` needs a look, in words: silence, a likely
/// overload, or its latest CPU, memory or CPU pressure (`get`) running high.
fn trouble(state: &str, prob: Option<f32>, get: impl Fn(Metric) -> f32) -> Vec<String> {
    let mut why = Vec::new();
    if state == "silent" {
        why.push("silent".to_string());
    }
    if let Some(pr) = prob.filter(|p| *p >= 0.5) {
        why.push(format!("overload likely ({})", display::prob(pr)));
    }
    if state != "left" {
        if get(Metric::Cpu) >= 90.0 {
            why.push(format!("CPU {}", display::pct(get(Metric::Cpu))));
        }
        if get(Metric::Mem) >= 90.0 {
            why.push(format!("memory {}", display::pct(get(Metric::Mem))));
        }
        if get(Metric::PsiCpu) >= 25.0 {
            why.push(format!(
                "CPU pressure {}",
                display::pct(get(Metric::PsiCpu))
            ));
        }
    }
    why
}

/// The card's two sparklines: CPU and memory, load and CPU pressure.
fn sparklines(n: &Node, points: &[Point]) -> (Chart, Chart) {
    let end = n.series.last().map(|l| l.at_ms).unwrap_or(0);
    let load_max = max_finite(points, Metric::Load).max(n.capacity_cores.unwrap_or(1.0));
    let psi_max = max_finite(points, Metric::PsiCpu).max(10.0);
    let line = |metric: Metric, class: &'static str, max: f32| LineSpec { metric, class, max };
    let spark = |specs: &[LineSpec]| {
        svg::chart(points, specs, end, SPARK_RANGE_MS, SPARK_COLUMNS, 120, 28)
            .with_time_axis(end, SPARK_RANGE_MS)
    };
    (
        spark(&[
            line(Metric::Cpu, "cpu", 100.0),
            line(Metric::Mem, "mem", 100.0),
        ]),
        spark(&[
            line(Metric::Load, "load", load_max),
            line(Metric::PsiCpu, "psi", psi_max),
        ]),
    )
}

/// The whole page.
#[derive(Template, WebTemplate)]
#[template(path = "cluster.html")]
pub struct ClusterPage {
    /// Around it.
    pub chrome: Chrome,
    /// The content.
    pub v: ClusterView,
}

/// Its live region alone, pushed over SSE.
#[derive(Template)]
#[template(path = "cluster_live.html")]
pub struct ClusterLive {
    /// The content.
    pub v: ClusterView,
}

/// `GET /`.
pub async fn page(State(st): St, headers: HeaderMap) -> impl IntoResponse {
    let silent_after = st.settings.silent_after;
    let (v, caught_up) = read_view(&st, |p| ClusterView::build(p, Utc::now(), silent_after));
    let chrome = Chrome::new(
        &st,
        &headers,
        "Cluster",
        "cluster",
        "/sse/cluster",
        caught_up,
    );
    ClusterPage { chrome, v }
}

/// `GET /sse/cluster`.
pub async fn live(State(st): St) -> impl IntoResponse {
    sse::stream(st, "cluster".into(), |st| {
        let p = st.read();
        let v = ClusterView::build(&p, Utc::now(), st.settings.silent_after);
        drop(p);
        ClusterLive { v }.render().unwrap_or_default()
    })
}

/// `GET /api/cluster`.
pub async fn api(State(st): St) -> Json<ClusterView> {
    let p = st.read();
    Json(ClusterView::build(&p, Utc::now(), st.settings.silent_after))
}
