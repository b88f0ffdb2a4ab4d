//! NATS sink configuration. Owned by the NATS sink: extend here.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Publish events to NATS, through JetStream by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
    /// Server URL(s), comma-separated, e.g. `nats://nats:4222`.
    pub url: String,
    /// Subject template over event attributes.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Publish through JetStream and await PubAcks (default). `false` uses core NATS publish.
    #[serde(default = "default_true")]
    pub jetstream: bool,
    /// JetStream stream to create or verify at start-up.
    #[serde(default)]
    pub stream: Option<String>,
    /// Create the stream if missing (subjects `espm.>` unless `stream_subjects` says otherwise).
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a stream created by `create_stream`.
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    /// Username for user/password auth.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding an nkey seed.
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// Path of a `.creds` file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// CA certificate for TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Maximum unacknowledged publishes in flight.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for a JetStream PubAck (and for stream look-ups) before the publish
    /// counts as failed and is retried.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ack_timeout: Duration,
    /// How long a connection attempt may take in `start()`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Duplicate window of a stream created by `create_stream`: a retried publish with the same
    /// event id (`Nats-Msg-Id`) inside this window is stored once.
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duplicate_window: Duration,
}

fn default_subject() -> String {
    "espm.{environment}.{type}".to_string()
}
fn default_true() -> bool {
    true
}
fn default_in_flight() -> usize {
    256
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}
