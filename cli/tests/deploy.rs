//! The deployment's own files: the systemd units verify, the Vagrantfile
//! parses, and the set-up script is idempotent (a second run changes nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use loadshift_testkit::process::succeed;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // The units start binaries from /usr/local/bin, where deploy/provision
    // installs them; point them at this build's binaries instead.
    let bin_dir = loadshift_testkit::binary("loadshift-brain")
        .parent()
        .expect("binary dir")
        .to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let out = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&out, text).unwrap();
        units.push(out);
    }
    assert_eq!(units.len(), 5, "nats, brain, webui, agent, executor");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys are only warnings to systemd; they are mistakes to us.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_vagrantfile_parses() {
    let out = Command::new("ruby")
        .arg("-c")
        .arg(repo().join("Vagrantfile"))
        .output()
        .expect("ruby (scripts/setup installs it)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Syntax OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_run_of_the_setup_changes_nothing() {
    // scripts/test ran the set-up once already; this is the second run.
    let out = Command::new("bash")
        .arg(repo().join("scripts/setup"))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "setup failed:\n{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 5, "setup said too little:\n{stdout}");
    for line in &lines {
        let (_, rest) = line.split_once(": ").unwrap_or(("", line));
        assert!(
            rest.starts_with("ok") || rest == "done",
            "a second run changed something: {line:?}\n{stdout}"
        );
    }
}

/// The secrets of a deployment as deploy/secrets writes them, and a
/// nats-server configuration of the repo with its paths pointed at them.
struct Deployment {
    dir: tempfile::TempDir,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        succeed(
            Command::new("bash")
                .arg(repo().join("deploy/secrets"))
                .arg(dir.path().join("secrets"))
                .env("LOADSHIFT_BIN", env!("CARGO_BIN_EXE_loadshift")),
            "deploy/secrets",
        );
        Self { dir }
    }

    fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// `conf` (relative to the repo) as node `node` would run it, in a
    /// folder of its own next to the auth.conf it includes.
    fn conf(&self, conf: &str, node: &str) -> PathBuf {
        let run = self.dir.path().join(format!("run-{node}"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::copy(
            self.secrets().join("auth/nats-auth.conf"),
            run.join("auth.conf"),
        )
        .unwrap();
        let tls = self.secrets().join("tls");
        let text = std::fs::read_to_string(repo().join(conf))
            .unwrap()
            .replace(
                "/etc/loadshift/tls/node.pem",
                &tls.join(format!("{node}.pem")).display().to_string(),
            )
            .replace(
                "/run/credentials/loadshift-nats.service/tls.key",
                &tls.join(format!("{node}.key")).display().to_string(),
            )
            .replace(
                "/etc/loadshift/tls/ca.pem",
                &tls.join("ca.pem").display().to_string(),
            );
        let path = run.join("nats.conf");
        std::fs::write(&path, text).unwrap();
        path
    }
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_nats_config_of_the_deployment_requires_tls_and_identities() {
    let d = Deployment::new();
    for (conf, node) in [
        ("nats/deploy.conf", "node1"),
        ("nats/cluster/node1.conf", "node1"),
        ("nats/cluster/node2.conf", "node2"),
        ("nats/cluster/node3.conf", "node3"),
    ] {
        let text = std::fs::read_to_string(repo().join(conf)).unwrap();
        assert!(
            text.contains("http: 127.0.0.1:8222"),
            "{conf}: monitoring not on loopback"
        );
        assert!(
            text.contains("include \"auth.conf\""),
            "{conf}: no authorization"
        );
        assert!(text.contains("tls {"), "{conf}: no TLS for clients");
        if conf.contains("cluster") {
            let routes = text.split("cluster {").nth(1).unwrap_or_default();
            assert!(
                routes.contains("verify: true"),
                "{conf}: routes without mutual TLS"
            );
        }
        let out = Command::new("nats-server")
            .arg("-t")
            .arg("-c")
            .arg(d.conf(conf, node))
            .output()
            .expect("nats-server (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "{conf} is not a valid configuration: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_server_takes_only_tls_clients_with_an_identity() {
    use loadshift_events::connection::{connect, NatsOptions};
    let d = Deployment::new();
    let port = loadshift_testkit::nats::free_port();
    let log = d.dir.path().join("nats.log");
    let _server = Server(
        Command::new("nats-server")
            .arg("-c")
            .arg(d.conf("nats/deploy.conf", "node1"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &loadshift_testkit::nats::free_port().to_string()])
            .arg("-sd")
            .arg(d.dir.path().join("store"))
            .arg("-l")
            .arg(&log)
            .spawn()
            .expect("start nats-server"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Server is ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server not ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let opts = |creds: Option<&str>, ca: bool| NatsOptions {
        url: format!("nats://127.0.0.1:{port}"),
        credentials: creds.map(|c| d.secrets().join("auth").join(c)),
        client_name: "deploy-test".into(),
        ca: ca.then(|| d.secrets().join("tls/ca.pem")),
    };
    let ok = connect(&opts(Some("operator.nk"), true), false)
        .await
        .expect("TLS with the deployment's CA and the operator's identity");
    let js = async_nats::jetstream::new(ok);
    loadshift_events::stream::declare(&js, &Default::default())
        .await
        .expect("the operator declares the streams");
    assert!(
        connect(&opts(Some("operator.nk"), false), false)
            .await
            .is_err(),
        "a client without TLS got in"
    );
    assert!(
        connect(&opts(None, true), false).await.is_err(),
        "a client without an identity got in"
    );
}

#[test]
fn every_unit_but_the_executor_is_sandboxed() {
    // systemd's own measure of a unit's exposure (0 = locked down, 10 = as
    // exposed as a unit gets); the executor keeps root for CRIU, on purpose.
    let tmp = tempfile::tempdir().unwrap();
    for name in ["agent", "brain", "nats", "webui", "executor"] {
        let unit = format!("loadshift-{name}.service");
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(&unit))
            .unwrap()
            .replace("/usr/local/bin/", "/bin/")
            .replace("/usr/sbin/nats-server", "/bin/true");
        let path = tmp.path().join(&unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .expect("systemd-analyze");
        let report = String::from_utf8_lossy(&out.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|r| r.split(": ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{report}"));
        if name == "executor" {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("keeps root, on purpose: CRIU"), "{unit}");
            assert!(
                !text.contains("DynamicUser") && !text.contains("User="),
                "{unit}"
            );
        } else {
            assert!(score <= 4.0, "{unit} exposure {score}:\n{report}");
        }
    }
}
