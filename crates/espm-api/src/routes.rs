//! The handlers: parse (every rejection is a problem document), authenticate, hand over to the
//! commander, answer.

// Helpers return the ready problem response as their error: it is built once, on a rare path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use espm_command::{
    AnswerBody, Command, CommandError, CommandView, Commander, CreateCustomerBody, DisconnectBody,
    Door, PendingItem, PendingKind, Problem, ProblemKind, Submission, UnshareBody,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::Tokens;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) commander: Commander,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) openapi: Arc<Value>,
}

/// `listPending`'s answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingList {
    /// The requests.
    pub items: Vec<PendingItem>,
}

/// One connected customer in `listCustomers`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerLinkView {
    /// The customer's account id.
    pub customer_id: i64,
    /// PM's hint (often the organisation name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `listCustomers`' answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CustomerList {
    /// The customers.
    pub items: Vec<CustomerLinkView>,
}

/// `getCustomer`'s answer.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    /// The customer's account id.
    pub customer_id: i64,
    /// Username (PM gives it only here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
}

/// A problem document response.
fn problem(p: &Problem, command: Option<&CommandView>) -> Response {
    let mut body = json!({
        "type": p.kind.type_uri(),
        "title": p.kind.title(),
        "status": p.kind.status(),
        "detail": p.detail,
    });
    if let Some(s) = p.pm_status {
        body["pmStatus"] = json!(s);
    }
    if !p.pm_errors.is_empty() {
        body["pmErrors"] = json!(p.pm_errors);
    }
    if let Some(c) = command {
        body["commandId"] = json!(c.id);
        body["command"] = serde_json::to_value(c).unwrap_or(Value::Null);
    }
    let status = StatusCode::from_u16(p.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(ra) = p.retry_after {
        if let Ok(v) = HeaderValue::from_str(&ra.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    } else if p.kind == ProblemKind::PmRateLimited {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if p.kind == ProblemKind::Unauthorized {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"espm-bridge\""),
        );
    }
    r
}

fn invalid(detail: impl Into<String>) -> Response {
    problem(&Problem::new(ProblemKind::InvalidCommand, detail), None)
}

fn error(e: CommandError) -> Response {
    if matches!(e, CommandError::Journal(_)) {
        tracing::error!(error = %e, "command API: journal failed");
    }
    problem(&e.problem(), None)
}

/// Who calls: the name of the bearer token presented, or the 401 answer.
fn caller(state: &ApiState, headers: &HeaderMap) -> Result<String, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented.and_then(|t| state.tokens.check(t)) {
        Some(name) => Ok(name.to_string()),
        None => {
            // The token itself is never logged.
            tracing::warn!(
                presented = presented.is_some(),
                "command API: request without a valid bearer token"
            );
            Err(problem(
                &Problem::new(
                    ProblemKind::Unauthorized,
                    "send Authorization: Bearer <one of the configured API tokens>",
                ),
                None,
            ))
        }
    }
}

fn parse_id(name: &str, raw: &str) -> Result<i64, Response> {
    match raw.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid(format!(
            "{name} must be a positive integer, not {raw:?}"
        ))),
    }
}

fn parse_kind(raw: &str) -> Result<PendingKind, Response> {
    PendingKind::parse(raw).ok_or_else(|| {
        invalid(format!(
            "kind must be connection, property_share or meter_share, not {raw:?}"
        ))
    })
}

fn body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &Bytes) -> Result<T, Response> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            v == "application/json" || v.ends_with("+json")
        })
        .unwrap_or(false);
    if !json_type {
        return Err(invalid(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("unreadable body: {e}")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) => {
                espm_command::check_id(s).map_err(|e| invalid(e.to_string()))?;
                Ok(Some(s.to_string()))
            }
            Err(_) => Err(invalid("Idempotency-Key must be visible ASCII")),
        },
    }
}

/// Run a command and answer: the view on success, its problem (with the view) on failure.
async fn run(
    state: &ApiState,
    headers: &HeaderMap,
    account: String,
    command: Command,
    ok: StatusCode,
) -> Response {
    let requester = match caller(state, headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match idempotency_key(headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let submission = Submission {
        id,
        account,
        command,
        requester: Some(requester),
        door: Door::Api,
    };
    match state.commander.submit(submission).await {
        Ok(view) => match view.problem() {
            Some(p) => problem(&p, Some(&view)),
            None if view.state == "pending" => problem(
                &Problem::new(ProblemKind::Interrupted, "the command has not finished"),
                Some(&view),
            ),
            None => (ok, Json(view)).into_response(),
        },
        Err(e) => error(e),
    }
}

async fn answer_request(
    State(state): State<ApiState>,
    Path((account, kind, request_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let (kind, request_id) = match (parse_kind(&kind), parse_id("requestId", &request_id)) {
        (Ok(k), Ok(id)) => (k, id),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let b: AnswerBody = match body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::Answer {
        kind,
        request_id,
        decision: b.decision,
        note: b.note,
    };
    run(&state, &headers, account, command, StatusCode::OK).await
}

async fn disconnect_customer(
    State(state): State<ApiState>,
    Path((account, customer_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let customer_id = match parse_id("customerId", &customer_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let b: DisconnectBody = match body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::Disconnect {
        customer_id,
        keep_shares: b.keep_shares,
        note: b.note,
    };
    run(&state, &headers, account, command, StatusCode::OK).await
}

async fn unshare_property(
    State(state): State<ApiState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let property_id = match parse_id("propertyId", &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let b: UnshareBody = match body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::UnshareProperty {
        property_id,
        note: b.note,
    };
    run(&state, &headers, account, command, StatusCode::OK).await
}

async fn unshare_meter(
    State(state): State<ApiState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let meter_id = match parse_id("meterId", &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let b: UnshareBody = match body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::UnshareMeter {
        meter_id,
        note: b.note,
    };
    run(&state, &headers, account, command, StatusCode::OK).await
}

async fn create_customer(
    State(state): State<ApiState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let b: CreateCustomerBody = match body(&headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::CreateCustomer(Box::new(b));
    run(&state, &headers, account, command, StatusCode::CREATED).await
}

async fn list_pending(
    State(state): State<ApiState>,
    Path(account): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let kind = match q.get("kind").map(|k| parse_kind(k)).transpose() {
        Ok(k) => k,
        Err(r) => return r,
    };
    let customer = match q
        .get("customerId")
        .map(|c| parse_id("customerId", c))
        .transpose()
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.commander.pending(&account, kind, customer).await {
        Ok(items) => Json(PendingList { items }).into_response(),
        Err(e) => error(e),
    }
}

async fn list_customers(
    State(state): State<ApiState>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let client = match state.commander.client(&account) {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    match client.customers().await {
        Ok(links) => Json(CustomerList {
            items: links
                .into_iter()
                .map(|l| CustomerLinkView {
                    customer_id: l.id,
                    hint: l.hint,
                })
                .collect(),
        })
        .into_response(),
        Err(e) => error(CommandError::Pm(e)),
    }
}

async fn get_customer(
    State(state): State<ApiState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let customer_id = match parse_id("customerId", &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match state.commander.customer(&account, customer_id).await {
        Ok(c) => {
            let info = c.account_info.unwrap_or_default();
            Json(CustomerView {
                customer_id,
                username: c.username,
                organization: info.organization,
                first_name: info.first_name,
                last_name: info.last_name,
                email: info.email,
                phone: info.phone,
                job_title: info.job_title,
            })
            .into_response()
        }
        Err(e) => error(e),
    }
}

async fn get_command(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    if let Err(e) = espm_command::check_id(&id) {
        return invalid(e.to_string());
    }
    match state.commander.command(&id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => problem(
            &Problem::new(ProblemKind::UnknownCommand, format!("no command {id:?}")),
            None,
        ),
        Err(e) => error(e),
    }
}

async fn openapi(State(state): State<ApiState>) -> Response {
    Json(state.openapi.as_ref().clone()).into_response()
}

async fn not_found() -> Response {
    let body = json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such API route"});
    let mut r = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/accounts/{account}/pending", get(list_pending))
        .route(
            "/api/v1/accounts/{account}/pending/{kind}/{request_id}/answer",
            post(answer_request),
        )
        .route(
            "/api/v1/accounts/{account}/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/api/v1/accounts/{account}/customers/{customer_id}",
            get(get_customer),
        )
        .route(
            "/api/v1/accounts/{account}/customers/{customer_id}/disconnect",
            post(disconnect_customer),
        )
        .route(
            "/api/v1/accounts/{account}/properties/{property_id}/unshare",
            post(unshare_property),
        )
        .route(
            "/api/v1/accounts/{account}/meters/{meter_id}/unshare",
            post(unshare_meter),
        )
        .route("/api/v1/commands/{command_id}", get(get_command))
        .fallback(not_found)
        .with_state(state)
}
