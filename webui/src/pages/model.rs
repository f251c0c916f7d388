//! The Model page: the active version, every kept version's scores beside
//! the best static-threshold baseline on the same samples, feature
//! importances, what it was trained on, and "retrain now" for an operator.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use loadshift_events::model::LabelScores;
use serde::Serialize;

use super::{read_view, Chrome, St};
use crate::display;
use crate::projection::{ModelVersion, Projection};
use crate::sse;

/// Scores of one label, as text.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRow {
    /// `onset` or `sustained`.
    pub label: &'static str,
    /// Model F1 / precision / recall.
    pub model: String,
    /// Baseline F1 / precision / recall and its threshold.
    pub baseline: String,
    /// Whether the model beats the baseline on F1.
    pub wins: bool,
    /// `41 positives in 1200 samples`.
    pub samples: String,
}

/// One feature's importance.
#[derive(Debug, Clone, Serialize)]
pub struct Importance {
    /// The feature.
    pub name: String,
    /// `23.4%`.
    pub share: String,
    /// Bar width in px (0..=200).
    pub bar: u32,
}

/// One model version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    /// Its number.
    pub version: u64,
    /// Whether it is the active one.
    pub active: bool,
    /// When it was trained.
    pub trained_at: String,
    /// Sample times trained on.
    pub time_range: String,
    /// TELEMETRY sequences trained on.
    pub telemetry_range: String,
    /// Rows and seconds.
    pub training: String,
    /// Scores per label.
    pub scores: Vec<ScoreRow>,
    /// Importances, largest first.
    pub importances: Vec<Importance>,
}

fn f1pr(s: &loadshift_events::model::Score) -> String {
    format!(
        "F1 {:.2} (precision {:.2}, recall {:.2})",
        s.f1, s.precision, s.recall
    )
}

fn score(label: &'static str, s: &LabelScores) -> ScoreRow {
    ScoreRow {
        label,
        model: f1pr(&s.model),
        baseline: format!(
            "{} at CPU ≥ {:.0}%",
            f1pr(&s.baseline),
            s.baseline_threshold_pct
        ),
        wins: s.model.f1 > s.baseline.f1,
        samples: format!(
            "{} positives in {} held-back samples",
            s.positives, s.samples
        ),
    }
}

impl VersionRow {
    fn of(v: &ModelVersion, active: Option<u64>) -> Self {
        let t = &v.trained;
        let total: f64 = t
            .importances
            .iter()
            .map(|(_, x)| x.max(0.0))
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        Self {
            version: t.version,
            active: active == Some(t.version),
            trained_at: display::time(v.at),
            time_range: format!(
                "{} → {}",
                display::time(t.time_range.0),
                display::time(t.time_range.1)
            ),
            telemetry_range: format!(
                "TELEMETRY seq {}–{}",
                t.telemetry_range.0, t.telemetry_range.1
            ),
            training: format!("{} rows, {:.1} s", t.train_rows, t.train_seconds),
            scores: vec![score("onset", &t.onset), score("sustained", &t.sustained)],
            importances: t
                .importances
                .iter()
                .take(15)
                .map(|(n, x)| {
                    let share = x.max(0.0) / total;
                    Importance {
                        name: n.clone(),
                        share: format!("{:.1}%", share * 100.0),
                        bar: (share * 200.0).round().clamp(0.0, 200.0) as u32,
                    }
                })
                .collect(),
        }
    }
}

/// A train request or activation, as a line.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    /// When.
    pub when: String,
    /// What.
    pub what: String,
}

/// The Model page's content.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    /// The active version's row.
    pub active: Option<VersionRow>,
    /// Why it was activated.
    pub active_reason: String,
    /// Every kept version, newest first.
    pub versions: Vec<VersionRow>,
    /// Activations, newest first.
    pub activations: Vec<DecisionRow>,
    /// Train requests, newest first.
    pub train_requests: Vec<DecisionRow>,
}

impl ModelView {
    /// The view of `p`.
    pub fn build(p: &Projection) -> Self {
        let m = &p.model;
        let active = m
            .active
            .and_then(|v| m.versions.get(&v))
            .map(|v| VersionRow::of(v, m.active));
        Self {
            active,
            active_reason: m
                .activations
                .back()
                .map(|(_, a)| a.reason.clone())
                .unwrap_or_default(),
            versions: m
                .versions
                .values()
                .rev()
                .take(50)
                .map(|v| VersionRow::of(v, m.active))
                .collect(),
            activations: m
                .activations
                .iter()
                .rev()
                .take(20)
                .map(|(at, a)| DecisionRow {
                    when: display::time(*at),
                    what: match a.replaces {
                        Some(old) => format!("v{} replaced v{old}: {}", a.version, a.reason),
                        None => format!("v{} activated: {}", a.version, a.reason),
                    },
                })
                .collect(),
            train_requests: m
                .train_requests
                .iter()
                .rev()
                .take(20)
                .map(|(at, t)| DecisionRow {
                    when: display::time(*at),
                    what: format!(
                        "{} asked{}",
                        t.requested_by,
                        t.reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                })
                .collect(),
        }
    }
}

/// The whole page.
#[derive(Template, WebTemplate)]
#[template(path = "model.html")]
pub struct ModelPage {
    /// Around it.
    pub chrome: Chrome,
    /// The content.
    pub v: ModelView,
}

/// Its live region.
#[derive(Template)]
#[template(path = "model_live.html")]
pub struct ModelLive {
    /// The content.
    pub v: ModelView,
}

/// `GET /model`.
pub async fn page(State(st): St, headers: HeaderMap) -> impl IntoResponse {
    let (v, caught_up) = read_view(&st, ModelView::build);
    let chrome = Chrome::new(&st, &headers, "Model", "model", "/sse/model", caught_up);
    ModelPage { chrome, v }
}

/// `GET /sse/model`.
pub async fn live(State(st): St) -> impl IntoResponse {
    sse::stream(st, "model".into(), |st| {
        let v = ModelView::build(&st.read());
        ModelLive { v }.render().unwrap_or_default()
    })
}

/// `GET /api/model`.
pub async fn api(State(st): St) -> Json<ModelView> {
    Json(ModelView::build(&st.read()))
}
