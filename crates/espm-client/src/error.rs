//! The one error type of the client.

use std::time::Duration;

use bytes::Bytes;
use espm_model::{DocumentError, PmErrorDetail};

/// Why a PM call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The connection failed, was reset, or the body could not be read to its end.
    #[error("transport error calling {url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong (the error chain).
        message: String,
        /// The part of the body read before the failure, if any, so the caller can journal it.
        partial: Option<Bytes>,
        /// The connection could not be established at all, so PM never saw the request
        /// (safe to retry even non-idempotent calls).
        connect: bool,
    },
    /// The attempt did not finish within the configured timeout.
    #[error("timed out calling {url}")]
    Timeout {
        /// The URL called.
        url: String,
        /// The part of the body read before the timeout, if any.
        partial: Option<Bytes>,
    },
    /// PM answered with a non-2xx status and an XML (or empty) body.
    #[error("PM answered HTTP {status} for {url}{}", describe(errors))]
    Http {
        /// HTTP status.
        status: u16,
        /// The URL called.
        url: String,
        /// PM's `<error errorNumber=".." errorDescription=".."/>` entries, if the body was a `<response>`.
        errors: Vec<PmErrorDetail>,
        /// The start of the body, whitespace collapsed.
        snippet: String,
        /// PM's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// PM answered 403 "Access Denied" (with its XML error body, or an empty one): the account
    /// does not share the property, meter or customer with you (any more), or, in PM's test
    /// environment, PM refuses the call itself (an unshare there answers 403 Access Denied).
    /// [`ClientError::status`] is 403 and [`ClientError::pm_errors`] gives PM's details.
    #[error(
        "PM denied access to {path} (HTTP 403 Access Denied{}): {}",
        describe(errors),
        access_denied_why(path)
    )]
    AccessDenied {
        /// The URL called.
        url: String,
        /// The path called, relative to the host (e.g. `/wstest/unshare/property/42`).
        path: String,
        /// PM's `<error .../>` entries (normally `-200` "Access Denied").
        errors: Vec<PmErrorDetail>,
        /// The start of the body, whitespace collapsed.
        snippet: String,
    },
    /// The body is not XML (an HTML maintenance or proxy page, plain text).
    #[error("PM answered HTTP {status} for {url} with a non-XML body: {snippet:?}")]
    NotXml {
        /// HTTP status.
        status: u16,
        /// The URL called.
        url: String,
        /// The start of the body, whitespace collapsed.
        snippet: String,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// A 2xx body that is XML but does not parse as the expected document (truncated, wrong root, ...).
    #[error("unreadable PM document: {0}")]
    Xml(#[from] DocumentError),
    /// The configuration is unusable (bad base URL, empty username, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// Pagination went wrong: a "next page" link loop, too many pages, or a link to another host.
    #[error("pagination error: {0}")]
    Pagination(String),
}

/// Why PM says "Access Denied", for the message of [`ClientError::AccessDenied`].
fn access_denied_why(path: &str) -> &'static str {
    let unshare = path.contains("/unshare/");
    let test_env = path.starts_with("/wstest/") || path.contains("/wstest/");
    match (unshare, test_env) {
        (true, true) => {
            "in PM's test environment an unshare answers 403 Access Denied (shares made from the \
             test environment's sample customer accounts cannot be terminated by the provider); \
             nothing was changed: ask the customer to unshare, or unshare in the live environment"
        }
        (true, false) => {
            "PM refused the unshare: the property or meter is not yours to unshare (in PM's test \
             environment an unshare answers 403 Access Denied); nothing was changed"
        }
        _ => {
            "the account does not share this with you (any more): after an unshare or a \
             disconnect PM answers reads with 403 Access Denied (sometimes 404, sometimes only \
             after a delay); in PM's test environment an unshare itself answers 403 Access Denied"
        }
    }
}

fn describe(errors: &[PmErrorDetail]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.error_number.as_deref().unwrap_or("?"),
                e.error_description.as_deref().unwrap_or("")
            )
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

/// At most this many characters of an unexpected body are kept in an error.
const SNIPPET_CHARS: usize = 200;

/// The start of a body, whitespace collapsed, for errors and logs.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= SNIPPET_CHARS {
            break;
        }
    }
    out.chars().take(SNIPPET_CHARS).collect()
}

impl ClientError {
    /// HTTP status of an `Http` or `NotXml` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } | ClientError::NotXml { status, .. } => Some(*status),
            ClientError::AccessDenied { .. } => Some(403),
            _ => None,
        }
    }

    /// PM's error details (empty unless `Http` with a `<response>` body).
    pub fn pm_errors(&self) -> &[PmErrorDetail] {
        match self {
            ClientError::Http { errors, .. } | ClientError::AccessDenied { errors, .. } => errors,
            _ => &[],
        }
    }

    /// The `Retry-After` PM sent with the failing response.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Http { retry_after, .. } | ClientError::NotXml { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The body bytes read before a transport failure or timeout, for journaling.
    pub fn partial_body(&self) -> Option<&Bytes> {
        match self {
            ClientError::Transport { partial, .. } | ClientError::Timeout { partial, .. } => {
                partial.as_ref()
            }
            _ => None,
        }
    }

    fn has_error_200(&self, matches: impl Fn(&str) -> bool) -> bool {
        match self {
            ClientError::Http {
                status: 400,
                errors,
                ..
            } => errors.iter().any(|e| {
                e.error_number.as_deref().map(str::trim) == Some("-200")
                    && e.error_description
                        .as_deref()
                        .is_some_and(|d| matches(&d.to_ascii_lowercase()))
            }),
            _ => false,
        }
    }

    /// PM's 400 / `-200` "The pending request doesn't exist or has been fulfilled": the request was
    /// already answered (possibly by an earlier attempt whose response was lost). Callers treat it as
    /// idempotent success.
    pub fn is_already_resolved(&self) -> bool {
        self.has_error_200(|d| {
            d.contains("has been fulfilled")
                || (d.contains("pending request")
                    && (d.contains("doesn't exist")
                        || d.contains("does not exist")
                        || d.contains("doesn’t exist")))
        })
    }

    /// PM's 400 / `-200` "You are not connected to this account" on a disconnect: already disconnected.
    pub fn is_not_connected(&self) -> bool {
        self.has_error_200(|d| d.contains("not connected"))
    }

    /// PM's 400 / `-200` "This property (meter) is not shared with you" on an unshare: already
    /// unshared.
    pub fn is_not_shared(&self) -> bool {
        self.has_error_200(|d| d.contains("not shared"))
    }

    /// Whether PM refused access: 403 ([`ClientError::AccessDenied`]), or the 404 it sometimes
    /// gives for a read after an unshare. An unshare's own 400 "not shared with you" is
    /// [`ClientError::is_not_shared`], not this.
    pub fn is_access_denied(&self) -> bool {
        matches!(self.status(), Some(403) | Some(404))
    }

    /// Whether a retry may succeed: 429, 500, 502, 503, 504, timeouts and transport failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
            ClientError::Http { status, .. } | ClientError::NotXml { status, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
            }
            ClientError::AccessDenied { .. }
            | ClientError::Xml(_)
            | ClientError::Config(_)
            | ClientError::Pagination(_) => false,
        }
    }

    /// Whether PM certainly did not act on the request, so even a non-idempotent call
    /// (creating a customer) may be repeated: refused connections, 429, 502 and 503.
    pub(crate) fn certainly_not_processed(&self) -> bool {
        match self {
            ClientError::Transport { connect, .. } => *connect,
            _ => matches!(self.status(), Some(429) | Some(502) | Some(503)),
        }
    }

    /// The `reason` label of `espm_bridge_pm_retries_total`.
    pub(crate) fn retry_reason(&self) -> &'static str {
        match self {
            ClientError::Transport { .. } => "transport",
            ClientError::Timeout { .. } => "timeout",
            _ => match self.status() {
                Some(429) => "http_429",
                Some(500) => "http_500",
                Some(502) => "http_502",
                Some(503) => "http_503",
                Some(504) => "http_504",
                _ => "other",
            },
        }
    }
}
