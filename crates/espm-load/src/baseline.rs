//! Baselines for each sink, on the same broker or receiver in the same run as the bridge (issue
//! 9): what the destination does with the same records from a bare client, and what a naive
//! bridge (poll `clear=true`, parse, publish; no journal) achieves against the same simulator.
//! Ratios across runs would compare different machines' moods; these are side by side.
//!
//! Every leg sends the records the bridge's sink would send (its own request builder: key,
//! `ce_`/`ce-` headers, `Nats-Msg-Id`, Standard Webhooks signature, value) and is measured the
//! way the bridge is: until the same kind of reader (a Kafka consumer, a JetStream ordered
//! consumer, the loopback receiver) has every record. The reader shares the broker and the two
//! cores with the sender, as it does in the bridge's leg.
//!
//! The naive leg sends with the bridge's own clients (for webhooks, the sink's hyper client), so
//! that it differs from the bridge only by the journal; the bare leg with plain ones (for
//! webhooks, reqwest with its defaults, as issue 9 names it).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::context::Publish;
use espm_events::{notification_event, Origin};
use espm_events::{CloudEvent, Template};
use espm_model::NotificationList;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::receivers::{self, now_us, Recorder};
use crate::run::{
    create_topic, post_burst, start_sim, toml_str, unique_suffix, KAFKA_PARTITIONS, PM_PASSWORD,
    PM_USER, POLL_INTERVAL, WHSEC,
};
use crate::SinkKind;

/// Kafka delivery reports awaited at most this far behind the sends (librdkafka batches them).
const KAFKA_IN_FLIGHT: usize = 50_000;
/// JetStream PubAcks outstanding at most: the bridge's NATS sink default `max_in_flight`.
const NATS_IN_FLIGHT: usize = 256;
/// Concurrent webhook POSTs: the `max_in_flight` espm-load configures for the bridge's sink.
const WEBHOOK_IN_FLIGHT: usize = 64;
/// How long a leg's reader may take to get every record after the last acknowledgement.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where a baseline publishes: the same kind of destination as the bridge's sink in the run.
pub enum Destination {
    /// A Kafka cluster (a fresh topic is created per leg).
    Kafka { brokers: String },
    /// NATS with JetStream (a fresh stream is created per leg and deleted after).
    Nats { url: String },
    /// A loopback webhook receiver like the run's (started per leg), answering after `delay`.
    Webhook { delay: Duration },
}

impl Destination {
    /// The destination of `kind`'s run.
    pub fn of(
        kind: SinkKind,
        kafka: Option<&str>,
        nats_url: &str,
        receiver_delay: Duration,
    ) -> Option<Destination> {
        match kind {
            SinkKind::Kafka => kafka.map(|b| Destination::Kafka {
                brokers: b.to_string(),
            }),
            SinkKind::Nats => Some(Destination::Nats {
                url: nats_url.to_string(),
            }),
            SinkKind::Webhook => Some(Destination::Webhook {
                delay: receiver_delay,
            }),
            SinkKind::File => None,
        }
    }

    /// A fresh topic, stream or receiver, with a reader recording into `rec`.
    async fn open(&self, rec: &Recorder, leg: Leg) -> anyhow::Result<Publisher> {
        let sfx = unique_suffix();
        Ok(match self {
            Destination::Kafka { brokers } => {
                let topic = format!("espm-load-base-{sfx}");
                create_topic(brokers, &topic).await?;
                // The bridge sink's guarantees: idempotent, acks=all.
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("queue.buffering.max.messages", "1000000")
                    .create()
                    .context("cannot create the baseline Kafka producer")?;
                // The run's sink configuration, with its default key and binding mode.
                let cfg: espm_config::KafkaSinkConfig = toml::from_str(&format!(
                    "name = \"baseline\"\nbrokers = {}\ntopic = {}\n",
                    toml_str(brokers),
                    toml_str(&topic)
                ))
                .context("baseline Kafka sink configuration")?;
                let builder = espm_sink_kafka::RequestBuilder::new(
                    Template::parse(&cfg.topic).map_err(anyhow::Error::msg)?,
                    Template::parse(&cfg.key).map_err(anyhow::Error::msg)?,
                    cfg.mode,
                );
                let reader = tokio::spawn(receivers::consume_kafka(
                    brokers.clone(),
                    topic.clone(),
                    KAFKA_PARTITIONS,
                    rec.clone(),
                ));
                Publisher::Kafka {
                    producer,
                    topic,
                    builder,
                    reader,
                }
            }
            Destination::Nats { url } => {
                let client = async_nats::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to NATS at {url}"))?;
                let js = async_nats::jetstream::new(client);
                let stream = format!("ESPM_LOAD_BASE_{}", sfx.replace('-', "_"));
                let subject = format!("espmloadbase{}", sfx.replace('-', ""));
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![format!("{subject}.>")],
                    ..Default::default()
                })
                .await
                .context("cannot create the baseline JetStream stream")?;
                let reader = tokio::spawn(receivers::consume_nats(
                    js.clone(),
                    stream.clone(),
                    subject.clone(),
                    rec.clone(),
                ));
                Publisher::Nats {
                    js,
                    stream,
                    prefix: subject.clone(),
                    // The run's subject template.
                    subject: Template::parse(&format!("{subject}.{{environment}}.{{type}}"))
                        .map_err(anyhow::Error::msg)?,
                    reader,
                }
            }
            Destination::Webhook { delay } => {
                let up = Arc::new(AtomicBool::new(true));
                let (addr, server) = receivers::webhook_receiver(rec.clone(), up, *delay).await?;
                let cfg: espm_config::WebhookSinkConfig = toml::from_str(&format!(
                    "name = \"baseline\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"X\"\n"
                ))
                .context("baseline webhook sink configuration")?;
                let url = format!("http://{addr}/hook");
                let http = match leg {
                    Leg::Naive => WebhookClient::Bridge(Arc::new(
                        espm_sink_webhook::service::WebhookService::new(
                            url.parse().context("baseline webhook URL")?,
                            cfg.timeout,
                            WEBHOOK_IN_FLIGHT,
                        )?,
                    )),
                    Leg::Raw => WebhookClient::Reqwest(reqwest::Client::new()),
                };
                Publisher::Webhook {
                    http,
                    url,
                    server,
                    signer: espm_sink_webhook::Signer::from_secrets(&[WHSEC])
                        .map_err(|_| anyhow::anyhow!("internal: the load secret does not parse"))?,
                    mode: cfg.mode,
                }
            }
        })
    }
}

/// One record exactly as the bridge's sink builds it (its own request builder, with the
/// configuration the run gives the bridge): same key, headers and value.
#[derive(Clone)]
enum Record {
    Kafka(espm_sink_kafka::KafkaRequest),
    Nats(espm_sink_nats::NatsRequest),
    Webhook(espm_sink_webhook::request_builder::WebhookRequest),
}

impl Record {
    fn size(&self) -> usize {
        match self {
            Record::Kafka(r) => r.payload.len(),
            Record::Nats(r) => r.payload.len(),
            Record::Webhook(r) => r.body.len(),
        }
    }
}

/// An open destination, with a reader like the run's receiving what is sent to it.
enum Publisher {
    Kafka {
        producer: FutureProducer,
        topic: String,
        builder: espm_sink_kafka::RequestBuilder,
        reader: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        /// The stream's subjects are `prefix.>`.
        prefix: String,
        subject: Template,
        reader: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
    Webhook {
        http: WebhookClient,
        url: String,
        server: tokio::task::JoinHandle<()>,
        signer: espm_sink_webhook::Signer,
        mode: espm_config::WebhookMode,
    },
}

/// Which leg a publisher serves.
#[derive(Debug, Clone, Copy)]
enum Leg {
    /// The naive bridge: the bridge's own clients, only the journal left out.
    Naive,
    /// The bare client the issue names (for webhooks, a plain reqwest POST loop).
    Raw,
}

/// The HTTP client of a webhook leg.
enum WebhookClient {
    /// The bridge's webhook client, so that the naive leg differs from the bridge only by what
    /// durability costs.
    Bridge(Arc<espm_sink_webhook::service::WebhookService>),
    /// reqwest with its defaults.
    Reqwest(reqwest::Client),
}

type Ack = BoxFuture<'static, anyhow::Result<()>>;

impl Publisher {
    fn window(&self) -> usize {
        match self {
            Publisher::Kafka { .. } => KAFKA_IN_FLIGHT,
            Publisher::Nats { .. } => NATS_IN_FLIGHT,
            Publisher::Webhook { .. } => WEBHOOK_IN_FLIGHT,
        }
    }

    /// The record the bridge's sink would send for `event`.
    fn build(&self, event: &CloudEvent) -> anyhow::Result<Record> {
        Ok(match self {
            Publisher::Kafka { builder, .. } => Record::Kafka(
                builder
                    .build(event)
                    .context("baseline: the Kafka record does not build")?,
            ),
            Publisher::Nats { subject, .. } => {
                Record::Nats(espm_sink_nats::build_request(subject, event, true))
            }
            Publisher::Webhook { signer, mode, .. } => {
                let now = chrono::Utc::now().timestamp();
                Record::Webhook(espm_sink_webhook::request_builder::build(
                    event,
                    signer,
                    &reqwest::header::HeaderMap::new(),
                    now,
                    *mode,
                ))
            }
        })
    }

    /// Point records built for another destination of the same kind at this one (a JetStream
    /// subject names its stream; a Kafka record's topic is the publisher's).
    fn retarget(&self, records: &mut [Record]) {
        if let Publisher::Nats { prefix, .. } = self {
            for r in records {
                if let Record::Nats(r) = r {
                    if let Some((_, rest)) = r.subject.split_once('.') {
                        r.subject = format!("{prefix}.{rest}");
                    }
                }
            }
        }
    }

    /// Send one record; the returned future resolves at its acknowledgement.
    async fn send(&self, record: Record) -> anyhow::Result<Ack> {
        Ok(match (self, record) {
            (
                Publisher::Kafka {
                    producer, topic, ..
                },
                Record::Kafka(r),
            ) => {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in &r.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                let mut rec = FutureRecord::to(topic).payload(&r.payload).headers(headers);
                if let Some(key) = &r.key {
                    rec = rec.key(key);
                }
                let fut = producer
                    .send_result(rec)
                    .map_err(|(e, _)| anyhow::anyhow!("baseline produce failed: {e}"))?;
                Box::pin(async move {
                    match fut.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => anyhow::bail!("baseline delivery failed: {e}"),
                        Err(_) => anyhow::bail!("baseline delivery cancelled"),
                    }
                })
            }
            (Publisher::Nats { js, .. }, Record::Nats(r)) => {
                let ack = js
                    .send_publish(
                        r.subject,
                        Publish::build().payload(r.payload).headers(r.headers),
                    )
                    .await
                    .context("baseline publish failed")?;
                Box::pin(async move {
                    ack.await.context("baseline PubAck failed")?;
                    Ok(())
                })
            }
            (
                Publisher::Webhook {
                    http: WebhookClient::Reqwest(http),
                    url,
                    ..
                },
                Record::Webhook(r),
            ) => {
                let req = http.post(url).headers(r.headers).body(r.body);
                Box::pin(async move {
                    req.send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .context("baseline POST failed")?;
                    Ok(())
                })
            }
            (
                Publisher::Webhook {
                    http: WebhookClient::Bridge(service),
                    ..
                },
                Record::Webhook(r),
            ) => {
                let service = service.clone();
                Box::pin(async move {
                    match service.send(r).await {
                        espm_sink_webhook::service::Attempt::Success { .. } => Ok(()),
                        other => anyhow::bail!("baseline POST failed: {other}"),
                    }
                })
            }
            _ => anyhow::bail!("internal: a record for another destination"),
        })
    }

    async fn close(self) {
        match self {
            Publisher::Kafka { reader, .. } => reader.abort(),
            Publisher::Nats {
                js, stream, reader, ..
            } => {
                reader.abort();
                let _ = js.delete_stream(&stream).await;
            }
            Publisher::Webhook { server, .. } => server.abort(),
        }
    }
}

/// Acknowledgements awaited at most `keep` behind the sends.
async fn settle(inflight: &mut FuturesUnordered<Ack>, keep: usize) -> anyhow::Result<()> {
    while inflight.len() > keep {
        match inflight.next().await {
            Some(r) => r?,
            None => break,
        }
    }
    Ok(())
}

/// Wait until the leg's reader has `n` notifications; their last first receive (µs).
async fn received(rec: &Recorder, n: usize) -> anyhow::Result<i64> {
    let deadline = Instant::now() + READ_TIMEOUT;
    while rec.unique() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the baseline's reader got {} of {n} records in {READ_TIMEOUT:?}",
            rec.unique()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(rec.snapshot().2)
}

/// What the naive bridge leg measured and sent.
pub struct Naive {
    /// Notifications/s from the first POST to the last one read back.
    pub per_s: f64,
    /// Mean record value size.
    pub size: usize,
    /// The records it sent, for the bare client to send again.
    records: Vec<Record>,
}

/// A naive bridge: clear, parse, normalize, publish the records the sink would, acks awaited
/// pipelined; nothing journalled. Measured like the bridge: from the first POST until the
/// leg's reader has every notification.
pub async fn naive_bridge(
    dest: &Destination,
    notifications: usize,
    chunk: usize,
) -> anyhow::Result<Naive> {
    let sim = start_sim().await?;
    let rec = Recorder::default();
    let publisher = dest.open(&rec, Leg::Naive).await?;
    let window = publisher.window();
    let http = reqwest::Client::new();
    let origin = Origin {
        environment: "sim".into(),
        account: "load".into(),
    };
    let started = now_us();
    // Polled while the burst is still being created, as the bridge's leg is: the bodies each
    // leg gets then come from the same arrival process, not one body for the naive leg and a
    // first part and the rest for the bridge.
    let posting = {
        let (http, url) = (http.clone(), sim.control_url());
        tokio::spawn(async move { post_burst(&http, &url, notifications, chunk).await })
    };
    let mut inflight = FuturesUnordered::new();
    let mut records = Vec::with_capacity(notifications);
    let mut bytes = 0usize;
    while records.len() < notifications {
        let body = http
            .get(format!("{}/notification/list?clear=true", sim.base_url()))
            .basic_auth(PM_USER, Some(PM_PASSWORD))
            .header("Accept", "application/xml")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("naive bridge: GET notification/list failed")?
            .bytes()
            .await
            .context("naive bridge: reading the body failed")?;
        let list: NotificationList =
            espm_model::parse(&body).context("naive bridge: the body does not parse")?;
        if list.notifications.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        }
        for n in &list.notifications {
            let record = publisher.build(&notification_event(&origin, n))?;
            bytes += record.size();
            // Kept for the bare client's leg (not timed there, here a clone).
            records.push(record.clone());
            inflight.push(publisher.send(record).await?);
            settle(&mut inflight, window).await?;
        }
    }
    settle(&mut inflight, 0).await?;
    posting
        .await
        .context("naive bridge: the posting task failed")??;
    let last = received(&rec, notifications).await?;
    publisher.close().await;
    sim.shutdown().await;
    let done = records.len();
    Ok(Naive {
        per_s: per_s(done, started, last),
        size: bytes / done.max(1),
        records,
    })
}

/// A bare client sending the naive bridge's records again, to a fresh destination, acks
/// awaited pipelined. Records/s from the first send until the leg's reader has every one.
pub async fn raw_client(dest: &Destination, naive: Naive) -> anyhow::Result<f64> {
    let rec = Recorder::default();
    let publisher = dest.open(&rec, Leg::Raw).await?;
    let window = publisher.window();
    let mut records = naive.records;
    publisher.retarget(&mut records);
    let n = records.len();
    let mut inflight = FuturesUnordered::new();
    let started = now_us();
    for record in records {
        inflight.push(publisher.send(record).await?);
        settle(&mut inflight, window).await?;
    }
    settle(&mut inflight, 0).await?;
    let last = received(&rec, n).await?;
    publisher.close().await;
    Ok(per_s(n, started, last))
}

fn per_s(n: usize, from_us: i64, to_us: i64) -> f64 {
    n as f64 / ((to_us - from_us) as f64 / 1e6).max(1e-6)
}
