//! loadshift's operator command line, as a library so that its pieces are
//! tested on their own; `src/main.rs` is the thin `loadshift` binary around
//! it. Where each workload runs is the contract crate's placement fold
//! ([`loadshift_events::placement`]), read as it is.
//!
//! - [`cmd`]: the commands, one file each, and the top-level parser;
//! - [`eventlog`]: reading and following the EVENTS stream;
//! - [`summary`], [`table`], [`time`]: how events, rows and times are written;
//! - [`up`]: the pieces behind `loadshift up` (cgroups, supervision, scenarios);
//! - [`error`]: the input errors that exit 2.

pub mod cmd;
pub mod error;
pub mod eventlog;
pub mod summary;
pub mod table;
pub mod time;
pub mod up;
