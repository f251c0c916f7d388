//! The fault matrix: migrations of a live counter (a process, or a Docker
//! container) between two real executors (real CRIU, a real nats-server,
//! each executor behind its own TCP relay so that one node alone can lose
//! NATS), each with one fault injected at a seeded random point, and after
//! each the invariants checked: the workload runs on exactly one node, its
//! counter never went back or restarted, no image is left anywhere, and
//! both executors still answer. A real brain runs through the whole matrix
//! when a brain kind is drawn from, and is a victim too ([`brain`]): after
//! every row it must answer and have folded the log to its end.
//!
//! `scripts/faults [--count N] [--seed S] [--only KIND]... [--containers]`
//! runs it at length (through the `faults` bench target);
//! `tests/fault_matrix.rs` runs a short seeded slice of each workload kind.

use std::fmt;
use std::time::{Duration, Instant};

use loadshift_events::stream::CHECKPOINTS;
use loadshift_events::{Envelope, Event, NodeName};

use loadshift_testkit::Relay;

mod brain;
mod containers;

use super::{counter_values, Cluster, COUNTER};

/// The counter every run moves.
const WORKLOAD: &str = "matrix-counter";
/// The deadline floor the executors run with, short so a silent target is
/// fenced in seconds.
const FLOOR: &str = "2s";
/// How long one migration may take to reach its outcome before it counts as
/// stuck (a dead target is fenced after twice the floor).
const HEAL_LIMIT: Duration = Duration::from_secs(90);

/// One fault to inject into one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The source kills itself right after the dump (crash point).
    SourceAfterDump,
    /// The target kills itself as the image starts arriving and stays
    /// down for a while (crash point).
    TargetBeforeDownload,
    /// The target kills itself with criu restore under way (crash point).
    TargetDuringRestore,
    /// kill -9 of the source a random moment after the request.
    SourceKilled,
    /// kill -9 of the target a random moment after the request.
    TargetKilled,
    /// kill -9 of nats-server a random moment after the request, restarted
    /// with its store.
    NatsKilled,
    /// A forged `failed` right after `checkpointed`.
    ForgedFailed,
    /// The same `checkpointed` published again under a new envelope.
    DuplicateCheckpointed,
    /// The source's or the target's NATS connection cut a random moment
    /// after the request, for a few seconds (nats-server and the other node
    /// keep running).
    NatsCut,
    /// SIGTERM to the source or the target a random moment after the
    /// request (whatever step it is in), then started again; it must stop
    /// within [`SIGTERM_LIMIT`].
    Terminated,
    /// The brain, asked to drain the workload's node, is killed -9 at a
    /// random step of the migration it decided, then restarted with its
    /// store.
    BrainKilled,
    /// The brain kills itself with its migration request stored in its
    /// outbox, before publishing it (crash point).
    BrainBeforePublish,
    /// The brain kills itself once JetStream has its request, before
    /// removing it from the outbox (crash point).
    BrainAfterPublish,
}

/// How long an executor may take to honour SIGTERM before the row counts
/// as stuck.
const SIGTERM_LIMIT: Duration = Duration::from_secs(3);

impl Fault {
    /// Every kind, in the order the table's seeded choice indexes them.
    pub const ALL: [Fault; 13] = [
        Fault::SourceAfterDump,
        Fault::TargetBeforeDownload,
        Fault::TargetDuringRestore,
        Fault::SourceKilled,
        Fault::TargetKilled,
        Fault::NatsKilled,
        Fault::ForgedFailed,
        Fault::DuplicateCheckpointed,
        Fault::NatsCut,
        Fault::Terminated,
        Fault::BrainKilled,
        Fault::BrainBeforePublish,
        Fault::BrainAfterPublish,
    ];

    /// The brain's own kinds (the rows that need a real brain).
    pub const BRAIN: [Fault; 3] = [
        Fault::BrainKilled,
        Fault::BrainBeforePublish,
        Fault::BrainAfterPublish,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Fault::SourceAfterDump => "source killed after dump",
            Fault::TargetBeforeDownload => "target killed at download, kept down",
            Fault::TargetDuringRestore => "target killed during restore",
            Fault::SourceKilled => "source kill -9 at random",
            Fault::TargetKilled => "target kill -9 at random",
            Fault::NatsKilled => "nats-server kill -9 at random",
            Fault::ForgedFailed => "forged failed after checkpointed",
            Fault::DuplicateCheckpointed => "duplicate checkpointed",
            Fault::NatsCut => "a node's NATS connection cut",
            Fault::Terminated => "SIGTERM at random, restarted",
            Fault::BrainKilled => "brain kill -9 at a saga step",
            Fault::BrainBeforePublish => "brain killed, request stored, unpublished",
            Fault::BrainAfterPublish => "brain killed, request published, still stored",
        };
        f.write_str(s)
    }
}

/// What the counter runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workloads {
    /// A process under criu, on executors in process mode.
    Processes,
    /// A container of the real Docker daemon, on executors in docker mode.
    Containers,
}

/// A small seeded generator (xorshift64*): the same seed, the same faults.
pub struct Seeded(u64);

impl Seeded {
    /// A generator from `seed` (0 is moved off the fixed point).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one injected fault ended in.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The fault.
    pub fault: Fault,
    /// `completed`, `rolled_back`, `refused` or `none`.
    pub ended: &'static str,
    /// How long from the request until every check passed (or gave up).
    pub heal: Duration,
    /// No copy of the workload runs.
    pub lost: bool,
    /// Two copies run, or the counter went back or restarted.
    pub duplicated: bool,
    /// No outcome in time, an executor that does not answer, or an image
    /// left behind.
    pub stuck: bool,
    /// What was wrong, in words.
    pub notes: String,
}

/// The whole run's tally.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Every outcome, in order.
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    /// The closing line the issue asks for.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Outcome) -> bool| self.outcomes.iter().filter(|o| f(o)).count();
        format!(
            "faults: {} injected, {} lost, {} duplicated, {} stuck",
            self.outcomes.len(),
            count(|o| o.lost),
            count(|o| o.duplicated),
            count(|o| o.stuck)
        )
    }
}

fn other(node: &str) -> &'static str {
    if node == "node2" {
        "node3"
    } else {
        "node2"
    }
}

/// The cluster under test, each executor reaching nats-server through a
/// relay of its own that a fault can cut.
struct Rig {
    /// The real brain, when a brain kind is drawn from (first: it stops
    /// before the server it talks to).
    brain: Option<brain::Brain>,
    c: Cluster,
    relays: Vec<(&'static str, Relay)>,
    /// The container workload's probe (`None`: a process workload).
    probe: Option<containers::Probe>,
}

impl Rig {
    async fn new(workloads: Workloads, kinds: &[Fault]) -> Self {
        let mut c = match workloads {
            Workloads::Processes => Cluster::new(&["node2", "node3"]).await,
            Workloads::Containers => {
                Cluster::with_runtime(&["node2", "node3"], true, Some("docker")).await
            }
        };
        let mut relays = Vec::new();
        for n in ["node2", "node3"] {
            let relay = Relay::start(c.server.addr());
            c.node(n).url = relay.url();
            c.node(n)
                .restart_with_env(&[("LOADSHIFT_DEADLINE_FLOOR", FLOOR)]);
            c.wait_ping(n).await;
            relays.push((n, relay));
        }
        let probe = match workloads {
            Workloads::Processes => {
                c.run_workload("node2", WORKLOAD, COUNTER).await;
                None
            }
            Workloads::Containers => {
                let probe = containers::Probe::new(WORKLOAD).await;
                c.run_container("node2", WORKLOAD, containers::IMAGE, &[])
                    .await;
                Some(probe)
            }
        };
        let brain = match kinds.iter().any(|k| Fault::BRAIN.contains(k)) {
            true => Some(brain::Brain::start(&c).await),
            false => None,
        };
        Self {
            brain,
            c,
            relays,
            probe,
        }
    }
}

/// The relay in front of `node`'s executor.
fn relay_of<'a>(relays: &'a [(&'static str, Relay)], node: &str) -> &'a Relay {
    &relays
        .iter()
        .find(|(n, _)| *n == node)
        .expect("every node has a relay")
        .1
}

impl Fault {
    /// The kind's name on the command line (`--only nats-cut`).
    pub fn slug(self) -> &'static str {
        match self {
            Fault::SourceAfterDump => "source-after-dump",
            Fault::TargetBeforeDownload => "target-before-download",
            Fault::TargetDuringRestore => "target-during-restore",
            Fault::SourceKilled => "source-killed",
            Fault::TargetKilled => "target-killed",
            Fault::NatsKilled => "nats-killed",
            Fault::ForgedFailed => "forged-failed",
            Fault::DuplicateCheckpointed => "duplicate-checkpointed",
            Fault::NatsCut => "nats-cut",
            Fault::Terminated => "sigterm",
            Fault::BrainKilled => "brain-killed",
            Fault::BrainBeforePublish => "brain-before-publish",
            Fault::BrainAfterPublish => "brain-after-publish",
        }
    }

    /// The kind named `slug`.
    pub fn from_slug(slug: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.slug() == slug)
    }
}

/// Runs `count` faults from `seed`, printing one table row per fault, and
/// returns the tally.
pub async fn run(count: usize, seed: u64) -> Tally {
    run_kinds(count, seed, &Fault::ALL, Workloads::Processes).await
}

/// Like [`run`], each fault drawn from `kinds` only (one kind at a time
/// to study it), the counter run as `workloads`. Containers skip the crash
/// point inside criu restore, which only the process runtime has.
pub async fn run_kinds(count: usize, seed: u64, kinds: &[Fault], workloads: Workloads) -> Tally {
    run_drawn(count, seed, kinds, workloads, false).await
}

/// Each of `kinds` once, in order (the seed still draws moments and
/// delays): a short slice sure to cover every kind given.
pub async fn run_each(kinds: &[Fault], seed: u64, workloads: Workloads) -> Tally {
    run_drawn(kinds.len(), seed, kinds, workloads, true).await
}

/// The run: `count` rows, each fault drawn from `kinds` at random, or
/// `in_turn`.
async fn run_drawn(
    count: usize,
    seed: u64,
    kinds: &[Fault],
    workloads: Workloads,
    in_turn: bool,
) -> Tally {
    let kinds: Vec<Fault> = kinds
        .iter()
        .copied()
        .filter(|k| workloads == Workloads::Processes || *k != Fault::TargetDuringRestore)
        .collect();
    let mut rig = Rig::new(workloads, &kinds).await;
    let mut rng = Seeded::new(seed);
    let mut on = "node2";
    let mut tally = Tally::default();
    println!("| # | fault | outcome | heal | lost | duplicated | stuck | notes |");
    println!("|---|---|---|---|---|---|---|---|");
    for i in 0..count {
        let fault = match in_turn {
            true => kinds[i % kinds.len()],
            false => kinds[rng.below(kinds.len() as u64) as usize],
        };
        let delay = Duration::from_millis(rng.below(400));
        let mut outcome = inject(&mut rig, on, fault, delay, &mut rng).await;
        brain_answers(&rig, &mut outcome).await;
        if outcome.ended == "completed" {
            on = other(on);
        }
        println!(
            "| {} | {} | {} | {:.1} s | {} | {} | {} | {} |",
            i + 1,
            fault,
            outcome.ended,
            outcome.heal.as_secs_f64(),
            if outcome.lost { "LOST" } else { "" },
            if outcome.duplicated { "DUP" } else { "" },
            if outcome.stuck { "STUCK" } else { "" },
            outcome.notes
        );
        let broken = outcome.lost || outcome.duplicated;
        tally.outcomes.push(outcome);
        if broken {
            // The workload's state is unknown: later rows would measure
            // the wreck, not the saga.
            println!(
                "stopping: the workload is lost or doubled\n{}\n--- brain ---\n{}",
                rig.c.logs(),
                rig.brain
                    .as_ref()
                    .map(brain::Brain::log)
                    .unwrap_or_default()
            );
            break;
        }
    }
    println!("{}", tally.summary());
    if let Some(probe) = &rig.probe {
        probe.remove_all().await;
    }
    tally
}

/// After any row: the brain, when one runs, must answer and fold the log
/// to its end (one that does not is stuck).
async fn brain_answers(rig: &Rig, outcome: &mut Outcome) {
    let Some(brain) = &rig.brain else {
        return;
    };
    let seq = rig.c.last_sequence().await;
    if !brain.answers(seq, Duration::from_secs(60)).await {
        outcome.stuck = true;
        let sep = if outcome.notes.is_empty() { "" } else { "; " };
        outcome.notes = format!("{}{sep}the brain does not answer or fold", outcome.notes);
    }
}

/// Restarts `node`'s executor with the matrix's settings, plus `fault`
/// armed when given.
fn restart(c: &mut Cluster, node: &str, fault: Option<&str>) {
    let mut env = vec![("LOADSHIFT_DEADLINE_FLOOR", FLOOR)];
    if let Some(f) = fault {
        env.push(("LOADSHIFT_FAULTS", f));
    }
    c.node(node).restart_with_env(&env);
}

/// One migration from `source` with `fault` injected; then the checks.
async fn inject(
    rig: &mut Rig,
    source: &str,
    fault: Fault,
    delay: Duration,
    rng: &mut Seeded,
) -> Outcome {
    let target = other(source);
    let Rig {
        brain,
        c,
        relays,
        probe,
    } = rig;
    if Fault::BRAIN.contains(&fault) {
        let brain = brain
            .as_mut()
            .expect("a brain runs when its kinds are drawn");
        return brain::inject(c, brain, probe.as_mut(), source, fault, delay, rng).await;
    }
    use loadshift_executor::fault as points;
    let armed = match fault {
        Fault::SourceAfterDump => Some((source, points::AFTER_DUMP)),
        Fault::TargetBeforeDownload => Some((target, points::BEFORE_DOWNLOAD)),
        Fault::TargetDuringRestore => Some((target, points::DURING_RESTORE)),
        _ => None,
    };
    if let Some((node, point)) = armed {
        restart(c, node, Some(point));
        c.wait_ping(node).await;
    }
    let t = Instant::now();
    let id = c.migrate(WORKLOAD, source, target).await;
    let mut notes = Vec::new();
    let mut sigterm_ignored = false;
    match fault {
        Fault::SourceAfterDump | Fault::TargetBeforeDownload | Fault::TargetDuringRestore => {
            let (node, _) = armed.unwrap_or((source, ""));
            if c.node(node).wait_exit(Duration::from_secs(60)) {
                if fault == Fault::TargetBeforeDownload {
                    // Kept down past the source's deadline half the time.
                    tokio::time::sleep(Duration::from_millis(rng.below(8000))).await;
                }
            } else {
                notes.push(format!("{node} did not reach its crash point"));
            }
            restart(c, node, None);
        }
        Fault::SourceKilled | Fault::TargetKilled => {
            let node = if fault == Fault::SourceKilled {
                source
            } else {
                target
            };
            tokio::time::sleep(delay).await;
            c.node(node).kill();
            restart(c, node, None);
        }
        Fault::NatsKilled => {
            tokio::time::sleep(delay).await;
            c.server.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.server.restart();
        }
        Fault::ForgedFailed | Fault::DuplicateCheckpointed => {
            forge(c, id, fault).await;
        }
        // The brain's rows went to `brain::inject` above.
        Fault::BrainKilled | Fault::BrainBeforePublish | Fault::BrainAfterPublish => {}
        Fault::NatsCut => {
            let node = if rng.below(2) == 0 { source } else { target };
            let relay = relay_of(relays, node);
            tokio::time::sleep(delay).await;
            relay.cut();
            tokio::time::sleep(Duration::from_millis(1000 + rng.below(5000))).await;
            relay.restore();
            notes.push(format!("{node} cut"));
        }
        Fault::Terminated => {
            let node = if rng.below(2) == 0 { source } else { target };
            tokio::time::sleep(delay).await;
            let asked = Instant::now();
            c.node(node).terminate();
            let honoured = c.node(node).wait_exit(SIGTERM_LIMIT);
            notes.push(format!(
                "{node} stopped in {:.1} s",
                asked.elapsed().as_secs_f64()
            ));
            if !honoured {
                notes.push("SIGTERM not honoured in time".into());
                sigterm_ignored = true;
            }
            restart(c, node, None);
        }
    }
    let mut outcome = check(c, probe.as_mut(), id, fault, t, notes).await;
    outcome.stuck |= sigterm_ignored;
    outcome
}

/// Publishes the forged event `fault` names, right after `checkpointed`.
async fn forge(c: &Cluster, id: uuid::Uuid, fault: Fault) {
    let Some(cp) = c
        .try_wait_for(
            HEAL_LIMIT,
            |e| matches!(&e.event, Event::MigrationCheckpointed(p) if p.migration == id),
        )
        .await
    else {
        return;
    };
    let Event::MigrationCheckpointed(p) = cp.event else {
        return;
    };
    let event = if fault == Fault::ForgedFailed {
        Event::MigrationFailed(loadshift_events::migration::Failed {
            migration: id,
            workload: p.workload.clone(),
            source: p.source.clone(),
            target: p.target.clone(),
            step: loadshift_events::migration::Step::Download,
            reason: "forged by the fault matrix".into(),
        })
    } else {
        Event::MigrationCheckpointed(p)
    };
    let env = Envelope::new(
        NodeName::new("mallory").unwrap_or_else(|_| cp.node.clone()),
        event,
    );
    if let Err(e) = loadshift_events::connection::publish(&c.js, &env).await {
        eprintln!("forged event not published: {e}");
    }
}

/// Waits for the migration's outcome and checks the invariants.
async fn check(
    c: &mut Cluster,
    probe: Option<&mut containers::Probe>,
    id: uuid::Uuid,
    fault: Fault,
    t: Instant,
    mut notes: Vec<String>,
) -> Outcome {
    let ended = match c.try_outcome(id, HEAL_LIMIT).await.map(|e| e.event) {
        Some(Event::MigrationCompleted(_)) => "completed",
        Some(Event::MigrationRolledBack(_)) => "rolled_back",
        Some(Event::MigrationFailed(_)) => "refused",
        _ => "none",
    };
    let mut stuck = ended == "none";
    for n in ["node2", "node3"] {
        if !c.try_ping(n, Duration::from_secs(30)).await {
            notes.push(format!("{n} does not answer"));
            stuck = true;
        }
    }
    let (lost, duplicated) = match probe {
        Some(probe) => check_container(probe, &mut notes).await,
        None => check_process(c, &mut notes),
    };
    if !images_gone(c, id).await {
        notes.push("an image was left behind".into());
        stuck = true;
    }
    Outcome {
        fault,
        ended,
        heal: t.elapsed(),
        lost,
        duplicated,
        stuck,
        notes: notes.join("; "),
    }
}

/// Whether the process counter is lost or doubled (two copies, or a count
/// that went back or restarted), with what was wrong in `notes`.
fn check_process(c: &mut Cluster, notes: &mut Vec<String>) -> (bool, bool) {
    let copies = c.copies_of(WORKLOAD);
    let lost = copies.is_empty();
    let mut duplicated = copies.len() > 1;
    if let Some(node) = runs_on(c) {
        let values = counter_values(&c.node(node).workload_dir(WORKLOAD).join("stdout"));
        if !values.iter().enumerate().all(|(i, v)| *v == i as u64) {
            notes.push(format!("the counter on {node} went back or restarted"));
            duplicated = true;
        }
    }
    if lost || duplicated {
        let described: Vec<String> = copies.iter().map(|p| describe(*p)).collect();
        notes.push(format!("copies: {}", described.join(", ")));
    }
    (lost, duplicated)
}

/// Like [`check_process`], for the container counter.
async fn check_container(probe: &mut containers::Probe, notes: &mut Vec<String>) -> (bool, bool) {
    let running = probe.running().await;
    let lost = running.is_empty();
    let mut duplicated = running.len() > 1;
    if let [one] = running.as_slice() {
        match probe.check_count(one).await {
            Ok(range) => notes.push(range),
            Err(e) => {
                notes.push(e);
                duplicated = true;
            }
        }
    }
    if lost || duplicated {
        notes.push(format!("running containers: {}", running.join(", ")));
    }
    (lost, duplicated)
}

/// The node whose folder holds the running copy's output, if one runs.
fn runs_on(c: &mut Cluster) -> Option<&'static str> {
    let pid = *c.copies_of(WORKLOAD).first()?;
    let cwd_out = std::fs::read_link(format!("/proc/{pid}/fd/1")).ok()?;
    ["node2", "node3"]
        .into_iter()
        .find(|n| cwd_out.starts_with(c.node(n).workload_dir(WORKLOAD)))
}

/// Whether migration `id` left no image on either node's tmpfs nor in the
/// store (waiting a little: removal follows the announcement).
async fn images_gone(c: &Cluster, id: uuid::Uuid) -> bool {
    let Ok(store) = c.js.get_object_store(CHECKPOINTS).await else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local = ["node2", "node3"]
            .iter()
            .any(|n| c.images.path().join(n).join(id.to_string()).exists());
        let stored = store
            .info(id.to_string())
            .await
            .is_ok_and(|info| !info.deleted);
        if !local && !stored {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A process as `pid (ppid P, state S): command line`, to tell copies apart.
fn describe(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    format!(
        "{pid} (ppid {}, state {}): {}",
        fields.get(1).unwrap_or(&"?"),
        fields.first().unwrap_or(&"?"),
        cmd.trim()
    )
}
