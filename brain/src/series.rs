//! The compact binary encoding of one sample in the time series.
//!
//! The fold writes one of these per telemetry event, so it must be cheap to
//! produce (no JSON, no allocation beyond the caller's reused buffer) and
//! small; the time (`at`) lives in the key, not here. Layout, little-endian:
//!
//! `version u8, flags u8, occurred_at ms i64, seq u64, usage f32, capacity f32,
//! used u64, total u64, cores u16, per-core f32 × cores`, then, each only when
//! its flag bit is set: swap (u64 × 2), load (f32 × 3), net (f64 × 2),
//! disk (f64 × 2), processes (u32), psi (mask u8, then f32 per set bit).

use chrono::{DateTime, Utc};
use loadshift_events::telemetry::{Cpu, LoadAverage, Memory, Pressure, Throughput};
use loadshift_events::Sample;

const VERSION: u8 = 1;
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

/// Appends the encoding of `s` to `out` (cleared first).
pub fn encode_into(out: &mut Vec<u8>, s: &Sample, occurred_at_ms: i64) {
    out.clear();
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
    fn u16(&mut self) -> Result<u16, SeriesError> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, SeriesError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, SeriesError> {
        self.take().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, SeriesError> {
        self.take().map(i64::from_le_bytes)
    }
    fn f32(&mut self) -> Result<f32, SeriesError> {
        self.take().map(f32::from_le_bytes)
    }
    fn f64(&mut self) -> Result<f64, SeriesError> {
        self.take().map(f64::from_le_bytes)
    }
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
    let net = if flags & NET != 0 {
        Some(r.throughput()?)
    } else {
        None
    };
    let disk = if flags & DISK != 0 {
        Some(r.throughput()?)
    } else {
        None
    };
    let processes = if flags & PROCESSES != 0 {
        Some(r.u32()?)
    } else {
        None
    };
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
}
