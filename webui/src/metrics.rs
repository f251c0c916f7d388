//! `GET /healthz` and `GET /metrics` (Prometheus text format, written by
//! hand: a handful of families does not need a metrics library).

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use serde::Serialize;

use crate::pages::cluster::node_state;
use crate::pages::St;
use crate::projection::{Projection, Status, StreamKind, DOWNTIME_BUCKETS};
use crate::AppState;

/// What `/healthz` says.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `ok` while the process serves.
    pub status: &'static str,
    /// Whether the replay reached the end of both streams.
    pub caught_up: bool,
    /// Messages folded per stream.
    pub folded: [u64; 2],
    /// Nodes known.
    pub nodes: usize,
}

/// `GET /healthz`: 200 while serving; `caught_up` says whether the figures
/// are current yet.
pub async fn healthz(State(st): St) -> Json<Health> {
    let p = st.read();
    Json(Health {
        status: "ok",
        caught_up: p.caught_up(),
        folded: p.counters.folded,
        nodes: p.nodes.len(),
    })
}

/// `GET /metrics`.
pub async fn metrics(State(st): St) -> impl IntoResponse {
    let body = render(&st, &st.read());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// The metrics text of `p`.
pub fn render(st: &AppState, p: &Projection) -> String {
    let mut o = String::with_capacity(4096);
    let now = Utc::now();
    let mut states = [("joined", 0u64), ("silent", 0), ("left", 0)];
    for n in p.nodes.values() {
        let s = node_state(n, now, st.settings.silent_after);
        if let Some(e) = states.iter_mut().find(|(k, _)| *k == s) {
            e.1 += 1;
        }
    }
    let c = &p.counters;
    by_label(
        &mut o,
        "loadshift_webui_nodes",
        "gauge",
        "Nodes known to the dashboard, by state.",
        "state",
        states,
    );
    by_label(
        &mut o,
        "loadshift_webui_migrations_total",
        "counter",
        "Migrations that reached each outcome (in_flight: migrations seen).",
        "outcome",
        Status::ALL.iter().map(|outcome| {
            let n = c.outcomes.get(outcome.as_str()).copied().unwrap_or(0);
            (outcome.as_str(), n)
        }),
    );
    downtime(&mut o, p);
    let per_stream = |values: &[u64; 2]| StreamKind::ALL.map(|s| (s.name(), values[s.index()]));
    by_label(
        &mut o,
        "loadshift_webui_events_folded_total",
        "counter",
        "Messages folded, by stream.",
        "stream",
        per_stream(&c.folded),
    );
    by_label(
        &mut o,
        "loadshift_webui_events_parked_total",
        "counter",
        "Messages that did not decode, by stream.",
        "stream",
        per_stream(&c.parked),
    );
    by_label(
        &mut o,
        "loadshift_webui_events_rejected_total",
        "counter",
        "Messages that did not decode, by reason.",
        "reason",
        loadshift_events::DecodeError::REASONS
            .iter()
            .map(|reason| (*reason, c.rejected.get(reason).copied().unwrap_or(0))),
    );
    by_label(
        &mut o,
        "loadshift_webui_consumer_lag",
        "gauge",
        "Messages in the stream not yet folded, as of the last message read.",
        "stream",
        per_stream(&c.pending),
    );
    by_label(
        &mut o,
        "loadshift_webui_last_sequence",
        "gauge",
        "Last stream sequence folded.",
        "stream",
        per_stream(&c.last_seq),
    );
    single(
        &mut o,
        "loadshift_webui_sse_clients",
        "gauge",
        "Open live-update connections.",
        st.sse_clients.load(Ordering::Relaxed),
    );
    http(&mut o, st);
    o
}

/// The downtime histogram: cumulative buckets, `+Inf`, sum and count.
fn downtime(o: &mut String, p: &Projection) {
    let name = "loadshift_webui_migration_downtime_seconds";
    let c = &p.counters;
    header(o, name, "histogram", "Frozen time of completed migrations.");
    let mut cum = 0u64;
    for (i, b) in DOWNTIME_BUCKETS.iter().enumerate() {
        cum += c.downtime_counts[i];
        let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += c.downtime_counts[DOWNTIME_BUCKETS.len()];
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(o, "{name}_sum {}", c.downtime_sum);
    let _ = writeln!(o, "{name}_count {}", c.downtime_count);
}

/// The listener's families: what hostile clients cost and what was done
/// about them.
fn http(o: &mut String, st: &AppState) {
    let h = &st.http;
    single(
        o,
        "loadshift_webui_http_connections",
        "gauge",
        "Connections being served.",
        h.open.load(Ordering::Relaxed),
    );
    by_label(
        o,
        "loadshift_webui_http_connections_total",
        "counter",
        "Connections accepted, and how those that did not end normally ended.",
        "outcome",
        [
            ("accepted", &h.accepted),
            ("evicted", &h.evicted),
            ("timed_out", &h.timed_out),
            ("overflow", &h.overflow),
            ("dropped", &h.dropped),
        ]
        .map(|(what, n)| (what, n.load(Ordering::Relaxed))),
    );
    single(
        o,
        "loadshift_webui_login_throttled_total",
        "counter",
        "Login attempts refused because their address failed too often.",
        st.operator.throttled(),
    );
}

/// A family's `# HELP` and `# TYPE` lines: written once so that no family
/// can have one without the other.
fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A family with one unlabelled sample.
fn single(o: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    header(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}

/// A family with one sample per value of one label (`name{label="v"} n`).
fn by_label<L: Display, V: Display>(
    o: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) {
    header(o, name, kind, help);
    for (l, v) in samples {
        let _ = writeln!(o, "{name}{{{label}=\"{l}\"}} {v}");
    }
}
