//! One run: simulator, bridge child, sink, burst, measurements.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use espm_sim::{SimConfig, SimServer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::receivers::{self, now_us, Recorder};
use crate::report::{percentile, RunResult};
use crate::SinkKind;

pub(crate) const PM_USER: &str = "load";
pub(crate) const PM_PASSWORD: &str = "load-password";
const PASSWORD_ENV: &str = "ESPM_LOAD_PM_PASSWORD";
const WHSEC_ENV: &str = "ESPM_LOAD_WHSEC";
/// A throw-away signing secret for the loopback receiver (not a credential of anything).
pub(crate) const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const KAFKA_PARTITIONS: i32 = 3;
/// How often the bridge's leg polls PM (its config's `poll_interval`), and the naive bridge's.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);
pub(crate) const NOTIFICATION_TYPES: [&str; 4] =
    ["UNSHARE", "SHAREUPDATE", "DISCONNECT", "TRANSFERPROPERTY"];

/// What every run shares.
#[derive(Clone)]
pub struct Settings {
    /// The espm-bridge binary.
    pub bridge_bin: PathBuf,
    /// Notifications per run.
    pub notifications: usize,
    /// Notifications per POST.
    pub chunk: usize,
    /// Per-run time limit, from the bridge's start.
    pub timeout: Duration,
    /// NATS server URL.
    pub nats_url: String,
    /// RUST_LOG of the bridge.
    pub bridge_log_level: String,
    /// Keep every run's directory.
    pub keep: bool,
    /// `--rate`: create `notifications` at this many per second instead of all at once.
    pub rate: Option<u64>,
    /// `--backlog`: the sink is down until every event is journalled, then comes back.
    pub backlog: bool,
    /// `--receiver-delay`: how long the webhook receiver waits before answering each POST.
    pub receiver_delay: Duration,
}

/// Sink-specific state between set-up, consuming and clean-up.
enum Prepared {
    File {
        path: PathBuf,
    },
    Kafka {
        brokers: String,
        topic: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        prefix: String,
    },
    Webhook {
        server: JoinHandle<()>,
        /// The receiver answers 503 while this is false.
        up: Arc<AtomicBool>,
    },
}

/// The in-process PM simulator every leg drains: empty world, no faults.
pub(crate) async fn start_sim() -> anyhow::Result<SimServer> {
    SimServer::start(
        SimConfig {
            username: PM_USER.into(),
            password: PM_PASSWORD.into(),
            seed: 7,
            scenario: false,
        },
        "127.0.0.1:0".parse().context("listen address")?,
    )
    .await
    .context("cannot start the simulator")
}

/// One `POST /sim/notifications` of `count` notifications of every type.
async fn create(http: &reqwest::Client, url: &str, count: usize) -> anyhow::Result<()> {
    http.post(url)
        .json(&json!({ "count": count, "types": NOTIFICATION_TYPES }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("POST /sim/notifications failed")?;
    Ok(())
}

/// Create `n` notifications in the simulator at `control_url` (its `/sim`), `chunk` per
/// `POST /sim/notifications`.
pub(crate) async fn post_burst(
    http: &reqwest::Client,
    control_url: &str,
    n: usize,
    chunk: usize,
) -> anyhow::Result<()> {
    let url = format!("{control_url}/notifications");
    let mut posted = 0usize;
    while posted < n {
        let count = chunk.min(n - posted);
        create(http, &url, count).await?;
        posted += count;
    }
    Ok(())
}

/// The sum of every series of a counter or gauge on the bridge's `/metrics` (0 when absent or
/// unreachable).
async fn metric_sum(http: &reqwest::Client, port: u16, name: &str) -> f64 {
    let Ok(resp) = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0.0;
    };
    let Ok(text) = resp.text().await else {
        return 0.0;
    };
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Create `n` notifications at `per_s` per second, spread over 20 ms ticks (a late tick catches
/// up, so the mean rate holds).
pub(crate) async fn post_at_rate(
    http: &reqwest::Client,
    sim: &SimServer,
    n: usize,
    per_s: u64,
) -> anyhow::Result<()> {
    let url = format!("{}/notifications", sim.control_url());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut posted = 0usize;
    while posted < n {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * per_s as f64) as usize;
        let count = due.min(n) - posted.min(due.min(n));
        if count == 0 {
            continue;
        }
        create(http, &url, count).await?;
        posted += count;
    }
    Ok(())
}

pub(crate) fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    )
}

pub(crate) fn toml_str(s: &str) -> String {
    // serde_json string escaping is valid TOML basic-string escaping for these values.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\"")) // ok: fallback never hit for &str
}

async fn prepare(
    settings: &Settings,
    kind: SinkKind,
    kafka_brokers: Option<&str>,
    dir: &Path,
    rec: &Recorder,
) -> anyhow::Result<(Prepared, String)> {
    let sfx = unique_suffix();
    Ok(match kind {
        SinkKind::File => {
            let path = dir.join("events.jsonl");
            let toml = format!(
                "[[sinks]]\ntype = \"file\"\nname = \"load-file\"\npath = {}\n",
                toml_str(&path.to_string_lossy())
            );
            (Prepared::File { path }, toml)
        }
        SinkKind::Kafka => {
            let brokers = kafka_brokers
                .context("no Kafka brokers (internal: tansu was not started)")?
                .to_string();
            let topic = format!("espm-load-{sfx}");
            create_topic(&brokers, &topic).await?;
            let toml = format!(
                "[[sinks]]\ntype = \"kafka\"\nname = \"load-kafka\"\nbrokers = {}\ntopic = {}\n\
                 create_topics = true\ntopic_partitions = {KAFKA_PARTITIONS}\n",
                toml_str(&brokers),
                toml_str(&topic)
            );
            (Prepared::Kafka { brokers, topic }, toml)
        }
        SinkKind::Nats => {
            let client = async_nats::connect(&settings.nats_url)
                .await
                .with_context(|| format!("cannot connect to NATS at {}", settings.nats_url))?;
            let js = async_nats::jetstream::new(client);
            let stream = format!("ESPM_LOAD_{}", sfx.replace('-', "_"));
            let prefix = format!("espmload{}", sfx.replace('-', ""));
            let toml = format!(
                "[[sinks]]\ntype = \"nats\"\nname = \"load-nats\"\nurl = {}\n\
                 subject = \"{prefix}.{{environment}}.{{type}}\"\nstream = \"{stream}\"\n\
                 create_stream = true\nstream_subjects = [\"{prefix}.>\"]\n",
                toml_str(&settings.nats_url)
            );
            (Prepared::Nats { js, stream, prefix }, toml)
        }
        SinkKind::Webhook => {
            let up = Arc::new(AtomicBool::new(!settings.backlog));
            let (addr, server) =
                receivers::webhook_receiver(rec.clone(), up.clone(), settings.receiver_delay)
                    .await?;
            let toml = format!(
                "[[sinks]]\ntype = \"webhook\"\nname = \"load-webhook\"\n\
                 url = \"http://{addr}/hook\"\nsecret_env = \"{WHSEC_ENV}\"\n\
                 max_in_flight = 64\ntimeout = \"30s\"\n"
            );
            (Prepared::Webhook { server, up }, toml)
        }
    })
}

pub(crate) async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create the Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                KAFKA_PARTITIONS,
                TopicReplication::Fixed(-1),
            )],
            &opts,
        )
        .await
        .with_context(|| format!("cannot create topic {topic} on {brokers}"))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

fn start_consumer(prepared: &Prepared, rec: &Recorder) -> Option<JoinHandle<anyhow::Result<()>>> {
    let rec = rec.clone();
    match prepared {
        Prepared::File { path } => Some(tokio::spawn(receivers::tail_file(path.clone(), rec))),
        Prepared::Kafka { brokers, topic } => Some(tokio::spawn(receivers::consume_kafka(
            brokers.clone(),
            topic.clone(),
            KAFKA_PARTITIONS,
            rec,
        ))),
        Prepared::Nats { js, stream, prefix } => Some(tokio::spawn(receivers::consume_nats(
            js.clone(),
            stream.clone(),
            prefix.clone(),
            rec,
        ))),
        // The receiver records by itself.
        Prepared::Webhook { .. } => None,
    }
}

async fn cleanup(prepared: Prepared) {
    match prepared {
        Prepared::Nats { js, stream, .. } => {
            if let Err(e) = js.delete_stream(&stream).await {
                eprintln!("espm-load: could not delete stream {stream}: {e}");
            }
        }
        Prepared::Webhook { server, .. } => server.abort(),
        // The topic lives on a throw-away broker (or is left for inspection on a real one).
        Prepared::Kafka { .. } | Prepared::File { .. } => {}
    }
}

/// The bridge child; killed on drop if still running.
struct Bridge {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Bridge {
    fn start(
        settings: &Settings,
        config: &Path,
        log: PathBuf,
        metrics_port: u16,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&settings.bridge_bin)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--grace")
            .arg("10s")
            .env("RUST_LOG", &settings.bridge_log_level)
            .env(PASSWORD_ENV, PM_PASSWORD)
            .env(WHSEC_ENV, WHSEC)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", settings.bridge_bin.display()))?;
        Ok(Bridge {
            child,
            log,
            metrics_port,
        })
    }

    /// Peak resident set size (VmHWM) so far, KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time (user + system) the bridge has used so far, from /proc/<pid>/stat.
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) start at the state, field 3;
        // utime and stime are fields 14 and 15, in USER_HZ ticks (100 per second in Linux's ABI).
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_millis((utime + stime) * 10))
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait for a clean exit; SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(
    http: &reqwest::Client,
    bridge: &mut Bridge,
    port: u16,
    deadline: Instant,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Some(st) = bridge.exited() {
            bail!(
                "espm-bridge exited with {st} before it was ready; log {}:\n{}",
                bridge.log.display(),
                bridge.log_tail(20)
            );
        }
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "espm-bridge never became ready ({url}); log {}:\n{}",
                bridge.log.display(),
                bridge.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Deserialize)]
struct LedgerDoc {
    notifications: Vec<LedgerRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerRow {
    id: i64,
    created_at: String,
    handed_out_at: Option<String>,
}

/// One complete run for `kind`.
pub async fn run(
    settings: &Settings,
    kind: SinkKind,
    kafka_brokers: Option<&str>,
) -> anyhow::Result<RunResult> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("espm-load-{}-", kind.as_str()))
        .tempdir()
        .context("cannot create a temporary directory")?;
    let sim = start_sim().await?;
    let rec = Recorder::default();
    let (prepared, sink_toml) = prepare(settings, kind, kafka_brokers, dir.path(), &rec).await?;

    let metrics_port = free_port()?;
    let config = format!(
        "[journal]\npath = {}\nretention = \"1d\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[accounts]]\nname = \"load\"\nenvironment = \"sim\"\nbase_url = {}\nusername = \"{PM_USER}\"\n\
         password_env = \"{PASSWORD_ENV}\"\ndrain_mode = \"clear\"\npoll_interval = \"{poll_ms}ms\"\n\
         pending_interval = \"1h\"\nrequest_timeout = \"60s\"\n\n{sink_toml}",
        toml_str(&dir.path().join("journal.db").to_string_lossy()),
        toml_str(&sim.base_url()),
        poll_ms = POLL_INTERVAL.as_millis(),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).context("cannot write the bridge config")?;

    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut bridge = Bridge::start(
        settings,
        &config_path,
        dir.path().join("bridge.log"),
        metrics_port,
    )?;
    let http = reqwest::Client::new();
    let measured = measure(
        settings,
        &http,
        &sim,
        &mut bridge,
        &prepared,
        &rec,
        deadline,
    )
    .await;
    let peak_rss_kib = bridge.peak_rss_kib();
    let bridge_cpu = bridge.cpu_time();
    let exit = bridge.stop(Duration::from_secs(30)).await;
    cleanup(prepared).await;
    let (first_post_us, note) = match measured {
        Ok(m) => m,
        Err(e) => {
            sim.shutdown().await;
            let kept = dir.keep();
            return Err(e.context(format!("run directory kept: {}", kept.display())));
        }
    };
    let mut note = note;
    if !exit.is_some_and(|s| s.success()) {
        let msg = format!("bridge exit status {exit:?}");
        note = Some(note.map_or(msg.clone(), |n| format!("{n}; {msg}")));
    }

    let ledger: LedgerDoc = http
        .get(format!("{}/ledger", sim.control_url()))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("cannot fetch the simulator's ledger")?
        .json()
        .await
        .context("cannot parse the simulator's ledger")?;
    sim.shutdown().await;

    let (first_us, duplicates, last_us) = rec.snapshot();
    let mut latencies = Vec::with_capacity(ledger.notifications.len());
    let (mut bridge, mut queue) = (Vec::new(), Vec::new());
    let mut received = 0usize;
    let mut bad_dates = 0usize;
    let micros = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_micros());
    for row in &ledger.notifications {
        let Some(at) = first_us.get(&row.id) else {
            continue;
        };
        received += 1;
        let created = match micros(&row.created_at) {
            Ok(c) => c,
            Err(_) => {
                bad_dates += 1;
                continue;
            }
        };
        latencies.push((at - created) as f64 / 1000.0);
        if let Some(Ok(out)) = row.handed_out_at.as_deref().map(micros) {
            bridge.push((at - out) as f64 / 1000.0);
            queue.push((out - created) as f64 / 1000.0);
        }
    }
    if bad_dates > 0 {
        eprintln!("espm-load: {bad_dates} ledger createdAt values did not parse as RFC 3339");
    }
    bridge.sort_by(f64::total_cmp);
    queue.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    let elapsed_us = (last_us - first_post_us).max(1);
    let result = RunResult {
        sink: kind,
        expected: ledger.notifications.len(),
        received,
        duplicates,
        events_per_s: received as f64 / (elapsed_us as f64 / 1e6),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        bridge_ms: (percentile(&bridge, 0.50), percentile(&bridge, 0.99)),
        queue_ms: (percentile(&queue, 0.50), percentile(&queue, 0.99)),
        peak_rss_kib,
        bridge_cpu,
        elapsed: Duration::from_micros(u64::try_from(elapsed_us).unwrap_or(0)),
        note,
        dir: None,
    };
    if result.complete() && !settings.keep {
        Ok(result)
    } else {
        Ok(RunResult {
            dir: Some(dir.keep()),
            ..result
        })
    }
}

/// Wait for readiness, post the burst, wait for every event. Returns the first POST's time and
/// why the wait ended early, if it did.
async fn measure(
    settings: &Settings,
    http: &reqwest::Client,
    sim: &SimServer,
    bridge: &mut Bridge,
    prepared: &Prepared,
    rec: &Recorder,
    deadline: Instant,
) -> anyhow::Result<(i64, Option<String>)> {
    let port = bridge.metrics_port;
    wait_ready(http, bridge, port, deadline).await?;
    let consumer = start_consumer(prepared, rec);
    // Let the consumer attach before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let n = settings.notifications;
    let first_post_us = now_us();
    match settings.rate {
        None => post_burst(http, &sim.control_url(), n, settings.chunk).await?,
        Some(per_s) => post_at_rate(http, sim, n, per_s).await?,
    }
    if let (true, Prepared::Webhook { up, .. }) = (settings.backlog, prepared) {
        // The sink stays down until the whole burst is in the outbox, and a while longer, so
        // the peak RSS covers a full backlog and its retries.
        loop {
            let emitted = metric_sum(http, port, "espm_bridge_events_emitted_total").await;
            if emitted >= n as f64 || Instant::now() >= deadline || bridge.exited().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "espm-load: {n} events journalled behind a stopped sink; bringing it back in 10s"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        up.store(true, Ordering::Relaxed);
    }

    let mut last_report = Instant::now();
    let note = loop {
        let got = rec.unique();
        if got >= n {
            break None;
        }
        if Instant::now() >= deadline {
            break Some(format!("timeout {:?} reached", settings.timeout));
        }
        if let Some(st) = bridge.exited() {
            break Some(format!("espm-bridge exited early with {st}"));
        }
        if let Some(c) = &consumer {
            if c.is_finished() {
                break Some("the consumer stopped".to_string());
            }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("espm-load: {got}/{n} received");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(c) = consumer {
        if c.is_finished() {
            match c.await {
                Ok(Err(e)) => eprintln!("espm-load: consumer failed: {e:#}"),
                Err(e) => eprintln!("espm-load: consumer task failed: {e}"),
                Ok(Ok(())) => {}
            }
        } else {
            c.abort();
        }
    }
    Ok((first_post_us, note))
}
