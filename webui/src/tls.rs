//! HTTPS for the dashboard.
//!
//! The operator's token and session cookie travel with every action; over
//! plain HTTP on a network anyone on the path reads them. Given a
//! certificate and key (PEM), the dashboard serves TLS (rustls through
//! tokio-rustls, the rustls project's own adapter, with the ring provider;
//! the handshake runs inside [`crate::listener`]'s bounded connections);
//! without one it still serves plain HTTP, and says loudly when that is on
//! an address other machines can reach.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

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
