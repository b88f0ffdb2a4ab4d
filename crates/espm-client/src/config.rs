//! Client configuration: where PM is, who we are, how long to wait and how to retry.

use std::fmt;
use std::time::Duration;

use backoff::ExponentialBackoff;

/// The live PM web services.
pub const LIVE_BASE_URL: &str = "https://portfoliomanager.energystar.gov/ws";
/// PM's test environment.
pub const TEST_BASE_URL: &str = "https://portfoliomanager.energystar.gov/wstest";

/// The provider's PM password. `Debug` and `Display` print `***` so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wrap a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The password itself, for the Basic-auth header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// How failed calls are retried (429, 500, 502, 503, 504, timeouts, connection errors).
///
/// Waits grow exponentially from `initial_interval` to `max_interval` with ±50 % jitter; a larger
/// `Retry-After` from PM wins. A call gives up after `max_retries` retries, or when the next wait would
/// take it past `max_elapsed` since its first attempt (the returned error then still carries
/// `retry_after`, so the caller can schedule the next try).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// The first wait.
    pub initial_interval: Duration,
    /// The longest computed wait (a `Retry-After` may be longer).
    pub max_interval: Duration,
    /// Total time budget for one call including its waits.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Never retry: every failure is returned at once.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The jittered exponential interval generator for one call.
    pub(crate) fn backoff(&self) -> ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_interval)
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            .with_max_interval(self.max_interval)
            // The elapsed budget is enforced by the client itself (it also covers Retry-After waits).
            .with_max_elapsed_time(None)
            .build()
    }
}

/// Everything [`crate::PmClient::new`] needs. `Debug` shows the password as `***`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URI without a trailing slash: [`LIVE_BASE_URL`], [`TEST_BASE_URL`] or a simulator's
    /// `http://127.0.0.1:PORT/ws`.
    pub base_url: String,
    /// The provider's PM username.
    pub username: String,
    /// The provider's PM password.
    pub password: Password,
    /// Timeout of one HTTP attempt (connect + request + whole body).
    pub timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Retry behaviour.
    pub retry: RetryPolicy,
}

/// The default `User-Agent`.
pub const DEFAULT_USER_AGENT: &str = concat!("espm-client/", env!("CARGO_PKG_VERSION"));

impl ClientConfig {
    /// A configuration with default timeout (60 s), user agent and retry policy.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<Password>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            username: username.into(),
            password: password.into(),
            timeout: Duration::from_secs(60),
            user_agent: DEFAULT_USER_AGENT.to_string(),
            retry: RetryPolicy::default(),
        }
    }
}
