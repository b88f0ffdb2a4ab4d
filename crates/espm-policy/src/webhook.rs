//! The decision webhook: one signed `POST` per question, one answer back. Anything but a clear
//! `accept` or `reject` is `defer`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use espm_config::DecisionWebhookConfig;
use espm_sink_webhook::request_builder::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use espm_sink_webhook::{signer_from_source, Signer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PolicyError;

/// What the bridge sends: the request and what it would become.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Question<'a> {
    /// The configured provider account.
    pub account: &'a str,
    /// `connection`, `property_share` or `meter_share`.
    pub kind: &'a str,
    /// The id to answer it by.
    pub request_id: i64,
    /// The customer account that asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// The command id the answer will be sent under (stable across retries of the question).
    pub command_id: &'a str,
    /// The rule that asks, `rules[i]` or `rules[i] (name)`.
    pub rule: String,
    /// The request as last listed: the `data` of its `…requested` event.
    pub request: &'a Value,
}

/// What the webhook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accept, with an optional note.
    Accept(Option<String>),
    /// Reject, with an optional note.
    Reject(Option<String>),
    /// Not now: ask again after the next walk. Carries why.
    Defer(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Accept,
    Reject,
    Defer,
}

#[derive(Deserialize)]
struct Body {
    decision: Verdict,
    #[serde(default)]
    note: Option<String>,
}

/// Read the webhook's answer body: `{"decision": "accept" | "reject" | "defer", "note": "..."}`.
/// A note over PM's limit, or anything else, is `defer`.
pub fn read_answer(body: &[u8]) -> Answer {
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return Answer::Defer(
            "the answer is not {\"decision\": \"accept\"|\"reject\"|\"defer\"}".into(),
        );
    };
    let note = b.note.filter(|n| !n.trim().is_empty());
    if let Some(n) = &note {
        let chars = n.chars().count();
        if chars > espm_command::NOTE_MAX_CHARS {
            return Answer::Defer(format!(
                "the answer's note has {chars} characters; PM accepts at most {}",
                espm_command::NOTE_MAX_CHARS
            ));
        }
    }
    match b.decision {
        Verdict::Accept => Answer::Accept(note),
        Verdict::Reject => Answer::Reject(note),
        Verdict::Defer => Answer::Defer("the webhook deferred".into()),
    }
}

/// The decision webhook of one policy. `Debug` shows the endpoint's host only: the URL may carry
/// a token, and the keys are never shown.
#[derive(Clone)]
pub struct DecisionWebhook {
    url: reqwest::Url,
    signer: Signer,
    client: reqwest::Client,
}

impl std::fmt::Debug for DecisionWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionWebhook")
            .field("host", &self.url.host_str())
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl DecisionWebhook {
    /// Read the signing secret(s) and build the client.
    pub fn new(cfg: &DecisionWebhookConfig) -> Result<Self, PolicyError> {
        let config = |path: &str, message: String| PolicyError::Config {
            path: format!("webhook.{path}"),
            message,
        };
        // Parse errors never echo the URL: it may carry a token in its query.
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| config("url", format!("invalid url: {e}")))?;
        let source = cfg.secret_source().ok_or_else(|| {
            config(
                "secret_file",
                "no signing secret: set `secret_file` or `secret_env`".into(),
            )
        })?;
        let signer = signer_from_source(&source).map_err(|e| config("secret_file", e))?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("espm-bridge/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config("url", format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            url,
            signer,
            client,
        })
    }

    /// Ask once. Never fails: a timeout, an error status or a garbled answer is
    /// [`Answer::Defer`].
    pub async fn ask(&self, q: &Question<'_>) -> Answer {
        let body = match serde_json::to_vec(q) {
            Ok(b) => b,
            Err(e) => return Answer::Defer(format!("cannot encode the question: {e}")),
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let sig = self.signer.signature_header(q.command_id, ts, &body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(WEBHOOK_ID, q.command_id)
            .header(WEBHOOK_TIMESTAMP, ts.to_string())
            .header(WEBHOOK_SIGNATURE, sig)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Answer::Defer("the webhook timed out".into()),
            Err(e) => {
                return Answer::Defer(format!(
                    "the webhook could not be reached: {}",
                    e.without_url()
                ))
            }
        };
        let status = resp.status();
        if !status.is_success() {
            return Answer::Defer(format!("the webhook answered HTTP {}", status.as_u16()));
        }
        match resp.bytes().await {
            Ok(b) => read_answer(&b),
            Err(e) if e.is_timeout() => Answer::Defer("the webhook timed out".into()),
            Err(e) => Answer::Defer(format!("the webhook's answer was cut: {}", e.without_url())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_or_the_url_query() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("whsec");
        std::fs::write(&file, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let w = DecisionWebhook::new(&DecisionWebhookConfig {
            url: "https://decide.example.com/hook?token=hunter2".into(),
            secret_file: Some(file),
            secret_env: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let dbg = format!("{w:?}");
        assert!(
            dbg.contains("decide.example.com") && dbg.contains("***"),
            "{dbg}"
        );
        assert!(!dbg.contains("hunter2") && !dbg.contains("MfKQ"), "{dbg}");
    }

    #[test]
    fn answers_read_as_accept_reject_or_defer() {
        assert_eq!(
            read_answer(br#"{"decision":"accept"}"#),
            Answer::Accept(None)
        );
        assert_eq!(
            read_answer(br#"{"decision":"reject","note":"unknown meter"}"#),
            Answer::Reject(Some("unknown meter".into()))
        );
        assert_eq!(
            read_answer(br#"{"decision":"accept","note":"  "}"#),
            Answer::Accept(None)
        );
        for garbage in [
            &b"{\"decision\":\"defer\"}"[..],
            b"{\"decision\":\"maybe\"}",
            b"accept",
            b"",
            b"{}",
        ] {
            assert!(
                matches!(read_answer(garbage), Answer::Defer(_)),
                "{garbage:?}"
            );
        }
        let long = format!(
            r#"{{"decision":"reject","note":"{}"}}"#,
            "x".repeat(espm_command::NOTE_MAX_CHARS + 1)
        );
        assert!(matches!(read_answer(long.as_bytes()), Answer::Defer(_)));
    }
}
