//! A proxy named by the environment (`HTTP_PROXY`, `NO_PROXY`) is used as curl and reqwest use
//! it. Its own test binary: the variables are process-wide, and no other test may see them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{StatusCode, Uri};
use axum::Router;
use espm_config::WebhookSinkConfig;
use espm_sink::{CloudEvent, Envelope, Outcome, Sink};
use espm_sink_webhook::WebhookSink;

/// A server that answers 204 to everything and records the request targets it was sent.
async fn recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(uri.to_string());
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn sink(url: &str) -> WebhookSink {
    let cfg: WebhookSinkConfig = toml::from_str(&format!(
        "name = \"hook\"\nurl = \"{url}\"\nsecret_env = \"ESPM_PROXY_TEST_WHSEC\"\n"
    ))
    .unwrap();
    WebhookSink::new(&cfg).unwrap()
}

fn envelope() -> Envelope {
    let event: CloudEvent = serde_json::from_value(serde_json::json!({
        "specversion": "1.0", "id": "evt-1", "source": "urn:espm:test:acme",
        "type": "gov.energystar.pm.share.revoked", "datacontenttype": "application/json",
        "dataschema": "https://espm-bridge.invalid/schemas/share.json",
        "espmenvironment": "test", "espmaccount": "acme", "data": {"propertyId": 1}
    }))
    .unwrap();
    Envelope {
        seq: 1,
        event: event.into(),
        enqueued_at: SystemTime::now(),
        attempts: 0,
    }
}

#[tokio::test]
async fn a_proxy_from_the_environment_is_used_and_no_proxy_is_respected() {
    let (proxy, via_proxy) = recorder().await;
    let (direct, at_endpoint) = recorder().await;
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var("HTTP_PROXY", &proxy);
    std::env::set_var("NO_PROXY", "127.0.0.1");
    std::env::set_var(
        "ESPM_PROXY_TEST_WHSEC",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );

    // A host that resolves nowhere: only the proxy can have delivered it.
    let proxied = sink("http://hooks.example.invalid/hook?token=t");
    let out = tokio::time::timeout(Duration::from_secs(30), proxied.deliver(&[envelope()]))
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    assert_eq!(
        via_proxy.lock().unwrap().clone(),
        vec!["http://hooks.example.invalid/hook?token=t".to_string()],
        "a proxy is sent the absolute URL"
    );

    // The endpoint's host is in NO_PROXY: straight there.
    let straight = sink(&format!("{direct}/hook"));
    assert_eq!(
        straight.deliver(&[envelope()]).await,
        vec![Outcome::Delivered]
    );
    assert_eq!(
        at_endpoint.lock().unwrap().clone(),
        vec!["/hook".to_string()]
    );
    assert_eq!(via_proxy.lock().unwrap().len(), 1);
}
