//! The dashboard over HTTPS: the real binary with a certificate made by
//! openssl, asked with curl trusting only that certificate's CA; and the
//! loud warning when it serves plain HTTP beyond this machine.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadshift_testkit::nats::free_port;
use loadshift_testkit::process::succeed;
use loadshift_testkit::NatsServer;

struct Webui(Child);

impl Drop for Webui {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    succeed(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {args:?}"),
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=dashboard",
            "-keyout",
            "web.key",
            "-out",
            "web.csr",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "web.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "web.pem",
        ],
    );
}

fn webui(nats: &NatsServer, listen: &str, extra: &[&str], stderr: Stdio) -> Webui {
    Webui(
        Command::new(env!("CARGO_BIN_EXE_loadshift-webui"))
            .args(["--listen", listen])
            .args(extra)
            .env("LOADSHIFT_NATS", nats.url())
            .env_remove("LOADSHIFT_TLS_CERT")
            .env_remove("LOADSHIFT_TLS_KEY")
            .env_remove("LOADSHIFT_NATS_CREDS")
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start loadshift-webui"),
    )
}

#[test]
fn with_a_certificate_the_dashboard_speaks_only_https() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nats = NatsServer::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cert = dir.path().join("web.pem");
    let key = dir.path().join("web.key");
    let _web = webui(
        &nats,
        &listen,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Stdio::inherit(),
    );
    let curl = |url: &str| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(dir.path().join("ca.pem"))
            .arg(url)
            .output()
            .expect("curl")
    };
    let https = format!("https://{listen}/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    let ok = loop {
        let out = curl(&https);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!ok.stdout.is_empty());
    let plain = curl(&format!("http://{listen}/healthz"));
    assert!(
        !plain.status.success(),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&plain.stdout)
    );
}

#[test]
fn plain_http_beyond_this_machine_is_announced_loudly() {
    let nats = NatsServer::start();
    let log = tempfile::NamedTempFile::new().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let _web = webui(&nats, &listen, &[], Stdio::from(log.reopen().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if text.contains("WARNING: the dashboard serves plain HTTP") {
            assert!(text.contains("--tls-cert"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no warning; stderr:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_key_that_is_not_one_is_refused_at_start() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_loadshift-webui"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--tls-cert")
        .arg(dir.path().join("web.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("ca.pem"))
        .env("LOADSHIFT_NATS", nats.url())
        .output()
        .expect("run loadshift-webui");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot use key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
