//! One POST to the endpoint, and the classification of its result.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::request_builder::WebhookRequest;

/// Why one attempt failed, in a form fit for a metric label and a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The endpoint answered with a non-2xx status (other than 410).
    Status(u16),
    /// No complete answer within the configured timeout.
    Timeout,
    /// The connection could not be established (DNS, refused, TLS...).
    Connect,
    /// Any other transport error (reset mid-request, malformed response...).
    Transport,
}

impl FailureKind {
    /// Low-cardinality value for the `reason` label of `espm_bridge_sink_attempt_failures_total`.
    pub fn label(&self) -> String {
        match self {
            FailureKind::Status(code) => format!("http_{code}"),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::Connect => "connect".into(),
            FailureKind::Transport => "transport".into(),
        }
    }
}

/// The classified result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx: delivered.
    Success {
        /// The status the endpoint answered.
        status: u16,
    },
    /// 410 Gone: the receiver asks us to stop sending to this endpoint.
    Gone,
    /// Anything else: retried per the policy, then dead-lettered.
    Failed {
        /// What went wrong.
        kind: FailureKind,
        /// Human-readable detail (status line or error chain), never containing secrets.
        detail: String,
        /// The delay the endpoint asked for with `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::Success { status } => write!(f, "HTTP {status}"),
            Attempt::Gone => f.write_str("HTTP 410 Gone"),
            Attempt::Failed { detail, .. } => f.write_str(detail),
        }
    }
}

/// Classify an HTTP answer (pure; `now` resolves an HTTP-date `Retry-After`).
pub fn classify(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Attempt {
    if status.is_success() {
        return Attempt::Success {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return Attempt::Gone;
    }
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    Attempt::Failed {
        kind: FailureKind::Status(status.as_u16()),
        detail: format!("HTTP {status}"),
        retry_after,
    }
}

/// Parse a `Retry-After` value: delay-seconds or an HTTP-date. A date in the past means "now"
/// (zero); garbage means "not given".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failed exchange: `kind`, then `err` and its causes, for the dead-letter reason and logs.
/// Callers pass errors without the URL (it may carry a token in its query).
fn failed(kind: FailureKind, err: &dyn std::error::Error) -> Attempt {
    let mut detail = String::from(match kind {
        FailureKind::Timeout => "timeout",
        FailureKind::Connect => "connection failed",
        _ => "transport error",
    });
    let mut source = Some(err);
    while let Some(e) = source {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        source = e.source();
    }
    Attempt::Failed {
        kind,
        detail,
        retry_after: None,
    }
}

/// Whether `err` or one of its causes is an I/O timeout (a connect timeout, say).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Classify a transport error of the proxied client.
fn classify_reqwest_error(err: &reqwest::Error) -> Attempt {
    let kind = if err.is_timeout() {
        FailureKind::Timeout
    } else if err.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Transport
    };
    // reqwest's own message ("error sending request") says nothing; its causes do.
    match std::error::Error::source(err) {
        Some(cause) => failed(kind, cause),
        None => failed(kind, err),
    }
}

/// Classify a transport error of the direct client.
fn classify_hyper_error(err: &hyper_util::client::legacy::Error) -> Attempt {
    let kind = if timed_out(err) {
        FailureKind::Timeout
    } else if err.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Transport
    };
    failed(kind, err)
}

/// The building of the HTTP client failed (no TLS provider, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot build HTTP client: {0}")]
pub struct ClientError(String);

type DirectClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// How requests reach the endpoint.
#[derive(Clone)]
enum Transport {
    /// hyper's pooled HTTP/1 client: reqwest's layers (retry, redirect, URL conversions) were
    /// about a tenth of the bridge's CPU in a webhook burst (issue 9), and none of them is used.
    Direct(DirectClient),
    /// Through the proxy the environment names for this URL (`HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY`, minus `NO_PROXY`): reqwest, which speaks to proxies.
    Proxied(reqwest::Client),
}

/// A client bound to one endpoint.
#[derive(Clone)]
pub struct WebhookService {
    transport: Transport,
    /// The configured URL, for the proxied client (which reads its user info itself).
    url: reqwest::Url,
    /// The URL without user info or fragment, for the direct client.
    uri: http::Uri,
    /// `authorization: Basic ...` from the URL's user info, as reqwest would send it.
    basic_auth: Option<http::HeaderValue>,
    timeout: Duration,
}

impl fmt::Debug for WebhookService {
    // Neither the URL (a token in its query) nor the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService")
            .field(
                "transport",
                &match self.transport {
                    Transport::Direct(_) => "direct",
                    Transport::Proxied(_) => "proxied",
                },
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The URL as the direct client sends it, and the `authorization` header its user info stands
/// for (percent-decoded, as reqwest does; marked sensitive).
fn direct_target(
    url: &reqwest::Url,
) -> Result<(http::Uri, Option<http::HeaderValue>), ClientError> {
    let mut bare = url.clone();
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = format!(
            "{}:{}",
            decode(url.username()),
            url.password().map(decode).unwrap_or_default()
        );
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ClientError("the URL's user info is not a valid credential".into()))?;
        value.set_sensitive(true);
        // Only fails for URLs that cannot have user info, which `url` then never reports.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        Some(value)
    };
    bare.set_fragment(None);
    // Never echo the URL: it may carry a token.
    let uri = bare
        .as_str()
        .parse::<http::Uri>()
        .map_err(|_| ClientError("the URL is not a valid HTTP request target".into()))?;
    Ok((uri, auth))
}

fn direct_client(timeout: Duration, max_in_flight: usize) -> Result<DirectClient, ClientError> {
    use hyper_util::client::legacy::connect::HttpConnector;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| ClientError(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(max_in_flight.max(1))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https),
    )
}

impl WebhookService {
    /// Build the HTTP client. Redirects are not followed: a signed event must reach the
    /// configured URL or fail visibly. A proxy the environment names for this URL is used, as
    /// by every reqwest or curl based tool.
    pub fn new(
        url: reqwest::Url,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, ClientError> {
        let (uri, basic_auth) = direct_target(&url)?;
        let proxied = hyper_util::client::proxy::matcher::Matcher::from_env()
            .intercept(&uri)
            .is_some();
        let transport = if proxied {
            Transport::Proxied(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(timeout)
                    .pool_max_idle_per_host(max_in_flight.max(1))
                    .build()
                    .map_err(|e| ClientError(e.without_url().to_string()))?,
            )
        } else {
            Transport::Direct(direct_client(timeout, max_in_flight)?)
        };
        Ok(Self {
            transport,
            url,
            uri,
            basic_auth,
            timeout,
        })
    }

    /// Whether requests go through a proxy named by the environment.
    pub fn is_proxied(&self) -> bool {
        matches!(self.transport, Transport::Proxied(_))
    }

    /// Send one request and classify the result. The exchange is bounded by the configured
    /// timeout; a status that arrived in time stands even if its body does not.
    pub async fn send(&self, request: WebhookRequest) -> Attempt {
        match &self.transport {
            Transport::Direct(client) => self.send_direct(client, request).await,
            Transport::Proxied(client) => self.send_proxied(client, request).await,
        }
    }

    async fn send_direct(&self, client: &DirectClient, request: WebhookRequest) -> Attempt {
        use http::header::{ACCEPT, AUTHORIZATION};
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut headers = request.headers;
        if let Some(auth) = &self.basic_auth {
            // A configured `authorization` header wins, as with reqwest.
            headers.entry(AUTHORIZATION).or_insert_with(|| auth.clone());
        }
        headers
            .entry(ACCEPT)
            .or_insert(http::HeaderValue::from_static("*/*"));
        let mut req =
            http::Request::new(http_body_util::Full::new(bytes::Bytes::from(request.body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(err)) => return classify_hyper_error(&err),
            Err(_) => return no_answer(self.timeout),
        };
        let (parts, body) = resp.into_parts();
        let attempt = classify(parts.status, &parts.headers, SystemTime::now());
        // Drain the body so the connection can be reused; its content is irrelevant.
        let _ = tokio::time::timeout_at(deadline, body.collect()).await;
        attempt
    }

    async fn send_proxied(&self, client: &reqwest::Client, request: WebhookRequest) -> Attempt {
        let sent = client
            .post(self.url.clone())
            .headers(request.headers)
            .body(request.body)
            .timeout(self.timeout)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let attempt = classify(resp.status(), resp.headers(), SystemTime::now());
                let _ = resp.bytes().await;
                attempt
            }
            // `without_url` keeps query strings (which may carry tokens) out of reasons and logs.
            Err(err) => classify_reqwest_error(&err.without_url()),
        }
    }
}

/// No status within `timeout`.
fn no_answer(timeout: Duration) -> Attempt {
    Attempt::Failed {
        kind: FailureKind::Timeout,
        detail: format!(
            "timeout: no answer within {}",
            humantime::format_duration(timeout)
        ),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn classifies_statuses() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(
            classify(StatusCode::NO_CONTENT, &none, now),
            Attempt::Success { status: 204 }
        );
        assert_eq!(classify(StatusCode::GONE, &none, now), Attempt::Gone);
        for code in [400u16, 404, 429, 500, 503, 302] {
            let s = StatusCode::from_u16(code).unwrap();
            match classify(s, &none, now) {
                Attempt::Failed {
                    kind: FailureKind::Status(c),
                    retry_after: None,
                    ..
                } => assert_eq!(c, code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);

        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        match classify(StatusCode::TOO_MANY_REQUESTS, &h, now) {
            Attempt::Failed { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_labels_are_stable() {
        assert_eq!(FailureKind::Status(503).label(), "http_503");
        assert_eq!(FailureKind::Timeout.label(), "timeout");
        assert_eq!(FailureKind::Connect.label(), "connect");
    }
}
