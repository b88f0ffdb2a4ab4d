//! One notification drain: journal the raw body, then parse, then commit.

use std::time::Duration;

use espm_client::RawBody;
use espm_events::{notification_event, quarantine_event};
use espm_journal::{NotificationEntry, RawId};
use espm_model::{parse, NotificationList};

use crate::{DrainMode, PollError, Poller};

const ENDPOINT: &str = "notification/list";

/// Notifications committed per journal transaction.
const COMMIT_PART: usize = 2000;

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Notifications PM handed out with `clear=true` (0 means idle).
    pub received: usize,
    /// Of all notifications seen (peek and clear), those new to the journal.
    pub new_notifications: usize,
    /// Events appended to the outbox.
    pub new_events: usize,
    /// Bodies that failed to parse and were quarantined.
    pub quarantined: usize,
}

impl Poller {
    /// Drain notifications once, per the configured mode.
    pub async fn drain_once(&self) -> Result<DrainOutcome, PollError> {
        let mut out = DrainOutcome::default();
        if self.cfg.drain_mode == DrainMode::PeekThenClear {
            // The peek is harmless (clear=false), but there is no point in it when nothing
            // could be stored: the write probe below would stop the clear anyway.
            self.ensure_writable().await?;
            let peeked = self.fetch_and_commit(false, &mut out).await?;
            if peeked == 0 {
                return Ok(out);
            }
        }
        self.ensure_writable().await?;
        out.received = self.fetch_and_commit(true, &mut out).await?;
        Ok(out)
    }

    /// Never call clear=true unless the journal takes writes right now.
    async fn ensure_writable(&self) -> Result<(), PollError> {
        let res = self.journal(|j| j.check_writable()).await;
        if let Err(e) = &res {
            metrics::counter!("espm_bridge_polls_total", "account" => self.account().to_string(), "endpoint" => ENDPOINT, "outcome" => "journal_unwritable").increment(1);
            tracing::error!(account = %self.account(), error = %e, "journal is not writable: NOT draining PM notifications until it is");
        }
        res
    }

    /// One GET; returns how many notifications the body held (0 if it was quarantined).
    async fn fetch_and_commit(
        &self,
        clear: bool,
        out: &mut DrainOutcome,
    ) -> Result<usize, PollError> {
        let endpoint = if clear {
            "notification/list?clear=true"
        } else {
            "notification/list?clear=false"
        };
        let account = self.account().to_string();
        let raw = match self.client.notifications_raw(clear).await {
            Ok(raw) => raw,
            Err(e) => {
                // A body cut off mid-transfer after PM committed the read: keep what arrived.
                if let Some(partial) = e.partial_body() {
                    if !partial.is_empty() {
                        let id = self.store_raw(endpoint, 200, partial.to_vec()).await?;
                        self.quarantine(endpoint, id, &e.to_string()).await?;
                        out.quarantined += 1;
                    }
                }
                let outcome = match e.status() {
                    Some(s) if (400..500).contains(&s) => "http_4xx",
                    Some(_) => "http_5xx",
                    None => "transport",
                };
                metrics::counter!("espm_bridge_polls_total", "account" => account, "endpoint" => ENDPOINT, "outcome" => outcome).increment(1);
                return Err(e.into());
            }
        };
        let RawBody { status, bytes, .. } = raw;
        let raw_id = self.store_raw(endpoint, status, bytes.to_vec()).await?;
        metrics::gauge!("espm_bridge_last_poll_timestamp_seconds", "account" => account.clone())
            .set(chrono::Utc::now().timestamp() as f64);
        self.process_body(endpoint, raw_id, &bytes, clear, out)
            .await
    }

    /// Parse a journalled notification body and commit it, in parts of [`COMMIT_PART`]
    /// notifications so that sinks start on a huge drain before all of it is stored. The raw
    /// body is marked processed only with the last part; a crash before that leaves it to
    /// [`Poller::recover`].
    async fn process_body(
        &self,
        endpoint: &str,
        raw_id: RawId,
        bytes: &[u8],
        clear: bool,
        out: &mut DrainOutcome,
    ) -> Result<usize, PollError> {
        let account = self.account().to_string();
        let list = match parse::<NotificationList>(bytes) {
            Ok(list) => list,
            Err(e) => {
                metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => ENDPOINT, "outcome" => "parse_error").increment(1);
                tracing::error!(account = %account, raw_id = %raw_id, error = %e, "PM notification body does not parse: quarantined");
                self.quarantine(endpoint, raw_id, &e.to_string()).await?;
                out.quarantined += 1;
                return Ok(0);
            }
        };
        metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => ENDPOINT, "outcome" => "ok").increment(1);
        let n = list.notifications.len();
        let parts: Vec<&[espm_model::Notification]> = if n == 0 {
            vec![&[]]
        } else {
            list.notifications.chunks(COMMIT_PART).collect()
        };
        let last_index = parts.len() - 1;
        let (mut new, mut duplicates) = (0, 0);
        for (i, part) in parts.into_iter().enumerate() {
            let mut entries = Vec::with_capacity(part.len());
            let mut events = Vec::with_capacity(part.len());
            for notification in part {
                let event = notification_event(&self.origin, notification);
                let _span = tracing::debug_span!("notification", notification_id = notification.notification_id, event_id = %event.id).entered();
                tracing::debug!(code = %notification.notification_type_code, "normalized");
                entries.push(NotificationEntry {
                    notification_id: notification.notification_id,
                    type_code: notification.notification_type_code.clone(),
                    json: serde_json::to_value(notification).unwrap_or(serde_json::Value::Null),
                });
                events.push(event);
            }
            let types: Vec<String> = events.iter().map(|e| e.ty.clone()).collect();
            let scope = self.cfg.scope.clone();
            let last = i == last_index;
            let stats = self
                .journal(move |j| {
                    j.commit_notifications_part(&scope, raw_id, &entries, &events, last)
                })
                .await?;
            if stats.new_events > 0 {
                self.wake_sinks();
            }
            for ty in types {
                metrics::counter!("espm_bridge_events_emitted_total", "account" => account.clone(), "type" => ty).increment(1);
            }
            out.new_notifications += stats.new_notifications;
            out.new_events += stats.new_events;
            new += stats.new_notifications;
            duplicates += stats.duplicate_notifications;
        }
        if clear {
            metrics::counter!("espm_bridge_notifications_drained_total", "account" => account.clone()).increment(n as u64);
        }
        if n > 0 {
            tracing::info!(account = %account, clear, received = n, new, duplicates, "drained notifications");
        }
        Ok(n)
    }

    /// Finish what a crash interrupted: notification bodies that were journalled but never
    /// committed are parsed and committed now (idempotently); interrupted pending-list pages are
    /// set aside, because the next walk reads the lists again. Returns how many bodies were
    /// recovered.
    pub async fn recover(&self) -> Result<usize, PollError> {
        let scope = self.cfg.scope.clone();
        let bodies = self.journal(move |j| j.unprocessed_raw(&scope)).await?;
        let mut recovered = 0;
        for body in bodies {
            if body.endpoint.starts_with("notification/list") {
                let mut out = DrainOutcome::default();
                let clear = body.endpoint.ends_with("clear=true");
                let n = self
                    .process_body(&body.endpoint, body.id, &body.body, clear, &mut out)
                    .await?;
                tracing::warn!(account = %self.account(), raw_id = %body.id, notifications = n, "recovered a journalled body left unprocessed by a crash");
                recovered += 1;
            } else {
                let id = body.id;
                self.journal(move |j| j.mark_raw_processed(id)).await?;
            }
        }
        Ok(recovered)
    }

    /// Journal raw bytes. After a clear=true these bytes are the only copy, so a failing journal
    /// is retried until it takes them; the write probe before the call makes this rare.
    pub(crate) async fn store_raw(
        &self,
        endpoint: &str,
        status: u16,
        bytes: Vec<u8>,
    ) -> Result<RawId, PollError> {
        let bytes = std::sync::Arc::new(bytes);
        let mut wait = Duration::from_millis(200);
        let mut attempts = 0u32;
        loop {
            let scope = self.cfg.scope.clone();
            let ep = endpoint.to_string();
            let b = bytes.clone();
            match self
                .journal(move |j| j.record_raw(&scope, &ep, status, &b))
                .await
            {
                Ok(id) => return Ok(id),
                Err(e) if endpoint.ends_with("clear=true") => {
                    attempts += 1;
                    tracing::error!(account = %self.account(), error = %e, attempts, bytes = bytes.len(),
                        "CANNOT JOURNAL a drained PM body (the only copy): retrying");
                    if attempts == 10 {
                        self.emergency_dump(&bytes);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Last resort when the journal refuses a drained body for a long time: write it next to
    /// the journal (or to the temp dir) so an operator can recover it. We keep retrying too.
    fn emergency_dump(&self, bytes: &[u8]) {
        let name = format!(
            "espm-bridge-emergency-{}-{}.xml",
            self.account(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        );
        let dir = self
            .journal
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        for d in [dir, std::env::temp_dir()] {
            let p = d.join(&name);
            if std::fs::write(&p, bytes).is_ok() {
                tracing::error!(path = %p.display(), "drained PM body dumped to an emergency file");
                return;
            }
        }
    }

    pub(crate) async fn quarantine(
        &self,
        endpoint: &str,
        raw_id: RawId,
        error: &str,
    ) -> Result<(), PollError> {
        let event = quarantine_event(&self.origin, endpoint, raw_id.0, error, chrono::Utc::now());
        let err = error.to_string();
        self.journal(move |j| {
            j.quarantine(raw_id, &err)?;
            j.enqueue(&[event])
        })
        .await?;
        self.wake_sinks();
        metrics::counter!("espm_bridge_quarantined_bodies_total", "account" => self.account().to_string()).increment(1);
        Ok(())
    }
}
