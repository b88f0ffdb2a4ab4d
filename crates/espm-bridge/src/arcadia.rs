//! The Arcadia subcommands (`arcadia-sim`, `arcadia set-property`) and the demo's Arcadia wiring.
//! The mapping itself lives in `espm-sink-arcadia`, the simulator in `espm-arcadia-sim`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use espm_arcadia::{AccountRef, SetProperty};
use espm_config::{ArcadiaSinkConfig, BridgeConfig, RetryPolicy, Secret, SinkConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::ArcadiaCommand;

/// App id and key of the demo's Arcadia simulator; they never leave the process and its temp dir.
const DEMO_APP_ID: &str = "demo-app";
const DEMO_APP_KEY: &str = "demo-app-key";

/// `espm-bridge arcadia-sim`.
pub async fn sim(listen: SocketAddr, app_id: String, app_key: String) -> Result<ExitCode> {
    let cfg = espm_arcadia_sim::ArcadiaSimConfig {
        app_id,
        app_key,
        seed: 42,
    };
    let server = espm_arcadia_sim::ArcadiaSimServer::start(cfg, listen)
        .await
        .with_context(|| format!("cannot start the Arcadia simulator on {listen}"))?;
    eprintln!(
        "Arcadia simulator: base_url {}  control API {}",
        server.base_url(),
        server.control_url()
    );
    tracing::info!(base_url = %server.base_url(), control = %server.control_url(), "Arcadia simulator running");
    crate::runtime::shutdown_signal().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `espm-bridge arcadia ...`.
pub async fn command(cmd: ArcadiaCommand) -> Result<ExitCode> {
    match cmd {
        ArcadiaCommand::SetProperty {
            config,
            sink,
            pid,
            account_id,
            key,
            value,
            accuracy,
            from,
            to,
        } => {
            let cfg = crate::commands::load_config(&config)?;
            let sink_cfg = pick_sink(&cfg, sink.as_deref(), &config)?;
            let sink = espm_sink_arcadia::ArcadiaSink::new(sink_cfg)
                .with_context(|| format!("sink {}", sink_cfg.name))?;
            let account = match (pid, account_id) {
                (Some(p), _) => AccountRef::Provider(p),
                (None, Some(a)) => AccountRef::Arcadia(a),
                (None, None) => bail!("give --pid or --account-id"),
            };
            let property = SetProperty {
                key_name: key,
                data_value: value,
                accuracy: accuracy.map(Into::into),
                from_date_time: from,
                to_date_time: to,
            };
            let stored = sink
                .service()
                .client()
                .set_property(&account, &property)
                .await
                .with_context(|| {
                    format!("Arcadia refused to set {} on {account}", property.key_name)
                })?;
            println!("{}", serde_json::to_string_pretty(&stored)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pick_sink<'a>(
    cfg: &'a BridgeConfig,
    name: Option<&str>,
    path: &Path,
) -> Result<&'a ArcadiaSinkConfig> {
    let arcadia: Vec<&ArcadiaSinkConfig> = cfg
        .sinks
        .iter()
        .filter_map(|s| match s {
            SinkConfig::Arcadia(a) => Some(a),
            _ => None,
        })
        .collect();
    match name {
        Some(n) => arcadia
            .into_iter()
            .find(|a| a.name == n)
            .with_context(|| format!("no arcadia sink named {n} in {}", path.display())),
        None => match arcadia.as_slice() {
            [one] => Ok(one),
            [] => bail!("{} has no sink of type \"arcadia\"", path.display()),
            _ => bail!("the configuration has several arcadia sinks: choose one with --sink"),
        },
    }
}

/// Start the demo's Arcadia simulator and add an arcadia sink for it to `cfg` (the key goes to a
/// file in `dir`, like a mounted secret). Pending requests are walked more often so that
/// accepted shares show up quickly.
pub async fn demo_sink(
    cfg: &mut BridgeConfig,
    dir: &Path,
) -> Result<espm_arcadia_sim::ArcadiaSimServer> {
    let server = espm_arcadia_sim::ArcadiaSimServer::start(
        espm_arcadia_sim::ArcadiaSimConfig {
            app_id: DEMO_APP_ID.into(),
            app_key: DEMO_APP_KEY.into(),
            seed: 42,
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the Arcadia simulator")?;
    let key_file = dir.join("arcadia-app-key");
    std::fs::write(&key_file, DEMO_APP_KEY)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    for a in &mut cfg.accounts {
        a.pending_interval = Duration::from_secs(5);
    }
    cfg.sinks.push(SinkConfig::Arcadia(ArcadiaSinkConfig {
        name: "arcadia".into(),
        base_url: server.base_url(),
        app_id: DEMO_APP_ID.into(),
        app_key_file: Some(key_file),
        app_key_env: None,
        provider_account_id: "espm-{propertyId}".into(),
        customer_class: "2".into(),
        custom_fields: Default::default(),
        tariff_accuracy: 100,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
    }));
    Ok(server)
}

/// The demo provider: accepts every connection and property share the bridge has seen pending,
/// recording the answer in the journal like `espm-bridge pm accept`, so the `resolved` events say
/// `accepted` and the Arcadia sink mirrors the properties.
pub async fn provider_desk(cfg: BridgeConfig, password: Secret, stop: CancellationToken) {
    let Some(acct) = cfg.accounts.first().cloned() else {
        return;
    };
    let client = match crate::runtime::client_for(&acct, password) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "demo provider desk: no PM client");
            return;
        }
    };
    let scope = espm_journal::Scope::new(acct.environment.as_str(), acct.name.clone());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(4)) => {}
        }
        let Ok(journal) = espm_journal::Journal::open(&cfg.journal.path) else {
            continue;
        };
        for kind in [
            espm_model::PendingKind::Connection,
            espm_model::PendingKind::PropertyShare,
        ] {
            let (list, id_field) = (kind.as_str(), kind.id_field());
            let Ok(pending) = journal.pending_snapshot(&scope, list) else {
                continue;
            };
            for stored in pending.into_values() {
                // The snapshot keeps `{data, tracked}` per request: answer only what PM still
                // lists (not resolved, not missed by the last walk).
                let item = espm_events::TrackedRequest::from_stored(stored);
                if !item.is_pending() || item.missed_walks > 0 {
                    continue;
                }
                let Some(id) = item.data.get(id_field).and_then(|v| v.as_i64()) else {
                    continue;
                };
                // Recorded first: the poller may see the request gone right after PM's answer.
                if journal.record_answer(&scope, list, id, "accepted").is_err() {
                    continue;
                }
                if let Err(e) = client
                    .answer(kind, id, espm_model::Action::Accept, Some("Welcome"))
                    .await
                {
                    tracing::debug!(error = %e, list, id, "demo provider desk: accept failed");
                }
            }
        }
    }
}
