//! Against the real NATS server with JetStream at 127.0.0.1:4222. Every test uses its own stream
//! name and subject prefix (random suffix) and deletes its streams at the end.

use std::time::{Duration, SystemTime};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, consumer::pull};
use espm_config::NatsSinkConfig;
use espm_events::CloudEvent;
use espm_sink::{Envelope, Outcome, Sink, SinkError};
use espm_sink_nats::{NatsSink, CONTENT_TYPE};
use futures::StreamExt;
use rand::Rng;

const URL: &str = "nats://127.0.0.1:4222";

fn suffix() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn config(extra: serde_json::Value) -> NatsSinkConfig {
    let mut v = serde_json::json!({"name": "nats-test", "url": URL});
    if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            base.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("valid test config")
}

fn event(id: &str, ty: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: id.into(),
        source: "urn:espm:sim:acme".into(),
        ty: ty.into(),
        subject: Some("property/5000006".into()),
        time: Some("2024-05-01T12:00:00Z".into()),
        datacontenttype: "application/json".into(),
        dataschema: "https://espm-bridge.dev/schemas/share/v1.json".into(),
        espmenvironment: "sim".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({"propertyId": 5000006, "note": id}).into(),
    }
}

fn env(seq: i64, ev: CloudEvent) -> Envelope {
    Envelope {
        seq,
        event: ev.into(),
        enqueued_at: SystemTime::now(),
        attempts: 0,
    }
}

async fn js() -> jetstream::Context {
    let client = async_nats::connect(URL)
        .await
        .expect("NATS at 127.0.0.1:4222");
    jetstream::new(client)
}

async fn message_count(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

async fn delete_stream(js: &jetstream::Context, stream: &str) {
    let _ = js.delete_stream(stream).await;
}

/// A sink with its own stream `S_<sfx>` capturing `espmtest<sfx>.>`.
fn js_sink(sfx: &str) -> (NatsSink, String, String) {
    let stream = format!("S_{sfx}");
    let prefix = format!("espmtest{sfx}");
    let sink = NatsSink::new(&config(serde_json::json!({
        "subject": format!("{prefix}.{{environment}}.{{type}}"),
        "stream": stream,
        "create_stream": true,
        "stream_subjects": [format!("{prefix}.>")],
    })))
    .expect("valid sink");
    (sink, stream, prefix)
}

#[tokio::test]
async fn headers_payload_and_subject_read_back_with_pull_consumer() {
    let sfx = suffix();
    let (sink, stream, prefix) = js_sink(&sfx);
    let js = js().await;
    sink.start().await.expect("start creates the stream");

    let e1 = event("ev-1", "gov.energystar.pm.share.revoked");
    let mut e2 = event("ev-2", "gov.energystar.pm.connection.accepted");
    e2.subject = None;
    e2.time = None;
    // A configured account name is free text: on the wire it is percent-encoded (NATS binding).
    e2.espmaccount = "Acme Énergie \"Nord\"".into();
    e2.source = format!("urn:espm:sim:{}", e2.espmaccount);
    let out = sink
        .deliver(&[env(1, e1.clone()), env(2, e2.clone())])
        .await;
    assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);

    let s = js.get_stream(&stream).await.unwrap();
    let consumer = s
        .create_consumer(pull::Config {
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer
        .batch()
        .max_messages(2)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = msgs.next().await {
        got.push(m.unwrap());
    }
    assert_eq!(got.len(), 2);

    let m1 = &got[0];
    assert_eq!(
        m1.subject.as_str(),
        format!("{prefix}.sim.gov.energystar.pm.share.revoked")
    );
    let h = m1.headers.as_ref().expect("headers");
    let hv = |n: &str| h.get(n).map(|v| v.as_str().to_string());
    assert_eq!(hv("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(hv("ce-id").as_deref(), Some("ev-1"));
    assert_eq!(hv("ce-source").as_deref(), Some("urn:espm:sim:acme"));
    assert_eq!(
        hv("ce-type").as_deref(),
        Some("gov.energystar.pm.share.revoked")
    );
    assert_eq!(hv("ce-subject").as_deref(), Some("property/5000006"));
    assert_eq!(hv("ce-time").as_deref(), Some("2024-05-01T12:00:00Z"));
    assert_eq!(
        hv("ce-dataschema").as_deref(),
        Some("https://espm-bridge.dev/schemas/share/v1.json")
    );
    assert_eq!(hv("ce-espmenvironment").as_deref(), Some("sim"));
    assert_eq!(hv("ce-espmaccount").as_deref(), Some("acme"));
    assert_eq!(hv("content-type").as_deref(), Some(CONTENT_TYPE));
    assert_eq!(h.get(NATS_MESSAGE_ID).map(|v| v.as_str()), Some("ev-1"));
    let back: CloudEvent = serde_json::from_slice(&m1.payload).unwrap();
    assert_eq!(back, e1);

    let m2 = &got[1];
    assert_eq!(
        m2.subject.as_str(),
        format!("{prefix}.sim.gov.energystar.pm.connection.accepted")
    );
    let h2 = m2.headers.as_ref().expect("headers");
    assert!(h2.get("ce-subject").is_none());
    assert!(h2.get("ce-time").is_none());
    assert_eq!(
        h2.get("ce-espmaccount").map(|v| v.as_str()),
        Some("Acme%20%C3%89nergie%20%22Nord%22")
    );
    assert_eq!(
        h2.get("ce-source").map(|v| v.as_str()),
        Some("urn:espm:sim:Acme%20%C3%89nergie%20%22Nord%22")
    );
    let back: CloudEvent = serde_json::from_slice(&m2.payload).unwrap();
    assert_eq!(back, e2);

    sink.health().await.expect("healthy");
    sink.close(Duration::from_secs(2)).await;
    delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn duplicate_event_id_is_stored_once() {
    let sfx = suffix();
    let (sink, stream, _) = js_sink(&sfx);
    let js = js().await;
    sink.start().await.unwrap();

    let e1 = event("dup-1", "gov.energystar.pm.share.revoked");
    assert_eq!(
        sink.deliver(&[env(1, e1.clone())]).await,
        vec![Outcome::Delivered]
    );
    assert_eq!(message_count(&js, &stream).await, 1);

    // A retried publish of the same event (duplicate PubAck) still counts as delivered.
    let e2 = event("dup-2", "gov.energystar.pm.share.revoked");
    let out = sink
        .deliver(&[env(1, e1.clone()), env(2, e2), env(1, e1)])
        .await;
    assert_eq!(out, vec![Outcome::Delivered; 3]);
    assert_eq!(message_count(&js, &stream).await, 2);

    delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn pipelining_keeps_one_outcome_per_event_in_order() {
    let sfx = suffix();
    let stream = format!("S_{sfx}");
    let prefix = format!("espmtest{sfx}");
    let sink = NatsSink::new(&config(serde_json::json!({
        "subject": format!("{prefix}.{{id}}"),
        "stream": stream,
        "create_stream": true,
        "stream_subjects": [format!("{prefix}.>")],
        "max_in_flight": 4,
    })))
    .unwrap();
    let js = js().await;
    sink.start().await.unwrap();
    let batch: Vec<Envelope> = (0..25)
        .map(|i| env(i, event(&format!("p-{i}"), "t")))
        .collect();
    // More events than permits: the acks must come back while publishing goes on (a bound,
    // not a performance figure: a deadlock fails here instead of hanging).
    let limit = std::time::Duration::from_secs(30);
    let out = tokio::time::timeout(limit, sink.deliver(&batch))
        .await
        .expect("deliver with more events than max_in_flight never finished");
    assert_eq!(out, vec![Outcome::Delivered; 25]);
    assert_eq!(message_count(&js, &stream).await, 25);
    // Three batches in flight before any of their acks is awaited, as the driver pipelines.
    assert!(sink.pipeline_depth() > 1);
    let mut acks = Vec::new();
    for b in 0..3 {
        let batch: Vec<Envelope> = (0..10)
            .map(|i| env(100 + b * 10 + i, event(&format!("q-{b}-{i}"), "t")))
            .collect();
        let submitted = tokio::time::timeout(limit, sink.submit(batch))
            .await
            .expect("submit never returned");
        acks.push(submitted);
    }
    for a in acks {
        let out = tokio::time::timeout(limit, a)
            .await
            .expect("acks never came");
        assert_eq!(out, vec![Outcome::Delivered; 10]);
    }
    assert_eq!(message_count(&js, &stream).await, 55);
    // The stream holds them in publish order, across batches too.
    let s = js.get_stream(&stream).await.unwrap();
    for (subject, seq) in [("p-0", 1u64), ("p-24", 25), ("q-0-0", 26), ("q-2-9", 55)] {
        let m = s.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), format!("{prefix}.{subject}"));
    }
    delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn create_stream_creates_then_second_start_verifies() {
    let sfx = suffix();
    let (sink, stream, prefix) = js_sink(&sfx);
    let js = js().await;
    assert!(js.get_stream(&stream).await.is_err(), "fresh name");

    sink.start().await.expect("creates");
    let mut s = js.get_stream(&stream).await.expect("created");
    let info = s.info().await.unwrap();
    assert_eq!(info.config.subjects, vec![format!("{prefix}.>")]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));

    // start() is idempotent on the same sink, and a sink that may not create verifies.
    sink.start().await.expect("second start");
    let verifier = NatsSink::new(&config(serde_json::json!({
        "subject": format!("{prefix}.x"),
        "stream": stream,
    })))
    .unwrap();
    verifier.start().await.expect("verifies existing stream");
    verifier.health().await.expect("healthy");

    // Once the stream is gone, health says so.
    delete_stream(&js, &stream).await;
    let err = verifier.health().await.expect_err("stream deleted");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn missing_stream_without_create_stream_fails_start_clearly() {
    let sfx = suffix();
    let stream = format!("MISSING_{sfx}");
    let sink = NatsSink::new(&config(serde_json::json!({
        "stream": stream,
    })))
    .unwrap();
    let err = sink.start().await.expect_err("stream does not exist");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&stream), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("create_stream"), "{msg}");
    assert!(js().await.get_stream(&stream).await.is_err(), "not created");
}

#[tokio::test]
async fn publish_no_stream_captures_is_retry() {
    let sfx = suffix();
    let sink = NatsSink::new(&config(serde_json::json!({
        "subject": format!("espmnocapture{sfx}.{{type}}"),
        "ack_timeout": "2s",
    })))
    .unwrap();
    sink.start().await.unwrap();
    let out = sink.deliver(&[env(1, event("n-1", "t.x"))]).await;
    assert_eq!(out.len(), 1);
    match &out[0] {
        Outcome::Retry { reason, .. } => {
            assert!(
                reason.contains(&format!("espmnocapture{sfx}.t.x")),
                "{reason}"
            )
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn core_mode_delivers_to_plain_subscriber() {
    let sfx = suffix();
    let prefix = format!("espmcore{sfx}");
    let client = async_nats::connect(URL).await.unwrap();
    let mut sub = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();

    let sink = NatsSink::new(&config(serde_json::json!({
        "subject": format!("{prefix}.{{account}}.{{subject}}"),
        "jetstream": false,
    })))
    .unwrap();
    sink.start().await.unwrap();
    // The event subject has a space and `*`: sanitised, still delivered.
    let mut e = event("c-1", "gov.energystar.pm.share.revoked");
    e.subject = Some("prop *1".into());
    let out = sink.deliver(&[env(1, e.clone())]).await;
    assert_eq!(out, vec![Outcome::Delivered]);

    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("message arrives")
        .expect("subscription open");
    assert_eq!(m.subject.as_str(), format!("{prefix}.acme.prop__1"));
    let h = m.headers.expect("headers");
    assert_eq!(h.get("ce-id").map(|v| v.as_str()), Some("c-1"));
    assert!(h.get(NATS_MESSAGE_ID).is_none());
    let back: CloudEvent = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(back, e);
    sink.health().await.expect("healthy");
    sink.close(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn deliver_before_start_connects_lazily() {
    let sfx = suffix();
    let (sink, stream, _) = js_sink(&sfx);
    let out = sink
        .deliver(&[env(1, event("l-1", "gov.energystar.pm.share.revoked"))])
        .await;
    assert_eq!(out, vec![Outcome::Delivered]);
    let js = js().await;
    assert_eq!(message_count(&js, &stream).await, 1);
    delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn unreachable_server_fails_start_and_retries_delivery() {
    // Port 1 on localhost refuses connections.
    let sink = NatsSink::new(&config(serde_json::json!({
        "url": "nats://user:pa55word@127.0.0.1:1",
        "connect_timeout": "2s",
    })))
    .unwrap();
    let err = sink.start().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
    assert!(!err.to_string().contains("pa55word"), "{err}");
    let out = sink.deliver(&[env(1, event("u-1", "t"))]).await;
    assert!(matches!(out.as_slice(), [Outcome::Retry { .. }]), "{out:?}");
    assert!(sink.health().await.is_err());
}

#[test]
fn debug_never_shows_secrets() {
    let dir = std::env::temp_dir().join(format!("espm-nats-{}", suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    let nkey = dir.join("nkey");
    std::fs::write(&pw, "s3cret-password\n").unwrap();
    std::fs::write(
        &nkey,
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY\n",
    )
    .unwrap();
    let var = format!("ESPM_NATS_TEST_TOKEN_{}", suffix());
    std::env::set_var(&var, "t0ken-value");
    let sink = NatsSink::new(&config(serde_json::json!({
        "url": "nats://urluser:urlpass@127.0.0.1:4222",
        "username": "alice",
        "password_file": pw,
        "token_env": var,
        "nkey_file": nkey,
    })))
    .unwrap();
    let dbg = format!("{sink:?} {sink:#?}");
    for secret in ["s3cret-password", "t0ken-value", "SUACSSL3", "urlpass"] {
        assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
    }
    assert!(dbg.contains("alice"), "{dbg}");
    assert!(dbg.contains("***"), "{dbg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_configurations_are_rejected() {
    let bad = |extra: serde_json::Value, needle: &str| {
        let err = NatsSink::new(&config(extra)).expect_err("invalid");
        assert!(matches!(err, SinkError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    bad(serde_json::json!({"subject": "espm.{nope}"}), "nope");
    bad(serde_json::json!({"stream": "a.b"}), "stream name");
    bad(serde_json::json!({"create_stream": true}), "create_stream");
    bad(serde_json::json!({"username": "u"}), "password");
    bad(serde_json::json!({"max_in_flight": 0}), "max_in_flight");
    bad(serde_json::json!({"tls_cert_file": "/x"}), "tls_key_file");
    bad(
        serde_json::json!({"token_env": "ESPM_NATS_TEST_SURELY_UNSET_VAR"}),
        "ESPM_NATS_TEST_SURELY_UNSET_VAR",
    );
}

/// A private `nats-server` (same binary as the shared one) with authentication, on a free port;
/// killed (by its own pid) when dropped.
struct AuthServer {
    child: std::process::Child,
    port: u16,
}

impl AuthServer {
    fn spawn(args: &[&str]) -> AuthServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH (the same install as the shared server)");
        AuthServer { child, port }
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private nats-server did not start");
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn user_password_and_token_auth_against_private_server() {
    let dir = std::env::temp_dir().join(format!("espm-nats-auth-{}", suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    let wrong = dir.join("wrong");
    std::fs::write(&good, "pw-right\n").unwrap();
    std::fs::write(&wrong, "pw-wrong\n").unwrap();

    let srv = AuthServer::spawn(&["--user", "espm", "--pass", "pw-right"]);
    srv.wait_ready().await;
    let url = format!("nats://127.0.0.1:{}", srv.port);
    let core = |pw: &std::path::Path| {
        NatsSink::new(&config(serde_json::json!({
            "url": url,
            "jetstream": false,
            "username": "espm",
            "password_file": pw,
            "subject": "espm.auth.{id}",
            "connect_timeout": "2s",
        })))
        .unwrap()
    };
    let ok = core(&good);
    ok.start().await.expect("right password connects");
    assert_eq!(
        ok.deliver(&[env(1, event("a-1", "t"))]).await,
        vec![Outcome::Delivered]
    );
    let bad = core(&wrong);
    let err = bad.start().await.expect_err("wrong password is refused");
    assert!(!err.to_string().contains("pw-wrong"), "{err}");
    ok.close(Duration::from_secs(1)).await;
    drop(srv);

    let token_var = format!("ESPM_NATS_TEST_TOKEN_{}", suffix());
    std::env::set_var(&token_var, "tok-right");
    let srv = AuthServer::spawn(&["--auth", "tok-right"]);
    srv.wait_ready().await;
    let sink = NatsSink::new(&config(serde_json::json!({
        "url": format!("nats://127.0.0.1:{}", srv.port),
        "jetstream": false,
        "token_env": token_var,
        "connect_timeout": "2s",
    })))
    .unwrap();
    sink.start().await.expect("token connects");
    sink.health().await.expect("healthy");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn lost_connection_turns_health_red_and_deliveries_into_retry() {
    let srv = AuthServer::spawn(&[]);
    srv.wait_ready().await;
    let sink = NatsSink::new(&config(serde_json::json!({
        "url": format!("nats://127.0.0.1:{}", srv.port),
        "jetstream": false,
        "ack_timeout": "1s",
    })))
    .unwrap();
    sink.start().await.unwrap();
    assert_eq!(
        sink.deliver(&[env(1, event("d-1", "t"))]).await,
        vec![Outcome::Delivered]
    );
    drop(srv);
    let mut down = false;
    for _ in 0..200 {
        if sink.health().await.is_err() {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "health never noticed the server is gone");
    let out = sink.deliver(&[env(2, event("d-2", "t"))]).await;
    assert!(matches!(out.as_slice(), [Outcome::Retry { .. }]), "{out:?}");
}

#[tokio::test]
async fn a_message_over_max_payload_is_a_dead_letter_not_an_endless_retry() {
    let sfx = suffix();
    let (sink, stream, _) = js_sink(&sfx);
    let js = js().await;
    sink.start().await.unwrap();
    let mut big = event("big-1", "gov.energystar.pm.share.revoked");
    big.data = serde_json::json!({ "blob": "x".repeat(2 * 1024 * 1024) }).into();
    let ok = event("small-1", "gov.energystar.pm.share.revoked");
    let out = sink.deliver(&[env(1, big), env(2, ok)]).await;
    assert!(
        matches!(&out[0], Outcome::DeadLetter { reason, .. } if reason.contains("max_payload")),
        "{out:?}"
    );
    assert_eq!(out[1], Outcome::Delivered);
    assert_eq!(message_count(&js, &stream).await, 1);
    delete_stream(&js, &stream).await;
}
