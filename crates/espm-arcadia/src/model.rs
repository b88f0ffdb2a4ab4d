//! Arcadia's JSON shapes: the response envelope, `Account`, `PropertyData` and errors.
//!
//! Field names are Arcadia's own (camelCase). Reading is lenient (unknown fields are ignored,
//! most fields are optional); writing omits what is not set, so a request carries only what the
//! caller means to change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every Arcadia answer: `status`, `count`, `type` and `results`, which is always an array (errors
/// travel inside it too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// `success` or `error`.
    pub status: String,
    /// Number of results (for lists: of all matches, not only this page).
    pub count: u64,
    /// What `results` holds: `Account`, `PropertyData`, `Error`...
    #[serde(rename = "type")]
    pub result_type: String,
    /// Paged lists: index of the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u64>,
    /// Paged lists: the page size asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u64>,
    /// The results.
    #[serde(default = "Vec::new")]
    pub results: Vec<T>,
}

impl<T> Envelope<T> {
    /// A `success` envelope around `results`.
    pub fn success(result_type: &str, results: Vec<T>) -> Self {
        Self {
            status: "success".into(),
            count: results.len() as u64,
            result_type: result_type.into(),
            page_start: None,
            page_count: None,
            results,
        }
    }
}

impl Envelope<ApiError> {
    /// An `error` envelope around `errors`.
    pub fn errors(errors: Vec<ApiError>) -> Self {
        Envelope::success("Error", errors).with_status("error")
    }
}

impl<T> Envelope<T> {
    fn with_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }
}

/// One error inside an `error` envelope's `results`: usually an object, sometimes a bare string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiError {
    /// `{code, message, objectName, propertyName?, propertyValue?}`.
    Detailed(ErrorDetail),
    /// A bare message.
    Text(String),
}

impl ApiError {
    /// A detailed error.
    pub fn new(code: &str, message: impl Into<String>, object_name: &str) -> Self {
        ApiError::Detailed(ErrorDetail {
            code: code.into(),
            message: message.into(),
            object_name: Some(object_name.into()),
            property_name: None,
            property_value: None,
        })
    }

    /// The same error naming the offending property.
    pub fn on_property(mut self, name: &str, value: Option<&str>) -> Self {
        if let ApiError::Detailed(d) = &mut self {
            d.property_name = Some(name.into());
            d.property_value = value.map(str::to_string);
        }
        self
    }

    /// One line for logs and dead-letter reasons, e.g. `InvalidArgument: ... (dataValue)`.
    pub fn describe(&self) -> String {
        match self {
            ApiError::Text(t) => t.clone(),
            ApiError::Detailed(d) => {
                let mut s = format!("{}: {}", d.code, d.message);
                if let Some(p) = &d.property_name {
                    s.push_str(&format!(" ({p})"));
                }
                s
            }
        }
    }
}

/// The object form of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// `NotNull`, `Unauthorized`, `ObjectNotFound`, `InvalidArgument`...
    pub code: String,
    /// Human-readable text.
    pub message: String,
    /// The object concerned, e.g. `Account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// The field concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// The offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
}

/// An account's postal address: either `addressString` or itemised fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// The whole address on one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_string: Option<String>,
    /// Street line 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address1: Option<String>,
    /// Street line 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// ZIP or postcode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    /// Country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One entry of an account's `properties` map, and the answer of Set Account Property.
///
/// `dataType` is always written (Arcadia answers `"dataType": null`); the optional fields only
/// when set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyData {
    /// The property's key, e.g. `buildingArea`.
    pub key_name: String,
    /// Arcadia's data type, when it reports one.
    #[serde(default)]
    pub data_type: Option<String>,
    /// The value, always a string.
    #[serde(default)]
    pub data_value: Option<String>,
    /// How sure the value is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<serde_json::Number>,
    /// Valid from (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_date_time: Option<String>,
    /// Valid until (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_date_time: Option<String>,
}

/// The body of Set Account Property: one field (a `properties` entry, a header field such as
/// `status`, an address field, or `masterTariffId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetProperty {
    /// Which field, e.g. `buildingArea`, `status`, `masterTariffId`.
    pub key_name: String,
    /// Its new value, as a string.
    pub data_value: String,
    /// How sure the value is (e.g. a tariff's likelihood, 0..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<serde_json::Number>,
    /// Valid from (ISO 8601; a tariff's effective date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_date_time: Option<String>,
    /// Valid until (ISO 8601; a tariff's end date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_date_time: Option<String>,
}

impl SetProperty {
    /// `{keyName, dataValue}`.
    pub fn new(key_name: impl Into<String>, data_value: impl Into<String>) -> Self {
        Self {
            key_name: key_name.into(),
            data_value: data_value.into(),
            accuracy: None,
            from_date_time: None,
            to_date_time: None,
        }
    }
}

/// A tariff on an account (`tariffs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountTariff {
    /// The tariff family.
    pub master_tariff_id: i64,
    /// Service, `ELECTRICITY` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// How likely the account is on this tariff (100 = confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_likelihood: Option<serde_json::Number>,
    /// Effective from.
    #[serde(default)]
    pub effective_date: Option<String>,
    /// Effective until.
    #[serde(default)]
    pub end_date: Option<String>,
}

/// An Arcadia account: one building a provider serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Arcadia's UUID (never sent on create: Arcadia makes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Our id, unique within our organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_account_id: Option<String>,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Groups accounts by customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_org_id: Option<String>,
    /// The customer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_org_name: Option<String>,
    /// Owner (a user of our organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `CUSTOMER`, `POTENTIAL`, `TARGET` or `ARCHETYPE`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<String>,
    /// `ACTIVE`, `INACTIVE` or `DELETED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Properties keyed by `keyName`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropertyData>,
    /// Tariffs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tariffs: Vec<AccountTariff>,
}

impl Account {
    /// The value of a `properties` entry.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key)?.data_value.as_deref()
    }
}

/// Account status values.
pub mod status {
    /// In use.
    pub const ACTIVE: &str = "ACTIVE";
    /// Kept, but no longer served.
    pub const INACTIVE: &str = "INACTIVE";
    /// Soft-deleted.
    pub const DELETED: &str = "DELETED";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_data_answer_has_null_data_type() {
        let p = PropertyData {
            key_name: "buildingArea".into(),
            data_value: Some("2000".into()),
            ..PropertyData::default()
        };
        let v = serde_json::to_value(Envelope::success("PropertyData", vec![p])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status":"success","count":1,"type":"PropertyData",
                "results":[{"keyName":"buildingArea","dataType":null,"dataValue":"2000"}]})
        );
    }

    #[test]
    fn errors_read_as_objects_or_strings() {
        let e: Envelope<ApiError> = serde_json::from_str(
            r#"{"status":"error","count":2,"type":"Error","results":[
                {"code":"NotNull","message":"may not be null","objectName":"PropertyData","propertyName":"keyName"},
                "Unauthorized"]}"#,
        )
        .unwrap();
        assert_eq!(
            e.results[0].describe(),
            "NotNull: may not be null (keyName)"
        );
        assert_eq!(e.results[1].describe(), "Unauthorized");
    }

    #[test]
    fn set_property_writes_only_what_is_set() {
        let v = serde_json::to_value(SetProperty::new("buildingArea", "2000")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"keyName":"buildingArea","dataValue":"2000"})
        );
    }
}
