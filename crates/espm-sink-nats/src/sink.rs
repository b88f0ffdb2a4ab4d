//! [`NatsSink`]: the [`Sink`] implementation.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ServerAddr;
use espm_config::{NatsSinkConfig, Secret, SecretSource};
use espm_events::{CloudEvent, Template};
use espm_sink::{Acks, Envelope, Outcome, Sink, SinkError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::request_builder::build_request;
use crate::service::{self, Auth, ConnectSettings, Connection, StreamSettings};

/// Subjects of a stream created by `create_stream` when `stream_subjects` is empty.
pub const DEFAULT_STREAM_SUBJECTS: &str = "espm.>";

/// JetStream batches in flight: the next batch is published while the oldest one's PubAcks are
/// awaited and settled in the journal.
const PIPELINE_DEPTH: usize = 4;

/// Publishes events to NATS: JetStream with PubAcks and `Nats-Msg-Id` de-duplication by
/// default, or core NATS publish + flush.
///
/// `Debug` shows the configuration but never a password, token, nkey seed, credentials file
/// content, or the userinfo part of a server URL.
pub struct NatsSink {
    name: String,
    redacted_url: String,
    subject: Template,
    jetstream: bool,
    max_in_flight: usize,
    /// One permit per unacknowledged JetStream publish, across every batch in flight.
    in_flight: Arc<Semaphore>,
    settings: ConnectSettings,
    stream: Option<StreamSettings>,
    conn: Mutex<Option<Connection>>,
    // Serialises start() so concurrent callers do not open two connections.
    start_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("url", &self.redacted_url)
            .field("subject", &self.subject.as_str())
            .field("jetstream", &self.jetstream)
            .field("max_in_flight", &self.max_in_flight)
            .field("stream", &self.stream)
            .field("auth", &self.settings.auth)
            .field("tls_ca_file", &self.settings.tls_ca_file)
            .field("tls_client", &self.settings.tls_client)
            .field("tls_required", &self.settings.tls_required)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Validate the configuration, parse the subject template and read the secrets.
    /// Does no network I/O; [`Sink::start`] connects.
    pub fn new(cfg: &NatsSinkConfig) -> Result<NatsSink, SinkError> {
        let err = |message: String| SinkError::Config {
            sink: cfg.name.clone(),
            message,
        };
        SinkError::check(&cfg.name, cfg.validate(&format!("sinks.{}", cfg.name)))?;
        let redacted_url = redact_urls(&cfg.url);
        let servers = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| err(format!("invalid server URL {}: {e}", redact_urls(s))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(err("url: at least one server URL is required".into()));
        }
        let subject = Template::parse(&cfg.subject)
            .map_err(|e| err(format!("subject template {:?}: {e}", cfg.subject)))?;
        if cfg.max_in_flight == 0 {
            return Err(err("max_in_flight must be at least 1".into()));
        }
        let stream = match &cfg.stream {
            Some(name) => Some(StreamSettings {
                name: name.clone(),
                create: cfg.create_stream,
                // validate() rejected subjects that would not capture `subject`.
                subjects: cfg
                    .effective_stream_subjects()
                    .unwrap_or_else(|_| vec![DEFAULT_STREAM_SUBJECTS.to_string()]),
                duplicate_window: cfg.duplicate_window,
            }),
            None if cfg.create_stream => {
                return Err(err("create_stream is set but no stream is named".into()));
            }
            None => None,
        };

        let read = |src: SecretSource, what: &str| -> Result<Secret, SinkError> {
            src.read().map_err(|e| err(format!("{what}: {e}")))
        };
        let mut auth = Auth::default();
        let password =
            SecretSource::from_options(cfg.password_file.as_ref(), cfg.password_env.as_ref());
        match (&cfg.username, password) {
            (Some(user), Some(src)) => {
                auth.user_password = Some((user.clone(), read(src, "password")?));
            }
            (Some(_), None) => {
                return Err(err(
                    "username is set but neither password_file nor password_env".into(),
                ))
            }
            (None, Some(_)) => return Err(err("a password is set but no username".into())),
            (None, None) => {}
        }
        if let Some(src) =
            SecretSource::from_options(cfg.token_file.as_ref(), cfg.token_env.as_ref())
        {
            auth.token = Some(read(src, "token")?);
        }
        if cfg.nkey_file.is_some() && cfg.credentials_file.is_some() {
            return Err(err(
                "set only one of nkey_file and credentials_file (a .creds file holds its own nkey)"
                    .into(),
            ));
        }
        if let Some(path) = &cfg.nkey_file {
            auth.nkey_seed = Some(read(SecretSource::File(path.clone()), "nkey_file")?);
        }
        if let Some(path) = &cfg.credentials_file {
            auth.creds = Some(read(SecretSource::File(path.clone()), "credentials_file")?);
        }
        let tls_client = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(err(
                    "tls_cert_file and tls_key_file must be set together".into()
                ))
            }
        };

        Ok(NatsSink {
            name: cfg.name.clone(),
            redacted_url,
            subject,
            jetstream: cfg.jetstream,
            max_in_flight: cfg.max_in_flight,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            settings: ConnectSettings {
                sink: cfg.name.clone(),
                servers,
                auth,
                tls_ca_file: cfg.tls_ca_file.clone(),
                tls_client,
                tls_required: cfg.tls_required,
                connect_timeout: cfg.connect_timeout,
                request_timeout: cfg.ack_timeout,
            },
            stream,
            conn: Mutex::new(None),
            start_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The parsed subject template.
    pub fn subject_template(&self) -> &Template {
        &self.subject
    }

    fn current(&self) -> Option<Connection> {
        // A poisoned lock only means another thread panicked while swapping an Option in.
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn unavailable(&self, message: String) -> SinkError {
        SinkError::Unavailable {
            sink: self.name.clone(),
            message,
        }
    }

    async fn connection(&self) -> Result<Connection, SinkError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        self.start().await?;
        self.current()
            .ok_or_else(|| self.unavailable("not connected".into()))
    }

    /// Publish every event in order, holding one `in_flight` permit per unacknowledged
    /// publish. The PubAcks are collected by a task of their own that runs while publishing
    /// goes on, so permits come back as acks arrive (also while the driver waits for an older
    /// batch).
    async fn submit_js(&self, conn: &Connection, batch: &[Envelope]) -> Acks {
        let n = batch.len();
        let (sent, mut acks) = tokio::sync::mpsc::unbounded_channel::<(
            service::PendingAck,
            Option<OwnedSemaphorePermit>,
        )>();
        let task = tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            while let Some((p, permit)) = acks.recv().await {
                out.push(p.outcome().await);
                drop(permit);
            }
            out
        });
        // `server_info` clones the whole INFO (strings, URLs): once per batch, not per event.
        let max = conn.client.server_info().max_payload;
        for env in batch {
            // The semaphore is never closed; without a permit the publish is simply unbounded.
            let permit = self.in_flight.clone().acquire_owned().await.ok();
            let req = build_request(&self.subject, &env.event, true);
            let p = match too_large(max, &req) {
                Some(dead) => service::PendingAck::Failed(dead),
                None => service::publish_js(&conn.js, req).await,
            };
            // The task only stops after `sent` is dropped below.
            let _ = sent.send((p, permit));
        }
        drop(sent);
        Box::pin(async move {
            let mut out = task.await.unwrap_or_default();
            // A task that died mid-way leaves its remaining events to be retried.
            while out.len() < n {
                out.push(service::retry("PubAck task failed".to_string()));
            }
            out
        })
    }

    async fn deliver_core(&self, conn: &Connection, batch: &[Envelope]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        let max = conn.client.server_info().max_payload;
        for env in batch {
            let req = build_request(&self.subject, &env.event, false);
            if let Some(dead) = too_large(max, &req) {
                out.push(Some(dead));
                continue;
            }
            let subject = req.subject.clone();
            out.push(
                match conn
                    .client
                    .publish_with_headers(req.subject, req.headers, req.payload)
                    .await
                {
                    Ok(()) => None,
                    Err(e) => Some(service::retry(format!("publish to {subject} failed: {e}"))),
                },
            );
        }
        let flushed =
            match tokio::time::timeout(self.settings.request_timeout, conn.client.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("flush failed: {e}")),
                Err(_) => Err("flush timed out".to_string()),
            };
        out.into_iter()
            .map(|o| match (o, &flushed) {
                (Some(failed), _) => failed,
                (None, Ok(())) => Outcome::Delivered,
                (None, Err(e)) => service::retry(e.clone()),
            })
            .collect()
    }
}

/// A message the server would refuse whatever we do (over its `max_payload`, read once per
/// batch) is a dead letter, not a retry: retrying would block the sink forever.
fn too_large(max: usize, req: &crate::NatsRequest) -> Option<Outcome> {
    let headers: usize = req
        .headers
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
        + 16;
    let size = req.payload.len() + headers;
    (max > 0 && size > max).then(|| Outcome::DeadLetter {
        reason: format!(
            "message of {size} bytes exceeds the NATS server's max_payload of {max} bytes"
        ),
        attempts: 0,
    })
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    /// Connect (once; later calls reuse the client, which reconnects by itself) and verify or
    /// create the stream.
    async fn start(&self) -> Result<(), SinkError> {
        let _guard = self.start_lock.lock().await;
        let conn = match self.current() {
            Some(c) => c,
            None => {
                let c = service::connect(&self.settings)
                    .await
                    .map_err(|m| self.unavailable(format!("{} ({})", m, self.redacted_url)))?;
                tracing::info!(sink = %self.name, url = %self.redacted_url, "connected to NATS");
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                c
            }
        };
        if let Some(st) = &self.stream {
            service::ensure_stream(&conn.js, st)
                .await
                .map_err(|m| self.unavailable(m))?;
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        self.submit(batch.to_vec()).await.await
    }

    /// JetStream publishes are pipelined across batches (bounded by `max_in_flight`); core NATS
    /// has no acknowledgement to wait for, only a flush per batch.
    fn pipeline_depth(&self) -> usize {
        if self.jetstream {
            PIPELINE_DEPTH
        } else {
            1
        }
    }

    async fn submit(&self, batch: Vec<Envelope>) -> Acks {
        let ready = |o: Vec<Outcome>| -> Acks { Box::pin(std::future::ready(o)) };
        if batch.is_empty() {
            return ready(Vec::new());
        }
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return ready(retry_all(&batch, &e.to_string())),
        };
        // Publishing while disconnected only queues messages client-side until their acks time out.
        if !conn.is_connected() {
            return ready(retry_all(&batch, "not connected to NATS"));
        }
        if self.jetstream {
            self.submit_js(&conn, &batch).await
        } else {
            ready(self.deliver_core(&conn, &batch).await)
        }
    }

    async fn health(&self) -> Result<(), SinkError> {
        let conn = self
            .current()
            .ok_or_else(|| self.unavailable("not started".into()))?;
        if !conn.is_connected() {
            return Err(self.unavailable(format!(
                "connection state is {:?}",
                conn.client.connection_state()
            )));
        }
        if let Some(st) = &self.stream {
            match service::stream_exists(&conn.js, &st.name).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(
                        self.unavailable(format!("JetStream stream {:?} does not exist", st.name))
                    )
                }
                Err(m) => return Err(self.unavailable(m)),
            }
        }
        Ok(())
    }

    async fn close(&self, grace: Duration) {
        if let Some(conn) = self.current() {
            match tokio::time::timeout(grace, conn.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(sink = %self.name, error = %e, "flush on close failed")
                }
                Err(_) => tracing::warn!(sink = %self.name, "flush on close timed out"),
            }
        }
    }

    fn accepts(&self, _event: &CloudEvent) -> bool {
        true
    }
}

fn retry_all(batch: &[Envelope], reason: &str) -> Vec<Outcome> {
    batch
        .iter()
        .map(|_| Outcome::Retry {
            reason: reason.to_string(),
            retry_after: None,
            attempts: 0,
        })
        .collect()
}

/// Hide the user info (`user:password@`) of each comma-separated server URL.
pub(crate) fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| espm_config::redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact_urls("nats://u:p@a:4222, tls://b:4222,c:1"),
            "nats://***@a:4222,tls://b:4222,c:1"
        );
        assert_eq!(redact_urls("tok@h:4222"), "***@h:4222");
    }

    #[test]
    fn created_stream_defaults() {
        let cfg: NatsSinkConfig = serde_json::from_value(serde_json::json!({
            "name": "n", "url": "nats://127.0.0.1:4222", "stream": "ESPM", "create_stream": true
        }))
        .unwrap();
        let sink = NatsSink::new(&cfg).unwrap();
        let st = sink.stream.as_ref().unwrap();
        assert_eq!(st.subjects, vec!["espm.>".to_string()]);
        assert_eq!(st.duplicate_window, Duration::from_secs(120));
        assert!(st.create);
        assert_eq!(
            sink.subject_template().as_str(),
            "espm.{environment}.{type}"
        );
        assert!(sink.jetstream);
        assert_eq!(sink.max_in_flight, 256);
    }
}
