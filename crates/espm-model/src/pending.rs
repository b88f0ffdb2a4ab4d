//! `GET /connect/account/pending/list`, `/share/property/pending/list`, `/share/meter/pending/list`.

use serde::{Deserialize, Serialize};

/// `<pendingList>`: one page of pending connection or share requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingList {
    /// Pending connection requests (account list only).
    #[serde(rename = "account", default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<PendingAccount>,
    /// Pending property shares (property list only).
    #[serde(rename = "property", default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<PendingProperty>,
    /// Pending meter shares (meter list only).
    #[serde(rename = "meter", default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<PendingMeter>,
    /// Pagination links; a `next page` link means there is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
}

impl crate::PmDocument for PendingList {
    const ROOT: &'static str = "pendingList";
}

impl PendingList {
    /// The `next page` link, relative to the base URI, if PM sent one.
    pub fn next_page(&self) -> Option<&str> {
        self.links.as_ref()?.link.iter().find_map(|l| {
            let is_next = l
                .link_description
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case("next page"));
            if is_next {
                l.link.as_deref()
            } else {
                None
            }
        })
    }

    /// How many entries of any kind the page holds.
    pub fn len(&self) -> usize {
        self.accounts.len() + self.properties.len() + self.meters.len()
    }

    /// Whether the page holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `<links>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The links.
    #[serde(default)]
    pub link: Vec<Link>,
}

/// `<link>`: all attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// `id` (customer list links carry the customer id).
    #[serde(rename = "@id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `linkDescription`, e.g. `next page`.
    #[serde(
        rename = "@linkDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub link_description: Option<String>,
    /// `link`: a path relative to the base URI.
    #[serde(rename = "@link", default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `httpMethod`.
    #[serde(
        rename = "@httpMethod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_method: Option<String>,
    /// `hint` (e.g. an organisation name); may be missing.
    #[serde(rename = "@hint", default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `<customFieldList>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldList {
    /// The fields, in PM's order.
    #[serde(rename = "customField", default)]
    pub fields: Vec<CustomField>,
}

impl CustomFieldList {
    /// The fields as a name -> value map (a later duplicate name wins).
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect()
    }
}

/// `<customField name="...">value</customField>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    /// The field's name as the provider defined it.
    #[serde(rename = "@name", default)]
    pub name: String,
    /// What the customer entered.
    #[serde(rename = "$text", default)]
    pub value: String,
}

/// `Read` or `Read Write`; anything else PM might add is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AccessLevel {
    /// `Read`.
    Read,
    /// `Read Write`.
    ReadWrite,
    /// Another value, kept verbatim.
    Other(String),
}

impl From<String> for AccessLevel {
    fn from(s: String) -> Self {
        match s.trim() {
            "Read" => AccessLevel::Read,
            "Read Write" => AccessLevel::ReadWrite,
            _ => AccessLevel::Other(s),
        }
    }
}

impl From<AccessLevel> for String {
    fn from(a: AccessLevel) -> Self {
        a.as_str().to_string()
    }
}

impl AccessLevel {
    /// PM's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            AccessLevel::Read => "Read",
            AccessLevel::ReadWrite => "Read Write",
            AccessLevel::Other(s) => s,
        }
    }
}

/// `<address .../>`: all attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street line 1 (required by the XSD).
    #[serde(rename = "@address1", default)]
    pub address1: String,
    /// Street line 2.
    #[serde(rename = "@address2", default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    /// City (required by the XSD).
    #[serde(rename = "@city", default)]
    pub city: String,
    /// County.
    #[serde(rename = "@county", default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// Postal code.
    #[serde(
        rename = "@postalCode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub postal_code: Option<String>,
    /// US state / Canadian province code.
    #[serde(rename = "@state", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Free-text state outside the US and Canada.
    #[serde(
        rename = "@otherState",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub other_state: Option<String>,
    /// Country code.
    #[serde(rename = "@country", default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `<accountInfo>` (`xs:all`: any order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Organisation name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

/// PM's `logType`: who created and last updated something, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Creator's username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Creator's account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_account_id: Option<i64>,
    /// Creation time as PM wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// Last updater's username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
    /// Last updater's account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by_account_id: Option<i64>,
    /// Last update time as PM wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date: Option<String>,
}

/// `<pendingList><account>`: a pending connection request. Field order is the XSD's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAccount {
    /// The requesting customer's account id.
    pub account_id: i64,
    /// Their username.
    #[serde(default)]
    pub username: String,
    /// Custom fields they submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_field_list: Option<CustomFieldList>,
    /// Contact details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_info: Option<AccountInfo>,
    /// Who sent the request, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_audit: Option<Audit>,
}

/// `<grossFloorArea units=".." temporary=".." default=".."><value>..</value></grossFloorArea>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrossFloorArea {
    /// `Square Feet` or `Square Meters`.
    #[serde(rename = "@units", default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Whether the value is temporary.
    #[serde(
        rename = "@temporary",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub temporary: Option<bool>,
    /// `default` attribute (e.g. `N/A`).
    #[serde(rename = "@default", default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `<propertyInfo>` (PM's `propertyType`, `xs:all`): the basics PM sends with a share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyInfo {
    /// Property name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Number of buildings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_buildings: Option<i32>,
    /// `Existing`, `Project`, `Test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub construction_status: Option<String>,
    /// Primary function, e.g. `Office`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_function: Option<String>,
    /// Year built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year_built: Option<i32>,
    /// Gross floor area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_floor_area: Option<GrossFloorArea>,
    /// Occupancy percentage (required by the XSD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupancy_percentage: Option<i32>,
    /// Federal property flag (required by the XSD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_federal_property: Option<bool>,
    /// Free-text notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Your access to the property (`GET /property/{id}` only; share lists carry it beside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<AccessLevel>,
    /// Who created and updated the property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// `<pendingList><property>`: a pending property share. Field order is the XSD's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingProperty {
    /// The property.
    pub property_id: i64,
    /// Custom fields the customer submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_field_list: Option<CustomFieldList>,
    /// Requested access.
    pub access_level: AccessLevel,
    /// The property data administrator's account (not necessarily the sender).
    pub account_id: i64,
    /// That account's username.
    #[serde(default)]
    pub username: String,
    /// Property basics.
    #[serde(default)]
    pub property_info: PropertyInfo,
    /// Who actually sent the share (differs from `accountId` for share-forward), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_audit: Option<Audit>,
}

/// `<meterInfo>` (PM's `meterType`, `xs:all`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterInfo {
    /// Meter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Meter type, e.g. `Electric`, `Natural Gas`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub meter_type: Option<String>,
    /// Meter name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Metered (vs estimated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<bool>,
    /// Unit, e.g. `kWh (thousand Watt-hours)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_measure: Option<String>,
    /// First bill date (`xs:date`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bill_date: Option<String>,
    /// In use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
    /// Inactive since (`xs:date`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_date: Option<String>,
}

/// `<pendingList><meter>`: a pending meter share. Field order is the XSD's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingMeter {
    /// The meter.
    pub meter_id: i64,
    /// The property it belongs to (which may not be shared with you).
    pub property_id: i64,
    /// The owner's account.
    pub account_id: i64,
    /// That account's username.
    #[serde(default)]
    pub username: String,
    /// Custom fields the customer submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_field_list: Option<CustomFieldList>,
    /// Requested access.
    pub access_level: AccessLevel,
    /// Property basics.
    #[serde(default)]
    pub property_info: PropertyInfo,
    /// Meter basics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_info: Option<MeterInfo>,
    /// Who sent the share, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_audit: Option<Audit>,
}
