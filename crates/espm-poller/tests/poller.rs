//! The poller against the simulator and a real SQLite journal.

use std::sync::Arc;
use std::time::Duration;

use espm_client::{ClientConfig, PmClient, RetryPolicy};
use espm_journal::{Journal, Scope};
use espm_poller::{DrainMode, PollError, Poller, PollerConfig};
use espm_sim::{FaultConfig, SimConfig, SimServer};
use espm_testkit::sim::start_sim_with;
use espm_testkit::SimControl;
use reqwest::Method;
use serde_json::{json, Value};

struct Env {
    sim: SimServer,
    ctl: SimControl,
    _dir: tempfile::TempDir,
    journal_path: std::path::PathBuf,
}

async fn env() -> Env {
    let cfg = SimConfig {
        username: "p".into(),
        password: "pw".into(),
        seed: 5,
        scenario: false,
    };
    let sim = start_sim_with(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("journal.db");
    Env {
        ctl: SimControl::of(&sim),
        sim,
        _dir: dir,
        journal_path,
    }
}

impl Env {
    fn client(&self) -> PmClient {
        let mut c = ClientConfig::new(self.sim.base_url(), "p", "pw");
        c.retry = RetryPolicy::none();
        c.timeout = Duration::from_secs(5);
        PmClient::new(c).unwrap()
    }

    fn poller(&self, journal: &Journal, mode: DrainMode) -> Poller {
        let cfg = PollerConfig {
            scope: Scope::new("sim", "acct"),
            drain_mode: mode,
            poll_interval: Duration::from_millis(50),
            pending_interval: Duration::from_secs(60),
            max_error_backoff: Duration::from_secs(1),
            min_free: 0,
            spool: espm_journal::Spool::for_journal(journal.path(), None),
        };
        Poller::new(
            self.client(),
            journal.clone(),
            cfg,
            vec![Arc::new(tokio::sync::Notify::new())],
        )
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.ctl.request(Method::POST, path, Some(&body)).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        r.body
    }

    async fn ledger(&self) -> Value {
        serde_json::to_value(self.ctl.ledger().await).unwrap()
    }

    async fn faults(&self, f: Value) {
        let f: FaultConfig = serde_json::from_value(f).unwrap();
        self.ctl.set_faults(&f).await;
    }
}

fn outbox(j: &Journal) -> Vec<espm_journal::OutboxRow> {
    j.read_outbox("probe", 0, 10_000).unwrap()
}

#[tokio::test]
async fn clear_mode_journals_and_commits_every_notification() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    e.post(
        "/notifications",
        json!({"count": 30, "types": ["UNSHARE", "DISCONNECT"]}),
    )
    .await;
    let p = e.poller(&j, DrainMode::Clear);
    let out = p.drain_once().await.unwrap();
    assert_eq!(
        (out.received, out.new_notifications, out.new_events),
        (30, 30, 30)
    );
    assert_eq!(p.drain_once().await.unwrap().received, 0);
    let rows = outbox(&j);
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r.event.source == "urn:espm:sim:acct"));
    let ledger = e.ledger().await;
    assert!(ledger["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["readId"].is_u64()));
}

#[tokio::test]
async fn peek_then_clear_stores_each_notification_once() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    e.post(
        "/notifications",
        json!({"count": 12, "types": ["SHAREUPDATE"]}),
    )
    .await;
    let out = e
        .poller(&j, DrainMode::PeekThenClear)
        .drain_once()
        .await
        .unwrap();
    assert_eq!(out.received, 12, "the clear=true read handed out 12");
    assert_eq!(
        out.new_notifications, 12,
        "the peek stored them; the clear found duplicates"
    );
    assert_eq!(outbox(&j).len(), 12);
    let reads = e.ledger().await["reads"].as_array().unwrap().clone();
    assert_eq!(
        reads
            .iter()
            .map(|r| r["clear"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [false, true]
    );
}

#[tokio::test]
async fn an_unwritable_journal_never_clears() {
    let e = env().await;
    drop(Journal::open(&e.journal_path).unwrap());
    let ro = Journal::open_read_only(&e.journal_path).unwrap();
    e.post("/notifications", json!({"count": 5, "types": ["UNSHARE"]}))
        .await;
    for mode in [DrainMode::Clear, DrainMode::PeekThenClear] {
        let err = e.poller(&ro, mode).drain_once().await.unwrap_err();
        assert!(
            matches!(err, PollError::Journal(ref je) if je.is_unwritable()),
            "{err}"
        );
    }
    let ledger = e.ledger().await;
    let clears = ledger["reads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["clear"] == true)
        .count();
    assert_eq!(
        clears, 0,
        "no clear=true read may happen while the journal cannot be written"
    );
    assert_eq!(
        e.ledger().await["notifications"].as_array().unwrap().len(),
        5
    );
}

#[tokio::test]
async fn a_truncated_body_is_quarantined_with_its_bytes() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    e.faults(json!({"script": ["truncated"], "paths": ["/notification/list"]}))
        .await;
    e.post("/notifications", json!({"count": 4, "types": ["UNSHARE"]}))
        .await;
    let out = e.poller(&j, DrainMode::Clear).drain_once().await.unwrap();
    assert_eq!(out.quarantined, 1);
    let q = j.quarantine_list().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    // The cut tail is quarantined with its bytes; the whole body stays in the journal.
    let whole = q[0]
        .fragment_of
        .expect("the tail of a list is a fragment of it");
    let bytes = j.raw_body(whole).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("<notificationList"));
    let tail = j.raw_body(q[0].id).unwrap().unwrap();
    assert!(bytes.ends_with(&tail));
    // Every notification that arrived complete went on.
    let complete = String::from_utf8_lossy(&bytes)
        .matches("</notification>")
        .count();
    let rows = outbox(&j);
    assert_eq!(rows.len(), complete + 1);
    assert_eq!(
        rows.iter()
            .filter(|r| r.event.ty == "gov.energystar.pm.bridge.body_quarantined")
            .count(),
        1
    );
}

#[tokio::test]
async fn pending_lists_emit_requested_then_resolved_once_across_restarts() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let mut accounts = Vec::new();
    for i in 0..25 {
        let c = e
            .post(
                "/customers",
                json!({"firstName": "C", "lastName": format!("{i}")}),
            )
            .await;
        let id = c["accountId"].as_i64().unwrap();
        e.post(
            "/connections",
            json!({"accountId": id, "customFields": {"Customer Number": format!("N{i}")}}),
        )
        .await;
        accounts.push(id);
    }
    e.post(
        "/shares/property",
        json!({"accountId": accounts[0], "accessLevel": "Read"}),
    )
    .await;
    let p = e.poller(&j, DrainMode::Clear);
    let out = p.pending_once().await.unwrap();
    assert_eq!(out.requested["connection"], 25, "two pages walked");
    assert_eq!(out.requested["property_share"], 1);
    assert_eq!(outbox(&j).len(), 26);
    // Nothing twice: not on the next walk, not from a new poller on the same journal.
    assert_eq!(p.pending_once().await.unwrap().requested["connection"], 0);
    let again = e.poller(&Journal::open(&e.journal_path).unwrap(), DrainMode::Clear);
    assert_eq!(
        again.pending_once().await.unwrap().requested["connection"],
        0
    );
    assert_eq!(outbox(&j).len(), 26);

    // Accept one through the bridge's path (client + journal), reject one, and let the customer
    // withdraw nothing: the resolved events say who answered.
    let client = e.client();
    client
        .answer(
            espm_client::PendingKind::Connection,
            accounts[1],
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    j.record_answer(
        &Scope::new("sim", "acct"),
        "connection",
        accounts[1],
        "accepted",
    )
    .unwrap();
    client
        .answer(
            espm_client::PendingKind::Connection,
            accounts[2],
            espm_model::Action::Reject,
            Some("no"),
        )
        .await
        .unwrap();
    // One walk that misses them is not proof (a page may have shifted); the second is.
    let out = p.pending_once().await.unwrap();
    assert_eq!(out.resolved["connection"], 0);
    let out = p.pending_once().await.unwrap();
    assert_eq!(out.resolved["connection"], 2);
    let resolved: Vec<_> = outbox(&j)
        .into_iter()
        .filter(|r| r.event.ty == "gov.energystar.pm.connection.resolved")
        .collect();
    let by_account = |id: i64| {
        resolved
            .iter()
            .find(|r| r.event.data["accountId"] == id)
            .map(|r| r.event.data["resolution"].clone())
    };
    assert_eq!(by_account(accounts[1]), Some(json!("accepted")));
    assert_eq!(
        by_account(accounts[2]),
        Some(json!("unknown")),
        "answered outside the bridge"
    );
    assert_eq!(p.pending_once().await.unwrap().resolved["connection"], 0);
}

/// The reported bug: a request answered between the fetch of page 1 and page 2 shifts page 2,
/// and the walk misses a request that is still pending. It must never be reported resolved.
#[tokio::test]
async fn a_request_answered_mid_walk_never_resolves_a_request_still_pending() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let mut accounts = Vec::new();
    for i in 0..(espm_sim::world::PAGE_SIZE + 1) {
        let c = e
            .post(
                "/customers",
                json!({"firstName": "C", "lastName": format!("{i}")}),
            )
            .await;
        let id = c["accountId"].as_i64().unwrap();
        e.post("/connections", json!({"accountId": id})).await;
        accounts.push(id);
    }
    let p = e.poller(&j, DrainMode::Clear);
    assert_eq!(p.pending_once().await.unwrap().requested["connection"], 21);
    // Someone answers the first request while the bridge is between page 1 and page 2.
    e.post(
        "/pending/triggers",
        json!({"list": "connection", "afterPage": 1, "id": accounts[0], "accept": false}),
    )
    .await;
    let shifted_onto_page_1 = accounts[espm_sim::world::PAGE_SIZE];
    for _ in 0..3 {
        p.pending_once().await.unwrap();
    }
    let resolved: Vec<i64> = outbox(&j)
        .into_iter()
        .filter(|r| r.event.ty == "gov.energystar.pm.connection.resolved")
        .map(|r| r.event.data["accountId"].as_i64().unwrap())
        .collect();
    assert_eq!(
        resolved,
        vec![accounts[0]],
        "only the answered request resolves"
    );
    assert!(!resolved.contains(&shifted_onto_page_1));
    // Nothing requested twice either.
    let requested = outbox(&j)
        .into_iter()
        .filter(|r| r.event.ty == "gov.energystar.pm.connection.requested")
        .count();
    assert_eq!(requested, 21);
}

#[tokio::test]
async fn a_body_journalled_before_a_crash_is_committed_at_start_up() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let xml = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/notifications/mixed.xml"
    ))
    .unwrap();
    let scope = Scope::new("sim", "acct");
    // What a SIGKILL right after the durable record_raw of a clear=true body leaves behind.
    let raw = j
        .record_raw(&scope, "notification/list?clear=true", 200, &xml)
        .unwrap();
    j.record_raw(
        &scope,
        "share/property/pending/list",
        200,
        b"<pendingList/>",
    )
    .unwrap();
    let p = e.poller(&j, DrainMode::Clear);
    assert_eq!(p.recover().await.unwrap(), 1);
    let rows = outbox(&j);
    assert_eq!(
        rows.len(),
        4,
        "the four notifications of the stranded body became events"
    );
    assert!(j.unprocessed_raw(&scope).unwrap().is_empty());
    assert_eq!(p.recover().await.unwrap(), 0);
    assert_eq!(outbox(&j).len(), 4);
    assert!(
        j.raw_body(raw).unwrap().is_some(),
        "the bytes stay journalled"
    );
}

#[tokio::test]
async fn a_huge_drain_is_committed_in_parts_without_loss() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    e.post(
        "/notifications",
        json!({"count": 4500, "types": ["UNSHARE"]}),
    )
    .await;
    let out = e.poller(&j, DrainMode::Clear).drain_once().await.unwrap();
    assert_eq!(
        (out.received, out.new_notifications, out.new_events),
        (4500, 4500, 4500)
    );
    assert_eq!(outbox(&j).len(), 4500);
    assert!(j
        .unprocessed_raw(&Scope::new("sim", "acct"))
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_pending_list_whose_links_loop_is_skipped_not_walked_forever() {
    use axum::extract::Query;
    use std::collections::HashMap;
    async fn page(
        Query(q): Query<HashMap<String, String>>,
    ) -> ([(&'static str, &'static str); 1], String) {
        let page = q.get("page").cloned().unwrap_or_else(|| "1".into());
        let next = if page == "1" { 2 } else { 1 };
        let body = format!(
            "<pendingList><account><accountId>{page}</accountId><username>u{page}</username></account>\
             <links><link linkDescription=\"next page\" link=\"/connect/account/pending/list?page={next}\" httpMethod=\"GET\"/></links></pendingList>"
        );
        ([("content-type", "application/xml")], body)
    }
    async fn empty() -> ([(&'static str, &'static str); 1], &'static str) {
        ([("content-type", "application/xml")], "<pendingList/>")
    }
    let app = axum::Router::new()
        .route("/ws/connect/account/pending/list", axum::routing::get(page))
        .route("/ws/share/property/pending/list", axum::routing::get(empty))
        .route("/ws/share/meter/pending/list", axum::routing::get(empty));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let mut c = ClientConfig::new(format!("http://{addr}/ws"), "p", "pw");
    c.retry = RetryPolicy::none();
    let cfg = PollerConfig {
        scope: Scope::new("sim", "acct"),
        drain_mode: DrainMode::Clear,
        poll_interval: Duration::from_millis(50),
        pending_interval: Duration::from_secs(60),
        max_error_backoff: Duration::from_secs(1),
        min_free: 0,
        spool: espm_journal::Spool::for_journal(j.path(), None),
    };
    let p = Poller::new(PmClient::new(c).unwrap(), j.clone(), cfg, vec![]);
    let err = tokio::time::timeout(Duration::from_secs(30), p.pending_once())
        .await
        .expect("the walk must end")
        .unwrap_err();
    assert!(err.to_string().contains("repeats"), "{err}");
    assert!(outbox(&j).is_empty(), "an incomplete list emits nothing");
}

/// A customer with an organisation, connected through the bridge's client.
async fn connected_customer(e: &Env, username: &str, organization: &str) -> i64 {
    let c = e
        .post(
            "/customers",
            json!({"username": username, "organization": organization}),
        )
        .await;
    let id = c["accountId"].as_i64().unwrap();
    e.post("/connections", json!({ "accountId": id })).await;
    e.client()
        .answer(
            espm_client::PendingKind::Connection,
            id,
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    id
}

fn events_of(j: &Journal, ty: &str) -> Vec<Value> {
    outbox(j)
        .into_iter()
        .filter(|r| r.event.ty == ty)
        .map(|r| r.event.data.value().clone())
        .collect()
}

/// Share events (requested and resolved) carry the customer's username and organisation from
/// `GET /customer/{id}`, looked up once and then served from the journal's cache: further
/// events, another poller on the same journal and the resolution call PM no more.
#[tokio::test]
async fn share_events_carry_the_customer_looked_up_once_within_the_ttl() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let cid = connected_customer(&e, "acme_facilities", "ACME Corporation").await;
    let share = |name: &str| json!({"accountId": cid, "name": name, "accessLevel": "Read"});
    let first = e.post("/shares/property", share("Harbor Office")).await["propertyId"]
        .as_i64()
        .unwrap();
    e.post("/shares/property", share("Main Street")).await;
    e.post(
        "/shares/meter",
        json!({"accountId": cid, "propertyId": first, "accessLevel": "Read"}),
    )
    .await;
    let p = e.poller(&j, DrainMode::Clear);
    p.pending_once().await.unwrap();
    let expected = json!({"username": "acme_facilities", "organization": "ACME Corporation"});
    let shares = events_of(&j, "gov.energystar.pm.property_share.requested");
    assert_eq!(shares.len(), 2);
    let meters = events_of(&j, "gov.energystar.pm.meter_share.requested");
    assert_eq!(meters.len(), 1);
    for d in shares.iter().chain(&meters) {
        assert_eq!(d["customer"], expected, "{d}");
        assert!(d.get("enrichment").is_none(), "{d}");
    }
    assert_eq!(
        e.ctl.customer_lookups(cid).await,
        1,
        "one lookup per customer"
    );

    // Later events, and a poller started on the same journal, use the cache.
    e.post("/shares/property", share("Harbor Warehouse")).await;
    let again = e.poller(&Journal::open(&e.journal_path).unwrap(), DrainMode::Clear);
    assert_eq!(
        again.pending_once().await.unwrap().requested["property_share"],
        1
    );
    e.client()
        .answer(
            espm_client::PendingKind::PropertyShare,
            first,
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    p.pending_once().await.unwrap();
    p.pending_once().await.unwrap();
    let resolved = events_of(&j, "gov.energystar.pm.property_share.resolved");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["customer"], expected);
    let all = events_of(&j, "gov.energystar.pm.property_share.requested");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|d| d["customer"] == expected));
    assert_eq!(
        e.ctl.customer_lookups(cid).await,
        1,
        "cached within the TTL"
    );
}

/// A lookup PM refuses (a customer not connected yet) or fails (500) never holds an event back
/// or drops it: it is emitted at once, without `customer`, flagged `enrichment: "unavailable"`.
/// A failure is not cached: the next event looks the customer up again.
#[tokio::test]
async fn a_failed_customer_lookup_flags_the_event_and_never_holds_it_back() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    // Not connected: PM answers 403 to GET /customer/{id}.
    let stranger = e
        .post("/customers", json!({"organization": "Stranger Inc"}))
        .await["accountId"]
        .as_i64()
        .unwrap();
    e.post(
        "/shares/property",
        json!({"accountId": stranger, "name": "Forwarded", "accessLevel": "Read"}),
    )
    .await;
    let p = e.poller(&j, DrainMode::Clear);
    p.pending_once().await.unwrap();
    let shares = events_of(&j, "gov.energystar.pm.property_share.requested");
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0]["enrichment"], "unavailable", "{}", shares[0]);
    assert!(shares[0].get("customer").is_none());
    // The connection request PM sent along carries its own customer.
    let conns = events_of(&j, "gov.energystar.pm.connection.requested");
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["customer"]["organization"], "Stranger Inc");

    // PM fails (500) on every customer lookup.
    let cid = connected_customer(&e, "acme_facilities", "ACME Corporation").await;
    e.faults(json!({"http500": 1.0, "paths": ["/customer/"]}))
        .await;
    e.post(
        "/shares/property",
        json!({"accountId": cid, "name": "During the outage", "accessLevel": "Read"}),
    )
    .await;
    let out = p.pending_once().await.unwrap();
    assert_eq!(out.requested["property_share"], 1, "emitted, not held back");
    let during = events_of(&j, "gov.energystar.pm.property_share.requested");
    let during = during
        .iter()
        .find(|d| d["propertyInfo"]["name"] == "During the outage")
        .unwrap();
    assert_eq!(during["enrichment"], "unavailable");
    assert!(e.ctl.customer_lookups(cid).await >= 1);

    e.faults(json!({})).await;
    e.post(
        "/shares/property",
        json!({"accountId": cid, "name": "After the outage", "accessLevel": "Read"}),
    )
    .await;
    p.pending_once().await.unwrap();
    let after = events_of(&j, "gov.energystar.pm.property_share.requested");
    let after = after
        .iter()
        .find(|d| d["propertyInfo"]["name"] == "After the outage")
        .unwrap();
    assert_eq!(after["customer"]["organization"], "ACME Corporation");
    assert!(after.get("enrichment").is_none());
}

/// An entry older than the TTL is looked up again when an event needs it; a PM that answers
/// slowly costs a walk at most the lookup budget, and its events go out flagged.
#[tokio::test]
async fn expired_entries_are_refreshed_on_demand_and_slow_lookups_cost_at_most_the_budget() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let cid = connected_customer(&e, "acme_facilities", "ACME Corporation").await;
    let share = |name: &str| json!({"accountId": cid, "name": name, "accessLevel": "Read"});
    let p = e
        .poller(&j, DrainMode::Clear)
        .with_customer_lookup(espm_poller::CustomerLookup {
            ttl: Duration::from_millis(1),
            budget: Duration::from_millis(300),
        });
    e.post("/shares/property", share("One")).await;
    p.pending_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    e.post("/shares/property", share("Two")).await;
    p.pending_once().await.unwrap();
    assert_eq!(e.ctl.customer_lookups(cid).await, 2, "expired: asked again");
    let shares = events_of(&j, "gov.energystar.pm.property_share.requested");
    assert_eq!(shares.len(), 2);
    assert!(shares
        .iter()
        .all(|d| d["customer"]["organization"] == "ACME Corporation"));

    // PM takes 10 s to answer a customer lookup; the walk does not wait for it.
    e.faults(json!({"latency_ms": 10_000, "paths": ["/customer/"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    e.post("/shares/property", share("Three")).await;
    let started = std::time::Instant::now();
    let out = p.pending_once().await.unwrap();
    let took = started.elapsed();
    assert_eq!(out.requested["property_share"], 1);
    assert!(took < Duration::from_secs(3), "the walk waited {took:?}");
    let three = events_of(&j, "gov.energystar.pm.property_share.requested")
        .into_iter()
        .find(|d| d["propertyInfo"]["name"] == "Three")
        .unwrap();
    assert_eq!(three["enrichment"], "unavailable", "{three}");
}

/// A customer's disconnect: the DISCONNECT and the UNSHAREs PM sends with it go out sharing a
/// `correlationid` (the DISCONNECT event's id); ids stay the notifications' own.
#[tokio::test]
async fn a_disconnect_and_its_unshares_share_a_correlationid_through_the_drain() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let cid = connected_customer(&e, "leaver", "Leaving Inc").await;
    let p = e
        .post(
            "/shares/property",
            json!({"accountId": cid, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let c = e.client();
    c.answer(
        espm_client::PendingKind::PropertyShare,
        p,
        espm_model::Action::Accept,
        None,
    )
    .await
    .unwrap();
    let m = e
        .post(
            "/shares/meter",
            json!({"accountId": cid, "propertyId": p, "accessLevel": "Read"}),
        )
        .await["meterId"]
        .as_i64()
        .unwrap();
    c.answer(
        espm_client::PendingKind::MeterShare,
        m,
        espm_model::Action::Accept,
        None,
    )
    .await
    .unwrap();
    let other = connected_customer(&e, "stayer", "Staying Inc").await;
    let q = e
        .post(
            "/shares/property",
            json!({"accountId": other, "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    c.answer(
        espm_client::PendingKind::PropertyShare,
        q,
        espm_model::Action::Accept,
        None,
    )
    .await
    .unwrap();
    e.post("/unshare", json!({"propertyId": q})).await;
    let ids = e.post("/disconnect", json!({"accountId": cid})).await;
    assert_eq!(ids["notificationIds"].as_array().unwrap().len(), 3);
    let p = e.poller(&j, DrainMode::PeekThenClear);
    p.drain_once().await.unwrap();
    let rows = outbox(&j);
    let events: Vec<_> = rows.iter().map(|r| &r.event).collect();
    let disconnect = events
        .iter()
        .find(|ev| ev.ty == "gov.energystar.pm.connection.terminated")
        .unwrap();
    assert_eq!(
        disconnect.correlationid.as_deref(),
        Some(disconnect.id.as_str())
    );
    let revoked: Vec<_> = events
        .iter()
        .filter(|ev| ev.ty == "gov.energystar.pm.share.revoked")
        .collect();
    assert_eq!(revoked.len(), 3);
    let grouped: Vec<_> = revoked
        .iter()
        .filter(|ev| ev.correlationid.as_deref() == Some(disconnect.id.as_str()))
        .collect();
    assert_eq!(grouped.len(), 2, "the leaver's property and meter");
    assert!(grouped.iter().all(|ev| ev.data["accountId"] == cid));
    let alone = revoked
        .iter()
        .find(|ev| ev.data["accountId"] == other)
        .unwrap();
    assert_eq!(alone.correlationid, None);
    for ev in &events {
        let n = ev.data["notificationId"].as_i64().unwrap();
        assert_eq!(
            ev.id,
            espm_events::Origin::new("sim", "acct").event_id(&format!("notification/{n}"))
        );
    }
}

/// Share events carry their property from `GET /property/{id}`: meter shares id, name and
/// address; property shares name, address and gross floor area. Looked up once within the TTL;
/// a refused lookup never holds an event back: it goes out flagged `enrichment: "unavailable"`.
#[tokio::test]
async fn share_events_carry_their_property_and_a_failed_lookup_only_flags() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let cid = connected_customer(&e, "acme_facilities", "ACME Corporation").await;
    let p = e
        .post(
            "/shares/property",
            json!({"accountId": cid, "name": "Harbor Office", "accessLevel": "Read",
                   "grossFloorArea": {"value": 52000.0, "units": "Square Feet"}}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    e.post(
        "/shares/meter",
        json!({"accountId": cid, "propertyId": p, "accessLevel": "Read"}),
    )
    .await;
    let poller = e.poller(&j, DrainMode::Clear);
    poller.pending_once().await.unwrap();
    let share = &events_of(&j, "gov.energystar.pm.property_share.requested")[0];
    assert_eq!(share["property"]["propertyId"], p);
    assert_eq!(share["property"]["name"], "Harbor Office");
    assert!(
        share["property"]["address"]["address1"].is_string(),
        "{share}"
    );
    assert_eq!(share["property"]["grossFloorArea"]["value"], 52000.0);
    assert!(share.get("enrichment").is_none(), "{share}");
    let meter = &events_of(&j, "gov.energystar.pm.meter_share.requested")[0];
    assert_eq!(meter["property"]["propertyId"], p);
    assert_eq!(meter["property"]["name"], "Harbor Office");
    assert!(meter["property"].get("grossFloorArea").is_none(), "{meter}");
    let lookups = |calls: std::collections::BTreeMap<String, u64>| {
        calls
            .get(&format!("GET /property/{p}"))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        lookups(e.sim.state().calls()),
        1,
        "one lookup for both events"
    );

    // PM refuses property reads: the event still goes out at once, flagged.
    e.faults(json!({"http500": 1.0, "paths": ["/property/"]}))
        .await;
    let q = e
        .post(
            "/shares/property",
            json!({"accountId": cid, "name": "During the outage", "accessLevel": "Read"}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    let out = poller.pending_once().await.unwrap();
    assert_eq!(out.requested["property_share"], 1);
    let during = events_of(&j, "gov.energystar.pm.property_share.requested")
        .into_iter()
        .find(|d| d["propertyId"] == q)
        .unwrap();
    assert_eq!(during["enrichment"], "unavailable", "{during}");
    assert!(during.get("property").is_none());
    assert_eq!(during["customer"]["organization"], "ACME Corporation");
}

/// The policy's waiter is woken after a walk, once the walk's snapshot is journalled.
#[tokio::test]
async fn a_pending_walk_notifies_its_waiter_after_the_snapshot_is_journalled() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let c = e
        .post("/customers", json!({"firstName": "W", "lastName": "Alk"}))
        .await;
    let id = c["accountId"].as_i64().unwrap();
    e.post("/connections", json!({"accountId": id})).await;
    let walked = Arc::new(tokio::sync::Notify::new());
    let mut p = e.poller(&j, DrainMode::Clear);
    p = p.with_pending_walk_notify(walked.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), walked.notified())
        .await
        .expect("no notification after the first walk");
    let snapshot = j
        .pending_snapshot(&Scope::new("sim", "acct"), "connection")
        .unwrap();
    assert_eq!(
        snapshot.len(),
        1,
        "the snapshot is journalled before the waiter runs"
    );
    stop.cancel();
    task.await.unwrap();
}

const CUSTOMER_PASS: &str = "Cust-Pass-1";

/// A customer who can log in to PM's test-environment calls, connected, with an accepted
/// property share whose custom fields are `Lot Number = 1`. The property id.
async fn accepted_share_with_fields(e: &Env, username: &str) -> (i64, i64) {
    let c = e
        .post(
            "/customers",
            json!({"username": username, "password": CUSTOMER_PASS, "organization": "Tess Org"}),
        )
        .await;
    let cid = c["accountId"].as_i64().unwrap();
    e.post("/connections", json!({ "accountId": cid })).await;
    let client = e.client();
    client
        .answer(
            espm_client::PendingKind::Connection,
            cid,
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    let p = e
        .post(
            "/shares/property",
            json!({"accountId": cid, "name": "Test Tower", "accessLevel": "Read",
                   "customFields": {"Lot Number": "1"}}),
        )
        .await["propertyId"]
        .as_i64()
        .unwrap();
    client
        .answer(
            espm_client::PendingKind::PropertyShare,
            p,
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    (cid, p)
}

/// PM's test-environment call, as the customer: new custom field values for an accepted
/// property share (PM notifies a SHAREUPDATE).
async fn customer_edits_fields(e: &Env, username: &str, property: i64, pairs: &[(&str, &str)]) {
    let mut xml = String::from("<customFieldList>");
    for (n, v) in pairs {
        xml.push_str(&format!("<customField name=\"{n}\">{v}</customField>"));
    }
    xml.push_str("</customFieldList>");
    let url = format!(
        "{}/property/{property}/customFieldList/recipient/{}",
        e.sim.test_base_url(),
        espm_sim::PROVIDER_ACCOUNT_ID
    );
    let r = reqwest::Client::new()
        .put(url)
        .basic_auth(username, Some(CUSTOMER_PASS))
        .header("Content-Type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

fn share_updates(j: &Journal) -> Vec<espm_events::CloudEvent> {
    outbox(j)
        .into_iter()
        .filter(|r| r.event.ty == "gov.energystar.pm.share.updated")
        .map(|r| std::sync::Arc::unwrap_or_clone(r.event))
        .collect()
}

/// The FAQ's "the customer edited custom field values: how am I told?": `share.updated` carries
/// the values re-read from PM after the edit. A read PM refuses, or one that does not finish
/// within the lookup budget, never holds the event back: it goes out at once, flagged
/// `enrichment: "unavailable"`, valid against its schema, with the id it would have had anyway.
#[tokio::test]
async fn share_updated_carries_the_custom_fields_re_read_and_a_failed_read_only_flags() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let (_, p) = accepted_share_with_fields(&e, "tess_tester").await;
    let poller =
        e.poller(&j, DrainMode::PeekThenClear)
            .with_customer_lookup(espm_poller::CustomerLookup {
                ttl: Duration::from_secs(60),
                budget: Duration::from_millis(500),
            });
    poller.drain_once().await.unwrap();
    customer_edits_fields(&e, "tess_tester", p, &[("Lot Number", "2"), ("Zone", "B")]).await;
    poller.drain_once().await.unwrap();
    let updated = share_updates(&j);
    assert_eq!(updated.len(), 1, "{updated:?}");
    let ev = &updated[0];
    assert_eq!(
        ev.data["customFields"],
        json!({"Lot Number": "2", "Zone": "B"}),
        "{}",
        ev.data
    );
    assert!(ev.data.get("enrichment").is_none(), "{}", ev.data);
    assert_eq!(ev.data["propertyId"], p);
    espm_testkit::schemas::assert_valid(ev);
    let origin = espm_events::Origin::new("sim", "acct");
    let n = ev.data["notificationId"].as_i64().unwrap();
    assert_eq!(ev.id, origin.event_id(&format!("notification/{n}")));

    // PM refuses the read: the event still goes out, flagged, and valid.
    customer_edits_fields(&e, "tess_tester", p, &[("Lot Number", "3")]).await;
    e.faults(json!({"http500": 1.0, "paths": [format!("/property/{p}/customFieldList")]}))
        .await;
    poller.drain_once().await.unwrap();
    let updated = share_updates(&j);
    assert_eq!(updated.len(), 2);
    let refused = &updated[1];
    assert_eq!(
        refused.data["enrichment"], "unavailable",
        "{}",
        refused.data
    );
    assert!(refused.data.get("customFields").is_none());
    espm_testkit::schemas::assert_valid(refused);
    let n = refused.data["notificationId"].as_i64().unwrap();
    assert_eq!(refused.id, origin.event_id(&format!("notification/{n}")));

    // PM takes 10 s to answer: the drain waits for the budget only.
    e.faults(json!({})).await;
    customer_edits_fields(&e, "tess_tester", p, &[("Lot Number", "4")]).await;
    e.faults(json!({"latency_ms": 10_000, "paths": [format!("/property/{p}/customFieldList")]}))
        .await;
    let started = std::time::Instant::now();
    poller.drain_once().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the drain waited {took:?}");
    let updated = share_updates(&j);
    assert_eq!(updated.len(), 3);
    assert_eq!(updated[2].data["enrichment"], "unavailable");
    espm_testkit::schemas::assert_valid(&updated[2]);
    // A schema that took anything would prove nothing: a wrong customFields fails it.
    let mut bad: Value = serde_json::from_slice(&ev.to_json_bytes()).unwrap();
    bad["data"]["customFields"] = json!({"Lot Number": 2});
    assert!(!espm_testkit::schemas::event_errors(&bad).is_empty());
}

/// A body journalled before a crash is committed at start-up with the custom field values read
/// then; `journal reprocess` (no PM client) still emits a valid event, flagged.
#[tokio::test]
async fn recovered_and_reprocessed_share_updates_are_read_again_or_flagged() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let (_, p) = accepted_share_with_fields(&e, "rec_tester").await;
    // Clear the connection's and share's own notifications, if any.
    e.poller(&j, DrainMode::Clear).drain_once().await.unwrap();
    let before = outbox(&j).len();
    customer_edits_fields(&e, "rec_tester", p, &[("Lot Number", "9")]).await;
    // What a SIGKILL right after journalling a clear=true body leaves behind: PM's bytes.
    let body = e.client().notifications_raw(true).await.unwrap().bytes;
    let scope = Scope::new("sim", "acct");
    j.record_raw(&scope, "notification/list?clear=true", 200, &body)
        .unwrap();
    let poller = e.poller(&j, DrainMode::Clear);
    assert_eq!(poller.recover().await.unwrap(), 1);
    let updated = share_updates(&j);
    assert_eq!(outbox(&j).len(), before + 1);
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].data["customFields"], json!({"Lot Number": "9"}));
    espm_testkit::schemas::assert_valid(&updated[0]);

    // The same bytes quarantined and reprocessed in another journal: no PM client, flagged.
    let dir = tempfile::tempdir().unwrap();
    let other = Journal::open(&dir.path().join("j.db")).unwrap();
    let raw2 = other
        .record_raw(&scope, "notification/list?clear=true", 200, &body)
        .unwrap();
    let origin = espm_events::Origin::new("sim", "acct");
    other
        .quarantine(raw2, "parsed by an older release", |id, digest| {
            espm_events::quarantine_event(
                &origin,
                &espm_events::BodyQuarantinedData {
                    endpoint: "notification/list?clear=true".into(),
                    raw_id: id.0,
                    sha256: digest.to_string(),
                    fragment_of: None,
                    error: "parsed by an older release".into(),
                    received_at: "2026-01-01T00:00:00Z".into(),
                },
            )
        })
        .unwrap();
    let r = espm_poller::reprocess(&other, raw2).await.unwrap();
    assert_eq!(r.notifications, 1);
    let flagged = share_updates(&other);
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].data["enrichment"], "unavailable");
    assert!(flagged[0].data.get("customFields").is_none());
    espm_testkit::schemas::assert_valid(&flagged[0]);
    assert_eq!(
        flagged[0].id, updated[0].id,
        "ids do not depend on the values"
    );
}

/// A part's custom field values are read while the next parts parse: with PM slow to answer
/// them, each `share.updated` of a body of several parts still carries the values read for its
/// own share, none goes out flagged, and the events keep the notifications' order.
#[tokio::test]
async fn share_updates_in_later_parts_carry_their_own_values_while_reads_are_slow() {
    let e = env().await;
    let j = Journal::open(&e.journal_path).unwrap();
    let mut shares = Vec::new();
    for user in ["ahead_a", "ahead_b", "ahead_c"] {
        shares.push((user, accepted_share_with_fields(&e, user).await.1));
    }
    let poller = e
        .poller(&j, DrainMode::Clear)
        .with_customer_lookup(espm_poller::CustomerLookup {
            ttl: Duration::from_secs(60),
            budget: Duration::from_secs(20),
        });
    poller.drain_once().await.unwrap();
    let before = outbox(&j).len();
    // One edit per part of the body (parts hold 1,000 notifications).
    for (i, (user, p)) in shares.iter().enumerate() {
        customer_edits_fields(&e, user, *p, &[("Lot Number", &format!("v{i}"))]).await;
        e.post(
            "/notifications",
            json!({"count": 1500, "types": ["UNSHARE"]}),
        )
        .await;
    }
    let paths: Vec<String> = shares
        .iter()
        .map(|(_, p)| format!("/property/{p}/customFieldList"))
        .collect();
    e.faults(json!({"latency_ms": 300, "paths": paths})).await;
    let out = poller.drain_once().await.unwrap();
    assert_eq!(out.new_events, 3 + 3 * 1500);
    let updated = share_updates(&j);
    assert_eq!(updated.len(), 3, "{updated:?}");
    for (i, ev) in updated.iter().enumerate() {
        assert_eq!(ev.data["propertyId"], shares[i].1, "{}", ev.data);
        assert_eq!(
            ev.data["customFields"],
            json!({ "Lot Number": format!("v{i}") }),
            "{}",
            ev.data
        );
        espm_testkit::schemas::assert_valid(ev);
    }
    let ids: Vec<i64> = outbox(&j)[before..]
        .iter()
        .map(|r| r.event.data["notificationId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3 + 3 * 1500);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "events out of order");
}
