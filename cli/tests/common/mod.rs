//! What the CLI's integration tests share: a real nats-server with the
//! streams declared, a way to publish events as an executor would, to read
//! the log back, and to run the real `loadshift` binary against it.

#![allow(dead_code)]

use std::process::{Output, Stdio};
use std::time::Duration;

use loadshift_events::migration::{Requested, Timings};
use loadshift_events::payload::NodeJoined;
use loadshift_events::workload::{Runtime, Started, WorkloadSpec};
use loadshift_events::{connection, stream, Envelope, Event, NodeName, WorkloadName};
use loadshift_testkit::NatsServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What a command printed on its standard output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Then: the command succeeded (exit 0); returns what it printed.
pub fn succeeded(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

/// Runs `cmd` with `args` to its end (at most 60 s) and shows what it
/// printed, for the log of a failing test.
pub async fn finish(cmd: Command, args: &[&str]) -> Output {
    loadshift_testkit::process::finish(cmd, args, Duration::from_secs(60)).await
}

/// A server, a client and the streams.
pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
}

impl Harness {
    pub async fn new() -> Self {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client.clone());
        stream::declare(&js, &Default::default())
            .await
            .expect("declare the streams");
        Self { server, client, js }
    }

    /// The binary, pointed at this server, with no `LOADSHIFT_*` leaking in
    /// from the environment the tests run in.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadshift"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LOADSHIFT_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LOADSHIFT_NATS", self.server.url())
            .env("USER", "tester")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary to its end (at most 60 s).
    pub async fn run(&self, args: &[&str]) -> Output {
        finish(self.cli(), args).await
    }

    /// `counter` runs on node2 (pid 42), and a subscriber sees every request
    /// to move a workload off node2: where each `migrate` test starts.
    pub async fn counter_on_node2(&self) -> async_nats::Subscriber {
        self.publish(
            "node2",
            started("counter", Runtime::Process, Some(42), None),
        )
        .await;
        self.client
            .subscribe("migration.node2.requested")
            .await
            .unwrap()
    }

    /// Starts `workload run --node node2 --name NAME --wait -- PROGRAM...`
    /// and returns once its start request reached node2's subject: the test
    /// then answers as node2's executor would and reads the CLI's output.
    pub async fn run_waiting_on_node2(&self, name: &str, program: &[&str]) -> Child {
        use futures::StreamExt;
        let mut sub = self
            .client
            .subscribe("workload.node2.start_requested")
            .await
            .unwrap();
        let mut args = vec!["workload", "run", "--node", "node2", "--name", name];
        args.extend(["--wait", "--timeout", "30s", "--"]);
        args.extend(program);
        let child = self.spawn(&args);
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("no request")
            .expect("subscription");
        child
    }

    /// Starts the binary with stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cli()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loadshift")
    }

    pub async fn publish(&self, emitter: &str, event: Event) -> Envelope {
        let env = Envelope::new(NodeName::new(emitter).unwrap(), event);
        self.put(&env).await;
        env
    }

    /// Publishes bytes no build can read as an event, on `subject`.
    pub async fn put_raw(&self, subject: &'static str, body: &'static str) {
        let ack = self
            .js
            .publish(subject, body.into())
            .await
            .expect("publish");
        ack.await.expect("stored");
    }

    /// Publishes an envelope built elsewhere (a testkit fixture).
    pub async fn put(&self, env: &Envelope) {
        connection::publish(&self.js, env).await.expect("publish");
    }

    /// Every readable event in EVENTS, with its subject.
    pub async fn events(&self) -> Vec<(String, Envelope)> {
        let mut s = self.js.get_stream(stream::EVENTS).await.expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                let env = Envelope::from_message(m.subject.as_str(), &m.payload)
                    .expect("the CLI published a readable event");
                out.push((m.subject.to_string(), env));
            }
        }
        out
    }
}

pub fn n(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

pub fn w(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

pub fn spec(runtime: Runtime) -> WorkloadSpec {
    WorkloadSpec {
        runtime,
        command: vec!["sleep".into(), "1000".into()],
        image: (runtime == Runtime::Docker).then(|| "counter:1".to_string()),
        env: Default::default(),
        no_postcopy: false,
    }
}

pub fn started(name: &str, runtime: Runtime, pid: Option<u32>, container: Option<&str>) -> Event {
    Event::WorkloadStarted(Started {
        workload: w(name),
        spec: spec(runtime),
        pid,
        container_id: container.map(str::to_string),
    })
}

pub fn joined(cores: f32) -> Event {
    Event::NodeJoined(NodeJoined {
        source: "host".into(),
        capacity_cores: cores,
        memory_bytes: 1 << 30,
        agent_version: "0.1.0".into(),
    })
}

pub fn timings() -> Timings {
    Timings {
        dump_ms: Some(71.0),
        upload_ms: Some(12.0),
        download_ms: Some(9.0),
        restore_ms: Some(57.0),
        cleanup_ms: Some(3.0),
        downtime_ms: Some(149.0),
        total_ms: Some(160.0),
        postcopy_ms: None,
    }
}

/// Waits for the request the CLI publishes on `subject` (subscribed before
/// the CLI was started) and decodes it.
pub async fn next_request(sub: &mut async_nats::Subscriber) -> Requested {
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the CLI published no request within 30 s")
        .expect("subscription open");
    let env = Envelope::from_message(msg.subject.as_str(), &msg.payload).expect("decode");
    match env.event {
        Event::MigrationRequested(r) => r,
        other => panic!("expected a migration request, got {other:?}"),
    }
}

/// Reads `child`'s stdout until `done` says the lines so far are enough (or
/// 30 s pass), then kills it and returns the lines.
pub async fn lines_until(
    child: &mut Child,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&lines) {
        match tokio::time::timeout_at(deadline, reader.next_line()).await {
            Ok(Ok(Some(l))) => lines.push(l),
            _ => break,
        }
    }
    let _ = child.kill().await;
    lines
}

/// The output of a CLI started with [`Harness::spawn`], once it returned.
pub async fn finished(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the CLI did not return")
        .unwrap()
}
