//! A real `nats-server` with JetStream, owned by one test.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server child process with its own port and store directory.
///
/// It exists so that every integration test runs against the real server
/// (`scripts/setup` installs it), never a mock, and never one shared with
/// another test. Dropping it kills the server and removes its store.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    log: PathBuf,
    /// Configuration appended to the server's file (an `authorization`
    /// block, TLS), kept so that a restart runs the same server.
    extra: String,
}

impl NatsServer {
    /// Starts a server on a free port with an empty store and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// When `nats-server` is not installed or does not come up: the test
    /// cannot run, and says so plainly.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server like [`NatsServer::start`] whose `max_payload` (the
    /// largest message it accepts; 1 MB by default) is `max_payload` bytes,
    /// for tests that push large events through it.
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start_with_max_payload(max_payload: Option<u64>) -> Self {
        let extra = max_payload
            .map(|b| format!("max_payload: {b}"))
            .unwrap_or_default();
        Self::start_with(&extra)
    }

    /// Starts a server like [`NatsServer::start`] whose configuration also
    /// holds `extra`: the `authorization` block `loadshift up` writes, so
    /// that each role's permissions are tested against the real server.
    ///
    /// # Panics
    /// As [`NatsServer::start`], and when the server refuses `extra`.
    pub fn start_with(extra: &str) -> Self {
        let store = tempfile::Builder::new()
            .prefix("loadshift-nats-")
            .tempdir()
            .expect("create a temporary store dir for nats-server");
        let log = store.path().join("nats-server.log");
        let mut server = Self {
            child: None,
            port: free_port(),
            store,
            log,
            extra: extra.to_string(),
        };
        server.spawn();
        server
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port's socket address, for a [`crate::Relay`] to stand in
    /// front of.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The server's JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit.
    /// The store stays, so [`NatsServer::restart`] brings the same data back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let js_dir = self.store.path().join("jetstream");
        // JetStream reserves each stream's byte limit against its maximum
        // store, which defaults to 75 % of the free disk: TELEMETRY's 10 GiB
        // limit would then fail on a machine with less than ~14 GiB free,
        // though a test writes megabytes. Tests declare a large maximum.
        let conf = self.store.path().join("nats-server.conf");
        std::fs::write(
            &conf,
            format!(
                "jetstream {{\n  store_dir: \"{}\"\n  max_file_store: 1TB\n}}\n{}\n",
                js_dir.display(),
                self.extra
            ),
        )
        .expect("write the test nats-server's config");
        // A restart appends to the same log: only a "ready" line written by
        // this run counts.
        let log_before = self.read_log().len();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-l")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); run scripts/setup to install it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self
                    .read_log()
                    .get(log_before..)
                    .is_some_and(|l| l.contains("Server is ready"))
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "nats-server exited with {status} before it was ready; its log:\n{}",
                    self.read_log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server on port {} not ready after 20 s; its log:\n{}",
                    self.port,
                    self.read_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far, for a failing test's message.
    pub fn read_log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Three (or more) real nats-servers joined in one JetStream cluster by
/// routes on loopback ports, each with its own store.
///
/// It exists so that replicated streams and buckets (R3) are tested where
/// they live: losing one server of a cluster is a fault a single server
/// cannot show (a stream's leader moves, a client reconnects to a peer).
pub struct NatsCluster {
    /// The servers, in the order of their names `s0`, `s1`, ...
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` clustered servers and waits until each accepts
    /// connections (JetStream may still be electing its meta leader: wait
    /// for [`NatsCluster::wait_ready`] before creating streams).
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start(size: usize) -> Self {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let servers = routes
            .iter()
            .enumerate()
            .map(|(i, port)| {
                NatsServer::start_with(&format!(
                    "server_name: s{i}\ncluster {{\n  name: loadshift-test\n  listen: 127.0.0.1:{port}\n  routes: [{all}]\n}}\n"
                ))
            })
            .collect();
        Self { servers }
    }

    /// Waits until the cluster behind `js` places a stream of `replicas`
    /// replicas (it elected its meta leader and enough servers joined): a
    /// probe stream is created and deleted.
    ///
    /// # Panics
    /// When that does not succeed within a minute; the panic holds every
    /// server's log.
    pub async fn wait_ready(js: &async_nats::jetstream::Context, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = async_nats::jetstream::stream::Config {
                name: "LOADSHIFT_TEST_PROBE".into(),
                subjects: vec!["loadshift-test-probe".into()],
                num_replicas: replicas,
                ..Default::default()
            };
            let last = match js.create_stream(probe).await {
                Ok(_) => {
                    let _ = js.delete_stream("LOADSHIFT_TEST_PROBE").await;
                    return;
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!("the JetStream cluster did not form in 60 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
