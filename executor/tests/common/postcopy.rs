//! Two nodes on this machine for post-copy (`loadshift_executor::lazy`):
//! two process runtimes with their own state folders, one tmpfs image folder
//! each, real criu between them. Shared by the post-copy tests and bench.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loadshift_events::workload::{Runtime, WorkloadSpec};
use loadshift_events::WorkloadName;
use loadshift_executor::lazy::{LazyDump, LazyRestore};
use loadshift_executor::runtime::process::ProcessRuntime;
use loadshift_executor::runtime::{Handle, Runtime as _};

/// How long each post-copy step may take in tests (a loaded machine).
pub const STEP_LIMIT: Duration = Duration::from_secs(60);

/// A source and a target node for one workload.
pub struct TwoNodes {
    pub source: ProcessRuntime,
    pub target: ProcessRuntime,
    pub name: WorkloadName,
    pub dir: tempfile::TempDir,
    pub images: tempfile::TempDir,
    tag: String,
}

impl TwoNodes {
    /// Two empty nodes; `name` is the workload's name (unique per test: the
    /// working directory under /run/loadshift is shared by both nodes).
    pub fn new(name: &str) -> Self {
        Self::build(name, false)
    }

    /// Like [`TwoNodes::new`], the target restoring into a network namespace
    /// of its own (as a separate host would): a workload listening on a
    /// port restores on the same port while its frozen source still holds
    /// it on this machine. Reach it with [`in_network_of`].
    pub fn with_target_network(name: &str) -> Self {
        Self::build(name, true)
    }

    fn build(name: &str, target_network: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let target_criu = if target_network {
            own_network_criu(dir.path())
        } else {
            "criu".into()
        };
        Self::with_criu(name, dir, "criu".into(), target_criu)
    }

    /// Two nodes running these criu programs (a wrapper that measures, for
    /// the bench), their state under `dir`.
    pub fn with_criu(
        name: &str,
        dir: tempfile::TempDir,
        source_criu: PathBuf,
        target_criu: PathBuf,
    ) -> Self {
        let images = tempfile::Builder::new()
            .prefix("loadshift-lazy-")
            .tempdir_in("/dev/shm")
            .expect("tmpfs dir");
        let tag = format!("lazy-{}-{}", std::process::id(), name);
        Self {
            source: ProcessRuntime::new(source_criu, dir.path().join("a"), false),
            target: ProcessRuntime::new(target_criu, dir.path().join("b"), false),
            name: WorkloadName::new(name).expect("workload name"),
            dir,
            images,
            tag,
        }
    }

    /// Starts `command` on the source.
    pub async fn start(&self, command: &[&str]) -> Handle {
        let spec = WorkloadSpec {
            runtime: Runtime::Process,
            command: command.iter().map(|s| s.to_string()).collect(),
            image: None,
            env: [("LOADSHIFT_TEST_TAG".to_string(), self.tag.clone())].into(),
            no_postcopy: false,
        };
        self.source
            .start(&self.name, &spec)
            .await
            .expect("start the workload on the source")
    }

    /// The workload's stdout on the source and on the target.
    pub fn stdout(&self, on_target: bool) -> PathBuf {
        let rt = if on_target {
            &self.target
        } else {
            &self.source
        };
        rt.workload_dir(&self.name).join("stdout")
    }

    /// Dumps the workload lazily on the source, hands the small images and
    /// its files to the target (as the object store would) and restores it
    /// there: when this returns the workload runs on the target and its
    /// pages are on their way.
    pub async fn lazy_move(&self, handle: &Handle) -> (LazyDump, LazyRestore) {
        let from = self.images.path().join("source");
        let to = self.images.path().join("target");
        let addr = free_port();
        let dump = LazyDump::start(&self.source, handle, &from, addr, STEP_LIMIT)
            .await
            .expect("lazy dump");
        copy_images(&from, &to);
        let files = self.source.travelling_files(&self.name);
        let target_dir = self.target.workload_dir(&self.name);
        std::fs::create_dir_all(&target_dir).expect("target workload folder");
        for f in &files {
            std::fs::copy(&f.original_path, target_dir.join(&f.name)).expect("copy output");
        }
        match LazyRestore::start(&self.target, &self.name, &to, &files, addr, STEP_LIMIT).await {
            Ok(restore) => (dump, restore),
            Err(e) => {
                // The serving criu and its frozen tree outlive a dropped
                // dump (on purpose: a restarted executor may still need
                // them); a failed test must not leave them behind.
                for pid in [dump.criu_pid(), handle.pid()].into_iter().flatten() {
                    // SAFETY: kill(2) of processes this test started.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
                panic!("lazy restore: {e}");
            }
        }
    }

    /// Live processes of this workload on either node, once `expected`
    /// shows or after ten seconds: a dying tree's `unshare` parent outlives
    /// it by a moment, and is not a copy.
    pub fn copies(&self, expected: &[u32]) -> Vec<(u32, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = super::workload_pids(&self.tag, self.name.as_str());
            if now == expected || Instant::now() > deadline {
                return now.into_iter().map(|p| (p, command_of(p))).collect();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        super::kill_tagged(&self.tag);
    }
}

fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

/// A criu that restores into a new network namespace with its loopback up
/// (every other criu command runs as is: the lazy-pages daemon must reach
/// the source).
pub fn own_network_criu(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("criu-own-network");
    let script = "#!/bin/sh\n\
        [ \"$1\" = restore ] || exec criu \"$@\"\n\
        exec unshare --net sh -c 'ip link set lo up && exec criu \"$@\"' sh \"$@\"\n";
    std::fs::write(&path, script).expect("write the criu wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `command` run in the network namespace of process `pid`.
pub fn in_network_of(pid: u32, command: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(command)
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A port nobody listens on now.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Copies the `*.img` files of a dump: what the target needs to restore.
fn copy_images(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("target image folder");
    for entry in std::fs::read_dir(from).expect("image folder").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "img") {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy image");
        }
    }
}

/// Builds `tests/images/<name>.c` into `dir`.
pub fn build_c(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let status = std::process::Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "building {} failed", src.display());
    out
}

/// Waits until `file` holds more than `lines` lines (two minutes at most).
pub fn wait_lines(file: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let n = std::fs::read_to_string(file)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n > lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not reach {lines} lines", file.display());
}
