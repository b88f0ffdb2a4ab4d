//! The /ws endpoints: schema validity, auth, PM's errors, pagination, notification reads and
//! PM's coupling rules.

mod common;

use std::collections::BTreeSet;

use common::*;
use espm_model::{parse, CustomFieldValues, Customer, NotificationList, PendingList, Response};
use serde_json::json;

#[tokio::test]
async fn every_response_kind_validates_against_the_xsds() {
    let sim = Sim::start(true).await;

    // Notifications waiting in the scenario (peek, then read, then the empty list).
    let r = sim.get("/notification/list?clear=false").await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>"));
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/xml"
    );
    assert_valid(&r.body, AUTH_XSD);
    let list: NotificationList = parse(r.body.as_bytes()).unwrap();
    assert!(!list.notifications.is_empty());
    let r = sim.get("/notification/list").await;
    assert_valid(&r.body, AUTH_XSD);
    let r = sim.get("/notification/list").await;
    assert_valid(&r.body, AUTH_XSD);
    assert!(parse::<NotificationList>(r.body.as_bytes())
        .unwrap()
        .notifications
        .is_empty());

    // Pending lists, both account pages.
    for path in [
        "/connect/account/pending/list",
        "/connect/account/pending/list?page=2",
        "/share/property/pending/list",
        "/share/meter/pending/list",
    ] {
        let r = sim.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_valid(&r.body, AUTH_XSD);
        assert!(
            !parse::<PendingList>(r.body.as_bytes()).unwrap().is_empty(),
            "{path}"
        );
    }

    // Customers.
    let r = sim.get("/customer/list").await;
    assert_valid(&r.body, RESPONSE_XSD);
    let list: Response = parse(r.body.as_bytes()).unwrap();
    let links = list.links.unwrap().link;
    assert!(!links.is_empty());
    let id = links[0].id.unwrap();
    assert_eq!(
        links[0].link.as_deref(),
        Some(format!("/customer/{id}").as_str())
    );
    let r = sim.get(&format!("/customer/{id}")).await;
    assert_eq!(r.status, 200);
    assert_valid(&r.body, CUSTOMER_XSD);
    assert!(parse::<Customer>(r.body.as_bytes())
        .unwrap()
        .username
        .is_some());

    // Custom fields of an account, a property and a meter.
    let r = sim.get(&format!("/account/{id}/customFieldList")).await;
    assert_valid(&r.body, FIELDS_XSD);
    let world = sim.ok("GET", "/world", json!(null)).await;
    let pid = world["shares"]["properties"][0]["propertyId"]
        .as_i64()
        .unwrap();
    let mid = world["shares"]["meters"][0]["meterId"].as_i64().unwrap();
    for path in [
        format!("/property/{pid}/customFieldList"),
        format!("/meter/{mid}/customFieldList"),
    ] {
        let r = sim.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_valid(&r.body, FIELDS_XSD);
        assert!(!parse::<CustomFieldValues>(r.body.as_bytes())
            .unwrap()
            .fields
            .is_empty());
    }

    // Answers and errors.
    let pending: PendingList = parse(
        sim.get("/connect/account/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    let a = pending.accounts[0].account_id;
    let r = sim.accept(&format!("/connect/account/{a}")).await;
    assert_eq!(r.status, 200);
    assert_valid(&r.body, RESPONSE_XSD);
    let r = sim.accept(&format!("/connect/account/{a}")).await;
    assert_pm_error(&r, 400, Some("-200"));
    let r = sim
        .post_xml(
            "/customer",
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/requests/create-customer.xml"
            ))
            .unwrap(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_valid(&r.body, RESPONSE_XSD);

    // Empty customer list in an empty world.
    let empty = Sim::start(false).await;
    let r = empty.get("/customer/list").await;
    assert_valid(&r.body, RESPONSE_XSD);
    let r = empty.get("/connect/account/pending/list").await;
    assert_valid(&r.body, AUTH_XSD);
}

#[tokio::test]
async fn auth_is_required_on_ws_only() {
    let sim = Sim::start(true).await;
    let url = format!("{}/notification/list?clear=false", sim.server.base_url());
    let r = sim.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = sim
        .http
        .get(&url)
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert_valid(&body, RESPONSE_XSD);
    let r = sim
        .http
        .post(format!("{}/connect/account/1", sim.server.base_url()))
        .header("Content-Type", "application/xml")
        .body("<sharingResponse><action>Accept</action></sharingResponse>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nothing was consumed by the rejected reads; the control API needs no auth.
    let (status, s) = sim.ctl("GET", "/ledger?summary=true", None).await;
    assert_eq!(status, 200);
    assert_eq!(s["reads"], 0);
}

#[tokio::test]
async fn bodies_need_xml_content_type_and_a_valid_schema() {
    let sim = Sim::start(false).await;
    let a = sim.new_customer().await;
    sim.ok("POST", "/connections", json!({ "accountId": a }))
        .await;
    let url = format!("{}/connect/account/{a}", sim.server.base_url());
    let accept = "<sharingResponse><action>Accept</action></sharingResponse>";
    for ct in [None, Some("text/plain"), Some("application/json")] {
        let mut req = sim
            .http
            .post(&url)
            .basic_auth(USER, Some(PASS))
            .body(accept);
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        assert_valid(&r.text().await.unwrap(), RESPONSE_XSD);
    }
    let path = format!("/connect/account/{a}");
    for bad in [
        "not xml at all",
        "<sharingResponse><action>Accept</action>",
        "<terminateSharingResponse><note>x</note></terminateSharingResponse>",
        "<sharingResponse><action>Maybe</action></sharingResponse>",
        "<sharingResponse><action>Accept</action><note></note></sharingResponse>",
        "",
    ] {
        let r = sim.post_xml(&path, bad).await;
        assert_pm_error(&r, 400, Some("-100"));
    }
    // Still pending after all those failures; charset parameters are fine.
    let r = sim
        .http
        .post(&url)
        .basic_auth(USER, Some(PASS))
        .header("Content-Type", "application/xml; charset=UTF-8")
        .body(accept)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Disconnect needs a terminateSharingResponse.
    let r = sim
        .post_xml(&format!("/disconnect/account/{a}"), accept)
        .await;
    assert_pm_error(&r, 400, Some("-100"));
}

#[tokio::test]
async fn resolved_unknown_and_not_connected_give_minus_200() {
    let sim = Sim::start(false).await;
    let a = sim.connected_customer().await;
    let r = sim.accept(&format!("/connect/account/{a}")).await;
    let doc = assert_pm_error(&r, 400, Some("-200"));
    assert_eq!(
        doc.error_list()[0].error_description.as_deref(),
        Some("The pending request doesn't exist or has been fulfilled")
    );
    for path in [
        "/share/property/99",
        "/share/meter/99",
        "/connect/account/99",
    ] {
        assert_pm_error(&sim.reject(path).await, 400, Some("-200"));
    }
    let r = sim.terminate(&format!("/disconnect/account/{a}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = sim.terminate(&format!("/disconnect/account/{a}")).await;
    let doc = assert_pm_error(&r, 400, Some("-200"));
    assert_eq!(
        doc.error_list()[0].error_description.as_deref(),
        Some("You are not connected to this account")
    );
}

#[tokio::test]
async fn reads_after_unshare_or_disconnect_are_denied() {
    let sim = Sim::start(false).await;
    let a = sim.connected_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    assert_eq!(
        sim.accept(&format!("/share/property/{p}")).await.status,
        200
    );
    let m = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "propertyId": p, "accessLevel": "Read Write"}),
        )
        .await["meterId"]
        .as_i64()
        .unwrap();
    assert_eq!(sim.accept(&format!("/share/meter/{m}")).await.status, 200);
    assert_eq!(
        sim.get(&format!("/meter/{m}/customFieldList")).await.status,
        200
    );

    assert_eq!(
        sim.terminate(&format!("/unshare/meter/{m}")).await.status,
        200
    );
    assert_pm_error(
        &sim.get(&format!("/meter/{m}/customFieldList")).await,
        403,
        None,
    );
    assert_eq!(
        sim.get(&format!("/property/{p}/customFieldList"))
            .await
            .status,
        200
    );
    assert_eq!(
        sim.terminate(&format!("/unshare/property/{p}"))
            .await
            .status,
        200
    );
    let doc = assert_pm_error(
        &sim.get(&format!("/property/{p}/customFieldList")).await,
        403,
        None,
    );
    assert_eq!(
        doc.error_list()[0].error_description.as_deref(),
        Some("Access Denied")
    );
    assert_pm_error(
        &sim.terminate(&format!("/unshare/property/{p}")).await,
        400,
        Some("-200"),
    );

    assert_eq!(sim.get(&format!("/customer/{a}")).await.status, 200);
    assert_eq!(
        sim.terminate(&format!("/disconnect/account/{a}"))
            .await
            .status,
        200
    );
    assert_pm_error(&sim.get(&format!("/customer/{a}")).await, 403, None);
    assert_pm_error(&sim.get("/customer/12345").await, 404, None);
}

#[tokio::test]
async fn pagination_walk_follows_next_links() {
    let sim = Sim::start(false).await;
    let mut expected = BTreeSet::new();
    for i in 0..45 {
        let a = sim.new_customer().await;
        sim.ok(
            "POST",
            "/connections",
            json!({"accountId": a, "customFields": {"Customer Number": format!("N{i}")}}),
        )
        .await;
        expected.insert(a);
    }
    let mut seen = BTreeSet::new();
    let mut sizes = Vec::new();
    let mut next = Some("/connect/account/pending/list".to_string());
    while let Some(path) = next {
        let r = sim.get(&path).await;
        assert_valid(&r.body, AUTH_XSD);
        let page: PendingList = parse(r.body.as_bytes()).unwrap();
        sizes.push(page.accounts.len());
        for acc in &page.accounts {
            assert!(seen.insert(acc.account_id), "duplicate {}", acc.account_id);
            let f = acc.custom_field_list.as_ref().unwrap().to_map();
            assert!(f["Customer Number"].starts_with('N'));
        }
        next = page.next_page().map(str::to_string);
        if let Some(n) = &next {
            assert!(n.starts_with("/connect/account/pending/list?page="), "{n}");
            assert!(r.body.contains("httpMethod=\"GET\""));
        } else {
            assert!(!r.body.contains("<links"), "{}", r.body);
        }
    }
    assert_eq!(sizes, [20, 20, 5]);
    assert_eq!(seen, expected);
    // Beyond the end: an empty page.
    let r = sim.get("/connect/account/pending/list?page=9").await;
    assert!(parse::<PendingList>(r.body.as_bytes()).unwrap().is_empty());
}

#[tokio::test]
async fn clear_false_peeks_and_clear_defaults_to_true() {
    let sim = Sim::start(false).await;
    sim.ok(
        "POST",
        "/notifications",
        json!({"count": 3, "types": ["UNSHARE", "NEWCODE"]}),
    )
    .await;
    let a = sim.notifications("?clear=false").await;
    let b = sim.notifications("?clear=false").await;
    assert_eq!(a.notifications.len(), 3);
    assert_eq!(a, b);
    assert_eq!(a.notifications[1].notification_type_code, "NEWCODE");
    let c = sim.notifications("").await;
    assert_eq!(c, a);
    assert!(sim.notifications("").await.notifications.is_empty());
    sim.ok("POST", "/notifications", json!({"count": 2})).await;
    assert_eq!(
        sim.notifications("?clear=true").await.notifications.len(),
        2
    );
    assert!(sim
        .notifications("?clear=false")
        .await
        .notifications
        .is_empty());
    let s = sim.ok("GET", "/ledger?summary=true", json!(null)).await;
    assert_eq!(
        (
            s["created"].as_u64(),
            s["handedOut"].as_u64(),
            s["delivered"].as_u64()
        ),
        (Some(5), Some(5), Some(5))
    );
}

async fn pending(sim: &Sim, list: &str) -> PendingList {
    parse(
        sim.get(&format!("/{list}/pending/list"))
            .await
            .body
            .as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn accepting_a_meter_share_accepts_its_property_share_and_connection() {
    let sim = Sim::start(false).await;
    let a = sim.new_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let m = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "propertyId": p, "accessLevel": "Read"}),
        )
        .await["meterId"]
        .as_i64()
        .unwrap();
    // The share brought a connection request along (share from an unconnected owner).
    assert_eq!(
        pending(&sim, "connect/account").await.accounts[0].account_id,
        a
    );
    assert_eq!(sim.accept(&format!("/share/meter/{m}")).await.status, 200);
    assert!(pending(&sim, "share/property").await.is_empty());
    assert!(pending(&sim, "connect/account").await.is_empty());
    assert_eq!(sim.get(&format!("/customer/{a}")).await.status, 200);
    assert_eq!(
        sim.get(&format!("/property/{p}/customFieldList"))
            .await
            .status,
        200
    );
    assert_pm_error(
        &sim.accept(&format!("/share/property/{p}")).await,
        400,
        Some("-200"),
    );
}

#[tokio::test]
async fn accepting_a_property_share_leaves_its_meter_share_pending() {
    let sim = Sim::start(false).await;
    let a = sim.new_customer().await;
    let r = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "accessLevel": "Read Write"}),
        )
        .await;
    let (m, p) = (
        r["meterId"].as_i64().unwrap(),
        r["propertyId"].as_i64().unwrap(),
    );
    sim.ok(
        "POST",
        "/shares/property",
        json!({"accountId": a, "propertyId": p, "accessLevel": "Read"}),
    )
    .await;
    assert_eq!(
        sim.accept(&format!("/share/property/{p}")).await.status,
        200
    );
    // Accepting a share from an unconnected owner connected us.
    assert!(pending(&sim, "connect/account").await.is_empty());
    assert_eq!(sim.get(&format!("/customer/{a}")).await.status, 200);
    let meters = pending(&sim, "share/meter").await;
    assert_eq!(meters.meters[0].meter_id, m);
    assert_eq!(meters.meters[0].access_level.as_str(), "Read Write");
}

#[tokio::test]
async fn rejecting_the_connection_rejects_that_owners_shares() {
    let sim = Sim::start(false).await;
    let a = sim.new_customer().await;
    let other = sim.new_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let m = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await["meterId"]
        .as_i64()
        .unwrap();
    let q = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": other, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    assert_eq!(
        sim.reject(&format!("/connect/account/{a}")).await.status,
        200
    );
    let props = pending(&sim, "share/property").await;
    assert_eq!(
        props
            .properties
            .iter()
            .map(|p| p.property_id)
            .collect::<Vec<_>>(),
        [q]
    );
    assert!(pending(&sim, "share/meter").await.is_empty());
    assert_pm_error(
        &sim.accept(&format!("/share/property/{p}")).await,
        400,
        Some("-200"),
    );
    assert_pm_error(
        &sim.accept(&format!("/share/meter/{m}")).await,
        400,
        Some("-200"),
    );
    assert_pm_error(&sim.get(&format!("/customer/{a}")).await, 403, None);
}

#[tokio::test]
async fn disconnect_removes_shares_unless_kept() {
    let sim = Sim::start(false).await;
    let mut props = Vec::new();
    for keep in [false, true] {
        let a = sim.connected_customer().await;
        let p = sim
            .ok(
                "POST",
                "/shares/property",
                json!({"accountId": a, "accessLevel": "Read"}),
            )
            .await["propertyId"]
            .as_i64()
            .unwrap();
        assert_eq!(
            sim.accept(&format!("/share/property/{p}")).await.status,
            200
        );
        let r = sim
            .terminate(&format!("/disconnect/account/{a}?keepShares={keep}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_pm_error(&sim.get(&format!("/customer/{a}")).await, 403, None);
        props.push(p);
    }
    assert_pm_error(
        &sim.get(&format!("/property/{}/customFieldList", props[0]))
            .await,
        403,
        None,
    );
    assert_eq!(
        sim.get(&format!("/property/{}/customFieldList", props[1]))
            .await
            .status,
        200
    );
    // The provider's own actions notify nobody.
    assert!(sim.notifications("").await.notifications.is_empty());
}

#[tokio::test]
async fn unsharing_a_property_removes_its_meter_shares() {
    let sim = Sim::start(false).await;
    let a = sim.connected_customer().await;
    let r = sim
        .ok(
            "POST",
            "/shares/meter",
            json!({"accountId": a, "accessLevel": "Read"}),
        )
        .await;
    let (m, p) = (
        r["meterId"].as_i64().unwrap(),
        r["propertyId"].as_i64().unwrap(),
    );
    sim.ok(
        "POST",
        "/shares/property",
        json!({"accountId": a, "propertyId": p, "accessLevel": "Read"}),
    )
    .await;
    assert_eq!(sim.accept(&format!("/share/meter/{m}")).await.status, 200);
    assert_eq!(
        sim.get(&format!("/meter/{m}/customFieldList")).await.status,
        200
    );
    assert_eq!(
        sim.terminate(&format!("/unshare/property/{p}"))
            .await
            .status,
        200
    );
    assert_pm_error(
        &sim.get(&format!("/meter/{m}/customFieldList")).await,
        403,
        None,
    );
    assert_pm_error(
        &sim.terminate(&format!("/unshare/meter/{m}")).await,
        400,
        Some("-200"),
    );
    // Still connected.
    assert_eq!(sim.get(&format!("/customer/{a}")).await.status, 200);
}

#[tokio::test]
async fn post_customer_creates_and_connects() {
    let sim = Sim::start(false).await;
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/requests/create-customer.xml"
    ))
    .unwrap();
    let r = sim.post_xml("/customer", &xml).await;
    assert_eq!(r.status, 201);
    let doc: Response = parse(r.body.as_bytes()).unwrap();
    let id = doc.id.unwrap();
    let link = &doc.links.unwrap().link[0];
    assert_eq!(
        link.link.as_deref(),
        Some(format!("/customer/{id}").as_str())
    );
    let list: Response = parse(sim.get("/customer/list").await.body.as_bytes()).unwrap();
    let links = list.links.unwrap().link;
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].id, links[0].hint.as_deref()),
        (Some(id), Some("ACME Corporation"))
    );
    let c: Customer = parse(sim.get(&format!("/customer/{id}")).await.body.as_bytes()).unwrap();
    let fixture: espm_model::NewCustomer = parse(xml.as_bytes()).unwrap();
    assert_eq!(c.username.as_deref(), Some(fixture.username.as_str()));
    // Same username again.
    assert_pm_error(&sim.post_xml("/customer", &xml).await, 400, Some("-200"));
    assert_pm_error(
        &sim.post_xml("/customer", "<customer/>").await,
        400,
        Some("-100"),
    );
}

#[tokio::test]
async fn property_reads_follow_access_and_validate() {
    let sim = Sim::start(false).await;
    let a = sim.connected_customer().await;
    let p = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": a, "name": "Harbor Office", "accessLevel": "Read",
                   "grossFloorArea": {"value": 52000.0, "units": "Square Feet"}}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    // Offered: readable (PM lists its basics with the share anyway), no access level yet.
    let r = sim.get(&format!("/property/{p}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_valid(&r.body, "property/property.xsd");
    let doc: espm_model::Property = parse(r.body.as_bytes()).unwrap();
    assert_eq!(doc.name.as_deref(), Some("Harbor Office"));
    assert!(doc.address.as_ref().is_some_and(|a| !a.city.is_empty()));
    assert_eq!(doc.gross_floor_area.as_ref().unwrap().value, Some(52000.0));
    assert_eq!(doc.access_level, None);
    sim.accept(&format!("/share/property/{p}")).await;
    let doc: espm_model::Property =
        parse(sim.get(&format!("/property/{p}")).await.body.as_bytes()).unwrap();
    assert_eq!(doc.access_level, Some(espm_model::AccessLevel::Read));
    sim.terminate(&format!("/unshare/property/{p}")).await;
    let doc = assert_pm_error(&sim.get(&format!("/property/{p}")).await, 403, None);
    assert_eq!(
        doc.error_list()[0].error_description.as_deref(),
        Some("Access Denied")
    );
    assert_pm_error(&sim.get("/property/1").await, 404, None);
}
