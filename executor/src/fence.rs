//! The migration fence: which side decides where the workload runs, once
//! the source stopped waiting or the target started restoring.
//!
//! A source whose target is silent past the deadline wants the workload
//! back; a target that fetched the image wants to restore it. Both can be
//! right at the same moment, and events alone cannot settle it (each side
//! reads them late). So each side first *claims* the migration in a
//! JetStream key-value bucket with an atomic create: exactly one claim
//! succeeds, per migration, for ever. The source resumes the workload only
//! with its own claim (or after the target released its claim on failing);
//! the target restores only with its own. The workload never runs twice,
//! and a target that lost the race never starts its copy.
//!
//! Keys are never deleted when a migration ends (a delete would let a late
//! claim succeed); the bucket's age limit removes them after a week.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use uuid::Uuid;

/// The bucket holding one key per migration that reached a claim.
pub const BUCKET: &str = loadshift_events::stream::MIGRATION_FENCES;

/// How long a claim is kept: far longer than any migration or outage.
const KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who holds a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The source took it back: the workload runs on the source.
    Source,
    /// The target claimed it to restore: only the target says where the
    /// workload runs.
    Target,
    /// The target claimed it, then failed and gave it back: the source
    /// resumes the workload.
    Released,
}

impl Holder {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Holder::Source => b"source",
            Holder::Target => b"target",
            Holder::Released => b"released",
        }
    }

    fn parse(v: &[u8]) -> Option<Holder> {
        [Holder::Source, Holder::Target, Holder::Released]
            .into_iter()
            .find(|h| h.as_bytes() == v)
    }
}

/// Why the fence could not be read or written (the caller then waits and
/// tries again; it never guesses).
#[derive(Debug, Clone, thiserror::Error)]
#[error("migration fence {action} of {migration}: {message}")]
pub struct FenceError {
    /// claim, read or release.
    pub action: &'static str,
    /// The migration.
    pub migration: Uuid,
    /// What the server or client said.
    pub message: String,
}

/// What the saga needs from the fence.
pub trait Fence: Send + Sync + 'static {
    /// Claims `migration` for `side` (source or target) unless someone holds
    /// it already; returns who holds it now (`side` itself when the claim
    /// succeeded, or when this side had claimed it before a crash).
    fn claim(
        &self,
        migration: Uuid,
        side: Holder,
    ) -> impl Future<Output = Result<Holder, FenceError>> + Send;

    /// Who holds `migration`, if anyone, without claiming it.
    fn holder(
        &self,
        migration: Uuid,
    ) -> impl Future<Output = Result<Option<Holder>, FenceError>> + Send;

    /// The target gives back a migration it claimed and could not restore.
    fn release(&self, migration: Uuid) -> impl Future<Output = Result<(), FenceError>> + Send;
}

/// The fence in a JetStream key-value bucket.
#[derive(Clone)]
pub struct KvFence {
    kv: kv::Store,
}

impl KvFence {
    /// Opens the [`BUCKET`], creating it when missing, with `replicas`
    /// copies (as the streams have).
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, FenceError> {
        let err = |e: &dyn std::fmt::Display| FenceError {
            action: "open",
            migration: Uuid::nil(),
            message: e.to_string(),
        };
        if let Ok(kv) = js.get_key_value(BUCKET).await {
            return Ok(Self { kv });
        }
        let kv = js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_string(),
                description: "loadshift: who holds each migration (source or target)".into(),
                history: 1,
                max_age: KEPT,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        Ok(Self { kv })
    }

    async fn read(&self, migration: Uuid) -> Result<Option<(Holder, u64)>, FenceError> {
        let entry = self
            .kv
            .entry(migration.to_string())
            .await
            .map_err(|e| FenceError {
                action: "read",
                migration,
                message: e.to_string(),
            })?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Holder::parse(&e.value).map(|h| (h, e.revision))))
    }
}

impl Fence for KvFence {
    async fn claim(&self, migration: Uuid, side: Holder) -> Result<Holder, FenceError> {
        let created = self
            .kv
            .create(migration.to_string(), side.as_bytes().to_vec().into())
            .await;
        match created {
            Ok(_) => Ok(side),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.read(migration).await? {
                    Some((holder, _)) => Ok(holder),
                    None => Err(FenceError {
                        action: "claim",
                        migration,
                        message: "the key exists but holds no claim".into(),
                    }),
                }
            }
            Err(e) => Err(FenceError {
                action: "claim",
                migration,
                message: e.to_string(),
            }),
        }
    }

    async fn holder(&self, migration: Uuid) -> Result<Option<Holder>, FenceError> {
        Ok(self.read(migration).await?.map(|(h, _)| h))
    }

    async fn release(&self, migration: Uuid) -> Result<(), FenceError> {
        let err = |message: String| FenceError {
            action: "release",
            migration,
            message,
        };
        match self.read(migration).await? {
            Some((Holder::Target, revision)) => self
                .kv
                .update(
                    migration.to_string(),
                    Holder::Released.as_bytes().to_vec().into(),
                    revision,
                )
                .await
                .map(|_| ())
                .map_err(|e| err(e.to_string())),
            Some((Holder::Released, _)) => Ok(()),
            other => Err(err(format!(
                "the target does not hold it (holder: {:?})",
                other.map(|(h, _)| h)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_read_back_as_written() {
        for h in [Holder::Source, Holder::Target, Holder::Released] {
            assert_eq!(Holder::parse(h.as_bytes()), Some(h));
        }
        assert_eq!(Holder::parse(b"someone"), None);
    }
}
