//! Hostile inputs for every decoder, generated from a seed.
//!
//! One generator for all the fuzz tests (the envelope decoder in `events`,
//! the trace loader, the brain's fold, the webui's projection), so each
//! consumer is fed the same kinds of attack: valid events of every kind,
//! the same events mutated (bytes flipped, inserted, cut; numbers replaced
//! by `1e39`, `-50`, `1e400`; strings by names that would change subject
//! matching or by 70 kB of text; kinds swapped; deep nesting), and random
//! bytes. proptest drives it with a fixed seed, so a run is reproducible.
//!
//! The test suite runs [`DEFAULT_CASES`] per target; a long run sets
//! `LOADSHIFT_FUZZ_CASES` (and `LOADSHIFT_FUZZ_SEED` for another sequence).

use loadshift_events::{Envelope, Kind};
/// The property-test library itself, so a fuzz test needs no dependency of
/// its own (`use loadshift_testkit::fuzz::proptest;`).
pub use proptest;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// Cases per target in the ordinary test suite.
pub const DEFAULT_CASES: u32 = 20_000;

/// The seed the suite uses unless `LOADSHIFT_FUZZ_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x10AD_5417;

/// Cases to run: `LOADSHIFT_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("LOADSHIFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// A runner with the fixed seed, no failure files and a short shrink (a
/// failure is reported with its input; shrinking a million-case run for
/// minutes helps nobody).
pub fn runner() -> TestRunner {
    let seed = std::env::var("LOADSHIFT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    TestRunner::new(Config {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// One message as a consumer reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The subject it came on.
    pub subject: String,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// The index in [`valid_events`] when it is that event, unchanged.
    pub valid: Option<usize>,
}

// Long on purpose: one valid payload per event kind, a table that must
// cover every kind (a test checks it).
/// The payload of each kind, as JSON, from which the valid events are built.
fn payloads() -> Vec<(Kind, serde_json::Value)> {
    use serde_json::json;
    let id = "0192a000-0000-7000-8000-000000000001";
    let spec = json!({"runtime": "process", "command": ["sleep", "60"], "env": {"A": "1"}});
    let timings = json!({"dump_ms": 71.0, "upload_ms": 12.5, "download_ms": 9.0, "restore_ms": 57.0, "downtime_ms": 187.0, "total_ms": 260.0});
    vec![
        (
            Kind::TelemetrySample,
            json!({"at": "2013-07-01T00:00:00Z", "seq": 7, "cpu": {"usage_pct": 42.5, "capacity_cores": 2.0, "per_core_pct": [40.0, 45.0]}, "memory": {"used_bytes": 1073741824u64, "total_bytes": 4294967296u64}, "load": {"one": 0.5, "five": 0.4, "fifteen": 0.3}, "net": {"in_bps": 1000.0, "out_bps": 2000.0}, "disk": {"in_bps": 0.0, "out_bps": 10.0}, "processes": 12, "psi": {"cpu_some": 1.5}}),
        ),
        (
            Kind::NodeJoined,
            json!({"source": "host", "capacity_cores": 2.0, "memory_bytes": 4294967296u64, "agent_version": "0.1.0"}),
        ),
        (Kind::NodeLeft, json!({"reason": "SIGTERM", "samples": 3})),
        (
            Kind::WorkloadStartRequested,
            json!({"workload": "counter", "node": "node2", "spec": spec, "requested_by": "alice"}),
        ),
        (
            Kind::WorkloadStarted,
            json!({"workload": "counter", "spec": spec, "pid": 42}),
        ),
        (
            Kind::WorkloadStartFailed,
            json!({"workload": "counter", "reason": "no such file"}),
        ),
        (
            Kind::WorkloadExited,
            json!({"workload": "counter", "code": 0}),
        ),
        (
            Kind::WorkloadStopRequested,
            json!({"workload": "counter", "node": "node2", "grace_ms": 10000, "requested_by": "alice"}),
        ),
        (
            Kind::MigrationRequested,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "requested_by": "brain", "reason": {"summary": "node2 heads for overload", "probability": 0.91, "model_version": 2, "top_features": [["cpu_slope_5m", 1.5]], "source_load_after_pct": 40.0, "target_load_after_pct": 60.0}}),
        ),
        (
            Kind::MigrationCheckpointed,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "spec": spec, "object": "m1", "sha256": "ab", "image_bytes": 1024, "timings": timings, "frozen_at_ms": 1700000000000i64}),
        ),
        (
            Kind::MigrationRestored,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "pid": 43, "image_bytes": 1024, "timings": timings}),
        ),
        (
            Kind::MigrationCompleted,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "image_bytes": 1024, "timings": timings}),
        ),
        (
            Kind::MigrationFailed,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "step": "restore", "reason": "criu restore failed"}),
        ),
        (
            Kind::MigrationRolledBack,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "pid": 42}),
        ),
        (
            Kind::MigrationWithdrawn,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "reason": "not published within 60 s"}),
        ),
        (
            Kind::MigrationFenced,
            json!({"migration": id, "workload": "counter", "source": "node2", "target": "node3", "waited_ms": 12000.0, "reason": "no restore within the deadline"}),
        ),
        (
            Kind::MigrationDeferred,
            json!({"source": "node2", "workload": "counter", "probability": 0.8, "reason": "no target has room"}),
        ),
        (
            Kind::ModelTrainRequested,
            json!({"requested_by": "alice", "reason": "new month"}),
        ),
        (
            Kind::ModelTrained,
            json!({"version": 2, "telemetry_range": [1, 900], "time_range": ["2013-07-01T00:00:00Z", "2013-07-31T00:00:00Z"], "features": ["cpu", "cpu_slope_5m"], "hyper_parameters": [["trees", 50.0]], "onset": {"model": {"precision": 0.5, "recall": 0.6, "f1": 0.55}, "baseline": {"precision": 0.4, "recall": 0.5, "f1": 0.45}, "baseline_threshold_pct": 80.0, "positives": 10, "samples": 100}, "sustained": {"model": {"precision": 0.5, "recall": 0.6, "f1": 0.55}, "baseline": {"precision": 0.4, "recall": 0.5, "f1": 0.45}, "baseline_threshold_pct": 80.0, "positives": 10, "samples": 100}, "importances": [["cpu", 0.7]], "train_rows": 500, "train_seconds": 1.5}),
        ),
        (
            Kind::ModelActivated,
            json!({"version": 2, "replaces": 1, "reason": "better F1"}),
        ),
        (
            Kind::NodePredicted,
            json!({"node": "node2", "at": "2013-07-01T00:00:00Z", "onset": 0.3, "sustained": 0.1, "model_version": 2}),
        ),
        (
            Kind::WorkloadUsage,
            json!({"at": "2013-07-01T00:00:00Z", "workloads": [{"workload": "counter", "cpu_pct": 12.5, "rss_bytes": 1048576}]}),
        ),
        (
            Kind::NodeDrainRequested,
            json!({"node": "node2", "requested_by": "alice", "reason": "kernel update"}),
        ),
        (
            Kind::NodeUncordoned,
            json!({"node": "node2", "requested_by": "alice"}),
        ),
        (
            Kind::NodeDrainBlocked,
            json!({"node": "node2", "workload": "counter", "reason": "no target: node3 has no room for its memory"}),
        ),
    ]
}

/// One valid event of every kind the contract knows, with its subject.
///
/// # Panics
/// When a table entry no longer decodes: the contract changed and the table
/// must follow it (a test failure, as it should be).
pub fn valid_events() -> Vec<(String, Envelope)> {
    let table = payloads();
    assert_eq!(table.len(), Kind::ALL.len(), "one payload per kind");
    table
        .into_iter()
        .enumerate()
        .map(|(i, (kind, payload))| {
            // Fixed ids: every call builds the same events.
            let id = uuid::Uuid::from_u128(0x0192_a000_0000_7000_8000_0000_0000_0100 + i as u128);
            let wire = serde_json::json!({
                "id": id,
                "kind": kind.as_str(),
                "occurred_at": "2026-01-01T00:00:00Z",
                "node": "node2",
                "schema": 1,
                "payload": payload,
            });
            let bytes = serde_json::to_vec(&wire).expect("plain JSON");
            let env = Envelope::from_json(&bytes)
                .unwrap_or_else(|e| panic!("the {} template does not decode: {e}", kind.as_str()));
            (env.subject(), env)
        })
        .collect()
}

/// What one mutation does to a valid message.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    Number(usize, &'static str),
    Text(usize, String),
    Kind(usize),
    Subject(&'static str),
    Nest(usize),
    Repeat,
}

const NUMBERS: &[&str] = &[
    "1e39",
    "-1e39",
    "1e400",
    "-50",
    "-4",
    "-0",
    "1e-50",
    "3.4028236e38",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999",
    "0.5",
    "1000.0001",
    "NaN",
    "Infinity",
    "null",
    "\"12\"",
    "[]",
    "{}",
    "true",
];

const SUBJECTS: &[&str] = &[
    "telemetry.node3",
    "telemetry.node2.workloads",
    "migration.node9.requested",
    "node.node2.left",
    "workload.>",
    "",
    "telemetry.*",
    "model.node2.trained",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a.b".to_string()),
        Just("*".to_string()),
        Just(">".to_string()),
        Just("node2 evil".to_string()),
        Just("\u{0}\u{7}".to_string()),
        Just("é\u{202e}".to_string()),
        (1usize..70_000).prop_map(|n| "x".repeat(n)),
        "[a-z0-9._>*-]{0,40}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::FlipBit(p, b % 8)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::sample::select(NUMBERS))
            .prop_map(|(i, n)| Mutation::Number(i, n)),
        (any::<usize>(), text()).prop_map(|(i, t)| Mutation::Text(i, t)),
        any::<usize>().prop_map(Mutation::Kind),
        proptest::sample::select(SUBJECTS).prop_map(Mutation::Subject),
        (1usize..5_000).prop_map(Mutation::Nest),
        Just(Mutation::Repeat),
    ]
}

/// A token's byte range, start and end.
type Span = (usize, usize);

/// Number and string tokens of a JSON text outside of strings, as spans.
fn tokens(s: &[u8]) -> (Vec<Span>, Vec<Span>) {
    let (mut numbers, mut strings) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                strings.push((start, (i + 1).min(s.len())));
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < s.len()
                    && matches!(s[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                numbers.push((start, i + 1));
            }
            _ => {}
        }
        i += 1;
    }
    (numbers, strings)
}

fn splice(bytes: &mut Vec<u8>, (a, b): Span, with: &[u8]) {
    bytes.splice(a..b, with.iter().copied());
}

fn apply(m: &Mutation, subject: &mut String, bytes: &mut Vec<u8>) {
    let len = bytes.len().max(1);
    match m {
        Mutation::FlipBit(p, bit) => {
            if let Some(b) = bytes.get_mut(p % len) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), *b),
        Mutation::Delete(p, n) => {
            let a = p % len;
            let b = (a + n).min(bytes.len());
            if a < b {
                bytes.drain(a..b);
            }
        }
        Mutation::Truncate(p) => bytes.truncate(p % len),
        Mutation::Number(i, n) => {
            let (numbers, _) = tokens(bytes);
            if !numbers.is_empty() {
                splice(bytes, numbers[i % numbers.len()], n.as_bytes());
            }
        }
        Mutation::Text(i, t) => {
            let (_, strings) = tokens(bytes);
            if !strings.is_empty() {
                let quoted = serde_json::to_vec(t).unwrap_or_default();
                splice(bytes, strings[i % strings.len()], &quoted);
            }
        }
        Mutation::Kind(i) => {
            // On the bytes themselves: earlier mutations may have left
            // invalid UTF-8, whose lossy text would shift every index.
            let kind = Kind::ALL[i % Kind::ALL.len()].as_str();
            let key = b"\"kind\":\"";
            if let Some(at) = bytes.windows(key.len()).position(|w| w == key) {
                let from = at + key.len();
                if let Some(end) = bytes[from..].iter().position(|b| *b == b'"') {
                    splice(bytes, (from, from + end), kind.as_bytes());
                }
            }
        }
        Mutation::Subject(s) => *subject = (*s).to_string(),
        Mutation::Nest(n) => {
            let mut v = vec![b'['; *n];
            v.extend_from_slice(bytes);
            v.extend(std::iter::repeat_n(b']', *n));
            *bytes = v;
        }
        Mutation::Repeat => {
            let copy = bytes.clone();
            bytes.extend_from_slice(&copy);
        }
    }
}

/// Messages a consumer may be sent: valid events unchanged (a third), the
/// same mutated one to four times (half), or random bytes.
pub fn input() -> impl Strategy<Value = Input> {
    let valid = valid_events();
    let n = valid.len();
    let encoded: Vec<(String, Vec<u8>)> = valid
        .iter()
        .map(|(s, e)| (s.clone(), e.to_json().expect("valid events encode")))
        .collect();
    let unchanged = {
        let encoded = encoded.clone();
        (0..n).prop_map(move |i| Input {
            subject: encoded[i].0.clone(),
            payload: encoded[i].1.clone(),
            valid: Some(i),
        })
    };
    let mutated = (0..n, proptest::collection::vec(mutation(), 1..5)).prop_map(move |(i, ms)| {
        let (mut subject, mut payload) = encoded[i].clone();
        for m in &ms {
            apply(m, &mut subject, &mut payload);
        }
        Input {
            subject,
            payload,
            valid: None,
        }
    });
    let random = (
        proptest::sample::select(SUBJECTS),
        proptest::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(s, payload)| Input {
            subject: s.to_string(),
            payload,
            valid: None,
        });
    prop_oneof![3 => unchanged, 5 => mutated, 2 => random]
}

/// Rows a trace file may hold: good Bitbrains rows, the same mutated, and
/// random text.
pub fn trace_line() -> impl Strategy<Value = String> {
    let good = "1372629600;2;5000;2500;50.0;4194304;2097152;10.5;3.25;100.0;200.0";
    let field = prop_oneof![
        "[0-9]{1,12}(\\.[0-9]{1,6})?",
        proptest::sample::select(NUMBERS).prop_map(str::to_string),
        Just("1e40".to_string()),
        Just(String::new()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        Just(good.to_string()),
        (0usize..11, field).prop_map(move |(i, f)| {
            let mut fields: Vec<String> = good.split(';').map(str::to_string).collect();
            fields[i] = f;
            fields.join(";")
        }),
        "[ -~\\t]{0,120}",
        proptest::collection::vec(any::<u8>(), 0..120)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}
