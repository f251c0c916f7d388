//! What an operator may do from the dashboard: ask for a migration, stop a
//! workload, ask the brain to retrain, drain a node and give it back. Each
//! only publishes a request event naming who asked; the brain and the
//! executors decide and act, and the log records it.
//!
//! Off unless an operator token is configured. With one, a person logs in
//! with the token and a name (the name becomes `requested_by`); the session
//! lives in a cookie (`HttpOnly`, `SameSite=Strict`) and carries a CSRF token
//! that every form sends back in a hidden field and that is checked on every
//! POST. Actions are POST only, so a link or an image can never trigger one.
//! Failed logins are throttled per client address ([`LoginThrottle`]), so
//! the token cannot be guessed at the speed of the network.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use loadshift_events::cordon::{DrainRequested, Uncordoned};
use loadshift_events::migration::{Reason, Requested};
use loadshift_events::model::TrainRequested;
use loadshift_events::workload::StopRequested;
use loadshift_events::{connection, Envelope, Event, NodeName, WorkloadName};
use serde::Deserialize;

use crate::display::html_escape;
use crate::listener::Peer;
use crate::pages::{Chrome, St};

/// The session cookie's name.
pub const COOKIE: &str = "loadshift_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 1000;

/// Failed logins an address may make within [`THROTTLE_WINDOW`] before
/// every further attempt from it (right token or not) is refused until the
/// window has passed.
pub const MAX_FAILED_LOGINS: u32 = 5;
/// How long failed logins are remembered.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most (the stalest go first), so a client with
/// many addresses cannot grow the table without bound.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed logins of one address since `first`.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
}

/// Counts failed logins per client address and refuses an address that
/// failed too often, so the operator token cannot be brute-forced.
///
/// Per address rather than global: a global lock-out would let anyone keep
/// the operator out by failing on purpose.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
    refused: AtomicU64,
}

impl LoginThrottle {
    /// Whether `who` may try now; when not, how long until it may.
    pub fn admit(&self, who: IpAddr) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = map.get(&who).copied() else {
            return Ok(());
        };
        let age = f.first.elapsed();
        if age >= THROTTLE_WINDOW {
            map.remove(&who);
            return Ok(());
        }
        if f.count >= MAX_FAILED_LOGINS {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(THROTTLE_WINDOW - age);
        }
        Ok(())
    }

    /// Records a failed login of `who`.
    pub fn failed(&self, who: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&who) {
            map.retain(|_, f| f.first.elapsed() < THROTTLE_WINDOW);
            if map.len() >= MAX_TRACKED_ADDRESSES {
                if let Some(stalest) = map.iter().min_by_key(|(_, f)| f.first).map(|(k, _)| *k) {
                    map.remove(&stalest);
                }
            }
        }
        let f = map.entry(who).or_insert(Failures {
            count: 0,
            first: Instant::now(),
        });
        f.count = f.count.saturating_add(1);
    }

    /// Forgets the failures of `who` after it logged in.
    pub fn succeeded(&self, who: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&who);
    }

    /// Attempts refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The name they gave; becomes `requested_by`.
    pub user: String,
    /// The token their forms must carry.
    pub csrf: String,
    created: Instant,
}

/// The operator token and the open sessions.
pub struct Operator {
    token: Option<String>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Failed logins per address.
    pub throttle: LoginThrottle,
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed token was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Operator {
    /// Actions on when `token` is set (an empty token counts as unset).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()),
            sessions: Mutex::new(HashMap::new()),
            throttle: LoginThrottle::default(),
        }
    }

    /// Login attempts refused by the throttle so far.
    pub fn throttled(&self) -> u64 {
        self.throttle.refused()
    }

    /// Whether actions are possible at all.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// The live session of the request carrying `headers`.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.token.as_ref()?;
        let id = cookie_value(headers, COOKIE)?;
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(id)?;
        if s.created.elapsed() > SESSION_TTL {
            map.remove(id);
            return None;
        }
        Some(s.clone())
    }

    /// Opens a session for `user` when `token` is right; returns its id.
    pub fn login(&self, token: &str, user: &str) -> Option<String> {
        let want = self.token.as_ref()?;
        if !same(want, token) {
            return None;
        }
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.created.elapsed() <= SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let id = random_token();
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: random_token(),
                created: Instant::now(),
            },
        );
        Some(id)
    }

    /// The session of `headers` if `csrf` is its token.
    ///
    /// # Errors
    /// The response to send: 403 when actions are off, nobody is logged in,
    /// or the CSRF token does not match.
    #[allow(clippy::result_large_err)]
    pub fn authorize(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
        if !self.enabled() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "Actions are off: start the webui with --operator-token (LOADSHIFT_OPERATOR_TOKEN).",
            ));
        }
        let Some(s) = self.session(headers) else {
            return Err(refuse(StatusCode::FORBIDDEN, "Log in as operator first."));
        };
        if !same(&s.csrf, csrf) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "The form's CSRF token does not match your session; reload the page and try again.",
            ));
        }
        Ok(s)
    }

    fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers, COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>refused</title><link rel=\"stylesheet\" href=\"/style.css\"><main><p class=\"error\">{}</p><p><a href=\"/\">Back to the cluster</a></p></main>",
            html_escape(why)
        )),
    )
        .into_response()
}

/// The login page.
#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Around it.
    pub chrome: Chrome,
    /// What went wrong with the last attempt.
    pub error: Option<String>,
}

/// `GET /login`.
pub async fn login_form(State(st): St, headers: HeaderMap) -> impl IntoResponse {
    let chrome = Chrome::new(&st, &headers, "Operator login", "", "", true);
    LoginPage {
        chrome,
        error: (!st.operator.enabled())
            .then(|| "Actions are off: no operator token is configured.".to_string()),
    }
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The operator token.
    pub token: String,
    /// Who is asking.
    pub user: String,
}

/// `POST /login`.
pub async fn login(
    State(st): St,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    // Without the listener (tests that call the router directly) every
    // request shares one address.
    let who = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(Peer(ip))| ip);
    if let Err(wait) = st.operator.throttle.admit(who) {
        tracing::warn!(%who, "login refused: too many failed attempts");
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed logins from your address; try again in {} s.",
                wait.as_secs().max(1)
            ),
        );
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let user = f.user.trim();
    let bad_user =
        user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control);
    let session = if bad_user {
        None
    } else {
        st.operator.login(&f.token, user)
    };
    if !bad_user && st.operator.enabled() {
        match session {
            Some(_) => st.operator.throttle.succeeded(who),
            None => {
                tracing::warn!(%who, "failed login");
                st.operator.throttle.failed(who);
            }
        }
    }
    match session {
        Some(id) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                        SESSION_TTL.as_secs()
                    ),
                ),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        None => {
            let chrome = Chrome::new(&st, &headers, "Operator login", "", "", true);
            let error = if bad_user {
                "Give your name (1 to 64 characters): it is recorded as who asked."
            } else {
                "Wrong token, or actions are off."
            };
            (
                StatusCode::UNAUTHORIZED,
                LoginPage {
                    chrome,
                    error: Some(error.into()),
                },
            )
                .into_response()
        }
    }
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// `POST /logout`.
pub async fn logout(State(st): St, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = st.operator.authorize(&headers, &f.csrf) {
        return r;
    }
    st.operator.logout(&headers);
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

/// "Migrate this workload to…".
#[derive(Debug, Deserialize)]
pub struct MigrateForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// Which workload.
    pub workload: String,
    /// Where it runs.
    pub source: String,
    /// Where to.
    pub target: String,
    /// Why, in the operator's words.
    #[serde(default)]
    pub reason: String,
}

/// Publishes what `user` asked for (`what`, for the log) and sends the
/// browser to `then`, or answers why it could not be published.
async fn publish_for(st: &St, env: Envelope, user: &str, what: &str, then: &str) -> Response {
    tracing::info!(subject = %env.subject(), user = %user, "{what} from the dashboard");
    match publish(st, env).await {
        Ok(()) => Redirect::to(then).into_response(),
        Err(r) => r,
    }
}

async fn publish(st: &St, env: Envelope) -> Result<(), Response> {
    let Some(js) = st.publisher.as_ref() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "This webui has no NATS connection to publish with.",
        ));
    };
    connection::publish(js, &env)
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::warn!(error = %e, "action not published");
            refuse(StatusCode::BAD_GATEWAY, &format!("Not published: {e}"))
        })
}

/// `POST /actions/migrate`: publishes `migration.<source>.requested`.
pub async fn migrate(st: St, headers: HeaderMap, Form(f): Form<MigrateForm>) -> Response {
    let session = match st.operator.authorize(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Ok(workload), Ok(source), Ok(target)) = (
        WorkloadName::new(f.workload.trim()),
        NodeName::new(f.source.trim()),
        NodeName::new(f.target.trim()),
    ) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Workload, source and target must be valid names.",
        );
    };
    if source == target {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Source and target are the same node.",
        );
    }
    let reason = f.reason.trim();
    let summary = if reason.is_empty() {
        format!("asked by {} from the dashboard", session.user)
    } else {
        reason.chars().take(500).collect()
    };
    let env = Envelope::new(
        st.settings.node.clone(),
        Event::MigrationRequested(Requested {
            migration: uuid::Uuid::now_v7(),
            workload,
            source,
            target,
            requested_by: session.user.clone(),
            reason: Reason {
                summary,
                ..Default::default()
            },
            mode: loadshift_events::migration::Mode::Auto,
        }),
    );
    publish_for(
        &st,
        env,
        &session.user,
        "migration requested",
        "/migrations",
    )
    .await
}

/// The longest grace period the dashboard's Stop takes, seconds: an hour
/// is already more than any workload needs to shut down cleanly.
pub const MAX_STOP_GRACE_S: u64 = 3600;

/// "Stop this workload".
#[derive(Debug, Deserialize)]
pub struct StopForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// Which workload.
    pub workload: String,
    /// The node the page shows it on (the request's subject; a node that
    /// handed it on forwards the request).
    pub node: String,
    /// Seconds between SIGTERM and SIGKILL, as typed.
    pub grace: String,
}

/// `POST /actions/stop`: publishes `workload.<node>.stop_requested`, the
/// same request as `loadshift workload stop NAME --grace Ns`.
pub async fn stop(st: St, headers: HeaderMap, Form(f): Form<StopForm>) -> Response {
    let session = match st.operator.authorize(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Ok(workload), Ok(node)) = (
        WorkloadName::new(f.workload.trim()),
        NodeName::new(f.node.trim()),
    ) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Workload and node must be valid names.",
        );
    };
    let Some(grace_s) = f
        .grace
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|g| *g <= MAX_STOP_GRACE_S)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("The grace period must be whole seconds, 0 to {MAX_STOP_GRACE_S}."),
        );
    };
    let back = format!("/nodes/{node}");
    let env = Envelope::new(
        st.settings.node.clone(),
        Event::WorkloadStopRequested(StopRequested {
            workload,
            node,
            grace_ms: grace_s * 1000,
            requested_by: session.user.clone(),
            forwarded_by: None,
        }),
    );
    publish_for(&st, env, &session.user, "stop requested", &back).await
}

/// "Retrain now".
#[derive(Debug, Deserialize)]
pub struct RetrainForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// Why, in the operator's words.
    #[serde(default)]
    pub reason: String,
}

/// `POST /actions/retrain`: publishes `model.<webui>.train_requested`.
pub async fn retrain(st: St, headers: HeaderMap, Form(f): Form<RetrainForm>) -> Response {
    let session = match st.operator.authorize(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason = f.reason.trim();
    let env = Envelope::new(
        st.settings.node.clone(),
        Event::ModelTrainRequested(TrainRequested {
            requested_by: session.user.clone(),
            reason: (!reason.is_empty()).then(|| reason.chars().take(500).collect()),
        }),
    );
    publish_for(&st, env, &session.user, "retrain requested", "/model").await
}

/// "Drain this node" and "Uncordon this node".
#[derive(Debug, Deserialize)]
pub struct NodeForm {
    /// The session's CSRF token.
    pub csrf: String,
    /// Which node.
    pub node: String,
    /// Why, in the operator's words (drain only).
    #[serde(default)]
    pub reason: String,
}

/// Publishes the node action `event` makes of the form's node and the
/// person logged in, then goes back to the node's page: the one shape of
/// both node actions.
async fn node_action(
    st: St,
    headers: &HeaderMap,
    f: &NodeForm,
    event: impl FnOnce(NodeName, String) -> Event,
) -> Response {
    let session = match st.operator.authorize(headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(node) = NodeName::new(f.node.trim()) else {
        return refuse(StatusCode::BAD_REQUEST, "The node must be a valid name.");
    };
    let back = format!("/nodes/{node}");
    let env = Envelope::new(st.settings.node.clone(), event(node, session.user.clone()));
    publish_for(&st, env, &session.user, "node action", &back).await
}

/// `POST /actions/drain`: publishes `node.<node>.drain_requested`.
pub async fn drain(st: St, headers: HeaderMap, Form(f): Form<NodeForm>) -> Response {
    let reason: String = f.reason.trim().chars().take(500).collect();
    node_action(st, &headers, &f, |node, requested_by| {
        Event::NodeDrainRequested(DrainRequested {
            node,
            requested_by,
            reason,
        })
    })
    .await
}

/// `POST /actions/uncordon`: publishes `node.<node>.uncordoned`.
pub async fn uncordon(st: St, headers: HeaderMap, Form(f): Form<NodeForm>) -> Response {
    node_action(st, &headers, &f, |node, requested_by| {
        Event::NodeUncordoned(Uncordoned { node, requested_by })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_need_the_token_and_forms_need_the_csrf() {
        let off = Operator::new(None);
        assert!(off.login("x", "alice").is_none());
        assert!(off.authorize(&HeaderMap::new(), "").is_err());

        let op = Operator::new(Some("s3cret".into()));
        assert!(op.login("wrong", "alice").is_none());
        let id = op.login("s3cret", "alice").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        let s = op.session(&h).unwrap();
        assert_eq!(s.user, "alice");
        assert!(op.authorize(&h, "forged").is_err());
        assert!(op.authorize(&HeaderMap::new(), &s.csrf).is_err());
        assert_eq!(op.authorize(&h, &s.csrf).unwrap().user, "alice");
    }

    #[test]
    fn an_address_that_fails_too_often_is_refused_even_with_the_token() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(t.admit(a).is_ok());
            t.failed(a);
        }
        let wait = t.admit(a).unwrap_err();
        assert!(wait <= THROTTLE_WINDOW);
        assert_eq!(t.refused(), 1);
        // Another address is not locked out by the first one's failures.
        assert!(t.admit(b).is_ok());
        t.failed(b);
        t.succeeded(b);
        assert!(t.admit(b).is_ok());
    }
}
