//! One line per event for people: what `events tail` prints after the time,
//! subject and kind, and how `migrate --wait` reports each step. The JSON
//! envelope stays one `--json` away; this is the short version.

use loadshift_events::migration::Timings;
use loadshift_events::{Envelope, Event};

/// A short description of the payload: what happened, in one line.
pub fn line(env: &Envelope) -> String {
    describe(env).unwrap_or_else(|| format!("({} event)", env.kind().as_str()))
}

/// What happened, for every kind this CLI knows how to tell; `None` for a
/// kind added to the contract after this function (the contract's `Event`
/// is non-exhaustive, so a new kind compiles here without a line of its
/// own: the test `every_kind_of_the_contract_has_a_summary` is what catches
/// it).
pub fn describe(env: &Envelope) -> Option<String> {
    node_or_workload(env)
        .or_else(|| migration(env))
        .or_else(|| model(env))
}

/// Telemetry, node and workload events.
fn node_or_workload(env: &Envelope) -> Option<String> {
    Some(match &env.event {
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
            "{} on {} ({}: {}) by {}{}",
            r.workload,
            r.node,
            r.spec.runtime,
            r.spec
                .image
                .clone()
                .unwrap_or_else(|| r.spec.command.join(" ")),
            r.requested_by,
            if r.spec.no_postcopy {
                ", no post-copy"
            } else {
                ""
            }
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
            match x.reason {
                loadshift_events::workload::ExitReason::Ended => {
                    format!("{} exited on {}{how}", x.workload, env.node)
                }
                reason => format!("{} {reason} on {}{how}", x.workload, env.node),
            }
        }
        Event::WorkloadStopRequested(r) => format!(
            "stop {} on {} (SIGKILL after {} ms) by {}{}",
            r.workload,
            r.node,
            r.grace_ms,
            r.requested_by,
            r.forwarded_by
                .as_ref()
                .map_or(String::new(), |n| format!(", handed on by {n}"))
        ),
        Event::WorkloadUsage(u) => usage(u),
        Event::NodeDrainRequested(d) => format!(
            "{} draining (cordoned) by {}{}",
            d.node,
            d.requested_by,
            if d.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", d.reason)
            }
        ),
        Event::NodeUncordoned(u) => format!(
            "{} takes work again (uncordoned by {})",
            u.node, u.requested_by
        ),
        Event::NodeDrainBlocked(b) => format!(
            "{} cannot leave draining {}: {}",
            b.workload, b.node, b.reason
        ),
        _ => return None,
    })
}

/// Which mode a completed migration ran in, and why not the one asked for
/// (`stream`, `copy (fallback: ...)`); events from before modes were copies.
pub fn mode_ran(c: &loadshift_events::migration::Completed) -> String {
    let mode = c.mode.map_or("copy", |m| m.as_str());
    match &c.fallback {
        Some(why) => format!("{mode} (fallback: {why})"),
        None => mode.to_string(),
    }
}

/// The steps of a migration, and the brain's deferrals.
fn migration(env: &Envelope) -> Option<String> {
    Some(match &env.event {
        Event::MigrationRequested(r) => format!(
            "{} {}→{} by {}, mode {}: {} (migration {})",
            r.workload, r.source, r.target, r.requested_by, r.mode, r.reason.summary, r.migration
        ),
        Event::MigrationCheckpointed(c) => format!(
            "{} {}→{} image {}{}{}",
            c.workload,
            c.source,
            c.target,
            bytes(c.image_bytes),
            c.stream
                .as_ref()
                .map(|s| format!(" + {} of pages streamed", bytes(s.bytes)))
                .unwrap_or_default(),
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
            "{} {}→{} {}: downtime {} total {} image {}{}",
            c.workload,
            c.source,
            c.target,
            mode_ran(c),
            ms(c.timings.downtime_ms),
            ms(c.timings.total_ms),
            bytes(c.image_bytes),
            // Each phase; the downtime and total are said above.
            timings_inline(&Timings {
                downtime_ms: None,
                total_ms: None,
                ..c.timings
            })
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
        Event::MigrationFenced(f) => format!(
            "{} stays on {}: {} was too late to restore it ({}, after {})",
            f.workload,
            f.source,
            f.target,
            f.reason,
            ms(Some(f.waited_ms))
        ),
        Event::MigrationWithdrawn(w) => format!(
            "{} stays on {}: the brain withdrew its move to {} ({})",
            w.workload, w.source, w.target, w.reason
        ),
        Event::MigrationDeferred(d) => format!(
            "{} in trouble (probability {:.2}) but nothing moved{}: {}",
            d.source,
            d.probability,
            d.workload
                .as_ref()
                .map(|w| format!(" ({w} was the candidate)"))
                .unwrap_or_default(),
            d.reason
        ),
        _ => return None,
    })
}

/// The brain's models and beliefs.
fn model(env: &Envelope) -> Option<String> {
    Some(match &env.event {
        Event::NodePredicted(p) => predicted(p),
        Event::ModelTrainRequested(t) => format!(
            "{} asks for a new model{}",
            t.requested_by,
            t.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::ModelTrained(t) => trained(t),
        Event::ModelActivated(a) => format!(
            "model v{} now predicts{}: {}",
            a.version,
            a.replaces
                .map(|old| format!(" (replaces v{old})"))
                .unwrap_or_default(),
            a.reason
        ),
        _ => return None,
    })
}

/// `node2 onset 0.81 sustained 0.12 (model v3, sample of 2026-11-25T08:30:00Z)`.
///
/// The event carries the two probabilities, not the model's cut-offs, so
/// whether the brain counts it as an alarm is not in it; the brain
/// publishes a node's belief when it moves by 0.1 or more, so a line here
/// is a change worth reading.
fn predicted(p: &loadshift_events::model::Predicted) -> String {
    format!(
        "{} onset {:.2} sustained {:.2} (model v{}, sample of {})",
        p.node,
        p.onset,
        p.sustained,
        p.model_version,
        crate::time::short(p.at)
    )
}

/// The scores of a trained model beside the static rule's.
fn trained(t: &loadshift_events::model::Trained) -> String {
    format!(
        "model v{} trained on {} rows in {:.1} s: {}",
        t.version,
        t.train_rows,
        t.train_seconds,
        t.scores_beside_the_rule(2)
    )
}

/// `3 workloads, 142% cpu, 1.2 GiB resident; busiest counter 98%`.
fn usage(u: &loadshift_events::model::WorkloadUsage) -> String {
    let cpu: f32 = u.workloads.iter().map(|w| w.cpu_pct).sum();
    let rss: u64 = u.workloads.iter().map(|w| w.rss_bytes).sum();
    let busiest = u
        .workloads
        .iter()
        .max_by(|a, b| a.cpu_pct.total_cmp(&b.cpu_pct))
        .map(|w| format!("; busiest {} {:.0}%", w.workload, w.cpu_pct))
        .unwrap_or_default();
    format!(
        "{} workload{}, cpu {cpu:.0}% of a core, {} resident{busiest}",
        u.workloads.len(),
        if u.workloads.len() == 1 { "" } else { "s" },
        bytes(rss)
    )
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
    t.named()
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| format!(", {name} {v:.0} ms")))
        .collect()
}

pub use loadshift_events::units::bytes;

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::migration::{Completed, Mode};
    use loadshift_events::{NodeName, WorkloadName};

    /// One example payload per kind, as it travels (JSON, so that a field
    /// added to a payload with a default does not break this test).
    const EXAMPLES: &[(&str, &str, &str)] = &[
        (
            "telemetry.sample",
            "node2",
            r#"{"at":"2026-11-25T08:30:00Z","seq":7,"cpu":{"usage_pct":42.5,"capacity_cores":2.0,"per_core_pct":[40.0,45.0]},"memory":{"used_bytes":1048576,"total_bytes":2097152}}"#,
        ),
        (
            "node.joined",
            "node2",
            r#"{"source":"host","capacity_cores":2.0,"memory_bytes":1073741824,"agent_version":"0.1.0"}"#,
        ),
        ("node.left", "node2", r#"{"reason":"SIGTERM","samples":10}"#),
        (
            "workload.start_requested",
            "cli",
            r#"{"workload":"counter","node":"node2","spec":{"runtime":"process","command":["sleep","9"]},"requested_by":"alice"}"#,
        ),
        (
            "workload.started",
            "node2",
            r#"{"workload":"counter","spec":{"runtime":"process","command":["sleep","9"]},"pid":42}"#,
        ),
        (
            "workload.start_failed",
            "node2",
            r#"{"workload":"counter","reason":"no such file"}"#,
        ),
        (
            "workload.exited",
            "node2",
            r#"{"workload":"counter","code":0}"#,
        ),
        (
            "workload.stop_requested",
            "cli",
            r#"{"workload":"counter","node":"node2","grace_ms":10000,"requested_by":"alice"}"#,
        ),
        (
            "telemetry.workloads",
            "node2",
            r#"{"at":"2026-11-25T08:30:00Z","workloads":[{"workload":"counter","cpu_pct":98.0,"rss_bytes":1048576},{"workload":"idle","cpu_pct":1.0,"rss_bytes":2048}]}"#,
        ),
        (
            "migration.requested",
            "brain",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","requested_by":"brain","reason":{"summary":"node2 heads for overload"}}"#,
        ),
        (
            "migration.checkpointed",
            "node2",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","spec":{"runtime":"process","command":["sleep","9"]},"object":"m1","sha256":"00","image_bytes":2048,"timings":{"dump_ms":71.0},"frozen_at_ms":1}"#,
        ),
        (
            "migration.restored",
            "node3",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","pid":43,"image_bytes":2048,"timings":{"restore_ms":57.0}}"#,
        ),
        (
            "migration.completed",
            "node2",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","image_bytes":2048,"timings":{"downtime_ms":123.4,"total_ms":456.0}}"#,
        ),
        (
            "migration.failed",
            "node3",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","step":"restore","reason":"criu restore failed"}"#,
        ),
        (
            "migration.rolled_back",
            "node2",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","pid":42}"#,
        ),
        (
            "migration.fenced",
            "node2",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","waited_ms":12000.0,"reason":"no restore within the deadline"}"#,
        ),
        (
            "migration.withdrawn",
            "brain",
            r#"{"migration":"0193a1b2-0000-7000-8000-000000000001","workload":"counter","source":"node2","target":"node3","reason":"NATS did not acknowledge the request for 60 s"}"#,
        ),
        (
            "migration.deferred",
            "brain",
            r#"{"source":"node2","workload":"counter","probability":0.87,"reason":"no node has room"}"#,
        ),
        (
            "model.train_requested",
            "cli",
            r#"{"requested_by":"alice","reason":"new traces"}"#,
        ),
        (
            "model.trained",
            "brain",
            r#"{"version":3,"telemetry_range":[1,100],"time_range":["2026-07-01T00:00:00Z","2026-07-31T00:00:00Z"],"features":["cpu"],"hyper_parameters":[["trees",50.0]],"onset":{"model":{"precision":0.5,"recall":0.7,"f1":0.58},"baseline":{"precision":0.3,"recall":0.5,"f1":0.36},"baseline_threshold_pct":80.0,"positives":10,"samples":100},"sustained":{"model":{"precision":0.9,"recall":0.9,"f1":0.95},"baseline":{"precision":0.9,"recall":0.9,"f1":0.98},"baseline_threshold_pct":85.0,"positives":10,"samples":100},"importances":[["cpu",1.0]],"train_rows":1200,"train_seconds":2.5}"#,
        ),
        (
            "model.activated",
            "brain",
            r#"{"version":3,"replaces":2,"reason":"beats v2 on onset"}"#,
        ),
        (
            "node.predicted",
            "brain",
            r#"{"node":"node3","at":"2026-11-25T08:30:00Z","onset":0.81,"sustained":0.12,"model_version":3}"#,
        ),
        (
            "node.drain_requested",
            "cli",
            r#"{"node":"node2","requested_by":"alice","reason":"kernel update"}"#,
        ),
        (
            "node.uncordoned",
            "cli",
            r#"{"node":"node2","requested_by":"alice"}"#,
        ),
        (
            "node.drain_blocked",
            "brain",
            r#"{"node":"node2","workload":"counter","reason":"no target: node3 has no room for its memory"}"#,
        ),
    ];

    fn example(kind: &str, node: &str, payload: &str) -> Envelope {
        let json = format!(
            r#"{{"id":"0193a1b2-0000-7000-8000-0000000000ff","kind":"{kind}","occurred_at":"2026-11-25T08:30:00Z","node":"{node}","schema":1,"payload":{payload}}}"#
        );
        Envelope::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("the example of {kind} no longer decodes: {e}"))
    }

    #[test]
    fn every_kind_of_the_contract_has_a_summary() {
        for kind in loadshift_events::Kind::ALL {
            let Some((_, node, payload)) = EXAMPLES.iter().find(|(k, _, _)| *k == kind.as_str())
            else {
                panic!(
                    "kind {} has no example here: add one to EXAMPLES and a line to \
                     summary::describe, so `events tail` says what happened",
                    kind.as_str()
                )
            };
            let env = example(kind.as_str(), node, payload);
            let said = describe(&env).unwrap_or_else(|| {
                panic!(
                    "kind {} has no summary line in summary::describe",
                    kind.as_str()
                )
            });
            assert!(!said.trim().is_empty(), "{}: empty summary", kind.as_str());
        }
    }

    #[test]
    fn a_stop_and_how_it_ended_are_said() {
        let stop = EXAMPLES
            .iter()
            .find(|(k, _, _)| *k == "workload.stop_requested")
            .unwrap();
        assert_eq!(
            line(&example(stop.0, stop.1, stop.2)),
            "stop counter on node2 (SIGKILL after 10000 ms) by alice"
        );
        let killed = example(
            "workload.exited",
            "node3",
            r#"{"workload":"counter","signal":9,"reason":"killed_after_grace"}"#,
        );
        assert_eq!(
            line(&killed),
            "counter killed after grace on node3 by signal 9"
        );
    }

    #[test]
    fn model_events_say_scores_and_probabilities() {
        let line_of = |kind: &str| {
            let (_, node, payload) = EXAMPLES.iter().find(|(k, _, _)| *k == kind).unwrap();
            line(&example(kind, node, payload))
        };
        assert_eq!(
            line_of("node.predicted"),
            "node3 onset 0.81 sustained 0.12 (model v3, sample of 2026-11-25T08:30:00Z)"
        );
        assert_eq!(
            line_of("model.trained"),
            "model v3 trained on 1200 rows in 2.5 s: onset F1 0.58 (rule CPU ≥ 80%: 0.36), \
             sustained F1 0.95 (rule CPU ≥ 85%: 0.98)"
        );
        assert_eq!(
            line_of("model.activated"),
            "model v3 now predicts (replaces v2): beats v2 on onset"
        );
        assert_eq!(
            line_of("migration.deferred"),
            "node2 in trouble (probability 0.87) but nothing moved (counter was the candidate): \
             no node has room"
        );
        assert_eq!(
            line_of("telemetry.workloads"),
            "2 workloads, cpu 99% of a core, 1.0 MiB resident; busiest counter 98%"
        );
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    /// counter's move node2 → node3 of a 2 KiB image, completed with
    /// `timings` in `mode` (and why it fell back).
    fn completed(timings: Timings, mode: Option<Mode>, fallback: Option<&str>) -> Envelope {
        let node = NodeName::new("node2").unwrap();
        Envelope::new(
            node.clone(),
            Event::MigrationCompleted(Completed {
                migration: uuid::Uuid::now_v7(),
                workload: WorkloadName::new("counter").unwrap(),
                source: node,
                target: NodeName::new("node3").unwrap(),
                image_bytes: 2048,
                timings,
                mode,
                fallback: fallback.map(String::from),
            }),
        )
    }

    #[test]
    fn a_completed_migration_says_where_and_how_long() {
        let timings = Timings {
            downtime_ms: Some(123.4),
            total_ms: Some(456.0),
            ..Default::default()
        };
        assert_eq!(
            line(&completed(timings, None, None)),
            "counter node2→node3 copy: downtime 123 ms total 456 ms image 2.0 KiB"
        );
    }

    #[test]
    fn a_completed_migration_says_which_mode_ran_why_and_each_phase() {
        let timings = Timings {
            dump_ms: Some(80.0),
            restore_ms: Some(60.0),
            downtime_ms: Some(150.0),
            total_ms: Some(400.0),
            ..Default::default()
        };
        let why = Some("post-copy (lazy) is not available");
        assert_eq!(
            line(&completed(timings, Some(Mode::Stream), why)),
            "counter node2→node3 stream (fallback: post-copy (lazy) is not available): \
             downtime 150 ms total 400 ms image 2.0 KiB, dump 80 ms, restore 60 ms"
        );
    }
}
