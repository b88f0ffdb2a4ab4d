//! The Kafka sink against a real Kafka-protocol broker (tansu), one broker per test.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use espm_config::{KafkaMode, KafkaSinkConfig};
use espm_sink::{CloudEvent, Envelope, Outcome, Sink};
use espm_sink_kafka::KafkaSink;
use espm_testkit::tansu::Tansu;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;

/// Upper bound for anything that waits on the broker in these tests.
const WAIT: Duration = Duration::from_secs(60);

fn event(n: u32, account_id: u64, ty: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("evt-{n}"),
        source: "urn:espm:sim:acme".into(),
        ty: ty.into(),
        subject: Some(format!("property/{}", 5_000_000 + n)),
        time: Some("2024-05-01T12:00:00Z".into()),
        datacontenttype: "application/json".into(),
        dataschema: "https://espm-bridge.example/schemas/v1.json".into(),
        espmenvironment: "sim".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({"accountId": account_id, "n": n}).into(),
    }
}

fn envelopes(events: Vec<CloudEvent>) -> Vec<Envelope> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Envelope {
            seq: i as i64 + 1,
            event: event.into(),
            enqueued_at: SystemTime::now(),
            attempts: 0,
        })
        .collect()
}

fn config(broker: &Tansu, topic: &str, mode: KafkaMode) -> KafkaSinkConfig {
    KafkaSinkConfig {
        name: "kafka-test".into(),
        brokers: broker.bootstrap(),
        topic: topic.into(),
        key: "{data.accountId}".into(),
        create_topics: true,
        topic_partitions: 2,
        topic_replication_factor: -1,
        mode,
        properties: BTreeMap::new(),
        secret_files: BTreeMap::new(),
        secret_envs: BTreeMap::new(),
    }
}

/// Read `n` records from `topics` with a fresh consumer group, from the earliest offset.
async fn consume(
    bootstrap: &str,
    topics: &[&str],
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    static GROUP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let group = format!(
        "test-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => {
                // Transient while the group forms; keep going until the deadline.
                eprintln!("consumer error: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => panic!("only {} of {n} records arrived within {WAIT:?}", out.len()),
        }
    }
    out
}

/// librdkafka and sink logs on the test output (shown for failing tests), `RUST_LOG` filtered.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn headers(m: &rdkafka::message::OwnedMessage) -> HashMap<String, String> {
    let mut h = HashMap::new();
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            h.insert(
                x.key.to_string(),
                String::from_utf8(x.value.unwrap_or_default().to_vec()).expect("utf-8 header"),
            );
        }
    }
    h
}

fn assert_all_delivered(outcomes: &[Outcome], n: usize) {
    assert_eq!(outcomes.len(), n);
    for o in outcomes {
        assert_eq!(o, &Outcome::Delivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_headers_key_and_value() {
    let broker = Tansu::start();
    let sink = KafkaSink::new(&config(&broker, "espm-events", KafkaMode::Binary)).unwrap();
    sink.start().await.unwrap();
    sink.health().await.unwrap();
    let ty = "gov.energystar.pm.share.accepted";
    let batch = envelopes(vec![
        event(1, 111, ty),
        event(2, 222, ty),
        event(3, 111, ty),
    ]);
    let outcomes = sink.deliver(&batch).await;
    assert_all_delivered(&outcomes, 3);

    let msgs = consume(&broker.bootstrap(), &["espm-events"], 3).await;
    let mut by_id: HashMap<String, _> = msgs
        .iter()
        .map(|m| (headers(m)["ce_id"].clone(), m))
        .collect();
    assert_eq!(by_id.len(), 3);
    let m = by_id.remove("evt-2").unwrap();
    let h = headers(m);
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(h["ce_source"], "urn:espm:sim:acme");
    assert_eq!(h["ce_type"], ty);
    assert_eq!(h["ce_subject"], "property/5000002");
    assert_eq!(h["ce_time"], "2024-05-01T12:00:00Z");
    assert_eq!(
        h["ce_dataschema"],
        "https://espm-bridge.example/schemas/v1.json"
    );
    assert_eq!(h["ce_espmenvironment"], "sim");
    assert_eq!(h["ce_espmaccount"], "acme");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(m.key(), Some(&b"222"[..]));
    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"accountId": 222, "n": 2}));

    // Same key, same partition: one customer's events stay in order.
    let (a, b) = (&by_id["evt-1"], &by_id["evt-3"]);
    assert_eq!(a.partition(), b.partition());
    assert!(a.offset() < b.offset());
    sink.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_mode_carries_the_whole_event() {
    let broker = Tansu::start();
    let sink = KafkaSink::new(&config(&broker, "espm-structured", KafkaMode::Structured)).unwrap();
    sink.start().await.unwrap();
    let ev = event(7, 333, "gov.energystar.pm.meter.updated");
    let outcomes = sink.deliver(&envelopes(vec![ev.clone()])).await;
    assert_all_delivered(&outcomes, 1);

    let msgs = consume(&broker.bootstrap(), &["espm-structured"], 1).await;
    let h = headers(&msgs[0]);
    assert_eq!(
        h["content-type"],
        "application/cloudevents+json; charset=UTF-8"
    );
    assert!(!h.contains_key("ce_id"));
    assert_eq!(msgs[0].key(), Some(&b"333"[..]));
    let back: CloudEvent = serde_json::from_slice(msgs[0].payload().unwrap()).unwrap();
    assert_eq!(back, ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_per_type_creates_topics_on_first_use() {
    let broker = Tansu::start();
    let mut cfg = config(&broker, "espm.{type}", KafkaMode::Binary);
    cfg.key = "{data.missing}".into(); // renders empty: records without a key
    let sink = KafkaSink::new(&cfg).unwrap();
    sink.start().await.unwrap();
    let (t1, t2) = (
        "gov.energystar.pm.share.revoked",
        "gov.energystar.pm.property.updated",
    );
    let batch = envelopes(vec![event(1, 1, t1), event(2, 1, t2), event(3, 2, t1)]);
    assert_all_delivered(&sink.deliver(&batch).await, 3);

    let topic1 = format!("espm.{t1}");
    let msgs = consume(&broker.bootstrap(), &[&topic1], 2).await;
    let mut ids: Vec<String> = msgs.iter().map(|m| headers(m)["ce_id"].clone()).collect();
    ids.sort();
    assert_eq!(ids, ["evt-1", "evt-3"]);
    assert!(msgs.iter().all(|m| m.key().is_none()));
    let topic2 = format!("espm.{t2}");
    let msgs = consume(&broker.bootstrap(), &[&topic2], 1).await;
    assert_eq!(headers(&msgs[0])["ce_id"], "evt-2");
    assert_eq!(msgs[0].topic(), topic2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_rejections_dead_letter() {
    let broker = Tansu::start();
    let mut cfg = config(&broker, "espm.{subject}", KafkaMode::Binary);
    cfg.properties
        .insert("message.max.bytes".into(), "2000".into());
    let sink = KafkaSink::new(&cfg).unwrap();
    // `property/1` is not a valid topic name.
    let bad_topic = sink.deliver(&envelopes(vec![event(1, 1, "t")])).await;
    assert!(
        matches!(&bad_topic[0], Outcome::DeadLetter { reason, .. } if reason.contains("invalid topic")),
        "{bad_topic:?}"
    );

    let mut cfg = config(&broker, "espm-big", KafkaMode::Binary);
    cfg.properties
        .insert("message.max.bytes".into(), "2000".into());
    let sink = KafkaSink::new(&cfg).unwrap();
    let mut big = event(2, 1, "t");
    big.data = serde_json::json!({"accountId": 1, "blob": "x".repeat(10_000)}).into();
    let outcomes = sink
        .deliver(&envelopes(vec![event(1, 1, "t"), big, event(3, 1, "t")]))
        .await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(
        matches!(&outcomes[1], Outcome::DeadLetter { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Outcome::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_a_broker_restart() {
    init_logs();
    let mut broker = Tansu::start();
    let mut cfg = config(&broker, "espm-outage", KafkaMode::Binary);
    cfg.properties
        .insert("message.timeout.ms".into(), "3000".into());
    if let Ok(d) = std::env::var("KAFKA_DEBUG") {
        cfg.properties.insert("debug".into(), d);
    }
    let sink = KafkaSink::new(&cfg).unwrap();
    sink.start().await.unwrap();
    let ty = "gov.energystar.pm.share.accepted";
    assert_all_delivered(
        &sink
            .deliver(&envelopes(vec![event(1, 1, ty), event(2, 2, ty)]))
            .await,
        2,
    );

    broker.stop();
    let during = sink
        .deliver(&envelopes(vec![event(3, 1, ty), event(4, 2, ty)]))
        .await;
    assert_eq!(during.len(), 2);
    for o in &during {
        assert!(matches!(o, Outcome::Retry { .. }), "{during:?}");
    }
    assert!(sink.health().await.is_err());

    // Same port, empty storage: the topic must be created again and the producer must cope
    // with a broker that forgot its producer ids.
    broker.start_again();
    let retry = envelopes(vec![event(3, 1, ty), event(4, 2, ty)]);
    let deadline = Instant::now() + WAIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcomes = sink.deliver(&retry).await;
        if outcomes.iter().all(|o| *o == Outcome::Delivered) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still failing after {attempts} attempts: {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sink.health().await.unwrap();

    let msgs = consume(&broker.bootstrap(), &["espm-outage"], 2).await;
    let mut ids: Vec<String> = msgs.iter().map(|m| headers(m)["ce_id"].clone()).collect();
    ids.sort();
    assert_eq!(ids, ["evt-3", "evt-4"]);
    sink.close(Duration::from_secs(5)).await;
}

/// The default key is the `partitionkey`: one customer's events share a partition even where
/// PM's `accountId` names someone else (TRANSFERPROPERTY: the new owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_key_is_the_customer_partitionkey() {
    let broker = Tansu::start();
    let mut cfg = config(&broker, "espm-keys", KafkaMode::Binary);
    cfg.key = toml::from_str::<KafkaSinkConfig>(&format!(
        "name = \"k\"\nbrokers = \"{}\"",
        broker.bootstrap()
    ))
    .unwrap()
    .key;
    assert_eq!(cfg.key, "{partitionkey}");
    cfg.topic_partitions = 3;
    let sink = KafkaSink::new(&cfg).unwrap();
    sink.start().await.unwrap();
    let mut revoked = event(1, 98_866, "gov.energystar.pm.share.revoked");
    revoked.data =
        serde_json::json!({"notificationTypeCode": "UNSHARE", "accountId": 98_866}).into();
    let mut updated = event(2, 0, "gov.energystar.pm.property.transferred");
    updated.data = serde_json::json!({
        "notificationTypeCode": "TRANSFERPROPERTY",
        "accountId": 8_833_843_022i64,
        "notificationCreatedByAccountId": "98866",
    })
    .into();
    let mut quarantined = event(3, 0, "gov.energystar.pm.bridge.body_quarantined");
    quarantined.data = serde_json::json!({"endpoint": "/notification/list", "rawId": 1}).into();
    let outcomes = sink
        .deliver(&envelopes(vec![revoked, updated, quarantined]))
        .await;
    assert_all_delivered(&outcomes, 3);
    let msgs = consume(&broker.bootstrap(), &["espm-keys"], 3).await;
    let by_id: HashMap<String, _> = msgs
        .iter()
        .map(|m| (headers(m)["ce_id"].clone(), m))
        .collect();
    let (a, b) = (by_id["evt-1"], by_id["evt-2"]);
    assert_eq!(a.key(), Some(&b"98866"[..]));
    assert_eq!(b.key(), Some(&b"98866"[..]));
    assert_eq!(headers(b)["ce_partitionkey"], "98866");
    assert_eq!(a.partition(), b.partition());
    assert_eq!(by_id["evt-3"].key(), None);
    assert!(!headers(by_id["evt-3"]).contains_key("ce_partitionkey"));
    sink.close(Duration::from_secs(5)).await;
}
