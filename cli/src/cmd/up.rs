//! `loadshift up`: the whole system on one machine. nats-server (the repo's
//! `nats/server.conf`, store under the state folder), the brain, the
//! dashboard, and per node a cgroup with a CPU quota and a memory limit,
//! its agent and (for workers) its executor; then a scenario. It follows the
//! services and restarts one that dies; Ctrl-C or SIGTERM stops them in
//! reverse order, kills what is left in the nodes' cgroups and removes them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use loadshift_events::cli::LogArgs;
use loadshift_events::reader::{self, ReaderConfig, Start as ReaderStart};
use loadshift_events::shutdown::{Listener, Shutdown};
use loadshift_events::stream::StreamId;
use loadshift_events::workload::Runtime;
use loadshift_events::{connection, liveness, stream, Envelope, Event, NodeName};

use super::workload::RuntimeArg;
use crate::up::cgroup::{self, NodeCgroup};
use crate::up::docker;
use crate::up::image;
use crate::up::outcome;
use crate::up::report::StopReport;
use crate::up::scenario::{self, Generator, Scenario};
use crate::up::supervise::{Spec, Supervised};
use crate::up::trace_plan::{self, TracePlan};
use crate::up::usage::Meter;

/// The binaries `up` starts, found next to `loadshift` itself.
const BINARIES: [&str; 5] = [
    "loadshift-brain",
    "loadshift-agent",
    "loadshift-executor",
    "loadshift-webui",
    "loadshift-loadgen",
];

/// Start a whole loadshift cluster on this machine, until Ctrl-C.
///
/// Starts nats-server (the repo's nats/server.conf, its store under --state),
/// the brain, the dashboard on --listen, and per node a cgroup with a CPU
/// quota and memory limit (node1 is the control plane: nats-server, brain
/// and dashboard run in its cgroup; node2.. are workers) with its agent and,
/// for workers, its executor. Then the scenario: `idle` (nothing), `ramp`
/// (three load generators ramping on node2 until it heads for overload; the
/// brain predicts it and moves one to node3) or `trace:DIR` (the first
/// --trace-vms VMs of a Bitbrains-format trace run as load generators on
/// the workers, placed as `loadshift-brain simulate` places them, their CPU
/// and memory time-compressed by --trace-speed and scaled to the node).
///
/// On stop it prints per node the seconds spent at >= 90 % of its CPU
/// capacity and per migration its lead time; in the trace scenario also the
/// simulator's value table for the live run, beside the rule policies
/// simulated on the same VMs, layout and stretch of the trace.
///
/// A service that dies is restarted with a growing backoff. Ctrl-C or
/// SIGTERM stops everything it started (SIGTERM, then SIGKILL after
/// --grace), kills the workloads left in the nodes' cgroups and removes the
/// cgroups. Needs root (cgroups, criu). The other binaries are taken from
/// the folder `loadshift` itself is in (`cargo build --bins`).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  loadshift up
  loadshift up --scenario idle --nodes 4
  loadshift up --scenario trace:../shared/traces/bitbrains-rnd/2013-8 --trace-vms 6 --trace-from 17d --trace-speed 300
  loadshift up --runtime docker
  loadshift up --runtime docker --scenario idle --listen 0.0.0.0:8080

Then: the dashboard at --listen, `loadshift status`, `loadshift events tail`.")]
pub struct UpArgs {
    /// How many nodes: node1 (control plane) and node2..nodeN (workers).
    #[arg(long, env = "LOADSHIFT_UP_NODES", default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub nodes: u16,
    /// What load to put on the nodes: idle, ramp or trace:DIR.
    #[arg(long, env = "LOADSHIFT_SCENARIO", default_value = "ramp")]
    pub scenario: Scenario,
    /// How the workers' executors run workloads, the scenario's load
    /// generators included: docker runs them as containers of the image
    /// loadshift/loadgen, built on first use from loadgen/Dockerfile and the
    /// loadshift-loadgen binary (no registry needed); it needs a running
    /// Docker daemon with experimental features (see scripts/setup-docker).
    #[arg(long, env = "LOADSHIFT_RUNTIME", value_enum, default_value_t = RuntimeArg::Process)]
    pub runtime: RuntimeArg,
    /// Folder for NATS's store, the brain's store, the executors' state and the logs.
    #[arg(long, env = "LOADSHIFT_UP_STATE", default_value = ".state/up")]
    pub state: PathBuf,
    /// Empty --state first (a new log, new stores).
    #[arg(long, env = "LOADSHIFT_UP_FRESH")]
    pub fresh: bool,
    /// Where the dashboard listens.
    #[arg(long, env = "LOADSHIFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The port nats-server listens on (127.0.0.1).
    #[arg(long, env = "LOADSHIFT_NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// The port of nats-server's monitoring endpoint (/varz, /jsz).
    #[arg(long, env = "LOADSHIFT_NATS_MONITOR_PORT", default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// The repository (for nats/server.conf); default: the current folder or
    /// one above it, else the one the `loadshift` binary was built in.
    #[arg(long, env = "LOADSHIFT_REPO")]
    pub repo: Option<PathBuf>,
    /// CPU cores of node1, the control plane.
    #[arg(long, env = "LOADSHIFT_UP_CONTROL_CPUS", default_value_t = 1.0)]
    pub control_cpus: f64,
    /// CPU cores of each worker node.
    #[arg(long, env = "LOADSHIFT_UP_NODE_CPUS", default_value_t = 1.0)]
    pub node_cpus: f64,
    /// Memory of each node, MiB.
    #[arg(long, env = "LOADSHIFT_UP_NODE_MEMORY_MIB", default_value_t = 2048)]
    pub node_memory_mib: u64,
    /// The nodes' cgroups are <PREFIX>/<node> (relative to the cgroup root).
    #[arg(
        long,
        env = "LOADSHIFT_UP_CGROUP_PREFIX",
        default_value = "loadshift-up"
    )]
    pub cgroup_prefix: String,
    /// Where executors write checkpoint images (tmpfs is ~30x faster than disk).
    #[arg(
        long,
        env = "LOADSHIFT_IMAGES_DIR",
        default_value = "/dev/shm/loadshift-up"
    )]
    pub images_dir: PathBuf,
    /// Replay speed of the trace scenario (times real time: at 300 a
    /// 5-minute trace step lasts one second).
    #[arg(long, env = "LOADSHIFT_UP_TRACE_SPEED", default_value_t = 300.0)]
    pub trace_speed: f64,
    /// How many VMs of the trace the trace scenario runs (the first ones,
    /// in the trace's file order).
    #[arg(long, env = "LOADSHIFT_UP_TRACE_VMS", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub trace_vms: u16,
    /// Where in the trace the trace scenario starts (e.g. `17d`: the
    /// stretch of the month to play live; the layout is sized on all of it).
    #[arg(long, env = "LOADSHIFT_UP_TRACE_FROM", default_value = "0s", value_parser = parse_offset)]
    pub trace_from: Duration,
    /// Where the Docker daemon is asked whether it runs.
    #[arg(long, env = "DOCKER_HOST", default_value = docker::DEFAULT_HOST)]
    pub docker_host: String,
    /// Run NATS without authentication: anyone who reaches it may then start
    /// any command on the workers. By default every service gets its own
    /// identity under <state>/auth/ and may only say what its job needs.
    #[arg(long, env = "LOADSHIFT_UP_INSECURE")]
    pub insecure: bool,
    /// How long a service has to stop after SIGTERM before SIGKILL.
    #[arg(long, env = "LOADSHIFT_UP_GRACE", default_value = "10s", value_parser = crate::error::parse_timeout)]
    pub grace: Duration,
    #[command(flatten)]
    /// How to log (to stderr).
    pub log: LogArgs,
}

/// A duration from the start of a trace (zero allowed, unlike timeouts).
fn parse_offset(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 17d: {e}"))
}

/// What is running, in start order, and the cgroups made for it.
struct Cluster {
    services: Vec<Supervised>,
    /// Indexes of the control-plane services (metered).
    control: Vec<usize>,
    cgroups: Vec<NodeCgroup>,
    prefix: String,
    grace: Duration,
    /// With `--runtime docker`: what to remove on stop.
    docker: Option<DockerRun>,
}

/// What a `--runtime docker` run leaves to remove on stop: the scenario's
/// containers (wherever they moved) and its own images (the trace
/// scenario's profiles); the generator's image stays for the next run.
#[derive(Debug, Default)]
struct DockerRun {
    host: String,
    workloads: Vec<String>,
    images: Vec<String>,
}

impl Cluster {
    fn start(&mut self, spec: Spec, control: bool) -> anyhow::Result<()> {
        let s = Supervised::start(spec, self.grace)?;
        if control {
            self.control.push(self.services.len());
        }
        self.services.push(s);
        Ok(())
    }

    /// Stops the services in reverse order, then empties and removes the cgroups.
    async fn stop(mut self) {
        while let Some(s) = self.services.pop() {
            let name = s.name.clone();
            s.stop().await;
            tracing::debug!(service = %name, "stopped");
        }
        let docker_used = self.docker.is_some();
        if let Some(run) = self.docker.take() {
            let removed = tokio::task::spawn_blocking(move || {
                let n = image::remove_containers(&run.host, &run.workloads)?;
                image::remove_images(&run.host, &run.images)?;
                Ok::<_, image::ImageError>(n)
            })
            .await;
            match removed {
                Ok(Ok(n)) if n > 0 => println!("removed {n} container(s) of the scenario"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("warning: removing the scenario's containers: {e}"),
                Err(e) => eprintln!("warning: removing the scenario's containers: {e}"),
            }
        }
        for cg in &self.cgroups {
            let rel = cg.rel.clone();
            let cg = cg.clone();
            let killed = tokio::task::spawn_blocking(move || {
                let n = cg.kill_all(Duration::from_secs(10));
                (n, cg.remove())
            })
            .await;
            match killed {
                Ok((n, Ok(()))) if n > 0 => {
                    println!("killed {n} process(es) left in cgroup {rel}")
                }
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => eprintln!("warning: {e}"),
                Err(e) => eprintln!("warning: emptying a cgroup: {e}"),
            }
        }
        cgroup::remove_parent(&self.prefix);
        if docker_used {
            cgroup::remove_everywhere(&self.prefix);
        }
    }
}

/// `up`.
///
/// # Errors
/// Bad input, a missing binary, a service that cannot start.
pub async fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let bin = binaries_dir()?;
    let repo = find_repo(a.repo.as_deref())?;
    let conf = repo.join("nats/server.conf");
    if let Some(refused) = choose_runtime(&a).await {
        return Ok(refused);
    }
    let workers: Vec<NodeName> = (2..=a.nodes)
        .map(|i| NodeName::new(format!("node{i}")))
        .collect::<Result<_, _>>()?;
    let plan = match &a.scenario {
        Scenario::Trace(dir) => Some(
            TracePlan::new(
                dir,
                usize::from(a.trace_vms),
                workers.len(),
                a.node_cpus,
                a.node_memory_mib,
                a.trace_speed,
                a.trace_from,
            )
            .map_err(crate::error::InputError::BadScenario)?,
        ),
        _ => None,
    };
    let state = prepare_state(&a)?;
    let logs = state.join("logs");
    let nats_url = format!("nats://127.0.0.1:{}", a.nats_port);
    let operator = crate::up::auth::for_up(&state, &conf, &workers, a.insecure)?;
    let auth = (!a.insecure).then(|| state.join("auth"));

    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let mut stop = shutdown.listener();
    let mut cluster = Cluster {
        services: Vec::new(),
        control: Vec::new(),
        cgroups: Vec::new(),
        prefix: a.cgroup_prefix.trim_matches('/').to_string(),
        grace: a.grace,
        docker: (a.runtime == RuntimeArg::Docker).then(|| DockerRun {
            host: a.docker_host.clone(),
            ..DockerRun::default()
        }),
    };
    let launch = Launch {
        a: &a,
        bin: &bin,
        conf: &conf,
        state: &state,
        nats_url: &nats_url,
        auth: auth.as_deref(),
    };
    let outcome = tokio::select! {
        r = launch.bring_up(&mut cluster, &workers, plan.as_ref()) => r,
        _ = stop.recv() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(e) = outcome {
        eprintln!("error: {e:#}");
        eprintln!("stopping what was started; logs are in {}", logs.display());
        cluster.stop().await;
        return Ok(ExitCode::from(1));
    }
    announce(
        &a,
        &state,
        &nats_url,
        &workers,
        operator.as_deref(),
        started_at,
        clock,
    );
    // The trace scenario's generators started just before.
    let scenario_started = chrono::Utc::now();

    // Follow the services (the supervisors restart them) and meter the
    // control plane until asked to stop.
    let meter = meter_until_stopped(&cluster, &mut stop).await;
    // Read the log while nats-server still runs.
    match read_run_log(&nats_url, operator.clone()).await {
        Ok(log) => {
            let report = StopReport::fold(&log, started_at);
            print!("{}", report.render());
            if let Some(p) = &plan {
                let run = outcome::ran_for(chrono::Utc::now() - scenario_started);
                print!("{}", outcome::value_table(p, &report, &workers, run));
            }
        }
        Err(e) => eprintln!("warning: no stop report, the log could not be read: {e:#}"),
    }
    println!("stopping (SIGTERM, SIGKILL after {:?})", a.grace);
    cluster.stop().await;
    report_usage(&meter, &state, clock.elapsed().as_secs_f64());
    println!("stopped; logs are in {}", logs.display());
    Ok(ExitCode::SUCCESS)
}

/// Says which runtime the executors use; `Some(exit code)` when the
/// options cannot be honoured (before anything is started).
async fn choose_runtime(a: &UpArgs) -> Option<ExitCode> {
    let docker = docker::ping(&a.docker_host).await;
    match (a.runtime, &docker) {
        (RuntimeArg::Docker, Err(why)) => {
            eprintln!(
                "error: --runtime docker needs a running Docker daemon, and none answers at {} ({why}); \
                 start one (scripts/setup-docker) or use --runtime process",
                a.docker_host
            );
            return Some(ExitCode::from(2));
        }
        (RuntimeArg::Process, Err(_)) => {
            println!("Docker is not running: using the process runtime")
        }
        (RuntimeArg::Process, Ok(())) => {
            println!("runtime: process (Docker is running too: --runtime docker uses it)")
        }
        (RuntimeArg::Docker, Ok(())) => println!("runtime: docker"),
    }
    None
}

/// Empties the state folder when asked, creates it and its `logs`, and
/// checks that the NATS port is free; returns the folder, absolute.
fn prepare_state(a: &UpArgs) -> anyhow::Result<PathBuf> {
    if a.fresh && a.state.exists() {
        std::fs::remove_dir_all(&a.state)
            .with_context(|| format!("emptying {}", a.state.display()))?;
    }
    let state = absolute(&a.state)?;
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    if std::net::TcpStream::connect(("127.0.0.1", a.nats_port)).is_ok() {
        bail!(
            "port {} is taken (another nats-server or `loadshift up`?): stop it or pass --nats-port",
            a.nats_port
        );
    }
    Ok(state)
}

/// Writes `up.json` and tells the operator where everything is.
fn announce(
    a: &UpArgs,
    state: &Path,
    nats_url: &str,
    workers: &[NodeName],
    operator: Option<&Path>,
    started_at: chrono::DateTime<chrono::Utc>,
    clock: Instant,
) {
    let info = serde_json::json!({
        "started_at": started_at,
        "ready_after_ms": clock.elapsed().as_millis() as u64,
        "pid": std::process::id(),
        "nats": nats_url,
        "dashboard": format!("http://{}", a.listen),
        "scenario": a.scenario.to_string(),
        "nats_creds": operator,
    });
    let _ = std::fs::write(state.join("up.json"), format!("{info:#}\n"));
    println!(
        "loadshift is up: {} nodes (node1 as control plane, {} as workers), scenario {}, ready in {:.1} s",
        a.nodes,
        workers.iter().map(NodeName::as_str).collect::<Vec<_>>().join(", "),
        a.scenario,
        clock.elapsed().as_secs_f64()
    );
    println!("  dashboard  http://{}", a.listen);
    println!("  NATS       {nats_url}   (nats stream ls --server {nats_url})");
    println!("  status     loadshift status --nats {nats_url}");
    println!("  events     loadshift events tail --nats {nats_url} --subject 'migration.>'");
    println!("  logs       {}", state.join("logs").display());
    crate::up::auth::print_operator_line(operator);
    println!("Ctrl-C stops everything.");
}

/// Samples the control plane's CPU and memory every second until `stop`.
async fn meter_until_stopped(cluster: &Cluster, stop: &mut Listener) -> Meter {
    let mut meter = Meter::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.recv() => return meter,
            _ = tick.tick() => {
                for &i in &cluster.control {
                    let s = &cluster.services[i];
                    let pid = s.pid.load(std::sync::atomic::Ordering::Relaxed);
                    if pid != 0 {
                        meter.sample(&s.name, pid);
                    }
                }
            }
        }
    }
}

/// Every envelope of both streams (TELEMETRY and EVENTS) as stored now;
/// unreadable messages are skipped, as every consumer of the log does.
async fn read_run_log(
    nats_url: &str,
    credentials: Option<PathBuf>,
) -> anyhow::Result<Vec<Envelope>> {
    let opts = connection::NatsOptions {
        url: nats_url.to_string(),
        credentials,
        client_name: "loadshift-up report".into(),
        ca: None,
    };
    let client = connection::connect(&opts, false)
        .await
        .with_context(|| format!("connecting to {nats_url}"))?;
    let js = async_nats::jetstream::new(client);
    let mut out = Vec::new();
    for id in StreamId::ALL {
        let cfg = ReaderConfig::ephemeral(id, ReaderStart::First, "loadshift up report");
        let read = reader::read_existing(&js, cfg, Duration::from_secs(10), |d| {
            if let Ok(e) = Envelope::from_message(&d.message.subject, &d.message.payload) {
                out.push(e);
            }
        });
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .with_context(|| format!("reading {} took over 60 s", id.name()))?
            .with_context(|| format!("reading {}", id.name()))?;
    }
    Ok(out)
}

/// Writes `usage.json` and prints what the control plane used.
fn report_usage(meter: &Meter, state: &Path, run_secs: f64) {
    let (cpu, peak, mean) = meter.total();
    let usage = serde_json::json!({
        "run_seconds": run_secs,
        "control_plane": {
            "cpu_seconds": cpu,
            "cpu_pct_of_one_core": if run_secs > 0.0 { 100.0 * cpu / run_secs } else { 0.0 },
            "peak_rss_bytes": peak,
            "mean_rss_bytes": mean,
        },
        "services": meter.services,
    });
    let _ = std::fs::write(state.join("usage.json"), format!("{usage:#}\n"));
    println!(
        "control plane (nats-server, brain, webui) used {cpu:.1} CPU-s over {run_secs:.0} s ({:.1} % of a core), \
         {} MiB resident at peak, {} MiB on average (details: {})",
        100.0 * cpu / run_secs.max(1e-9),
        peak >> 20,
        mean >> 20,
        state.join("usage.json").display()
    );
}

/// What every service of one `up` shares: the options, where the binaries,
/// the NATS config and the state are, and the NATS URL.
struct Launch<'a> {
    a: &'a UpArgs,
    bin: &'a Path,
    conf: &'a Path,
    state: &'a Path,
    nats_url: &'a str,
    /// Where the identities are (`<state>/auth`), unless `--insecure`.
    auth: Option<&'a Path>,
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

impl Launch<'_> {
    /// How to run the service `name`: its log in the state's `logs`, told
    /// where NATS is.
    fn spec(
        &self,
        name: &str,
        program: PathBuf,
        args: Vec<OsString>,
        cg: Option<NodeCgroup>,
    ) -> Spec {
        Spec {
            name: name.to_string(),
            program,
            args,
            env: crate::up::auth::service_env(
                &[("LOADSHIFT_NATS".to_string(), self.nats_url.to_string())],
                self.auth,
                name,
            ),
            log: self.state.join("logs").join(format!("{name}.log")),
            cgroup: cg,
        }
    }

    /// Starts the service `name`, the binary `loadshift-<kind>` (its kind is
    /// the name up to a `-`); services in the control plane's cgroup are
    /// metered.
    fn start_binary(
        &self,
        cluster: &mut Cluster,
        name: &str,
        args: Vec<OsString>,
        control: Option<&NodeCgroup>,
    ) -> anyhow::Result<()> {
        let kind = name.split('-').next().unwrap_or(name);
        let program = self.bin.join(format!("loadshift-{kind}"));
        let spec = self.spec(name, program, args, control.cloned());
        cluster.start(spec, control.is_some())
    }

    /// Starts everything in order: cgroups, nats-server, brain and webui,
    /// each node's agent and executor, then the scenario.
    async fn bring_up(
        &self,
        cluster: &mut Cluster,
        workers: &[NodeName],
        plan: Option<&TracePlan>,
    ) -> anyhow::Result<()> {
        let node1 = NodeName::new("node1")?;
        let mut nodes = vec![node1];
        nodes.extend(workers.iter().cloned());
        let cgroups = self.make_cgroups(cluster, &nodes)?;
        let (client, js) = self.start_nats(cluster, &cgroups[0]).await?;
        self.start_control_plane(cluster, &cgroups[0])?;
        for (i, n) in nodes.iter().enumerate() {
            self.start_node(cluster, n, &cgroups[i], i == 0)?;
        }
        for n in workers {
            wait_for_executor(&client, n, &self.state.join("logs")).await?;
        }
        let mut images = Vec::new();
        let started = match (&self.a.scenario, plan) {
            (Scenario::Ramp, _) => self.start_ramp(&js, workers).await?,
            (_, Some(p)) => self.start_trace(&js, workers, p, &mut images).await?,
            _ => Vec::new(),
        };
        if let Some(run) = &mut cluster.docker {
            run.workloads.extend(started);
            run.images.extend(images);
        }
        Ok(())
    }

    /// The repository (the folder holding `nats/server.conf`).
    fn repo(&self) -> &Path {
        self.conf
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
    }

    /// How this run's load generators run: processes of the binary beside
    /// `loadshift`, or with `--runtime docker` containers of the image built
    /// from it (on first use) by `loadgen/Dockerfile`.
    async fn generator(&self) -> anyhow::Result<Generator> {
        let loadgen = self.bin.join("loadshift-loadgen");
        if self.a.runtime == RuntimeArg::Process {
            return Ok(Generator::process(&loadgen));
        }
        let dockerfile = self.repo().join("loadgen/Dockerfile");
        let host = self.a.docker_host.clone();
        let clock = Instant::now();
        let built =
            tokio::task::spawn_blocking(move || image::loadgen_image(&loadgen, &dockerfile, &host))
                .await
                .context("building the load generator's image")?
                .context("building the load generator's image")?;
        match &built {
            image::Built::Found(t) => println!("image        {t} (loadshift-loadgen, built earlier)"),
            image::Built::New(t) => println!(
                "image        {t} (loadshift-loadgen, built now from loadgen/Dockerfile in {:.1} s)",
                clock.elapsed().as_secs_f64()
            ),
        }
        Ok(Generator::container(built.tag().to_string()))
    }

    /// One cgroup per node: node1 (the control plane) with its own CPUs.
    fn make_cgroups(
        &self,
        cluster: &mut Cluster,
        nodes: &[NodeName],
    ) -> anyhow::Result<Vec<NodeCgroup>> {
        let memory = self.a.node_memory_mib << 20;
        let mut cgroups = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let cores = if i == 0 {
                self.a.control_cpus
            } else {
                self.a.node_cpus
            };
            let cg = NodeCgroup::create(&format!("{}/{n}", cluster.prefix), cores, memory)
                .context("creating the nodes' cgroups (loadshift up must run as root)")?;
            cluster.cgroups.push(cg.clone());
            cgroups.push(cg);
        }
        Ok(cgroups)
    }

    /// nats-server in the control plane's cgroup; returns once it answers
    /// and the streams are declared.
    async fn start_nats(
        &self,
        cluster: &mut Cluster,
        control: &NodeCgroup,
    ) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
        let a = self.a;
        let mut args = os(&["-c"]);
        args.push(match self.auth {
            Some(dir) => dir.join("nats-server.conf").into(),
            None => self.conf.into(),
        });
        args.extend(os(&["-sd"]));
        args.push(self.state.join("nats").into());
        args.extend(os(&[
            "-p",
            &a.nats_port.to_string(),
            "-m",
            &a.nats_monitor_port.to_string(),
        ]));
        let spec = self.spec(
            "nats-server",
            PathBuf::from("nats-server"),
            args,
            Some(control.clone()),
        );
        let nats_log = spec.log.clone();
        cluster.start(spec, true)?;
        let operator = self.auth.map(|d| d.join("operator.nk"));
        let client = wait_for_nats(self.nats_url, &nats_log, operator).await?;
        let js = async_nats::jetstream::new(client.clone());
        stream::declare(&js, &Default::default())
            .await
            .context("declaring the streams")?;
        println!(
            "nats-server  {}  (store {})",
            self.nats_url,
            self.state.join("nats").display()
        );
        Ok((client, js))
    }

    /// The brain and the webui, in the control plane's cgroup.
    fn start_control_plane(
        &self,
        cluster: &mut Cluster,
        control: &NodeCgroup,
    ) -> anyhow::Result<()> {
        let mut brain = os(&["run", "--store"]);
        brain.push(self.state.join("brain").into());
        // A fresh cluster has no history to learn from yet: the brain trains its
        // first model from the reference traces committed with the project (a
        // few Bitbrains VMs), then retrains from this cluster's own log.
        brain.push("--bootstrap-trace".into());
        brain.push(self.repo().join("brain/tests/fixtures/traces").into());
        // The demo compresses time: one 5-minute trace step is one second of
        // this cluster (a ramp of minutes would not fill one 5-minute step),
        // and the horizon is counted in those steps: three, i.e. 15 minutes of
        // the reference traces and 3 s of the demo (the default 15m would be
        // 900 one-second steps, longer than the bootstrap traces can label).
        brain.push("--step".into());
        brain.push("1s".into());
        brain.push("--horizon".into());
        brain.push("3".into());
        // One prediction in trouble is enough, as in `simulate` (one step of
        // hysteresis): three in a row would eat the whole 3-step horizon and
        // the move would complete after node2 crossed 90 % (issue 9 item 4).
        brain.push("--plan-k".into());
        brain.push("1".into());
        self.start_binary(cluster, "brain", brain, Some(control))?;
        println!("brain        store {}", self.state.join("brain").display());
        let listen = self.a.listen.to_string();
        self.start_binary(cluster, "webui", os(&["--listen", &listen]), Some(control))?;
        println!("webui        http://{}", self.a.listen);
        Ok(())
    }

    /// A node's agent (reading its cgroup) and, for a worker, its executor.
    fn start_node(
        &self,
        cluster: &mut Cluster,
        n: &NodeName,
        cg: &NodeCgroup,
        control: bool,
    ) -> anyhow::Result<()> {
        let a = self.a;
        let source = format!("cgroup:{}", cg.rel);
        let args = os(&[
            "--node",
            n.as_str(),
            "--source",
            &source,
            "--interval",
            "1s",
        ]);
        self.start_binary(cluster, &format!("agent-{n}"), args, None)?;
        if control {
            println!(
                "agent        {n} (control plane, {} core(s), cgroup {})",
                a.control_cpus, cg.rel
            );
            return Ok(());
        }
        let mut args = os(&["--node", n.as_str(), "--cgroup", &cg.rel, "--state-dir"]);
        args.push(self.state.join(n.as_str()).into());
        args.extend(os(&["--images-dir"]));
        args.push(a.images_dir.clone().into());
        args.extend(os(&["--runtime", runtime_name(a.runtime)]));
        self.start_binary(cluster, &format!("executor-{n}"), args, None)?;
        println!(
            "agent+exec   {n} ({} core(s), {} MiB, cgroup {}, source {source})",
            a.node_cpus, a.node_memory_mib, cg.rel
        );
        Ok(())
    }

    /// The ramp scenario: load generators on the first worker; returns
    /// their names.
    async fn start_ramp(
        &self,
        js: &async_nats::jetstream::Context,
        workers: &[NodeName],
    ) -> anyhow::Result<Vec<String>> {
        let Some(target) = workers.first() else {
            bail!("the ramp scenario needs a worker node");
        };
        let generator = self.generator().await?;
        // The ramp tests prediction: started before the brain can predict,
        // it would be over (node2 at its full core) before the first model
        // is trained, and any move would be a reaction.
        println!("brain        training its first model from the reference traces; the ramp starts once it is active");
        let clock = Instant::now();
        let version = wait_for_model(js, &self.state.join("logs")).await?;
        println!(
            "brain        model v{version} active after {:.1} s",
            clock.elapsed().as_secs_f64()
        );
        let run = format!("{:x}", chrono::Utc::now().timestamp() % 0x100_0000);
        let mut started = Vec::new();
        for req in scenario::ramp_requests(target, &generator, &run) {
            let name = req.workload.to_string();
            let how = match req.spec.runtime {
                Runtime::Process => "process",
                Runtime::Docker => "container",
            };
            ask_to_start(js, req).await?;
            println!(
                "scenario     started {name} on {target} (loadshift-loadgen as a {how}, ramping over {})",
                scenario::RAMP_OVER
            );
            started.push(name);
        }
        Ok(started)
    }
}

impl Launch<'_> {
    /// The trace scenario: one load generator per planned VM on its
    /// worker, playing the VM's profile (written under the state's `trace`;
    /// for containers, copied into this run's image, added to `images`);
    /// returns their names.
    async fn start_trace(
        &self,
        js: &async_nats::jetstream::Context,
        workers: &[NodeName],
        plan: &TracePlan,
        images: &mut Vec<String>,
    ) -> anyhow::Result<Vec<String>> {
        let dir = self.state.join("trace");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let run = format!("{:x}", chrono::Utc::now().timestamp() % 0x100_0000);
        let step = plan.live_step();
        let mut placed = Vec::new();
        for w in plan.planned(trace_plan::PROFILE_STEPS) {
            let name = trace_plan::workload_name(&w.vm, &run)
                .map_err(crate::error::InputError::BadScenario)?;
            let file = dir.join(format!("{name}.csv"));
            std::fs::write(&file, &w.profile)
                .with_context(|| format!("writing {}", file.display()))?;
            let Some(node) = workers.get(w.worker) else {
                bail!(
                    "the plan puts {name} on worker {} of {}",
                    w.worker,
                    workers.len()
                );
            };
            placed.push((name, node.clone(), file, w.vm));
        }
        let generator = match self.generator().await? {
            g if g.runtime == Runtime::Process => g,
            base => {
                let tag = format!("{}-trace:{run}", image::REPOSITORY);
                let (host, from) = (self.a.docker_host.clone(), base.image.unwrap_or_default());
                let (d, t) = (dir.clone(), tag.clone());
                tokio::task::spawn_blocking(move || image::with_profiles(&from, &d, &t, &host))
                    .await
                    .context("adding the profiles to the image")?
                    .context("adding the profiles to the image")?;
                println!("image        {tag} (the generator with this run's profiles)");
                images.push(tag.clone());
                Generator::container(tag)
            }
        };
        let mut started = Vec::new();
        for (name, node, file, vm) in placed {
            let profile = match generator.runtime {
                Runtime::Process => file.display().to_string(),
                Runtime::Docker => format!("{}/{name}.csv", image::PROFILES_IN_IMAGE),
            };
            let req =
                trace_plan::start_request(name.clone(), node.clone(), &generator, &profile, step);
            ask_to_start(js, req).await?;
            println!("scenario     started {name} on {node} (VM {vm} of the trace, a 5-minute step every {step:?})");
            started.push(name.to_string());
        }
        Ok(started)
    }
}

/// Publishes `req`, the scenario's (the `cli` identity's) request to start
/// a generator.
async fn ask_to_start(
    js: &async_nats::jetstream::Context,
    req: loadshift_events::workload::StartRequested,
) -> anyhow::Result<()> {
    let (name, node) = (req.workload.clone(), req.node.clone());
    let env = Envelope::new(NodeName::new("cli")?, Event::WorkloadStartRequested(req));
    connection::publish(js, &env)
        .await
        .with_context(|| format!("asking {node} to start {name}"))?;
    Ok(())
}

fn runtime_name(r: RuntimeArg) -> &'static str {
    match r {
        RuntimeArg::Process => "process",
        RuntimeArg::Docker => "docker",
    }
}

/// Connects once nats-server answers (at most 30 s).
async fn wait_for_nats(
    url: &str,
    log: &Path,
    credentials: Option<PathBuf>,
) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let opts = connection::NatsOptions {
        url: url.to_string(),
        credentials,
        client_name: "loadshift-up".into(),
        ca: None,
    };
    loop {
        match connection::connect(&opts, false).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "nats-server did not answer at {url} within 30 s ({e}); see {}",
                    log.display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// How long the ramp waits for the brain's first model: training it from
/// the reference traces takes seconds in a release build on a quiet
/// machine, minutes in a debug build on a busy one.
const MODEL_PATIENCE: Duration = Duration::from_secs(1800);

/// Waits until the brain has an active model (its `model.activated` in the
/// log, from the start: one may already be there); returns its version.
async fn wait_for_model(js: &async_nats::jetstream::Context, logs: &Path) -> anyhow::Result<u64> {
    use futures::StreamExt;
    let cfg = ReaderConfig::ephemeral(StreamId::Events, ReaderStart::First, "loadshift up: model")
        .filter(["model.>"]);
    let mut models = reader::open(js, cfg)
        .await
        .context("reading the brain's model events")?;
    let deadline = tokio::time::Instant::now() + MODEL_PATIENCE;
    loop {
        let d = match tokio::time::timeout_at(deadline, models.next()).await {
            Ok(Some(d)) => d,
            Ok(None) => bail!("the log ended while waiting for the brain's first model"),
            Err(_) => bail!(
                "the brain had no model after {} s; see {}",
                MODEL_PATIENCE.as_secs(),
                logs.join("brain.log").display()
            ),
        };
        if let Ok(env) = Envelope::from_message(d.message.subject.as_str(), &d.message.payload) {
            if let Event::ModelActivated(a) = env.event {
                return Ok(a.version);
            }
        }
    }
}

/// Waits until `node`'s executor answers its ping (at most 60 s).
async fn wait_for_executor(
    client: &async_nats::Client,
    node: &NodeName,
    logs: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if liveness::ping(client, node, Duration::from_millis(500))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the executor of {node} did not answer within 60 s; see {}",
        logs.join(format!("executor-{node}.log")).display()
    )
}

/// The folder `loadshift` runs from, which must hold the other binaries.
fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the loadshift binary")?;
    let dir = exe
        .parent()
        .context("the loadshift binary has no folder")?
        .to_path_buf();
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} not found next to {} (build them with `cargo build --bins`, same profile)",
            missing.join(", "),
            exe.display()
        );
    }
    Ok(dir)
}

/// The repository: `--repo`, else the current folder or one above it, else
/// where this binary was built, as long as it holds nats/server.conf.
fn find_repo(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let holds = |d: &Path| d.join("nats/server.conf").is_file();
    if let Some(d) = given {
        if holds(d) {
            return absolute(d);
        }
        return Err(crate::error::InputError::NotARepo(d.to_path_buf()).into());
    }
    let cwd = std::env::current_dir()?;
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().ok();
    let candidates = cwd
        .ancestors()
        .chain(exe.iter().flat_map(|e| e.ancestors()))
        .chain(built.ancestors());
    for d in candidates {
        if holds(d) {
            return Ok(d.to_path_buf());
        }
    }
    Err(crate::error::InputError::NotARepo(cwd).into())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}
