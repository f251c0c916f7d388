//! The kinds of event and what each carries.
//!
//! Events are past-tense facts (`NodeJoined`), named `family.verb` in the
//! envelope's `kind`. A consumer matches on [`Event`]; a kind this build does not
//! know decodes to an error the consumer logs and parks, never a panic.

use serde::{Deserialize, Serialize};

use crate::subject::{self, NodeName};
use crate::telemetry::Sample;

/// The `kind` string of each event, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `telemetry.sample`
    TelemetrySample,
    /// `node.joined`
    NodeJoined,
    /// `node.left`
    NodeLeft,
}

impl Kind {
    /// Every kind this build knows.
    pub const ALL: [Kind; 3] = [Kind::TelemetrySample, Kind::NodeJoined, Kind::NodeLeft];

    /// The string written in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TelemetrySample => "telemetry.sample",
            Kind::NodeJoined => "node.joined",
            Kind::NodeLeft => "node.left",
        }
    }

    /// Looks a kind string up; `None` for a kind this build does not know.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
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

/// One decoded event payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A telemetry sample.
    TelemetrySample(Sample),
    /// A node came up.
    NodeJoined(NodeJoined),
    /// A node left.
    NodeLeft(NodeLeft),
}

impl Event {
    /// This event's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Event::TelemetrySample(_) => Kind::TelemetrySample,
            Event::NodeJoined(_) => Kind::NodeJoined,
            Event::NodeLeft(_) => Kind::NodeLeft,
        }
    }

    /// The subject this event is published on when `node` emits it.
    pub fn subject(&self, node: &NodeName) -> String {
        match self {
            Event::TelemetrySample(_) => subject::telemetry(node),
            Event::NodeJoined(_) => subject::node_event(node, "joined"),
            Event::NodeLeft(_) => subject::node_event(node, "left"),
        }
    }

    /// The payload as JSON.
    pub(crate) fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Event::TelemetrySample(p) => serde_json::to_value(p),
            Event::NodeJoined(p) => serde_json::to_value(p),
            Event::NodeLeft(p) => serde_json::to_value(p),
        }
    }

    /// Decodes a payload of a known kind.
    pub(crate) fn from_value(
        kind: Kind,
        payload: &serde_json::value::RawValue,
    ) -> serde_json::Result<Event> {
        let s = payload.get();
        Ok(match kind {
            Kind::TelemetrySample => Event::TelemetrySample(serde_json::from_str(s)?),
            Kind::NodeJoined => Event::NodeJoined(serde_json::from_str(s)?),
            Kind::NodeLeft => Event::NodeLeft(serde_json::from_str(s)?),
        })
    }
}
