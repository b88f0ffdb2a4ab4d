//! [`NatsCommandConsumer`]: a JetStream durable pull consumer (explicit acks) on the command
//! stream; a message is acknowledged only after its result is journalled.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::Config as StreamConfig;
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, ConnectOptions, ServerAddr};
use espm_command::{Commander, Door};
use espm_config::{NatsCommandTopicConfig, Secret, SecretSource};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::handle::{Handled, Handler, MAX_BACKOFF};
use crate::parse::{parse, Binding};
use crate::{config_error, CommandTopicError};

/// First pause after a connection, stream or consumer failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Consecutive errors from the message stream after which it is opened again.
const MAX_STREAM_ERRORS: u32 = 5;

/// Credentials, never shown by `Debug`.
#[derive(Clone, Default)]
struct Auth {
    user_password: Option<(String, Secret)>,
    token: Option<Secret>,
    nkey_seed: Option<Secret>,
    creds: Option<Secret>,
}

/// Consumes one `type = "nats"` command topic entry.
pub struct NatsCommandConsumer {
    cfg: NatsCommandTopicConfig,
    servers: Vec<ServerAddr>,
    auth: Auth,
}

impl fmt::Debug for NatsCommandConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCommandConsumer")
            .field("name", &self.cfg.name)
            .field("stream", &self.cfg.stream)
            .field("subjects", &self.cfg.subjects)
            .field("durable", &self.cfg.effective_durable())
            .finish_non_exhaustive()
    }
}

impl NatsCommandConsumer {
    /// Check the entry and read its secrets. No network I/O.
    pub fn new(cfg: &NatsCommandTopicConfig) -> Result<Self, CommandTopicError> {
        let problems = cfg.validate(&format!("command_topics.{}", cfg.name));
        if !problems.is_empty() {
            return Err(config_error(&cfg.name, problems));
        }
        let err = |message: String| CommandTopicError::Config {
            name: cfg.name.clone(),
            message,
        };
        let servers = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| err(format!("invalid server URL: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let read = |src: SecretSource, what: &str| -> Result<Secret, CommandTopicError> {
            src.read().map_err(|e| err(format!("{what}: {e}")))
        };
        let mut auth = Auth::default();
        if let (Some(user), Some(src)) = (
            &cfg.username,
            SecretSource::from_options(cfg.password_file.as_ref(), cfg.password_env.as_ref()),
        ) {
            auth.user_password = Some((user.clone(), read(src, "password")?));
        }
        if let Some(src) =
            SecretSource::from_options(cfg.token_file.as_ref(), cfg.token_env.as_ref())
        {
            auth.token = Some(read(src, "token")?);
        }
        if let Some(path) = &cfg.nkey_file {
            auth.nkey_seed = Some(read(SecretSource::File(path.clone()), "nkey_file")?);
        }
        if let Some(path) = &cfg.credentials_file {
            auth.creds = Some(read(SecretSource::File(path.clone()), "credentials_file")?);
        }
        Ok(Self {
            cfg: cfg.clone(),
            servers,
            auth,
        })
    }

    async fn connect(&self) -> Result<(Client, jetstream::Context), String> {
        let c = &self.cfg;
        let mut opts = ConnectOptions::new()
            .name(format!("espm-bridge/commands/{}", c.name))
            .connection_timeout(c.connect_timeout)
            .request_timeout(Some(c.request_timeout));
        if let Some((user, password)) = &self.auth.user_password {
            opts = opts.user_and_password(user.clone(), password.expose().to_string());
        }
        if let Some(token) = &self.auth.token {
            opts = opts.token(token.expose().to_string());
        }
        if let Some(seed) = &self.auth.nkey_seed {
            opts = opts.nkey(seed.expose().to_string());
        }
        if let Some(creds) = &self.auth.creds {
            opts = opts
                .credentials(creds.expose())
                .map_err(|e| format!("invalid credentials file: {e}"))?;
        }
        if let Some(ca) = &c.tls_ca_file {
            opts = opts.add_root_certificates(PathBuf::from(ca));
        }
        if let (Some(cert), Some(key)) = (&c.tls_cert_file, &c.tls_key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if c.tls_required {
            opts = opts.require_tls(true);
        }
        let client = opts
            .connect(self.servers.clone())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(c.request_timeout);
        Ok((client, js))
    }

    /// The stream (created when configured to) and the durable consumer on it.
    async fn consumer(
        &self,
        js: &jetstream::Context,
    ) -> Result<jetstream::consumer::PullConsumer, String> {
        let c = &self.cfg;
        let stream = match js.get_stream(&c.stream).await {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                if !c.create_stream {
                    return Err(format!(
                        "JetStream stream {:?} does not exist: create it or set create_stream = true",
                        c.stream
                    ));
                }
                let subjects = c.effective_stream_subjects();
                match js
                    .create_stream(StreamConfig {
                        name: c.stream.clone(),
                        subjects: subjects.clone(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(s) => {
                        tracing::info!(topic = %c.name, stream = %c.stream, ?subjects, "created JetStream command stream");
                        s
                    }
                    // Created meanwhile by someone else?
                    Err(e) => js.get_stream(&c.stream).await.map_err(|_| {
                        format!("cannot create JetStream stream {:?}: {e}", c.stream)
                    })?,
                }
            }
            Err(e) => return Err(format!("cannot look up stream {:?}: {e}", c.stream)),
        };
        let durable = c.effective_durable();
        let (filter_subject, filter_subjects) = match c.subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        stream
            .create_consumer(PullConfig {
                durable_name: Some(durable.clone()),
                description: Some("espm-bridge command topic".into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: c.ack_wait,
                deliver_policy: DeliverPolicy::All,
                filter_subject,
                filter_subjects,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create or update consumer {durable:?}: {e}"))
    }

    /// Consume until `stop` is cancelled, connecting (and reconnecting) with back-off. A message
    /// is acknowledged only after its result is journalled; one that was not when `stop` came
    /// is delivered again after `ack_wait`.
    pub async fn run(
        self,
        commander: Commander,
        stop: CancellationToken,
    ) -> Result<(), CommandTopicError> {
        let name = self.cfg.name.clone();
        let handler = Handler {
            commander,
            door: Door::Nats,
            name: name.clone(),
            default_account: self.cfg.account.clone(),
        };
        let mut delay = FIRST_BACKOFF;
        let progress_every = (self.cfg.ack_wait / 2).max(Duration::from_millis(100));
        while !stop.is_cancelled() {
            let ready = tokio::select! {
                _ = stop.cancelled() => break,
                r = async {
                    let (client, js) = self.connect().await?;
                    let ready = async {
                        let consumer = self.consumer(&js).await?;
                        consumer
                            .stream()
                            .max_messages_per_batch(1)
                            .messages()
                            .await
                            .map_err(|e| format!("cannot pull messages: {e}"))
                    }
                    .await;
                    match ready {
                        Ok(m) => Ok((client, m)),
                        Err(e) => {
                            close(&client).await;
                            Err(e)
                        }
                    }
                } => r,
            };
            let (client, mut messages) = match ready {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, retry_in = ?delay, "JetStream command consumer not ready");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            tracing::info!(topic = %name, stream = %self.cfg.stream, subjects = ?self.cfg.subjects, "reading commands from JetStream");
            let mut errors = 0u32;
            let stopped = loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break true,
                    n = messages.next() => n,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        errors += 1;
                        tracing::warn!(topic = %name, error = %e, "JetStream message stream error");
                        if errors >= MAX_STREAM_ERRORS {
                            break false;
                        }
                        continue;
                    }
                    None => break false,
                };
                errors = 0;
                delay = FIRST_BACKOFF;
                let position = match msg.info() {
                    Ok(i) => format!("nats/{}/{}", i.stream, i.stream_sequence),
                    Err(_) => format!("nats/{}/{}", self.cfg.stream, msg.subject),
                };
                let headers: Vec<(String, Vec<u8>)> = msg
                    .headers
                    .as_ref()
                    .map(|h| {
                        h.iter()
                            .flat_map(|(k, vs)| {
                                vs.iter()
                                    .map(move |v| (k.to_string(), v.as_str().as_bytes().to_vec()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let parsed = parse(Binding::Nats, &headers, &msg.payload);
                // Tell the server the message is being worked on while the command runs.
                let handled = {
                    let work = handler.journal(&parsed, &position, &stop);
                    tokio::pin!(work);
                    let mut tick = tokio::time::interval(progress_every);
                    tick.tick().await;
                    loop {
                        tokio::select! {
                            h = &mut work => break h,
                            _ = tick.tick() => {
                                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                                    tracing::debug!(topic = %name, position, error = %e, "progress ack failed");
                                }
                            }
                        }
                    }
                };
                let Some(handled) = handled else {
                    break true;
                };
                if let Handled::Submitted(v) | Handled::Rejected(v) = &handled {
                    tracing::debug!(topic = %name, position, command = %v.id, state = %v.state, "command journalled; acknowledging");
                }
                // Only now: the result is in the journal.
                if let Err(e) = msg.double_ack().await {
                    tracing::warn!(topic = %name, position, error = %e, "ack of a journalled command failed; it is delivered again and answered from the journal");
                }
            };
            // Withdraw the outstanding pull request before anything else: a message the server
            // hands to it after we stop would wait `ack_wait` for its next delivery.
            drop(messages);
            close(&client).await;
            if stopped {
                break;
            }
            // The message stream ended or kept failing: open it again, with back-off.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        tracing::info!(topic = %name, "stopped reading commands from JetStream");
        Ok(())
    }
}

/// Drain the connection (unsubscribe, flush, close) and wait, briefly, until it is closed.
async fn close(client: &Client) {
    if client.drain().await.is_err() {
        return;
    }
    // Once the drain has unsubscribed, flushed and closed, the client takes no more commands.
    let closed = async {
        while client.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
}
