//! `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (this process can do its job: the
//! configuration is loaded and the journal takes writes) and `/status` (JSON detail: every
//! account's polling health, every sink's health, backlog and dead letters).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use espm_journal::Journal;
use espm_poller::PollerStatus;
use espm_sink::{Sink, SinkState};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global Prometheus recorder once per process.
pub fn install_recorder() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let latency_buckets = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .context("histogram buckets")?
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    describe();
    // Constant 1, labelled: which build is running (`commit` from build.rs).
    metrics::gauge!(
        "espm_bridge_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("ESPM_BRIDGE_COMMIT")
    )
    .set(1.0);
    process_collector().describe();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Prometheus' standard process metrics (`process_resident_memory_bytes`, `process_open_fds`,
/// `process_cpu_seconds_total`, ...), refreshed on every scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "espm_bridge_build_info",
        "Always 1; the labels say which version and commit run"
    );
    describe_counter!(
        "espm_bridge_polls_total",
        "PM polls by account, endpoint and outcome"
    );
    describe_counter!(
        "espm_bridge_notifications_drained_total",
        "Notifications handed out by clear=true reads"
    );
    describe_counter!(
        "espm_bridge_quarantined_bodies_total",
        "PM bodies that failed to parse and were quarantined"
    );
    describe_counter!(
        "espm_bridge_events_emitted_total",
        "Events appended to the outbox, by type"
    );
    describe_counter!(
        "espm_bridge_commands_total",
        "Commands finished, by action, origin (api, kafka, nats, cli, policy) and state (completed, failed)"
    );
    describe_counter!(
        "espm_policy_decisions_total",
        "Auto-accept policy decisions, by account, decision (accept, reject, defer) and source (rule, webhook, implied); each decision counted once"
    );
    describe_counter!(
        "espm_policy_webhook_requests_total",
        "Questions to a policy's decision webhook, by account and answer (accept, reject, defer: a timeout, an error or a garbled answer defers)"
    );
    describe_gauge!(
        "espm_policy_unmatched_requests",
        "Pending requests no policy rule matched at the last run (left pending), by account"
    );
    describe_counter!(
        "espm_bridge_command_repeats_total",
        "Commands sent again under an id that already had a final result (answered without a PM call)"
    );
    describe_counter!(
        "espm_bridge_command_topic_messages_total",
        "Command messages read from a command topic, by topic and result (completed, failed, malformed, unanswerable)"
    );
    describe_counter!(
        "espm_bridge_command_topic_retries_total",
        "Command messages retried because the journal or PM could not take them yet"
    );
    describe_counter!(
        "espm_bridge_customer_lookups_total",
        "Customers looked up for share events, by outcome: cached, fetched (from PM), failed (events flagged)"
    );
    describe_counter!(
        "espm_bridge_property_lookups_total",
        "Properties looked up for share events, by outcome: cached, fetched (from PM), failed (events flagged)"
    );
    describe_counter!(
        "espm_bridge_custom_field_lookups_total",
        "Custom field lists re-read for share.updated, by outcome: fetched, failed, timeout, skipped (over the per-body cap); all but fetched flag the event"
    );
    describe_counter!(
        "espm_bridge_sink_published_total",
        "Events acknowledged by a sink"
    );
    describe_counter!(
        "espm_bridge_sink_attempt_failures_total",
        "Failed delivery attempts, one per event per attempt, by sink and reason"
    );
    describe_counter!(
        "espm_bridge_sink_dead_lettered_total",
        "Events a sink gave up on (stored as dead letters)"
    );
    describe_counter!(
        "espm_bridge_sink_stalls_total",
        "Batches the delivery driver stopped and retried later, by sink and reason (unavailable, retry, journal, disabled)"
    );
    describe_histogram!(
        "espm_bridge_delivery_latency_seconds",
        Unit::Seconds,
        "Outbox enqueue to sink acknowledgement"
    );
    describe_gauge!(
        "espm_bridge_outbox_depth",
        "Events not yet delivered, per sink"
    );
    describe_gauge!(
        "espm_bridge_outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest undelivered event, per sink"
    );
    describe_gauge!("espm_bridge_dlq_size", "Dead letters per sink");
    describe_gauge!(
        "espm_bridge_sink_up",
        "1 when the sink is connected, not disabled and its last health check passed"
    );
    describe_gauge!(
        "espm_bridge_account_up",
        "1 when the account polled PM successfully within a few poll intervals"
    );
    describe_counter!(
        "espm_bridge_pm_retries_total",
        "Retried PM calls by endpoint and reason"
    );
    describe_gauge!(
        "espm_bridge_last_poll_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last PM poll per account"
    );
}

/// One sink as `/status` and the health metrics see it.
pub struct SinkEntry {
    /// Configured name.
    pub name: String,
    /// The sink itself; its [`Sink::health`] is probed periodically.
    pub sink: Arc<dyn Sink>,
    /// What its driver reports.
    pub state: Arc<SinkState>,
    /// The last [`Sink::health`] answer (`None`: not probed yet) and when it came.
    pub probe: RwLock<Option<(Result<(), String>, SystemTime)>>,
}

/// One account's poller as `/status` sees it.
pub struct AccountEntry {
    /// Configured name.
    pub name: String,
    /// What the poller reports.
    pub status: Arc<PollerStatus>,
    /// A poll older than this makes the account unhealthy (errors back off, so a few intervals).
    pub max_age: Duration,
}

/// What `/readyz`, `/status` and the health gauges look at.
pub struct Health {
    journal: Journal,
    sinks: Vec<SinkEntry>,
    accounts: Vec<AccountEntry>,
    started: SystemTime,
}

/// How often sinks' `health()` is probed, and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Health {
    /// Health over these parts. Constructed after the configuration loaded and the journal
    /// opened, which is half of what "ready" means.
    pub fn new(journal: Journal, sinks: Vec<SinkEntry>, accounts: Vec<AccountEntry>) -> Self {
        Self {
            journal,
            sinks,
            accounts,
            started: SystemTime::now(),
        }
    }

    /// Readiness: can this process do its job? Only the journal decides: a PM outage or a sink
    /// outage is reported by `/status` and the metrics, never by taking the pod out of service
    /// (the events wait in the journal either way, and `helm install --wait` must not hang).
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.journal.check_writable() {
            out.push(format!("journal: {e}"));
        }
        // Not PM being down: a drained body this process holds but cannot finish (spooled or
        // stranded), or bodies that keep failing to parse.
        for a in &self.accounts {
            if let Some(reason) = a.status.not_ready_reason() {
                out.push(format!("account {}: {reason}", a.name));
            }
        }
        out
    }

    fn account_status(&self, a: &AccountEntry, now: SystemTime) -> serde_json::Value {
        let last = a.status.last_success();
        let since = last.unwrap_or(self.started);
        let age = now.duration_since(since).unwrap_or_default();
        let error = a.status.last_error();
        // An error since the last success (the poller clears it on success) or a stale success.
        let healthy = error.is_none() && age <= a.max_age;
        serde_json::json!({
            "name": a.name,
            "healthy": healthy,
            "last_success": last.map(rfc3339),
            "seconds_since_success": last.map(|_| age.as_secs()),
            "last_error": error,
            "not_ready": a.status.not_ready_reason(),
            "stranded_bodies": a.status.stranded(),
            "spooled_bodies": a.status.spooled(),
            "parse_failing": a.status.parse_failing(),
        })
    }

    fn sink_healthy(e: &SinkEntry) -> bool {
        let probe_ok = match &read(&e.probe) {
            Some((r, _)) => r.is_ok(),
            None => true,
        };
        e.state.is_ready() && probe_ok
    }

    fn sink_status(&self, e: &SinkEntry, now: SystemTime) -> serde_json::Value {
        let depth = self.journal.outbox_depth(&e.name);
        let dead = self.journal.dlq_count(Some(&e.name));
        let probe = read(&e.probe);
        serde_json::json!({
            "name": e.name,
            "kind": e.sink.kind(),
            "healthy": Self::sink_healthy(e),
            "connected": e.state.is_connected(),
            "disabled": e.state.is_disabled(),
            "disabled_reason": e.state.disabled_reason(),
            "last_error": e.state.last_error(),
            "last_delivery": e.state.last_delivery().map(rfc3339),
            "health_check": probe.as_ref().map(|(r, at)| serde_json::json!({
                "ok": r.is_ok(),
                "error": r.as_ref().err(),
                "at": rfc3339(*at),
            })),
            "cursor": e.state.cursor(),
            "pending": depth.as_ref().ok().map(|d| d.pending),
            "oldest_pending_age_seconds": depth.as_ref().ok().and_then(|d| d.oldest_enqueued_at)
                .map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
            "dead_letters": dead.ok(),
        })
    }

    /// The detailed status document of `/status`.
    fn status(&self) -> serde_json::Value {
        let now = SystemTime::now();
        let problems = self.problems();
        let accounts: Vec<_> = self
            .accounts
            .iter()
            .map(|a| self.account_status(a, now))
            .collect();
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .map(|e| self.sink_status(e, now))
            .collect();
        let all_healthy = accounts
            .iter()
            .chain(&sinks)
            .all(|v| v["healthy"] == serde_json::Value::Bool(true));
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "ready": problems.is_empty(),
            "healthy": problems.is_empty() && all_healthy,
            "problems": problems,
            "journal": { "writable": self.journal.check_writable().map_err(|e| e.to_string()).err().is_none() },
            "accounts": accounts,
            "sinks": sinks,
        })
    }

    /// Probe every sink's `health()` every [`PROBE_EVERY`], until `stop`.
    pub async fn monitor(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for e in &self.sinks {
                let r = match tokio::time::timeout(PROBE_TIMEOUT, e.sink.health()).await {
                    Ok(r) => r.map_err(|err| err.to_string()),
                    Err(_) => Err(format!(
                        "health check timed out after {}s",
                        PROBE_TIMEOUT.as_secs()
                    )),
                };
                *e.probe.write().unwrap_or_else(|p| p.into_inner()) = Some((r, SystemTime::now()));
            }
        }
    }

    /// Set `espm_bridge_sink_up` and `espm_bridge_account_up` from the current state; called
    /// on every scrape so they are never staler than `/status`.
    fn refresh_gauges(&self) {
        for e in &self.sinks {
            metrics::gauge!("espm_bridge_sink_up", "sink" => e.name.clone())
                .set(if Self::sink_healthy(e) { 1.0 } else { 0.0 });
        }
        let now = SystemTime::now();
        for a in &self.accounts {
            let up = self.account_status(a, now)["healthy"] == serde_json::Value::Bool(true);
            metrics::gauge!("espm_bridge_account_up", "account" => a.name.clone()).set(if up {
                1.0
            } else {
                0.0
            });
        }
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Serve until `stop`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let gauges = health.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                process_collector().collect();
                gauges.refresh_gauges();
                std::future::ready(prometheus.render())
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, Json<serde_json::Value>) {
    let h2 = h.clone();
    let problems = tokio::task::spawn_blocking(move || h2.problems())
        .await
        .unwrap_or_else(|e| vec![e.to_string()]);
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({ "ready": problems.is_empty(), "problems": problems })),
    )
}

async fn status(State(h): State<Arc<Health>>) -> Json<serde_json::Value> {
    let doc = tokio::task::spawn_blocking(move || h.status())
        .await
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    Json(doc)
}
