//! tracing setup: JSON lines by default, human-readable when run interactively. With the cargo
//! feature `otel` and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP/HTTP.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

/// Keep alive for the life of the process: dropping it flushes exported spans (feature `otel`);
/// without that feature it holds nothing.
#[derive(Debug, Default)]
pub struct LoggingGuard {
    #[cfg(feature = "otel")]
    _otel: Option<crate::otel::OtelGuard>,
}

/// Logs go to stderr so that stdout stays clean for the console sink and `normalize`.
#[must_use = "dropping the guard stops trace export"]
pub fn init(format: Option<LogFormat>) -> LoggingGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });

    #[cfg(feature = "otel")]
    let (otel_layer, guard, otel_error) = match crate::otel::OtelConfig::from_env()
        .and_then(|c| c.map(|c| crate::otel::layer(&c)).transpose())
    {
        Ok(Some((layer, otel))) => (Some(layer), LoggingGuard { _otel: Some(otel) }, None),
        Ok(None) => (None, LoggingGuard::default(), None),
        Err(e) => (None, LoggingGuard::default(), Some(e)),
    };
    #[cfg(not(feature = "otel"))]
    let (otel_layer, guard) = (
        None::<tracing_subscriber::layer::Identity>,
        LoggingGuard::default(),
    );

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let fmt_layer = fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt_layer.json().with_current_span(true).flatten_event(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt_layer).try_init(),
    };

    // Reported only now: before try_init there was nowhere to log it.
    #[cfg(feature = "otel")]
    if let Some(e) = otel_error {
        tracing::warn!(error = format!("{e:#}"), "OpenTelemetry export disabled");
    }
    guard
}
