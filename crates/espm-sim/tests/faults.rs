//! Injected faults on /ws and how the ledger records faulted notification reads.

mod common;

use common::*;
use espm_model::{parse, DocumentError, NotificationList, PendingList};
use serde_json::{json, Value};

async fn ledger(sim: &Sim) -> Value {
    sim.ok("GET", "/ledger", json!(null)).await
}

async fn summary(sim: &Sim) -> Value {
    sim.ok("GET", "/ledger?summary=true", json!(null)).await
}

async fn sim_with(count: usize) -> Sim {
    let sim = Sim::start(false).await;
    sim.ok("POST", "/notifications", json!({ "count": count }))
        .await;
    sim
}

#[tokio::test]
async fn rate_limit_with_retry_after_does_not_consume() {
    let sim = sim_with(3).await;
    sim.set_faults(json!({"http429": 1.0, "retry_after_secs": 7}))
        .await;
    let r = sim.get("/notification/list").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"].to_str().unwrap(), "7");
    assert_valid(&r.body, RESPONSE_XSD);
    let l = ledger(&sim).await;
    assert_eq!(l["reads"][0]["fault"], "http429");
    assert_eq!(l["reads"][0]["committed"], false);
    assert_eq!(l["reads"][0]["delivery"], "lost");
    sim.set_faults(json!({})).await;
    assert_eq!(sim.notifications("").await.notifications.len(), 3);
    let s = summary(&sim).await;
    assert_eq!(
        (
            s["delivered"].as_u64(),
            s["lost"].as_u64(),
            s["faultedReads"].as_u64()
        ),
        (Some(3), Some(0), Some(1))
    );
}

#[tokio::test]
async fn server_error_and_maintenance_page() {
    let sim = sim_with(2).await;
    sim.set_faults(json!({"script": ["http500", "http502"]}))
        .await;
    let r = sim.get("/notification/list").await;
    assert_pm_error(&r, 500, None);
    let r = sim.get("/share/property/pending/list").await;
    assert_eq!(r.status, 502);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.body.contains("Scheduled Maintenance"));
    assert!(matches!(
        parse::<PendingList>(r.body.as_bytes()),
        Err(DocumentError::NotXml { .. })
    ));
    // The script is used up: normal service, nothing lost.
    assert_eq!(sim.notifications("").await.notifications.len(), 2);
    let f = sim.ok("GET", "/faults", json!(null)).await;
    assert_eq!(f["script"], json!([]));
}

#[tokio::test]
async fn truncated_body_commits_and_is_recorded_as_lost() {
    let sim = sim_with(4).await;
    let full = sim.get("/notification/list?clear=false").await.body;
    sim.set_faults(json!({"truncated": 1.0})).await;
    let r = sim.get("/notification/list").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), full.len() / 2);
    assert!(full.starts_with(&r.body));
    assert!(matches!(
        parse::<NotificationList>(r.body.as_bytes()),
        Err(DocumentError::Malformed { .. })
    ));
    sim.set_faults(json!({})).await;
    // PM had already committed: they never come back.
    assert!(sim.notifications("").await.notifications.is_empty());
    let l = ledger(&sim).await;
    let read = &l["reads"][1];
    assert_eq!(
        (read["fault"].as_str(), read["committed"].as_bool()),
        (Some("truncated"), Some(true))
    );
    assert!(l["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["delivery"] == "lost" && n["readId"] == 2));
    let s = summary(&sim).await;
    assert_eq!(
        (
            s["lost"].as_u64(),
            s["handedOut"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some(4), Some(4), Some(0))
    );
}

#[tokio::test]
async fn dropped_connection_commits_and_is_recorded_as_lost() {
    let sim = sim_with(2).await;
    sim.set_faults(json!({"drop": 1.0, "paths": ["/notification/list"]}))
        .await;
    let url = format!("{}/notification/list", sim.server.base_url());
    let resp = sim.http.get(&url).basic_auth(USER, Some(PASS)).send().await;
    match resp {
        Err(_) => {}
        Ok(r) => assert!(
            r.bytes().await.is_err(),
            "a dropped response must not arrive intact"
        ),
    }
    // Other paths are not affected.
    assert_eq!(sim.get("/customer/list").await.status, 200);
    sim.set_faults(json!({})).await;
    assert!(sim.notifications("").await.notifications.is_empty());
    let s = summary(&sim).await;
    assert_eq!(
        (s["lost"].as_u64(), s["faultedReads"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn commit_policy_is_configurable() {
    // none: even a truncated read leaves the notifications queued.
    let sim = sim_with(2).await;
    sim.set_faults(json!({"script": ["truncated"], "clear_commits_on_failure": "none"}))
        .await;
    assert_eq!(sim.get("/notification/list").await.status, 200);
    assert_eq!(sim.notifications("").await.notifications.len(), 2);
    let s = summary(&sim).await;
    assert_eq!(
        (s["delivered"].as_u64(), s["lost"].as_u64()),
        (Some(2), Some(0))
    );

    // all: a 500 after PM processed the request; the notifications and the accept are gone.
    let sim = sim_with(2).await;
    let a = sim.new_customer().await;
    sim.ok("POST", "/connections", json!({"accountId": a}))
        .await;
    sim.set_faults(json!({"script": ["http500", "http500"], "clear_commits_on_failure": "all"}))
        .await;
    assert_eq!(sim.get("/notification/list").await.status, 500);
    assert_eq!(
        sim.accept(&format!("/connect/account/{a}")).await.status,
        500
    );
    assert!(sim.notifications("").await.notifications.is_empty());
    assert_pm_error(
        &sim.accept(&format!("/connect/account/{a}")).await,
        400,
        Some("-200"),
    );
    assert_eq!(summary(&sim).await["lost"], 2);

    // body (default): a 500 on an accept did nothing; retrying succeeds.
    let sim = Sim::start(false).await;
    let a = sim.new_customer().await;
    sim.ok("POST", "/connections", json!({"accountId": a}))
        .await;
    sim.set_faults(json!({"script": ["http500"]})).await;
    assert_eq!(
        sim.accept(&format!("/connect/account/{a}")).await.status,
        500
    );
    assert_eq!(
        sim.accept(&format!("/connect/account/{a}")).await.status,
        200
    );
}

#[tokio::test]
async fn latency_and_path_filter() {
    let sim = sim_with(1).await;
    sim.set_faults(json!({"latency_ms": 300, "paths": ["/share/"]}))
        .await;
    let t = std::time::Instant::now();
    assert_eq!(sim.get("/share/meter/pending/list").await.status, 200);
    // A lower bound only: the sleep is guaranteed, nothing is assumed about speed.
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    let f = sim.ok("GET", "/faults", json!(null)).await;
    assert_eq!(f["latency_ms"], 300);
    assert_eq!(f["clear_commits_on_failure"], "body");
    let (status, _) = sim
        .ctl("PUT", "/faults", Some(json!({"http500": 2.0})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = sim.ctl("PUT", "/faults", Some(json!({"bogus": 1}))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn mixed_fault_rates_never_lose_a_notification_from_the_ledger() {
    let sim = Sim::start_seeded(false, 9).await;
    sim.set_faults(json!({"http429": 0.2, "retry_after_secs": 0, "http500": 0.1, "http502": 0.1, "truncated": 0.1, "drop": 0.1})).await;
    let mut received = std::collections::BTreeSet::new();
    for round in 0..40 {
        sim.ok("POST", "/notifications", json!({"count": 1 + round % 3}))
            .await;
        let url = format!("{}/notification/list", sim.server.base_url());
        if let Ok(r) = sim.http.get(&url).basic_auth(USER, Some(PASS)).send().await {
            if r.status() == 200 {
                if let Ok(body) = r.bytes().await {
                    if let Ok(list) = parse::<NotificationList>(&body) {
                        for n in list.notifications {
                            assert!(received.insert(n.notification_id), "handed out twice");
                        }
                    }
                }
            }
        }
    }
    let l = ledger(&sim).await;
    let ns = l["notifications"].as_array().unwrap();
    let s = summary(&sim).await;
    assert_eq!(s["created"].as_u64().unwrap() as usize, ns.len());
    // What the client parsed is exactly what the ledger says was delivered.
    let delivered: std::collections::BTreeSet<i64> = ns
        .iter()
        .filter(|n| n["delivery"] == "delivered")
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, received);
    assert_eq!(
        s["pending"].as_u64().unwrap() + s["handedOut"].as_u64().unwrap(),
        s["created"].as_u64().unwrap()
    );
    assert!(s["faultedReads"].as_u64().unwrap() > 0);
}
