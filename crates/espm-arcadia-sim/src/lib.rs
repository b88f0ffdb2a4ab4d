//! An embeddable in-memory simulator of Arcadia's (formerly Genability) account API.
//!
//! The REST paths live under `/rest/v1` (HTTP Basic `appId:appKey`, JSON, Arcadia's envelope):
//! upsert `PUT /accounts`, add `POST /accounts`, the paged search `GET /accounts`, get by
//! `/accounts/pid/{providerAccountId}` or `/accounts/{accountId}`, and Set Account Property
//! (`PUT`/`POST .../properties`) by either id. Fault injection and the accounts (for test
//! assertions) are a JSON control API under `/sim`. State is one [`Store`] behind a mutex.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use espm_arcadia_sim::{ArcadiaSimConfig, ArcadiaSimServer};
//! let sim = ArcadiaSimServer::start(ArcadiaSimConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("Arcadia at {}, control at {}", sim.base_url(), sim.control_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
// Refusals carry the whole Arcadia error envelope, as the simulator answers it; boxing them
// would only obscure a test server's handlers.
#![allow(clippy::result_large_err)]
#![deny(missing_docs)]

pub mod faults;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use espm_arcadia::{Account, ApiError, Envelope};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

pub use faults::{FaultConfig, FaultKind};
pub use store::{Key, Refusal, Store};

/// Simulator settings.
#[derive(Clone)]
pub struct ArcadiaSimConfig {
    /// The application id it accepts.
    pub app_id: String,
    /// The application key it accepts. Never printed.
    pub app_key: String,
    /// Seed for fault draws.
    pub seed: u64,
}

impl Default for ArcadiaSimConfig {
    fn default() -> Self {
        Self {
            app_id: "sim-app-id".into(),
            app_key: "sim-app-key".into(),
            seed: 42,
        }
    }
}

impl std::fmt::Debug for ArcadiaSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcadiaSimConfig")
            .field("app_id", &self.app_id)
            .field("app_key", &"***")
            .field("seed", &self.seed)
            .finish()
    }
}

struct Shared {
    cfg: ArcadiaSimConfig,
    store: Mutex<Store>,
    faults: Mutex<faults::Faults>,
    requests: Mutex<u64>,
}

/// The simulator's shared state (cheap to clone).
#[derive(Clone)]
pub struct ArcadiaSimState {
    inner: Arc<Shared>,
}

impl ArcadiaSimState {
    /// No accounts, no faults.
    pub fn new(cfg: ArcadiaSimConfig) -> Self {
        let faults = faults::Faults::new(cfg.seed);
        Self {
            inner: Arc::new(Shared {
                cfg,
                store: Mutex::new(Store::default()),
                faults: Mutex::new(faults),
                requests: Mutex::new(0),
            }),
        }
    }

    /// Run `f` on the accounts under their lock.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.inner.store.lock())
    }

    /// Every account, in creation order.
    pub fn accounts(&self) -> Vec<Account> {
        self.inner.store.lock().all().to_vec()
    }

    /// Replace the fault configuration.
    pub fn set_faults(&self, config: FaultConfig) -> Result<(), String> {
        self.inner.faults.lock().set(config)
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.inner.faults.lock().config().clone()
    }

    /// Authenticated `/rest/v1` requests so far, and how many of them got a fault.
    pub fn stats(&self) -> (u64, u64) {
        (
            *self.inner.requests.lock(),
            self.inner.faults.lock().injected(),
        )
    }

    /// No accounts, no faults.
    pub fn reset(&self) {
        *self.inner.store.lock() = Store::default();
        *self.inner.faults.lock() = faults::Faults::new(self.inner.cfg.seed);
        *self.inner.requests.lock() = 0;
    }
}

fn envelope_response<T: serde::Serialize>(status: StatusCode, env: Envelope<T>) -> Response {
    (status, Json(env)).into_response()
}

fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    envelope_response(status, Envelope::errors(vec![r.error]))
}

fn bad_json(e: impl std::fmt::Display) -> Response {
    refused(Refusal {
        status: 400,
        error: ApiError::new(
            "InvalidArgument",
            format!("cannot read the JSON body: {e}"),
            "Request",
        ),
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Basic auth, then faults; runs before every `/rest/v1` handler.
async fn guard(State(state): State<ArcadiaSimState>, req: Request, next: Next) -> Response {
    if !authorised(&state.inner.cfg, req.headers()) {
        return envelope_response(
            StatusCode::UNAUTHORIZED,
            Envelope::errors(vec![ApiError::new(
                "Unauthorized",
                "Invalid or missing appId/appKey (HTTP Basic)",
                "requestSignature",
            )]),
        );
    }
    *state.inner.requests.lock() += 1;
    let path = req.uri().path().to_string();
    let decision = state.inner.faults.lock().decide(&path);
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    match decision.fault {
        Some(FaultKind::Http429) => {
            let mut resp = envelope_response(
                StatusCode::TOO_MANY_REQUESTS,
                Envelope::errors(vec![ApiError::new(
                    "TooManyRequests",
                    "Request rate exceeded; slow down",
                    "Request",
                )]),
            );
            if let Ok(v) = HeaderValue::from_str(&decision.retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Some(FaultKind::Http500) => envelope_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            Envelope::errors(vec![ApiError::new(
                "InternalError",
                "Simulated server error",
                "Request",
            )]),
        ),
        None => next.run(req).await,
    }
}

fn authorised(cfg: &ArcadiaSimConfig, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(id, key)| id == cfg.app_id && key == cfg.app_key)
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(bad_json)
}

fn one_account(a: Account) -> Response {
    envelope_response(StatusCode::OK, Envelope::success("Account", vec![a]))
}

async fn upsert(State(state): State<ArcadiaSimState>, bytes: Bytes) -> Response {
    let body: Account = match parse(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match state.with_store(|s| s.upsert(body, new_id())) {
        Ok(a) => one_account(a),
        Err(r) => refused(r),
    }
}

async fn add(State(state): State<ArcadiaSimState>, bytes: Bytes) -> Response {
    let body: Account = match parse(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match state.with_store(|s| s.add(body, new_id())) {
        Ok(a) => one_account(a),
        Err(r) => refused(r),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    page_start: Option<usize>,
    page_count: Option<usize>,
    search: Option<String>,
    search_on: Option<String>,
}

async fn list(State(state): State<ArcadiaSimState>, Query(q): Query<ListQuery>) -> Response {
    let start = q.page_start.unwrap_or(0);
    let count = q.page_count.unwrap_or(25).clamp(1, 1000);
    let (total, page) = state.with_store(|s| {
        s.search(
            q.search.as_deref().filter(|s| !s.is_empty()),
            q.search_on.as_deref(),
            start,
            count,
        )
    });
    let mut env = Envelope::success("Account", page);
    env.count = total as u64;
    env.page_start = Some(start as u64);
    env.page_count = Some(count as u64);
    envelope_response(StatusCode::OK, env)
}

async fn get_by_pid(State(state): State<ArcadiaSimState>, Path(pid): Path<String>) -> Response {
    match state.with_store(|s| s.get(Key::Provider(&pid)).cloned()) {
        Ok(a) => one_account(a),
        Err(r) => refused(r),
    }
}

async fn get_by_id(State(state): State<ArcadiaSimState>, Path(id): Path<String>) -> Response {
    match state.with_store(|s| s.get(Key::Arcadia(&id)).cloned()) {
        Ok(a) => one_account(a),
        Err(r) => refused(r),
    }
}

fn set_property(state: &ArcadiaSimState, key: Key<'_>, bytes: &Bytes) -> Response {
    let body: Value = match parse(bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !body.is_object() {
        return bad_json("expected a JSON object");
    }
    match state.with_store(|s| s.set_property(key, &body)) {
        Ok(p) => envelope_response(StatusCode::OK, Envelope::success("PropertyData", vec![p])),
        Err(r) => refused(r),
    }
}

async fn set_by_pid(
    State(state): State<ArcadiaSimState>,
    Path(pid): Path<String>,
    bytes: Bytes,
) -> Response {
    set_property(&state, Key::Provider(&pid), &bytes)
}

async fn set_by_id(
    State(state): State<ArcadiaSimState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    set_property(&state, Key::Arcadia(&id), &bytes)
}

async fn sim_accounts(State(state): State<ArcadiaSimState>) -> Response {
    Json(state.accounts()).into_response()
}

async fn sim_get_faults(State(state): State<ArcadiaSimState>) -> Response {
    Json(state.faults()).into_response()
}

async fn sim_put_faults(State(state): State<ArcadiaSimState>, bytes: Bytes) -> Response {
    let cfg: FaultConfig = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("bad JSON body: {e}")})),
            )
                .into_response()
        }
    };
    match state.set_faults(cfg) {
        Ok(()) => Json(state.faults()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    }
}

async fn sim_stats(State(state): State<ArcadiaSimState>) -> Response {
    let (requests, faults) = state.stats();
    Json(json!({ "requests": requests, "faultsInjected": faults })).into_response()
}

async fn sim_reset(State(state): State<ArcadiaSimState>) -> Response {
    state.reset();
    Json(json!({ "reset": true })).into_response()
}

/// The Arcadia REST paths (relative; nest them under `/rest/v1`).
pub fn api_router(state: ArcadiaSimState) -> Router {
    Router::new()
        .route("/accounts", get(list).put(upsert).post(add))
        .route("/accounts/pid/{pid}", get(get_by_pid))
        .route(
            "/accounts/pid/{pid}/properties",
            axum::routing::put(set_by_pid).post(set_by_pid),
        )
        .route("/accounts/{id}", get(get_by_id))
        .route(
            "/accounts/{id}/properties",
            axum::routing::put(set_by_id).post(set_by_id),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The control API (relative; nest it under `/sim`): `GET /accounts`, `GET`/`PUT /faults`,
/// `GET /stats`, `POST /reset`. No authentication: it is a test tool.
pub fn control_router(state: ArcadiaSimState) -> Router {
    Router::new()
        .route("/accounts", get(sim_accounts))
        .route("/faults", get(sim_get_faults).put(sim_put_faults))
        .route("/stats", get(sim_stats))
        .route("/reset", axum::routing::post(sim_reset))
        .with_state(state)
}

/// The whole simulator: Arcadia under `/rest/v1`, the control API under `/sim`.
pub fn router(state: ArcadiaSimState) -> Router {
    Router::new()
        .nest("/rest/v1", api_router(state.clone()))
        .nest("/sim", control_router(state))
}

/// A running simulator.
pub struct ArcadiaSimServer {
    addr: SocketAddr,
    state: ArcadiaSimState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ArcadiaSimServer {
    /// Bind `listen` (port 0 picks a free port) and serve in the background.
    pub async fn start(cfg: ArcadiaSimConfig, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = ArcadiaSimState::new(cfg);
        let app = router(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "espm-arcadia-sim server stopped");
            }
        });
        tracing::info!(%addr, "espm-arcadia-sim listening");
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn host(&self) -> String {
        match self.addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                format!("127.0.0.1:{}", self.addr.port())
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                format!("[::1]:{}", self.addr.port())
            }
            _ => self.addr.to_string(),
        }
    }

    /// The API base, e.g. `http://127.0.0.1:PORT/rest/v1` (the sink's `base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}/rest/v1", self.host())
    }

    /// The control API, e.g. `http://127.0.0.1:PORT/sim`.
    pub fn control_url(&self) -> String {
        format!("http://{}/sim", self.host())
    }

    /// The state, to inspect or drive in-process.
    pub fn state(&self) -> &ArcadiaSimState {
        &self.state
    }

    /// Stop serving: graceful for up to 5 s, then the task is aborted.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}
