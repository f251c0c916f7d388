//! The kinds of event and what each carries.
//!
//! Events are past-tense facts (`NodeJoined`), named `family.verb` in the
//! envelope's `kind`. A consumer matches on [`Event`]; a kind this build does not
//! know decodes to an error the consumer logs and parks, never a panic.

use serde::{Deserialize, Serialize};

use crate::bounds::{Bounded, OutOfRange};
use crate::cordon;
use crate::migration;
use crate::model;
use crate::subject::NodeName;
use crate::telemetry::Sample;
use crate::workload;

/// Declares every kind once: its `Kind` variant, its `Event` variant with the
/// payload type, and its `kind` string, so the three can never disagree.
macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal, )*) => {
        /// The `kind` string of each event, in one place.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Kind {
            $( $(#[$doc])* $variant, )*
        }

        impl Kind {
            /// Every kind this build knows.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The string written in the envelope.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Kind::$variant => $name, )*
                }
            }
        }

        /// One decoded event payload.
        ///
        /// Non-exhaustive: the contract grows (model events next), and a
        /// consumer that does not care about a new kind must keep compiling and
        /// count it rather than break.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Event {
            $( $(#[$doc])* $variant($payload), )*
        }

        impl Event {
            /// This event's kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $( Event::$variant(_) => Kind::$variant, )*
                }
            }

        }

        /// Serializes the payload in place, without an intermediate
        /// `serde_json::Value` (this runs once per published sample).
        impl Serialize for Event {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Event::$variant(p) => p.serialize(s), )*
                }
            }
        }

        impl Event {

            /// Decodes a payload of a known kind and checks its numbers
            /// against their ranges.
            pub(crate) fn from_value(
                kind: Kind,
                payload: &serde_json::value::RawValue,
            ) -> Result<Event, PayloadError> {
                let s = payload.get();
                Ok(match kind {
                    $( Kind::$variant => {
                        let p: $payload = serde_json::from_str(s).map_err(PayloadError::Json)?;
                        p.check().map_err(PayloadError::Range)?;
                        Event::$variant(p)
                    } )*
                })
            }

            /// Checks the payload's numbers against their ranges (before
            /// it is written: a reader would refuse it).
            ///
            /// # Errors
            /// The first [`OutOfRange`] value.
            pub fn check(&self) -> Result<(), OutOfRange> {
                match self {
                    $( Event::$variant(p) => p.check(), )*
                }
            }
        }
    };
}

kinds! {
    /// A telemetry sample.
    TelemetrySample(Sample) = "telemetry.sample",
    /// A node came up.
    NodeJoined(NodeJoined) = "node.joined",
    /// A node left.
    NodeLeft(NodeLeft) = "node.left",
    /// Someone asks a node to start a workload.
    WorkloadStartRequested(workload::StartRequested) = "workload.start_requested",
    /// A workload runs on the emitting node.
    WorkloadStarted(workload::Started) = "workload.started",
    /// A node could not start a workload.
    WorkloadStartFailed(workload::StartFailed) = "workload.start_failed",
    /// A workload ended on its own.
    WorkloadExited(workload::Exited) = "workload.exited",
    /// Someone asks the node that holds a workload to stop it.
    WorkloadStopRequested(workload::StopRequested) = "workload.stop_requested",
    /// Someone asks to move a workload.
    MigrationRequested(migration::Requested) = "migration.requested",
    /// The source dumped and stored the workload.
    MigrationCheckpointed(migration::Checkpointed) = "migration.checkpointed",
    /// The target restored the workload.
    MigrationRestored(migration::Restored) = "migration.restored",
    /// The migration is over; the workload runs on the target.
    MigrationCompleted(migration::Completed) = "migration.completed",
    /// A step failed.
    MigrationFailed(migration::Failed) = "migration.failed",
    /// The workload runs on the source again after a failure.
    MigrationRolledBack(migration::RolledBack) = "migration.rolled_back",
    /// The brain took back a decision it could not publish.
    MigrationWithdrawn(migration::Withdrawn) = "migration.withdrawn",
    /// The source took a migration back from a target that was too late.
    MigrationFenced(migration::Fenced) = "migration.fenced",
    /// The brain found no good move for a node in trouble.
    MigrationDeferred(model::Deferred) = "migration.deferred",
    /// Someone asks the brain to retrain.
    ModelTrainRequested(model::TrainRequested) = "model.train_requested",
    /// A model was trained and scored.
    ModelTrained(model::Trained) = "model.trained",
    /// A model became the one the brain predicts with.
    ModelActivated(model::Activated) = "model.activated",
    /// The brain's belief about a node changed.
    NodePredicted(model::Predicted) = "node.predicted",
    /// The executor sampled its workloads' resource use.
    WorkloadUsage(model::WorkloadUsage) = "telemetry.workloads",
    /// Someone asks for a node to be emptied and to take no new work.
    NodeDrainRequested(cordon::DrainRequested) = "node.drain_requested",
    /// A drained node takes work again.
    NodeUncordoned(cordon::Uncordoned) = "node.uncordoned",
    /// The brain cannot move a workload off a draining node, and says why.
    NodeDrainBlocked(cordon::DrainBlocked) = "node.drain_blocked",
}

/// Why a payload of a known kind was refused.
#[derive(Debug)]
pub(crate) enum PayloadError {
    /// It does not have the shape of its kind.
    Json(serde_json::Error),
    /// It has the shape, but a number is out of its range.
    Range(OutOfRange),
}

impl Kind {
    /// Looks a kind string up; `None` for a kind this build does not know.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl Event {
    /// The node named in this event's subject: the node that must act on it
    /// (a request's source, a checkpoint's target), or the emitter for facts
    /// about itself.
    pub fn subject_node<'a>(&'a self, emitter: &'a NodeName) -> &'a NodeName {
        match self {
            Event::TelemetrySample(_)
            | Event::NodeJoined(_)
            | Event::NodeLeft(_)
            | Event::WorkloadStarted(_)
            | Event::WorkloadStartFailed(_)
            | Event::WorkloadExited(_)
            | Event::ModelTrainRequested(_)
            | Event::ModelTrained(_)
            | Event::ModelActivated(_)
            | Event::WorkloadUsage(_) => emitter,
            Event::MigrationDeferred(p) => &p.source,
            Event::NodePredicted(p) => &p.node,
            Event::NodeDrainRequested(p) => &p.node,
            Event::NodeUncordoned(p) => &p.node,
            Event::NodeDrainBlocked(p) => &p.node,
            Event::WorkloadStartRequested(p) => &p.node,
            Event::WorkloadStopRequested(p) => &p.node,
            Event::MigrationRequested(p) => &p.source,
            Event::MigrationCheckpointed(p) => &p.target,
            Event::MigrationRestored(p) => &p.source,
            Event::MigrationCompleted(p) => &p.source,
            Event::MigrationFailed(p) => &p.source,
            Event::MigrationRolledBack(p) => &p.source,
            Event::MigrationWithdrawn(p) => &p.source,
            Event::MigrationFenced(p) => &p.target,
        }
    }

    /// The subject this event is published on when `emitter` emits it:
    /// `telemetry.<node>` for samples, `<family>.<node>.<verb>` for the rest
    /// (so `telemetry.<node>.workloads` also lands in TELEMETRY).
    pub fn subject(&self, emitter: &NodeName) -> String {
        let node = self.subject_node(emitter);
        let kind = self.kind().as_str();
        match kind.split_once('.') {
            Some(("telemetry", "sample")) | None => format!("telemetry.{node}"),
            Some((family, verb)) => format!("{family}.{node}.{verb}"),
        }
    }
}

/// A node came up: what it offers, so the brain can place work on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeJoined {
    /// Where its telemetry comes from (`host`, `cgroup:...`, `trace:...`).
    pub source: String,
    /// Declared CPU capacity in cores.
    pub capacity_cores: f32,
    /// Declared memory capacity in bytes (0 when unknown).
    pub memory_bytes: u64,
    /// The agent's version, to tell builds apart when reading old logs.
    pub agent_version: String,
}

/// A node left on purpose (its agent was stopped); a node that just goes
/// silent never sends this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLeft {
    /// Why it left (`SIGTERM`, `SIGINT`, `trace ended`).
    pub reason: String,
    /// How many samples the agent produced in its life.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::migration::{Reason, Requested, Step};
    use crate::workload::{WorkloadName, WorkloadSpec};

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn every_kind_string_parses_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(Kind::parse("migration.teleported"), None);
    }

    #[test]
    fn subjects_name_the_node_that_must_act() {
        let id = uuid::Uuid::now_v7();
        let w = WorkloadName::new("counter").unwrap();
        let requested = Event::MigrationRequested(Requested {
            migration: id,
            workload: w.clone(),
            source: n("node2"),
            target: n("node3"),
            requested_by: "brain".into(),
            reason: Reason {
                summary: "node2 heads for overload".into(),
                ..Default::default()
            },
            mode: crate::migration::Mode::Auto,
        });
        // The brain emits on node1, but the source must act.
        assert_eq!(requested.subject(&n("node1")), "migration.node2.requested");
        let failed = Event::MigrationFailed(migration::Failed {
            migration: id,
            workload: w.clone(),
            source: n("node2"),
            target: n("node3"),
            step: Step::Restore,
            reason: "criu restore failed".into(),
        });
        // The target reports the failure; the source rolls back.
        assert_eq!(failed.subject(&n("node3")), "migration.node2.failed");
        let start = Event::WorkloadStartRequested(workload::StartRequested {
            workload: w,
            node: n("node2"),
            spec: WorkloadSpec::process(vec!["sleep".into(), "1".into()]),
            requested_by: "alice".into(),
        });
        assert_eq!(start.subject(&n("cli")), "workload.node2.start_requested");
        let fenced = Event::MigrationFenced(migration::Fenced {
            migration: id,
            workload: WorkloadName::new("counter").unwrap(),
            source: n("node2"),
            target: n("node3"),
            waited_ms: 10_000.0,
            reason: "the target did not restore within 10 s".into(),
        });
        // The source fences; the target must not restore.
        assert_eq!(fenced.subject(&n("node2")), "migration.node3.fenced");
        for event in [requested, failed, start, fenced] {
            let env = Envelope::new(n("node1"), event);
            let bytes = env.to_json().unwrap();
            assert_eq!(Envelope::from_message(&env.subject(), &bytes).unwrap(), env);
            assert!(Envelope::from_message("migration.node9.requested", &bytes).is_err());
        }
        assert_eq!(Step::Restore.to_string(), "restore");
    }
}

#[cfg(test)]
mod model_subject_tests {
    use super::*;
    use crate::envelope::Envelope;

    #[test]
    fn workload_usage_lands_in_telemetry_and_predictions_name_their_node() {
        let n = |s: &str| NodeName::new(s).unwrap();
        let usage = Event::WorkloadUsage(model::WorkloadUsage {
            at: chrono::Utc::now(),
            workloads: vec![],
        });
        assert_eq!(usage.subject(&n("node2")), "telemetry.node2.workloads");
        let predicted = Event::NodePredicted(model::Predicted {
            node: n("node3"),
            at: chrono::Utc::now(),
            onset: 0.5,
            sustained: 0.1,
            model_version: 1,
        });
        assert_eq!(predicted.subject(&n("node1")), "node.node3.predicted");
        for e in [usage, predicted] {
            let env = Envelope::new(n("node1"), e);
            let bytes = env.to_json().unwrap();
            assert_eq!(Envelope::from_message(&env.subject(), &bytes).unwrap(), env);
        }
        // A sample on a workload subject, or usage on the node subject, is refused.
        let sample_env = Envelope::from_json(
            &Envelope::new(
                n("node2"),
                Event::WorkloadUsage(model::WorkloadUsage {
                    at: chrono::Utc::now(),
                    workloads: vec![],
                }),
            )
            .to_json()
            .unwrap(),
        )
        .unwrap();
        assert!(!sample_env.published_on("telemetry.node2"));
    }
}
