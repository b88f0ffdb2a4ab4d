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

/// POST each event to an HTTP endpoint, signed per Standard Webhooks.
///
/// `Debug` hides the values of `headers`: they often carry credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Sink name; keys its cursor. Each endpoint is its own sink, so one slow endpoint never
    /// delays another.
    pub name: String,
    /// Endpoint URL (`http` or `https`). Redirects are not followed.
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
    /// Concurrent requests; 1 keeps per-endpoint order.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-request timeout.
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
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> =
            self.headers.keys().map(|k| (k.as_str(), "***")).collect();
        f.debug_struct("WebhookSinkConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("types", &self.types)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("header_files", &self.header_files)
            .field("header_envs", &self.header_envs)
            .field("retry", &self.retry)
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
        assert_eq!(cfg.retry, RetryPolicy::default());
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("Authorization"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");

        let typo = toml::from_str::<WebhookSinkConfig>(
            "name = \"h\"\nurl = \"https://x\"\nretry = { max_atempts = 3 }\n",
        );
        assert!(typo.is_err());
    }
}
