//! The brain's sled store: its key layout, how it is opened, validated, locked
//! and rebuilt, and the digest that proves two stores hold the same fold.
//!
//! Everything lives in sled's default tree, told apart by a one-byte key
//! prefix, so that one `Batch` (atomic in sled) carries a fold's changes *and*
//! the stream sequences they bring the store up to. The store is only a cache
//! of the log: whenever it is missing, unreadable or of another schema it is
//! moved aside and folded again from sequence 1.
//!
//! | prefix | key after the prefix | value |
//! | --- | --- | --- |
//! | `m` | `schema` | store schema version, u32 BE |
//! | `a` | stream name | last applied stream sequence, u64 BE |
//! | `s` | node, 0x00, earliest `at` ms in the chunk (i64 BE, sign bit flipped), tagged sequence of its first sample (u64 BE) | one node's samples of one fold batch: a [`crate::series::Chunk`] |
//! | `n` | node | [`crate::registry::NodeRecord`] as JSON |
//! | `k` | kind, 0x00, stream sequence (u64 BE) | event id (16 bytes) + subject |
//! | `c` | kind, or `parked` | count, u64 BE |
//! | `p` | stream tag byte, stream sequence (u64 BE) | parked record (subject, reason, raw bytes) |
//! | `M` | `state` | folded model state ([`crate::training::ModelState`]) as JSON |
//! | `M` | `model`, 0x00, version (u64 BE) | a trained [`crate::model::Model`] as JSON (written by the trainer) |
//! | `o` | event id (16 bytes) | a decision waiting to be published ([`crate::outbox`]) |
//!
//! The `M` records are not in the digest: trained models are not a fold of
//! the log (a replay rebuilds the state, not the models; a missing active
//! model is trained again on the next request).
//!
//! Series are chunked because sled's cost is per key: one chunk per node and
//! fold batch keeps a batch to tens of keys, so all of it fits in one atomic
//! `Batch`. Chunks of one node may overlap in time (samples can arrive out of
//! order), so [`Store::samples`] merges them; and since live folding and
//! replay cut batches differently, [`Store::digest`] hashes the samples, not
//! the chunks.

use std::fs::File;
use std::path::{Path, PathBuf};

use loadshift_events::file::FileError;

use sha2::{Digest, Sha256};

/// The layout version this build writes; any other value means "rebuild".
pub const STORE_SCHEMA: u32 = 2;

/// Key prefixes, one per kind of record.
pub mod prefix {
    /// Store metadata (schema version); not part of the digest.
    pub const META: u8 = b'm';
    /// Last applied sequence per stream; a position, not content.
    pub const APPLIED: u8 = b'a';
    /// Per-node time series, in chunks.
    pub const SERIES: u8 = b's';
    /// Node registry.
    pub const NODE: u8 = b'n';
    /// Index of events by kind.
    pub const KIND: u8 = b'k';
    /// Counters.
    pub const COUNTER: u8 = b'c';
    /// Parked (undecodable) messages.
    pub const PARKED: u8 = b'p';
    /// Model records: trained models (written by the trainer, not the fold)
    /// and the folded model state (requests, answers, active version).
    pub const MODEL: u8 = b'M';
    /// Decisions not yet acknowledged by JetStream; not a fold of the log,
    /// so not part of the digest.
    pub const OUTBOX: u8 = b'o';
}

/// The counter key suffix counting parked messages.
pub const PARKED_COUNTER: &str = "parked";

pub use loadshift_events::stream::StreamId;

/// One byte naming `stream` inside keys (parked records).
pub fn stream_tag(stream: StreamId) -> u8 {
    match stream {
        StreamId::Telemetry => b't',
        StreamId::Events => b'e',
    }
}

/// A sequence made unique across both streams (EVENTS gets the top bit),
/// so a sample that arrived through EVENTS can never collide with one from
/// TELEMETRY at the same node and time.
pub fn tagged_seq(stream: StreamId, seq: u64) -> u64 {
    match stream {
        StreamId::Telemetry => seq,
        StreamId::Events => seq | (1 << 63),
    }
}

/// The writes of one fold batch, all of which sled applies atomically.
///
/// Samples are gathered per node while the batch is folded and become one
/// chunk key per node when it is sealed ([`Writes::seal`], or at the latest
/// [`Writes::into_batch`]): sled's cost is per key, and a batch of thousands
/// of samples from tens of nodes is then tens of keys. It belongs to the
/// store (the fold fills it, [`Store::commit`] applies it), so that the store
/// knows nothing of the fold.
#[derive(Debug, Default)]
pub struct Writes {
    batch: sled::Batch,
    keys: usize,
    chunks: std::collections::HashMap<String, crate::series::ChunkBuilder>,
}

impl Writes {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(key, value);
        self.keys += 1;
    }

    /// Adds a sample of `node` that arrived at `tagged_seq` to its chunk.
    pub fn sample(
        &mut self,
        node: &str,
        tagged_seq: u64,
        s: &loadshift_events::Sample,
        occurred_ms: i64,
    ) {
        // Look up by &str first so the common case allocates nothing.
        if let Some(chunk) = self.chunks.get_mut(node) {
            chunk.push(tagged_seq, s, occurred_ms);
        } else {
            let mut chunk = crate::series::ChunkBuilder::new();
            chunk.push(tagged_seq, s, occurred_ms);
            self.chunks.insert(node.to_string(), chunk);
        }
    }

    /// Turns the gathered samples into chunk keys.
    pub fn seal(&mut self) {
        let mut key = Vec::new();
        for (node, chunk) in self.chunks.drain() {
            series_key_into(&mut key, &node, chunk.min_at_ms(), chunk.first_seq());
            self.batch.insert(key.as_slice(), chunk.finish());
            self.keys += 1;
        }
    }

    /// Keys written so far (chunks count once sealed).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The sled batch to apply, samples sealed into chunks.
    pub fn into_batch(mut self) -> sled::Batch {
        self.seal();
        self.batch
    }
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// another process holds the store
    #[error("another loadshift-brain holds the store at {0}; stop it first")]
    Locked(PathBuf),
    /// a file system operation failed
    #[error(transparent)]
    Io(#[from] FileError),
    /// sled failed
    #[error("store at {path}: {source}")]
    Sled {
        /// The store.
        path: PathBuf,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// the store exists but cannot be read as a brain store
    #[error("store at {path} is unreadable ({reason}); the brain rebuilds it on its next start, or run `loadshift-brain replay --from-start`")]
    Unreadable {
        /// The store.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// a record in the store does not decode
    #[error("store record {key} does not decode: {reason}")]
    BadRecord {
        /// The key, escaped.
        key: String,
        /// Why.
        reason: String,
    },
}

/// An exclusive lock on a store path, held for the life of the process.
///
/// It exists because sled's own lock lives inside the store directory, which
/// the brain moves aside when it rebuilds; this lock is a sibling file
/// (`<store>.lock`), so it protects the *path* and tells a second brain or a
/// replay apart from corruption.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock on `store` without waiting.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds it; [`StoreError::Io`]
    /// when the lock file cannot be created.
    pub fn acquire(store: &Path) -> Result<Self, StoreError> {
        let path = sibling(store, "lock");
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(FileError::at("create directory", parent))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(FileError::at("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(store.to_path_buf())),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(FileError::at("lock", &path)(source).into())
            }
        }
    }
}

impl StoreLock {
    /// Like [`StoreLock::acquire`], but retries for up to `patience`: a
    /// `status` reading the store holds the lock for a moment, and a service
    /// starting at that moment must not give up.
    ///
    /// # Errors
    /// As [`StoreLock::acquire`], once `patience` has run out.
    pub fn acquire_within(store: &Path, patience: std::time::Duration) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::acquire(store) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
}

/// `<store>.<suffix>`: files that belong to a store but must survive it
/// being moved aside or swapped.
pub fn sibling(store: &Path, suffix: &str) -> PathBuf {
    let mut name = store
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "brain".into());
    name.push(".");
    name.push(suffix);
    store.with_file_name(name)
}

/// An open brain store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

/// What [`Store::open_or_rebuild`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A valid store of this schema.
    Existing,
    /// A new empty store; the reason says why the old one (if any) was not used.
    Fresh(String),
}

impl Store {
    /// Opens the store at `path`, or, when it is missing, unreadable or of
    /// another schema, moves it aside (to `<store>.broken`) and creates an
    /// empty one the caller folds from sequence 1. The caller holds the
    /// [`StoreLock`].
    ///
    /// # Errors
    /// [`StoreError`] only when even a fresh store cannot be created.
    pub fn open_or_rebuild(path: &Path, _lock: &StoreLock) -> Result<(Self, Opened), StoreError> {
        let problem = if !path.exists() {
            Some("missing (no such directory)".to_string())
        } else {
            match Self::open_existing(path) {
                Ok(store) => return Ok((store, Opened::Existing)),
                Err(StoreError::Unreadable { reason, .. }) => Some(reason),
                Err(e) => return Err(e),
            }
        };
        let reason = problem.unwrap_or_default();
        tracing::warn!(
            "store at {} is {reason}; rebuilding it from the log",
            path.display()
        );
        if path.exists() {
            let aside = sibling(path, "broken");
            if aside.exists() {
                remove_dir(&aside)?;
            }
            std::fs::rename(path, &aside).map_err(FileError::at("move aside", path))?;
        }
        let store = Self::create(path)?;
        Ok((store, Opened::Fresh(reason)))
    }

    /// Creates a new empty store at `path` (which must not hold one) and
    /// stamps it with [`STORE_SCHEMA`].
    ///
    /// # Errors
    /// [`StoreError`] when sled cannot create it.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let db = sled_open(path).map_err(|reason| StoreError::Unreadable {
            path: path.to_path_buf(),
            reason,
        })?;
        let store = Self {
            db,
            path: path.to_path_buf(),
        };
        store
            .db
            .insert(meta_key("schema"), &STORE_SCHEMA.to_be_bytes())
            .map_err(|e| store.sled(e))?;
        store.flush()?;
        Ok(store)
    }

    /// Opens an existing store and checks its schema, without repairing
    /// anything (what `status` wants).
    ///
    /// # Errors
    /// [`StoreError::Unreadable`] with the reason when sled fails to open it
    /// or its schema marker is missing or different.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        let unreadable = |reason: String| StoreError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_dir() {
            return Err(unreadable("missing (no such directory)".into()));
        }
        let db = sled_open(path).map_err(|e| unreadable(format!("corrupt ({e})")))?;
        match db.get(meta_key("schema")) {
            Ok(Some(v)) if v.as_ref() == STORE_SCHEMA.to_be_bytes() => Ok(Self {
                db,
                path: path.to_path_buf(),
            }),
            Ok(Some(v)) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(|b| u32::from_be_bytes(b).to_string())
                    .unwrap_or_else(|_| format!("{:?}", v.as_ref()));
                Err(unreadable(format!(
                    "old (store schema {found}, this build uses {STORE_SCHEMA})"
                )))
            }
            Ok(None) => Err(unreadable("corrupt (no schema marker)".into())),
            Err(e) => Err(unreadable(format!("corrupt ({e})"))),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sled handle, for folding and scanning.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything applied so far durable.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot write.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled(e))
    }

    /// Writes one fold batch as one atomic sled `Batch` (the changes and
    /// the applied sequences they bring the store to, together), then
    /// flushes, so that everything is on disk before any ack is sent.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot write.
    pub fn commit(&self, writes: Writes) -> Result<(), StoreError> {
        self.db
            .apply_batch(writes.into_batch())
            .map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The last applied sequence of `stream` (0: nothing yet).
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be read.
    pub fn applied(&self, stream: StreamId) -> Result<u64, StoreError> {
        let key = applied_key(stream);
        match self.db.get(&key).map_err(|e| self.sled(e))? {
            None => Ok(0),
            Some(v) => read_u64(&key, &v),
        }
    }

    /// Every record under `prefix`, in key order.
    pub fn scan(
        &self,
        prefix: u8,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        self.db
            .scan_prefix([prefix])
            .map(move |r| r.map_err(|e| self.sled(e)))
    }

    /// SHA-256 over everything the fold produced, as content: registry,
    /// kind index, counters and parked records key by key, then each node's
    /// samples in stream-sequence order, whatever chunks they sit in.
    /// Metadata and applied positions are left out. Two stores folded from
    /// the same log have the same digest even though live folding and replay
    /// cut batches (and so chunks) differently; that is how a replay is
    /// checked against a live-built store.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or a chunk does not decode.
    pub fn digest(&self) -> Result<String, StoreError> {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        fn hash_node(h: &mut Sha256, node: &[u8], chunks: &[sled::IVec]) -> Result<(), StoreError> {
            let mut entries = Vec::new();
            for v in chunks {
                entries.extend(chunk_entries(node, v)?);
            }
            entries.sort_unstable_by_key(|e| e.tagged_seq);
            field(h, node);
            h.update((entries.len() as u64).to_be_bytes());
            for e in entries {
                h.update(e.tagged_seq.to_be_bytes());
                h.update(e.at_ms.to_be_bytes());
                field(h, e.record);
            }
            Ok(())
        }
        let mut h = Sha256::new();
        for prefix in [prefix::COUNTER, prefix::KIND, prefix::NODE, prefix::PARKED] {
            for item in self.scan(prefix) {
                let (k, v) = item?;
                field(&mut h, &k);
                field(&mut h, &v);
            }
        }
        // Chunk keys sort by node first, so each node's chunks are adjacent.
        let mut node: Option<Vec<u8>> = None;
        let mut chunks: Vec<sled::IVec> = Vec::new();
        for item in self.scan(prefix::SERIES) {
            let (k, v) = item?;
            let Some((name, _, _)) = parse_series_key(&k) else {
                return Err(bad_key(&k, "not a series chunk key"));
            };
            if node.as_deref() != Some(name.as_bytes()) {
                if let Some(prev) = node.take() {
                    hash_node(&mut h, &prev, &chunks)?;
                    chunks.clear();
                }
                node = Some(name.as_bytes().to_vec());
            }
            chunks.push(v);
        }
        if let Some(prev) = node {
            hash_node(&mut h, &prev, &chunks)?;
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `node`'s samples with `from_ms <= at < to_ms`, in time order (ties by
    /// tagged stream sequence), each with the tagged sequence it arrived at.
    ///
    /// Chunks are keyed by their earliest sample, so every chunk keyed at or
    /// after `to_ms` is out of range; earlier ones are skipped undecoded when
    /// their latest sample is before `from_ms`. The rest are decoded, filtered
    /// and merged, since one node's chunks overlap when samples arrive out of
    /// time order.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or a chunk does not decode.
    pub fn samples(
        &self,
        node: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(u64, crate::series::Point)>, StoreError> {
        let mut out = Vec::new();
        if from_ms >= to_ms {
            return Ok(out);
        }
        let lo = series_node_prefix(node);
        let mut hi = Vec::new();
        series_key_into(&mut hi, node, to_ms, 0);
        for item in self.db.range(lo..hi) {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let chunk = crate::series::Chunk::parse(&v).map_err(|e| bad_key(&k, e))?;
            if chunk.max_at_ms < from_ms {
                continue;
            }
            for e in chunk.entries().map_err(|e| bad_key(&k, e))? {
                if (from_ms..to_ms).contains(&e.at_ms) {
                    out.push((e.tagged_seq, e.decode().map_err(|e| bad_key(&k, e))?));
                }
            }
        }
        out.sort_by_key(|(seq, p)| (p.sample.at.timestamp_millis(), *seq));
        Ok(out)
    }

    /// How many samples the series hold, over all nodes and chunks.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or a chunk does not decode.
    pub fn sample_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.scan(prefix::SERIES) {
            let (k, v) = item?;
            n += u64::from(
                crate::series::Chunk::parse(&v)
                    .map_err(|e| bad_key(&k, e))?
                    .count,
            );
        }
        Ok(n)
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }
}

/// Opens sled, turning a panic inside sled (it has a few on corrupt files)
/// into an error, since the brain must rebuild rather than die.
fn sled_open(path: &Path) -> Result<sled::Db, String> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(256 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .segment_size(8 * 1024 * 1024)
        .flush_every_ms(None);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "sled panicked while opening it: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message")
        )),
    }
}

/// Removes a directory tree.
///
/// # Errors
/// [`StoreError::Io`].
pub fn remove_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::remove_dir_all(path).map_err(|e| FileError::at("remove", path)(e).into())
}

/// `m<name>`.
pub fn meta_key(name: &str) -> Vec<u8> {
    prefixed(prefix::META, name.as_bytes())
}

/// `a<stream name>`.
pub fn applied_key(stream: StreamId) -> Vec<u8> {
    prefixed(prefix::APPLIED, stream.name().as_bytes())
}

/// `n<node>`.
pub fn node_key(node: &str) -> Vec<u8> {
    prefixed(prefix::NODE, node.as_bytes())
}

/// `c<name>`.
pub fn counter_key(name: &str) -> Vec<u8> {
    prefixed(prefix::COUNTER, name.as_bytes())
}

/// `k<kind>\0<seq>`.
pub fn kind_key(kind: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + kind.len() + 9);
    k.push(prefix::KIND);
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `p<stream tag><seq>`.
pub fn parked_key(stream: StreamId, seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = prefix::PARKED;
    k[1] = stream_tag(stream);
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Milliseconds as an order-preserving big-endian key part: the sign bit is
/// flipped so times before 1970 still sort before later ones.
pub fn time_key_part(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Writes `s<node>\0<at><tagged seq>` into `out` (cleared first): the key
/// of `node`'s chunk whose earliest sample is at `at_ms` and whose first
/// sample arrived at `tagged_seq`.
pub fn series_key_into(out: &mut Vec<u8>, node: &str, at_ms: i64, tagged_seq: u64) {
    out.clear();
    out.push(prefix::SERIES);
    out.extend_from_slice(node.as_bytes());
    out.push(0);
    out.extend_from_slice(&time_key_part(at_ms));
    out.extend_from_slice(&tagged_seq.to_be_bytes());
}

/// `s<node>\0`: every chunk of `node`, and no other node's.
pub fn series_node_prefix(node: &str) -> Vec<u8> {
    let mut k = prefixed(prefix::SERIES, node.as_bytes());
    k.push(0);
    k
}

/// Splits a chunk key into node, earliest `at` ms and first tagged sequence.
pub fn parse_series_key(key: &[u8]) -> Option<(&str, i64, u64)> {
    let rest = key.strip_prefix(&[prefix::SERIES])?;
    if rest.len() < 17 {
        return None;
    }
    let (node, tail) = rest.split_at(rest.len() - 17);
    let node = std::str::from_utf8(node).ok()?;
    let at = u64::from_be_bytes(tail[1..9].try_into().ok()?) ^ (1 << 63);
    let seq = u64::from_be_bytes(tail[9..17].try_into().ok()?);
    Some((node, at as i64, seq))
}

fn prefixed(p: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(p);
    k.extend_from_slice(rest);
    k
}

fn bad_key(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::BadRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// Every entry of the chunk stored under `node`, with errors naming it.
fn chunk_entries<'a>(
    node: &[u8],
    value: &'a [u8],
) -> Result<Vec<crate::series::Entry<'a>>, StoreError> {
    let bad = |e: crate::series::SeriesError| bad_key(node, format!("a chunk of this node: {e}"));
    crate::series::Chunk::parse(value)
        .and_then(|c| c.entries())
        .map_err(bad)
}

/// Reads a u64 BE value.
///
/// # Errors
/// [`StoreError::BadRecord`] when it is not 8 bytes.
pub fn read_u64(key: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::BadRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("expected 8 bytes, found {}", v.len()),
        })
}
