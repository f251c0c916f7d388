//! `loadshift up` for real: the whole system on this machine (root, cgroups,
//! criu), then stopped, leaving nothing behind.
//!
//! Each run gets its own state folder, free ports and cgroup prefix, and a
//! marker in the environment that every process it starts inherits (the
//! workloads too, through their executor), so "nothing left running" is
//! checked by looking for the marker in /proc.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use loadshift_events::connection::{self, NatsOptions};
use loadshift_events::{stream, Envelope, Event};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TAG_VAR: &str = "LOADSHIFT_UP_TEST_TAG";

/// The live scenarios load the machine on purpose (a ramp must reach 90 % of
/// node2's capacity before the brain's move is judged); two at once starve
/// each other's load generators on a 2-core machine, so they take turns.
static LIVE_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The other binaries `up` starts, built into the same target folder as
/// the `loadshift` under test (`cargo test -p loadshift-cli` builds only
/// this crate's; a no-op under `cargo test --workspace`).
fn build_siblings() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_loadshift"));
    let dir = exe.parent().expect("bin dir");
    let target = dir.parent().expect("target dir");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--bins"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("CARGO_TARGET_DIR", target);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    // The whole workspace, as `cargo test --workspace` builds it: the same
    // features, so nothing is rebuilt there.
    cmd.arg("--workspace");
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "building the services failed");
}

/// One `loadshift up` run in the background.
struct Up {
    child: Option<Child>,
    state: tempfile::TempDir,
    tag: String,
    prefix: String,
    nats: String,
    /// The dashboard's address.
    web: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let tag = state.path().display().to_string();
        let nats_port = free_port();
        let web = format!("127.0.0.1:{}", free_port());
        let prefix = format!(
            "loadshift-uptest-{}",
            state.path().file_name().unwrap().to_string_lossy()
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadshift"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LOADSHIFT_") || k == "DOCKER_HOST" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("up")
            .args(args)
            .arg("--state")
            .arg(state.path().join("up"))
            .args(["--nats-port", &nats_port.to_string()])
            .args(["--nats-monitor-port", &free_port().to_string()])
            .args(["--listen", &web])
            .args(["--cgroup-prefix", &prefix])
            .args(["--images-dir", &format!("/dev/shm/{prefix}")])
            .args(["--repo", concat!(env!("CARGO_MANIFEST_DIR"), "/..")])
            .env(TAG_VAR, &tag)
            .env("RUST_LOG", "info,async_nats=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start loadshift up");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (pipe, tx) in [
            (
                Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                tx.clone(),
            ),
            (Box::new(err), tx),
        ] {
            tokio::spawn(async move {
                let mut l = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = l.next_line().await {
                    eprintln!("up| {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child: Some(child),
            state,
            tag,
            prefix,
            nats: format!("nats://127.0.0.1:{nats_port}"),
            web,
            lines,
            seen: Vec::new(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.state.path().join("up")
    }

    /// Connects with the operator identity `up` wrote (auth is on by default).
    /// The EVENTS stream from its start, read as the operator.
    async fn events(&self) -> async_nats::jetstream::consumer::pull::Ordered {
        let js = async_nats::jetstream::new(self.operator().await);
        let events = js.get_stream(stream::EVENTS).await.expect("EVENTS");
        let consumer = events
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("consumer");
        consumer.messages().await.expect("messages")
    }

    async fn operator(&self) -> async_nats::Client {
        connection::connect(
            &NatsOptions {
                url: self.nats.clone(),
                credentials: Some(self.dir().join("auth/operator.nk")),
                client_name: "up-test".into(),
                ..Default::default()
            },
            false,
        )
        .await
        .expect("connect as the operator")
    }

    /// Waits for a line of `up`'s output containing `needle`.
    async fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Ok(None) => panic!("loadshift up ended before saying {needle:?}"),
                Err(_) => panic!("loadshift up did not say {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Waits for the `n+1`-th line containing `needle` (0: the first).
    async fn wait_line_after(&mut self, n: usize, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().filter(|l| l.contains(needle)).nth(n) {
                return l.clone();
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => self.seen.push(l),
                Ok(None) => panic!(
                    "loadshift up ended before saying {needle:?} {} times",
                    n + 1
                ),
                Err(_) => panic!(
                    "loadshift up did not say {needle:?} {} times within {timeout:?}",
                    n + 1
                ),
            }
        }
    }

    /// SIGTERM, then waits for it to exit (it has its own grace periods).
    async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) of our own child.
        unsafe {
            libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
        }
        tokio::time::timeout(Duration::from_secs(120), child.wait())
            .await
            .expect("loadshift up did not stop within 120 s")
            .expect("wait")
    }

    /// Processes (other than zombies) carrying this run's marker.
    fn tagged(&self) -> Vec<(u32, String)> {
        let needle = format!("{TAG_VAR}={}", self.tag);
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let state = stat[stat.rfind(')')? + 2..].chars().next()?;
                let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
                (state != 'Z').then(|| (pid, cmd.replace('\0', " ")))
            })
            .collect()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        ["cpu", "cpuacct", "memory", ""]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join(&self.prefix))
            .collect()
    }

    /// Checks that nothing of this run is left: processes, cgroups.
    fn assert_nothing_left(&self) {
        let mut left = self.tagged();
        for _ in 0..50 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            left = self.tagged();
        }
        assert!(
            left.is_empty(),
            "left running after loadshift up stopped: {left:?}"
        );
        for d in self.cgroup_dirs() {
            assert!(!d.exists(), "cgroup {} was not removed", d.display());
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test still cleans up after itself: `up` first (its
        // services follow it through their parent-death signal), then
        // whatever carries the marker, then the cgroups once they empty.
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
        // Containers do not carry the marker (containerd starts them): those
        // whose cgroup sits under this run's prefix are this run's.
        for id in containers_under(&self.prefix) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "--force", &id])
                .output();
        }
        for _ in 0..50 {
            for (pid, _) in self.tagged() {
                // SAFETY: kill(2) of a process this test started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            for d in self.cgroup_dirs().iter().rev() {
                if let Ok(rd) = std::fs::read_dir(d) {
                    for e in rd.flatten().filter(|e| e.path().is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(d);
            }
            // Docker makes the prefix in every v1 hierarchy, not only these.
            loadshift_cli::up::cgroup::remove_everywhere(&self.prefix);
            if self.cgroup_dirs().iter().all(|d| !d.exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(format!("/dev/shm/{}", self.prefix));
    }
}

/// The ticks of a loadgen stdout file, in order.
fn ticks(path: &Path) -> Vec<u64> {
    ticks_in(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The ticks in a loadgen's output, in order.
fn ticks_in(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|l| {
            l.strip_prefix("tick ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// The progress counter of `workload` on `node`, as its runtime keeps it:
/// a process's stdout file in the node's state, a container's log.
fn counter(up: &Up, runtime: &str, node: &str, workload: &str) -> Vec<u64> {
    match runtime {
        "docker" => {
            let name = format!("loadshift-{node}-{workload}");
            let out = std::process::Command::new("docker")
                .args(["logs", &name])
                .output()
                .expect("run docker logs");
            ticks_in(&String::from_utf8_lossy(&out.stdout))
        }
        _ => ticks(
            &up.dir()
                .join(node)
                .join("workloads")
                .join(workload)
                .join("stdout"),
        ),
    }
}

/// Containers (any state) made by an executor whose cgroup parent is
/// under `prefix`.
fn containers_under(prefix: &str) -> Vec<String> {
    let Ok(out) = std::process::Command::new("docker")
        .args([
            "ps",
            "--all",
            "--quiet",
            "--filter",
            "label=org.loadshift.managed",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|id| {
            std::process::Command::new("docker")
                .args(["inspect", "--format", "{{.HostConfig.CgroupParent}}", id])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(prefix))
        })
        .map(str::to_string)
        .collect()
}

/// Containers (any state) of `workload`, by the executor's label.
fn containers_of(workload: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter"])
        .arg(format!("label=org.loadshift.workload={workload}"))
        .output()
        .expect("run docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_ramp_ends_in_a_migration_decided_by_the_brain_and_leaves_nothing_behind() {
    ramp_ends_in_a_live_move("process").await;
}

/// The seed's own demonstration: load-generator containers on node2, one
/// moved live to node3 by the brain, its counter going on there.
#[tokio::test(flavor = "multi_thread")]
async fn up_ramp_with_docker_moves_a_container_live_and_leaves_nothing_behind() {
    ramp_ends_in_a_live_move("docker").await;
}

/// `loadshift up --runtime RUNTIME --scenario ramp`: the brain moves a
/// generator off node2 and it keeps counting; the stop report says so and
/// nothing is left behind.
// One long test on purpose: one run of `loadshift up` costs a minute, so
// everything the ramp must show is checked on the same run, in order.
async fn ramp_ends_in_a_live_move(runtime: &str) {
    let _turn = LIVE_LOAD.lock().await;
    build_siblings();
    let args = ["--scenario", "ramp", "--grace", "10s", "--runtime", runtime];
    let mut up = Up::start(&args, &[]);
    // A guard against a hang, not a timing: the ramp starts once the brain
    // has trained its first model from the reference traces, minutes on a
    // loaded 2-core machine.
    up.wait_line("loadshift is up", Duration::from_secs(1800))
        .await;
    // The generators were asked to start just before (printed for the bench).
    let ramp_started = chrono::Utc::now();
    let started = up
        .wait_line("scenario     started ramp1-", Duration::from_secs(1))
        .await;
    let how = if runtime == "docker" {
        "as a container"
    } else {
        "as a process"
    };
    assert!(started.contains(how), "{started}");
    if runtime == "docker" {
        up.wait_line("image        loadshift/loadgen:", Duration::from_secs(1))
            .await;
    }

    let mut msgs = up.events().await;
    let mut by_brain = std::collections::HashSet::new();
    let mut requested_at = None;
    // A guard against a hang, not a timing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    let (completed, completed_at) = loop {
        let m = match tokio::time::timeout_at(deadline, msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => continue,
            Err(_) => panic!(
                "no migration requested by the brain completed within 15 minutes; brain log:\n{}",
                std::fs::read_to_string(up.dir().join("logs/brain.log")).unwrap_or_default()
            ),
        };
        let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) else {
            continue;
        };
        match env.event {
            Event::MigrationRequested(r) if r.requested_by == "brain" => {
                eprintln!(
                    "brain asked: move {} from {} to {}",
                    r.workload, r.source, r.target
                );
                by_brain.insert(r.migration);
                requested_at.get_or_insert(env.occurred_at);
            }
            Event::MigrationCompleted(c) if by_brain.contains(&c.migration) => {
                break (c, env.occurred_at)
            }
            _ => {}
        }
    };
    assert_eq!(completed.source.as_str(), "node2");
    let (target, moved) = (completed.target.as_str(), completed.workload.as_str());
    let at_completion = counter(&up, runtime, target, moved);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = counter(&up, runtime, target, moved);
    assert!(
        !at_completion.is_empty(),
        "no progress lines of {moved} on {target}"
    );
    assert!(
        later.last() > at_completion.last(),
        "the migrated workload stopped counting on {}: {:?} then {:?}",
        completed.target,
        at_completion.last(),
        later.last()
    );
    // One run of the counter, never restarted: each tick is the one before
    // plus one, across the freeze and the move. A process's stdout file
    // travels with it (from 0); a restored container's log starts where the
    // checkpoint was taken, which is not 0 but where the source had got to.
    if runtime == "docker" {
        assert!(later[0] > 0, "the container on {target} started over at 0");
    } else {
        assert_eq!(later[0], 0);
    }
    for w in later.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the counter restarted or skipped: {w:?}");
    }

    let js = async_nats::jetstream::new(up.operator().await);
    let until = completed_at + chrono::Duration::seconds(30);
    let first_overload = first_overloaded_sample(&js, "node2", until).await;
    ramp_bench(
        runtime,
        ramp_started,
        requested_at,
        completed_at,
        first_overload,
    );
    // Issue 9 item 4, "before, not after" (no sample of node2 at 90 % or
    // more before the brain's move completed), holds in 3 of 5 runs per
    // runtime here and fails on a quiet machine, where nothing flags the
    // smooth ramp until about 88 % (BENCHMARKS.md, "Issue 9 (round 4):
    // before, not after"): measured and printed above, not asserted, until
    // it holds every time.

    // The dashboard of the live stack, in a real browser, shows what happened.
    let web = format!("http://{}", up.web);
    let cluster = browse(&format!("{web}/"), "up-cluster");
    for n in ["node1", "node2", "node3"] {
        assert!(cluster.contains(n), "cluster page lacks {n}");
    }
    let migrations = browse(&format!("{web}/migrations"), "up-migrations");
    assert!(
        migrations.contains(completed.workload.as_str()),
        "migrations page lacks the moved workload"
    );
    assert!(
        migrations.contains("completed") && migrations.contains("asked by brain"),
        "migrations page lacks the outcome or who asked"
    );
    let node3 = browse(&format!("{web}/nodes/node3"), "up-node3");
    assert!(
        node3.contains(completed.workload.as_str()),
        "node3's page lacks the workload it now runs"
    );

    let status = up.stop().await;
    assert!(status.success(), "loadshift up exited with {status}");
    up.wait_line("stopped; logs are in", Duration::from_secs(5))
        .await;
    // The stop report: node2's time in overload, and the move's lead time.
    // (One line per node, `  <node> <secs> s of <secs> s sampled ...`; the
    // start-up lines name node2 too, so the report's own lines are searched.)
    let mut node2 = None;
    for i in 0..3 {
        let l = up
            .wait_line_after(i, " s sampled", Duration::from_secs(1))
            .await;
        if l.trim_start().starts_with("node2 ") {
            node2 = Some(l);
            break;
        }
    }
    assert!(node2.is_some(), "the stop report has no line for node2");
    let moved = up
        .wait_line(
            &format!("{} node2 -> ", completed.workload),
            Duration::from_secs(1),
        )
        .await;
    assert!(
        moved.contains("(by brain") && moved.contains("completed"),
        "{moved}"
    );
    up.assert_nothing_left();
    if runtime == "docker" {
        assert!(
            containers_of(completed.workload.as_str()).is_empty(),
            "containers of {} left after loadshift up stopped",
            completed.workload
        );
    }
    report(&up.dir(), completed_at, first_overload);
}

/// When node2 first reported 90 % or more of its CPU (the brain's default
/// overload threshold), by the time the agent received it.
/// Samples are read up to `until` (the telemetry is live: a node that never
/// reaches the line would otherwise be read for ever).
async fn first_overloaded_sample(
    js: &async_nats::jetstream::Context,
    node: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = js.get_stream(stream::TELEMETRY).await.ok()?;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("telemetry.{node}"),
            ..Default::default()
        })
        .await
        .ok()?;
    let mut msgs = consumer.messages().await.ok()?;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
        if let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) {
            if env.occurred_at > until {
                break;
            }
            if let Event::TelemetrySample(t) = &env.event {
                if t.cpu.usage_pct >= 90.0 {
                    return Some(env.occurred_at);
                }
            }
        }
    }
    None
}

/// One `ramp-bench:` line for BENCHMARKS.md: when the brain asked, when the
/// move completed, when node2 first reported 90 % (within 30 s after the
/// move), the lead (positive: the move came first) and the machine's load.
fn ramp_bench(
    runtime: &str,
    ramp_started: chrono::DateTime<chrono::Utc>,
    requested_at: Option<chrono::DateTime<chrono::Utc>>,
    completed_at: chrono::DateTime<chrono::Utc>,
    first_overload: Option<chrono::DateTime<chrono::Utc>>,
) {
    let t = |at: chrono::DateTime<chrono::Utc>| {
        format!(
            "{} (ramp+{:.1} s)",
            at.format("%H:%M:%S%.3f"),
            (at - ramp_started).num_milliseconds() as f64 / 1000.0
        )
    };
    let lead = match first_overload {
        Some(o) => format!(
            "{:+.1} s",
            (o - completed_at).num_milliseconds() as f64 / 1000.0
        ),
        None => "none at >= 90 % (to 30 s after)".into(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "ramp-bench: runtime={runtime} requested={} completed={} node2_first_90={} lead={lead} loadavg={}",
        requested_at.map(t).unwrap_or_default(),
        t(completed_at),
        first_overload.map(t).unwrap_or_else(|| "-".into()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
}

/// The issue 6 measurements, printed for BENCHMARKS.md (never asserted).
fn report(
    state: &Path,
    completed_at: chrono::DateTime<chrono::Utc>,
    first_overload: Option<chrono::DateTime<chrono::Utc>>,
) {
    let read = |f: &str| -> serde_json::Value {
        std::fs::read_to_string(state.join(f))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    };
    let up = read("up.json");
    let usage = read("usage.json");
    let started: Option<chrono::DateTime<chrono::Utc>> =
        up["started_at"].as_str().and_then(|s| s.parse().ok());
    let secs = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).num_milliseconds() as f64 / 1000.0
    };
    if let Some(s) = started {
        eprintln!(
            "issue6: up -> first AI-driven migration completed: {:.1} s",
            secs(s, completed_at)
        );
    }
    match first_overload {
        Some(o) => eprintln!(
            "issue6: first overloaded sample of node2 -> completion: {:+.1} s",
            secs(o, completed_at)
        ),
        None => eprintln!("issue6: node2 never reported >= 90 % CPU (the migration came first)"),
    }
    eprintln!("issue6: control plane: {}", usage["control_plane"]);
    eprintln!("issue6: per service: {}", usage["services"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn up_without_docker_runs_the_process_runtime_and_says_so() {
    build_siblings();
    let no_docker = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];

    // Asking for docker without a daemon is refused before anything starts.
    let mut refused = Up::start(&["--runtime", "docker", "--scenario", "idle"], &no_docker);
    let line = refused
        .wait_line("needs a running Docker daemon", Duration::from_secs(30))
        .await;
    assert!(line.contains("--runtime process"), "{line}");
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        refused.child.take().unwrap().wait(),
    )
    .await
    .expect("refusal exits")
    .expect("wait");
    assert_eq!(status.code(), Some(2));
    refused.assert_nothing_left();

    // The default runtime goes ahead with processes, and says why.
    let mut up = Up::start(&["--scenario", "idle", "--nodes", "2"], &no_docker);
    up.wait_line(
        "Docker is not running: using the process runtime",
        Duration::from_secs(30),
    )
    .await;
    up.wait_line("loadshift is up", Duration::from_secs(120))
        .await;

    // Auth is on by default: the printed line is what a person needs, and a
    // connection without it is refused.
    let line = up
        .wait_line("LOADSHIFT_NATS_CREDS=", Duration::from_secs(10))
        .await;
    let creds = line
        .split("LOADSHIFT_NATS_CREDS=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a path after LOADSHIFT_NATS_CREDS=")
        .to_string();
    let anonymous = NatsOptions {
        url: up.nats.clone(),
        client_name: "anonymous".into(),
        ..Default::default()
    };
    assert!(connection::connect(&anonymous, false).await.is_err());
    let status_cmd = |creds: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loadshift"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LOADSHIFT_") {
                c.env_remove(k);
            }
        }
        c.args(["status", "--nats", &up.nats]);
        if let Some(p) = creds {
            c.env("LOADSHIFT_NATS_CREDS", p);
        }
        c.output()
    };
    let ok = status_cmd(Some(&creds))
        .await
        .expect("run loadshift status");
    assert!(
        ok.status.success(),
        "loadshift status as the operator: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = status_cmd(None).await.expect("run loadshift status");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--nats-creds"));

    let status = up.stop().await;
    assert!(status.success(), "loadshift up exited with {status}");
    // The stop report covers both nodes even when nothing moved.
    up.wait_line("time at CPU >= 90 %", Duration::from_secs(5))
        .await;
    up.wait_line("  node2 ", Duration::from_secs(1)).await;
    up.wait_line("  none", Duration::from_secs(1)).await;
    up.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn up_trace_runs_the_vms_as_load_generators_where_simulate_puts_them() {
    let _turn = LIVE_LOAD.lock().await;
    build_siblings();
    let traces = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../brain/tests/fixtures/traces"
    );
    let scenario = format!("trace:{traces}");
    let mut up = Up::start(
        &["--scenario", &scenario, "--trace-vms", "3", "--nodes", "3"],
        &[],
    );
    up.wait_line("loadshift is up", Duration::from_secs(120))
        .await;
    // VM i on worker i mod 2, as `loadshift-brain simulate --nodes 2` lays
    // them out: the first and third on node2, the second on node3.
    let mut on = Vec::new();
    for _ in 0..3 {
        let l = up
            .wait_line_after(on.len(), "scenario     started vm", Duration::from_secs(5))
            .await;
        on.push(l);
    }
    for (l, node) in on.iter().zip(["node2", "node3", "node2"]) {
        assert!(l.contains(&format!(" on {node} ")), "{l}");
    }
    // The generators run in the workers' cgroups, playing their profiles.
    let mut msgs = up.events().await;
    let mut started = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while started.len() < 3 {
        let m = match tokio::time::timeout_at(deadline, msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => continue,
            Err(_) => panic!("only {started:?} of the 3 generators started"),
        };
        if let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) {
            if let Event::WorkloadStarted(s) = &env.event {
                assert!(
                    s.spec.command.iter().any(|a| a.starts_with("--profile=")),
                    "{:?}",
                    s.spec.command
                );
                started.insert((env.node.to_string(), s.workload.to_string()));
            }
        }
    }
    assert_eq!(
        started.iter().filter(|(n, _)| n == "node2").count(),
        2,
        "{started:?}"
    );
    let status = up.stop().await;
    assert!(status.success(), "loadshift up exited with {status}");
    // The stop report and the simulator's table for the live run.
    up.wait_line("| none (simulated) |", Duration::from_secs(5))
        .await;
    up.wait_line("| ai (live) |", Duration::from_secs(1)).await;
    up.wait_line("  node3 ", Duration::from_secs(1)).await;
    up.assert_nothing_left();
}

/// Loads `url` in headless Chromium, saves a screenshot under target/, and
/// returns the DOM as rendered.
fn browse(url: &str, shot: &str) -> String {
    use loadshift_testkit::browser;
    browser::screenshot(url, &browser::target_dir().join(format!("{shot}.png")));
    browser::dom(url)
}

/// `loadshift` as the operator of `up`'s cluster, to its end.
async fn operator_cli(up: &Up, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadshift"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LOADSHIFT_") {
            c.env_remove(k);
        }
    }
    c.env("LOADSHIFT_NATS", &up.nats)
        .env("LOADSHIFT_NATS_CREDS", up.dir().join("auth/operator.nk"))
        .env("USER", "tester");
    // Past the longest --timeout the test gives (a drain's 5 minutes).
    loadshift_testkit::process::finish(c, args, Duration::from_secs(360)).await
}

// One long test on purpose: one run of `loadshift up` costs a minute, so
// the drain, the refusals and the uncordon are checked on the same run.
#[tokio::test(flavor = "multi_thread")]
async fn up_drain_moves_three_workloads_off_node2_live_and_places_nothing_there_until_uncordoned() {
    let _turn = LIVE_LOAD.lock().await;
    build_siblings();
    let mut up = Up::start(&["--scenario", "idle", "--grace", "10s"], &[]);
    up.wait_line("loadshift is up", Duration::from_secs(180))
        .await;
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadshift"))
        .with_file_name("loadshift-loadgen")
        .display()
        .to_string();
    let names = ["drain-a", "drain-b", "drain-c"];
    for name in names {
        let out = operator_cli(
            &up,
            &[
                "workload",
                "run",
                "--node",
                "node2",
                "--name",
                name,
                "--",
                &loadgen,
                "--cpu=5",
                "--memory=8",
            ],
        )
        .await;
        assert!(out.status.success(), "{name} did not start");
    }
    let drain = operator_cli(
        &up,
        &[
            "node",
            "drain",
            "node2",
            "--wait",
            "--timeout",
            "5m",
            "--reason",
            "test",
        ],
    )
    .await;
    let said = String::from_utf8_lossy(&drain.stdout).into_owned();
    assert_eq!(
        drain.status.code(),
        Some(0),
        "brain log:\n{}",
        std::fs::read_to_string(up.dir().join("logs/brain.log")).unwrap_or_default()
    );
    for name in names {
        assert!(said.contains(&format!("moved {name} to node3")), "{said}");
    }
    assert!(said.contains("node2 is empty (3 moved in "), "{said}");

    // The log agrees: every workload on node3, none on node2, and nothing
    // was ever sent to node2 while it drained.
    let ls = operator_cli(&up, &["workload", "ls", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("workload ls --json");
    for name in names {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .expect("listed");
        assert_eq!(row["node"], "node3", "{row}");
    }
    // Each workload still counts where it left off (moved live, not restarted).
    for name in names {
        let stdout = up.dir().join("node3/workloads").join(name).join("stdout");
        let t = ticks(&stdout);
        assert!(!t.is_empty() && t[0] == 0, "{}: {t:?}", stdout.display());
        for w in t.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{name} restarted or skipped: {w:?}");
        }
    }
    let refused = operator_cli(&up, &["migrate", "drain-a", "--to", "node2"]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a draining node is no target"
    );

    // Uncordoned, node2 takes a workload again.
    assert!(operator_cli(&up, &["node", "uncordon", "node2"])
        .await
        .status
        .success());
    let back = operator_cli(
        &up,
        &[
            "migrate",
            "drain-a",
            "--to",
            "node2",
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert_eq!(back.status.code(), Some(0));

    let mut msgs = up.events().await;
    let mut draining = false;
    let mut by_brain = std::collections::HashSet::new();
    // The drain's own moves, end to end and frozen, summed (for BENCHMARKS.md).
    let (mut total_ms, mut downtime_ms) = (0.0, 0.0);
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
        let Ok(env) = Envelope::from_message(m.subject.as_str(), &m.payload) else {
            continue;
        };
        match env.event {
            Event::NodeDrainRequested(_) => draining = true,
            Event::NodeUncordoned(_) => draining = false,
            Event::MigrationRequested(r) => {
                assert!(
                    !(draining && r.target.as_str() == "node2"),
                    "sent to node2 while it drained: {r:?}"
                );
                if draining && r.requested_by == "brain" {
                    by_brain.insert(r.migration);
                }
            }
            Event::MigrationCompleted(c) if by_brain.contains(&c.migration) => {
                total_ms += c.timings.total_ms.unwrap_or(f64::NAN);
                downtime_ms += c.timings.downtime_ms.unwrap_or(f64::NAN);
            }
            _ => {}
        }
    }
    assert_eq!(
        by_brain.len(),
        3,
        "one brain migration per workload, none retried"
    );
    let line = said
        .lines()
        .find(|l| l.contains(" is empty ("))
        .unwrap_or_default();
    eprintln!(
        "drain-bench: {line} | the 3 migrations' own total {:.1} s, frozen {:.1} s",
        total_ms / 1e3,
        downtime_ms / 1e3
    );
    let status = up.stop().await;
    assert!(status.success(), "loadshift up exited with {status}");
    up.assert_nothing_left();
}
