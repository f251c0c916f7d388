//! Post-copy through the saga: two real executors (two nodes on this
//! machine), real CRIU and nats-server. A `--mode lazy` request moves the
//! workload with lazy pages (the source serves its dump over the target's
//! token door, the target restores at once and says `restored` only when
//! the last page arrived); a source that dies during post-copy ends in a
//! clear `failed` and no copy anywhere.

mod common;

use std::time::{Duration, Instant};

use common::postcopy::{build_c, in_network_of, own_network_criu};
use common::{assert_runs_once_on, Cluster, COUNTER};
use loadshift_events::migration::Mode;
use loadshift_events::{Envelope, Event};
use loadshift_executor::runtime::image_dir::criu_working_on;
use loadshift_executor::runtime::process::start_ticks;

/// Migration `id`'s image folder on `node`.
fn images_of(c: &Cluster, node: &str, id: uuid::Uuid) -> std::path::PathBuf {
    c.images.path().join(node).join(id.to_string())
}

/// The pid `workload.started` reported for `started`.
fn started_pid(started: &Envelope) -> u32 {
    match &started.event {
        Event::WorkloadStarted(s) => s.pid.expect("a process pid"),
        other => panic!("not a start: {other:?}"),
    }
}

/// Polls `cond` for up to a minute (a loaded machine); says whether it held.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_moved_lazily_through_the_saga_continues_without_a_gap() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    let started = c.run_workload("node2", "counter-l", COUNTER).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let id = c
        .migrate_in(Mode::Lazy, "counter-l", "node2", "node3")
        .await;
    let done = c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Lazy), "{done:?}\n{}", c.logs());
    assert_eq!(done.fallback, None);
    let t = done.timings;
    assert!(
        t.dump_ms.is_some()
            && t.restore_ms.is_some()
            && t.downtime_ms.is_some()
            && t.postcopy_ms.is_some(),
        "phase times missing: {t:?}"
    );
    assert!(c.checkpointed(id).await.lazy, "checkpointed says post-copy");

    assert_eq!(
        start_ticks(started_pid(&started)),
        None,
        "the source's copy still runs"
    );
    assert_runs_once_on(&mut c, "counter-l", "node3").await;
    assert!(!c.node("node2").workload_dir("counter-l").exists());
    assert_eq!(c.leftovers(id), Vec::<String>::new(), "images left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_100k_keys_moved_lazily_through_the_saga_keeps_every_key_on_its_port() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    // node3 restores into a network of its own, as a separate host would:
    // the frozen source holds the port here until the last page left.
    let criu = own_network_criu(c.dir.path());
    let criu = criu.display().to_string();
    c.node("node3")
        .restart_with_env(&[("LOADSHIFT_CRIU", criu.as_str())]);
    c.wait_ping("node3").await;
    let port = loadshift_testkit::nats::free_port();
    let args = common::redis_args(port, &c.dir.path().display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.run_workload("node2", "redis-l", &args).await;
    let sample = common::populate_100k_keys(port);

    let id = c.migrate_in(Mode::Lazy, "redis-l", "node2", "node3").await;
    let done = c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Lazy), "{done:?}\n{}", c.logs());
    let pid = c.restored(id).await.pid.expect("restored pid");
    let p = port.to_string();
    let cli = |args: &[&str]| {
        let mut command = vec!["redis-cli", "-p", p.as_str()];
        command.extend_from_slice(args);
        in_network_of(pid, &command)
    };
    assert_eq!(cli(&["dbsize"]), "100000");
    assert_eq!(cli(&["get", "key:4242"]), sample);
    assert_eq!(cli(&["set", "after", "move"]), "OK");
    assert_eq!(c.leftovers(id), Vec::<String>::new(), "images left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_during_post_copy_fails_the_migration_and_leaves_no_copy() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    let memtouch = build_c(c.dir.path(), "memtouch");
    let memtouch = memtouch.display().to_string();
    // Enough memory that its pages are still coming when the source dies.
    let started = c
        .run_workload("node2", "big-l", &[memtouch.as_str(), "768"])
        .await;
    let source_pid = started_pid(&started);
    let out = c.node("node2").workload_dir("big-l").join("stdout");
    assert!(
        eventually(|| std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() > 2)).await,
        "the workload never touched its memory"
    );

    let id = c.migrate_in(Mode::Lazy, "big-l", "node2", "node3").await;
    // The target restored (criu says its tasks resumed) and pulls the pages.
    let log = images_of(&c, "node3", id).join("restore.log");
    assert!(
        eventually(|| std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Tasks resumed")))
            .await,
        "the target never restored\n{}",
        c.logs()
    );
    // The source node dies: its executor, its serving criu, the frozen tree.
    c.node("node2").kill();
    let source_images = images_of(&c, "node2", id);
    for pid in criu_working_on(&source_images)
        .into_iter()
        .chain([source_pid as i32])
    {
        // SAFETY: kill(2) of processes this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    let failed = c
        .wait_for(
            Duration::from_secs(120),
            |e| matches!(&e.event, Event::MigrationFailed(p) if p.migration == id),
        )
        .await;
    let Event::MigrationFailed(f) = failed.event else {
        unreachable!()
    };
    assert_eq!(f.source.as_str(), "node2");
    assert!(
        f.reason.contains("post-copy lost its source"),
        "{}",
        f.reason
    );
    assert!(
        eventually(|| c.copies_of("big-l").is_empty()).await,
        "a copy runs: {:?}",
        c.copies_of("big-l")
    );

    // The source comes back: it neither resumes the workload nor keeps it.
    c.node("node2").restart();
    c.wait_ping("node2").await;
    let dir = c.node("node2").workload_dir("big-l");
    assert!(
        eventually(|| !dir.exists()).await,
        "the source kept the workload\n{}",
        c.logs()
    );
    assert!(c.copies_of("big-l").is_empty(), "a copy runs again");
    let no_rollback = c
        .try_wait_for(
            Duration::from_secs(2),
            |e| matches!(&e.event, Event::MigrationRolledBack(p) if p.migration == id),
        )
        .await;
    assert!(no_rollback.is_none(), "the source resumed a lost workload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_never_moves_a_no_postcopy_workload_lazily() {
    use loadshift_events::workload::WorkloadSpec;

    let c = Cluster::new(&["node2", "node3"]).await;
    let memtouch = build_c(c.dir.path(), "memtouch");
    // Big enough that auto would pick post-copy for it (its estimate wins
    // above a few MiB), were it allowed.
    let spec = WorkloadSpec {
        no_postcopy: true,
        env: [("LOADSHIFT_TEST_TAG".to_string(), c.tag())].into(),
        ..WorkloadSpec::process(vec![memtouch.display().to_string(), "64".into()])
    };
    c.start_workload("node2", "careful-a", spec).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = c.migrate("careful-a", "node2", "node3").await;
    let done = c.completed(id).await;
    assert_eq!(done.mode, Some(Mode::Stream), "{done:?}\n{}", c.logs());
    assert!(!c.checkpointed(id).await.lazy);
    assert_eq!(c.copies_of("careful-a").len(), 1, "exactly one copy runs");
}
