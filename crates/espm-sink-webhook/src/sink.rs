//! The webhook [`Sink`]: one instance per configured endpoint, so each has its own cursor and a
//! slow or dead endpoint never delays another.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use espm_config::{SecretSource, WebhookMode, WebhookRetry, WebhookSinkConfig};
use espm_sink::{CloudEvent, DeliveryMode, Envelope, Outcome, Sink, SinkError};
use futures::StreamExt;
use http::HeaderMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::request_builder::{self, extra_headers};
use crate::secrets::signer_from_source;
use crate::service::{Attempt, WebhookService};
use crate::signing::Signer;

/// Event-type filter: exact types, or prefixes written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl TypeFilter {
    /// Parse patterns; an empty list accepts every type. `*` is only allowed at the end.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                return Err("empty event-type pattern in `types`".into());
            }
            let (body, wildcard) = match p.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (p, false),
            };
            if body.contains('*') {
                return Err(format!(
                    "event-type pattern {p:?}: `*` is only supported at the end"
                ));
            }
            if wildcard {
                prefixes.push(body.to_string());
            } else {
                exact.push(body.to_string());
            }
        }
        Ok(Self { exact, prefixes })
    }

    /// Whether an event of type `ty` passes.
    pub fn matches(&self, ty: &str) -> bool {
        (self.exact.is_empty() && self.prefixes.is_empty())
            || self.exact.iter().any(|e| e == ty)
            || self.prefixes.iter().any(|p| ty.starts_with(p.as_str()))
    }
}

/// POSTs each event to one endpoint, signed per Standard Webhooks. One attempt per event per
/// `deliver`: retries follow the configured schedule through the driver's per-event retry queue
/// ([`DeliveryMode::PerEvent`]), so a failing event never holds back the others.
#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    filter: TypeFilter,
    signer: Signer,
    headers: HeaderMap,
    service: WebhookService,
    max_in_flight: usize,
    retry: WebhookRetry,
    disable_after: Option<Duration>,
    mode: WebhookMode,
    /// Cancelled by `close`: pending retry waits end at once and nothing new is sent.
    closing: CancellationToken,
    /// Running `deliver` calls, so that `close` can wait for them.
    active: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    /// Set by a 410 Gone, cleared by the next 2xx; reported by `health`.
    gone: AtomicBool,
    /// Set by a 410 Gone, so that no round in flight sends anything more; cleared by `start`,
    /// which the driver calls again once an operator re-enables the endpoint.
    gone_since_start: AtomicBool,
    /// `max_in_flight` permits shared by every round in flight: the limit is the endpoint's.
    permits: Arc<tokio::sync::Semaphore>,
}

fn config_error(sink: &str, message: impl Into<String>) -> SinkError {
    SinkError::Config {
        sink: sink.to_string(),
        message: message.into(),
    }
}

/// The signer of the configured secrets ([`signer_from_source`]).
fn read_signer(cfg: &WebhookSinkConfig) -> Result<Signer, SinkError> {
    let name = &cfg.name;
    let source = SecretSource::from_options(cfg.secret_file.as_ref(), cfg.secret_env.as_ref())
        .ok_or_else(|| {
            config_error(
                name,
                "no signing secret: set `secret_file` or `secret_env` to `whsec_...` secret(s)",
            )
        })?;
    signer_from_source(&source).map_err(|e| config_error(name, e))
}

fn parse_url(name: &str, raw: &str) -> Result<reqwest::Url, SinkError> {
    // Parse errors never echo the URL: it may carry a token in its query.
    let url =
        reqwest::Url::parse(raw).map_err(|e| config_error(name, format!("invalid `url`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config_error(
            name,
            format!("`url` must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config_error(name, "`url` has no host"));
    }
    Ok(url)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn age_of(envelope: &Envelope) -> Duration {
    SystemTime::now()
        .duration_since(envelope.enqueued_at)
        .unwrap_or(Duration::ZERO)
}

/// Decrements the active-deliver count even if the `deliver` future is dropped midway.
struct ActiveGuard<'a> {
    active: &'a AtomicUsize,
    idle: &'a Notify,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl WebhookSink {
    /// Validate the configuration, read and parse the secrets and build the HTTP client.
    ///
    /// Fails with [`SinkError::Config`] on a bad URL, a missing or malformed secret (the
    /// message names the secret's position, never its value), a bad `types` pattern, an
    /// invalid or reserved extra header, or `max_in_flight = 0`.
    pub fn new(cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        let name = cfg.name.as_str();
        SinkError::check(name, cfg.validate(&format!("sinks.{name}")))?;
        let url = parse_url(name, &cfg.url)?;
        let filter = TypeFilter::new(&cfg.types).map_err(|m| config_error(name, m))?;
        if cfg.max_in_flight == 0 {
            return Err(config_error(name, "`max_in_flight` must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(config_error(name, "`timeout` must be greater than zero"));
        }
        let signer = read_signer(cfg)?;
        let mut all_headers = cfg.headers.clone();
        let secret_headers = espm_config::read_secret_map(&cfg.header_files, &cfg.header_envs)
            .map_err(|(header, e)| config_error(name, format!("header {header}: {e}")))?;
        for (header, value) in secret_headers {
            all_headers.insert(header, value.expose().to_string());
        }
        let headers = extra_headers(&all_headers).map_err(|e| config_error(name, e.to_string()))?;
        let service = WebhookService::new(url, cfg.timeout, cfg.max_in_flight)
            .map_err(|e| config_error(name, e.to_string()))?;
        if service.is_proxied() {
            tracing::info!(
                sink = name,
                "sending through the proxy the environment names for this URL"
            );
        }
        Ok(Self {
            name: cfg.name.clone(),
            filter,
            signer,
            headers,
            service,
            max_in_flight: cfg.max_in_flight,
            retry: cfg.retry.clone(),
            disable_after: (!cfg.disable_after.is_zero()).then_some(cfg.disable_after),
            mode: cfg.mode,
            closing: CancellationToken::new(),
            active: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(Notify::new()),
            gone: AtomicBool::new(false),
            gone_since_start: AtomicBool::new(false),
            permits: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight)),
        })
    }

    /// Whether a 410 Gone answered any round since the last `start`.
    fn gone_since_start(&self) -> bool {
        self.gone_since_start.load(Ordering::Relaxed)
    }

    fn record_failure(&self, label: String) {
        metrics::counter!(
            "espm_bridge_sink_attempt_failures_total",
            "sink" => self.name.clone(),
            "reason" => label
        )
        .increment(1);
    }

    /// Make one attempt at one event. A failure gets [`Outcome::Retry`] with the delay the
    /// schedule (or a longer `Retry-After`) asks for: the driver queues the event in the journal
    /// and delivers the others meanwhile. The schedule spent, or the event older than `max_age`
    /// (now or by its next attempt), it gets [`Outcome::DeadLetter`]. `stop` is cancelled by a
    /// 410 or by `close`; events not yet sent then get `Retry` with no attempt made.
    async fn deliver_one(&self, envelope: &Envelope, stop: &CancellationToken) -> Outcome {
        let policy = &self.retry;
        let before = envelope.attempts;
        if stop.is_cancelled() || self.gone_since_start() {
            return Outcome::Retry {
                reason: if self.closing.is_cancelled() {
                    "not sent: sink is closing".into()
                } else {
                    "not sent: the endpoint was disabled".into()
                },
                retry_after: None,
                attempts: 0,
            };
        }
        if before as usize > policy.schedule.len() {
            return Outcome::DeadLetter {
                reason: format!("gave up after {before} attempts (retry schedule spent)"),
                attempts: 0,
            };
        }
        if age_of(envelope) >= policy.max_age {
            return Outcome::DeadLetter {
                reason: format!(
                    "older than max_age ({}) after {before} attempts",
                    humanize(policy.max_age)
                ),
                attempts: 0,
            };
        }

        // The permit first: a 410 or `close` while waiting for it sends nothing, and the
        // signature's timestamp is taken when the request goes out.
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::Retry {
                reason: "not sent: sink is closing".into(),
                retry_after: None,
                attempts: 0,
            };
        };
        if stop.is_cancelled() || self.gone_since_start() {
            return Outcome::Retry {
                reason: "not sent: the endpoint was disabled or the sink is closing".into(),
                retry_after: None,
                attempts: 0,
            };
        }
        let request = request_builder::build(
            &envelope.event,
            &self.signer,
            &self.headers,
            unix_now(),
            self.mode,
        );
        let attempt = self.service.send(request).await;
        let made = before + 1;
        let (kind, retry_after) = match attempt {
            Attempt::Success { .. } => {
                self.gone.store(false, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            Attempt::Gone => {
                self.gone.store(true, Ordering::Relaxed);
                self.record_failure("http_410".into());
                stop.cancel();
                self.gone_since_start.store(true, Ordering::Relaxed);
                tracing::warn!(sink = %self.name, seq = envelope.seq, "endpoint answered 410 Gone; disabling");
                return Outcome::Disabled {
                    reason: "endpoint answered HTTP 410 Gone".into(),
                };
            }
            Attempt::Failed {
                ref kind,
                retry_after,
                ..
            } => (kind.clone(), retry_after),
        };
        self.record_failure(kind.label());
        let last = attempt.to_string();
        tracing::warn!(
            sink = %self.name,
            seq = envelope.seq,
            event_id = %envelope.event.id,
            attempt = made,
            error = %last,
            "webhook delivery attempt failed"
        );
        let Some(scheduled) = policy.schedule.get(before as usize).copied() else {
            return Outcome::DeadLetter {
                reason: format!("gave up after {made} attempts; last: {last}"),
                attempts: 1,
            };
        };
        let delay = retry_after.map_or(scheduled, |asked| scheduled.max(asked));
        if age_of(envelope) + delay >= policy.max_age {
            return Outcome::DeadLetter {
                reason: format!(
                    "would exceed max_age ({}) before the next attempt, after {made} attempts; last: {last}",
                    humanize(policy.max_age)
                ),
                attempts: 1,
            };
        }
        Outcome::Retry {
            reason: match retry_after {
                Some(asked) => format!("{last} (Retry-After {})", humanize(asked)),
                None => last,
            },
            retry_after: Some(delay),
            attempts: 1,
        }
    }
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn accepts(&self, event: &CloudEvent) -> bool {
        self.filter.matches(&event.ty)
    }

    fn delivery_mode(&self) -> DeliveryMode {
        DeliveryMode::PerEvent {
            disable_after: self.disable_after,
        }
    }

    /// Called again once an operator re-enables the endpoint: a 410 from before stops nothing.
    async fn start(&self) -> Result<(), SinkError> {
        self.gone_since_start.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Two rounds at once share the `max_in_flight` permits, so the endpoint is not left idle
    /// while a round's last answers come in and it is settled; with one in flight, rounds go
    /// one after the other to keep the batch order.
    fn pipeline_depth(&self) -> usize {
        if self.max_in_flight > 1 {
            2
        } else {
            1
        }
    }

    /// Sends up to `max_in_flight` events at once (1 = one after the other, in batch order), one
    /// attempt each. Once the endpoint answers 410, events not yet sent get `Retry` unsent.
    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        self.active.fetch_add(1, Ordering::AcqRel);
        let _guard = ActiveGuard {
            active: &self.active,
            idle: &self.idle,
        };
        let stop = self.closing.child_token();
        let stop = &stop;
        // Futures are built up front (they do nothing until polled): mapping inside the stream
        // trips a higher-ranked lifetime limitation of `async_trait`'s `Send` check.
        let pending: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, env)| async move { (i, self.deliver_one(env, stop).await) })
            .collect();
        let mut results: Vec<(usize, Outcome)> = futures::stream::iter(pending)
            .buffer_unordered(self.max_in_flight)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, o)| o).collect()
    }

    async fn health(&self) -> Result<(), SinkError> {
        if self.gone.load(Ordering::Relaxed) {
            return Err(SinkError::Unavailable {
                sink: self.name.clone(),
                message: "endpoint answered HTTP 410 Gone; re-enable it once the receiver is fixed"
                    .into(),
            });
        }
        Ok(())
    }

    /// Ends pending retry waits at once (their events get `Retry`) and waits up to `grace` for
    /// requests already on the wire.
    async fn close(&self, grace: Duration) {
        self.closing.cancel();
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.active.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filter() {
        let all = TypeFilter::new::<&str>(&[]).unwrap();
        assert!(all.matches("anything"));
        let f = TypeFilter::new(&[
            "gov.energystar.pm.share.*",
            "gov.energystar.pm.meter.created",
        ])
        .unwrap();
        assert!(f.matches("gov.energystar.pm.share.revoked"));
        assert!(f.matches("gov.energystar.pm.meter.created"));
        assert!(!f.matches("gov.energystar.pm.meter.deleted"));
        assert!(!f.matches("gov.energystar.pm.sharex"));
        assert!(TypeFilter::new(&["*"]).unwrap().matches("x"));
        assert!(TypeFilter::new(&["a.*.b"]).is_err());
        assert!(TypeFilter::new(&["  "]).is_err());
    }

    #[test]
    fn urls_are_validated() {
        assert!(parse_url("s", "https://example.com/hook?token=abc").is_ok());
        let err = parse_url("s", "ftp://example.com/x?token=abc").unwrap_err();
        assert!(!err.to_string().contains("token=abc"));
        assert!(parse_url("s", "not a url").is_err());
    }
}
