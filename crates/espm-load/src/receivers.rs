//! The consuming side of a run: where events come back, and when.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Wall-clock now, microseconds since the Unix epoch (comparable with the ledger's `createdAt`).
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[derive(Default)]
struct Seen {
    first_us: HashMap<i64, i64>,
    duplicates: u64,
    last_new_us: i64,
}

/// First receive time of every notification id, shared by the consumer tasks.
#[derive(Default, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Seen>>,
}

impl Recorder {
    /// Record one delivery of `id` received at `at_us`.
    pub fn record(&self, id: i64, at_us: i64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        match s.first_us.entry(id) {
            Entry::Occupied(_) => s.duplicates += 1,
            Entry::Vacant(e) => {
                e.insert(at_us);
                s.last_new_us = s.last_new_us.max(at_us);
            }
        }
    }

    /// Record the notification carried by one event body (CloudEvent JSON or its `data`), if any.
    pub fn record_body(&self, body: &[u8], at_us: i64) {
        if let Some(id) = notification_id(body) {
            self.record(id, at_us);
        }
    }

    /// Unique notifications seen.
    pub fn unique(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_us
            .len()
    }

    /// (first receive per id, redeliveries, last first-receive time).
    pub fn snapshot(&self) -> (HashMap<i64, i64>, u64, i64) {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (s.first_us.clone(), s.duplicates, s.last_new_us)
    }
}

/// `data.notificationId` of a structured CloudEvent, or `notificationId` of a binary-mode
/// payload (which is the event's `data`).
pub fn notification_id(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("data")
        .and_then(|d| d.get("notificationId"))
        .or_else(|| v.get("notificationId"))
        .and_then(Value::as_i64)
}

/// Tail the file sink's JSON lines until aborted.
pub async fn tail_file(path: PathBuf, rec: Recorder) -> anyhow::Result<()> {
    let mut offset: u64 = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = Vec::with_capacity(1 << 20);
    loop {
        match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                f.seek(std::io::SeekFrom::Start(offset)).await?;
                buf.clear();
                let n = f.read_to_end(&mut buf).await?;
                if n > 0 {
                    let at = now_us();
                    offset += n as u64;
                    partial.extend_from_slice(&buf);
                    // Only complete lines: the sink may be mid-write.
                    if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                        for line in partial[..end].split(|b| *b == b'\n') {
                            rec.record_body(line, at);
                        }
                        partial.drain(..=end);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read `topic` (all `partitions`, from the beginning) until aborted.
pub async fn consume_kafka(
    brokers: String,
    topic: String,
    partitions: i32,
    rec: Recorder,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create the Kafka consumer")?;
    // Explicit assignment: no group rebalance delay in the latency figures.
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .context("partition list")?;
    }
    consumer.assign(&tpl).context("cannot assign partitions")?;
    let mut errors = 0u32;
    loop {
        match consumer.recv().await {
            Ok(m) => {
                let at = now_us();
                if let Some(payload) = m.payload() {
                    rec.record_body(payload, at);
                }
            }
            Err(e) => {
                errors += 1;
                if errors % 100 == 1 {
                    eprintln!("espm-load: kafka consumer error (retrying): {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Read `stream` (subjects `prefix.>`) with an ordered consumer until aborted.
pub async fn consume_nats(
    js: async_nats::jetstream::Context,
    stream: String,
    prefix: String,
    rec: Recorder,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    let s = js
        .get_stream(&stream)
        .await
        .with_context(|| format!("stream {stream} not found (the bridge creates it)"))?;
    let consumer = s
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{prefix}.>"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("cannot create the JetStream consumer")?;
    let mut msgs = consumer
        .messages()
        .await
        .context("cannot read from the JetStream consumer")?;
    let mut errors = 0u32;
    while let Some(m) = msgs.next().await {
        match m {
            Ok(m) => rec.record_body(&m.payload, now_us()),
            Err(e) => {
                errors += 1;
                if errors % 100 == 1 {
                    eprintln!("espm-load: JetStream consumer error (retrying): {e}");
                }
            }
        }
    }
    anyhow::bail!("the JetStream consumer ended")
}

/// An in-process webhook receiver answering 204 to every POST on `/hook`, or 503 (recording
/// nothing) while `up` is false.
pub async fn webhook_receiver(
    rec: Recorder,
    up: Arc<AtomicBool>,
    delay: Duration,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let rec = rec.clone();
            let up = up.clone();
            async move {
                // An endpoint across a network: the answer comes a round trip later.
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let at = now_us();
                if !up.load(Ordering::Relaxed) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                // A request without the Standard Webhooks headers is not the bridge's.
                if !headers.contains_key("webhook-signature") {
                    return StatusCode::BAD_REQUEST;
                }
                rec.record_body(&body, at);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the webhook receiver")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("espm-load: webhook receiver stopped: {e}");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_structured_and_binary_bodies() {
        assert_eq!(
            notification_id(br#"{"id":"x","data":{"notificationId":42}}"#),
            Some(42)
        );
        assert_eq!(notification_id(br#"{"notificationId":7}"#), Some(7));
        assert_eq!(notification_id(br#"{"data":{"propertyId":7}}"#), None);
        assert_eq!(notification_id(b"not json"), None);
    }

    #[test]
    fn recorder_keeps_first_receive_and_counts_duplicates() {
        let r = Recorder::default();
        r.record(1, 100);
        r.record(1, 200);
        r.record(2, 150);
        let (first, dups, last) = r.snapshot();
        assert_eq!(first[&1], 100);
        assert_eq!(dups, 1);
        assert_eq!(last, 150);
        assert_eq!(r.unique(), 2);
    }
}
