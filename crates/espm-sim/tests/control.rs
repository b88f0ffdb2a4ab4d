//! The /sim control API: each customer action produces exactly PM's notifications; load
//! generation; the ledger; reset and reproducibility.

mod common;

use std::collections::BTreeSet;

use common::*;
use espm_model::{parse, Notification, NotificationList, PendingList, Response};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<i64> {
    v["notificationIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn kinds(ns: &[Notification]) -> Vec<(&str, Option<i64>, Option<i64>)> {
    ns.iter()
        .map(|n| (n.notification_type_code.as_str(), n.property_id, n.meter_id))
        .collect()
}

/// A connected customer with one accepted property share holding `meters` accepted meter shares.
async fn portfolio(sim: &Sim, meters: usize) -> (i64, i64, Vec<i64>) {
    let a = sim.connected_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "name": "Harbor Office", "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    assert_eq!(
        sim.accept(&format!("/share/property/{p}")).await.status,
        200
    );
    let mut ms = Vec::new();
    for _ in 0..meters {
        let m = sim
            .ok(
                "POST",
                "/shares/meter",
                json!({"accountId": a, "propertyId": p, "accessLevel": "Read"}),
            )
            .await["meterId"]
            .as_i64()
            .unwrap();
        assert_eq!(sim.accept(&format!("/share/meter/{m}")).await.status, 200);
        ms.push(m);
    }
    (a, p, ms)
}

#[tokio::test]
async fn requests_show_up_in_pending_lists_with_custom_fields() {
    let sim = Sim::start(false).await;
    let a = sim
        .ok("POST", "/customers", json!({"username": "jane_doe", "firstName": "Jane", "lastName": "Doe", "organization": "ACME"}))
        .await["accountId"]
        .as_i64()
        .unwrap();
    let (status, _) = sim
        .ctl("POST", "/customers", Some(json!({"username": "jane_doe"})))
        .await;
    assert_eq!(status, 409);
    sim.ok(
        "POST",
        "/connections",
        json!({"accountId": a, "customFields": {"Customer Number": "D987"}}),
    )
    .await;
    let (status, _) = sim
        .ctl("POST", "/connections", Some(json!({"accountId": a})))
        .await;
    assert_eq!(status, 409);
    let list: PendingList = parse(
        sim.get("/connect/account/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    let acc = &list.accounts[0];
    assert_eq!((acc.account_id, acc.username.as_str()), (a, "jane_doe"));
    let info = acc.account_info.as_ref().unwrap();
    assert_eq!(
        (info.first_name.as_deref(), info.organization.as_deref()),
        (Some("Jane"), Some("ACME"))
    );
    assert_eq!(
        acc.custom_field_list.as_ref().unwrap().to_map()["Customer Number"],
        "D987"
    );
    assert!(acc
        .connection_audit
        .as_ref()
        .unwrap()
        .created_date
        .is_some());

    let p = sim
        .ok("POST", "/shares/property", json!({"accountId": a, "name": "Broadway School", "accessLevel": "Read Write", "customFields": {"Lot Number": "987"}}))
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let list: PendingList = parse(
        sim.get("/share/property/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    let pp = &list.properties[0];
    assert_eq!(
        (pp.property_id, pp.account_id, pp.access_level.as_str()),
        (p, a, "Read Write")
    );
    assert_eq!(pp.property_info.name.as_deref(), Some("Broadway School"));
    assert_eq!(
        pp.share_audit.as_ref().unwrap().created_by_account_id,
        Some(a)
    );
    let r = sim.ok("POST", "/shares/meter", json!({"accountId": a, "propertyId": p, "accessLevel": "Read", "customFields": {"Meter Number": "123"}})).await;
    assert_eq!(r["propertyId"].as_i64(), Some(p));
    let m = r["meterId"].as_i64().unwrap();
    let list: PendingList =
        parse(sim.get("/share/meter/pending/list").await.body.as_bytes()).unwrap();
    let pm = &list.meters[0];
    assert_eq!((pm.meter_id, pm.property_id, pm.account_id), (m, p, a));
    assert!(pm.meter_info.is_some());
    let f: espm_model::CustomFieldValues = parse(
        sim.get(&format!("/meter/{m}/customFieldList"))
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(f.fields[0].value, "123");
    // Requests notify nothing.
    assert!(sim.notifications("").await.notifications.is_empty());
    // Bad input is a JSON error.
    let (status, v) = sim
        .ctl(
            "POST",
            "/shares/property",
            Some(json!({"accountId": a, "accessLevel": "Admin"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = sim
        .ctl(
            "POST",
            "/shares/property",
            Some(json!({"accountId": 1, "accessLevel": "Read"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn edit_gives_one_shareupdate() {
    let sim = Sim::start(false).await;
    let (a, p, ms) = portfolio(&sim, 1).await;
    let v = sim
        .ok(
            "POST",
            "/shares/edit",
            json!({"propertyId": p, "accessLevel": "Read Write"}),
        )
        .await;
    let v2 = sim
        .ok(
            "POST",
            "/shares/edit",
            json!({"meterId": ms[0], "accessLevel": "Read Write"}),
        )
        .await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(
        kinds(&got),
        [
            ("SHAREUPDATE", Some(p), None),
            ("SHAREUPDATE", Some(p), Some(ms[0]))
        ]
    );
    assert_eq!(
        got.iter().map(|n| n.notification_id).collect::<Vec<_>>(),
        [ids(&v), ids(&v2)].concat()
    );
    assert_eq!(got[0].account_id, Some(a));
    assert!(
        got[0]
            .description
            .starts_with("Harbor Office - Access level revised to"),
        "{}",
        got[0].description
    );
    assert!(got[0].username.as_deref().is_some_and(|u| !u.is_empty()));
    let (status, _) = sim
        .ctl("POST", "/shares/edit", Some(json!({"propertyId": p})))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn unshare_meter_and_property() {
    let sim = Sim::start(false).await;
    let (a, p, ms) = portfolio(&sim, 2).await;
    sim.ok("POST", "/unshare", json!({"meterId": ms[0]})).await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(kinds(&got), [("UNSHARE", Some(p), Some(ms[0]))]);
    assert_eq!(got[0].account_id, Some(a));
    assert!(
        got[0].description.contains(" - Share terminated by "),
        "{}",
        got[0].description
    );
    sim.ok("POST", "/unshare", json!({"propertyId": p})).await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(
        kinds(&got),
        [
            ("UNSHARE", Some(p), None),
            ("UNSHARE", Some(p), Some(ms[1]))
        ]
    );
    let (status, _) = sim
        .ctl("POST", "/unshare", Some(json!({"propertyId": p})))
        .await;
    assert_eq!(status, 409);
    // Withdrawing a pending share notifies nothing.
    let q = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let v = sim.ok("POST", "/unshare", json!({"propertyId": q})).await;
    assert!(ids(&v).is_empty());
    assert!(sim.notifications("").await.notifications.is_empty());
}

#[tokio::test]
async fn customer_disconnect_gives_disconnect_plus_unshares() {
    let sim = Sim::start(false).await;
    let a = sim
        .ok(
            "POST",
            "/customers",
            json!({"firstName": "Jane", "lastName": "Doe"}),
        )
        .await["accountId"]
        .as_i64()
        .unwrap();
    sim.ok("POST", "/connections", json!({"accountId": a}))
        .await;
    assert_eq!(
        sim.accept(&format!("/connect/account/{a}")).await.status,
        200
    );
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    sim.accept(&format!("/share/property/{p}")).await;
    let r = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "propertyId": p, "accessLevel": "Read"}),
        )
        .await;
    let m = r["meterId"].as_i64().unwrap();
    sim.accept(&format!("/share/meter/{m}")).await;
    // A pending share from the same customer is withdrawn silently.
    sim.ok(
        "POST",
        "/shares/property",
        json!({"accountId": a, "accessLevel": "Read"}),
    )
    .await;
    // Someone else's share is untouched.
    let (_, other_p, _) = portfolio(&sim, 0).await;

    let v = sim.ok("POST", "/disconnect", json!({"accountId": a})).await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(
        kinds(&got),
        [
            ("DISCONNECT", None, None),
            ("UNSHARE", Some(p), None),
            ("UNSHARE", Some(p), Some(m))
        ]
    );
    assert_eq!(
        got.iter().map(|n| n.notification_id).collect::<Vec<_>>(),
        ids(&v)
    );
    assert_eq!(got[0].description, "You are disconnected from Jane Doe.");
    assert!(got.iter().all(|n| n.account_id == Some(a)));
    assert!(parse::<PendingList>(
        sim.get("/share/property/pending/list")
            .await
            .body
            .as_bytes()
    )
    .unwrap()
    .is_empty());
    assert_pm_error(&sim.get(&format!("/customer/{a}")).await, 403, None);
    assert_eq!(
        sim.get(&format!("/property/{other_p}/customFieldList"))
            .await
            .status,
        200
    );
    let (status, _) = sim
        .ctl("POST", "/disconnect", Some(json!({"accountId": a})))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn transfer_gives_transferproperty_and_unshares_when_access_is_removed() {
    let sim = Sim::start(false).await;
    let (old, p, ms) = portfolio(&sim, 1).await;
    let new = sim
        .ok("POST", "/customers", json!({"username": "bayowner"}))
        .await["accountId"]
        .as_i64()
        .unwrap();
    sim.ok(
        "POST",
        "/transfer",
        json!({"propertyId": p, "toAccountId": new, "removeAccess": false}),
    )
    .await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(kinds(&got), [("TRANSFERPROPERTY", Some(p), None)]);
    assert_eq!(
        (got[0].account_id, got[0].username.as_deref()),
        (Some(new), Some("bayowner"))
    );
    assert_eq!(
        got[0].notification_created_by_account_id,
        Some(old.to_string())
    );
    assert!(got[0].description.contains(&format!(
        "({p}) has been transferred to owner account bayowner ({new})"
    )));
    // Access kept: still readable.
    assert_eq!(
        sim.get(&format!("/property/{p}/customFieldList"))
            .await
            .status,
        200
    );

    sim.ok(
        "POST",
        "/transfer",
        json!({"propertyId": p, "toAccountId": old, "removeAccess": true}),
    )
    .await;
    let got = sim.notifications("").await.notifications;
    assert_eq!(
        kinds(&got),
        [
            ("TRANSFERPROPERTY", Some(p), None),
            ("UNSHARE", Some(p), None),
            ("UNSHARE", Some(p), Some(ms[0]))
        ]
    );
    assert_pm_error(
        &sim.get(&format!("/property/{p}/customFieldList")).await,
        403,
        None,
    );
    // Nothing visible any more: a further transfer notifies nobody.
    let v = sim
        .ok(
            "POST",
            "/transfer",
            json!({"propertyId": p, "toAccountId": new}),
        )
        .await;
    assert!(ids(&v).is_empty());
}

#[tokio::test]
async fn bulk_load_of_100k_is_handed_out_exactly_once() {
    let sim = Sim::start(false).await;
    let v = sim.ok("POST", "/notifications", json!({"count": 100_000, "types": ["UNSHARE", "SHAREUPDATE", "DISCONNECT", "TRANSFERPROPERTY", "FUTURECODE"]})).await;
    let first = v["firstId"].as_i64().unwrap();
    assert_eq!(v["lastId"].as_i64().unwrap() - first + 1, 100_000);
    let list = sim.notifications("").await.notifications;
    assert_eq!(list.len(), 100_000);
    let unique: BTreeSet<i64> = list.iter().map(|n| n.notification_id).collect();
    assert_eq!(unique.len(), 100_000);
    assert!(unique.iter().any(|id| *id > i64::from(i32::MAX)));
    assert_eq!(list[4].notification_type_code, "FUTURECODE");
    assert!(sim.notifications("").await.notifications.is_empty());
    let s = sim.ok("GET", "/ledger?summary=true", json!(null)).await;
    assert_eq!(s["created"], 100_000);
    assert_eq!(s["delivered"], 100_000);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["reads"], 2);
}

#[tokio::test]
async fn ledger_records_every_notification_and_read() {
    let sim = Sim::start(false).await;
    sim.ok("POST", "/notifications", json!({"count": 2})).await;
    sim.notifications("?clear=false").await;
    sim.notifications("").await;
    sim.ok(
        "POST",
        "/notifications",
        json!({"count": 1, "types": ["DISCONNECT"]}),
    )
    .await;
    let l = sim.ok("GET", "/ledger", json!(null)).await;
    let ns = l["notifications"].as_array().unwrap();
    assert_eq!(ns.len(), 3);
    assert_eq!(ns[0]["readId"], 2);
    assert_eq!(ns[0]["delivery"], "delivered");
    assert!(ns[0]["handedOutAt"].is_string() && ns[0]["createdAt"].is_string());
    assert_eq!(ns[2]["type"], "DISCONNECT");
    assert!(ns[2].get("readId").is_none());
    let reads = l["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 2);
    assert_eq!(
        (reads[0]["clear"].as_bool(), reads[0]["committed"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(reads[1]["notificationIds"].as_array().unwrap().len(), 2);
    let s = sim.ok("GET", "/ledger?summary=true", json!(null)).await;
    assert_eq!(
        (
            s["created"].as_u64(),
            s["pending"].as_u64(),
            s["handedOut"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
}

#[tokio::test]
async fn reset_and_seed_reproduce_the_scenario() {
    let a = Sim::start_seeded(true, 7).await;
    let b = Sim::start_seeded(true, 7).await;
    let c = Sim::start_seeded(true, 8).await;
    let path = "/connect/account/pending/list?page=2";
    let (la, lb, lc) = (
        a.get(path).await.body,
        b.get(path).await.body,
        c.get(path).await.body,
    );
    let ids = |x: &str| {
        parse::<PendingList>(x.as_bytes())
            .unwrap()
            .accounts
            .iter()
            .map(|p| p.account_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&la), ids(&lb));
    assert_ne!(ids(&la), ids(&lc));
    let before: Response = parse(a.get("/customer/list").await.body.as_bytes()).unwrap();
    let waiting = a.notifications("").await.notifications.len();
    assert!(waiting >= 4);
    a.ok("POST", "/reset", json!({})).await;
    let after: Response = parse(a.get("/customer/list").await.body.as_bytes()).unwrap();
    assert_eq!(before, after);
    assert_eq!(
        a.notifications("?clear=false").await.notifications.len(),
        waiting
    );
    let s = a.ok("GET", "/ledger?summary=true", json!(null)).await;
    assert_eq!(s["reads"], 1);
}

/// `GET /customer/{id}` answers the username and the organisation (what events are enriched
/// with), and `/sim/calls` counts every authorised `/ws` request, faulted ones too, until a reset.
#[tokio::test]
async fn customer_lookups_answer_username_and_organisation_and_are_counted() {
    let sim = Sim::start(false).await;
    let a = sim
        .ok(
            "POST",
            "/customers",
            json!({"username": "acme_facilities", "organization": "ACME Corporation"}),
        )
        .await["accountId"]
        .as_i64()
        .unwrap();
    sim.ok("POST", "/connections", json!({ "accountId": a }))
        .await;
    assert_eq!(
        sim.accept(&format!("/connect/account/{a}")).await.status,
        200
    );

    let r = sim.get(&format!("/customer/{a}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c: espm_model::Customer = parse(r.body.as_bytes()).unwrap();
    assert_eq!(c.username.as_deref(), Some("acme_facilities"));
    assert_eq!(
        c.account_info.and_then(|i| i.organization).as_deref(),
        Some("ACME Corporation")
    );

    sim.set_faults(json!({"script": ["http500"], "paths": ["/customer/"]}))
        .await;
    assert_eq!(sim.get(&format!("/customer/{a}")).await.status, 500);
    // Without credentials: refused before it counts.
    let anonymous = sim
        .http
        .get(format!("{}/customer/{a}", sim.server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(sim.ctl.customer_lookups(a).await, 2);
    let calls = sim.ctl.calls().await;
    assert_eq!(calls.get(&format!("POST /connect/account/{a}")), Some(&1));
    assert_eq!(sim.ctl.customer_lookups(a + 1).await, 0);

    sim.ok("POST", "/reset", json!({})).await;
    assert!(sim.ctl.calls().await.is_empty());
}

/// A share forward: customer B shares A's property. PM lists it under the owner (`accountId`
/// A) with B in `shareAudit`, and A's connection request arrives alongside; accepting connects A.
/// A later edit by B is a SHAREUPDATE whose `accountId` (A) and editor (B) differ.
#[tokio::test]
async fn share_forward_names_the_owner_and_the_sender() {
    let sim = Sim::start(false).await;
    let owner = sim.new_customer().await;
    let forwarder = sim.new_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": owner, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    // The owner withdraws their own share; the property stays theirs.
    sim.ok("POST", "/unshare", json!({"propertyId": p})).await;
    sim.ok(
        "POST",
        "/shares/property",
        json!({"accountId": forwarder, "propertyId": p, "accessLevel": "Read Write"}),
    )
    .await;
    let list: PendingList = parse(
        sim.get("/share/property/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    let entry = &list.properties[0];
    assert_eq!(entry.account_id, owner);
    let audit = entry.share_audit.as_ref().unwrap();
    assert_eq!(audit.created_by_account_id, Some(forwarder));
    assert_ne!(audit.created_by.as_deref(), Some(entry.username.as_str()));
    let conns: PendingList = parse(
        sim.get("/connect/account/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    let askers: Vec<i64> = conns.accounts.iter().map(|a| a.account_id).collect();
    assert!(askers.contains(&owner), "{askers:?}");
    assert!(!askers.contains(&forwarder), "{askers:?}");
    assert_eq!(
        sim.accept(&format!("/share/property/{p}")).await.status,
        200
    );
    assert_eq!(sim.get(&format!("/customer/{owner}")).await.status, 200);

    sim.ok(
        "POST",
        "/shares/edit",
        json!({"propertyId": p, "accessLevel": "Read"}),
    )
    .await;
    let n: NotificationList = parse(sim.get("/notification/list").await.body.as_bytes()).unwrap();
    let update = &n.notifications[0];
    assert_eq!(update.notification_type_code, "SHAREUPDATE");
    assert_eq!(update.account_id, Some(owner));
    assert_eq!(
        update.notification_created_by_account_id,
        Some(forwarder.to_string())
    );
    assert!(
        update.description.contains("Read Only"),
        "{}",
        update.description
    );
}
