//! Whether a start request may be carried out here: a request is input from
//! the network, and the executor runs as root.
//!
//! - [`check_spec`]: the program of a process workload must exist and be
//!   executable (a missing one used to be reported as started);
//! - [`claim`] / [`release`] / [`moved`]: a workload name belongs to one node
//!   of the cluster at a time. The claim is a create in the
//!   [`NAMES_BUCKET`] key-value bucket, which JetStream makes atomic, so two
//!   simultaneous starts of one name on two nodes end with one running; a
//!   migration hands the name to its target, an exit frees it. The saga
//!   reaches the registry through the [`Names`] trait ([`KvNames`] in the
//!   service, a recording double in its unit tests), like its other effects.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use loadshift_events::workload::{Runtime, WorkloadSpec};
use loadshift_events::{NodeName, WorkloadName};

/// The key-value bucket saying which node runs each workload name.
pub const NAMES_BUCKET: &str = loadshift_events::stream::WORKLOAD_NAMES;

/// Whether `p` is a file someone may execute.
fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks what can be checked of `spec` before starting it: for a process,
/// that its program exists and is executable (an absolute path as is, a
/// bare name on the `PATH` the workload will have).
///
/// # Errors
/// The reason, in words, for the `workload.start_failed` event.
pub fn check_spec(spec: &WorkloadSpec) -> Result<(), String> {
    if spec.runtime != Runtime::Process {
        return Ok(());
    }
    let Some(program) = spec.command.first() else {
        return Err("a process workload needs a command".into());
    };
    if program.is_empty() {
        return Err("the command's program is empty".into());
    }
    let path = Path::new(program);
    if path.is_absolute() {
        return if executable(path) {
            Ok(())
        } else {
            Err(format!(
                "{program} does not exist or is not executable on this node"
            ))
        };
    }
    if program.contains('/') {
        // Relative to a working folder that does not exist yet: the start
        // itself says whether it works.
        return Ok(());
    }
    let search = spec
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    if std::env::split_paths(&search).any(|d: PathBuf| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "{program} is not an executable program on this node's PATH ({search})"
        ))
    }
}

async fn bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    js.get_key_value(NAMES_BUCKET)
        .await
        .map_err(|e| format!("cannot open the {NAMES_BUCKET} bucket: {e}"))
}

/// Opens the [`NAMES_BUCKET`], creating it with `replicas` copies (those
/// of the streams: on a three-server cluster a name claimed before one
/// server dies must still be known, or a second start of it would be let
/// through) when it is missing.
///
/// # Errors
/// Why the bucket can be neither opened nor created.
pub async fn open_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, String> {
    if let Ok(kv) = js.get_key_value(NAMES_BUCKET).await {
        return Ok(kv);
    }
    js.create_key_value(kv::Config {
        bucket: NAMES_BUCKET.to_string(),
        description: "loadshift: which node runs each workload name".into(),
        history: 1,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create the {NAMES_BUCKET} bucket: {e}"))
}

/// The cluster's workload-name registry, as the saga uses it: claim a name
/// before a start, release it when the workload ends here, hand it over when
/// a migration restored it here. A trait object (not a type parameter) so
/// the executor's other effects keep their shape.
pub trait Names: Send + Sync {
    /// [`claim`]: `Err` with the reason to refuse the start.
    fn claim<'a>(
        &'a self,
        name: &'a WorkloadName,
        node: &'a NodeName,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// [`release`].
    fn release<'a>(&'a self, name: &'a WorkloadName, node: &'a NodeName) -> BoxFuture<'a, ()>;
    /// [`moved`], in the background: a restore must not wait on NATS once
    /// the journal holds it.
    fn moved(&self, name: &WorkloadName, node: &NodeName);
}

/// The registry in the [`NAMES_BUCKET`] key-value bucket.
pub struct KvNames(pub jetstream::Context);

impl Names for KvNames {
    fn claim<'a>(
        &'a self,
        name: &'a WorkloadName,
        node: &'a NodeName,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(claim(&self.0, name, node))
    }

    fn release<'a>(&'a self, name: &'a WorkloadName, node: &'a NodeName) -> BoxFuture<'a, ()> {
        Box::pin(release(&self.0, name, node))
    }

    fn moved(&self, name: &WorkloadName, node: &NodeName) {
        let (js, name, node) = (self.0.clone(), name.clone(), node.clone());
        tokio::spawn(async move { moved(&js, &name, &node).await });
    }
}

/// Claims `name` for `node`: succeeds when nobody had it or `node` already
/// does (a request delivered again).
///
/// # Errors
/// The reason to refuse the start: another node runs it, or the claim
/// could not be made (a start the cluster cannot vouch for is not made).
pub async fn claim(
    js: &jetstream::Context,
    name: &WorkloadName,
    node: &NodeName,
) -> Result<(), String> {
    let kv = bucket(js).await?;
    match kv.create(name.as_str(), node.to_string().into()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let holder = kv
                .get(name.as_str())
                .await
                .map_err(|e| format!("cannot read who runs {name}: {e}"))?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            if holder == node.as_str() {
                Ok(())
            } else {
                Err(format!(
                    "a workload named {name} already runs on {holder}: names are unique in the cluster"
                ))
            }
        }
        Err(e) => Err(format!("cannot claim the name {name}: {e}")),
    }
}

/// Frees `name` if `node` holds it (the workload ended or never started).
pub async fn release(js: &jetstream::Context, name: &WorkloadName, node: &NodeName) {
    let Ok(kv) = bucket(js).await else { return };
    if let Ok(Some(entry)) = kv.entry(name.as_str()).await {
        if entry.operation == kv::Operation::Put && entry.value == node.as_str().as_bytes() {
            if let Err(e) = kv
                .delete_expect_revision(name.as_str(), Some(entry.revision))
                .await
            {
                tracing::debug!(workload = %name, error = %e, "name not released");
            }
        }
    }
}

/// Hands `name` to `node`, where a migration restored it.
pub async fn moved(js: &jetstream::Context, name: &WorkloadName, node: &NodeName) {
    let Ok(kv) = bucket(js).await else { return };
    if let Err(e) = kv.put(name.as_str(), node.to_string().into()).await {
        tracing::warn!(workload = %name, error = %e, "the name registry does not know the workload moved");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(cmd: &[&str]) -> WorkloadSpec {
        WorkloadSpec::process(cmd.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_program_must_exist_and_be_executable() {
        assert!(check_spec(&process(&["sleep", "1"])).is_ok());
        assert!(check_spec(&process(&["/bin/sh", "-c", "true"])).is_ok());
        let missing = check_spec(&process(&["no-such-program-here"])).unwrap_err();
        assert!(missing.contains("no-such-program-here"), "{missing}");
        assert!(check_spec(&process(&["/no/such/file"])).is_err());
        // A file that is not executable.
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = plain.path().display().to_string();
        assert!(check_spec(&process(&[&path])).is_err());
        assert!(check_spec(&process(&[])).is_err());
    }

    #[test]
    fn the_workloads_own_path_is_searched() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("myprog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = process(&["myprog"]);
        assert!(check_spec(&spec).is_err());
        spec.env
            .insert("PATH".into(), dir.path().display().to_string());
        assert!(check_spec(&spec).is_ok());
    }
}
