//! The Arcadia sink against the Arcadia simulator: mapping, idempotence, disconnects through
//! Arcadia's search, permanent and transient failures.

use std::time::{Duration, SystemTime};

use espm_arcadia::{Account, AppKey};
use espm_arcadia_sim::{ArcadiaSimConfig, ArcadiaSimServer, FaultConfig, FaultKind, Key};
use espm_config::{ArcadiaSinkConfig, RetryPolicy};
use espm_sink::{Envelope, Outcome, Sink};
use espm_sink_arcadia::ArcadiaSink;
use serde_json::{json, Value};

async fn sim() -> ArcadiaSimServer {
    ArcadiaSimServer::start(ArcadiaSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(sim: &ArcadiaSimServer) -> ArcadiaSinkConfig {
    ArcadiaSinkConfig {
        name: "arcadia".into(),
        base_url: sim.base_url(),
        app_id: ArcadiaSimConfig::default().app_id,
        app_key_file: None,
        app_key_env: Some("UNUSED".into()),
        provider_account_id: "espm-{propertyId}".into(),
        customer_class: "2".into(),
        custom_fields: [
            ("Master Tariff Id".to_string(), "masterTariffId".to_string()),
            ("Account Status".to_string(), "status".to_string()),
        ]
        .into_iter()
        .collect(),
        tariff_accuracy: 100,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_secs(2),
        },
    }
}

fn sink_with(cfg: &ArcadiaSinkConfig, key: &str) -> ArcadiaSink {
    ArcadiaSink::with_key(cfg, AppKey::new(key)).unwrap()
}

fn sink(sim: &ArcadiaSimServer) -> ArcadiaSink {
    sink_with(&config(sim), &ArcadiaSimConfig::default().app_key)
}

fn envelope(seq: i64, ty: &str, data: Value) -> Envelope {
    Envelope {
        seq,
        event: serde_json::from_value::<espm_sink::CloudEvent>(json!({
            "specversion": "1.0", "id": format!("e{seq}"), "source": "s", "type": ty,
            "datacontenttype": "application/json", "dataschema": "",
            "espmenvironment": "sim", "espmaccount": "a", "data": data
        }))
        .unwrap()
        .into(),
        enqueued_at: SystemTime::now(),
        attempts: 0,
    }
}

fn accepted(seq: i64, property_id: i64, customer: i64, fields: Value) -> Envelope {
    envelope(
        seq,
        espm_events::PROPERTY_SHARE_RESOLVED,
        json!({
            "propertyId": property_id, "accountId": customer, "username": "jdoe",
            "accessLevel": "Read", "customFields": fields,
            "propertyInfo": {"name": format!("Building {property_id}"),
                "address": {"address1": "1 Main St", "city": "Arlington", "state": "VA",
                            "postalCode": "22201", "country": "US"},
                "grossFloorArea": {"units": "Square Meters", "value": 500.0}},
            "resolution": "accepted", "observedAt": "2026-12-01T00:00:00Z"
        }),
    )
}

fn notification(seq: i64, ty: &str, code: &str, extra: Value) -> Envelope {
    let mut d = json!({"notificationTypeCode": code, "notificationId": seq, "description": "d"});
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    envelope(seq, ty, d)
}

fn account(sim: &ArcadiaSimServer, pid: &str) -> Option<Account> {
    sim.state()
        .with_store(|s| s.get(Key::Provider(pid)).ok().cloned())
}

#[tokio::test]
async fn accepted_share_mirrors_and_replays_change_nothing() {
    let sim = sim().await;
    let sink = sink(&sim);
    let batch = vec![
        accepted(1, 77, 12, json!({"Master Tariff Id": "522"})),
        notification(
            2,
            espm_events::SHARE_REVOKED,
            "UNSHARE",
            json!({"propertyId": 77, "meterId": 5}),
        ),
    ];
    assert_eq!(
        sink.deliver(&batch).await,
        vec![Outcome::Delivered, Outcome::Delivered]
    );
    let a = account(&sim, "espm-77").expect("mirrored");
    assert_eq!(a.status.as_deref(), Some("ACTIVE"));
    assert_eq!(a.account_type.as_deref(), Some("CUSTOMER"));
    assert_eq!(a.account_name.as_deref(), Some("Building 77"));
    assert_eq!(a.customer_org_id.as_deref(), Some("12"));
    assert_eq!(a.property("buildingArea"), Some("5382"));
    assert_eq!(a.property("customerClass"), Some("2"));
    assert_eq!(a.tariffs.len(), 1);
    assert_eq!(a.tariffs[0].master_tariff_id, 522);
    assert_eq!(a.address.as_ref().unwrap().zip.as_deref(), Some("22201"));

    let before = sim.state().accounts();
    assert_eq!(
        sink.deliver(&batch).await,
        vec![Outcome::Delivered, Outcome::Delivered]
    );
    assert_eq!(sim.state().accounts(), before, "a replay changed Arcadia");

    // Unshare of the property: INACTIVE; of a property never mirrored: done (404).
    let out = sink
        .deliver(&[
            notification(
                3,
                espm_events::SHARE_REVOKED,
                "UNSHARE",
                json!({"propertyId": 77}),
            ),
            notification(
                4,
                espm_events::SHARE_REVOKED,
                "UNSHARE",
                json!({"propertyId": 999}),
            ),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);
    assert_eq!(
        account(&sim, "espm-77").unwrap().status.as_deref(),
        Some("INACTIVE")
    );
    assert!(account(&sim, "espm-999").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn disconnect_inactivates_only_our_accounts_of_that_customer() {
    let sim = sim().await;
    let sink = sink(&sim);
    let out = sink
        .deliver(&[
            accepted(1, 1, 12, json!({})),
            accepted(2, 2, 12, json!({})),
            accepted(3, 3, 123, json!({})),
        ])
        .await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    // Someone else's account for the same customer.
    sim.state().with_store(|s| {
        s.upsert(
            Account {
                provider_account_id: Some("crm-12".into()),
                customer_org_id: Some("12".into()),
                ..Account::default()
            },
            "crm".into(),
        )
        .unwrap();
    });
    let out = sink
        .deliver(&[notification(
            4,
            espm_events::CONNECTION_TERMINATED,
            "DISCONNECT",
            json!({"accountId": 12}),
        )])
        .await;
    assert_eq!(out, vec![Outcome::Delivered]);
    let st = |pid: &str| account(&sim, pid).unwrap().status.unwrap();
    assert_eq!(st("espm-1"), "INACTIVE");
    assert_eq!(st("espm-2"), "INACTIVE");
    assert_eq!(st("espm-3"), "ACTIVE", "customer 123 is not customer 12");
    assert_eq!(st("crm-12"), "ACTIVE", "not ours");
    sim.shutdown().await;
}

#[tokio::test]
async fn refusals_dead_letter_with_arcadias_message() {
    let sim = sim().await;
    let bad_key = sink_with(&config(&sim), "wrong-key");
    let out = bad_key.deliver(&[accepted(1, 5, 12, json!({}))]).await;
    match &out[0] {
        Outcome::DeadLetter { reason, .. } => assert!(reason.contains("Unauthorized"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let sink = sink(&sim);
    let out = sink
        .deliver(&[accepted(2, 6, 12, json!({"Account Status": "SLEEPING"}))])
        .await;
    match &out[0] {
        Outcome::DeadLetter { reason, .. } => {
            assert!(reason.contains("InvalidArgument"), "{reason}");
            assert!(reason.contains("status"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_is_waited_out_and_long_waits_go_back_to_the_driver() {
    let sim = sim().await;
    let sink = sink(&sim);
    sim.state()
        .set_faults(FaultConfig {
            retry_after_secs: 1,
            script: vec![FaultKind::Http429, FaultKind::Http500, FaultKind::Http429],
            ..FaultConfig::default()
        })
        .unwrap();
    let started = std::time::Instant::now();
    let out = sink.deliver(&[accepted(1, 8, 12, json!({}))]).await;
    assert_eq!(out, vec![Outcome::Delivered]);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two 429s with Retry-After 1 s were not waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(
        account(&sim, "espm-8").unwrap().property("customerClass"),
        Some("2")
    );

    // Retry-After beyond max_interval: handed back with the delay; the rest of the batch waits.
    sim.state()
        .set_faults(FaultConfig {
            retry_after_secs: 30,
            script: vec![FaultKind::Http429],
            ..FaultConfig::default()
        })
        .unwrap();
    let out = sink
        .deliver(&[
            accepted(2, 9, 12, json!({})),
            accepted(3, 10, 12, json!({})),
        ])
        .await;
    match &out[0] {
        Outcome::Retry { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(out[1], Outcome::Retry { .. }), "{out:?}");
    assert!(account(&sim, "espm-10").is_none(), "sent out of order");

    // Persistent 500s: dead letter after max_attempts.
    sim.state()
        .set_faults(FaultConfig {
            http500: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let out = sink.deliver(&[accepted(4, 11, 12, json!({}))]).await;
    match &out[0] {
        Outcome::DeadLetter { reason, .. } => assert!(reason.contains("5 attempts"), "{reason}"),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[test]
fn only_mirrored_types_are_accepted() {
    let cfg = ArcadiaSinkConfig {
        base_url: "http://127.0.0.1:9/rest/v1".into(),
        ..serde_json::from_value(json!({"name": "a", "app_id": "i", "app_key_env": "K"})).unwrap()
    };
    let sink = sink_with(&cfg, "k");
    let e = |ty: &str| envelope(1, ty, json!({})).event;
    assert!(sink.accepts(&e(espm_events::PROPERTY_SHARE_RESOLVED)));
    assert!(sink.accepts(&e(espm_events::CONNECTION_TERMINATED)));
    assert!(!sink.accepts(&e(espm_events::METER_SHARE_RESOLVED)));
    assert!(!sink.accepts(&e(espm_events::CONNECTION_REQUESTED)));
}

fn status_of(sim: &ArcadiaSimServer, pid: &str) -> Option<String> {
    account(sim, pid).and_then(|a| a.status)
}

#[tokio::test]
async fn a_transfer_moves_the_account_to_the_new_owner() {
    let sim = sim().await;
    let sink = sink(&sim);
    let transferred = |seq, property: i64, to: i64, from: i64| {
        notification(
            seq,
            espm_events::PROPERTY_TRANSFERRED,
            "TRANSFERPROPERTY",
            json!({"propertyId": property, "accountId": to, "username": format!("owner{to}"),
                   "notificationCreatedByAccountId": from.to_string()}),
        )
    };
    let out = sink
        .deliver(&[
            accepted(1, 1, 12, json!({})),
            accepted(2, 2, 12, json!({})),
            // Kept shared under its new owner 99.
            transferred(3, 1, 99, 12),
            // Transferred, then the new owner takes our access away: INACTIVE.
            transferred(4, 2, 99, 12),
            notification(
                5,
                espm_events::SHARE_REVOKED,
                "UNSHARE",
                json!({"propertyId": 2, "accountId": 99}),
            ),
            // Never mirrored: nothing to move, nothing created.
            transferred(6, 3, 99, 12),
        ])
        .await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    let a = account(&sim, "espm-1").unwrap();
    assert_eq!(a.customer_org_id.as_deref(), Some("99"));
    assert_eq!(a.customer_org_name.as_deref(), Some("owner99"));
    assert_eq!(status_of(&sim, "espm-2").as_deref(), Some("INACTIVE"));
    assert!(account(&sim, "espm-3").is_none());

    // The former owner disconnects: the property is no longer theirs.
    let disconnect = |seq, customer: i64| {
        notification(
            seq,
            espm_events::CONNECTION_TERMINATED,
            "DISCONNECT",
            json!({ "accountId": customer }),
        )
    };
    assert_eq!(
        sink.deliver(&[disconnect(7, 12)]).await,
        [Outcome::Delivered]
    );
    assert_eq!(status_of(&sim, "espm-1").as_deref(), Some("ACTIVE"));
    // The new owner disconnects: it is.
    assert_eq!(
        sink.deliver(&[disconnect(8, 99)]).await,
        [Outcome::Delivered]
    );
    assert_eq!(status_of(&sim, "espm-1").as_deref(), Some("INACTIVE"));
    sim.shutdown().await;
}

#[tokio::test]
async fn share_updates_refresh_mirrored_accounts_only_when_they_carry_details() {
    let sim = sim().await;
    let sink = sink(&sim);
    assert_eq!(
        sink.deliver(&[accepted(1, 1, 12, json!({"Master Tariff Id": "522"}))])
            .await,
        [Outcome::Delivered]
    );
    let before = sim.state().accounts();
    // PM's SHAREUPDATE: ids and a text only. Logged and skipped.
    let bare = notification(
        2,
        espm_events::SHARE_UPDATED,
        "SHAREUPDATE",
        json!({"propertyId": 1, "accountId": 55}),
    );
    let (requests, _) = sim.state().stats();
    assert_eq!(sink.deliver(&[bare]).await, [Outcome::Delivered]);
    assert_eq!(
        sim.state().stats().0,
        requests,
        "a bare share.updated called Arcadia"
    );
    assert_eq!(sim.state().accounts(), before);

    // With property details: the mirrored account is refreshed (not its customer: an access
    // level change does not change the owner).
    let detailed = |seq, property: i64| {
        notification(
            seq,
            espm_events::SHARE_UPDATED,
            "SHAREUPDATE",
            json!({"propertyId": property, "accountId": 55,
                   "propertyInfo": {"name": "Renamed",
                       "address": {"address1": "2 Oak St", "city": "Reston", "state": "VA",
                                   "postalCode": "20190", "country": "US"},
                       "grossFloorArea": {"units": "Square Feet", "value": 1234.4}}}),
        )
    };
    assert_eq!(
        sink.deliver(&[detailed(3, 1), detailed(4, 2)]).await,
        [Outcome::Delivered, Outcome::Delivered]
    );
    let a = account(&sim, "espm-1").unwrap();
    assert_eq!(a.account_name.as_deref(), Some("Renamed"));
    assert_eq!(a.address.as_ref().unwrap().zip.as_deref(), Some("20190"));
    assert_eq!(a.property("buildingArea"), Some("1234"));
    assert_eq!(a.customer_org_id.as_deref(), Some("12"));
    assert_eq!(a.status.as_deref(), Some("ACTIVE"));
    assert_eq!(a.tariffs.len(), 1, "the tariff is kept");
    // A refresh never creates an account.
    assert!(account(&sim, "espm-2").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn timeouts_are_retried() {
    let sim = sim().await;
    let mut cfg = config(&sim);
    cfg.timeout = Duration::from_millis(300);
    let sink = sink_with(&cfg, &ArcadiaSimConfig::default().app_key);
    sim.state()
        .set_faults(FaultConfig {
            latency_ms: 2_000,
            ..FaultConfig::default()
        })
        .unwrap();
    let state = sim.state().clone();
    let calm = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        state.set_faults(FaultConfig::default()).unwrap();
    });
    let out = sink.deliver(&[accepted(1, 4, 12, json!({}))]).await;
    calm.await.unwrap();
    assert_eq!(out, [Outcome::Delivered]);
    assert_eq!(status_of(&sim, "espm-4").as_deref(), Some("ACTIVE"));
    sim.shutdown().await;
}
