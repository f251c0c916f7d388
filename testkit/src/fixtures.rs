//! Realistic event sequences built in code, for every crate's tests.
//!
//! The dashboard's render tests, its browser test and its benchmark all draw
//! the same [`cluster`], so what one checks is what the others measure; the
//! placement fold, the CLI and the planner are tested on the same migration
//! events ([`Move`]). Fixtures are event sequences, not states, so this crate
//! depends on the contract only and never on a service.

use chrono::{DateTime, Duration, Utc};
use loadshift_events::cordon::{DrainBlocked, DrainRequested, Uncordoned};
use loadshift_events::migration::{
    Checkpointed, Completed, CostEstimate, Failed, Reason, Requested, Restored, RolledBack, Step,
    Timings,
};
use loadshift_events::model::{
    Activated, LabelScores, Predicted, Score, Trained, WorkloadUsage, WorkloadUse,
};
use loadshift_events::payload::NodeJoined;
use loadshift_events::telemetry::{Cpu, LoadAverage, Memory, Pressure, Sample};
use loadshift_events::workload::{Exited, Started, WorkloadSpec};
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

/// `env` as if it happened at `t`.
pub fn at(env: Envelope, t: DateTime<Utc>) -> Envelope {
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

/// What every fixture workload runs: a redis-server process.
pub fn spec() -> WorkloadSpec {
    WorkloadSpec::process(vec!["redis-server".into()])
}

/// `workload.started` of `w` on `n`, as pid 4242.
pub fn started(n: &str, w: &str, t: DateTime<Utc>) -> Envelope {
    started_as(n, w, t, 4242)
}

/// `workload.started` of `w` on `n`, as `pid`.
pub fn started_as(n: &str, w: &str, t: DateTime<Utc>, pid: u32) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::WorkloadStarted(Started {
                workload: workload(w),
                spec: spec(),
                pid: Some(pid),
                container_id: None,
            }),
        ),
        t,
    )
}

/// `workload.exited` of `w`, reported by `n`.
pub fn exited(n: &str, w: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node(n),
            Event::WorkloadExited(Exited {
                workload: workload(w),
                code: Some(0),
                signal: None,
                reason: Default::default(),
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
                workloads: vec![WorkloadUse::new(workload(w), cpu, 96 << 20)],
            }),
        ),
        t,
    )
}

/// `node.<n>.drain_requested` by `by`, from the CLI.
pub fn drain_requested(n: &str, by: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node("cli"),
            Event::NodeDrainRequested(DrainRequested {
                node: node(n),
                requested_by: by.into(),
                reason: "maintenance".into(),
            }),
        ),
        t,
    )
}

/// `node.<n>.uncordoned` by `by`, from the CLI.
pub fn uncordoned(n: &str, by: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node("cli"),
            Event::NodeUncordoned(Uncordoned {
                node: node(n),
                requested_by: by.into(),
            }),
        ),
        t,
    )
}

/// `node.<n>.drain_blocked` from the brain: `w` cannot move, `why`.
pub fn drain_blocked(n: &str, w: &str, why: &str, t: DateTime<Utc>) -> Envelope {
    at(
        Envelope::new(
            node("brain"),
            Event::NodeDrainBlocked(DrainBlocked {
                node: node(n),
                workload: workload(w),
                reason: why.into(),
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

/// One migration's names: every migration event of a fixture is built
/// from one of these, so a test reads as the steps it takes.
#[derive(Debug, Clone)]
pub struct Move {
    /// The migration's id.
    pub id: Uuid,
    /// Which workload.
    pub workload: WorkloadName,
    /// From.
    pub source: NodeName,
    /// To.
    pub target: NodeName,
}

impl Move {
    /// A migration of `w` from `src` to `dst` with a fresh id.
    pub fn new(w: &str, src: &str, dst: &str) -> Self {
        Self::with_id(Uuid::now_v7(), w, src, dst)
    }

    /// The same with a chosen id.
    pub fn with_id(id: Uuid, w: &str, src: &str, dst: &str) -> Self {
        Self {
            id,
            workload: workload(w),
            source: node(src),
            target: node(dst),
        }
    }

    /// `migration.requested` by `by`, emitted by the brain's node.
    pub fn requested(&self, t: DateTime<Utc>, by: &str, reason: Reason) -> Envelope {
        self.event(
            "brain",
            t,
            Event::MigrationRequested(Requested {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                requested_by: by.into(),
                reason,
                mode: loadshift_events::migration::Mode::Auto,
            }),
        )
    }

    /// `migration.checkpointed` by the source, a 48 MiB image.
    pub fn checkpointed(&self, t: DateTime<Utc>, timings: Timings) -> Envelope {
        self.event(
            self.source.as_str(),
            t,
            Event::MigrationCheckpointed(Checkpointed {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                spec: spec(),
                object: format!("{}.tar", self.id),
                sha256: "ab".repeat(32),
                image_bytes: IMAGE_BYTES,
                timings,
                frozen_at_ms: t.timestamp_millis(),
                stream: None,
                lazy: false,
            }),
        )
    }

    /// `migration.restored` by the target, running as `pid`.
    pub fn restored(&self, t: DateTime<Utc>, pid: u32, timings: Timings) -> Envelope {
        self.event(
            self.target.as_str(),
            t,
            Event::MigrationRestored(Restored {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                pid: Some(pid),
                container_id: None,
                image_bytes: IMAGE_BYTES,
                timings,
            }),
        )
    }

    /// `migration.completed` by the source, pages streamed.
    pub fn completed(&self, t: DateTime<Utc>, timings: Timings) -> Envelope {
        self.event(
            self.source.as_str(),
            t,
            Event::MigrationCompleted(Completed {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                image_bytes: IMAGE_BYTES,
                timings,
                mode: Some(loadshift_events::migration::Mode::Stream),
                fallback: None,
            }),
        )
    }

    /// `migration.failed` at `step`, by the target.
    pub fn failed(&self, t: DateTime<Utc>, step: Step, why: &str) -> Envelope {
        self.event(
            self.target.as_str(),
            t,
            Event::MigrationFailed(Failed {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                step,
                reason: why.into(),
            }),
        )
    }

    /// `migration.rolled_back` by the source, resumed as `pid` when given.
    pub fn rolled_back(&self, t: DateTime<Utc>, pid: Option<u32>) -> Envelope {
        self.event(
            self.source.as_str(),
            t,
            Event::MigrationRolledBack(RolledBack {
                migration: self.id,
                workload: self.workload.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                pid,
            }),
        )
    }

    /// What the executors say after the request when all goes well:
    /// `checkpointed` with the source's timings, `restored` with all but
    /// cleanup and total, `completed` with `all`, 120, 220 and 260 ms after `t`.
    pub fn went_through(&self, t: DateTime<Utc>, pid: u32, all: Timings) -> Vec<Envelope> {
        let ms = Duration::milliseconds;
        let dumped = Timings {
            dump_ms: all.dump_ms,
            upload_ms: all.upload_ms,
            ..Default::default()
        };
        let restored = Timings {
            cleanup_ms: None,
            total_ms: None,
            ..all
        };
        vec![
            self.checkpointed(t + ms(120), dumped),
            self.restored(t + ms(220), pid, restored),
            self.completed(t + ms(260), all),
        ]
    }

    fn event(&self, emitter: &str, t: DateTime<Utc>, event: Event) -> Envelope {
        at(Envelope::new(node(emitter), event), t)
    }
}

/// The image size every fixture migration moves.
pub const IMAGE_BYTES: u64 = 48 << 20;

/// The timings of a migration that went through, with `downtime_ms`.
pub fn timings(downtime_ms: f64) -> Timings {
    Timings {
        dump_ms: Some(71.0),
        upload_ms: Some(40.0),
        download_ms: Some(35.0),
        restore_ms: Some(57.0),
        cleanup_ms: Some(12.0),
        downtime_ms: Some(downtime_ms),
        total_ms: Some(260.0),
        postcopy_ms: None,
    }
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
    let m = Move::with_id(id, w, src, dst);
    let why = Reason {
        summary: reason.into(),
        probability: Some(0.87),
        model_version: Some(2),
        top_features: vec![("cpu_slope_5m".into(), 3.2), ("psi_cpu".into(), 41.0)],
        source_load_after_pct: Some(55.0),
        target_load_after_pct: Some(48.0),
        estimate: Some(CostEstimate {
            image_bytes: 5151,
            freeze_ms: 150.0,
            total_ms: 300.0,
        }),
    };
    let mut out = vec![m.requested(t, "brain", why)];
    out.extend(m.went_through(t, 5151, timings(downtime_ms)));
    out
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
    let m = Move::with_id(id, w, src, dst);
    let asked = Reason {
        summary: "asked by alice from the dashboard".into(),
        ..Default::default()
    };
    vec![
        m.requested(t, "alice", asked),
        m.failed(t + Duration::milliseconds(300), Step::Restore, why),
        m.rolled_back(t + Duration::milliseconds(400), Some(4242)),
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

/// `node.joined` of `n` at `t` announcing `source` (`cgroup:...`,
/// `trace:...`): what the node page reads to say why a series is missing.
pub fn joined_as(n: &str, t: DateTime<Utc>, source: &str) -> Envelope {
    let mut env = joined(n, t);
    if let Event::NodeJoined(j) = &mut env.event {
        j.source = source.into();
    }
    env
}

/// A node as `loadshift up` runs it on a cgroup v1 machine: 15 minutes of
/// samples up to `now`, none with a load average or pressure (a cgroup has
/// no load average, and cgroup v1 no pressure files).
pub fn cgroup_v1_node(n: &str, now: DateTime<Utc>) -> Vec<Envelope> {
    let t0 = now - Duration::minutes(15);
    let mut out = vec![joined_as(n, t0, &format!("cgroup:loadshift-up/{n}"))];
    out.extend((0..90u64).map(|i| {
        let mut env = sample(n, t0 + Duration::seconds(i as i64 * 10), i, 30.0);
        if let Event::TelemetrySample(s) = &mut env.event {
            s.load = None;
            s.psi = None;
        }
        env
    }));
    out
}

/// Where [`replayed_trace_node`]'s trace starts: 2013-08-01 00:00 UTC, the
/// Bitbrains August month.
pub fn trace_start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_375_315_200, 0).expect("a valid time")
}

/// A node replaying a Bitbrains trace at 60x: `count` samples stamped
/// from [`trace_start`] in 5-minute steps, published 5 s apart, the last
/// one at `now` (wall clock).
pub fn replayed_trace_node(n: &str, now: DateTime<Utc>, count: u32) -> Vec<Envelope> {
    let wall = |i: u32| now - Duration::seconds(5 * i64::from(count - 1 - i));
    let mut out = vec![joined_as(n, wall(0), &format!("trace:{n}.csv"))];
    out.extend((0..count).map(|i| {
        let at = trace_start() + Duration::minutes(5 * i64::from(i));
        let cpu = 20.0 + 60.0 * (i as f32 / count as f32);
        let mut env = sample(n, at, u64::from(i), cpu);
        env.occurred_at = wall(i);
        env
    }));
    out
}
