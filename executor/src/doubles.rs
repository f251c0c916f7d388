//! Recording test doubles of the saga's effects (youki's shape: a real
//! implementation of each trait for the service, and one that records what
//! was asked of it for the tests).
//!
//! They model just enough of the world to keep the saga honest: a dump stops
//! the workload and leaves a complete image, a restore needs an image and
//! starts a new copy, the store keeps objects by name and checks digests.
//! Each node has its own [`Host`] (its processes and image folders) and its
//! own effect log; the store is shared by every node, as the real one is.
//! A [`Script`] makes any operation fail, hang (an executor killed before
//! the effect) or crash right after its effect happened (killed before the
//! saga could journal it): dropping the saga's future at that point is the
//! crash, and the host and store keep what happened, as processes and
//! servers outlive a killed executor.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use loadshift_events::workload::{Runtime as RuntimeKind, WorkloadSpec};
use loadshift_events::{NodeName, WorkloadName};
use uuid::Uuid;

use futures::future::BoxFuture;

use crate::admission::Names;
use crate::checkpoint::{CheckpointError, Fetched, Manifest, Stored};
use crate::clock::Clock;
use crate::fence::{Fence, FenceError, Holder};
use crate::image_store::ImageStore;
use crate::liveness::{Peers, Pong};
use crate::runtime::{Handle, Runtime, RuntimeError, StopSignal, TravellingFile, Usage};
use loadshift_events::liveness::Capacity;

/// One effect the saga caused, in the order it caused them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A workload was started.
    Start(String),
    /// A workload was dumped (and stopped).
    Dump(String),
    /// A workload was restored from an image.
    Restore(String),
    /// A workload's remains were removed.
    Remove(String),
    /// An image folder was removed.
    Discard(PathBuf),
    /// An image was stored.
    Put(String),
    /// An image was fetched.
    Fetch(String),
    /// A stored image was deleted.
    Delete(String),
    /// A peer was asked whether it lives.
    Ping(String),
    /// A stop signal went to a workload (`SIGTERM`, `SIGKILL`).
    Signal(String, &'static str),
}

/// The operations a [`Script`] can make misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Runtime::dump`].
    Dump,
    /// [`Runtime::restore`].
    Restore,
    /// [`Runtime::remove`].
    Remove,
    /// [`ImageStore::put`].
    Put,
    /// [`ImageStore::fetch`].
    Fetch,
    /// [`ImageStore::delete`].
    Delete,
}

/// How an operation misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// It fails with this message and changes nothing.
    Fail(String),
    /// It never returns and changes nothing (killed before the effect).
    Hang,
    /// Its effect happens, then it never returns (killed after the effect,
    /// before the saga journaled it).
    CrashAfter,
}

/// What goes wrong on one node, by operation.
#[derive(Clone, Default)]
pub struct Script(Arc<Mutex<HashMap<Op, Misbehaviour>>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Script {
    /// Makes `op` misbehave from now on.
    pub fn set(&self, op: Op, how: Misbehaviour) {
        lock(&self.0).insert(op, how);
    }

    /// Everything behaves again (an executor restarted).
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    fn get(&self, op: Op) -> Option<Misbehaviour> {
        lock(&self.0).get(&op).cloned()
    }
}

/// The ordered log of one node's effects.
#[derive(Clone, Default)]
pub struct Effects(Arc<Mutex<Vec<Effect>>>);

impl Effects {
    fn push(&self, e: Effect) {
        lock(&self.0).push(e);
    }

    /// Everything recorded so far.
    pub fn all(&self) -> Vec<Effect> {
        lock(&self.0).clone()
    }

    /// How many recorded effects match `pred`.
    pub fn count(&self, pred: impl Fn(&Effect) -> bool) -> usize {
        lock(&self.0).iter().filter(|e| pred(e)).count()
    }

    /// Forgets what was recorded (to look at what happens next).
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// Never returns: the executor died here.
async fn die() -> ! {
    std::future::pending::<()>().await;
    unreachable!("a pending future never completes")
}

/// Runs the scripted misbehaviour of `op`, if any, around `effect`.
async fn scripted<T, E>(
    script: &Script,
    op: Op,
    fail: impl FnOnce(String) -> E,
    effect: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    match script.get(op) {
        None => effect(),
        Some(Misbehaviour::Fail(msg)) => Err(fail(msg)),
        Some(Misbehaviour::Hang) => die().await,
        Some(Misbehaviour::CrashAfter) => {
            let _ = effect();
            die().await
        }
    }
}

/// A node's processes and image folders, as the host keeps them whatever
/// happens to the executor.
#[derive(Default)]
pub struct HostState {
    /// What runs, by workload.
    pub running: HashMap<WorkloadName, Handle>,
    /// Image folders holding a complete image.
    pub images: HashSet<PathBuf>,
    /// The copy each image folder was restored into.
    pub restored_from: HashMap<PathBuf, Handle>,
    next_pid: u32,
}

/// A shared [`HostState`].
#[derive(Clone, Default)]
pub struct Host(Arc<Mutex<HostState>>);

impl Host {
    /// Looks at (or changes) the host.
    pub fn state(&self) -> MutexGuard<'_, HostState> {
        lock(&self.0)
    }

    /// Starts `name` as if it ran before the test began.
    pub fn run(&self, name: &WorkloadName) -> Handle {
        let mut s = self.state();
        s.next_pid += 1;
        let handle = Handle::Process {
            pid: 100 + s.next_pid,
            start_ticks: u64::from(s.next_pid),
        };
        s.running.insert(name.clone(), handle.clone());
        handle
    }

    /// Whether `name` runs here.
    pub fn runs(&self, name: &WorkloadName) -> bool {
        self.state().running.contains_key(name)
    }

    /// Whether the image folder `images` holds an image.
    pub fn has_image(&self, images: &Path) -> bool {
        self.state().images.contains(images)
    }
}

/// A runtime that records what it is asked and plays it on a [`Host`].
pub struct RecordingRuntime {
    /// The kind it claims to run.
    pub kind: RuntimeKind,
    /// Its node's processes and image folders.
    pub host: Host,
    /// Its log.
    pub effects: Effects,
    /// What goes wrong.
    pub script: Script,
}

impl Runtime for RecordingRuntime {
    /// The double's programs are imaginary: every spec passes.
    fn check(&self, _spec: &loadshift_events::workload::WorkloadSpec) -> Result<(), String> {
        Ok(())
    }

    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn workload_dir(&self, name: &WorkloadName) -> PathBuf {
        Path::new("/fake/workloads").join(name.as_str())
    }

    fn travelling_files(&self, name: &WorkloadName) -> Vec<TravellingFile> {
        vec![TravellingFile {
            name: "stdout".into(),
            original_path: self.workload_dir(name).join("stdout"),
        }]
    }

    async fn start(
        &self,
        name: &WorkloadName,
        spec: &WorkloadSpec,
    ) -> Result<Handle, RuntimeError> {
        if spec.command.is_empty() {
            return Err(RuntimeError::Unsupported("no command".into()));
        }
        self.effects.push(Effect::Start(name.to_string()));
        Ok(self.host.run(name))
    }

    async fn is_running(&self, handle: &Handle) -> bool {
        self.host.state().running.values().any(|h| h == handle)
    }

    async fn dump(
        &self,
        name: &WorkloadName,
        handle: &Handle,
        images: &Path,
    ) -> Result<(), RuntimeError> {
        scripted(&self.script, Op::Dump, RuntimeError::Unsupported, || {
            self.effects.push(Effect::Dump(name.to_string()));
            let mut s = self.host.state();
            if s.running.get(name) != Some(handle) {
                return Err(RuntimeError::Unsupported(format!("{name} does not run")));
            }
            s.running.remove(name);
            s.images.insert(images.to_path_buf());
            Ok(())
        })
        .await
    }

    fn dump_complete(&self, images: &Path) -> bool {
        self.host.has_image(images)
    }

    async fn find_restored(&self, _name: &WorkloadName, images: &Path) -> Option<Handle> {
        let s = self.host.state();
        let h = s.restored_from.get(images)?;
        s.running.values().any(|r| r == h).then(|| h.clone())
    }

    async fn restore(
        &self,
        name: &WorkloadName,
        _spec: &WorkloadSpec,
        images: &Path,
        _files: &[TravellingFile],
    ) -> Result<Handle, RuntimeError> {
        scripted(&self.script, Op::Restore, RuntimeError::Unsupported, || {
            self.effects.push(Effect::Restore(name.to_string()));
            if !self.host.has_image(images) {
                return Err(RuntimeError::Unsupported(format!(
                    "no image in {}",
                    images.display()
                )));
            }
            if self.host.runs(name) {
                // criu restores with the original pids: a second copy collides.
                return Err(RuntimeError::Unsupported(format!("{name} already runs")));
            }
            let handle = self.host.run(name);
            self.host
                .state()
                .restored_from
                .insert(images.to_path_buf(), handle.clone());
            Ok(handle)
        })
        .await
    }

    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        self.is_running(handle).await.then_some(Usage {
            cpu_seconds: 1.0,
            rss_bytes: 1 << 20,
            private_dirty_bytes: Some(1 << 19),
        })
    }

    fn settle(&self, _images: &Path) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn discard_image(&self, images: &Path) {
        self.effects.push(Effect::Discard(images.to_path_buf()));
        let mut s = self.host.state();
        s.images.remove(images);
        // The process runtime finds a restored copy through a pid file in
        // the image folder: it goes with the folder.
        s.restored_from.remove(images);
    }

    /// The double's workloads end at any stop signal.
    async fn signal(&self, handle: &Handle, signal: StopSignal) -> Result<(), RuntimeError> {
        let mut s = self.host.state();
        let name = s
            .running
            .iter()
            .find(|(_, h)| *h == handle)
            .map(|(n, _)| n.clone());
        if let Some(name) = name {
            self.effects
                .push(Effect::Signal(name.to_string(), signal.name()));
            s.running.remove(&name);
        }
        Ok(())
    }

    async fn remove(
        &self,
        name: &WorkloadName,
        _handle: Option<&Handle>,
    ) -> Result<(), RuntimeError> {
        scripted(&self.script, Op::Remove, RuntimeError::Unsupported, || {
            self.effects.push(Effect::Remove(name.to_string()));
            self.host.state().running.remove(name);
            Ok(())
        })
        .await
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The digest the source computed when it packed it.
    pub sha256: String,
    /// Whether the store damaged it since.
    pub damaged: bool,
    /// Its size.
    pub bytes: u64,
}

/// The object store every node of a test shares.
#[derive(Clone, Default)]
pub struct Bucket(Arc<Mutex<HashMap<String, Object>>>);

impl Bucket {
    /// The objects it holds now.
    pub fn objects(&self) -> HashMap<String, Object> {
        lock(&self.0).clone()
    }

    /// Damages `object`, as a failing disk would.
    pub fn damage(&self, object: &str) {
        if let Some(o) = lock(&self.0).get_mut(object) {
            o.damaged = true;
        }
    }
}

/// Size of every image the recording store packs.
pub const IMAGE_BYTES: u64 = 64 << 20;

/// An image store that records what it is asked, on a shared [`Bucket`];
/// it reads and writes the images of its own node's [`Host`].
pub struct RecordingImages {
    /// The shared store.
    pub bucket: Bucket,
    /// The node's image folders.
    pub host: Host,
    /// The node's log.
    pub effects: Effects,
    /// What goes wrong.
    pub script: Script,
}

fn store_err(action: &'static str, object: &str) -> impl FnOnce(String) -> CheckpointError {
    let object = object.to_string();
    move |message| CheckpointError::Store {
        action,
        object,
        message,
    }
}

impl ImageStore for RecordingImages {
    async fn put(
        &self,
        object: &str,
        images: &Path,
        _workload_dir: &Path,
        _files: &[TravellingFile],
    ) -> Result<Stored, CheckpointError> {
        scripted(&self.script, Op::Put, store_err("put", object), || {
            self.effects.push(Effect::Put(object.to_string()));
            if !self.host.has_image(images) {
                return Err(store_err("put", object)(format!(
                    "no image in {}",
                    images.display()
                )));
            }
            let sha256 = format!("sha-of-{object}");
            lock(&self.bucket.0).insert(
                object.to_string(),
                Object {
                    sha256: sha256.clone(),
                    damaged: false,
                    bytes: IMAGE_BYTES,
                },
            );
            Ok(Stored {
                bytes: IMAGE_BYTES,
                sha256,
            })
        })
        .await
    }

    async fn fetch(
        &self,
        object: &str,
        sha256: &str,
        images: &Path,
        _workload_dir: &Path,
    ) -> Result<Fetched, CheckpointError> {
        scripted(&self.script, Op::Fetch, store_err("get", object), || {
            self.effects.push(Effect::Fetch(object.to_string()));
            let Some(o) = lock(&self.bucket.0).get(object).cloned() else {
                return Err(store_err("get", object)("object not found".into()));
            };
            let actual = if o.damaged {
                format!("{}-damaged", o.sha256)
            } else {
                o.sha256.clone()
            };
            if actual != sha256 {
                return Err(CheckpointError::Digest {
                    object: object.to_string(),
                    expected: sha256.to_string(),
                    actual,
                });
            }
            self.host.state().images.insert(images.to_path_buf());
            Ok(Fetched {
                manifest: Manifest { files: vec![] },
                bytes: o.bytes,
            })
        })
        .await
    }

    async fn delete(&self, object: &str) -> Result<(), CheckpointError> {
        scripted(
            &self.script,
            Op::Delete,
            store_err("delete", object),
            || {
                self.effects.push(Effect::Delete(object.to_string()));
                lock(&self.bucket.0).remove(object);
                Ok(())
            },
        )
        .await
    }
}

/// The cluster's name registry as one map every node of a test shares, with
/// the real registry's rules: a claim succeeds when nobody holds the name or
/// the claimant already does.
#[derive(Clone, Default)]
pub struct FakeNames(Arc<Mutex<HashMap<WorkloadName, NodeName>>>);

impl FakeNames {
    /// The node holding `name`, if any.
    pub fn holder(&self, name: &str) -> Option<NodeName> {
        let name = WorkloadName::new(name).ok()?;
        lock(&self.0).get(&name).cloned()
    }
}

impl Names for FakeNames {
    fn claim<'a>(
        &'a self,
        name: &'a WorkloadName,
        node: &'a NodeName,
    ) -> BoxFuture<'a, Result<(), String>> {
        let mut held = lock(&self.0);
        let result = match held.get(name) {
            Some(holder) if holder != node => Err(format!(
                "a workload named {name} already runs on {holder}: names are unique in the cluster"
            )),
            _ => {
                held.insert(name.clone(), node.clone());
                Ok(())
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn release<'a>(&'a self, name: &'a WorkloadName, node: &'a NodeName) -> BoxFuture<'a, ()> {
        let mut held = lock(&self.0);
        if held.get(name) == Some(node) {
            held.remove(name);
        }
        Box::pin(std::future::ready(()))
    }

    fn moved(&self, name: &WorkloadName, node: &NodeName) {
        lock(&self.0).insert(name.clone(), node.clone());
    }
}

/// Peers that answer as the test says; a node not listed does not answer.
#[derive(Default)]
pub struct FakePeers {
    /// Who answers, and what.
    pub alive: Mutex<HashMap<NodeName, RuntimeKind>>,
    /// The node's log.
    pub effects: Effects,
}

impl Peers for FakePeers {
    async fn ping(&self, node: &NodeName) -> Result<Pong, String> {
        self.effects.push(Effect::Ping(node.to_string()));
        match lock(&self.alive).get(node) {
            Some(runtime) => Ok(Pong {
                node: node.clone(),
                runtime: *runtime,
                capacity: Capacity {
                    cores: 2.0,
                    memory_bytes: 4 << 30,
                },
            }),
            None => Err(format!("target node {node} did not answer")),
        }
    }
}

/// A clock that moves only when a test says so. A sleep on it ends when the
/// test has moved time past its end, so a deadline passes exactly when the
/// test wants it to, and no test waits for real time.
#[derive(Clone, Default)]
pub struct ManualClock {
    wall_ms: Arc<AtomicI64>,
    mono_us: Arc<AtomicU64>,
    sleepers: Arc<Mutex<Vec<std::task::Waker>>>,
}

impl ManualClock {
    /// A clock reading `wall_ms`.
    pub fn at(wall_ms: i64) -> Self {
        let c = Self::default();
        c.wall_ms.store(wall_ms, Ordering::SeqCst);
        c
    }

    /// Moves time forward by `d`, waking the sleeps that are over.
    pub fn advance(&self, d: Duration) {
        self.wall_ms.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
        self.mono_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        for w in lock(&self.sleepers).drain(..) {
            w.wake();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_micros(self.mono_us.load(Ordering::SeqCst))
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        let clock = self.clone();
        let until = self.monotonic().saturating_add(d);
        std::future::poll_fn(move |cx| {
            if clock.monotonic() >= until {
                return std::task::Poll::Ready(());
            }
            lock(&clock.sleepers).push(cx.waker().clone());
            std::task::Poll::Pending
        })
    }
}

/// The fence every node of a test shares, in memory, with the same rule as
/// the real one (the first claim holds); it can be taken down, and can let
/// the source win a race on purpose.
#[derive(Clone, Default)]
pub struct FakeFence {
    holders: Arc<Mutex<HashMap<Uuid, Holder>>>,
    down: Arc<AtomicBool>,
    source_first: Arc<AtomicBool>,
}

impl FakeFence {
    /// Who holds `migration` now.
    pub fn holder_of(&self, migration: Uuid) -> Option<Holder> {
        lock(&self.holders).get(&migration).copied()
    }

    /// Makes every call fail (the server is away) or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next claim by a target finds that the source claimed a moment
    /// before (the race the fence exists for).
    pub fn let_the_source_win_the_next_race(&self) {
        self.source_first.store(true, Ordering::SeqCst);
    }

    fn check(&self, action: &'static str, migration: Uuid) -> Result<(), FenceError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(FenceError {
                action,
                migration,
                message: "no responders".into(),
            });
        }
        Ok(())
    }
}

impl Fence for FakeFence {
    async fn claim(&self, migration: Uuid, side: Holder) -> Result<Holder, FenceError> {
        self.check("claim", migration)?;
        let mut holders = lock(&self.holders);
        if side == Holder::Target && self.source_first.swap(false, Ordering::SeqCst) {
            holders.entry(migration).or_insert(Holder::Source);
        }
        Ok(*holders.entry(migration).or_insert(side))
    }

    async fn holder(&self, migration: Uuid) -> Result<Option<Holder>, FenceError> {
        self.check("read", migration)?;
        Ok(self.holder_of(migration))
    }

    async fn release(&self, migration: Uuid) -> Result<(), FenceError> {
        self.check("release", migration)?;
        let mut holders = lock(&self.holders);
        match holders.get(&migration) {
            Some(Holder::Target) | Some(Holder::Released) => {
                holders.insert(migration, Holder::Released);
                Ok(())
            }
            other => Err(FenceError {
                action: "release",
                migration,
                message: format!("the target does not hold it ({other:?})"),
            }),
        }
    }
}
