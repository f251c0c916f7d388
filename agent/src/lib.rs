//! The loadshift agent: samples one node (or replays many from a trace) and
//! publishes what it sees on `telemetry.<node>`.
//!
//! It lives in a library, not only in `main.rs`, so that integration tests and
//! the brain's tests can drive the same code the binary runs. The shape is a
//! sampler task feeding a bounded [`buffer::Buffer`] that a publisher task
//! drains into JetStream: sampling never waits on NATS, and NATS being away
//! costs only buffer space.

pub mod agent;
pub mod buffer;
pub mod cli;
pub mod publisher;
pub mod sampler;
pub mod shutdown;
pub mod source;

pub use agent::{run, AgentError, Plan, PlanError};
pub use cli::Args;
