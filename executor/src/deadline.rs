//! How long each wait of the saga may last.
//!
//! A workload frozen on the source is down until it runs again somewhere, so
//! no wait may be open-ended: a dead target, a server that went away or an
//! image that never arrives must end in a decision. The bound grows with
//! the image (moving 1 GiB takes longer than moving 10 MiB) at the speed
//! this node measured on its earlier migrations, with slack for a slower
//! moment, and never falls under a floor (small images still pay fixed
//! costs: connections, criu start-up, a busy machine).
//!
//! criu itself is bounded too: a dump or restore that hangs (a workload
//! frozen in its cgroup never lets criu seize it) is killed at its deadline
//! and the saga goes on as after any failed step.

use std::time::Duration;

use crate::clock::{within, Clock};
use crate::fence::Fence;
use crate::image_store::ImageStore;
use crate::journal::MigrationRecord;
use crate::liveness::Peers;
use crate::runtime::{Handle, Runtime};
use crate::saga::Executor;
use crate::stream::Link;
use loadshift_events::migration::StreamedPages;

/// The floor when none is configured.
pub const DEFAULT_FLOOR: Duration = Duration::from_secs(10);

/// The speed assumed before any migration was measured here: far below what
/// loopback and a LAN do (hundreds of MB/s), so a first migration is not cut
/// short.
pub const UNMEASURED_BYTES_PER_S: f64 = 20.0 * 1024.0 * 1024.0;

/// The shortest a criu dump or restore may take before it is killed,
/// whatever the deadline floor: criu's own fixed costs do not shrink with a
/// floor shortened to fence a silent target sooner, and a dump killed while
/// its code runs inside the workload may take the workload with it.
pub const CRIU_FLOOR: Duration = Duration::from_secs(10);

/// How many times the expected duration a wait may take.
pub const SLACK: f64 = 4.0;

/// How much a new measurement moves the remembered speed (the rest is the
/// old value): one slow migration does not halve the next deadline.
const WEIGHT_OF_NEW: f64 = 0.3;

/// The bounds of this node's waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadlines {
    /// No wait is shorter than this.
    pub floor: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            floor: DEFAULT_FLOOR,
        }
    }
}

impl Deadlines {
    /// How long moving `bytes` through the store (one way) may take, at the
    /// measured speed `bytes_per_s` (none yet: [`UNMEASURED_BYTES_PER_S`]).
    pub fn transfer(&self, bytes: u64, bytes_per_s: Option<f64>) -> Duration {
        let speed = bytes_per_s
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(UNMEASURED_BYTES_PER_S);
        let secs = bytes as f64 / speed * SLACK;
        let scaled = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        scaled.max(self.floor)
    }

    /// How long a criu dump or restore of an image of `bytes` may take: it
    /// writes or reads the image on this node's own folder, at least as fast
    /// as the store moves it, so the store's unmeasured speed bounds it;
    /// never less than [`CRIU_FLOOR`].
    pub fn criu(&self, bytes: u64) -> Duration {
        self.transfer(bytes, None).max(CRIU_FLOOR)
    }

    /// How long a streamed dump may take: a criu dump whose pages go to
    /// the target while it runs, so criu's own bound or the transfer of
    /// `bytes` at `bytes_per_s` (the page stream moves as the store would),
    /// whichever is longer.
    pub fn streamed_dump(&self, bytes: u64, bytes_per_s: Option<f64>) -> Duration {
        self.criu(bytes).max(self.transfer(bytes, bytes_per_s))
    }

    /// How long the source waits for the target after announcing the image:
    /// the target's download, then its restore (which reads the same bytes
    /// again, from tmpfs).
    pub fn target(&self, bytes: u64, bytes_per_s: Option<f64>) -> Duration {
        self.transfer(bytes, bytes_per_s)
            .saturating_add(self.transfer(bytes, bytes_per_s))
    }
}

/// The speed seen moving `bytes` in `took`, or `None` when the sample says
/// nothing (nothing moved, or too fast to time).
pub fn speed(bytes: u64, took: Duration) -> Option<f64> {
    let secs = took.as_secs_f64();
    (bytes > 0 && secs >= 0.001).then(|| bytes as f64 / secs)
}

/// The remembered speed after measuring `sample`.
pub fn blend(old: Option<f64>, sample: f64) -> f64 {
    match old.filter(|o| o.is_finite() && *o > 0.0) {
        Some(o) => o * (1.0 - WEIGHT_OF_NEW) + sample * WEIGHT_OF_NEW,
        None => sample,
    }
}

impl<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence> Executor<R, S, P, C, F> {
    /// Dumps migration `m`'s workload (`handle`) into `m.images`, bounded by
    /// [`Deadlines::criu`]; past it the dump is killed and `Err` says so
    /// (the workload runs on if criu had not stopped it).
    ///
    /// # Errors
    /// The reason, in words, for the `failed` event.
    pub async fn dump_within(&self, m: &MigrationRecord, handle: &Handle) -> Result<(), String> {
        let limit = self.deadlines.criu(m.image_bytes);
        let dump = self.runtime.dump(&m.workload, handle, &m.images);
        self.dump_bounded(m, limit, dump).await
    }

    /// Dumps migration `m`'s workload with its pages streamed over `link`,
    /// bounded by [`Deadlines::streamed_dump`] at the speed this node
    /// measured; past it the dump is killed as in [`Self::dump_within`].
    ///
    /// # Errors
    /// The reason, in words, for the `failed` event.
    pub async fn dump_streamed_within(
        &self,
        m: &MigrationRecord,
        handle: &Handle,
        link: Link,
    ) -> Result<StreamedPages, String> {
        let speed = self.journal.speed().ok().flatten();
        let limit = self.deadlines.streamed_dump(m.image_bytes, speed);
        let dump = self
            .runtime
            .dump_streamed(&m.workload, handle, &m.images, link);
        self.dump_bounded(m, limit, dump).await
    }

    /// Runs `dump` for at most `limit`; past it, kills criu on `m`'s image.
    async fn dump_bounded<T, E: std::fmt::Display>(
        &self,
        m: &MigrationRecord,
        limit: Duration,
        dump: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match within(&self.clock, limit, dump).await {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(_) => {
                self.abandon(m).await;
                Err(format!(
                    "the dump did not finish within {:.1} s and was killed",
                    limit.as_secs_f64()
                ))
            }
        }
    }

    /// Restores migration `m`'s workload from `m.images`, bounded by
    /// [`Deadlines::criu`]; past it the restore and the tasks it was
    /// building are killed, unless it finished as time ran out (then its
    /// copy is the answer).
    ///
    /// # Errors
    /// The reason, in words.
    pub async fn restore_within(&self, m: &MigrationRecord) -> Result<Handle, String> {
        let limit = self.deadlines.criu(m.image_bytes);
        let restore = self
            .runtime
            .restore(&m.workload, &m.spec, &m.images, &m.files);
        match within(&self.clock, limit, restore).await {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(_) => {
                self.abandon(m).await;
                match self.runtime.find_restored(&m.workload, &m.images).await {
                    Some(handle) => Ok(handle),
                    None => Err(format!(
                        "the restore did not finish within {:.1} s and was killed",
                        limit.as_secs_f64()
                    )),
                }
            }
        }
    }

    /// Kills what works on `m`'s image and waits until it is gone.
    async fn abandon(&self, m: &MigrationRecord) {
        tracing::warn!(migration = %m.id, images = %m.images.display(), "criu past its deadline: killing it");
        self.runtime.abandon(&m.images);
        self.runtime.settle(&m.images).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_small_image_gets_the_floor() {
        let d = Deadlines::default();
        assert_eq!(d.transfer(MIB, Some(100.0 * MIB as f64)), DEFAULT_FLOOR);
    }

    #[test]
    fn a_big_image_gets_time_in_proportion_at_the_measured_speed() {
        let d = Deadlines {
            floor: Duration::from_secs(1),
        };
        // 1 GiB at 100 MiB/s is ~10 s; with slack, 4 times that.
        let t = d.transfer(1024 * MIB, Some(100.0 * MIB as f64));
        assert_eq!(t, Duration::from_secs_f64(1024.0 / 100.0 * SLACK));
        assert_eq!(
            d.target(1024 * MIB, Some(100.0 * MIB as f64)),
            t + t,
            "download, then restore"
        );
    }

    #[test]
    fn before_any_measurement_a_slow_speed_is_assumed() {
        let d = Deadlines {
            floor: Duration::ZERO,
        };
        let unmeasured = d.transfer(512 * MIB, None);
        let measured = d.transfer(512 * MIB, Some(500.0 * MIB as f64));
        assert!(unmeasured > measured);
        assert_eq!(d.transfer(512 * MIB, Some(f64::NAN)), unmeasured);
        assert_eq!(d.transfer(512 * MIB, Some(-1.0)), unmeasured);
    }

    #[test]
    fn an_absurd_size_is_bounded_not_a_panic() {
        let d = Deadlines::default();
        assert_eq!(d.transfer(u64::MAX, Some(1e-300)), Duration::MAX);
        assert_eq!(d.target(u64::MAX, Some(1e-300)), Duration::MAX);
    }

    #[test]
    fn criu_gets_its_own_floor_and_time_in_proportion_to_the_image() {
        let short = Deadlines {
            floor: Duration::from_secs(1),
        };
        assert_eq!(short.criu(MIB), CRIU_FLOOR);
        assert_eq!(short.criu(1024 * MIB), short.transfer(1024 * MIB, None));
        assert!(short.criu(1024 * MIB) > CRIU_FLOOR);
    }

    #[test]
    fn a_streamed_dump_gets_criu_s_bound_or_the_transfer_s_whichever_is_longer() {
        let d = Deadlines {
            floor: Duration::from_secs(1),
        };
        assert_eq!(d.streamed_dump(MIB, Some(100.0 * MIB as f64)), CRIU_FLOOR);
        // Slower than the store's unmeasured speed: the transfer bounds it.
        let slow = Some(MIB as f64);
        assert_eq!(
            d.streamed_dump(512 * MIB, slow),
            d.transfer(512 * MIB, slow)
        );
        assert!(d.streamed_dump(512 * MIB, slow) > d.criu(512 * MIB));
    }

    #[test]
    fn speeds_are_measured_and_blended() {
        assert_eq!(speed(0, Duration::from_secs(1)), None);
        assert_eq!(speed(MIB, Duration::ZERO), None);
        assert_eq!(speed(MIB, Duration::from_secs(2)), Some(MIB as f64 / 2.0));
        assert_eq!(blend(None, 10.0), 10.0);
        assert!((blend(Some(10.0), 20.0) - 13.0).abs() < 1e-9);
    }
}
