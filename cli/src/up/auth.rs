//! Who may say what on NATS: one nkey identity per role and the server
//! configuration that gives each only the subjects its job needs
//! (../shared/ARCHITECTURE.md, "Who may say what").
//!
//! Without it anyone who reaches NATS is root on every worker: a raw
//! `workload.start_requested` makes an executor run any command. So
//! `loadshift up` and `deploy/provision` always write these files
//! ([`AuthDir::generate`]) and start nats-server with the configuration
//! ([`server_config`]); running without them takes an explicit `--insecure`.
//!
//! Every permission is an allow list: what is not named is refused. The
//! JetStream API is named subject by subject, because `$JS.API.>` would let
//! any role create a consumer on any stream and read everything, the
//! checkpoint images (a process's whole memory) included.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use loadshift_events::connection::inbox_prefix;
use loadshift_events::file::FileError;
use loadshift_events::stream::{CHECKPOINTS, EVENTS, TELEMETRY};
use loadshift_events::NodeName;

/// The key-value bucket that says which node runs each workload name.
pub const NAMES_BUCKET: &str = loadshift_events::stream::WORKLOAD_NAMES;

/// The executors' migration fences.
pub const FENCES_BUCKET: &str = loadshift_events::stream::MIGRATION_FENCES;

/// The file holding the server's `authorization` block.
pub const SERVER_CONF: &str = "nats-auth.conf";

/// The key executors seal checkpoint images with.
pub const IMAGES_KEY: &str = "images.key";

/// Why the credentials could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// a file could not be written or read
    #[error(transparent)]
    Io(#[from] FileError),
    /// a seed file holds no valid seed
    #[error("{path} holds no valid user nkey seed ({message}); remove it to have a new one made")]
    BadSeed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// A role that connects to NATS; each has its own identity and permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A person at the command line: requests and reads, not images.
    Operator,
    /// The brain: decisions, predictions and model events.
    Brain,
    /// The dashboard: reads, and the operator actions it offers.
    Webui,
    /// The agent of one node: that node's telemetry and life cycle.
    Agent(NodeName),
    /// The executor of one node: that node's workloads and migrations, and
    /// the checkpoint bucket.
    Executor(NodeName),
}

/// What one identity may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to (besides its own inboxes).
    pub subscribe: Vec<String>,
    /// Whether it may answer requests made to it (the executor's ping).
    pub allow_responses: bool,
}

impl Role {
    /// The role's name, also the stem of its seed file (`agent-node2.nk`)
    /// and the service name `loadshift up` gives the process.
    pub fn name(&self) -> String {
        match self {
            Role::Operator => "operator".into(),
            Role::Brain => "brain".into(),
            Role::Webui => "webui".into(),
            Role::Agent(n) => format!("agent-{n}"),
            Role::Executor(n) => format!("executor-{n}"),
        }
    }

    /// What the role may do, by the rule that a subject names the node that
    /// must act.
    pub fn permissions(&self) -> Permissions {
        let mut p = Permissions {
            publish: strings(&["$JS.API.INFO"]),
            ..Default::default()
        };
        for s in [TELEMETRY, EVENTS] {
            p.publish.push(format!("$JS.API.STREAM.INFO.{s}"));
        }
        match self {
            Role::Operator | Role::Webui | Role::Brain => {
                p.publish.extend(reader());
                if *self != Role::Webui {
                    // Whoever comes first declares the streams.
                    for s in [TELEMETRY, EVENTS] {
                        p.publish.push(format!("$JS.API.STREAM.CREATE.{s}"));
                    }
                }
                p.publish.extend(strings(match self {
                    Role::Operator => &[
                        "workload.*.start_requested",
                        "workload.*.stop_requested",
                        "migration.*.requested",
                        "model.*.train_requested",
                        "node.*.drain_requested",
                        "node.*.uncordoned",
                        "loadshift.executor.*.ping",
                        // A workload's output (`workload logs`): a request
                        // to the executor that runs it, never a stream.
                        "loadshift.executor.*.logs",
                    ],
                    Role::Webui => &[
                        "workload.*.stop_requested",
                        "migration.*.requested",
                        "model.*.train_requested",
                        "node.*.drain_requested",
                        "node.*.uncordoned",
                    ],
                    _ => &[
                        "migration.*.requested",
                        "migration.*.deferred",
                        "node.*.predicted",
                        "node.*.drain_blocked",
                        "model.>",
                    ],
                }));
            }
            Role::Agent(n) => {
                p.publish.extend([
                    format!("telemetry.{n}"),
                    format!("telemetry.{n}.workloads"),
                    format!("node.{n}.joined"),
                    format!("node.{n}.left"),
                ]);
            }
            Role::Executor(n) => {
                p.publish.extend(executor_publish(n));
                p.subscribe.push(format!("loadshift.executor.{n}.ping"));
                p.subscribe.push(format!("loadshift.executor.{n}.logs"));

                // A source asks its target for a direct page stream.
                p.subscribe.push(format!("loadshift.executor.{n}.stream"));
                p.allow_responses = true;
            }
        }
        p
    }
}

/// What an executor may publish: its node's outcomes, the migration steps
/// it performs, its own consumer (filtered, in the API subject, to its
/// node's subjects so it cannot read another node's) and the buckets.
fn executor_publish(n: &NodeName) -> Vec<String> {
    let consumer = format!("executor-{n}");
    let mut v = vec![
        format!("workload.{n}.started"),
        format!("workload.{n}.start_failed"),
        format!("workload.{n}.exited"),
        // A source hands a stop to the target its workload moved to.
        "workload.*.stop_requested".into(),
        format!("telemetry.{n}.workloads"),
        "migration.*.checkpointed".into(),
        "migration.*.restored".into(),
        "migration.*.completed".into(),
        "migration.*.failed".into(),
        "migration.*.rolled_back".into(),
        "migration.*.fenced".into(),
        // A source asks its target whether it is alive before freezing.
        "loadshift.executor.*.ping".into(),
        // ... and its target for a direct connection for a streamed dump.
        "loadshift.executor.*.stream".into(),
        format!("$JS.API.CONSUMER.CREATE.{EVENTS}.{consumer}.*.{n}.>"),
        format!("$JS.API.CONSUMER.DELETE.{EVENTS}.{consumer}"),
        format!("$JS.API.CONSUMER.INFO.{EVENTS}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{consumer}"),
        format!("$JS.ACK.{EVENTS}.{consumer}.>"),
    ];
    for (stream, subjects) in [
        (format!("OBJ_{CHECKPOINTS}"), format!("$O.{CHECKPOINTS}.>")),
        (
            format!("KV_{NAMES_BUCKET}"),
            format!("$KV.{NAMES_BUCKET}.>"),
        ),
        // Who holds each migration (the saga's fence): executors only.
        (
            format!("KV_{FENCES_BUCKET}"),
            format!("$KV.{FENCES_BUCKET}.>"),
        ),
    ] {
        v.push(subjects);
        for api in [
            "STREAM.INFO",
            "STREAM.CREATE",
            "STREAM.PURGE",
            "STREAM.MSG.GET",
        ] {
            v.push(format!("$JS.API.{api}.{stream}"));
        }
        v.push(format!("$JS.API.DIRECT.GET.{stream}"));
        v.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
        v.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        v.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        v.push(format!("$JS.API.CONSUMER.DELETE.{stream}.*"));
        v.push(format!("$JS.API.CONSUMER.INFO.{stream}.*"));
        v.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"));
        v.push(format!("$JS.FC.{stream}.>"));
        v.push(format!("$JS.ACK.{stream}.>"));
    }
    v
}

/// What reading both streams takes: consumers (ordered, ephemeral or
/// durable) on TELEMETRY and EVENTS, their acks and flow control, message
/// lookups. Nothing on the checkpoint bucket.
fn reader() -> Vec<String> {
    let mut v = vec!["$JS.API.STREAM.NAMES".to_string()];
    for s in [TELEMETRY, EVENTS] {
        v.extend([
            format!("$JS.API.CONSUMER.CREATE.{s}"),
            format!("$JS.API.CONSUMER.CREATE.{s}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{s}.*"),
            format!("$JS.API.CONSUMER.INFO.{s}.*"),
            format!("$JS.API.CONSUMER.DELETE.{s}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
            format!("$JS.API.CONSUMER.NAMES.{s}"),
            format!("$JS.API.STREAM.MSG.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}.>"),
            format!("$JS.ACK.{s}.>"),
            format!("$JS.FC.{s}.>"),
        ]);
    }
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every role of a cluster whose nodes are `nodes` (each runs an agent)
/// and whose workers are `workers` (each runs an executor too).
pub fn roles(nodes: &[NodeName], workers: &[NodeName]) -> Vec<Role> {
    let mut v = vec![Role::Operator, Role::Brain, Role::Webui];
    v.extend(nodes.iter().cloned().map(Role::Agent));
    v.extend(workers.iter().cloned().map(Role::Executor));
    v
}

/// The nats-server `authorization` block for `users` (role, public nkey).
/// No `no_auth_user`: a connection without an identity is refused.
pub fn server_config(users: &[(Role, String)]) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "# Written by loadshift (cli/src/up/auth.rs): one nkey user per role, each\n\
         # allowed only the subjects its job needs. Regenerate rather than edit.\n\
         authorization {\n  users = [\n",
    );
    for (role, public) in users {
        let p = role.permissions();
        let mut sub = vec![format!("{}.>", inbox_prefix(public))];
        sub.extend(p.subscribe.iter().cloned());
        let _ = write!(
            out,
            "    # {}\n    {{ nkey: \"{public}\", permissions: {{\n      publish: {{ allow: [{}] }}\n      subscribe: {{ allow: [{}] }}\n",
            role.name(),
            list(&p.publish),
            list(&sub),
        );
        if p.allow_responses {
            out.push_str("      allow_responses: true\n");
        }
        out.push_str("    } }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

/// The credentials of one cluster, in one folder.
#[derive(Debug, Clone)]
pub struct AuthDir {
    /// The folder (mode 0700).
    pub dir: PathBuf,
    /// Each role with its public key.
    pub users: Vec<(Role, String)>,
}

impl AuthDir {
    /// Writes a seed file per role (`<role>.nk`, mode 0600; an existing
    /// valid one is kept, so identities survive a restart), the images key
    /// and [`SERVER_CONF`].
    ///
    /// # Errors
    /// [`AuthError`] when a file cannot be written or an existing seed file
    /// is not a seed.
    pub fn generate(dir: &Path, roles: &[Role]) -> Result<Self, AuthError> {
        std::fs::create_dir_all(dir).map_err(FileError::at("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(FileError::at("restricting", dir))?;
        let mut users = Vec::new();
        for role in roles {
            let path = dir.join(format!("{}.nk", role.name()));
            let public = match std::fs::read_to_string(&path) {
                Ok(text) => nkeys::KeyPair::from_seed(text.trim())
                    .map_err(|e| AuthError::BadSeed {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
                    .public_key(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let kp = nkeys::KeyPair::new_user();
                    let seed = kp.seed().map_err(|e| AuthError::BadSeed {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                    write_secret(&path, format!("{seed}\n").as_bytes())
                        .map_err(FileError::at("writing", &path))?;
                    kp.public_key()
                }
                Err(e) => return Err(FileError::at("reading", &path)(e).into()),
            };
            users.push((role.clone(), public));
        }
        let key = dir.join(IMAGES_KEY);
        if !key.exists() {
            let mut bytes = [0u8; 32];
            getrandom(&mut bytes).map_err(FileError::at("drawing random bytes for", &key))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_secret(&key, format!("{hex}\n").as_bytes())
                .map_err(FileError::at("writing", &key))?;
        }
        let conf = dir.join(SERVER_CONF);
        write_secret(&conf, server_config(&users).as_bytes())
            .map_err(FileError::at("writing", &conf))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            users,
        })
    }

    /// The seed file of the role named `name`, when there is one.
    pub fn creds(&self, name: &str) -> Option<PathBuf> {
        self.users
            .iter()
            .any(|(r, _)| r.name() == name)
            .then(|| self.dir.join(format!("{name}.nk")))
    }

    /// The server configuration file.
    pub fn server_conf(&self) -> PathBuf {
        self.dir.join(SERVER_CONF)
    }

    /// Writes `nats-server.conf` here: the configuration in `base` followed
    /// by the authorization block, and returns its path. One file because
    /// nats-server takes one `-c` and resolves `include` relative to the
    /// including file only.
    ///
    /// # Errors
    /// [`AuthError::Io`] when `base` cannot be read or the file written.
    pub fn server_conf_with(&self, base: &Path) -> Result<PathBuf, AuthError> {
        let text = std::fs::read_to_string(base).map_err(FileError::at("reading", base))?;
        let out = self.dir.join("nats-server.conf");
        let all = format!(
            "# {} followed by the authorization of {}\n{text}\n{}",
            base.display(),
            self.dir.display(),
            server_config(&self.users)
        );
        write_secret(&out, all.as_bytes()).map_err(FileError::at("writing", &out))?;
        Ok(out)
    }

    /// The key executors seal checkpoint images with.
    pub fn images_key(&self) -> PathBuf {
        self.dir.join(IMAGES_KEY)
    }
}

/// What `loadshift up` does about identities: unless `insecure`, writes
/// them under `<state>/auth/` for node1 (control plane) and `workers`, and
/// the server configuration (`base` plus authorization); returns the
/// operator's seed file. With `insecure` it says loudly what that means.
///
/// # Errors
/// [`AuthError`] when the files cannot be written.
pub fn for_up(
    state: &Path,
    base: &Path,
    workers: &[NodeName],
    insecure: bool,
) -> Result<Option<PathBuf>, AuthError> {
    if insecure {
        eprintln!(
            "WARNING: --insecure: NATS runs without authentication. Anyone who reaches \
             127.0.0.1 on this machine can start any command as root on the workers, \
             move workloads and read checkpoint images."
        );
        return Ok(None);
    }
    let mut nodes = vec![NodeName::new("node1").expect("node1 is a valid node name")];
    nodes.extend(workers.iter().cloned());
    let dir = AuthDir::generate(&state.join("auth"), &roles(&nodes, workers))?;
    dir.server_conf_with(base)?;
    Ok(dir.creds("operator"))
}

/// Prints the line with which every `loadshift` command works as the
/// operator of the cluster `up` started.
pub fn print_operator_line(operator: Option<&Path>) {
    match operator {
        Some(p) => println!(
            "  operator   export LOADSHIFT_NATS_CREDS={}   (then every loadshift command works as the operator)",
            p.display()
        ),
        None => println!("  operator   NATS has no authentication (--insecure)"),
    }
}

/// The environment of service `service` (`brain`, `agent-node2`, ...): `base`
/// plus its own identity from `auth` when it has one there, and for an
/// executor the key images are sealed with.
pub fn service_env(
    base: &[(String, String)],
    auth: Option<&Path>,
    service: &str,
) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    let Some(dir) = auth else {
        return env;
    };
    let seed = dir.join(format!("{service}.nk"));
    if seed.is_file() {
        env.push(("LOADSHIFT_NATS_CREDS".into(), seed.display().to_string()));
    }
    if service.starts_with("executor-") {
        env.push((
            "LOADSHIFT_IMAGES_KEY".into(),
            dir.join(IMAGES_KEY).display().to_string(),
        ));
    }
    env
}

/// Writes `bytes` to `path` readable by its owner only, replacing it.
fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Fills `buf` from the kernel's random source.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn only_the_operator_may_ask_for_a_start() {
        for role in roles(&[n("node2")], &[n("node2")]) {
            let may = role
                .permissions()
                .publish
                .iter()
                .any(|s| s.contains("start_requested"));
            assert_eq!(may, role == Role::Operator, "{role:?}");
        }
    }

    #[test]
    fn only_people_may_drain_and_only_the_brain_may_say_what_cannot_move() {
        let may = |role: &Role, verb: &str| {
            role.permissions()
                .publish
                .iter()
                .any(|s| s == &format!("node.*.{verb}"))
        };
        for role in roles(&[n("node2")], &[n("node2")]) {
            let person = matches!(role, Role::Operator | Role::Webui);
            for verb in ["drain_requested", "uncordoned"] {
                assert_eq!(may(&role, verb), person, "{role:?} {verb}");
            }
            assert_eq!(may(&role, "drain_blocked"), role == Role::Brain, "{role:?}");
        }
    }

    #[test]
    fn only_people_and_executors_ask_for_a_stop_and_only_the_operator_reads_output() {
        for role in roles(&[n("node2")], &[n("node2")]) {
            let p = role.permissions();
            let stops = p.publish.iter().any(|s| s.ends_with("stop_requested"));
            let reads = p.publish.iter().any(|s| s.ends_with(".logs"));
            let executor = matches!(role, Role::Executor(_));
            let person = matches!(role, Role::Operator | Role::Webui);
            assert_eq!(stops, person || executor, "{role:?}");
            assert_eq!(reads, role == Role::Operator, "{role:?}");
            assert_eq!(
                p.subscribe.iter().any(|s| s.ends_with(".logs")),
                executor,
                "{role:?}"
            );
        }
    }

    #[test]
    fn an_executor_reads_only_its_own_node() {
        let p = Role::Executor(n("node2")).permissions();
        let creates: Vec<_> = p
            .publish
            .iter()
            .filter(|s| s.starts_with("$JS.API.CONSUMER.CREATE.EVENTS"))
            .collect();
        assert_eq!(
            creates,
            ["$JS.API.CONSUMER.CREATE.EVENTS.executor-node2.*.node2.>"]
        );
    }

    #[test]
    fn the_config_names_every_user_with_its_own_inbox() {
        let users = vec![
            (Role::Operator, "UOP".to_string()),
            (Role::Executor(n("node3")), "UEX".to_string()),
        ];
        let c = server_config(&users);
        assert!(c.contains("nkey: \"UOP\""));
        assert!(c.contains("\"_INBOX_UEX.>\", \"loadshift.executor.node3.ping\", \"loadshift.executor.node3.logs\""));
        assert_eq!(c.matches("allow_responses").count(), 1);
        assert!(!c.contains("no_auth_user"));
    }

    #[test]
    fn seeds_are_kept_across_generations_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        let roles = roles(&[n("node1"), n("node2")], &[n("node2")]);
        let first = AuthDir::generate(&auth, &roles).unwrap();
        let second = AuthDir::generate(&auth, &roles).unwrap();
        assert_eq!(first.users, second.users);
        let f = first.creds("agent-node2").unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(first.creds("executor-node1").is_none());
        let key = std::fs::read_to_string(first.images_key()).unwrap();
        assert_eq!(key.trim().len(), 64);
    }
}
