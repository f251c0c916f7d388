//! The Events page: the log itself, newest first, paged, filtered by subject
//! (NATS wildcards) and kind, each event's JSON pretty-printed, with the NATS
//! CLI commands that show the same thing to an operator.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{read_view, Chrome, Pager, St};
use crate::display;
use crate::projection::{LoggedEvent, Projection, StreamKind};
use crate::sse;

/// Events per page.
pub const PER_PAGE: usize = 50;

/// `?stream=&subject=&kind=&page=`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    /// `EVENTS` (default) or `TELEMETRY`.
    #[serde(default)]
    pub stream: String,
    /// A subject filter with NATS wildcards (`migration.node2.>`).
    #[serde(default)]
    pub subject: String,
    /// A kind (`migration.completed`).
    #[serde(default)]
    pub kind: String,
    /// Page, from 0.
    #[serde(default)]
    pub page: usize,
}

impl Filters {
    fn stream(&self) -> StreamKind {
        if self.stream == "TELEMETRY" {
            StreamKind::Telemetry
        } else {
            StreamKind::Events
        }
    }

    /// The query string of these filters on page `page`.
    pub fn query(&self, page: usize) -> String {
        format!(
            "stream={}&subject={}&kind={}&page={page}",
            self.stream().name(),
            display::urlencode(&self.subject),
            display::urlencode(&self.kind)
        )
    }
}

/// Whether `subject` matches NATS filter `filter` (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One event as a row.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Stream sequence.
    pub seq: u64,
    /// Subject.
    pub subject: String,
    /// Kind.
    pub kind: String,
    /// Emitting node.
    pub node: String,
    /// When.
    pub when: String,
    /// The JSON, pretty-printed.
    pub json: String,
    /// `nats stream get EVENTS 42`.
    pub command: String,
    /// Why it did not fold, if it did not.
    pub error: Option<String>,
}

impl EventRow {
    fn of(e: &LoggedEvent) -> Self {
        let json = serde_json::from_str::<serde_json::Value>(&e.raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| e.raw.to_string());
        Self {
            seq: e.seq,
            subject: e.subject.clone(),
            kind: e.kind.clone(),
            node: e.node.clone(),
            when: e
                .occurred_at
                .map(display::time)
                .unwrap_or_else(|| "?".into()),
            json,
            command: format!("nats stream get {} {}", e.stream.name(), e.seq),
            error: e.error.clone(),
        }
    }
}

/// The Events page's content.
#[derive(Debug, Clone, Serialize)]
pub struct EventsView {
    /// The filters applied.
    pub filters: Filters,
    /// The stream shown.
    pub stream: &'static str,
    /// Kinds to filter by.
    pub kinds: Vec<&'static str>,
    /// Matching events kept.
    pub matching: usize,
    /// How many the page keeps for this stream.
    pub kept: usize,
    /// The command that shows the same events.
    pub command: String,
    /// The command that follows them live.
    pub follow: String,
    /// This page's rows.
    pub rows: Vec<EventRow>,
    /// Links to the newer and the older page.
    #[serde(flatten)]
    pub pager: Pager,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl EventsView {
    /// The view of `p` with `f` applied.
    pub fn build(p: &Projection, f: &Filters) -> Self {
        let stream = f.stream();
        let log = match stream {
            StreamKind::Events => &p.events_log,
            StreamKind::Telemetry => &p.telemetry_log,
        };
        let subject = f.subject.trim();
        let kind = f.kind.trim();
        let matching: Vec<&LoggedEvent> = log
            .iter()
            .rev()
            .filter(|e| subject.is_empty() || subject_matches(subject, &e.subject))
            .filter(|e| kind.is_empty() || e.kind == kind)
            .collect();
        let start = f.page * PER_PAGE;
        let (command, follow) = if subject.is_empty() {
            (
                format!("nats stream view {}", stream.name()),
                match stream {
                    StreamKind::Events => {
                        "nats sub 'node.>' (or 'migration.>', 'model.>', 'workload.>')".to_string()
                    }
                    StreamKind::Telemetry => "nats sub 'telemetry.>'".to_string(),
                },
            )
        } else {
            (
                format!(
                    "nats stream view {} --subject {}",
                    stream.name(),
                    shell_quote(subject)
                ),
                format!("nats sub {}", shell_quote(subject)),
            )
        };
        Self {
            filters: f.clone(),
            stream: stream.name(),
            kinds: loadshift_events::Kind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect(),
            matching: matching.len(),
            kept: log.len(),
            command,
            follow,
            rows: matching
                .iter()
                .skip(start)
                .take(PER_PAGE)
                .map(|e| EventRow::of(e))
                .collect(),
            pager: Pager::new("/events", f.page, PER_PAGE, matching.len(), |page| {
                f.query(page)
            }),
        }
    }
}

/// The whole page.
#[derive(Template, WebTemplate)]
#[template(path = "events.html")]
pub struct EventsPage {
    /// Around it.
    pub chrome: Chrome,
    /// The content.
    pub v: EventsView,
}

/// Its live region.
#[derive(Template)]
#[template(path = "events_live.html")]
pub struct EventsLive {
    /// The content.
    pub v: EventsView,
}

/// `GET /events`.
pub async fn page(
    State(st): St,
    Query(f): Query<Filters>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (v, caught_up) = read_view(&st, |p| EventsView::build(p, &f));
    let live = format!("/sse/events?{}", f.query(f.page));
    let chrome = Chrome::new(&st, &headers, "Events", "events", live, caught_up);
    EventsPage { chrome, v }
}

/// `GET /sse/events`.
pub async fn live(State(st): St, Query(f): Query<Filters>) -> impl IntoResponse {
    let key = format!("events?{}", f.query(f.page));
    sse::stream(st, key, move |st| {
        let v = EventsView::build(&st.read(), &f);
        EventsLive { v }.render().unwrap_or_default()
    })
}

/// `GET /api/events`.
pub async fn api(State(st): St, Query(f): Query<Filters>) -> Json<EventsView> {
    Json(EventsView::build(&st.read(), &f))
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn nats_wildcards() {
        assert!(subject_matches(
            "migration.node2.>",
            "migration.node2.requested"
        ));
        assert!(subject_matches(
            "migration.*.completed",
            "migration.n1.completed"
        ));
        assert!(!subject_matches(
            "migration.*.completed",
            "migration.n1.failed"
        ));
        assert!(subject_matches("node.n1.joined", "node.n1.joined"));
        assert!(!subject_matches("node.>", "node"));
    }
}
