//! Baselines for the Kafka leg, on the same broker in the same run as the bridge (issue 9): what
//! the broker does with the same records from a bare idempotent producer, and what a naive bridge
//! (poll `clear=true`, parse, produce; no journal) achieves against the same simulator. Ratios
//! across runs would compare different machines' moods; these are side by side.

use std::time::{Duration, Instant};

use anyhow::Context;
use espm_events::{notification_event, Origin};
use espm_model::NotificationList;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::run::{create_topic, post_burst, start_sim, unique_suffix, PM_PASSWORD, PM_USER};

/// Delivery reports awaited at most this far behind the sends (pipelined, bounded).
const IN_FLIGHT: usize = 50_000;

/// The producer both baselines use: the bridge sink's guarantees (idempotent, acks=all).
fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the baseline Kafka producer")
}

async fn settle(
    inflight: &mut FuturesUnordered<DeliveryFuture>,
    keep: usize,
) -> anyhow::Result<()> {
    while inflight.len() > keep {
        match inflight.next().await {
            Some(Ok(Ok(_))) => {}
            Some(Ok(Err((e, _)))) => anyhow::bail!("baseline delivery failed: {e}"),
            Some(Err(_)) => anyhow::bail!("baseline delivery cancelled"),
            None => break,
        }
    }
    Ok(())
}

fn send(
    producer: &FutureProducer,
    inflight: &mut FuturesUnordered<DeliveryFuture>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) -> anyhow::Result<()> {
    let fut = producer
        .send_result(FutureRecord::to(topic).key(key).payload(payload))
        .map_err(|(e, _)| anyhow::anyhow!("baseline produce failed: {e}"))?;
    inflight.push(fut);
    Ok(())
}

/// A naive bridge: clear, parse, normalize, produce, acks awaited pipelined; nothing journalled.
/// Returns (records/s from the first POST to the last acknowledgement, mean record size).
pub async fn naive_bridge(
    brokers: &str,
    notifications: usize,
    chunk: usize,
) -> anyhow::Result<(f64, usize)> {
    let sim = start_sim().await?;
    let topic = format!("espm-load-naive-{}", unique_suffix());
    create_topic(brokers, &topic).await?;
    let producer = producer(brokers)?;
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
            send(
                &producer,
                &mut inflight,
                &topic,
                event.id.as_bytes(),
                &payload,
            )?;
            settle(&mut inflight, IN_FLIGHT).await?;
            done += 1;
        }
    }
    settle(&mut inflight, 0).await?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    sim.shutdown().await;
    Ok((done as f64 / elapsed, bytes / done.max(1)))
}

/// A bare idempotent producer sending `records` records of `size` bytes. Records/s.
pub async fn raw_producer(brokers: &str, records: usize, size: usize) -> anyhow::Result<f64> {
    let topic = format!("espm-load-raw-{}", unique_suffix());
    create_topic(brokers, &topic).await?;
    let producer = producer(brokers)?;
    let payload = vec![b'x'; size];
    let mut inflight = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..records {
        let key = format!("raw-{i}");
        send(&producer, &mut inflight, &topic, key.as_bytes(), &payload)?;
        settle(&mut inflight, IN_FLIGHT).await?;
    }
    settle(&mut inflight, 0).await?;
    Ok(records as f64 / started.elapsed().as_secs_f64().max(1e-6))
}
