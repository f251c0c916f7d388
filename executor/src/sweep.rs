//! Orphaned checkpoint images: a migration deletes its image when it ends
//! either way, but an image whose migration never ended here (both
//! executors gone, a crash before the journal knew of it) would stay in the
//! `CHECKPOINTS` bucket and on tmpfs forever, a whole process's memory
//! kept for nobody. Images are named by their migration's UUIDv7, which
//! carries its creation time; whatever is older than the TTL and not part of
//! a migration this executor is still driving is removed.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::object_store::ObjectStore;
use futures::StreamExt;
use loadshift_events::shutdown::Listener;

use crate::journal::Journal;

/// How old an image of `name` (a migration id) is at `now`; `None` when the
/// name is not a UUIDv7, i.e. not an image loadshift made.
pub fn age(name: &str, now: SystemTime) -> Option<Duration> {
    let id = uuid::Uuid::parse_str(name).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let made = UNIX_EPOCH + Duration::new(secs, nanos);
    Some(now.duration_since(made).unwrap_or_default())
}

/// Whether the image of migration `name` is an orphan: older than `ttl` and
/// not part of a migration the journal still drives.
fn orphan(name: &str, now: SystemTime, ttl: Duration, journal: &Journal) -> bool {
    // A streamed migration's pages sit next to its image folder.
    let name = name.strip_suffix(".pages").unwrap_or(name);
    let Some(a) = age(name, now) else {
        return false;
    };
    if a < ttl {
        return false;
    }
    let live = uuid::Uuid::parse_str(name)
        .ok()
        .and_then(|id| journal.migration(&id).ok().flatten())
        .is_some_and(|m| !m.phase.is_final());
    !live
}

/// Removes the orphans among this node's image folders and the bucket's
/// objects; returns how many of each.
pub async fn sweep_once(
    store: &ObjectStore,
    images_root: &Path,
    journal: &Journal,
    ttl: Duration,
) -> (usize, usize) {
    let now = SystemTime::now();
    let mut local = 0;
    if let Ok(dir) = std::fs::read_dir(images_root) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if orphan(&name, now, ttl, journal) && std::fs::remove_dir_all(entry.path()).is_ok() {
                local += 1;
            }
        }
    }
    let mut stored = 0;
    let mut names = Vec::new();
    match store.list().await {
        Ok(mut list) => {
            while let Some(Ok(info)) = list.next().await {
                names.push(info.name);
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot list the checkpoint bucket"),
    }
    for name in names {
        if orphan(&name, now, ttl, journal) && store.delete(&name).await.is_ok() {
            stored += 1;
        }
    }
    (local, stored)
}

/// Sweeps every `ttl / 4` (at least every minute, at most every 10) until
/// the service shuts down.
pub async fn run(
    store: ObjectStore,
    images_root: std::path::PathBuf,
    journal: Journal,
    ttl: Duration,
    mut stop: Listener,
) {
    let every = (ttl / 4).clamp(Duration::from_secs(60), Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (local, stored) = sweep_once(&store, &images_root, &journal, ttl).await;
                if local + stored > 0 {
                    tracing::info!(local, stored, ttl = ?ttl, "removed orphaned checkpoint images");
                }
            }
            _ = stop.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_id_tells_the_age_of_its_image() {
        let id = uuid::Uuid::now_v7().to_string();
        let later = SystemTime::now() + Duration::from_secs(7200);
        let a = age(&id, later).unwrap();
        assert!(
            a >= Duration::from_secs(7199) && a <= Duration::from_secs(7300),
            "{a:?}"
        );
        assert_eq!(age("not-a-migration", later), None);
        assert_eq!(age("6ba7b810-9dad-41d1-80b4-00c04fd430c8", later), None);
    }

    #[test]
    fn only_old_images_of_migrations_not_in_flight_are_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(&tmp.path().join("j")).unwrap();
        let id = uuid::Uuid::now_v7().to_string();
        let ttl = Duration::from_secs(3600);
        let now = SystemTime::now();
        assert!(!orphan(&id, now, ttl, &journal), "a fresh image");
        let later = now + Duration::from_secs(7200);
        assert!(
            orphan(&id, later, ttl, &journal),
            "an old image nobody drives"
        );
        assert!(!orphan("someone-elses", later, ttl, &journal));
    }
}
