//! Pressure stall information (PSI) files: `/proc/pressure/*` for a host,
//! `*.pressure` in a cgroup v2 directory. One parser for both, because the
//! kernel writes them the same way.

use std::path::Path;

use loadshift_events::telemetry::Pressure;

/// The `avg10` of the `some` and `full` lines of one PSI file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Avg10 {
    /// Some task stalled.
    pub some: Option<f32>,
    /// All tasks stalled.
    pub full: Option<f32>,
}

/// Parses PSI text; lines or fields it does not understand are ignored,
/// since newer kernels may add some.
pub fn parse(text: &str) -> Avg10 {
    let mut out = Avg10::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut out.some,
            Some("full") => &mut out.full,
            _ => continue,
        };
        *slot = fields
            .find_map(|f| f.strip_prefix("avg10="))
            .and_then(|v| v.parse::<f32>().ok())
            .filter(|v| v.is_finite());
    }
    out
}

/// Reads one PSI file; a missing or unreadable file means "no PSI here".
pub fn read(path: &Path) -> Avg10 {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Reads `cpu`, `memory` and `io` pressure from files named by `file_of`;
/// `None` when none of them exists (kernel without PSI, cgroup v1).
pub fn read_all(file_of: impl Fn(&str) -> std::path::PathBuf) -> Option<Pressure> {
    let cpu = read(&file_of("cpu"));
    let memory = read(&file_of("memory"));
    let io = read(&file_of("io"));
    let p = Pressure {
        cpu_some: cpu.some,
        memory_some: memory.some,
        memory_full: memory.full,
        io_some: io.some,
        io_full: io.full,
    };
    (p != Pressure::default()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_some_and_full() {
        let t = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\n\
                 full avg10=0.25 avg60=0.00 avg300=0.00 total=7\n";
        assert_eq!(
            parse(t),
            Avg10 {
                some: Some(1.5),
                full: Some(0.25)
            }
        );
        assert_eq!(parse("garbage\nsome avg10=x\n"), Avg10::default());
    }

    #[test]
    fn missing_files_mean_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_all(|r| dir.path().join(format!("{r}.pressure"))), None);
        std::fs::write(
            dir.path().join("cpu.pressure"),
            "some avg10=3.00 avg60=0 avg300=0 total=0\n",
        )
        .unwrap();
        let p = read_all(|r| dir.path().join(format!("{r}.pressure"))).unwrap();
        assert_eq!(p.cpu_some, Some(3.0));
        assert_eq!(p.io_some, None);
    }
}
