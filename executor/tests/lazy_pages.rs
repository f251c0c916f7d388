//! Post-copy with real CRIU between two nodes on this machine: the workload
//! resumes on the target before its memory is there, its pages follow, and
//! a source that dies before the last page leaves no copy anywhere.

mod common;

use common::postcopy::{build_c, in_network_of, wait_lines, TwoNodes, STEP_LIMIT};
use common::{assert_continuous, counter_values};
use loadshift_executor::lazy::{LazyDump, LazyError, LazyRestore};
use loadshift_executor::runtime::process::start_ticks;
use loadshift_executor::runtime::Handle;

fn root_pid(h: &Handle) -> u32 {
    h.pid().expect("a process handle")
}

/// Starts `memtouch` over 512 MiB on the source and moves it lazily: enough
/// memory that the background push is still under way right after the
/// restore, when the fault tests stop one side.
async fn big_lazy_move(nodes: &TwoNodes) -> (Handle, LazyDump, LazyRestore) {
    let memtouch = build_c(nodes.dir.path(), "memtouch");
    let source = nodes.start(&[&memtouch.display().to_string(), "512"]).await;
    wait_lines(&nodes.stdout(false), 2);
    let (dump, restore) = nodes.lazy_move(&source).await;
    (source, dump, restore)
}

/// Freezes (SIGSTOP) the criu `pid` of `side` and checks that the target
/// still lacked pages then: a fault injected after the last page would
/// prove nothing about post-copy.
fn stop_before_the_last_page(nodes: &TwoNodes, pid: u32, side: &str) {
    // SAFETY: kill(2) of a criu this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGSTOP);
    }
    let log = nodes.images.path().join("target/lazy-pages.log");
    let pushed = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !pushed.contains("UFFD transferred pages"),
        "every page arrived before the {side} was stopped: this test needs a bigger workload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_moved_lazily_continues_without_a_gap() {
    let nodes = TwoNodes::new("lazy-counter");
    let memtouch = build_c(nodes.dir.path(), "memtouch");
    let source = nodes.start(&[&memtouch.display().to_string(), "64"]).await;
    wait_lines(&nodes.stdout(false), 4);

    let (dump, restore) = nodes.lazy_move(&source).await;
    let moved = restore.handle().clone();
    // Both halves see the last page arrive: the source may clean up.
    let (served, arrived) = tokio::join!(dump.finish(STEP_LIMIT), restore.finish(STEP_LIMIT));
    served.expect("the source served every page");
    arrived.expect("the target received every page");

    // The source's tree is gone (criu ended it), the target's runs.
    assert_eq!(
        start_ticks(root_pid(&source)),
        None,
        "the source copy still runs"
    );
    let only = [root_pid(&moved)];
    let copies = nodes.copies(&only);
    assert_eq!(copies.len(), 1, "exactly one copy runs: {copies:?}");
    assert_eq!(copies[0].0, only[0], "exactly one copy runs: {copies:?}");
    // The counter goes on from where it was frozen, on the target.
    let out = nodes.stdout(true);
    let before = counter_values(&out).len();
    wait_lines(&out, before + 5);
    assert_continuous(&counter_values(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_during_post_copy_leaves_no_copy_anywhere() {
    let nodes = TwoNodes::new("lazy-orphan");
    let (source, dump, restore) = big_lazy_move(&nodes).await;
    let server = dump.criu_pid().expect("the page server runs");
    stop_before_the_last_page(&nodes, server, "source");
    // The source node dies: its criu and its frozen tree.
    // SAFETY: kill(2) of processes this test started.
    unsafe {
        libc::kill(server as i32, libc::SIGKILL);
        libc::kill(root_pid(&source) as i32, libc::SIGKILL);
    }
    let moved = restore.handle().clone();
    let err = restore
        .finish(STEP_LIMIT)
        .await
        .expect_err("post-copy cannot finish without its source");
    assert!(
        matches!(err, LazyError::Broken { side: "source", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("post-copy lost its source"),
        "{err}"
    );
    assert_eq!(
        start_ticks(root_pid(&moved)),
        None,
        "the half-restored copy runs"
    );
    let copies = nodes.copies(&[]);
    assert!(copies.is_empty(), "a copy runs somewhere: {copies:?}");
    drop(dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_during_post_copy_leaves_no_copy_on_the_source_either() {
    let nodes = TwoNodes::new("lazy-widow");
    let (source, dump, restore) = big_lazy_move(&nodes).await;
    let daemon = restore.daemon_pid().expect("the lazy-pages daemon runs");
    stop_before_the_last_page(&nodes, daemon, "target");
    // The target node dies: its daemon and the restored tree. The source's
    // criu then sees the transfer fail and lets its frozen tree run again,
    // which must not survive: the target's copy may have run.
    // SAFETY: kill(2) of processes this test started.
    unsafe {
        libc::kill(daemon as i32, libc::SIGKILL);
        libc::kill(root_pid(restore.handle()) as i32, libc::SIGKILL);
    }
    // criu's page server ends "successfully" when its client closes the
    // connection, so the source alone cannot always tell a dead target from
    // one that got every page (only the target's daemon can); either way
    // its own tree must be gone.
    if let Err(err) = dump.finish(STEP_LIMIT).await {
        assert!(
            matches!(err, LazyError::Broken { side: "target", .. }),
            "{err}"
        );
    }
    assert_eq!(
        start_ticks(root_pid(&source)),
        None,
        "the source's tree runs again"
    );
    let copies = nodes.copies(&[]);
    assert!(copies.is_empty(), "a copy runs somewhere: {copies:?}");
    drop(restore);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_100k_keys_moved_lazily_keeps_every_key_on_its_port() {
    let nodes = TwoNodes::with_target_network("lazy-redis");
    let port = loadshift_testkit::nats::free_port();
    let args = common::redis_args(port, &nodes.dir.path().display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let source = nodes.start(&args).await;
    let sample = common::populate_100k_keys(port);

    let (dump, restore) = nodes.lazy_move(&source).await;
    let moved = root_pid(restore.handle());
    let p = port.to_string();
    let cli = move |args: &[&str]| {
        let mut command = vec!["redis-cli", "-p", &p];
        command.extend_from_slice(args);
        in_network_of(moved, &command)
    };
    // Asked as soon as it runs on the target (its pages may still be coming).
    let asked = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["dbsize"])
    });
    let (served, arrived) = tokio::join!(dump.finish(STEP_LIMIT), restore.finish(STEP_LIMIT));
    served.expect("the source served every page");
    arrived.expect("the target received every page");
    assert_eq!(asked.await.expect("redis-cli"), "100000");
    assert_eq!(cli(&["get", "key:4242"]), sample);
    assert_eq!(cli(&["set", "after", "move"]), "OK");
    assert_eq!(
        start_ticks(root_pid(&source)),
        None,
        "the source copy still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_marked_no_postcopy_keeps_the_mark_through_moves_and_never_moves_lazily() {
    use loadshift_events::migration::Mode;
    use loadshift_events::workload::{Runtime, WorkloadSpec};

    let c = common::Cluster::new(&["node2", "node3"]).await;
    let spec = WorkloadSpec {
        runtime: Runtime::Process,
        command: common::COUNTER.iter().map(|s| s.to_string()).collect(),
        image: None,
        env: [("LOADSHIFT_TEST_TAG".to_string(), c.tag())].into(),
        no_postcopy: true,
    };
    c.start_workload("node2", "careful", spec).await;
    // There and back: the way back is asked of the node that received the
    // workload, which knows of the mark only through the migration.
    for (from, to) in [("node2", "node3"), ("node3", "node2")] {
        let id = c.migrate_in(Mode::Lazy, "careful", from, to).await;
        let done = c.completed(id).await;
        assert_ne!(done.mode, Some(Mode::Lazy), "{from} → {to}");
        let why = done.fallback.unwrap_or_default();
        assert!(why.contains("--no-postcopy"), "{from} → {to}: {why}");
    }
}
