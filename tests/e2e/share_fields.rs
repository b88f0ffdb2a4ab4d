//! Issue 13, the FAQ's "the customer edited custom field values: how am I told?": a customer
//! edits the custom fields of an accepted property share through PM's test-environment call; the
//! bridge's `share.updated` on NATS JetStream carries the values re-read from PM. When PM
//! refuses the read, the event still arrives, flagged `enrichment: "unavailable"`. Every event
//! read back matches its JSON Schema, with the enrichment and without.

mod support;

use std::time::Duration;

use espm_client::{Action, ClientConfig, PendingKind, PmClient, RetryPolicy};
use espm_sim::{ClearCommit, FaultConfig, FaultKind, PROVIDER_ACCOUNT_ID};
use espm_testkit::schemas::assert_valid_json;
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_SHARE_FIELDS_TEST_PASSWORD";
const CUSTOMER: &str = "tess_tester";
const CUSTOMER_PASS: &str = "Tess-Pass-1";
const SHARE_UPDATED: &str = "gov.energystar.pm.share.updated";

/// PM's test-environment call as the customer: new custom field values for a property share.
async fn edit_fields(test_base: &str, property: i64, pairs: &[(&str, &str)]) -> u16 {
    let mut xml = String::from("<customFieldList>");
    for (n, v) in pairs {
        xml.push_str(&format!("<customField name=\"{n}\">{v}</customField>"));
    }
    xml.push_str("</customFieldList>");
    reqwest::Client::new()
        .put(format!(
            "{test_base}/property/{property}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"
        ))
        .basic_auth(CUSTOMER, Some(CUSTOMER_PASS))
        .header("Content-Type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every event on the stream so far, read by a fresh pull consumer.
async fn stream_events(js: &async_nats::jetstream::Context, stream: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for m in jetstream_messages(js, stream, 1000, Duration::from_millis(500)).await {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let h = m.headers.clone().unwrap_or_default();
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID)
                .map(|x| x.as_str()),
            v["id"].as_str()
        );
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_updated_on_nats_carries_the_edited_custom_fields_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cf", "pw", 13).await;
    let ctl = SimControl::of(&sim);
    let cid = ctl
        .create_customer(&espm_sim::CustomerSpec {
            username: Some(CUSTOMER.into()),
            password: Some(CUSTOMER_PASS.into()),
            organization: Some("Tess Org".into()),
            ..Default::default()
        })
        .await;
    ctl.request_connection(cid, &[]).await;
    let p = ctl
        .share_property(&espm_sim::control_api::PropertyShareRequest {
            custom_fields: espm_testkit::sim::fields(&[("Lot Number", "1")]),
            ..espm_sim::control_api::PropertyShareRequest::new(cid, espm_sim::Access::Read)
        })
        .await;
    let mut cfg = ClientConfig::new(sim.base_url(), "cf", "pw");
    cfg.retry = RetryPolicy::none();
    let pm = PmClient::new(cfg).unwrap();
    pm.answer(PendingKind::Connection, cid, Action::Accept, None)
        .await
        .unwrap();
    pm.answer(PendingKind::PropertyShare, p, Action::Accept, None)
        .await
        .unwrap();

    let sfx = format!("{:x}", rand::random::<u32>());
    let stream = format!("CF_{sfx}");
    let prefix = format!("cf{sfx}");
    let config = format!(
        r#"{journal}{account}customer_lookup_timeout = "1s"

[[sinks]]
type = "nats"
name = "bus"
url = "nats://127.0.0.1:4222"
subject = "{prefix}.{{environment}}.{{type}}"
stream = "{stream}"
create_stream = true
stream_subjects = ["{prefix}.>"]
"#,
        journal = journal_toml(dir.path()),
        account = account_toml("cf", &sim.base_url(), "cf", PASSWORD_ENV, "peek-then-clear"),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "pw")],
        None,
    );
    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    let updates = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["type"] == SHARE_UPDATED)
            .cloned()
            .collect()
    };

    // The customer edits the values: share.updated carries the new ones.
    assert_eq!(
        edit_fields(
            &sim.test_base_url(),
            p,
            &[("Lot Number", "2"), ("Zone", "B")]
        )
        .await,
        200
    );
    let first = eventually(Duration::from_secs(30), || {
        let js = js.clone();
        let stream = stream.clone();
        async move {
            let got = updates(&stream_events(&js, &stream).await);
            (!got.is_empty()).then_some(got)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no share.updated on NATS; bridge log:\n{}", bridge.log()));
    assert_eq!(first.len(), 1);
    let ev = &first[0];
    assert_eq!(
        ev["data"]["customFields"],
        json!({"Lot Number": "2", "Zone": "B"}),
        "{ev}"
    );
    assert!(ev["data"].get("enrichment").is_none(), "{ev}");
    assert_eq!(ev["data"]["propertyId"], p);
    assert_eq!(ev["subject"], format!("property/{p}"));

    // PM refuses to read the values (the edit itself is carried out, then answered 500, as
    // `clear_commits_on_failure = all` makes the simulator do): the event still arrives, flagged.
    ctl.set_faults(&FaultConfig {
        paths: vec![format!("/property/{p}/customFieldList")],
        script: vec![FaultKind::Http500; 50],
        clear_commits_on_failure: ClearCommit::All,
        ..FaultConfig::default()
    })
    .await;
    assert_eq!(
        edit_fields(&sim.test_base_url(), p, &[("Lot Number", "3")]).await,
        500
    );
    let both = eventually(Duration::from_secs(30), || {
        let js = js.clone();
        let stream = stream.clone();
        async move {
            let got = updates(&stream_events(&js, &stream).await);
            (got.len() >= 2).then_some(got)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no second share.updated on NATS; bridge log:\n{}",
            bridge.log()
        )
    });
    let flagged = &both[1];
    assert_eq!(flagged["data"]["enrichment"], "unavailable", "{flagged}");
    assert!(flagged["data"].get("customFields").is_none(), "{flagged}");
    assert_ne!(flagged["id"], ev["id"]);

    // Every event the bridge sent, enriched or flagged, matches its schema.
    let all = stream_events(&js, &stream).await;
    assert!(all.len() >= 2);
    for e in &all {
        assert_valid_json(e);
    }
    // A schema that took anything would prove nothing.
    let mut bad = ev.clone();
    bad["data"]["customFields"] = json!(["Lot Number", "2"]);
    assert!(!espm_testkit::schemas::event_errors(&bad).is_empty());
    drop(bridge);
}
