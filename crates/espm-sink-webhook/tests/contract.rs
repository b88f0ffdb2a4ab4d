//! What the webhook sink sends, checked by libraries that are not ours (installed by
//! `tests/setup.sh` from the pins in `tests/requirements.txt`): the Standard Webhooks reference library
//! verifies every signature and the CloudEvents Python SDK parses every request back into the
//! event that was sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use espm_config::WebhookSinkConfig;
use espm_events::{normalize_document, quarantine_event, Origin};
use espm_sink::{CloudEvent, Envelope, Outcome, Sink};
use espm_sink_webhook::WebhookSink;
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

type Captured = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Captured) {
    let got: Captured = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Captured>, h: HeaderMap, b: Bytes| async move {
                    got.lock().unwrap().push((h, b));
                    ""
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// Real events: the PM fixture's notifications plus a quarantine event (no subject, no
/// partitionkey), from an account whose configured name needs percent-encoding in headers.
fn events() -> Vec<CloudEvent> {
    let origin = Origin::new("test", "Acme Énergie");
    let xml = std::fs::read(repo().join("tests/fixtures/notifications/mixed.xml")).unwrap();
    let mut evs = normalize_document(&origin, &xml).unwrap();
    evs.push(quarantine_event(
        &origin,
        &espm_events::BodyQuarantinedData {
            endpoint: "/notification/list".into(),
            raw_id: 7,
            sha256: "00".repeat(32),
            fragment_of: None,
            error: "unexpected end of input".into(),
            received_at: "1970-01-01T00:00:00Z".into(),
        },
    ));
    evs
}

/// Run the Python checker over what the receiver got; its view of each event.
fn python_check(captured: &[(HeaderMap, Bytes)]) -> Vec<Value> {
    // The interpreter `tests/setup.sh` installed the pinned checkers into (`$PYTHON`, else
    // `python3`). Missing checkers fail the test: it never skips.
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import cloudevents, standardwebhooks"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "the contract checkers (cloudevents, standardwebhooks) are not installed: run `bash tests/setup.sh`"
    );
    let requests: Vec<Value> = captured
        .iter()
        .map(|(h, b)| {
            let headers: serde_json::Map<String, Value> = h
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap())))
                .collect();
            json!({
                "headers": headers,
                "body": base64::engine::general_purpose::STANDARD.encode(b),
            })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&requests).unwrap()).unwrap();
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/contract/check_webhook.py"))
        .arg(file.path())
        .arg(SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "checker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The attributes the SDK must have read: exactly those of the event's JSON form.
fn assert_same_event(parsed: &Value, sent: &CloudEvent) {
    let mut want: Value = serde_json::from_slice(&sent.to_json_bytes()).unwrap();
    let data = want.as_object_mut().unwrap().remove("data").unwrap();
    assert_eq!(parsed["data"], data, "{}", sent.ty);
    let attrs = parsed["attributes"].as_object().unwrap();
    let want = want.as_object().unwrap();
    assert_eq!(
        attrs.keys().collect::<Vec<_>>().len(),
        want.len(),
        "{}: {attrs:?} vs {want:?}",
        sent.ty
    );
    for (k, v) in want {
        let got = &attrs[k];
        if k == "time" {
            // The SDK reads a timestamp; compare instants' text in its notation.
            let t = v.as_str().unwrap().replace('Z', "+00:00");
            assert_eq!(got.as_str().unwrap(), t, "{}: time", sent.ty);
        } else {
            assert_eq!(got, v, "{}: {k}", sent.ty);
        }
    }
}

async fn deliver_all(cfg: &WebhookSinkConfig, events: &[CloudEvent]) {
    let sink = WebhookSink::new(cfg).unwrap();
    let batch: Vec<Envelope> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Envelope {
            seq: i as i64 + 1,
            event: e.clone().into(),
            enqueued_at: SystemTime::now(),
            attempts: 0,
        })
        .collect();
    let out = sink.deliver(&batch).await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
}

fn config(url: &str, extra: &str) -> (WebhookSinkConfig, tempfile::NamedTempFile) {
    let secrets = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secrets.path(), format!("{SECRET}\n")).unwrap();
    let cfg = toml::from_str(&format!(
        "name = \"hook\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n{extra}",
        secrets.path().display()
    ))
    .unwrap();
    (cfg, secrets)
}

#[tokio::test]
async fn structured_mode_requests_verify_and_parse_with_the_reference_libraries() {
    let (url, got) = receiver().await;
    let (cfg, _secrets) = config(&url, "");
    let evs = events();
    deliver_all(&cfg, &evs).await;
    let captured = got.lock().unwrap().clone();
    assert_eq!(captured.len(), evs.len());
    let parsed = python_check(&captured);
    for (p, ev) in parsed.iter().zip(&evs) {
        assert_eq!(p["mode"], "structured");
        assert_same_event(p, ev);
    }
}

#[tokio::test]
async fn binary_mode_requests_verify_and_parse_with_the_reference_libraries() {
    let (url, got) = receiver().await;
    let (cfg, _secrets) = config(&url, "mode = \"binary\"\n");
    let evs = events();
    deliver_all(&cfg, &evs).await;
    let captured = got.lock().unwrap().clone();
    assert_eq!(captured.len(), evs.len());
    for (headers, _) in &captured {
        assert!(
            headers.contains_key("ce-id") && headers.contains_key("webhook-signature"),
            "binary mode sends ce- attributes and a signature: {headers:?}"
        );
    }
    let parsed = python_check(&captured);
    for (p, ev) in parsed.iter().zip(&evs) {
        assert_eq!(p["mode"], "binary");
        assert_same_event(p, ev);
    }
}
