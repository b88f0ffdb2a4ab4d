//! The `partitionkey` extension attribute (CloudEvents partitioning extension): the PM customer
//! account an event is about, so that one customer's events share a Kafka partition (the Kafka
//! key defaults to it) and stay in order.
//!
//! It is derived from the event type and `data`, never stored, so it cannot disagree with them
//! and events journalled before it existed get it too. Which field names the customer depends on
//! the type, because PM's `accountId` does not always mean the customer:
//!
//! - `TRANSFERPROPERTY`: `accountId` and `username` are the new owner's; the customer whose
//!   property left is the one who transferred it, `notificationCreatedByAccountId`.
//! - every other notification (`SHAREUPDATE` included: in PM's own example the editor is the
//!   `notificationCreatedBy`/`notificationCreatedByAccountId` pair, and `accountId` the customer
//!   whose share changed), and every pending request (`accountId` of a share is the property
//!   data administrator's account): `accountId`.
//!
//! An event without such an account (`bridge.body_quarantined`, a notification without the
//! field) has no `partitionkey`.

use serde_json::Value;

use crate::Data;

use crate::types::*;

/// The `data` fields that name the customer account of an event type, in order of preference.
pub fn partition_key_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        PROPERTY_TRANSFERRED => &["notificationCreatedByAccountId"],
        SHARE_REVOKED | SHARE_UPDATED | CONNECTION_TERMINATED | NOTIFICATION_RECEIVED => {
            &["accountId", "notificationCreatedByAccountId"]
        }
        CONNECTION_REQUESTED
        | PROPERTY_SHARE_REQUESTED
        | METER_SHARE_REQUESTED
        | CONNECTION_RESOLVED
        | PROPERTY_SHARE_RESOLVED
        | METER_SHARE_RESOLVED
        | COMMAND_COMPLETED
        | COMMAND_FAILED
        | POLICY_DECIDED => &["accountId"],
        _ => &[],
    }
}

/// What the `partitionkey` of an event type is, in words (for the schemas and the docs).
pub fn partition_key_doc(event_type: &str) -> &'static str {
    match event_type {
        SHARE_UPDATED => {
            "The customer whose share changed: data.accountId, else data.notificationCreatedByAccountId (the editor, who may be someone else)."
        }
        PROPERTY_TRANSFERRED => {
            "The customer who transferred the property away: data.notificationCreatedByAccountId (data.accountId is the new owner's)."
        }
        SHARE_REVOKED | CONNECTION_TERMINATED | NOTIFICATION_RECEIVED => {
            "The customer account: data.accountId, else data.notificationCreatedByAccountId."
        }
        CONNECTION_REQUESTED | CONNECTION_RESOLVED => {
            "The customer asking to connect: data.accountId."
        }
        PROPERTY_SHARE_REQUESTED
        | METER_SHARE_REQUESTED
        | PROPERTY_SHARE_RESOLVED
        | METER_SHARE_RESOLVED => "The property data administrator's account: data.accountId.",
        COMMAND_COMPLETED | COMMAND_FAILED => {
            "The customer account the command concerned, when it names one: data.accountId."
        }
        POLICY_DECIDED => "The customer account of the decided request: data.accountId.",
        _ => "None: the event is about no customer account.",
    }
}

/// The `partitionkey` of an event: the customer's PM account id in decimal, or `None`.
pub fn partition_key(event_type: &str, data: &Value) -> Option<String> {
    partition_key_fields(event_type)
        .iter()
        .find_map(|field| key_of(data.get(field)?))
}

/// [`partition_key`] read from `data`'s text, without parsing the rest of it.
pub(crate) fn partition_key_of(event_type: &str, data: &Data) -> Option<String> {
    let fields = partition_key_fields(event_type);
    if fields.is_empty() {
        return None;
    }
    data.members(fields).iter().flatten().find_map(key_of)
}

fn key_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty() && !s.chars().any(char::is_control)).then(|| s.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn customer_per_type() {
        let n = json!({"accountId": 8833843022i64, "notificationCreatedByAccountId": " 98866 "});
        // PM's example: the editor (98866) is not the customer whose share changed.
        assert_eq!(
            partition_key(SHARE_UPDATED, &n).as_deref(),
            Some("8833843022")
        );
        assert_eq!(
            partition_key(PROPERTY_TRANSFERRED, &n).as_deref(),
            Some("98866")
        );
        assert_eq!(
            partition_key(SHARE_REVOKED, &n).as_deref(),
            Some("8833843022")
        );
        let no_account = json!({"notificationCreatedByAccountId": "68032"});
        assert_eq!(
            partition_key(CONNECTION_TERMINATED, &no_account).as_deref(),
            Some("68032")
        );
        assert_eq!(
            partition_key(PROPERTY_TRANSFERRED, &json!({"accountId": 1})),
            None
        );
        assert_eq!(
            partition_key(BODY_QUARANTINED, &json!({"accountId": 1})),
            None
        );
        assert_eq!(
            partition_key(
                PROPERTY_TRANSFERRED,
                &json!({"notificationCreatedByAccountId": "  "})
            ),
            None
        );
        for ty in EVENT_TYPES {
            assert!(!partition_key_doc(ty).is_empty());
        }
    }

    proptest! {
        /// The key read from the text is the key read from the parsed value, for every type.
        #[test]
        fn the_key_from_text_is_the_key_from_the_value(
            ty in proptest::sample::select(EVENT_TYPES.to_vec()),
            account in proptest::option::of(prop_oneof![
                any::<i64>().prop_map(Value::from),
                "[0-9 \n]{0,4}".prop_map(Value::from),
                Just(Value::Null),
            ]),
            by in proptest::option::of("[0-9 ]{0,4}".prop_map(Value::from)),
            nested in any::<bool>(),
        ) {
            let mut v = json!({"x": {"accountId": 9}});
            if let Some(a) = account { v["accountId"] = a; }
            if let Some(b) = by { v["notificationCreatedByAccountId"] = b; }
            if nested { v = json!({"inner": v}); }
            let text = Data::from_json(&v.to_string()).unwrap();
            prop_assert_eq!(partition_key_of(ty, &text), partition_key(ty, &v));
        }
    }
}
