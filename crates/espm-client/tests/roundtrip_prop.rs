//! What the simulator (or PM) serialises with `espm_model::to_xml`, the client parses back to the
//! same values: arbitrary `NotificationList` / `PendingList` values survive `to_xml` -> `parse`, and
//! a sample of them also survives a trip through a real HTTP response and `PmClient`.
//!
//! Generated strings are constrained: (1) no leading/trailing whitespace and no whitespace-only
//! values, because the XML reader trims text; (2) no control characters (XML 1.0 forbids most of
//! them) and no line breaks (attribute values are normalised by XML parsers); (3) optional strings
//! are never `Some("")`, which reads back as absent; (4) `AccessLevel::Other(s)` never holds
//! "Read" / "Read Write", which read back as the named variants. They do include the XML special
//! characters `<>&"'`, inner spaces and non-ASCII text. Ids cover the full i64 range.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Router;
use espm_client::{ClientConfig, PendingKind, PmClient, RetryPolicy};
use espm_model::{
    parse, to_xml, AccessLevel, AccountInfo, Address, Audit, CustomField, CustomFieldList,
    GrossFloorArea, Link, Links, MeterInfo, Notification, NotificationList, PendingAccount,
    PendingList, PendingMeter, PendingProperty, PropertyInfo,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9<>&\"' éüß漢字🙂.,;:/#()-]{0,16}".prop_map(|s| s.trim().to_string())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text()).prop_map(|o| o.filter(|s| !s.is_empty()))
}

fn id() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        2_147_483_648i64..10_000_000_000i64,
        0i64..1000
    ]
}

fn notification() -> impl Strategy<Value = Notification> {
    (
        prop_oneof![
            Just("UNSHARE".to_string()),
            Just("SHAREUPDATE".to_string()),
            Just("DISCONNECT".to_string()),
            Just("TRANSFERPROPERTY".to_string()),
            "[A-Z_]{1,20}",
        ],
        id(),
        text(),
        option::of(id()),
        opt_text(),
        option::of(id()),
        option::of(id()),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(code, nid, desc, acc, user, prop, meter, date, by, by_id)| Notification {
                notification_type_code: code,
                notification_id: nid,
                description: desc,
                account_id: acc,
                username: user,
                property_id: prop,
                meter_id: meter,
                notification_created_date: date,
                notification_created_by: by,
                notification_created_by_account_id: by_id,
            },
        )
}

fn notification_list() -> impl Strategy<Value = NotificationList> {
    vec(notification(), 0..5).prop_map(|notifications| NotificationList { notifications })
}

fn address() -> impl Strategy<Value = Address> {
    (
        text(),
        opt_text(),
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(address1, address2, city, county, postal_code, state, other_state, country)| {
                Address {
                    address1,
                    address2,
                    city,
                    county,
                    postal_code,
                    state,
                    other_state,
                    country,
                }
            },
        )
}

fn custom_fields() -> impl Strategy<Value = Option<CustomFieldList>> {
    option::of(
        vec(
            (text(), text()).prop_map(|(name, value)| CustomField { name, value }),
            0..3,
        )
        .prop_map(|fields| CustomFieldList { fields }),
    )
}

fn audit() -> impl Strategy<Value = Option<Audit>> {
    option::of(
        (
            opt_text(),
            option::of(id()),
            opt_text(),
            opt_text(),
            option::of(id()),
            opt_text(),
        )
            .prop_map(|(a, b, c, d, e, f)| Audit {
                created_by: a,
                created_by_account_id: b,
                created_date: c,
                last_updated_by: d,
                last_updated_by_account_id: e,
                last_updated_date: f,
            }),
    )
}

fn access_level() -> impl Strategy<Value = AccessLevel> {
    prop_oneof![
        Just(AccessLevel::Read),
        Just(AccessLevel::ReadWrite),
        text()
            .prop_filter("named levels read back as their variants", |s| {
                s != "Read" && s != "Read Write"
            })
            .prop_map(AccessLevel::Other),
    ]
}

fn account_info() -> impl Strategy<Value = Option<AccountInfo>> {
    option::of(
        (
            opt_text(),
            opt_text(),
            opt_text(),
            option::of(address()),
            opt_text(),
            opt_text(),
            opt_text(),
        )
            .prop_map(
                |(first_name, last_name, email, address, job_title, phone, organization)| {
                    AccountInfo {
                        first_name,
                        last_name,
                        email,
                        address,
                        job_title,
                        phone,
                        organization,
                    }
                },
            ),
    )
}

fn property_info() -> impl Strategy<Value = PropertyInfo> {
    (
        opt_text(),
        option::of(address()),
        option::of(any::<i32>()),
        opt_text(),
        opt_text(),
        option::of(any::<i32>()),
        option::of((
            opt_text(),
            option::of(any::<bool>()),
            opt_text(),
            option::of(-1.0e12f64..1.0e12),
        )),
        option::of(0i32..=100),
        option::of(any::<bool>()),
        opt_text(),
        audit(),
    )
        .prop_map(
            |(name, address, nb, cs, pf, yb, gfa, occ, fed, notes, audit)| PropertyInfo {
                name,
                address,
                number_of_buildings: nb,
                construction_status: cs,
                primary_function: pf,
                year_built: yb,
                gross_floor_area: gfa.map(|(units, temporary, default, value)| GrossFloorArea {
                    units,
                    temporary,
                    default,
                    value,
                }),
                occupancy_percentage: occ,
                is_federal_property: fed,
                notes,
                access_level: None,
                audit,
            },
        )
}

fn meter_info() -> impl Strategy<Value = Option<MeterInfo>> {
    option::of(
        (
            option::of(id()),
            opt_text(),
            opt_text(),
            option::of(any::<bool>()),
            opt_text(),
            opt_text(),
            option::of(any::<bool>()),
            opt_text(),
        )
            .prop_map(
                |(id, t, name, metered, uom, fbd, in_use, inactive)| MeterInfo {
                    id,
                    meter_type: t,
                    name,
                    metered,
                    unit_of_measure: uom,
                    first_bill_date: fbd,
                    in_use,
                    inactive_date: inactive,
                },
            ),
    )
}

fn links() -> impl Strategy<Value = Option<Links>> {
    option::of(
        vec(
            (
                option::of(id()),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
            )
                .prop_map(|(id, d, l, m, h)| Link {
                    id,
                    link_description: d,
                    link: l,
                    http_method: m,
                    hint: h,
                }),
            0..3,
        )
        .prop_map(|link| Links { link }),
    )
}

fn pending_list() -> impl Strategy<Value = PendingList> {
    let account = (id(), text(), custom_fields(), account_info(), audit()).prop_map(
        |(account_id, username, cf, ai, audit)| PendingAccount {
            account_id,
            username,
            custom_field_list: cf,
            account_info: ai,
            connection_audit: audit,
        },
    );
    let property = (
        id(),
        custom_fields(),
        access_level(),
        id(),
        text(),
        property_info(),
        audit(),
    )
        .prop_map(|(pid, cf, al, aid, user, pi, audit)| PendingProperty {
            property_id: pid,
            custom_field_list: cf,
            access_level: al,
            account_id: aid,
            username: user,
            property_info: pi,
            share_audit: audit,
        });
    let meter = (
        (id(), id(), id(), text()),
        custom_fields(),
        access_level(),
        property_info(),
        meter_info(),
        audit(),
    )
        .prop_map(
            |((mid, pid, aid, user), cf, al, pi, mi, audit)| PendingMeter {
                meter_id: mid,
                property_id: pid,
                account_id: aid,
                username: user,
                custom_field_list: cf,
                access_level: al,
                property_info: pi,
                meter_info: mi,
                share_audit: audit,
            },
        );
    // A real page holds one kind of entry.
    prop_oneof![
        (vec(account, 0..4), links()).prop_map(|(accounts, links)| PendingList {
            accounts,
            links,
            ..PendingList::default()
        }),
        (vec(property, 0..4), links()).prop_map(|(properties, links)| PendingList {
            properties,
            links,
            ..PendingList::default()
        }),
        (vec(meter, 0..4), links()).prop_map(|(meters, links)| PendingList {
            meters,
            links,
            ..PendingList::default()
        }),
    ]
}

proptest! {
    #[test]
    fn notification_lists_round_trip(list in notification_list()) {
        let xml = to_xml(&list);
        let back: NotificationList = parse(xml.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, list, "{}", xml);
    }

    #[test]
    fn properties_round_trip(
        info in property_info(),
        access in option::of(access_level()),
    ) {
        // GET /property/{id}: the same propertyType, plus the provider's access level.
        let property = espm_model::Property { access_level: access, ..info };
        let xml = to_xml(&property);
        let back: espm_model::Property = parse(xml.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, property, "{}", xml);
    }

    #[test]
    fn pending_lists_round_trip(list in pending_list()) {
        let xml = to_xml(&list);
        let back: PendingList = parse(xml.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, list, "{}", xml);
    }
}

/// Serve whatever body is current at every path.
async fn serve(body: Arc<Mutex<String>>) -> String {
    async fn h(State(b): State<Arc<Mutex<String>>>) -> String {
        b.lock().unwrap().clone()
    }
    let app = Router::new().fallback(h).with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/ws")
}

#[test]
fn values_survive_http_and_the_client() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = Arc::new(Mutex::new(String::new()));
    let base = rt.block_on(serve(body.clone()));
    let mut cfg = ClientConfig::new(base, "u", "p");
    cfg.retry = RetryPolicy::none();
    cfg.timeout = Duration::from_secs(10);
    let client = PmClient::new(cfg).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    runner
        .run(&(notification_list(), pending_list()), |(n, p)| {
            *body.lock().unwrap() = to_xml(&n);
            let got = rt
                .block_on(client.notifications(false))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, n);
            // No "next page" link is followed here: pending_page_raw reads exactly one page.
            *body.lock().unwrap() = to_xml(&p);
            let raw = rt
                .block_on(client.pending_page_raw(PendingKind::PropertyShare, None))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got: PendingList =
                parse(&raw.bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, p);
            Ok(())
        })
        .unwrap();
}
