//! [`KafkaSink`]: the [`Sink`] implementation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use espm_config::KafkaSinkConfig;
use espm_events::Template;
use espm_sink::{Acks, CloudEvent, Envelope, Outcome, Sink, SinkError};
use rdkafka::config::ClientConfig;

use crate::request_builder::RequestBuilder;
use crate::service::{reason_label, redact, KafkaService, TopicSpec};

/// How long `start()` waits for cluster metadata.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `health()` waits for cluster metadata.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `message.timeout.ms`: a delivery failure reaches the driver as `Retry` after this long
/// (librdkafka's own default is five minutes). Overridable through `properties`.
const DEFAULT_MESSAGE_TIMEOUT_MS: &str = "30000";
/// Batches in flight: librdkafka batches and pipelines records across them, so the broker is
/// kept busy while the driver settles the oldest batch in the journal. 2, for memory: with the
/// drain's stages overlapping, 4 delivered a 100,000 burst 6% faster, but a 1,000,000 burst
/// peaked at 69.6 MiB (8: 78.2 MiB) against 59.9 MiB, over issue 9's 64 MiB.
const PIPELINE_DEPTH: usize = 2;

/// Publishes events to Kafka with an idempotent producer (`acks=all`), using the CloudEvents
/// Kafka binding (binary or structured mode).
pub struct KafkaSink {
    name: String,
    builder: RequestBuilder,
    service: Arc<KafkaService>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client configuration may hold secrets: show only the name and templates.
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Parse the templates, read secret properties, and build the producer and admin client.
    /// Does no network I/O: librdkafka connects in the background; see [`Sink::start`].
    ///
    /// Client properties, in order of precedence: `bootstrap.servers` from `brokers`,
    /// `enable.idempotence=true` and `acks=all` (always forced: ordering and no duplicates
    /// depend on them), then `secret_files` and `secret_envs`, then `properties`, then the sink's
    /// default `message.timeout.ms=30000`.
    pub fn new(cfg: &KafkaSinkConfig) -> Result<KafkaSink, SinkError> {
        SinkError::check(&cfg.name, cfg.validate(&format!("sinks.{}", cfg.name)))?;
        let config_err = |message: String| SinkError::Config {
            sink: cfg.name.clone(),
            message,
        };
        let topic = Template::parse(&cfg.topic)
            .map_err(|e| config_err(format!("topic template {:?}: {e}", cfg.topic)))?;
        let key = Template::parse(&cfg.key)
            .map_err(|e| config_err(format!("key template {:?}: {e}", cfg.key)))?;
        let builder = RequestBuilder::new(topic, key, cfg.mode);

        // Shared client settings (for the producer and the admin client).
        let mut common = ClientConfig::new();
        let mut secret_keys = BTreeSet::new();
        for (k, v) in &cfg.properties {
            common.set(k, v);
        }
        let secrets = espm_config::read_secret_map(&cfg.secret_files, &cfg.secret_envs)
            .map_err(|(k, e)| config_err(format!("property {k}: {e}")))?;
        for (k, s) in &secrets {
            common.set(k, s.expose());
            secret_keys.insert(k.clone());
        }
        common.set("bootstrap.servers", &cfg.brokers);
        if common.get("client.id").is_none() {
            common.set("client.id", format!("espm-bridge-{}", cfg.name));
        }

        let admin_config = common.clone();
        let mut producer_config = common;
        if producer_config.get("message.timeout.ms").is_none()
            && producer_config.get("delivery.timeout.ms").is_none()
        {
            producer_config.set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS);
        }
        for (k, v) in [("enable.idempotence", "true"), ("acks", "all")] {
            if let Some(user) = producer_config.get(k) {
                if user != v {
                    tracing::warn!(sink = %cfg.name, property = k, value = user, forced = v, "overriding a kafka property the sink depends on");
                }
            }
            producer_config.set(k, v);
        }
        let service = KafkaService::new(
            &cfg.name,
            producer_config,
            admin_config,
            TopicSpec {
                create: cfg.create_topics,
                partitions: cfg.topic_partitions,
                replication_factor: cfg.topic_replication_factor,
            },
        )
        .map_err(|e| config_err(redact(&e)))?;
        let service = Arc::new(service);
        Ok(KafkaSink {
            name: cfg.name.clone(),
            builder,
            service,
        })
    }

    /// The event-to-record mapping this sink uses.
    pub fn request_builder(&self) -> &RequestBuilder {
        &self.builder
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn accepts(&self, _event: &CloudEvent) -> bool {
        true
    }

    /// Check that the cluster answers a metadata request, and create a fixed topic when
    /// `create_topics` is on (templated topics are created on first use).
    async fn start(&self) -> Result<(), SinkError> {
        self.service.recover(false).await;
        self.service
            .fetch_metadata(START_TIMEOUT)
            .await
            .map_err(|message| SinkError::Unavailable {
                sink: self.name.clone(),
                message,
            })?;
        if let Some(topic) = self.builder.static_topic() {
            if let Some(message) = self.service.ensure_topics([topic]).await.remove(topic) {
                return Err(SinkError::Unavailable {
                    sink: self.name.clone(),
                    message,
                });
            }
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        self.submit(batch.to_vec()).await.await
    }

    fn pipeline_depth(&self) -> usize {
        PIPELINE_DEPTH
    }

    async fn submit(&self, batch: Vec<Envelope>) -> Acks {
        let reqs: Vec<_> = batch.iter().map(|e| self.builder.build(&e.event)).collect();
        let acks = self.service.submit(&reqs).await;
        drop(reqs);
        let sink = self.name.clone();
        Box::pin(async move {
            let outcomes = acks.await;
            for (env, o) in batch.iter().zip(&outcomes) {
                if let Some(label) = reason_label(o) {
                    metrics::counter!(
                        "espm_bridge_sink_attempt_failures_total",
                        "sink" => sink.clone(),
                        "reason" => label
                    )
                    .increment(1);
                    tracing::debug!(sink = %sink, seq = env.seq, outcome = ?o, "kafka delivery not acknowledged");
                }
            }
            outcomes
        })
    }

    async fn health(&self) -> Result<(), SinkError> {
        self.service
            .fetch_metadata(HEALTH_TIMEOUT)
            .await
            .map_err(|message| SinkError::Unavailable {
                sink: self.name.clone(),
                message,
            })
    }

    async fn close(&self, grace: Duration) {
        self.service.flush(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use espm_config::KafkaMode;
    use std::collections::BTreeMap;

    fn cfg() -> KafkaSinkConfig {
        KafkaSinkConfig {
            name: "k".into(),
            // Nothing listens here; `new` does no network I/O.
            brokers: "127.0.0.1:1".into(),
            topic: "espm.{type}".into(),
            key: "{data.accountId}".into(),
            create_topics: false,
            topic_partitions: 1,
            topic_replication_factor: -1,
            mode: KafkaMode::Binary,
            properties: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            secret_envs: BTreeMap::new(),
        }
    }

    fn config_error(c: &KafkaSinkConfig) -> String {
        match KafkaSink::new(c) {
            Err(e @ SinkError::Config { .. }) => e.to_string(),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn builds_without_a_reachable_broker() {
        let s = KafkaSink::new(&cfg()).unwrap();
        assert_eq!(s.name(), "k");
        assert_eq!(s.kind(), "kafka");
        assert_eq!(s.request_builder().topic_template().as_str(), "espm.{type}");
    }

    #[test]
    fn bad_templates_and_fixed_topics_are_config_errors() {
        let mut c = cfg();
        c.topic = "espm.{nope}".into();
        assert!(config_error(&c).contains("nope"), "{}", config_error(&c));
        let mut c = cfg();
        c.key = "{data.".into();
        assert!(config_error(&c).contains("key"), "{}", config_error(&c));
        let mut c = cfg();
        c.topic = "bad topic".into();
        assert!(config_error(&c).contains("topic"), "{}", config_error(&c));
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2-secret\n").unwrap();
        let mut c = cfg();
        // An unknown property carrying a secret value: librdkafka rejects it.
        c.secret_files
            .insert("no.such.property".into(), file.clone());
        let msg = config_error(&c);
        assert!(msg.contains("no.such.property"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");

        let mut c = cfg();
        c.secret_files
            .insert("sasl.password".into(), dir.path().join("missing"));
        let msg = config_error(&c);
        assert!(
            msg.contains("sasl.password") && msg.contains("missing"),
            "{msg}"
        );

        let mut c = cfg();
        c.secret_envs.insert(
            "sasl.password".into(),
            "ESPM_KAFKA_TEST_UNSET_VARIABLE".into(),
        );
        assert!(config_error(&c).contains("ESPM_KAFKA_TEST_UNSET_VARIABLE"));

        // A valid secret property is accepted.
        let mut c = cfg();
        c.secret_files.insert("sasl.password".into(), file);
        let s = KafkaSink::new(&c).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
