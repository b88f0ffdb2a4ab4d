//! The PM simulator for tests: start it, and drive it through a typed client for its control
//! API (`/sim`, see `crates/espm-sim/README.md`). Request and answer types are the simulator's
//! own ([`espm_sim::control_api`], [`espm_sim::Ledger`], [`espm_sim::FaultConfig`]), so the client
//! and the server cannot drift apart.

use std::collections::BTreeMap;

use espm_sim::control_api::{
    AccountRequest, BulkCreated, BulkRequest, ConnectionRequest, ConnectionRequested,
    CustomerCreated, MeterShareRequest, MeterShared, Notified, PropertyShareRequest,
    PropertyShared, ShareTarget, TransferRequest,
};
use espm_sim::{
    Access, CustomerSpec, FaultConfig, Ledger, LedgerSummary, SimConfig, SimServer, Target,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A simulator without the demo scenario, on a free loopback port.
pub async fn start_sim(username: &str, password: &str, seed: u64) -> SimServer {
    start_sim_with(SimConfig {
        username: username.into(),
        password: password.into(),
        seed,
        scenario: false,
    })
    .await
}

/// A simulator with this configuration, on a free loopback port.
pub async fn start_sim_with(cfg: SimConfig) -> SimServer {
    SimServer::start(cfg, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .unwrap_or_else(|e| panic!("cannot start the simulator: {e}"))
}

/// An answer of the control API whose status the caller checks itself.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body (`Null` when there is none).
    pub body: Value,
}

/// A client for the simulator's control API. Typed calls panic (with the status and the body)
/// when the simulator refuses them; [`SimControl::request`] returns any answer.
#[derive(Debug, Clone)]
pub struct SimControl {
    url: String,
    http: reqwest::Client,
}

impl SimControl {
    /// A client for the control API at `control_url` (e.g. `http://127.0.0.1:PORT/sim`).
    pub fn new(control_url: impl Into<String>) -> Self {
        Self {
            url: control_url.into(),
            http: reqwest::Client::new(),
        }
    }

    /// A client for this running simulator.
    pub fn of(sim: &SimServer) -> Self {
        Self::new(sim.control_url())
    }

    /// The control API's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Any control call (`path` relative to `/sim`, e.g. `/ledger?summary=true`), whatever it
    /// answers. Panics only when the simulator cannot be reached.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} /sim{path}: {e}"));
        let status = resp.status();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} /sim{path}: reading the answer: {e}"));
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} /sim{path}: {status}, not JSON ({e}): {text}"))
        };
        Reply { status, body }
    }

    /// A call that must succeed, its answer as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> T {
        let body = body.map(|b| serde_json::to_value(b).expect("request serializes"));
        let reply = self.request(method.clone(), path, body.as_ref()).await;
        assert!(
            reply.status.is_success(),
            "{method} /sim{path} {}: {} {}",
            body.unwrap_or(Value::Null),
            reply.status,
            reply.body
        );
        serde_json::from_value(reply.body.clone()).unwrap_or_else(|e| {
            panic!(
                "{method} /sim{path}: unexpected answer ({e}): {}",
                reply.body
            )
        })
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> T {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        self.call(Method::GET, path, None::<&Value>).await
    }

    /// `POST /customers`: a customer (blank fields are generated from the seed). Its account id.
    pub async fn create_customer(&self, spec: &CustomerSpec) -> i64 {
        let c: CustomerCreated = self.post("/customers", spec).await;
        c.account_id
    }

    /// A customer with a generated name. Its account id.
    pub async fn customer(&self) -> i64 {
        self.create_customer(&CustomerSpec::default()).await
    }

    /// `POST /connections`: the customer asks to connect (a pending connection request).
    pub async fn request_connection(&self, account_id: i64, custom_fields: &[(&str, &str)]) {
        let req = ConnectionRequest {
            account_id,
            custom_fields: fields(custom_fields),
        };
        let _: ConnectionRequested = self.post("/connections", &req).await;
    }

    /// `POST /shares/property`: the customer shares a property (pending). Its property id.
    pub async fn share_property(&self, req: &PropertyShareRequest) -> i64 {
        let r: PropertyShared = self.post("/shares/property", req).await;
        r.property_id
    }

    /// `POST /shares/meter`: the customer shares a meter (pending).
    pub async fn share_meter(&self, req: &MeterShareRequest) -> MeterShared {
        self.post("/shares/meter", req).await
    }

    /// `POST /shares/edit`: the owner changes an accepted share's access level. The new
    /// notifications' ids.
    pub async fn edit_share(&self, target: Target, access: Access) -> Vec<i64> {
        let req = ShareTarget::new(target).with_access(access);
        let r: Notified = self.post("/shares/edit", &req).await;
        r.notification_ids
    }

    /// `POST /unshare`: the owner removes the provider's access. The new notifications' ids.
    pub async fn unshare(&self, target: Target) -> Vec<i64> {
        let r: Notified = self.post("/unshare", &ShareTarget::new(target)).await;
        r.notification_ids
    }

    /// `POST /disconnect`: the customer disconnects. The new notifications' ids.
    pub async fn disconnect(&self, account_id: i64) -> Vec<i64> {
        let r: Notified = self
            .post("/disconnect", &AccountRequest { account_id })
            .await;
        r.notification_ids
    }

    /// `POST /transfer`: a property changes owner. The new notifications' ids.
    pub async fn transfer(&self, req: &TransferRequest) -> Vec<i64> {
        let r: Notified = self.post("/transfer", req).await;
        r.notification_ids
    }

    /// `POST /notifications`: `count` notifications, types round robin (empty: the four
    /// documented ones).
    pub async fn notifications(&self, count: usize, types: &[&str]) -> BulkCreated {
        let req = BulkRequest {
            count,
            types: types.iter().map(|t| t.to_string()).collect(),
        };
        self.post("/notifications", &req).await
    }

    /// `GET /ledger`: every notification and every read.
    pub async fn ledger(&self) -> Ledger {
        self.get("/ledger").await
    }

    /// `GET /ledger?summary=true`: the counts.
    pub async fn ledger_summary(&self) -> LedgerSummary {
        self.get("/ledger?summary=true").await
    }

    /// The ids of every notification ever created, in creation order.
    pub async fn created_ids(&self) -> Vec<i64> {
        self.ledger()
            .await
            .notifications
            .iter()
            .map(|n| n.id)
            .collect()
    }

    /// `GET /faults`.
    pub async fn faults(&self) -> FaultConfig {
        self.get("/faults").await
    }

    /// `PUT /faults`: replace the fault configuration. The configuration now in force.
    pub async fn set_faults(&self, faults: &FaultConfig) -> FaultConfig {
        self.call(Method::PUT, "/faults", Some(faults)).await
    }

    /// Every fault off.
    pub async fn clear_faults(&self) {
        self.set_faults(&FaultConfig::default()).await;
    }

    /// `GET /calls`: every authorised `/ws` request so far (faulted ones too), by method and
    /// path, e.g. `GET /customer/42`.
    pub async fn calls(&self) -> BTreeMap<String, u64> {
        self.get("/calls").await
    }

    /// How many times `GET /customer/{id}` was requested.
    pub async fn customer_lookups(&self, id: i64) -> u64 {
        self.calls()
            .await
            .get(&format!("GET /customer/{id}"))
            .copied()
            .unwrap_or(0)
    }

    /// `POST /reset`: back to the seeded start (world, ledger, faults, counted calls).
    pub async fn reset(&self) {
        let _: Value = self.call(Method::POST, "/reset", None::<&Value>).await;
    }

    /// `GET /world`: customers, properties, meters, connections, shares, pending requests.
    pub async fn world(&self) -> Value {
        self.get("/world").await
    }

    /// The pending requests (`connections`, `properties`, `meters`) from `GET /world`.
    pub async fn pending_requests(&self) -> Value {
        self.world().await["pending"].take()
    }
}

/// Custom fields as the control API takes them (`None` when empty).
pub fn fields(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}
