//! Talking to NATS: connecting with the operator's options, publishing an
//! event the only way loadshift does it (waiting for the JetStream ack, with the
//! event id as `Nats-Msg-Id`), and the one error every service reports when
//! NATS refuses or does not answer ([`NatsError`]).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{
    self, context::PublishAckFuture, message::PublishMessage, publish::PublishAck,
};

use crate::envelope::Envelope;

/// Why talking to NATS failed.
///
/// One type for every service and the CLI, so that a failure to reach, ask or
/// publish reads the same wherever it happens and callers need no per-crate
/// copy of "JetStream {action} failed: {message}".
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// could not connect
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The server URL.
        url: String,
        /// What the client said.
        message: String,
    },
    /// the credentials file could not be read
    #[error("cannot read NATS credentials file {path}: {message}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// the event could not be serialized
    #[error("cannot serialize event {id}: {source}")]
    Encode {
        /// The event id.
        id: uuid::Uuid,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// JetStream did not store the event
    #[error("publishing {subject} (id {id}) was not acknowledged: {message}")]
    Publish {
        /// The subject.
        subject: String,
        /// The event id.
        id: uuid::Uuid,
        /// What the client or server said.
        message: String,
    },
    /// a request to NATS or JetStream (stream lookup, consumer creation,
    /// pull, info) was refused or not answered
    #[error("NATS: cannot {action} on {target}: {message}")]
    Request {
        /// What was attempted ("create a consumer", "read messages", ...).
        action: &'static str,
        /// What it was attempted on: a stream, a subject, a consumer.
        target: String,
        /// What the client or server said.
        message: String,
    },
    /// a stream stopped delivering before its last message
    #[error("stream {stream} stopped delivering at sequence {at} of {last} (no message for {}s)", idle.as_secs())]
    Stalled {
        /// The stream read.
        stream: &'static str,
        /// The last sequence read.
        at: u64,
        /// The last sequence the stream held when reading began.
        last: u64,
        /// How long nothing came.
        idle: std::time::Duration,
    },
}

impl NatsError {
    /// A [`NatsError::Request`] for `action` on `target`, worded by `error`.
    pub fn request(
        action: &'static str,
        target: impl Into<String>,
        error: impl std::fmt::Display,
    ) -> Self {
        NatsError::Request {
            action,
            target: target.into(),
            message: error.to_string(),
        }
    }

    /// A closure for `map_err` that turns any client error into a
    /// [`NatsError::Request`] for `action` on `target`.
    pub fn map<'a, E: std::fmt::Display>(
        action: &'static str,
        target: &'a str,
    ) -> impl FnOnce(E) -> NatsError + 'a {
        move |e| NatsError::request(action, target, e)
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Server URL(s), comma separated.
    pub url: String,
    /// The identity to connect with: an nkey seed file (`.nk`, as `loadshift
    /// up` and `deploy/provision` write them) or a NATS `.creds` file.
    pub credentials: Option<PathBuf>,
    /// The name the connection shows in `nats server report connections`.
    pub client_name: String,
    /// A CA certificate (PEM) the server's certificate must chain to; when
    /// given, the connection requires TLS.
    pub ca: Option<PathBuf>,
}

/// The inbox prefix of the user whose public nkey is `public_key`.
///
/// Replies (JetStream acks, pulled messages, object store chunks) travel on
/// inbox subjects. With the shared `_INBOX.>` every user allowed to
/// subscribe to inboxes could read every other user's replies, checkpoint
/// chunks included; one prefix per identity lets the server's permissions
/// give each user its own inboxes only.
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX_{public_key}")
}

/// An identity read from a credentials file: the nkey seed and, for a NATS
/// `.creds` file, its JWT.
struct Identity {
    seed: String,
    jwt: bool,
}

/// Reads a `.nk` seed file (the seed on one line; `#` lines are comments) or
/// a NATS `.creds` file (a JWT and a seed between `-----BEGIN` markers).
fn read_identity(path: &std::path::Path) -> Result<Identity, NatsError> {
    let fail = |message: String| NatsError::Credentials {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let jwt = text.contains("BEGIN NATS USER JWT");
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU") && !l.contains(' '))
        .ok_or_else(|| fail("no user nkey seed (a line starting with SU) in it".into()))?
        .to_string();
    nkeys::KeyPair::from_seed(&seed).map_err(|e| fail(format!("not a valid nkey seed: {e}")))?;
    Ok(Identity { seed, jwt })
}

/// The public key of the seed in credentials file `path`, the name by which
/// the server's configuration knows this identity.
///
/// # Errors
/// [`NatsError::Credentials`] when the file holds no valid seed.
pub fn public_key_of(path: &std::path::Path) -> Result<String, NatsError> {
    let id = read_identity(path)?;
    nkeys::KeyPair::from_seed(&id.seed)
        .map(|k| k.public_key())
        .map_err(|e| NatsError::Credentials {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Connects, retrying in the background if the server goes away later.
///
/// With `retry_on_initial_connect` the call returns at once even if the
/// server is not up yet; services that must buffer (the agent) want that.
///
/// # Errors
/// [`NatsError`] when the credentials cannot be read or the first
/// connection fails (without `retry_on_initial_connect`).
pub async fn connect(
    opts: &NatsOptions,
    retry_on_initial_connect: bool,
) -> Result<async_nats::Client, NatsError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(&opts.client_name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if retry_on_initial_connect {
        o = o.retry_on_initial_connect();
    }
    if let Some(path) = &opts.credentials {
        let id = read_identity(path)?;
        let public = public_key_of(path)?;
        o = if id.jwt {
            o.credentials_file(path)
                .await
                .map_err(|e| NatsError::Credentials {
                    path: path.clone(),
                    message: e.to_string(),
                })?
        } else {
            o.nkey(id.seed)
        }
        .custom_inbox_prefix(inbox_prefix(&public));
    }
    if let Some(ca) = &opts.ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    o.connect(opts.url.as_str()).await.map_err(|e| {
        let mut message = e.to_string();
        if opts.credentials.is_none() && message.to_lowercase().contains("authoriz") {
            message.push_str(
                "; the server requires credentials: pass --nats-creds FILE (or LOADSHIFT_NATS_CREDS), \
                 e.g. the operator.nk that `loadshift up` wrote under <state>/auth/",
            );
        }
        NatsError::Connect {
            url: opts.url.clone(),
            message,
        }
    })
}

/// Publishes one event and waits until JetStream has stored it.
///
/// # Errors
/// [`NatsError::Publish`] when it is not acknowledged (the caller keeps
/// the event and retries: the msg-id makes a retry harmless).
pub async fn publish(js: &jetstream::Context, env: &Envelope) -> Result<PublishAck, NatsError> {
    let fut = send(js, env).await?;
    fut.await.map_err(|e| NatsError::Publish {
        subject: env.subject(),
        id: env.id,
        message: e.to_string(),
    })
}

/// Sends one event without waiting for its ack, so many can be in flight; the
/// returned future resolves to the ack. Callers must await it before treating
/// the event as stored.
///
/// # Errors
/// [`NatsError`] when the event cannot be encoded or sent.
pub async fn send(js: &jetstream::Context, env: &Envelope) -> Result<PublishAckFuture, NatsError> {
    let payload = env
        .to_json()
        .map_err(|source| NatsError::Encode { id: env.id, source })?;
    let subject = env.subject();
    js.send_publish(
        subject.clone(),
        PublishMessage::build()
            .payload(payload.into())
            .message_id(env.id.to_string()),
    )
    .await
    .map_err(|e| NatsError::Publish {
        subject,
        id: env.id,
        message: e.to_string(),
    })
}
