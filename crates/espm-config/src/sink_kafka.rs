//! Kafka sink configuration. Owned by the Kafka sink: extend here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CloudEvents Kafka binding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KafkaMode {
    /// Attributes in `ce_*` headers, `data` as the JSON value.
    #[default]
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

/// Publish events to Kafka with an idempotent producer (`acks=all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    /// Topic template over event attributes, e.g. `espm.{type}` or a fixed `espm-events`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Record key template. The default, `{partitionkey}`, is the PM account id of the customer
    /// the event is about (per event type: see `schemas/README.md`), so one customer's events
    /// share a partition and stay in order; an event about no customer gets no key.
    #[serde(default = "default_key")]
    pub key: String,
    /// Create each topic with the admin client the first time an event renders it (a fixed topic
    /// is created at start-up). An existing topic is left as it is.
    #[serde(default)]
    pub create_topics: bool,
    /// Partition count of topics created by `create_topics`.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics created by `create_topics`; `-1` uses the broker's
    /// `default.replication.factor`.
    #[serde(default = "default_topic_replication_factor")]
    pub topic_replication_factor: i32,
    /// `binary` (default) or `structured`.
    #[serde(default)]
    pub mode: KafkaMode,
    /// librdkafka properties passed through as-is (TLS, SASL, compression, ...). They win over
    /// the sink's defaults (`message.timeout.ms=30000`), except `enable.idempotence=true` and
    /// `acks=all`, which are always forced, and `bootstrap.servers`, which comes from `brokers`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files (e.g. `sasl.password`).
    #[serde(default)]
    pub secret_files: BTreeMap<String, PathBuf>,
    /// librdkafka properties whose values are read from environment variables.
    #[serde(default)]
    pub secret_envs: BTreeMap<String, String>,
}

fn default_topic() -> String {
    "espm.{type}".to_string()
}
fn default_key() -> String {
    "{partitionkey}".to_string()
}
fn default_topic_partitions() -> i32 {
    3
}
fn default_topic_replication_factor() -> i32 {
    -1
}

/// Longest Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

/// Whether `topic` is a legal Kafka topic name; the reason when not. One rule for `check-config`
/// (static topics) and the sink (every rendered topic).
pub fn kafka_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("empty (check the topic template's placeholders)");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err("longer than 249 characters");
    }
    if topic == "." || topic == ".." {
        return Err("`.` and `..` are not allowed");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}
