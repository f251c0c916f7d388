//! Folding: turning one message from the log into changes to the store.
//!
//! [`Fold::fold`] is pure: it decodes a message, updates the in-memory
//! registry, counters and model state, adds its writes to the batch's
//! [`Writes`] (a sample goes into its node's chunk) and returns what it
//! observed ([`Folded::Applied`] carries the decoded event), touching nothing
//! else. The consumer ([`crate::consume`]) commits the writes and hands the
//! observations to live inference and planning; the fold knows neither.
//! [`Fold::finish`] adds the chunks, registry, counters and applied
//! sequences once per batch. The caller commits all of it as one atomic sled
//! `Batch`, so the store never holds a change without the sequence that
//! caused it, nor the sequence without the change. Undecodable messages are
//! parked in the same batch, never dropped.

use std::collections::HashMap;

use loadshift_events::{Envelope, Event, Kind};

use crate::registry::{Capacity, Membership, NodeRecord, Stamp};
use crate::store::{self, prefix, Store, StoreError, StreamId, Writes, PARKED_COUNTER};

/// What happened to one message: the fold's observation, which the caller
/// passes on (to live inference and planning) after the fold.
#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    /// Decoded and folded; the event, for whoever watches the fold.
    Applied(Box<Envelope>),
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

impl Folded {
    /// The kind of event applied, if one was.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Folded::Applied(env) => Some(env.kind()),
            Folded::Parked | Folded::Skipped => None,
        }
    }
}

/// The fold's in-memory state: registry, counters and applied sequences, the
/// same as what the store holds after the last committed batch plus what the
/// current batch adds.
///
/// It exists so that the per-event work touches memory only and the
/// per-node and per-kind records are written once per batch.
#[derive(Debug, Clone, Default)]
pub struct Fold {
    nodes: HashMap<String, NodeEntry>,
    counts: [u64; Kind::ALL.len()],
    parked: u64,
    applied: [u64; 2],
    val_buf: Vec<u8>,
    model: crate::training::ModelState,
    model_dirty: bool,
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Fold {
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
    ) -> Folded {
        if seq <= self.applied[stream.index()] {
            return Folded::Skipped;
        }
        self.applied[stream.index()] = seq;
        match Envelope::from_message(subject, payload) {
            Ok(env) => {
                let kind = env.kind();
                self.apply(batch, stream, seq, subject, &env);
                self.counts[kind_index(kind)] += 1;
                Folded::Applied(Box::new(env))
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
                Folded::Parked
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
            stream: store::stream_tag(stream),
            seq,
        };
        let node = env.node.as_str();
        match &env.event {
            Event::TelemetrySample(s) => {
                batch.sample(node, store::tagged_seq(stream, seq), s, occurred);
                let cap = Capacity {
                    cores: s.cpu.capacity_cores,
                    memory_bytes: s.memory.total_bytes,
                    stamp,
                };
                self.node(node, occurred).sample(occurred, cap);
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

    /// Every node's registry record.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &NodeRecord)> {
        self.nodes.iter().map(|(k, e)| (k.as_str(), &e.record))
    }

    /// How many events of `kind` were folded.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind_index(kind)]
    }

    /// How many messages were parked.
    pub fn parked(&self) -> u64 {
        self.parked
    }
}
