//! What `loadshift up` puts on the nodes once they are up.
//!
//! - `idle`: nothing; the nodes report their (empty) cgroups.
//! - `ramp`: three `loadshift-loadgen` workloads on node2, each ramping its
//!   CPU share over 200 seconds, together well past node2's one core, so that
//!   node2 heads for overload and the brain has something to predict and a
//!   workload to move (to node3, the idle one).
//! - `trace:DIR`: VMs of a Bitbrains-format trace run as load generators on
//!   the workers, placed as the simulator places them ([`super::trace_plan`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use loadshift_events::workload::{Runtime, StartRequested, WorkloadSpec};
use loadshift_events::{NodeName, WorkloadName};

/// A scenario, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// No load.
    Idle,
    /// Ramping load generators on node2.
    Ramp,
    /// VMs of a trace run as load generators on the workers.
    Trace(PathBuf),
}

/// Why a `--scenario` value is refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown scenario {0:?}: expected `idle`, `ramp` or `trace:DIR`")]
pub struct ScenarioError(String);

impl FromStr for Scenario {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Self::Idle),
            "ramp" => Ok(Self::Ramp),
            _ => match s.strip_prefix("trace:") {
                Some(dir) if !dir.is_empty() => Ok(Self::Trace(PathBuf::from(dir))),
                _ => Err(ScenarioError(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Ramp => f.write_str("ramp"),
            Self::Trace(d) => write!(f, "trace:{}", d.display()),
        }
    }
}

/// One ramping load generator: start share, end share (percent of one
/// core), memory (MiB) and dirty rate (MiB/s).
struct Ramp {
    from: u32,
    to: u32,
    memory: u32,
    dirty: u32,
}

/// Three generators: together 9 % of a core at start, 135 % after the
/// 200-second ramp (0.63 points of node2's core a second), so a one-core
/// node2 crosses 85 % about 121 s in and 90 % about 129 s in. They start
/// low because the bootstrap model flags a jump of the load as a coming
/// onset: starting at 30 % at once was flagged, and a move then would come
/// before any ramp.
const RAMPS: [Ramp; 3] = [
    Ramp {
        from: 3,
        to: 50,
        memory: 32,
        dirty: 4,
    },
    Ramp {
        from: 3,
        to: 45,
        memory: 64,
        dirty: 8,
    },
    Ramp {
        from: 3,
        to: 40,
        memory: 96,
        dirty: 2,
    },
];

/// How long the ramp of every generator takes. The demo compresses the
/// model's time (one 5-minute trace step is one second here) but not a
/// migration's, which takes real seconds (about one for a process, a few
/// for a container): at this slope node2 takes 7.9 s from 85 % (where the
/// brain's bootstrap model first flags sustained overload, README "One
/// meaning of time") to 90 %, room for either move to take the load off
/// node2. A 60-second ramp left 2.9 s, less than a container's move.
pub const RAMP_OVER: &str = "200s";

/// How a scenario's load generators run: every scenario runs the same
/// `loadshift-loadgen`, as a process of the binary beside `loadshift` or as
/// a container of the image built from it ([`super::image`]), so the
/// scenarios say what load to make and this says how.
#[derive(Debug, Clone, PartialEq)]
pub struct Generator {
    /// The executors' runtime.
    pub runtime: Runtime,
    /// The generator's path where it runs (on the host, or in the image).
    pub program: String,
    /// The image, for containers.
    pub image: Option<String>,
}

impl Generator {
    /// Processes of the binary at `loadgen`.
    pub fn process(loadgen: &Path) -> Self {
        Self {
            runtime: Runtime::Process,
            program: loadgen.display().to_string(),
            image: None,
        }
    }

    /// Containers of `image`, whose generator is at
    /// [`super::image::LOADGEN_IN_IMAGE`].
    pub fn container(image: String) -> Self {
        Self {
            runtime: Runtime::Docker,
            program: super::image::LOADGEN_IN_IMAGE.to_string(),
            image: Some(image),
        }
    }

    /// Asks `node` to run the generator with `args` as `workload`.
    pub fn request(
        &self,
        workload: WorkloadName,
        node: &NodeName,
        args: Vec<String>,
    ) -> StartRequested {
        StartRequested {
            workload,
            node: node.clone(),
            spec: WorkloadSpec {
                runtime: self.runtime,
                command: std::iter::once(self.program.clone()).chain(args).collect(),
                image: self.image.clone(),
                env: Default::default(),
                no_postcopy: false,
            },
            requested_by: "loadshift-up".into(),
        }
    }
}

/// The start requests of the `ramp` scenario on `node`, the generators run
/// as `generator` says; `run` tells this run's workload names from earlier
/// ones kept in the same log.
pub fn ramp_requests(node: &NodeName, generator: &Generator, run: &str) -> Vec<StartRequested> {
    RAMPS
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let workload = WorkloadName::new(format!("ramp{}-{run}", i + 1)).ok()?;
            let args = vec![
                format!("--cpu={}", r.from),
                format!("--ramp-to={}", r.to),
                format!("--ramp-over={RAMP_OVER}"),
                format!("--memory={}", r.memory),
                format!("--dirty-rate={}", r.dirty),
            ];
            Some(generator.request(workload, node, args))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_read_like_they_are_written() {
        assert_eq!("idle".parse::<Scenario>().unwrap(), Scenario::Idle);
        assert_eq!("ramp".parse::<Scenario>().unwrap(), Scenario::Ramp);
        assert_eq!(
            "trace:/t".parse::<Scenario>().unwrap(),
            Scenario::Trace("/t".into())
        );
        assert!("trace:".parse::<Scenario>().is_err());
        assert!("busy"
            .parse::<Scenario>()
            .unwrap_err()
            .to_string()
            .contains("ramp"));
    }

    /// What the ramp promises the brain: no jump at the start (the
    /// bootstrap model flags one), and seconds, not a blink, between 85 %
    /// and 90 % of node2's core for a move to take the load off.
    #[test]
    fn the_ramp_starts_low_and_leaves_seconds_between_85_and_90_percent() {
        let from: u32 = RAMPS.iter().map(|r| r.from).sum();
        let to: u32 = RAMPS.iter().map(|r| r.to).sum();
        assert!(from <= 10, "the ramp starts at {from} %");
        let over = humantime::parse_duration(RAMP_OVER).unwrap().as_secs_f64();
        let secs_per_point = over / f64::from(to - from);
        let between = 5.0 * secs_per_point;
        assert!(between >= 5.0, "85 % to 90 % in {between:.1} s");
    }

    #[test]
    fn the_ramp_ends_past_one_core() {
        let total: u32 = RAMPS.iter().map(|r| r.to).sum();
        assert!(total > 100);
        let node = NodeName::new("node2").unwrap();
        let reqs = ramp_requests(&node, &Generator::process(Path::new("/bin/loadgen")), "abc");
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].workload.as_str(), "ramp1-abc");
        assert!(reqs[1].spec.command.contains(&"--ramp-to=45".to_string()));
        assert_eq!(reqs[0].spec.command[0], "/bin/loadgen");
        assert_eq!(reqs[0].spec.runtime, Runtime::Process);
        // The same ramp as containers of the image.
        let boxed = ramp_requests(
            &node,
            &Generator::container("loadshift/loadgen:x".into()),
            "abc",
        );
        assert_eq!(boxed[1].spec.command[1..], reqs[1].spec.command[1..]);
        assert_eq!(boxed[1].spec.runtime, Runtime::Docker);
        assert_eq!(boxed[1].spec.image.as_deref(), Some("loadshift/loadgen:x"));
        assert_eq!(boxed[1].spec.command[0], crate::up::image::LOADGEN_IN_IMAGE);
    }
}
