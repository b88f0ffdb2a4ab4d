//! Webhook sink configuration. Owned by the webhook sink: extend here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Retry policy of a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts before an event is dead-lettered (including the first).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Give up (dead-letter) when the event is older than this.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
    /// First retry delay; doubles with jitter (±50%) on each further attempt.
    #[serde(default = "default_initial", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_interval: Duration,
    /// Cap on the retry delay. A `Retry-After` longer than this is not waited out inside the
    /// sink: the event is handed back to the delivery driver with that delay.
    #[serde(default = "default_max_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            max_age: default_max_age(),
            initial_interval: default_initial(),
            max_interval: default_max_interval(),
        }
    }
}

fn default_attempts() -> u32 {
    10
}
fn default_max_age() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max_interval() -> Duration {
    Duration::from_secs(300)
}

/// Per-event retry schedule of a webhook endpoint (Svix's by default: immediately, then 5s, 5m,
/// 30m, 2h, 5h, 10h, 10h, about a day in all).
///
/// A failing event never holds back the others: it waits in the journal's retry queue for its
/// next attempt while the events behind it are delivered, so per-endpoint order is not kept
/// across a retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRetry {
    /// Delays between attempts: the first attempt is immediate, then one retry after each delay
    /// in turn; when the list is spent the event is dead-lettered. A longer `Retry-After` from the
    /// endpoint wins over the delay. An empty list means one attempt only.
    #[serde(default = "default_schedule", with = "duration_list")]
    #[schemars(with = "Vec<String>")]
    pub schedule: Vec<Duration>,
    /// Give up (dead-letter) when the event is older than this.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
    /// Removed in favour of `schedule`; rejected by `check-config` with a hint.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub max_attempts: Option<serde::de::IgnoredAny>,
    /// Removed in favour of `schedule`; rejected by `check-config` with a hint.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub initial_interval: Option<serde::de::IgnoredAny>,
    /// Removed in favour of `schedule`; rejected by `check-config` with a hint.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub max_interval: Option<serde::de::IgnoredAny>,
}

impl Default for WebhookRetry {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            max_age: default_max_age(),
            max_attempts: None,
            initial_interval: None,
            max_interval: None,
        }
    }
}

impl WebhookRetry {
    /// Keys of the old exponential policy still present in the configuration.
    pub fn removed_keys(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.max_attempts.is_some() {
            out.push("max_attempts");
        }
        if self.initial_interval.is_some() {
            out.push("initial_interval");
        }
        if self.max_interval.is_some() {
            out.push("max_interval");
        }
        out
    }
}

/// Svix's schedule: immediately, then 5s, 5m, 30m, 2h, 5h, 10h, 10h.
pub fn default_schedule() -> Vec<Duration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn default_disable_after() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}

/// How the CloudEvent travels in the HTTP request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// The whole event as JSON (`content-type: application/cloudevents+json`).
    #[default]
    Structured,
    /// The event's `data` as the body, its attributes as percent-encoded `ce-` headers.
    Binary,
}

/// A list of durations written the humantime way (`["5s", "5m"]`).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// POST each event to an HTTP endpoint, signed per Standard Webhooks.
///
/// `Debug` hides the values of `headers`: they often carry credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Sink name; keys its cursor. Each endpoint is its own sink, so one slow endpoint never
    /// delays another.
    pub name: String,
    /// Endpoint URL (`http` or `https`). Redirects are not followed. User info
    /// (`https://user:pass@host/...`) is sent as `authorization: Basic` unless an `Authorization`
    /// header is configured. A proxy named by `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (minus
    /// `NO_PROXY`) for this URL is used.
    pub url: String,
    /// File holding `whsec_...` secrets, one per line; several lines sign with each (rotation).
    /// Blank lines and lines starting with `#` are ignored. Wins over `secret_env`; one of the
    /// two is required.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding `whsec_...` secrets, separated by spaces or commas.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Event-type filter; `*` matches a suffix (`gov.energystar.pm.share.*`). Empty means all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Concurrent requests; 1 sends in outbox order (a retried event still arrives after the
    /// events behind it).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-request timeout: connecting, sending and waiting for the status. A 2xx that arrived
    /// in time stands even if the response body then stalls.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Extra headers sent with every request. They cannot replace `content-type` or the
    /// `webhook-*` headers. Credentials (`Authorization`, tokens, keys) belong in
    /// `header_files` or `header_envs`: `check-config` rejects them here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from files (e.g. `Authorization =
    /// "/run/secrets/espm-bridge/partner-token"`): credentials never sit in the config.
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
    /// Extra headers whose values are read from environment variables.
    #[serde(default)]
    pub header_envs: BTreeMap<String, String>,
    /// Per-event retry schedule.
    #[serde(default)]
    pub retry: WebhookRetry,
    /// Disable the endpoint after every attempt has failed for this long (as on a 410 Gone).
    /// Events stay queued; `espm-bridge webhook enable NAME` re-enables it, no restart needed.
    /// `0s` never disables it for failures.
    #[serde(default = "default_disable_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub disable_after: Duration,
    /// `structured` (the whole CloudEvent as the JSON body) or `binary` (`data` as the body, the
    /// attributes as `ce-` headers, per the CloudEvents HTTP binding).
    #[serde(default)]
    pub mode: WebhookMode,
}

impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> =
            self.headers.keys().map(|k| (k.as_str(), "***")).collect();
        f.debug_struct("WebhookSinkConfig")
            .field("name", &self.name)
            .field("url", &crate::redact_url(&self.url))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("types", &self.types)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("header_files", &self.header_files)
            .field("header_envs", &self.header_envs)
            .field("retry", &self.retry)
            .field("disable_after", &self.disable_after)
            .field("mode", &self.mode)
            .finish()
    }
}

fn default_max_in_flight() -> usize {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_redacted_debug() {
        let cfg: WebhookSinkConfig = toml::from_str(
            r#"
            name = "hook"
            url = "https://example.com/hook"
            secret_env = "HOOK_SECRETS"
            headers = { Authorization = "Bearer s3cr3t" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.max_in_flight, 1);
        assert_eq!(cfg.timeout, Duration::from_secs(15));
        assert_eq!(cfg.retry, WebhookRetry::default());
        assert_eq!(cfg.retry.schedule.len(), 7);
        assert_eq!(cfg.disable_after, Duration::from_secs(5 * 86400));
        assert_eq!(cfg.mode, WebhookMode::Structured);
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("Authorization"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");

        // User info is sent as Basic auth and a query may carry a token: neither is shown.
        let with_creds = WebhookSinkConfig {
            url: "https://hook:pa55@example.com/in?token=t0k".into(),
            ..cfg.clone()
        };
        let dbg = format!("{with_creds:?}");
        assert!(dbg.contains("https://***@example.com/in?***"), "{dbg}");
        assert!(!dbg.contains("pa55") && !dbg.contains("t0k"), "{dbg}");
        // Nor does a validation problem with such a URL.
        let bad_scheme = WebhookSinkConfig {
            url: "ftp://hook:pa55@example.com/in?token=t0k".into(),
            ..cfg.clone()
        };
        let problems = format!("{:?}", bad_scheme.validate("sinks.hook"));
        assert!(problems.contains("not an http(s) URL"), "{problems}");
        assert!(
            !problems.contains("pa55") && !problems.contains("t0k"),
            "{problems}"
        );

        let typo = toml::from_str::<WebhookSinkConfig>(
            "name = \"h\"\nurl = \"https://x\"\nretry = { max_atempts = 3 }\n",
        );
        assert!(typo.is_err());

        let custom: WebhookSinkConfig = toml::from_str(
            "name = \"h\"\nurl = \"https://x\"\nmode = \"binary\"\nretry = { schedule = [\"1s\", \"2m\"] }\n",
        )
        .unwrap();
        assert_eq!(
            custom.retry.schedule,
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(custom.mode, WebhookMode::Binary);
        let old: WebhookSinkConfig = toml::from_str(
            "name = \"h\"\nurl = \"https://x\"\nretry = { max_attempts = 3, initial_interval = \"1s\" }\n",
        )
        .unwrap();
        assert_eq!(
            old.retry.removed_keys(),
            ["max_attempts", "initial_interval"]
        );
    }
}
