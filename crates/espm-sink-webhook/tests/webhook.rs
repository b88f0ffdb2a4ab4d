//! The webhook sink against real HTTP receivers on loopback. Every signature is checked with the
//! `standardwebhooks` crate, an implementation that is not ours.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use espm_config::{WebhookMode, WebhookRetry, WebhookSinkConfig};
use espm_sink::{CloudEvent, Envelope, Outcome, Sink, SinkError};
use espm_sink_webhook::WebhookSink;
use tokio::sync::{Barrier, Semaphore};

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
// base64("second-secret-for-rotation")
const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
// base64("a-secret-nobody-configured")
const SECRET_OTHER: &str = "whsec_YS1zZWNyZXQtbm9ib2R5LWNvbmZpZ3VyZWQ=";

// ---------------------------------------------------------------- receiver

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

struct ReceiverState {
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// When set, each request waits until this many are in flight together.
    barrier: Option<Barrier>,
    /// When set, each request waits for a permit the test hands out.
    gate: Option<Semaphore>,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&state.in_flight);
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.clone());
    if let Some(b) = &state.barrier {
        // A generous bound, only so that a broken sink fails the test instead of hanging it.
        if tokio::time::timeout(Duration::from_secs(20), b.wait())
            .await
            .is_err()
        {
            return (StatusCode::IM_A_TEAPOT, HeaderMap::new(), "barrier timeout");
        }
    }
    if let Some(g) = &state.gate {
        g.acquire().await.unwrap().forget();
    }
    tokio::time::sleep(reply.delay).await;
    let mut headers = HeaderMap::new();
    for (k, v) in reply.headers {
        headers.insert(k, v.parse().unwrap());
    }
    (StatusCode::from_u16(reply.status).unwrap(), headers, "")
}

impl Receiver {
    async fn start(script: Vec<Reply>, default: Reply) -> Self {
        Self::start_with(script, default, None, false).await
    }

    async fn start_with(
        script: Vec<Reply>,
        default: Reply,
        barrier: Option<usize>,
        gate: bool,
    ) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.into()),
            default,
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            barrier: barrier.map(Barrier::new),
            gate: gate.then(|| Semaphore::new(0)),
        });
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
            .collect()
    }
}

// ---------------------------------------------------------------- helpers

fn secret_file(secrets: &[&str]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for s in secrets {
        writeln!(f, "{s}").unwrap();
    }
    f
}

fn config(name: &str, url: &str, secrets: &tempfile::NamedTempFile) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: name.into(),
        url: url.into(),
        secret_file: Some(secrets.path().to_path_buf()),
        secret_env: None,
        types: Vec::new(),
        max_in_flight: 1,
        timeout: Duration::from_secs(10),
        headers: BTreeMap::new(),
        header_files: BTreeMap::new(),
        header_envs: BTreeMap::new(),
        retry: WebhookRetry {
            schedule: vec![Duration::from_millis(1); 4],
            max_age: Duration::from_secs(3600),
            ..WebhookRetry::default()
        },
        disable_after: Duration::ZERO,
        mode: WebhookMode::Structured,
    }
}

fn event(id: &str, ty: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: id.into(),
        source: "urn:espm:test:acme".into(),
        ty: ty.into(),
        subject: Some("property/5000006".into()),
        time: Some("2024-01-02T03:04:05Z".into()),
        datacontenttype: "application/json".into(),
        dataschema: "https://espm-bridge.invalid/schemas/share.json".into(),
        espmenvironment: "test".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({"propertyId": 5000006, "note": "ünïcode ✓"}).into(),
    }
}

fn envelope(seq: i64) -> Envelope {
    Envelope {
        seq,
        event: event(&format!("evt-{seq}"), "gov.energystar.pm.share.revoked").into(),
        enqueued_at: SystemTime::now(),
        attempts: 0,
    }
}

fn verify(secret: &str, r: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&r.body, &r.headers)
        .is_ok()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn signs_per_standard_webhooks_with_every_rotated_secret() {
    let rx = Receiver::start(vec![], Reply::status(204)).await;
    let secrets = secret_file(&[SECRET_A, "", SECRET_B]);
    let mut cfg = config("hook", &rx.url, &secrets);
    cfg.headers.insert("X-Tenant".into(), "acme-t0k3n".into());
    let sink = WebhookSink::new(&cfg).unwrap();
    let env = envelope(1);

    assert_eq!(
        sink.deliver(std::slice::from_ref(&env)).await,
        vec![Outcome::Delivered]
    );

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(verify(SECRET_A, r), "old secret must verify");
    assert!(verify(SECRET_B, r), "new secret must verify");
    assert!(
        !verify(SECRET_OTHER, r),
        "an unrelated secret must not verify"
    );
    // Each secret verifies on its own signature: drop one and the other still verifies alone.
    let sigs: Vec<&str> = r.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(sigs.len(), 2);
    for (secret, sig) in [(SECRET_A, sigs[0]), (SECRET_B, sigs[1])] {
        let mut single = r.clone();
        single
            .headers
            .insert("webhook-signature", sig.parse().unwrap());
        assert!(verify(secret, &single));
        let other = if secret == SECRET_A {
            SECRET_B
        } else {
            SECRET_A
        };
        assert!(!verify(other, &single));
    }
    // A tampered body fails.
    let mut tampered = r.clone();
    tampered.body = Bytes::from(r.body.iter().copied().rev().collect::<Vec<u8>>());
    assert!(!verify(SECRET_A, &tampered));

    assert_eq!(r.headers["webhook-id"], "evt-1");
    assert_eq!(r.headers["content-type"], "application/cloudevents+json");
    assert_eq!(
        r.headers["user-agent"],
        concat!("espm-bridge/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.headers["x-tenant"], "acme-t0k3n");
    let back: CloudEvent = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(back, *env.event);
}

#[tokio::test]
async fn secrets_from_an_environment_variable() {
    let rx = Receiver::start(vec![], Reply::status(200)).await;
    let var = "ESPM_WEBHOOK_TEST_SECRETS_ENV";
    // Only this test reads this variable.
    std::env::set_var(var, format!("{SECRET_A}, {SECRET_B}"));
    let unused = secret_file(&[]);
    let mut cfg = config("env", &rx.url, &unused);
    cfg.secret_file = None;
    cfg.secret_env = Some(var.into());
    let sink = WebhookSink::new(&cfg).unwrap();
    assert_eq!(sink.deliver(&[envelope(1)]).await, vec![Outcome::Delivered]);
    let r = &rx.received()[0];
    assert!(verify(SECRET_A, r) && verify(SECRET_B, r));
}

#[tokio::test]
async fn bad_configuration_is_rejected_without_leaking_secrets() {
    let leaky = "whsec_this-is-not*base64-TOPSECRET";
    let f = secret_file(&[SECRET_A, leaky]);
    let cfg = config("bad", "http://127.0.0.1:9/hook", &f);
    let err = WebhookSink::new(&cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SinkError::Config { .. }), "{msg}");
    assert!(msg.contains("#2"), "{msg}");
    assert!(!msg.contains("TOPSECRET"), "{msg}");
    assert!(!format!("{err:?}").contains("TOPSECRET"));

    let f = secret_file(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
    let msg = WebhookSink::new(&config("bad", "http://127.0.0.1:9/hook", &f))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("whsec_"), "{msg}");
    assert!(!msg.contains("MfKQ9r8G"), "{msg}");

    let good = secret_file(&[SECRET_A]);
    let mut cfg = config("bad", "http://127.0.0.1:9/hook", &good);
    cfg.secret_file = None;
    assert!(WebhookSink::new(&cfg)
        .unwrap_err()
        .to_string()
        .contains("secret"));

    for url in ["not a url", "ftp://example.com/x", "file:///etc/passwd"] {
        let cfg = config("bad", url, &good);
        assert!(WebhookSink::new(&cfg).is_err(), "{url}");
    }
    let mut cfg = config("bad", "http://127.0.0.1:9/hook", &good);
    cfg.max_in_flight = 0;
    assert!(WebhookSink::new(&cfg).is_err());
    let mut cfg = config("bad", "http://127.0.0.1:9/hook", &good);
    cfg.headers
        .insert("webhook-signature".into(), "v1,forged".into());
    assert!(WebhookSink::new(&cfg).is_err());

    // The sink's Debug shows no key material.
    let sink = WebhookSink::new(&config("ok", "http://127.0.0.1:9/hook", &good)).unwrap();
    let dbg = format!("{sink:?}");
    assert!(!dbg.contains("MfKQ9r8G"), "{dbg}");
}

/// `envelope(seq)` after `attempts` earlier attempts, as the driver's retry queue hands it back.
fn retried(seq: i64, attempts: u32) -> Envelope {
    Envelope {
        attempts,
        ..envelope(seq)
    }
}

#[tokio::test]
async fn one_attempt_per_delivery_and_retries_keep_the_webhook_id() {
    let rx = Receiver::start(
        vec![Reply::status(500), Reply::status(503)],
        Reply::status(200),
    )
    .await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("retry", &rx.url, &f)).unwrap();
    for (attempts, code) in [(0, "500"), (1, "503")] {
        match &sink.deliver(&[retried(7, attempts)]).await[0] {
            Outcome::Retry {
                reason,
                retry_after,
                attempts: 1,
            } => {
                assert!(reason.contains(code), "{reason}");
                assert_eq!(
                    *retry_after,
                    Some(Duration::from_millis(1)),
                    "the schedule's delay"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        sink.deliver(&[retried(7, 2)]).await,
        vec![Outcome::Delivered]
    );
    let got = rx.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.headers["webhook-id"], "evt-7");
        assert!(verify(SECRET_A, r));
    }
    assert_eq!(got[0].body, got[2].body);
}

#[tokio::test]
async fn the_schedule_sets_each_delay_and_a_longer_retry_after_wins() {
    let rx = Receiver::start(
        vec![
            Reply::status(503),
            Reply::status(429).header("retry-after", "120"),
            Reply::status(429).header("retry-after", "1"),
        ],
        Reply::status(200),
    )
    .await;
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("ra", &rx.url, &f);
    cfg.retry.schedule = vec![
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_secs(1800),
    ];
    let sink = WebhookSink::new(&cfg).unwrap();
    let delay = |o: &Outcome| match o {
        Outcome::Retry { retry_after, .. } => retry_after.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        delay(&sink.deliver(&[retried(1, 0)]).await[0]),
        Duration::from_secs(5)
    );
    assert_eq!(
        delay(&sink.deliver(&[retried(1, 0)]).await[0]),
        Duration::from_secs(120)
    );
    assert_eq!(
        delay(&sink.deliver(&[retried(1, 1)]).await[0]),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn a_failing_event_does_not_stop_the_batch() {
    let rx = Receiver::start(
        vec![Reply::status(503).header("retry-after", "120")],
        Reply::status(200),
    )
    .await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("ra-long", &rx.url, &f)).unwrap();
    let out = sink.deliver(&[envelope(1), envelope(2)]).await;
    match &out[0] {
        Outcome::Retry {
            reason,
            retry_after,
            attempts,
        } => {
            assert_eq!(*attempts, 1, "one POST was made");
            assert_eq!(*retry_after, Some(Duration::from_secs(120)));
            assert!(reason.contains("503"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out[1], Outcome::Delivered);
    assert_eq!(rx.ids(), vec!["evt-1", "evt-2"]);
}

#[tokio::test]
async fn gone_disables_and_stops_the_batch() {
    let rx = Receiver::start(vec![Reply::status(410)], Reply::status(200)).await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("gone", &rx.url, &f)).unwrap();
    assert!(sink.health().await.is_ok());
    let out = sink.deliver(&[envelope(1), envelope(2), envelope(3)]).await;
    assert!(matches!(out[0], Outcome::Disabled { .. }), "{out:?}");
    assert!(
        matches!(out[1], Outcome::Retry { attempts: 0, .. }),
        "{out:?}"
    );
    assert!(
        matches!(out[2], Outcome::Retry { attempts: 0, .. }),
        "{out:?}"
    );
    assert_eq!(rx.received().len(), 1);
    assert!(sink.health().await.is_err());
}

#[tokio::test]
async fn an_event_is_dead_lettered_when_the_schedule_is_spent() {
    let rx = Receiver::start(vec![Reply::status(400)], Reply::status(500)).await;
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("dead", &rx.url, &f);
    cfg.retry.schedule = vec![Duration::from_millis(1); 2];
    let sink = WebhookSink::new(&cfg).unwrap();
    for attempts in 0..2 {
        assert!(
            matches!(
                sink.deliver(&[retried(1, attempts)]).await[0],
                Outcome::Retry { attempts: 1, .. }
            ),
            "a 4xx is retried per the schedule too"
        );
    }
    match &sink.deliver(&[retried(1, 2)]).await[0] {
        Outcome::DeadLetter { reason, attempts } => {
            assert_eq!(*attempts, 1);
            assert!(reason.contains("3 attempts"), "{reason}");
            assert!(reason.contains("500"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.received().len(), 3);
    // An event whose attempts are already spent is not sent again.
    assert!(matches!(
        sink.deliver(&[retried(2, 3)]).await[0],
        Outcome::DeadLetter { attempts: 0, .. }
    ));
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn events_older_than_max_age_are_dead_lettered_unsent() {
    let rx = Receiver::start(vec![], Reply::status(200)).await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("old", &rx.url, &f)).unwrap();
    let mut env = envelope(1);
    env.enqueued_at = SystemTime::now() - Duration::from_secs(7200);
    let out = sink.deliver(&[env, envelope(2)]).await;
    assert!(
        matches!(&out[0], Outcome::DeadLetter { reason, .. } if reason.contains("max_age")),
        "{out:?}"
    );
    assert_eq!(out[1], Outcome::Delivered);
    assert_eq!(rx.ids(), vec!["evt-2"]);
}

#[tokio::test]
async fn slow_endpoint_times_out_then_dead_letters() {
    let rx = Receiver::start(vec![], Reply::status(200).delay(Duration::from_secs(30))).await;
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("slow", &rx.url, &f);
    cfg.timeout = Duration::from_millis(200);
    cfg.retry.schedule = Vec::new();
    let sink = WebhookSink::new(&cfg).unwrap();
    let out = sink.deliver(&[envelope(1)]).await;
    match &out[0] {
        Outcome::DeadLetter { reason, .. } => assert!(reason.contains("timeout"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.ids(), vec!["evt-1"]);
}

#[tokio::test]
async fn unreachable_endpoint_dead_letters_when_no_retry_is_left() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("down", &url, &f);
    cfg.retry.schedule = Vec::new();
    let sink = WebhookSink::new(&cfg).unwrap();
    match &sink.deliver(&[envelope(1)]).await[0] {
        Outcome::DeadLetter { reason, .. } => assert!(reason.contains("connection"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn type_filter_selects_events() {
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("types", "http://127.0.0.1:9/hook", &f);
    cfg.types = vec![
        "gov.energystar.pm.share.*".into(),
        "gov.energystar.pm.meter.created".into(),
    ];
    let sink = WebhookSink::new(&cfg).unwrap();
    assert!(sink.accepts(&event("1", "gov.energystar.pm.share.revoked")));
    assert!(sink.accepts(&event("2", "gov.energystar.pm.share.accepted")));
    assert!(sink.accepts(&event("3", "gov.energystar.pm.meter.created")));
    assert!(!sink.accepts(&event("4", "gov.energystar.pm.meter.deleted")));
    assert!(!sink.accepts(&event("5", "gov.energystar.pm.property.updated")));

    cfg.types.clear();
    let all = WebhookSink::new(&cfg).unwrap();
    assert!(all.accepts(&event("6", "anything.at.all")));
    assert_eq!(all.kind(), "webhook");
    assert_eq!(all.name(), "types");
}

#[tokio::test]
async fn one_in_flight_sends_in_batch_order() {
    let rx = Receiver::start(
        vec![Reply::status(500).delay(Duration::from_millis(20))],
        Reply::status(200).delay(Duration::from_millis(20)),
    )
    .await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("ordered", &rx.url, &f)).unwrap();
    let batch: Vec<Envelope> = (1..=5).map(envelope).collect();
    let out = sink.deliver(&batch).await;
    assert!(
        matches!(out[0], Outcome::Retry { attempts: 1, .. }),
        "{out:?}"
    );
    assert_eq!(out[1..], vec![Outcome::Delivered; 4]);
    assert_eq!(rx.ids(), vec!["evt-1", "evt-2", "evt-3", "evt-4", "evt-5"]);
    assert_eq!(rx.state.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn several_in_flight_overlap() {
    // Each request is held until three are in flight together: only a concurrent sink passes.
    let rx = Receiver::start_with(vec![], Reply::status(200), Some(3), false).await;
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("parallel", &rx.url, &f);
    cfg.max_in_flight = 3;
    let sink = WebhookSink::new(&cfg).unwrap();
    let batch: Vec<Envelope> = (1..=3).map(envelope).collect();
    let out = sink.deliver(&batch).await;
    assert_eq!(out, vec![Outcome::Delivered; 3]);
    assert_eq!(rx.state.max_in_flight.load(Ordering::SeqCst), 3);
    let mut ids = rx.ids();
    ids.sort();
    assert_eq!(ids, vec!["evt-1", "evt-2", "evt-3"]);
}

#[tokio::test]
async fn a_slow_endpoint_does_not_block_another_sink() {
    // The slow receiver holds every request until the test releases it.
    let slow = Receiver::start_with(vec![], Reply::status(200), None, true).await;
    let fast = Receiver::start(vec![], Reply::status(200)).await;
    let f = secret_file(&[SECRET_A]);
    let slow_sink = Arc::new(WebhookSink::new(&config("slow", &slow.url, &f)).unwrap());
    let fast_sink = WebhookSink::new(&config("fast", &fast.url, &f)).unwrap();

    let s = slow_sink.clone();
    let slow_task = tokio::spawn(async move { s.deliver(&[envelope(1)]).await });
    while slow.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fast_out = fast_sink.deliver(&[envelope(1), envelope(2)]).await;
    assert_eq!(fast_out, vec![Outcome::Delivered; 2]);
    assert!(!slow_task.is_finished(), "slow endpoint was released early");

    slow.state.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(slow_task.await.unwrap(), vec![Outcome::Delivered]);
}

#[tokio::test]
async fn nothing_is_sent_after_close() {
    let rx = Receiver::start(vec![], Reply::status(200)).await;
    let f = secret_file(&[SECRET_A]);
    let sink = WebhookSink::new(&config("closing", &rx.url, &f)).unwrap();
    sink.close(Duration::from_secs(10)).await;
    let out = sink.deliver(&[envelope(1), envelope(2)]).await;
    for o in &out {
        assert!(
            matches!(o, Outcome::Retry { reason, attempts: 0, .. } if reason.contains("closing")),
            "{out:?}"
        );
    }
    assert!(rx.received().is_empty());
}

#[tokio::test]
async fn credential_headers_come_from_files_and_environment_variables() {
    let rx = Receiver::start(vec![], Reply::status(204)).await;
    let secrets = secret_file(&[SECRET_A]);
    let mut cfg = config("hook", &rx.url, &secrets);
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "Bearer from-a-file\n").unwrap();
    cfg.header_files
        .insert("Authorization".into(), token.path().to_path_buf());
    let var = "ESPM_WEBHOOK_TEST_HEADER_ENV";
    // Only this test reads this variable.
    std::env::set_var(var, "k-123");
    cfg.header_envs.insert("X-Api-Key".into(), var.into());
    let sink = WebhookSink::new(&cfg).unwrap();
    assert!(!format!("{sink:?} {cfg:?}").contains("from-a-file"));
    assert_eq!(sink.deliver(&[envelope(1)]).await, vec![Outcome::Delivered]);
    let got = rx.received();
    assert_eq!(got[0].headers["authorization"], "Bearer from-a-file");
    assert_eq!(got[0].headers["x-api-key"], "k-123");
    cfg.header_envs
        .insert("X-Missing".into(), "ESPM_WEBHOOK_TEST_UNSET_VAR".into());
    assert!(
        WebhookSink::new(&cfg).is_err(),
        "a missing header secret is a configuration error"
    );
}

#[tokio::test]
async fn binary_mode_posts_data_with_ce_headers() {
    let rx = Receiver::start(vec![], Reply::status(204)).await;
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("binary", &rx.url, &f);
    cfg.mode = WebhookMode::Binary;
    let sink = WebhookSink::new(&cfg).unwrap();
    let env = envelope(3);
    assert_eq!(
        sink.deliver(std::slice::from_ref(&env)).await,
        vec![Outcome::Delivered]
    );
    let got = &rx.received()[0];
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, env.event.data);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["ce-id"], "evt-3");
    assert_eq!(got.headers["ce-specversion"], "1.0");
    assert_eq!(got.headers["ce-type"], "gov.energystar.pm.share.revoked");
    assert_eq!(got.headers["ce-source"], "urn:espm:test:acme");
    assert!(
        verify(SECRET_A, got),
        "the signature covers the binary body"
    );
}

#[tokio::test]
async fn user_info_in_the_url_is_sent_as_basic_auth_unless_a_header_says_otherwise() {
    use base64::Engine as _;
    let rx = Receiver::start(vec![], Reply::status(204)).await;
    let f = secret_file(&[SECRET_A]);
    // Percent-encoded user info, decoded before it is encoded again in base64.
    let url = rx.url.replace("http://", "http://hook%40user:p%3Ass@");
    let sink = WebhookSink::new(&config("auth", &url, &f)).unwrap();
    assert!(!format!("{sink:?}").contains("p%3Ass"));
    assert_eq!(sink.deliver(&[envelope(1)]).await, vec![Outcome::Delivered]);
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("hook@user:p:ss")
    );
    assert_eq!(rx.received()[0].headers["authorization"], want.as_str());
    assert!(verify(SECRET_A, &rx.received()[0]));

    let mut cfg = config("auth-header", &url, &f);
    let var = "ESPM_WEBHOOK_TEST_AUTH_ENV";
    // Only this test reads this variable.
    std::env::set_var(var, "Bearer configured");
    cfg.header_envs.insert("Authorization".into(), var.into());
    let sink = WebhookSink::new(&cfg).unwrap();
    assert_eq!(sink.deliver(&[envelope(2)]).await, vec![Outcome::Delivered]);
    assert_eq!(
        rx.received()[1].headers["authorization"],
        "Bearer configured"
    );
}

#[tokio::test]
async fn https_urls_are_sent_over_tls_only() {
    use tokio::io::AsyncReadExt;
    // A listener that records the first bytes it is sent and hangs up: no certificate is needed
    // to see whether the client opened with a TLS handshake or with plaintext HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 3];
        sock.read_exact(&mut head).await.unwrap();
        head
    });
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("tls", &format!("https://{addr}/hook"), &f);
    cfg.retry.schedule = Vec::new();
    let sink = WebhookSink::new(&cfg).unwrap();
    match &sink.deliver(&[envelope(1)]).await[0] {
        Outcome::DeadLetter { reason, .. } => assert!(reason.contains("connection"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let head = first.await.unwrap();
    // A TLS record of type handshake (22), protocol version 3.x: a ClientHello.
    assert_eq!(&head[..2], &[0x16, 0x03], "not a TLS handshake: {head:?}");
}

#[tokio::test]
async fn a_status_that_arrived_in_time_stands_when_its_body_does_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 200 and a content-length, then a body that never comes: the endpoint has accepted the
    // event, so it is delivered, not retried (which would only send a duplicate).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended before its headers did");
            seen.extend_from_slice(&buf[..n]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let f = secret_file(&[SECRET_A]);
    let mut cfg = config("slow-body", &format!("http://{addr}/hook"), &f);
    cfg.timeout = Duration::from_millis(300);
    let sink = WebhookSink::new(&cfg).unwrap();
    let sent = tokio::time::Instant::now();
    assert_eq!(sink.deliver(&[envelope(1)]).await, vec![Outcome::Delivered]);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the body wait is bounded by the timeout"
    );
}
