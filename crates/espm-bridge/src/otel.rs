//! OpenTelemetry trace export (cargo feature `otel`): an OTLP/HTTP exporter behind a
//! `tracing-opentelemetry` layer, configured by the standard `OTEL_*` environment variables.
//!
//! Export runs on a small tokio runtime owned by [`OtelGuard`] rather than the command's runtime:
//! `logging::init` runs before that runtime exists, and the guard must still be able to flush
//! after it has been dropped at the end of `main`.

use anyhow::{bail, Context as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Service name reported when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "espm-bridge";

/// Where and how to export spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// Full OTLP/HTTP traces URL (e.g. `http://127.0.0.1:4318/v1/traces`).
    pub traces_url: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Protocol,
}

impl OtelConfig {
    /// Reads the process environment; `Ok(None)` when export is not requested (neither
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, or
    /// `OTEL_SDK_DISABLED=true`).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`OtelConfig::from_env`] over any variable lookup, so tests need not mutate the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let set = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        // As the spec says: the signal-specific URL is used as is, the base one gets the path.
        let traces_url = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Some(base)) => format!("{}/v1/traces", base.trim().trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        // The signal-specific variable wins, as the OTel spec says.
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some("grpc") => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported by this build; use \
                 http/protobuf (the collector's OTLP/HTTP port, usually 4318)"
            ),
            Some(other) => bail!(
                "unknown OTEL_EXPORTER_OTLP_PROTOCOL {other:?} (expected http/protobuf or http/json)"
            ),
        };
        let service_name =
            set("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Ok(Some(Self {
            traces_url,
            service_name,
            protocol,
        }))
    }
}

/// Keeps the exporter alive; dropping it flushes pending spans and shuts the exporter down.
pub struct OtelGuard {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelGuard").finish_non_exhaustive()
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        // shutdown() flushes the batch first; it needs the export runtime, so that goes last.
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry exporter did not shut down cleanly");
        }
        if let Some(rt) = self.runtime.take() {
            // shutdown_background is allowed inside async contexts (e.g. tests), plain drop is not.
            rt.shutdown_background();
        }
    }
}

/// Builds the tracing layer that exports spans to `config` and the guard that flushes them.
///
/// The exporter's own diagnostics (targets `opentelemetry*`) are kept out of the exported
/// spans so that a failing collector cannot feed itself.
pub fn layer<S>(config: &OtelConfig) -> anyhow::Result<(impl Layer<S>, OtelGuard)>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()
        .context("starting the OpenTelemetry export runtime")?;
    // The batch processor and the reqwest client spawn onto the current runtime.
    let _entered = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(config.protocol)
        // Programmatic endpoints beat the exporter's own env lookup, hence traces_url above.
        .with_endpoint(config.traces_url.clone())
        .build()
        .context("building the OTLP span exporter")?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    drop(_entered);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            !meta.target().starts_with("opentelemetry")
        }));
    Ok((
        layer,
        OtelGuard {
            provider,
            runtime: Some(runtime),
        },
    ))
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// One POST as the collector stub saw it: content type and body.
    type Received = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

    /// An OTLP/HTTP collector stand-in on 127.0.0.1:0 recording POSTs to /v1/traces.
    fn start_collector(rt: &tokio::runtime::Runtime) -> (String, Received) {
        let received: Received = Arc::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    store.lock().unwrap().push((ct, body));
                    // An empty ExportTraceServiceResponse is a zero-length protobuf message.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), received)
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn exports_spans_as_protobuf_to_the_collector() {
        let collector_rt = tokio::runtime::Runtime::new().unwrap();
        let (endpoint, received) = start_collector(&collector_rt);
        let config = OtelConfig {
            traces_url: format!("{endpoint}/v1/traces"),
            service_name: "espm-bridge-test".into(),
            protocol: Protocol::HttpBinary,
        };
        let (layer, guard) = layer(&config).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("poll_account", account = "acme");
            let _entered = span.enter();
            tracing::info!("inside the span");
        });
        // What main does on exit: dropping the guard flushes the batch and waits for the reply.
        drop(guard);

        let posts = received.lock().unwrap().clone();
        assert!(!posts.is_empty(), "the collector received no POST");
        let (content_type, body) = &posts[0];
        assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
        assert!(!body.is_empty(), "empty OTLP body");
        // Protobuf stores strings verbatim, so the span name and service name are visible.
        assert!(contains(body, "poll_account"), "span name missing");
        assert!(contains(body, "espm-bridge-test"), "service name missing");
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        let none = OtelConfig::from_lookup(|_| None).unwrap();
        assert_eq!(none, None);
        let disabled = OtelConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4318".into()),
            "OTEL_SDK_DISABLED" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(disabled, None);
    }

    #[test]
    fn reads_the_standard_variables() {
        let defaults = OtelConfig::from_lookup(|k| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://collector:4318/".into())
        })
        .unwrap()
        .unwrap();
        assert_eq!(defaults.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(defaults.protocol, Protocol::HttpBinary);
        assert_eq!(defaults.traces_url, "http://collector:4318/v1/traces");

        let custom = OtelConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".into()),
            "OTEL_SERVICE_NAME" => Some("bridge-eu".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/json".into()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(custom.service_name, "bridge-eu");
        assert_eq!(custom.protocol, Protocol::HttpJson);
        assert_eq!(custom.traces_url, "http://collector:4318/v1/traces");

        let signal = OtelConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".into()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("https://traces.example/otlp".into()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(signal.traces_url, "https://traces.example/otlp");

        let grpc = OtelConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            _ => None,
        });
        assert!(grpc.unwrap_err().to_string().contains("grpc"));
    }
}
