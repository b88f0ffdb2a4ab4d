//! The client against the real simulator (`espm-sim`, in process on 127.0.0.1:0): every client
//! call, the idempotent "already resolved" answers, 403 after an unshare, and every fault kind the
//! simulator injects (429, 500, 502 HTML, truncated body, dropped connection, latency).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use espm_client::{
    Action, ClientConfig, ClientError, CustomFieldTarget, PendingKind, PmClient, RetryPolicy,
};
use espm_model::{Address, Contact, NewCustomer, Organization, PendingList};
use espm_sim::{CustomerSpec, FaultConfig, SimConfig, SimServer};
use espm_testkit::sim::start_sim_with;
use espm_testkit::SimControl;
use reqwest::Method;
use serde_json::{json, Value};

const USER: &str = "sim_provider";
const PASS: &str = "sim_password";

struct Sim {
    server: SimServer,
    ctl: SimControl,
}

impl Sim {
    /// An empty world (no demo scenario), so every test sets up exactly what it checks.
    async fn empty() -> Sim {
        Self::start(false).await
    }

    async fn start(scenario: bool) -> Sim {
        let cfg = SimConfig {
            username: USER.into(),
            password: PASS.into(),
            seed: 7,
            scenario,
        };
        let server = start_sim_with(cfg).await;
        Sim {
            ctl: SimControl::of(&server),
            server,
        }
    }

    fn client(&self, retry: RetryPolicy) -> PmClient {
        let mut cfg = ClientConfig::new(self.server.base_url(), USER, PASS);
        cfg.retry = retry;
        cfg.timeout = Duration::from_secs(10);
        PmClient::new(cfg).unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.ctl.request(Method::POST, path, Some(&body)).await;
        assert!(
            r.status.is_success(),
            "{path} {body}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    async fn faults(&self, body: Value) {
        let faults: FaultConfig = serde_json::from_value(body).unwrap();
        self.ctl.set_faults(&faults).await;
    }

    async fn remaining_script(&self) -> usize {
        self.ctl.faults().await.script.len()
    }

    async fn ledger_summary(&self) -> Value {
        serde_json::to_value(self.ctl.ledger_summary().await).unwrap()
    }

    async fn customer(&self, org: &str) -> i64 {
        self.ctl
            .create_customer(&CustomerSpec {
                organization: Some(org.into()),
                ..CustomerSpec::default()
            })
            .await
    }

    /// A customer connected to the provider (requested, then accepted through the client).
    async fn connected_customer(&self, client: &PmClient, org: &str) -> i64 {
        let a = self.customer(org).await;
        self.control("/connections", json!({ "accountId": a }))
            .await;
        client
            .answer(PendingKind::Connection, a, Action::Accept, None)
            .await
            .unwrap();
        a
    }

    async fn share_property(&self, account: i64, fields: Value) -> i64 {
        let v = self
            .control(
                "/shares/property",
                json!({ "accountId": account, "accessLevel": "Read", "customFields": fields }),
            )
            .await;
        v["propertyId"].as_i64().unwrap()
    }

    async fn share_meter(&self, account: i64, property: Option<i64>) -> (i64, i64) {
        let v = self
            .control(
                "/shares/meter",
                json!({ "accountId": account, "propertyId": property, "accessLevel": "Read Write",
                        "customFields": { "Meter Ref": "M-1" } }),
            )
            .await;
        (
            v["meterId"].as_i64().unwrap(),
            v["propertyId"].as_i64().unwrap(),
        )
    }
}

/// Fast retries: the sim's Retry-After (when set) dominates.
fn fast(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(30),
    }
}

fn ids_of(pages: &[PendingList], kind: PendingKind) -> Vec<i64> {
    pages
        .iter()
        .flat_map(|p| match kind {
            PendingKind::Connection => p.accounts.iter().map(|a| a.account_id).collect::<Vec<_>>(),
            PendingKind::PropertyShare => p.properties.iter().map(|x| x.property_id).collect(),
            PendingKind::MeterShare => p.meters.iter().map(|m| m.meter_id).collect(),
        })
        .collect()
}

#[tokio::test]
async fn connections_accept_reject_already_resolved_customers_and_custom_fields() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let a = sim.customer("Acme <Holdings> & Sons").await;
    let b = sim.customer("Beta Corp").await;
    sim.control(
        "/connections",
        json!({ "accountId": a, "customFields": { "Customer Number": "D987" } }),
    )
    .await;
    sim.control("/connections", json!({ "accountId": b })).await;

    let pages = c.pending_all(PendingKind::Connection).await.unwrap();
    let ids: BTreeSet<i64> = ids_of(&pages, PendingKind::Connection)
        .into_iter()
        .collect();
    assert_eq!(ids, BTreeSet::from([a, b]));
    let pa = pages[0]
        .accounts
        .iter()
        .find(|x| x.account_id == a)
        .unwrap();
    assert_eq!(
        pa.custom_field_list.as_ref().unwrap().to_map()["Customer Number"],
        "D987"
    );
    let fields = c
        .custom_fields(CustomFieldTarget::Account(a))
        .await
        .unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(
        (fields[0].name.as_str(), fields[0].value.as_str()),
        ("Customer Number", "D987")
    );

    c.answer(PendingKind::Connection, a, Action::Accept, Some("welcome"))
        .await
        .unwrap();
    c.answer(PendingKind::Connection, b, Action::Reject, None)
        .await
        .unwrap();
    // Answering again: PM's 400/-200, which callers treat as done.
    for (id, action) in [(a, Action::Accept), (b, Action::Reject)] {
        let err = c
            .answer(PendingKind::Connection, id, action, None)
            .await
            .unwrap_err();
        assert!(err.is_already_resolved(), "{err}");
    }
    assert!(c.pending_all(PendingKind::Connection).await.unwrap()[0].is_empty());

    let customers = c.customers().await.unwrap();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].id, a);
    assert_eq!(customers[0].hint.as_deref(), Some("Acme <Holdings> & Sons"));
    let cust = c.customer(a).await.unwrap();
    assert!(cust.username.as_deref().is_some_and(|u| !u.is_empty()));
    assert_eq!(
        cust.account_info.unwrap().organization.as_deref(),
        Some("Acme <Holdings> & Sons")
    );
    // Not connected: access denied.
    let err = c.customer(b).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

#[tokio::test]
async fn property_shares_accept_reject_and_already_resolved() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let owner = sim.connected_customer(&c, "Owner Inc").await;
    let p1 = sim
        .share_property(owner, json!({ "Property Ref": "P-1" }))
        .await;
    let p2 = sim.share_property(owner, json!({})).await;
    let pages = c.pending_all(PendingKind::PropertyShare).await.unwrap();
    assert_eq!(
        ids_of(&pages, PendingKind::PropertyShare)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([p1, p2])
    );
    let pp = pages[0]
        .properties
        .iter()
        .find(|p| p.property_id == p1)
        .unwrap();
    assert_eq!(pp.account_id, owner);
    assert_eq!(pp.access_level, espm_model::AccessLevel::Read);

    c.answer(PendingKind::PropertyShare, p1, Action::Accept, None)
        .await
        .unwrap();
    c.answer(
        PendingKind::PropertyShare,
        p2,
        Action::Reject,
        Some("not ours"),
    )
    .await
    .unwrap();
    for id in [p1, p2] {
        let err = c
            .answer(PendingKind::PropertyShare, id, Action::Accept, None)
            .await
            .unwrap_err();
        assert!(err.is_already_resolved(), "{err}");
    }
    let fields = c
        .custom_fields(CustomFieldTarget::Property(p1))
        .await
        .unwrap();
    assert_eq!(fields[0].value, "P-1");
    assert!(sim
        .server
        .state()
        .with_world(|w| w.property_share(p1).is_some()));
    assert!(sim
        .server
        .state()
        .with_world(|w| w.property_share(p2).is_none()));
}

#[tokio::test]
async fn meter_shares_accept_reject_and_already_resolved() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let owner = sim.connected_customer(&c, "Meters LLC").await;
    let prop = sim.share_property(owner, json!({})).await;
    let (m1, p1) = sim.share_meter(owner, Some(prop)).await;
    let (m2, _) = sim.share_meter(owner, None).await;
    assert_eq!(p1, prop);
    let pages = c.pending_all(PendingKind::MeterShare).await.unwrap();
    assert_eq!(
        ids_of(&pages, PendingKind::MeterShare)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([m1, m2])
    );
    let pm = pages[0].meters.iter().find(|m| m.meter_id == m1).unwrap();
    assert_eq!(pm.property_id, prop);
    assert_eq!(pm.access_level, espm_model::AccessLevel::ReadWrite);

    // Accepting the meter share also accepts its property's pending share (PM's coupling).
    c.answer(PendingKind::MeterShare, m1, Action::Accept, None)
        .await
        .unwrap();
    assert!(sim
        .server
        .state()
        .with_world(|w| w.property_share(prop).is_some()));
    let err = c
        .answer(PendingKind::PropertyShare, prop, Action::Accept, None)
        .await
        .unwrap_err();
    assert!(err.is_already_resolved());

    c.answer(PendingKind::MeterShare, m2, Action::Reject, None)
        .await
        .unwrap();
    for id in [m1, m2] {
        let err = c
            .answer(PendingKind::MeterShare, id, Action::Reject, None)
            .await
            .unwrap_err();
        assert!(err.is_already_resolved(), "{err}");
    }
    let fields = c.custom_fields(CustomFieldTarget::Meter(m1)).await.unwrap();
    assert_eq!(fields[0].name, "Meter Ref");
}

#[tokio::test]
async fn pagination_over_three_pages() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let owner = sim.connected_customer(&c, "Many Props").await;
    let mut want = BTreeSet::new();
    for _ in 0..45 {
        want.insert(sim.share_property(owner, json!({})).await);
    }
    let pages = c.pending_all(PendingKind::PropertyShare).await.unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages.iter().map(PendingList::len).collect::<Vec<_>>(),
        vec![20, 20, 5]
    );
    let got = ids_of(&pages, PendingKind::PropertyShare);
    assert_eq!(got.len(), 45);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
}

#[tokio::test]
async fn unshares_then_403_and_repeat_is_refused() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let owner = sim.connected_customer(&c, "Unsharer").await;
    let prop = sim.share_property(owner, json!({ "k": "v" })).await;
    let (m_on_prop, _) = sim.share_meter(owner, Some(prop)).await;
    let (meter, _) = sim.share_meter(owner, None).await;
    c.answer(PendingKind::PropertyShare, prop, Action::Accept, None)
        .await
        .unwrap();
    c.answer(PendingKind::MeterShare, m_on_prop, Action::Accept, None)
        .await
        .unwrap();
    c.answer(PendingKind::MeterShare, meter, Action::Accept, None)
        .await
        .unwrap();
    c.custom_fields(CustomFieldTarget::Property(prop))
        .await
        .unwrap();
    c.custom_fields(CustomFieldTarget::Meter(meter))
        .await
        .unwrap();

    c.unshare_property(prop, Some("bye")).await.unwrap();
    let err = c
        .custom_fields(CustomFieldTarget::Property(prop))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.is_access_denied());
    // The meter share on that property went with it.
    assert!(sim
        .server
        .state()
        .with_world(|w| w.meter_share(m_on_prop).is_none()));

    c.unshare_meter(meter, None).await.unwrap();
    let err = c
        .custom_fields(CustomFieldTarget::Meter(meter))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Unsharing again: a 400 -200 application error, not retried, not "already resolved".
    let err = c.unshare_meter(meter, None).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_already_resolved());
    let err = c.unshare_property(prop, None).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn disconnect_keep_shares_true_and_false() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let keep = sim.connected_customer(&c, "Keeper").await;
    let drop_ = sim.connected_customer(&c, "Dropper").await;
    let pk = sim.share_property(keep, json!({})).await;
    let pd = sim.share_property(drop_, json!({})).await;
    for p in [pk, pd] {
        c.answer(PendingKind::PropertyShare, p, Action::Accept, None)
            .await
            .unwrap();
    }

    c.disconnect(keep, true, Some("keeping the data"))
        .await
        .unwrap();
    c.disconnect(drop_, false, None).await.unwrap();
    let customers: Vec<i64> = c.customers().await.unwrap().iter().map(|l| l.id).collect();
    assert!(customers.is_empty(), "{customers:?}");
    let world = sim.server.state();
    assert!(world.with_world(|w| !w.is_connected(keep) && !w.is_connected(drop_)));
    assert!(
        world.with_world(|w| w.property_share(pk).is_some()),
        "keepShares=true kept it"
    );
    assert!(
        world.with_world(|w| w.property_share(pd).is_none()),
        "keepShares=false removed it"
    );
    c.custom_fields(CustomFieldTarget::Property(pk))
        .await
        .unwrap();
    let err = c
        .custom_fields(CustomFieldTarget::Property(pd))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));

    let err = c.disconnect(keep, false, None).await.unwrap_err();
    assert!(err.is_not_connected(), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn create_customer_then_list_and_read_it() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let new = NewCustomer {
        username: "new_customer_1".into(),
        password: "Secret-123".into(),
        webservice_user: false,
        searchable: false,
        contact: Contact {
            first_name: "Jane".into(),
            last_name: "Doe".into(),
            address: Address {
                address1: "1 Main St".into(),
                city: "Arlington".into(),
                state: Some("VA".into()),
                postal_code: Some("22201".into()),
                country: Some("US".into()),
                ..Address::default()
            },
            email: "jane@example.com".into(),
            job_title: "Energy Manager".into(),
            phone: "703-555-0100".into(),
        },
        organization: Organization {
            name: "Doe Properties".into(),
            primary_business: "Other".into(),
            other_business_description: Some("Testing".into()),
            energy_star_partner: false,
            energy_star_partner_type: None,
        },
    };
    let id = c.create_customer(&new).await.unwrap();
    let list = c.customers().await.unwrap();
    let link = list.iter().find(|l| l.id == id).unwrap();
    assert_eq!(link.hint.as_deref(), Some("Doe Properties"));
    let cust = c.customer(id).await.unwrap();
    assert_eq!(cust.username.as_deref(), Some("new_customer_1"));
    let info = cust.account_info.unwrap();
    assert_eq!(info.first_name.as_deref(), Some("Jane"));
    // The username is taken now: a 400 -200, never retried.
    let err = c.create_customer(&new).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test]
async fn notifications_peek_clear_and_every_type() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let a = sim.connected_customer(&c, "Notifier").await;
    let b = sim.customer("New Owner").await;
    let p1 = sim.share_property(a, json!({})).await;
    let p2 = sim.share_property(a, json!({})).await;
    let p3 = sim.share_property(a, json!({})).await;
    for p in [p1, p2, p3] {
        c.answer(PendingKind::PropertyShare, p, Action::Accept, None)
            .await
            .unwrap();
    }
    assert!(c
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());
    let mut want = Vec::new();
    let v = sim
        .control(
            "/shares/edit",
            json!({ "propertyId": p1, "accessLevel": "Read Write" }),
        )
        .await;
    want.extend(
        v["notificationIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap()),
    );
    let v = sim.control("/unshare", json!({ "propertyId": p1 })).await;
    want.extend(
        v["notificationIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap()),
    );
    let v = sim
        .control(
            "/transfer",
            json!({ "propertyId": p2, "toAccountId": b, "removeAccess": true }),
        )
        .await;
    want.extend(
        v["notificationIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap()),
    );
    let v = sim.control("/disconnect", json!({ "accountId": a })).await;
    want.extend(
        v["notificationIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap()),
    );
    sim.control(
        "/notifications",
        json!({ "count": 3, "types": ["UNSHARE", "FUTURECODE"] }),
    )
    .await;

    let peek = c.notifications(false).await.unwrap();
    let again = c.notifications(false).await.unwrap();
    assert_eq!(peek, again, "a peek must not consume");
    let ids: Vec<i64> = peek
        .notifications
        .iter()
        .map(|n| n.notification_id)
        .collect();
    assert_eq!(&ids[..want.len()], &want[..]);
    assert_eq!(ids.len(), want.len() + 3);
    let types: BTreeSet<&str> = peek
        .notifications
        .iter()
        .map(|n| n.notification_type_code.as_str())
        .collect();
    for t in [
        "SHAREUPDATE",
        "UNSHARE",
        "TRANSFERPROPERTY",
        "DISCONNECT",
        "FUTURECODE",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    let transfer = peek
        .notifications
        .iter()
        .find(|n| n.notification_type_code == "TRANSFERPROPERTY")
        .unwrap();
    assert_eq!(
        (transfer.property_id, transfer.account_id),
        (Some(p2), Some(b))
    );

    let cleared = c.notifications(true).await.unwrap();
    assert_eq!(cleared, peek);
    assert!(c
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());
}

#[tokio::test]
async fn demo_scenario_parses_end_to_end() {
    // The seeded demo world: 25 pending connections (two pages), shares, share forward, notifications.
    let sim = Sim::start(true).await;
    let c = sim.client(fast(0));
    let conns = c.pending_all(PendingKind::Connection).await.unwrap();
    assert_eq!(conns.len(), 2);
    let (pa, pp, pm) = sim.server.state().with_world(|w| w.pending_counts());
    assert_eq!(ids_of(&conns, PendingKind::Connection).len(), pa);
    let props = c.pending_all(PendingKind::PropertyShare).await.unwrap();
    assert_eq!(ids_of(&props, PendingKind::PropertyShare).len(), pp);
    let meters = c.pending_all(PendingKind::MeterShare).await.unwrap();
    assert_eq!(ids_of(&meters, PendingKind::MeterShare).len(), pm);
    let notes = c.notifications(false).await.unwrap();
    assert!(!notes.notifications.is_empty());
    let customers = c.customers().await.unwrap();
    assert!(!customers.is_empty());
    for l in &customers {
        c.customer(l.id).await.unwrap();
    }
}

#[tokio::test]
async fn wrong_password_is_401_and_not_retried() {
    let sim = Sim::empty().await;
    let mut cfg = ClientConfig::new(sim.server.base_url(), USER, "wrong");
    cfg.retry = fast(5);
    let err = PmClient::new(cfg).unwrap().customers().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn fault_429_retry_after_is_honoured() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(3));
    sim.faults(
        json!({ "script": ["http429"], "retry_after_secs": 1, "paths": ["/customer/list"] }),
    )
    .await;
    let started = Instant::now();
    c.customers().await.unwrap();
    // Correctness, not performance: the retry must wait at least the Retry-After.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sim.remaining_script().await, 0);

    sim.faults(json!({ "script": ["http429"], "retry_after_secs": 1 }))
        .await;
    let err = sim
        .client(RetryPolicy::none())
        .customers()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn fault_500_is_retried_or_reported() {
    let sim = Sim::empty().await;
    sim.faults(json!({ "script": ["http500", "http500"] }))
        .await;
    sim.client(fast(3)).customers().await.unwrap();
    assert_eq!(sim.remaining_script().await, 0);

    sim.faults(json!({ "script": ["http500"] })).await;
    let err = sim
        .client(RetryPolicy::none())
        .customers()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn fault_502_maintenance_page_is_not_xml_then_retried() {
    let sim = Sim::empty().await;
    sim.faults(json!({ "script": ["http502"] })).await;
    let err = sim
        .client(RetryPolicy::none())
        .pending_all(PendingKind::Connection)
        .await
        .unwrap_err();
    match &err {
        ClientError::NotXml {
            status, snippet, ..
        } => {
            assert_eq!(*status, 502);
            assert!(!snippet.is_empty());
            assert!(!snippet.contains('\n'));
        }
        other => panic!("unexpected {other:?}"),
    }
    sim.faults(json!({ "script": ["http502", "http502"] }))
        .await;
    let pages = sim
        .client(fast(3))
        .pending_all(PendingKind::Connection)
        .await
        .unwrap();
    assert_eq!(pages.len(), 1);
}

#[tokio::test]
async fn fault_truncated_body_is_an_xml_error_and_raw_keeps_the_bytes() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(3));
    let owner = sim.connected_customer(&c, "Trunc").await;
    sim.share_property(owner, json!({})).await;
    sim.faults(json!({ "script": ["truncated"], "paths": ["/share/property/pending/list"] }))
        .await;
    let err = c.pending_all(PendingKind::PropertyShare).await.unwrap_err();
    assert!(matches!(err, ClientError::Xml(_)), "{err:?}");
    // The raw read hands back the half body for the journal.
    sim.faults(json!({ "script": ["truncated"], "paths": ["/share/property/pending/list"] }))
        .await;
    let raw = c
        .pending_page_raw(PendingKind::PropertyShare, None)
        .await
        .unwrap();
    let full = c
        .pending_page_raw(PendingKind::PropertyShare, None)
        .await
        .unwrap();
    assert_eq!(raw.bytes.len(), full.bytes.len() / 2);
    assert_eq!(&full.bytes[..raw.bytes.len()], &raw.bytes[..]);
}

#[tokio::test]
async fn fault_drop_is_transport_then_retried() {
    let sim = Sim::empty().await;
    sim.faults(json!({ "script": ["drop"] })).await;
    let err = sim
        .client(RetryPolicy::none())
        .customers()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());

    sim.faults(json!({ "script": ["drop", "drop"] })).await;
    sim.client(fast(3)).customers().await.unwrap();
    assert_eq!(sim.remaining_script().await, 0);
}

#[tokio::test]
async fn fault_drop_on_clear_loses_notifications_but_peek_does_not() {
    // The hazard documented on `notifications_raw`: PM marks a clear=true read as read even when
    // the response is lost, so the retry comes back empty. A peek loses nothing.
    let sim = Sim::empty().await;
    let c = sim.client(fast(3));
    sim.control("/notifications", json!({ "count": 2 })).await;
    sim.faults(json!({ "script": ["drop"], "paths": ["/notification/list"] }))
        .await;
    let peek = c.notifications(false).await.unwrap();
    assert_eq!(peek.notifications.len(), 2);
    sim.faults(json!({ "script": ["drop"], "paths": ["/notification/list"] }))
        .await;
    let cleared = c.notifications(true).await.unwrap();
    assert!(
        cleared.notifications.is_empty(),
        "lost to the dropped response"
    );
    assert!(c
        .notifications(false)
        .await
        .unwrap()
        .notifications
        .is_empty());
    // The simulator's ground truth agrees: both were handed out on the dropped read and lost.
    let ledger = sim.ledger_summary().await;
    assert_eq!(ledger["handedOut"], 2, "{ledger}");
    assert_eq!(ledger["delivered"], 0, "{ledger}");
    assert_eq!(ledger["faultedReads"], 2, "{ledger}");
}

#[tokio::test]
async fn fault_latency_times_out_or_is_waited_for() {
    let sim = Sim::empty().await;
    sim.faults(json!({ "latency_ms": 1500, "paths": ["/customer/list"] }))
        .await;
    let mut cfg = ClientConfig::new(sim.server.base_url(), USER, PASS);
    cfg.timeout = Duration::from_millis(300);
    cfg.retry = RetryPolicy::none();
    let err = PmClient::new(cfg).unwrap().customers().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    // A patient client gets the answer.
    sim.client(fast(0)).customers().await.unwrap();
}

#[tokio::test]
async fn random_fault_mix_is_absorbed_by_retries() {
    // Seeded draws: 429 (Retry-After 0), 500, 502 and drops at 15 % in total; every call succeeds.
    let sim = Sim::empty().await;
    let c = sim.client(fast(6));
    let owner = sim.connected_customer(&c, "Chaos").await;
    for _ in 0..25 {
        sim.share_property(owner, json!({})).await;
    }
    sim.faults(
        json!({ "http429": 0.04, "retry_after_secs": 0, "http500": 0.04,
                       "http502": 0.04, "drop": 0.03 }),
    )
    .await;
    for _ in 0..10 {
        let pages = c.pending_all(PendingKind::PropertyShare).await.unwrap();
        assert_eq!(ids_of(&pages, PendingKind::PropertyShare).len(), 25);
        c.customers().await.unwrap();
        c.notifications(false).await.unwrap();
    }
    // Faults really were injected (and absorbed) on the way.
    let ledger = sim.ledger_summary().await;
    let faulted = ledger["faultedReads"].as_u64().unwrap();
    let reads = ledger["reads"].as_u64().unwrap();
    assert!(faulted > 0 && reads == 10 + faulted, "{ledger}");
}

#[tokio::test]
async fn property_reads_name_address_and_floor_area_until_unshared() {
    let sim = Sim::empty().await;
    let c = sim.client(fast(0));
    let owner = sim.connected_customer(&c, "Owner Inc").await;
    let (m, p) = sim.share_meter(owner, None).await;
    // Offered through a meter share only: PM's property basics are readable.
    let doc = c.property(p).await.unwrap();
    assert!(doc.name.as_deref().is_some_and(|n| !n.is_empty()));
    assert!(doc.address.as_ref().is_some_and(|a| !a.address1.is_empty()));
    let gfa = doc.gross_floor_area.unwrap();
    assert_eq!(gfa.units.as_deref(), Some("Square Feet"));
    assert!(gfa.value.is_some_and(|v| v > 0.0));
    c.answer(PendingKind::MeterShare, m, Action::Accept, None)
        .await
        .unwrap();
    c.unshare_meter(m, None).await.unwrap();
    let err = c.property(p).await.unwrap_err();
    assert!(err.is_access_denied(), "{err}");
    assert_eq!(err.status(), Some(403));
}

/// The simulator serves PM's test environment under `/wstest` too, over the same world: what a
/// client does there is what `/ws` and the control API see.
#[tokio::test]
async fn the_test_environment_base_serves_the_same_world() {
    let sim = Sim::empty().await;
    let mut cfg = ClientConfig::new(sim.server.test_base_url(), USER, PASS);
    cfg.retry = fast(0);
    let test_env = PmClient::new(cfg).unwrap();
    let live = sim.client(fast(0));
    let a = sim.customer("Test Env Inc").await;
    sim.control("/connections", json!({ "accountId": a })).await;
    let pages = test_env.pending_all(PendingKind::Connection).await.unwrap();
    assert_eq!(ids_of(&pages, PendingKind::Connection), vec![a]);
    test_env
        .answer(PendingKind::Connection, a, Action::Accept, None)
        .await
        .unwrap();
    assert_eq!(live.customers().await.unwrap()[0].id, a);
    let calls = sim.server.state().calls();
    assert_eq!(
        calls.get(&format!("POST /connect/account/{a}")),
        Some(&1),
        "{calls:?}"
    );
}
