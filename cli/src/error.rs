//! The errors that mean "you asked for something that cannot be", kept apart
//! from failures while running, because the two exit differently: bad usage
//! or input exits 2, a failure exits 1. `main` looks for an [`InputError`]
//! anywhere in an error's chain to choose.

use loadshift_events::{NodeName, WorkloadName};
use uuid::Uuid;

/// Input the operator must change before trying again.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// docker workloads need an image
    #[error("a docker workload needs an image: add --image IMAGE (or set LOADSHIFT_IMAGE)")]
    DockerWithoutImage,
    /// a process workload was given an image
    #[error("--image only applies to docker workloads; add --runtime docker or drop --image")]
    ImageWithoutDocker,
    /// a process workload needs a command
    #[error("a process workload needs a command: add it after `--`, e.g. `-- sleep 1000`")]
    NoCommand,
    /// an `--env` value is not `KEY=VALUE`
    #[error("--env {0:?} is not KEY=VALUE with a non-empty KEY")]
    BadEnv(String),
    /// a duration could not be read
    #[error("--timeout {value:?} is not a duration such as 60s or 2m: {reason}")]
    BadTimeout {
        /// What was given.
        value: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// the workload is not in the log
    #[error(
        "workload {0} is unknown: the log holds no workload.*.started for it (or it has exited); \
         `loadshift workload ls` lists the workloads that run, or pass --from NODE to ask anyway"
    )]
    UnknownWorkload(WorkloadName),
    /// the workload does not run anywhere the log knows
    #[error(
        "workload {0} does not run: the log places it on no node (it never started, or it exited); \
         `loadshift workload ls` lists the workloads that run"
    )]
    NotRunning(WorkloadName),
    /// a grace period could not be read
    #[error("--grace {value:?} is not a duration such as 10s or 1m: {reason}")]
    BadGrace {
        /// What was given.
        value: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// the workload is being moved already
    #[error(
        "workload {workload} is already migrating from {source_node} to {target} (migration {migration}); \
         follow it with `loadshift events tail --subject 'migration.>'`"
    )]
    AlreadyMigrating {
        /// The workload.
        workload: WorkloadName,
        /// Where it comes from.
        source_node: NodeName,
        /// Where it goes.
        target: NodeName,
        /// The migration in flight.
        migration: Uuid,
    },
    /// a workload of that name runs already
    #[error(
        "a workload named {workload} already runs on {node} (names are unique in the cluster): \
         pick another --name, or move it with `loadshift migrate {workload} --to NODE`"
    )]
    NameTaken {
        /// The name.
        workload: WorkloadName,
        /// Where it runs.
        node: NodeName,
    },
    /// the scenario cannot be played
    #[error("--scenario: {0}")]
    BadScenario(String),
    /// no nats/server.conf where the repository was looked for
    #[error(
        "no nats/server.conf in {0} or above it: run from the loadshift repository or pass --repo DIR (LOADSHIFT_REPO)"
    )]
    NotARepo(std::path::PathBuf),
    /// the target is where the workload already runs
    #[error("workload {workload} already runs on {node}; pick another --to")]
    SameNode {
        /// The workload.
        workload: WorkloadName,
        /// Its node.
        node: NodeName,
    },
}

/// Parses `KEY=VALUE` for `--env`.
///
/// # Errors
/// [`InputError::BadEnv`] when there is no `=` or the key is empty.
pub fn parse_env(s: &str) -> Result<(String, String), InputError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(InputError::BadEnv(s.to_string())),
    }
}

/// Parses a `--timeout` such as `60s`, `2m` or `1500ms`.
///
/// # Errors
/// [`InputError::BadTimeout`] when it is not a duration or is zero.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, InputError> {
    let d = humantime::parse_duration(s).map_err(|e| InputError::BadTimeout {
        value: s.to_string(),
        reason: e.to_string(),
    })?;
    if d.is_zero() {
        return Err(InputError::BadTimeout {
            value: s.to_string(),
            reason: "it must be longer than zero".into(),
        });
    }
    Ok(d)
}

/// Parses a `--grace` such as `10s` or `0s` (zero: SIGKILL right after
/// SIGTERM).
///
/// # Errors
/// [`InputError::BadGrace`] when it is not a duration.
pub fn parse_grace(s: &str) -> Result<std::time::Duration, InputError> {
    humantime::parse_duration(s).map_err(|e| InputError::BadGrace {
        value: s.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_needs_a_key_and_an_equal_sign() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), String::new()));
        assert!(parse_env("=b").is_err());
        assert!(parse_env("AB").is_err());
    }

    #[test]
    fn timeouts_read_like_people_write_them() {
        assert_eq!(parse_timeout("60s").unwrap().as_secs(), 60);
        assert_eq!(parse_timeout("2m").unwrap().as_secs(), 120);
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
        assert_eq!(parse_grace("0s").unwrap().as_secs(), 0);
        assert!(parse_grace("later")
            .unwrap_err()
            .to_string()
            .contains("--grace"));
    }
}
