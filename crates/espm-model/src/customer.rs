//! `GET /customer/{id}` and the custom-field reads.

use serde::{Deserialize, Serialize};

use crate::pending::{AccountInfo, CustomField};

/// `<customer>` (`xs:all`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Username: only available here, which is why events are enriched from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Include test properties in graphics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_test_properties_in_graphics: Option<bool>,
    /// Canadian e-mail preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_preference_canadian_account: Option<bool>,
    /// Billboard metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billboard_metric: Option<String>,
    /// `en_US`, `fr_CA`, `es_US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_preference: Option<String>,
    /// Contact details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_info: Option<AccountInfo>,
}

impl crate::PmDocument for Customer {
    const ROOT: &'static str = "customer";
}

/// `<customFieldList>` as a whole document (`GET /account|property|meter/{id}/customFieldList`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldValues {
    /// The fields.
    #[serde(rename = "customField", default)]
    pub fields: Vec<CustomField>,
}

impl crate::PmDocument for CustomFieldValues {
    const ROOT: &'static str = "customFieldList";
}

/// Whose custom field values PM's `GET /account|property|meter/{id}/customFieldList` reads: a
/// connection's (the customer's account), a property share's or a meter share's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomFieldTarget {
    /// `GET /account/{id}/customFieldList`.
    Account(i64),
    /// `GET /property/{id}/customFieldList`.
    Property(i64),
    /// `GET /meter/{id}/customFieldList`.
    Meter(i64),
}
