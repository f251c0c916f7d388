//! The machine the agent runs on, measured through sysinfo (and PSI files).
//!
//! Throughputs are computed here from counter deltas over the real time
//! between two samples, rather than trusting "since last refresh" values, so
//! a late tick does not inflate a rate.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use loadshift_events::telemetry::{Cpu, LoadAverage, Memory, Throughput};
use loadshift_events::Sample;
use sysinfo::{Disks, Networks, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{pressure, Capacity, LiveSource, SourceError};

/// Counters whose deltas give throughput.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    net_in: u64,
    net_out: u64,
    disk_read: u64,
    disk_write: u64,
}

/// Samples this machine.
pub struct HostSource {
    sys: System,
    networks: Networks,
    disks: Disks,
    last: (Instant, Counters),
}

impl std::fmt::Debug for HostSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSource").finish_non_exhaustive()
    }
}

impl HostSource {
    /// Takes the first readings, so that the first sample already has CPU
    /// usage and throughput (both need two readings).
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let networks = Networks::new_with_refreshed_list();
        let disks = Disks::new_with_refreshed_list();
        let counters = read_counters(&networks, &disks);
        Self {
            sys,
            networks,
            disks,
            last: (Instant::now(), counters),
        }
    }
}

impl Default for HostSource {
    fn default() -> Self {
        Self::new()
    }
}

fn read_counters(networks: &Networks, disks: &Disks) -> Counters {
    let mut c = Counters::default();
    for (name, data) in networks.iter() {
        // Loopback traffic never leaves the node: it is not load on the network.
        if name == "lo" {
            continue;
        }
        c.net_in += data.total_received();
        c.net_out += data.total_transmitted();
    }
    // Several mounts of one device report the same counters: count each once.
    let mut per_device: HashMap<&std::ffi::OsStr, (u64, u64)> = HashMap::new();
    for d in disks.list() {
        let u = d.usage();
        per_device.insert(d.name(), (u.total_read_bytes, u.total_written_bytes));
    }
    for (r, w) in per_device.values() {
        c.disk_read += r;
        c.disk_write += w;
    }
    c
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        now.saturating_sub(before) as f64 / secs
    } else {
        0.0
    }
}

impl LiveSource for HostSource {
    fn sample(&mut self) -> Result<Sample, SourceError> {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing(),
        );
        self.networks.refresh(true);
        self.disks.refresh(true);
        let now = Instant::now();
        let counters = read_counters(&self.networks, &self.disks);
        let (then, before) = self.last;
        self.last = (now, counters);
        let secs = now.duration_since(then).as_secs_f64();

        let load = System::load_average();
        Ok(Sample {
            at: Utc::now(),
            seq: 0,
            cpu: Cpu {
                usage_pct: self.sys.global_cpu_usage(),
                capacity_cores: self.sys.cpus().len() as f32,
                per_core_pct: self.sys.cpus().iter().map(|c| c.cpu_usage()).collect(),
            },
            memory: Memory {
                used_bytes: self.sys.used_memory(),
                total_bytes: self.sys.total_memory(),
            },
            swap: Some(Memory {
                used_bytes: self.sys.used_swap(),
                total_bytes: self.sys.total_swap(),
            }),
            load: Some(LoadAverage {
                one: load.one as f32,
                five: load.five as f32,
                fifteen: load.fifteen as f32,
            }),
            net: Some(Throughput {
                in_bps: rate(counters.net_in, before.net_in, secs),
                out_bps: rate(counters.net_out, before.net_out, secs),
            }),
            disk: Some(Throughput {
                in_bps: rate(counters.disk_read, before.disk_read, secs),
                out_bps: rate(counters.disk_write, before.disk_write, secs),
            }),
            processes: Some(self.sys.processes().len() as u32),
            psi: pressure::read_all(|r| Path::new("/proc/pressure").join(r)),
        })
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            cores: self.sys.cpus().len() as f32,
            memory_bytes: self.sys.total_memory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sample_is_plausible() {
        let mut h = HostSource::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = h.sample().unwrap();
        assert!(s.cpu.capacity_cores >= 1.0);
        assert_eq!(s.cpu.per_core_pct.len(), s.cpu.capacity_cores as usize);
        assert!((0.0..=100.0 + f32::EPSILON).contains(&s.cpu.usage_pct));
        assert!(s.memory.total_bytes > 0 && s.memory.used_bytes <= s.memory.total_bytes);
        assert!(s.processes.unwrap_or(0) > 0);
        assert!(s.net.unwrap().in_bps >= 0.0);
    }
}
