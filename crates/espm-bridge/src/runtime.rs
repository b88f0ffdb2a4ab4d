//! Wiring: journal, sinks and their drivers, pollers, the metrics server, compaction, signals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use espm_client::{ClientConfig, Password, PmClient};
use espm_config::{AccountConfig, BridgeConfig, DrainMode, Secret, SinkConfig};
use espm_journal::{Journal, Scope};
use espm_poller::{Poller, PollerConfig, PollerStatus};
use espm_sink::Sink;
use espm_sink::{run_sink, DriverConfig, SinkState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::server::{self, Health};

/// Everything `run` and `demo` need beyond the config file.
pub struct Options {
    /// Overrides `metrics.listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Grace period for in-flight deliveries on shutdown.
    pub grace: Duration,
    /// Passwords already known (the demo's simulator); others are read from files/env.
    pub passwords: BTreeMap<String, Secret>,
}

/// Build one sink from its configuration.
pub fn build_sink(cfg: &SinkConfig) -> Result<Arc<dyn Sink>> {
    Ok(match cfg {
        SinkConfig::Console(c) => Arc::new(espm_sink::ConsoleSink::new(c)),
        SinkConfig::File(c) => Arc::new(espm_sink::FileSink::new(c)),
        SinkConfig::Kafka(c) => Arc::new(espm_sink_kafka::KafkaSink::new(c)?),
        SinkConfig::Nats(c) => Arc::new(espm_sink_nats::NatsSink::new(c)?),
        SinkConfig::Webhook(c) => Arc::new(espm_sink_webhook::WebhookSink::new(c)?),
        SinkConfig::Arcadia(c) => Arc::new(espm_sink_arcadia::ArcadiaSink::new(c)?),
    })
}

/// The PM client of one configured account.
pub fn client_for(acct: &AccountConfig, password: Secret) -> Result<PmClient> {
    let base_url = acct.effective_base_url().with_context(|| {
        format!(
            "accounts.{}: base_url is required for environment {}",
            acct.name,
            acct.environment.as_str()
        )
    })?;
    let cfg = ClientConfig {
        base_url,
        username: acct.username.clone(),
        password: Password::new(password.expose()),
        timeout: acct.request_timeout,
        user_agent: format!("espm-bridge/{}", env!("CARGO_PKG_VERSION")),
        // The poller backs off between drains itself; the client's own retries stay short so a
        // shutdown is never stuck behind a long retry budget.
        retry: espm_client::RetryPolicy {
            max_retries: 3,
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(30),
        },
    };
    PmClient::new(cfg)
        .with_context(|| format!("accounts.{}: cannot build the PM client", acct.name))
}

/// Run until SIGTERM/SIGINT or `stop` is cancelled.
pub async fn run(cfg: BridgeConfig, opts: Options, stop: CancellationToken) -> Result<()> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("config: {p}");
        }
        anyhow::bail!("invalid configuration: {} problem(s)", problems.len());
    }
    let prometheus = server::install_recorder()?;
    let journal_path = cfg.journal.path.clone();
    let journal = tokio::task::spawn_blocking(move || Journal::open(&journal_path))
        .await?
        .with_context(|| format!("cannot open the journal at {}", cfg.journal.path.display()))?;

    let poll_stop = CancellationToken::new();
    let sink_stop = CancellationToken::new();
    let mut wakes = Vec::new();

    // Sinks first: they drain whatever an earlier run left in the outbox.
    let mut sinks = Vec::new();
    let mut sink_tasks = Vec::new();
    let mut sink_states = Vec::new();
    for sc in &cfg.sinks {
        let sink = build_sink(sc).with_context(|| format!("sink {}", sc.name()))?;
        let state = Arc::new(SinkState::new());
        sink_states.push((sc.name().to_string(), state.clone()));
        sinks.push(sink.clone());
        let wake = Arc::new(Notify::new());
        wakes.push(wake.clone());
        let span = tracing::info_span!("sink", sink = %sc.name(), kind = sink.kind());
        let task = tokio::spawn(
            run_sink(
                journal.clone(),
                sink,
                DriverConfig::default(),
                wake,
                sink_stop.clone(),
                state,
            )
            .instrument(span),
        );
        sink_tasks.push(task);
    }

    let mut poller_tasks = Vec::new();
    let mut poller_status: Vec<(String, Arc<PollerStatus>, Duration)> = Vec::new();
    for acct in &cfg.accounts {
        let password = match opts.passwords.get(&acct.name) {
            Some(p) => p.clone(),
            None => espm_config::resolve_password(acct)
                .with_context(|| format!("accounts.{}: password", acct.name))?,
        };
        let client = client_for(acct, password)?;
        let pcfg = PollerConfig {
            scope: Scope::new(acct.environment.as_str(), acct.name.clone()),
            drain_mode: match acct.drain_mode {
                DrainMode::Clear => espm_poller::DrainMode::Clear,
                DrainMode::PeekThenClear => espm_poller::DrainMode::PeekThenClear,
            },
            poll_interval: acct.poll_interval,
            pending_interval: acct.pending_interval,
            max_error_backoff: acct
                .poll_interval
                .max(Duration::from_secs(5))
                .min(Duration::from_secs(300)),
        };
        let poller = Poller::new(client, journal.clone(), pcfg, wakes.clone());
        // A poll is "recent" for /readyz if it happened within a few intervals (errors back off).
        poller_status.push((
            acct.name.clone(),
            poller.status(),
            acct.poll_interval * 3 + Duration::from_secs(120),
        ));
        let span = tracing::info_span!("poller", account = %acct.name, environment = acct.environment.as_str());
        poller_tasks.push(tokio::spawn(poller.run(poll_stop.clone()).instrument(span)));
    }

    let health = Arc::new(Health::new(journal.clone(), sink_states, poller_status));
    let listen = match opts.metrics_addr {
        Some(a) => a,
        None => cfg.metrics.listen.parse().with_context(|| {
            format!("metrics.listen {:?} is not an address", cfg.metrics.listen)
        })?,
    };
    let server_stop = CancellationToken::new();
    let server = server::serve(listen, prometheus, health, server_stop.clone()).await?;
    tracing::info!(metrics = %server, accounts = cfg.accounts.len(), sinks = cfg.sinks.len(), "espm-bridge running");

    let compaction = tokio::spawn(compact_periodically(
        journal.clone(),
        cfg.journal.retention,
        poll_stop.clone(),
    ));

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown signal received: stopping polls"),
        _ = stop.cancelled() => tracing::info!("stop requested: stopping polls"),
    }
    // One deadline for everything, so the process exits before Kubernetes' own SIGKILL.
    let deadline = tokio::time::Instant::now() + opts.grace;
    poll_stop.cancel();
    for t in poller_tasks {
        // A poller only stops between drains (a clear=true response may be on its way); wait for
        // it, but not past the deadline.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, t).await.is_err() {
            tracing::error!(
                "a poller was still inside a PM call when the grace period ended; stopping anyway"
            );
        }
    }
    // Let sinks drain what is already in the outbox, up to the grace period, then stop them.
    wait_drained(&journal, &cfg, deadline).await;
    sink_stop.cancel();
    for t in sink_tasks {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, t).await.is_err() {
            tracing::warn!(
                "a sink did not finish its batch within the grace period; it stays in the outbox"
            );
        }
    }
    for s in &sinks {
        s.close(
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(100)),
        )
        .await;
    }
    compaction.abort();
    server_stop.cancel();
    tracing::info!("espm-bridge stopped cleanly");
    Ok(())
}

/// Wait until every sink's cursor reached the outbox head, or the deadline.
async fn wait_drained(journal: &Journal, cfg: &BridgeConfig, deadline: tokio::time::Instant) {
    let names: Vec<String> = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
    loop {
        let j = journal.clone();
        let n = names.clone();
        let pending = tokio::task::spawn_blocking(move || {
            n.iter()
                .map(|s| j.outbox_depth(s).map(|d| d.pending).unwrap_or(0))
                .sum::<u64>()
        })
        .await
        .unwrap_or(0);
        if pending == 0 || tokio::time::Instant::now() >= deadline {
            if pending > 0 {
                tracing::warn!(
                    pending,
                    "grace period over: undelivered events stay in the outbox for the next start"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn compact_periodically(journal: Journal, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let j = journal.clone();
        match tokio::task::spawn_blocking(move || {
            j.compact(retention, std::time::SystemTime::now())
        })
        .await
        {
            Ok(Ok(stats)) => tracing::info!(?stats, "journal compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "journal compaction failed"),
            Err(e) => tracing::warn!(error = %e, "journal compaction task failed"),
        }
    }
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
