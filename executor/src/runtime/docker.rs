//! Container workloads, run and checkpointed through the Docker Engine API.
//!
//! The road that works on these machines (checked by hand, see
//! docs/design.md, "Machine facts"): dockerd 20.10 with experimental features on writes a
//! checkpoint into a folder we name (`CheckpointDir`), but refuses to start a
//! container from such a folder (`custom checkpointdir is not supported`).
//! It does start one from a checkpoint in the container's own
//! `<data root>/containers/<id>/checkpoints/<name>/`, so the restorer creates
//! a fresh container from the same image and settings, copies the checkpoint
//! there and starts it with `?checkpoint=<name>`. bollard has no parameter
//! for that on its start call; a request modifier on a clone of the client
//! adds it to that one request.
//!
//! What travels is the process state CRIU saw (memory, files open, the
//! container's tmpfs mounts) and the container's output so far, saved from
//! its docker log into the workload's folder once the checkpoint stopped it
//! ([`super::docker_log`]). The container's writable layer stays with the
//! old container, which the source removes once the target runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::CreateCheckpointOptions;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use loadshift_events::output::OutputStream;
use loadshift_events::workload::{Runtime as RuntimeKind, WorkloadSpec};
use loadshift_events::{NodeName, WorkloadName};

use super::docker_log::{ContainerLogs, SAVED_UP_TO};
use super::{Handle, Runtime, RuntimeError, StopSignal, TravellingFile, Usage};

/// The checkpoint's name inside the image folder: a dump leaves it in
/// `images/loadshift/`.
pub const CHECKPOINT_ID: &str = "loadshift";

/// The label every container we create carries.
pub const LABEL_MANAGED: &str = "org.loadshift.managed";
/// The label naming the workload a container runs.
pub const LABEL_WORKLOAD: &str = "org.loadshift.workload";
/// The label naming the node a container runs for.
pub const LABEL_NODE: &str = "org.loadshift.node";

/// How often a restore is tried when containerd refuses the checkpoint's
/// upload with `already exists` (seen here once; a retry under a new
/// checkpoint name after a short pause went through).
const RESTORE_ATTEMPTS: u32 = 3;
const RESTORE_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Written into the image folder after a successful checkpoint: docker keeps
/// criu's own log elsewhere, and crash recovery must know the dump is whole.
const DUMP_MARKER: &str = "dump.done";

/// Written into the image folder before the checkpoint is asked for: the
/// container's id. An executor killed while the daemon checkpoints finds,
/// at its next start, whose checkpoint to wait for (the daemon goes on
/// without us, and no criu of its names the folder in its command line).
const DUMP_STARTED: &str = "dump.started";

/// How long a checkpoint the daemon took on after our crash is waited for.
const DAEMON_CHECKPOINT_WAIT: Duration = Duration::from_secs(60);

/// A Docker daemon we talked to, and what it told about itself.
pub struct Daemon {
    /// The client, its API version negotiated with the daemon.
    pub docker: Docker,
    /// The daemon's version (e.g. 20.10.24).
    pub version: String,
    /// Whether experimental features (checkpoints) are on.
    pub experimental: bool,
    /// Where it keeps containers (`DockerRootDir`).
    pub data_root: PathBuf,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
}

impl Daemon {
    /// Connects to the local daemon (`DOCKER_HOST` or /var/run/docker.sock),
    /// negotiates the API version (Debian 12's dockerd speaks 1.41) and reads
    /// its settings.
    ///
    /// # Errors
    /// [`RuntimeError::Docker`] when the daemon does not answer.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Docker(format!("cannot set up a client: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Docker(format!("no answer from the daemon: {e}")))?;
        let info = docker
            .info()
            .await
            .map_err(|e| RuntimeError::Docker(format!("docker info failed: {e}")))?;
        Ok(Self {
            docker,
            version: info.server_version.unwrap_or_default(),
            experimental: info.experimental_build.unwrap_or(false),
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            data_root: PathBuf::from(
                info.docker_root_dir
                    .unwrap_or_else(|| "/var/lib/docker".into()),
            ),
        })
    }
}

/// Runs container workloads for one node and moves them with docker
/// checkpoints.
pub struct DockerRuntime {
    docker: Docker,
    data_root: PathBuf,
    node: NodeName,
    cgroup_parent: Option<String>,
    workloads_dir: PathBuf,
}

impl DockerRuntime {
    /// A runtime for node `node` on `daemon`. With `cgroup` (relative to the
    /// cgroup root, e.g. `loadshift/node2`) its containers are created under
    /// that cgroup, so they are charged to the node. `workloads_dir` holds the
    /// (empty) workload folders the saga expects.
    ///
    /// # Errors
    /// [`RuntimeError::Unsupported`] when the daemon's experimental features
    /// are off (it cannot checkpoint then), or when a node cgroup is asked of
    /// a daemon using the systemd cgroup driver (it takes only slice names
    /// as a parent).
    pub fn new(
        daemon: Daemon,
        node: NodeName,
        cgroup: Option<String>,
        workloads_dir: PathBuf,
    ) -> Result<Self, RuntimeError> {
        if !daemon.experimental {
            return Err(RuntimeError::Unsupported(
                "docker mode needs the Docker daemon's experimental features on to checkpoint containers: set \"experimental\": true in /etc/docker/daemon.json and restart dockerd (scripts/setup-docker does both)"
                    .into(),
            ));
        }
        if cgroup.is_some() && daemon.cgroup_driver == "systemd" {
            return Err(RuntimeError::Unsupported(
                "the Docker daemon uses the systemd cgroup driver, which cannot put containers under a node cgroup given by path: set \"exec-opts\": [\"native.cgroupdriver=cgroupfs\"] in /etc/docker/daemon.json and restart dockerd, or run without --cgroup"
                    .into(),
            ));
        }
        // Absolute: a relative parent would be taken relative to the cgroup
        // of runc (started by containerd's shim), not to the root.
        let cgroup_parent = cgroup.map(|c| format!("/{}", c.trim_start_matches('/')));
        Ok(Self {
            docker: daemon.docker,
            data_root: daemon.data_root,
            node,
            cgroup_parent,
            workloads_dir,
        })
    }

    /// A reader of this daemon's container logs, for the output server.
    pub fn container_logs(&self) -> ContainerLogs {
        ContainerLogs::new(self.docker.clone())
    }

    /// The container name of workload `name` on this node.
    pub fn container_name(&self, name: &WorkloadName) -> String {
        container_name(&self.node, name)
    }

    fn create_body(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
    ) -> Result<ContainerCreateBody, RuntimeError> {
        let Some(image) = spec.image.clone().filter(|i| !i.is_empty()) else {
            return Err(RuntimeError::Unsupported(format!(
                "docker workload {name} names no image (spec.image is required for docker)"
            )));
        };
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKLOAD.to_string(), name.to_string()),
            (LABEL_NODE.to_string(), self.node.to_string()),
        ]);
        Ok(ContainerCreateBody {
            image: Some(image),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: (!spec.env.is_empty())
                .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Creates the workload's container (removing a leftover of the same
    /// name first) and returns its full id.
    async fn create(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
    ) -> Result<String, RuntimeError> {
        let body = self.create_body(name, spec)?;
        let cname = self.container_name(name);
        // The journal says the workload does not run here, so a container of
        // that name is what an earlier attempt or a crash left behind.
        self.remove_container(&cname).await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(&cname)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| RuntimeError::Docker(format!("create container {cname}: {e}")))?;
        Ok(created.id)
    }

    /// Force-removes a container (and its anonymous volumes); one that is
    /// not there is fine.
    async fn remove_container(&self, id_or_name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .docker
            .remove_container(id_or_name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(RuntimeError::Docker(format!(
                "remove container {id_or_name}: {e}"
            ))),
        }
    }

    /// Starts container `id` from its checkpoint `checkpoint`.
    async fn start_from_checkpoint(&self, id: &str, checkpoint: &str) -> Result<(), BollardError> {
        // bollard's StartContainerOptions has no `checkpoint` (the API spec
        // leaves it out); this clone of the client adds it to the start
        // call of this one container and nothing else.
        let path = format!("/containers/{id}/start");
        let query = format!("checkpoint={checkpoint}");
        let docker = self.docker.clone().with_request_modifier(move |mut req| {
            if req.uri().path().ends_with(&path) {
                let uri = req.uri().to_string();
                let sep = if uri.contains('?') { '&' } else { '?' };
                if let Ok(with) = format!("{uri}{sep}{query}").parse() {
                    *req.uri_mut() = with;
                }
            }
            req
        });
        docker.start_container(id, None).await
    }

    /// Saves the output of a container this node checkpointed (a dump the
    /// daemon finished after our crash): a second save of the same
    /// container changes nothing. A container of another node (an image
    /// that arrived here names its source's container) is left alone.
    async fn save_output_of(&self, handle: &Handle) {
        let Handle::Container { id } = handle else {
            return;
        };
        let Ok(c) = self.docker.inspect_container(id, None).await else {
            return;
        };
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(LABEL_NODE).map(String::as_str) != Some(self.node.as_str()) {
            return;
        }
        let Some(name) = labels
            .get(LABEL_WORKLOAD)
            .and_then(|w| WorkloadName::new(w).ok())
        else {
            return;
        };
        self.container_logs()
            .save(&self.workload_dir(&name), id)
            .await;
    }
}

/// The container name of workload `workload` on node `node`.
pub fn container_name(node: &NodeName, workload: &WorkloadName) -> String {
    format!("loadshift-{node}-{workload}")
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn workload_dir(&self, name: &WorkloadName) -> PathBuf {
        self.workloads_dir.join(name.as_str())
    }

    /// The output saved from the container's docker log at its checkpoint
    /// and the marker naming that container: the restored container starts
    /// a fresh log, and readers see the saved output before it.
    fn travelling_files(&self, name: &WorkloadName) -> Vec<TravellingFile> {
        let dir = self.workload_dir(name);
        [
            OutputStream::Stdout.file_name(),
            OutputStream::Stderr.file_name(),
            SAVED_UP_TO,
        ]
        .iter()
        .map(|f| TravellingFile {
            name: f.to_string(),
            original_path: dir.join(f),
        })
        .collect()
    }

    async fn start(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
    ) -> Result<Handle, RuntimeError> {
        let id = self.create(name, spec).await?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove_container(&id).await;
            return Err(RuntimeError::NotStarted(
                name.to_string(),
                format!("docker start: {e}"),
            ));
        }
        Ok(Handle::Container { id })
    }

    /// Asks the daemon. A container it does not know is not running; when the
    /// daemon itself does not answer we cannot tell, and say it runs (a
    /// container outlives a hiccup of the API, and a wrong "ended" would
    /// drop the workload from the journal).
    async fn is_running(&self, handle: &Handle) -> bool {
        let Handle::Container { id } = handle else {
            return false;
        };
        match self.docker.inspect_container(id, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(e) if status_of(&e) == Some(404) => false,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot inspect the container; taking it as running");
                true
            }
        }
    }

    /// Checkpoints the container into `images/loadshift/` and stops it.
    /// When docker refuses, CRIU has resumed the container's tasks: it runs
    /// on (the error says whether it still does).
    async fn dump(
        &self,
        name: &WorkloadName,
        handle: &Handle,
        images: &Path,
    ) -> Result<(), RuntimeError> {
        let Handle::Container { id } = handle else {
            return Err(RuntimeError::Unsupported("not a container workload".into()));
        };
        std::fs::create_dir_all(images).map_err(RuntimeError::io("create image folder", images))?;
        let started = images.join(DUMP_STARTED);
        std::fs::write(&started, id).map_err(RuntimeError::io("write", &started))?;
        let options = CreateCheckpointOptions {
            checkpoint_id: CHECKPOINT_ID.into(),
            checkpoint_dir: Some(images.to_string_lossy().into_owned()),
            exit: true,
        };
        if let Err(e) = self.docker.create_checkpoint(id, options).await {
            let still = if self.is_running(handle).await {
                "it still runs"
            } else {
                "it no longer runs"
            };
            return Err(RuntimeError::Docker(format!(
                "checkpoint of container {id} failed ({still}): {e}"
            )));
        }
        let marker = images.join(DUMP_MARKER);
        std::fs::write(
            &marker,
            format!("docker checkpoint {CHECKPOINT_ID} of container {id}\nDumping finished successfully\n"),
        )
        .map_err(RuntimeError::io("write", &marker))?;
        self.container_logs()
            .save(&self.workload_dir(name), id)
            .await;
        Ok(())
    }

    fn dump_complete(&self, images: &Path) -> bool {
        // Killed while the daemon checkpointed: [`Runtime::settle`] waited
        // for it to end, and the daemon keeps the folder of a checkpoint
        // that succeeded and removes that of one that failed.
        images.join(DUMP_MARKER).exists()
            || (images.join(DUMP_STARTED).exists()
                && images.join(CHECKPOINT_ID).join("inventory.img").exists())
    }

    async fn settle(&self, images: &Path) {
        super::image_dir::wait_for_stray_criu(images).await;
        let Ok(id) = std::fs::read_to_string(images.join(DUMP_STARTED)) else {
            return;
        };
        let handle = Handle::Container { id };
        let deadline = tokio::time::Instant::now() + DAEMON_CHECKPOINT_WAIT;
        // Until the daemon's checkpoint is over: whole (the container
        // exited, `exit: true`) or failed (its folder removed).
        while !images.join(DUMP_MARKER).exists()
            && images.join(CHECKPOINT_ID).exists()
            && self.is_running(&handle).await
        {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(images = %images.display(), "the daemon's checkpoint still runs after {DAEMON_CHECKPOINT_WAIT:?}; going on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.dump_complete(images) {
            self.save_output_of(&handle).await;
        }
    }

    async fn find_restored(&self, name: &WorkloadName, _images: &Path) -> Option<Handle> {
        let c = self
            .docker
            .inspect_container(&self.container_name(name), None)
            .await
            .ok()?;
        let running = c.state.and_then(|s| s.running).unwrap_or(false);
        running.then_some(Handle::Container { id: c.id? })
    }

    async fn restore(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
        images: &Path,
        _files: &[TravellingFile],
    ) -> Result<Handle, RuntimeError> {
        let checkpoint = images.join(CHECKPOINT_ID);
        if !checkpoint.is_dir() {
            return Err(RuntimeError::NotStarted(
                name.to_string(),
                format!("no docker checkpoint in {}", checkpoint.display()),
            ));
        }
        let id = self.create(name, spec).await?;
        let checkpoints = self
            .data_root
            .join("containers")
            .join(&id)
            .join("checkpoints");
        let mut last = String::new();
        for attempt in 1..=RESTORE_ATTEMPTS {
            // Unique per container and attempt: docker refuses to reuse a
            // checkpoint name, and containerd may refuse to take the same
            // content twice under one.
            let cp_name = format!("{CHECKPOINT_ID}-{attempt}");
            let dest = checkpoints.join(&cp_name);
            let (from, to) = (checkpoint.clone(), dest.clone());
            let copied = tokio::task::spawn_blocking(move || copy_dir(&from, &to))
                .await
                .map_err(|e| RuntimeError::Docker(format!("copy task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = copied {
                let _ = self.remove_container(&id).await;
                return Err(e);
            }
            match self.start_from_checkpoint(&id, &cp_name).await {
                Ok(()) => return Ok(Handle::Container { id }),
                Err(e) => {
                    last = e.to_string();
                    let _ = std::fs::remove_dir_all(&dest);
                    if !last.contains("already exists") || attempt == RESTORE_ATTEMPTS {
                        break;
                    }
                    tracing::warn!(container = %id, attempt, error = %last, "containerd refused the checkpoint; retrying under a new name");
                    tokio::time::sleep(RESTORE_RETRY_DELAY).await;
                }
            }
        }
        let _ = self.remove_container(&id).await;
        Err(RuntimeError::Docker(format!(
            "start of container {} from its checkpoint failed: {last}",
            self.container_name(name)
        )))
    }

    /// Removes the container of `handle` and any other container of this
    /// workload on this node (the stopped one a checkpoint left, a leftover
    /// of a failed restore), then its folder.
    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        use futures::StreamExt;
        let Handle::Container { id } = handle else {
            return None;
        };
        let options = bollard::query_parameters::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self.docker.stats(id, Some(options)).next().await?.ok()?;
        let cpu_ns = stats.cpu_stats?.cpu_usage?.total_usage?;
        let rss = stats.memory_stats?.usage.unwrap_or(0);
        Some(Usage {
            cpu_seconds: cpu_ns as f64 / 1e9,
            rss_bytes: rss,
            // The container's processes live in another PID namespace the
            // stats do not name; no dirty rate for containers yet.
            private_dirty_bytes: None,
        })
    }

    async fn signal(&self, handle: &Handle, signal: StopSignal) -> Result<(), RuntimeError> {
        let Handle::Container { id } = handle else {
            return Err(RuntimeError::Unsupported("not a container workload".into()));
        };
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal(signal.name())
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Not running (409) or gone (404): it ended meanwhile.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::Docker(format!(
                "send {} to {id}: {e}",
                signal.name()
            ))),
        }
    }

    async fn remove(
        &self,
        name: &WorkloadName,
        handle: Option<&Handle>,
    ) -> Result<(), RuntimeError> {
        if let Some(Handle::Container { id }) = handle {
            self.remove_container(id).await?;
        }
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_WORKLOAD}={name}"),
                format!("{LABEL_NODE}={}", self.node),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::Docker(format!("list containers of {name}: {e}")))?;
        for c in listed {
            if let Some(id) = c.id {
                self.remove_container(&id).await?;
            }
        }
        self.remove_container(&self.container_name(name)).await?;
        let dir = self.workload_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("remove workload folder", &dir)(e)),
        }
    }
}

/// The HTTP status of a daemon's refusal.
pub(super) fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Copies folder `from` into a new folder `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(to).map_err(RuntimeError::io("create", to))?;
    for entry in std::fs::read_dir(from).map_err(RuntimeError::io("read folder", from))? {
        let entry = entry.map_err(RuntimeError::io("read folder", from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(RuntimeError::io("stat", &src))?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(RuntimeError::io("copy", &src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_per_node_and_workload() {
        let n = NodeName::new("node2").unwrap();
        let w = WorkloadName::new("counter").unwrap();
        assert_eq!(container_name(&n, &w), "loadshift-node2-counter");
    }

    #[test]
    fn copy_dir_copies_nested_files() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("a");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("x.img"), b"x").unwrap();
        std::fs::write(from.join("sub/y"), b"y").unwrap();
        let to = tmp.path().join("b/c");
        copy_dir(&from, &to).unwrap();
        assert_eq!(std::fs::read(to.join("x.img")).unwrap(), b"x");
        assert_eq!(std::fs::read(to.join("sub/y")).unwrap(), b"y");
    }
}
