//! Simulator -> bridge -> Kafka (tansu), NATS JetStream and a webhook, all at once, read back by
//! real consumers; a Kafka outage while the other sinks keep flowing; webhook dead letters and
//! their replay through `espm-bridge dlq`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use espm_sim::SimServer;
use espm_testkit::tansu::Tansu;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_SINKS_TEST_PASSWORD";
const SECRET_ENV: &str = "ESPM_SINKS_TEST_WHSEC";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TYPES: [&str; 5] = [
    "UNSHARE",
    "SHAREUPDATE",
    "DISCONNECT",
    "TRANSFERPROPERTY",
    "BRANDNEWCODE",
];

fn suffix() -> String {
    format!("{:x}", rand::random::<u32>())
}

async fn sim(user: &str) -> SimServer {
    start_sim(user, "pw", 11).await
}

async fn bulk(ctl: &SimControl, count: usize) {
    ctl.notifications(count, &TYPES).await;
}

async fn ledger_ids(ctl: &SimControl) -> BTreeSet<i64> {
    ctl.created_ids().await.into_iter().collect()
}

async fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let t = NewTopic::new(topic, 3, TopicReplication::Fixed(-1));
    let _ = admin
        .create_topics(&[t], &AdminOptions::new())
        .await
        .unwrap();
}

/// One Kafka record as a consumer saw it.
#[derive(Debug, Clone)]
struct Record {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    value: Value,
}

/// Consume `topic` continuously into `out` until the task is aborted.
fn spawn_kafka_consumer(
    bootstrap: String,
    topic: String,
    out: Arc<Mutex<Vec<Record>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("e2e-{}", suffix()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut stream = consumer.stream();
        while let Some(m) = stream.next().await {
            let Ok(m) = m else { continue };
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = m
                .payload()
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null);
            out.lock().unwrap().push(Record {
                key,
                headers,
                value,
            });
        }
    })
}

/// A webhook receiver that verifies every signature with the `standardwebhooks` crate (not our
/// implementation). `fail_first` requests answer 500.
async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<Value>>>, Arc<AtomicUsize>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let bad_signatures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, bad, c) = (seen.clone(), bad_signatures.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (s, bad, c) = (s.clone(), bad.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
                if wh.verify(&body, &headers).is_err() {
                    bad.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::UNAUTHORIZED;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                // webhook-id must be the event id; a mismatch is counted and fails the test body.
                let hook_id = headers.get("webhook-id").and_then(|h| h.to_str().ok());
                if hook_id.is_none() || hook_id != v["id"].as_str() {
                    bad.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::BAD_REQUEST;
                }
                s.lock().unwrap().push(v);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen, bad_signatures)
}

fn ids_in(values: &[Value]) -> BTreeSet<i64> {
    values
        .iter()
        .filter_map(|v| v["data"]["notificationId"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_reaches_kafka_nats_and_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("allsinks").await;
    let ctl = SimControl::of(&sim);
    let kafka = Tansu::start();
    let sfx = suffix();
    let topic = format!("espm-e2e-{sfx}");
    create_topic(&kafka.bootstrap(), &topic).await;
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let consumer = spawn_kafka_consumer(kafka.bootstrap(), topic.clone(), records.clone());
    let (hook, hooked, bad_signatures) = receiver(0).await;
    let stream = format!("E2E_{sfx}");
    let prefix = format!("e2e{sfx}");
    let config = format!(
        r#"{journal}{account}
[[sinks]]
type = "kafka"
name = "events"
brokers = "{brokers}"
topic = "{topic}"
create_topics = true

[[sinks]]
type = "nats"
name = "bus"
url = "nats://127.0.0.1:4222"
subject = "{prefix}.{{environment}}.{{type}}"
stream = "{stream}"
create_stream = true
stream_subjects = ["{prefix}.>"]

[[sinks]]
type = "webhook"
name = "partner"
url = "http://{hook}/hook"
secret_env = "{SECRET_ENV}"
max_in_flight = 4
"#,
        journal = journal_toml(dir.path()),
        account = account_toml(
            "e2e",
            &sim.base_url(),
            "allsinks",
            PASSWORD_ENV,
            "peek-then-clear"
        ),
        brokers = kafka.bootstrap(),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "pw"), (SECRET_ENV, SECRET)],
        None,
    );
    bulk(&ctl, 300).await;
    let expected = ledger_ids(&ctl).await;
    assert_eq!(expected.len(), 300);

    let kafka_done = eventually(Duration::from_secs(90), || {
        let got: BTreeSet<i64> = ids_in(
            &records
                .lock()
                .unwrap()
                .iter()
                .map(|r| json!({"data": r.value}))
                .collect::<Vec<_>>(),
        );
        let ok = expected.is_subset(&got);
        async move { ok.then_some(()) }
    })
    .await;
    let hook_done = eventually(Duration::from_secs(60), || {
        let ok = expected.is_subset(&ids_in(&hooked.lock().unwrap()));
        async move { ok.then_some(()) }
    })
    .await;
    assert!(
        kafka_done.is_some(),
        "Kafka is missing notifications; bridge log:\n{}",
        bridge.log()
    );
    assert!(
        hook_done.is_some(),
        "the webhook is missing notifications; bridge log:\n{}",
        bridge.log()
    );
    assert_eq!(
        bad_signatures.load(Ordering::SeqCst),
        0,
        "standardwebhooks rejected a signature"
    );

    // Kafka: binary mode, ce_ headers, key = the PM customer account id, value = data.
    for r in records.lock().unwrap().iter() {
        assert_eq!(
            r.headers.get("ce_specversion").map(String::as_str),
            Some("1.0")
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("ce_source").map(String::as_str),
            Some("urn:espm:sim:e2e")
        );
        assert!(
            r.headers
                .get("ce_type")
                .is_some_and(|t| t.starts_with("gov.energystar.pm.")),
            "{:?}",
            r.headers
        );
        assert!(r.headers.contains_key("ce_id") && r.headers.contains_key("ce_time"));
        if let Some(acct) = r.value["accountId"].as_i64() {
            assert_eq!(r.key.as_deref(), Some(acct.to_string().as_str()));
        }
    }
    // Unknown codes pass through as notification.received, carrying the code.
    assert!(records
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.headers.get("ce_type").map(String::as_str)
            == Some("gov.energystar.pm.notification.received")
            && r.value["notificationTypeCode"] == "BRANDNEWCODE"));

    // NATS: read the stream back with a pull consumer.
    let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut nats_values = Vec::new();
    for m in jetstream_messages(&js, &stream, 1000, Duration::from_secs(2)).await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let h = m.headers.clone().unwrap();
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID)
                .map(|x| x.as_str()),
            v["id"].as_str(),
            "{h:?}"
        );
        assert_eq!(h.get("ce-type").map(|x| x.as_str()), v["type"].as_str());
        assert!(
            m.subject
                .starts_with(&format!("{prefix}.sim.gov.energystar.pm.")),
            "{}",
            m.subject
        );
        nats_values.push(v);
        if nats_values.len() >= 300 {
            break;
        }
    }
    let nats_ids = ids_in(&nats_values);
    assert!(
        expected.is_subset(&nats_ids),
        "JetStream is missing {} notifications",
        expected.difference(&nats_ids).count()
    );
    // JetStream dedups on Nats-Msg-Id, so the stream holds each event once.
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 300);

    // The same notification has the same event id everywhere.
    let by_sink = |vals: Vec<Value>| -> BTreeMap<i64, String> {
        vals.into_iter()
            .filter_map(|v| {
                Some((
                    v["data"]["notificationId"].as_i64()?,
                    v["id"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let hook_ids = by_sink(hooked.lock().unwrap().clone());
    let nats_map = by_sink(nats_values);
    for (n, id) in &hook_ids {
        assert_eq!(nats_map.get(n), Some(id));
    }
    for r in records.lock().unwrap().iter() {
        if let Some(n) = r.value["notificationId"].as_i64() {
            assert_eq!(
                hook_ids.get(&n).map(String::as_str),
                r.headers.get("ce_id").map(String::as_str)
            );
        }
    }
    let status = bridge.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()));
    consumer.abort();
    let _ = js.delete_stream(&stream).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_loses_nothing_and_does_not_stop_other_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("outage").await;
    let ctl = SimControl::of(&sim);
    let mut kafka = Tansu::start();
    let topic = format!("espm-outage-{}", suffix());
    create_topic(&kafka.bootstrap(), &topic).await;
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let consumer = spawn_kafka_consumer(kafka.bootstrap(), topic.clone(), records.clone());
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"kafka\"\nname = \"events\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ncreate_topics = true\n[sinks.properties]\n\"message.timeout.ms\" = \"3000\"\n\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml("outage", &sim.base_url(), "outage", PASSWORD_ENV, "peek-then-clear"),
        kafka.bootstrap(),
        events_path.display()
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "pw")],
        None,
    );
    let kafka_ids = |records: &Arc<Mutex<Vec<Record>>>| -> BTreeSet<i64> {
        records
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.value["notificationId"].as_i64())
            .collect()
    };

    bulk(&ctl, 100).await;
    let wave1 = ledger_ids(&ctl).await;
    let seen1 = eventually(Duration::from_secs(60), || {
        let ok = wave1.is_subset(&kafka_ids(&records));
        async move { ok.then_some(()) }
    })
    .await;
    assert!(
        seen1.is_some(),
        "wave 1 never reached Kafka:\n{}",
        bridge.log()
    );

    // The broker goes away. Tansu's memory storage starts empty again later, which is why the
    // consumer above has already read wave 1.
    kafka.stop();
    consumer.abort();
    bulk(&ctl, 100).await;
    let all = ledger_ids(&ctl).await;
    let file_ok = eventually(Duration::from_secs(60), || {
        let p = events_path.clone();
        let all = all.clone();
        async move { all.is_subset(&ids_in(&read_events(&p))).then_some(()) }
    })
    .await;
    assert!(
        file_ok.is_some(),
        "the file sink stalled while Kafka was down:\n{}",
        bridge.log()
    );
    let wave2: BTreeSet<i64> = all.difference(&wave1).copied().collect();
    assert!(
        kafka_ids(&records).is_disjoint(&wave2),
        "wave 2 cannot have reached a stopped broker"
    );

    kafka.start_again();
    let records2: Arc<Mutex<Vec<Record>>> = Arc::default();
    let consumer2 = spawn_kafka_consumer(kafka.bootstrap(), topic.clone(), records2.clone());
    let seen2 = eventually(Duration::from_secs(120), || {
        let ok = wave2.is_subset(&kafka_ids(&records2));
        async move { ok.then_some(()) }
    })
    .await;
    assert!(
        seen2.is_some(),
        "wave 2 never reached Kafka after the outage:\n{}",
        bridge.log()
    );
    let union: BTreeSet<i64> = kafka_ids(&records)
        .union(&kafka_ids(&records2))
        .copied()
        .collect();
    assert!(all.is_subset(&union));
    bridge.terminate(Duration::from_secs(30));
    consumer2.abort();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_dead_letters_are_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("dlq").await;
    let ctl = SimControl::of(&sim);
    // The first 3 calls fail: with one attempt per event (an empty retry schedule) the first 3
    // events are dead-lettered and the others, behind them, delivered.
    let (hook, hooked, _) = receiver(3).await;
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"webhook\"\nname = \"partner\"\nurl = \"http://{hook}/hook\"\nsecret_env = \"{SECRET_ENV}\"\nmax_in_flight = 1\nretry = {{ schedule = [] }}\n",
        journal_toml(dir.path()),
        account_toml("dlq", &sim.base_url(), "dlq", PASSWORD_ENV, "clear"),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let env = [(PASSWORD_ENV, "pw"), (SECRET_ENV, SECRET)];
    let mut bridge = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    bulk(&ctl, 10).await;
    let all = ledger_ids(&ctl).await;
    let delivered = eventually(Duration::from_secs(60), || {
        let n = ids_in(&hooked.lock().unwrap()).len();
        async move { (n >= 7).then_some(()) }
    })
    .await;
    assert!(delivered.is_some(), "{}", bridge.log());
    let dlq = |args: &[&str]| {
        let out = std::process::Command::new(bridge_bin())
            .arg("dlq")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dlq {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listing = eventually(Duration::from_secs(20), || {
        let l = dlq(&["list"]);
        async move { (l.lines().filter(|x| x.contains("partner")).count() == 3).then_some(l) }
    })
    .await
    .expect("three dead letters for sink partner");
    assert!(
        listing.contains("500"),
        "the reason names the last status: {listing}"
    );
    let missing: BTreeSet<i64> = all
        .difference(&ids_in(&hooked.lock().unwrap()))
        .copied()
        .collect();
    assert_eq!(
        missing.len(),
        3,
        "exactly the dead-lettered events are missing"
    );

    // Drop one for good, replay the other two while the bridge runs (the receiver now accepts).
    let dropped_line = listing.lines().find(|l| l.contains("partner")).unwrap();
    let dropped_id = dropped_line.split_whitespace().next().unwrap().to_string();
    let dropped_event = dropped_line.split_whitespace().nth(2).unwrap().to_string();
    assert!(dlq(&["drop", &dropped_id]).contains("dropped"));
    let out = dlq(&["replay", "--all"]);
    assert_eq!(
        out.lines().filter(|l| l.contains("re-queued")).count(),
        2,
        "{out}"
    );
    let expected = all.clone();
    let replayed = eventually(Duration::from_secs(30), || {
        let got = ids_in(&hooked.lock().unwrap());
        let ok = expected.difference(&got).count() == 1;
        async move { ok.then_some(()) }
    })
    .await;
    assert!(
        replayed.is_some(),
        "replayed dead letters were not delivered:\n{}",
        bridge.log()
    );
    assert!(
        !hooked
            .lock()
            .unwrap()
            .iter()
            .any(|v| v["id"] == dropped_event.as_str()),
        "the dropped dead letter must not be delivered"
    );
    assert_eq!(
        dlq(&["list"])
            .lines()
            .filter(|x| x.contains("partner"))
            .count(),
        0
    );
    bridge.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}
