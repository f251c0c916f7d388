//! Realistic event sequences built in code: the render tests, the browser
//! test and the benchmark all draw the same cluster, so what one checks is
//! what the others measure.

use chrono::{DateTime, Duration, Utc};
use loadshift_events::migration::{
    Checkpointed, Completed, Failed, Reason, Requested, Restored, RolledBack, Step, Timings,
};
use loadshift_events::model::{
    Activated, LabelScores, Predicted, Score, Trained, WorkloadUsage, WorkloadUse,
};
use loadshift_events::payload::NodeJoined;
use loadshift_events::telemetry::{Cpu, LoadAverage, Memory, Pressure, Sample};
use loadshift_events::workload::{Runtime, Started, WorkloadSpec};
use loadshift_events::{Envelope, Event, NodeName, WorkloadName};
use uuid::Uuid;

/// A node name (panics on a bad one: fixtures are code).
pub fn node(s: &str) -> NodeName {
    NodeName::new(s).expect("fixture node name")
}

/// A workload name.
pub fn workload(s: &str) -> WorkloadName {
    WorkloadName::new(s).expect("fixture workload name")
}

fn at(env: Envelope, t: DateTime<Utc>) -> Envelope {
    Envelope {
        occurred_at: t,
        ..env
    }
}

/// `node.joined` of `n` at `t`.
pub fn joined(n: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::NodeJoined(NodeJoined {
                source: "host".into(),
                capacity_cores: 2.0,
                memory_bytes: 4 << 30,
                agent_version: "0.1.0".into(),
            }),
        ),
        t,
    )
}

/// A full host sample of `n` at `t` with `cpu` percent.
pub fn sample(n: &str, t: DateTime<Utc>, seq: u64, cpu: f32) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::TelemetrySample(Sample {
                at: t,
                seq,
                cpu: Cpu {
                    usage_pct: cpu,
                    capacity_cores: 2.0,
                    per_core_pct: vec![],
                },
                memory: Memory {
                    used_bytes: ((0.3 + cpu as f64 / 400.0) * (4u64 << 30) as f64) as u64,
                    total_bytes: 4 << 30,
                },
                swap: None,
                load: Some(LoadAverage {
                    one: cpu / 50.0,
                    five: cpu / 60.0,
                    fifteen: cpu / 70.0,
                }),
                net: None,
                disk: None,
                processes: Some(120),
                psi: Some(Pressure {
                    cpu_some: Some(cpu / 10.0),
                    memory_some: Some(0.5),
                    memory_full: Some(0.1),
                    io_some: Some(1.0),
                    io_full: Some(0.2),
                }),
            }),
        ),
        t,
    )
}

/// `workload.started` of `w` on `n`.
pub fn started(n: &str, w: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::WorkloadStarted(Started {
                workload: workload(w),
                spec: WorkloadSpec {
                    runtime: Runtime::Process,
                    command: vec!["redis-server".into()],
                    image: None,
                    env: Default::default(),
                },
                pid: Some(4242),
                container_id: None,
            }),
        ),
        t,
    )
}

/// `telemetry.<n>.workloads` with one workload.
pub fn usage(n: &str, w: &str, t: DateTime<Utc>, cpu: f32) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::WorkloadUsage(WorkloadUsage {
                at: t,
                workloads: vec![WorkloadUse {
                    workload: workload(w),
                    cpu_pct: cpu,
                    rss_bytes: 96 << 20,
                }],
            }),
        ),
        t,
    )
}

/// `node.<n>.predicted` from the brain.
pub fn predicted(n: &str, t: DateTime<Utc>, onset: f32, version: u64) -> Envelope {
    at(
        Envelope::new(
            node("brain"),
            Event::NodePredicted(Predicted {
                node: node(n),
                at: t,
                onset,
                sustained: onset / 2.0,
                model_version: version,
            }),
        ),
        t,
    )
}

/// A migration that went through: requested, checkpointed, restored, completed.
pub fn migration_ok(
    id: Uuid,
    w: &str,
    src: &str,
    dst: &str,
    t: DateTime<Utc>,
    downtime_ms: f64,
    reason: &str,
) -> Vec<Envelope> {
    let timings = Timings {
        dump_ms: Some(71.0),
        upload_ms: Some(40.0),
        download_ms: Some(35.0),
        restore_ms: Some(57.0),
        cleanup_ms: Some(12.0),
        downtime_ms: Some(downtime_ms),
        total_ms: Some(260.0),
    };
    let ms = Duration::milliseconds;
    vec![
        at(
            Envelope::new(
                node("brain"),
                Event::MigrationRequested(Requested {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    requested_by: "brain".into(),
                    reason: Reason {
                        summary: reason.into(),
                        probability: Some(0.87),
                        model_version: Some(2),
                        top_features: vec![("cpu_slope_5m".into(), 3.2), ("psi_cpu".into(), 41.0)],
                        source_load_after_pct: Some(55.0),
                        target_load_after_pct: Some(48.0),
                    },
                }),
            ),
            t,
        ),
        at(
            Envelope::new(
                node(src),
                Event::MigrationCheckpointed(Checkpointed {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    spec: WorkloadSpec {
                        runtime: Runtime::Process,
                        command: vec!["redis-server".into()],
                        image: None,
                        env: Default::default(),
                    },
                    object: format!("{id}.tar"),
                    sha256: "ab".repeat(32),
                    image_bytes: 48 << 20,
                    timings: Timings {
                        dump_ms: timings.dump_ms,
                        upload_ms: timings.upload_ms,
                        ..Default::default()
                    },
                    frozen_at_ms: t.timestamp_millis(),
                }),
            ),
            t + ms(120),
        ),
        at(
            Envelope::new(
                node(dst),
                Event::MigrationRestored(Restored {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    pid: Some(5151),
                    container_id: None,
                    image_bytes: 48 << 20,
                    timings: Timings {
                        cleanup_ms: None,
                        total_ms: None,
                        ..timings
                    },
                }),
            ),
            t + ms(220),
        ),
        at(
            Envelope::new(
                node(src),
                Event::MigrationCompleted(Completed {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    image_bytes: 48 << 20,
                    timings,
                }),
            ),
            t + ms(260),
        ),
    ]
}

/// A migration whose restore failed and that was rolled back.
pub fn migration_rolled_back(
    id: Uuid,
    w: &str,
    src: &str,
    dst: &str,
    t: DateTime<Utc>,
    why: &str,
) -> Vec<Envelope> {
    vec![
        at(
            Envelope::new(
                node("brain"),
                Event::MigrationRequested(Requested {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    requested_by: "alice".into(),
                    reason: Reason {
                        summary: "asked by alice from the dashboard".into(),
                        ..Default::default()
                    },
                }),
            ),
            t,
        ),
        at(
            Envelope::new(
                node(dst),
                Event::MigrationFailed(Failed {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    step: Step::Restore,
                    reason: why.into(),
                }),
            ),
            t + Duration::milliseconds(300),
        ),
        at(
            Envelope::new(
                node(src),
                Event::MigrationRolledBack(RolledBack {
                    migration: id,
                    workload: workload(w),
                    source: node(src),
                    target: node(dst),
                    pid: Some(4242),
                }),
            ),
            t + Duration::milliseconds(400),
        ),
    ]
}

fn scores(model_f1: f64) -> LabelScores {
    LabelScores {
        model: Score {
            precision: model_f1 + 0.05,
            recall: model_f1 - 0.05,
            f1: model_f1,
        },
        baseline: Score {
            precision: 0.5,
            recall: 0.6,
            f1: 0.55,
        },
        baseline_threshold_pct: 85.0,
        positives: 41,
        samples: 1200,
        ..Default::default()
    }
}

/// `model.trained` (version `v`) then `model.activated`.
pub fn model(v: u64, t: DateTime<Utc>) -> Vec<Envelope> {
    vec![
        at(
            Envelope::new(
                node("brain"),
                Event::ModelTrained(Trained {
                    version: v,
                    telemetry_range: (1, 50_000),
                    time_range: (t - Duration::hours(6), t),
                    features: vec!["cpu".into(), "cpu_slope_5m".into(), "psi_cpu".into()],
                    hyper_parameters: vec![("trees".into(), 64.0)],
                    onset: scores(0.78),
                    sustained: scores(0.71),
                    importances: vec![
                        ("cpu_slope_5m".into(), 0.41),
                        ("psi_cpu".into(), 0.33),
                        ("cpu".into(), 0.26),
                    ],
                    train_rows: 20_000,
                    train_seconds: 3.4,
                }),
            ),
            t,
        ),
        at(
            Envelope::new(
                node("brain"),
                Event::ModelActivated(Activated {
                    version: v,
                    replaces: v.checked_sub(1).filter(|x| *x > 0),
                    reason: format!("v{v} beats the 85% threshold on onset F1 (0.78 vs 0.55)"),
                }),
            ),
            t + Duration::seconds(1),
        ),
    ]
}

/// A small cluster as of `now`: node1..node3 joined with 15 minutes of
/// samples (node3 running hot), `redis-cache` started on node3 and moved to
/// node2, `batch-job` on node1 with a rolled-back move, model v1 and v2,
/// predictions.
pub fn cluster(now: DateTime<Utc>) -> Vec<Envelope> {
    let t0 = now - Duration::minutes(15);
    let mut out = Vec::new();
    for n in ["node1", "node2", "node3"] {
        out.push(joined(n, t0));
    }
    out.extend(model(1, t0));
    out.push(started("node3", "redis-cache", t0));
    out.push(started("node1", "batch-job", t0));
    for i in 0..90u64 {
        let t = t0 + Duration::seconds(i as i64 * 10);
        let wave = ((i as f32) / 9.0).sin();
        out.push(sample("node1", t, i, 35.0 + 10.0 * wave));
        out.push(sample("node2", t, i, 20.0 + 5.0 * wave));
        out.push(sample("node3", t, i, 60.0 + i as f32 * 0.4));
        out.push(usage("node3", "redis-cache", t, 80.0 + 10.0 * wave));
        out.push(usage("node1", "batch-job", t, 40.0));
    }
    out.extend(model(2, now - Duration::minutes(5)));
    out.push(predicted("node3", now - Duration::minutes(2), 0.91, 2));
    out.push(predicted("node1", now - Duration::minutes(2), 0.12, 2));
    out.extend(migration_rolled_back(
        Uuid::now_v7(),
        "batch-job",
        "node1",
        "node2",
        now - Duration::minutes(3),
        "criu restore failed: Can't fork for 4242: File exists",
    ));
    out.extend(migration_ok(
        Uuid::now_v7(),
        "redis-cache",
        "node3",
        "node2",
        now - Duration::minutes(1),
        187.0,
        "node3 heads for overload (p=0.91); node2 has room",
    ));
    out
}
