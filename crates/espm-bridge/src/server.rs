//! `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (journal writable, sinks
//! connected, polls recent).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use espm_journal::Journal;
use espm_poller::PollerStatus;
use espm_sink::SinkState;
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
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
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
        "espm_bridge_sink_published_total",
        "Events acknowledged by a sink"
    );
    describe_counter!(
        "espm_bridge_sink_failures_total",
        "Failed delivery attempts by sink and reason"
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

/// What `/readyz` looks at.
pub struct Health {
    journal: Journal,
    sinks: Vec<(String, Arc<SinkState>)>,
    pollers: Vec<(String, Arc<PollerStatus>, Duration)>,
    started: SystemTime,
}

impl Health {
    /// Health over these parts.
    pub fn new(
        journal: Journal,
        sinks: Vec<(String, Arc<SinkState>)>,
        pollers: Vec<(String, Arc<PollerStatus>, Duration)>,
    ) -> Self {
        Self {
            journal,
            sinks,
            pollers,
            started: SystemTime::now(),
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.journal.check_writable() {
            out.push(format!("journal: {e}"));
        }
        for (name, s) in &self.sinks {
            if s.is_disabled() {
                out.push(format!(
                    "sink {name}: disabled: {}",
                    s.disabled_reason().unwrap_or_default()
                ));
            } else if !s.is_ready() {
                out.push(format!(
                    "sink {name}: not connected: {}",
                    s.last_error().unwrap_or_else(|| "starting".into())
                ));
            }
        }
        let now = SystemTime::now();
        for (name, p, max_age) in &self.pollers {
            let since = p.last_success().unwrap_or(self.started);
            if now.duration_since(since).unwrap_or_default() > *max_age {
                out.push(format!(
                    "account {name}: no successful poll for over {}s: {}",
                    max_age.as_secs(),
                    p.last_error().unwrap_or_default()
                ));
            }
            // A drained body waiting (spooled or stranded) or bodies that keep failing to parse.
            if let Some(reason) = p.not_ready_reason() {
                out.push(format!("account {name}: {reason}"));
            }
        }
        out
    }
}

/// Serve until `stop`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
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
