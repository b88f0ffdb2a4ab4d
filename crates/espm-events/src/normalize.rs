//! PM documents to CloudEvents: notifications, pending-list diffs, quarantined bodies.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use espm_model::{
    AccountInfo, Address, Audit, CustomFieldList, CustomFieldTarget, DocumentError, MeterInfo,
    Notification, NotificationList, PendingAccount, PendingList, PendingMeter, PendingProperty,
    PropertyInfo,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::data::*;
use crate::types::*;
use crate::{CloudEvent, Data};

/// Namespace of the UUIDv5 event ids. Never change it: ids must stay stable across releases.
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_0f4e_8b7a_4d1e_9c39_2a5e_7d3b_9f10);

/// Where an event comes from: the PM environment and the configured provider account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `live`, `test` or `sim`.
    pub environment: String,
    /// The configured provider account name (not a PM id).
    pub account: String,
}

impl Origin {
    /// An origin from its two parts.
    pub fn new(environment: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            account: account.into(),
        }
    }

    /// The CloudEvents `source`: `urn:espm:{environment}:{account}`.
    pub fn source(&self) -> String {
        // Concatenated, not `format!`ed, here and below: once per event of a burst.
        ["urn:espm:", &self.environment, ":", &self.account].concat()
    }

    /// The deterministic event id: UUIDv5 over `{environment}/{account}/{name}`.
    pub fn event_id(&self, name: &str) -> String {
        let full = [&self.environment, "/", &self.account, "/", name].concat();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        Uuid::new_v5(&ID_NAMESPACE, full.as_bytes())
            .hyphenated()
            .encode_lower(&mut text)
            .to_owned()
    }

    fn event(
        &self,
        ty: &str,
        id_name: &str,
        subject: Option<String>,
        time: Option<String>,
        data: Data,
    ) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".to_string(),
            id: self.event_id(id_name),
            source: self.source(),
            ty: ty.to_string(),
            subject,
            time,
            datacontenttype: "application/json".to_string(),
            dataschema: dataschema_uri(ty),
            espmenvironment: self.environment.clone(),
            espmaccount: self.account.clone(),
            causationid: None,
            correlationid: None,
            data,
        }
    }
}

/// A PM timestamp as RFC 3339 with its offset kept (no offset = US Eastern), all digits kept.
///
/// `None` when the text is not a PM timestamp or its year cannot be written in RFC 3339
/// (outside 0000..=9999). An offset with seconds (New York's pre-1883 local mean time) cannot
/// be written in RFC 3339 either, so such an instant is written in UTC instead of being shifted.
pub fn normalize_pm_time(raw: &str) -> Option<String> {
    let t = espm_model::parse_pm_datetime(raw).ok()?;
    if !(0..=9999).contains(&t.year()) || !(0..=9999).contains(&t.naive_utc().year()) {
        return None;
    }
    if t.offset().local_minus_utc() % 60 != 0 {
        return Some(t.to_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

fn utc_rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn to_value<T: Serialize>(data: &T) -> Value {
    // Our data types are plain structs of strings, numbers, maps and non-NaN floats (NaN is
    // filtered out when they are built), so serialising cannot fail; Null would flag a bug.
    serde_json::to_value(data).unwrap_or(Value::Null)
}

/// `property/{p}/meter/{m}`, `property/{p}`, `meter/{m}` or `account/{a}`: the most specific.
pub fn subject_for(
    account_id: Option<i64>,
    property_id: Option<i64>,
    meter_id: Option<i64>,
) -> Option<String> {
    match (property_id, meter_id, account_id) {
        (Some(p), Some(m), _) => Some(format!("property/{p}/meter/{m}")),
        (Some(p), None, _) => Some(format!("property/{p}")),
        (None, Some(m), _) => Some(format!("meter/{m}")),
        (None, None, Some(a)) => Some(format!("account/{a}")),
        (None, None, None) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// The `data` of a notification event.
pub fn notification_data(n: &Notification) -> NotificationData {
    NotificationData {
        notification_type_code: n.notification_type_code.clone(),
        notification_id: n.notification_id,
        description: n.description.clone(),
        account_id: n.account_id,
        username: n.username.clone(),
        property_id: n.property_id,
        meter_id: n.meter_id,
        notification_created_date: n
            .notification_created_date
            .as_deref()
            .and_then(normalize_pm_time),
        notification_created_date_raw: n.notification_created_date.clone(),
        notification_created_by: n.notification_created_by.clone(),
        notification_created_by_account_id: n.notification_created_by_account_id.clone(),
        access_level: notification_event_type(&n.notification_type_code)
            .eq(SHARE_UPDATED)
            .then(|| share_update_access_level(&n.description))
            .flatten(),
        custom_fields: None,
        enrichment: None,
    }
}

/// Whose custom field values a SHAREUPDATE's `share.updated` event carries: the most specific
/// thing the notification names (its meter, else its property, else the customer's account).
/// `None` for every other notification, and for a SHAREUPDATE that names nothing.
pub fn share_update_target(n: &Notification) -> Option<CustomFieldTarget> {
    if notification_event_type(&n.notification_type_code) != SHARE_UPDATED {
        return None;
    }
    match (n.meter_id, n.property_id, n.account_id) {
        (Some(m), _, _) => Some(CustomFieldTarget::Meter(m)),
        (None, Some(p), _) => Some(CustomFieldTarget::Property(p)),
        (None, None, Some(a)) => Some(CustomFieldTarget::Account(a)),
        (None, None, None) => None,
    }
}

/// The custom field values re-read for the SHAREUPDATEs of one PM response, by target (see
/// [`share_update_target`]); a target missing from the map could not be read.
pub type CustomFieldsByTarget = BTreeMap<CustomFieldTarget, BTreeMap<String, String>>;

/// The new access level a SHAREUPDATE's description names, e.g. `Harbor Office - Access level
/// revised to Exchange Data - Read Only by Sam Patel.` gives `Read`. PM's labels map to the
/// pending lists' spelling; another label is kept verbatim.
pub fn share_update_access_level(description: &str) -> Option<String> {
    const MARKER: &str = "access level revised to ";
    // ASCII lowercasing keeps byte offsets, so they index the original text too.
    let lower = description.to_ascii_lowercase();
    let start = lower.rfind(MARKER)? + MARKER.len();
    let rest = &description[start..];
    let end = rest.to_ascii_lowercase().find(" by ").unwrap_or(rest.len());
    let label = rest[..end].trim().trim_end_matches('.').trim();
    if label.is_empty() {
        return None;
    }
    let level = match label.to_ascii_lowercase().as_str() {
        "exchange data - read only" | "read only" | "read" => "Read",
        "exchange data - full access" | "full access" | "read write" => "Read Write",
        _ => label,
    };
    Some(level.to_string())
}

/// One PM notification as an event. Every code yields an event; unknown codes become
/// `notification.received` carrying the code. The id depends only on the origin and PM's
/// notification id, so a re-read notification gets the same id.
pub fn notification_event(origin: &Origin, n: &Notification) -> CloudEvent {
    notification_event_with(origin, n, notification_data(n))
}

/// [`notification_event`] with its `data` built by the caller from [`notification_data`].
fn notification_event_with(
    origin: &Origin,
    n: &Notification,
    data: NotificationData,
) -> CloudEvent {
    let time = data.notification_created_date.clone();
    origin.event(
        notification_event_type(&n.notification_type_code),
        &format!("notification/{}", n.notification_id),
        subject_for(n.account_id, n.property_id, n.meter_id),
        time,
        Data::of(&data),
    )
}

/// The most recent DISCONNECTs (distinct accounts) a [`NotificationCorrelator`] remembers.
pub const CORRELATED_DISCONNECTS: usize = 10_000;

/// Normalises the notifications of one PM response in order, grouping those of one action:
/// a DISCONNECT and the UNSHAREs PM sends with it (same `accountId`; same
/// `notificationCreatedByAccountId` where both say) get the `correlationid` extension, the
/// DISCONNECT event's `id`. Pure and deterministic: the same response gives the same events,
/// and event ids are those of [`notification_event`]. UNSHAREs listed before their DISCONNECT
/// (PM creates the DISCONNECT first) are not grouped, nor are UNSHAREs more than
/// [`CORRELATED_DISCONNECTS`] DISCONNECTs of other accounts after their own: PM lists them
/// together, and a body of a million notifications must not grow the process.
///
/// With [`NotificationCorrelator::with_custom_fields`], `share.updated` events also get the
/// custom field values the caller re-read from PM (or `enrichment: "unavailable"`).
#[derive(Debug, Clone, Default)]
pub struct NotificationCorrelator {
    /// accountId -> (its DISCONNECT's notificationCreatedByAccountId, correlation id).
    disconnects: BTreeMap<i64, (Option<String>, String)>,
    /// The accounts of `disconnects`, oldest first, to forget the oldest past the bound.
    disconnect_order: std::collections::VecDeque<i64>,
    /// The custom field values read for this response's SHAREUPDATEs; `None`: not read at all
    /// (the events carry neither `customFields` nor the flag).
    custom_fields: Option<CustomFieldsByTarget>,
}

impl NotificationCorrelator {
    /// A correlator for a new response.
    pub fn new() -> Self {
        Self::default()
    }

    /// `share.updated` events get `customFields` from `fields` (by [`share_update_target`]);
    /// one whose target is missing from it is flagged `enrichment: "unavailable"` instead (see
    /// [`crate::enrich_custom_fields`]). Ids stay those of [`notification_event`].
    pub fn with_custom_fields(mut self, fields: CustomFieldsByTarget) -> Self {
        self.custom_fields = Some(fields);
        self
    }

    /// [`NotificationCorrelator::with_custom_fields`] for a response read in parts: the values
    /// read for one part join those of the parts before it.
    pub fn add_custom_fields(&mut self, fields: CustomFieldsByTarget) {
        self.custom_fields
            .get_or_insert_with(Default::default)
            .extend(fields);
    }

    /// The event of the next notification of the response.
    pub fn event(&mut self, origin: &Origin, n: &Notification) -> CloudEvent {
        let mut data = notification_data(n);
        if let (Some(fields), Some(target)) = (&self.custom_fields, share_update_target(n)) {
            // What `crate::enrich_custom_fields` does to an event's `data`, set before it is
            // encoded (not decoded, edited and encoded again: a quarter of a burst's events).
            match fields.get(&target) {
                Some(values) => data.custom_fields = Some(values.clone()),
                None => data.enrichment = Some(Enrichment::Unavailable),
            }
        }
        let mut event = notification_event_with(origin, n, data);
        let by = n
            .notification_created_by_account_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        event.correlationid = match (event.ty.as_str(), n.account_id) {
            (CONNECTION_TERMINATED, Some(account)) => {
                if self
                    .disconnects
                    .insert(account, (by, event.id.clone()))
                    .is_none()
                {
                    self.disconnect_order.push_back(account);
                    if self.disconnect_order.len() > CORRELATED_DISCONNECTS {
                        if let Some(oldest) = self.disconnect_order.pop_front() {
                            self.disconnects.remove(&oldest);
                        }
                    }
                }
                Some(event.id.clone())
            }
            (SHARE_REVOKED, Some(account)) => self
                .disconnects
                .get(&account)
                .filter(|(d_by, _)| d_by.is_none() || by.is_none() || *d_by == by)
                .map(|(_, id)| id.clone()),
            _ => None,
        };
        event
    }
}

/// The events of one PM notification list, in order, grouped per [`NotificationCorrelator`].
pub fn notification_events(origin: &Origin, notifications: &[Notification]) -> Vec<CloudEvent> {
    let mut correlator = NotificationCorrelator::new();
    notifications
        .iter()
        .map(|n| correlator.event(origin, n))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pending requests

/// The three pending lists: the model's one statement of them.
pub use espm_model::PendingKind;

/// The `...requested` event type of a kind.
pub fn requested_type(kind: PendingKind) -> &'static str {
    match kind {
        PendingKind::Connection => CONNECTION_REQUESTED,
        PendingKind::PropertyShare => PROPERTY_SHARE_REQUESTED,
        PendingKind::MeterShare => METER_SHARE_REQUESTED,
    }
}

/// The `...resolved` event type of a kind.
pub fn resolved_type(kind: PendingKind) -> &'static str {
    match kind {
        PendingKind::Connection => CONNECTION_RESOLVED,
        PendingKind::PropertyShare => PROPERTY_SHARE_RESOLVED,
        PendingKind::MeterShare => METER_SHARE_RESOLVED,
    }
}

/// One entry of a pending list.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingEntry {
    /// A connection request.
    Connection(PendingAccount),
    /// A property share.
    PropertyShare(PendingProperty),
    /// A meter share.
    MeterShare(PendingMeter),
}

impl PendingEntry {
    /// Which list it belongs to.
    pub fn kind(&self) -> PendingKind {
        match self {
            PendingEntry::Connection(_) => PendingKind::Connection,
            PendingEntry::PropertyShare(_) => PendingKind::PropertyShare,
            PendingEntry::MeterShare(_) => PendingKind::MeterShare,
        }
    }

    /// Every entry of a pending list page, connections first, then properties, then meters.
    pub fn from_list(list: &PendingList) -> Vec<PendingEntry> {
        let mut out = Vec::with_capacity(list.len());
        out.extend(list.accounts.iter().cloned().map(PendingEntry::Connection));
        out.extend(
            list.properties
                .iter()
                .cloned()
                .map(PendingEntry::PropertyShare),
        );
        out.extend(list.meters.iter().cloned().map(PendingEntry::MeterShare));
        out
    }

    fn audit(&self) -> Option<&Audit> {
        match self {
            PendingEntry::Connection(a) => a.connection_audit.as_ref(),
            PendingEntry::PropertyShare(p) => p.share_audit.as_ref(),
            PendingEntry::MeterShare(m) => m.share_audit.as_ref(),
        }
    }

    fn subject(&self) -> Option<String> {
        match self {
            PendingEntry::Connection(a) => subject_for(Some(a.account_id), None, None),
            PendingEntry::PropertyShare(p) => subject_for(None, Some(p.property_id), None),
            PendingEntry::MeterShare(m) => subject_for(None, Some(m.property_id), Some(m.meter_id)),
        }
    }
}

/// The identity of a pending request: kind, ids and the audit `createdDate` (as an instant, so
/// a change of notation alone is not a new request). A request re-sent after a reject has a new
/// createdDate and so is a new request.
pub fn pending_key(entry: &PendingEntry) -> String {
    let created = entry
        .audit()
        .and_then(|a| a.created_date.as_deref())
        .map(|raw| match espm_model::parse_pm_datetime(raw) {
            Ok(t) => utc_rfc3339(t.with_timezone(&Utc)),
            Err(_) => raw.trim().to_string(),
        })
        .unwrap_or_else(|| "-".to_string());
    match entry {
        PendingEntry::Connection(a) => format!("connection/{}/{created}", a.account_id),
        PendingEntry::PropertyShare(p) => format!("property_share/{}/{created}", p.property_id),
        PendingEntry::MeterShare(m) => {
            format!("meter_share/{}/{}/{created}", m.property_id, m.meter_id)
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn address_data(a: &Address) -> AddressData {
    AddressData {
        address1: non_empty(&a.address1),
        address2: a.address2.clone(),
        city: non_empty(&a.city),
        county: a.county.clone(),
        postal_code: a.postal_code.clone(),
        state: a.state.clone(),
        other_state: a.other_state.clone(),
        country: a.country.clone(),
    }
}

fn account_info_data(a: &AccountInfo) -> AccountInfoData {
    AccountInfoData {
        first_name: a.first_name.clone(),
        last_name: a.last_name.clone(),
        email: a.email.clone(),
        address: a.address.as_ref().map(address_data),
        job_title: a.job_title.clone(),
        phone: a.phone.clone(),
        organization: a.organization.clone(),
    }
}

fn audit_data(a: &Audit) -> AuditData {
    AuditData {
        created_by: a.created_by.clone(),
        created_by_account_id: a.created_by_account_id,
        created_date: a.created_date.as_deref().and_then(normalize_pm_time),
        created_date_raw: a.created_date.clone(),
        last_updated_by: a.last_updated_by.clone(),
        last_updated_by_account_id: a.last_updated_by_account_id,
        last_updated_date: a.last_updated_date.as_deref().and_then(normalize_pm_time),
        last_updated_date_raw: a.last_updated_date.clone(),
    }
}

fn property_info_data(p: &PropertyInfo) -> PropertyInfoData {
    PropertyInfoData {
        name: p.name.clone(),
        address: p.address.as_ref().map(address_data),
        number_of_buildings: p.number_of_buildings,
        construction_status: p.construction_status.clone(),
        primary_function: p.primary_function.clone(),
        year_built: p.year_built,
        gross_floor_area: p.gross_floor_area.as_ref().map(|g| GrossFloorAreaData {
            units: g.units.clone(),
            temporary: g.temporary,
            default: g.default.clone(),
            // JSON has no NaN or infinity; such a value carries no area anyway.
            value: g.value.filter(|v| v.is_finite()),
        }),
        occupancy_percentage: p.occupancy_percentage,
        is_federal_property: p.is_federal_property,
        notes: p.notes.clone(),
    }
}

/// What a share event carries about property `id` from PM's `GET /property/{id}` answer.
pub fn property_data(id: i64, p: &PropertyInfo) -> PropertyData {
    let info = property_info_data(p);
    PropertyData {
        property_id: id,
        name: info.name.filter(|n| !n.trim().is_empty()),
        address: info.address,
        gross_floor_area: info.gross_floor_area,
    }
}

fn meter_info_data(m: &MeterInfo) -> MeterInfoData {
    MeterInfoData {
        id: m.id,
        meter_type: m.meter_type.clone(),
        name: m.name.clone(),
        metered: m.metered,
        unit_of_measure: m.unit_of_measure.clone(),
        first_bill_date: m.first_bill_date.clone(),
        in_use: m.in_use,
        inactive_date: m.inactive_date.clone(),
    }
}

fn custom_fields(c: &Option<CustomFieldList>) -> BTreeMap<String, String> {
    c.as_ref().map(CustomFieldList::to_map).unwrap_or_default()
}

/// The `data` of a connection request. Its `customer` comes from the request itself: PM lets a
/// provider read a customer only once connected.
pub fn connection_requested_data(a: &PendingAccount) -> ConnectionRequestedData {
    let mut data = ConnectionRequestedData {
        account_id: a.account_id,
        username: a.username.clone(),
        custom_fields: custom_fields(&a.custom_field_list),
        account_info: a.account_info.as_ref().map(account_info_data),
        connection_audit: a.connection_audit.as_ref().map(audit_data),
        customer: None,
    };
    data.customer = Some(connection_customer(&data));
    data
}

/// A connection request's customer: its own username and organisation.
fn connection_customer(d: &ConnectionRequestedData) -> CustomerData {
    CustomerData {
        username: non_empty(&d.username),
        organization: d.account_info.as_ref().and_then(|i| i.organization.clone()),
    }
}

/// The `data` of a property share request.
pub fn property_share_requested_data(p: &PendingProperty) -> PropertyShareRequestedData {
    PropertyShareRequestedData {
        property_id: p.property_id,
        account_id: p.account_id,
        username: p.username.clone(),
        access_level: p.access_level.as_str().to_string(),
        custom_fields: custom_fields(&p.custom_field_list),
        property_info: property_info_data(&p.property_info),
        share_audit: p.share_audit.as_ref().map(audit_data),
        customer: None,
        property: None,
        enrichment: None,
    }
}

/// The `data` of a meter share request.
pub fn meter_share_requested_data(m: &PendingMeter) -> MeterShareRequestedData {
    MeterShareRequestedData {
        meter_id: m.meter_id,
        property_id: m.property_id,
        account_id: m.account_id,
        username: m.username.clone(),
        access_level: m.access_level.as_str().to_string(),
        custom_fields: custom_fields(&m.custom_field_list),
        property_info: property_info_data(&m.property_info),
        meter_info: m.meter_info.as_ref().map(meter_info_data),
        share_audit: m.share_audit.as_ref().map(audit_data),
        customer: None,
        property: None,
        enrichment: None,
    }
}

/// What the journal stores per pending key: exactly the `requested` event's `data`, so that the
/// `resolved` event can carry the request as it was last seen even after PM forgot it.
pub fn pending_snapshot_value(entry: &PendingEntry) -> Value {
    match entry {
        PendingEntry::Connection(a) => to_value(&connection_requested_data(a)),
        PendingEntry::PropertyShare(p) => to_value(&property_share_requested_data(p)),
        PendingEntry::MeterShare(m) => to_value(&meter_share_requested_data(m)),
    }
}

/// The id name of one episode's event: the first episode keeps the plain key (ids stay what they
/// were before episodes existed), later ones add `#n`, so a request listed again after it was
/// resolved is a new event, not a duplicate a consumer would drop.
fn pending_id_name(kind: PendingKind, key: &str, episode: u32, what: &str) -> String {
    if episode <= 1 {
        format!("{}/{key}/{what}", kind.as_str())
    } else {
        format!("{}/{key}#{episode}/{what}", kind.as_str())
    }
}

/// The `requested` event of one pending entry (regardless of whether it was seen before), as its
/// first episode.
pub fn pending_requested_event(origin: &Origin, entry: &PendingEntry) -> CloudEvent {
    pending_requested_episode(origin, entry, 1)
}

/// The `requested` event of episode `episode` (1 the first time the key is listed).
pub fn pending_requested_episode(
    origin: &Origin,
    entry: &PendingEntry,
    episode: u32,
) -> CloudEvent {
    let kind = entry.kind();
    let key = pending_key(entry);
    let time = entry
        .audit()
        .and_then(|a| a.created_date.as_deref())
        .and_then(normalize_pm_time);
    origin.event(
        requested_type(kind),
        &pending_id_name(kind, &key, episode, "requested"),
        entry.subject(),
        time,
        pending_snapshot_value(entry).into(),
    )
}

/// Rebuild a typed request from a stored snapshot and add the resolution; a snapshot that does
/// not fit the type (written by another version) is passed through with the two fields added.
fn resolved_data<T, R>(
    snapshot: &Value,
    resolution: Resolution,
    observed_at: &str,
    wrap: impl FnOnce(T, Resolution, String) -> R,
) -> Value
where
    T: DeserializeOwned,
    R: Serialize,
{
    match serde_json::from_value::<T>(snapshot.clone()) {
        Ok(request) => to_value(&wrap(request, resolution, observed_at.to_string())),
        Err(_) => {
            let mut obj = match snapshot {
                Value::Object(m) => m.clone(),
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("snapshot".to_string(), other.clone());
                    m
                }
            };
            obj.insert("resolution".to_string(), Value::from(resolution.as_str()));
            obj.insert("observedAt".to_string(), Value::from(observed_at));
            Value::Object(obj)
        }
    }
}

fn snapshot_i64(snapshot: &Value, field: &str) -> Option<i64> {
    snapshot.get(field).and_then(Value::as_i64)
}

/// The `resolved` event of episode `episode` of a request whose stored snapshot is `snapshot`
/// under `key`.
pub fn pending_resolved_event(
    origin: &Origin,
    kind: PendingKind,
    key: &str,
    episode: u32,
    snapshot: &Value,
    resolution: Resolution,
    observed_at: DateTime<Utc>,
) -> CloudEvent {
    let observed = utc_rfc3339(observed_at);
    let data = match kind {
        PendingKind::Connection => resolved_data(
            snapshot,
            resolution,
            &observed,
            |mut request: ConnectionRequestedData, resolution, observed_at| {
                // A snapshot stored before connection events carried `customer`.
                if request.customer.is_none() {
                    request.customer = Some(connection_customer(&request));
                }
                ConnectionResolvedData {
                    request,
                    resolution,
                    observed_at,
                    answered_by: None,
                }
            },
        ),
        PendingKind::PropertyShare => resolved_data(
            snapshot,
            resolution,
            &observed,
            |request, resolution, observed_at| PropertyShareResolvedData {
                request,
                resolution,
                observed_at,
                answered_by: None,
            },
        ),
        PendingKind::MeterShare => resolved_data(
            snapshot,
            resolution,
            &observed,
            |request, resolution, observed_at| MeterShareResolvedData {
                request,
                resolution,
                observed_at,
                answered_by: None,
            },
        ),
    };
    let account = snapshot_i64(snapshot, "accountId");
    let property = snapshot_i64(snapshot, "propertyId");
    let meter = snapshot_i64(snapshot, "meterId");
    let subject = match kind {
        PendingKind::Connection => subject_for(account, None, None),
        PendingKind::PropertyShare => subject_for(account, property, None),
        PendingKind::MeterShare => subject_for(account, property, meter),
    };
    origin.event(
        resolved_type(kind),
        &pending_id_name(kind, key, episode, "resolved"),
        subject,
        Some(observed),
        data.into(),
    )
}

/// How many consecutive complete walks a request must be missing from before it is reported
/// resolved. PM pages by offset: a request answered while a walk is between two pages shifts
/// the later pages by one, and the walk misses a request that is still pending. One walk alone
/// cannot tell that from a resolution; a second complete walk that misses it again can.
pub const RESOLVE_AFTER_MISSED_WALKS: u32 = 2;

/// What the journal remembers about one pending key between walks.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedRequest {
    /// The `requested` event's `data` as last listed ([`Value::Null`] once resolved).
    pub data: Value,
    /// Which time this key is listed: 1 the first time, `n` after `n - 1` resolutions.
    pub episode: u32,
    /// Consecutive complete walks that did not list it (0: the last walk did).
    pub missed_walks: u32,
    /// Resolved: kept only to count episodes, so a key listed again is a new request.
    pub resolved: bool,
}

impl TrackedRequest {
    /// A request just listed for the first time of episode `episode`.
    pub fn listed(data: Value, episode: u32) -> Self {
        Self {
            data,
            episode,
            missed_walks: 0,
            resolved: false,
        }
    }

    /// Whether it is still considered pending (listed, or missed fewer times than needed).
    pub fn is_pending(&self) -> bool {
        !self.resolved
    }

    /// The JSON the journal stores: `{"data": .., "tracked": {episode, missedWalks, resolved}}`.
    pub fn to_stored(&self) -> Value {
        serde_json::json!({
            "data": self.data,
            "tracked": {
                "episode": self.episode,
                "missedWalks": self.missed_walks,
                "resolved": self.resolved,
            },
        })
    }

    /// Read what [`TrackedRequest::to_stored`] wrote. A snapshot written before episodes existed
    /// (the bare `requested` data) is a request listed by the last walk, first episode.
    pub fn from_stored(stored: Value) -> Self {
        let tracked = match &stored {
            Value::Object(m) if m.len() == 2 && m.contains_key("data") => m.get("tracked").cloned(),
            _ => None,
        };
        let Some(Value::Object(t)) = tracked else {
            return Self::listed(stored, 1);
        };
        let n = |k: &str| {
            t.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let data = match stored {
            Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        Self {
            data,
            episode: n("episode").unwrap_or(1).max(1),
            missed_walks: n("missedWalks").unwrap_or(0),
            resolved: t.get("resolved").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

/// The outcome of comparing a pending list with its last stored snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDiff {
    /// One `...requested` event per request not pending in the previous snapshot, in list order.
    pub requested: Vec<CloudEvent>,
    /// One `...resolved` event per request missing from [`RESOLVE_AFTER_MISSED_WALKS`]
    /// consecutive walks, in key order.
    pub resolved: Vec<CloudEvent>,
    /// Requests this walk missed that are not (yet) reported resolved.
    pub unconfirmed: usize,
    /// The new snapshot to store, replacing the previous one (resolved keys included).
    pub snapshot: BTreeMap<String, TrackedRequest>,
}

impl PendingDiff {
    /// Whether nothing appeared or vanished.
    pub fn is_empty(&self) -> bool {
        self.requested.is_empty() && self.resolved.is_empty()
    }

    /// All events, `resolved` first (a re-sent request after a reject reads in causal order).
    pub fn events(&self) -> impl Iterator<Item = &CloudEvent> {
        self.resolved.iter().chain(self.requested.iter())
    }
}

/// Compare one complete walk of a pending list of one kind (all pages) with the previous
/// snapshot. Call it only for complete walks: a failed page must skip the round.
///
/// - A key listed that is not pending in `previous` is `requested` (a new episode when it was
///   resolved before).
/// - A pending key not listed is resolved only once [`RESOLVE_AFTER_MISSED_WALKS`] consecutive
///   walks missed it; until then it stays pending, and listing it again resets the count.
/// - Entries of another kind in `current` are ignored; duplicates (seen on two pages while PM
///   shifted them) count once.
///
/// `resolution_of(kind, id)` is asked, for each resolved request, about its accountId
/// (connection), propertyId (property share) or meterId (meter share); a snapshot without that
/// id resolves as [`Resolution::Unknown`]. The caller stores `snapshot` and the events in one
/// transaction, so a restart never repeats or skips a transition.
pub fn diff_pending(
    origin: &Origin,
    kind: PendingKind,
    previous: &BTreeMap<String, TrackedRequest>,
    current: &[PendingEntry],
    resolution_of: impl Fn(PendingKind, i64) -> Resolution,
    observed_at: DateTime<Utc>,
) -> PendingDiff {
    let mut snapshot = BTreeMap::new();
    let mut requested = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in current.iter().filter(|e| e.kind() == kind) {
        let key = pending_key(entry);
        if !seen.insert(key.clone()) {
            continue;
        }
        let episode = match previous.get(&key) {
            Some(t) if t.is_pending() => t.episode,
            found => {
                let episode = found.map_or(1, |t| t.episode.saturating_add(1));
                requested.push(pending_requested_episode(origin, entry, episode));
                episode
            }
        };
        snapshot.insert(
            key,
            TrackedRequest::listed(pending_snapshot_value(entry), episode),
        );
    }
    let mut resolved = Vec::new();
    let mut unconfirmed = 0;
    for (key, t) in previous.iter().filter(|(key, _)| !seen.contains(*key)) {
        if t.resolved {
            snapshot.insert(key.clone(), t.clone());
            continue;
        }
        let missed = t.missed_walks.saturating_add(1);
        if missed < RESOLVE_AFTER_MISSED_WALKS {
            unconfirmed += 1;
            snapshot.insert(
                key.clone(),
                TrackedRequest {
                    missed_walks: missed,
                    ..t.clone()
                },
            );
            continue;
        }
        let resolution = snapshot_i64(&t.data, kind.id_field())
            .map(|id| resolution_of(kind, id))
            .unwrap_or(Resolution::Unknown);
        resolved.push(pending_resolved_event(
            origin,
            kind,
            key,
            t.episode,
            &t.data,
            resolution,
            observed_at,
        ));
        snapshot.insert(
            key.clone(),
            TrackedRequest {
                data: Value::Null,
                episode: t.episode,
                missed_walks: missed,
                resolved: true,
            },
        );
    }
    PendingDiff {
        requested,
        resolved,
        unconfirmed,
        snapshot,
    }
}

// ---------------------------------------------------------------------------------------------
// Quarantine and whole documents

/// The bridge's own error event for PM bytes that failed to parse and were quarantined. The id
/// depends on origin and the bytes' digest only, so the same bytes are announced once however
/// often PM hands them out.
pub fn quarantine_event(origin: &Origin, data: &BodyQuarantinedData) -> CloudEvent {
    origin.event(
        BODY_QUARANTINED,
        &format!("quarantine/{}", data.sha256),
        None,
        Some(data.received_at.clone()),
        Data::of(data),
    )
}

/// The result event of a command: `command.completed`, or `command.failed` when `data.error` is
/// set. `causationid` is the command id. The id is deterministic per command, outcome and number
/// of PM calls, so a result journalled twice is one event and a later retry's result is another.
pub fn command_event(
    origin: &Origin,
    data: &CommandResultData,
    subject: Option<String>,
) -> CloudEvent {
    let (ty, state) = if data.error.is_some() {
        (COMMAND_FAILED, "failed")
    } else {
        (COMMAND_COMPLETED, "completed")
    };
    let mut ev = origin.event(
        ty,
        &format!("command/{}/{state}/{}", data.command_id, data.attempts),
        subject,
        Some(data.finished_at.clone()),
        Data::of(data),
    );
    ev.causationid = Some(data.command_id.clone());
    ev
}

/// The `policy.decided` event of an auto-accept policy decision. Its id is deterministic per
/// command id (and dry run or not), so a decision journalled again (the next walk, a restart) is
/// one event.
pub fn policy_event(origin: &Origin, data: &PolicyDecidedData) -> CloudEvent {
    let subject = match data.kind {
        PendingKind::Connection => format!("account/{}", data.request_id),
        PendingKind::PropertyShare => format!("property/{}", data.request_id),
        PendingKind::MeterShare => format!("meter/{}", data.request_id),
    };
    // A dry run's decision and the real one that may follow are two events.
    let scope = if data.dry_run {
        "policy-dry-run"
    } else {
        "policy"
    };
    origin.event(
        POLICY_DECIDED,
        &format!("{scope}/{}", data.command_id),
        Some(subject),
        Some(data.decided_at.clone()),
        Data::of(data),
    )
}

/// RFC 3339 (UTC, seconds) as the events write times.
pub fn event_time(t: DateTime<Utc>) -> String {
    utc_rfc3339(t)
}

/// Why a document could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// Not XML, or a `notificationList`/`pendingList` that does not parse.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// Well-formed XML, but neither document the normalizer reads.
    #[error("expected <notificationList> or <pendingList> but the document root is <{found}>")]
    UnsupportedRoot {
        /// The root element found.
        found: String,
    },
}

/// Normalise one PM body: a `notificationList` gives one event per notification, a `pendingList`
/// one `...requested` event per entry (no diffing: every entry counts as new). Anything else is
/// an error saying what was found.
pub fn normalize_document(
    origin: &Origin,
    bytes: &[u8],
) -> Result<Vec<CloudEvent>, NormalizeError> {
    match espm_model::root_element(bytes).as_deref() {
        Some("pendingList") => {
            let list: PendingList = espm_model::parse(bytes)?;
            Ok(PendingEntry::from_list(&list)
                .iter()
                .map(|e| pending_requested_event(origin, e))
                .collect())
        }
        Some(root) if root != "notificationList" && !root.eq_ignore_ascii_case("html") => {
            Err(NormalizeError::UnsupportedRoot {
                found: root.to_string(),
            })
        }
        // notificationList, HTML and non-XML: the model's parser gives the precise error.
        _ => {
            let list: NotificationList = espm_model::parse(bytes)?;
            Ok(notification_events(origin, &list.notifications))
        }
    }
}
