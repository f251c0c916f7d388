//! A migration, as events: requested → checkpointed → restored → completed,
//! or failed → rolled_back, or (the target silent past its deadline)
//! fenced → rolled_back.
//!
//! Every event's subject names the node that must act next: the source for
//! `requested`, `restored` and `failed`; the target for `checkpointed` and
//! `fenced`; the source again for the final `completed` and `rolled_back`. Every event
//! carries the migration id, so a replayed or duplicated one is recognised.
//!
//! A decision the brain could not publish in time is taken back with
//! `withdrawn` (on the source's subject): the planner frees both nodes, and a
//! source that never saw the request has nothing to do.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bounds::{self, Bounded, OutOfRange};
use crate::subject::NodeName;
use crate::workload::{WorkloadName, WorkloadSpec};

/// Why a migration was asked for: everything the brain knew, so every
/// decision can be explained. A person's request carries just a summary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// One sentence for people.
    pub summary: String,
    /// Predicted overload probability of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
    /// Version of the model that predicted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    /// The features that weighed most, with their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<(String, f64)>,
    /// Expected CPU load of the source after the move, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_load_after_pct: Option<f32>,
    /// Expected CPU load of the target after the move, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_load_after_pct: Option<f32>,
    /// What the planner expected the move to cost, so that the actual
    /// timings in `completed` can be held against it (absent from a
    /// person's request and from events written before estimates existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CostEstimate>,
}

/// The planner's estimate of a move's cost, made before it asks for it: the
/// planner prefers the cheap move among those that relieve a node, and the
/// dashboard shows how far the estimate was from what the move then cost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostEstimate {
    /// Bytes the image is expected to hold when the workload is frozen.
    pub image_bytes: u64,
    /// Expected time frozen, ms (compare with `Timings::downtime_ms`).
    pub freeze_ms: f64,
    /// Expected time from the request to completion, ms (compare with
    /// `Timings::total_ms`).
    pub total_ms: f64,
}

impl CostEstimate {
    /// How far the freeze estimate was from the freeze measured, as a
    /// signed fraction of the actual (`+0.25`: 25 % too high); `None`
    /// without a positive actual. What the dashboard shows per migration.
    pub fn freeze_error(&self, actual: &Timings) -> Option<f64> {
        relative_error(self.freeze_ms, actual.downtime_ms)
    }

    /// The same for the whole migration's time.
    pub fn total_error(&self, actual: &Timings) -> Option<f64> {
        relative_error(self.total_ms, actual.total_ms)
    }
}

fn relative_error(estimated_ms: f64, actual_ms: Option<f64>) -> Option<f64> {
    actual_ms
        .filter(|a| *a > 0.0)
        .map(|a| (estimated_ms - a) / a)
}

/// Move `workload` from `source` to `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requested {
    /// The migration's id; every later event carries it.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it runs now (named in the subject).
    pub source: NodeName,
    /// Where it should run.
    pub target: NodeName,
    /// Who asked (`brain`, a user name).
    pub requested_by: String,
    /// Why.
    pub reason: Reason,
    /// How the memory should travel: `auto` (the planner's choice) lets the
    /// source pick; an explicit mode it cannot run falls back (lazy → stream
    /// → copy) with the reason in `completed`. Absent in older requests:
    /// `auto`.
    #[serde(default, skip_serializing_if = "Mode::is_auto")]
    pub mode: Mode,
}

/// How a migration moves the workload's memory. It exists because the
/// freeze of a copy grows with memory (dump, upload, download, restore
/// follow one another) and the other roads trade that against other risks:
/// an operator or the planner must be able to ask for one and see which ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Let the source choose (copy for small images, stream otherwise).
    #[default]
    Auto,
    /// Dump to the node, store the image in the object store, fetch, restore.
    Copy,
    /// Pages go from the source's dump straight to the target over a direct,
    /// authenticated connection; the rest travels through the object store.
    Stream,
    /// Post-copy: the workload resumes on the target before its memory has
    /// arrived; pages follow on fault.
    Lazy,
}

impl Mode {
    /// Every mode, in the order a person reads them (`--mode` choices).
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Copy, Mode::Stream, Mode::Lazy];

    /// Whether the source chooses (`serde` leaves it out then).
    pub fn is_auto(&self) -> bool {
        *self == Mode::Auto
    }

    /// Its name on the wire and the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Copy => "copy",
            Mode::Stream => "stream",
            Mode::Lazy => "lazy",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is none of `auto`, `copy`, `stream`, `lazy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown migration mode {0:?}: expected auto, copy, stream or lazy")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// The pages a streamed migration sent straight to the target, as the
/// source's end of the connection counted them: the target restores only
/// if what it received is the same (integrity of the direct connection,
/// on top of CRIU's own image checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamedPages {
    /// Bytes the source's dump sent over the connection.
    pub bytes: u64,
    /// SHA-256 of those bytes, hex: what sources before BLAKE3 announced
    /// (empty from newer ones; kept so their events still read).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// BLAKE3 of those bytes, hex: the digest both ends compute now. It is
    /// several times faster than SHA-256 on the same core (SIMD over many
    /// chunks at once), and every byte of the pages is hashed on both
    /// nodes while the workload is frozen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blake3: String,
}

/// The steps of a migration, for timings and failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The source checks the request (workload here, target alive).
    Validate,
    /// The source freezes and dumps the workload.
    Dump,
    /// The source stores the image in the object store.
    Upload,
    /// The target fetches the image.
    Download,
    /// The target checks the image's digest.
    Verify,
    /// The target restores the workload.
    Restore,
    /// The source removes what is left of the workload.
    Cleanup,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// How long each step took, in milliseconds; a step not (yet) taken is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// Freeze and dump on the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_ms: Option<f64>,
    /// Packing and storing the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_ms: Option<f64>,
    /// Fetching the image on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_ms: Option<f64>,
    /// Restoring on the target, until the workload runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<f64>,
    /// Cleaning up on the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_ms: Option<f64>,
    /// Frozen time: from the moment the workload stopped to the moment it ran
    /// again on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    /// From the request to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    /// Post-copy (`lazy`): from the workload's resume on the target to the
    /// last of its pages arriving there, the time it ran on two nodes'
    /// memory (and would die with either); absent in the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcopy_ms: Option<f64>,
}

impl Timings {
    /// Every timing with its step's name (`dump`, ..., `downtime`, `total`),
    /// in the order of a migration: what a table or a one-line summary
    /// lists, written once for the CLI and the dashboard.
    pub fn named(&self) -> [(&'static str, Option<f64>); 8] {
        [
            ("dump", self.dump_ms),
            ("upload", self.upload_ms),
            ("download", self.download_ms),
            ("restore", self.restore_ms),
            ("postcopy", self.postcopy_ms),
            ("cleanup", self.cleanup_ms),
            ("downtime", self.downtime_ms),
            ("total", self.total_ms),
        ]
    }
}

/// The source dumped the workload and stored its image: the target may restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpointed {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it was dumped.
    pub source: NodeName,
    /// Where it must be restored (named in the subject).
    pub target: NodeName,
    /// What it is, so the target can recreate it.
    pub spec: WorkloadSpec,
    /// The object's name in the `CHECKPOINTS` bucket.
    pub object: String,
    /// SHA-256 of the object, hex.
    pub sha256: String,
    /// Size of the object in bytes.
    pub image_bytes: u64,
    /// Timings so far.
    pub timings: Timings,
    /// When the workload was frozen (unix ms), so the target can tell the downtime.
    pub frozen_at_ms: i64,
    /// Streamed mode: the memory pages already went straight to the target
    /// (the object holds the rest of the image); what the source sent, so
    /// the target checks what it received. Absent for a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamedPages>,
    /// Post-copy: the object holds everything but the memory pages, which
    /// the target's lazy-pages daemon fetches from the source's dump over
    /// the connection the target offered (and the workload runs on the
    /// target before they all arrived). False for a copy or a stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

/// The target runs the workload: the source may clean up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restored {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it came from (named in the subject: it cleans up).
    pub source: NodeName,
    /// Where it runs now.
    pub target: NodeName,
    /// Its pid on the target, for a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its container id on the target, for docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Size of the image moved.
    pub image_bytes: u64,
    /// Timings so far.
    pub timings: Timings,
}

/// The migration is over: the workload runs on the target only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completed {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it came from (named in the subject).
    pub source: NodeName,
    /// Where it runs now.
    pub target: NodeName,
    /// Size of the image moved.
    pub image_bytes: u64,
    /// Every step's duration, the downtime and the total.
    pub timings: Timings,
    /// The mode that ran (`copy`, `stream`, `lazy`); absent in events from
    /// before modes existed, which were all copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Why the mode that ran is not the one requested, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A step failed; the source must make sure the workload runs (named in the
/// subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it came from (named in the subject).
    pub source: NodeName,
    /// Where it was going.
    pub target: NodeName,
    /// The step that failed.
    pub step: Step,
    /// What went wrong, in words.
    pub reason: String,
}

/// After a failure the workload runs on the source again (or never stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolledBack {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it runs (named in the subject).
    pub source: NodeName,
    /// Where it was going.
    pub target: NodeName,
    /// Its pid, for a process resumed from its own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// The brain takes back a decision it could not publish in time (or at
/// all): the migration will not happen, and its nodes are free again.
///
/// It exists so that a decision lost between the planner and the log never
/// keeps two nodes busy: the planner counts a migration in flight from the
/// moment it decides, and only a fact in the log can end that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdrawn {
    /// The migration that will not happen.
    pub migration: Uuid,
    /// Which workload it would have moved.
    pub workload: WorkloadName,
    /// Where the workload stays (named in the subject).
    pub source: NodeName,
    /// Where it would have gone.
    pub target: NodeName,
    /// Why it was withdrawn, in words.
    pub reason: String,
}

impl Bounded for Reason {
    fn check(&self) -> Result<(), OutOfRange> {
        bounds::optional(self.probability, |p| {
            bounds::probability("reason.probability", p)
        })?;
        for (_, v) in &self.top_features {
            bounds::finite("reason.top_features", *v)?;
        }
        bounds::optional(self.source_load_after_pct, |p| {
            bounds::usage_pct("reason.source_load_after_pct", p)
        })?;
        bounds::optional(self.target_load_after_pct, |p| {
            bounds::usage_pct("reason.target_load_after_pct", p)
        })?;
        bounds::optional(self.estimate, |e| {
            bounds::duration_ms("reason.estimate.freeze_ms", e.freeze_ms)?;
            bounds::duration_ms("reason.estimate.total_ms", e.total_ms)
        })
    }
}

impl Bounded for Requested {
    fn check(&self) -> Result<(), OutOfRange> {
        self.reason.check()
    }
}

/// Timings are measured across two clocks (the downtime starts on the
/// source and ends on the target), which may disagree a little: only
/// finiteness is required, a slightly negative duration is still a fact.
impl Bounded for Timings {
    fn check(&self) -> Result<(), OutOfRange> {
        for (field, v) in [
            ("timings.dump_ms", self.dump_ms),
            ("timings.upload_ms", self.upload_ms),
            ("timings.download_ms", self.download_ms),
            ("timings.restore_ms", self.restore_ms),
            ("timings.cleanup_ms", self.cleanup_ms),
            ("timings.downtime_ms", self.downtime_ms),
            ("timings.total_ms", self.total_ms),
            ("timings.postcopy_ms", self.postcopy_ms),
        ] {
            bounds::optional(v, |v| bounds::finite(field, v))?;
        }
        Ok(())
    }
}

impl Bounded for Checkpointed {
    fn check(&self) -> Result<(), OutOfRange> {
        self.timings.check()
    }
}

impl Bounded for Restored {
    fn check(&self) -> Result<(), OutOfRange> {
        self.timings.check()
    }
}

impl Bounded for Completed {
    fn check(&self) -> Result<(), OutOfRange> {
        self.timings.check()
    }
}

bounds::no_numbers_to_check!(Failed, RolledBack, Withdrawn);

/// The source took the migration back: the target did not restore in time
/// (or a failure was announced before the target claimed the restore), so
/// the workload resumes on the source and the target must not restore it
/// (named in the subject). The source won the migration's fence before
/// announcing this, so a late restore on the target is refused there: the
/// workload never runs on both nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fenced {
    /// The migration.
    pub migration: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// Where it runs again.
    pub source: NodeName,
    /// Where it will not run (named in the subject).
    pub target: NodeName,
    /// How long the source waited for the target, in milliseconds.
    pub waited_ms: f64,
    /// Why the source stopped waiting, in words.
    pub reason: String,
}

impl Bounded for Fenced {
    fn check(&self) -> Result<(), OutOfRange> {
        bounds::finite("waited_ms", self.waited_ms)
    }
}

/// `loadshift.executor.<node>.stream`: where a source executor asks `node`'s
/// executor to take one migration's pages over a direct connection (a plain
/// NATS request, like the ping: the answer, an address and a one-time
/// token, is for the asker only and never enters the log). In the contract
/// because the permissions name it too.
pub fn stream_offer_subject(node: &NodeName) -> String {
    format!("loadshift.executor.{node}.stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_error_is_signed_and_relative_to_the_actual() {
        let e = CostEstimate {
            image_bytes: 1 << 20,
            freeze_ms: 150.0,
            total_ms: 500.0,
        };
        let actual = Timings {
            downtime_ms: Some(100.0),
            total_ms: Some(1000.0),
            ..Timings::default()
        };
        assert_eq!(e.freeze_error(&actual), Some(0.5));
        assert_eq!(e.total_error(&actual), Some(-0.5));
        assert_eq!(e.freeze_error(&Timings::default()), None);
        let zero = Timings {
            downtime_ms: Some(0.0),
            ..Timings::default()
        };
        assert_eq!(e.freeze_error(&zero), None);
    }

    #[test]
    fn a_request_without_an_estimate_still_decodes_and_a_bad_one_is_refused() {
        let old = r#"{"summary":"by hand"}"#;
        let r: Reason = serde_json::from_str(old).unwrap();
        assert_eq!(r.estimate, None);
        let bad = Reason {
            estimate: Some(CostEstimate {
                image_bytes: 1,
                freeze_ms: -1.0,
                total_ms: 1.0,
            }),
            ..Reason::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn every_mode_reads_back_from_its_name_and_a_wrong_one_says_which_exist() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::json!(m.as_str())
            );
        }
        let err = "fast".parse::<Mode>().unwrap_err().to_string();
        assert!(err.contains("auto, copy, stream or lazy"), "{err}");
    }

    #[test]
    fn events_from_before_modes_read_as_auto_requests_and_copies() {
        let r: Requested = serde_json::from_str(
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","requested_by":"brain","reason":{"summary":"s"}}"#,
        )
        .unwrap();
        assert_eq!(r.mode, Mode::Auto);
        // `auto` is left out on the wire, so older readers still read it.
        assert!(!serde_json::to_string(&r).unwrap().contains("mode"));
        let c: Completed = serde_json::from_str(
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","image_bytes":1,"timings":{}}"#,
        )
        .unwrap();
        assert_eq!((c.mode, c.fallback), (None, None));
        let streamed = Requested {
            mode: Mode::Stream,
            ..r
        };
        let back: Requested =
            serde_json::from_str(&serde_json::to_string(&streamed).unwrap()).unwrap();
        assert_eq!(back.mode, Mode::Stream);
    }
}
