//! The Arcadia [`Sink`]: events in batch order, one after the other (calls on one account must not
//! overtake each other), each retried in place per its policy.

use std::time::{Duration, SystemTime};

use backoff::backoff::Backoff;
use espm_arcadia::AppKey;
use espm_config::{ArcadiaSinkConfig, RetryPolicy};
use espm_sink::{CloudEvent, Envelope, Outcome, Sink, SinkError};
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::request_builder::{Mapping, Plan};
use crate::service::{ArcadiaService, CallError};

/// The event types this sink acts on; everything else is acknowledged without a call.
const MIRRORED_TYPES: &[&str] = &[
    espm_events::PROPERTY_SHARE_RESOLVED,
    espm_events::SHARE_REVOKED,
    espm_events::CONNECTION_TERMINATED,
    espm_events::SHARE_UPDATED,
    espm_events::PROPERTY_TRANSFERRED,
];

/// Mirrors PM property shares into Arcadia accounts.
#[derive(Debug)]
pub struct ArcadiaSink {
    name: String,
    service: ArcadiaService,
    mapping: Mapping,
    retry: RetryPolicy,
    /// Cancelled by `close`: retry waits end at once and nothing new is sent.
    closing: CancellationToken,
}

fn age_of(envelope: &Envelope) -> Duration {
    SystemTime::now()
        .duration_since(envelope.enqueued_at)
        .unwrap_or(Duration::ZERO)
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl ArcadiaSink {
    /// Validate the configuration, read the app key and build the client.
    pub fn new(cfg: &ArcadiaSinkConfig) -> Result<Self, SinkError> {
        let key = config::read_app_key(cfg)?;
        Self::with_key(cfg, key)
    }

    /// Like [`ArcadiaSink::new`] with the app key already known (the demo's simulator).
    pub fn with_key(cfg: &ArcadiaSinkConfig, key: AppKey) -> Result<Self, SinkError> {
        let err = |m: &str| SinkError::Config {
            sink: cfg.name.clone(),
            message: m.into(),
        };
        if cfg.retry.max_attempts == 0 {
            return Err(err("`retry.max_attempts` must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(err("`timeout` must be greater than zero"));
        }
        Ok(Self {
            name: cfg.name.clone(),
            service: ArcadiaService::new(config::client(cfg, key)?),
            mapping: config::mapping(cfg)?,
            retry: cfg.retry.clone(),
            closing: CancellationToken::new(),
        })
    }

    /// The service (client and calls), for the operator CLI.
    pub fn service(&self) -> &ArcadiaService {
        &self.service
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoff {
            current_interval: self.retry.initial_interval,
            initial_interval: self.retry.initial_interval,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: self.retry.max_interval.max(self.retry.initial_interval),
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        }
    }

    fn record_failure(&self, label: String) {
        metrics::counter!(
            "espm_bridge_sink_attempt_failures_total",
            "sink" => self.name.clone(),
            "reason" => label
        )
        .increment(1);
    }

    /// Mirror one event. Calls that succeeded are not repeated within this delivery; a later
    /// delivery (driver retry, replay) runs the whole plan again, which is idempotent.
    async fn deliver_one(&self, envelope: &Envelope) -> Outcome {
        let calls = match self.mapping.plan(&envelope.event) {
            Plan::Skip(reason) => {
                tracing::debug!(sink = %self.name, seq = envelope.seq, event_type = %envelope.event.ty, %reason, "nothing to mirror");
                return Outcome::Delivered;
            }
            Plan::Calls(calls) => calls,
        };
        let policy = &self.retry;
        let mut attempts = envelope.attempts;
        let mut backoff = self.backoff();
        let mut last = String::from("attempt budget spent in earlier batches");
        let mut next = 0usize;
        loop {
            if self.closing.is_cancelled() {
                return Outcome::Retry {
                    reason: "not sent: sink is closing".into(),
                    retry_after: None,
                    attempts: attempts - envelope.attempts,
                };
            }
            if attempts >= policy.max_attempts {
                return Outcome::DeadLetter {
                    reason: format!("gave up after {attempts} attempts; last: {last}"),
                    attempts: attempts - envelope.attempts,
                };
            }
            if age_of(envelope) >= policy.max_age {
                return Outcome::DeadLetter {
                    reason: format!(
                        "older than max_age ({}) after {attempts} attempts; last: {last}",
                        humanize(policy.max_age)
                    ),
                    attempts: attempts - envelope.attempts,
                };
            }
            attempts += 1;
            let mut failure = None;
            while next < calls.len() {
                match self.service.run(&calls[next], &self.mapping).await {
                    Ok(()) => next += 1,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let (reason, retry_after, label) = match failure {
                None => return Outcome::Delivered,
                Some(CallError::Permanent(message)) => {
                    self.record_failure("rejected".into());
                    tracing::warn!(sink = %self.name, seq = envelope.seq, event_id = %envelope.event.id, error = %message, "Arcadia refused the event; dead-lettering it");
                    return Outcome::DeadLetter {
                        reason: format!("Arcadia refused it: {message}"),
                        attempts: attempts - envelope.attempts,
                    };
                }
                Some(CallError::Transient {
                    reason,
                    retry_after,
                    label,
                }) => (reason, retry_after, label),
            };
            self.record_failure(label);
            tracing::warn!(sink = %self.name, seq = envelope.seq, event_id = %envelope.event.id, attempt = attempts, error = %reason, "Arcadia call failed");
            last = reason;
            if attempts >= policy.max_attempts {
                return Outcome::DeadLetter {
                    reason: format!("gave up after {attempts} attempts; last: {last}"),
                    attempts: attempts - envelope.attempts,
                };
            }
            let mut delay = backoff
                .next_backoff()
                .unwrap_or(policy.max_interval)
                .min(policy.max_interval);
            if let Some(asked) = retry_after {
                if asked > policy.max_interval {
                    // Too long to hold the batch: the driver waits between batches instead.
                    return Outcome::Retry {
                        reason: format!("{last} (Retry-After {})", humanize(asked)),
                        retry_after: Some(asked),
                        attempts: attempts - envelope.attempts,
                    };
                }
                delay = delay.max(asked);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.closing.cancelled() => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for ArcadiaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "arcadia"
    }

    fn accepts(&self, event: &CloudEvent) -> bool {
        MIRRORED_TYPES.contains(&event.ty.as_str())
    }

    /// One event after the other, in batch order. After the first event handed back to the
    /// driver, the rest get `Retry` unsent, so no call overtakes an earlier one.
    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for envelope in batch {
            if out
                .last()
                .is_some_and(|o: &Outcome| matches!(o, Outcome::Retry { .. }))
            {
                out.push(Outcome::Retry {
                    reason: "not sent: an earlier event of this batch waits for a retry".into(),
                    retry_after: None,
                    attempts: 0,
                });
                continue;
            }
            out.push(self.deliver_one(envelope).await);
        }
        out
    }

    async fn close(&self, _grace: Duration) {
        self.closing.cancel();
    }
}
