//! Each role's NATS permissions, tried against a real nats-server started
//! with the configuration `loadshift up` writes: what a role's job needs
//! works, and what the issue's hostile user did is refused.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use loadshift_cli::up::auth::{self, AuthDir};
use loadshift_events::connection::{self, NatsOptions};
use loadshift_events::workload::{StartRequested, WorkloadSpec};
use loadshift_events::{stream, Envelope, Event, NodeName, WorkloadName};
use loadshift_testkit::NatsServer;

fn n(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

/// A server requiring the identities of a cluster of node1 (control
/// plane), node2 and node3 (workers), with the streams declared.
struct Secured {
    server: NatsServer,
    auth: AuthDir,
    _dir: tempfile::TempDir,
}

impl Secured {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [n("node1"), n("node2"), n("node3")];
        let auth =
            AuthDir::generate(&dir.path().join("auth"), &auth::roles(&nodes, &nodes[1..])).unwrap();
        let conf = std::fs::read_to_string(auth.server_conf()).unwrap();
        let server = NatsServer::start_with(&conf);
        let me = Self {
            server,
            auth,
            _dir: dir,
        };
        let js = me.js("operator").await;
        stream::declare(&js, &Default::default()).await.unwrap();
        me
    }

    async fn client(&self, role: &str) -> async_nats::Client {
        let creds = self.auth.creds(role).expect("a known role");
        connection::connect(&opts(&self.server.url(), Some(&creds)), false)
            .await
            .unwrap_or_else(|e| panic!("{role} cannot connect: {e}"))
    }

    /// A JetStream context whose requests give up after 2 s: a refused
    /// publish gets no answer at all (the server only tells the connection),
    /// and the test must go on to check the log.
    async fn js(&self, role: &str) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(self.client(role).await)
    }

    /// How many messages of `subject` the log holds (asked as the operator).
    async fn count(&self, subject: &str) -> u64 {
        let js = self.js("operator").await;
        let name = if subject.starts_with("telemetry") {
            stream::TELEMETRY
        } else {
            stream::EVENTS
        };
        let s = js.get_stream(name).await.unwrap();
        let info = s.info_with_subjects(subject).await.unwrap().next().await;
        match info {
            Some(Ok((_, count))) => count as u64,
            _ => 0,
        }
    }
}

fn opts(url: &str, creds: Option<&Path>) -> NatsOptions {
    NatsOptions {
        url: url.into(),
        credentials: creds.map(Path::to_path_buf),
        client_name: "auth-test".into(),
        ..Default::default()
    }
}

/// The issue's first bullet: a hand-written start request running a shell.
fn forged_start(node: &str) -> Envelope {
    Envelope::new(
        n("cli"),
        Event::WorkloadStartRequested(StartRequested {
            workload: WorkloadName::new("owned").unwrap(),
            node: n(node),
            spec: WorkloadSpec::process(vec!["sh".into(), "-c".into(), "id > owned".into()]),
            requested_by: "alice".into(),
        }),
    )
}

async fn raw_publish(js: &jetstream::Context, subject: &str) -> bool {
    match js.publish(subject.to_string(), "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

/// `client` answers every request on `subject` with `body`, from now on.
async fn answer_on(client: async_nats::Client, subject: &'static str, body: &'static str) {
    let mut asks = client.subscribe(subject).await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = asks.next().await {
            if let Some(reply) = m.reply {
                let _ = client.publish(reply, body.into()).await;
            }
        }
    });
}

/// Then: `asker` may ask `subject` and `answerer` may answer it: the
/// answer `body` comes back.
async fn answered(
    s: &Secured,
    (answerer, body): (&str, &'static str),
    (asker, subject): (&str, &'static str),
) {
    answer_on(s.client(answerer).await, subject, body).await;
    let answer = s
        .client(asker)
        .await
        .request(subject, "{}".into())
        .await
        .unwrap_or_else(|e| panic!("{asker} asked {subject}: {e}"));
    assert_eq!(
        &answer.payload[..],
        body.as_bytes(),
        "{asker} asked {subject}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_connection_is_refused() {
    let s = Secured::start().await;
    let err = connection::connect(&opts(&s.server.url(), None), false)
        .await
        .expect_err("an anonymous client got in");
    assert!(err.to_string().contains("--nats-creds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_says_only_its_own_nodes_telemetry() {
    let s = Secured::start().await;
    let js = s.js("agent-node2").await;
    stream::declare(&js, &Default::default()).await.unwrap();
    assert!(raw_publish(&js, "telemetry.node2").await);
    assert!(raw_publish(&js, "node.node2.joined").await);
    for forged in [
        "telemetry.node3",
        "node.node3.joined",
        "node.node2.predicted",
        "node.node2.drain_requested",
        "node.node2.drain_blocked",
        "workload.node2.start_requested",
        "migration.node2.requested",
    ] {
        assert!(!raw_publish(&js, forged).await, "agent published {forged}");
        assert_eq!(s.count(forged).await, 0, "{forged} is in the log");
    }
    assert_eq!(s.count("telemetry.node2").await, 1);
    // Nor can it read the log.
    let events = js.get_stream(stream::EVENTS).await.unwrap();
    assert!(events
        .create_consumer(pull::Config::default())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_reads_only_its_own_node_and_says_no_model_events() {
    let s = Secured::start().await;
    let js = s.js("executor-node2").await;
    stream::declare(&js, &Default::default()).await.unwrap();
    stream::checkpoint_store(&js, &Default::default())
        .await
        .expect("executors use the checkpoint bucket");
    let events = js.get_stream(stream::EVENTS).await.unwrap();
    let mine = pull::Config {
        durable_name: Some("executor-node2".into()),
        filter_subject: "*.node2.>".into(),
        ..Default::default()
    };
    events
        .create_consumer(mine.clone())
        .await
        .expect("its own consumer");
    for filter in ["*.node3.>", "migration.node3.>", ">", ""] {
        let theirs = pull::Config {
            filter_subject: filter.into(),
            ..mine.clone()
        };
        assert!(
            events.create_consumer(theirs).await.is_err(),
            "executor-node2 read {filter:?}"
        );
    }
    let other_name = pull::Config {
        durable_name: Some("executor-node3".into()),
        filter_subject: "*.node3.>".into(),
        ..Default::default()
    };
    assert!(events.create_consumer(other_name).await.is_err());
    assert!(raw_publish(&js, "workload.node2.started").await);
    // A source asks its target whether it is alive; the target answers.
    answered(
        &s,
        ("executor-node3", "pong"),
        ("executor-node2", "loadshift.executor.node3.ping"),
    )
    .await;
    for forged in [
        "model.node2.trained",
        "model.node2.activated",
        "workload.node3.started",
        "workload.node2.start_requested",
        "migration.node2.requested",
    ] {
        assert!(
            !raw_publish(&js, forged).await,
            "executor published {forged}"
        );
        assert_eq!(s.count(forged).await, 0, "{forged} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brain_decides_but_cannot_start_workloads() {
    let s = Secured::start().await;
    let js = s.js("brain").await;
    assert!(raw_publish(&js, "migration.node2.requested").await);
    assert!(raw_publish(&js, "model.node1.trained").await);
    // It says what a drain cannot move, but only people drain.
    assert!(raw_publish(&js, "node.node2.drain_blocked").await);
    assert!(!raw_publish(&js, "node.node2.drain_requested").await);
    let env = forged_start("node2");
    assert!(connection::publish(&js, &env).await.is_err());
    assert_eq!(s.count("workload.node2.start_requested").await, 0);
    // It reads both streams.
    let events = js.get_stream(stream::EVENTS).await.unwrap();
    events
        .create_consumer(pull::Config {
            durable_name: Some("brain-events".into()),
            ..Default::default()
        })
        .await
        .expect("the brain reads EVENTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_but_executors_reads_checkpoint_images() {
    let s = Secured::start().await;
    let exec = s.js("executor-node3").await;
    let store = stream::checkpoint_store(&exec, &Default::default())
        .await
        .unwrap();
    store
        .put("w1", &mut &b"a process's whole memory"[..])
        .await
        .unwrap();
    let mut back = Vec::new();
    let mut obj = s
        .js("executor-node2")
        .await
        .get_object_store(stream::CHECKPOINTS)
        .await
        .unwrap()
        .get("w1")
        .await
        .expect("another executor fetches the image");
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut back)
        .await
        .unwrap();
    assert_eq!(back, b"a process's whole memory");
    for role in ["operator", "brain", "webui", "agent-node2"] {
        let js = s.js(role).await;
        assert!(
            js.get_object_store(stream::CHECKPOINTS).await.is_err(),
            "{role} opened the checkpoint bucket"
        );
        let client = s.client(role).await;
        // A plain subscription to the bucket's subjects is refused too: the
        // server closes it (no message ever arrives).
        let sub = client.subscribe("$O.CHECKPOINTS.>").await;
        if let Ok(mut sub) = sub {
            store.put("w2", &mut &b"more memory"[..]).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
            assert!(!matches!(got, Ok(Some(_))), "{role} captured a chunk");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_executors_claim_workload_names() {
    let s = Secured::start().await;
    let exec = s.js("executor-node2").await;
    let kv = exec
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: auth::NAMES_BUCKET.into(),
            history: 1,
            ..Default::default()
        })
        .await
        .expect("executors open the name registry");
    kv.create("w1", "node2".into()).await.expect("a claim");
    assert!(kv.create("w1", "node3".into()).await.is_err());
    let entry = kv.entry("w1").await.unwrap().expect("the claim");
    kv.delete_expect_revision("w1", Some(entry.revision))
        .await
        .expect("a release");
    let other = s
        .js("executor-node3")
        .await
        .get_key_value(auth::NAMES_BUCKET)
        .await
        .expect("every executor reaches it");
    other.put("w2", "node3".into()).await.expect("a hand-over");
    for role in ["agent-node2", "brain", "webui", "operator"] {
        let js = s.js(role).await;
        assert!(
            js.get_key_value(auth::NAMES_BUCKET).await.is_err(),
            "{role} opened the name registry"
        );
        assert!(
            !raw_publish(&js, "$KV.WORKLOAD_NAMES.w3").await,
            "{role} claimed a name"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forged_start_of_the_issue_never_reaches_an_executor() {
    let s = Secured::start().await;
    for role in [
        "agent-node2",
        "executor-node2",
        "executor-node3",
        "brain",
        "webui",
    ] {
        let js = s.js(role).await;
        assert!(
            connection::publish(&js, &forged_start("node2"))
                .await
                .is_err(),
            "{role} asked for a start"
        );
    }
    assert_eq!(s.count("workload.*.start_requested").await, 0);
    // The operator may.
    let js = s.js("operator").await;
    connection::publish(&js, &forged_start("node2"))
        .await
        .expect("the operator asks for starts");
    assert_eq!(s.count("workload.node2.start_requested").await, 1);
}

/// One HTTP/1.1 exchange with the dashboard (no client crate: the request
/// is a few lines and the test reads status, headers and body as text).
fn http(port: u16, method: &str, path: &str, cookie: &str, form: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_token_and_csrf_actions_work_with_auth_on() {
    let s = Secured::start().await;
    let port = loadshift_testkit::nats::free_port();
    let _webui = Child(
        std::process::Command::new(loadshift_testkit::binary("loadshift-webui"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("LOADSHIFT_NATS", s.server.url())
            .env("LOADSHIFT_NATS_CREDS", s.auth.creds("webui").unwrap())
            .env("LOADSHIFT_OPERATOR_TOKEN", "t0ken")
            .env_remove("LOADSHIFT_NATS_CA")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start loadshift-webui"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/healthz", "", "").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the webui did not serve"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let login = http(port, "POST", "/login", "", "token=t0ken&user=alice").unwrap();
    let cookie = login
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie in {login}"))
        .to_string();
    let page = http(port, "GET", "/model", &cookie, "").unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf in the model page"))
        .to_string();
    let forged = http(
        port,
        "POST",
        "/actions/migrate",
        &cookie,
        "csrf=forged&workload=w1&source=node2&target=node3",
    )
    .unwrap();
    assert!(!forged.starts_with("HTTP/1.1 303"), "{forged}");
    let asked = http(
        port,
        "POST",
        "/actions/migrate",
        &cookie,
        &format!("csrf={csrf}&workload=w1&source=node2&target=node3"),
    )
    .unwrap();
    assert!(asked.starts_with("HTTP/1.1 303"), "{asked}");
    let retrain = http(
        port,
        "POST",
        "/actions/retrain",
        &cookie,
        &format!("csrf={csrf}&reason=test"),
    )
    .unwrap();
    assert!(retrain.starts_with("HTTP/1.1 303"), "{retrain}");
    assert_eq!(s.count("migration.node2.requested").await, 1);
    assert_eq!(s.count("model.*.train_requested").await, 1);
    // In the asking person's name.
    let js = s.js("operator").await;
    let m = js
        .get_stream(stream::EVENTS)
        .await
        .unwrap()
        .get_last_raw_message_by_subject("migration.node2.requested")
        .await
        .unwrap();
    let env = Envelope::from_message(m.subject.as_str(), &m.payload).unwrap();
    match env.event {
        Event::MigrationRequested(r) => assert_eq!(r.requested_by, "alice"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_reads_a_workloads_output_and_people_and_executors_ask_for_stops() {
    let s = Secured::start().await;
    // node2's executor serves its workloads' output.
    answered(
        &s,
        ("executor-node2", "lines"),
        ("operator", "loadshift.executor.node2.logs"),
    )
    .await;
    for role in ["brain", "webui", "agent-node2", "executor-node3"] {
        let c = s.client(role).await;
        let ask = c.request("loadshift.executor.node2.logs", "{}".into());
        let got = tokio::time::timeout(Duration::from_secs(2), ask).await;
        assert!(!matches!(got, Ok(Ok(_))), "{role} read a workload's output");
    }
    // A person asks for a stop (at the CLI or the dashboard); a source
    // executor hands one on; no one else.
    for (role, may) in [
        ("operator", true),
        ("executor-node2", true),
        ("brain", false),
        ("webui", true),
        ("agent-node2", false),
    ] {
        let js = s.js(role).await;
        assert_eq!(
            raw_publish(&js, "workload.node3.stop_requested").await,
            may,
            "{role}"
        );
    }
}

/// A streamed migration's offer (address and one-time token) is asked by
/// the source's executor and answered by the target's, privately: no other
/// identity may ask (nor read the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_executors_ask_each_other_for_a_page_stream() {
    let s = Secured::start().await;
    const OFFERS: &str = "loadshift.executor.node3.stream";
    assert_eq!(
        OFFERS,
        loadshift_events::migration::stream_offer_subject(&n("node3"))
    );
    answer_on(s.client("executor-node3").await, OFFERS, "offer").await;
    for (role, may) in [
        ("executor-node2", true),
        ("agent-node2", false),
        ("brain", false),
        ("webui", false),
        ("operator", false),
    ] {
        let c = s.client(role).await;
        let ask = c.request(OFFERS, "{}".into());
        let got = tokio::time::timeout(Duration::from_secs(2), ask).await;
        let offered = matches!(got, Ok(Ok(m)) if &m.payload[..] == b"offer");
        assert_eq!(offered, may, "{role}");
    }
}
