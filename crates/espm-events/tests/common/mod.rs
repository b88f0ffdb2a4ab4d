//! Shared test helpers: fixtures, schema validation, the documented example events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use espm_events::*;
use serde_json::Value;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = fixtures_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every fixture under a fixtures subdirectory, by file name.
pub fn fixtures_in(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(fixtures_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| {
            let name = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

pub fn origin() -> Origin {
    Origin::new("sim", "acme")
}

/// The data schemas as registry resources, so that envelope schemas resolve `data`'s `$ref`.
fn data_resources() -> Vec<(String, jsonschema::Resource)> {
    data_schemas()
        .into_values()
        .map(|s| {
            let id = s["$id"].as_str().unwrap().to_string();
            (id, jsonschema::Resource::from_contents(s).unwrap())
        })
        .collect()
}

fn compile(what: &str, schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_resources(data_resources().into_iter())
        .build(schema)
        .unwrap_or_else(|e| panic!("schema of {what} does not compile: {e}"))
}

fn validators() -> &'static BTreeMap<String, jsonschema::Validator> {
    static V: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        event_schemas()
            .into_iter()
            .map(|(ty, schema)| (ty.clone(), compile(&ty, &schema)))
            .collect()
    })
}

fn data_validators() -> &'static BTreeMap<String, jsonschema::Validator> {
    static V: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        data_schemas()
            .into_iter()
            .map(|(ty, schema)| (ty.clone(), compile(&ty, &schema)))
            .collect()
    })
}

/// Whether a `data` value validates against the data schema of `ty` (what `dataschema` names).
pub fn is_valid_data(ty: &str, data: &Value) -> bool {
    data_validators()[ty].is_valid(data)
}

/// Validate an event against the schema of its own type; panics with every error.
pub fn assert_valid(ev: &CloudEvent) {
    let v = validators()
        .get(&ev.ty)
        .unwrap_or_else(|| panic!("no schema for type {}", ev.ty));
    let json: Value = serde_json::from_slice(&ev.to_json_bytes()).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "event of type {} does not match its schema:\n{}\n{}",
        ev.ty,
        errors.join("\n"),
        serde_json::to_string_pretty(&json).unwrap()
    );
}

/// Whether an arbitrary JSON value validates against a type's schema.
pub fn is_valid(ty: &str, json: &Value) -> bool {
    validators()[ty].is_valid(json)
}

/// Share events as the poller emits them when `GET /customer/{id}` answered.
fn enrich_example(ev: &mut CloudEvent) {
    if customer_to_enrich(ev).is_some() {
        let customer = CustomerData {
            username: ev.data["username"].as_str().map(str::to_string),
            organization: Some("Virginia Public Schools".into()),
        };
        enrich_customer(ev, Some(&customer));
    }
}

/// One example event per type, built from the fixtures (plus synthetic ones where PM has none).
pub fn examples() -> BTreeMap<String, CloudEvent> {
    let o = Origin::new("live", "acme-energy");
    let mut out = BTreeMap::new();
    for ev in normalize_document(&o, &fixture("notifications/mixed.xml")).unwrap() {
        out.entry(ev.ty.clone()).or_insert(ev);
    }
    // share.updated as the poller emits it: with the custom field values re-read from PM.
    if let Some(ev) = out.get_mut(SHARE_UPDATED) {
        let fields: BTreeMap<String, String> = [
            ("Customer Number".to_string(), "D987".to_string()),
            ("Meter Number".to_string(), "M-2207".to_string()),
        ]
        .into();
        enrich_custom_fields(ev, Some(&fields));
    }
    let unknown = espm_model::Notification {
        notification_type_code: "PROPERTYDELETE".into(),
        notification_id: 700_199,
        description: "Harbor Office Suite 4 was deleted by Sam Patel.".into(),
        account_id: Some(98_866),
        username: Some("harbor_admin".into()),
        property_id: Some(5_000_206),
        meter_id: None,
        notification_created_date: Some("2025-03-04T08:00:00".into()),
        notification_created_by: Some("harbor_sam".into()),
        notification_created_by_account_id: Some("98866".into()),
    };
    let ev = notification_event(&o, &unknown);
    out.insert(ev.ty.clone(), ev);
    let observed = Utc.with_ymd_and_hms(2025, 3, 5, 14, 0, 0).unwrap();
    for (kind, file) in [
        (PendingKind::Connection, "pending/accounts-page1.xml"),
        (PendingKind::PropertyShare, "pending/properties.xml"),
        (PendingKind::MeterShare, "pending/meters.xml"),
    ] {
        let list: espm_model::PendingList = espm_model::parse(&fixture(file)).unwrap();
        let entries = PendingEntry::from_list(&list);
        let first = &entries[..1];
        let d = diff_pending(
            &o,
            kind,
            &BTreeMap::new(),
            first,
            |_, _| Resolution::Unknown,
            observed,
        );
        let mut req = d.requested[0].clone();
        enrich_example(&mut req);
        out.insert(req.ty.clone(), req);
        // Resolved once a second complete walk misses it too.
        let missed = diff_pending(
            &o,
            kind,
            &d.snapshot,
            &[],
            |_, _| Resolution::Accepted,
            observed,
        );
        let gone = diff_pending(
            &o,
            kind,
            &missed.snapshot,
            &[],
            |_, _| Resolution::Accepted,
            observed,
        );
        let mut res = gone.resolved[0].clone();
        enrich_example(&mut res);
        out.insert(res.ty.clone(), res);
    }
    let q = quarantine_event(
        &o,
        &BodyQuarantinedData {
            endpoint: "/notification/list".into(),
            raw_id: 4711,
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            fragment_of: None,
            error: "malformed <notificationList> document: unexpected end of input".into(),
            received_at: "2025-03-05T14:00:01Z".into(),
        },
    );
    out.insert(q.ty.clone(), q);
    let mut target = BTreeMap::new();
    target.insert("kind".to_string(), Value::from("connection"));
    target.insert("requestId".to_string(), Value::from(98_866));
    target.insert("decision".to_string(), Value::from("accept"));
    let done = CommandResultData {
        command_id: "crm-7f3a".into(),
        action: Some(CommandAction::Answer),
        target: target.clone(),
        account_id: Some(98_866),
        requester: Some("crm".into()),
        origin: "api".into(),
        outcome: Some(CommandOutcome::Done),
        error: None,
        attempts: 1,
        finished_at: "2025-03-05T14:00:02.120Z".into(),
    };
    let ev = command_event(&o, &done, Some("account/98866".into()));
    out.insert(ev.ty.clone(), ev);
    let failed = CommandResultData {
        command_id: "crm-7f3b".into(),
        outcome: None,
        error: Some(CommandErrorData {
            problem_type:
                "https://github.com/espm-bridge/espm-bridge/blob/main/config/API.md#pm-rejected"
                    .into(),
            title: "PM rejected the command".into(),
            status: 422,
            detail: "PM answered HTTP 400".into(),
            pm_status: Some(400),
            pm_errors: vec!["-100: note is too long".into()],
            retryable: false,
        }),
        ..done
    };
    let ev = command_event(&o, &failed, Some("account/98866".into()));
    out.insert(ev.ty.clone(), ev);
    let decided = PolicyDecidedData {
        kind: PendingKind::PropertyShare,
        request_id: 4_001,
        account_id: Some(98_866),
        decision: PolicyAnswer::Accept,
        note: None,
        decided_by: PolicyDecidedBy {
            source: PolicySource::Rule,
            rule_index: Some(0),
            rule_name: Some("known customer number".into()),
        },
        implied_by: Some(PolicyImpliedBy {
            kind: PendingKind::MeterShare,
            request_id: 5_001,
            command_id: "policy:acme:meter_share:5001:0a1b2c3d4e5f".into(),
        }),
        command_id: "policy:acme:property_share:4001:5f4e3d2c1b0a".into(),
        dry_run: false,
        decided_at: "2025-03-05T14:00:03.000Z".into(),
    };
    let ev = policy_event(&o, &decided);
    out.insert(ev.ty.clone(), ev);
    out
}
