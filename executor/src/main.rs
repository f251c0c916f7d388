//! `loadshift-executor`: one per worker node. Runs workloads and drives this
//! node's half of every migration; `check` says what works on this machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use loadshift_events::cli::{LogArgs, NatsArgs};
use loadshift_events::shutdown::{Shutdown, Signal};
use loadshift_events::{connection, stream, NodeName};
use loadshift_executor::admission;
use loadshift_executor::clock::SystemClock;
use loadshift_executor::deadline::Deadlines;
use loadshift_executor::fence::KvFence;
use loadshift_executor::image_store::{ImageStore, JetStreamImages};
use loadshift_executor::journal::Journal;
use loadshift_executor::liveness::{self, NatsPeers, Pong};
use loadshift_executor::runtime::docker::{Daemon, DockerRuntime};
use loadshift_executor::runtime::docker_log::ContainerLogs;
use loadshift_executor::runtime::process::ProcessRuntime;
use loadshift_executor::runtime::Runtime;
use loadshift_executor::saga::Executor;
use loadshift_executor::stream::{self as page_stream, StreamSettings, Streams};
use loadshift_executor::{cgroup, fault, service};
use tokio::sync::Notify;

/// How long a stopping executor lets its outbox announce what the last
/// step decided (anything left is published at the next start): SIGTERM is
/// honoured within a second or two, even with NATS away.
const OUTBOX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs workloads on one worker node and moves them to other nodes with CRIU
/// checkpoint/restore, driven by events.
///
/// It consumes `workload.<node>.>` and `migration.<node>.>` from the EVENTS
/// stream, starts workloads, dumps them, restores them, and announces every
/// step as an event. Its journal (sled, under --state-dir) lets it resume or
/// roll back a migration after a crash.
///
/// Examples:
///   loadshift-executor --node node2 --state-dir /var/lib/loadshift/node2 --cgroup loadshift/node2
///   loadshift-executor check
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The node this executor acts for (letters, digits, '-' and '_').
    #[arg(long, env = "LOADSHIFT_NODE")]
    node: Option<NodeName>,
    /// Folder for the journal and the workloads' files.
    #[arg(
        long,
        env = "LOADSHIFT_STATE_DIR",
        default_value = "/var/lib/loadshift/executor"
    )]
    state_dir: PathBuf,
    /// How workloads run on this node.
    #[arg(long, env = "LOADSHIFT_RUNTIME", value_enum, default_value_t = RuntimeArg::Process)]
    runtime: RuntimeArg,
    /// The node's cgroup (relative to the cgroup root, e.g. loadshift/node2);
    /// the executor joins it, so its workloads are charged to this node.
    #[arg(long, env = "LOADSHIFT_CGROUP")]
    cgroup: Option<String>,
    /// The criu binary (default: `criu` on PATH).
    #[arg(long, env = "LOADSHIFT_CRIU", default_value = "criu")]
    criu: PathBuf,
    /// The address other executors reach this node on, for streamed
    /// migrations (pages sent straight from the source's dump to this node):
    /// each stream listens on it, on a port of its own, for one
    /// token-authenticated connection.
    #[arg(long, env = "LOADSHIFT_ADVERTISE", default_value = "127.0.0.1")]
    advertise: std::net::IpAddr,
    /// Where checkpoint images are written before upload (tmpfs is ~30x faster than disk).
    #[arg(
        long,
        env = "LOADSHIFT_IMAGES_DIR",
        default_value = "/dev/shm/loadshift"
    )]
    images_dir: PathBuf,
    /// Key checkpoint images are sealed with (64 hex digits; every executor
    /// of the cluster holds the same, no one else): `<state>/auth/images.key`
    /// from `loadshift up`, or `loadshift auth init`. Without one, images
    /// travel and rest in clear.
    #[arg(long, env = "LOADSHIFT_IMAGES_KEY")]
    images_key: Option<PathBuf>,
    /// Images older than this whose migration is not in flight here are
    /// removed, from this node's image folder and from the bucket.
    #[arg(long, env = "LOADSHIFT_IMAGES_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    images_ttl: std::time::Duration,
    /// The shortest any wait of a migration may last (the target's answer,
    /// an upload, a download); bigger images get more, in proportion to the
    /// speed measured on earlier migrations. A target silent past its
    /// deadline loses the migration: the workload resumes here.
    #[arg(long, env = "LOADSHIFT_DEADLINE_FLOOR", default_value = "10s", value_parser = humantime::parse_duration)]
    deadline_floor: std::time::Duration,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reports in plain words what works here: criu, cgroups, tmpfs, NATS.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeArg {
    /// Plain processes, checkpointed with the criu CLI.
    Process,
    /// Docker containers, through the Docker Engine API.
    Docker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Some(Command::Check) => rt.block_on(check(&cli)),
        None => rt.block_on(run(&cli)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let Some(node) = cli.node.clone() else {
        eprintln!("error: --node (or LOADSHIFT_NODE) is required to run an executor");
        return Ok(ExitCode::from(2));
    };
    if let Some(cg) = &cli.cgroup {
        cgroup::join(cg).context("joining the node's cgroup")?;
    }
    service::become_subreaper();
    match &cli.images_key {
        Some(path) => loadshift_executor::seal::install(
            loadshift_executor::seal::ImagesKey::load(path).context("loading the images key")?,
        ),
        None => tracing::warn!(
            "no --images-key: checkpoint images (whole process memories) travel and rest in clear"
        ),
    }
    std::fs::create_dir_all(&cli.state_dir)
        .with_context(|| format!("creating the state dir {}", cli.state_dir.display()))?;
    let workloads = cli.state_dir.join("workloads");
    match cli.runtime {
        RuntimeArg::Process => {
            // criu probes the kernel at every start unless it finds this
            // cache (docs/saga.md, "Post-copy"): ~0.1 s off each freeze step.
            if let Err(e) = loadshift_executor::kdat::refresh(&cli.criu).await {
                tracing::warn!(error = %e, "no CRIU kernel cache: every criu run probes the kernel again");
            }
            serve(
                cli,
                node,
                ProcessRuntime::new(cli.criu.clone(), workloads, true),
                None,
            )
            .await
        }
        RuntimeArg::Docker => {
            let daemon = match Daemon::connect().await {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: docker mode needs a running Docker daemon with experimental features on (scripts/setup-docker starts one): {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            let cgroup = cli.cgroup.clone();
            match DockerRuntime::new(daemon, node.clone(), cgroup, workloads) {
                Ok(runtime) => {
                    let logs = runtime.container_logs();
                    serve(cli, node, runtime, Some(logs)).await
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Runs the service with runtime `runtime` until SIGINT/SIGTERM; a docker
/// node's output server reads its containers' logs through `containers`.
async fn serve<R: Runtime>(
    cli: &Cli,
    node: NodeName,
    runtime: R,
    containers: Option<ContainerLogs>,
) -> anyhow::Result<ExitCode> {
    let journal = Journal::open(&cli.state_dir.join("journal")).context("opening the journal")?;
    let images_root = cli.images_dir.join(node.as_str());
    std::fs::create_dir_all(&images_root)
        .with_context(|| format!("creating the image folder {}", images_root.display()))?;

    let client = connection::connect(
        &cli.nats.options(&format!("loadshift-executor-{node}")),
        false,
    )
    .await
    .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    let settings = cli.nats.stream_settings();
    stream::declare(&js, &settings)
        .await
        .context("declaring the streams")?;
    let store = stream::checkpoint_store(&js, &settings)
        .await
        .context("opening the CHECKPOINTS object store")?;

    let fence = KvFence::open(&js, settings.replicas)
        .await
        .context("opening the migration fences")?;
    admission::open_bucket(&js, settings.replicas)
        .await
        .map_err(anyhow::Error::msg)
        .context("opening the workload-name registry")?;
    let images = JetStreamImages::new(js.clone(), store.clone());
    let wired = Wired {
        objects: store,
        client,
        js,
        journal,
        images_root,
        fence,
        containers,
    };
    // The fault tests' damaged store is chosen here, at wiring time, so no
    // production code path carries a switch for it.
    if fault::armed(fault::CORRUPT_IMAGE) {
        let store = fault::CorruptingStore::new(images);
        return serve_with(cli, node, runtime, store, wired).await;
    }
    serve_with(cli, node, runtime, images, wired).await
}

/// What `serve` connected and opened, handed to the service.
struct Wired {
    /// The bucket itself, for the orphan sweep.
    objects: async_nats::jetstream::object_store::ObjectStore,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    journal: Journal,
    images_root: PathBuf,
    fence: KvFence,
    containers: Option<ContainerLogs>,
}

/// Runs the service with its effects chosen, until SIGINT/SIGTERM.
async fn serve_with<R: Runtime, S: ImageStore>(
    cli: &Cli,
    node: NodeName,
    runtime: R,
    store: S,
    wired: Wired,
) -> anyhow::Result<ExitCode> {
    let Wired {
        objects,
        client,
        js,
        journal,
        images_root,
        fence,
        containers,
    } = wired;
    let capacity = cgroup::capacity(cli.cgroup.as_deref());
    let kind = runtime.kind();
    let notify = Arc::new(Notify::new());
    let deadlines = Deadlines {
        floor: cli.deadline_floor,
    };
    let streams = if runtime.streams_pages() {
        Streams::new(StreamSettings {
            criu: cli.criu.clone(),
            advertise: cli.advertise,
            images_root: images_root.clone(),
            deadlines,
        })
    } else {
        Streams::default()
    };
    let exec = Executor {
        node: node.clone(),
        runtime,
        journal: journal.clone(),
        store,
        names: Arc::new(admission::KvNames(async_nats::jetstream::new(
            client.clone(),
        ))),
        peers: NatsPeers::new(client.clone()),
        clock: SystemClock::default(),
        fence,
        deadlines,
        images_root: images_root.clone(),
        outbox: notify.clone(),
        streams: streams.clone(),
    };
    page_stream::serve(client.clone(), &node, streams)
        .await
        .context("answering stream offers")?;
    liveness::serve(
        client.clone(),
        Pong {
            node: node.clone(),
            runtime: kind,
            capacity: liveness::Capacity {
                cores: capacity.cores,
                memory_bytes: capacity.memory_bytes,
            },
        },
    )
    .await
    .context("answering pings")?;
    loadshift_executor::output::OutputServer {
        node: node.clone(),
        journal: journal.clone(),
        workloads_dir: cli.state_dir.join("workloads"),
        containers,
    }
    .serve(client.clone())
    .await
    .context("serving workload output")?;

    let shutdown: Shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    tokio::spawn(loadshift_executor::sweep::run(
        objects,
        images_root,
        journal.clone(),
        cli.images_ttl,
        shutdown.listener(),
    ));
    tokio::spawn(service::publish_outbox(
        js.clone(),
        journal,
        notify,
        shutdown.listener(),
    ));
    tracing::info!(%node, runtime = %kind, cores = capacity.cores, memory = capacity.memory_bytes, "executor starting");
    let result = service::run(&exec, &js, shutdown.listener()).await;
    // The service may have stopped on an error: the outbox stops too, after
    // announcing what the last step decided.
    shutdown.trigger().fire(Signal::Terminate);
    if let Err(e) = shutdown.completed_within(OUTBOX_PATIENCE).await {
        tracing::warn!("{e}: the outbox still holds events; they are published at the next start");
    }
    result.context("executor stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// The lines `check` prints, and whether every needed one was good.
struct Checklist {
    ok: bool,
}

impl Checklist {
    /// A line about something this node needs.
    fn needed(&mut self, good: bool, what: String) {
        self.ok &= good;
        println!("{} {what}", if good { "ok  " } else { "FAIL" });
    }

    /// A line about something needed only when `needed`; otherwise a bad
    /// answer is information, not a failure.
    fn needed_if(&mut self, needed: bool, good: bool, what: String) {
        if needed {
            self.needed(good, what);
        } else {
            println!("{} {what}", if good { "ok  " } else { "info" });
        }
    }
}

async fn check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let mut list = Checklist { ok: true };
    check_criu_version(cli, &mut list).await;
    check_criu_kernel(cli, &mut list).await;
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok();
    list.needed(
        unshare,
        "unshare (util-linux) to start workloads in their own PID namespace".into(),
    );
    if let Some(cg) = &cli.cgroup {
        check_cgroup(cg, &mut list);
    }
    let shm = std::fs::create_dir_all(&cli.images_dir).is_ok();
    list.needed(
        shm,
        format!("image folder {} writable", cli.images_dir.display()),
    );
    // Docker is needed only in docker mode: its lines count as failures
    // only there.
    check_docker(cli.runtime == RuntimeArg::Docker, &mut list).await;
    match connection::connect(&cli.nats.options("loadshift-executor-check"), false).await {
        Ok(_) => list.needed(true, format!("NATS at {}", cli.nats.nats)),
        Err(e) => list.needed(false, format!("NATS: {e}")),
    }
    Ok(if list.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `criu ARG`; when it cannot run at all, says so in `list` under
/// `what` and gives `None`.
async fn criu(
    cli: &Cli,
    arg: &str,
    what: &str,
    list: &mut Checklist,
) -> Option<std::process::Output> {
    match tokio::process::Command::new(&cli.criu)
        .arg(arg)
        .output()
        .await
    {
        Ok(out) => Some(out),
        Err(e) => {
            let path = cli.criu.display();
            list.needed(
                false,
                format!("{what} ({path}): cannot run it ({e}); run scripts/setup-criu"),
            );
            None
        }
    }
}

/// criu 4.2 or newer: older ones fail on these kernels (ARCHITECTURE.md).
async fn check_criu_version(cli: &Cli, list: &mut Checklist) {
    let Some(out) = criu(cli, "--version", "criu", list).await else {
        return;
    };
    let v = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', " ");
    let good = v.contains("Version: 4.2") || v.contains("Version: 4.3") || v.contains("Version: 5");
    let hint = if good {
        ""
    } else {
        " (need 4.2 or newer: run scripts/setup-criu)"
    };
    list.needed(good, format!("criu at {}: {v}{hint}", cli.criu.display()));
}

/// `criu check`: whether this kernel supports checkpoint/restore.
async fn check_criu_kernel(cli: &Cli, list: &mut Checklist) {
    let Some(out) = criu(cli, "check", "criu check", list).await else {
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let good = out.status.success() || text.contains("Looks good");
    let what = if good {
        "the kernel supports checkpoint/restore".to_string()
    } else {
        text.trim().to_string()
    };
    list.needed(good, format!("criu check: {what}"));
}

/// The node's cgroup exists (v1 cpu and memory, or v2), and what it offers.
fn check_cgroup(cg: &str, list: &mut Checklist) {
    let cap = cgroup::capacity(Some(cg));
    let root = std::path::Path::new("/sys/fs/cgroup");
    let rel = cg.trim_start_matches('/');
    let dirs_ok = ["cpu", "memory"]
        .iter()
        .all(|c| root.join(c).join(rel).exists())
        || root.join(rel).join("cgroup.procs").exists();
    let state = if dirs_ok {
        "present"
    } else {
        "missing; create it under cpu, cpuacct and memory"
    };
    list.needed(
        dirs_ok,
        format!(
            "cgroup {cg}: {state} (capacity {:.2} cores, {} MiB)",
            cap.cores,
            cap.memory_bytes >> 20
        ),
    );
}

/// A Docker daemon with experimental features (checkpoints).
async fn check_docker(needed: bool, list: &mut Checklist) {
    match Daemon::connect().await {
        Ok(d) => {
            list.needed_if(
                needed,
                true,
                format!(
                    "docker daemon {} answers (data root {}, cgroup driver {})",
                    d.version,
                    d.data_root.display(),
                    d.cgroup_driver
                ),
            );
            let what = if d.experimental {
                "docker experimental features are on (checkpoints work)".to_string()
            } else {
                "docker experimental features are off: containers cannot be checkpointed (set \"experimental\": true in /etc/docker/daemon.json; scripts/setup-docker does)".to_string()
            };
            list.needed_if(needed, d.experimental, what);
        }
        Err(e) => list.needed_if(
            needed,
            false,
            format!("docker daemon does not answer ({e}); only needed for --runtime docker; scripts/setup-docker starts one"),
        ),
    }
}
