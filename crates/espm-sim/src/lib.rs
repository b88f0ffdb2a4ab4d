//! A stateful in-memory Portfolio Manager simulator with fault injection and a ground-truth ledger.
//!
//! PM's provider-side web services live under `/ws` (same XML as PM, HTTP Basic auth); the
//! customer-side actions, fault injection and the ledger are a JSON control API under `/sim`
//! (see the crate README). State is one [`World`] behind a mutex; `world` is a pure state machine.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use espm_sim::{SimConfig, SimServer};
//! let sim = SimServer::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("PM at {}, control at {}", sim.base_url(), sim.control_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod control_api;
pub mod enums;
pub mod faults;
pub mod ledger;
pub mod pm_api;
pub mod scenario;
pub mod validate;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use faults::{ClearCommit, FaultConfig, FaultKind};
pub use ledger::{Delivery, Ledger, LedgerSummary};
pub use world::{
    Access, CustomerSpec, PendingListKind, PendingTrigger, SimError, Target, World,
    PROVIDER_ACCOUNT_ID,
};

/// Simulator settings.
#[derive(Clone)]
pub struct SimConfig {
    /// The provider's PM username (HTTP Basic).
    pub username: String,
    /// The provider's PM password (HTTP Basic). Never printed.
    pub password: String,
    /// Seed for ids, names and the scenario (and fault draws).
    pub seed: u64,
    /// Whether to load the demo scenario.
    pub scenario: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            username: "sim_provider".into(),
            password: "sim_password".into(),
            seed: 42,
            scenario: true,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("seed", &self.seed)
            .field("scenario", &self.scenario)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: SimConfig,
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<faults::Faults>,
    /// Bumped on reset, so a response still in flight cannot settle a read of the new ledger.
    pub(crate) generation: AtomicU64,
    /// Authorised `/ws` requests received, by method and path (`GET /customer/42`).
    pub(crate) calls: Mutex<BTreeMap<String, u64>>,
}

/// The simulator's shared state (cheap to clone).
#[derive(Clone)]
pub struct SimState {
    pub(crate) inner: Arc<Shared>,
}

fn fresh_world(cfg: &SimConfig) -> World {
    let mut world = World::new(cfg.seed);
    if cfg.scenario {
        if let Err(e) = scenario::populate(&mut world) {
            // The scenario is fixed code; failing means a bug, so start empty rather than panic.
            tracing::error!(error = %e, "espm-sim scenario failed; starting with an empty world");
            world = World::new(cfg.seed);
        }
    }
    world
}

impl SimState {
    /// A fresh world (with the scenario when `cfg.scenario`) and no faults.
    pub fn new(cfg: SimConfig) -> Self {
        let world = fresh_world(&cfg);
        let faults = faults::Faults::new(cfg.seed);
        Self {
            inner: Arc::new(Shared {
                cfg,
                world: Mutex::new(world),
                faults: Mutex::new(faults),
                generation: AtomicU64::new(0),
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// Run `f` on the world under its lock (for embedding and tests).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.inner.world.lock())
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.inner.faults.lock().config().clone()
    }

    /// Replace the fault configuration (rates must be within 0..=1).
    pub fn set_faults(&self, config: FaultConfig) -> Result<(), String> {
        self.inner.faults.lock().set(config)
    }

    /// How many authorised `/ws` requests were received (faulted ones included), by method and
    /// path relative to `/ws`, e.g. `GET /customer/42`; query strings are not part of the key.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.inner.calls.lock().clone()
    }

    pub(crate) fn count_call(&self, method: &str, path: &str) {
        *self
            .inner
            .calls
            .lock()
            .entry(format!("{method} {path}"))
            .or_default() += 1;
    }

    /// Back to the initial world (same seed, same scenario), an empty ledger, no faults and no
    /// counted calls.
    pub fn reset(&self) {
        let world = fresh_world(&self.inner.cfg);
        let mut guard = self.inner.world.lock();
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        *guard = world;
        drop(guard);
        *self.inner.faults.lock() = faults::Faults::new(self.inner.cfg.seed);
        self.inner.calls.lock().clear();
    }
}

/// The whole simulator as a router: PM under `/ws` and, as PM's test environment, `/wstest`
/// (one world behind both), the control API under `/sim`.
pub fn router(state: SimState) -> axum::Router {
    axum::Router::new()
        .nest("/ws", pm_api::router(state.clone()))
        .nest("/wstest", pm_api::router(state.clone()))
        .nest("/sim", control_api::router(state))
}

/// A running simulator.
pub struct SimServer {
    addr: SocketAddr,
    state: SimState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Bind `listen` (port 0 picks a free port) and serve in the background.
    pub async fn start(cfg: SimConfig, listen: SocketAddr) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = SimState::new(cfg);
        let app = router(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "espm-sim server stopped");
            }
        });
        tracing::info!(%addr, "espm-sim listening");
        Ok(SimServer {
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
        let ip = self.addr.ip();
        match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                format!("127.0.0.1:{}", self.addr.port())
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                format!("[::1]:{}", self.addr.port())
            }
            _ => self.addr.to_string(),
        }
    }

    /// PM's base URI, e.g. `http://127.0.0.1:PORT/ws`.
    pub fn base_url(&self) -> String {
        format!("http://{}/ws", self.host())
    }

    /// PM's test-environment base URI, e.g. `http://127.0.0.1:PORT/wstest`: the same world.
    pub fn test_base_url(&self) -> String {
        format!("http://{}/wstest", self.host())
    }

    /// The control API, e.g. `http://127.0.0.1:PORT/sim`.
    pub fn control_url(&self) -> String {
        format!("http://{}/sim", self.host())
    }

    /// The state, to inspect or drive the world in-process.
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Stop serving: graceful for up to 5 s, then the server task is aborted.
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
