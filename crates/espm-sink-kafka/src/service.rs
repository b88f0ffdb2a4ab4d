//! Producer I/O: the idempotent producer (rebuilt after a fatal error), topic creation and
//! the pipelined send of one batch.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use espm_sink::Outcome;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::request_builder::{BuildError, KafkaRequest};

/// How long topic creation may take before the events of that topic are retried.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause when the local queue is full and none of our own sends is left to wait for.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);
/// Give up enqueueing one record after this many full-queue pauses (about a minute).
const QUEUE_FULL_MAX_PAUSES: u32 = 1200;

/// Broker or client error codes that will not go away by retrying the same record.
const PERMANENT: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::InvalidTopic,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::UnsupportedForMessageFormat,
];

/// Routes librdkafka's log lines and client errors to `tracing`, tagged with the sink name.
#[derive(Clone)]
pub(crate) struct KafkaContext {
    sink: Arc<str>,
    /// Set when librdkafka reports that every broker connection is down.
    lost_brokers: Arc<AtomicBool>,
}

impl KafkaContext {
    fn new(sink: &Arc<str>) -> Self {
        Self {
            sink: sink.clone(),
            lost_brokers: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let sink = &*self.sink;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", sink, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", sink, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", sink, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", sink, facility = fac, "{msg}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lost_brokers.store(true, Ordering::Relaxed);
        }
        // Broker-down errors are routine during an outage; deliveries report them as Retry.
        tracing::warn!(target: "librdkafka", sink = &*self.sink, %error, "{reason}");
    }
}

/// One producer and the flag its context sets.
struct Handle {
    producer: FutureProducer<KafkaContext>,
    lost_brokers: Arc<AtomicBool>,
}

/// Delivery errors after which the producer's idempotence state may be stale: a broker that
/// restarted without its state answers every produce request with an unknown producer id, and
/// librdkafka keeps bumping the epoch locally until the messages time out.
const STALE: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageTimedOut,
    RDKafkaErrorCode::UnknownProducerId,
    RDKafkaErrorCode::OutOfOrderSequenceNumber,
    RDKafkaErrorCode::InvalidProducerEpoch,
];
/// Timeout of the reachability probe that decides whether a producer is stale.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Topic creation settings (`create_topics`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicSpec {
    pub create: bool,
    pub partitions: i32,
    pub replication_factor: i32,
}

/// The Kafka side of the sink.
pub(crate) struct KafkaService {
    sink: Arc<str>,
    producer_config: ClientConfig,
    producer: RwLock<Arc<Handle>>,
    admin: AdminClient<KafkaContext>,
    topics: TopicSpec,
    /// Topics known to exist; forgotten after a delivery failure (the broker may have restarted
    /// empty).
    created: Mutex<HashSet<String>>,
}

impl KafkaService {
    /// Build the producer and the admin client. Errors are librdkafka configuration errors.
    pub(crate) fn new(
        sink: &str,
        producer_config: ClientConfig,
        admin_config: ClientConfig,
        topics: TopicSpec,
    ) -> Result<Self, KafkaError> {
        let sink: Arc<str> = Arc::from(sink);
        let producer = new_producer(&sink, &producer_config)?;
        let admin = admin_config
            .create_with_context::<_, AdminClient<KafkaContext>>(KafkaContext::new(&sink))?;
        Ok(Self {
            sink,
            producer_config,
            producer: RwLock::new(Arc::new(producer)),
            admin,
            topics,
            created: Mutex::new(HashSet::new()),
        })
    }

    fn producer(&self) -> Arc<Handle> {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn forget_topics(&self) {
        match self.created.lock() {
            Ok(mut c) => c.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// Replace the producer with a fresh one (new producer id, empty queues), so the sink
    /// recovers without a process restart. Records still queued in the old producer are purged
    /// and reported as failed (the driver retries them).
    async fn rebuild(&self, current: Arc<Handle>, why: &str) -> bool {
        tracing::warn!(
            sink = &*self.sink,
            reason = why,
            "rebuilding the kafka producer"
        );
        let fresh = match new_producer(&self.sink, &self.producer_config) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // The same configuration built a producer before, so this is unexpected.
                tracing::error!(sink = &*self.sink, error = %redact(&e), "cannot rebuild the kafka producer");
                return false;
            }
        };
        let old = {
            let mut guard = match self.producer.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !Arc::ptr_eq(&guard, &current) {
                // Someone else rebuilt it meanwhile.
                return true;
            }
            std::mem::replace(&mut *guard, fresh)
        };
        self.forget_topics();
        drop(current);
        // Dropping a producer purges, flushes and joins its poll thread: keep that off the
        // runtime. Other holders of the Arc (a concurrent batch) drop it later.
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        true
    }

    /// Rebuild the producer when librdkafka declared it fatally broken (an idempotent producer
    /// that can no longer guarantee ordering), or when the cluster answers although every
    /// broker was down meanwhile or deliveries just failed (`stale`): the brokers may have lost
    /// the producer id, which librdkafka does not recover from on its own. Returns whether it
    /// was rebuilt.
    pub(crate) async fn recover(&self, stale: bool) -> bool {
        let current = self.producer();
        if let Some((code, reason)) = current.producer.client().fatal_error() {
            let why = format!("fatal producer error {code:?}: {reason}");
            return self.rebuild(current, &why).await;
        }
        let lost = current.lost_brokers.load(Ordering::Relaxed);
        if (lost || stale) && self.fetch_metadata(PROBE_TIMEOUT).await.is_ok() {
            let why = if lost {
                "the cluster is reachable again after all brokers were down"
            } else {
                "deliveries failed although the cluster is reachable"
            };
            return self.rebuild(current, why).await;
        }
        false
    }

    /// Fetch cluster metadata (reachability check) within `timeout`.
    pub(crate) async fn fetch_metadata(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer();
        let res = tokio::task::spawn_blocking(move || {
            producer
                .producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
        })
        .await;
        match res {
            Ok(Ok(0)) => Err("metadata lists no brokers".to_string()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("metadata task failed: {e}")),
        }
    }

    /// Create the topics not known to exist yet (when `create_topics` is on). Returns the topics
    /// that could not be created, with the reason.
    pub(crate) async fn ensure_topics<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, String> {
        let mut failed = HashMap::new();
        if !self.topics.create {
            return failed;
        }
        let missing: BTreeSet<&str> = {
            let created = match self.created.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            topics
                .into_iter()
                .filter(|t| !created.contains(*t))
                .collect()
        };
        if missing.is_empty() {
            return failed;
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic {
                name: t,
                num_partitions: self.topics.partitions,
                replication: TopicReplication::Fixed(self.topics.replication_factor),
                config: Vec::new(),
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        let res = tokio::time::timeout(
            ADMIN_TIMEOUT + Duration::from_secs(5),
            self.admin.create_topics(new.iter(), &opts),
        )
        .await;
        let results = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let reason = format!("cannot create topics: {e}");
                return missing
                    .into_iter()
                    .map(|t| (t.to_string(), reason.clone()))
                    .collect();
            }
            Err(_) => {
                let reason = format!("topic creation timed out after {ADMIN_TIMEOUT:?}");
                return missing
                    .into_iter()
                    .map(|t| (t.to_string(), reason.clone()))
                    .collect();
            }
        };
        let mut created = match self.created.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        for r in results {
            match r {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(sink = &*self.sink, topic = %name, "kafka topic ready");
                    created.insert(name);
                }
                Err((name, code)) => {
                    failed.insert(name.clone(), format!("cannot create topic {name}: {code}"));
                }
            }
        }
        failed
    }

    /// Enqueue every record in order and return a future of their outcomes (one per input, in
    /// order). The acknowledgements arrive on librdkafka's own thread whether or not the future
    /// is polled, so several batches can be in flight.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        reqs: &[Result<KafkaRequest, BuildError>],
    ) -> impl std::future::Future<Output = Vec<Outcome>> + Send + 'static {
        self.recover(false).await;
        let topics = self
            .ensure_topics(
                reqs.iter()
                    .filter_map(|r| r.as_ref().ok())
                    .map(|r| r.topic.as_str()),
            )
            .await;
        let producer = self.producer();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; reqs.len()];
        let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
        let mut stale = false;

        for (i, req) in reqs.iter().enumerate() {
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    outcomes[i] = Some(Outcome::DeadLetter {
                        reason: e.to_string(),
                        attempts: 0,
                    });
                    continue;
                }
            };
            if let Some(reason) = topics.get(&req.topic) {
                outcomes[i] = Some(not_sent(reason.clone()));
                continue;
            }
            let mut record = to_record(req);
            let mut pauses = 0u32;
            loop {
                match producer.producer.send_result(record) {
                    Ok(fut) => {
                        pending.push_back((i, fut));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        // Make room by waiting for our oldest send; librdkafka drains the queue.
                        if let Some((j, fut)) = pending.pop_front() {
                            outcomes[j] = Some(await_delivery(fut, &mut stale).await);
                        } else if pauses < QUEUE_FULL_MAX_PAUSES {
                            pauses += 1;
                            tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                        } else {
                            outcomes[i] = Some(not_sent("local producer queue stayed full".into()));
                            break;
                        }
                    }
                    Err((e, _)) => {
                        outcomes[i] = Some(classify(&e));
                        break;
                    }
                }
            }
        }

        let this = self.clone();
        async move {
            for (j, fut) in pending {
                outcomes[j] = Some(await_delivery(fut, &mut stale).await);
            }
            let outcomes: Vec<Outcome> = outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| retry("no delivery report".into())))
                .collect();
            if outcomes.iter().any(|o| matches!(o, Outcome::Retry { .. })) {
                // The broker may have restarted empty: re-create topics on the next batch.
                this.forget_topics();
                drop(producer);
                this.recover(stale).await;
            }
            outcomes
        }
    }

    /// Wait for queued records to be acknowledged, at most `grace`.
    pub(crate) async fn flush(&self, grace: Duration) {
        let producer = self.producer();
        let sink = self.sink.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = producer.producer.flush(grace) {
                tracing::warn!(sink = &*sink, error = %e, "kafka flush did not complete");
            }
        })
        .await;
    }
}

fn to_record(req: &KafkaRequest) -> FutureRecord<'_, str, [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(req.headers.len());
    for (k, v) in &req.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut rec = FutureRecord::to(&req.topic)
        .payload(req.payload.as_slice())
        .headers(headers);
    if let Some(k) = &req.key {
        rec = rec.key(k.as_str());
    }
    rec
}

fn new_producer(sink: &Arc<str>, config: &ClientConfig) -> Result<Handle, KafkaError> {
    let ctx = KafkaContext::new(sink);
    let lost_brokers = ctx.lost_brokers.clone();
    let producer = config.create_with_context::<_, FutureProducer<KafkaContext>>(ctx)?;
    Ok(Handle {
        producer,
        lost_brokers,
    })
}

async fn await_delivery(fut: DeliveryFuture, stale: &mut bool) -> Outcome {
    match fut.await {
        Ok(Ok(_)) => Outcome::Delivered,
        Ok(Err((e, _))) => {
            if e.rdkafka_error_code().is_some_and(|c| STALE.contains(&c)) {
                *stale = true;
            }
            classify(&e)
        }
        Err(_) => retry("the producer was dropped before the delivery report".into()),
    }
}

fn retry(reason: String) -> Outcome {
    Outcome::Retry {
        reason,
        retry_after: None,
        attempts: 1,
    }
}

/// Kept for a later batch without having been handed to the broker.
fn not_sent(reason: String) -> Outcome {
    Outcome::Retry {
        reason,
        retry_after: None,
        attempts: 0,
    }
}

/// Permanent rejections of the record itself dead-letter; everything else (timeouts, broker
/// down, unknown topic, fatal producer state) is retried.
pub(crate) fn classify(e: &KafkaError) -> Outcome {
    match e.rdkafka_error_code() {
        Some(code) if PERMANENT.contains(&code) => Outcome::DeadLetter {
            reason: format!("kafka rejected the record: {e}"),
            attempts: 1,
        },
        _ => retry(format!("kafka delivery failed: {e}")),
    }
}

/// A low-cardinality label for `espm_bridge_sink_attempt_failures_total{reason}`.
pub(crate) fn reason_label(o: &Outcome) -> Option<&'static str> {
    match o {
        Outcome::Delivered => None,
        Outcome::Retry { .. } => Some("unavailable"),
        Outcome::DeadLetter { .. } => Some("rejected"),
        Outcome::Disabled { .. } => Some("disabled"),
    }
}

/// An error's text without a configuration value (which may be a secret).
pub(crate) fn redact(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => {
            format!("invalid librdkafka property {key}: {desc}")
        }
        other => other.to_string(),
    }
}
