//! Folding: turning one message from the log into changes to the store.
//!
//! [`Folder::fold`] is pure with respect to the outside world: it decodes a
//! message, updates the in-memory registry and counters, and adds its writes
//! to the batch's [`Writes`] (a sample goes into its node's chunk);
//! [`Folder::finish`] adds the chunks, registry, counters and applied
//! sequences once per batch. The caller commits all of it as one atomic sled
//! `Batch`, so the store never holds a change without the sequence that
//! caused it, nor the sequence without the change. Undecodable messages are
//! parked in the same batch, never dropped.

use std::collections::{BTreeMap, HashMap};

use loadshift_events::{Envelope, Event, Kind, Sample};

use crate::registry::{Capacity, Membership, NodeRecord, Stamp};
use crate::series::ChunkBuilder;
use crate::status::Snapshot;
use crate::store::{self, prefix, Store, StoreError, StreamId, PARKED_COUNTER};

/// The writes of one fold batch, all of which sled applies atomically.
///
/// Samples are gathered per node while the batch is folded and become one
/// chunk key per node when it is sealed ([`Folder::finish`], or at the latest
/// [`Writes::into_batch`]): sled's cost is per key, and a batch of thousands
/// of samples from tens of nodes is then tens of keys.
#[derive(Debug, Default)]
pub struct Writes {
    batch: sled::Batch,
    keys: usize,
    chunks: HashMap<String, ChunkBuilder>,
}

impl Writes {
    /// Adds one key to the batch (the outbox queues decisions this way).
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(key, value);
        self.keys += 1;
    }

    fn sample(&mut self, node: &str, tagged_seq: u64, s: &Sample, occurred_ms: i64) {
        // Look up by &str first so the common case allocates nothing.
        if let Some(chunk) = self.chunks.get_mut(node) {
            chunk.push(tagged_seq, s, occurred_ms);
        } else {
            let mut chunk = ChunkBuilder::new();
            chunk.push(tagged_seq, s, occurred_ms);
            self.chunks.insert(node.to_string(), chunk);
        }
    }

    /// Turns the gathered samples into chunk keys.
    fn seal(&mut self) {
        let mut key = Vec::new();
        for (node, chunk) in self.chunks.drain() {
            store::series_key_into(&mut key, &node, chunk.min_at_ms(), chunk.first_seq());
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

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded and folded.
    Applied(Kind),
    /// Undecodable: stored under the parked prefix and counted.
    Parked,
    /// At or below the applied sequence: already in the store (a redelivery).
    Skipped,
}

#[derive(Debug, Clone)]
struct NodeEntry {
    record: NodeRecord,
    dirty: bool,
}

/// The fold's in-memory state: registry, counters and applied sequences, the
/// same as what the store holds after the last committed batch plus what the
/// current batch adds.
///
/// It exists so that the per-event work touches memory only and the
/// per-node and per-kind records are written once per batch.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    nodes: HashMap<String, NodeEntry>,
    counts: [u64; Kind::ALL.len()],
    parked: u64,
    applied: [u64; 2],
    val_buf: Vec<u8>,
    model: crate::training::ModelState,
    model_dirty: bool,
    live: Option<crate::live::Live>,
    planning: Option<crate::planning::Planning>,
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Folder {
    /// An empty fold (a fresh store).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the state a store holds.
    ///
    /// # Errors
    /// [`StoreError`] when a record cannot be read or decoded.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let mut f = Self::new();
        for item in store.scan(prefix::NODE) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            let record: NodeRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::BadRecord {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?;
            f.nodes.insert(
                name,
                NodeEntry {
                    record,
                    dirty: false,
                },
            );
        }
        for item in store.scan(prefix::COUNTER) {
            let (k, v) = item?;
            let n = store::read_u64(&k, &v)?;
            let name = String::from_utf8_lossy(&k[1..]);
            if name == PARKED_COUNTER {
                f.parked = n;
            } else if let Some(kind) = Kind::parse(&name) {
                f.counts[kind_index(kind)] = n;
            }
        }
        for s in StreamId::ALL {
            f.applied[s.index()] = store.applied(s)?;
        }
        f.model = crate::training::ModelState::load(store)?;
        Ok(f)
    }

    /// Keeps per-node feature windows and predictions up to date as samples
    /// are folded (the service; a replay does not need them).
    pub fn enable_live(&mut self, live: crate::live::Live) {
        self.live = Some(live);
    }

    /// Turns planning on: every folded event feeds the planner, every fresh
    /// prediction may become a decision.
    pub fn enable_planning(&mut self, planning: crate::planning::Planning) {
        self.planning = Some(planning);
    }

    /// Turns planning off (at shutdown), dropping the planner's outbox.
    pub fn disable_planning(&mut self) {
        self.planning = None;
    }

    /// The live windows and predictions, when enabled.
    pub fn live(&self) -> Option<&crate::live::Live> {
        self.live.as_ref()
    }

    /// The folded model state (requests, answers, versions).
    pub fn model_state(&self) -> &crate::training::ModelState {
        &self.model
    }

    /// The last sequence of `stream` folded (committed or in the current batch).
    pub fn applied(&self, stream: StreamId) -> u64 {
        self.applied[stream.index()]
    }

    /// Folds one message of `stream` at sequence `seq` into `batch`.
    pub fn fold(
        &mut self,
        batch: &mut Writes,
        stream: StreamId,
        seq: u64,
        subject: &str,
        payload: &[u8],
    ) -> Outcome {
        if seq <= self.applied[stream.index()] {
            return Outcome::Skipped;
        }
        self.applied[stream.index()] = seq;
        match Envelope::from_message(subject, payload) {
            Ok(env) => {
                let kind = env.kind();
                self.apply(batch, stream, seq, subject, &env);
                self.counts[kind_index(kind)] += 1;
                Outcome::Applied(kind)
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(
                    stream = stream.name(),
                    subject,
                    seq,
                    %reason,
                    "parking a message that does not decode"
                );
                self.val_buf.clear();
                let subj = &subject.as_bytes()[..subject.len().min(u16::MAX as usize)];
                self.val_buf
                    .extend_from_slice(&(subj.len() as u16).to_be_bytes());
                self.val_buf.extend_from_slice(subj);
                self.val_buf
                    .extend_from_slice(&(reason.len() as u32).to_be_bytes());
                self.val_buf.extend_from_slice(reason.as_bytes());
                self.val_buf.extend_from_slice(payload);
                batch.put(&store::parked_key(stream, seq), &self.val_buf);
                self.parked += 1;
                Outcome::Parked
            }
        }
    }

    fn node(&mut self, name: &str, at_ms: i64) -> &mut NodeRecord {
        // Look up by &str first so the common case allocates nothing.
        if !self.nodes.contains_key(name) {
            self.nodes.insert(
                name.to_string(),
                NodeEntry {
                    record: NodeRecord::new(at_ms),
                    dirty: true,
                },
            );
        }
        let entry = self
            .nodes
            .get_mut(name)
            .expect("inserted just above when missing");
        entry.dirty = true;
        entry.record.seen(at_ms);
        &mut entry.record
    }

    fn apply(
        &mut self,
        batch: &mut Writes,
        stream: StreamId,
        seq: u64,
        subject: &str,
        env: &Envelope,
    ) {
        let occurred = env.occurred_at.timestamp_millis();
        let stamp = Stamp {
            at_ms: occurred,
            stream: stream.tag(),
            seq,
        };
        let node = env.node.as_str();
        if let Some(planning) = self.planning.as_mut() {
            planning.observe(env);
        }
        match &env.event {
            Event::TelemetrySample(s) => {
                batch.sample(node, stream.tagged_seq(seq), s, occurred);
                let cap = Capacity {
                    cores: s.cpu.capacity_cores,
                    memory_bytes: s.memory.total_bytes,
                    stamp,
                };
                self.node(node, occurred).sample(occurred, cap);
                if let Some(live) = self.live.as_mut() {
                    if let Some(view) = live.observe(node, s) {
                        if let Some(planning) = self.planning.as_mut() {
                            planning.predicted(&env.node, view, env.occurred_at);
                            // Decided and queued in this same batch.
                            planning.queue_decisions(batch);
                        }
                    }
                }
            }
            Event::NodeJoined(j) => {
                let cap = Capacity {
                    cores: j.capacity_cores,
                    memory_bytes: j.memory_bytes,
                    stamp,
                };
                let rec = self.node(node, occurred);
                rec.declared(cap);
                rec.membership(Membership::Joined, stamp);
            }
            Event::NodeLeft(_) => {
                self.node(node, occurred)
                    .membership(Membership::Left, stamp);
            }
            Event::ModelTrainRequested(_) if stream == StreamId::Events => {
                self.model.requested(seq);
                self.model_dirty = true;
            }
            Event::ModelTrained(t) => {
                self.model.trained(t.version);
                self.model_dirty = true;
            }
            Event::ModelActivated(a) => {
                self.model.activated(a.version);
                self.model_dirty = true;
            }
            Event::WorkloadUsage(u) => {
                if let Some(live) = self.live.as_mut() {
                    live.workloads(node, u.workloads.len() as u32);
                }
            }
            // Workload and migration events are counted and indexed below;
            // the registry only follows a node's own life-cycle.
            _ => {}
        }
        if stream == StreamId::Events {
            let mut v = Vec::with_capacity(16 + subject.len());
            v.extend_from_slice(env.id.as_bytes());
            v.extend_from_slice(subject.as_bytes());
            batch.put(&store::kind_key(env.kind().as_str(), seq), &v);
        }
    }

    /// Adds the batch-level records (chunks, changed nodes, counters,
    /// applied sequences) to `batch`; call once before committing it.
    pub fn finish(&mut self, batch: &mut Writes) {
        batch.seal();
        for (name, entry) in self.nodes.iter_mut().filter(|(_, e)| e.dirty) {
            entry.dirty = false;
            // A NodeRecord is plain numbers; serializing it cannot fail.
            if let Ok(json) = serde_json::to_vec(&entry.record) {
                batch.put(&store::node_key(name), &json);
            }
        }
        for &kind in Kind::ALL {
            let n = self.counts[kind_index(kind)];
            if n > 0 {
                batch.put(&store::counter_key(kind.as_str()), &n.to_be_bytes());
            }
        }
        if self.model_dirty {
            self.model_dirty = false;
            batch.put(&crate::training::ModelState::key(), &self.model.to_json());
        }
        if self.parked > 0 {
            batch.put(
                &store::counter_key(PARKED_COUNTER),
                &self.parked.to_be_bytes(),
            );
        }
        for s in StreamId::ALL {
            batch.put(
                &store::applied_key(s),
                &self.applied[s.index()].to_be_bytes(),
            );
        }
    }

    /// What `status` shows, as of this fold.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self
                .nodes
                .iter()
                .map(|(k, e)| (k.clone(), e.record.clone()))
                .collect(),
            kinds: Kind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), self.counts[kind_index(*k)]))
                .collect::<BTreeMap<_, _>>(),
            parked: self.parked,
            applied: StreamId::ALL
                .iter()
                .map(|s| (s.name().to_string(), self.applied[s.index()]))
                .collect(),
        }
    }
}
