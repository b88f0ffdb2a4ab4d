//! Shared set-up of the broker tests: the simulator, a real journal and the commander.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use espm_client::{ClientConfig, PmClient, RetryPolicy};
use espm_command::{Account, CommandView, Commander};
use espm_events::{CloudEvent, Origin};
use espm_journal::{Journal, Scope};
use espm_sim::SimServer;
use espm_testkit::sim::start_sim;
use espm_testkit::SimControl;
use serde_json::{json, Value};

pub const USER: &str = "sim_provider";
pub const PASS: &str = "sim_password";
/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct World {
    pub sim: SimServer,
    pub ctl: SimControl,
    pub journal: Journal,
    pub commander: Commander,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn account(sim: &SimServer) -> Account {
    let mut cfg = ClientConfig::new(sim.base_url(), USER, PASS);
    cfg.retry = RetryPolicy::none();
    cfg.timeout = Duration::from_secs(10);
    Account {
        client: PmClient::new(cfg).unwrap(),
        scope: Scope::new("sim", "main"),
        origin: Origin::new("sim", "main"),
    }
}

impl World {
    pub async fn new() -> World {
        init_logs();
        let sim = start_sim(USER, PASS, 7).await;
        let ctl = SimControl::of(&sim);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let journal = Journal::open(&path).unwrap();
        let commander = Commander::new(journal.clone(), [account(&sim)]);
        World {
            sim,
            ctl,
            journal,
            commander,
            path,
            _dir: dir,
        }
    }

    /// A commander whose journal refuses every write: nothing it is given gets journalled.
    pub fn read_only_commander(&self) -> Commander {
        let ro = Journal::open_read_only(&self.path).unwrap();
        Commander::new(ro, [account(&self.sim)])
    }

    /// PM calls of `key` (e.g. `POST /connect/account/5`).
    pub fn calls(&self, key: &str) -> u64 {
        self.sim.state().calls().get(key).copied().unwrap_or(0)
    }

    /// A customer asking to connect.
    pub async fn connection_request(&self) -> i64 {
        let c = self.ctl.customer().await;
        self.ctl.request_connection(c, &[]).await;
        c
    }

    pub fn connected(&self, customer: i64) -> bool {
        self.sim.state().with_world(|w| w.is_connected(customer))
    }

    pub fn events(&self) -> Vec<CloudEvent> {
        self.journal
            .read_outbox("test", 0, 10_000)
            .unwrap()
            .into_iter()
            .map(|r| std::sync::Arc::unwrap_or_clone(r.event))
            .collect()
    }

    /// The result events of command `id`.
    pub fn results(&self, id: &str) -> Vec<CloudEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.causationid.as_deref() == Some(id))
            .collect()
    }

    /// Wait until command `id` has a final result.
    pub async fn finished(&self, id: &str) -> CommandView {
        let c = self.commander.clone();
        espm_testkit::e2e::eventually(WAIT, || {
            let c = c.clone();
            async move {
                c.command(id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|v| v.state != "pending")
            }
        })
        .await
        .unwrap_or_else(|| panic!("command {id} did not finish within {WAIT:?}"))
    }
}

/// A structured-mode command event.
pub fn structured(id: &str, ty: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:crm",
        "type": ty,
        "datacontenttype": "application/json",
        "data": data,
    })
}

pub fn accept(request_id: i64) -> Value {
    json!({"kind": "connection", "requestId": request_id, "decision": "accept", "note": "welcome"})
}

/// The `.failed` event of command `id`, with its problem detail.
pub fn failed_detail(w: &World, id: &str) -> String {
    let r = w.results(id);
    assert_eq!(r.len(), 1, "one result event for {id}: {r:?}");
    assert_eq!(r[0].ty, espm_events::COMMAND_FAILED, "{:?}", r[0]);
    r[0].data["error"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
