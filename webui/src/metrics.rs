//! `GET /healthz` and `GET /metrics` (Prometheus text format, written by
//! hand: a handful of families does not need a metrics library).

use std::fmt::Write as _;
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
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_nodes Nodes known to the dashboard, by state."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_nodes gauge");
    for (s, n) in states {
        let _ = writeln!(o, "loadshift_webui_nodes{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(o, "# HELP loadshift_webui_migrations_total Migrations that reached each outcome (in_flight: migrations seen).");
    let _ = writeln!(o, "# TYPE loadshift_webui_migrations_total counter");
    for outcome in Status::ALL {
        let n = p
            .counters
            .outcomes
            .get(outcome.as_str())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "loadshift_webui_migrations_total{{outcome=\"{}\"}} {n}",
            outcome.as_str()
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_migration_downtime_seconds Frozen time of completed migrations."
    );
    let _ = writeln!(
        o,
        "# TYPE loadshift_webui_migration_downtime_seconds histogram"
    );
    let mut cum = 0u64;
    for (i, b) in DOWNTIME_BUCKETS.iter().enumerate() {
        cum += p.counters.downtime_counts[i];
        let _ = writeln!(
            o,
            "loadshift_webui_migration_downtime_seconds_bucket{{le=\"{b}\"}} {cum}"
        );
    }
    cum += p.counters.downtime_counts[DOWNTIME_BUCKETS.len()];
    let _ = writeln!(
        o,
        "loadshift_webui_migration_downtime_seconds_bucket{{le=\"+Inf\"}} {cum}"
    );
    let _ = writeln!(
        o,
        "loadshift_webui_migration_downtime_seconds_sum {}",
        p.counters.downtime_sum
    );
    let _ = writeln!(
        o,
        "loadshift_webui_migration_downtime_seconds_count {}",
        p.counters.downtime_count
    );
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_events_folded_total Messages folded, by stream."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_events_folded_total counter");
    for s in StreamKind::ALL {
        let _ = writeln!(
            o,
            "loadshift_webui_events_folded_total{{stream=\"{}\"}} {}",
            s.name(),
            p.counters.folded[s.index()]
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_events_parked_total Messages that did not decode, by stream."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_events_parked_total counter");
    for s in StreamKind::ALL {
        let _ = writeln!(
            o,
            "loadshift_webui_events_parked_total{{stream=\"{}\"}} {}",
            s.name(),
            p.counters.parked[s.index()]
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_events_rejected_total Messages that did not decode, by reason."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_events_rejected_total counter");
    for reason in loadshift_events::DecodeError::REASONS {
        let _ = writeln!(
            o,
            "loadshift_webui_events_rejected_total{{reason=\"{reason}\"}} {}",
            p.counters.rejected.get(reason).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(o, "# HELP loadshift_webui_consumer_lag Messages in the stream not yet folded, as of the last message read.");
    let _ = writeln!(o, "# TYPE loadshift_webui_consumer_lag gauge");
    for s in StreamKind::ALL {
        let _ = writeln!(
            o,
            "loadshift_webui_consumer_lag{{stream=\"{}\"}} {}",
            s.name(),
            p.counters.pending[s.index()]
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_last_sequence Last stream sequence folded."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_last_sequence gauge");
    for s in StreamKind::ALL {
        let _ = writeln!(
            o,
            "loadshift_webui_last_sequence{{stream=\"{}\"}} {}",
            s.name(),
            p.counters.last_seq[s.index()]
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_sse_clients Open live-update connections."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_sse_clients gauge");
    let _ = writeln!(
        o,
        "loadshift_webui_sse_clients {}",
        st.sse_clients.load(Ordering::Relaxed)
    );
    http(&mut o, st);
    o
}

/// The listener's families: what hostile clients cost and what was done
/// about them.
fn http(o: &mut String, st: &AppState) {
    let h = &st.http;
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_http_connections Connections being served."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_http_connections gauge");
    let _ = writeln!(
        o,
        "loadshift_webui_http_connections {}",
        h.open.load(Ordering::Relaxed)
    );
    let _ = writeln!(o, "# HELP loadshift_webui_http_connections_total Connections accepted, and how those that did not end normally ended.");
    let _ = writeln!(o, "# TYPE loadshift_webui_http_connections_total counter");
    for (what, n) in [
        ("accepted", &h.accepted),
        ("evicted", &h.evicted),
        ("timed_out", &h.timed_out),
        ("overflow", &h.overflow),
        ("dropped", &h.dropped),
    ] {
        let _ = writeln!(
            o,
            "loadshift_webui_http_connections_total{{outcome=\"{what}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        o,
        "# HELP loadshift_webui_login_throttled_total Login attempts refused because their address failed too often."
    );
    let _ = writeln!(o, "# TYPE loadshift_webui_login_throttled_total counter");
    let _ = writeln!(
        o,
        "loadshift_webui_login_throttled_total {}",
        st.operator.throttled()
    );
}
