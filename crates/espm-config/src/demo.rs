//! The demo configuration: the simulator, a console sink, a throw-away journal.

use std::path::Path;
use std::time::Duration;

use crate::{
    default_customer_cache_ttl, default_customer_lookup_timeout, AccountConfig, BridgeConfig,
    ConsoleSinkConfig, DrainMode, Environment, JournalConfig, MetricsConfig, SinkConfig,
};

/// Simulator username used by [`BridgeConfig::demo`] and `config/demo.toml`.
pub const DEMO_USERNAME: &str = "demo";
/// Environment variable holding the simulator password in the demo.
pub const DEMO_PASSWORD_ENV: &str = "ESPM_SIM_PASSWORD";

impl BridgeConfig {
    /// The demo: one `sim` account named `sim` at `base_url` (e.g. `http://127.0.0.1:18080/ws`),
    /// user [`DEMO_USERNAME`] with the password in [`DEMO_PASSWORD_ENV`], a `console` sink, the
    /// journal at `journal_dir/journal.db` (pass a temporary directory), metrics on
    /// `127.0.0.1:9464`, and short intervals so events show up quickly. Same content as
    /// `config/demo.toml`.
    pub fn demo(base_url: &str, journal_dir: &Path) -> BridgeConfig {
        BridgeConfig {
            journal: JournalConfig {
                path: journal_dir.join("journal.db"),
                retention: Duration::from_secs(86_400),
                ..JournalConfig::default()
            },
            metrics: MetricsConfig {
                listen: "127.0.0.1:9464".to_string(),
            },
            accounts: vec![AccountConfig {
                name: "sim".to_string(),
                environment: Environment::Sim,
                base_url: Some(base_url.to_string()),
                username: DEMO_USERNAME.to_string(),
                password_file: None,
                password_env: Some(DEMO_PASSWORD_ENV.to_string()),
                drain_mode: DrainMode::PeekThenClear,
                poll_interval: Duration::from_secs(5),
                pending_interval: Duration::from_secs(30),
                request_timeout: Duration::from_secs(10),
                customer_cache_ttl: default_customer_cache_ttl(),
                customer_lookup_timeout: default_customer_lookup_timeout(),
                policy: None,
            }],
            sinks: vec![SinkConfig::Console(ConsoleSinkConfig {
                name: "console".to_string(),
            })],
            api: None,
            command_topics: Vec::new(),
        }
    }
}
