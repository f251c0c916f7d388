//! The dashboard's node actions over HTTP, against a real nats-server: the
//! node page offers "Drain" to a logged-in operator (and "Uncordon" once
//! the node drains) and "Stop" for each workload, a form without the
//! session's CSRF token publishes nothing, and a good one publishes the
//! request in the operator's name.

use std::time::Duration;

use chrono::Utc;
use loadshift_events::{stream, Envelope, Event};
use loadshift_testkit::fixtures as fixture;
use loadshift_testkit::http::send;
use loadshift_testkit::NatsServer;
use loadshift_webui::projection::{Limits, Projection};
use loadshift_webui::{router, AppState, Settings, Shared};

const PATIENCE: Duration = Duration::from_secs(10);

/// The dashboard on a free port of loopback, publishing to `nats`.
async fn dashboard(nats: &NatsServer) -> (Shared, async_nats::jetstream::Context, u16) {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    stream::declare(&js, &Default::default())
        .await
        .expect("streams");
    let mut p = Projection::new(Limits::default());
    for e in fixture::cluster(Utc::now()) {
        p.apply_envelope(&e);
    }
    let settings = Settings {
        operator_token: Some("right-token".into()),
        ..Default::default()
    };
    let state = AppState::new(p, settings, Some(js.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, js, port)
}

/// `GET`/`POST` on a blocking thread (the client is std's).
async fn http(
    port: u16,
    method: &'static str,
    path: &str,
    cookie: Option<String>,
    form: Option<String>,
) -> String {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        send(
            port,
            method,
            &path,
            cookie.as_deref(),
            form.as_deref(),
            PATIENCE,
        )
    })
    .await
    .unwrap()
    .expect("the dashboard answers")
}

/// The events in EVENTS now.
async fn events(js: &async_nats::jetstream::Context) -> Vec<Envelope> {
    let mut s = js.get_stream(stream::EVENTS).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push(Envelope::from_message(&m.subject, &m.payload).expect("a readable event"));
    }
    out
}

/// The value of `name="csrf"` in a page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// Logs in as alice with the right token; returns the session cookie.
async fn log_in(port: u16) -> String {
    let login = http(
        port,
        "POST",
        "/login",
        None,
        Some("token=right-token&user=alice".into()),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string()
}

// One long test on purpose: a person's visit (log in, drain, uncordon)
// in the order they would click, on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_page_drains_and_uncordons_in_the_operators_name_with_the_csrf_token() {
    let nats = NatsServer::start();
    let (state, js, port) = dashboard(&nats).await;
    let page = http(port, "GET", "/nodes/node2", None, None).await;
    assert!(
        page.contains("Log in as operator</a> to drain this node"),
        "{page}"
    );
    assert!(!page.contains("/actions/drain"));

    let cookie = log_in(port).await;
    let page = http(port, "GET", "/nodes/node2", Some(cookie.clone()), None).await;
    assert!(
        page.contains("action=\"/actions/drain\"") && page.contains("<button>Drain node2</button>"),
        "{page}"
    );
    let token = csrf(&page);
    let node1 = http(port, "GET", "/nodes/node1", Some(cookie.clone()), None).await;
    assert!(
        node1.contains("<option>node2</option>"),
        "node2 is a target before it drains"
    );

    let forged = http(
        port,
        "POST",
        "/actions/drain",
        Some(cookie.clone()),
        Some("csrf=forged&node=node2".into()),
    )
    .await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    let anonymous = http(
        port,
        "POST",
        "/actions/drain",
        None,
        Some(format!("csrf={token}&node=node2")),
    )
    .await;
    assert!(anonymous.starts_with("HTTP/1.1 403"), "{anonymous}");
    assert!(
        events(&js).await.is_empty(),
        "a refused form publishes nothing"
    );

    let ok = http(
        port,
        "POST",
        "/actions/drain",
        Some(cookie.clone()),
        Some(format!("csrf={token}&node=node2&reason=new+disk")),
    )
    .await;
    assert!(
        ok.starts_with("HTTP/1.1 303") && ok.contains("location: /nodes/node2"),
        "{ok}"
    );
    let published = events(&js).await;
    let [env] = published.as_slice() else {
        panic!("expected one event, got {published:?}")
    };
    assert_eq!(env.subject(), "node.node2.drain_requested");
    let Event::NodeDrainRequested(d) = &env.event else {
        panic!("{env:?}")
    };
    assert_eq!(
        (d.requested_by.as_str(), d.reason.as_str()),
        ("alice", "new disk")
    );

    // Once the log says so, both pages show the drain and the page offers
    // the way back; node2 is no longer offered as a target elsewhere.
    state.update(|p| p.apply_envelope(env));
    let page = http(port, "GET", "/nodes/node2", Some(cookie.clone()), None).await;
    assert!(
        page.contains("cordoned</span>") && page.contains("asked by alice (new disk)"),
        "{page}"
    );
    assert!(page.contains("<button>Uncordon node2</button>"), "{page}");
    let cluster = http(port, "GET", "/", None, None).await;
    assert!(
        cluster.contains("card joined draining") || cluster.contains(" draining\">"),
        "{cluster}"
    );
    let node1 = http(port, "GET", "/nodes/node1", Some(cookie.clone()), None).await;
    assert!(
        !node1.contains("<option>node2</option>"),
        "a draining node is offered as a target"
    );

    let back = http(
        port,
        "POST",
        "/actions/uncordon",
        Some(cookie),
        Some(format!("csrf={token}&node=node2")),
    )
    .await;
    assert!(back.starts_with("HTTP/1.1 303"), "{back}");
    let published = events(&js).await;
    assert!(
        matches!(&published[1].event, Event::NodeUncordoned(u) if u.node.as_str() == "node2" && u.requested_by == "alice"),
        "{published:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_page_stops_a_workload_in_the_operators_name_with_the_csrf_token() {
    let nats = NatsServer::start();
    let (_state, js, port) = dashboard(&nats).await;
    let page = http(port, "GET", "/nodes/node2", None, None).await;
    assert!(!page.contains("/actions/stop"), "{page}");
    let cookie = log_in(port).await;
    let page = http(port, "GET", "/nodes/node2", Some(cookie.clone()), None).await;
    assert!(
        page.contains("action=\"/actions/stop\"")
            && page.contains("<button>Stop redis-cache</button>"),
        "{page}"
    );
    let token = csrf(&page);
    let post = |form: String, cookie: Option<String>| {
        http(port, "POST", "/actions/stop", cookie, Some(form))
    };
    let forged = post(
        "csrf=forged&workload=redis-cache&node=node2&grace=10".into(),
        Some(cookie.clone()),
    )
    .await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    for grace in ["soon", "-1", "3601"] {
        let form = format!("csrf={token}&workload=redis-cache&node=node2&grace={grace}");
        let bad = post(form, Some(cookie.clone())).await;
        assert!(
            bad.starts_with("HTTP/1.1 400") && bad.contains("whole seconds"),
            "{bad}"
        );
    }
    assert!(
        events(&js).await.is_empty(),
        "a refused form publishes nothing"
    );

    let form = format!("csrf={token}&workload=redis-cache&node=node2&grace=3");
    let ok = post(form, Some(cookie)).await;
    assert!(
        ok.starts_with("HTTP/1.1 303") && ok.contains("location: /nodes/node2"),
        "{ok}"
    );
    let published = events(&js).await;
    let [env] = published.as_slice() else {
        panic!("expected one event, got {published:?}")
    };
    assert_eq!(env.subject(), "workload.node2.stop_requested");
    let Event::WorkloadStopRequested(s) = &env.event else {
        panic!("{env:?}")
    };
    assert_eq!(
        (
            s.workload.as_str(),
            s.grace_ms,
            s.requested_by.as_str(),
            s.forwarded_by.as_ref()
        ),
        ("redis-cache", 3000, "alice", None)
    );
}
