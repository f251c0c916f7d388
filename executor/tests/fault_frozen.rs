//! Real criu that hangs, and SIGTERM in the middle of a saga step. A
//! workload frozen in its cgroup (the kernel's freezer) never lets criu
//! seize it: `criu dump` waits for it without end, a real hang of the real
//! criu, no wrapper. The executor must kill such a dump at its deadline and
//! leave the workload running where it was; and a SIGTERM while the dump
//! hangs must stop the executor at once, the next start finishing the move
//! from what the journal says.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{assert_runs_once_on, counter_values, Cluster, COUNTER};
use loadshift_events::migration::Step;

/// A freezer cgroup holding one workload's processes (cgroup v1's freezer,
/// or v2's `cgroup.freeze`); dropping it thaws them and removes it.
struct Frozen {
    dir: PathBuf,
    v2: bool,
}

impl Frozen {
    /// Moves `root` and every process below it into a new freezer cgroup
    /// and freezes it.
    fn freeze(name: &str, root: u32) -> Self {
        let v1 = PathBuf::from("/sys/fs/cgroup/freezer");
        let v2 = !v1.exists();
        let dir = if v2 {
            PathBuf::from("/sys/fs/cgroup").join(name)
        } else {
            v1.join(name)
        };
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create the freezer cgroup {}: {e}", dir.display()));
        let frozen = Self { dir, v2 };
        for pid in std::iter::once(root).chain(children(root)) {
            // A short-lived child may be gone already.
            let _ = std::fs::write(frozen.dir.join("cgroup.procs"), pid.to_string());
        }
        frozen.set(true);
        frozen
    }

    fn set(&self, frozen: bool) {
        let (file, value) = match (self.v2, frozen) {
            (true, f) => ("cgroup.freeze", if f { "1" } else { "0" }),
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
        };
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("write {file} of {}: {e}", self.dir.display()));
    }

    fn thaw(&self) {
        self.set(false);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.thaw());
        // The processes go back to the root cgroup, then the cgroup goes
        // (again while a child forked meanwhile keeps it busy).
        let root = self.dir.parent().map(|p| p.join("cgroup.procs"));
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if let Some(root) = &root {
                for pid in procs.lines() {
                    let _ = std::fs::write(root, pid);
                }
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The processes below `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let s = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Whether a criu works on migration `id`'s image (its folder is named
/// after the migration).
fn criu_works_on(id: uuid::Uuid) -> bool {
    let id = id.to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("criu") && c.contains(&id)
                })
                .unwrap_or(false)
        })
}

/// Starts the counter `name` on node2 and waits until it has counted (its
/// shell has opened its output files: criu must find them to dump it),
/// then freezes it; returns the freezer.
async fn counting_then_frozen(c: &mut Cluster, name: &str, what: &str) -> Frozen {
    c.run_workload("node2", name, COUNTER).await;
    let out = c.node("node2").workload_dir(name).join("stdout");
    for _ in 0..300 {
        if !counter_values(&out).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!counter_values(&out).is_empty(), "{name} never counted");
    let root = c.copies_of(name)[0];
    Frozen::freeze(&cgroup_name(c, what), root)
}

/// A freezer cgroup name unique to this test run.
fn cgroup_name(c: &Cluster, what: &str) -> String {
    let tag = c
        .dir
        .path()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned());
    format!("loadshift-test-{what}-{}", tag.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_that_hangs_is_killed_at_its_deadline_and_the_workload_runs_on() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    let frozen = counting_then_frozen(&mut c, "frozen-a", "a").await;

    let id = c.migrate("frozen-a", "node2", "node3").await;
    c.rolled_back(id).await;
    let f = c.failed(id).await;
    assert_eq!(f.step, Step::Dump);
    assert!(f.reason.contains("was killed"), "{}", f.reason);
    assert!(!criu_works_on(id), "the hanging criu still runs");

    frozen.thaw();
    assert_runs_once_on(&mut c, "frozen-a", "node2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_dump_stops_the_executor_and_the_next_start_finishes_the_move() {
    let mut c = Cluster::new(&["node2", "node3"]).await;
    // A deadline far away: only SIGTERM can end the step here.
    c.node("node2")
        .restart_with_env(&[("LOADSHIFT_DEADLINE_FLOOR", "1h")]);
    c.wait_ping("node2").await;
    let frozen = counting_then_frozen(&mut c, "frozen-b", "b").await;

    let id = c.migrate("frozen-b", "node2", "node3").await;
    for _ in 0..600 {
        if criu_works_on(id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(criu_works_on(id), "the dump never started\n{}", c.logs());

    c.node("node2").terminate();
    assert!(
        c.node("node2").wait_exit(Duration::from_secs(30)),
        "SIGTERM ignored during the dump\n{}",
        c.logs()
    );
    assert!(
        criu_works_on(id),
        "the executor stopped only once the dump was over"
    );

    // The dump goes on once the workload thaws; the next start finds it
    // complete in the journal's image folder and finishes the move.
    frozen.thaw();
    c.node("node2").restart();
    c.completed(id).await;
    assert_runs_once_on(&mut c, "frozen-b", "node3").await;
}
