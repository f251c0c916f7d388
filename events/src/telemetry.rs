//! One telemetry sample: what a node looked like at one moment.
//!
//! The same struct carries a real host (sysinfo), a node simulated by a cgroup,
//! and a replayed trace, so the brain's features never care where a sample came
//! from. Fields a source cannot measure are `None`, never a made-up zero.
//! Every number is checked against its range when a sample is decoded or
//! encoded ([`crate::bounds`]): a sample that cannot be a measurement is
//! refused with the field that is wrong, never stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounds::{self, Bounded, OutOfRange};

/// A node's usage and capacity at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// When the sample describes (for a trace: the trace's own time, so daily
    /// patterns survive a replay at any speed).
    pub at: DateTime<Utc>,
    /// The agent's own counter, one per sample of this node: gaps show loss.
    pub seq: u64,
    /// CPU usage and capacity.
    pub cpu: Cpu,
    /// Memory usage and capacity.
    pub memory: Memory,
    /// Swap use, where the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Memory>,
    /// Load averages over 1, 5 and 15 minutes, where the source knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadAverage>,
    /// Network throughput, where the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Throughput>,
    /// Disk throughput, where the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Throughput>,
    /// Number of processes (or tasks in the cgroup), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// Pressure stall information (avg10), where the kernel gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<Pressure>,
}

impl Sample {
    /// A sample with only what every source measures (CPU and memory) and
    /// every optional field `None`: what a trace with two columns gives, and
    /// what a test needs, without repeating six `None`s at every call site.
    pub fn new(at: DateTime<Utc>, seq: u64, cpu: Cpu, memory: Memory) -> Self {
        Self {
            at,
            seq,
            cpu,
            memory,
            swap: None,
            load: None,
            net: None,
            disk: None,
            processes: None,
            psi: None,
        }
    }
}

/// CPU: usage as a share of this node's capacity, and the capacity itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Usage in percent of `capacity_cores` (100 = every core busy). A trace
    /// may report slightly above 100.
    pub usage_pct: f32,
    /// How many cores this node may use (a cgroup quota may give fractions).
    pub capacity_cores: f32,
    /// Per-core usage in percent, where the source sees cores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_core_pct: Vec<f32>,
}

/// Memory (or swap): used and total bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes this node may use; 0 when unknown (a powered-off trace period).
    pub total_bytes: u64,
}

/// Load averages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAverage {
    /// Over one minute.
    pub one: f32,
    /// Over five minutes.
    pub five: f32,
    /// Over fifteen minutes.
    pub fifteen: f32,
}

/// Bytes per second in each direction (network: rx/tx, disk: read/write).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// Received or read, bytes per second.
    pub in_bps: f64,
    /// Transmitted or written, bytes per second.
    pub out_bps: f64,
}

/// PSI `avg10` percentages; `None` where a resource has no pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pressure {
    /// Share of time some task waited for CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_some: Option<f32>,
    /// Share of time some task waited for memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_some: Option<f32>,
    /// Share of time all tasks waited for memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_full: Option<f32>,
    /// Share of time some task waited for I/O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_some: Option<f32>,
    /// Share of time all tasks waited for I/O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_full: Option<f32>,
}

impl Bounded for Sample {
    fn check(&self) -> Result<(), OutOfRange> {
        bounds::usage_pct("cpu.usage_pct", self.cpu.usage_pct)?;
        bounds::cores("cpu.capacity_cores", self.cpu.capacity_cores)?;
        for &pct in &self.cpu.per_core_pct {
            bounds::usage_pct("cpu.per_core_pct", pct)?;
        }
        if let Some(l) = self.load {
            bounds::load("load.one", l.one)?;
            bounds::load("load.five", l.five)?;
            bounds::load("load.fifteen", l.fifteen)?;
        }
        if let Some(t) = self.net {
            bounds::throughput("net.in_bps", t.in_bps)?;
            bounds::throughput("net.out_bps", t.out_bps)?;
        }
        if let Some(t) = self.disk {
            bounds::throughput("disk.in_bps", t.in_bps)?;
            bounds::throughput("disk.out_bps", t.out_bps)?;
        }
        if let Some(p) = self.psi {
            let pct =
                |field, v: Option<f32>| bounds::optional(v, |v| bounds::pressure_pct(field, v));
            pct("psi.cpu_some", p.cpu_some)?;
            pct("psi.memory_some", p.memory_some)?;
            pct("psi.memory_full", p.memory_full)?;
            pct("psi.io_some", p.io_some)?;
            pct("psi.io_full", p.io_full)?;
        }
        Ok(())
    }
}
