//! The compact binary encoding of samples in the time series, and the chunks
//! that carry them.
//!
//! The fold writes one *chunk* per node and fold batch: a single sled value
//! holding that node's samples of the batch, in stream order. One key per
//! (node, batch) instead of one per sample is what makes the fold fast enough,
//! because sled's cost is per key, not per byte. A chunk is
//!
//! `chunk version u8, count u32, min at ms i64, max at ms i64`, then `count`
//! entries of `at ms i64, tagged stream sequence u64, length u32, record`,
//!
//! little-endian, where a *record* is one sample. Records must be cheap to
//! produce (no JSON, no allocation beyond the chunk's buffer) and small.
//! Record layout, little-endian:
//!
//! `version u8, flags u8, occurred_at ms i64, seq u64, usage f32, capacity f32,
//! used u64, total u64, cores u16, per-core f32 × cores`, then, each only when
//! its flag bit is set: swap (u64 × 2), load (f32 × 3), net (f64 × 2),
//! disk (f64 × 2), processes (u32), psi (mask u8, then f32 per set bit).
//! The sample's `at` is in the entry, not in the record.

use chrono::{DateTime, Utc};
use loadshift_events::telemetry::{Cpu, LoadAverage, Memory, Pressure, Throughput};
use loadshift_events::Sample;

const VERSION: u8 = 1;
const CHUNK_VERSION: u8 = 1;
/// Bytes before a chunk's first entry.
const CHUNK_HEADER: usize = 1 + 4 + 8 + 8;
const SWAP: u8 = 1;
const LOAD: u8 = 2;
const NET: u8 = 4;
const DISK: u8 = 8;
const PROCESSES: u8 = 16;
const PSI: u8 = 32;

/// Why a stored sample does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// the record ends early
    #[error("series record is truncated")]
    Truncated,
    /// the record was written by another encoding version
    #[error("series record version {0} is not {VERSION}")]
    Version(u8),
    /// the chunk was written by another encoding version
    #[error("series chunk version {0} is not {CHUNK_VERSION}")]
    ChunkVersion(u8),
    /// the chunk holds bytes after its last entry
    #[error("series chunk has {0} bytes after its last entry")]
    Trailing(usize),
    /// the time in the key is out of range
    #[error("series time {0} ms is out of range")]
    Time(i64),
}

/// A sample read back from the series, with the envelope time it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When the emitting agent published it (the envelope's `occurred_at`).
    pub occurred_at_ms: i64,
    /// The sample (its `at` comes from the key).
    pub sample: Sample,
}

/// Writes the record of `s` into `out` (cleared first).
pub fn encode_into(out: &mut Vec<u8>, s: &Sample, occurred_at_ms: i64) {
    out.clear();
    encode_append(out, s, occurred_at_ms);
}

/// Appends the record of `s` to `out`.
fn encode_append(out: &mut Vec<u8>, s: &Sample, occurred_at_ms: i64) {
    let mut flags = 0u8;
    flags |= if s.swap.is_some() { SWAP } else { 0 };
    flags |= if s.load.is_some() { LOAD } else { 0 };
    flags |= if s.net.is_some() { NET } else { 0 };
    flags |= if s.disk.is_some() { DISK } else { 0 };
    flags |= if s.processes.is_some() { PROCESSES } else { 0 };
    flags |= if s.psi.is_some() { PSI } else { 0 };
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&occurred_at_ms.to_le_bytes());
    out.extend_from_slice(&s.seq.to_le_bytes());
    out.extend_from_slice(&s.cpu.usage_pct.to_le_bytes());
    out.extend_from_slice(&s.cpu.capacity_cores.to_le_bytes());
    out.extend_from_slice(&s.memory.used_bytes.to_le_bytes());
    out.extend_from_slice(&s.memory.total_bytes.to_le_bytes());
    let cores = s.cpu.per_core_pct.len().min(u16::MAX as usize);
    out.extend_from_slice(&(cores as u16).to_le_bytes());
    for c in &s.cpu.per_core_pct[..cores] {
        out.extend_from_slice(&c.to_le_bytes());
    }
    if let Some(m) = s.swap {
        out.extend_from_slice(&m.used_bytes.to_le_bytes());
        out.extend_from_slice(&m.total_bytes.to_le_bytes());
    }
    if let Some(l) = s.load {
        for v in [l.one, l.five, l.fifteen] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for t in [s.net, s.disk].into_iter().flatten() {
        out.extend_from_slice(&t.in_bps.to_le_bytes());
        out.extend_from_slice(&t.out_bps.to_le_bytes());
    }
    if let Some(p) = s.processes {
        out.extend_from_slice(&p.to_le_bytes());
    }
    if let Some(p) = s.psi {
        let fields = [
            p.cpu_some,
            p.memory_some,
            p.memory_full,
            p.io_some,
            p.io_full,
        ];
        let mut mask = 0u8;
        for (i, f) in fields.iter().enumerate() {
            if f.is_some() {
                mask |= 1 << i;
            }
        }
        out.push(mask);
        for v in fields.into_iter().flatten() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

/// One reader per number type, each the type's little-endian bytes.
macro_rules! little_endian_readers {
    ($($t:ident),*) => {
        $(
            fn $t(&mut self) -> Result<$t, SeriesError> {
                self.take().map($t::from_le_bytes)
            }
        )*
    };
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SeriesError> {
        if self.0.len() < N {
            return Err(SeriesError::Truncated);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().map_err(|_| SeriesError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, SeriesError> {
        Ok(self.take::<1>()?[0])
    }
    little_endian_readers!(u16, u32, u64, i64, f32, f64);
    fn throughput(&mut self) -> Result<Throughput, SeriesError> {
        Ok(Throughput {
            in_bps: self.f64()?,
            out_bps: self.f64()?,
        })
    }
}

/// Decodes a stored sample whose key said `at_ms`.
///
/// # Errors
/// [`SeriesError`] when the bytes are not a record this build wrote.
pub fn decode(at_ms: i64, bytes: &[u8]) -> Result<Point, SeriesError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(SeriesError::Version(version));
    }
    let flags = r.u8()?;
    let occurred_at_ms = r.i64()?;
    let seq = r.u64()?;
    let usage_pct = r.f32()?;
    let capacity_cores = r.f32()?;
    let memory = Memory {
        used_bytes: r.u64()?,
        total_bytes: r.u64()?,
    };
    let cores = r.u16()?;
    let per_core_pct = (0..cores).map(|_| r.f32()).collect::<Result<_, _>>()?;
    let swap = if flags & SWAP != 0 {
        Some(Memory {
            used_bytes: r.u64()?,
            total_bytes: r.u64()?,
        })
    } else {
        None
    };
    let load = if flags & LOAD != 0 {
        Some(LoadAverage {
            one: r.f32()?,
            five: r.f32()?,
            fifteen: r.f32()?,
        })
    } else {
        None
    };
    let net = (flags & NET != 0).then(|| r.throughput()).transpose()?;
    let disk = (flags & DISK != 0).then(|| r.throughput()).transpose()?;
    let processes = (flags & PROCESSES != 0).then(|| r.u32()).transpose()?;
    let psi = if flags & PSI != 0 {
        let mask = r.u8()?;
        let mut f = [None; 5];
        for (i, slot) in f.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *slot = Some(r.f32()?);
            }
        }
        Some(Pressure {
            cpu_some: f[0],
            memory_some: f[1],
            memory_full: f[2],
            io_some: f[3],
            io_full: f[4],
        })
    } else {
        None
    };
    let at = DateTime::<Utc>::from_timestamp_millis(at_ms).ok_or(SeriesError::Time(at_ms))?;
    Ok(Point {
        occurred_at_ms,
        sample: Sample {
            at,
            seq,
            cpu: Cpu {
                usage_pct,
                capacity_cores,
                per_core_pct,
            },
            memory,
            swap,
            load,
            net,
            disk,
            processes,
            psi,
        },
    })
}

/// One node's samples of one fold batch, being assembled.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    bytes: Vec<u8>,
    count: u32,
    min_at_ms: i64,
    max_at_ms: i64,
    first_seq: u64,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkBuilder {
    /// An empty chunk.
    pub fn new() -> Self {
        Self {
            bytes: vec![0; CHUNK_HEADER],
            count: 0,
            min_at_ms: i64::MAX,
            max_at_ms: i64::MIN,
            first_seq: 0,
        }
    }

    /// Whether no sample was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Samples pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Earliest sample time, ms (the chunk's key time).
    pub fn min_at_ms(&self) -> i64 {
        self.min_at_ms
    }

    /// Tagged stream sequence of the first sample pushed (the chunk's key
    /// tie-breaker: it belongs to this chunk alone).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Appends a sample that arrived at `tagged_seq`.
    pub fn push(&mut self, tagged_seq: u64, s: &Sample, occurred_at_ms: i64) {
        let at_ms = s.at.timestamp_millis();
        if self.count == 0 {
            self.first_seq = tagged_seq;
        }
        self.count += 1;
        self.min_at_ms = self.min_at_ms.min(at_ms);
        self.max_at_ms = self.max_at_ms.max(at_ms);
        self.bytes.extend_from_slice(&at_ms.to_le_bytes());
        self.bytes.extend_from_slice(&tagged_seq.to_le_bytes());
        let len_at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        encode_append(&mut self.bytes, s, occurred_at_ms);
        let len = (self.bytes.len() - len_at - 4) as u32;
        self.bytes[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// The finished chunk's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[0] = CHUNK_VERSION;
        self.bytes[1..5].copy_from_slice(&self.count.to_le_bytes());
        self.bytes[5..13].copy_from_slice(&self.min_at_ms.to_le_bytes());
        self.bytes[13..21].copy_from_slice(&self.max_at_ms.to_le_bytes());
        self.bytes
    }
}

/// A stored chunk, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Samples it holds.
    pub count: u32,
    /// Earliest sample time, ms.
    pub min_at_ms: i64,
    /// Latest sample time, ms (lets a range scan skip the chunk undecoded).
    pub max_at_ms: i64,
    entries: &'a [u8],
}

/// One sample of a chunk, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The sample's `at`, ms.
    pub at_ms: i64,
    /// The stream sequence it arrived at, tagged by stream
    /// ([`crate::store::StreamId::tagged_seq`]).
    pub tagged_seq: u64,
    /// Its record.
    pub record: &'a [u8],
}

impl Entry<'_> {
    /// Decodes the sample.
    ///
    /// # Errors
    /// [`SeriesError`] when the record does not decode.
    pub fn decode(&self) -> Result<Point, SeriesError> {
        decode(self.at_ms, self.record)
    }
}

impl<'a> Chunk<'a> {
    /// Reads a chunk's header.
    ///
    /// # Errors
    /// [`SeriesError`] when it is not a chunk this build wrote.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SeriesError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != CHUNK_VERSION {
            return Err(SeriesError::ChunkVersion(version));
        }
        Ok(Self {
            count: r.u32()?,
            min_at_ms: r.i64()?,
            max_at_ms: r.i64()?,
            entries: r.0,
        })
    }

    /// Its entries, in the order they were folded (stream order).
    ///
    /// # Errors
    /// [`SeriesError`] when an entry is cut short or bytes are left over.
    pub fn entries(&self) -> Result<Vec<Entry<'a>>, SeriesError> {
        let mut out = Vec::with_capacity(self.count as usize);
        let mut r = Reader(self.entries);
        for _ in 0..self.count {
            let at_ms = r.i64()?;
            let tagged_seq = r.u64()?;
            let len = r.u32()? as usize;
            if r.0.len() < len {
                return Err(SeriesError::Truncated);
            }
            let (record, rest) = r.0.split_at(len);
            r.0 = rest;
            out.push(Entry {
                at_ms,
                tagged_seq,
                record,
            });
        }
        if !r.0.is_empty() {
            return Err(SeriesError::Trailing(r.0.len()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_full_and_sparse_samples() {
        let at: DateTime<Utc> = "2024-05-01T10:00:00.123Z".parse().unwrap();
        let full = Sample {
            at,
            seq: 9,
            cpu: Cpu {
                usage_pct: 12.5,
                capacity_cores: 1.5,
                per_core_pct: vec![1.0, 2.0],
            },
            memory: Memory {
                used_bytes: 5,
                total_bytes: 10,
            },
            swap: Some(Memory {
                used_bytes: 1,
                total_bytes: 2,
            }),
            load: Some(LoadAverage {
                one: 0.1,
                five: 0.2,
                fifteen: 0.3,
            }),
            net: Some(Throughput {
                in_bps: 1.0,
                out_bps: 2.0,
            }),
            disk: None,
            processes: Some(3),
            psi: Some(Pressure {
                cpu_some: Some(4.0),
                io_full: Some(5.0),
                ..Default::default()
            }),
        };
        let mut sparse = full.clone();
        sparse.swap = None;
        sparse.load = None;
        sparse.net = None;
        sparse.processes = None;
        sparse.psi = None;
        sparse.cpu.per_core_pct.clear();
        let mut buf = Vec::new();
        for s in [full, sparse] {
            encode_into(&mut buf, &s, 77);
            let p = decode(at.timestamp_millis(), &buf).unwrap();
            assert_eq!(p.sample, s);
            assert_eq!(p.occurred_at_ms, 77);
            assert!(decode(0, &buf[..buf.len() - 1]).is_err());
        }
    }

    #[test]
    fn chunks_keep_entries_in_push_order_with_their_bounds() {
        let mut c = ChunkBuilder::new();
        assert!(c.is_empty());
        let base = 1_700_000_000_000i64;
        for (seq, at) in [(7u64, base + 30), (9, base + 10), (12, base + 20)] {
            let mut s = crate_sample(at);
            s.seq = seq;
            c.push(seq, &s, at + 1);
        }
        assert_eq!((c.len(), c.min_at_ms(), c.first_seq()), (3, base + 10, 7));
        let bytes = c.finish();
        let chunk = Chunk::parse(&bytes).unwrap();
        assert_eq!(
            (chunk.count, chunk.min_at_ms, chunk.max_at_ms),
            (3, base + 10, base + 30)
        );
        let entries = chunk.entries().unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.tagged_seq, e.at_ms)).collect();
        assert_eq!(got, vec![(7, base + 30), (9, base + 10), (12, base + 20)]);
        let p = entries[1].decode().unwrap();
        assert_eq!((p.sample.seq, p.occurred_at_ms), (9, base + 11));
        assert_eq!(p.sample.at.timestamp_millis(), base + 10);
        assert!(Chunk::parse(&bytes[..bytes.len() - 1])
            .unwrap()
            .entries()
            .is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Chunk::parse(&longer).unwrap().entries().unwrap_err(),
            SeriesError::Trailing(1)
        );
    }

    fn crate_sample(at_ms: i64) -> Sample {
        Sample::new(
            DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap(),
            0,
            Cpu {
                usage_pct: 1.0,
                capacity_cores: 2.0,
                per_core_pct: vec![3.0],
            },
            Memory {
                used_bytes: 1,
                total_bytes: 2,
            },
        )
    }
}
