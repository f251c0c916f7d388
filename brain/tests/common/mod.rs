//! Shared helpers of the brain's integration tests: events to publish, the
//! real `loadshift-brain` binary as a child process, and reading its status.
#![allow(dead_code, unused_macros)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use loadshift_events::payload::{NodeJoined, NodeLeft};
use loadshift_events::telemetry::{Cpu, Memory};
use loadshift_events::{Envelope, Event, NodeName, Sample};
use loadshift_testkit::{binary, NatsServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_loadshift-brain");

pub fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

pub fn sample(name: &str, seq: u64, at_ms: i64) -> Envelope {
    Envelope::new(
        node(name),
        Event::TelemetrySample(Sample {
            at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap(),
            seq,
            cpu: Cpu {
                usage_pct: (seq % 100) as f32,
                capacity_cores: 2.0,
                per_core_pct: vec![1.0, 2.0],
            },
            memory: Memory {
                used_bytes: seq * 1000,
                total_bytes: 4 << 30,
            },
            swap: None,
            load: None,
            net: None,
            disk: None,
            processes: Some(10),
            psi: None,
        }),
    )
}

pub fn joined(name: &str) -> Envelope {
    Envelope::new(
        node(name),
        Event::NodeJoined(NodeJoined {
            source: "test".into(),
            capacity_cores: 2.0,
            memory_bytes: 4 << 30,
            agent_version: "0.1.0".into(),
        }),
    )
}

pub fn left(name: &str) -> Envelope {
    Envelope::new(
        node(name),
        Event::NodeLeft(NodeLeft {
            reason: "SIGTERM".into(),
            samples: 1,
        }),
    )
}

pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    loadshift_events::stream::declare(&js, &Default::default())
        .await
        .unwrap();
    js
}

/// What a test of the running brain starts from: a real server with the
/// streams declared, a JetStream context on it, a fresh folder (for the
/// store and the brain's log) and the store's path in it.
pub async fn scene() -> (NatsServer, jetstream::Context, tempfile::TempDir, PathBuf) {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("brain");
    (nats, js, dir, store)
}

/// Publishes `envs` with many acks in flight, waiting for all of them.
pub async fn publish_all(js: &jetstream::Context, envs: impl IntoIterator<Item = Envelope>) {
    let mut pending = Vec::new();
    for env in envs {
        pending.push(loadshift_events::connection::send(js, &env).await.unwrap());
        if pending.len() >= 2000 {
            for f in pending.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap();
    }
}

/// Publishes `per_node` samples for each node, interleaved, at 1 s steps.
pub async fn publish_samples(
    js: &jetstream::Context,
    nodes: &[&str],
    per_node: u64,
    start_seq: u64,
) {
    let base = 1_700_000_000_000i64;
    let envs = (start_seq..start_seq + per_node).flat_map(|i| {
        nodes
            .iter()
            .map(move |n| sample(n, i, base + i as i64 * 1000))
    });
    publish_all(js, envs.collect::<Vec<_>>()).await;
}

/// Each stream's state, `[TELEMETRY, EVENTS]`.
async fn stream_states(js: &jetstream::Context) -> [jetstream::stream::State; 2] {
    let mut out = Vec::with_capacity(2);
    for name in ["TELEMETRY", "EVENTS"] {
        let mut s = js.get_stream(name).await.unwrap();
        out.push(s.info().await.unwrap().state.clone());
    }
    [out[0].clone(), out[1].clone()]
}

/// Messages each stream holds, `[TELEMETRY, EVENTS]`.
pub async fn stream_counts(js: &jetstream::Context) -> [u64; 2] {
    stream_states(js).await.map(|s| s.messages)
}

/// A running `loadshift-brain run`.
pub struct Brain {
    pub child: Child,
    pub log: PathBuf,
    /// "consuming" lines already in the (shared) log before this start.
    base: usize,
}

/// A test that panics must not leave its brain running.
impl Drop for Brain {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Brain {
    pub fn start(url: &str, store: &Path, log: &Path) -> Self {
        Self::start_with(url, store, log, &[])
    }

    /// Starts `run` with extra arguments.
    pub fn start_with(url: &str, store: &Path, log: &Path, extra: &[&str]) -> Self {
        let base = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("consuming")
            .count();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--batch", "500", "--store"])
            .arg(store)
            .args(["--nats", url])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_path_buf(),
            base,
        }
    }

    /// SIGTERM, then wait; returns the exit code.
    pub fn term(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_exit(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL, as a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the brain has opened its store and created its consumers,
    /// so that a status read afterwards sees this brain, not a previous store.
    pub fn wait_consuming(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log_text().matches("consuming").count() < self.base + 2 {
            assert!(
                Instant::now() < deadline,
                "brain did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the brain's log says `what` (a model it trained, a
    /// decision); `limit` only bounds a hang, it is not a timing under test.
    pub async fn wait_log(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in the brain's log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadshift-brain did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` to its end and fails the test, with its stderr, unless it
/// succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `status --json` (plus extra args) as JSON.
pub fn status(store: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        Command::new(BIN)
            .args(["status", "--json", "--store"])
            .arg(store)
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the brain's applied sequences reach `last` (`[TELEMETRY, EVENTS]`).
pub fn wait_applied(store: &Path, last: [u64; 2], limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let ok = Command::new(BIN)
            .args(["status", "--json", "--store"])
            .arg(store)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        if let Some(v) = ok {
            if v["applied"]["TELEMETRY"].as_u64() == Some(last[0])
                && v["applied"]["EVENTS"].as_u64() == Some(last[1])
            {
                return v;
            }
            if Instant::now() > deadline {
                panic!("brain did not reach {last:?} within {limit:?}; status: {v}");
            }
        } else if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(store.with_file_name("brain.log")).unwrap_or_default();
            panic!("no status within {limit:?}; brain log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every payload of one kind in the EVENTS stream so far:
/// `logged!(&js, Event::ModelTrained)` gives the `model::Trained` payloads.
macro_rules! logged {
    ($js:expr, $kind:path) => {
        logged($js, |e| match e {
            $kind(p) => Some(p),
            _ => None,
        })
        .await
    };
}

/// Every event of the EVENTS stream so far that `pick` keeps, in order.
pub async fn logged<T>(js: &jetstream::Context, pick: fn(Event) -> Option<T>) -> Vec<T> {
    let stream = js.get_stream("EVENTS").await.unwrap();
    let mut out = Vec::new();
    for seq in 1..=last_seqs(js).await[1] {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        if let Some(t) = Envelope::from_message(&m.subject, &m.payload)
            .ok()
            .and_then(|e| pick(e.event))
        {
            out.push(t);
        }
    }
    out
}

/// Each stream's last sequence, `[TELEMETRY, EVENTS]`: what a brain has
/// applied once it has caught up.
pub async fn last_seqs(js: &jetstream::Context) -> [u64; 2] {
    stream_states(js).await.map(|s| s.last_sequence)
}

/// The number of samples the series chunks of a stopped brain's store hold.
pub fn series_samples(store: &Path) -> u64 {
    let s = loadshift_brain::store::Store::open_existing(store).unwrap();
    s.sample_count().unwrap()
}

const TRACE_HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

/// Makes `<dir>/traces`, the folder an agent replays with `--source
/// trace:<folder>`, and returns it.
pub fn traces_dir(dir: &Path) -> PathBuf {
    let traces = dir.join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    traces
}

/// Writes `<dir>/<name>.csv`: a Bitbrains-format trace of `rows` five-minute
/// samples of a 2-core VM whose CPU percent follows `cpu(row)`.
pub fn write_trace(dir: &Path, name: &str, rows: usize, cpu: impl Fn(usize) -> f64) {
    let mut s = String::from(TRACE_HEADER);
    s.push('\n');
    for i in 0..rows {
        let pct = cpu(i);
        s.push_str(&format!(
            "{};\t2;\t5200.0;\t{:.1};\t{pct:.2};\t8388608.0;\t2097152.0;\t0.0;\t1.0;\t0.5;\t0.5\n",
            1_372_629_804u64 + 300 * i as u64,
            52.0 * pct
        ));
    }
    std::fs::write(dir.join(format!("{name}.csv")), s).unwrap();
}

/// `workload.<node>.started` for a process workload, as an executor says it.
pub fn workload_started(on: &str, workload: &str) -> Envelope {
    use loadshift_events::workload::{Started, WorkloadSpec};
    Envelope::new(
        node(on),
        Event::WorkloadStarted(Started {
            workload: loadshift_events::WorkloadName::new(workload).unwrap(),
            spec: WorkloadSpec::process(vec!["x".into()]),
            pid: Some(1),
            container_id: None,
        }),
    )
}

/// `telemetry.<node>.workloads` as an executor reports it: per workload its
/// CPU (percent of a core) and resident bytes; empty for an idle executor.
pub fn workload_usage(on: &str, workloads: &[(&str, f32, u64)]) -> Envelope {
    use loadshift_events::model::{WorkloadUsage, WorkloadUse};
    Envelope::new(
        node(on),
        Event::WorkloadUsage(WorkloadUsage {
            at: chrono::Utc::now(),
            workloads: workloads
                .iter()
                .map(|(w, cpu_pct, rss_bytes)| {
                    let name = loadshift_events::WorkloadName::new(*w).unwrap();
                    WorkloadUse::new(name, *cpu_pct, *rss_bytes)
                })
                .collect(),
        }),
    )
}

/// Starts the real `loadshift-agent` with `args` against `url`, its stderr
/// appended to `log` (read when a test fails).
pub fn agent(url: &str, args: &[&str], log: &Path) -> Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(binary("loadshift-agent"))
        .args(args)
        .args(["--nats", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

/// A fresh store in a folder of its own; the store lives as long as the
/// folder does, so keep both.
pub fn scratch_store() -> (tempfile::TempDir, loadshift_brain::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = loadshift_brain::store::Store::create(&dir.path().join("s")).unwrap();
    (dir, store)
}
