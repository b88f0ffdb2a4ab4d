//! The accounts as a pure state machine: upsert, Set Account Property, search. No I/O.

use std::collections::BTreeMap;

use espm_arcadia::{status, Account, AccountTariff, Address, ApiError, PropertyData};
use serde_json::Value;

/// Why a call was refused: the HTTP status and Arcadia's error.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// 400 or 404.
    pub status: u16,
    /// The error inside the envelope.
    pub error: ApiError,
}

fn bad(error: ApiError) -> Refusal {
    Refusal { status: 400, error }
}

fn not_found(what: &str) -> Refusal {
    Refusal {
        status: 404,
        error: ApiError::new(
            "ObjectNotFound",
            format!("No account found for {what}"),
            "Account",
        ),
    }
}

const TYPES: &[&str] = &["CUSTOMER", "POTENTIAL", "TARGET", "ARCHETYPE"];
const STATUSES: &[&str] = &[status::ACTIVE, status::INACTIVE, status::DELETED];

/// Header fields Set Account Property can change.
const HEADER_FIELDS: &[&str] = &[
    "accountName",
    "customerOrgId",
    "customerOrgName",
    "owner",
    "type",
    "status",
    "providerAccountId",
];
/// Address fields Set Account Property can change.
const ADDRESS_FIELDS: &[&str] = &[
    "addressString",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "country",
];

/// Which account a call names.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// `providerAccountId`.
    Provider(&'a str),
    /// `accountId`.
    Arcadia(&'a str),
}

/// All accounts of the one simulated organisation, in creation order.
#[derive(Debug, Default)]
pub struct Store {
    accounts: Vec<Account>,
}

fn check_enum(key: &str, value: &str, allowed: &[&str]) -> Result<(), Refusal> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(bad(ApiError::new(
            "InvalidArgument",
            format!("{key} must be one of {}", allowed.join(", ")),
            "Account",
        )
        .on_property(key, Some(value))))
    }
}

fn merge_address(into: &mut Option<Address>, from: Address) {
    let a = into.get_or_insert_with(Address::default);
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { a.$f = from.$f; } )* };
    }
    take!(
        address_string,
        address1,
        address2,
        city,
        state,
        zip,
        country
    );
}

impl Store {
    /// Every account, in creation order.
    pub fn all(&self) -> &[Account] {
        &self.accounts
    }

    fn index(&self, key: Key<'_>) -> Option<usize> {
        self.accounts.iter().position(|a| match key {
            Key::Provider(p) => a.provider_account_id.as_deref() == Some(p),
            Key::Arcadia(id) => a.account_id.as_deref() == Some(id),
        })
    }

    /// The account named by `key`.
    pub fn get(&self, key: Key<'_>) -> Result<&Account, Refusal> {
        match self.index(key) {
            Some(i) => Ok(&self.accounts[i]),
            None => Err(not_found(&describe(key))),
        }
    }

    fn validate(body: &Account) -> Result<(), Refusal> {
        if let Some(t) = &body.account_type {
            check_enum("type", t, TYPES)?;
        }
        if let Some(s) = &body.status {
            check_enum("status", s, STATUSES)?;
        }
        for (k, p) in &body.properties {
            if p.key_name != *k {
                return Err(bad(ApiError::new(
                    "InvalidArgument",
                    format!("properties entry {k} has keyName {}", p.key_name),
                    "PropertyData",
                )
                .on_property("keyName", Some(&p.key_name))));
            }
        }
        if body
            .provider_account_id
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(bad(ApiError::new(
                "InvalidArgument",
                "providerAccountId must not be empty",
                "Account",
            )
            .on_property("providerAccountId", Some(""))));
        }
        Ok(())
    }

    /// `POST /accounts`: a new account (a `providerAccountId` already in use is refused).
    pub fn add(&mut self, body: Account, new_id: String) -> Result<Account, Refusal> {
        Self::validate(&body)?;
        if let Some(pid) = &body.provider_account_id {
            if self.index(Key::Provider(pid)).is_some() {
                return Err(bad(ApiError::new(
                    "InvalidArgument",
                    format!("An account with providerAccountId {pid} already exists"),
                    "Account",
                )
                .on_property("providerAccountId", Some(pid))));
            }
        }
        let mut account = body;
        account.account_id = Some(new_id);
        if account.status.is_none() {
            account.status = Some(status::ACTIVE.into());
        }
        self.accounts.push(account.clone());
        Ok(account)
    }

    /// `PUT /accounts`: update the account with the body's `providerAccountId` (or `accountId`),
    /// or add it. Given fields replace stored ones; `properties` entries are merged by key;
    /// a given `tariffs` list replaces the stored one.
    pub fn upsert(&mut self, body: Account, new_id: String) -> Result<Account, Refusal> {
        Self::validate(&body)?;
        let existing = match (&body.provider_account_id, &body.account_id) {
            (Some(p), _) => self.index(Key::Provider(p)),
            (None, Some(id)) => match self.index(Key::Arcadia(id)) {
                Some(i) => Some(i),
                None => return Err(not_found(&format!("accountId {id}"))),
            },
            (None, None) => None,
        };
        let Some(i) = existing else {
            let mut body = body;
            body.account_id = None;
            return self.add(body, new_id);
        };
        let a = &mut self.accounts[i];
        macro_rules! take {
            ($($f:ident),*) => { $( if body.$f.is_some() { a.$f = body.$f; } )* };
        }
        take!(
            account_name,
            customer_org_id,
            customer_org_name,
            owner,
            account_type,
            status
        );
        if let Some(addr) = body.address {
            merge_address(&mut a.address, addr);
        }
        a.properties.extend(body.properties);
        if !body.tariffs.is_empty() {
            a.tariffs = body.tariffs;
        }
        Ok(a.clone())
    }

    /// Set Account Property: one header field, address field, `masterTariffId` or `properties`
    /// entry. `body` is the raw JSON so that a missing field gets Arcadia's `NotNull`.
    pub fn set_property(&mut self, key: Key<'_>, body: &Value) -> Result<PropertyData, Refusal> {
        let field = |name: &str| body.get(name).filter(|v| !v.is_null());
        let Some(key_name) = field("keyName")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
        else {
            return Err(bad(ApiError::new(
                "NotNull",
                "keyName may not be null",
                "PropertyData",
            )
            .on_property("keyName", None)));
        };
        let value = match field("dataValue") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(_) => {
                return Err(bad(ApiError::new(
                    "InvalidArgument",
                    "dataValue must be a string",
                    "PropertyData",
                )
                .on_property("dataValue", None)))
            }
            None => {
                return Err(bad(ApiError::new(
                    "NotNull",
                    "dataValue may not be null",
                    "PropertyData",
                )
                .on_property("dataValue", None)))
            }
        };
        let accuracy = match field("accuracy") {
            None => None,
            Some(Value::Number(n)) => Some(n.clone()),
            Some(Value::String(s)) => match s.trim().parse::<serde_json::Number>() {
                Ok(n) => Some(n),
                Err(_) => return Err(invalid("accuracy", s)),
            },
            Some(other) => return Err(invalid("accuracy", &other.to_string())),
        };
        let date = |name: &str| -> Result<Option<String>, Refusal> {
            match field(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(name, &other.to_string())),
            }
        };
        let from = date("fromDateTime")?;
        let to = date("toDateTime")?;
        let Some(i) = self.index(key) else {
            return Err(not_found(&describe(key)));
        };
        if HEADER_FIELDS.contains(&key_name) {
            match key_name {
                "type" => check_enum("type", &value, TYPES)?,
                "status" => check_enum("status", &value, STATUSES)?,
                "providerAccountId" => {
                    if value.is_empty() {
                        return Err(invalid("providerAccountId", &value));
                    }
                    if self.index(Key::Provider(&value)).is_some_and(|j| j != i) {
                        return Err(bad(ApiError::new(
                            "InvalidArgument",
                            format!("providerAccountId {value} is already in use"),
                            "Account",
                        )
                        .on_property("providerAccountId", Some(&value))));
                    }
                }
                _ => {}
            }
        }
        let a = &mut self.accounts[i];
        let v = Some(value.clone());
        match key_name {
            "accountName" => a.account_name = v,
            "customerOrgId" => a.customer_org_id = v,
            "customerOrgName" => a.customer_org_name = v,
            "owner" => a.owner = v,
            "type" => a.account_type = v,
            "status" => a.status = v,
            "providerAccountId" => a.provider_account_id = v,
            k if ADDRESS_FIELDS.contains(&k) => {
                let addr = a.address.get_or_insert_with(Address::default);
                match k {
                    "addressString" => addr.address_string = v,
                    "address1" => addr.address1 = v,
                    "address2" => addr.address2 = v,
                    "city" => addr.city = v,
                    "state" => addr.state = v,
                    "zip" => addr.zip = v,
                    _ => addr.country = v,
                }
            }
            "masterTariffId" => {
                let Ok(id) = value.trim().parse::<i64>() else {
                    return Err(invalid("dataValue", &value));
                };
                // Like Arcadia's tariff endpoint: the effective date identifies the entry.
                let tariff = AccountTariff {
                    master_tariff_id: id,
                    service_type: Some("ELECTRICITY".into()),
                    customer_likelihood: accuracy.clone(),
                    effective_date: from.clone(),
                    end_date: to.clone(),
                };
                match a
                    .tariffs
                    .iter_mut()
                    .find(|t| t.effective_date == tariff.effective_date)
                {
                    Some(t) => *t = tariff,
                    None => a.tariffs.push(tariff),
                }
            }
            k => {
                a.properties.insert(
                    k.to_string(),
                    PropertyData {
                        key_name: k.to_string(),
                        data_type: None,
                        data_value: v,
                        accuracy: accuracy.clone(),
                        from_date_time: from.clone(),
                        to_date_time: to.clone(),
                    },
                );
            }
        }
        Ok(PropertyData {
            key_name: key_name.to_string(),
            data_type: None,
            data_value: Some(value),
            accuracy,
            from_date_time: from,
            to_date_time: to,
        })
    }

    /// `GET /accounts`: (total matches, the page). `search` matches case-insensitively as a
    /// substring of the `searchOn` fields (default `accountName,providerAccountId`).
    pub fn search(
        &self,
        search: Option<&str>,
        search_on: Option<&str>,
        page_start: usize,
        page_count: usize,
    ) -> (usize, Vec<Account>) {
        let fields: Vec<&str> = search_on
            .unwrap_or("accountName,providerAccountId")
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let needle = search.map(str::to_lowercase);
        let matches: Vec<&Account> = self
            .accounts
            .iter()
            .filter(|a| match &needle {
                None => true,
                Some(n) => fields
                    .iter()
                    .any(|f| field_of(a, f).is_some_and(|v| v.to_lowercase().contains(n.as_str()))),
            })
            .collect();
        let page = matches
            .iter()
            .skip(page_start)
            .take(page_count)
            .map(|a| (*a).clone())
            .collect();
        (matches.len(), page)
    }
}

fn field_of<'a>(a: &'a Account, f: &str) -> Option<&'a str> {
    match f {
        "accountName" => a.account_name.as_deref(),
        "providerAccountId" => a.provider_account_id.as_deref(),
        "accountId" => a.account_id.as_deref(),
        "customerOrgId" => a.customer_org_id.as_deref(),
        "customerOrgName" => a.customer_org_name.as_deref(),
        "owner" => a.owner.as_deref(),
        "status" => a.status.as_deref(),
        _ => None,
    }
}

fn invalid(name: &str, value: &str) -> Refusal {
    bad(
        ApiError::new("InvalidArgument", format!("invalid {name}"), "PropertyData")
            .on_property(name, Some(value)),
    )
}

fn describe(key: Key<'_>) -> String {
    match key {
        Key::Provider(p) => format!("providerAccountId {p}"),
        Key::Arcadia(a) => format!("accountId {a}"),
    }
}

/// Sorted view of the accounts for comparisons (properties are already a sorted map).
pub fn by_provider_id(accounts: &[Account]) -> BTreeMap<String, Account> {
    accounts
        .iter()
        .map(|a| {
            (
                a.provider_account_id
                    .clone()
                    .or_else(|| a.account_id.clone())
                    .unwrap_or_default(),
                a.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with(pid: &str) -> Store {
        let mut s = Store::default();
        s.upsert(
            Account {
                provider_account_id: Some(pid.into()),
                account_name: Some("A".into()),
                ..Account::default()
            },
            "u-1".into(),
        )
        .unwrap();
        s
    }

    #[test]
    fn upsert_adds_then_updates() {
        let mut s = store_with("p1");
        let again = s
            .upsert(
                Account {
                    provider_account_id: Some("p1".into()),
                    account_name: Some("B".into()),
                    ..Account::default()
                },
                "u-2".into(),
            )
            .unwrap();
        assert_eq!(again.account_id.as_deref(), Some("u-1"));
        assert_eq!(again.account_name.as_deref(), Some("B"));
        assert_eq!(again.status.as_deref(), Some("ACTIVE"));
        assert_eq!(s.all().len(), 1);
    }

    #[test]
    fn set_property_routes_keys() {
        let mut s = store_with("p1");
        let k = Key::Provider("p1");
        s.set_property(k, &json!({"keyName":"buildingArea","dataValue":"2000"}))
            .unwrap();
        s.set_property(k, &json!({"keyName":"status","dataValue":"INACTIVE"}))
            .unwrap();
        s.set_property(k, &json!({"keyName":"zip","dataValue":"94105"}))
            .unwrap();
        s.set_property(
            k,
            &json!({"keyName":"masterTariffId","dataValue":"522","accuracy":100}),
        )
        .unwrap();
        // Same effective date: replaced, not appended (replays change nothing).
        s.set_property(
            k,
            &json!({"keyName":"masterTariffId","dataValue":"523","accuracy":100}),
        )
        .unwrap();
        let a = s.get(k).unwrap();
        assert_eq!(a.property("buildingArea"), Some("2000"));
        assert_eq!(a.status.as_deref(), Some("INACTIVE"));
        assert_eq!(a.address.as_ref().unwrap().zip.as_deref(), Some("94105"));
        assert_eq!(a.tariffs.len(), 1);
        assert_eq!(a.tariffs[0].master_tariff_id, 523);

        let e = s
            .set_property(k, &json!({"keyName":"status","dataValue":"GONE"}))
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = s.set_property(k, &json!({"dataValue":"x"})).unwrap_err();
        assert!(e.error.describe().starts_with("NotNull"), "{e:?}");
        let e = s
            .set_property(
                Key::Provider("nope"),
                &json!({"keyName":"status","dataValue":"INACTIVE"}),
            )
            .unwrap_err();
        assert_eq!(e.status, 404);
    }

    #[test]
    fn search_is_a_substring_match_on_chosen_fields() {
        let mut s = Store::default();
        for (pid, org) in [("a", "12"), ("b", "123"), ("c", "9")] {
            s.upsert(
                Account {
                    provider_account_id: Some(pid.into()),
                    customer_org_id: Some(org.into()),
                    ..Account::default()
                },
                format!("u-{pid}"),
            )
            .unwrap();
        }
        let (n, page) = s.search(Some("12"), Some("customerOrgId"), 0, 1);
        assert_eq!(n, 2);
        assert_eq!(page.len(), 1);
        let (n, _) = s.search(None, None, 0, 10);
        assert_eq!(n, 3);
    }
}
