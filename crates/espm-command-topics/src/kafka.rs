//! [`KafkaCommandConsumer`]: a consumer group on the command topics; an offset is stored and
//! committed only after the message's result is journalled.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use espm_command::{Commander, Door};
use espm_config::KafkaCommandTopicConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use crate::handle::{Handled, Handler};
use crate::parse::{parse, Binding};
use crate::{config_error, CommandTopicError};

/// How long topic creation may take at start-up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a consumer error before reading on.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Routes librdkafka's logs and commit results to `tracing`, tagged with the entry's name.
struct Ctx {
    name: Arc<str>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let topic = &*self.name;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", topic, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", topic, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", topic, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", topic, facility = fac, "{msg}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", topic = &*self.name, %error, "{reason}");
    }
}

impl ConsumerContext for Ctx {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // The message is read again after a restart or rebalance; its id makes that a no-op.
            Err(e) => {
                tracing::warn!(topic = &*self.name, error = %e, "kafka offset commit failed; journalled commands may be read again (each runs once)")
            }
        }
    }
}

/// Consumes one `type = "kafka"` command topic entry.
pub struct KafkaCommandConsumer {
    name: String,
    topics: Vec<String>,
    account: Option<String>,
    /// Settings shared by the consumer and the admin client (brokers, TLS, SASL).
    common: ClientConfig,
    /// The consumer's own settings on top of `common`.
    consumer: ClientConfig,
    /// `(partitions, replication factor)` when `create_topics` is on.
    create: Option<(i32, i32)>,
}

impl fmt::Debug for KafkaCommandConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client configuration may hold secrets.
        f.debug_struct("KafkaCommandConsumer")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl KafkaCommandConsumer {
    /// Check the entry and read its secrets. No network I/O.
    ///
    /// Client properties: `properties` and the secrets over the defaults
    /// (`auto.offset.reset=earliest`); `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit=false` and `enable.auto.offset.store=false` always win.
    pub fn new(cfg: &KafkaCommandTopicConfig) -> Result<Self, CommandTopicError> {
        let problems = cfg.validate(&format!("command_topics.{}", cfg.name));
        if !problems.is_empty() {
            return Err(config_error(&cfg.name, problems));
        }
        let err = |message: String| CommandTopicError::Config {
            name: cfg.name.clone(),
            message,
        };
        let mut common = ClientConfig::new();
        for (k, v) in &cfg.properties {
            common.set(k, v);
        }
        let secrets = espm_config::read_secret_map(&cfg.secret_files, &cfg.secret_envs)
            .map_err(|(k, e)| err(format!("property {k}: {e}")))?;
        for (k, s) in &secrets {
            common.set(k, s.expose());
        }
        common.set("bootstrap.servers", &cfg.brokers);
        if common.get("client.id").is_none() {
            common.set("client.id", format!("espm-bridge-{}", cfg.name));
        }
        let mut consumer = common.clone();
        if consumer.get("auto.offset.reset").is_none() {
            consumer.set("auto.offset.reset", "earliest");
        }
        consumer
            .set("group.id", cfg.effective_group_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        // Consumer-only properties would make the admin client warn.
        let admin_only: Vec<String> = ["auto.offset.reset", "group.id", "enable.auto.commit"]
            .into_iter()
            .map(String::from)
            .collect();
        for k in &admin_only {
            common.remove(k);
        }
        Ok(Self {
            name: cfg.name.clone(),
            topics: cfg.topics.clone(),
            account: cfg.account.clone(),
            common,
            consumer,
            create: cfg
                .create_topics
                .then_some((cfg.topic_partitions, cfg.topic_replication_factor)),
        })
    }

    /// Consume until `stop` is cancelled. A message is committed only after its result is
    /// journalled; one whose result could not be journalled when `stop` came is left for the
    /// next run. Returns an error only when librdkafka rejects the configuration.
    pub async fn run(
        self,
        commander: Commander,
        stop: CancellationToken,
    ) -> Result<(), CommandTopicError> {
        let ctx = || Ctx {
            name: Arc::from(self.name.as_str()),
        };
        let err = |e: KafkaError| CommandTopicError::Config {
            name: self.name.clone(),
            message: redact(&e),
        };
        if let Some((partitions, replication)) = self.create {
            let admin: AdminClient<Ctx> = self.common.create_with_context(ctx()).map_err(err)?;
            self.create_topics(&admin, partitions, replication, &stop)
                .await;
        }
        let consumer: StreamConsumer<Ctx> =
            self.consumer.create_with_context(ctx()).map_err(err)?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(err)?;
        tracing::info!(topic = %self.name, topics = ?self.topics, "reading commands from kafka");
        let handler = Handler {
            commander,
            door: Door::Kafka,
            name: self.name.clone(),
            default_account: self.account.clone(),
        };
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                m = consumer.recv() => m,
            };
            let msg = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %self.name, error = %e, "kafka consumer error");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            let headers: Vec<(String, Vec<u8>)> = msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let parsed = parse(Binding::Kafka, &headers, msg.payload().unwrap_or_default());
            let position = format!("kafka/{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
            let Some(handled) = handler.journal(&parsed, &position, &stop).await else {
                break;
            };
            if let Handled::Submitted(v) | Handled::Rejected(v) = &handled {
                tracing::debug!(topic = %self.name, position, command = %v.id, state = %v.state, "command journalled; committing");
            }
            // Only now: the result is in the journal.
            if let Err(e) = consumer.store_offset_from_message(&msg) {
                // E.g. the partition was revoked meanwhile: its next owner reads the message
                // again, and the command's id makes that a no-op.
                tracing::warn!(topic = %self.name, position, error = %e, "cannot store the offset of a journalled command");
            } else if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                tracing::warn!(topic = %self.name, position, error = %e, "cannot commit the offset of a journalled command");
            }
        }
        // A last synchronous commit, then leave the group, off the runtime (both block).
        let name = self.name.clone();
        let _ = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "final kafka offset commit failed")
                }
            }
            drop(consumer);
        })
        .await;
        tracing::info!(topic = %self.name, "stopped reading commands from kafka");
        Ok(())
    }

    async fn create_topics(
        &self,
        admin: &AdminClient<Ctx>,
        partitions: i32,
        replication: i32,
        stop: &CancellationToken,
    ) {
        let new: Vec<NewTopic<'_>> = self
            .topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(ADMIN_TIMEOUT + Duration::from_secs(5), admin.create_topics(new.iter(), &opts)) => r,
        };
        match res {
            Ok(Ok(results)) => {
                for r in results {
                    match r {
                        Ok(t) => {
                            tracing::info!(topic = %self.name, kafka_topic = %t, "created command topic")
                        }
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((t, code)) => {
                            tracing::warn!(topic = %self.name, kafka_topic = %t, error = %code, "cannot create command topic")
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.name, error = %redact(&e), "cannot create command topics")
            }
            Err(_) => {
                tracing::warn!(topic = %self.name, "creating command topics timed out")
            }
        }
    }
}

/// A librdkafka error without property values (they may be secrets).
fn redact(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => {
            format!("invalid librdkafka property {key}: {desc}")
        }
        other => other.to_string(),
    }
}
