//! Shared pieces of the executor's integration tests: a cluster of real
//! executors (the real binary) as nodes on this machine, against a real
//! nats-server, and a reader of the EVENTS stream.

#![allow(dead_code)]

pub mod logs;
pub mod matrix;
pub mod postcopy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use loadshift_events::migration::{self, Mode, Requested};
use loadshift_events::workload::{Runtime, StartRequested, WorkloadSpec};
use loadshift_events::{connection, stream, Envelope, Event, NodeName, WorkloadName};
use loadshift_testkit::NatsServer;

/// A process workload that prints 0, 1, 2, ... every 50 ms: a gap or a
/// repeat in its output after a move is a lost or doubled run.
pub const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done",
];

/// One executor process acting as one node.
pub struct Node {
    pub name: NodeName,
    pub state: PathBuf,
    pub images: PathBuf,
    pub cgroup: Option<String>,
    /// Extra environment for the executor (e.g. `LOADSHIFT_FAULTS`).
    pub env: Vec<(String, String)>,
    /// `--runtime` for its executor (`None`: the default, process).
    pub runtime: Option<String>,
    child: Option<Child>,
    url: String,
    log: PathBuf,
    /// Replicas of the streams and buckets its executor declares.
    replicas: usize,
}

impl Node {
    /// The executor's pid while it runs (for CPU accounting in benches).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn workload_dir(&self, w: &str) -> PathBuf {
        self.state.join("workloads").join(w)
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("executor log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadshift-executor"));
        cmd.arg("--node")
            .arg(self.name.as_str())
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--images-dir")
            .arg(&self.images)
            .arg("--nats")
            .arg(&self.url)
            .env("RUST_LOG", "info,loadshift_executor=debug")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(cg) = &self.cgroup {
            cmd.arg("--cgroup").arg(cg);
        }
        if let Some(rt) = &self.runtime {
            cmd.arg("--runtime").arg(rt);
        }
        if self.replicas > 1 {
            cmd.arg("--stream-replicas").arg(self.replicas.to_string());
        }
        self.child = Some(cmd.spawn().expect("start loadshift-executor"));
    }

    /// Restarts the executor with crash point `fault` armed.
    pub fn restart_with_fault(&mut self, fault: &str) {
        self.kill();
        self.env = vec![("LOADSHIFT_FAULTS".into(), fault.into())];
        self.start();
    }

    /// Restarts the executor with exactly this extra environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start();
    }

    /// Restarts the executor with no fault armed.
    pub fn restart(&mut self) {
        self.kill();
        self.env.clear();
        self.start();
    }

    /// Waits until the executor process ended by itself (a crash point).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            } else {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// SIGTERM, not waiting: [`Node::wait_exit`] says whether it was
    /// honoured.
    pub fn terminate(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A nats-server (or a cluster of them), some executors, and a client.
pub struct Cluster {
    pub server: NatsServer,
    /// The other servers of a JetStream cluster (none for one server).
    pub others: Vec<NatsServer>,
    /// What executors and the test's helpers connect to: every server's
    /// URL, so a client fails over when one goes.
    pub urls: String,
    pub nodes: Vec<Node>,
    pub js: async_nats::jetstream::Context,
    pub dir: tempfile::TempDir,
    pub images: tempfile::TempDir,
}

/// `Cluster::NAME(id)`: migration `id`'s event of kind `VARIANT`, whose
/// payload is `migration::PAYLOAD` (the step events a test looks for come
/// before the outcome it already waited for).
macro_rules! step_of {
    ($name:ident, $variant:ident, $payload:ident) => {
        #[doc = concat!("Migration `id`'s `", stringify!($variant), "` event.")]
        pub async fn $name(&self, id: uuid::Uuid) -> migration::$payload {
            self.step(|e| match e {
                Event::$variant(p) if p.migration == id => Some(p.clone()),
                _ => None,
            })
            .await
        }
    };
}

impl Cluster {
    /// What of migration `id` is left in any node's image folder (each
    /// executor keeps its images under `<images>/<node>/`): its image
    /// folder, or the streamed pages beside it.
    pub fn leftovers(&self, id: uuid::Uuid) -> Vec<String> {
        let id = id.to_string();
        std::fs::read_dir(self.images.path())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|node| std::fs::read_dir(node.path()).into_iter().flatten())
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&id))
            .map(|e| e.path().display().to_string())
            .collect()
    }

    pub async fn new(names: &[&str]) -> Self {
        Self::with_cgroups(names, false).await
    }

    /// With `cgroups`, each node gets a v1 (or v2) cgroup of its own.
    pub async fn with_cgroups(names: &[&str], cgroups: bool) -> Self {
        Self::with_runtime(names, cgroups, None).await
    }

    /// Like [`Cluster::with_cgroups`], every executor started with
    /// `--runtime runtime` when given (e.g. `docker`).
    pub async fn with_runtime(names: &[&str], cgroups: bool, runtime: Option<&str>) -> Self {
        Self::assemble(names, cgroups, runtime, vec![NatsServer::start()]).await
    }

    /// Executors on a real three-server JetStream cluster (routes on
    /// loopback ports), every stream and bucket replicated three times.
    pub async fn on_three_servers(names: &[&str]) -> Self {
        let cluster = loadshift_testkit::NatsCluster::start(3);
        Self::assemble(names, false, None, cluster.servers).await
    }

    /// The cluster on `servers` (the first one is [`Cluster::server`]);
    /// with more than one, streams and buckets get one replica per server,
    /// at most three.
    async fn assemble(
        names: &[&str],
        cgroups: bool,
        runtime: Option<&str>,
        mut servers: Vec<NatsServer>,
    ) -> Self {
        let replicas = servers.len().min(3);
        let urls = servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let server = servers.remove(0);
        let others = servers;
        let dir = tempfile::tempdir().expect("tempdir");
        let images = tempfile::Builder::new()
            .prefix("loadshift-test-")
            .tempdir_in("/dev/shm")
            .expect("tmpfs dir");
        let client = connect_any(&urls).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        if replicas > 1 {
            loadshift_testkit::NatsCluster::wait_ready(&js, replicas).await;
        }
        let settings = stream::StreamSettings {
            replicas,
            ..Default::default()
        };
        stream::declare(&js, &settings).await.expect("declare");
        let tag = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut nodes = Vec::new();
        if cgroups {
            *live_cgroup_clusters() += 1;
        }
        let server_urls: Vec<String> = urls.split(',').map(str::to_string).collect();
        for (i, n) in names.iter().enumerate() {
            let cgroup = cgroups.then(|| {
                let rel = format!("{CGROUP_PARENT}/{tag}-{n}");
                make_cgroup(&rel);
                rel
            });
            let mut node = Node {
                name: NodeName::new(*n).unwrap(),
                state: dir.path().join(n),
                images: images.path().to_path_buf(),
                cgroup,
                env: Vec::new(),
                runtime: runtime.map(str::to_string),
                child: None,
                // One server each (the client learns the others from it,
                // and fails over to them).
                url: server_urls[i % server_urls.len()].clone(),
                log: dir.path().join(format!("{n}.log")),
                replicas,
            };
            node.start();
            nodes.push(node);
        }
        let cluster = Self {
            server,
            others,
            urls,
            nodes,
            js,
            dir,
            images,
        };
        for n in names {
            cluster.wait_ping(n).await;
        }
        cluster
    }

    /// Marks this test's workloads (in their environment), so they can be
    /// found and killed whatever node they ended up on.
    pub fn tag(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Host pids of this test's workload `name` that are alive now (the
    /// init of each copy's PID namespace): the never-twice invariant says
    /// there is at most one.
    pub fn copies_of(&self, name: &str) -> Vec<u32> {
        workload_pids(&self.tag(), name)
    }

    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name.as_str() == name)
            .expect("node")
    }

    pub async fn wait_ping(&self, node: &str) {
        let client = connect_any(&self.urls).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ask = client.request(
                loadshift_events::liveness::ping_subject(
                    &loadshift_events::NodeName::new(node).expect("a valid node name"),
                ),
                "".into(),
            );
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("executor {node} did not come up; its log:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The operator's `loadshift` binary (built with the workspace),
    /// pointed at this cluster's server, with no `LOADSHIFT_*` leaking in.
    pub fn cli(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(loadshift_testkit::binary("loadshift"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOADSHIFT_")) {
            cmd.env_remove(k);
        }
        cmd.env("LOADSHIFT_NATS", self.server.url())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `loadshift args` to its end (at most 120 s) and shows what it
    /// printed, for the log of a failing test.
    pub async fn loadshift(&self, args: &[&str]) -> std::process::Output {
        loadshift_testkit::process::finish(self.cli(), args, Duration::from_secs(120)).await
    }

    pub async fn publish(&self, emitter: &str, event: Event) -> Envelope {
        let env = Envelope::new(NodeName::new(emitter).unwrap(), event);
        connection::publish(&self.js, &env).await.expect("publish");
        env
    }

    /// A process workload running `command`, tagged as this cluster's.
    pub fn process_spec(&self, command: &[&str]) -> WorkloadSpec {
        WorkloadSpec {
            runtime: Runtime::Process,
            command: command.iter().map(|s| s.to_string()).collect(),
            image: None,
            env: [("LOADSHIFT_TEST_TAG".to_string(), self.tag())]
                .into_iter()
                .collect(),
            no_postcopy: false,
        }
    }

    pub async fn run_workload(&self, node: &str, name: &str, command: &[&str]) -> Envelope {
        self.request_start(node, name, self.process_spec(command))
            .await;
        self.wait_for(Duration::from_secs(30), |e| match &e.event {
            Event::WorkloadStarted(p) => p.workload.as_str() == name,
            Event::WorkloadStartFailed(p) if p.workload.as_str() == name => {
                panic!("workload {name} did not start: {}", p.reason)
            }
            _ => false,
        })
        .await
    }

    /// Publishes the request that `node` start workload `name` with `spec`.
    pub async fn request_start(&self, node: &str, name: &str, spec: WorkloadSpec) -> Envelope {
        self.publish(
            "test",
            Event::WorkloadStartRequested(StartRequested {
                workload: WorkloadName::new(name).unwrap(),
                node: NodeName::new(node).unwrap(),
                spec,
                requested_by: "test".into(),
            }),
        )
        .await
    }

    /// Asks `node` to start workload `name` with `spec`; returns its
    /// `workload.started` or `workload.start_failed` event.
    pub async fn start_workload(&self, node: &str, name: &str, spec: WorkloadSpec) -> Envelope {
        self.request_start(node, name, spec).await;
        self.wait_for(Duration::from_secs(60), |e| match &e.event {
            Event::WorkloadStarted(p) => p.workload.as_str() == name,
            Event::WorkloadStartFailed(p) => p.workload.as_str() == name,
            _ => false,
        })
        .await
    }

    /// Starts a container workload from `image` on `node` (`command`
    /// overrides the image's when not empty) and waits until it runs.
    pub async fn run_container(
        &self,
        node: &str,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Envelope {
        let spec = WorkloadSpec {
            runtime: Runtime::Docker,
            command: command.iter().map(|s| s.to_string()).collect(),
            image: Some(image.to_string()),
            env: Default::default(),
            no_postcopy: false,
        };
        let e = self.start_workload(node, name, spec).await;
        if let Event::WorkloadStartFailed(p) = &e.event {
            panic!(
                "container {name} did not start: {}\n{}",
                p.reason,
                self.logs()
            );
        }
        e
    }

    pub async fn migrate(&self, workload: &str, source: &str, target: &str) -> uuid::Uuid {
        self.migrate_in(Mode::Auto, workload, source, target).await
    }

    /// Asks for a migration in `mode`.
    pub async fn migrate_in(
        &self,
        mode: Mode,
        workload: &str,
        source: &str,
        target: &str,
    ) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        self.publish(
            "test",
            Event::MigrationRequested(Requested {
                migration: id,
                workload: WorkloadName::new(workload).unwrap(),
                source: NodeName::new(source).unwrap(),
                target: NodeName::new(target).unwrap(),
                requested_by: "test".into(),
                reason: Default::default(),
                mode,
            }),
        )
        .await;
        id
    }

    /// Every event in EVENTS so far.
    pub async fn events(&self) -> Vec<Envelope> {
        self.events_after(0).await
    }

    /// The sequence of the last event in EVENTS now.
    pub async fn last_sequence(&self) -> u64 {
        let s = self.js.get_stream(stream::EVENTS).await.expect("stream");
        s.cached_info().state.last_sequence
    }

    /// The events in EVENTS after sequence `after`, in order.
    pub async fn events_after(&self, after: u64) -> Vec<Envelope> {
        let s = self.js.get_stream(stream::EVENTS).await.expect("stream");
        let last = s.cached_info().state.last_sequence;
        let mut out = Vec::new();
        for seq in after + 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                if let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) {
                    out.push(env);
                }
            }
        }
        out
    }

    /// Waits for the first event (from the start of the log) matching `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Envelope) -> bool,
    ) -> Envelope {
        match self.try_wait_for(timeout, pred).await {
            Some(env) => env,
            None => panic!(
                "no matching event within {timeout:?}; logs:\n{}",
                self.logs()
            ),
        }
    }

    /// Like [`Cluster::wait_for`], `None` when nothing matched in time.
    pub async fn try_wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let Ok(s) = self.js.get_stream(stream::EVENTS).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Ok(consumer) = s
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Ok(mut msgs) = consumer.messages().await else {
                continue;
            };
            loop {
                match tokio::time::timeout_at(deadline, msgs.next()).await {
                    Ok(Some(Ok(m))) => {
                        if let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) {
                            if pred(&env) {
                                return Some(env);
                            }
                        }
                    }
                    // The stream broke (a server restart): read it again.
                    Ok(Some(Err(_))) | Ok(None) => break,
                    Err(_) => return None,
                }
            }
        }
        None
    }

    /// Restarts `node`'s executor with `fault` armed and waits until it
    /// answers pings and has had time to subscribe.
    pub async fn arm_fault(&mut self, node: &str, fault: &str) {
        self.node(node).restart_with_fault(fault);
        self.wait_ping(node).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Waits for `node`'s executor to die at its armed fault point, then
    /// starts it again (without the fault).
    pub fn crash_and_restart(&mut self, node: &str) {
        let crashed = self.node(node).wait_exit(Duration::from_secs(60));
        assert!(
            crashed,
            "{node} did not crash at its fault point\n{}",
            self.logs()
        );
        self.node(node).restart();
    }

    /// Whether `node`'s executor answers a ping within `timeout`.
    pub async fn try_ping(&self, node: &str, timeout: Duration) -> bool {
        let Ok(client) = connect_any(&self.urls).await else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ask = client.request(format!("loadshift.executor.{node}.ping"), "".into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ask).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits for the outcome of migration `id`: completed or rolled_back.
    pub async fn outcome(&self, id: uuid::Uuid) -> Envelope {
        match self.try_outcome(id, Duration::from_secs(120)).await {
            Some(env) => env,
            None => panic!(
                "migration {id} has no outcome within 120 s; logs:\n{}",
                self.logs()
            ),
        }
    }

    /// The outcome of migration `id`, which must be `pick`'s kind (`what`
    /// names it in the failure message, with every executor's log).
    async fn outcome_as<T>(&self, id: uuid::Uuid, what: &str, pick: fn(Event) -> Option<T>) -> T {
        let env = self.outcome(id).await;
        let seen = format!("{env:?}");
        pick(env.event)
            .unwrap_or_else(|| panic!("migration {id} not {what}: {seen}\n{}", self.logs()))
    }

    /// Waits for migration `id` to complete; any other outcome fails the test.
    pub async fn completed(&self, id: uuid::Uuid) -> migration::Completed {
        self.outcome_as(id, "completed", |e| match e {
            Event::MigrationCompleted(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Waits for migration `id` to roll back; any other outcome fails the test.
    pub async fn rolled_back(&self, id: uuid::Uuid) -> migration::RolledBack {
        self.outcome_as(id, "rolled back", |e| match e {
            Event::MigrationRolledBack(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// The first event of the log `pick` accepts, within 5 s (the step
    /// events a test looks for come before the outcome it already waited for).
    pub async fn step<T>(&self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let env = self
            .wait_for(Duration::from_secs(5), |e| pick(&e.event).is_some())
            .await;
        pick(&env.event).expect("the event just matched")
    }

    step_of!(restored, MigrationRestored, Restored);
    step_of!(checkpointed, MigrationCheckpointed, Checkpointed);
    step_of!(fenced, MigrationFenced, Fenced);
    step_of!(failed, MigrationFailed, Failed);

    /// Like [`Cluster::outcome`], `None` when none came in time.
    pub async fn try_outcome(&self, id: uuid::Uuid, timeout: Duration) -> Option<Envelope> {
        self.try_wait_for(timeout, |e| match &e.event {
            Event::MigrationCompleted(p) => p.migration == id,
            Event::MigrationRolledBack(p) => p.migration == id,
            Event::MigrationFailed(p) => {
                p.migration == id && p.step == loadshift_events::migration::Step::Validate
            }
            _ => false,
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        // Workloads are in their own sessions: kill whatever still runs from
        // this test, then remove the cgroups.
        kill_tagged(&self.tag());
        for n in &self.nodes {
            if let Some(cg) = &n.cgroup {
                // Whatever the tag misses (a program that rewrites its
                // environment, like redis) is still in the node's cgroup.
                for _ in 0..3 {
                    for d in cgroup_dirs(cg) {
                        let procs =
                            std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            // SAFETY: kill(2) of a process in this test's cgroup.
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                remove_cgroup(cg);
            }
        }
        if self.nodes.iter().any(|n| n.cgroup.is_some()) {
            let mut live = live_cgroup_clusters();
            *live = live.saturating_sub(1);
            if *live == 0 {
                // The last cluster of this test binary: the parent goes too
                // (rmdir refuses while another binary still has nodes in it).
                for d in cgroup_dirs(CGROUP_PARENT) {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
    }
}

/// A client of whichever server of `urls` (comma-separated) answers, that
/// fails over to the others.
pub async fn connect_any(urls: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let addrs: Vec<async_nats::ServerAddr> =
        urls.split(',').filter_map(|u| u.parse().ok()).collect();
    async_nats::connect(addrs).await
}

/// The cgroup every test node's cgroup is made in.
const CGROUP_PARENT: &str = "loadshift-test";

/// How many clusters of this test binary have cgroups now. Held while the
/// parent cgroup is removed, so no cluster makes a node in it meanwhile.
fn live_cgroup_clusters() -> std::sync::MutexGuard<'static, usize> {
    static LIVE: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn environ_has(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        .unwrap_or(false)
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Live (non-zombie) processes of workload `name` started by the test
/// tagged `tag`, keeping only the root of each process tree.
pub fn workload_pids(tag: &str, name: &str) -> Vec<u32> {
    let tag = format!("LOADSHIFT_TEST_TAG={tag}");
    let wl = format!("LOADSHIFT_WORKLOAD={name}");
    let live: Vec<u32> = all_pids()
        .into_iter()
        .filter(|p| environ_has(*p, &tag) && environ_has(*p, &wl))
        .filter(|p| loadshift_executor::runtime::process::start_ticks(*p).is_some())
        .collect();
    live.iter()
        .copied()
        .filter(|p| {
            let parent = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            // A process whose stat is gone has exited since the listing (the
            // counter's short-lived `sleep` children do): it is no copy.
            parent.is_some_and(|pp| !live.contains(&pp))
        })
        .collect()
}

/// Kills every process started by the test tagged `tag`.
pub fn kill_tagged(tag: &str) {
    let tag = format!("LOADSHIFT_TEST_TAG={tag}");
    for _ in 0..3 {
        for pid in all_pids() {
            if environ_has(pid, &tag) {
                // SAFETY: kill(2) of a test workload.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        vec![root.join(rel)]
    } else {
        ["cpu", "cpuacct", "memory"]
            .iter()
            .map(|c| root.join(c).join(rel))
            .collect()
    }
}

pub fn make_cgroup(rel: &str) {
    for d in cgroup_dirs(rel) {
        std::fs::create_dir_all(&d)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", d.display()));
    }
}

pub fn remove_cgroup(rel: &str) {
    for d in cgroup_dirs(rel) {
        for _ in 0..50 {
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Which cgroup (v1 memory controller, or v2) a pid is in.
pub fn memory_cgroup_of(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next();
            let ctrls = parts.next()?;
            let path = parts.next()?;
            (ctrls.split(',').any(|c| c == "memory") || ctrls.is_empty()).then(|| path.to_string())
        })
        .unwrap_or_default()
}

/// The counter values written in a file, one per line.
pub fn counter_values(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The single live copy of workload `name` (a [`COUNTER`]) runs, and its
/// output on `node` keeps growing from where it was.
pub async fn assert_runs_once_on(c: &mut Cluster, name: &str, node: &str) {
    let copies = c.copies_of(name);
    assert_eq!(copies.len(), 1, "copies running: {copies:?}\n{}", c.logs());
    let out = c.node(node).workload_dir(name).join("stdout");
    let before = counter_values(&out).len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let values = counter_values(&out);
    assert!(
        values.len() > before,
        "the counter does not run on {node}\n{}",
        c.logs()
    );
    assert_continuous(&values);
}

/// Asserts the counter went 0, 1, 2, ... with no gap, repeat or restart.
pub fn assert_continuous(values: &[u64]) {
    assert!(!values.is_empty(), "no output at all");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            *v,
            i as u64,
            "counter restarted or skipped at line {i}: {:?}",
            &values[i.saturating_sub(3)..(i + 3).min(values.len())]
        );
    }
}

/// What `redis-cli -p PORT ARGS` printed, trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli (scripts/setup installs redis-server and redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until redis on `port` answers PING (20 s at most).
pub fn wait_pong(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if redis_cli(port, &["ping"]) == "PONG" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("redis on port {port} does not answer");
}

/// Waits for the redis on `port` to answer, fills it with 100,000 keys
/// (`DEBUG POPULATE`) and returns the value of `key:4242`: the state every
/// redis migration test moves, and the value it checks on the target.
pub fn populate_100k_keys(port: u16) -> String {
    wait_pong(port);
    assert_eq!(
        redis_cli(port, &["debug", "populate", "100000", "key", "32"]),
        "OK"
    );
    let sample = redis_cli(port, &["get", "key:4242"]);
    assert!(sample.starts_with("value:4242"), "{sample}");
    sample
}

/// redis-server on `port` (127.0.0.1), in the foreground, without
/// persistence (its memory is all there is to move), `DEBUG POPULATE` on.
pub fn redis_args(port: u16, dir: &str) -> Vec<String> {
    let port = port.to_string();
    [
        "redis-server",
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        dir,
        "--enable-debug-command",
        "yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
