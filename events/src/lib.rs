//! The contract every loadshift service shares.
//!
//! Every fact in loadshift is an event in NATS JetStream; this crate is the one
//! place that says what an event looks like ([`envelope`]), what each kind
//! carries ([`payload`], [`telemetry`]) and within which ranges ([`bounds`]),
//! where it is published ([`subject`]), which streams keep it ([`stream`]),
//! how a service talks to NATS ([`connection`]), reads a stream ([`reader`]),
//! asks whether an executor is alive ([`liveness`]), reads a workload's
//! output from the node that runs it ([`output`]) and stops ([`shutdown`]),
//! how a file operation fails ([`file`]) and how sizes read ([`units`]).
//! Services depend on this crate and on nothing of each other,
//! so a change to the contract is visible in one diff.

pub mod bounds;
pub mod cli;
pub mod connection;
pub mod envelope;
pub mod file;
pub mod liveness;
pub mod migration;
pub mod model;
pub mod output;
pub mod payload;
pub mod placement;
pub mod reader;
pub mod shutdown;
pub mod stream;
pub mod subject;
pub mod telemetry;
pub mod units;
pub mod workload;

pub use envelope::{DecodeError, EncodeError, Envelope, MAX_EVENT_BYTES, SCHEMA_VERSION};
pub use payload::{Event, Kind};
pub use subject::NodeName;
pub use telemetry::Sample;
pub use workload::WorkloadName;
