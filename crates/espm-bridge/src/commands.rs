//! One function per subcommand: parse arguments into library calls, print results.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use espm_config::{BridgeConfig, Secret};
use espm_journal::Journal;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    Command, DlqCommand, JournalCommand, Output, PmCommand, RequestKind, UnshareKind,
    WebhookCommand, EXIT_CONFIG,
};
use crate::runtime::{self, Options};

/// Password the demo's simulator accepts; it never leaves the process.
const DEMO_PASSWORD: &str = "demo-password";

/// Run one subcommand.
pub async fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run {
            config,
            metrics_addr,
            grace,
        } => {
            let cfg = load_config(&config)?;
            runtime::run(
                cfg,
                Options {
                    metrics_addr,
                    grace,
                    passwords: BTreeMap::new(),
                },
                CancellationToken::new(),
            )
            .await
            .map(|report| report.exit_code())
        }
        Command::Demo {
            metrics_addr,
            sim_listen,
            activity_every,
            duration,
            journal,
            arcadia,
        } => {
            demo(
                metrics_addr,
                sim_listen,
                activity_every,
                duration,
                journal,
                arcadia,
            )
            .await
        }
        Command::ArcadiaSim {
            listen,
            app_id,
            app_key,
        } => crate::arcadia::sim(listen, app_id, app_key).await,
        Command::Arcadia { command } => crate::arcadia::command(command).await,
        Command::Sim {
            listen,
            username,
            password,
            seed,
            empty,
        } => {
            let cfg = espm_sim::SimConfig {
                username,
                password,
                seed,
                scenario: !empty,
            };
            let server = espm_sim::SimServer::start(cfg, listen)
                .await
                .with_context(|| format!("cannot start the simulator on {listen}"))?;
            eprintln!(
                "PM simulator: base_url {}  control API {}",
                server.base_url(),
                server.control_url()
            );
            tracing::info!(base_url = %server.base_url(), control = %server.control_url(), "simulator running");
            runtime::shutdown_signal().await;
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Normalize {
            file,
            environment,
            account,
        } => normalize(&file, environment, account),
        Command::CheckConfig { config } => check_config(&config),
        Command::Journal {
            path,
            config,
            command: JournalCommand::Reprocess { raw_id },
        } => reprocess(open_journal(path, config, Access::Write)?.journal, raw_id).await,
        Command::Journal {
            path,
            config,
            command,
        } => {
            // Inspection never writes, so it never waits for (or blocks) a running bridge.
            let access = match command {
                JournalCommand::Depth { .. }
                | JournalCommand::Quarantine { .. }
                | JournalCommand::History { .. } => Access::Read,
                _ => Access::Write,
            };
            journal_cmd(open_journal(path, config, access)?, command)
        }
        Command::Pm {
            config,
            account,
            command_id,
            command,
        } => pm(&config, account.as_deref(), command_id, command).await,
        Command::Dlq {
            path,
            config,
            command,
        } => {
            let access = match command {
                DlqCommand::List { .. } => Access::Read,
                _ => Access::Write,
            };
            dlq_cmd(open_journal(path, config, access)?, command)
        }
        Command::Webhook {
            path,
            config,
            command,
        } => {
            let access = match command {
                WebhookCommand::Status { .. } => Access::Read,
                WebhookCommand::Enable { .. } => Access::Write,
            };
            webhook_cmd(open_journal(path, config, access)?, command)
        }
    }
}

fn webhook_cmd(opened: Opened, cmd: WebhookCommand) -> Result<ExitCode> {
    let j = &opened.journal;
    let known = |name: &str| -> Result<()> {
        if let Some(sinks) = &opened.sinks {
            if !sinks.iter().any(|s| s == name) {
                bail!("no sink named {name:?} in the configuration");
            }
        }
        Ok(())
    };
    match cmd {
        WebhookCommand::Enable { name } => {
            known(&name)?;
            if j.enable_sink(&name)? {
                println!("{name}: enabled; a running bridge resumes delivery within a second");
            } else {
                println!("{name}: was not disabled");
            }
        }
        WebhookCommand::Status { name, output } => {
            known(&name)?;
            let health = j.sink_health(&name)?;
            let queued = j.retry_count(&name)?;
            let next = j.next_retry_at(&name)?;
            match output {
                Output::Json => {
                    let v = serde_json::json!({
                        "sink": name,
                        "disabled": health.disabled_reason.is_some(),
                        "disabled_reason": health.disabled_reason,
                        "failing_for_seconds": health.failing_since.map(age_seconds),
                        "retry_queue": queued,
                        "next_retry_in_seconds": next.map(|t| t
                            .duration_since(SystemTime::now())
                            .map(|d| d.as_secs())
                            .unwrap_or(0)),
                    });
                    println!("{v}");
                }
                Output::Text => {
                    match &health.disabled_reason {
                        Some(r) => println!("{name}: DISABLED ({r}); re-enable with `espm-bridge webhook enable {name}`"),
                        None => println!("{name}: enabled"),
                    }
                    if let Some(t) = health.failing_since {
                        println!("failing for {}s", age_seconds(t));
                    }
                    println!("retry queue: {queued} event(s)");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn load_config(path: &Path) -> Result<BridgeConfig> {
    match espm_config::load_and_validate(path) {
        Ok(c) => Ok(c),
        Err(e) => {
            for p in e.problems() {
                eprintln!("{}: {p}", path.display());
            }
            Err(anyhow::Error::new(e).context(format!("invalid configuration {}", path.display())))
        }
    }
}

fn check_config(path: &Path) -> Result<ExitCode> {
    match espm_config::load_and_validate(path) {
        Ok(cfg) => {
            println!(
                "{}: OK ({} account(s), {} sink(s))",
                path.display(),
                cfg.accounts.len(),
                cfg.sinks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if e.problems().is_empty() {
                eprintln!("{}: {e}", path.display());
            }
            for p in e.problems() {
                eprintln!("{}: {p}", path.display());
            }
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn normalize(file: &str, environment: String, account: String) -> Result<ExitCode> {
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    }
    let origin = espm_events::Origin {
        environment,
        account,
    };
    match espm_events::normalize_document(&origin, &bytes) {
        Ok(events) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let written = events
                .iter()
                .try_for_each(|e| {
                    out.write_all(&e.to_json_bytes())
                        .and_then(|()| out.write_all(b"\n"))
                })
                .and_then(|()| out.flush());
            match written {
                // `normalize ... | head` closing the pipe early is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e.into()),
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
        }
        Err(e) => {
            eprintln!("espm-bridge normalize: {file}: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// How an inspection or maintenance command opens the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read-only: no migration, no checkpoint, no lock a running bridge could wait for.
    Read,
    /// Read-write (replay, drop, compact, reprocess, forget-sink), beside a running bridge.
    Write,
}

/// The journal a command works on, with what `--config` says about it.
struct Opened {
    journal: Journal,
    /// `journal.retention`, when a configuration was given.
    retention: Option<Duration>,
    /// The configured sink names, when a configuration was given.
    sinks: Option<Vec<String>>,
}

/// The journal named by `--path` or by `journal.path` in `--config`.
fn open_journal(path: Option<PathBuf>, config: Option<PathBuf>, access: Access) -> Result<Opened> {
    let (path, retention, sinks) = match (path, config) {
        (Some(p), _) => (p, None, None),
        (None, Some(c)) => {
            let cfg = espm_config::load(&c).map_err(anyhow::Error::new)?;
            let sinks = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
            (cfg.journal.path, Some(cfg.journal.retention), Some(sinks))
        }
        (None, None) => bail!("give --path JOURNAL_FILE or --config CONFIG_FILE"),
    };
    if !path.exists() {
        bail!("no journal at {}", path.display());
    }
    let journal = match access {
        Access::Read => Journal::open_read_only(&path),
        Access::Write => Journal::open(&path),
    }
    .with_context(|| format!("cannot open the journal at {}", path.display()))?;
    Ok(Opened {
        journal,
        retention,
        sinks,
    })
}

/// Seconds since `t` (JSON output).
fn age_seconds(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One JSON document on stdout.
fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn age(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
        None => "-".into(),
    }
}

async fn reprocess(j: Journal, raw_id: i64) -> Result<ExitCode> {
    let r = espm_poller::reprocess(&j, espm_journal::RawId(raw_id))
        .await
        .with_context(|| format!("cannot reprocess raw body {raw_id}"))?;
    if r.still_bad {
        println!("raw body {raw_id} still does not parse; it stays quarantined");
        return Ok(ExitCode::from(1));
    }
    println!(
        "raw body {raw_id}: {} notifications parsed, {} new events in the outbox (a running bridge delivers them)",
        r.notifications, r.new_events
    );
    Ok(ExitCode::SUCCESS)
}

fn journal_cmd(opened: Opened, cmd: JournalCommand) -> Result<ExitCode> {
    let Opened {
        journal: j,
        retention: configured,
        sinks: configured_sinks,
    } = opened;
    // `None` without --config: nobody can tell whether a cursor is still in use.
    let is_configured = |name: &str| {
        configured_sinks
            .as_ref()
            .map(|c| c.iter().any(|s| s == name))
    };
    match cmd {
        JournalCommand::Depth {
            output: Output::Json,
        } => {
            let mut sinks = Vec::new();
            for s in j.sinks()? {
                let d = j.outbox_depth(&s.name)?;
                sinks.push(serde_json::json!({
                    "sink": s.name,
                    "cursor": s.cursor,
                    "pending": d.pending,
                    "oldest_pending_at": d.oldest_enqueued_at.map(rfc3339),
                    "oldest_pending_age_seconds": d.oldest_enqueued_at.map(age_seconds),
                    "dead_letters": j.dlq_count(Some(&s.name))?,
                    "configured": is_configured(&s.name),
                }));
            }
            print_json(&serde_json::json!({ "outbox_head": j.head_seq()?, "sinks": sinks }))?;
        }
        JournalCommand::Depth {
            output: Output::Text,
        } => {
            println!(
                "{:<24} {:>10} {:>10} {:>14} {:>8}  NOTE",
                "SINK", "CURSOR", "PENDING", "OLDEST", "DLQ"
            );
            let mut orphans = 0;
            for s in j.sinks()? {
                let d = j.outbox_depth(&s.name)?;
                let dlq = j.dlq_count(Some(&s.name))?;
                let note = if is_configured(&s.name) == Some(false) {
                    orphans += 1;
                    "not configured: holds back compaction"
                } else {
                    ""
                };
                println!(
                    "{:<24} {:>10} {:>10} {:>14} {:>8}  {note}",
                    s.name,
                    s.cursor,
                    d.pending,
                    age(d.oldest_enqueued_at),
                    dlq
                );
            }
            println!("outbox head: {}", j.head_seq()?);
            if orphans > 0 {
                println!(
                    "release a cursor nobody reads with: espm-bridge journal forget-sink NAME"
                );
            }
        }
        JournalCommand::Quarantine { show: Some(id), .. } => {
            match j.raw_body(espm_journal::RawId(id))? {
                Some(b) => std::io::stdout().write_all(&b)?,
                None => bail!("no raw body {id}"),
            }
        }
        JournalCommand::Quarantine {
            show: None,
            output: Output::Json,
        } => {
            let list: Vec<serde_json::Value> = j
                .quarantine_list()?
                .into_iter()
                .map(|q| {
                    serde_json::json!({
                        "raw_id": q.id.0,
                        "environment": q.scope.environment,
                        "account": q.scope.account,
                        "endpoint": q.endpoint,
                        "http_status": q.http_status,
                        "bytes": q.len,
                        "received_at": rfc3339(q.received_at),
                        "error": q.error,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))?;
        }
        JournalCommand::Quarantine {
            show: None,
            output: Output::Text,
        } => {
            let list = j.quarantine_list()?;
            if list.is_empty() {
                println!("no quarantined bodies");
            }
            println!(
                "{:>8} {:<10} {:<16} {:<34} {:>6} {:>8} {:>5} {:>10}  ERROR",
                "RAW ID", "ENV", "ACCOUNT", "ENDPOINT", "STATUS", "BYTES", "SEEN", "AGE"
            );
            for q in list {
                println!(
                    "{:>8} {:<10} {:<16} {:<34} {:>6} {:>8} {:>5} {:>10}  {}",
                    q.id.0,
                    q.scope.environment,
                    q.scope.account,
                    q.endpoint,
                    q.http_status,
                    q.len,
                    q.seen_count,
                    age(Some(q.received_at)),
                    q.error
                );
            }
            println!("show one body with: espm-bridge journal quarantine --show RAW_ID");
            println!("parse one again with: espm-bridge journal reprocess RAW_ID");
        }
        JournalCommand::Reprocess { .. } => bail!("journal reprocess is dispatched on its own"),
        JournalCommand::History { notification_id } => {
            let h = j.notification_history(None, notification_id)?;
            if h.is_empty() {
                println!("notification {notification_id} is not in the journal");
                return Ok(ExitCode::from(1));
            }
            for e in h {
                println!("{e:#?}");
            }
        }
        JournalCommand::ForgetSink { name } => {
            if is_configured(&name) == Some(true) {
                bail!(
                    "sink {name:?} is still configured: remove it from the configuration first (a running bridge would register it again)"
                );
            }
            if !j.forget_sink(&name)? {
                eprintln!("no cursor for a sink named {name:?} in the journal");
                return Ok(ExitCode::from(1));
            }
            println!("released the cursor of sink {name:?}; compaction no longer waits for it (its dead letters stay until dropped)");
        }
        JournalCommand::Compact { retention } => {
            let retention = retention
                .or(configured)
                .unwrap_or(Duration::from_secs(30 * 86_400));
            let stats = j.compact(retention, SystemTime::now())?;
            println!("{stats:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dlq_cmd(opened: Opened, cmd: DlqCommand) -> Result<ExitCode> {
    let j = opened.journal;
    match cmd {
        DlqCommand::List {
            sink,
            output: Output::Json,
        } => {
            let list: Vec<serde_json::Value> = j
                .dlq_list(sink.as_deref())?
                .into_iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id,
                        "sink": d.sink,
                        "seq": d.seq,
                        "event_id": d.event_id,
                        "event_type": d.event_type,
                        "attempts": d.attempts,
                        "failed_at": rfc3339(d.failed_at),
                        "reason": d.reason,
                        "event": d.event,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))?;
        }
        DlqCommand::List {
            sink,
            output: Output::Text,
        } => {
            let list = j.dlq_list(sink.as_deref())?;
            println!(
                "{:>6} {:<20} {:<38} {:<44} {:>8}  REASON",
                "ID", "SINK", "EVENT ID", "TYPE", "ATTEMPTS"
            );
            for d in list {
                println!(
                    "{:>6} {:<20} {:<38} {:<44} {:>8}  {}",
                    d.id, d.sink, d.event_id, d.event_type, d.attempts, d.reason
                );
            }
        }
        DlqCommand::Replay { ids, all, sink } => {
            let ids: Vec<i64> = if all {
                j.dlq_list(sink.as_deref())?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            if ids.is_empty() {
                bail!("nothing to replay: give dead-letter ids or --all");
            }
            for id in ids {
                let seq = j.dlq_replay(id)?;
                println!("dead letter {id} re-queued as outbox #{seq}");
            }
        }
        DlqCommand::Drop { ids } => {
            for id in ids {
                if j.dlq_drop(id)? {
                    println!("dead letter {id} dropped");
                } else {
                    println!("no dead letter {id}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(
    metrics_addr: std::net::SocketAddr,
    sim_listen: std::net::SocketAddr,
    activity_every: u64,
    duration: Option<Duration>,
    journal: Option<PathBuf>,
    arcadia: bool,
) -> Result<ExitCode> {
    let sim_cfg = espm_sim::SimConfig {
        username: espm_config::DEMO_USERNAME.to_string(),
        password: DEMO_PASSWORD.to_string(),
        seed: 42,
        scenario: true,
    };
    let sim = espm_sim::SimServer::start(sim_cfg, sim_listen)
        .await
        .context("cannot start the simulator")?;
    let tmp = tempfile::tempdir().context("cannot create a temporary directory for the journal")?;
    let dir = journal.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let mut cfg = BridgeConfig::demo(&sim.base_url(), &dir);
    let arcadia_sim = if arcadia {
        Some(crate::arcadia::demo_sink(&mut cfg, &dir).await?)
    } else {
        None
    };
    eprintln!(
        "espm-bridge demo: simulator at {} (control API {}), journal {}, metrics http://{metrics_addr}/metrics. Events follow, one JSON line each; Ctrl-C stops.",
        sim.base_url(),
        sim.control_url(),
        cfg.journal.path.display()
    );
    let stop = CancellationToken::new();
    if activity_every > 0 {
        tokio::spawn(crate::commands::activity(
            sim.control_url(),
            Duration::from_secs(activity_every),
            stop.clone(),
        ));
    }
    if let Some(d) = duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    if let Some(a) = &arcadia_sim {
        eprintln!(
            "Arcadia simulator at {} (accounts: {}/accounts); the demo accepts every pending connection and property share.",
            a.base_url(),
            a.control_url()
        );
        tokio::spawn(crate::arcadia::provider_desk(
            cfg.clone(),
            Secret::new(DEMO_PASSWORD),
            stop.clone(),
        ));
    }
    let mut passwords = BTreeMap::new();
    passwords.insert("sim".to_string(), Secret::new(DEMO_PASSWORD));
    let res = runtime::run(
        cfg,
        Options {
            metrics_addr: Some(metrics_addr),
            grace: Duration::from_secs(5),
            passwords,
        },
        stop.clone(),
    )
    .await;
    stop.cancel();
    sim.shutdown().await;
    if let Some(a) = arcadia_sim {
        let accounts = a.state().accounts();
        let active = accounts
            .iter()
            .filter(|x| x.status.as_deref() == Some(espm_arcadia::status::ACTIVE))
            .count();
        eprintln!(
            "Arcadia simulator: {} accounts mirrored ({active} ACTIVE)",
            accounts.len()
        );
        a.shutdown().await;
    }
    res.map(|report| report.exit_code())
}

/// Keep simulated customers busy so the demo shows every event type.
pub async fn activity(control: String, every: Duration, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let mut step: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        step += 1;
        if let Err(e) = crate::commands::one_action(&http, &control, step).await {
            tracing::debug!(error = %e, "demo activity step failed");
        }
    }
}

async fn one_action(http: &reqwest::Client, control: &str, step: u64) -> Result<()> {
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{control}{path}");
        let req = http.post(url).json(&body);
        async move {
            let resp = req.send().await?.error_for_status()?;
            Ok::<serde_json::Value, anyhow::Error>(
                resp.json().await.unwrap_or(serde_json::Value::Null),
            )
        }
    };
    let customer = post(
        "/customers",
        serde_json::json!({ "firstName": "Demo", "lastName": format!("Customer {step}") }),
    )
    .await?;
    let account_id = customer
        .get("accountId")
        .and_then(|v| v.as_i64())
        .context("no accountId")?;
    post("/connections", serde_json::json!({ "accountId": account_id, "customFields": { "Customer Number": format!("D{step:04}") } })).await?;
    let prop = post(
        "/shares/property",
        serde_json::json!({ "accountId": account_id, "accessLevel": "Read Write" }),
    )
    .await?;
    let property_id = prop
        .get("propertyId")
        .and_then(|v| v.as_i64())
        .context("no propertyId")?;
    post("/shares/meter", serde_json::json!({ "accountId": account_id, "propertyId": property_id, "accessLevel": "Read" })).await?;
    match step % 4 {
        0 => post("/notifications", serde_json::json!({ "count": 3, "types": ["UNSHARE", "SHAREUPDATE", "DISCONNECT", "TRANSFERPROPERTY"] })).await?,
        1 => post("/notifications", serde_json::json!({ "count": 1, "types": ["SHAREUPDATE"] })).await?,
        2 => post("/notifications", serde_json::json!({ "count": 1, "types": ["UNSHARE"] })).await?,
        _ => post("/notifications", serde_json::json!({ "count": 1, "types": ["TRANSFERPROPERTY"] })).await?,
    };
    Ok(())
}

async fn pm(
    config: &Path,
    account: Option<&str>,
    command_id: Option<String>,
    cmd: PmCommand,
) -> Result<ExitCode> {
    use espm_command::{Command as Cmd, Decision, Door, Submission};
    use espm_events::CommandOutcome;
    let cfg = load_config(config)?;
    let acct = match account {
        Some(name) => cfg
            .accounts
            .iter()
            .find(|a| a.name == name)
            .with_context(|| format!("no account named {name} in {}", config.display()))?,
        None if cfg.accounts.len() == 1 => &cfg.accounts[0],
        None => bail!("the configuration has several accounts: choose one with --account"),
    };
    let password = espm_config::resolve_password(acct)
        .with_context(|| format!("accounts.{}: password", acct.name))?;
    let client = runtime::client_for(acct, password)?;
    let journal = Journal::open(&cfg.journal.path)
        .with_context(|| format!("cannot open the journal at {}", cfg.journal.path.display()))?;
    let commander = espm_command::Commander::new(
        journal,
        [espm_command::Account {
            client: client.clone(),
            scope: espm_journal::Scope::new(acct.environment.as_str(), acct.name.clone()),
            origin: espm_events::Origin::new(acct.environment.as_str(), acct.name.clone()),
        }],
    );
    let answer = |kind: RequestKind, id, decision, note| Cmd::Answer {
        kind: kind.into(),
        request_id: id,
        decision,
        note,
    };
    let command = match cmd {
        PmCommand::Accept { kind, id, note } => answer(kind, id, Decision::Accept, note),
        PmCommand::Reject { kind, id, note } => answer(kind, id, Decision::Reject, note),
        PmCommand::Disconnect {
            account_id,
            keep_shares,
            note,
        } => Cmd::Disconnect {
            customer_id: account_id,
            keep_shares,
            note,
        },
        PmCommand::Unshare {
            kind: UnshareKind::Property,
            id,
            note,
        } => Cmd::UnshareProperty {
            property_id: id,
            note,
        },
        PmCommand::Unshare {
            kind: UnshareKind::Meter,
            id,
            note,
        } => Cmd::UnshareMeter { meter_id: id, note },
        PmCommand::CreateCustomer {
            file,
            fields,
            password_env,
            password_file,
        } => {
            let mut body = new_customer(file.as_deref(), &fields)?;
            let source = espm_config::SecretSource::from_options(
                password_file.as_ref(),
                password_env.as_ref(),
            );
            if let Some(source) = source {
                let secret = source.read().context("the customer's password")?;
                body.password = espm_command::Password::new(secret.expose());
            }
            Cmd::CreateCustomer(Box::new(body))
        }
        PmCommand::Customers => {
            for c in client.customers().await.context("PM refused the call")? {
                println!(
                    "{}",
                    serde_json::json!({"customerId": c.id, "hint": c.hint})
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        PmCommand::Customer { id } => {
            let c = commander
                .customer(&acct.name, id)
                .await
                .context("PM refused the call")?;
            let info = c.account_info.unwrap_or_default();
            print_json(&serde_json::json!({
                "customerId": id,
                "username": c.username,
                "organization": info.organization,
                "firstName": info.first_name,
                "lastName": info.last_name,
                "email": info.email,
                "phone": info.phone,
                "jobTitle": info.job_title,
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        PmCommand::Pending { kind, customer } => {
            let items = commander
                .pending(&acct.name, kind.map(Into::into), customer)
                .await?;
            for item in items {
                println!("{}", serde_json::to_string(&item)?);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let what = match &command {
        Cmd::Answer {
            kind,
            request_id,
            decision,
            ..
        } => Some(format!(
            "{} {request_id}: {}",
            kind.as_str(),
            decision.resolution()
        )),
        _ => None,
    };
    let create = matches!(command, Cmd::CreateCustomer(_));
    let view = commander
        .submit(Submission {
            id: command_id,
            account: acct.name.clone(),
            command,
            requester: Some("cli".into()),
            door: Door::Cli,
        })
        .await?;
    if let Some(p) = view.problem() {
        bail!(
            "PM refused the call ({}, command {}): {}",
            p.kind.slug(),
            view.id,
            p.detail
        );
    }
    match (view.outcome, what) {
        _ if create => print_json(&serde_json::to_value(&view)?)?,
        (Some(CommandOutcome::NothingToDo), _) => println!(
            "nothing to do: PM says it is already so (the request is no longer pending, the customer not connected, or the share already gone)"
        ),
        (_, Some(what)) => println!("{what}"),
        _ => println!("done"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A new customer from `--file` (if any) with the flags laid over it.
fn new_customer(
    file: Option<&Path>,
    f: &crate::cli::NewCustomerArgs,
) -> Result<espm_command::CreateCustomerBody> {
    let mut b = match file {
        Some(path) => read_new_customer(path)?,
        None => {
            let missing: Vec<&str> = [
                ("--username", f.username.is_none()),
                ("--first-name", f.first_name.is_none()),
                ("--last-name", f.last_name.is_none()),
                ("--email", f.email.is_none()),
                ("--address1", f.address1.is_none()),
                ("--city", f.city.is_none()),
                ("--organization", f.organization.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, absent)| absent.then_some(flag))
            .collect();
            if !missing.is_empty() {
                bail!(
                    "without --file, a new customer needs {} (see `espm-bridge pm create-customer --help`)",
                    missing.join(", ")
                );
            }
            espm_command::CreateCustomerBody {
                username: String::new(),
                password: espm_command::Password::new(""),
                webservice_user: false,
                searchable: false,
                contact: espm_command::ContactBody {
                    address: espm_command::AddressBody {
                        country: "US".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                organization: espm_command::OrganizationBody {
                    primary_business: "Other".into(),
                    ..Default::default()
                },
            }
        }
    };
    fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
        if let Some(v) = flag {
            *slot = v.clone();
        }
    }
    fn set_opt<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    set(&mut b.username, &f.username);
    set(&mut b.webservice_user, &f.webservice_user);
    set(&mut b.searchable, &f.searchable);
    let c = &mut b.contact;
    set(&mut c.first_name, &f.first_name);
    set(&mut c.last_name, &f.last_name);
    set(&mut c.email, &f.email);
    set(&mut c.phone, &f.phone);
    set(&mut c.job_title, &f.job_title);
    let a = &mut c.address;
    set(&mut a.address1, &f.address1);
    set_opt(&mut a.address2, &f.address2);
    set(&mut a.city, &f.city);
    set_opt(&mut a.state, &f.state);
    set_opt(&mut a.other_state, &f.other_state);
    set_opt(&mut a.postal_code, &f.postal_code);
    set(&mut a.country, &f.country);
    let o = &mut b.organization;
    set(&mut o.name, &f.organization);
    set(&mut o.primary_business, &f.primary_business);
    set_opt(
        &mut o.other_business_description,
        &f.other_business_description,
    );
    set(&mut o.energy_star_partner, &f.energy_star_partner);
    set_opt(&mut o.energy_star_partner_type, &f.energy_star_partner_type);
    Ok(b)
}

/// A new customer from the command API's JSON body or PM's `<account>` XML.
fn read_new_customer(path: &Path) -> Result<espm_command::CreateCustomerBody> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'<') {
        let c: espm_model::NewCustomer = espm_model::parse(&bytes)
            .with_context(|| format!("{}: not a PM <account> document", path.display()))?;
        let a = &c.contact.address;
        return Ok(espm_command::CreateCustomerBody {
            username: c.username,
            password: espm_command::Password::new(c.password),
            webservice_user: c.webservice_user,
            searchable: c.searchable,
            contact: espm_command::ContactBody {
                first_name: c.contact.first_name,
                last_name: c.contact.last_name,
                address: espm_command::AddressBody {
                    address1: a.address1.clone(),
                    address2: a.address2.clone(),
                    city: a.city.clone(),
                    state: a.state.clone(),
                    other_state: a.other_state.clone(),
                    postal_code: a.postal_code.clone(),
                    country: a.country.clone().unwrap_or_else(|| "US".into()),
                },
                email: c.contact.email,
                job_title: c.contact.job_title,
                phone: c.contact.phone,
            },
            organization: espm_command::OrganizationBody {
                name: c.organization.name,
                primary_business: c.organization.primary_business,
                other_business_description: c.organization.other_business_description,
                energy_star_partner: c.organization.energy_star_partner,
                energy_star_partner_type: c.organization.energy_star_partner_type,
            },
        });
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a createCustomer JSON body", path.display()))
}
