//! The JSON control API under `/sim`: customer-side actions, load generation, faults, the ledger.
//! No authentication (it is a test tool); bodies are JSON whatever the content type says.
//!
//! The request and answer types are public (and both serialize and deserialize) so that a
//! client, like the test kit's, speaks exactly what the routes take.

// Helpers return the finished error `Response` as their `Err`: it goes straight back to the
// client, once per request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::FaultConfig;
use crate::world::{Access, CustomFields, CustomerSpec, PendingTrigger, SimError, Target};
use crate::SimState;

/// `/sim` routes (state applied).
pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/customers", post(create_customer))
        .route("/properties", post(create_property))
        .route("/meters", post(create_meter))
        .route("/connections", post(request_connection))
        .route("/shares/property", post(share_property))
        .route("/shares/meter", post(share_meter))
        .route("/shares/edit", post(edit_share))
        .route("/unshare", post(unshare))
        .route("/disconnect", post(disconnect))
        .route("/transfer", post(transfer))
        .route("/notifications", post(bulk))
        .route("/ledger", get(ledger))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/calls", get(calls))
        .route(
            "/pending/triggers",
            get(get_pending_triggers).post(arm_pending_trigger),
        )
        .route("/reset", post(reset))
        .route("/world", get(world))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::NotFound(_) => StatusCode::NOT_FOUND,
        SimError::AccessDenied => StatusCode::FORBIDDEN,
        SimError::Invalid(_) | SimError::Rejected(_) => StatusCode::BAD_REQUEST,
        SimError::NotPending | SimError::NotConnected | SimError::Conflict(_) => {
            StatusCode::CONFLICT
        }
    };
    error(status, e.to_string())
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn fields(map: Option<BTreeMap<String, String>>) -> CustomFields {
    map.unwrap_or_default().into_iter().collect()
}

fn created(value: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn notified(notification_ids: Vec<i64>) -> Response {
    Json(Notified { notification_ids }).into_response()
}

/// Answer of `POST /customers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    /// The new customer's account id.
    pub account_id: i64,
}

/// Answer of `POST /connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRequested {
    /// The customer's account id.
    pub account_id: i64,
    /// Always `pending`.
    pub status: String,
}

/// Answer of `POST /shares/property`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyShared {
    /// The shared property (new or given).
    pub property_id: i64,
}

/// Answer of `POST /shares/meter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterShared {
    /// The shared meter (new or given).
    pub meter_id: i64,
    /// Its property.
    pub property_id: i64,
}

/// Answer of the customer actions that notify (`/shares/edit`, `/unshare`, `/disconnect`,
/// `/transfer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    /// The notifications created, in creation order.
    pub notification_ids: Vec<i64>,
}

/// Answer of `POST /notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreated {
    /// How many were created.
    pub created: usize,
    /// The first new id (none when `count` is 0).
    pub first_id: Option<i64>,
    /// The last new id.
    pub last_id: Option<i64>,
}

macro_rules! parse_or_return {
    ($bytes:expr) => {
        match body(&$bytes) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn create_customer(State(state): State<SimState>, bytes: Bytes) -> Response {
    let spec: CustomerSpec = parse_or_return!(bytes);
    match state.with_world(|w| w.create_customer(spec)) {
        Ok(account_id) => created(CustomerCreated { account_id }),
        Err(e) => sim_error(e),
    }
}

/// `POST /properties`: a customer's new property, shared with nobody (for the test-environment
/// invite calls, which share what the customer already has).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewProperty {
    /// The owner.
    pub account_id: i64,
    /// Its name (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

async fn create_property(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: NewProperty = parse_or_return!(bytes);
    match state.with_world(|w| w.create_property(r.account_id, r.name)) {
        Ok(property_id) => created(json!({ "propertyId": property_id })),
        Err(e) => sim_error(e),
    }
}

/// `POST /meters`: a new meter on an existing property, shared with nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMeter {
    /// The property.
    pub property_id: i64,
}

async fn create_meter(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: NewMeter = parse_or_return!(bytes);
    match state.with_world(|w| w.create_meter(r.property_id)) {
        Ok(meter_id) => created(json!({ "meterId": meter_id, "propertyId": r.property_id })),
        Err(e) => sim_error(e),
    }
}

/// `POST /connections`: the customer asks to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRequest {
    /// The customer.
    pub account_id: i64,
    /// Custom fields the customer fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<BTreeMap<String, String>>,
}

async fn request_connection(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: ConnectionRequest = parse_or_return!(bytes);
    match state.with_world(|w| w.request_connection(r.account_id, fields(r.custom_fields))) {
        Ok(()) => created(ConnectionRequested {
            account_id: r.account_id,
            status: "pending".into(),
        }),
        Err(e) => sim_error(e),
    }
}

/// `POST /shares/property`: the customer shares a property (a pending request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyShareRequest {
    /// The owner.
    pub account_id: i64,
    /// An existing property of the owner; none: a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<i64>,
    /// The new property's name (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Access offered.
    pub access_level: Access,
    /// Custom fields the customer fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<BTreeMap<String, String>>,
    /// Sets the property's gross floor area before sharing (`units` as PM writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_floor_area: Option<FloorAreaRequest>,
}

/// A gross floor area for [`PropertyShareRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorAreaRequest {
    /// The value.
    pub value: f64,
    /// `Square Feet` or `Square Meters`.
    pub units: String,
}

impl PropertyShareRequest {
    /// A new property of `account_id`, shared with `access_level`.
    pub fn new(account_id: i64, access_level: Access) -> Self {
        Self {
            account_id,
            property_id: None,
            name: None,
            access_level,
            custom_fields: None,
            gross_floor_area: None,
        }
    }
}

async fn share_property(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: PropertyShareRequest = parse_or_return!(bytes);
    if let Some(a) = &r.gross_floor_area {
        // Checked before sharing, so a bad area leaves no share behind.
        if !a.value.is_finite()
            || a.value < 0.0
            || !matches!(a.units.as_str(), "Square Feet" | "Square Meters")
        {
            return error(
                StatusCode::BAD_REQUEST,
                "grossFloorArea: value must be >= 0, units Square Feet or Square Meters",
            );
        }
    }
    let done = state.with_world(|w| {
        let pid = w.share_property(
            r.account_id,
            r.property_id,
            r.name,
            r.access_level,
            fields(r.custom_fields),
        )?;
        if let Some(area) = &r.gross_floor_area {
            w.set_floor_area(pid, area.value, &area.units)?;
        }
        Ok(pid)
    });
    match done {
        Ok(property_id) => created(PropertyShared { property_id }),
        Err(e) => sim_error(e),
    }
}

/// `POST /shares/meter`: the customer shares a meter (a pending request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterShareRequest {
    /// The owner.
    pub account_id: i64,
    /// A new meter on this property; with neither this nor `meter_id`, on a new property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<i64>,
    /// An existing meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<i64>,
    /// Access offered.
    pub access_level: Access,
    /// Custom fields the customer fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<BTreeMap<String, String>>,
}

impl MeterShareRequest {
    /// A new meter on a new property of `account_id`, shared with `access_level`.
    pub fn new(account_id: i64, access_level: Access) -> Self {
        Self {
            account_id,
            property_id: None,
            meter_id: None,
            access_level,
            custom_fields: None,
        }
    }
}

async fn share_meter(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: MeterShareRequest = parse_or_return!(bytes);
    let done = state.with_world(|w| {
        w.share_meter(
            r.account_id,
            r.property_id,
            r.meter_id,
            r.access_level,
            fields(r.custom_fields),
        )
    });
    match done {
        Ok((meter_id, property_id)) => created(MeterShared {
            meter_id,
            property_id,
        }),
        Err(e) => sim_error(e),
    }
}

/// `POST /shares/edit` and `POST /unshare`: a property or a meter (exactly one), and for an
/// edit the new access level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareTarget {
    /// A property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<i64>,
    /// A meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<i64>,
    /// The new access level (edits only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_level: Option<Access>,
    /// Who edits (edits only): by default whoever sent the share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub editor_account_id: Option<i64>,
}

impl ShareTarget {
    /// This property or meter.
    pub fn new(target: Target) -> Self {
        match target {
            Target::Property(p) => Self {
                property_id: Some(p),
                ..Self::default()
            },
            Target::Meter(m) => Self {
                meter_id: Some(m),
                ..Self::default()
            },
        }
    }

    /// With a new access level.
    pub fn with_access(self, access_level: Access) -> Self {
        Self {
            access_level: Some(access_level),
            ..self
        }
    }

    fn target(&self) -> Result<Target, Response> {
        match (self.property_id, self.meter_id) {
            (Some(p), None) => Ok(Target::Property(p)),
            (None, Some(m)) => Ok(Target::Meter(m)),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of propertyId and meterId",
            )),
        }
    }
}

async fn edit_share(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: ShareTarget = parse_or_return!(bytes);
    let target = match r.target() {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some(access) = r.access_level else {
        return error(StatusCode::BAD_REQUEST, "accessLevel is required");
    };
    match state.with_world(|w| w.edit_share(target, access, r.editor_account_id)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

async fn unshare(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: ShareTarget = parse_or_return!(bytes);
    let target = match r.target() {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    match state.with_world(|w| w.customer_unshare(target)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

/// `POST /disconnect`: the customer disconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRequest {
    /// The customer.
    pub account_id: i64,
}

async fn disconnect(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: AccountRequest = parse_or_return!(bytes);
    match state.with_world(|w| w.customer_disconnect(r.account_id)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

/// `POST /transfer`: a property changes owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    /// The property.
    pub property_id: i64,
    /// Its new owner.
    pub to_account_id: i64,
    /// Whether the provider loses access (UNSHAREs follow).
    #[serde(default)]
    pub remove_access: bool,
}

async fn transfer(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: TransferRequest = parse_or_return!(bytes);
    match state.with_world(|w| w.transfer(r.property_id, r.to_account_id, r.remove_access)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

/// `POST /notifications`: load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRequest {
    /// How many.
    pub count: usize,
    /// Type codes, round robin (empty: the four documented ones).
    #[serde(default)]
    pub types: Vec<String>,
}

async fn bulk(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: BulkRequest = parse_or_return!(bytes);
    if r.types.iter().any(|t| t.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "notification types must not be empty",
        );
    }
    let range = state.with_world(|w| w.bulk_notifications(r.count, &r.types));
    created(BulkCreated {
        created: r.count,
        first_id: range.map(|r| r.0),
        last_id: range.map(|r| r.1),
    })
}

async fn ledger(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let summary = q
        .get("summary")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if summary {
        let s = state.with_world(|w| w.ledger().summary());
        Json(s).into_response()
    } else {
        let l = state.with_world(|w| w.ledger().snapshot());
        Json(l).into_response()
    }
}

async fn get_faults(State(state): State<SimState>) -> Response {
    Json(state.faults()).into_response()
}

async fn put_faults(State(state): State<SimState>, bytes: Bytes) -> Response {
    let cfg: FaultConfig = parse_or_return!(bytes);
    match state.set_faults(cfg) {
        Ok(()) => Json(state.faults()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn calls(State(state): State<SimState>) -> Response {
    Json(state.calls()).into_response()
}

async fn get_pending_triggers(State(state): State<SimState>) -> Response {
    Json(state.with_world(|w| w.pending_triggers().to_vec())).into_response()
}

async fn arm_pending_trigger(State(state): State<SimState>, bytes: Bytes) -> Response {
    let t: PendingTrigger = parse_or_return!(bytes);
    match state.with_world(|w| w.arm_pending_trigger(t.clone())) {
        Ok(()) => created(serde_json::to_value(&t).unwrap_or_default()),
        Err(e) => sim_error(e),
    }
}

async fn reset(State(state): State<SimState>) -> Response {
    state.reset();
    Json(json!({ "reset": true })).into_response()
}

async fn world(State(state): State<SimState>) -> Response {
    Json(state.with_world(|w| w.snapshot())).into_response()
}
