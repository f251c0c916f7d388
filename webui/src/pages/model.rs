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
    /// The model on the validation rows (later in time than its training
    /// rows), where its cut-off and the model-or-rule choice were made.
    pub validation_model: String,
    /// The best static rule on the same validation rows, and its threshold.
    pub validation_rule: String,
    /// `1200 validation samples`, or why there were none.
    pub validation_samples: String,
    /// What the planner alarms on for this label: the model at its cut-off
    /// or the static rule, because the model lost on validation.
    pub planner_uses: String,
    /// Whether the planner uses the static rule.
    pub rule_used: bool,
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
        // No validation rows (a first model, or an event from before they
        // existed): no scores to show rather than zeros that read as scores.
        validation_model: if s.validation_samples == 0 {
            "–".into()
        } else {
            f1pr(&s.validation_model)
        },
        validation_rule: if s.validation_samples == 0 {
            "–".into()
        } else {
            format!(
                "{} at CPU ≥ {:.0}%",
                f1pr(&s.validation_rule),
                s.validation_rule_pct
            )
        },
        validation_samples: if s.validation_samples == 0 {
            "no validation rows (too little history): cut-off from out-of-bag rows".into()
        } else {
            format!("{} validation samples", s.validation_samples)
        },
        planner_uses: if s.rule_used {
            format!(
                "static rule CPU ≥ {:.0}% (the model lost on validation)",
                s.validation_rule_pct
            )
        } else if s.cutoff > 0.0 {
            format!("model, cut-off p ≥ {:.3}", s.cutoff)
        } else {
            "model".into()
        },
        rule_used: s.rule_used,
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

/// Why the active model is active, in the numbers of the table beside it.
///
/// Built from the scores of `model.trained`, not from the brain's free-text
/// reason: that text compares against the bar the brain applied, which for
/// a bootstrap model is 0 on sustained (waived, see brain/src/training.rs),
/// and it read "sustained F1 … vs 0.000 of static thresholds" beside a table
/// where the static rule scored 0.98. The brain's words stay in the
/// Activations list below.
fn activation_line(
    t: &loadshift_events::model::Trained,
    activated: Option<(chrono::DateTime<chrono::Utc>, Option<u64>)>,
) -> String {
    let versus = |name: &str, s: &LabelScores| {
        format!(
            "{name} F1 {:.2} {} {:.2} for the rule CPU ≥ {:.0}%",
            s.model.f1,
            if s.model.f1 > s.baseline.f1 {
                "beats"
            } else {
                "does not beat"
            },
            s.baseline.f1,
            s.baseline_threshold_pct
        )
    };
    let when = match activated {
        Some((at, Some(old))) => format!(" Activated {}, replacing v{old}.", display::time(at)),
        Some((at, None)) => format!(" Activated {}.", display::time(at)),
        None => String::new(),
    };
    format!(
        "On {} held-back samples, {}; {}.{when}",
        t.onset.samples,
        versus("onset", &t.onset),
        versus("sustained", &t.sustained)
    )
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
                .active
                .and_then(|v| m.versions.get(&v))
                .map(|v| {
                    let since = m
                        .activations
                        .iter()
                        .rev()
                        .find(|(_, a)| a.version == v.trained.version);
                    activation_line(&v.trained, since.map(|(at, a)| (*at, a.replaces)))
                })
                .unwrap_or_default(),
            versions: m
                .versions
                .values()
                .rev()
                .take(50)
                .map(|v| VersionRow::of(v, m.active))
                .collect(),
            activations: display::newest(&m.activations, 20, |when, a| DecisionRow {
                when,
                what: match a.replaces {
                    Some(old) => format!("v{} replaced v{old}: {}", a.version, a.reason),
                    None => format!("v{} activated: {}", a.version, a.reason),
                },
            }),
            train_requests: display::newest(&m.train_requests, 20, |when, t| DecisionRow {
                when,
                what: format!(
                    "{} asked{}",
                    t.requested_by,
                    t.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bootstrap model as the brain trains it: better than the rule on
    /// onset, a little worse on sustained (read from JSON so that a field
    /// added to the payload with a default does not break the test).
    fn trained() -> loadshift_events::model::Trained {
        serde_json::from_str(
            r#"{"version":1,"telemetry_range":[0,0],"time_range":["2013-08-01T00:00:00Z","2013-08-31T00:00:00Z"],"features":["cpu"],"hyper_parameters":[],"onset":{"model":{"precision":0.5,"recall":0.7,"f1":0.612},"baseline":{"precision":0.3,"recall":0.5,"f1":0.401},"baseline_threshold_pct":80.0,"positives":10,"samples":1200},"sustained":{"model":{"precision":0.9,"recall":0.9,"f1":0.951},"baseline":{"precision":0.9,"recall":0.9,"f1":0.982},"baseline_threshold_pct":85.0,"positives":10,"samples":1200},"importances":[],"train_rows":900,"train_seconds":1.0}"#,
        )
        .expect("the example model.trained decodes")
    }

    #[test]
    fn the_activation_line_quotes_the_scores_of_the_table() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let line = activation_line(&trained(), Some((at, None)));
        assert!(
            line.starts_with(
                "On 1200 held-back samples, onset F1 0.61 beats 0.40 for the rule CPU ≥ 80%; \
                 sustained F1 0.95 does not beat 0.98 for the rule CPU ≥ 85%. Activated "
            ),
            "{line}"
        );
        // The row of the table beside it says the same numbers.
        let row = score("sustained", &trained().sustained);
        assert!(row.baseline.starts_with("F1 0.98"), "{}", row.baseline);
        assert!(!line.contains("0.000"));
    }
}
