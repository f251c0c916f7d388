//! Recorded traces: the Bitbrains loader lives in the `loadshift-trace`
//! crate (the brain reads the same files for training); the agent replays
//! what it loads.

pub use loadshift_trace::*;
