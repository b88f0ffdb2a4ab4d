//! NATS sink configuration. Owned by the NATS sink: extend here.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Publish events to NATS, through JetStream by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
    /// Server URL(s), comma-separated, e.g. `nats://nats:4222`.
    pub url: String,
    /// Subject template over event attributes.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Publish through JetStream and await PubAcks (default). `false` uses core NATS publish.
    #[serde(default = "default_true")]
    pub jetstream: bool,
    /// JetStream stream to create or verify at start-up.
    #[serde(default)]
    pub stream: Option<String>,
    /// Create the stream if missing, capturing `stream_subjects`.
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a stream created by `create_stream`. Empty derives them from `subject`: its
    /// literal tokens before the first placeholder, then `>` (`espm.{environment}.{type}` gives
    /// `espm.>`). Given explicitly, they must capture every subject `subject` can produce, or
    /// every publish would fail with "no responders".
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    /// Username for user/password auth.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding an nkey seed.
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// Path of a `.creds` file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// CA certificate for TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Maximum unacknowledged publishes in flight.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for a JetStream PubAck (and for stream look-ups) before the publish
    /// counts as failed and is retried.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ack_timeout: Duration,
    /// How long a connection attempt may take in `start()`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Duplicate window of a stream created by `create_stream`: a retried publish with the same
    /// event id (`Nats-Msg-Id`) inside this window is stored once.
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duplicate_window: Duration,
}

fn default_subject() -> String {
    "espm.{environment}.{type}".to_string()
}
fn default_true() -> bool {
    true
}
fn default_in_flight() -> usize {
    256
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

/// Placeholders whose value is always one subject token (no `.`): names are `[a-z0-9_-]`, ids are
/// UUIDs, sources `urn:espm:{environment}:{account}`, subjects `property/1/meter/2`. Any other
/// placeholder (`{type}` has dots, `data.` fields are free text) may span several tokens.
const ONE_TOKEN: &[&str] = &[
    "id",
    "source",
    "subject",
    "environment",
    "espmenvironment",
    "account",
    "espmaccount",
];

/// One token of a subject template.
#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Lit(&'a str),
    /// Contains a placeholder that renders to exactly one token.
    One,
    /// Contains a placeholder that may render to several tokens.
    Many,
}

fn classify(tok: &str) -> Tok<'_> {
    if !tok.contains('{') {
        return Tok::Lit(tok);
    }
    let mut rest = tok;
    let mut one = true;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        one &= ONE_TOKEN.contains(&after[..close].trim());
        rest = after.get(close + 1..).unwrap_or("");
    }
    if one {
        Tok::One
    } else {
        Tok::Many
    }
}

/// Split a subject template on the `.` outside placeholders.
fn template_tokens(t: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in t.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(classify(&t[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(classify(&t[start..]));
    out
}

/// Whether the stream subject filter `filter` captures every subject `tokens` can render to.
fn captures(filter: &str, tokens: &[Tok<'_>]) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        match (f.get(i).copied(), t) {
            (Some(">"), _) => return true,
            (None, _) => return false,
            (Some("*"), Tok::Lit(_) | Tok::One) => {}
            (Some(lit), Tok::Lit(l)) if lit == *l => {}
            _ => return false,
        }
    }
    f.len() == tokens.len()
}

impl NatsSinkConfig {
    /// The subjects a stream created by `create_stream` captures: `stream_subjects`, or derived
    /// from `subject`. An error says why `subject` would not be captured.
    pub fn effective_stream_subjects(&self) -> Result<Vec<String>, String> {
        let tokens = template_tokens(&self.subject);
        if self.stream_subjects.is_empty() {
            let lits: Vec<&str> = tokens
                .iter()
                .map_while(|t| match t {
                    Tok::Lit(l) => Some(*l),
                    _ => None,
                })
                .collect();
            return if lits.len() == tokens.len() {
                Ok(vec![self.subject.clone()])
            } else if lits.is_empty() {
                Err(format!(
                    "subject `{}` starts with a placeholder, so no stream subject can be derived \
                     from it: list the subjects to capture in stream_subjects",
                    self.subject
                ))
            } else {
                Ok(vec![format!("{}.>", lits.join("."))])
            };
        }
        if self.stream_subjects.iter().any(|f| captures(f, &tokens)) {
            Ok(self.stream_subjects.clone())
        } else {
            Err(format!(
                "{:?} does not capture every subject of `{}`: publishes outside the stream fail \
                 with \"no responders\"; add a matching subject (or leave stream_subjects empty to \
                 derive it)",
                self.stream_subjects, self.subject
            ))
        }
    }
}

/// Whether `server` is a NATS server address the client accepts: `host:port` or a
/// `nats://`, `tls://`, `ws://` or `wss://` URL.
pub(crate) fn check_server_url(server: &str) -> Result<(), String> {
    let with_scheme = if server.contains("://") {
        server.to_string()
    } else {
        format!("nats://{server}")
    };
    match url::Url::parse(&with_scheme) {
        Ok(u) if !matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") => Err(format!(
            "server URL scheme `{}` is not nats, tls, ws or wss",
            u.scheme()
        )),
        Ok(u) if !u.has_host() => Err("a server URL needs a host".to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("invalid server URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(subject: &str, subjects: &[&str]) -> NatsSinkConfig {
        let mut t: toml::Table = toml::from_str("name = \"n\"\nurl = \"nats://x:4222\"").unwrap();
        t.insert("subject".into(), subject.into());
        let mut c: NatsSinkConfig = t.try_into().unwrap();
        c.stream_subjects = subjects.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn stream_subjects_derive_from_the_subject() {
        let got = |s: &str| cfg(s, &[]).effective_stream_subjects();
        assert_eq!(got("espm.{environment}.{type}"), Ok(vec!["espm.>".into()]));
        assert_eq!(got("acme.bridge.{type}"), Ok(vec!["acme.bridge.>".into()]));
        assert_eq!(got("acme.events"), Ok(vec!["acme.events".into()]));
        assert!(got("{environment}.events").is_err());
    }

    #[test]
    fn explicit_stream_subjects_must_capture_the_subject() {
        let ok = |s: &str, f: &[&str]| cfg(s, f).effective_stream_subjects().is_ok();
        assert!(ok("espm.{environment}.{type}", &["espm.>"]));
        assert!(ok("espm.{account}.events", &["espm.*.events"]));
        assert!(ok("espm.{account}.events", &["other.>", "espm.*.events"]));
        assert!(ok("acme.events", &["acme.events"]));
        // The trap a new user fell into: the default `espm.>` never matched a custom subject.
        assert!(!ok("acme.{type}", &["espm.>"]));
        // `{type}` has dots: `*` cannot capture it.
        assert!(!ok("espm.{type}", &["espm.*"]));
        assert!(!ok("espm.{account}.events", &["espm.*"]));
        assert!(!ok("espm.{account}", &["espm.*.events"]));
    }

    #[test]
    fn server_urls() {
        assert!(check_server_url("nats://nats:4222").is_ok());
        assert!(check_server_url("nats:4222").is_ok());
        assert!(check_server_url("tls://a.example:4222").is_ok());
        assert!(check_server_url("http://nats:4222").is_err());
    }
}
