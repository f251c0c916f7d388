//! The brain as a victim of the fault matrix.
//!
//! A real `loadshift-brain` (the workspace's binary, its own sled store)
//! folds the cluster's streams for the whole run. The matrix feeds it fresh
//! telemetry of both nodes (a sample a second each; the executors' own
//! usage reports say they are there), so that draining the workload's node
//! (`node.<n>.drain_requested`, as an operator would) makes the brain's
//! planner decide the move itself: the decision is stored in its outbox with
//! the fold that made it and published from there. That is the path a crash
//! of the brain can break, so these faults kill it on that path:
//! - at a random step of the saga it asked for (while deciding, once its
//!   request is in the log, at `checkpointed`, `restored` or `completed`);
//! - at its crash points: the request stored but not yet published, and
//!   published but not yet removed from the outbox (the next start sends it
//!   again under the same id).
//!
//! After the kill, `loadshift-brain status --json` on the dead brain's store
//! says which decisions it had recorded; it is restarted with that store,
//! and the row checks that each recorded decision reached the log (none
//! lost), that no migration was asked for twice (one request per
//! migration, none while another of the workload is in flight), and, like
//! every row, where the workload runs. After every row of the run the brain
//! must answer `status` and have folded the log up to its end: a brain that
//! does not is stuck.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loadshift_events::{connection, Envelope, Event};
use loadshift_testkit::fixtures;

use super::{check, containers, Cluster, Fault, Outcome, Seeded, HEAL_LIMIT, WORKLOAD};

/// The brain's crash points (`loadshift_brain::fault`), by name: the
/// executor's tests run the brain's binary and do not link its library.
const BEFORE_PUBLISH: &str = "brain_before_publish";
const AFTER_PUBLISH: &str = "brain_after_publish";

/// Who the matrix's drains say asked.
const OPERATOR: &str = "fault-matrix";

/// The nodes the matrix feeds telemetry for.
const NODES: [&str; 2] = ["node2", "node3"];

/// The real brain of the run, and the task feeding it telemetry.
pub struct Brain {
    store: PathBuf,
    log: PathBuf,
    url: String,
    child: Option<Child>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Brain {
    /// Starts the brain on `c` (its store in the cluster's folder) and the
    /// telemetry feeder, and waits until it has folded the log so far.
    pub async fn start(c: &Cluster) -> Self {
        let mut brain = Self {
            store: c.dir.path().join("brain"),
            log: c.dir.path().join("brain.log"),
            url: c.server.url(),
            child: None,
            feeder: tokio::spawn(feed(c.js.clone())),
        };
        brain.spawn(None);
        let seq = c.last_sequence().await;
        assert!(
            brain.answers(seq, Duration::from_secs(60)).await,
            "the brain did not come up; its log:\n{}",
            brain.log()
        );
        brain
    }

    /// Starts the brain process on its store, with crash point `fault`
    /// armed when given.
    fn spawn(&mut self, fault: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("brain log");
        let mut cmd = Command::new(loadshift_testkit::binary("loadshift-brain"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOADSHIFT_")) {
            cmd.env_remove(k);
        }
        cmd.arg("run")
            .env("LOADSHIFT_NATS", &self.url)
            .env("LOADSHIFT_STORE", &self.store)
            .env("LOADSHIFT_RETRAIN_EVERY", "0")
            // The matrix moves the workload every few seconds on purpose:
            // the cooldowns (a policy, not a safety rule) would keep every
            // node from being a target for minutes.
            .env("LOADSHIFT_NODE_COOLDOWN", "0")
            .env("LOADSHIFT_WORKLOAD_COOLDOWN", "0")
            .env("RUST_LOG", "info,loadshift_brain=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("brain log"))
            .stderr(log);
        if let Some(f) = fault {
            cmd.env("LOADSHIFT_FAULTS", f);
        }
        self.child = Some(cmd.spawn().expect("start loadshift-brain"));
    }

    /// kill -9, as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the brain ended by itself (a crash point).
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(Child::try_wait) {
                None => return true,
                Some(Ok(Some(_))) => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    /// What the brain logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `loadshift-brain status --json` on the store, parsed, or why not (a
    /// running brain answers from its snapshot, a stopped one's store is
    /// read directly).
    async fn status(&self) -> Result<serde_json::Value, String> {
        let run = tokio::process::Command::new(loadshift_testkit::binary("loadshift-brain"))
            .args(["status", "--json"])
            .env("LOADSHIFT_STORE", &self.store)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("cannot run: {e}")),
            Err(_) => return Err("no answer within 30 s".into()),
        };
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    }

    /// Whether the brain answers `status` and has folded EVENTS up to
    /// sequence `seq`, within `patience`.
    pub async fn answers(&self, seq: u64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            let applied = self
                .status()
                .await
                .map(|s| s["applied"]["EVENTS"].as_u64().unwrap_or(0));
            match applied {
                Ok(a) if a >= seq => return true,
                _ if Instant::now() > deadline => {
                    eprintln!("the brain is not at EVENTS {seq}: {applied:?}");
                    return false;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The ids of the decisions in the outbox of the stopped brain; `None`
    /// when its store cannot be read.
    async fn recorded(&self) -> Option<Vec<uuid::Uuid>> {
        let status = self.status().await.ok()?;
        status["outbox"]
            .as_array()?
            .iter()
            .map(|w| w["id"].as_str().and_then(|s| s.parse().ok()))
            .collect()
    }
}

impl Drop for Brain {
    fn drop(&mut self) {
        self.feeder.abort();
        self.kill();
    }
}

/// Publishes `node.joined` for each node, then a low-load sample of each
/// every second, for ever (an outage of NATS only skips samples).
async fn feed(js: async_nats::jetstream::Context) {
    let mut joined = [false; NODES.len()];
    for seq in 1.. {
        for (i, n) in NODES.iter().enumerate() {
            let now = Utc::now();
            if !joined[i] {
                joined[i] = publish(&js, &fixtures::joined(n, now)).await;
            }
            publish(&js, &fixtures::sample(n, now, seq, 10.0)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publishes `env`, at most 2 s; whether JetStream stored it.
async fn publish(js: &async_nats::jetstream::Context, env: &Envelope) -> bool {
    let attempt = connection::publish(js, env);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(_))
    )
}

/// Where in the brain's migration it is killed ([`Fault::BrainKilled`]).
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// A random moment (0–400 ms) after the drain was asked for: before,
    /// while or after it decides.
    Deciding,
    /// Its request is in the log.
    Requested,
    /// The source stored the image.
    Checkpointed,
    /// The target runs the workload.
    Restored,
    /// The source cleaned up.
    Completed,
}

const MOMENTS: [Moment; 5] = [
    Moment::Deciding,
    Moment::Requested,
    Moment::Checkpointed,
    Moment::Restored,
    Moment::Completed,
];

/// The drain a row asked for: what the brain must move, and from when.
struct Drain {
    /// The drained node.
    source: String,
    /// The last event in the log before it.
    from: u64,
    /// When it was asked for: the brain decides after.
    since: DateTime<Utc>,
}

impl Drain {
    /// The migration of the brain's request in `env` to move the matrix's
    /// workload off the drained node, if it is one.
    fn request_in(&self, env: &Envelope) -> Option<uuid::Uuid> {
        match &env.event {
            Event::MigrationRequested(r)
                if r.workload.as_str() == WORKLOAD
                    && r.source.as_str() == self.source
                    && env.occurred_at >= self.since =>
            {
                Some(r.migration)
            }
            _ => None,
        }
    }

    /// Waits for the brain's first request; its migration.
    async fn first_request(&self, c: &Cluster) -> Option<uuid::Uuid> {
        c.try_wait_for(HEAL_LIMIT, |e| self.request_in(e).is_some())
            .await
            .and_then(|e| self.request_in(&e))
    }
}

/// Waits until the brain's migration reaches `moment`; whether it did.
async fn reach(c: &Cluster, moment: Moment, drain: &Drain, delay: Duration) -> bool {
    if let Moment::Deciding = moment {
        tokio::time::sleep(delay).await;
        return true;
    }
    let Some(id) = drain.first_request(c).await else {
        return false;
    };
    let step = |e: &Envelope| match (&e.event, moment) {
        (Event::MigrationCheckpointed(p), Moment::Checkpointed) => p.migration == id,
        (Event::MigrationRestored(p), Moment::Restored) => p.migration == id,
        (Event::MigrationCompleted(p), Moment::Completed) => p.migration == id,
        (_, Moment::Requested) => true,
        _ => false,
    };
    c.try_wait_for(HEAL_LIMIT, step).await.is_some()
}

/// One row with the brain as the victim: drain `source`, kill the brain
/// as `fault` says, restart it, then the checks.
pub(super) async fn inject(
    c: &mut Cluster,
    brain: &mut Brain,
    probe: Option<&mut containers::Probe>,
    source: &str,
    fault: Fault,
    delay: Duration,
    rng: &mut Seeded,
) -> Outcome {
    let mut notes = Vec::new();
    let point = match fault {
        Fault::BrainBeforePublish => Some(BEFORE_PUBLISH),
        Fault::BrainAfterPublish => Some(AFTER_PUBLISH),
        _ => None,
    };
    let from = c.last_sequence().await;
    if let Some(p) = point {
        brain.kill();
        brain.spawn(Some(p));
        if !brain.answers(from, Duration::from_secs(60)).await {
            notes.push("the brain armed with its crash point did not come up".into());
        }
    }
    let t = Instant::now();
    let asked = fixtures::drain_requested(source, OPERATOR, Utc::now());
    connection::publish(&c.js, &asked)
        .await
        .expect("publish the drain");
    let drain = Drain {
        source: source.to_string(),
        from,
        since: asked.occurred_at,
    };
    match point {
        Some(_) => {
            if !brain.wait_exit(HEAL_LIMIT) {
                notes.push("the brain did not reach its crash point".into());
                brain.kill();
            }
        }
        None => {
            let moment = MOMENTS[rng.below(MOMENTS.len() as u64) as usize];
            notes.push(format!("brain killed at {moment:?}"));
            if !reach(c, moment, &drain, delay).await {
                notes.push("the migration never got there".into());
            }
            brain.kill();
        }
    }
    let recorded = brain.recorded().await;
    tokio::time::sleep(Duration::from_millis(rng.below(2000))).await;
    brain.spawn(None);
    let outcome = settle(c, brain, probe, &drain, fault, t, notes).await;
    verify(c, outcome, &drain, recorded).await
}

/// Waits for the brain's request(s) off the drained node to end, ends the
/// drain, and checks the workload (the last request's outcome is the row's).
async fn settle(
    c: &mut Cluster,
    brain: &Brain,
    probe: Option<&mut containers::Probe>,
    drain: &Drain,
    fault: Fault,
    t: Instant,
    mut notes: Vec<String>,
) -> Outcome {
    let first = drain.first_request(c).await;
    if let Some(id) = first {
        c.try_outcome(id, HEAL_LIMIT).await;
    }
    // A rolled-back move is retried while the drain lasts: end the drain,
    // then let whatever it asked for end too.
    let end = fixtures::uncordoned(&drain.source, OPERATOR, Utc::now());
    connection::publish(&c.js, &end)
        .await
        .expect("publish the end of the drain");
    // A retry decided before the brain folded the end of the drain is in
    // its outbox by the time it has: give the outbox a moment to send it.
    let ended_at = c.last_sequence().await;
    if !brain.answers(ended_at, Duration::from_secs(30)).await {
        notes.push("the brain did not fold the end of the drain".into());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last = first;
    for e in c.events_after(drain.from).await {
        if let Some(id) = drain.request_in(&e) {
            if Some(id) != last {
                c.try_outcome(id, HEAL_LIMIT).await;
                last = Some(id);
            }
        }
    }
    match last {
        Some(id) => check(c, probe, id, fault, t, notes).await,
        None => {
            notes.push("the brain never asked to move the workload".into());
            let mut o = check(c, probe, uuid::Uuid::nil(), fault, t, notes).await;
            o.stuck = true;
            o
        }
    }
}

/// The brain's own checks on top of the workload's: every decision the
/// dead brain had recorded is in the log, and no migration was asked for
/// twice nor while another of the workload was in flight.
async fn verify(
    c: &Cluster,
    mut outcome: Outcome,
    drain: &Drain,
    recorded: Option<Vec<uuid::Uuid>>,
) -> Outcome {
    let log = c.events_after(drain.from).await;
    let mut notes = Vec::new();
    match recorded {
        None => {
            notes.push("status cannot read the killed brain's store".to_string());
            outcome.stuck = true;
        }
        Some(ids) => {
            let lost: Vec<String> = ids
                .iter()
                .filter(|id| !log.iter().any(|e| e.id == **id))
                .map(|id| id.to_string())
                .collect();
            if !lost.is_empty() {
                notes.push(format!("recorded decisions never published: {lost:?}"));
                outcome.lost = true;
            }
            if lost.is_empty() {
                notes.push(format!(
                    "outbox at the crash: {}, all in the log",
                    ids.len()
                ));
            }
        }
    }
    let (requests, twice) = asked_twice(&log, drain);
    notes.push(format!("{requests} request(s)"));
    if let Some(why) = twice {
        notes.push(why);
        outcome.duplicated = true;
    }
    if !outcome.notes.is_empty() {
        notes.insert(0, std::mem::take(&mut outcome.notes));
    }
    outcome.notes = notes.join("; ");
    outcome
}

/// How many requests the brain made for `drain`, and what was asked
/// twice: a migration requested under two envelopes, or a request made
/// while an earlier one had no outcome.
fn asked_twice(log: &[Envelope], drain: &Drain) -> (usize, Option<String>) {
    let mut open: Option<uuid::Uuid> = None;
    let mut seen = Vec::new();
    for e in log {
        if let Some(id) = drain.request_in(e) {
            if seen.contains(&id) {
                return (seen.len(), Some(format!("migration {id} requested twice")));
            }
            if let Some(busy) = open {
                return (
                    seen.len() + 1,
                    Some(format!("{id} requested while {busy} was in flight")),
                );
            }
            seen.push(id);
            open = Some(id);
        }
        let ended = match &e.event {
            Event::MigrationCompleted(p) => Some(p.migration),
            Event::MigrationRolledBack(p) => Some(p.migration),
            Event::MigrationWithdrawn(p) => Some(p.migration),
            Event::MigrationFailed(p) if p.step == loadshift_events::migration::Step::Validate => {
                Some(p.migration)
            }
            _ => None,
        };
        if ended.is_some() && ended == open {
            open = None;
        }
    }
    (seen.len(), None)
}
