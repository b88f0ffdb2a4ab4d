//! Shared test helpers.
#![allow(dead_code)]

use espm_journal::{CloudEvent, Scope};

/// A test event with the given id.
pub fn ev(id: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: id.into(),
        source: "espm://sim/acme".into(),
        ty: "gov.energystar.pm.test".into(),
        subject: Some("property/1".into()),
        time: None,
        datacontenttype: "application/json".into(),
        dataschema: "https://example.invalid/schema.json".into(),
        espmenvironment: "sim".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({ "n": id }).into(),
    }
}

/// A test event linked to a notification id.
pub fn ev_for(id: &str, notification_id: i64) -> CloudEvent {
    let mut e = ev(id);
    e.data = serde_json::json!({ "notificationId": notification_id }).into();
    e
}

/// The scope used by tests.
pub fn scope() -> Scope {
    Scope::new("sim", "acme")
}
