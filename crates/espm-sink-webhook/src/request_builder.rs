//! Turns one CloudEvent into the body and headers of a webhook POST (pure: the clock is a
//! parameter).

use std::collections::BTreeMap;

use espm_config::WebhookMode;
use espm_events::{percent_encode_header, CloudEvent};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};

use crate::signing::Signer;

/// `content-type` of a structured-mode CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The `user-agent` every request carries.
pub const USER_AGENT_VALUE: &str = concat!("espm-bridge/", env!("CARGO_PKG_VERSION"));

/// Header carrying the message id (the CloudEvent id, so it is stable across retries).
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// Header carrying the unix-seconds send time.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// Header carrying the `v1,<sig>` signatures.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Headers the bridge sets itself; configured extra headers may not override them, since a
/// replaced signature or content type would silently break every receiver.
const RESERVED: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

/// A configured extra header that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a valid HTTP header name.
    #[error("extra header name {0:?} is not a valid HTTP header name")]
    InvalidName(String),
    /// Not a valid HTTP header value (the value is not shown: it may be a credential).
    #[error("extra header {0:?} has a value that is not a valid HTTP header value")]
    InvalidValue(String),
    /// One of the headers the bridge sets itself.
    #[error("extra header {0:?} is set by the bridge and cannot be overridden")]
    Reserved(String),
}

/// Validate configured extra headers once, at construction. Values are marked sensitive so
/// that HTTP-level debug output does not show them (they are often credentials).
pub fn extra_headers(configured: &BTreeMap<String, String>) -> Result<HeaderMap, HeaderError> {
    let mut out = HeaderMap::with_capacity(configured.len());
    for (name, value) in configured {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HeaderError::InvalidName(name.clone()))?;
        if RESERVED.contains(&header.as_str()) || header.as_str().starts_with("ce-") {
            return Err(HeaderError::Reserved(name.clone()));
        }
        let mut v =
            HeaderValue::from_str(value).map_err(|_| HeaderError::InvalidValue(name.clone()))?;
        v.set_sensitive(true);
        out.insert(header, v);
    }
    Ok(out)
}

/// One ready-to-send request: body bytes plus every header.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    /// Structured mode: the CloudEvent JSON; binary mode: its `data`.
    pub body: Vec<u8>,
    /// `content-type`, `user-agent`, `webhook-*` and the configured extra headers.
    pub headers: HeaderMap,
}

/// The HTTP binding's header names: `ce-` and the attribute.
static HEADERS: std::sync::LazyLock<espm_events::AttributeHeaders> =
    std::sync::LazyLock::new(|| espm_events::AttributeHeaders::new("ce-"));

/// Build the request for `event`, signed at `timestamp` (unix seconds).
///
/// Structured mode sends the whole event as `application/cloudevents+json`. Binary mode (the
/// CloudEvents HTTP binding, 3.1) sends `data` as the body with `content-type` set to
/// `datacontenttype`, and every other attribute as a `ce-` header, percent-encoded. The
/// signature covers the body either way.
///
/// Extra headers are added first and the bridge's own on top, so the bridge's always win
/// (extra headers are also validated against that in [`extra_headers`]).
pub fn build(
    event: &CloudEvent,
    signer: &Signer,
    extra: &HeaderMap,
    timestamp: i64,
    mode: WebhookMode,
) -> WebhookRequest {
    let mut headers = extra.clone();
    let body = match mode {
        WebhookMode::Structured => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_JSON));
            event.to_json_bytes()
        }
        WebhookMode::Binary => {
            for (name, value) in event.attributes() {
                if name == "datacontenttype" {
                    continue;
                }
                let Some(n) = HEADERS.get(name) else { continue };
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(&percent_encode_header(&value)),
                ) {
                    headers.insert(n, v);
                }
            }
            let ct = HeaderValue::from_str(&event.datacontenttype)
                .unwrap_or_else(|_| HeaderValue::from_static("application/json"));
            headers.insert(CONTENT_TYPE, ct);
            event.data.json().as_bytes().to_vec()
        }
    };
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    // Event ids are produced by us (UUIDs / ASCII); an id that is not a valid header value
    // still gets a deterministic, valid id so the message can be signed and deduplicated.
    let id = HeaderValue::from_str(&event.id)
        .map(|v| (event.id.clone(), v))
        .unwrap_or_else(|_| {
            let sanitized: String = event
                .id
                .chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '_' })
                .collect();
            let v = HeaderValue::from_str(&sanitized)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-id")); // ok: graphic ASCII only
            (sanitized, v)
        });
    headers.insert(WEBHOOK_ID, id.1);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    if !signer.is_empty() {
        let sig = signer.signature_header(&id.0, timestamp, &body);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            headers.insert(WEBHOOK_SIGNATURE, v);
        }
    }
    WebhookRequest { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Signer;

    fn event() -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "9d2c6a1e-0000-5000-8000-000000000001".into(),
            source: "urn:espm:test:acme".into(),
            ty: "gov.energystar.pm.share.revoked".into(),
            subject: Some("property/5000006".into()),
            time: Some("2024-01-02T03:04:05Z".into()),
            datacontenttype: "application/json".into(),
            dataschema: "https://example.invalid/schema.json".into(),
            espmenvironment: "test".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({"propertyId": 5000006}).into(),
        }
    }

    #[test]
    fn builds_body_and_headers() {
        let signer = Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let extra = extra_headers(&BTreeMap::from([(
            "Authorization".to_string(),
            "Bearer t0k3n".to_string(),
        )]))
        .unwrap();
        let ev = event();
        let req = build(&ev, &signer, &extra, 1_700_000_000, WebhookMode::Structured);
        let back: CloudEvent = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(back, ev);
        let h = &req.headers;
        assert_eq!(h["content-type"], CLOUDEVENTS_JSON);
        assert_eq!(h["user-agent"], USER_AGENT_VALUE);
        assert!(USER_AGENT_VALUE.starts_with("espm-bridge/"));
        assert_eq!(h["webhook-id"], ev.id.as_str());
        assert_eq!(h["webhook-timestamp"], "1700000000");
        assert_eq!(h["authorization"], "Bearer t0k3n");
        assert!(h["authorization"].is_sensitive());
        let want = signer.signature_header(&ev.id, 1_700_000_000, &req.body);
        assert_eq!(h["webhook-signature"], want.as_str());
    }

    #[test]
    fn binary_mode_sends_data_with_ce_headers() {
        let signer = Signer::from_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let mut ev = event();
        ev.espmaccount = "Acme Énergie".into();
        let req = build(
            &ev,
            &signer,
            &HeaderMap::new(),
            1_700_000_000,
            WebhookMode::Binary,
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, ev.data);
        let h = &req.headers;
        assert_eq!(h["content-type"], "application/json");
        assert!(h.get("ce-datacontenttype").is_none());
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], ev.id.as_str());
        assert_eq!(h["ce-type"], ev.ty.as_str());
        assert_eq!(h["ce-source"], ev.source.as_str());
        assert_eq!(h["ce-subject"], "property/5000006");
        assert_eq!(h["ce-time"], "2024-01-02T03:04:05Z");
        assert_eq!(h["ce-espmaccount"], "Acme%20%C3%89nergie");
        assert_eq!(h["webhook-id"], ev.id.as_str());
        let want = signer.signature_header(&ev.id, 1_700_000_000, &req.body);
        assert_eq!(h["webhook-signature"], want.as_str());
    }

    #[test]
    fn rejects_bad_or_reserved_extra_headers() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            extra_headers(&one("Webhook-Signature", "x")),
            Err(HeaderError::Reserved("Webhook-Signature".into()))
        );
        assert_eq!(
            extra_headers(&one("bad name", "x")),
            Err(HeaderError::InvalidName("bad name".into()))
        );
        let err = extra_headers(&one("x-token", "line\nbreak-secret")).unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
