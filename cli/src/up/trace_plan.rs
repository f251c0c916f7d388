//! The live trace scenario's plan: which VMs of a trace run, on which
//! worker, and the profile each one's `loadshift-loadgen` plays.
//!
//! The VMs and their layout are the simulator's own
//! ([`loadshift_brain::simulate`]: the trace resampled to 5-minute steps,
//! workload `i` on worker `i mod N`, nodes sized so that the mean demand is
//! 35 % of the cluster), so a live run and `loadshift-brain simulate` on the
//! same VMs start from the same placement. Live, each VM becomes a load
//! generator in its worker's cgroup:
//!
//! - time is compressed by the trace speed (a 5-minute step lasts
//!   `300 s / speed`);
//! - CPU is scaled to the node: a VM using `c` cores on a simulated node of
//!   `C` cores asks for `c / C` of the live node's cores (a generator is one
//!   thread, so at most one core);
//! - memory is scaled by the live node's memory over the simulated node's,
//!   and capped at [`MAX_MEMORY_MIB`] so that a move stays a matter of
//!   seconds.

use std::path::Path;
use std::time::Duration;

use loadshift_brain::simulate::{Grid, Layout};
use loadshift_events::workload::StartRequested;
use loadshift_events::{NodeName, WorkloadName};

use super::scenario::Generator;

/// The simulator's step: the Bitbrains sampling interval.
pub const TRACE_STEP_MS: i64 = 300_000;

/// No generator holds more than this, MiB.
pub const MAX_MEMORY_MIB: u64 = 128;

/// Steps of each generator's profile (one week of 5-minute steps; at 300x
/// half an hour live), played in a loop after that.
pub const PROFILE_STEPS: usize = 2016;

/// MiB/s each generator rewrites (a VM's dirty rate is not in the trace).
pub const DIRTY_RATE_MIB_S: u32 = 1;

/// The plan of one live trace run.
#[derive(Debug, Clone)]
pub struct TracePlan {
    /// The chosen VMs' demand on the simulator's grid.
    pub grid: Grid,
    /// Their start nodes (indexes into the workers) and the simulated
    /// nodes' size.
    pub layout: Layout,
    /// Times real time.
    pub speed: f64,
    /// Cores of each live worker.
    pub node_cpus: f64,
    /// Memory of each live worker, bytes.
    pub node_memory_bytes: u64,
    /// The grid step the live run starts at (`--trace-from`).
    pub from: usize,
}

/// One generator to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The trace's VM (its file name).
    pub vm: String,
    /// Where it starts: index into the workers.
    pub worker: usize,
    /// Its profile: one `cpu_pct,memory_mib` line per step.
    pub profile: String,
}

impl TracePlan {
    /// The first `vms` VMs of `dir` (the trace's file order) on `workers`
    /// live nodes of `node_cpus` cores and `node_memory_mib` MiB each,
    /// played from `from` into the trace (rounded down to a step; the
    /// layout is still sized on the whole trace, as `simulate` sizes it).
    ///
    /// # Errors
    /// A message for the operator when the trace cannot be read, holds no
    /// VM, or the numbers make no sense.
    pub fn new(
        dir: &Path,
        vms: usize,
        workers: usize,
        node_cpus: f64,
        node_memory_mib: u64,
        speed: f64,
        from: Duration,
    ) -> Result<Self, String> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(format!("--trace-speed {speed} must be a positive number"));
        }
        if workers == 0 || vms == 0 {
            return Err("the trace scenario needs at least one worker and one VM".into());
        }
        let mut grid = Grid::from_traces(dir, TRACE_STEP_MS)
            .map_err(|e| format!("reading trace folder {}: {e}", dir.display()))?;
        if grid.names.is_empty() {
            return Err(format!("trace folder {} holds no VM", dir.display()));
        }
        grid.names.truncate(vms);
        grid.cores.truncate(vms);
        grid.memory.truncate(vms);
        let layout = Layout::default_for(&grid, workers);
        let from = (from.as_millis() / grid.step_ms.max(1) as u128) as usize;
        if from >= grid.times.len() {
            return Err(format!(
                "--trace-from is past the trace's end ({} steps of 5 minutes)",
                grid.times.len()
            ));
        }
        Ok(Self {
            grid,
            layout,
            speed,
            node_cpus,
            node_memory_bytes: node_memory_mib << 20,
            from,
        })
    }

    /// How long one trace step lasts live.
    pub fn live_step(&self) -> Duration {
        Duration::from_secs_f64(self.grid.step_ms as f64 / 1000.0 / self.speed)
    }

    /// Percent of one live core a VM using `cores` asks for.
    pub fn cpu_pct(&self, cores: f32) -> f64 {
        let share = f64::from(cores) / f64::from(self.layout.capacity_cores.max(1e-6));
        (share * self.node_cpus * 100.0).clamp(0.0, 100.0)
    }

    /// Live MiB of a VM holding `bytes`.
    pub fn memory_mib(&self, bytes: u64) -> u64 {
        let scale = self.node_memory_bytes as f64 / self.layout.memory_bytes.max(1) as f64;
        ((bytes as f64 * scale) as u64 >> 20).min(MAX_MEMORY_MIB)
    }

    /// Every VM's generator: where it starts and its profile over the
    /// `steps` steps from [`Self::from`] (played in a loop after that).
    pub fn planned(&self, steps: usize) -> Vec<Planned> {
        let end = (self.from + steps.max(1)).min(self.grid.times.len());
        (0..self.grid.names.len())
            .map(|w| {
                let mut profile = String::from("# cpu_pct_of_one_core,memory_mib\n");
                for t in self.from..end.min(self.grid.cores[w].len()) {
                    profile.push_str(&format!(
                        "{:.1},{}\n",
                        self.cpu_pct(self.grid.cores[w][t]),
                        self.memory_mib(self.grid.memory[w][t])
                    ));
                }
                Planned {
                    vm: self.grid.names[w].clone(),
                    worker: self.layout.placement[w],
                    profile,
                }
            })
            .collect()
    }

    /// The chosen VMs over the `steps` steps from [`Self::from`]: what the
    /// simulator runs to compare with a live run that lasted that long.
    pub fn window(&self, steps: usize) -> Grid {
        let end = (self.from + steps).min(self.grid.times.len());
        let cut = |v: &Vec<f32>| v[self.from.min(v.len())..end.min(v.len())].to_vec();
        let cut_mem = |v: &Vec<u64>| v[self.from.min(v.len())..end.min(v.len())].to_vec();
        Grid {
            names: self.grid.names.clone(),
            step_ms: self.grid.step_ms,
            times: self.grid.times[self.from..end].to_vec(),
            cores: self.grid.cores.iter().map(cut).collect(),
            memory: self.grid.memory.iter().map(cut_mem).collect(),
        }
    }
}

/// The workload name of the generator playing `vm` in run `run`.
///
/// # Errors
/// When the name is not a valid workload name.
pub fn workload_name(vm: &str, run: &str) -> Result<WorkloadName, String> {
    let clean: String = vm
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    WorkloadName::new(format!("vm{clean}-{run}")).map_err(|e| e.to_string())
}

/// The start request of one generator, run as `generator` says, playing
/// the profile at `profile` (its path where the generator runs).
pub fn start_request(
    workload: WorkloadName,
    node: NodeName,
    generator: &Generator,
    profile: &str,
    step: Duration,
) -> StartRequested {
    let args = vec![
        format!("--profile={profile}"),
        format!("--step={}ms", step.as_millis().max(1)),
        format!("--dirty-rate={DIRTY_RATE_MIB_S}"),
    ];
    generator.request(workload, &node, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three VMs, 4 steps of 5 minutes, written in Bitbrains format.
    fn trace() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let header = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n";
        // VM 1: 2 cores at 50 %, then 100 %; VM 2: 1 core at 20 %; VM 3: 1 core at 10 %.
        let vms: [(&str, u32, [f64; 4]); 3] = [
            ("1", 2, [50.0, 50.0, 100.0, 100.0]),
            ("2", 1, [20.0; 4]),
            ("3", 1, [10.0; 4]),
        ];
        for (name, cores, cpu) in vms {
            let mut s = header.to_string();
            for (i, c) in cpu.iter().enumerate() {
                s.push_str(&format!(
                    "{};\t{cores};\t5000;\t1000;\t{c};\t4194304;\t1048576;\t0;\t0;\t0;\t0\n",
                    1_000_000 + i * 300
                ));
            }
            std::fs::write(d.path().join(format!("{name}.csv")), s).unwrap();
        }
        d
    }

    #[test]
    fn the_vms_start_where_the_simulator_puts_them() {
        let d = trace();
        let p = TracePlan::new(d.path(), 3, 2, 1.0, 2048, 300.0, Duration::ZERO).unwrap();
        assert_eq!(p.grid.names.len(), 3);
        // Workload i on worker i mod 2.
        let planned = p.planned(10);
        let at: Vec<usize> = planned.iter().map(|w| w.worker).collect();
        assert_eq!(at, vec![0, 1, 0]);
        assert_eq!(p.layout, Layout::default_for(&p.grid, 2));
        // 300 s steps at 300x: one second each.
        assert_eq!(p.live_step(), Duration::from_secs(1));
        // Fewer VMs than the trace holds: the first ones.
        let two = TracePlan::new(d.path(), 2, 2, 1.0, 2048, 300.0, Duration::ZERO).unwrap();
        assert_eq!(two.grid.names, p.grid.names[..2].to_vec());
    }

    #[test]
    fn profiles_are_scaled_to_the_live_node() {
        let d = trace();
        let p = TracePlan::new(d.path(), 3, 2, 1.0, 2048, 300.0, Duration::ZERO).unwrap();
        let cap = f64::from(p.layout.capacity_cores);
        let planned = p.planned(10);
        let first: Vec<f64> = planned[0]
            .profile
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        // Every step of the trace, no more: 1 core then 2 cores.
        assert_eq!(first.len(), 4);
        assert!(
            (first[0] - (100.0 / cap).min(100.0)).abs() < 0.06,
            "{first:?}"
        );
        assert!(
            (first[2] - (200.0 / cap).min(100.0)).abs() < 0.06,
            "{first:?}"
        );
        // A node twice as big takes twice the share of one core (capped).
        let big = TracePlan::new(d.path(), 3, 2, 2.0, 2048, 300.0, Duration::ZERO).unwrap();
        assert!((big.cpu_pct(0.5) - (2.0 * p.cpu_pct(0.5)).min(100.0)).abs() < 1e-9);
        assert_eq!(p.cpu_pct(1000.0), 100.0);
        // Memory scaled, never over the cap.
        assert!(p.memory_mib(1 << 30) <= MAX_MEMORY_MIB);
        assert!(p.memory_mib(1 << 20) <= p.memory_mib(1 << 30));
    }

    #[test]
    fn the_window_and_the_requests() {
        let d = trace();
        let p = TracePlan::new(d.path(), 3, 2, 1.0, 2048, 600.0, Duration::ZERO).unwrap();
        let w = p.window(2);
        assert_eq!(w.times.len(), 2);
        assert!(w.cores.iter().all(|c| c.len() == 2));
        assert_eq!(p.live_step(), Duration::from_millis(500));
        let name = workload_name("1", "ab").unwrap();
        assert_eq!(name.as_str(), "vm1-ab");
        let r = start_request(
            name,
            NodeName::new("node2").unwrap(),
            &Generator::process(Path::new("/bin/loadgen")),
            "/s/vm1.csv",
            p.live_step(),
        );
        assert!(r.spec.command.contains(&"--profile=/s/vm1.csv".to_string()));
        assert!(r.spec.command.contains(&"--step=500ms".to_string()));
        assert!(TracePlan::new(d.path(), 3, 2, 1.0, 2048, 0.0, Duration::ZERO).is_err());
        // From 10 minutes in: the third step on, the layout unchanged.
        let later =
            TracePlan::new(d.path(), 3, 2, 1.0, 2048, 600.0, Duration::from_secs(600)).unwrap();
        assert_eq!(later.from, 2);
        assert_eq!(later.layout, p.layout);
        let w = later.window(10);
        assert_eq!(w.times, p.grid.times[2..].to_vec());
        assert_eq!(w.cores[0], vec![2.0, 2.0]);
        let first = later.planned(10)[0]
            .profile
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(first, p.planned(10)[0].profile.lines().nth(3).unwrap());
        assert!(TracePlan::new(d.path(), 3, 2, 1.0, 2048, 1.0, Duration::from_secs(1200)).is_err());
        assert!(TracePlan::new(
            Path::new("/nonexistent"),
            3,
            2,
            1.0,
            2048,
            1.0,
            Duration::ZERO
        )
        .is_err());
    }
}
