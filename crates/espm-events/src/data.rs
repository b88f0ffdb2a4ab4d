//! The `data` payload of every event type, as Rust types: serde builds `data` from them and
//! schemars generates the published JSON Schemas from them, so the two cannot drift apart.
//!
//! Field names are PM's own (camelCase). Ids are JSON integers (PM's `xs:long`). Timestamps are
//! normalised to RFC 3339 (offset preserved; no offset means US Eastern) and kept as PM wrote
//! them in a `...Raw` sibling, because a consumer may need the exact text for reconciliation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `data` of the notification events (`share.revoked`, `share.updated`, `connection.terminated`,
/// `property.transferred`, `notification.received`): every field of PM's `<notification>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationData {
    /// PM's code as sent: `UNSHARE`, `SHAREUPDATE`, `DISCONNECT`, `TRANSFERPROPERTY` or another.
    pub notification_type_code: String,
    /// PM's id of the notification.
    pub notification_id: i64,
    /// PM's human-readable text.
    pub description: String,
    /// The customer account concerned (TRANSFERPROPERTY: the new owner's). Who acted is
    /// `notificationCreatedBy`/`notificationCreatedByAccountId` (SHAREUPDATE: the editor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// That account's username (absent in older PM schema versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The property concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<i64>,
    /// The meter concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<i64>,
    /// When PM created it, RFC 3339 (absent when PM sent none or an unreadable value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub notification_created_date: Option<String>,
    /// `notificationCreatedDate` exactly as PM sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_date_raw: Option<String>,
    /// Username of who caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_by: Option<String>,
    /// Account id of who caused it (a string in PM's schema, kept as such).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_by_account_id: Option<String>,
    /// SHAREUPDATE only: the new access level, read from `description` (PM's notification has
    /// no field for it): `Read` or `Read Write` as the pending lists spell them, or PM's wording
    /// verbatim when it is neither. Absent when the description does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<String>,
    /// SHAREUPDATE only: the custom field values of the share, name -> value, re-read from PM
    /// (`GET /meter|property|account/{id}/customFieldList`, the most specific the notification
    /// names) when the event was emitted, so an edit of the values shows here. Absent when the
    /// read failed, timed out or was skipped (`enrichment` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<BTreeMap<String, String>>,
    /// SHAREUPDATE only: set when `customFields` is missing because its read failed (PM refused,
    /// did not answer within `customer_lookup_timeout`, or the body named more shares than are
    /// read at once): the event was emitted without it rather than delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

/// PM's `<address>` attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressData {
    /// Street line 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address1: Option<String>,
    /// Street line 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// County.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// State (US) or province (CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// State or region outside US/CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_state: Option<String>,
    /// Country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// PM's `<accountInfo>`: the requesting customer's contact basics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfoData {
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
    pub address: Option<AddressData>,
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

/// PM's audit block (`connectionAudit`, `shareAudit`): who sent the request, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditData {
    /// Creator's username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Creator's account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_account_id: Option<i64>,
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub created_date: Option<String>,
    /// `createdDate` exactly as PM sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_raw: Option<String>,
    /// Last updater's username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
    /// Last updater's account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by_account_id: Option<i64>,
    /// Last update time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_updated_date: Option<String>,
    /// `lastUpdatedDate` exactly as PM sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_raw: Option<String>,
}

/// PM's `<grossFloorArea>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrossFloorAreaData {
    /// `Square Feet` or `Square Meters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Whether the value is temporary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<bool>,
    /// PM's `default` attribute (e.g. `N/A`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// PM's `<propertyInfo>`: the property basics PM sends with a share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyInfoData {
    /// Property name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<AddressData>,
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
    pub gross_floor_area: Option<GrossFloorAreaData>,
    /// Occupancy percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupancy_percentage: Option<i32>,
    /// Federal property flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_federal_property: Option<bool>,
    /// Free-text notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// PM's `<meterInfo>`: the meter basics PM sends with a meter share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterInfoData {
    /// Meter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Meter type, e.g. `Electric`.
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
    /// First bill date (`xs:date`, as PM sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bill_date: Option<String>,
    /// In use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
    /// Inactive since (`xs:date`, as PM sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_date: Option<String>,
}

/// Who a customer is in PM: the username (which PM's lists and notifications do not always
/// carry) and the organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerData {
    /// PM username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Organisation name, when the customer gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

impl CustomerData {
    /// What events carry of PM's `GET /customer/{id}` answer (blank values are absent).
    pub fn from_pm(c: &espm_model::Customer) -> Self {
        let blank = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Self {
            username: blank(&c.username),
            organization: c.account_info.as_ref().and_then(|i| blank(&i.organization)),
        }
    }
}

/// A property as PM's `GET /property/{id}` describes it: which property (and so which site) a
/// share is about, without relying on the basics PM lists with the share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyData {
    /// The property.
    pub property_id: i64,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<AddressData>,
    /// Its gross floor area (property share events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_floor_area: Option<GrossFloorAreaData>,
}

/// Why an event lacks enrichment it would normally carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Enrichment {
    /// A lookup (`customer`, `property`, or `customFields` of `share.updated`) failed or did not
    /// finish in time; the event went out without what it would have added.
    Unavailable,
}

impl Enrichment {
    /// `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Enrichment::Unavailable => "unavailable",
        }
    }
}

/// `data` of `connection.requested`: a customer asks to connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRequestedData {
    /// The requesting customer's account id.
    pub account_id: i64,
    /// Their username.
    pub username: String,
    /// Custom fields they submitted, name -> value.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// Contact details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_info: Option<AccountInfoData>,
    /// Who sent the request, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_audit: Option<AuditData>,
    /// The requesting customer's username and organisation, as on share events. Taken from this
    /// request itself (`username`, `accountInfo.organization`): PM answers `GET /customer/{id}`
    /// only for connected customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerData>,
}

/// `data` of `property_share.requested`: a customer shares a property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyShareRequestedData {
    /// The property.
    pub property_id: i64,
    /// The property data administrator's account (not necessarily the sender: see `shareAudit`).
    pub account_id: i64,
    /// That account's username.
    pub username: String,
    /// `Read`, `Read Write`, or another value PM adds, as written.
    pub access_level: String,
    /// Custom fields the customer submitted, name -> value.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// Property basics.
    #[serde(default)]
    pub property_info: PropertyInfoData,
    /// Who actually sent the share (differs from `accountId` for share-forward), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_audit: Option<AuditData>,
    /// The customer of `accountId` as PM's `GET /customer/{id}` knows them: username and
    /// organisation. Looked up when the event is emitted, cached in the journal for
    /// `accounts[].customer_cache_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerData>,
    /// The property as `GET /property/{id}` describes it: id, name, address and gross floor
    /// area. Looked up when the event is emitted and cached like `customer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<PropertyData>,
    /// Set when `customer` or `property` is missing because its lookup failed (PM refused or
    /// did not answer in time): the event was emitted without it rather than delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

/// `data` of `meter_share.requested`: a customer shares a meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterShareRequestedData {
    /// The meter.
    pub meter_id: i64,
    /// Its property (which may not be shared with you).
    pub property_id: i64,
    /// The owner's account.
    pub account_id: i64,
    /// That account's username.
    pub username: String,
    /// `Read`, `Read Write`, or another value PM adds, as written.
    pub access_level: String,
    /// Custom fields the customer submitted, name -> value.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// Property basics.
    #[serde(default)]
    pub property_info: PropertyInfoData,
    /// Meter basics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_info: Option<MeterInfoData>,
    /// Who sent the share, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_audit: Option<AuditData>,
    /// The customer of `accountId` as PM's `GET /customer/{id}` knows them: username and
    /// organisation. Looked up when the event is emitted, cached in the journal for
    /// `accounts[].customer_cache_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerData>,
    /// The meter's property as `GET /property/{id}` describes it: id, name and address (which
    /// site the meter belongs to). Looked up when the event is emitted and cached like
    /// `customer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<PropertyData>,
    /// Set when `customer` or `property` is missing because its lookup failed (PM refused or
    /// did not answer in time): the event was emitted without it rather than delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

/// How a pending request left the pending list, as far as the bridge can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Accepted (e.g. the connection or share now exists).
    Accepted,
    /// Rejected (by us or withdrawn by the customer).
    Rejected,
    /// It vanished and the bridge cannot tell why.
    Unknown,
}

impl Resolution {
    /// `accepted`, `rejected` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Accepted => "accepted",
            Resolution::Rejected => "rejected",
            Resolution::Unknown => "unknown",
        }
    }
}

/// The command through which the bridge answered a pending request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnsweredByData {
    /// The command's id (the `causationid` of its `command.completed` event).
    pub command_id: String,
    /// Who asked for it: the API token's name, a command event's source, `cli`, a policy rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
}

/// `data` of `connection.resolved`: the request as it was last seen, plus how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionResolvedData {
    /// The request as last seen pending.
    #[serde(flatten)]
    pub request: ConnectionRequestedData,
    /// How it ended.
    pub resolution: Resolution,
    /// When the bridge saw it gone, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub observed_at: String,
    /// Who answered, when the bridge did (a command through the API, a command topic, the CLI
    /// or a policy); absent when the request was answered elsewhere or withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredByData>,
}

/// `data` of `property_share.resolved`: the share as it was last seen, plus how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyShareResolvedData {
    /// The share as last seen pending.
    #[serde(flatten)]
    pub request: PropertyShareRequestedData,
    /// How it ended.
    pub resolution: Resolution,
    /// When the bridge saw it gone, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub observed_at: String,
    /// Who answered, when the bridge did (a command through the API, a command topic, the CLI
    /// or a policy); absent when the request was answered elsewhere or withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredByData>,
}

/// `data` of `meter_share.resolved`: the share as it was last seen, plus how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterShareResolvedData {
    /// The share as last seen pending.
    #[serde(flatten)]
    pub request: MeterShareRequestedData,
    /// How it ended.
    pub resolution: Resolution,
    /// When the bridge saw it gone, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub observed_at: String,
    /// Who answered, when the bridge did (a command through the API, a command topic, the CLI
    /// or a policy); absent when the request was answered elsewhere or withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredByData>,
}

/// `data` of `bridge.body_quarantined`: a PM body (or one `<notification>` of it) the bridge could
/// not parse. The raw bytes stay in the journal under `rawId` for inspection and
/// `espm-bridge journal reprocess`. Identical bytes are stored and announced once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BodyQuarantinedData {
    /// The PM endpoint the body came from, e.g. `/notification/list`.
    pub endpoint: String,
    /// The journal's id of the quarantined bytes.
    pub raw_id: i64,
    /// SHA-256 of the quarantined bytes, lowercase hex.
    pub sha256: String,
    /// For one bad `<notification>` cut out of a list whose other notifications were delivered:
    /// the journal id of the whole body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment_of: Option<i64>,
    /// Why it could not be parsed.
    pub error: String,
    /// When the body was received, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub received_at: String,
}

/// What a command asked of PM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// Accept or reject a pending connection, property share or meter share.
    Answer,
    /// Disconnect from a customer.
    Disconnect,
    /// Stop receiving a property's share.
    UnshareProperty,
    /// Stop receiving a meter's share.
    UnshareMeter,
    /// Create a customer account (PM connects it to you).
    CreateCustomer,
}

impl CommandAction {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Answer => "answer",
            CommandAction::Disconnect => "disconnect",
            CommandAction::UnshareProperty => "unshare_property",
            CommandAction::UnshareMeter => "unshare_meter",
            CommandAction::CreateCustomer => "create_customer",
        }
    }
}

/// How a command that completed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// PM did what was asked.
    Done,
    /// It was already so: the request was no longer pending, the customer no longer connected,
    /// the share already gone, the customer already created by an earlier attempt.
    NothingToDo,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandErrorData {
    /// The RFC 9457 problem type URI (the command API answers with the same).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The problem's title.
    pub title: String,
    /// The HTTP status the command API gives it.
    pub status: u16,
    /// What went wrong, in words.
    pub detail: String,
    /// PM's HTTP status, when PM answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm_status: Option<u16>,
    /// PM's own error messages (`errorNumber: errorDescription`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pm_errors: Vec<String>,
    /// Whether the same command may succeed if sent again later (PM busy or unreachable).
    pub retryable: bool,
}

/// `data` of `command.completed` and `command.failed`: what was asked, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResultData {
    /// The command's id (also the event's `causationid`).
    pub command_id: String,
    /// What was asked; absent only for a command too malformed to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CommandAction>,
    /// What it acted on, as the command named it (never a password).
    pub target: BTreeMap<String, serde_json::Value>,
    /// The customer account concerned, when the command names one (a connection answer, a
    /// disconnect, a created customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// Who asked: the API token's name, the topic or subject, `cli`, a policy rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Which door it came in by: `api`, `kafka`, `nats`, `cli`, `policy`.
    pub origin: String,
    /// How a completed command ended (absent when it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CommandOutcome>,
    /// Why it failed (absent when it completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandErrorData>,
    /// PM calls made for it.
    pub attempts: u32,
    /// When it finished, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: String,
}

/// Accept or reject, as a policy decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAnswer {
    /// Accept the request.
    Accept,
    /// Reject the request.
    Reject,
}

impl PolicyAnswer {
    /// `accept` or `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAnswer::Accept => "accept",
            PolicyAnswer::Reject => "reject",
        }
    }
}

/// What decided: a rule, the decision webhook, or PM's coupling of another answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// A rule's own `accept` or `reject`.
    Rule,
    /// The decision webhook, asked by a rule's `ask`.
    Webhook,
    /// PM answers it along with another answer (accepting a meter share accepts its property
    /// share; accepting a share accepts its owner's connection; rejecting a connection rejects
    /// that owner's pending shares). Never sent to PM as a call of its own.
    Implied,
}

impl PolicySource {
    /// `rule`, `webhook` or `implied`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Rule => "rule",
            PolicySource::Webhook => "webhook",
            PolicySource::Implied => "implied",
        }
    }
}

/// The rule (and, for `ask`, the webhook) behind a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecidedBy {
    /// `rule`, `webhook` or `implied`.
    pub source: PolicySource,
    /// The 0-based position of the matching rule in `accounts[].policy.rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<u32>,
    /// The matching rule's `name`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

/// The answer another answer implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyImpliedBy {
    /// The pending list of the request whose answer implies this one.
    pub kind: crate::PendingKind,
    /// That request's id.
    pub request_id: i64,
    /// The command that answered it.
    pub command_id: String,
}

/// `data` of `policy.decided`: an auto-accept policy decided a pending request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecidedData {
    /// The pending list: `connection`, `property_share` or `meter_share`.
    pub kind: crate::PendingKind,
    /// The request's id on it (account, property or meter id).
    pub request_id: i64,
    /// The customer account that asks (the property data administrator's for shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// Accept or reject.
    pub decision: PolicyAnswer,
    /// The note for the customer, when the decision has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What decided.
    pub decided_by: PolicyDecidedBy,
    /// Set when PM answers this request along with another answer: no call of its own is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_by: Option<PolicyImpliedBy>,
    /// The command id of the answer (`policy:{account}:{kind}:{requestId}:{digest}`): the
    /// `causationid` of its `command.completed` / `command.failed` event. For an implied answer,
    /// the id the answer would have had; no command runs under it.
    pub command_id: String,
    /// Whether the policy runs in dry-run mode: decided and announced, but not sent to PM.
    pub dry_run: bool,
    /// When it was decided, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub decided_at: String,
}
