//! A workload's output, read from the node that runs it: `loadshift
//! workload logs` asks the executor over a plain NATS request on
//! [`output_subject`] (a question about now, like the liveness ping, not a
//! fact to keep: output can be large and private, so it never goes into a
//! stream).
//!
//! A process workload writes its stdout and stderr into files that travel
//! with its checkpoint image (CRIU needs them as they were at the freeze),
//! so the file on the target is the source's file followed by what the
//! workload wrote since. A byte offset therefore means the same thing on
//! every node the workload ran on: a reader that keeps its offset and asks
//! the new node after a migration gets every line once, in order.
//!
//! It lives in the contract because two programs speak it (the executor
//! answers, the CLI asks): one subject and one answer type.

use serde::{Deserialize, Serialize};

use crate::subject::NodeName;
use crate::workload::WorkloadName;

/// The most bytes one answer carries, under NATS's default 1 MiB payload
/// with room for JSON escaping.
pub const MAX_CHUNK_BYTES: u32 = 256 * 1024;

/// `loadshift.executor.<node>.logs`: the subject `node`'s executor answers
/// output requests on.
pub fn output_subject(node: &NodeName) -> String {
    format!("loadshift.executor.{node}.logs")
}

/// Which of the workload's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Its standard output.
    #[default]
    Stdout,
    /// Its standard error.
    Stderr,
}

impl OutputStream {
    /// The file's name in the workload's folder (`stdout`, `stderr`).
    pub fn file_name(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// At this byte offset.
    Offset(u64),
    /// At the start of the last `n` lines.
    LastLines(u32),
}

/// A request for some of a workload's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    /// Which workload.
    pub workload: WorkloadName,
    /// Which file.
    #[serde(default)]
    pub stream: OutputStream,
    /// Where to start.
    pub from: ReadFrom,
    /// At most this many bytes (capped at [`MAX_CHUNK_BYTES`]).
    pub max_bytes: u32,
}

/// What the executor answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "answer")]
pub enum OutputReply {
    /// Whole lines of output (a last line without its newline yet is held
    /// back until it has one, so a line is never cut in two).
    Lines {
        /// The node that answered.
        node: NodeName,
        /// The offset the text starts at.
        offset: u64,
        /// The text (invalid UTF-8 replaced).
        text: String,
        /// Where the next request starts.
        next_offset: u64,
        /// The file's size now.
        size: u64,
    },
    /// The workload does not run here (it moved, or never ran here).
    NotHere {
        /// The node that answered.
        node: NodeName,
    },
    /// The workload runs here but its output cannot be read.
    Unavailable {
        /// Why, in words.
        reason: String,
    },
}
