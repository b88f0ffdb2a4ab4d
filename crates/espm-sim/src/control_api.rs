//! The JSON control API under `/sim`: customer-side actions, load generation, faults, the ledger.
//! No authentication (it is a test tool); bodies are JSON whatever the content type says.

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
use serde::Deserialize;
use serde_json::json;

use crate::faults::FaultConfig;
use crate::world::{Access, CustomFields, CustomerSpec, SimError, Target};
use crate::SimState;

/// `/sim` routes (state applied).
pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/customers", post(create_customer))
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
        SimError::Invalid(_) => StatusCode::BAD_REQUEST,
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

fn created(value: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn notified(ids: Vec<i64>) -> Response {
    Json(json!({ "notificationIds": ids })).into_response()
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
        Ok(id) => created(json!({ "accountId": id })),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionReq {
    account_id: i64,
    custom_fields: Option<BTreeMap<String, String>>,
}

async fn request_connection(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: ConnectionReq = parse_or_return!(bytes);
    match state.with_world(|w| w.request_connection(r.account_id, fields(r.custom_fields))) {
        Ok(()) => created(json!({ "accountId": r.account_id, "status": "pending" })),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyShareReq {
    account_id: i64,
    property_id: Option<i64>,
    name: Option<String>,
    access_level: Access,
    custom_fields: Option<BTreeMap<String, String>>,
    /// Sets the property's gross floor area before sharing (`units` as PM writes them).
    gross_floor_area: Option<FloorAreaReq>,
}

#[derive(Deserialize)]
struct FloorAreaReq {
    value: f64,
    units: String,
}

async fn share_property(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: PropertyShareReq = parse_or_return!(bytes);
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
        Ok(pid) => created(json!({ "propertyId": pid })),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterShareReq {
    account_id: i64,
    property_id: Option<i64>,
    meter_id: Option<i64>,
    access_level: Access,
    custom_fields: Option<BTreeMap<String, String>>,
}

async fn share_meter(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: MeterShareReq = parse_or_return!(bytes);
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
        Ok((mid, pid)) => created(json!({ "meterId": mid, "propertyId": pid })),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetReq {
    property_id: Option<i64>,
    meter_id: Option<i64>,
    access_level: Option<Access>,
}

impl TargetReq {
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
    let r: TargetReq = parse_or_return!(bytes);
    let target = match r.target() {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some(access) = r.access_level else {
        return error(StatusCode::BAD_REQUEST, "accessLevel is required");
    };
    match state.with_world(|w| w.edit_share(target, access)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

async fn unshare(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: TargetReq = parse_or_return!(bytes);
    let target = match r.target() {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    match state.with_world(|w| w.customer_unshare(target)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountReq {
    account_id: i64,
}

async fn disconnect(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: AccountReq = parse_or_return!(bytes);
    match state.with_world(|w| w.customer_disconnect(r.account_id)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferReq {
    property_id: i64,
    to_account_id: i64,
    #[serde(default)]
    remove_access: bool,
}

async fn transfer(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: TransferReq = parse_or_return!(bytes);
    match state.with_world(|w| w.transfer(r.property_id, r.to_account_id, r.remove_access)) {
        Ok(ids) => notified(ids),
        Err(e) => sim_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkReq {
    count: usize,
    #[serde(default)]
    types: Vec<String>,
}

async fn bulk(State(state): State<SimState>, bytes: Bytes) -> Response {
    let r: BulkReq = parse_or_return!(bytes);
    if r.types.iter().any(|t| t.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "notification types must not be empty",
        );
    }
    let range = state.with_world(|w| w.bulk_notifications(r.count, &r.types));
    created(json!({
        "created": r.count,
        "firstId": range.map(|r| r.0),
        "lastId": range.map(|r| r.1),
    }))
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

async fn reset(State(state): State<SimState>) -> Response {
    state.reset();
    Json(json!({ "reset": true })).into_response()
}

async fn world(State(state): State<SimState>) -> Response {
    Json(state.with_world(|w| w.snapshot())).into_response()
}
