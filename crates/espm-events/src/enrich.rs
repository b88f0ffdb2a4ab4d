//! Customer enrichment: events about a customer carry their PM username and organisation.
//!
//! PM's pending share lists name the customer by account id and username only; the organisation
//! (and, in notifications, often the username) is only in `GET /customer/{id}`. The caller looks
//! the customer up (through its cache) and hands the answer to [`enrich_customer`]; a lookup that
//! failed still emits the event, flagged `enrichment: "unavailable"`. These functions only edit
//! `data`: the event's id and everything else stay as they were.

use serde_json::Value;

use crate::data::{CustomerData, Enrichment, PropertyData};
use crate::types::*;
use crate::CloudEvent;

/// The event types whose `customer` is looked up (the customer of their `accountId`).
/// Connection events carry their own customer (see [`crate::connection_requested_data`]).
pub const LOOKED_UP_TYPES: &[&str] = &[
    PROPERTY_SHARE_REQUESTED,
    PROPERTY_SHARE_RESOLVED,
    METER_SHARE_REQUESTED,
    METER_SHARE_RESOLVED,
];

/// The PM account whose username and organisation `event` should carry and does not yet: the
/// `accountId` of a property or meter share event without `customer`. `None` for every other
/// event.
pub fn customer_to_enrich(event: &CloudEvent) -> Option<i64> {
    if !LOOKED_UP_TYPES.contains(&event.ty.as_str()) {
        return None;
    }
    let data = event.data.as_object()?;
    if data.get("customer").is_some_and(|c| !c.is_null()) {
        return None;
    }
    data.get("accountId").and_then(Value::as_i64)
}

/// Add the looked-up customer to an event's `data`: `Some` sets `customer`, `None` (the lookup
/// failed or was not attempted in time) sets `enrichment: "unavailable"` instead. An event whose
/// `data` is not an object is left alone.
pub fn enrich_customer(event: &mut CloudEvent, customer: Option<&CustomerData>) {
    event.data.edit(|v| {
        let Some(data) = v.as_object_mut() else {
            return;
        };
        match customer.and_then(|c| serde_json::to_value(c).ok()) {
            Some(c) => {
                data.insert("customer".into(), c);
                data.remove("enrichment");
            }
            None => {
                data.remove("customer");
                data.insert(
                    "enrichment".into(),
                    Value::from(Enrichment::Unavailable.as_str()),
                );
            }
        }
    });
}

/// The property whose name, address (and, for property shares, gross floor area) `event`
/// should carry and does not yet: the `propertyId` of a share event without `property`.
pub fn property_to_enrich(event: &CloudEvent) -> Option<i64> {
    if !LOOKED_UP_TYPES.contains(&event.ty.as_str()) {
        return None;
    }
    let data = event.data.as_object()?;
    if data.get("property").is_some_and(|p| !p.is_null()) {
        return None;
    }
    data.get("propertyId").and_then(Value::as_i64)
}

/// Add the looked-up property to an event's `data` (meter share events get id, name and
/// address; property share events the gross floor area too); `None` sets
/// `enrichment: "unavailable"`. Run it after [`enrich_customer`], which clears the flag when
/// it finds the customer.
pub fn enrich_property(event: &mut CloudEvent, property: Option<&PropertyData>) {
    let meter = matches!(
        event.ty.as_str(),
        METER_SHARE_REQUESTED | METER_SHARE_RESOLVED
    );
    event.data.edit(|v| {
        let Some(data) = v.as_object_mut() else {
            return;
        };
        let value = property.and_then(|p| {
            let mut p = p.clone();
            if meter {
                p.gross_floor_area = None;
            }
            serde_json::to_value(p).ok()
        });
        match value {
            Some(p) => {
                data.insert("property".into(), p);
            }
            None => {
                data.remove("property");
                data.insert(
                    "enrichment".into(),
                    Value::from(Enrichment::Unavailable.as_str()),
                );
            }
        }
    });
}

/// Add the custom field values re-read for a `share.updated` event to its `data`: `Some` sets
/// `customFields`, `None` (the read failed, timed out or was skipped) sets
/// `enrichment: "unavailable"` instead. Any other event, or one whose `data` is not an object,
/// is left alone; the id never changes.
pub fn enrich_custom_fields(
    event: &mut CloudEvent,
    fields: Option<&std::collections::BTreeMap<String, String>>,
) {
    if event.ty != SHARE_UPDATED {
        return;
    }
    event.data.edit(|v| {
        let Some(data) = v.as_object_mut() else {
            return;
        };
        match fields.and_then(|f| serde_json::to_value(f).ok()) {
            Some(f) => {
                data.insert("customFields".into(), f);
                data.remove("enrichment");
            }
            None => {
                data.remove("customFields");
                data.insert(
                    "enrichment".into(),
                    Value::from(Enrichment::Unavailable.as_str()),
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, data: Value) -> CloudEvent {
        serde_json::from_value(json!({
            "specversion": "1.0", "id": "e1", "source": "s", "type": ty,
            "datacontenttype": "application/json", "dataschema": "",
            "espmenvironment": "sim", "espmaccount": "a", "data": data
        }))
        .unwrap()
    }

    #[test]
    fn custom_fields_go_on_share_updated_only_and_a_miss_flags_it() {
        let mut e = event(SHARE_UPDATED, json!({"notificationId": 1, "propertyId": 5}));
        let before = e.clone();
        let fields: std::collections::BTreeMap<String, String> =
            [("Lot Number".to_string(), "2".to_string())].into();
        enrich_custom_fields(&mut e, Some(&fields));
        assert_eq!(
            e.data,
            json!({"notificationId": 1, "propertyId": 5, "customFields": {"Lot Number": "2"}})
        );
        enrich_custom_fields(&mut e, None);
        assert_eq!(
            e.data,
            json!({"notificationId": 1, "propertyId": 5, "enrichment": "unavailable"})
        );
        assert_eq!(e.id, before.id);
        let mut revoked = event(SHARE_REVOKED, json!({"notificationId": 2}));
        enrich_custom_fields(&mut revoked, None);
        assert_eq!(revoked.data, json!({"notificationId": 2}));
    }

    #[test]
    fn only_share_events_without_a_customer_are_looked_up() {
        let share = event(PROPERTY_SHARE_REQUESTED, json!({"accountId": 7}));
        assert_eq!(customer_to_enrich(&share), Some(7));
        let meter = event(METER_SHARE_RESOLVED, json!({"accountId": 8}));
        assert_eq!(customer_to_enrich(&meter), Some(8));
        let done = event(
            PROPERTY_SHARE_RESOLVED,
            json!({"accountId": 7, "customer": {"username": "u"}}),
        );
        assert_eq!(customer_to_enrich(&done), None);
        let connection = event(CONNECTION_REQUESTED, json!({"accountId": 7}));
        assert_eq!(customer_to_enrich(&connection), None);
        let revoked = event(SHARE_REVOKED, json!({"accountId": 7}));
        assert_eq!(customer_to_enrich(&revoked), None);
        let garbage = event(PROPERTY_SHARE_REQUESTED, json!("x"));
        assert_eq!(customer_to_enrich(&garbage), None);
    }

    #[test]
    fn enrichment_sets_the_customer_or_the_flag_and_nothing_else() {
        let mut e = event(PROPERTY_SHARE_REQUESTED, json!({"accountId": 7}));
        let before = e.clone();
        enrich_customer(&mut e, None);
        assert_eq!(e.data, json!({"accountId": 7, "enrichment": "unavailable"}));
        let c = CustomerData {
            username: Some("acme".into()),
            organization: Some("ACME Corporation".into()),
        };
        enrich_customer(&mut e, Some(&c));
        assert_eq!(
            e.data,
            json!({"accountId": 7,
                   "customer": {"username": "acme", "organization": "ACME Corporation"}})
        );
        assert_eq!((e.id.as_str(), &e.ty), (before.id.as_str(), &before.ty));
    }

    #[test]
    fn property_enrichment_per_type_and_the_shared_flag() {
        let p = PropertyData {
            property_id: 5,
            name: Some("Harbor".into()),
            address: None,
            gross_floor_area: Some(crate::data::GrossFloorAreaData {
                value: Some(1000.0),
                ..Default::default()
            }),
        };
        let mut share = event(
            PROPERTY_SHARE_REQUESTED,
            json!({"accountId": 7, "propertyId": 5}),
        );
        assert_eq!(property_to_enrich(&share), Some(5));
        enrich_property(&mut share, Some(&p));
        assert_eq!(share.data["property"]["grossFloorArea"]["value"], 1000.0);
        assert_eq!(property_to_enrich(&share), None);
        let mut meter = event(METER_SHARE_RESOLVED, json!({"propertyId": 5, "meterId": 9}));
        enrich_property(&mut meter, Some(&p));
        assert_eq!(
            meter.data["property"],
            json!({"propertyId": 5, "name": "Harbor"})
        );
        // The customer was found, the property not: flagged all the same.
        let mut both = event(
            METER_SHARE_REQUESTED,
            json!({"accountId": 7, "propertyId": 5}),
        );
        enrich_customer(&mut both, Some(&CustomerData::default()));
        enrich_property(&mut both, None);
        assert_eq!(both.data["enrichment"], "unavailable");
        assert!(both.data.get("customer").is_some());
        let revoked = event(SHARE_REVOKED, json!({"propertyId": 5}));
        assert_eq!(property_to_enrich(&revoked), None);
    }
}
