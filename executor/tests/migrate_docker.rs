//! A container moves between two executors in docker mode (two nodes on this
//! machine, each with its own state dir and cgroup), with the real Docker
//! daemon, real CRIU and a real nats-server, and keeps counting from where it
//! was. Needs what scripts/setup-docker prepares: dockerd with experimental
//! features on and the image `loadshift/counter:test`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use common::Cluster;
use futures::StreamExt;
use loadshift_events::migration::{Mode, Step};
use loadshift_events::workload::{Runtime, WorkloadSpec};
use loadshift_events::Event;
use loadshift_executor::runtime::docker::{LABEL_NODE, LABEL_WORKLOAD};

const IMAGE: &str = "loadshift/counter:test";

/// A cluster whose containers are removed when the test ends, however it
/// ends (before the cluster removes the nodes' cgroups, which the
/// containers' cgroups sit in).
struct DockerCluster {
    c: Cluster,
    /// The workloads this test starts (each test uses its own names: tests
    /// run in parallel and container names are `loadshift-<node>-<workload>`).
    workloads: Vec<&'static str>,
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for n in &mut self.c.nodes {
            n.kill();
        }
        let workloads: Vec<String> = self.workloads.iter().map(|s| s.to_string()).collect();
        let cgroups: Vec<String> = self
            .c
            .nodes
            .iter()
            .filter_map(|n| n.cgroup.clone())
            .collect();
        // Drop runs inside the test's tokio runtime: talk to docker from a
        // thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = docker().await else { return };
                for w in &workloads {
                    for id in containers_of(&docker, w).await {
                        let _ = docker
                            .remove_container(
                                &id,
                                Some(
                                    RemoveContainerOptionsBuilder::default()
                                        .force(true)
                                        .v(true)
                                        .build(),
                                ),
                            )
                            .await;
                    }
                }
            });
            // runc made the node cgroups in every v1 controller (pids,
            // blkio, ...); the cluster removes only cpu, cpuacct and memory.
            for cg in cgroups {
                remove_cgroup_everywhere(&cg);
            }
        })
        .join();
    }
}

fn remove_cgroup_everywhere(rel: &str) {
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = e.path().join(rel);
        for _ in 0..20 {
            if !d.exists() || std::fs::remove_dir(&d).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn docker() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
}

/// Ids of all containers (running or not) of workload `w`.
async fn containers_of(docker: &Docker, w: &str) -> Vec<String> {
    containers_where(docker, &[format!("{LABEL_WORKLOAD}={w}")]).await
}

async fn containers_where(docker: &Docker, labels: &[String]) -> Vec<String> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// The counter values in a container's log so far (or, with `follow`, until
/// it stops), appended to `into` as they arrive.
async fn read_log(docker: Docker, id: String, follow: bool, into: Arc<Mutex<Vec<u64>>>) {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut pending = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            if let Ok(v) = line.trim().parse() {
                into.lock().unwrap().push(v);
            }
        }
    }
}

async fn log_values(docker: &Docker, id: &str) -> Vec<u64> {
    let values = Arc::new(Mutex::new(Vec::new()));
    read_log(docker.clone(), id.to_string(), false, values.clone()).await;
    let v = values.lock().unwrap().clone();
    v
}

fn assert_consecutive(values: &[u64], what: &str) {
    for w in values.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: the counter skipped or repeated: {values:?}"
        );
    }
}

/// Container `id` (workload `w`) runs, named and labelled as node3's, in
/// node3's cgroup `node3_cg`.
async fn assert_runs_in_cgroup_of_node3(docker: &Docker, id: &str, w: &str, node3_cg: &str) {
    let info = docker
        .inspect_container(id, None)
        .await
        .expect("inspect the restored container");
    assert_eq!(info.state.as_ref().and_then(|s| s.running), Some(true));
    let name = format!("/loadshift-node3-{w}");
    assert_eq!(info.name.as_deref(), Some(name.as_str()));
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get(LABEL_NODE).map(String::as_str), Some("node3"));
    let parent = info
        .host_config
        .and_then(|h| h.cgroup_parent)
        .unwrap_or_default();
    assert_eq!(parent, format!("/{node3_cg}"));
    let pid = info.state.and_then(|s| s.pid).expect("pid") as u32;
    let cg = common::memory_cgroup_of(pid);
    assert!(
        cg.contains(node3_cg),
        "restored container is in cgroup {cg}, not under {node3_cg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_continues_counting_on_the_target() {
    container_moves_in(Mode::Copy).await;
}

/// Docker's checkpoint API has no page-server option: a container asked to
/// stream moves as a copy, and `completed` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_asked_to_stream_moves_as_a_copy_and_says_why() {
    container_moves_in(Mode::Stream).await;
}

// One long function on purpose: the whole move of one container, each
// check in the order the saga goes.
/// Moves a counting container in `mode` and checks it follows on.
async fn container_moves_in(mode: Mode) {
    // One name per mode: the two tests run at once, and container names are
    // the daemon's, shared by both clusters.
    let w: &str = match mode {
        Mode::Copy => "dcounter",
        _ => "dcounter-streamed",
    };
    let mut dc = DockerCluster {
        c: Cluster::with_runtime(&["node2", "node3"], true, Some("docker")).await,
        workloads: vec![w],
    };
    let docker = docker().await.expect("docker daemon");
    let started = dc.c.run_container("node2", w, IMAGE, &[]).await;
    let Event::WorkloadStarted(s) = &started.event else {
        unreachable!()
    };
    let old_id = s.container_id.clone().expect("a container id");
    assert!(s.pid.is_none());

    // Follow the old container's log until the checkpoint stops it.
    let old_values = Arc::new(Mutex::new(Vec::new()));
    let follower = tokio::spawn(read_log(
        docker.clone(),
        old_id.clone(),
        true,
        old_values.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let id = dc.c.migrate_in(mode, w, "node2", "node3").await;
    let done = &dc.c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Copy));
    if mode == Mode::Stream {
        let why = done.fallback.clone().unwrap_or_default();
        assert!(why.contains("cannot stream their pages"), "{why}");
    }
    eprintln!(
        "docker migration: dump {:?} ms, upload {:?} ms, download {:?} ms, restore {:?} ms, downtime {:?} ms, total {:?} ms, {} bytes",
        done.timings.dump_ms,
        done.timings.upload_ms,
        done.timings.download_ms,
        done.timings.restore_ms,
        done.timings.downtime_ms,
        done.timings.total_ms,
        done.image_bytes
    );
    assert!(done.timings.dump_ms.is_some() && done.timings.restore_ms.is_some());
    assert!(done.timings.downtime_ms.is_some() && done.timings.total_ms.is_some());
    assert!(done.image_bytes > 0);

    let restored =
        dc.c.wait_for(
            Duration::from_secs(5),
            |e| matches!(&e.event, Event::MigrationRestored(p) if p.migration == id),
        )
        .await;
    let Event::MigrationRestored(r) = restored.event else {
        unreachable!()
    };
    let new_id = r.container_id.expect("restored container id");
    assert_ne!(new_id, old_id);

    // The old container's log ended at the freeze.
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the old container's log did not end")
        .expect("log follower");
    let old = old_values.lock().unwrap().clone();
    assert!(old.len() >= 5, "the old container barely counted: {old:?}");
    assert_eq!(old[0], 0, "the old container started from 0");
    assert_consecutive(&old, "old container");

    // The new container runs, as node3's, in node3's cgroup...
    let node3_cg = dc.c.node("node3").cgroup.clone().unwrap();
    assert_runs_in_cgroup_of_node3(&docker, &new_id, w, &node3_cg).await;

    // ...and its log goes on from the old one's last value: no restart.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let new = log_values(&docker, &new_id).await;
    assert!(
        new.len() >= 3,
        "the restored container barely counted: {new:?}"
    );
    let last_old = *old.last().unwrap();
    assert!(new[0] > 0, "the counter restarted from 0: {new:?}");
    assert_eq!(
        new[0],
        last_old + 1,
        "the restored container does not follow on: old ended at {last_old}, new begins {:?}",
        &new[..new.len().min(5)]
    );
    assert_consecutive(&new, "restored container");

    // The old container is gone; the workload has one container, on node3.
    let gone = docker.inspect_container(&old_id, None).await;
    assert!(gone.is_err(), "the old container is still there");
    assert_eq!(containers_of(&docker, w).await, vec![new_id.clone()]);
    let on_node2 = containers_where(
        &docker,
        &[
            format!("{LABEL_WORKLOAD}={w}"),
            format!("{LABEL_NODE}=node2"),
        ],
    )
    .await;
    assert!(on_node2.is_empty(), "node2 kept {on_node2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_do_not_go_where_docker_is_not() {
    const W: &str = "dmixed";
    const W_PROC: &str = "dmixed-on-process";
    const W_NOIMAGE: &str = "dmixed-noimage";
    let mut dc = DockerCluster {
        c: Cluster::with_runtime(&["node2", "node3"], false, Some("docker")).await,
        workloads: vec![W, W_PROC, W_NOIMAGE],
    };
    // node3 runs processes.
    {
        let n3 = dc.c.node("node3");
        n3.stop();
        n3.runtime = None;
        n3.start();
    }
    dc.c.wait_ping("node3").await;
    let docker = docker().await.expect("docker daemon");

    // A container asked of a process node: refused with a reason.
    let docker_spec = |image: Option<&str>| WorkloadSpec {
        runtime: Runtime::Docker,
        command: vec![],
        image: image.map(str::to_string),
        env: Default::default(),
        no_postcopy: false,
    };
    let e =
        dc.c.start_workload("node3", W_PROC, docker_spec(Some(IMAGE)))
            .await;
    assert!(
        matches!(&e.event, Event::WorkloadStartFailed(f) if f.reason.contains("runs process workloads, not docker")),
        "{e:?}"
    );
    assert!(containers_of(&docker, W_PROC).await.is_empty());

    // A docker workload without an image: refused with a reason.
    let e =
        dc.c.start_workload("node2", W_NOIMAGE, docker_spec(None))
            .await;
    assert!(
        matches!(&e.event, Event::WorkloadStartFailed(f) if f.reason.contains("no image")),
        "{e:?}"
    );
    assert!(containers_of(&docker, W_NOIMAGE).await.is_empty());

    // A container cannot migrate to a process node: refused before any dump,
    // and it keeps running where it was.
    let started = dc.c.run_container("node2", W, IMAGE, &[]).await;
    let Event::WorkloadStarted(s) = &started.event else {
        unreachable!()
    };
    let cid = s.container_id.clone().expect("container id");
    let id = dc.c.migrate(W, "node2", "node3").await;
    let e = dc.c.outcome(id).await;
    assert!(
        matches!(&e.event, Event::MigrationFailed(f) if f.step == Step::Validate && f.reason.contains("runs process workloads")),
        "{e:?}\n{}",
        dc.c.logs()
    );
    let info = docker.inspect_container(&cid, None).await.expect("inspect");
    assert_eq!(info.state.and_then(|s| s.running), Some(true));
    let before = log_values(&docker, &cid).await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        log_values(&docker, &cid).await.len() > before,
        "it stopped counting"
    );
}

/// Starts container workload `w` on node2 and follows its log; returns its
/// id, the log values (growing until it stops) and the follower.
async fn counting_on_node2(
    dc: &DockerCluster,
    docker: &Docker,
    w: &str,
) -> (String, Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let started = dc.c.run_container("node2", w, IMAGE, &[]).await;
    let Event::WorkloadStarted(s) = &started.event else {
        unreachable!()
    };
    let id = s.container_id.clone().expect("a container id");
    let values = Arc::new(Mutex::new(Vec::new()));
    let follower = tokio::spawn(read_log(docker.clone(), id.clone(), true, values.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    (id, values, follower)
}

/// Checks that `new_id` runs and its log follows on from `old`'s last value.
async fn assert_follows_on(docker: &Docker, old: &[u64], new_id: &str) {
    assert!(!old.is_empty(), "the old container printed nothing");
    assert_consecutive(old, "old container");
    let info = docker
        .inspect_container(new_id, None)
        .await
        .expect("inspect");
    assert_eq!(info.state.and_then(|s| s.running), Some(true));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let new = log_values(docker, new_id).await;
    assert!(new.len() >= 2, "the new container barely counted: {new:?}");
    assert_eq!(
        new[0],
        old.last().unwrap() + 1,
        "no follow-on: old ended at {:?}, new begins {:?}",
        old.last(),
        &new[..new.len().min(5)]
    );
    assert_consecutive(&new, "new container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_image_rolls_the_container_back_on_the_source() {
    const W: &str = "drollback";
    let mut dc = DockerCluster {
        c: Cluster::with_runtime(&["node2", "node3"], false, Some("docker")).await,
        workloads: vec![W],
    };
    dc.c.node("node2").restart_with_fault("corrupt_image");
    dc.c.wait_ping("node2").await;
    let docker = docker().await.expect("docker daemon");
    let (old_id, old_values, follower) = counting_on_node2(&dc, &docker, W).await;

    let id = dc.c.migrate(W, "node2", "node3").await;
    dc.c.rolled_back(id).await;
    let failed =
        dc.c.events()
            .await
            .into_iter()
            .find_map(|e| match e.event {
                Event::MigrationFailed(f) if f.migration == id => Some(f),
                _ => None,
            })
            .expect("a failed event");
    assert_eq!(failed.step, Step::Verify, "{failed:?}");
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the old container's log did not end")
        .expect("log follower");
    let old = old_values.lock().unwrap().clone();

    // It runs again on node2, in a new container, from where it froze; node3
    // kept nothing.
    let now = containers_where(
        &docker,
        &[
            format!("{LABEL_WORKLOAD}={W}"),
            format!("{LABEL_NODE}=node2"),
        ],
    )
    .await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], old_id);
    assert_follows_on(&docker, &old, &now[0]).await;
    assert_eq!(containers_of(&docker, W).await, now, "a copy elsewhere");
    // Its output reads whole: the old container's, then the new one's.
    let whole = common::logs::reads_whole(&dc.c, W).await;
    assert!(whole.len() > old.len(), "{} lines", whole.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_right_after_the_checkpoint_finishes_the_move() {
    const W: &str = "dafterdump";
    let mut dc = DockerCluster {
        c: Cluster::with_runtime(&["node2", "node3"], false, Some("docker")).await,
        workloads: vec![W],
    };
    dc.c.node("node2").restart_with_fault("after_dump");
    dc.c.wait_ping("node2").await;
    let docker = docker().await.expect("docker daemon");
    let (_old_id, old_values, follower) = counting_on_node2(&dc, &docker, W).await;

    let id = dc.c.migrate(W, "node2", "node3").await;
    dc.c.crash_and_restart("node2");
    dc.c.completed(id).await;
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the old container's log did not end")
        .expect("log follower");
    let old = old_values.lock().unwrap().clone();
    let now = containers_of(&docker, W).await;
    assert_eq!(now.len(), 1, "{now:?}");
    let on_node3 = containers_where(
        &docker,
        &[
            format!("{LABEL_WORKLOAD}={W}"),
            format!("{LABEL_NODE}=node3"),
        ],
    )
    .await;
    assert_eq!(on_node3, now);
    assert_follows_on(&docker, &old, &now[0]).await;
    let whole = common::logs::reads_whole(&dc.c, W).await;
    assert!(whole.len() > old.len(), "{} lines", whole.len());
}

/// The container id a `workload.started` names.
fn container_of(started: &loadshift_events::Envelope) -> String {
    match &started.event {
        Event::WorkloadStarted(s) => s.container_id.clone().expect("a container id"),
        other => panic!("not a start: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_ignores_sigterm_is_stopped_by_sigkill_after_the_grace() {
    const W: &str = "dstop";
    let dc = DockerCluster {
        c: Cluster::with_runtime(&["node2"], false, Some("docker")).await,
        workloads: vec![W],
    };
    let docker = docker().await.expect("docker daemon");
    let id = container_of(&dc.c.run_container("node2", W, IMAGE, &[]).await);
    // The counter is its container's PID 1 with no SIGTERM handler: like
    // `docker stop`, only the SIGKILL ends it.
    let out =
        dc.c.loadshift(&["workload", "stop", W, "--grace", "1s", "--wait"])
            .await;
    assert!(out.status.success(), "{}", dc.c.logs());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("dstop killed after grace on node2"), "{said}");
    let info = docker.inspect_container(&id, None).await.expect("inspect");
    assert_eq!(info.state.and_then(|s| s.running), Some(false));
}

/// A container's output reads as one across its move: the source saves its
/// docker log into the image at the checkpoint, the target serves that
/// before its new container's log, so `workload logs -f` goes on from the
/// same offset on node3, every line once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_container_follow_it_across_a_migration_in_order_and_once() {
    const W: &str = "dlogs";
    let mut dc = DockerCluster {
        c: Cluster::with_runtime(&["node2", "node3"], false, Some("docker")).await,
        workloads: vec![W],
    };
    let docker = docker().await.expect("docker daemon");
    dc.c.run_container("node2", W, IMAGE, &[]).await;
    common::logs::follow_across_a_move(&mut dc.c, W).await;
    // node3's container's own log begins after the saved part.
    let now = containers_of(&docker, W).await;
    assert_eq!(now.len(), 1, "{now:?}");
    let saved = common::counter_values(&dc.c.node("node3").workload_dir(W).join("stdout"));
    let own = log_values(&docker, &now[0]).await;
    assert_eq!(own.first(), Some(&(saved.len() as u64)), "{own:?}");
    // Its standard error is empty, and says so without failing.
    let err = dc.c.loadshift(&["workload", "logs", W, "--stderr"]).await;
    assert!(err.status.success() && err.stdout.is_empty(), "{err:?}");
}
