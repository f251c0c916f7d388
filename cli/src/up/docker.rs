//! Is a Docker daemon there? Asked the way the Docker CLI finds it:
//! `DOCKER_HOST` (`unix://PATH` or `tcp://HOST:PORT`), else the usual socket,
//! and answered by its `/_ping` endpoint, within two seconds.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The daemon's address when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Whether a daemon answered at `host`, and if not, why.
///
/// # Errors
/// A sentence saying why the daemon is not usable.
pub async fn ping(host: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), ask(host)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {host} within 2 s")),
    }
}

async fn ask(host: &str) -> Result<(), String> {
    let answer = if let Some(path) = host.strip_prefix("unix://") {
        let s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot connect to {path}: {e}"))?;
        ping_over(s).await?
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        ping_over(s).await?
    } else {
        return Err(format!(
            "DOCKER_HOST {host:?} is neither unix://PATH nor tcp://HOST:PORT"
        ));
    };
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.") && text.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!(
            "{host} answered /_ping with {:?}",
            text.lines().next().unwrap_or("nothing")
        ))
    }
}

/// Sends `/_ping` over an open connection (a socket file or TCP, one
/// exchange either way) and returns the whole answer.
async fn ping_over<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<Vec<u8>, String> {
    const REQUEST: &[u8] = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut answer = Vec::new();
    s.write_all(REQUEST).await.map_err(|e| e.to_string())?;
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer)
}
