//! Every PM fixture parses (including the lenient real-world shapes); bad ones give typed errors;
//! bodies we write validate against the official XSDs.

use std::path::PathBuf;
use std::process::Command;

use espm_model::*;

fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn xsd(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/xsd")
        .join(rel)
        .canonicalize()
        .unwrap()
}

/// Validate with xmllint (libxml2-utils, installed by tests/run.sh).
fn assert_valid(xml: &str, schema: &str) {
    let dir = tempdir();
    let file = dir.join("doc.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd(schema))
        .arg(&file)
        .output()
        .expect("xmllint is required: run `bash tests/run.sh` or apt-get install libxml2-utils");
    assert!(
        out.status.success(),
        "{xml}\nfails {schema}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "espm-model-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn mixed_notifications_parse_with_long_ids() {
    let list: NotificationList = parse(&fixture("notifications/mixed.xml")).unwrap();
    let codes: Vec<_> = list
        .notifications
        .iter()
        .map(|n| n.notification_type_code.as_str())
        .collect();
    assert_eq!(
        codes,
        ["UNSHARE", "DISCONNECT", "SHAREUPDATE", "TRANSFERPROPERTY"]
    );
    assert_eq!(list.notifications[2].account_id, Some(8_833_843_022));
    assert_eq!(list.notifications[0].meter_id, Some(2));
    assert_eq!(
        list.notifications[0].notification_created_date.as_deref(),
        Some("2025-03-02T09:14:07-05:00")
    );
    assert_eq!(list.notifications[1].property_id, None);
    assert_eq!(
        list.notifications[3]
            .notification_created_by_account_id
            .as_deref(),
        Some("6574")
    );
}

#[test]
fn empty_notification_list() {
    let list: NotificationList = parse(&fixture("notifications/empty.xml")).unwrap();
    assert!(list.notifications.is_empty());
}

#[test]
fn lenient_notification_without_username() {
    let list: NotificationList =
        parse(&fixture("lenient/notification-without-username.xml")).unwrap();
    assert_eq!(list.notifications[0].username, None);
    assert_eq!(list.notifications[0].property_id, Some(7_100_042));
}

#[test]
fn lenient_meter_in_old_order_without_username() {
    let list: PendingList = parse(&fixture("lenient/meter-pending-old-order.xml")).unwrap();
    let m = &list.meters[0];
    assert_eq!(m.meter_id, 6_067_822);
    assert_eq!(m.username, "");
    assert_eq!(m.access_level, AccessLevel::ReadWrite);
    let info = m.meter_info.as_ref().unwrap();
    assert_eq!(info.meter_type.as_deref(), Some("Natural Gas"));
    assert_eq!(info.unit_of_measure.as_deref(), Some("therms"));
    assert_eq!(
        m.property_info.gross_floor_area.as_ref().unwrap().value,
        Some(10000.0)
    );
    assert_eq!(list.next_page(), Some("/share/meter/pending/list?page=2"));
}

#[test]
fn pending_accounts_in_any_order_with_pagination() {
    let p1: PendingList = parse(&fixture("pending/accounts-page1.xml")).unwrap();
    assert_eq!(p1.accounts.len(), 2);
    let jane = &p1.accounts[0];
    assert_eq!(
        jane.custom_field_list.as_ref().unwrap().to_map()["Customer Number"],
        "D987DDD"
    );
    assert_eq!(
        jane.account_info.as_ref().unwrap().organization.as_deref(),
        Some("ACME Corp")
    );
    // John's accountInfo children are shuffled (xs:all).
    let john = p1.accounts[1].account_info.as_ref().unwrap();
    assert_eq!(john.last_name.as_deref(), Some("Doe"));
    assert_eq!(john.address.as_ref().unwrap().city, "Fairfax");
    assert_eq!(
        p1.accounts[1]
            .connection_audit
            .as_ref()
            .unwrap()
            .created_by_account_id,
        Some(75489)
    );
    assert_eq!(p1.next_page(), Some("/connect/account/pending/list?page=2"));
    let p2: PendingList = parse(&fixture("pending/accounts-page2.xml")).unwrap();
    assert_eq!(p2.accounts[0].account_id, 3243);
    assert_eq!(p2.next_page(), None);
}

#[test]
fn pending_property_with_cdata_and_audit() {
    let list: PendingList = parse(&fixture("pending/properties.xml")).unwrap();
    let p = &list.properties[0];
    assert_eq!(
        p.property_info.notes.as_deref(),
        Some("Permit license > 5 years old.")
    );
    assert_eq!(
        p.share_audit.as_ref().unwrap().created_by_account_id,
        Some(100)
    );
    assert_eq!(p.account_id, 87656);
    assert_eq!(
        p.property_info
            .audit
            .as_ref()
            .unwrap()
            .created_date
            .as_deref(),
        Some("2012-08-02T18:32:24-04:00")
    );
}

#[test]
fn pending_meters() {
    let list: PendingList = parse(&fixture("pending/meters.xml")).unwrap();
    let m = &list.meters[0];
    assert_eq!(
        (m.meter_id, m.property_id, m.access_level.as_str()),
        (6_067_821, 3_635_611, "Read")
    );
    assert_eq!(
        m.meter_info.as_ref().unwrap().first_bill_date.as_deref(),
        Some("2010-01-01")
    );
}

#[test]
fn responses_parse() {
    let ok: Response = parse(&fixture("responses/ok.xml")).unwrap();
    assert_eq!(ok.status, ResponseStatus::Ok);
    let err: Response = parse(&fixture("responses/error-already-fulfilled.xml")).unwrap();
    assert_eq!(err.status, ResponseStatus::Error);
    assert_eq!(err.error_list()[0].error_number.as_deref(), Some("-200"));
    let created: Response = parse(&fixture("responses/customer-created.xml")).unwrap();
    assert_eq!(created.id, Some(23421));
    let list: Response = parse(&fixture("responses/customer-list.xml")).unwrap();
    let links = &list.links.as_ref().unwrap().link;
    assert_eq!(
        links.iter().map(|l| l.id).collect::<Vec<_>>(),
        [Some(143), Some(5432), Some(1454)]
    );
    assert_eq!(links[2].hint, None);
    let customer: Customer = parse(&fixture("responses/customer.xml")).unwrap();
    assert_eq!(customer.username.as_deref(), Some("acme_customer"));
}

#[test]
fn request_fixtures_parse() {
    let a: SharingResponse = parse(&fixture("requests/accept.xml")).unwrap();
    assert_eq!(a.action, Action::Accept);
    let r: SharingResponse = parse(&fixture("requests/reject.xml")).unwrap();
    assert_eq!((r.action, r.note), (Action::Reject, None));
    let t: TerminateSharingResponse = parse(&fixture("requests/terminate.xml")).unwrap();
    assert_eq!(t.note.as_deref(), Some("Service contract ended."));
    let c: NewCustomer = parse(&fixture("requests/create-customer.xml")).unwrap();
    assert_eq!(c.organization.name, "ACME Corporation");
}

#[test]
fn bad_bodies_give_typed_errors() {
    let e = parse::<NotificationList>(&fixture("bad/truncated-notifications.xml")).unwrap_err();
    assert!(
        matches!(
            e,
            DocumentError::Malformed {
                root: "notificationList",
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse::<NotificationList>(&fixture("bad/maintenance.html")).unwrap_err();
    match e {
        DocumentError::NotXml { snippet } => {
            assert!(snippet.contains("Scheduled Maintenance"), "{snippet}")
        }
        other => panic!("{other:?}"),
    }
    let e = parse::<NotificationList>(&fixture("responses/ok.xml")).unwrap_err();
    assert_eq!(
        e,
        DocumentError::WrongRoot {
            expected: "notificationList",
            found: "response".into()
        }
    );
    assert!(matches!(
        parse::<NotificationList>(b""),
        Err(DocumentError::NotXml { .. })
    ));
    assert!(matches!(
        parse::<NotificationList>(b"{\"json\":1}"),
        Err(DocumentError::NotXml { .. })
    ));
    let bad_id = b"<notificationList><notification><notificationTypeCode>X</notificationTypeCode><notificationId>abc</notificationId></notification></notificationList>";
    assert!(matches!(
        parse::<NotificationList>(bad_id),
        Err(DocumentError::Malformed { .. })
    ));
}

#[test]
fn written_requests_validate_against_the_xsds() {
    let accept = to_xml(&SharingResponse::new(
        Action::Accept,
        Some("Verified & accepted <ok>"),
    ));
    assert_valid(&accept, "authorization/authorization.xsd");
    let empty_note = to_xml(&SharingResponse::new(Action::Reject, Some("   ")));
    assert!(!empty_note.contains("note"), "{empty_note}");
    assert_valid(&empty_note, "authorization/authorization.xsd");
    assert_valid(
        &to_xml(&TerminateSharingResponse::new(Some("bye"))),
        "authorization/authorization.xsd",
    );
    assert_valid(
        &to_xml(&TerminateSharingResponse::new(None)),
        "authorization/authorization.xsd",
    );
    let c: NewCustomer = parse(&fixture("requests/create-customer.xml")).unwrap();
    assert_valid(&to_xml(&c), "account/account.xsd");
    let round: NewCustomer = parse(to_xml(&c).as_bytes()).unwrap();
    assert_eq!(round, c);
}

#[test]
fn written_responses_validate_against_the_xsds() {
    for rel in ["notifications/mixed.xml", "notifications/empty.xml"] {
        let list: NotificationList = parse(&fixture(rel)).unwrap();
        assert_valid(&to_xml(&list), "authorization/authorization.xsd");
    }
    for rel in [
        "pending/accounts-page1.xml",
        "pending/accounts-page2.xml",
        "pending/meters.xml",
        "pending/properties.xml",
    ] {
        let list: PendingList = parse(&fixture(rel)).unwrap();
        let xml = to_xml(&list);
        assert_valid(&xml, "authorization/authorization.xsd");
        assert_eq!(parse::<PendingList>(xml.as_bytes()).unwrap(), list);
    }
    assert_valid(
        &to_xml(&Response::error(
            "-200",
            "The pending request doesn't exist or has been fulfilled",
        )),
        "response/response.xsd",
    );
    let list: Response = parse(&fixture("responses/customer-list.xml")).unwrap();
    assert_valid(&to_xml(&list), "response/response.xsd");
    let c: Customer = parse(&fixture("responses/customer.xml")).unwrap();
    assert_valid(&to_xml(&c), "account/customer.xsd");
}

#[test]
fn fuzz_finding_doctype_inside_text_is_an_error_not_a_panic() {
    let xml = b"<notificationList><notification><notificationTypeCode>A<!DOCTYPE x>B</notificationTypeCode><notificationId>1</notificationId></notification></notificationList>";
    assert!(matches!(
        parse::<NotificationList>(xml),
        Err(DocumentError::Malformed { .. })
    ));
    let pending = b"<pendingList><account><accountId>1</accountId><username>a<!DOCTYPE y>b</username></account></pendingList>";
    assert!(matches!(
        parse::<PendingList>(pending),
        Err(DocumentError::Malformed { .. })
    ));
}

#[test]
fn property_parses_in_any_order_and_round_trips_valid() {
    let p: Property = parse(&fixture("responses/property.xml")).unwrap();
    assert_eq!(p.name.as_deref(), Some("Harbor Office Suite 4"));
    let a = p.address.as_ref().unwrap();
    assert_eq!(
        (a.address1.as_str(), a.city.as_str()),
        ("400 Harbor Way", "Baltimore")
    );
    let gfa = p.gross_floor_area.as_ref().unwrap();
    assert_eq!(
        (gfa.units.as_deref(), gfa.value),
        (Some("Square Feet"), Some(125000.0))
    );
    assert_eq!(p.access_level, Some(AccessLevel::ReadWrite));
    assert_eq!(
        p.notes.as_deref(),
        Some("Lobby renovated in 2019 & re-metered.")
    );
    assert_eq!(
        p.audit.as_ref().unwrap().created_by_account_id,
        Some(8_833_843_022)
    );
    let xml = to_xml(&p);
    assert_valid(&xml, "property/property.xsd");
    assert_eq!(parse::<Property>(xml.as_bytes()).unwrap(), p);
    // Lenient: only a name, unknown elements ignored.
    let bare: Property =
        parse(b"<property><irrigatedArea units=\"Square Feet\"><value>5</value></irrigatedArea><name>X</name></property>")
            .unwrap();
    assert_eq!(bare.name.as_deref(), Some("X"));
    assert!(matches!(
        parse::<Property>(&fixture("responses/customer.xml")),
        Err(DocumentError::WrongRoot { .. })
    ));
}
