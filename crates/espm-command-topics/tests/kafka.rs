//! Command topics on a real Kafka-protocol broker (tansu), the simulator and a real journal:
//! commands sent by a plain producer run once, malformed ones are answered and do not block,
//! offsets are committed only after the result is journalled.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{accept, failed_detail, structured, World, WAIT};
use espm_command::Commander;
use espm_command_topics::{types, KafkaCommandConsumer};
use espm_config::KafkaCommandTopicConfig;
use espm_testkit::tansu::Tansu;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "espm.commands";
const GROUP: &str = "bridge-commands";

fn config(broker: &Tansu, create_topics: bool) -> KafkaCommandTopicConfig {
    KafkaCommandTopicConfig {
        name: "kafka-commands".into(),
        brokers: broker.bootstrap(),
        topics: vec![TOPIC.into()],
        group_id: Some(GROUP.into()),
        account: None,
        create_topics,
        topic_partitions: 1,
        topic_replication_factor: -1,
        properties: BTreeMap::from([
            // Quick group joins and rejoins on a single test broker.
            ("session.timeout.ms".to_string(), "6000".to_string()),
            ("heartbeat.interval.ms".to_string(), "500".to_string()),
        ]),
        secret_files: BTreeMap::new(),
        secret_envs: BTreeMap::new(),
    }
}

async fn create_topic(broker: &Tansu) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let res = admin
        .create_topics(
            [&NewTopic::new(TOPIC, 1, TopicReplication::Fixed(-1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in res {
        r.unwrap();
    }
}

fn producer(broker: &Tansu) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, headers: &[(&str, &str)], body: &[u8]) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    p.send(
        FutureRecord::<(), [u8]>::to(TOPIC).payload(body).headers(h),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

async fn send_structured(p: &FutureProducer, event: serde_json::Value) {
    send(
        p,
        &[(
            "content-type",
            "application/cloudevents+json; charset=UTF-8",
        )],
        event.to_string().as_bytes(),
    )
    .await;
}

fn start(broker: &Tansu, commander: Commander) -> (CancellationToken, JoinHandle<()>) {
    start_with(config(broker, false), commander)
}

fn start_with(
    cfg: KafkaCommandTopicConfig,
    commander: Commander,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let consumer = KafkaCommandConsumer::new(&cfg).unwrap();
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

/// The group's committed offset of partition 0.
fn committed(broker: &Tansu) -> Offset {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", GROUP)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.find_partition(TOPIC, 0).unwrap().offset()
}

#[tokio::test]
async fn commands_run_once_malformed_ones_are_answered_and_offsets_follow_the_journal() {
    let w = World::new().await;
    let broker = Tansu::start();
    create_topic(&broker).await;
    let p = producer(&broker);
    let first = w.connection_request().await;
    let second = w.connection_request().await;

    // 0: structured answer; 1: the same id again, in binary mode; 2: not JSON;
    // 3: an unknown type; 4: a disconnect without keepShares; 5: a good binary command.
    send_structured(&p, structured("cmd-1", types::ANSWER, accept(first))).await;
    let body = accept(first).to_string();
    let binary = |id: &'static str, ty: &'static str| {
        vec![
            ("ce_specversion", "1.0"),
            ("ce_id", id),
            ("ce_source", "urn:test:billing"),
            ("ce_type", ty),
            ("ce_espmaccount", "main"),
            ("content-type", "application/json"),
        ]
    };
    send(&p, &binary("cmd-1", types::ANSWER), body.as_bytes()).await;
    send(&p, &[], b"{not json").await;
    send_structured(
        &p,
        structured("bad-type", "gov.energystar.pm.command.launch", json!({})),
    )
    .await;
    send_structured(
        &p,
        structured(
            "bad-fields",
            types::DISCONNECT,
            json!({"customerId": first}),
        ),
    )
    .await;
    send(
        &p,
        &binary("cmd-2", types::ANSWER),
        accept(second).to_string().as_bytes(),
    )
    .await;

    let consumer = start(&broker, w.commander.clone());
    let v2 = w.finished("cmd-2").await;
    assert_eq!(v2.state, "completed", "{v2:?}");
    assert_eq!(v2.requester.as_deref(), Some("urn:test:billing"));
    assert_eq!(v2.origin, "kafka");
    let v1 = w.finished("cmd-1").await;
    assert_eq!(v1.state, "completed");
    assert_eq!(v1.requester.as_deref(), Some("urn:test:crm"));
    let path = format!("POST /connect/account/{first}");
    assert_eq!(w.calls(&path), 1, "the same id sent twice calls PM once");
    assert!(w.connected(first) && w.connected(second));
    let r1 = w.results("cmd-1");
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].ty, espm_events::COMMAND_COMPLETED);

    // The malformed ones were answered, each naming its problem; the one without an id under
    // its position in the topic.
    let garbage = w.finished("kafka/espm.commands/0/2").await;
    assert_eq!(garbage.state, "failed");
    assert!(failed_detail(&w, "kafka/espm.commands/0/2").contains("not a CloudEvent"));
    w.finished("bad-type").await;
    assert!(failed_detail(&w, "bad-type").contains("unknown command type"));
    w.finished("bad-fields").await;
    assert!(failed_detail(&w, "bad-fields").contains("keepShares"));
    assert_eq!(
        w.results("bad-fields")[0].data["requester"],
        "urn:test:crm",
        "the requester is the event source"
    );

    // Everything journalled is committed.
    let offset = espm_testkit::e2e::eventually(WAIT, || async {
        Some(committed(&broker)).filter(|o| *o == Offset::Offset(6))
    })
    .await;
    assert_eq!(offset, Some(Offset::Offset(6)));
    stop(consumer).await;

    // A restarted consumer resumes after them: a new command runs, the old ones do not.
    let third = w.connection_request().await;
    send_structured(&p, structured("cmd-3", types::ANSWER, accept(third))).await;
    // An id reused for another command: refused under its position, the first result stands.
    send_structured(
        &p,
        structured(
            "cmd-1",
            types::DISCONNECT,
            json!({"customerId": first, "keepShares": true}),
        ),
    )
    .await;
    let consumer = start(&broker, w.commander.clone());
    assert_eq!(w.finished("cmd-3").await.state, "completed");
    w.finished("kafka/espm.commands/0/7").await;
    assert!(failed_detail(&w, "kafka/espm.commands/0/7").contains("already used"));
    let offset = espm_testkit::e2e::eventually(WAIT, || async {
        Some(committed(&broker)).filter(|o| *o == Offset::Offset(8))
    })
    .await;
    stop(consumer).await;
    assert_eq!(offset, Some(Offset::Offset(8)));
    assert_eq!(w.calls(&path), 1);
    assert!(w.connected(first), "the reused id did not disconnect");
    assert_eq!(w.results("cmd-1").len(), 1);
}

#[tokio::test]
async fn a_command_whose_result_was_not_journalled_is_delivered_again() {
    let w = World::new().await;
    let broker = Tansu::start();
    let p = producer(&broker);
    let customer = w.connection_request().await;

    // The journal refuses writes: the command is read, not journalled, never committed.
    // This consumer creates the topic (`create_topics`); the producer waits for it.
    let consumer = start_with(config(&broker, true), w.read_only_commander());
    send_structured(&p, structured("cmd-ro", types::ANSWER, accept(customer))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(consumer).await;
    assert!(w.commander.command("cmd-ro").await.unwrap().is_none());
    assert_eq!(committed(&broker), Offset::Invalid, "nothing was committed");
    assert_eq!(w.calls(&format!("POST /connect/account/{customer}")), 0);

    // The next consumer of the group gets it again and runs it.
    let consumer = start(&broker, w.commander.clone());
    assert_eq!(w.finished("cmd-ro").await.state, "completed");
    stop(consumer).await;
    assert_eq!(w.calls(&format!("POST /connect/account/{customer}")), 1);
    assert!(w.connected(customer));
    assert_eq!(committed(&broker), Offset::Offset(1));
}
