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

/// Classify a transport error.
fn classify_error(err: &reqwest::Error) -> Attempt {
    let kind = if err.is_timeout() {
        FailureKind::Timeout
    } else if err.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Transport
    };
    // `without_url` keeps query strings (which may carry tokens) out of reasons and logs.
    let mut detail = String::from(match kind {
        FailureKind::Timeout => "timeout",
        FailureKind::Connect => "connection failed",
        _ => "transport error",
    });
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
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

/// A client bound to one endpoint.
#[derive(Debug, Clone)]
pub struct WebhookService {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

impl WebhookService {
    /// Build the HTTP client. Redirects are not followed: a signed event must reach the
    /// configured URL or fail visibly.
    pub fn new(
        url: reqwest::Url,
        timeout: Duration,
        max_in_flight: usize,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .pool_max_idle_per_host(max_in_flight.max(1))
            .build()?;
        Ok(Self {
            client,
            url,
            timeout,
        })
    }

    /// Send one request and classify the result. The whole exchange, body included, is bounded
    /// by the configured timeout.
    pub async fn send(&self, request: WebhookRequest) -> Attempt {
        let sent = self
            .client
            .post(self.url.clone())
            .headers(request.headers)
            .body(request.body)
            .timeout(self.timeout)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let attempt = classify(resp.status(), resp.headers(), SystemTime::now());
                // Drain the body so the connection can be reused; its content is irrelevant.
                let _ = resp.bytes().await;
                attempt
            }
            Err(err) => classify_error(&err.without_url()),
        }
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
