//! `espm_bridge_sink_attempt_failures_total{sink,reason}` counts every failed attempt.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use espm_config::{WebhookMode, WebhookRetry, WebhookSinkConfig};
use espm_sink::{CloudEvent, Envelope, Outcome, Sink};
use espm_sink_webhook::WebhookSink;
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

#[derive(Default)]
struct Count(AtomicU64);
impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

/// Counters by `name{label=value,...}` (labels in emission order).
#[derive(Default)]
struct Recorder(Mutex<HashMap<String, Arc<Count>>>);

impl Recorder {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let c = self.0.lock().unwrap().entry(name).or_default().clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn every_failed_attempt_is_counted_by_reason() {
    let recorder = Recorder::default();
    // A current-thread runtime keeps every task on this thread, where the local recorder is set.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let calls = Arc::new(AtomicUsize::new(0));
            let c = calls.clone();
            let app = Router::new().route(
                "/hook",
                post(move || {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 | 1 => StatusCode::SERVICE_UNAVAILABLE,
                            2 => StatusCode::BAD_REQUEST,
                            _ => StatusCode::OK,
                        }
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

            let mut secrets = tempfile::NamedTempFile::new().unwrap();
            writeln!(secrets, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
            let cfg = WebhookSinkConfig {
                name: "metered".into(),
                url: format!("http://{addr}/hook"),
                secret_file: Some(secrets.path().to_path_buf()),
                secret_env: None,
                types: Vec::new(),
                max_in_flight: 1,
                timeout: Duration::from_secs(10),
                headers: BTreeMap::new(),
                header_files: BTreeMap::new(),
                header_envs: BTreeMap::new(),
                retry: WebhookRetry {
                    schedule: vec![Duration::from_millis(1); 9],
                    max_age: Duration::from_secs(3600),
                    ..WebhookRetry::default()
                },
                disable_after: Duration::ZERO,
                mode: WebhookMode::Structured,
            };
            let sink = WebhookSink::new(&cfg).unwrap();
            let event = CloudEvent {
                specversion: "1.0".into(),
                id: "evt-1".into(),
                source: "urn:espm:test:acme".into(),
                ty: "gov.energystar.pm.share.revoked".into(),
                subject: None,
                time: None,
                datacontenttype: "application/json".into(),
                dataschema: "https://espm-bridge.invalid/s.json".into(),
                espmenvironment: "test".into(),
                espmaccount: "acme".into(),
                causationid: None,
                correlationid: None,
                data: serde_json::json!({}).into(),
            };
            // One attempt per `deliver`, as the driver's retry queue calls it.
            let mut out = Vec::new();
            for attempts in 0..4 {
                out = sink
                    .deliver(&[Envelope {
                        seq: 1,
                        event: event.clone().into(),
                        enqueued_at: SystemTime::now(),
                        attempts,
                    }])
                    .await;
            }
            out
        })
    });
    assert_eq!(out, vec![Outcome::Delivered]);
    assert_eq!(
        recorder.get("espm_bridge_sink_attempt_failures_total{sink=metered,reason=http_503}"),
        2
    );
    assert_eq!(
        recorder.get("espm_bridge_sink_attempt_failures_total{sink=metered,reason=http_400}"),
        1
    );
}
