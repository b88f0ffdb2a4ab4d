//! PM's test-environment calls (invites and custom-field updates, authenticated as the customer),
//! the test environment's 403 on unshare (surfaced by the client as the typed error), and
//! `POST /customer` validation.

mod common;

use common::*;
use espm_client::{
    Action, ClientConfig, ClientError, CustomFieldTarget, PendingKind, PmClient, RetryPolicy,
};
use espm_model::{parse, AccessLevel, Customer, NewCustomer, PendingList, Response};
use espm_sim::PROVIDER_ACCOUNT_ID;
use reqwest::StatusCode;
use serde_json::json;

const CUSTOMER: &str = "tess_tester";
const CUSTOMER_PASS: &str = "Tess-Pass-1";

fn provider(base: &str) -> PmClient {
    let mut cfg = ClientConfig::new(base, USER, PASS);
    cfg.retry = RetryPolicy::none();
    PmClient::new(cfg).unwrap()
}

/// A customer call: HTTP Basic as `user`, optional XML body.
async fn as_customer(
    sim: &Sim,
    method: reqwest::Method,
    base: &str,
    path: &str,
    auth: (&str, &str),
    xml: Option<&str>,
) -> Reply {
    let mut req = sim
        .http
        .request(method, format!("{base}{path}"))
        .basic_auth(auth.0, Some(auth.1));
    if let Some(x) = xml {
        req = req
            .header("Content-Type", "application/xml")
            .body(x.to_string());
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

async fn invite(sim: &Sim, base: &str, path: &str, xml: Option<&str>) -> Reply {
    as_customer(
        sim,
        reqwest::Method::POST,
        base,
        path,
        (CUSTOMER, CUSTOMER_PASS),
        xml,
    )
    .await
}

async fn put_fields(sim: &Sim, path: &str, xml: &str) -> Reply {
    as_customer(
        sim,
        reqwest::Method::PUT,
        &sim.server.test_base_url(),
        path,
        (CUSTOMER, CUSTOMER_PASS),
        Some(xml),
    )
    .await
}

fn fields_xml(pairs: &[(&str, &str)]) -> String {
    let mut x = String::from("<customFieldList>");
    for (n, v) in pairs {
        x.push_str(&format!("<customField name=\"{n}\">{v}</customField>"));
    }
    x.push_str("</customFieldList>");
    x
}

/// A customer with a password, an unshared property and an unshared meter on it.
async fn customer_with_property(sim: &Sim, username: &str) -> (i64, i64, i64) {
    let a = sim
        .ok(
            "POST",
            "/customers",
            json!({"username": username, "password": CUSTOMER_PASS, "organization": "Test Org"}),
        )
        .await["accountId"]
        .as_i64()
        .unwrap();
    let p = sim
        .ok(
            "POST",
            "/properties",
            json!({"accountId": a, "name": "Test Tower"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let m = sim.ok("POST", "/meters", json!({"propertyId": p})).await["meterId"]
        .as_i64()
        .unwrap();
    (a, p, m)
}

fn fields_of(list: &Option<espm_model::CustomFieldList>) -> Vec<(String, String)> {
    list.as_ref()
        .map(|l| {
            l.fields
                .iter()
                .map(|f| (f.name.clone(), f.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn invites_as_the_customer_make_the_pending_requests_the_provider_sees() {
    let sim = Sim::start(false).await;
    let test = sim.server.test_base_url();
    let (a, p, m) = customer_with_property(&sim, CUSTOMER).await;
    let pm = provider(&test);

    // The connection request, with custom fields.
    let r = invite(
        &sim,
        &test,
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}"),
        Some(&fields_xml(&[("Customer Number", "T-1")])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_valid(&r.body, RESPONSE_XSD);
    let pages = pm.pending_all(PendingKind::Connection).await.unwrap();
    let req = &pages[0].accounts[0];
    assert_eq!((req.account_id, req.username.as_str()), (a, CUSTOMER));
    assert_eq!(
        fields_of(&req.custom_field_list),
        vec![("Customer Number".to_string(), "T-1".to_string())]
    );

    // Property (READ_WRITE) and meter (READ) shares.
    let r = invite(
        &sim,
        &test,
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{p}?accessLevel=READ_WRITE"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = invite(
        &sim,
        &test,
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/meter/{m}?accessLevel=READ"),
        Some(&fields_xml(&[("Meter Number", "M-9")])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let props = pm.pending_all(PendingKind::PropertyShare).await.unwrap();
    let prop = &props[0].properties[0];
    assert_eq!(
        (prop.property_id, prop.account_id, prop.access_level.clone()),
        (p, a, AccessLevel::ReadWrite)
    );
    let meters = pm.pending_all(PendingKind::MeterShare).await.unwrap();
    let meter = &meters[0].meters[0];
    assert_eq!(
        (
            meter.meter_id,
            meter.property_id,
            meter.access_level.clone()
        ),
        (m, p, AccessLevel::Read)
    );
    assert_eq!(
        fields_of(&meter.custom_field_list),
        vec![("Meter Number".to_string(), "M-9".to_string())]
    );
    // The same world as /ws and the control API.
    let ws = provider(&sim.server.base_url());
    assert_eq!(
        ws.pending_all(PendingKind::MeterShare).await.unwrap()[0].meters[0].meter_id,
        m
    );
    let world = sim.ok("GET", "/world", json!(null)).await;
    assert_eq!(world["provider"]["accountId"], PROVIDER_ACCOUNT_ID);
    assert_eq!(world["pending"]["meters"][0]["meterId"], m);

    // Repeats are PM's -200.
    let again = invite(
        &sim,
        &test,
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/meter/{m}?accessLevel=READ"),
        None,
    )
    .await;
    assert_pm_error(&again, 400, Some("-200"));
    assert_pm_error(
        &invite(
            &sim,
            &test,
            &format!("/invite/account/{PROVIDER_ACCOUNT_ID}"),
            None,
        )
        .await,
        400,
        Some("-200"),
    );

    // The invite calls are served under /ws too.
    let (_b, q, _) = customer_with_property(&sim, "wes_ws").await;
    let r = as_customer(
        &sim,
        reqwest::Method::POST,
        &sim.server.base_url(),
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{q}?accessLevel=READ"),
        ("wes_ws", CUSTOMER_PASS),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let props = pm.pending_all(PendingKind::PropertyShare).await.unwrap();
    assert!(props[0].properties.iter().any(|x| x.property_id == q));
}

#[tokio::test]
async fn invite_calls_check_who_calls_and_what() {
    let sim = Sim::start(false).await;
    let test = sim.server.test_base_url();
    let (_a, p, _m) = customer_with_property(&sim, CUSTOMER).await;
    let (_b, other_p, _) = customer_with_property(&sim, "other_owner").await;
    let connect = format!("/invite/account/{PROVIDER_ACCOUNT_ID}");

    // Wrong password, unknown user, no auth: 401 and nothing happens.
    for auth in [(CUSTOMER, "wrong"), ("nobody", CUSTOMER_PASS)] {
        let r = as_customer(&sim, reqwest::Method::POST, &test, &connect, auth, None).await;
        assert_pm_error(&r, 401, None);
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let r = sim
        .http
        .post(format!("{test}{connect}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A customer created without a password cannot log in.
    let nopass = sim.new_customer().await;
    let world = sim.ok("GET", "/world", json!(null)).await;
    let name = world["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["accountId"] == nopass)
        .unwrap()["username"]
        .as_str()
        .unwrap()
        .to_string();
    let r = as_customer(
        &sim,
        reqwest::Method::POST,
        &test,
        &connect,
        (&name, ""),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The provider is not a customer; a customer is not the provider.
    let r = sim
        .http
        .post(format!("{test}{connect}"))
        .basic_auth(USER, Some(PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    sim.ok("POST", "/notifications", json!({"count": 2})).await;
    let r = as_customer(
        &sim,
        reqwest::Method::GET,
        &test,
        "/notification/list",
        (CUSTOMER, CUSTOMER_PASS),
        None,
    )
    .await;
    assert_pm_error(&r, 403, Some("-200"));
    assert_eq!(
        sim.notifications("?clear=false").await.notifications.len(),
        2,
        "a customer's call must not read the provider's notifications"
    );
    // Another account than the provider: 404; someone else's property: 403.
    assert_pm_error(
        &invite(&sim, &test, "/invite/account/999", None).await,
        404,
        Some("-200"),
    );
    assert_pm_error(
        &invite(
            &sim,
            &test,
            &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{other_p}?accessLevel=READ"),
            None,
        )
        .await,
        403,
        Some("-200"),
    );
    // accessLevel missing or bad: 400 -100.
    for q in ["", "?accessLevel=WRITE"] {
        let r = invite(
            &sim,
            &test,
            &format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{p}{q}"),
            None,
        )
        .await;
        let doc = assert_pm_error(&r, 400, Some("-100"));
        assert!(
            doc.error_list()[0]
                .error_description
                .as_deref()
                .unwrap()
                .contains("READ or READ_WRITE"),
            "{}",
            r.body
        );
    }
    let world = sim.ok("GET", "/world", json!(null)).await;
    assert_eq!(world["pending"]["properties"], json!([]));
    assert_eq!(world["pending"]["connections"], json!([]));
}

#[tokio::test]
async fn custom_field_updates_change_what_the_provider_sees_and_notify_shareupdate() {
    let sim = Sim::start(false).await;
    let test = sim.server.test_base_url();
    let (a, p, m) = customer_with_property(&sim, CUSTOMER).await;
    let pm = provider(&test);
    for path in [
        format!("/invite/account/{PROVIDER_ACCOUNT_ID}"),
        format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{p}?accessLevel=READ"),
        format!("/invite/account/{PROVIDER_ACCOUNT_ID}/meter/{m}?accessLevel=READ"),
    ] {
        assert_eq!(invite(&sim, &test, &path, None).await.status, 200, "{path}");
    }
    // While pending: the pending list shows the new values; nothing is notified.
    let r = put_fields(
        &sim,
        &format!("/property/{p}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
        &fields_xml(&[("Lot Number", "1")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_valid(&r.body, RESPONSE_XSD);
    let props: PendingList = parse(
        sim.get("/share/property/pending/list")
            .await
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        fields_of(&props.properties[0].custom_field_list),
        vec![("Lot Number".to_string(), "1".to_string())]
    );
    assert!(pm
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());

    pm.answer(PendingKind::MeterShare, m, Action::Accept, None)
        .await
        .unwrap();
    pm.answer(PendingKind::Connection, a, Action::Accept, None)
        .await
        .ok(); // already accepted along with the meter share
               // Accepted property share: the values change and one SHAREUPDATE says so.
    let r = put_fields(
        &sim,
        &format!("/property/{p}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
        &fields_xml(&[("Lot Number", "2"), ("Zone", "B")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = pm
        .custom_fields(CustomFieldTarget::Property(p))
        .await
        .unwrap();
    let got: Vec<(String, String)> = got.into_iter().map(|f| (f.name, f.value)).collect();
    assert_eq!(
        got,
        vec![
            ("Lot Number".to_string(), "2".to_string()),
            ("Zone".to_string(), "B".to_string())
        ]
    );
    let r = put_fields(
        &sim,
        &format!("/meter/{m}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
        &fields_xml(&[("Meter Number", "M-2")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        pm.custom_fields(CustomFieldTarget::Meter(m)).await.unwrap()[0].value,
        "M-2"
    );
    let list = pm.notifications(true).await.unwrap().notifications;
    assert_eq!(list.len(), 2, "{list:?}");
    for n in &list {
        assert_eq!(n.notification_type_code, "SHAREUPDATE");
        assert_eq!(n.account_id, Some(a));
        assert_eq!(n.property_id, Some(p));
        assert_eq!(n.notification_created_by_account_id, Some(a.to_string()));
        assert!(
            n.description.contains("Custom field values revised"),
            "{}",
            n.description
        );
    }
    assert_eq!((list[0].meter_id, list[1].meter_id), (None, Some(m)));

    // Account-level values: re-read, no notification.
    let r = put_fields(
        &sim,
        &format!("/account/{a}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
        &fields_xml(&[("Customer Number", "C-7")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        pm.custom_fields(CustomFieldTarget::Account(a))
            .await
            .unwrap()[0]
            .value,
        "C-7"
    );
    assert!(pm
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());

    // Someone else's account or property: 403; another recipient: 404; a bad body: 400 -100.
    let (b, bp, _) = customer_with_property(&sim, "bob_other").await;
    for path in [
        format!("/account/{b}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
        format!("/property/{bp}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
    ] {
        assert_pm_error(
            &put_fields(&sim, &path, &fields_xml(&[])).await,
            403,
            Some("-200"),
        );
    }
    assert_pm_error(
        &put_fields(
            &sim,
            &format!("/property/{p}/customFieldList/recipient/999"),
            &fields_xml(&[]),
        )
        .await,
        404,
        Some("-200"),
    );
    assert_pm_error(
        &put_fields(
            &sim,
            &format!("/property/{p}/customFieldList/recipient/{PROVIDER_ACCOUNT_ID}"),
            "<sharingResponse/>",
        )
        .await,
        400,
        Some("-100"),
    );
    assert!(pm
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());
}

#[tokio::test]
async fn wstest_unshare_of_a_test_environment_share_is_the_typed_access_denied() {
    let sim = Sim::start(false).await;
    let test = sim.server.test_base_url();
    let (_a, p, m) = customer_with_property(&sim, CUSTOMER).await;
    for path in [
        format!("/invite/account/{PROVIDER_ACCOUNT_ID}/property/{p}?accessLevel=READ"),
        format!("/invite/account/{PROVIDER_ACCOUNT_ID}/meter/{m}?accessLevel=READ"),
    ] {
        assert_eq!(invite(&sim, &test, &path, None).await.status, 200, "{path}");
    }
    let pm = provider(&test);
    pm.answer(PendingKind::MeterShare, m, Action::Accept, None)
        .await
        .unwrap();

    for (err, path) in [
        (
            pm.unshare_meter(m, Some("bye")).await.unwrap_err(),
            format!("/wstest/unshare/meter/{m}"),
        ),
        (
            pm.unshare_property(p, None).await.unwrap_err(),
            format!("/wstest/unshare/property/{p}"),
        ),
    ] {
        match &err {
            ClientError::AccessDenied {
                path: got, errors, ..
            } => {
                assert_eq!(got, &path);
                assert_eq!(
                    errors[0].error_description.as_deref(),
                    Some("Access Denied")
                );
            }
            other => panic!("expected AccessDenied, got {other:?}"),
        }
        assert_eq!(err.status(), Some(403));
        assert!(err.is_access_denied() && !err.is_not_shared() && !err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("PM denied access to /wstest/unshare/")
                && text.contains("in PM's test environment an unshare answers 403 Access Denied"),
            "{text}"
        );
    }
    // Nothing changed: still shared.
    let world = sim.ok("GET", "/world", json!(null)).await;
    assert_eq!(world["shares"]["meters"][0]["meterId"], m);
    assert_eq!(world["shares"]["meters"][0]["testEnvironment"], true);
    assert!(pm.property(p).await.is_ok());

    // A share made through the control API unshares under /wstest as usual ...
    let c = sim.connected_customer().await;
    let q = sim
        .ok(
            "POST",
            "/shares/property",
            json!({"accountId": c, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    pm.answer(PendingKind::PropertyShare, q, Action::Accept, None)
        .await
        .unwrap();
    pm.unshare_property(q, None).await.unwrap();
    // ... and reading it afterwards is the typed 403 too (PM's "reads after an unshare").
    let err = pm.property(q).await.unwrap_err();
    assert!(matches!(err, ClientError::AccessDenied { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not share this with you"),
        "{err}"
    );
    // Unsharing again is PM's 400 "not shared", still recognised as such.
    let again = pm.unshare_property(q, None).await.unwrap_err();
    assert!(again.is_not_shared(), "{again}");
    // The live base (/ws) unshares the test-environment share.
    let live = provider(&sim.server.base_url());
    live.unshare_meter(m, None).await.unwrap();
}

fn fixture() -> NewCustomer {
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/requests/create-customer.xml"
    ))
    .unwrap();
    parse(xml.as_bytes()).unwrap()
}

async fn post_customer(sim: &Sim, c: &NewCustomer) -> Reply {
    sim.post_xml("/customer", &espm_model::to_xml(c)).await
}

fn description(doc: &Response) -> String {
    doc.error_list()[0]
        .error_description
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn create_customer_validates_as_pm_does() {
    let sim = Sim::start(false).await;
    type Case = (
        &'static str,
        fn(&mut NewCustomer),
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "short password",
            |c| c.password = "Ab1!".into(),
            "-100",
            "8 to 120",
        ),
        (
            "two classes only",
            |c| c.password = "lowercase1234".into(),
            "-200",
            "3 of the 4",
        ),
        (
            "bad primaryBusiness",
            |c| c.organization.primary_business = "Bakery".into(),
            "-100",
            "primaryBusiness",
        ),
        (
            "bad partner type",
            |c| c.organization.energy_star_partner_type = Some("Friends".into()),
            "-100",
            "energyStarPartnerType",
        ),
        (
            "partner without type",
            |c| c.organization.energy_star_partner_type = None,
            "-200",
            "energyStarPartnerType is required",
        ),
        (
            "bad country",
            |c| c.contact.address.country = Some("XX".into()),
            "-100",
            "country",
        ),
        (
            "bad state",
            |c| c.contact.address.state = Some("ZZ".into()),
            "-100",
            "state",
        ),
        (
            "US without a state",
            |c| c.contact.address.state = None,
            "-200",
            "state or province is required",
        ),
        (
            "a province in the US",
            |c| c.contact.address.state = Some("ON".into()),
            "-200",
            "Canadian province",
        ),
        (
            "a long phone",
            |c| c.contact.phone = "1".repeat(31),
            "-100",
            "phone",
        ),
    ];
    for (name, change, number, text) in cases {
        let mut c = fixture();
        c.username = format!("user_{}", name.replace(' ', "_"));
        change(&mut c);
        let r = post_customer(&sim, &c).await;
        let doc = assert_pm_error(&r, 400, Some(number));
        assert!(description(&doc).contains(text), "{name}: {}", r.body);
    }
    // Nothing was created.
    assert!(sim.ok("GET", "/world", json!(null)).await["customers"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_international_customer_without_organization_name_round_trips() {
    let sim = Sim::start(false).await;
    let mut c = fixture();
    c.username = "hans_intl".into();
    c.organization.name = String::new();
    c.organization.energy_star_partner = false;
    c.organization.energy_star_partner_type = None;
    c.contact.address = espm_model::Address {
        address1: "Marienplatz 8".into(),
        address2: Some("3. Stock".into()),
        city: "München".into(),
        postal_code: Some("80331".into()),
        other_state: Some("Bayern".into()),
        country: Some("DE".into()),
        ..espm_model::Address::default()
    };
    let xml = espm_model::to_xml(&c);
    assert!(!xml.contains("name="), "{xml}");
    let r = post_customer(&sim, &c).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = parse::<Response>(r.body.as_bytes()).unwrap().id.unwrap();
    let got = sim.get(&format!("/customer/{id}")).await;
    assert_eq!(got.status, 200);
    assert_valid(&got.body, CUSTOMER_XSD);
    let customer: Customer = parse(got.body.as_bytes()).unwrap();
    let info = customer.account_info.unwrap();
    assert_eq!(info.address.as_ref(), Some(&c.contact.address));
    assert_eq!(info.organization, None);
    let list: Response = parse(sim.get("/customer/list").await.body.as_bytes()).unwrap();
    assert_eq!(list.links.unwrap().link[0].hint, None);
    // Its password logs it in for the test-environment calls (it is connected already).
    let r = as_customer(
        &sim,
        reqwest::Method::POST,
        &sim.server.test_base_url(),
        &format!("/invite/account/{PROVIDER_ACCOUNT_ID}"),
        ("hans_intl", &c.password),
        None,
    )
    .await;
    let doc = assert_pm_error(&r, 400, Some("-200"));
    assert!(
        description(&doc).contains("already connected"),
        "{}",
        r.body
    );
    // A Canadian address needs a province.
    let mut ca = fixture();
    ca.username = "canuck".into();
    ca.contact.address.country = Some("CA".into());
    ca.contact.address.state = Some("QC".into());
    assert_eq!(post_customer(&sim, &ca).await.status, 201);
    ca.username = "canuck2".into();
    ca.contact.address.state = Some("VA".into());
    assert_pm_error(&post_customer(&sim, &ca).await, 400, Some("-200"));
}
