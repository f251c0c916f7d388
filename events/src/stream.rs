//! The streams that hold the log, declared in one place.
//!
//! Every service declares them at start. Declaring is idempotent: a stream that
//! already exists with the same configuration is left alone, and one whose
//! configuration conflicts is reported with what differs and how to fix it,
//! rather than silently reconfigured (that could drop history).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

/// Name of the stream of telemetry samples.
pub const TELEMETRY: &str = "TELEMETRY";
/// Name of the stream of every other event: the system of record.
pub const EVENTS: &str = "EVENTS";

/// The two streams of the log, as a small copyable tag.
///
/// One enum for every service (the brain keys its store by it, the webui
/// tags what it shows with it, readers are opened on it), so that "which
/// stream" is never a string compared by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum StreamId {
    /// [`TELEMETRY`]: samples and workload usage.
    Telemetry,
    /// [`EVENTS`]: everything else, the system of record.
    Events,
}

impl StreamId {
    /// Both, in a fixed order (index = [`StreamId::index`]).
    pub const ALL: [StreamId; 2] = [StreamId::Telemetry, StreamId::Events];

    /// The JetStream stream name.
    pub fn name(self) -> &'static str {
        match self {
            StreamId::Telemetry => TELEMETRY,
            StreamId::Events => EVENTS,
        }
    }

    /// Position in [`StreamId::ALL`], for per-stream arrays.
    pub fn index(self) -> usize {
        match self {
            StreamId::Telemetry => 0,
            StreamId::Events => 1,
        }
    }
}

/// Object store bucket that carries checkpoint images between nodes.
pub const CHECKPOINTS: &str = "CHECKPOINTS";

/// Chunk size for checkpoint images: 1 MiB chunks moved a 300 MB object about
/// twice as fast as the default 128 KiB on these machines (each chunk waits
/// for its ack).
pub const CHECKPOINT_CHUNK_BYTES: usize = 1024 * 1024;

/// The executors' key-value bucket saying which node runs each workload
/// name, so that two simultaneous starts of one name end with one workload
/// (`executor::admission`). Named here because `loadshift up` grants it to
/// executors only.
pub const WORKLOAD_NAMES: &str = "WORKLOAD_NAMES";

/// The executors' key-value bucket with one key per migration that reached
/// a claim: whoever creates it first (the source fencing, the target
/// restoring) decides where the workload runs (`executor::fence`).
pub const MIGRATION_FENCES: &str = "MIGRATION_FENCES";

/// Subjects kept by [`TELEMETRY`].
pub const TELEMETRY_SUBJECTS: &[&str] = &["telemetry.>"];
/// Subjects kept by [`EVENTS`].
pub const EVENTS_SUBJECTS: &[&str] = &["node.>", "workload.>", "migration.>", "model.>"];

/// How long a retried publish is still recognised as a duplicate. Long enough
/// to cover a reconnect; the agent's own buffer never republishes an acked
/// sample, so this only guards retries of unacknowledged ones.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The knobs an operator may turn on the streams.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// How long telemetry is kept (default 7 days).
    pub telemetry_max_age: Duration,
    /// How many bytes of telemetry are kept at most (default 10 GiB).
    pub telemetry_max_bytes: i64,
    /// Replicas of each stream: 1 on a single server, 3 on the cluster.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            telemetry_max_age: Duration::from_secs(7 * 24 * 3600),
            telemetry_max_bytes: 10 * 1024 * 1024 * 1024,
            replicas: 1,
        }
    }
}

/// Why the streams could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// JetStream refused or did not answer.
    #[error("JetStream {action} for stream {stream} failed: {message}")]
    JetStream {
        /// The stream concerned.
        stream: String,
        /// What was attempted.
        action: &'static str,
        /// What the server or client said.
        message: String,
    },
    /// The stream exists with a configuration loadshift did not ask for.
    #[error(
        "stream {stream} already exists with a different configuration ({differences}); \
         loadshift will not change it by itself. Inspect it with `nats stream info {stream}`, \
         then either edit it to match or remove it with `nats stream rm {stream}` (its data goes with it)"
    )]
    Conflict {
        /// The stream concerned.
        stream: String,
        /// What differs, `field: have X, want Y` separated by `; `.
        differences: String,
    },
}

/// The configuration loadshift wants for each of its streams.
pub fn desired(settings: &StreamSettings) -> Vec<Config> {
    vec![
        Config {
            name: TELEMETRY.to_string(),
            subjects: TELEMETRY_SUBJECTS.iter().map(|s| s.to_string()).collect(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: settings.telemetry_max_age,
            max_bytes: settings.telemetry_max_bytes,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: settings.replicas,
            description: Some("loadshift telemetry samples, one subject per node".into()),
            ..Default::default()
        },
        Config {
            name: EVENTS.to_string(),
            subjects: EVENTS_SUBJECTS.iter().map(|s| s.to_string()).collect(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW,
            max_bytes: -1,
            num_replicas: settings.replicas,
            description: Some(
                "loadshift system of record: node, workload, migration and model events".into(),
            ),
            ..Default::default()
        },
    ]
}

/// Lists what differs between an existing stream and the one wanted, on the
/// fields loadshift relies on.
pub fn differences(have: &Config, want: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |field: &str, h: String, w: String| {
        if h != w {
            out.push(format!("{field}: have {h}, want {w}"));
        }
    };
    let mut hs = have.subjects.clone();
    hs.sort();
    let mut ws = want.subjects.clone();
    ws.sort();
    check("subjects", format!("{hs:?}"), format!("{ws:?}"));
    check(
        "storage",
        format!("{:?}", have.storage),
        format!("{:?}", want.storage),
    );
    check(
        "retention",
        format!("{:?}", have.retention),
        format!("{:?}", want.retention),
    );
    check(
        "max_age",
        format!("{:?}", have.max_age),
        format!("{:?}", want.max_age),
    );
    // The server reports "no limit" as -1 whatever the client sent (0 or -1).
    let limit = |v: i64| {
        if v <= 0 {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    check("max_bytes", limit(have.max_bytes), limit(want.max_bytes));
    check(
        "replicas",
        have.num_replicas.max(1).to_string(),
        want.num_replicas.max(1).to_string(),
    );
    out
}

/// Creates the streams that are missing and checks the ones that exist.
///
/// # Errors
/// [`StreamError::Conflict`] when a stream exists with another configuration;
/// [`StreamError::JetStream`] when the server cannot be asked.
pub async fn declare(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), StreamError> {
    for want in desired(settings) {
        let name = want.name.clone();
        let js_err = |action: &'static str, e: &dyn std::fmt::Display| StreamError::JetStream {
            stream: name.clone(),
            action,
            message: e.to_string(),
        };
        match js.get_stream(&name).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| js_err("info", &e))?;
                let diff = differences(&info.config, &want);
                if !diff.is_empty() {
                    return Err(StreamError::Conflict {
                        stream: name,
                        differences: diff.join("; "),
                    });
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(_)
                ) =>
            {
                // Not found (or another JetStream error): try to create; a real
                // failure surfaces from the create call with the server's words.
                js.create_stream(want.clone())
                    .await
                    .map_err(|e| js_err("create", &e))?;
                tracing::info!(stream = %name, "created stream");
            }
            Err(e) => return Err(js_err("lookup", &e)),
        }
    }
    Ok(())
}

/// Opens the [`CHECKPOINTS`] object store, creating it when missing.
///
/// # Errors
/// [`StreamError::JetStream`] when the server refuses.
pub async fn checkpoint_store(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<jetstream::object_store::ObjectStore, StreamError> {
    let err = |action: &'static str, e: &dyn std::fmt::Display| StreamError::JetStream {
        stream: CHECKPOINTS.to_string(),
        action,
        message: e.to_string(),
    };
    match js.get_object_store(CHECKPOINTS).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: CHECKPOINTS.to_string(),
                description: Some("loadshift checkpoint images in flight between nodes".into()),
                storage: StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| err("create", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_config_has_no_differences() {
        for c in desired(&StreamSettings::default()) {
            assert!(differences(&c, &c).is_empty());
        }
    }

    #[test]
    fn a_changed_limit_is_named() {
        let want = desired(&StreamSettings::default()).remove(0);
        let mut have = want.clone();
        have.max_age = Duration::from_secs(60);
        have.subjects = vec!["telemetry.*".into()];
        let d = differences(&have, &want);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("subjects"));
        assert!(d[1].starts_with("max_age"));
    }
}
