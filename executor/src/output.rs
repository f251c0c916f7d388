//! Serves the output of the workloads this node runs to `loadshift workload
//! logs`, over plain NATS requests on the contract's
//! [`output_subject`](loadshift_events::output::output_subject) (see
//! [`loadshift_events::output`] for why a byte offset survives migrations).
//!
//! Workloads the journal says run here are served (a frozen one included:
//! its file is final until the migration ends), and those that ended here
//! (their folder stays); a reader whose workload moved away (its folder
//! went with it) is told [`OutputReply::NotHere`] and asks the node it
//! moved to, from the same offset. Answers come in whole lines.
//!
//! A container's output is its saved output (what earlier containers of the
//! workload wrote, travelling with its images) followed by its running
//! container's docker log ([`crate::runtime::docker_log`]): the same byte
//! offsets on every node, as for a process.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use loadshift_events::output::{
    output_subject, OutputReply, OutputRequest, ReadFrom, MAX_CHUNK_BYTES,
};
use loadshift_events::NodeName;

use crate::journal::Journal;
use crate::runtime::docker::container_name;
use crate::runtime::docker_log::ContainerLogs;

/// What the server needs to answer: whose files, where, and for a docker
/// node its daemon's logs.
#[derive(Clone)]
pub struct OutputServer {
    /// This node.
    pub node: NodeName,
    /// Says which workloads run here.
    pub journal: Journal,
    /// The folder holding each workload's folder (`<state>/workloads`).
    pub workloads_dir: PathBuf,
    /// Reads containers' docker logs (the docker runtime's client); `None`
    /// for process nodes.
    pub containers: Option<ContainerLogs>,
}

impl OutputServer {
    /// Answers requests until the subscription ends, in a task of its own.
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn serve(self, client: async_nats::Client) -> Result<(), async_nats::SubscribeError> {
        let mut sub = client.subscribe(output_subject(&self.node)).await?;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply else { continue };
                let answer = match serde_json::from_slice::<OutputRequest>(&msg.payload) {
                    Ok(req) => self.answer(&req).await,
                    Err(e) => OutputReply::Unavailable {
                        reason: format!("unreadable request: {e}"),
                    },
                };
                let body = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(e) = client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "cannot answer an output request");
                }
            }
        });
        Ok(())
    }

    /// The answer to one request.
    pub async fn answer(&self, req: &OutputRequest) -> OutputReply {
        let folder = self.workloads_dir.join(req.workload.as_str());
        let not_here = || OutputReply::NotHere {
            node: self.node.clone(),
        };
        let handle = match self.journal.workload(&req.workload) {
            Ok(Some(w)) => Some(w.handle),
            // It ended here: its folder (and output), or its stopped
            // container, stays until a new workload of that name starts.
            // One that moved away took its folder with it, and its
            // containers here were removed.
            Ok(None) if folder.is_dir() || self.containers.is_some() => None,
            Ok(None) => return not_here(),
            Err(e) => {
                return OutputReply::Unavailable {
                    reason: e.to_string(),
                }
            }
        };
        let max = req.max_bytes.min(MAX_CHUNK_BYTES);
        let read = match &self.containers {
            None => read_file_lines(&folder.join(req.stream.file_name()), req.from, max),
            Some(logs) => {
                // An ended container stays (stopped, under its name) until
                // a new workload of that name starts.
                let id = handle
                    .and_then(|h| h.container_id())
                    .unwrap_or_else(|| container_name(&self.node, &req.workload));
                match logs.whole(&folder, &id, req.stream).await {
                    Ok(Some(all)) => read_lines(&mut Cursor::new(all), req.from, max),
                    Ok(None) => return not_here(),
                    Err(e) => {
                        return OutputReply::Unavailable {
                            reason: format!("cannot read the output of {id}: {e}"),
                        }
                    }
                }
            }
        };
        match read {
            Ok((offset, text, next_offset, size)) => OutputReply::Lines {
                node: self.node.clone(),
                offset,
                text,
                next_offset,
                size,
            },
            // Gone between the journal and the file: the source of a
            // completed migration removes the folder just before it forgets
            // the workload. The reader asks the log where it went.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_here(),
            Err(e) => OutputReply::Unavailable {
                reason: format!("cannot read the output of {}: {e}", req.workload),
            },
        }
    }
}

/// [`read_lines`] of the file at `path`.
fn read_file_lines(
    path: &Path,
    from: ReadFrom,
    max: u32,
) -> std::io::Result<(u64, String, u64, u64)> {
    read_lines(&mut std::fs::File::open(path)?, from, max)
}

/// Reads whole lines of `f` from `from`, at most `max` bytes (a single
/// line longer than that comes in pieces): (offset, text, next offset, size).
fn read_lines<F: Read + Seek>(
    f: &mut F,
    from: ReadFrom,
    max: u32,
) -> std::io::Result<(u64, String, u64, u64)> {
    let size = f.seek(SeekFrom::End(0))?;
    let start = match from {
        ReadFrom::Offset(o) => o.min(size),
        ReadFrom::LastLines(n) => start_of_last_lines(f, size, n)?,
    };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(u64::from(max.max(1))).read_to_end(&mut buf)?;
    let whole = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        // One line longer than a chunk: hand it over in pieces.
        None if buf.len() as u64 >= u64::from(max.max(1)) => buf.len(),
        // The last line is not finished yet.
        None => 0,
    };
    buf.truncate(whole);
    let next = start + buf.len() as u64;
    Ok((
        start,
        String::from_utf8_lossy(&buf).into_owned(),
        next,
        size,
    ))
}

/// Where the last `n` whole lines of a file of `size` bytes start (an
/// unfinished last line is not counted: it is not served yet). Reads the
/// file backwards a block at a time, so a long log costs only its tail.
fn start_of_last_lines<F: Read + Seek>(f: &mut F, size: u64, n: u32) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    // Newlines seen from the end; the first one ends the last whole line,
    // the (n+1)-th ends the line before the last n.
    let mut seen = 0u64;
    let mut pos = size;
    while pos > 0 {
        let len = BLOCK.min(pos);
        pos -= len;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = vec![0; len as usize];
        f.read_exact(&mut buf)?;
        for (i, _) in buf.iter().enumerate().rev().filter(|(_, b)| **b == b'\n') {
            let at = pos + i as u64;
            seen += 1;
            if seen == u64::from(n) + 1 {
                return Ok(at + 1);
            }
        }
    }
    // Fewer whole lines than asked: all of them.
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stdout");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn only_whole_lines_are_served_and_the_offset_moves_past_them() {
        let (_d, p) = file("a\nbb\nccc");
        let (start, text, next, size) = read_file_lines(&p, ReadFrom::Offset(0), 1024).unwrap();
        assert_eq!((start, text.as_str(), next, size), (0, "a\nbb\n", 5, 8));
        let (_, text, next, _) = read_file_lines(&p, ReadFrom::Offset(next), 1024).unwrap();
        assert_eq!((text.as_str(), next), ("", 5));
        let (_, text, next, _) = read_file_lines(&p, ReadFrom::Offset(0), 3).unwrap();
        assert_eq!((text.as_str(), next), ("a\n", 2));
    }

    #[test]
    fn the_tail_starts_at_the_last_whole_lines() {
        let (_d, p) = file("1\n2\n3\n4\n");
        for (n, want) in [(0, ""), (1, "4\n"), (2, "3\n4\n"), (9, "1\n2\n3\n4\n")] {
            let (_, text, _, _) = read_file_lines(&p, ReadFrom::LastLines(n), 1024).unwrap();
            assert_eq!(text, want, "last {n}");
        }
        let (_d, p) = file("1\n2\n3\nunfinished");
        let (_, text, _, _) = read_file_lines(&p, ReadFrom::LastLines(2), 1024).unwrap();
        assert_eq!(text, "2\n3\n");
    }
}
