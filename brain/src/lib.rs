//! The loadshift brain: folds the event log into sled views.
//!
//! The log (TELEMETRY and EVENTS in JetStream) is the source of truth; the
//! store is a projection of it that can always be rebuilt. Modules, from the
//! bottom up: [`store`] (sled layout, open/validate/rebuild, digest),
//! [`series`] (compact sample encoding, per-node chunks), [`registry`]
//! (node records merged order-independently), [`fold`] (one message → one
//! batch of writes and what it observed, pure), [`consume`] (readers,
//! batching, commit-then-ack, feeding live inference and the planner),
//! [`planner`] (the planner's rules) and [`planner_service`] (the planner at
//! work in the service), [`service`] (`run`), [`replay`] (`replay
//! --from-start`) and [`status`] (`status`). Shutdown is the contract's
//! ([`loadshift_events::shutdown`]).

pub mod consume;
pub mod cost;
pub mod evaluate;
pub mod fault;
pub mod features;
pub mod fold;
pub mod labels;
pub mod live;
pub mod model;
pub mod outbox;
pub mod planner;
pub mod planner_service;
pub mod registry;
pub mod replay;
pub mod series;
pub mod service;
pub mod simulate;
pub mod status;
pub mod store;
pub mod training;
