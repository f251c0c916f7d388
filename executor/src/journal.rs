//! The executor's local journal: every workload it runs and every migration
//! step it took, in sled, so that after a crash it resumes or rolls back
//! instead of guessing.
//!
//! One tree, keys by prefix, so that one `apply_batch` is atomic across them:
//! - `applied`      → last EVENTS stream sequence applied (u64, big-endian)
//! - `speed`        → bytes per second images moved at, remembered from
//!   earlier migrations for the next deadlines (f64, big-endian)
//! - `w/<name>`     → [`WorkloadRecord`] (JSON)
//! - `m/<uuid>`     → [`MigrationRecord`] (JSON)
//! - `o/<u64 BE>`   → an outgoing event (envelope JSON), the outbox
//! - `s/<name>`     → [`StopRecord`] (JSON): a stop asked for and not
//!   finished yet ([`crate::stop`])
//! - `drain`        → [`DrainRecord`] (JSON): the drain this node is under,
//!   absent when it takes work ([`crate::cordon`])
//!
//! The outbox makes "change state and announce it" one atomic write: an event
//! is written with the state change and published afterwards; a crash before
//! the publish republishes it at start, and its id (the `Nats-Msg-Id`) makes
//! the server store it once.

use std::path::{Path, PathBuf};

use loadshift_events::migration::{Mode, Step, StreamedPages, Timings};
use loadshift_events::workload::WorkloadSpec;
use loadshift_events::{Envelope, NodeName, WorkloadName};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cordon::DrainRecord;
use crate::runtime::{Handle, TravellingFile};
use crate::stop::StopRecord;

/// The key of the drain this node is under.
const DRAIN_KEY: &str = "drain";

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// sled failed
    #[error("journal at {path}: {source}")]
    Sled {
        /// The journal's folder.
        path: PathBuf,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// a record could not be encoded or decoded
    #[error("journal record {key}: {source}")]
    Record {
        /// Its key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// A workload this node runs (or ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// Its name.
    pub name: WorkloadName,
    /// What it is.
    pub spec: WorkloadSpec,
    /// How to find it.
    pub handle: Handle,
    /// A migration that has it frozen or in flight, if any.
    pub migrating: Option<Uuid>,
}

/// Which side of a migration this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The workload leaves this node.
    Source,
    /// The workload arrives on this node.
    Target,
}

/// Where a migration stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Source: about to dump (or dumping when the executor died).
    Dumping,
    /// Source: dumped; storing the image.
    Uploading,
    /// Source: image stored, `checkpointed` announced; waiting for the target.
    AwaitingTarget,
    /// Target: fetching and restoring.
    Restoring,
    /// Target: the workload runs here; waiting for the source to clean up.
    Restored,
    /// Over: the workload runs on the target.
    Completed,
    /// Over: the workload runs on the source again (or never stopped).
    RolledBack,
    /// Over: refused before anything happened.
    Refused,
}

impl Phase {
    /// Whether nothing more will happen to this migration here.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Refused)
    }
}

/// One migration as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// The migration's id.
    pub id: Uuid,
    /// Source or target.
    pub role: Role,
    /// Where it stands.
    pub phase: Phase,
    /// The workload.
    pub workload: WorkloadName,
    /// What it is.
    pub spec: WorkloadSpec,
    /// From.
    pub source: NodeName,
    /// To.
    pub target: NodeName,
    /// Where the image is on this node (tmpfs).
    pub images: PathBuf,
    /// The object in the checkpoint store, once uploaded.
    pub object: Option<String>,
    /// Its SHA-256, once known.
    pub sha256: Option<String>,
    /// Its size, once known.
    pub image_bytes: u64,
    /// The workload's files and where they were on the source.
    pub files: Vec<TravellingFile>,
    /// Timings so far.
    pub timings: Timings,
    /// When the request arrived (unix ms), for the total.
    pub requested_at_ms: i64,
    /// When the workload was frozen (unix ms), for the downtime.
    pub frozen_at_ms: Option<i64>,
    /// The step that failed, if one did.
    pub failed_step: Option<Step>,
    /// Source, waiting for the target: when it stops waiting (unix ms).
    #[serde(default)]
    pub deadline_at_ms: Option<i64>,
    /// Nothing more to do about this migration's images: removed (or kept on
    /// purpose, for a workload that runs nowhere). A crash between the end
    /// of a migration and the removal leaves it false, and the sweep on the
    /// service's tick finishes the job.
    #[serde(default)]
    pub images_settled: bool,
    /// How the memory travels: on the source, the mode chosen when the
    /// request arrived (never `auto`); on the target, what `checkpointed`
    /// said. Records from before modes existed were copies.
    #[serde(default = "copy_mode")]
    pub mode: Mode,
    /// Why `mode` is not the one requested, for `completed`.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Streamed mode: what the source's dump sent straight to the target
    /// (source: measured; target: what must have arrived).
    #[serde(default)]
    pub streamed: Option<StreamedPages>,
}

/// The mode of a record written before modes existed.
fn copy_mode() -> Mode {
    Mode::Copy
}

/// The journal. Cloning shares it (sled handles are shared).
#[derive(Clone)]
pub struct Journal {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
}

/// Changes written together, atomically, with the applied sequence.
#[derive(Default)]
pub struct Change {
    batch: sled::Batch,
    outbox: Vec<Envelope>,
    applied: Option<u64>,
    speed: Option<f64>,
    error: Option<JournalError>,
}

impl Change {
    /// A new, empty change.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or replaces) a workload.
    pub fn put_workload(self, w: &WorkloadRecord) -> Self {
        self.record(key::of(key::WORKLOADS, &w.name), w)
    }

    /// Records (or replaces) a stop in progress.
    pub fn put_stop(self, s: &StopRecord) -> Self {
        self.record(key::of(key::STOPS, &s.workload), s)
    }

    /// Records (or replaces) a migration.
    pub fn put_migration(self, m: &MigrationRecord) -> Self {
        self.record(key::of(key::MIGRATIONS, m.id), m)
    }

    /// Forgets a workload (it left this node).
    pub fn remove_workload(mut self, name: &WorkloadName) -> Self {
        self.batch.remove(key::of(key::WORKLOADS, name).as_bytes());
        self
    }

    /// Forgets the stop of `name` (it ended, or left this node).
    pub fn remove_stop(mut self, name: &WorkloadName) -> Self {
        self.batch.remove(key::of(key::STOPS, name).as_bytes());
        self
    }

    /// Records that this node drains (replacing an earlier drain).
    pub fn put_drain(self, d: &DrainRecord) -> Self {
        self.record(DRAIN_KEY.to_string(), d)
    }

    /// Forgets the drain: this node takes work again.
    pub fn remove_drain(mut self) -> Self {
        self.batch.remove(DRAIN_KEY.as_bytes());
        self
    }

    /// Queues an event for publication with this change.
    pub fn publish(mut self, env: Envelope) -> Self {
        self.outbox.push(env);
        self
    }

    /// Queues every event of `envs` (none, one, several) with this change.
    pub fn publish_all(mut self, envs: impl IntoIterator<Item = Envelope>) -> Self {
        self.outbox.extend(envs);
        self
    }

    /// Marks EVENTS sequence `seq` as applied by this change.
    pub fn applied(mut self, seq: u64) -> Self {
        self.applied = Some(seq);
        self
    }

    /// Remembers the speed images moved at (bytes per second).
    pub fn speed(mut self, bytes_per_s: f64) -> Self {
        self.speed = Some(bytes_per_s);
        self
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.batch.insert(key.as_bytes(), bytes),
            Err(source) => self.error = Some(JournalError::Record { key, source }),
        }
    }

    /// [`Self::put`] for the builder methods: records `value` under `key`.
    fn record<T: Serialize>(mut self, key: String, value: &T) -> Self {
        self.put(key, value);
        self
    }
}

/// Where each kind of record lives in the tree: a prefix per kind, then the
/// record's name; written once for the writes and the reads.
mod key {
    /// Workloads, by name.
    pub const WORKLOADS: &str = "w/";
    /// Stops in progress, by workload name.
    pub const STOPS: &str = "s/";
    /// Migrations, by id.
    pub const MIGRATIONS: &str = "m/";

    /// The key of the record `name` of the kind under `prefix`.
    pub fn of(prefix: &str, name: impl std::fmt::Display) -> String {
        format!("{prefix}{name}")
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`.
    ///
    /// # Errors
    /// [`JournalError::Sled`] when sled cannot open it.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let sled_err = |source| JournalError::Sled {
            path: dir.to_path_buf(),
            source,
        };
        let db = sled::open(dir).map_err(sled_err)?;
        let tree = db.open_tree("journal").map_err(sled_err)?;
        Ok(Self {
            db,
            tree,
            path: dir.to_path_buf(),
        })
    }

    fn sled_err(&self) -> impl Fn(sled::Error) -> JournalError + '_ {
        |source| JournalError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes a change atomically and flushes it to disk.
    ///
    /// # Errors
    /// When a record cannot be encoded or sled fails.
    pub fn commit(&self, change: Change) -> Result<(), JournalError> {
        let Change {
            mut batch,
            outbox,
            applied,
            speed,
            error,
        } = change;
        if let Some(e) = error {
            return Err(e);
        }
        if let Some(bps) = speed {
            batch.insert(b"speed".as_slice(), bps.to_be_bytes().as_slice());
        }
        if let Some(seq) = applied {
            batch.insert(b"applied".as_slice(), seq.to_be_bytes().as_slice());
        }
        for env in outbox {
            let id = self.db.generate_id().map_err(self.sled_err())?;
            let bytes = env.to_json().map_err(|source| JournalError::Record {
                key: format!("outbox {}", env.id),
                source,
            })?;
            let mut key = b"o/".to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            batch.insert(key, bytes);
        }
        self.tree.apply_batch(batch).map_err(self.sled_err())?;
        self.tree.flush().map_err(self.sled_err())?;
        Ok(())
    }

    /// The last EVENTS sequence applied (0 when none).
    ///
    /// # Errors
    /// When sled fails.
    pub fn applied(&self) -> Result<u64, JournalError> {
        Ok(self
            .tree
            .get(b"applied")
            .map_err(self.sled_err())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// The speed images moved at on earlier migrations (bytes per second),
    /// if any was measured.
    ///
    /// # Errors
    /// When sled fails.
    pub fn speed(&self) -> Result<Option<f64>, JournalError> {
        Ok(self
            .tree
            .get(b"speed")
            .map_err(self.sled_err())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(f64::from_be_bytes))
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: String) -> Result<Option<T>, JournalError> {
        match self.tree.get(key.as_bytes()).map_err(self.sled_err())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| JournalError::Record { key, source }),
        }
    }

    fn scan<T: for<'de> Deserialize<'de>>(&self, prefix: &str) -> Result<Vec<T>, JournalError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(self.sled_err())?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| JournalError::Record {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// A workload this node runs.
    ///
    /// # Errors
    /// When sled fails or the record is unreadable.
    pub fn workload(&self, name: &WorkloadName) -> Result<Option<WorkloadRecord>, JournalError> {
        self.get(key::of(key::WORKLOADS, name))
    }

    /// Every workload this node runs.
    ///
    /// # Errors
    /// When sled fails or a record is unreadable.
    pub fn workloads(&self) -> Result<Vec<WorkloadRecord>, JournalError> {
        self.scan(key::WORKLOADS)
    }

    /// The drain this node is under, if it drains.
    ///
    /// # Errors
    /// When sled fails or the record is unreadable.
    pub fn drain(&self) -> Result<Option<DrainRecord>, JournalError> {
        self.get(DRAIN_KEY.to_string())
    }

    /// The stop of `name` in progress here, if one is.
    ///
    /// # Errors
    /// When sled fails or the record is unreadable.
    pub fn stop(&self, name: &WorkloadName) -> Result<Option<StopRecord>, JournalError> {
        self.get(key::of(key::STOPS, name))
    }

    /// Every stop in progress here.
    ///
    /// # Errors
    /// When sled fails or a record is unreadable.
    pub fn stops(&self) -> Result<Vec<StopRecord>, JournalError> {
        self.scan(key::STOPS)
    }

    /// A migration this node took part in.
    ///
    /// # Errors
    /// When sled fails or the record is unreadable.
    pub fn migration(&self, id: &Uuid) -> Result<Option<MigrationRecord>, JournalError> {
        self.get(key::of(key::MIGRATIONS, id))
    }

    /// Every migration this node took part in.
    ///
    /// # Errors
    /// When sled fails or a record is unreadable.
    pub fn migrations(&self) -> Result<Vec<MigrationRecord>, JournalError> {
        self.scan(key::MIGRATIONS)
    }

    /// The events waiting to be published, oldest first, with their keys.
    ///
    /// # Errors
    /// When sled fails.
    pub fn outbox(&self) -> Result<Vec<(sled::IVec, Vec<u8>)>, JournalError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"o/") {
            let (k, v) = kv.map_err(self.sled_err())?;
            out.push((k, v.to_vec()));
        }
        Ok(out)
    }

    /// Drops a published event from the outbox.
    ///
    /// # Errors
    /// When sled fails.
    pub fn outbox_done(&self, key: &[u8]) -> Result<(), JournalError> {
        self.tree.remove(key).map_err(self.sled_err())?;
        self.tree.flush().map_err(self.sled_err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use loadshift_events::Event;

    use super::*;

    fn workload(name: &str) -> WorkloadRecord {
        WorkloadRecord {
            name: WorkloadName::new(name).unwrap(),
            spec: WorkloadSpec::process(vec!["sleep".into(), "1000".into()]),
            handle: Handle::Process {
                pid: 42,
                start_ticks: 7,
            },
            migrating: None,
        }
    }

    fn migration(id: Uuid, phase: Phase) -> MigrationRecord {
        MigrationRecord {
            id,
            role: Role::Source,
            phase,
            workload: WorkloadName::new("w").unwrap(),
            spec: workload("w").spec,
            source: NodeName::new("node2").unwrap(),
            target: NodeName::new("node3").unwrap(),
            images: PathBuf::from("/dev/shm/x"),
            object: None,
            sha256: None,
            image_bytes: 0,
            files: vec![],
            timings: Timings::default(),
            requested_at_ms: 1,
            frozen_at_ms: None,
            failed_step: None,
            deadline_at_ms: None,
            images_settled: false,
            mode: Mode::Copy,
            fallback: None,
            streamed: None,
        }
    }

    fn exited(name: &str) -> Envelope {
        Envelope::new(
            NodeName::new("node2").unwrap(),
            Event::WorkloadExited(loadshift_events::workload::Exited {
                workload: WorkloadName::new(name).unwrap(),
                code: Some(0),
                signal: None,
                reason: Default::default(),
            }),
        )
    }

    #[test]
    fn a_new_journal_has_applied_nothing_and_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.applied().unwrap(), 0);
        assert!(j.workloads().unwrap().is_empty());
        assert!(j.migrations().unwrap().is_empty());
        assert!(j.outbox().unwrap().is_empty());
    }

    #[test]
    fn a_change_writes_state_events_and_sequence_together() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = Uuid::now_v7();
        j.commit(
            Change::new()
                .put_workload(&workload("a"))
                .put_migration(&migration(id, Phase::Dumping))
                .publish(exited("a"))
                .applied(5),
        )
        .unwrap();
        assert_eq!(j.applied().unwrap(), 5);
        assert_eq!(
            j.workload(&workload("a").name).unwrap(),
            Some(workload("a"))
        );
        assert_eq!(
            j.migration(&id).unwrap().map(|m| m.phase),
            Some(Phase::Dumping)
        );
        assert_eq!(j.outbox().unwrap().len(), 1);
    }

    #[test]
    fn a_change_without_a_sequence_keeps_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.commit(Change::new().applied(9)).unwrap();
        j.commit(Change::new().put_workload(&workload("a")))
            .unwrap();
        assert_eq!(j.applied().unwrap(), 9);
    }

    #[test]
    fn the_outbox_keeps_order_until_each_event_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let (first, second) = (exited("a"), exited("b"));
        j.commit(Change::new().publish(first.clone())).unwrap();
        j.commit(Change::new().publish(second.clone())).unwrap();
        let pending = j.outbox().unwrap();
        let ids: Vec<Uuid> = pending
            .iter()
            .map(|(_, b)| Envelope::from_json(b).unwrap().id)
            .collect();
        assert_eq!(ids, vec![first.id, second.id]);
        j.outbox_done(&pending[0].0).unwrap();
        let left = j.outbox().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(Envelope::from_json(&left[0].1).unwrap().id, second.id);
    }

    #[test]
    fn what_was_committed_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::now_v7();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.commit(
                Change::new()
                    .put_migration(&migration(id, Phase::AwaitingTarget))
                    .publish(exited("a"))
                    .applied(3),
            )
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.applied().unwrap(), 3);
        assert_eq!(
            j.migration(&id).unwrap().map(|m| m.phase),
            Some(Phase::AwaitingTarget)
        );
        assert_eq!(j.outbox().unwrap().len(), 1, "still to be published");
    }

    #[test]
    fn the_measured_speed_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.speed().unwrap(), None);
        j.commit(Change::new().speed(123.5)).unwrap();
        assert_eq!(j.speed().unwrap(), Some(123.5));
    }

    #[test]
    fn a_record_written_before_deadlines_existed_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = Uuid::now_v7();
        let mut old = serde_json::to_value(migration(id, Phase::AwaitingTarget)).unwrap();
        old.as_object_mut().unwrap().remove("deadline_at_ms");
        j.tree
            .insert(format!("m/{id}"), serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert_eq!(j.migration(&id).unwrap().unwrap().deadline_at_ms, None);
    }

    #[test]
    fn a_workload_that_left_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.commit(Change::new().put_workload(&workload("a")))
            .unwrap();
        j.commit(Change::new().remove_workload(&workload("a").name))
            .unwrap();
        assert_eq!(j.workload(&workload("a").name).unwrap(), None);
    }

    #[test]
    fn a_drain_is_kept_with_its_sequence_until_the_node_is_uncordoned() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.drain().unwrap(), None);
        let d = DrainRecord {
            since: chrono::Utc::now(),
            requested_by: "alice".into(),
            reason: String::new(),
        };
        j.commit(Change::new().put_drain(&d).applied(7)).unwrap();
        assert_eq!((j.drain().unwrap(), j.applied().unwrap()), (Some(d), 7));
        j.commit(Change::new().remove_drain().applied(8)).unwrap();
        assert_eq!((j.drain().unwrap(), j.applied().unwrap()), (None, 8));
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.tree.insert(b"w/broken", b"{not json".as_slice()).unwrap();
        let err = j
            .workload(&WorkloadName::new("broken").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("w/broken"), "{err}");
        assert!(j.workloads().is_err());
    }

    #[test]
    fn only_completed_rolled_back_and_refused_are_final() {
        let finals: Vec<Phase> = [
            Phase::Dumping,
            Phase::Uploading,
            Phase::AwaitingTarget,
            Phase::Restoring,
            Phase::Restored,
            Phase::Completed,
            Phase::RolledBack,
            Phase::Refused,
        ]
        .into_iter()
        .filter(|p| p.is_final())
        .collect();
        assert_eq!(
            finals,
            vec![Phase::Completed, Phase::RolledBack, Phase::Refused]
        );
    }
}
