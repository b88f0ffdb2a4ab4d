//! Pure mapping of one event to the Arcadia calls that mirror it. No I/O.
//!
//! Every plan is idempotent: running it again (a replay, a retry after a timeout whose request
//! did arrive) leaves Arcadia as the first run did.

use std::collections::BTreeMap;

use espm_arcadia::{status, Account, AccountRef, Address, PropertyData, SetProperty};
use espm_events::data::{
    AddressData, NotificationData, PropertyInfoData, PropertyShareRequestedData,
    PropertyShareResolvedData,
};
use espm_events::{CloudEvent, Resolution};

/// Square feet per square metre.
pub const SQ_FT_PER_SQ_M: f64 = 10.763_910_416_709_722;

/// One Arcadia call (or, for a disconnect, a search followed by calls).
#[derive(Debug, Clone, PartialEq)]
// A handful of calls per event, built and sent one by one: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Call {
    /// `PUT /accounts`: add or update by `providerAccountId`.
    Upsert(Box<Account>),
    /// Set Account Property on one account.
    Set {
        /// The account.
        account: AccountRef,
        /// The field and value.
        property: SetProperty,
    },
    /// Set Account Property on an account that may never have been mirrored: a 404 is done.
    SetIfMirrored {
        /// The account.
        account: AccountRef,
        /// The field and value.
        property: SetProperty,
    },
    /// Upsert an account only if it is already mirrored (`GET` first; a 404 is done): a refresh
    /// never creates an account.
    Refresh(Box<Account>),
    /// `status` = `INACTIVE` on one account; a 404 means it was never mirrored, which is done.
    Inactivate {
        /// The account.
        account: AccountRef,
    },
    /// `INACTIVE` for every mirrored account of one customer, found through Arcadia's own search
    /// on `customerOrgId` (the sink keeps no state of its own).
    InactivateCustomer {
        /// The PM customer account id, as Arcadia stores it.
        customer_org_id: String,
    },
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Run these calls in order.
    Calls(Vec<Call>),
    /// Nothing to mirror; the reason is logged at debug level.
    Skip(String),
}

/// The mapping settings: how our ids look and which custom fields go where.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    prefix: String,
    suffix: String,
    customer_class: String,
    custom_fields: BTreeMap<String, String>,
    tariff_accuracy: u32,
}

impl Mapping {
    /// `template` must contain `{propertyId}` exactly once.
    pub fn new(
        template: &str,
        customer_class: &str,
        custom_fields: BTreeMap<String, String>,
        tariff_accuracy: u32,
    ) -> Result<Self, String> {
        let ph = espm_config::PROPERTY_ID_PLACEHOLDER;
        if template.matches(ph).count() != 1 {
            return Err(format!(
                "`provider_account_id` {template:?} must contain {ph} exactly once"
            ));
        }
        let (prefix, suffix) = template.split_once(ph).unwrap_or((template, ""));
        Ok(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
            customer_class: customer_class.into(),
            custom_fields,
            tariff_accuracy,
        })
    }

    /// Our `providerAccountId` for a PM property.
    pub fn provider_account_id(&self, property_id: i64) -> String {
        format!("{}{property_id}{}", self.prefix, self.suffix)
    }

    /// The PM property behind one of our `providerAccountId`s; `None` for accounts that are not
    /// ours (a disconnect must not touch accounts someone else created for the same customer).
    pub fn property_id_of(&self, provider_account_id: &str) -> Option<i64> {
        let rest = provider_account_id.strip_prefix(self.prefix.as_str())?;
        let digits = rest.strip_suffix(self.suffix.as_str())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The calls that mirror `event`.
    pub fn plan(&self, event: &CloudEvent) -> Plan {
        match event.ty.as_str() {
            espm_events::PROPERTY_SHARE_RESOLVED => {
                match serde_json::from_str::<PropertyShareResolvedData>(event.data.json()) {
                    Ok(d) => self.share_resolved(&d),
                    Err(e) => Plan::Skip(format!("unreadable property_share.resolved data: {e}")),
                }
            }
            espm_events::SHARE_REVOKED => match notification(event) {
                Ok(n) => match (n.property_id, n.meter_id) {
                    (Some(pid), None) => Plan::Calls(vec![Call::Inactivate {
                        account: AccountRef::Provider(self.provider_account_id(pid)),
                    }]),
                    (_, Some(_)) => Plan::Skip("a meter was unshared: no account change".into()),
                    (None, None) => Plan::Skip("share.revoked names no property".into()),
                },
                Err(e) => Plan::Skip(e),
            },
            espm_events::CONNECTION_TERMINATED => match notification(event) {
                // PM's DISCONNECT notification comes from the customer's side, which removes
                // every share (the provider's keep-shares option raises no notification).
                Ok(NotificationData {
                    account_id: Some(id),
                    ..
                }) => Plan::Calls(vec![Call::InactivateCustomer {
                    customer_org_id: id.to_string(),
                }]),
                Ok(_) => Plan::Skip("connection.terminated names no account".into()),
                Err(e) => Plan::Skip(e),
            },
            espm_events::SHARE_UPDATED => self.share_updated(event),
            espm_events::PROPERTY_TRANSFERRED => match notification(event) {
                // `accountId` and `username` are the new owner's. The account follows its
                // property, so that the new owner's disconnect finds it and the former owner's
                // does not. Removal of our access arrives as its own share.revoked (INACTIVE).
                Ok(NotificationData {
                    property_id: Some(pid),
                    account_id: Some(owner),
                    username,
                    ..
                }) => {
                    let account = AccountRef::Provider(self.provider_account_id(pid));
                    let mut calls = vec![Call::SetIfMirrored {
                        account: account.clone(),
                        property: SetProperty::new("customerOrgId", owner.to_string()),
                    }];
                    if let Some(name) = username.filter(|u| !u.trim().is_empty()) {
                        calls.push(Call::SetIfMirrored {
                            account,
                            property: SetProperty::new("customerOrgName", name),
                        });
                    }
                    Plan::Calls(calls)
                }
                Ok(_) => Plan::Skip("property.transferred names no property or new owner".into()),
                Err(e) => Plan::Skip(e),
            },
            other => Plan::Skip(format!("{other}: nothing to mirror")),
        }
    }

    /// PM's SHAREUPDATE notification carries only ids and a text: skipped. An event that does
    /// carry the property's details (`propertyInfo`) refreshes the mirrored account's name,
    /// address and area; not its customer (the owner does not change with an access level).
    fn share_updated(&self, event: &CloudEvent) -> Plan {
        let n = match notification(event) {
            Ok(n) => n,
            Err(e) => return Plan::Skip(e),
        };
        let Some(pid) = n.property_id else {
            return Plan::Skip("share.updated names no property".into());
        };
        if n.meter_id.is_some() {
            return Plan::Skip("share.updated of a meter: no account change".into());
        }
        let Some(info) = event.data.get("propertyInfo").filter(|v| !v.is_null()) else {
            return Plan::Skip("share.updated carries no property details to refresh".into());
        };
        let info = match serde_json::from_value::<PropertyInfoData>(info.clone()) {
            Ok(i) => i,
            Err(e) => return Plan::Skip(format!("unreadable share.updated propertyInfo: {e}")),
        };
        let mut account = Account {
            provider_account_id: Some(self.provider_account_id(pid)),
            account_name: info.name.clone(),
            address: info.address.as_ref().map(address),
            ..Account::default()
        };
        if let Some(area) = building_area(&info) {
            account.properties.insert(
                "buildingArea".into(),
                PropertyData {
                    key_name: "buildingArea".into(),
                    data_value: Some(area),
                    ..PropertyData::default()
                },
            );
        }
        Plan::Calls(vec![Call::Refresh(Box::new(account))])
    }

    fn share_resolved(&self, d: &PropertyShareResolvedData) -> Plan {
        match d.resolution {
            Resolution::Accepted => {}
            Resolution::Rejected => {
                return Plan::Skip("property share rejected: nothing to mirror".into())
            }
            // Never claim a share we cannot confirm.
            Resolution::Unknown => {
                return Plan::Skip("property share resolution unknown: not mirrored".into())
            }
        }
        let r = &d.request;
        let pid = self.provider_account_id(r.property_id);
        let info = &r.property_info;
        let address = info.address.as_ref().map(address);
        let account = Account {
            provider_account_id: Some(pid.clone()),
            account_name: info.name.clone(),
            customer_org_id: Some(r.account_id.to_string()),
            customer_org_name: Some(customer_org_name(r)),
            account_type: Some("CUSTOMER".into()),
            status: Some(status::ACTIVE.into()),
            address,
            ..Account::default()
        };
        let target = AccountRef::Provider(pid);
        let mut calls = vec![Call::Upsert(Box::new(account))];
        if let Some(area) = building_area(info) {
            calls.push(Call::Set {
                account: target.clone(),
                property: SetProperty::new("buildingArea", area),
            });
        }
        calls.push(Call::Set {
            account: target.clone(),
            property: SetProperty::new("customerClass", self.customer_class.clone()),
        });
        for (field, key) in &self.custom_fields {
            let Some(value) = r.custom_fields.get(field) else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let mut property = SetProperty::new(key.clone(), value);
            if key == "masterTariffId" {
                property.accuracy = Some(self.tariff_accuracy.into());
            }
            calls.push(Call::Set {
                account: target.clone(),
                property,
            });
        }
        Plan::Calls(calls)
    }
}

/// Arcadia's `customerOrgName`: the customer's organisation, as the poller looked it up. Fallback:
/// the share's username, when the event carries no organisation (its customer lookup failed and
/// it is flagged `enrichment: "unavailable"`, it predates enrichment, or the customer gave none),
/// so the account still names its customer.
fn customer_org_name(r: &PropertyShareRequestedData) -> String {
    r.customer
        .as_ref()
        .and_then(|c| c.organization.as_deref())
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map_or_else(|| r.username.clone(), str::to_string)
}

/// PM's address, itemised as Arcadia's.
fn address(a: &AddressData) -> Address {
    Address {
        address_string: None,
        address1: a.address1.clone(),
        address2: a.address2.clone(),
        city: a.city.clone(),
        state: a.state.clone().or_else(|| a.other_state.clone()),
        zip: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

/// `buildingArea`: the gross floor area in square feet, when PM gave a usable one.
fn building_area(info: &PropertyInfoData) -> Option<String> {
    info.gross_floor_area
        .as_ref()
        .and_then(|g| square_feet(g.value?, g.units.as_deref()))
}

fn notification(event: &CloudEvent) -> Result<NotificationData, String> {
    serde_json::from_str(event.data.json())
        .map_err(|e| format!("unreadable {} data: {e}", event.ty))
}

/// Gross floor area in whole square feet, as Arcadia's `buildingArea` string. `None` for a
/// missing, negative or non-finite value or for units we do not know (better no area than a
/// wrong one).
pub fn square_feet(value: f64, units: Option<&str>) -> Option<String> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let units = units.unwrap_or("Square Feet").trim().to_ascii_lowercase();
    let feet = match units.as_str() {
        "square feet" | "sq ft" | "ft2" => value,
        "square meters" | "square metres" | "sq m" | "m2" => value * SQ_FT_PER_SQ_M,
        _ => return None,
    };
    Some(format!("{}", feet.round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping::new(
            "espm-{propertyId}",
            "2",
            [("Master Tariff Id".to_string(), "masterTariffId".to_string())]
                .into_iter()
                .collect(),
            100,
        )
        .unwrap()
    }

    /// Built from JSON so that new envelope attributes do not break these tests.
    fn event(ty: &str, data: serde_json::Value) -> CloudEvent {
        serde_json::from_value(json!({
            "specversion": "1.0", "id": "e1", "source": "s", "type": ty,
            "datacontenttype": "application/json", "dataschema": "",
            "espmenvironment": "sim", "espmaccount": "a", "data": data
        }))
        .unwrap()
    }

    fn resolved(resolution: &str, units: &str) -> CloudEvent {
        event(
            espm_events::PROPERTY_SHARE_RESOLVED,
            json!({
                "propertyId": 77, "accountId": 12, "username": "jdoe", "accessLevel": "Read",
                "customFields": {"Master Tariff Id": " 522 ", "Other": "x"},
                "propertyInfo": {"name": "Main Street Office",
                    "address": {"address1": "1 Main St", "city": "Arlington", "state": "VA",
                                "postalCode": "22201", "country": "US"},
                    "grossFloorArea": {"units": units, "value": 1000.0}},
                "resolution": resolution, "observedAt": "2026-12-01T00:00:00Z"
            }),
        )
    }

    #[test]
    fn accepted_share_upserts_then_sets_properties() {
        let Plan::Calls(calls) = mapping().plan(&resolved("accepted", "Square Meters")) else {
            panic!("expected calls");
        };
        let Call::Upsert(a) = &calls[0] else {
            panic!("{calls:?}")
        };
        assert_eq!(a.provider_account_id.as_deref(), Some("espm-77"));
        assert_eq!(a.account_name.as_deref(), Some("Main Street Office"));
        assert_eq!(a.customer_org_id.as_deref(), Some("12"));
        assert_eq!(a.status.as_deref(), Some("ACTIVE"));
        assert_eq!(a.account_type.as_deref(), Some("CUSTOMER"));
        let addr = a.address.as_ref().unwrap();
        assert_eq!(addr.zip.as_deref(), Some("22201"));
        assert_eq!(addr.address1.as_deref(), Some("1 Main St"));
        let sets: Vec<(&str, &str, Option<String>)> = calls[1..]
            .iter()
            .map(|c| match c {
                Call::Set { account, property } => {
                    assert_eq!(account, &AccountRef::Provider("espm-77".into()));
                    (
                        property.key_name.as_str(),
                        property.data_value.as_str(),
                        property.accuracy.as_ref().map(|n| n.to_string()),
                    )
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sets,
            vec![
                ("buildingArea", "10764", None),
                ("customerClass", "2", None),
                ("masterTariffId", "522", Some("100".into())),
            ]
        );
    }

    /// `customerOrgName` is the customer's organisation; only an event without one (its lookup
    /// failed, or the customer gave none) falls back to the username.
    #[test]
    fn the_customer_org_name_is_the_organisation_else_the_username() {
        let org_name = |e: &CloudEvent| {
            let Plan::Calls(calls) = mapping().plan(e) else {
                panic!("expected calls");
            };
            let Call::Upsert(a) = &calls[0] else {
                panic!("{calls:?}")
            };
            a.customer_org_name.clone()
        };
        let mut e = resolved("accepted", "Square Feet");
        e.data.edit(|d| {
            d["customer"] = json!({"username": "jdoe", "organization": "ACME Corporation"})
        });
        assert_eq!(org_name(&e).as_deref(), Some("ACME Corporation"));
        e.data.edit(|d| d["customer"] = json!({"username": "jdoe"}));
        assert_eq!(org_name(&e).as_deref(), Some("jdoe"), "no organisation");
        e.data
            .edit(|d| d["customer"] = json!({"username": "jdoe", "organization": "  "}));
        assert_eq!(org_name(&e).as_deref(), Some("jdoe"), "a blank one is none");
        let mut flagged = resolved("accepted", "Square Feet");
        flagged
            .data
            .edit(|d| d["enrichment"] = json!("unavailable"));
        assert_eq!(org_name(&flagged).as_deref(), Some("jdoe"), "lookup failed");
    }

    #[test]
    fn plans_are_deterministic() {
        let e = resolved("accepted", "Square Feet");
        assert_eq!(mapping().plan(&e), mapping().plan(&e));
    }

    #[test]
    fn rejected_and_unknown_shares_are_not_mirrored() {
        assert!(matches!(
            mapping().plan(&resolved("rejected", "Square Feet")),
            Plan::Skip(_)
        ));
        assert!(matches!(
            mapping().plan(&resolved("unknown", "Square Feet")),
            Plan::Skip(_)
        ));
    }

    #[test]
    fn revocations_and_disconnects_inactivate() {
        let m = mapping();
        let n = |code: &str, extra: serde_json::Value| {
            let mut d =
                json!({"notificationTypeCode": code, "notificationId": 5, "description": "d"});
            d.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            d
        };
        assert_eq!(
            m.plan(&event(
                espm_events::SHARE_REVOKED,
                n("UNSHARE", json!({"propertyId": 77, "accountId": 12}))
            )),
            Plan::Calls(vec![Call::Inactivate {
                account: AccountRef::Provider("espm-77".into())
            }])
        );
        assert!(matches!(
            m.plan(&event(
                espm_events::SHARE_REVOKED,
                n("UNSHARE", json!({"propertyId": 77, "meterId": 9}))
            )),
            Plan::Skip(_)
        ));
        assert_eq!(
            m.plan(&event(
                espm_events::CONNECTION_TERMINATED,
                n("DISCONNECT", json!({"accountId": 12}))
            )),
            Plan::Calls(vec![Call::InactivateCustomer {
                customer_org_id: "12".into()
            }])
        );
        for ty in [
            espm_events::SHARE_UPDATED,
            espm_events::PROPERTY_TRANSFERRED,
            espm_events::METER_SHARE_RESOLVED,
        ] {
            assert!(matches!(
                m.plan(&event(ty, n("X", json!({"propertyId": 77})))),
                Plan::Skip(_)
            ));
        }
        // Bad input is skipped with a reason, never a panic.
        assert!(matches!(
            m.plan(&event(espm_events::SHARE_REVOKED, json!("garbage"))),
            Plan::Skip(_)
        ));
    }

    #[test]
    fn transfers_move_the_account_and_share_updates_refresh_only_with_details() {
        let m = mapping();
        let n = |ty: &str, extra: serde_json::Value| {
            let mut d =
                json!({"notificationTypeCode": "X", "notificationId": 5, "description": "d"});
            d.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            event(ty, d)
        };
        let pid = || AccountRef::Provider("espm-77".into());
        assert_eq!(
            m.plan(&n(
                espm_events::PROPERTY_TRANSFERRED,
                json!({"propertyId": 77, "accountId": 99, "username": "new"})
            )),
            Plan::Calls(vec![
                Call::SetIfMirrored {
                    account: pid(),
                    property: SetProperty::new("customerOrgId", "99"),
                },
                Call::SetIfMirrored {
                    account: pid(),
                    property: SetProperty::new("customerOrgName", "new"),
                },
            ])
        );
        assert!(matches!(
            m.plan(&n(
                espm_events::SHARE_UPDATED,
                json!({"propertyId": 77, "accountId": 5})
            )),
            Plan::Skip(_)
        ));
        let Plan::Calls(calls) = m.plan(&n(
            espm_events::SHARE_UPDATED,
            json!({"propertyId": 77, "accountId": 5, "propertyInfo": {"name": "N",
                   "grossFloorArea": {"units": "Square Meters", "value": 100.0}}}),
        )) else {
            panic!("expected a refresh");
        };
        let [Call::Refresh(a)] = &calls[..] else {
            panic!("{calls:?}")
        };
        assert_eq!(a.provider_account_id.as_deref(), Some("espm-77"));
        assert_eq!(a.account_name.as_deref(), Some("N"));
        assert_eq!(a.property("buildingArea"), Some("1076"));
        // Not the editor as the customer, and no status change.
        assert_eq!(
            (a.customer_org_id.as_ref(), a.status.as_ref()),
            (None, None)
        );
    }

    #[test]
    fn areas_convert_to_whole_square_feet() {
        assert_eq!(
            square_feet(2000.0, Some("Square Feet")),
            Some("2000".into())
        );
        assert_eq!(
            square_feet(100.0, Some("Square Meters")),
            Some("1076".into())
        );
        assert_eq!(square_feet(1.0, Some("Acres")), None);
        assert_eq!(square_feet(f64::NAN, None), None);
        assert_eq!(square_feet(-5.0, None), None);
    }

    #[test]
    fn our_ids_are_recognised() {
        let m = Mapping::new("pm-{propertyId}-x", "2", BTreeMap::new(), 100).unwrap();
        assert_eq!(m.provider_account_id(5), "pm-5-x");
        assert_eq!(m.property_id_of("pm-5-x"), Some(5));
        assert_eq!(m.property_id_of("pm--x"), None);
        assert_eq!(m.property_id_of("crm-5"), None);
        assert!(Mapping::new("no-placeholder", "2", BTreeMap::new(), 100).is_err());
    }
}
