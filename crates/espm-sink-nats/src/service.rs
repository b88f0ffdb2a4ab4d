//! Connection set-up, stream verification and publish I/O.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::{GetStreamErrorKind, Publish, PublishErrorKind};
use async_nats::jetstream::stream::Config as StreamConfig;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{Client, ConnectOptions, ServerAddr};
use espm_config::Secret;
use espm_sink::Outcome;

use crate::request_builder::NatsRequest;

/// Credentials resolved at construction. `Debug` never shows the secrets themselves.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    pub user_password: Option<(String, Secret)>,
    pub token: Option<Secret>,
    pub nkey_seed: Option<Secret>,
    pub creds: Option<Secret>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("password", &self.user_password.as_ref().map(|(_, p)| p))
            .field("token", &self.token)
            .field("nkey_seed", &self.nkey_seed)
            .field("creds", &self.creds)
            .finish()
    }
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSettings {
    pub sink: String,
    pub servers: Vec<ServerAddr>,
    pub auth: Auth,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub tls_required: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// An open connection and its JetStream context (both cheap to clone).
#[derive(Clone)]
pub(crate) struct Connection {
    pub client: Client,
    pub js: jetstream::Context,
}

impl Connection {
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

/// Open a connection. Fails fast (no background retry of the first connect): the driver calls
/// `start()` again later, and a clear error now is more useful to an operator than a hang.
pub(crate) async fn connect(s: &ConnectSettings) -> Result<Connection, String> {
    let mut opts = ConnectOptions::new()
        .name(format!("espm-bridge/{}", s.sink))
        .connection_timeout(s.connect_timeout)
        .request_timeout(Some(s.request_timeout));
    if let Some((user, password)) = &s.auth.user_password {
        opts = opts.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(token) = &s.auth.token {
        opts = opts.token(token.expose().to_string());
    }
    if let Some(seed) = &s.auth.nkey_seed {
        opts = opts.nkey(seed.expose().to_string());
    }
    if let Some(creds) = &s.auth.creds {
        // The parse error names neither the file content nor the seed.
        opts = opts
            .credentials(creds.expose())
            .map_err(|e| format!("invalid credentials file: {e}"))?;
    }
    if let Some(ca) = &s.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &s.tls_client {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if s.tls_required {
        opts = opts.require_tls(true);
    }
    let client = opts
        .connect(s.servers.clone())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(s.request_timeout);
    Ok(Connection { client, js })
}

/// What to do about the configured stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    pub name: String,
    pub create: bool,
    pub subjects: Vec<String>,
    pub duplicate_window: Duration,
}

/// Verify the stream exists, creating it when allowed.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    st: &StreamSettings,
) -> Result<(), String> {
    match stream_exists(js, &st.name).await? {
        true => Ok(()),
        false if st.create => {
            let cfg = StreamConfig {
                name: st.name.clone(),
                subjects: st.subjects.clone(),
                duplicate_window: st.duplicate_window,
                ..Default::default()
            };
            match js.create_stream(cfg).await {
                Ok(_) => {
                    tracing::info!(stream = %st.name, subjects = ?st.subjects, "created JetStream stream");
                    Ok(())
                }
                // Another replica may have created it between our look-up and create.
                Err(e) => match stream_exists(js, &st.name).await {
                    Ok(true) => Ok(()),
                    _ => Err(format!("cannot create JetStream stream {:?}: {e}", st.name)),
                },
            }
        }
        false => Err(format!(
            "JetStream stream {:?} does not exist: create it (e.g. `nats stream add {}`) or set \
             create_stream = true",
            st.name, st.name
        )),
    }
}

/// `Ok(false)` only when the server says the stream is not there.
pub(crate) async fn stream_exists(js: &jetstream::Context, name: &str) -> Result<bool, String> {
    match js.get_stream(name).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(format!("cannot look up JetStream stream {name:?}: {e}")),
        },
    }
}

/// Send one JetStream publish; the returned future resolves to its outcome once the PubAck
/// (or its absence) is known.
pub(crate) async fn publish_js(js: &jetstream::Context, req: NatsRequest) -> PendingAck {
    let subject = req.subject.clone();
    match js
        .send_publish(
            req.subject,
            Publish::build().payload(req.payload).headers(req.headers),
        )
        .await
    {
        Ok(ack) => PendingAck::Waiting { subject, ack },
        Err(e) => PendingAck::Failed(retry(format!("publish to {subject} failed: {e}"))),
    }
}

/// A publish whose acknowledgement is outstanding.
pub(crate) enum PendingAck {
    /// Sent; the PubAck is awaited.
    Waiting {
        subject: String,
        ack: PublishAckFuture,
    },
    /// Not even sent.
    Failed(Outcome),
}

impl PendingAck {
    pub async fn outcome(self) -> Outcome {
        match self {
            PendingAck::Failed(o) => o,
            PendingAck::Waiting { subject, ack } => match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(%subject, stream = %ack.stream, seq = ack.sequence, "duplicate publish dropped by the stream");
                    }
                    Outcome::Delivered
                }
                Err(e) => match e.kind() {
                    PublishErrorKind::StreamNotFound => retry(format!(
                        "no JetStream stream captures subject {subject} (no responders)"
                    )),
                    _ => retry(format!("no PubAck for {subject}: {e}")),
                },
            },
        }
    }
}

/// A transient failure without a server-requested delay.
pub(crate) fn retry(reason: String) -> Outcome {
    Outcome::Retry {
        reason,
        retry_after: None,
        attempts: 1,
    }
}
