//! Issue 8, item 7: behind a `429` with a long `Retry-After`, the driver and the webhook sink
//! must count attempts per event truthfully. An event is dead-lettered only after the configured
//! number of POSTs really reached the receiver, and the dead letter's `attempts` says how many.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use espm_config::{WebhookMode, WebhookRetry, WebhookSinkConfig};
use espm_journal::Journal;
use espm_sink::{run_sink, CloudEvent, DriverConfig, SinkState};
use espm_sink_webhook::WebhookSink;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Counts POSTs per `webhook-id` and answers every one `429 Retry-After: 1`.
async fn throttling_receiver() -> (String, Arc<Mutex<BTreeMap<String, u32>>>) {
    let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    async fn handle(
        State(seen): State<Arc<Mutex<BTreeMap<String, u32>>>>,
        headers: HeaderMap,
    ) -> (StatusCode, [(&'static str, &'static str); 1]) {
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        *seen.lock().unwrap().entry(id).or_insert(0) += 1;
        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")])
    }
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

fn event(i: usize) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("evt-{i}"),
        source: "urn:espm:test:acme".into(),
        ty: "gov.energystar.pm.share.revoked".into(),
        subject: Some(format!("property/{i}")),
        time: Some("2024-01-02T03:04:05Z".into()),
        datacontenttype: "application/json".into(),
        dataschema: "https://espm-bridge.invalid/schemas/share.json".into(),
        espmenvironment: "test".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({ "propertyId": i }).into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_count_only_attempts_that_were_made() {
    const EVENTS: usize = 8;
    const MAX_ATTEMPTS: u32 = 3;
    let (url, seen) = throttling_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.db")).unwrap();
    journal
        .enqueue(&(0..EVENTS).map(event).collect::<Vec<_>>())
        .unwrap();

    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "{SECRET}").unwrap();
    let cfg = WebhookSinkConfig {
        name: "throttled".into(),
        url,
        secret_file: Some(secret.path().to_path_buf()),
        secret_env: None,
        types: Vec::new(),
        // Several in flight.
        max_in_flight: 4,
        timeout: Duration::from_secs(10),
        headers: BTreeMap::new(),
        header_files: BTreeMap::new(),
        header_envs: BTreeMap::new(),
        // Shorter than Retry-After: every 429 waits out the endpoint's delay in the journal.
        retry: WebhookRetry {
            schedule: vec![Duration::from_millis(1); MAX_ATTEMPTS as usize - 1],
            max_age: Duration::from_secs(3600),
            ..WebhookRetry::default()
        },
        disable_after: Duration::ZERO,
        mode: WebhookMode::Structured,
    };
    let sink = Arc::new(WebhookSink::new(&cfg).unwrap());
    let shutdown = CancellationToken::new();
    let driver = tokio::spawn(run_sink(
        journal.clone(),
        sink,
        DriverConfig {
            batch_size: 100,
            idle_poll: Duration::from_millis(20),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
        },
        Arc::new(Notify::new()),
        shutdown.clone(),
        Arc::new(SinkState::new()),
    ));

    // Generous: about seven one-second Retry-After rounds are needed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal.dlq_count(Some("throttled")).unwrap() < EVENTS as u64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let _ = driver.await;

    let dead = journal.dlq_list(Some("throttled")).unwrap();
    assert_eq!(
        dead.len(),
        EVENTS,
        "every event is dead-lettered in the end"
    );
    let seen = seen.lock().unwrap().clone();
    for d in &dead {
        let posted = seen.get(&d.event_id).copied().unwrap_or(0);
        assert_eq!(
            posted, MAX_ATTEMPTS,
            "{}: dead-lettered ({:?}) after {posted} POSTs, not the configured {MAX_ATTEMPTS}",
            d.event_id, d.reason
        );
        assert_eq!(
            d.attempts, posted,
            "{}: the dead letter says {} attempts, the receiver saw {posted}",
            d.event_id, d.attempts
        );
        assert!(
            d.reason.contains(&format!("{posted} attempts")),
            "{}: {}",
            d.event_id,
            d.reason
        );
    }
}
