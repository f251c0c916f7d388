//! The pages: one module each, holding its view (what a person reads,
//! `Serialize` so `/api/...` returns the same thing as JSON), its template,
//! its page handler, its live-fragment handler and its API handler.
//!
//! This module holds what they share: the page chrome (navigation, who is
//! logged in, the CSRF token for forms) and the migration row that the node
//! and migrations pages both list.

pub mod cluster;
pub mod events;
pub mod migrations;
pub mod model;
pub mod node;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::display;
use crate::projection::{Migration, Projection, Status};
use crate::{AppState, Shared};
use loadshift_events::placement::Placement;
use loadshift_events::NodeName;

/// What every page shows around its content.
#[derive(Debug, Clone, Serialize)]
pub struct Chrome {
    /// The page's title.
    pub title: String,
    /// Which navigation entry is current.
    pub active: &'static str,
    /// The SSE URL of the page's live region.
    pub live_src: String,
    /// Whether an operator token is configured (actions possible at all).
    pub actions: bool,
    /// The logged-in operator, if any.
    pub user: Option<String>,
    /// The session's CSRF token, for hidden fields (empty when logged out).
    #[serde(skip)]
    pub csrf: String,
    /// Whether the replay has caught up with both streams.
    pub caught_up: bool,
    /// The time the page was rendered.
    pub now: String,
}

impl Chrome {
    /// The chrome for a request carrying `headers`.
    pub fn new(
        state: &AppState,
        headers: &HeaderMap,
        title: impl Into<String>,
        active: &'static str,
        live_src: impl Into<String>,
        caught_up: bool,
    ) -> Self {
        let session = state.operator.session(headers);
        Self {
            title: title.into(),
            active,
            live_src: live_src.into(),
            actions: state.operator.enabled(),
            user: session.as_ref().map(|s| s.user.clone()),
            csrf: session.map(|s| s.csrf).unwrap_or_default(),
            caught_up,
            now: display::time(Utc::now()),
        }
    }

    /// A chrome for rendering without a request (tests, benchmarks).
    pub fn plain(title: &str, active: &'static str) -> Self {
        Self {
            title: title.into(),
            active,
            live_src: String::new(),
            actions: false,
            user: None,
            csrf: String::new(),
            caught_up: true,
            now: display::time(Utc::now()),
        }
    }
}

/// One step of a migration with its duration.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// `dump`, `upload`, ...
    pub name: &'static str,
    /// `85 ms`.
    pub took: String,
}

/// One migration as a row.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationRow {
    /// Full id.
    pub id: String,
    /// First 8 characters of the id's random part, for people.
    pub short_id: String,
    /// Workload.
    pub workload: String,
    /// From.
    pub source: String,
    /// To.
    pub target: String,
    /// Who asked.
    pub requested_by: String,
    /// The reason's summary.
    pub reason: String,
    /// The details behind the reason (probability, model, features, loads after).
    pub reason_detail: String,
    /// Every reported step with its duration.
    pub steps: Vec<StepRow>,
    /// The mode that ran (or was asked for, while in flight), and why it
    /// fell back: `stream`, `copy (asked stream: no direct connection ...)`.
    pub mode: String,
    /// Frozen time, or `–`.
    pub downtime: String,
    /// Total, or `–`.
    pub total: String,
    /// Image size, or `–`.
    pub image: String,
    /// The planner's estimate of the freeze and the total (`–` for a
    /// person's request, which carries none).
    pub estimate: String,
    /// How far the estimate was from the actual, once it completed (`+50 %`:
    /// it expected half as much again), or empty.
    pub estimate_error: String,
    /// `completed`, `rolled_back`, ...
    pub outcome: &'static str,
    /// Whether it failed or was rolled back / refused.
    pub bad: bool,
    /// The failed step and its reason.
    pub failure: Option<String>,
    /// When it started, as a time.
    pub when: String,
    /// When it started, unix ms.
    pub when_ms: i64,
}

/// The planner's estimate of `m`'s freeze and total, and its error against
/// the timings measured: what lets people judge how much to trust the
/// planner's idea of a cheap move.
fn estimate_of(m: &Migration) -> (String, String) {
    let Some(e) = m.reason.as_ref().and_then(|r| r.estimate) else {
        return ("–".into(), String::new());
    };
    let shown = format!(
        "freeze {} · total {}",
        display::ms(e.freeze_ms),
        display::ms(e.total_ms)
    );
    let signed = |x: f64| format!("{:+.0} %", x * 100.0);
    let errors: Vec<String> = [
        ("freeze", e.freeze_error(&m.timings)),
        ("total", e.total_error(&m.timings)),
    ]
    .into_iter()
    .filter_map(|(name, err)| err.map(|x| format!("{name} {}", signed(x))))
    .collect();
    (shown, errors.join(" · "))
}

/// The mode column: what ran, else what was asked; and any fallback.
fn mode_cell(m: &Migration) -> String {
    let asked = m.requested_mode.map(|a| a.as_str());
    match (m.mode, asked, &m.fallback) {
        (Some(ran), Some(a), Some(why)) => format!("{ran} (asked {a}: {why})"),
        (Some(ran), _, Some(why)) => format!("{ran} ({why})"),
        (Some(ran), _, None) => ran.to_string(),
        (None, Some(a), _) => format!("asked {a}"),
        (None, None, _) => "–".into(),
    }
}

impl MigrationRow {
    /// The row of `m`.
    pub fn of(m: &Migration) -> Self {
        let t = &m.timings;
        let steps = [
            ("dump", t.dump_ms),
            ("upload", t.upload_ms),
            ("download", t.download_ms),
            ("restore", t.restore_ms),
            ("cleanup", t.cleanup_ms),
        ]
        .into_iter()
        .filter_map(|(name, v)| {
            v.map(|ms| StepRow {
                name,
                took: display::ms(ms),
            })
        })
        .collect();
        let (reason, reason_detail) = match &m.reason {
            Some(r) => {
                let mut d = Vec::new();
                if let Some(p) = r.probability {
                    d.push(format!("p(overload) {}", display::prob(p)));
                }
                if let Some(v) = r.model_version {
                    d.push(format!("model v{v}"));
                }
                if !r.top_features.is_empty() {
                    let f: Vec<String> = r
                        .top_features
                        .iter()
                        .take(3)
                        .map(|(n, v)| format!("{n}={v:.2}"))
                        .collect();
                    d.push(f.join(", "));
                }
                if let (Some(s), Some(t)) = (r.source_load_after_pct, r.target_load_after_pct) {
                    d.push(format!(
                        "after: source {}, target {}",
                        display::pct(s),
                        display::pct(t)
                    ));
                }
                (r.summary.clone(), d.join(" · "))
            }
            None => ("(request not in the kept log)".into(), String::new()),
        };
        let (estimate, estimate_error) = estimate_of(m);
        let when: DateTime<Utc> = m.requested_at.unwrap_or(m.first_seen);
        let id = m.id.to_string();
        Self {
            short_id: id
                .chars()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            id,
            workload: m.workload.to_string(),
            source: m.source.to_string(),
            target: m.target.to_string(),
            requested_by: m.requested_by.clone().unwrap_or_else(|| "?".into()),
            reason,
            reason_detail,
            steps,
            mode: mode_cell(m),
            downtime: t.downtime_ms.map(display::ms).unwrap_or_else(|| "–".into()),
            total: t.total_ms.map(display::ms).unwrap_or_else(|| "–".into()),
            image: m
                .image_bytes
                .map(display::bytes)
                .unwrap_or_else(|| "–".into()),
            estimate,
            estimate_error,
            outcome: m.status.as_str(),
            bad: m.status.is_bad(),
            failure: m
                .failure
                .as_ref()
                .map(|f| format!("failed at {}: {}", f.step, f.reason)),
            when: display::time(when),
            when_ms: when.timestamp_millis(),
        }
    }

    /// Whether it is still moving.
    pub fn in_flight(&self) -> bool {
        self.outcome == Status::InFlight.as_str()
    }
}

/// Serves the one stylesheet (no build chain: it is a file in the crate).
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../templates/style.css"),
    )
}

/// The links to the newer and the older page of a paged list (events,
/// migrations): one rule for both lists, drawn by `templates/pager.html`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pager {
    /// Link to the newer page, from the second page on.
    pub prev: Option<String>,
    /// Link to the older page, while items are left.
    pub next: Option<String>,
}

impl Pager {
    /// Page `page` (0: newest) of `total` items, `per_page` a page, whose
    /// pages are at `path` with the query `query` writes for a page.
    pub fn new(
        path: &str,
        page: usize,
        per_page: usize,
        total: usize,
        query: impl Fn(usize) -> String,
    ) -> Self {
        Self {
            prev: (page > 0).then(|| format!("{path}?{}", query(page - 1))),
            next: ((page + 1) * per_page < total).then(|| format!("{path}?{}", query(page + 1))),
        }
    }
}

/// A page that is not there.
pub fn not_found(what: &str) -> axum::response::Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::response::Html(format!(
            "<!doctype html><title>not found</title><p>{} not found. <a href=\"/\">Cluster</a></p>",
            display::html_escape(what)
        )),
    )
        .into_response()
}

/// A page's view and whether the projection had caught up, read under one
/// lock so that the banner and the content speak of the same state.
pub fn read_view<V>(st: &AppState, build: impl FnOnce(&Projection) -> V) -> (V, bool) {
    let p = st.read();
    (build(&p), p.caught_up())
}

/// Extracts the shared state (an alias to keep handler signatures short).
pub type St = axum::extract::State<Shared>;

/// `draining since 10:02:03 UTC, asked by alice (kernel update): 2 left;
/// cannot move: b (no target: ...)`, or `drained: empty, ...`, for the
/// cluster card and the node page; `None` when the node is not draining.
/// Read from the contract's placement fold, the answer the CLI prints.
pub fn drain_line(p: &Placement, node: &NodeName) -> Option<String> {
    let d = p.drain_progress(node)?;
    let asked = format!(
        "since {}, asked by {}{}",
        display::time(d.drain.since),
        d.drain.requested_by,
        if d.drain.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", d.drain.reason)
        }
    );
    if d.is_empty() {
        return Some(format!("drained: empty, cordoned {asked}"));
    }
    let stuck = d.stuck();
    let mut line = format!("draining {asked}: {} left", d.remaining.len());
    if !stuck.is_empty() {
        let list: Vec<String> = stuck
            .iter()
            .map(|(w, why)| format!("{w} ({why})"))
            .collect();
        line.push_str(&format!("; cannot move: {}", list.join(", ")));
    }
    Some(line)
}
