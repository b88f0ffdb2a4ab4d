//! espm-bridge configuration types: the single source for the TOML file, its JSON Schema, the Helm
//! chart's `values.schema.json` and the configuration reference in the docs.
//!
//! Every struct denies unknown fields, so a typo is an error instead of a silent default. Every
//! `///` comment on a field becomes reference documentation.

mod bytesize;
mod chart;
mod command_topics;
mod demo;
mod generate;
mod load;
mod policy;
mod secret;
mod sink_arcadia;
mod sink_kafka;
mod sink_nats;
mod sink_webhook;
mod validate;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

pub use bytesize::ByteSize;
pub use chart::{
    HelmValues, ImageValues, PersistenceValues, ServiceAccountValues, ServiceMonitorValues,
    ServiceValues,
};
pub use command_topics::{CommandTopicConfig, KafkaCommandTopicConfig, NatsCommandTopicConfig};
pub use demo::{DEMO_PASSWORD_ENV, DEMO_USERNAME};
pub use generate::{config_json_schema, helm_values_schema, reference_markdown, to_pretty_json};
pub use load::{
    from_toml_str, from_toml_str_with_env, load, load_and_validate, load_with_env, ConfigError,
    ConfigProblem, ENV_PREFIX,
};
pub use policy::{DecisionWebhookConfig, FieldCondition, PolicyConfig, PolicyDecision, PolicyRule};
pub use secret::{read_secret_map, redact_url, Secret, SecretError, SecretSource};
pub use sink_arcadia::{ArcadiaSinkConfig, PROPERTY_ID_PLACEHOLDER};
pub use sink_kafka::{kafka_topic_name, KafkaMode, KafkaSinkConfig};
pub use sink_nats::NatsSinkConfig;
pub use sink_webhook::{
    default_schedule, RetryPolicy, WebhookMode, WebhookRetry, WebhookSinkConfig,
};
pub use validate::resolve_password;

/// JSON Schema stand-in for `humantime_serde` durations (`"60s"`, `"5m"`, `"1h 30m"`, `"30d"`):
/// use `#[schemars(with = "crate::DurationString")]` on such fields so the schema, the Helm values
/// schema and the reference all say "duration" instead of a bare string.
pub struct DurationString;

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit, e.g. `60s`, `5m`, `1h 30m`, `30d` (units ms, s, m, h, d, w).",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Where the durable journal lives.
    #[serde(default)]
    pub journal: JournalConfig,
    /// The metrics and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// One entry per PM provider account to poll.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Where events go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// The HTTP command API (answer, disconnect, unshare, create customers through the bridge).
    /// Off unless this table is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
    /// Where commands for PM come from: Kafka topics or JetStream streams carrying command
    /// CloudEvents (`gov.energystar.pm.command.*`). Empty: no command topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_topics: Vec<CommandTopicConfig>,
}

/// The command API: its own listener, bearer-token auth, OpenAPI at `/api/v1/openapi.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address, e.g. `0.0.0.0:8080`. Must differ from `metrics.listen`.
    pub listen: String,
    /// File of accepted bearer tokens, one per line (several during a rotation; `#` comments and
    /// blank lines skipped). A line `NAME=TOKEN` names its caller, which is journalled with each
    /// command as its requester. Tokens are at least 16 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Name of an environment variable holding the token list, in the same format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl ApiConfig {
    /// Where the token list comes from; `None` when neither is set.
    pub fn token_source(&self) -> Option<SecretSource> {
        SecretSource::from_options(self.token_file.as_ref(), self.token_env.as_ref())
    }
}

/// The SQLite journal: raw PM bodies, notifications, the outbox and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// SQLite file. Put it on a persistent volume: it holds the only copy of drained notifications.
    #[serde(default = "default_journal_path")]
    pub path: PathBuf,
    /// Delivered events and parsed raw bodies older than this may be compacted. Undelivered
    /// events and quarantined bodies are never dropped.
    #[serde(default = "default_retention", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub retention: Duration,
    /// Free space the journal's filesystem must keep before the bridge sends a destructive
    /// `clear=true`, beyond room for the body it expects (a few times the last one). Below it,
    /// nothing is cleared and `/readyz` reports the journal.
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
    /// A fallback directory, ideally on another volume, for drained bodies the journal refuses
    /// (disk full, locked). They are first spooled next to the journal (`<path>.spool/`), then
    /// here, and ingested into the journal as soon as it takes writes, at the latest at the next
    /// start. A run that stops with spooled bodies exits with code 75.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: default_journal_path(),
            retention: default_retention(),
            min_free: default_min_free(),
            spool_dir: None,
        }
    }
}

fn default_min_free() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_journal_path() -> PathBuf {
    PathBuf::from("/var/lib/espm-bridge/journal.db")
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}

/// The HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address, e.g. `0.0.0.0:9464`.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}
fn default_metrics_listen() -> String {
    "0.0.0.0:9464".to_string()
}

/// PM environment an account lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `https://portfoliomanager.energystar.gov/ws`
    Live,
    /// `https://portfoliomanager.energystar.gov/wstest`
    Test,
    /// The built-in simulator (`espm-bridge sim`).
    Sim,
}

impl Environment {
    /// The lowercase name used in event sources, subjects and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
            Environment::Sim => "sim",
        }
    }
}

/// How notifications are drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DrainMode {
    /// `GET /notification/list?clear=true`, journalled before parsing. One call per drain; a
    /// response lost in transit after PM marked it read is lost.
    Clear,
    /// `clear=false` first (journalled), then `clear=true` (journalled, deduplicated). Two calls
    /// per drain; only notifications that arrive between the two calls are exposed to a lost
    /// response.
    PeekThenClear,
}

/// One PM provider account to poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Short stable name; appears in event `source`, subjects and metric labels, and keys the
    /// journal namespace. Do not rename an account that has a journal.
    pub name: String,
    /// `live`, `test` or `sim`.
    pub environment: Environment,
    /// PM web-services base URL. Defaults from `environment` for live and test.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The provider's PM username.
    pub username: String,
    /// Path of a file holding the PM password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the PM password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `clear` or `peek-then-clear`.
    #[serde(default = "default_drain_mode")]
    pub drain_mode: DrainMode,
    /// Idle interval between notification polls. A non-empty drain re-polls at once.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub poll_interval: Duration,
    /// Interval between walks of the three pending lists.
    #[serde(default = "default_pending_interval", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub pending_interval: Duration,
    /// Per-request timeout for PM calls.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub request_timeout: Duration,
    /// Property and meter share events carry their customer's username and organisation from
    /// PM's `GET /customer/{id}`; answers are kept in the journal this long, then looked up again
    /// when an event next needs them.
    #[serde(default = "default_customer_cache_ttl", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub customer_cache_ttl: Duration,
    /// The longest one pending-list walk waits for its customer lookups, all together, and one
    /// notification body for the custom field re-reads of its `share.updated` events. Events
    /// whose lookup failed or did not finish by then are emitted at once without `customer`
    /// (or `customFields`), flagged `enrichment: "unavailable"`.
    #[serde(default = "default_customer_lookup_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub customer_lookup_timeout: Duration,
    /// The auto-accept policy: rules that accept, reject or ask a decision webhook about pending
    /// connection and share requests. Off unless this table is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
}

fn default_drain_mode() -> DrainMode {
    DrainMode::PeekThenClear
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_pending_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_customer_cache_ttl() -> Duration {
    Duration::from_secs(86_400)
}
pub(crate) fn default_customer_lookup_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One destination for events, selected by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// Kafka topics through librdkafka.
    Kafka(KafkaSinkConfig),
    /// NATS subjects, JetStream by default.
    Nats(NatsSinkConfig),
    /// HTTP webhooks signed per Standard Webhooks.
    Webhook(WebhookSinkConfig),
    /// JSON lines on stdout.
    Console(ConsoleSinkConfig),
    /// JSON lines appended to a file, fsynced per batch.
    File(FileSinkConfig),
    /// Arcadia (Genability) Switch accounts mirroring PM property shares.
    Arcadia(ArcadiaSinkConfig),
}

impl SinkConfig {
    /// The configured sink name (it keys the sink's delivery cursor).
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Kafka(c) => &c.name,
            SinkConfig::Nats(c) => &c.name,
            SinkConfig::Webhook(c) => &c.name,
            SinkConfig::Console(c) => &c.name,
            SinkConfig::File(c) => &c.name,
            SinkConfig::Arcadia(c) => &c.name,
        }
    }
}

/// Print events as JSON lines on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
}

/// Append events as JSON lines to a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
    /// File to append to; created if missing.
    pub path: PathBuf,
}
