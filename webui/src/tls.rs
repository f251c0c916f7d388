//! HTTPS for the dashboard.
//!
//! The operator's token and session cookie travel with every action; over
//! plain HTTP on a network anyone on the path reads them. Given a
//! certificate and key (PEM), the dashboard serves TLS (rustls through
//! tokio-rustls, the rustls project's own adapter, with the ring provider);
//! without one it still serves plain HTTP, and says loudly when that is on
//! an address other machines can reach.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; past this new connections wait.
const MAX_HANDSHAKES: usize = 256;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// the file could not be read or holds no PEM item of the kind needed
    #[error("cannot use {what} {path}: {message}")]
    File {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the pair
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A rustls server configuration from a PEM certificate chain and key.
///
/// # Errors
/// [`TlsError`] when a file cannot be read, holds nothing usable, or the key
/// does not match the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let file_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |message: String| TlsError::File {
            what,
            path,
            message,
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err("certificate", cert)(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err("certificate", cert)(e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err("certificate", cert)("no CERTIFICATE in it".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("key", key)(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Says loudly, on stderr and in the log, that the dashboard serves plain
/// HTTP where other machines can reach it.
pub fn warn_if_exposed(listen: SocketAddr, tls: bool) {
    if tls || listen.ip().is_loopback() {
        return;
    }
    let msg = format!(
        "WARNING: the dashboard serves plain HTTP on {listen}, reachable from other machines: \
         the operator token and session cookies travel in clear. Give it a certificate \
         (--tls-cert FILE --tls-key FILE, or LOADSHIFT_TLS_CERT / LOADSHIFT_TLS_KEY) or \
         listen on 127.0.0.1."
    );
    eprintln!("{msg}");
    tracing::warn!("{msg}");
}

/// A listener that hands axum connections whose TLS handshake is done.
///
/// Handshakes run in their own tasks (at most [`MAX_HANDSHAKES`] at once,
/// each bounded by [`HANDSHAKE_TIMEOUT`]), so a client that connects and
/// says nothing delays no one else.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task only ends when the runtime does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
