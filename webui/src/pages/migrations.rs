//! The Migrations page: newest first, every step with its duration, the
//! downtime, image size and outcome; failed and rolled-back ones stand out;
//! filters by node, outcome and time; paged.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{read_view, Chrome, MigrationRow, Pager, St};
use crate::display;
use crate::projection::{Projection, Status};
use crate::sse;

/// Rows per page.
pub const PER_PAGE: usize = 50;

/// Time filters offered: label and seconds.
pub const SINCE: [(&str, i64); 4] = [
    ("all", 0),
    ("1h", 3600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
];

/// `?node=&outcome=&since=&page=`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    /// Source or target.
    #[serde(default)]
    pub node: String,
    /// One of [`Status::as_str`].
    #[serde(default)]
    pub outcome: String,
    /// One of [`SINCE`]'s labels.
    #[serde(default)]
    pub since: String,
    /// Page, from 0.
    #[serde(default)]
    pub page: usize,
}

impl Filters {
    /// The query string of these filters on page `page`.
    pub fn query(&self, page: usize) -> String {
        format!(
            "node={}&outcome={}&since={}&page={page}",
            display::urlencode(&self.node),
            display::urlencode(&self.outcome),
            display::urlencode(&self.since)
        )
    }
}

/// A recent decision not to move anything.
#[derive(Debug, Clone, Serialize)]
pub struct DeferralRow {
    /// When.
    pub when: String,
    /// The node in trouble.
    pub source: String,
    /// The workload it would have moved.
    pub workload: String,
    /// The probability.
    pub probability: String,
    /// Why nothing moved.
    pub reason: String,
}

/// The Migrations page's content.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationsView {
    /// The filters applied.
    pub filters: Filters,
    /// Nodes to filter by.
    pub nodes: Vec<String>,
    /// Outcomes to filter by.
    pub outcomes: Vec<&'static str>,
    /// Time filters.
    pub since_options: Vec<&'static str>,
    /// All-time counts by outcome.
    pub counts: Vec<(&'static str, u64)>,
    /// Matching migrations kept.
    pub matching: usize,
    /// This page's rows.
    pub rows: Vec<MigrationRow>,
    /// Links to the newer and the older page.
    #[serde(flatten)]
    pub pager: Pager,
    /// Recent deferrals.
    pub deferrals: Vec<DeferralRow>,
}

impl MigrationsView {
    /// The view of `p` with `f` applied.
    pub fn build(p: &Projection, f: &Filters, now: DateTime<Utc>) -> Self {
        let outcome = Status::parse(&f.outcome);
        let since = SINCE
            .iter()
            .find(|(l, _)| *l == f.since)
            .map(|(_, s)| *s)
            .filter(|s| *s > 0)
            .map(|s| now - chrono::Duration::seconds(s));
        let node = f.node.trim();
        let matching: Vec<_> = p
            .placement
            .migrations
            .values()
            .rev()
            .filter(|m| node.is_empty() || m.source.as_str() == node || m.target.as_str() == node)
            .filter(|m| outcome.is_none_or(|o| m.status == o))
            .filter(|m| since.is_none_or(|s| m.requested_at.unwrap_or(m.first_seen) >= s))
            .collect();
        let start = f.page * PER_PAGE;
        let rows = matching
            .iter()
            .skip(start)
            .take(PER_PAGE)
            .map(|m| MigrationRow::of(m))
            .collect();
        Self {
            filters: f.clone(),
            nodes: p.nodes.keys().map(|n| n.to_string()).collect(),
            outcomes: Status::ALL.iter().map(|o| o.as_str()).collect(),
            since_options: SINCE.iter().map(|(l, _)| *l).collect(),
            counts: Status::ALL
                .iter()
                .map(|o| {
                    // The counter under "in_flight" counts every request
                    // ever seen (for /metrics); people want the ones still
                    // in flight now.
                    let n = if *o == Status::InFlight {
                        p.placement
                            .migrations
                            .values()
                            .filter(|m| m.status == Status::InFlight)
                            .count() as u64
                    } else {
                        p.counters.outcomes.get(o.as_str()).copied().unwrap_or(0)
                    };
                    (o.as_str(), n)
                })
                .collect(),
            matching: matching.len(),
            rows,
            pager: Pager::new("/migrations", f.page, PER_PAGE, matching.len(), |page| {
                f.query(page)
            }),
            deferrals: display::newest(&p.deferrals, 10, |when, d| DeferralRow {
                when,
                source: d.source.to_string(),
                workload: d
                    .workload
                    .as_ref()
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "–".into()),
                probability: display::prob(d.probability),
                reason: d.reason.clone(),
            }),
        }
    }
}

/// The whole page.
#[derive(Template, WebTemplate)]
#[template(path = "migrations.html")]
pub struct MigrationsPage {
    /// Around it.
    pub chrome: Chrome,
    /// The content.
    pub v: MigrationsView,
}

/// Its live region.
#[derive(Template)]
#[template(path = "migrations_live.html")]
pub struct MigrationsLive {
    /// The content.
    pub v: MigrationsView,
}

/// `GET /migrations`.
pub async fn page(
    State(st): St,
    Query(f): Query<Filters>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (v, caught_up) = read_view(&st, |p| MigrationsView::build(p, &f, Utc::now()));
    let live = format!("/sse/migrations?{}", f.query(f.page));
    let chrome = Chrome::new(&st, &headers, "Migrations", "migrations", live, caught_up);
    MigrationsPage { chrome, v }
}

/// `GET /sse/migrations`.
pub async fn live(State(st): St, Query(f): Query<Filters>) -> impl IntoResponse {
    let key = format!("migrations?{}", f.query(f.page));
    sse::stream(st, key, move |st| {
        let p = st.read();
        let v = MigrationsView::build(&p, &f, Utc::now());
        drop(p);
        MigrationsLive { v }.render().unwrap_or_default()
    })
}

/// `GET /api/migrations`.
pub async fn api(State(st): St, Query(f): Query<Filters>) -> Json<MigrationsView> {
    let p = st.read();
    Json(MigrationsView::build(&p, &f, Utc::now()))
}
