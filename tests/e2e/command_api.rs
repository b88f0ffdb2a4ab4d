//! The command API of the running bridge: a pending request created in the simulator, answered
//! three times through the API with one Idempotency-Key, ends accepted in the simulator's world
//! and in one `connection.resolved` event, after one PM call; the result event carries the
//! command id as `causationid`; the CLI shares the command path.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_COMMAND_API_TEST_PASSWORD";
const TOKEN: &str = "e2e-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_through_the_api_is_one_pm_call_and_one_resolved_event() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cmd", "pw", 13).await;
    let ctl = SimControl::of(&sim);
    let customer = ctl.customer().await;
    ctl.request_connection(customer, &[("Customer Number", "C-9")])
        .await;
    let port = free_port();
    let tokens = dir.path().join("api-tokens");
    std::fs::write(&tokens, format!("# the CRM\ncrm={TOKEN}\n")).unwrap();
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml("cmd", &sim.base_url(), "cmd", PASSWORD_ENV, "clear"),
        events_path.display(),
        tokens.display(),
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
    let of_type = |ty: &str| -> Vec<Value> {
        read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    };
    let requested = eventually(Duration::from_secs(30), || {
        let n = of_type("gov.energystar.pm.connection.requested").len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert!(requested.is_some(), "{}", bridge.log());

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // The pending request, from the journal's snapshot.
    let pending: Value = http
        .get(format!(
            "{base}/api/v1/accounts/cmd/pending?kind=connection"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["items"][0]["requestId"], customer, "{pending}");

    let url = format!("{base}/api/v1/accounts/cmd/pending/connection/{customer}/answer");
    for _ in 0..3 {
        let r = http
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "crm-answer-1")
            .json(&json!({"decision": "accept"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let calls = sim.state().calls();
    assert_eq!(
        calls
            .get(&format!("POST /connect/account/{customer}"))
            .copied(),
        Some(1),
        "{calls:?}"
    );
    assert!(sim.state().with_world(|w| w.is_connected(customer)));

    let resolved = eventually(Duration::from_secs(30), || {
        let r = of_type("gov.energystar.pm.connection.resolved");
        async move { (!r.is_empty()).then_some(r) }
    })
    .await
    .unwrap_or_else(|| panic!("no resolved event:\n{}", bridge.log()));
    let completed = eventually(Duration::from_secs(30), || {
        let r = of_type("gov.energystar.pm.command.completed");
        async move { (!r.is_empty()).then_some(r) }
    })
    .await
    .unwrap_or_else(|| panic!("no command.completed event:\n{}", bridge.log()));
    // Let another walk pass: still one of each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(of_type("gov.energystar.pm.connection.resolved").len(), 1);
    assert_eq!(resolved[0]["data"]["resolution"], "accepted");
    // The resolved event says who answered: the command and the token's name.
    assert_eq!(
        resolved[0]["data"]["answeredBy"],
        json!({"commandId": "crm-answer-1", "requester": "crm"})
    );
    assert_eq!(of_type("gov.energystar.pm.command.completed").len(), 1);
    assert_eq!(completed[0]["causationid"], "crm-answer-1");
    assert_eq!(completed[0]["data"]["requester"], "crm");
    assert_eq!(completed[0]["data"]["outcome"], "done");

    // The CLI goes through the same path: a disconnect PM reports as already done exits 0.
    let stranger = ctl.customer().await;
    let out = std::process::Command::new(bridge_bin())
        .args(["pm", "--config"])
        .arg(&config_path)
        .args(["disconnect", &stranger.to_string(), "--keep-shares", "true"])
        .env(PASSWORD_ENV, "pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));

    bridge.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}

/// A command published on a JetStream command topic by a plain client runs in the running
/// bridge: the simulator shows it and the result event carries its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_published_on_jetstream_runs_in_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cmdjs", "pw", 14).await;
    let ctl = SimControl::of(&sim);
    let customer = ctl.customer().await;
    ctl.request_connection(customer, &[]).await;
    let pid = std::process::id();
    let stream = format!("E2E_COMMANDS_{pid}");
    let prefix = format!("e2e.{pid}.commands");
    // Results go out on a JetStream sink too, read back below by a plain consumer.
    let results = format!("E2E_RESULTS_{pid}");
    let results_prefix = format!("e2e.{pid}.results");
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n\n[[sinks]]\ntype = \"nats\"\nname = \"bus\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{results_prefix}.{{type}}\"\nstream = \"{results}\"\ncreate_stream = true\nstream_subjects = [\"{results_prefix}.>\"]\n\n[[command_topics]]\ntype = \"nats\"\nname = \"crm\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"{stream}\"\nsubjects = [\"{prefix}.>\"]\ncreate_stream = true\n",
        journal_toml(dir.path()),
        account_toml("cmdjs", &sim.base_url(), "cmdjs", PASSWORD_ENV, "clear"),
        events_path.display(),
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
    let js =
        async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.unwrap());
    // The bridge creates the stream; publish once it exists.
    let ready = eventually(Duration::from_secs(30), || {
        let js = js.clone();
        let stream = stream.clone();
        async move { js.get_stream(&stream).await.ok().map(|_| ()) }
    })
    .await;
    assert!(ready.is_some(), "no command stream:\n{}", bridge.log());
    let command = json!({
        "specversion": "1.0",
        "id": "js-answer-1",
        "source": "urn:crm",
        "type": "gov.energystar.pm.command.answer",
        "datacontenttype": "application/json",
        "data": {"kind": "connection", "requestId": customer, "decision": "reject", "note": "not ours"},
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("content-type", "application/cloudevents+json");
    js.publish_with_headers(format!("{prefix}.crm"), headers, command.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(30), || {
        let r: Vec<Value> = read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == "gov.energystar.pm.command.completed")
            .collect();
        async move { (!r.is_empty()).then_some(r) }
    })
    .await
    .unwrap_or_else(|| panic!("no command.completed:\n{}", bridge.log()));
    assert_eq!(done[0]["causationid"], "js-answer-1");
    assert_eq!(done[0]["data"]["origin"], "nats");
    assert!(!sim.state().with_world(|w| w.is_connected(customer)));
    assert_eq!(
        sim.state()
            .calls()
            .get(&format!("POST /connect/account/{customer}"))
            .copied(),
        Some(1)
    );
    // A plain JetStream consumer reads the result on its subject, as a downstream service would.
    let completed_subject = format!("{results_prefix}.gov.energystar.pm.command.completed");
    let from_bus = eventually(Duration::from_secs(30), || {
        let (js, results, subject) = (js.clone(), results.clone(), completed_subject.clone());
        async move {
            let st = js.get_stream(&results).await.ok()?;
            let consumer = st
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    filter_subject: subject,
                    ..Default::default()
                })
                .await
                .ok()?;
            let mut msgs = consumer
                .fetch()
                .max_messages(10)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .ok()?;
            let mut got = Vec::new();
            while let Some(Ok(m)) = msgs.next().await {
                got.push(serde_json::from_slice::<Value>(&m.payload).ok()?);
            }
            (!got.is_empty()).then_some(got)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no command.completed on JetStream:\n{}", bridge.log()));
    assert_eq!(from_bus.len(), 1, "{from_bus:?}");
    assert_eq!(from_bus[0]["causationid"], "js-answer-1");
    assert_eq!(from_bus[0]["id"], done[0]["id"]);
    assert_eq!(from_bus[0]["data"]["outcome"], "done", "{}", from_bus[0]);
    bridge.terminate(Duration::from_secs(20));
    let _ = js.delete_stream(&stream).await;
    let _ = js.delete_stream(&results).await;
    sim.shutdown().await;
}

/// A bridge killed after PM carried out a command but before PM's answer arrived: at the next
/// start the command is checked against PM (the request is no longer pending) and completes as
/// `nothing_to_do`, without a second PM call; the same key sent again returns that result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_mid_command_resumes_without_a_second_pm_call() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cmdkill", "pw", 15).await;
    let ctl = SimControl::of(&sim);
    let customer = ctl.customer().await;
    ctl.request_connection(customer, &[]).await;
    let port = free_port();
    let tokens = dir.path().join("api-tokens");
    std::fs::write(&tokens, format!("crm={TOKEN}\n")).unwrap();
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml("cmdkill", &sim.base_url(), "cmdkill", PASSWORD_ENV, "clear"),
        events_path.display(),
        tokens.display(),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let env = [(PASSWORD_ENV, "pw")];
    let mut bridge = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let api_up = |http: reqwest::Client, base: String| async move {
        eventually(Duration::from_secs(30), || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                http.get(format!("{base}/api/v1/openapi.json"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await
    };
    assert!(
        api_up(http.clone(), base.clone()).await.is_some(),
        "{}",
        bridge.log()
    );

    // PM carries the answer out at once but answers only after 20 s.
    let path = format!("/connect/account/{customer}");
    ctl.set_faults(&espm_sim::FaultConfig {
        respond_after_ms: 20_000,
        paths: vec![path.clone()],
        ..espm_sim::FaultConfig::default()
    })
    .await;
    let url = format!("{base}/api/v1/accounts/cmdkill/pending/connection/{customer}/answer");
    let in_flight = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", "killed-1")
                .json(&json!({"decision": "accept"}))
                .send()
                .await
        })
    };
    let acted = eventually(Duration::from_secs(15), || {
        let done = sim.state().with_world(|w| w.is_connected(customer));
        async move { done.then_some(()) }
    })
    .await;
    assert!(
        acted.is_some(),
        "PM never saw the answer:\n{}",
        bridge.log()
    );
    bridge.kill9();
    let _ = in_flight.await;
    ctl.set_faults(&espm_sim::FaultConfig::default()).await;
    let key = format!("POST {path}");
    assert_eq!(sim.state().calls().get(&key).copied(), Some(1));

    let mut bridge = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    assert!(
        api_up(http.clone(), base.clone()).await.is_some(),
        "{}",
        bridge.log()
    );
    let view = eventually(Duration::from_secs(30), || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let v: Value = http
                .get(format!("{base}/api/v1/commands/killed-1"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["state"] == "completed").then_some(v)
        }
    })
    .await
    .unwrap_or_else(|| panic!("the command was not reconciled:\n{}", bridge.log()));
    assert_eq!(view["outcome"], "nothing_to_do", "{view}");
    // The same key again: the first result, no PM call.
    let again: Value = http
        .post(&url)
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "killed-1")
        .json(&json!({"decision": "accept"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcome"], "nothing_to_do", "{again}");
    assert_eq!(
        sim.state().calls().get(&key).copied(),
        Some(1),
        "the interrupted answer was sent to PM again"
    );
    let completed = eventually(Duration::from_secs(30), || {
        let r: Vec<Value> = read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == "gov.energystar.pm.command.completed")
            .collect();
        async move { (!r.is_empty()).then_some(r) }
    })
    .await
    .unwrap_or_else(|| panic!("no command.completed:\n{}", bridge.log()));
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["causationid"], "killed-1");
    bridge.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}

/// Kafka both ways: a plain producer sends a command on a command topic; the bridge runs it
/// (the simulator shows the effect, one PM call) and its result reaches a Kafka sink, where a
/// plain consumer reads it in binary mode with the command id as `ce_causationid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_on_kafka_runs_and_its_result_is_read_from_kafka() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cmdkafka", "pw", 15).await;
    let ctl = SimControl::of(&sim);
    let customer = ctl.customer().await;
    ctl.request_connection(customer, &[]).await;
    let kafka = espm_testkit::tansu::Tansu::start();
    let sfx = format!("{:x}", rand::random::<u32>());
    let (commands, results) = (format!("crm-commands-{sfx}"), format!("pm-events-{sfx}"));
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            [
                &NewTopic::new(&commands, 1, TopicReplication::Fixed(-1)),
                &NewTopic::new(&results, 1, TopicReplication::Fixed(-1)),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n\n[[sinks]]\ntype = \"kafka\"\nname = \"events\"\nbrokers = \"{brokers}\"\ntopic = \"{results}\"\n\n[[command_topics]]\ntype = \"kafka\"\nname = \"crm\"\nbrokers = \"{brokers}\"\ntopics = [\"{commands}\"]\ngroup_id = \"bridge-{sfx}\"\n[command_topics.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
        journal_toml(dir.path()),
        account_toml("cmdkafka", &sim.base_url(), "cmdkafka", PASSWORD_ENV, "clear"),
        events_path.display(),
        brokers = kafka.bootstrap(),
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

    // A plain producer: a structured CloudEvent, as any service would send it.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let command = json!({
        "specversion": "1.0",
        "id": "kafka-answer-1",
        "source": "urn:crm",
        "type": "gov.energystar.pm.command.answer",
        "datacontenttype": "application/json",
        "data": {"kind": "connection", "requestId": customer, "decision": "accept", "note": "welcome"},
    });
    let body = command.to_string();
    producer
        .send(
            FutureRecord::<(), str>::to(&commands)
                .payload(&body)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/cloudevents+json; charset=UTF-8"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // A plain consumer of the sink's topic.
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", format!("reader-{sfx}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&results]).unwrap();
    let mut stream = consumer.stream();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(m) = stream.next().await {
            let Ok(m) = m else { continue };
            let mut headers = std::collections::BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            if headers.get("ce_type").map(String::as_str)
                == Some("gov.energystar.pm.command.completed")
            {
                let value: Value = m
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok())
                    .unwrap_or(Value::Null);
                return Some((headers, value));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("no command.completed on Kafka:\n{}", bridge.log()));
    let (headers, data) = found;
    assert_eq!(
        headers.get("ce_causationid").map(String::as_str),
        Some("kafka-answer-1"),
        "{headers:?}"
    );
    assert_eq!(data["origin"], "kafka", "{data}");
    assert_eq!(data["outcome"], "done", "{data}");
    assert!(sim.state().with_world(|w| w.is_connected(customer)));
    assert_eq!(
        sim.state()
            .calls()
            .get(&format!("POST /connect/account/{customer}"))
            .copied(),
        Some(1)
    );
    bridge.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}
