//! The runtimes a workload can run under, behind one trait.
//!
//! The migration saga is one piece of code; it talks to CRIU-managed
//! processes and to Docker containers only through [`Runtime`], the way youki
//! puts every kernel call behind a `Syscall` trait. Tests drive the saga against
//! both real runtimes.

use std::future::Future;
use std::path::{Path, PathBuf};

use loadshift_events::file::FileError;
use loadshift_events::migration::StreamedPages;
use loadshift_events::workload::{Runtime as RuntimeKind, WorkloadSpec};
use loadshift_events::WorkloadName;
use serde::{Deserialize, Serialize};

pub mod docker;
pub mod docker_log;
pub mod image_dir;
pub mod process;

/// How to find a running workload again, also after an executor restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handle {
    /// A process tree whose root has this host pid.
    Process {
        /// Host pid of the workload's root (the init of its PID namespace).
        pid: u32,
        /// Its start time in clock ticks since boot (`/proc/PID/stat` field
        /// 22), so a recycled pid is never mistaken for the workload.
        start_ticks: u64,
    },
    /// A Docker container.
    Container {
        /// The container id.
        id: String,
    },
}

impl Handle {
    /// The pid, for a process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Handle::Process { pid, .. } => Some(*pid),
            Handle::Container { .. } => None,
        }
    }

    /// The container id, for a container.
    pub fn container_id(&self) -> Option<String> {
        match self {
            Handle::Process { .. } => None,
            Handle::Container { id } => Some(id.clone()),
        }
    }
}

/// A file of the workload that travels with its image, and where it was on
/// the node that dumped it (CRIU records open files by path, so the restorer
/// must map the old path to the new file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TravellingFile {
    /// Its name inside the workload's folder (`stdout`, `stderr`).
    pub name: String,
    /// Its absolute path on the node that dumped it.
    pub original_path: PathBuf,
}

/// What a workload has used so far, as its runtime counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time used since it started, in seconds (cumulative, so two
    /// readings give a rate).
    pub cpu_seconds: f64,
    /// Resident memory now, in bytes: what a migration must copy.
    pub rss_bytes: u64,
    /// Private memory written so far and still held, bytes (`Private_Dirty`
    /// of `/proc/PID/smaps_rollup`, summed over the workload's processes);
    /// two readings give the rate at which the image grows. `None` where
    /// the runtime cannot read it (a container's processes).
    pub private_dirty_bytes: Option<u64>,
}

/// Why a runtime operation failed. Each message says what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// a program could not be started
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// criu reported a failure
    #[error("criu {action} failed ({status}); last lines of {log}:\n{tail}")]
    Criu {
        /// dump or restore.
        action: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// the workload did not come up
    #[error("workload {0} did not start: {1}")]
    NotStarted(String, String),
    /// a file operation failed
    #[error(transparent)]
    Io(#[from] FileError),
    /// the Docker daemon refused or failed
    #[error("docker: {0}")]
    Docker(String),
    /// the spec cannot run under this runtime
    #[error("{0}")]
    Unsupported(String),
    /// the pages could not be streamed to the target
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
}

impl RuntimeError {
    /// Wraps an I/O error with what was attempted on which path.
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let at = FileError::at(action, path);
        move |source| at(source).into()
    }
}

/// The two signals of a stop: a request to end, then the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the workload may clean up and exit.
    Terminate,
    /// SIGKILL: its grace period is over.
    Kill,
}

impl StopSignal {
    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Terminate => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
        }
    }

    /// Its name, as the Docker Engine API takes it.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

/// What the saga needs from a runtime.
///
/// Methods return `Send` futures so the executor can drive them from tokio
/// tasks.
pub trait Runtime: Send + Sync + 'static {
    /// Which kind of workload this runtime runs.
    fn kind(&self) -> RuntimeKind;

    /// The folder holding a workload's own files on this node.
    fn workload_dir(&self, name: &WorkloadName) -> PathBuf;

    /// The workload's files that travel with its image.
    fn travelling_files(&self, name: &WorkloadName) -> Vec<TravellingFile>;

    /// What can be checked of `spec` on this host before starting it (a
    /// process's program exists and is executable): a host effect, so it
    /// sits behind the trait and the saga's doubles answer for it.
    ///
    /// # Errors
    /// The reason, in words, for the `workload.start_failed` event.
    fn check(&self, spec: &loadshift_events::workload::WorkloadSpec) -> Result<(), String> {
        crate::admission::check_spec(spec)
    }

    /// Starts a workload.
    fn start(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
    ) -> impl Future<Output = Result<Handle, RuntimeError>> + Send;

    /// Whether the workload still runs (reaping it if it ended).
    fn is_running(&self, handle: &Handle) -> impl Future<Output = bool> + Send;

    /// Freezes the workload and writes its image into `images`. When this
    /// returns `Ok` the workload no longer runs here; when it returns `Err` it
    /// still does (CRIU resumes the tasks of a failed dump).
    fn dump(
        &self,
        name: &WorkloadName,
        handle: &Handle,
        images: &Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Whether this runtime can send a dump's pages straight to another
    /// node ([`Runtime::dump_streamed`]); the saga falls back to a copy
    /// before freezing anything when it cannot.
    fn streams_pages(&self) -> bool {
        false
    }

    /// The CRIU process runtime, where this runtime can move a workload
    /// with post-copy ([`crate::lazy`]: lazy dump, lazy-pages daemon,
    /// `restore --lazy-pages`); `None` (the default) makes the saga fall
    /// back to a stream before anything is frozen.
    fn postcopy(&self) -> Option<&process::ProcessRuntime> {
        None
    }

    /// Freezes the workload and dumps it into `images`, its memory pages
    /// going over `link` to the target while the dump runs (and into a
    /// safety copy next to `images`, so a failed migration still resumes
    /// here). The same promise as [`Runtime::dump`] about where it runs.
    fn dump_streamed(
        &self,
        name: &WorkloadName,
        handle: &Handle,
        images: &Path,
        link: crate::stream::Link,
    ) -> impl Future<Output = Result<StreamedPages, RuntimeError>> + Send {
        let _ = (name, handle, images, link);
        async {
            Err(RuntimeError::Unsupported(
                "this runtime cannot stream pages".into(),
            ))
        }
    }

    /// Whether `images` holds a complete dump. After a crash in the middle of
    /// a dump this decides between dumping again and going on with the image.
    fn dump_complete(&self, images: &Path) -> bool;

    /// The copy a restore from `images` started, if it runs: after a crash
    /// during a restore, the restore may have finished without us.
    fn find_restored(
        &self,
        name: &WorkloadName,
        images: &Path,
    ) -> impl Future<Output = Option<Handle>> + Send;

    /// Starts the workload from the image in `images`. Its travelling files
    /// are already in [`Runtime::workload_dir`]; `files` says where they were
    /// when it was dumped.
    fn restore(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
        images: &Path,
        files: &[TravellingFile],
    ) -> impl Future<Output = Result<Handle, RuntimeError>> + Send;

    /// What the workload has used; `None` when it cannot be read (ended).
    fn usage(&self, handle: &Handle) -> impl Future<Output = Option<Usage>> + Send;

    /// Waits until no criu from before a crash works on `images` any more,
    /// so that what the folder holds is final. Both real runtimes dump with
    /// criu, so this is written once here; the saga's double overrides it.
    fn settle(&self, images: &Path) -> impl Future<Output = ()> + Send {
        image_dir::wait_for_stray_criu(images)
    }

    /// Kills what still works on `images` (a criu dump or restore past its
    /// deadline, and the tasks a killed restore was building); then
    /// [`Runtime::settle`] returns once it is gone. The process runtime
    /// runs criu with the image folder in its command line; Docker's runc
    /// talks to criu over a socket (`criu swrk`), so for containers this
    /// finds nothing and the daemon's checkpoint runs to its own end.
    fn abandon(&self, images: &Path) {
        image_dir::kill_criu(images);
    }

    /// Removes the image folder `images` (its migration ended, or it holds a
    /// partial image that must not be used).
    fn discard_image(&self, images: &Path) {
        image_dir::discard(images);
    }

    /// Sends `signal` to the workload's root (a stop asked by a person): the
    /// process that is the init of its PID namespace, or the container's
    /// PID 1. Like `docker stop`, an init that set no handler for SIGTERM
    /// ignores it and ends only at the SIGKILL after the grace period. The
    /// default refuses: a runtime that cannot signal says so, and the stop
    /// is reported as not possible rather than pretended.
    ///
    /// # Errors
    /// [`RuntimeError`] when the signal cannot be delivered.
    fn signal(
        &self,
        handle: &Handle,
        signal: StopSignal,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let what = format!("this runtime cannot send {} to {handle:?}", signal.name());
        async move { Err(RuntimeError::Unsupported(what)) }
    }

    /// Stops the workload if it runs and removes what is left of it here.
    fn remove(
        &self,
        name: &WorkloadName,
        handle: Option<&Handle>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
