//! Process workloads, checkpointed and restored with the criu CLI.
//!
//! The shape that works on these machines (checked by hand, see
//! docs/design.md, "Machine facts"): the workload is the init of its own PID namespace and the
//! leader of its own session, so CRIU can restore it with its original PIDs on
//! any node; `unshare`, its parent outside the namespace, holds nothing but
//! /dev/null, because a parent writing to the workload's files after the dump
//! makes the restore refuse them. The restorer maps the workload's files to
//! this node's paths with `--inherit-fd`, so two nodes on one machine (different
//! state dirs) and real hosts (same paths) take the same road.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use loadshift_events::migration::StreamedPages;
use loadshift_events::workload::{Runtime as RuntimeKind, WorkloadSpec};
use loadshift_events::WorkloadName;

use super::{Handle, Runtime, RuntimeError, StopSignal, TravellingFile, Usage};

/// Names of the files every process workload writes, in its folder.
pub const OUTPUT_FILES: [&str; 2] = ["stdout", "stderr"];

/// Runs process workloads under `unshare --pid --fork setsid` and moves them
/// with criu.
pub struct ProcessRuntime {
    criu: PathBuf,
    workloads_dir: PathBuf,
    /// Extra arguments for criu dump and restore (TCP handling).
    tcp: bool,
    /// `unshare` parents we spawned, reaped when they end.
    parents: Mutex<HashMap<u32, tokio::process::Child>>,
}

impl ProcessRuntime {
    /// A runtime keeping workload folders under `workloads_dir` and running
    /// `criu` for checkpoints. `tcp` adds `--tcp-established` (with nftables
    /// network locking: these machines have no iptables).
    pub fn new(criu: PathBuf, workloads_dir: PathBuf, tcp: bool) -> Self {
        Self {
            criu,
            workloads_dir,
            tcp,
            parents: Mutex::new(HashMap::new()),
        }
    }

    async fn run_criu(
        &self,
        action: &'static str,
        args: Vec<std::ffi::OsString>,
        log: &Path,
        inherit: Vec<(OwnedFd, i32)>,
    ) -> Result<(), RuntimeError> {
        let mut cmd = tokio::process::Command::new(&self.criu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !inherit.is_empty() {
            // Hand the files to criu at the numbers named in --inherit-fd.
            // They were duplicated above 100 first, so no dup2 below clobbers
            // another source fd.
            let pairs: Vec<(i32, i32)> = inherit
                .iter()
                .map(|(fd, to)| (fd.as_raw_fd(), *to))
                .collect();
            // SAFETY: dup2 is async-signal-safe; nothing else runs between
            // fork and exec here.
            unsafe {
                cmd.as_std_mut().pre_exec(move || {
                    for (from, to) in &pairs {
                        if libc::dup2(*from, *to) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: self.criu.display().to_string(),
            source,
        })?;
        if action == "restore" {
            crate::fault::crash_point(crate::fault::DURING_RESTORE);
        }
        let status = child.wait().await.map_err(|source| RuntimeError::Spawn {
            program: self.criu.display().to_string(),
            source,
        })?;
        drop(inherit);
        if status.success() {
            return Ok(());
        }
        Err(RuntimeError::Criu {
            action,
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log, 12),
        })
    }

    /// The criu program this runtime runs: post-copy (`crate::lazy`) runs
    /// the same one, with the same options, for its long-lived halves.
    pub fn criu(&self) -> &Path {
        &self.criu
    }

    /// The arguments of `criu dump` for the tree whose root is `pid`, writing
    /// into `images` (log `dump.log`): post-copy adds its own to these, so a
    /// lazy dump treats TCP and the network lock exactly as a plain one.
    pub fn dump_args(&self, pid: u32, images: &Path) -> Vec<std::ffi::OsString> {
        let mut args = vec!["dump".into(), "-t".into(), pid.to_string().into()];
        args.extend(self.criu_common(images, "dump.log"));
        if self.tcp {
            args.extend(["--network-lock".into(), "nftables".into()]);
        }
        args
    }

    fn criu_common(&self, images: &Path, log: &str) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "-D".into(),
            images.into(),
            "-o".into(),
            log.into(),
            "-v4".into(),
        ];
        if self.tcp {
            args.push("--tcp-established".into());
        }
        args
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn workload_dir(&self, name: &WorkloadName) -> PathBuf {
        self.workloads_dir.join(name.as_str())
    }

    fn travelling_files(&self, name: &WorkloadName) -> Vec<TravellingFile> {
        let dir = self.workload_dir(name);
        OUTPUT_FILES
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
        if spec.command.is_empty() {
            return Err(RuntimeError::Unsupported(
                "a process workload needs a command".into(),
            ));
        }
        let dir = self.workload_dir(name);
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create workload folder", &dir))?;
        let cwd = working_dir(name);
        std::fs::create_dir_all(&cwd).map_err(RuntimeError::io("create working folder", &cwd))?;
        // The redirections happen inside the namespace, in the workload's own
        // shell before it execs the command, so `unshare` never holds them.
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["--pid", "--fork", "setsid", "sh", "-c"])
            .arg(r#"exec >>"$0" 2>>"$1" </dev/null; shift; exec "$@""#)
            .arg(dir.join("stdout"))
            .arg(dir.join("stderr"))
            .args(&spec.command)
            .envs(&spec.env)
            .env("LOADSHIFT_WORKLOAD", name.as_str())
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: "unshare".into(),
            source,
        })?;
        let parent = child.id().ok_or_else(|| {
            RuntimeError::NotStarted(name.to_string(), "unshare exited at once".into())
        })?;
        self.parents
            .lock()
            .map_err(|_| RuntimeError::NotStarted(name.to_string(), "lock poisoned".into()))?
            .insert(parent, child);
        // The workload is unshare's only child; it appears within moments.
        for _ in 0..200 {
            if let Some(pid) = first_child(parent) {
                if let Some(start_ticks) = start_ticks(pid) {
                    return Ok(Handle::Process { pid, start_ticks });
                }
            }
            if !pid_alive(parent) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(RuntimeError::NotStarted(
            name.to_string(),
            format!(
                "no process appeared in its PID namespace; see {}",
                dir.join("stderr").display()
            ),
        ))
    }

    async fn is_running(&self, handle: &Handle) -> bool {
        let Handle::Process {
            pid,
            start_ticks: want,
        } = handle
        else {
            return false;
        };
        reap_parents(&self.parents);
        // A restored workload is our child (we are a subreaper); reap it if it
        // ended so it does not linger as a zombie.
        // SAFETY: waitpid on a specific pid with WNOHANG only reaps that pid.
        unsafe {
            let mut status = 0;
            libc::waitpid(*pid as i32, &mut status, libc::WNOHANG);
        }
        start_ticks(*pid) == Some(*want)
    }

    async fn dump(
        &self,
        _name: &WorkloadName,
        handle: &Handle,
        images: &Path,
    ) -> Result<(), RuntimeError> {
        let Handle::Process { pid, .. } = handle else {
            return Err(RuntimeError::Unsupported("not a process workload".into()));
        };
        std::fs::create_dir_all(images).map_err(RuntimeError::io("create image folder", images))?;
        let args = self.dump_args(*pid, images);
        self.run_criu("dump", args, &images.join("dump.log"), Vec::new())
            .await?;
        reap_parents(&self.parents);
        Ok(())
    }

    fn postcopy(&self) -> Option<&ProcessRuntime> {
        Some(self)
    }

    fn streams_pages(&self) -> bool {
        true
    }

    async fn dump_streamed(
        &self,
        _name: &WorkloadName,
        handle: &Handle,
        images: &Path,
        link: crate::stream::Link,
    ) -> Result<StreamedPages, RuntimeError> {
        let Handle::Process { pid, .. } = handle else {
            return Err(RuntimeError::Unsupported("not a process workload".into()));
        };
        std::fs::create_dir_all(images).map_err(RuntimeError::io("create image folder", images))?;
        let relay = crate::stream::SourceRelay::start(link, images).await?;
        let mut args = self.dump_args(*pid, images);
        args.extend([
            "--page-server".into(),
            "--address".into(),
            relay.address.ip().to_string().into(),
            "--port".into(),
            relay.address.port().to_string().into(),
        ]);
        if let Err(e) = self
            .run_criu("dump", args, &images.join("dump.log"), Vec::new())
            .await
        {
            relay.abort();
            return Err(e);
        }
        reap_parents(&self.parents);
        Ok(relay.finish().await?)
    }

    /// Besides waiting for a criu from before a crash: a streamed dump that
    /// finished before the crash left its pages as the relay's record, and
    /// the saga then sends the whole image as a copy, so the record becomes
    /// page images here (a partial dump's record is worthless: the saga
    /// discards it with the dump).
    async fn settle(&self, images: &Path) {
        crate::runtime::image_dir::wait_for_stray_criu(images).await;
        if self.dump_complete(images) {
            if let Err(e) = crate::stream::replay_record(&self.criu, images).await {
                tracing::warn!(images = %images.display(), error = %e, "the streamed pages' record could not be replayed");
            }
        }
    }

    fn dump_complete(&self, images: &Path) -> bool {
        std::fs::read_to_string(images.join("dump.log"))
            .map(|s| s.contains("Dumping finished successfully"))
            .unwrap_or(false)
    }

    async fn find_restored(&self, _name: &WorkloadName, images: &Path) -> Option<Handle> {
        let pid: u32 = std::fs::read_to_string(images.join("restore.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let handle = Handle::Process {
            pid,
            start_ticks: start_ticks(pid)?,
        };
        self.is_running(&handle).await.then_some(handle)
    }

    async fn restore(
        &self,
        name: &WorkloadName,
        _spec: &WorkloadSpec,
        images: &Path,
        files: &[TravellingFile],
    ) -> Result<Handle, RuntimeError> {
        // A streamed dump's pages wait next to the image (on the source, as
        // the relay's record): CRIU reads one folder.
        crate::stream::settle_pages(&self.criu, images).await?;
        self.restore_with(name, images, files, &[]).await
    }

    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        let Handle::Process { pid, .. } = handle else {
            return None;
        };
        if !self.is_running(handle).await {
            return None;
        }
        Some(tree_usage(*pid))
    }

    async fn signal(&self, handle: &Handle, signal: StopSignal) -> Result<(), RuntimeError> {
        let Handle::Process { pid, .. } = handle else {
            return Err(RuntimeError::Unsupported("not a process workload".into()));
        };
        if !self.is_running(handle).await {
            // Ended meanwhile: nothing to signal, and its pid may be reused.
            return Ok(());
        }
        // SAFETY: plain kill(2) of a pid we verified by start time.
        if unsafe { libc::kill(*pid as i32, signal.number()) } != 0 {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            return Err(RuntimeError::io("send a stop signal to", &proc)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    async fn remove(
        &self,
        name: &WorkloadName,
        handle: Option<&Handle>,
    ) -> Result<(), RuntimeError> {
        if let Some(h @ Handle::Process { pid, .. }) = handle {
            if self.is_running(h).await {
                // SAFETY: plain kill(2) of a pid we verified by start time.
                unsafe {
                    libc::kill(*pid as i32, libc::SIGKILL);
                }
                for _ in 0..100 {
                    if !self.is_running(h).await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        let dir = self.workload_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("remove workload folder", &dir)(e)),
        }
    }
}

impl ProcessRuntime {
    /// [`Runtime::restore`] with `extra` criu arguments: post-copy restores
    /// with `--lazy-pages`, everything else (files, pid, cgroups) the same.
    ///
    /// # Errors
    /// As [`Runtime::restore`].
    pub async fn restore_with(
        &self,
        name: &WorkloadName,
        images: &Path,
        files: &[TravellingFile],
        extra: &[&str],
    ) -> Result<Handle, RuntimeError> {
        let dir = self.workload_dir(name);
        // CRIU restores the working directory by path.
        let cwd = working_dir(name);
        std::fs::create_dir_all(&cwd).map_err(RuntimeError::io("create working folder", &cwd))?;
        let pidfile = images.join("restore.pid");
        let _ = std::fs::remove_file(&pidfile);
        let mut args = vec!["restore".into(), "-d".into()];
        args.extend(self.criu_common(images, "restore.log"));
        args.extend([
            "--manage-cgroups=ignore".into(),
            "--pidfile".into(),
            pidfile.clone().into(),
        ]);
        args.extend(extra.iter().map(|a| (*a).into()));
        let mut inherit = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let path = dir.join(&f.name);
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(RuntimeError::io("open for restore", &path))?;
            // Move it above the numbers criu will see, then hand it over.
            let high = dup_above(file, 100).map_err(RuntimeError::io("duplicate fd of", &path))?;
            let target_fd = 3 + i as i32;
            // CRIU names files by their path without the leading slash.
            let key = f
                .original_path
                .to_string_lossy()
                .trim_start_matches('/')
                .to_string();
            args.push("--inherit-fd".into());
            args.push(format!("fd[{target_fd}]:{key}").into());
            inherit.push((high, target_fd));
        }
        self.run_criu("restore", args, &images.join("restore.log"), inherit)
            .await?;
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .map_err(RuntimeError::io("read", &pidfile))?
            .trim()
            .parse()
            .map_err(|e| RuntimeError::NotStarted(name.to_string(), format!("bad pidfile: {e}")))?;
        let start_ticks = start_ticks(pid).ok_or_else(|| {
            RuntimeError::NotStarted(name.to_string(), format!("restored pid {pid} is gone"))
        })?;
        Ok(Handle::Process { pid, start_ticks })
    }
}

/// CPU and memory of every process in the PID namespace whose init is
/// `root` (the whole workload, not just its first process).
fn tree_usage(root: u32) -> Usage {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(ns) = ns_of(&root.to_string()) else {
        return Usage {
            cpu_seconds: 0.0,
            rss_bytes: 0,
            private_dirty_bytes: None,
        };
    };
    let (mut cpu, mut rss, mut dirty) = (0u64, 0u64, None::<u64>);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if ns_of(pid).as_ref() != Some(&ns) {
            continue;
        }
        let Ok(pid_n) = pid.parse::<u32>() else {
            continue;
        };
        if let Some(f) = stat_fields(pid_n) {
            // utime, stime, cutime, cstime: fields 14-17 (f[11..15]); field
            // 24 is rss in pages (f[21]).
            cpu += f
                .get(11..15)
                .map(|v| v.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
                .unwrap_or(0);
            rss += f.get(21).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * page;
        }
        if let Some(d) = private_dirty(pid_n) {
            dirty = Some(dirty.unwrap_or(0) + d);
        }
    }
    Usage {
        cpu_seconds: cpu as f64 / ticks,
        rss_bytes: rss,
        private_dirty_bytes: dirty,
    }
}

/// `Private_Dirty` of `pid`, bytes: the private pages it has written and
/// still holds, which a checkpoint must copy. Read from `smaps_rollup`
/// because these kernels have no soft-dirty bits (`criu pre-dump
/// --track-mem` is unavailable), so pages written again while already
/// dirty cannot be seen; the growth of this figure is the part of the
/// image that grows while the workload waits for its freeze.
fn private_dirty(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    smaps_field_bytes(&s, "Private_Dirty:")
}

/// The value of `field` (a `kB` line of an smaps file), in bytes.
fn smaps_field_bytes(smaps: &str, field: &str) -> Option<u64> {
    let line = smaps.lines().find(|l| l.starts_with(field))?;
    let kb = line[field.len()..].split_whitespace().next()?;
    kb.parse::<u64>().ok().map(|k| k * 1024)
}

/// Where a workload runs (its working directory): the same path on every
/// node, so CRIU, which restores it by path, finds it wherever the workload
/// lands (the workload's own folder is under a node's state dir, and the
/// source's is gone after a move); and one per workload, because CRIU's
/// parasite mounts a private /proc under the dumped task's working directory
/// (`proc.crtools`), so two dumps at once in one shared folder collide.
pub fn working_dir(name: &WorkloadName) -> PathBuf {
    Path::new("/run/loadshift/workloads").join(name.as_str())
}

/// Reaps `unshare` parents whose workload ended or was dumped away.
fn reap_parents(parents: &Mutex<HashMap<u32, tokio::process::Child>>) {
    if let Ok(mut map) = parents.lock() {
        map.retain(|_, child| !matches!(child.try_wait(), Ok(Some(_))));
    }
}

/// Duplicates `file` to a descriptor number at or above `min`.
fn dup_above(file: std::fs::File, min: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The first child of `pid`, from /proc.
fn first_child(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// A live process's start time (`/proc/PID/stat` field 22), `None` when it is
/// gone or a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    if fields.first()? == "Z" {
        return None;
    }
    // fields[0] is field 3 (state); field 22 is fields[19].
    fields.get(19)?.parse().ok()
}

/// The fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: cut at the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The last `n` lines of a log file, for an error message.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s
                .lines()
                .filter(|l| {
                    (l.contains("Error") || l.contains("Warn")) && !l.contains("RLIMIT_NOFILE")
                })
                .collect();
            let pick = if lines.is_empty() {
                s.lines().collect::<Vec<_>>()
            } else {
                lines
            };
            pick[pick.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_fields_are_read_in_bytes() {
        let rollup =
            "00400000-7ffc [rollup]\nRss:                5120 kB\nPrivate_Dirty:      2048 kB\n";
        assert_eq!(smaps_field_bytes(rollup, "Private_Dirty:"), Some(2 << 20));
        assert_eq!(smaps_field_bytes(rollup, "Swap:"), None);
        assert_eq!(
            smaps_field_bytes("Private_Dirty: lots kB", "Private_Dirty:"),
            None
        );
    }

    #[test]
    fn this_process_has_private_dirty_memory() {
        let mine = private_dirty(std::process::id());
        assert!(mine.is_some_and(|b| b > 0), "{mine:?}");
    }
}
