//! Recorded node utilization in the Bitbrains GWA-T-12 CSV format, read into
//! rows and turned into telemetry samples.
//!
//! One crate with one job, shared by the agent (which replays a trace as
//! telemetry) and the brain (which trains and evaluates on it without NATS),
//! because services never depend on each other.
//!
//! Real traces are untidy (see `agent/tests/fixtures/traces/README.md`): CPU above
//! 100 %, powered-off rows with zero capacity, repeated timestamps, gaps and,
//! in files that travelled, garbage. The loader keeps every row that means
//! something, sorts and de-duplicates by time, and reports (never panics on)
//! the rest, naming file and line so the input can be fixed.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use loadshift_events::bounds::{Bounded, OutOfRange};
use loadshift_events::subject::NodeNameError;
use loadshift_events::telemetry::{Cpu, Memory, Throughput};
use loadshift_events::{NodeName, Sample};

/// What a traced VM offered at most, announced in `node.joined`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// CPU cores the node may use.
    pub cores: f32,
    /// Memory bytes the node may use (0 when unknown).
    pub memory_bytes: u64,
}

/// Columns of a Bitbrains row, in file order.
const COLUMNS: usize = 11;

/// Malformed lines reported one by one per file; the rest are counted.
const WARN_LINES: usize = 20;

/// One row of a trace: a VM at one moment, in the file's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    /// Unix seconds (the header says ms; the values are seconds).
    pub at: i64,
    /// Cores provisioned (0 while powered off).
    pub cores: f32,
    /// CPU usage in percent of the provisioned cores (may exceed 100).
    pub cpu_pct: f32,
    /// Memory provisioned, KB (0 while powered off).
    pub memory_provisioned_kb: f64,
    /// Memory used, KB.
    pub memory_used_kb: f64,
    /// Disk read throughput, KB/s.
    pub disk_read_kbps: f64,
    /// Disk write throughput, KB/s.
    pub disk_write_kbps: f64,
    /// Network receive throughput, KB/s.
    pub net_rx_kbps: f64,
    /// Network transmit throughput, KB/s.
    pub net_tx_kbps: f64,
}

impl TraceRow {
    /// The sample this row describes, `shift_secs` later than recorded (a
    /// looped replay keeps time increasing).
    pub fn to_sample(&self, shift_secs: i64, seq: u64) -> Sample {
        let kb = |v: f64| (v * 1024.0).round() as u64;
        let at = DateTime::from_timestamp(self.at.saturating_add(shift_secs), 0)
            .unwrap_or(DateTime::UNIX_EPOCH);
        Sample {
            at,
            seq,
            cpu: Cpu {
                usage_pct: self.cpu_pct,
                capacity_cores: self.cores,
                per_core_pct: Vec::new(),
            },
            memory: Memory {
                used_bytes: kb(self.memory_used_kb),
                total_bytes: kb(self.memory_provisioned_kb),
            },
            swap: None,
            load: None,
            net: Some(Throughput {
                in_bps: self.net_rx_kbps * 1024.0,
                out_bps: self.net_tx_kbps * 1024.0,
            }),
            disk: Some(Throughput {
                in_bps: self.disk_read_kbps * 1024.0,
                out_bps: self.disk_write_kbps * 1024.0,
            }),
            processes: None,
            psi: None,
        }
    }
}

/// Why one line is not a row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    /// Wrong number of `;` separated fields.
    #[error("expected {COLUMNS} fields separated by ';', found {0}")]
    FieldCount(usize),
    /// A field is not a number, or is negative or infinite.
    #[error("field {column} ({value:?}) is not a non-negative number")]
    BadNumber {
        /// 1-based column.
        column: usize,
        /// The field as found (cut to 40 characters).
        value: String,
    },
    /// The timestamp is outside what a date can hold.
    #[error("timestamp {0} is out of range")]
    BadTimestamp(f64),
    /// A number parses but no telemetry sample may carry it (a CPU share of
    /// `1e40` %, more memory than 64 bits of bytes): replaying it would
    /// publish an event every reader refuses, so the row is refused here.
    #[error("refused: {0}")]
    OutOfRange(#[from] OutOfRange),
}

/// Parses one data line.
///
/// # Errors
/// [`RowError`] says what is wrong with the line.
pub fn parse_row(line: &str) -> Result<TraceRow, RowError> {
    let mut fields: Vec<&str> = line.split(';').map(str::trim).collect();
    // A trailing separator is harmless.
    if fields.len() == COLUMNS + 1 && fields[COLUMNS].is_empty() {
        fields.pop();
    }
    if fields.len() != COLUMNS {
        return Err(RowError::FieldCount(fields.len()));
    }
    let mut v = [0f64; COLUMNS];
    for (i, f) in fields.iter().enumerate() {
        v[i] = f
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| RowError::BadNumber {
                column: i + 1,
                value: f.chars().take(40).collect(),
            })?;
    }
    let at = v[0].round();
    if at > 1e11 || DateTime::from_timestamp(at as i64, 0).is_none() {
        return Err(RowError::BadTimestamp(v[0]));
    }
    // Memory is carried in bytes as u64: a bigger value would saturate.
    let max_kb = u64::MAX as f64 / 1024.0;
    for (field, kb) in [("memory_provisioned_kb", v[5]), ("memory_used_kb", v[6])] {
        if kb >= max_kb {
            return Err(RowError::OutOfRange(OutOfRange {
                field,
                value: kb,
                allowed: "less than 2^54 KB",
            }));
        }
    }
    let row = TraceRow {
        at: at as i64,
        cores: v[1] as f32,
        // v[2] and v[3] are provisioned and used MHz: the percentage says the same.
        cpu_pct: v[4] as f32,
        memory_provisioned_kb: v[5],
        memory_used_kb: v[6],
        disk_read_kbps: v[7],
        disk_write_kbps: v[8],
        net_rx_kbps: v[9],
        net_tx_kbps: v[10],
    };
    // The contract's own ranges decide, so the loader never accepts what a
    // reader of the published sample would refuse.
    row.to_sample(0, 0).check()?;
    Ok(row)
}

/// What [`parse`] made of a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Good rows, sorted by time, one per timestamp (the first seen).
    pub rows: Vec<TraceRow>,
    /// Lines skipped as malformed.
    pub malformed: usize,
    /// Rows dropped because an earlier row had the same timestamp.
    pub duplicates: usize,
}

/// Parses a whole file's text. `origin` names it in warnings (`file:line`).
/// Never fails: bad lines are logged at warn and skipped.
pub fn parse(text: &str, origin: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line_no == 1 && line.trim_start().starts_with("Timestamp") {
            continue;
        }
        match parse_row(line) {
            Ok(row) => out.rows.push(row),
            Err(e) => {
                out.malformed += 1;
                if out.malformed <= WARN_LINES {
                    tracing::warn!("{origin}:{line_no}: skipped: {e}");
                }
            }
        }
    }
    if out.malformed > WARN_LINES {
        tracing::warn!(
            "{origin}: {} more malformed lines skipped",
            out.malformed - WARN_LINES
        );
    }
    // Stable: of equal timestamps, the first in the file stays first.
    out.rows.sort_by_key(|r| r.at);
    let before = out.rows.len();
    out.rows.dedup_by_key(|r| r.at);
    out.duplicates = before - out.rows.len();
    if out.duplicates > 0 {
        tracing::debug!(
            "{origin}: {} rows with a repeated timestamp dropped",
            out.duplicates
        );
    }
    out
}

/// One node's trace, ready to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTrace {
    /// The node it is published as.
    pub node: NodeName,
    /// The file it came from.
    pub path: PathBuf,
    /// Its rows, sorted and de-duplicated.
    pub rows: Vec<TraceRow>,
}

impl NodeTrace {
    /// Seconds from the first row to the last.
    pub fn span_secs(&self) -> i64 {
        match (self.rows.first(), self.rows.last()) {
            (Some(a), Some(b)) => b.at - a.at,
            _ => 0,
        }
    }

    /// The usual gap between rows (the median), which a loop inserts between
    /// the end of one pass and the start of the next.
    pub fn step_secs(&self) -> i64 {
        let mut gaps: Vec<i64> = self.rows.windows(2).map(|w| w[1].at - w[0].at).collect();
        if gaps.is_empty() {
            return 1;
        }
        let mid = gaps.len() / 2;
        let (_, m, _) = gaps.select_nth_unstable(mid);
        (*m).max(1)
    }

    /// The largest capacity the VM had, announced in `node.joined`.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            cores: self.rows.iter().map(|r| r.cores).fold(0.0, f32::max),
            memory_bytes: self
                .rows
                .iter()
                .map(|r| (r.memory_provisioned_kb * 1024.0).round() as u64)
                .max()
                .unwrap_or(0),
        }
    }
}

/// Why a trace cannot be loaded. These are the operator's input errors.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The path does not exist or cannot be read.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A directory without any `.csv` file.
    #[error("trace directory {0} holds no .csv file")]
    NoFiles(PathBuf),
    /// A single file needs `--node` to know what to call it.
    #[error("a trace file needs --node to name its node")]
    NodeRequired,
    /// A file stem (with the prefix) is not a valid node name.
    #[error("trace file {path} cannot name a node: {source}")]
    BadNodeName {
        /// The file.
        path: PathBuf,
        /// Why the name is refused.
        #[source]
        source: NodeNameError,
    },
}

/// Loads a trace FILE (one node, named `node`) or DIR (every `*.csv`, one node
/// per file named after its stem, `<node>-<stem>` with a prefix).
///
/// # Errors
/// [`TraceError`] when the path is unreadable, a DIR has no CSV file, a FILE
/// has no `node`, or a file stem is not a valid node name.
pub fn load(path: &Path, node: Option<&NodeName>) -> Result<Vec<NodeTrace>, TraceError> {
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| TraceError::Read { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(read_err(path))?;
    let files: Vec<(PathBuf, NodeName)> = if meta.is_dir() {
        let mut csvs = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err(path))? {
            let p = entry.map_err(read_err(path))?.path();
            let is_csv = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if is_csv && p.is_file() {
                csvs.push(p);
            }
        }
        if csvs.is_empty() {
            return Err(TraceError::NoFiles(path.to_path_buf()));
        }
        // Numeric stems in numeric order (2 before 10), then the rest by name.
        csvs.sort_by_key(|p| {
            let stem = stem_of(p);
            (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
        });
        csvs.into_iter()
            .map(|p| {
                let stem = stem_of(&p);
                let name = match node {
                    Some(prefix) => format!("{prefix}-{stem}"),
                    None => stem,
                };
                NodeName::new(name)
                    .map(|n| (p.clone(), n))
                    .map_err(|source| TraceError::BadNodeName { path: p, source })
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![(
            path.to_path_buf(),
            node.cloned().ok_or(TraceError::NodeRequired)?,
        )]
    };
    let mut traces = Vec::with_capacity(files.len());
    for (file, node) in files {
        let bytes = std::fs::read(&file).map_err(read_err(&file))?;
        let text = String::from_utf8_lossy(&bytes);
        let parsed = parse(&text, &file.display().to_string());
        if parsed.rows.is_empty() {
            tracing::warn!("{}: no usable row; node {node} skipped", file.display());
            continue;
        }
        tracing::debug!(
            "{}: {} rows for node {node} ({} malformed, {} duplicate timestamps)",
            file.display(),
            parsed.rows.len(),
            parsed.malformed,
            parsed.duplicates
        );
        traces.push(NodeTrace {
            node,
            path: file,
            rows: parsed.rows,
        });
    }
    Ok(traces)
}

fn stem_of(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

    fn row(ts: i64, cores: u32, pct: f64, mem_kb: f64) -> String {
        format!(
            "{ts};\t{cores};\t5851.9989;\t87.7;\t{pct};\t{mem_kb};\t1024.0;\t160.5;\t21.5;\t0.25;\t1.5"
        )
    }

    #[test]
    fn parses_header_separators_and_units() {
        let text = format!("{HEADER}\n{}\n", row(1372629804, 2, 1.5, 8218624.0));
        let p = parse(&text, "t.csv");
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.malformed, 0);
        let s = p.rows[0].to_sample(0, 3);
        assert_eq!(s.at.timestamp(), 1372629804);
        assert_eq!(s.seq, 3);
        assert_eq!(s.cpu.capacity_cores, 2.0);
        assert_eq!(s.cpu.usage_pct, 1.5);
        assert_eq!(s.memory.total_bytes, 8218624 * 1024);
        assert_eq!(s.memory.used_bytes, 1024 * 1024);
        assert_eq!(s.disk.unwrap().in_bps, 160.5 * 1024.0);
        assert_eq!(s.net.unwrap().out_bps, 1.5 * 1024.0);
    }

    /// A trace file: the header, then `lines`.
    fn trace_file(lines: &[String]) -> String {
        let mut text = format!("{HEADER}\n");
        for line in lines {
            text += line;
            text.push('\n');
        }
        text
    }

    #[test]
    fn keeps_cpu_above_100_and_powered_off_rows() {
        let text = trace_file(&[row(100, 4, 108.7, 1000.0), row(400, 0, 0.0, 0.0)]);
        let p = parse(&text, "t.csv");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].cpu_pct, 108.7);
        let off = p.rows[1].to_sample(0, 0);
        assert_eq!(off.cpu.capacity_cores, 0.0);
        assert_eq!(off.memory.total_bytes, 0);
    }

    #[test]
    fn sorts_and_keeps_the_first_of_repeated_timestamps() {
        let text = trace_file(&[
            row(700, 2, 3.0, 1.0),
            row(100, 2, 1.0, 1.0),
            row(100, 2, 2.0, 1.0),
            row(4000, 2, 4.0, 1.0),
        ]);
        let p = parse(&text, "t.csv");
        let got: Vec<(i64, f32)> = p.rows.iter().map(|r| (r.at, r.cpu_pct)).collect();
        assert_eq!(got, [(100, 1.0), (700, 3.0), (4000, 4.0)]);
        assert_eq!(p.duplicates, 1);
    }

    #[test]
    fn skips_garbage_lines_without_panicking() {
        let text = trace_file(&[
            row(100, 2, 1.0, 1.0),
            "not;a;row".into(),
            "\u{0}\u{fffd}\u{7f}junk".into(),
            "1;2;3;4;5;6;7;8;9;10;x".into(),
            "1;-2;3;4;5;6;7;8;9;10;11".into(),
            "1e300;2;3;4;5;6;7;8;9;10;11".into(),
            row(400, 2, 1.0, 1.0),
        ]);
        let p = parse(&text, "t.csv");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.malformed, 5);
        assert_eq!(parse_row("not;a;row"), Err(RowError::FieldCount(3)));
        assert!(matches!(
            parse_row("1;2;3;4;5;6;7;8;9;10;x"),
            Err(RowError::BadNumber { column: 11, .. })
        ));
    }

    #[test]
    fn accepts_a_file_without_header_and_with_crlf() {
        let text = format!("{}\r\n{};\r\n", row(1, 1, 1.0, 1.0), row(2, 1, 1.0, 1.0));
        assert_eq!(parse(&text, "t.csv").rows.len(), 2);
    }

    #[test]
    fn step_and_span() {
        let rows: Vec<TraceRow> = [0, 300, 600, 1500, 1800]
            .iter()
            .map(|&t| parse_row(&row(t, 1, 1.0, 1.0)).unwrap())
            .collect();
        let t = NodeTrace {
            node: NodeName::new("n").unwrap(),
            path: "n.csv".into(),
            rows,
        };
        assert_eq!(t.span_secs(), 1800);
        assert_eq!(t.step_secs(), 300);
    }

    #[test]
    fn loading_names_nodes_and_reports_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("17.csv"),
            format!("{HEADER}\n{}\n", row(1, 1, 1.0, 1.0)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("2.csv"),
            format!("{HEADER}\n{}\n", row(1, 1, 1.0, 1.0)),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let names = |v: Vec<NodeTrace>| {
            v.into_iter()
                .map(|t| t.node.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(load(dir.path(), None).unwrap()), ["2", "17"]);
        let vm = NodeName::new("vm").unwrap();
        assert_eq!(
            names(load(dir.path(), Some(&vm)).unwrap()),
            ["vm-2", "vm-17"]
        );
        let file = dir.path().join("17.csv");
        assert_eq!(names(load(&file, Some(&vm)).unwrap()), ["vm"]);
        assert!(matches!(load(&file, None), Err(TraceError::NodeRequired)));
        assert!(matches!(
            load(&dir.path().join("missing.csv"), Some(&vm)),
            Err(TraceError::Read { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(empty.path(), None),
            Err(TraceError::NoFiles(_))
        ));
        std::fs::write(dir.path().join("a.b.csv"), "").unwrap();
        assert!(matches!(
            load(dir.path(), None),
            Err(TraceError::BadNodeName { .. })
        ));
    }

    #[test]
    fn refuses_rows_no_sample_can_carry_and_says_which_value() {
        // 1e40 % parses as f64 but is infinite as the sample's f32: it used
        // to leave the agent as `"usage_pct": null`.
        let line = "1372629600;2;5000;1e40;1e40;1000;500;0;0;0;0";
        match parse_row(line) {
            Err(RowError::OutOfRange(e)) => assert_eq!(e.field, "cpu.usage_pct"),
            other => panic!("{other:?}"),
        }
        let e = parse_row(line).unwrap_err().to_string();
        assert!(e.contains("cpu.usage_pct = inf"), "{e}");
        let cores = "1372629600;1e39;5000;50;5;1000;500;0;0;0;0";
        assert!(matches!(parse_row(cores), Err(RowError::OutOfRange(_))));
        let memory = "1372629600;2;5000;50;5;1e300;500;0;0;0;0";
        assert!(matches!(parse_row(memory), Err(RowError::OutOfRange(_))));
        // Counted and skipped like any malformed line; good rows stay.
        let p = parse(
            &format!("{line}\n1372629900;2;5000;50;5;1000;500;0;0;0;0\n"),
            "t.csv",
        );
        assert_eq!((p.rows.len(), p.malformed), (1, 1));
    }
}
