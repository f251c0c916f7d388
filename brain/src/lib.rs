//! The loadshift brain: folds the event log into sled views.
//!
//! The log (TELEMETRY and EVENTS in JetStream) is the source of truth; the
//! store is a projection of it that can always be rebuilt. Modules, from the
//! bottom up: [`store`] (sled layout, open/validate/rebuild, digest),
//! [`series`] (compact sample encoding, per-node chunks), [`registry`]
//! (node records merged order-independently), [`fold`] (one message → one
//! batch of writes, pure), [`consume`] (JetStream consumers, batching,
//! commit-then-ack), [`service`] (`run`), [`replay`] (`replay --from-start`),
//! [`status`] (`status`) and [`shutdown`] (SIGINT/SIGTERM broadcast).

pub mod consume;
pub mod evaluate;
pub mod features;
pub mod fold;
pub mod labels;
pub mod live;
pub mod model;
pub mod planner;
pub mod planning;
pub mod registry;
pub mod replay;
pub mod series;
pub mod service;
pub mod shutdown;
pub mod simulate;
pub mod status;
pub mod store;
pub mod training;
