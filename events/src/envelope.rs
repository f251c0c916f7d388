//! The envelope every event travels in.
//!
//! JSON on the wire, so the NATS CLI and any other client read events as they
//! are. The envelope's `id` (UUIDv7: time-ordered) doubles as the
//! `Nats-Msg-Id`, so a retried publish is stored once.
//!
//! An event is at most [`MAX_EVENT_BYTES`] long: a reader that must hold big
//! events can be stalled by a few of them, and nothing the contract says
//! needs more (checkpoint images travel through the object store, in
//! chunks). Writers refuse a bigger one ([`Envelope::encode`]), readers
//! refuse it before parsing it ([`Envelope::from_json`]), and nats-server's
//! `max_payload` (nats/*.conf) bounds what a foreign client can put in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bounds::OutOfRange;
use crate::payload::{Event, Kind, PayloadError};
use crate::subject::NodeName;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest encoded event (envelope and payload) the contract allows.
///
/// The biggest real events (a trained model's scores and importances, a
/// sample of a many-core host) are a few KiB; 64 KiB leaves room for them to
/// grow while a reader keeping thousands of events stays small.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One event with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique, time-ordered id; also the JetStream `Nats-Msg-Id`.
    pub id: Uuid,
    /// When the emitting service says the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// The node that emitted it.
    pub node: NodeName,
    /// Schema version the payload was written with.
    pub schema: u32,
    /// The typed payload; its kind is the envelope's `kind`.
    pub event: Event,
}

/// The wire shape, used to write.
#[derive(Serialize)]
struct WireOut<'a> {
    id: Uuid,
    kind: &'static str,
    occurred_at: DateTime<Utc>,
    node: &'a NodeName,
    schema: u32,
    payload: &'a Event,
}

/// The wire shape, used to read: the payload stays raw until the kind is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn<'a> {
    id: Uuid,
    kind: &'a str,
    occurred_at: DateTime<Utc>,
    node: NodeName,
    schema: u32,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// Why bytes from the log are not an event this build can apply.
///
/// Each variant is a reason to log the message with its subject and sequence
/// and park it; none is a reason to crash.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// the envelope is not valid JSON of the expected shape
    #[error("malformed envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    /// the kind is one this build does not know
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    /// the event was written by a newer schema than this build reads
    #[error("event schema {found} is newer than this build reads ({supported})")]
    FutureSchema {
        /// The schema the event claims.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// the payload does not match its kind
    #[error("payload of kind {kind} is malformed: {source}")]
    BadPayload {
        /// The kind the envelope claims.
        kind: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// the payload has its kind's shape but a value no reader can use
    #[error("payload of kind {kind} is refused: {source}")]
    OutOfRange {
        /// The kind the envelope claims.
        kind: &'static str,
        /// Which value, and what is allowed.
        #[source]
        source: OutOfRange,
    },
    /// the message is larger than the contract allows
    #[error("event of {size} bytes is larger than the {MAX_EVENT_BYTES} bytes allowed")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// the subject is not the one this event belongs on
    #[error("event published on {subject:?} belongs on {expected:?}")]
    SubjectMismatch {
        /// The message's subject.
        subject: String,
        /// The subject the envelope's kind and node (or acting node) call for.
        expected: String,
    },
}

/// Why an event cannot be written to the log.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// a value is out of its range: a reader would refuse the event
    #[error("event {id} ({kind}) is refused: {source}")]
    OutOfRange {
        /// The event id.
        id: Uuid,
        /// Its kind.
        kind: &'static str,
        /// Which value, and what is allowed.
        #[source]
        source: OutOfRange,
    },
    /// the encoded event is larger than the contract allows
    #[error("event {id} ({kind}) is {size} bytes, more than the {MAX_EVENT_BYTES} bytes allowed")]
    TooLarge {
        /// The event id.
        id: Uuid,
        /// Its kind.
        kind: &'static str,
        /// Its encoded size.
        size: usize,
    },
    /// serde could not write it
    #[error("event {id} cannot be serialized: {source}")]
    Json {
        /// The event id.
        id: Uuid,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// A short, fixed name of the reason, for a metric's label (the message
    /// itself carries the details and would make every label unique).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::FutureSchema { .. } => "future_schema",
            DecodeError::BadPayload { .. } => "bad_payload",
            DecodeError::OutOfRange { .. } => "out_of_range",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::SubjectMismatch { .. } => "wrong_subject",
        }
    }

    /// Every value [`DecodeError::reason`] returns, so a metric can show
    /// each label from the start.
    pub const REASONS: &'static [&'static str] = &[
        "malformed",
        "unknown_kind",
        "future_schema",
        "bad_payload",
        "out_of_range",
        "too_large",
        "wrong_subject",
    ];
}

impl Envelope {
    /// Wraps a new event emitted now by `node`, with a fresh UUIDv7.
    pub fn new(node: NodeName, event: Event) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            node,
            schema: SCHEMA_VERSION,
            event,
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> Kind {
        self.event.kind()
    }

    /// The subject this envelope is published on.
    pub fn subject(&self) -> String {
        self.event.subject(&self.node)
    }

    /// Whether `subject` is the one this event belongs on; compares piece by
    /// piece instead of building the subject (this runs for every message a
    /// consumer reads).
    pub fn published_on(&self, subject: &str) -> bool {
        let node = self.event.subject_node(&self.node).as_str();
        let kind = self.kind().as_str();
        let Some((family, verb)) = kind.split_once('.') else {
            return false;
        };
        let Some(rest) = subject
            .strip_prefix(family)
            .and_then(|r| r.strip_prefix('.'))
        else {
            return false;
        };
        if kind == "telemetry.sample" {
            return rest == node;
        }
        rest.strip_prefix(node)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|v| v == verb)
    }

    /// Serializes to the JSON written into the log, refusing what a reader
    /// would refuse: a value out of its range, or more than
    /// [`MAX_EVENT_BYTES`].
    ///
    /// # Errors
    /// [`EncodeError`] says which.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let kind = self.kind().as_str();
        self.event
            .check()
            .map_err(|source| EncodeError::OutOfRange {
                id: self.id,
                kind,
                source,
            })?;
        let bytes = serde_json::to_vec(&WireOut {
            id: self.id,
            kind,
            occurred_at: self.occurred_at,
            node: &self.node,
            schema: self.schema,
            payload: &self.event,
        })
        .map_err(|source| EncodeError::Json {
            id: self.id,
            source,
        })?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EncodeError::TooLarge {
                id: self.id,
                kind,
                size: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// [`Envelope::encode`] with serde's error type, for the callers that
    /// store events next to other JSON (journals, outboxes).
    ///
    /// # Errors
    /// As [`Envelope::encode`], its message kept.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        self.encode().map_err(|e| match e {
            EncodeError::Json { source, .. } => source,
            other => <serde_json::Error as serde::ser::Error>::custom(other),
        })
    }

    /// Decodes bytes read from the log.
    ///
    /// # Errors
    /// [`DecodeError`] says what is wrong: too many bytes, malformed JSON, an
    /// unknown kind, a schema from the future, a payload that does not fit
    /// its kind, or a value out of its range.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge { size: bytes.len() });
        }
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if wire.schema > SCHEMA_VERSION {
            return Err(DecodeError::FutureSchema {
                found: wire.schema,
                supported: SCHEMA_VERSION,
            });
        }
        let kind =
            Kind::parse(wire.kind).ok_or_else(|| DecodeError::UnknownKind(wire.kind.into()))?;
        let event = Event::from_value(kind, wire.payload).map_err(|e| match e {
            PayloadError::Json(source) => DecodeError::BadPayload {
                kind: kind.as_str(),
                source,
            },
            PayloadError::Range(source) => DecodeError::OutOfRange {
                kind: kind.as_str(),
                source,
            },
        })?;
        Ok(Self {
            id: wire.id,
            occurred_at: wire.occurred_at,
            node: wire.node,
            schema: wire.schema,
            event,
        })
    }

    /// Decodes a message and checks that it was published on the subject its
    /// kind and node call for, so a publisher cannot speak for another node,
    /// or address the wrong one, by mistake.
    ///
    /// # Errors
    /// As [`Envelope::from_json`], plus [`DecodeError::SubjectMismatch`].
    pub fn from_message(subject: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = Self::from_json(bytes)?;
        if !env.published_on(subject) {
            return Err(DecodeError::SubjectMismatch {
                subject: subject.to_string(),
                expected: env.subject(),
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{NodeJoined, NodeLeft};
    use crate::telemetry::{Cpu, Memory, Sample};

    fn node() -> NodeName {
        NodeName::new("node2").unwrap()
    }

    fn sample() -> Sample {
        Sample {
            at: "2013-07-01T00:00:00Z".parse().unwrap(),
            seq: 7,
            cpu: Cpu {
                usage_pct: 42.5,
                capacity_cores: 2.0,
                per_core_pct: vec![40.0, 45.0],
            },
            memory: Memory {
                used_bytes: 1 << 30,
                total_bytes: 4 << 30,
            },
            swap: None,
            load: None,
            net: None,
            disk: None,
            processes: Some(12),
            psi: None,
        }
    }

    #[test]
    fn round_trips_every_kind() {
        for event in [
            Event::TelemetrySample(sample()),
            Event::NodeJoined(NodeJoined {
                source: "host".into(),
                capacity_cores: 2.0,
                memory_bytes: 1 << 34,
                agent_version: "0.1.0".into(),
            }),
            Event::NodeLeft(NodeLeft {
                reason: "SIGTERM".into(),
                samples: 3,
            }),
        ] {
            let env = Envelope::new(node(), event);
            let bytes = env.to_json().unwrap();
            let back = Envelope::from_message(&env.subject(), &bytes).unwrap();
            assert_eq!(back, env);
        }
    }

    #[test]
    fn wire_format_is_plain_json_with_the_contract_fields() {
        let env = Envelope::new(node(), Event::TelemetrySample(sample()));
        let v: serde_json::Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
        assert_eq!(v["kind"], "telemetry.sample");
        assert_eq!(v["node"], "node2");
        assert_eq!(v["schema"], SCHEMA_VERSION);
        assert_eq!(v["id"], env.id.to_string());
        assert_eq!(env.id.get_version_num(), 7);
        assert_eq!(v["payload"]["cpu"]["usage_pct"], 42.5);
        assert_eq!(env.subject(), "telemetry.node2");
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let good = Envelope::new(node(), Event::TelemetrySample(sample()))
            .to_json()
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();

        assert!(matches!(
            Envelope::from_json(b"{not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::from_json(b""),
            Err(DecodeError::Malformed(_))
        ));

        v["kind"] = "telemetry.unheard_of".into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(DecodeError::UnknownKind(k)) if k == "telemetry.unheard_of"
        ));

        v["kind"] = "telemetry.sample".into();
        v["schema"] = (SCHEMA_VERSION + 1).into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(DecodeError::FutureSchema { found, .. }) if found == SCHEMA_VERSION + 1
        ));

        v["schema"] = SCHEMA_VERSION.into();
        v["payload"]["cpu"] = "lots".into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(DecodeError::BadPayload { .. })
        ));

        v["payload"]["cpu"] = serde_json::json!({"usage_pct": 1.0, "capacity_cores": 1.0});
        v["node"] = "a.b".into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(DecodeError::Malformed(_))
        ));

        assert!(matches!(
            Envelope::from_message("telemetry.node3", &good),
            Err(DecodeError::SubjectMismatch { .. })
        ));
    }

    #[test]
    fn values_no_reader_can_use_are_refused_with_the_field() {
        let good = Envelope::new(node(), Event::TelemetrySample(sample()));
        let mut v: serde_json::Value = serde_json::from_slice(&good.to_json().unwrap()).unwrap();
        // Finite JSON, infinite as f32.
        v["payload"]["cpu"]["usage_pct"] = serde_json::json!(1e39);
        let err = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::OutOfRange { source, .. } if source.field == "cpu.usage_pct"),
            "{err}"
        );
        assert!(err.to_string().contains("cpu.usage_pct = inf"), "{err}");
        v["payload"]["cpu"]["usage_pct"] = serde_json::json!(-50.0);
        assert!(matches!(
            Envelope::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(DecodeError::OutOfRange { .. })
        ));
        v["payload"]["cpu"]["usage_pct"] = serde_json::json!(50.0);
        v["payload"]["cpu"]["capacity_cores"] = serde_json::json!(-4);
        let err = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("cpu.capacity_cores"), "{err}");

        // A writer cannot produce what a reader refuses: the agent's 1e40
        // trace row used to leave as `"usage_pct": null`.
        let mut bad = sample();
        bad.cpu.usage_pct = 1e40f64 as f32;
        let env = Envelope::new(node(), Event::TelemetrySample(bad));
        assert!(matches!(env.encode(), Err(EncodeError::OutOfRange { .. })));
        let e = env.to_json().unwrap_err();
        assert!(e.to_string().contains("cpu.usage_pct"), "{e}");
        let joined = Envelope::new(
            node(),
            Event::NodeJoined(NodeJoined {
                source: "host".into(),
                capacity_cores: -4.0,
                memory_bytes: 0,
                agent_version: "0".into(),
            }),
        );
        assert!(joined.encode().is_err());
    }

    #[test]
    fn events_larger_than_the_contract_allows_are_refused_both_ways() {
        let big = Envelope::new(
            node(),
            Event::NodeLeft(NodeLeft {
                reason: "x".repeat(MAX_EVENT_BYTES),
                samples: 0,
            }),
        );
        assert!(matches!(
            big.encode(),
            Err(EncodeError::TooLarge { size, .. }) if size > MAX_EVENT_BYTES
        ));
        // Written by a foreign client: refused before it is parsed.
        let bytes = serde_json::to_vec(&WireOut {
            id: big.id,
            kind: "node.left",
            occurred_at: big.occurred_at,
            node: &big.node,
            schema: 1,
            payload: &big.event,
        })
        .unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
        // Just under the limit still goes through.
        let fits = Envelope::new(
            node(),
            Event::NodeLeft(NodeLeft {
                reason: "x".repeat(MAX_EVENT_BYTES - 300),
                samples: 0,
            }),
        );
        let bytes = fits.encode().unwrap();
        assert_eq!(Envelope::from_json(&bytes).unwrap(), fits);
    }
}
