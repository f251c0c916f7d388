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
