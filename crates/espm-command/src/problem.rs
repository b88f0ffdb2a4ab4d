//! Why a command failed, as RFC 9457 problem types: one table, used by the API's responses, the
//! `command.failed` events, the OpenAPI document and the docs.

use std::time::Duration;

use espm_client::ClientError;
use espm_events::data::CommandErrorData;

/// Where the problem types are documented: `{PROBLEM_BASE}#{slug}`.
pub const PROBLEM_BASE: &str = "https://github.com/espm-bridge/espm-bridge/blob/main/config/API.md";

/// Every kind of problem the command API and the command topics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The request is malformed or asks what PM would refuse anyway.
    InvalidCommand,
    /// No valid bearer token.
    Unauthorized,
    /// No provider account of that name.
    UnknownAccount,
    /// No command with that id.
    UnknownCommand,
    /// An id (Idempotency-Key) reused for a different command.
    IdReused,
    /// PM refused the command (400): its errors say why.
    PmRejected,
    /// PM denied access (403 "Access Denied"), e.g. an unshare in PM's test environment.
    PmAccessDenied,
    /// PM does not know the request, customer, property or meter (404).
    PmNotFound,
    /// PM's rate limit (429); `Retry-After` says when to try again.
    PmRateLimited,
    /// PM is down, in maintenance, or answered with something unreadable (5xx, HTML).
    PmUnavailable,
    /// PM could not be reached or did not answer in time; whether it acted is unknown, and the
    /// command is checked against PM before it is sent again.
    PmUnreachable,
    /// PM refused the bridge's own credentials (401).
    PmUnauthorized,
    /// The bridge's journal cannot take the command; nothing was sent to PM.
    JournalUnavailable,
    /// The bridge stopped before the command finished; send it again (same id).
    Interrupted,
}

impl ProblemKind {
    /// Every kind, for the docs and the OpenAPI document.
    pub const ALL: [ProblemKind; 14] = [
        ProblemKind::InvalidCommand,
        ProblemKind::Unauthorized,
        ProblemKind::UnknownAccount,
        ProblemKind::UnknownCommand,
        ProblemKind::IdReused,
        ProblemKind::PmRejected,
        ProblemKind::PmAccessDenied,
        ProblemKind::PmNotFound,
        ProblemKind::PmRateLimited,
        ProblemKind::PmUnavailable,
        ProblemKind::PmUnreachable,
        ProblemKind::PmUnauthorized,
        ProblemKind::JournalUnavailable,
        ProblemKind::Interrupted,
    ];

    /// `(slug, HTTP status, title, retryable)`.
    fn row(self) -> (&'static str, u16, &'static str, bool) {
        match self {
            ProblemKind::InvalidCommand => ("invalid-command", 400, "Invalid command", false),
            ProblemKind::Unauthorized => (
                "unauthorized",
                401,
                "Missing or invalid bearer token",
                false,
            ),
            ProblemKind::UnknownAccount => {
                ("unknown-account", 404, "Unknown provider account", false)
            }
            ProblemKind::UnknownCommand => ("unknown-command", 404, "Unknown command", false),
            ProblemKind::IdReused => (
                "id-reused",
                422,
                "Command id reused for a different command",
                false,
            ),
            ProblemKind::PmRejected => ("pm-rejected", 422, "PM rejected the command", false),
            ProblemKind::PmAccessDenied => ("pm-access-denied", 403, "PM denied access", false),
            ProblemKind::PmNotFound => ("pm-not-found", 404, "PM does not know the target", false),
            ProblemKind::PmRateLimited => ("pm-rate-limited", 429, "PM's rate limit", true),
            ProblemKind::PmUnavailable => ("pm-unavailable", 502, "PM is unavailable", true),
            ProblemKind::PmUnreachable => ("pm-unreachable", 504, "PM could not be reached", true),
            ProblemKind::PmUnauthorized => (
                "pm-unauthorized",
                502,
                "PM refused the bridge's credentials",
                false,
            ),
            ProblemKind::JournalUnavailable => (
                "journal-unavailable",
                503,
                "The journal cannot take the command",
                true,
            ),
            ProblemKind::Interrupted => ("interrupted", 503, "The command was interrupted", true),
        }
    }

    /// The short name, e.g. `pm-rejected`.
    pub fn slug(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status the API answers with.
    pub fn status(self) -> u16 {
        self.row().1
    }

    /// The problem's title.
    pub fn title(self) -> &'static str {
        self.row().2
    }

    /// Whether sending the same command again later may succeed.
    pub fn retryable(self) -> bool {
        self.row().3
    }

    /// The problem type URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}#{}", self.slug())
    }

    /// The kind whose type URI is `uri`.
    pub fn from_type_uri(uri: &str) -> Option<ProblemKind> {
        ProblemKind::ALL.into_iter().find(|k| k.type_uri() == uri)
    }
}

/// One problem: its kind and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// What went wrong, in words.
    pub detail: String,
    /// PM's HTTP status, when PM answered.
    pub pm_status: Option<u16>,
    /// PM's own error messages.
    pub pm_errors: Vec<String>,
    /// PM's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// A problem of a kind.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            pm_status: None,
            pm_errors: Vec::new(),
            retry_after: None,
        }
    }

    /// What a failed PM call means for the caller: PM's 400 vs 403 vs 404 vs 429 vs 5xx keep
    /// their meaning.
    pub fn from_client_error(e: &ClientError) -> Self {
        let kind = match e {
            ClientError::Transport { .. } | ClientError::Timeout { .. } => {
                ProblemKind::PmUnreachable
            }
            ClientError::Http { status, .. } | ClientError::NotXml { status, .. } => match status {
                401 => ProblemKind::PmUnauthorized,
                403 => ProblemKind::PmAccessDenied,
                404 => ProblemKind::PmNotFound,
                429 => ProblemKind::PmRateLimited,
                400..=499 => ProblemKind::PmRejected,
                _ => ProblemKind::PmUnavailable,
            },
            ClientError::AccessDenied { .. } => ProblemKind::PmAccessDenied,
            ClientError::Xml(_) | ClientError::Pagination(_) => ProblemKind::PmUnavailable,
            ClientError::Config(_) => ProblemKind::PmUnauthorized,
        };
        Self {
            kind,
            detail: e.to_string(),
            pm_status: e.status(),
            pm_errors: e
                .pm_errors()
                .iter()
                .map(|d| {
                    format!(
                        "{}: {}",
                        d.error_number.as_deref().unwrap_or("?"),
                        d.error_description.as_deref().unwrap_or("")
                    )
                })
                .collect(),
            retry_after: e.retry_after(),
        }
    }

    /// The `error` of a `command.failed` event.
    pub fn to_data(&self) -> CommandErrorData {
        CommandErrorData {
            problem_type: self.kind.type_uri(),
            title: self.kind.title().to_string(),
            status: self.kind.status(),
            detail: self.detail.clone(),
            pm_status: self.pm_status,
            pm_errors: self.pm_errors.clone(),
            retryable: self.kind.retryable(),
        }
    }

    /// Read back what [`Problem::to_data`] wrote.
    pub fn from_data(d: &CommandErrorData) -> Self {
        Self {
            kind: ProblemKind::from_type_uri(&d.problem_type).unwrap_or(ProblemKind::PmUnavailable),
            detail: d.detail.clone(),
            pm_status: d.pm_status,
            pm_errors: d.pm_errors.clone(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> ClientError {
        ClientError::Http {
            status,
            url: "http://pm/ws/x".into(),
            errors: Vec::new(),
            snippet: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        }
    }

    #[test]
    fn pm_statuses_keep_their_meaning() {
        let k = |s| Problem::from_client_error(&http(s)).kind;
        assert_eq!(k(400), ProblemKind::PmRejected);
        assert_eq!(k(403), ProblemKind::PmAccessDenied);
        assert_eq!(k(404), ProblemKind::PmNotFound);
        assert_eq!(k(429), ProblemKind::PmRateLimited);
        assert_eq!(k(500), ProblemKind::PmUnavailable);
        assert_eq!(k(503), ProblemKind::PmUnavailable);
        let p = Problem::from_client_error(&http(429));
        assert_eq!(p.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(p.pm_status, Some(429));
        assert!(p.to_data().retryable);
    }

    #[test]
    fn the_typed_access_denied_maps_to_pm_access_denied() {
        let e = ClientError::AccessDenied {
            url: "http://pm/wstest/unshare/property/7".into(),
            path: "/wstest/unshare/property/7".into(),
            errors: vec![espm_client::PmErrorDetail {
                error_number: Some("-200".into()),
                error_description: Some("Access Denied".into()),
            }],
            snippet: String::new(),
        };
        let p = Problem::from_client_error(&e);
        assert_eq!(p.kind, ProblemKind::PmAccessDenied);
        assert_eq!(p.pm_status, Some(403));
        assert_eq!(p.pm_errors, vec!["-200: Access Denied".to_string()]);
        assert!(p.detail.contains("test environment"), "{}", p.detail);
        assert!(!p.to_data().retryable);
    }

    #[test]
    fn slugs_and_type_uris_are_unique_and_read_back() {
        let mut slugs: Vec<_> = ProblemKind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemKind::ALL.len());
        for k in ProblemKind::ALL {
            assert_eq!(ProblemKind::from_type_uri(&k.type_uri()), Some(k));
        }
    }
}
