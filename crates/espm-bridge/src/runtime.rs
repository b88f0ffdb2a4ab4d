//! Wiring: journal, sinks and their drivers, pollers, the metrics server, compaction, signals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use espm_client::{ClientConfig, Password, PmClient};
use espm_config::{AccountConfig, BridgeConfig, DrainMode, Secret, SinkConfig};
use espm_journal::{Journal, JournalLock, Scope, SinkCursor, Spool};
use espm_poller::{CustomerLookup, Poller, PollerConfig, PollerStatus};
use espm_sink::Sink;
use espm_sink::{run_sink, DriverConfig, SinkState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::server::{self, AccountEntry, Health, SinkEntry};

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
    // Kafka, NATS and webhook constructors run `validate()` themselves; the infallible console
    // and file constructors get it here, so every sink rejects what `check-config` rejects.
    let check = |problems| espm_sink::SinkError::check(cfg.name(), problems);
    let path = format!("sinks.{}", cfg.name());
    Ok(match cfg {
        SinkConfig::Console(c) => {
            check(c.validate(&path))?;
            Arc::new(espm_sink::ConsoleSink::new(c))
        }
        SinkConfig::File(c) => {
            check(c.validate(&path))?;
            Arc::new(espm_sink::FileSink::new(c))
        }
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
pub async fn run(cfg: BridgeConfig, opts: Options, stop: CancellationToken) -> Result<RunReport> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("config: {p}");
        }
        return Err(espm_config::ConfigError::Invalid(problems).into());
    }
    let prometheus = server::install_recorder()?;
    // One writer per journal, held until this function returns: a second bridge exits here.
    let lock = JournalLock::acquire(&cfg.journal.path)?;
    tracing::debug!(lock = %lock.path().display(), "journal lock held");
    let journal_path = cfg.journal.path.clone();
    let journal = tokio::task::spawn_blocking(move || Journal::open(&journal_path))
        .await?
        .with_context(|| format!("cannot open the journal at {}", cfg.journal.path.display()))?;
    let configured: Vec<String> = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
    let orphans = journal
        .call(move |j| j.register_sinks(&configured))
        .await
        .context("cannot register the configured sinks in the journal")?;
    report_orphans(&orphans);

    let spool = Spool::for_journal(&cfg.journal.path, cfg.journal.spool_dir.clone());
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
        sink_states.push(SinkEntry {
            name: sc.name().to_string(),
            sink: sink.clone(),
            state: state.clone(),
            probe: Default::default(),
        });
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
    let mut poller_status: Vec<AccountEntry> = Vec::new();
    let mut command_accounts = Vec::new();
    // Accounts with a policy: it runs after each of their pending walks.
    let mut policies = Vec::new();
    for acct in &cfg.accounts {
        let password = match opts.passwords.get(&acct.name) {
            Some(p) => p.clone(),
            None => espm_config::resolve_password(acct)
                .with_context(|| format!("accounts.{}: password", acct.name))?,
        };
        let client = client_for(acct, password)?;
        // The poller and the command path share the client, so their PM calls take turns.
        command_accounts.push(espm_command::Account {
            client: client.clone(),
            scope: Scope::new(acct.environment.as_str(), acct.name.clone()),
            origin: espm_events::Origin::new(acct.environment.as_str(), acct.name.clone()),
        });
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
            min_free: cfg.journal.min_free.bytes(),
            spool: spool.clone(),
        };
        let mut poller = Poller::new(client, journal.clone(), pcfg, wakes.clone())
            .with_customer_lookup(CustomerLookup {
                ttl: acct.customer_cache_ttl,
                budget: acct.customer_lookup_timeout,
            });
        if let Some(policy) = &acct.policy {
            let walked = Arc::new(Notify::new());
            poller = poller.with_pending_walk_notify(walked.clone());
            policies.push((acct, policy, walked));
        }
        // A poll is "recent" for /status if it happened within a few intervals (errors back off).
        poller_status.push(AccountEntry {
            name: acct.name.clone(),
            status: poller.status(),
            max_age: acct.poll_interval * 3 + Duration::from_secs(120),
        });
        let span = tracing::info_span!("poller", account = %acct.name, environment = acct.environment.as_str());
        poller_tasks.push(tokio::spawn(poller.run(poll_stop.clone()).instrument(span)));
    }

    let commander =
        espm_command::Commander::new(journal.clone(), command_accounts).with_wakes(wakes.clone());
    // Commands a crash or shutdown left mid-call are checked against PM, not repeated.
    let resume = tokio::spawn({
        let commander = commander.clone();
        async move {
            match commander.resume().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(commands = n, "unfinished commands reconciled with PM"),
                Err(e) => tracing::error!(error = %e, "cannot reconcile unfinished commands"),
            }
        }
    });
    let api_stop = CancellationToken::new();
    let mut policy_tasks = Vec::new();
    for (acct, policy, walked) in policies {
        let origin = espm_events::Origin::new(acct.environment.as_str(), acct.name.clone());
        let policy = espm_policy::Policy::new(
            &acct.name,
            origin,
            policy,
            commander.clone(),
            journal.clone(),
        )
        .with_context(|| format!("accounts.{}.policy", acct.name))?
        .with_wakes(wakes.clone());
        let span = tracing::info_span!("policy", account = %acct.name);
        policy_tasks.push(tokio::spawn(
            policy.run(walked, api_stop.clone()).instrument(span),
        ));
    }
    let api_task = match &cfg.api {
        Some(api) => Some(start_api(api, commander.clone(), api_stop.clone()).await?),
        None => None,
    };
    let mut topic_tasks = Vec::new();
    for t in &cfg.command_topics {
        espm_command_topics::check(t).with_context(|| format!("command_topics {}", t.name()))?;
        let (t, commander, stop) = (t.clone(), commander.clone(), api_stop.clone());
        let span = tracing::info_span!("command_topic", topic = %t.name());
        topic_tasks.push(tokio::spawn(
            async move {
                if let Err(e) = espm_command_topics::run(&t, commander, stop).await {
                    tracing::error!(error = %e, "command topic stopped");
                }
            }
            .instrument(span),
        ));
    }

    let statuses: Vec<Arc<PollerStatus>> = poller_status.iter().map(|a| a.status.clone()).collect();
    let health = Arc::new(Health::new(journal.clone(), sink_states, poller_status));
    let listen = match opts.metrics_addr {
        Some(a) => a,
        None => cfg.metrics.listen.parse().with_context(|| {
            format!("metrics.listen {:?} is not an address", cfg.metrics.listen)
        })?,
    };
    let server_stop = CancellationToken::new();
    let monitor = tokio::spawn(health.clone().monitor(server_stop.clone()));
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
    // No new commands; those in flight finish and their result events are delivered below.
    api_stop.cancel();
    if let Some(t) = api_task {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, t).await.is_err() {
            tracing::warn!("the command API did not finish its requests within the grace period");
        }
    }
    for t in topic_tasks {
        // A command taken from a topic finishes and is committed before its consumer stops.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, t).await.is_err() {
            tracing::warn!("a command topic did not stop within the grace period; its uncommitted command is delivered again");
        }
    }
    for t in policy_tasks {
        // A policy stops between two requests; a command it began finishes first.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, t).await.is_err() {
            tracing::warn!("a policy did not stop within the grace period; an unfinished command is reconciled at the next start");
        }
    }
    resume.abort();
    for (mut t, status) in poller_tasks.into_iter().zip(statuses.iter()) {
        // A poller stops at once unless a clear=true is in flight: PM already handed that body
        // out, so it is awaited (bounded by the PM request timeout) and journalled or spooled,
        // even past the grace period.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, &mut t).await.is_err() {
            if status.holding_body() {
                tracing::warn!(
                    "grace period over, but a clear=true body is in flight: waiting to keep it"
                );
                let _ = t.await;
            } else {
                t.abort();
                tracing::error!("a poller did not stop within the grace period; stopped");
            }
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
    monitor.abort();
    server_stop.cancel();
    let report = RunReport {
        spooled: spool.pending(None).len(),
        unsaved: statuses.iter().any(|s| s.unsaved()),
    };
    if report.unsaved {
        tracing::error!("espm-bridge stopped; a drained PM body could only be written to stderr (see the UNJOURNALLED BODY block)");
    } else if report.spooled > 0 {
        tracing::warn!(spooled = report.spooled, dirs = ?spool.dirs(), "espm-bridge stopped with drained PM bodies in the spool; the next start ingests them");
    } else {
        tracing::info!("espm-bridge stopped cleanly");
    }
    Ok(report)
}

/// Bind the command API and serve it until `stop`.
async fn start_api(
    api: &espm_config::ApiConfig,
    commander: espm_command::Commander,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let source = api
        .token_source()
        .context("api: set token_file or token_env")?;
    let text = source.read().context("api: cannot read the API tokens")?;
    let tokens = espm_api::Tokens::parse(text.expose()).context("api: token list")?;
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .with_context(|| format!("api.listen {}: cannot listen", api.listen))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = espm_api::serve(listener, commander, tokens, stop).await {
            tracing::error!(error = %e, "the command API stopped");
        }
    }))
}

/// Cursors of sinks no longer configured hold back compaction forever: say so at every start.
fn report_orphans(orphans: &[SinkCursor]) {
    metrics::gauge!("espm_bridge_orphan_sink_cursors").set(orphans.len() as f64);
    for o in orphans {
        tracing::warn!(
            sink = %o.name,
            cursor = o.cursor,
            "the journal keeps a cursor for a sink that is no longer configured; compaction keeps every event it has not passed. Release it with `espm-bridge journal forget-sink {}`",
            o.name
        );
    }
}

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Drained bodies left in the spool (ingested at the next start).
    pub spooled: usize,
    /// A drained body could be neither journalled nor spooled and went to stderr.
    pub unsaved: bool,
}

impl RunReport {
    /// The exit code scripts can rely on: 0 clean, 75 (EX_TEMPFAIL) bodies wait in the spool, 74
    /// (EX_IOERR) a body could only be dumped to stderr.
    pub fn exit_code(&self) -> std::process::ExitCode {
        if self.unsaved {
            std::process::ExitCode::from(74)
        } else if self.spooled > 0 {
            std::process::ExitCode::from(75)
        } else {
            std::process::ExitCode::SUCCESS
        }
    }
}

/// Wait until every sink's cursor reached the outbox head, or the deadline.
async fn wait_drained(journal: &Journal, cfg: &BridgeConfig, deadline: tokio::time::Instant) {
    let names: Vec<String> = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
    loop {
        let n = names.clone();
        let pending = journal
            .call(move |j| {
                Ok(n.iter()
                    .map(|s| j.outbox_depth(s).map(|d| d.pending).unwrap_or(0))
                    .sum::<u64>())
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
        match journal
            .call(move |j| j.compact(retention, std::time::SystemTime::now()))
            .await
        {
            Ok(stats) => tracing::info!(?stats, "journal compacted"),
            Err(e) => tracing::warn!(error = %e, "journal compaction failed"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sink configuration `check-config` rejects, `run` (the sink's constructor) rejects
    /// too, for the same key. `(sink table, key the problem names)`.
    const REJECTED: &[(&str, &str)] = &[
        // Webhook
        (
            r#"type = "webhook"
url = "https://example.com/hook"
types = ["  "]"#,
            "types[0]",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
types = ["gov.*.revoked"]"#,
            "types[0]",
        ),
        (
            r#"type = "webhook"
url = "ftp://example.com/hook""#,
            "url",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
max_in_flight = 0"#,
            "max_in_flight",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
retry = { max_attempts = 0 }"#,
            "retry.max_attempts",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
retry = { schedule = ["5s", "30days"] }"#,
            "retry.schedule[1]",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
header_files = { X-Token = "/run/secrets/t" }
header_envs = { X-Token = "TOKEN" }"#,
            "header_envs.X-Token",
        ),
        (
            r#"type = "webhook"
url = "https://example.com/hook"
headers = { Authorization = "Bearer inline" }"#,
            "headers.Authorization",
        ),
        // Kafka
        (
            r#"type = "kafka"
brokers = "kafka:9092"
topic = "espm events!""#,
            "topic",
        ),
        (
            r#"type = "kafka"
brokers = "kafka:9092"
topic = "..""#,
            "topic",
        ),
        (
            r#"type = "kafka"
brokers = "kafka:9092"
topic = "{nope}""#,
            "topic",
        ),
        (
            r#"type = "kafka"
brokers = " , "
topic = "espm""#,
            "brokers",
        ),
        (
            r#"type = "kafka"
brokers = "kafka:9092"
topic = "espm"
create_topics = true
topic_partitions = 0"#,
            "topic_partitions",
        ),
        (
            r#"type = "kafka"
brokers = "kafka:9092"
topic = "espm"
secret_files = { "sasl.password" = "/run/secrets/p" }
secret_envs = { "sasl.password" = "P" }"#,
            "secret_envs.sasl.password",
        ),
        // NATS
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
stream = "espm.events""#,
            "stream",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
stream = "espm events""#,
            "stream",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
create_stream = true"#,
            "stream",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
subject = "acme.{type}"
stream = "ESPM"
create_stream = true
stream_subjects = ["espm.>"]"#,
            "stream_subjects",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
subject = "{environment}.events"
stream = "ESPM"
create_stream = true"#,
            "stream_subjects",
        ),
        (
            r#"type = "nats"
url = "http://127.0.0.1:4222""#,
            "url",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
username = "bridge""#,
            "username",
        ),
        (
            r#"type = "nats"
url = "nats://127.0.0.1:4222"
nkey_file = "/run/secrets/nkey"
credentials_file = "/run/secrets/creds""#,
            "credentials_file",
        ),
        // File and console
        (
            r#"type = "file"
path = """#,
            "path",
        ),
    ];

    fn sink(table: &str, name: &str, secret: &std::path::Path) -> SinkConfig {
        let mut text = format!("name = \"{name}\"\n{table}\n");
        if table.contains("\"webhook\"") {
            text.push_str(&format!("secret_file = \"{}\"\n", secret.display()));
        }
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_rejection_is_the_same_in_check_config_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("whsec");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let mut cases: Vec<(SinkConfig, &str)> = REJECTED
            .iter()
            .map(|(t, key)| (sink(t, "s", &secret), *key))
            .collect();
        cases.push((sink("type = \"console\"", "Not A Name", &secret), "name"));
        for (cfg, key) in &cases {
            let checked = cfg.validate("sinks[0]");
            assert!(
                checked.iter().any(|p| p.path == format!("sinks[0].{key}")),
                "check-config does not name sinks[0].{key} for {cfg:?}: {checked:?}"
            );
            let built = match build_sink(cfg) {
                Ok(_) => panic!("run accepts what check-config rejects: {cfg:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                built.contains(&format!("sinks.{}.{key}", cfg.name())),
                "run rejects {cfg:?} for another reason: {built}"
            );
        }
        // The same tables with the fault removed are accepted by both, so the cases test what
        // they say.
        let good = [
            "type = \"webhook\"\nurl = \"https://example.com/hook\"\ntypes = [\"gov.energystar.pm.*\"]",
            "type = \"kafka\"\nbrokers = \"kafka:9092\"\ntopic = \"espm.events\"",
            "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"acme.{type}\"\nstream = \"ESPM\"\ncreate_stream = true",
            "type = \"file\"\npath = \"/tmp/events.jsonl\"",
        ];
        for t in good {
            let cfg = sink(t, "s", &secret);
            assert_eq!(cfg.validate("sinks[0]"), vec![], "{t}");
            if let Err(e) = build_sink(&cfg) {
                panic!("{t}: {e:#}");
            }
        }
    }
}
