//! Command topics on a real NATS JetStream server (127.0.0.1:4222, `NATS_URL` to override),
//! the simulator and a real journal: commands published by a plain client run once, malformed
//! ones are answered and do not block, messages are acked only after the result is journalled.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Config as StreamConfig};
use async_nats::HeaderMap;
use common::{accept, failed_detail, structured, World, WAIT};
use espm_command::Commander;
use espm_command_topics::{types, NatsCommandConsumer};
use espm_config::NatsCommandTopicConfig;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream and subject prefix of this test alone (the server is shared).
struct Names {
    stream: String,
    prefix: String,
}

fn names() -> Names {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Names {
        stream: format!("CMDTEST_{pid}_{n}"),
        prefix: format!("cmdtest.{pid}.{n}.commands"),
    }
}

fn config(n: &Names, create_stream: bool, ack_wait: Duration) -> NatsCommandTopicConfig {
    let toml = format!(
        "name = \"nats-commands\"\nurl = \"{}\"\nstream = \"{}\"\nsubjects = [\"{}.>\"]",
        nats_url(),
        n.stream,
        n.prefix
    );
    let mut c: NatsCommandTopicConfig = toml::from_str(&toml).unwrap();
    c.create_stream = create_stream;
    c.ack_wait = ack_wait;
    c
}

async fn js() -> jetstream::Context {
    jetstream::new(async_nats::connect(nats_url()).await.unwrap())
}

async fn publish(js: &jetstream::Context, subject: String, headers: HeaderMap, body: String) {
    js.publish_with_headers(subject, headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn publish_structured(js: &jetstream::Context, n: &Names, event: serde_json::Value) {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/cloudevents+json");
    publish(js, format!("{}.crm", n.prefix), h, event.to_string()).await;
}

fn start(
    cfg: &NatsCommandTopicConfig,
    commander: Commander,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let consumer = NatsCommandConsumer::new(cfg).unwrap();
    let s = stop.clone();
    let task = tokio::spawn(async move { consumer.run(commander, s).await.unwrap() });
    (stop, task)
}

async fn stop(s: (CancellationToken, JoinHandle<()>)) {
    s.0.cancel();
    tokio::time::timeout(WAIT, s.1)
        .await
        .expect("consumer stops")
        .unwrap();
}

/// `(num_ack_pending, num_pending)` of the bridge's durable consumer.
async fn consumer_state(js: &jetstream::Context, n: &Names) -> (usize, u64) {
    let stream = js.get_stream(&n.stream).await.unwrap();
    let mut c: jetstream::consumer::PullConsumer = stream
        .get_consumer("espm-bridge-nats-commands")
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    (info.num_ack_pending, info.num_pending)
}

#[tokio::test]
async fn commands_run_once_malformed_ones_are_answered_and_acks_follow_the_journal() {
    let w = World::new().await;
    let n = names();
    let js = js().await;
    let cfg = config(&n, true, Duration::from_secs(30));
    let first = w.connection_request().await;
    let second = w.connection_request().await;

    // The bridge creates the stream.
    let consumer = start(&cfg, w.commander.clone());
    espm_testkit::e2e::eventually(WAIT, || async { js.get_stream(&n.stream).await.ok() })
        .await
        .expect("the bridge created the stream");

    publish_structured(&js, &n, structured("cmd-1", types::ANSWER, accept(first))).await;
    // The same id again, in binary mode with percent-encoded headers.
    let binary = |id: &str, ty: &str| {
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-id", id);
        h.insert("ce-source", "urn%3Atest%3Abilling");
        h.insert("ce-type", ty);
        h.insert("content-type", "application/json");
        h
    };
    publish(
        &js,
        format!("{}.billing", n.prefix),
        binary("cmd-1", types::ANSWER),
        accept(first).to_string(),
    )
    .await;
    publish(
        &js,
        format!("{}.junk", n.prefix),
        HeaderMap::new(),
        "{not json".into(),
    )
    .await;
    publish_structured(
        &js,
        &n,
        structured(
            "bad-unshare",
            types::UNSHARE,
            json!({"propertyId": 1, "meterId": 2}),
        ),
    )
    .await;
    publish_structured(
        &js,
        &n,
        structured(
            "bad-account",
            types::DISCONNECT,
            json!({"account": "nobody", "customerId": first, "keepShares": true}),
        ),
    )
    .await;
    publish(
        &js,
        format!("{}.billing", n.prefix),
        binary("cmd%2D2", types::ANSWER),
        accept(second).to_string(),
    )
    .await;
    let password = "S3cret-Pass!";
    publish_structured(
        &js,
        &n,
        structured(
            "create-1",
            types::CREATE_CUSTOMER,
            json!({
                "username": "newco_admin", "password": password, "webserviceUser": true,
                "searchable": false,
                "contact": {"firstName": "Ada", "lastName": "Lovelace",
                    "address": {"address1": "1 Main St", "city": "Arlington", "state": "VA",
                        "postalCode": "22201", "country": "US"},
                    "email": "ada@newco.example", "jobTitle": "CFO", "phone": "555-0100"},
                "organization": {"name": "NewCo", "primaryBusiness": "Other",
                    "otherBusinessDescription": "Energy", "energyStarPartner": false}
            }),
        ),
    )
    .await;

    let v2 = w.finished("cmd-2").await;
    assert_eq!(v2.state, "completed", "{v2:?}");
    assert_eq!(v2.requester.as_deref(), Some("urn:test:billing"));
    assert_eq!(v2.origin, "nats");
    assert_eq!(w.finished("cmd-1").await.state, "completed");
    let path = format!("POST /connect/account/{first}");
    assert_eq!(w.calls(&path), 1, "the same id sent twice calls PM once");
    assert!(w.connected(first) && w.connected(second));
    assert_eq!(w.results("cmd-1").len(), 1);

    let created = w.finished("create-1").await;
    assert_eq!(created.state, "completed", "{created:?}");
    assert!(created.account_id.is_some());
    assert_eq!(w.calls("POST /customer"), 1);
    assert!(
        !serde_json::to_string(&w.events())
            .unwrap()
            .contains(password),
        "a password never reaches an event"
    );

    // The junk message (stream sequence 3) is answered under its position.
    let junk = format!("nats/{}/3", n.stream);
    w.finished(&junk).await;
    assert!(failed_detail(&w, &junk).contains("not a CloudEvent"));
    w.finished("bad-unshare").await;
    assert!(failed_detail(&w, "bad-unshare").contains("exactly one"));
    w.finished("bad-account").await;
    assert!(failed_detail(&w, "bad-account").contains("nobody"));
    assert!(w.connected(first), "the refused disconnect did nothing");

    // Everything journalled is acked.
    let acked = espm_testkit::e2e::eventually(WAIT, || async {
        Some(consumer_state(&js, &n).await).filter(|s| *s == (0, 0))
    })
    .await;
    assert_eq!(acked, Some((0, 0)));
    stop(consumer).await;

    // A restarted consumer resumes after them.
    let third = w.connection_request().await;
    publish_structured(&js, &n, structured("cmd-3", types::ANSWER, accept(third))).await;
    let consumer = start(&cfg, w.commander.clone());
    assert_eq!(w.finished("cmd-3").await.state, "completed");
    stop(consumer).await;
    assert_eq!(w.calls(&path), 1);
    assert_eq!(w.calls("POST /customer"), 1);
    assert_eq!(w.results("cmd-1").len(), 1);
    let _ = js.delete_stream(&n.stream).await;
}

#[tokio::test]
async fn a_command_whose_result_was_not_journalled_is_delivered_again() {
    let w = World::new().await;
    let n = names();
    let js = js().await;
    js.create_stream(StreamConfig {
        name: n.stream.clone(),
        subjects: vec![format!("{}.>", n.prefix)],
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = config(&n, false, Duration::from_secs(1));
    let customer = w.connection_request().await;
    publish_structured(
        &js,
        &n,
        structured("cmd-ro", types::ANSWER, accept(customer)),
    )
    .await;

    // The journal refuses writes: the command is read, not journalled, never acked.
    let consumer = start(&cfg, w.read_only_commander());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(consumer).await;
    assert!(w.commander.command("cmd-ro").await.unwrap().is_none());
    assert_eq!(consumer_state(&js, &n).await.0, 1, "delivered, not acked");
    assert_eq!(w.calls(&format!("POST /connect/account/{customer}")), 0);

    // Delivered again after ack_wait, to the next consumer, which runs it.
    let consumer = start(&cfg, w.commander.clone());
    assert_eq!(w.finished("cmd-ro").await.state, "completed");
    let acked = espm_testkit::e2e::eventually(WAIT, || async {
        Some(consumer_state(&js, &n).await).filter(|s| *s == (0, 0))
    })
    .await;
    stop(consumer).await;
    assert_eq!(acked, Some((0, 0)));
    assert_eq!(w.calls(&format!("POST /connect/account/{customer}")), 1);
    assert!(w.connected(customer));
    let _ = js.delete_stream(&n.stream).await;
}
