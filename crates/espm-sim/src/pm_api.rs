//! PM's provider-side web services under `/ws`: HTTP Basic, XML bodies, PM's errors, plus the
//! fault-injection layer.

// Helpers return the finished error `Response` as their `Err`: it goes straight back to the
// client, once per request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use base64::Engine;
use espm_model::{
    parse, to_xml, Action, CustomField, CustomFieldValues, Link, Links, NewCustomer, PmDocument,
    SharingResponse, TerminateSharingResponse,
};
use http_body::Frame;

use crate::faults::{ClearCommit, FaultDecision, FaultKind};
use crate::world::{Access, CustomFieldTarget, CustomFields, PendingListKind, SimError, Target};
use crate::SimState;

/// PM's maintenance page, served for injected 502s.
pub const MAINTENANCE_HTML: &str = include_str!("../../../tests/fixtures/bad/maintenance.html");

const XML: &str = "application/xml";

fn xml_response(status: StatusCode, xml: String) -> Response {
    (status, [(header::CONTENT_TYPE, XML)], xml).into_response()
}

fn pm_error(status: StatusCode, number: Option<&str>, description: &str) -> Response {
    let mut doc = espm_model::Response::error(number.unwrap_or(""), description);
    if number.is_none() {
        if let Some(errors) = doc.errors.as_mut() {
            for e in &mut errors.error {
                e.error_number = None;
            }
        }
    }
    xml_response(status, to_xml(&doc))
}

fn ok_response() -> Response {
    xml_response(StatusCode::OK, to_xml(&espm_model::Response::ok()))
}

/// PM's answer for a refused world operation.
fn sim_error(e: SimError) -> Response {
    let text = e.to_string();
    match e {
        SimError::AccessDenied => pm_error(StatusCode::FORBIDDEN, Some("-200"), &text),
        SimError::NotFound(_) => pm_error(StatusCode::NOT_FOUND, Some("-200"), &text),
        SimError::Invalid(_) => pm_error(StatusCode::BAD_REQUEST, Some("-100"), &text),
        SimError::NotPending
        | SimError::NotConnected
        | SimError::Conflict(_)
        | SimError::Rejected(_) => pm_error(StatusCode::BAD_REQUEST, Some("-200"), &text),
    }
}

fn schema_error(message: &str) -> Response {
    pm_error(
        StatusCode::BAD_REQUEST,
        Some("-100"),
        &format!("The request body failed schema validation: {message}"),
    )
}

/// Check the content type and parse a request body as PM would (schema errors are `-100`).
fn xml_body<T: PmDocument>(headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let is_xml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(XML));
    if !is_xml {
        return Err(pm_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            "Unsupported Media Type: request bodies must be application/xml",
        ));
    }
    parse::<T>(body).map_err(|e| schema_error(&e.to_string()))
}

fn check_note(note: Option<&String>) -> Result<(), Response> {
    match note {
        Some(n) if n.is_empty() || n.chars().count() > 1000 => {
            Err(schema_error("note must be 1 to 1000 characters"))
        }
        _ => Ok(()),
    }
}

fn parse_id(raw: &str) -> Result<i64, Response> {
    raw.trim().parse().map_err(|_| {
        pm_error(
            StatusCode::NOT_FOUND,
            Some("-200"),
            &format!("Invalid id {raw:?}."),
        )
    })
}

fn flag(q: &HashMap<String, String>, name: &str, default: bool) -> bool {
    match q.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "false" => false,
        Some(v) if v == "true" => true,
        _ => default,
    }
}

fn page(q: &HashMap<String, String>) -> usize {
    q.get("page")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(1)
}

/// The fault decided for this request (always present behind the `/ws` layer).
#[derive(Debug, Clone, Copy)]
pub struct Injected(pub FaultDecision);

/// Who called: the provider (the simulator's `username`/`password`) or a customer (its PM
/// username and password, for the test-environment calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The provider account.
    Provider,
    /// A customer account, by id.
    Customer(i64),
}

/// Whether the request came in under `/wstest` (PM's test environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestEnv(pub bool);

fn access_denied() -> Response {
    sim_error(SimError::AccessDenied)
}

/// Provider routes refuse customers: the simulator serves one provider's web services.
async fn provider_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(Caller::Provider) => next.run(req).await,
        _ => access_denied(),
    }
}

/// The test-environment calls act as a customer.
async fn customer_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(Caller::Customer(_)) => next.run(req).await,
        _ => access_denied(),
    }
}

/// `/ws` routes with auth and faults (state applied).
pub fn router(state: SimState) -> Router<()> {
    let test_env = Router::new()
        .route("/invite/account/{id}", post(invite_account))
        .route(
            "/invite/account/{id}/property/{pid}",
            post(invite_of(crate::World::invite_property)),
        )
        .route(
            "/invite/account/{id}/meter/{mid}",
            post(invite_of(crate::World::invite_meter)),
        )
        .route(
            "/account/{id}/customFieldList/recipient/{rid}",
            put(fields_update_of(CustomFieldTarget::Account)),
        )
        .route(
            "/property/{id}/customFieldList/recipient/{rid}",
            put(fields_update_of(CustomFieldTarget::Property)),
        )
        .route(
            "/meter/{id}/customFieldList/recipient/{rid}",
            put(fields_update_of(CustomFieldTarget::Meter)),
        )
        .route_layer(middleware::from_fn(customer_only));
    Router::new()
        .route("/notification/list", get(notifications))
        .route("/connect/account/pending/list", get(pending_accounts))
        .route("/share/property/pending/list", get(pending_properties))
        .route("/share/meter/pending/list", get(pending_meters))
        .route("/connect/account/{id}", post(answer_connection))
        .route("/share/property/{id}", post(answer_property))
        .route("/share/meter/{id}", post(answer_meter))
        .route("/disconnect/account/{id}", post(disconnect))
        .route("/unshare/property/{id}", post(unshare_property))
        .route("/unshare/meter/{id}", post(unshare_meter))
        .route("/customer/list", get(customer_list))
        .route("/customer/{id}", get(customer))
        .route("/customer", post(create_customer))
        .route("/property/{id}", get(property))
        .route("/account/{id}/customFieldList", get(account_fields))
        .route("/property/{id}/customFieldList", get(property_fields))
        .route("/meter/{id}/customFieldList", get(meter_fields))
        .route_layer(middleware::from_fn(provider_only))
        .merge(test_env)
        .fallback(|| async {
            pm_error(
                StatusCode::NOT_FOUND,
                Some("-200"),
                "The requested resource does not exist.",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The provider, a customer with a password, or nobody (401).
fn caller(state: &SimState, headers: &HeaderMap) -> Option<Caller> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let cfg = state.config();
    let expected = format!("{}:{}", cfg.username, cfg.password);
    if decoded == expected.as_bytes() {
        return Some(Caller::Provider);
    }
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    state
        .inner
        .world
        .lock()
        .authenticate_customer(user, password)
        .map(Caller::Customer)
}

/// Auth, latency and faults around every `/ws` call.
async fn guard(State(state): State<SimState>, mut req: Request, next: Next) -> Response {
    let Some(who) = caller(&state, req.headers()) else {
        let mut r = pm_error(StatusCode::UNAUTHORIZED, None, "Unauthorized");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Portfolio Manager\""),
        );
        return r;
    };
    let original = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    req.extensions_mut().insert(who);
    req.extensions_mut().insert(TestEnv(
        original.starts_with("/wstest/") || original == "/wstest",
    ));
    let path = req.uri().path().to_string();
    let path = path
        .strip_prefix("/wstest")
        .or_else(|| path.strip_prefix("/ws"))
        .unwrap_or(&path)
        .to_string();
    state.count_call(req.method().as_str(), &path);
    let decision = state.inner.faults.lock().decide(&path);
    if decision.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(decision.latency_ms)).await;
    }
    req.extensions_mut().insert(Injected(decision));
    let Some(fault) = decision.fault else {
        let answer = next.run(req).await;
        if decision.respond_after_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(decision.respond_after_ms)).await;
        }
        return answer;
    };
    tracing::debug!(?fault, %path, "espm-sim injecting a fault");
    // Status faults reject the request up front, unless the policy says it was processed first;
    // notification reads always run so the ledger records the attempt (they commit per policy).
    let run_inner = !fault.is_status()
        || decision.clear_commits == ClearCommit::All
        || path == "/notification/list";
    let inner = if run_inner {
        Some(next.run(req).await)
    } else {
        None
    };
    match fault {
        FaultKind::Http429 => {
            let mut r = pm_error(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "Too many requests: rate limit exceeded.",
            );
            if let Ok(v) = HeaderValue::from_str(&decision.retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        FaultKind::Http500 => pm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "An unexpected error occurred.",
        ),
        FaultKind::Http502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            MAINTENANCE_HTML,
        )
            .into_response(),
        FaultKind::Truncated => {
            let Some(inner) = inner else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            let (mut parts, body) = inner.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
        }
        FaultKind::Drop => Response::new(Body::new(BrokenBody)),
    }
}

/// A body that fails at once: hyper aborts the connection without a complete response.
struct BrokenBody;

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "espm-sim: injected connection drop",
        ))))
    }
}

/// A notification-list body that tells the ledger whether it reached the connection: delivered
/// when hyper takes the (single) frame, lost when hyper drops it untouched (client gone).
struct TrackedBody {
    data: Option<Bytes>,
    state: SimState,
    generation: u64,
    read_id: u64,
    settled: bool,
}

impl TrackedBody {
    fn settle(&mut self, delivered: bool) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut world = self.state.inner.world.lock();
        if self.state.inner.generation.load(Ordering::SeqCst) == self.generation {
            world.settle_read(self.read_id, delivered);
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.data.take() {
            Some(data) => {
                // The whole body is handed to the connection in this one frame.
                self.settle(true);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        http_body::SizeHint::with_exact(len)
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // Dropped before hyper took the body: the client went away first.
        self.settle(false);
    }
}

async fn notifications(
    State(state): State<SimState>,
    Extension(Injected(decision)): Extension<Injected>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let clear = flag(&q, "clear", true);
    let fault = decision.fault;
    let commit = fault.is_none_or(|f| decision.clear_commits.commits(f));
    let generation = state.inner.generation.load(Ordering::SeqCst);
    let (read_id, list) = state
        .inner
        .world
        .lock()
        .read_notifications(clear, commit, fault);
    let xml = to_xml(&list);
    if fault.is_some() {
        return xml_response(StatusCode::OK, xml);
    }
    let body = TrackedBody {
        data: Some(Bytes::from(xml)),
        state: state.clone(),
        generation,
        read_id,
        settled: false,
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, XML)],
        Body::new(body),
    )
        .into_response()
}

async fn pending_accounts(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list = served_page(&state, PendingListKind::Connection, page(&q), |w, p| {
        w.pending_accounts_page(p)
    });
    xml_response(StatusCode::OK, to_xml(&list))
}

async fn pending_properties(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list = served_page(&state, PendingListKind::PropertyShare, page(&q), |w, p| {
        w.pending_properties_page(p)
    });
    xml_response(StatusCode::OK, to_xml(&list))
}

async fn pending_meters(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list = served_page(&state, PendingListKind::MeterShare, page(&q), |w, p| {
        w.pending_meters_page(p)
    });
    xml_response(StatusCode::OK, to_xml(&list))
}

/// Build one pending page, then fire the triggers waiting for it (under the same lock, so the
/// next page already sees the answer).
fn served_page(
    state: &SimState,
    kind: PendingListKind,
    page: usize,
    build: impl FnOnce(&crate::World, usize) -> espm_model::PendingList,
) -> espm_model::PendingList {
    let mut world = state.inner.world.lock();
    let list = build(&world, page);
    for (trigger, done) in world.pending_page_served(kind, page) {
        match done {
            Ok(()) => tracing::info!(?trigger, "pending trigger fired"),
            Err(e) => {
                tracing::warn!(?trigger, error = %e, "pending trigger found nothing to answer")
            }
        }
    }
    list
}

/// Parse `{id}` and a `sharingResponse`, then run `op(world, id, accept)`.
fn answer(
    state: &SimState,
    raw_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    op: fn(&mut crate::World, i64, bool) -> Result<(), SimError>,
) -> Response {
    let id = match parse_id(raw_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let doc: SharingResponse = match xml_body(headers, body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(r) = check_note(doc.note.as_ref()) {
        return r;
    }
    let accept = doc.action == Action::Accept;
    match op(&mut state.inner.world.lock(), id, accept) {
        Ok(()) => ok_response(),
        Err(e) => sim_error(e),
    }
}

async fn answer_connection(
    State(state): State<SimState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&state, &id, &headers, &body, |w, id, a| {
        w.answer_connection(id, a)
    })
}

async fn answer_property(
    State(state): State<SimState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&state, &id, &headers, &body, |w, id, a| {
        w.answer_property_share(id, a)
    })
}

async fn answer_meter(
    State(state): State<SimState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&state, &id, &headers, &body, |w, id, a| {
        w.answer_meter_share(id, a)
    })
}

/// Parse `{id}` and a `terminateSharingResponse`, then run `op`.
fn terminate(
    state: &SimState,
    raw_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    op: impl FnOnce(&mut crate::World, i64) -> Result<(), SimError>,
) -> Response {
    let id = match parse_id(raw_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let doc: TerminateSharingResponse = match xml_body(headers, body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(r) = check_note(doc.note.as_ref()) {
        return r;
    }
    match op(&mut state.inner.world.lock(), id) {
        Ok(()) => ok_response(),
        Err(e) => sim_error(e),
    }
}

async fn disconnect(
    State(state): State<SimState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let keep = flag(&q, "keepShares", false);
    terminate(&state, &id, &headers, &body, |w, id| {
        w.provider_disconnect(id, keep)
    })
}

async fn unshare_property(
    State(state): State<SimState>,
    Extension(TestEnv(test_env)): Extension<TestEnv>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    terminate(&state, &id, &headers, &body, |w, id| {
        if test_env && w.test_env_unshare_refused(Target::Property(id)) {
            return Err(SimError::AccessDenied);
        }
        w.provider_unshare_property(id)
    })
}

async fn unshare_meter(
    State(state): State<SimState>,
    Extension(TestEnv(test_env)): Extension<TestEnv>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    terminate(&state, &id, &headers, &body, |w, id| {
        if test_env && w.test_env_unshare_refused(Target::Meter(id)) {
            return Err(SimError::AccessDenied);
        }
        w.provider_unshare_meter(id)
    })
}

fn customer_link(id: i64, hint: Option<String>) -> Link {
    Link {
        id: Some(id),
        link_description: Some("This is the GET url for this Customer.".into()),
        link: Some(format!("/customer/{id}")),
        http_method: Some("GET".into()),
        hint,
    }
}

async fn customer_list(State(state): State<SimState>) -> Response {
    let list = state.inner.world.lock().customer_list();
    let doc = espm_model::Response {
        links: Some(Links {
            link: list
                .into_iter()
                .map(|(id, org)| customer_link(id, org))
                .collect(),
        }),
        ..espm_model::Response::ok()
    };
    xml_response(StatusCode::OK, to_xml(&doc))
}

async fn customer(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let doc = state.inner.world.lock().customer_doc(id);
    match doc {
        Ok(c) => xml_response(StatusCode::OK, to_xml(&c)),
        Err(e) => sim_error(e),
    }
}

async fn property(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let doc = state.inner.world.lock().property_doc(id);
    match doc {
        Ok(p) => xml_response(StatusCode::OK, to_xml(&p)),
        Err(e) => sim_error(e),
    }
}

async fn create_customer(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc: NewCustomer = match xml_body(&headers, &body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let created = state.inner.world.lock().create_connected_customer(&doc);
    match created {
        Ok(id) => {
            let mut link = customer_link(id, None);
            link.id = None;
            let doc = espm_model::Response {
                id: Some(id),
                links: Some(Links { link: vec![link] }),
                ..espm_model::Response::ok()
            };
            xml_response(StatusCode::CREATED, to_xml(&doc))
        }
        Err(e) => sim_error(e),
    }
}

fn fields_response(state: &SimState, raw: &str, make: fn(i64) -> CustomFieldTarget) -> Response {
    let id = match parse_id(raw) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let fields = state.inner.world.lock().custom_fields(make(id));
    match fields {
        Ok(fields) => {
            let doc = CustomFieldValues {
                fields: fields
                    .into_iter()
                    .map(|(name, value)| CustomField { name, value })
                    .collect(),
            };
            xml_response(StatusCode::OK, to_xml(&doc))
        }
        Err(e) => sim_error(e),
    }
}

async fn account_fields(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    fields_response(&state, &id, CustomFieldTarget::Account)
}

async fn property_fields(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    fields_response(&state, &id, CustomFieldTarget::Property)
}

async fn meter_fields(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    fields_response(&state, &id, CustomFieldTarget::Meter)
}

// ----- the test environment's customer-side calls -----

fn customer_of(caller: Caller) -> i64 {
    match caller {
        Caller::Customer(id) => id,
        // `customer_only` lets no provider through; 0 names no customer (403 follows).
        Caller::Provider => 0,
    }
}

/// `accessLevel=READ|READ_WRITE` (PM's spelling in these calls; `Read`, `Read Write` also taken).
pub fn parse_access_level(raw: Option<&str>) -> Result<Access, String> {
    let Some(raw) = raw else {
        return Err("accessLevel is required: READ or READ_WRITE".into());
    };
    match raw
        .trim()
        .to_ascii_uppercase()
        .replace([' ', '-'], "_")
        .as_str()
    {
        "READ" => Ok(Access::Read),
        "READ_WRITE" | "READWRITE" => Ok(Access::ReadWrite),
        _ => Err(format!(
            "accessLevel {raw:?} is not valid: READ or READ_WRITE"
        )),
    }
}

/// An optional `<customFieldList>` body (empty body: no fields). A body that is present must be
/// `application/xml`.
fn optional_fields(headers: &HeaderMap, body: &Bytes) -> Result<CustomFields, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    required_fields(headers, body)
}

fn required_fields(headers: &HeaderMap, body: &Bytes) -> Result<CustomFields, Response> {
    let doc: CustomFieldValues = xml_body(headers, body)?;
    let mut out: CustomFields = Vec::new();
    for f in doc.fields {
        let name = f.name.trim().to_string();
        if name.is_empty() {
            return Err(schema_error("customField needs a non-empty name attribute"));
        }
        // A name given twice: the last value wins, in the first one's place.
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = f.value,
            None => out.push((name, f.value)),
        }
    }
    Ok(out)
}

fn run(state: &SimState, op: impl FnOnce(&mut crate::World) -> Result<(), SimError>) -> Response {
    match op(&mut state.inner.world.lock()) {
        Ok(()) => ok_response(),
        Err(e) => sim_error(e),
    }
}

async fn invite_account(
    State(state): State<SimState>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let fields = match optional_fields(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    run(&state, |w| {
        w.invite_connection(customer_of(who), id, fields)
    })
}

/// `{id}`, `{pid}` / `{mid}`, `accessLevel` and the optional custom fields of an invite.
fn invite_parts(
    ids: &(String, String),
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(i64, i64, Access, CustomFields), Response> {
    let recipient = parse_id(&ids.0)?;
    let target = parse_id(&ids.1)?;
    let access = parse_access_level(q.get("accessLevel").map(String::as_str))
        .map_err(|m| pm_error(StatusCode::BAD_REQUEST, Some("-100"), &m))?;
    let fields = optional_fields(headers, body)?;
    Ok((recipient, target, access, fields))
}

/// What an invite of a property or a meter asks of the world.
type Invite = fn(&mut crate::World, i64, i64, i64, Access, CustomFields) -> Result<(), SimError>;

/// The handler of `POST /invite/account/{id}/property/{pid}` and `.../meter/{mid}`: one handler
/// for both routes, told which invite. (The type is axum's handler signature.)
#[allow(clippy::type_complexity)]
fn invite_of(
    invite: Invite,
) -> impl Fn(
    State<SimState>,
    Extension<Caller>,
    Path<(String, String)>,
    Query<HashMap<String, String>>,
    HeaderMap,
    Bytes,
) -> std::future::Ready<Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(state), Extension(who), Path(ids), Query(q), headers, body| {
        std::future::ready(match invite_parts(&ids, &q, &headers, &body) {
            Ok((recipient, target, access, fields)) => run(&state, |w| {
                invite(w, customer_of(who), recipient, target, access, fields)
            }),
            Err(r) => r,
        })
    }
}

fn fields_update(
    state: &SimState,
    who: Caller,
    ids: &(String, String),
    headers: &HeaderMap,
    body: &Bytes,
    make: fn(i64) -> CustomFieldTarget,
) -> Response {
    let (id, recipient) = match (parse_id(&ids.0), parse_id(&ids.1)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let fields = match required_fields(headers, body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    run(state, |w| {
        w.submit_custom_fields(customer_of(who), recipient, make(id), fields)
            .map(|_| ())
    })
}

/// The handler of `PUT /account|property|meter/{id}/customFieldList/recipient/{rid}`: one
/// handler for the three routes, told its target. (The type is axum's handler signature.)
#[allow(clippy::type_complexity)]
fn fields_update_of(
    make: fn(i64) -> CustomFieldTarget,
) -> impl Fn(
    State<SimState>,
    Extension<Caller>,
    Path<(String, String)>,
    HeaderMap,
    Bytes,
) -> std::future::Ready<Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(state), Extension(who), Path(ids), headers, body| {
        std::future::ready(fields_update(&state, who, &ids, &headers, &body, make))
    }
}
