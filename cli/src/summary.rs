//! One line per event for people: what `events tail` prints after the time,
//! subject and kind, and how `migrate --wait` reports each step. The JSON
//! envelope stays one `--json` away; this is the short version.

use loadshift_events::migration::Timings;
use loadshift_events::{Envelope, Event};

/// A short description of the payload.
pub fn line(env: &Envelope) -> String {
    match &env.event {
        Event::TelemetrySample(s) => format!(
            "cpu {:.1}% of {} cores, memory {}",
            s.cpu.usage_pct,
            s.cpu.capacity_cores,
            bytes(s.memory.used_bytes)
        ),
        Event::NodeJoined(j) => format!(
            "{} joined: {} cores, {} memory, source {}",
            env.node,
            j.capacity_cores,
            bytes(j.memory_bytes),
            j.source
        ),
        Event::NodeLeft(l) => format!("{} left: {}", env.node, l.reason),
        Event::WorkloadStartRequested(r) => format!(
            "{} on {} ({}: {}) by {}",
            r.workload,
            r.node,
            r.spec.runtime,
            r.spec
                .image
                .clone()
                .unwrap_or_else(|| r.spec.command.join(" ")),
            r.requested_by
        ),
        Event::WorkloadStarted(s) => format!(
            "{} runs on {}{}",
            s.workload,
            env.node,
            handle(s.pid, s.container_id.as_deref())
        ),
        Event::WorkloadStartFailed(f) => {
            format!("{} did not start on {}: {}", f.workload, env.node, f.reason)
        }
        Event::WorkloadExited(x) => {
            let how = match (x.code, x.signal) {
                (Some(c), _) => format!(" with code {c}"),
                (None, Some(s)) => format!(" by signal {s}"),
                (None, None) => String::new(),
            };
            format!("{} exited on {}{how}", x.workload, env.node)
        }
        Event::MigrationRequested(r) => format!(
            "{} {}→{} by {}: {} (migration {})",
            r.workload, r.source, r.target, r.requested_by, r.reason.summary, r.migration
        ),
        Event::MigrationCheckpointed(c) => format!(
            "{} {}→{} image {}{}",
            c.workload,
            c.source,
            c.target,
            bytes(c.image_bytes),
            timings_inline(&c.timings)
        ),
        Event::MigrationRestored(r) => format!(
            "{} {}→{} runs on {}{}{}",
            r.workload,
            r.source,
            r.target,
            r.target,
            handle(r.pid, r.container_id.as_deref()),
            timings_inline(&r.timings)
        ),
        Event::MigrationCompleted(c) => format!(
            "{} {}→{} downtime {} total {} image {}",
            c.workload,
            c.source,
            c.target,
            ms(c.timings.downtime_ms),
            ms(c.timings.total_ms),
            bytes(c.image_bytes)
        ),
        Event::MigrationFailed(f) => format!(
            "{} {}→{} failed at step {}: {}",
            f.workload, f.source, f.target, f.step, f.reason
        ),
        Event::MigrationRolledBack(r) => format!(
            "{} runs on {} again{} (was going to {})",
            r.workload,
            r.source,
            handle(r.pid, None),
            r.target
        ),
        // The contract grows (model events next): say what it is, at least.
        other => format!("({} event)", other.kind().as_str()),
    }
}

fn handle(pid: Option<u32>, container: Option<&str>) -> String {
    match (pid, container) {
        (_, Some(c)) => format!(" (container {})", c.chars().take(12).collect::<String>()),
        (Some(p), None) => format!(" (pid {p})"),
        (None, None) => String::new(),
    }
}

/// `123 ms`, or `-` when not measured.
pub fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} ms"))
}

/// The steps measured so far, `, dump 71 ms, upload 12 ms`.
fn timings_inline(t: &Timings) -> String {
    timing_rows(t)
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| format!(", {name} {v:.0} ms")))
        .collect()
}

/// Every timing with its name, in the order of a migration.
pub fn timing_rows(t: &Timings) -> [(&'static str, Option<f64>); 7] {
    [
        ("dump", t.dump_ms),
        ("upload", t.upload_ms),
        ("download", t.download_ms),
        ("restore", t.restore_ms),
        ("cleanup", t.cleanup_ms),
        ("downtime", t.downtime_ms),
        ("total", t.total_ms),
    ]
}

/// `1.5 MiB`, `512 B`: sizes for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::migration::Completed;
    use loadshift_events::{NodeName, WorkloadName};

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn a_completed_migration_says_where_and_how_long() {
        let node = NodeName::new("node2").unwrap();
        let env = Envelope::new(
            node.clone(),
            Event::MigrationCompleted(Completed {
                migration: uuid::Uuid::now_v7(),
                workload: WorkloadName::new("counter").unwrap(),
                source: node,
                target: NodeName::new("node3").unwrap(),
                image_bytes: 2048,
                timings: Timings {
                    downtime_ms: Some(123.4),
                    total_ms: Some(456.0),
                    ..Default::default()
                },
            }),
        );
        assert_eq!(
            line(&env),
            "counter node2→node3 downtime 123 ms total 456 ms image 2.0 KiB"
        );
    }
}
