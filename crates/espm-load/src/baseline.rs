//! Baselines for each sink, on the same broker or receiver in the same run as the bridge (issue
//! 9): what the destination does with the same records from a bare client, and what a naive
//! bridge (poll `clear=true`, parse, publish; no journal) achieves against the same simulator.
//! Ratios across runs would compare different machines' moods; these are side by side.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use espm_events::{notification_event, Origin};
use espm_model::NotificationList;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::receivers::{self, Recorder};
use crate::run::{create_topic, post_burst, start_sim, unique_suffix, PM_PASSWORD, PM_USER};
use crate::SinkKind;

/// Kafka delivery reports awaited at most this far behind the sends (librdkafka batches them).
const KAFKA_IN_FLIGHT: usize = 50_000;
/// JetStream PubAcks outstanding at most: the bridge's NATS sink default `max_in_flight`.
const NATS_IN_FLIGHT: usize = 256;
/// Concurrent webhook POSTs: the `max_in_flight` espm-load configures for the bridge's sink.
const WEBHOOK_IN_FLIGHT: usize = 64;

/// Where a baseline publishes: the same kind of destination as the bridge's sink in the run.
pub enum Destination {
    /// A Kafka cluster (a fresh topic is created per leg).
    Kafka { brokers: String },
    /// NATS with JetStream (a fresh stream is created per leg and deleted after).
    Nats { url: String },
    /// A loopback webhook receiver like the run's (started per leg).
    Webhook,
}

impl Destination {
    /// The destination of `kind`'s run.
    pub fn of(kind: SinkKind, kafka: Option<&str>, nats_url: &str) -> Option<Destination> {
        match kind {
            SinkKind::Kafka => kafka.map(|b| Destination::Kafka {
                brokers: b.to_string(),
            }),
            SinkKind::Nats => Some(Destination::Nats {
                url: nats_url.to_string(),
            }),
            SinkKind::Webhook => Some(Destination::Webhook),
            SinkKind::File => None,
        }
    }

    async fn open(&self) -> anyhow::Result<Publisher> {
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
                Publisher::Kafka { producer, topic }
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
                Publisher::Nats {
                    js,
                    stream,
                    subject: format!("{subject}.events"),
                }
            }
            Destination::Webhook => {
                let up = Arc::new(AtomicBool::new(true));
                let (addr, server) = receivers::webhook_receiver(Recorder::default(), up).await?;
                Publisher::Webhook {
                    http: reqwest::Client::new(),
                    url: format!("http://{addr}/hook"),
                    server,
                }
            }
        })
    }
}

/// An open destination.
enum Publisher {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        subject: String,
    },
    Webhook {
        http: reqwest::Client,
        url: String,
        server: tokio::task::JoinHandle<()>,
    },
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

    /// Send one record; the returned future resolves at its acknowledgement.
    async fn send(&self, key: &[u8], payload: Vec<u8>) -> anyhow::Result<Ack> {
        Ok(match self {
            Publisher::Kafka { producer, topic } => {
                let fut = producer
                    .send_result(FutureRecord::to(topic).key(key).payload(&payload))
                    .map_err(|(e, _)| anyhow::anyhow!("baseline produce failed: {e}"))?;
                Box::pin(async move {
                    match fut.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => anyhow::bail!("baseline delivery failed: {e}"),
                        Err(_) => anyhow::bail!("baseline delivery cancelled"),
                    }
                })
            }
            Publisher::Nats { js, subject, .. } => {
                let ack = js
                    .publish(subject.clone(), payload.into())
                    .await
                    .context("baseline publish failed")?;
                Box::pin(async move {
                    ack.await.context("baseline PubAck failed")?;
                    Ok(())
                })
            }
            Publisher::Webhook { http, url, .. } => {
                let req = http
                    .post(url)
                    .header("content-type", "application/json")
                    // The receiver only checks that the header is there.
                    .header("webhook-signature", "v1,baseline")
                    .body(payload);
                Box::pin(async move {
                    req.send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .context("baseline POST failed")?;
                    Ok(())
                })
            }
        })
    }

    async fn close(self) {
        match self {
            Publisher::Kafka { .. } => {}
            Publisher::Nats { js, stream, .. } => {
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

/// A naive bridge: clear, parse, normalize, publish, acks awaited pipelined; nothing journalled.
/// Returns (records/s from the first POST to the last acknowledgement, mean record size).
pub async fn naive_bridge(
    dest: &Destination,
    notifications: usize,
    chunk: usize,
) -> anyhow::Result<(f64, usize)> {
    let sim = start_sim().await?;
    let publisher = dest.open().await?;
    let window = publisher.window();
    let http = reqwest::Client::new();
    let origin = Origin {
        environment: "sim".into(),
        account: "load".into(),
    };
    let started = Instant::now();
    post_burst(&http, &sim, notifications, chunk).await?;
    let mut inflight = FuturesUnordered::new();
    let (mut done, mut bytes) = (0usize, 0usize);
    while done < notifications {
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
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for n in &list.notifications {
            let event = notification_event(&origin, n);
            let payload = event.to_json_bytes();
            bytes += payload.len();
            inflight.push(publisher.send(event.id.as_bytes(), payload).await?);
            settle(&mut inflight, window).await?;
            done += 1;
        }
    }
    settle(&mut inflight, 0).await?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    publisher.close().await;
    sim.shutdown().await;
    Ok((done as f64 / elapsed, bytes / done.max(1)))
}

/// A bare client sending `records` records of `size` bytes. Records/s.
pub async fn raw_client(dest: &Destination, records: usize, size: usize) -> anyhow::Result<f64> {
    let publisher = dest.open().await?;
    let window = publisher.window();
    let payload = vec![b'x'; size];
    let mut inflight = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..records {
        let key = format!("raw-{i}");
        inflight.push(publisher.send(key.as_bytes(), payload.clone()).await?);
        settle(&mut inflight, window).await?;
    }
    settle(&mut inflight, 0).await?;
    let per_s = records as f64 / started.elapsed().as_secs_f64().max(1e-6);
    publisher.close().await;
    Ok(per_s)
}
