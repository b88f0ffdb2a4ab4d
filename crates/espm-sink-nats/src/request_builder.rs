//! Pure mapping of one event to what goes on the wire: subject, headers and payload.
//!
//! # Subject sanitising
//!
//! NATS subjects are `.`-separated tokens. A publish subject must have no empty token, no
//! whitespace and no wildcard (`*`, `>`). Rendered event attributes are outside input, so
//! [`sanitize_subject`] rewrites the rendered template token by token:
//!
//! - every whitespace character (ASCII or Unicode), every control character, `*` and `>` is
//!   replaced by `_`;
//! - an empty token (a missing attribute, a leading, trailing or doubled `.`) becomes `_`.
//!
//! Dots inside attribute values (e.g. the event type `gov.energystar.pm.share.revoked`) are kept:
//! they add tokens, which is what lets consumers subscribe to `espm.live.gov.energystar.pm.>`.
//! The result always satisfies [`is_valid_publish_subject`].

use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::HeaderMap;
use bytes::Bytes;
use espm_events::{CloudEvent, Template};

/// `content-type` of every message: the payload is the structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

static CONTENT_TYPE_HEADER: HeaderName = HeaderName::from_static("content-type");

/// One event, ready to publish.
#[derive(Debug, Clone)]
pub struct NatsRequest {
    /// Sanitised subject (always a valid publish subject).
    pub subject: String,
    /// `ce-*` headers, `content-type`, and `Nats-Msg-Id` in JetStream mode.
    pub headers: HeaderMap,
    /// The whole event as structured CloudEvent JSON.
    pub payload: Bytes,
}

/// The NATS binding's header names: `ce-` and the attribute.
static HEADERS: std::sync::LazyLock<espm_events::AttributeHeaders> =
    std::sync::LazyLock::new(|| espm_events::AttributeHeaders::new("ce-"));

/// [`HEADERS`] as `HeaderName`s made once: a name from a `&str` is allocated per message (with
/// the values, 6.5% of the bridge's CPU in a NATS burst), a static one is cloned for free.
static HEADER_NAMES: std::sync::LazyLock<Vec<(&'static str, HeaderName)>> =
    std::sync::LazyLock::new(|| {
        espm_events::ATTRIBUTE_NAMES
            .iter()
            .filter_map(|a| Some((*a, HeaderName::from_static(HEADERS.get(a)?))))
            .collect()
    });

/// Build the subject, headers and payload for `event`.
///
/// With `jetstream`, the `Nats-Msg-Id` header carries the event id so the stream's duplicate
/// window drops a retried publish of the same event.
pub fn build_request(subject: &Template, event: &CloudEvent, jetstream: bool) -> NatsRequest {
    let mut headers = HeaderMap::new();
    // The name table in attribute order, no list of attributes in between; `partitionkey` is
    // read from `data` once, for its header and the payload.
    let mut partitionkey = None;
    for (attribute, name) in HEADER_NAMES.iter() {
        let value = if *attribute == "partitionkey" {
            partitionkey = event.partitionkey();
            partitionkey.as_deref().map(std::borrow::Cow::Borrowed)
        } else {
            event.attribute(attribute)
        };
        if let Some(value) = value {
            headers.insert(name.clone(), percent_encode(&value));
        }
    }
    headers.insert(CONTENT_TYPE_HEADER.clone(), CONTENT_TYPE);
    if jetstream {
        // The standard name, so readers of this HeaderMap find it with NATS_MESSAGE_ID too.
        headers.insert(NATS_MESSAGE_ID, percent_encode(&event.id));
    }
    NatsRequest {
        subject: render_subject(subject, event),
        headers,
        payload: Bytes::from(event.to_json_bytes_keyed(partitionkey.as_deref())),
    }
}

/// Render `template` for `event` and sanitise the result (see the module docs).
pub fn render_subject(template: &Template, event: &CloudEvent) -> String {
    sanitize_subject(&template.render(event))
}

/// Make any string a valid NATS publish subject (see the module docs for the rules).
pub fn sanitize_subject(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().max(1));
    for (i, token) in raw.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token.is_empty() {
            out.push('_');
            continue;
        }
        out.extend(
            token
                .chars()
                .map(|c| if is_bad_subject_char(c) { '_' } else { c }),
        );
    }
    out
}

/// Whether `s` can be published to: non-empty tokens without whitespace, control characters
/// or wildcards.
pub fn is_valid_publish_subject(s: &str) -> bool {
    s.split('.')
        .all(|t| !t.is_empty() && !t.chars().any(is_bad_subject_char))
}

fn is_bad_subject_char(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '*' || c == '>'
}

/// A header value as the CloudEvents NATS binding (3.1.3.2) requires (shared with the webhook
/// sink's binary mode).
pub use espm_events::percent_encode_header as percent_encode;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev() -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "evt-1".into(),
            source: "urn:espm:sim:acme".into(),
            ty: "gov.energystar.pm.share.revoked".into(),
            subject: Some("property/5000006".into()),
            time: Some("2024-01-02T03:04:05Z".into()),
            datacontenttype: "application/json".into(),
            dataschema: "https://espm-bridge.dev/schemas/share.revoked/v1.json".into(),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({"propertyId": 5000006, "name": "Main St *HQ*"}).into(),
        }
    }

    /// Decoded as a receiver following the binding would, by the `percent-encoding` crate.
    fn percent_decode(s: &str) -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    fn h<'a>(r: &'a NatsRequest, name: &str) -> Option<&'a str> {
        r.headers.get(name).map(|v| v.as_str())
    }

    #[test]
    fn builds_subject_headers_and_payload() {
        let t = Template::parse("espm.{environment}.{type}").unwrap();
        let r = build_request(&t, &ev(), true);
        assert_eq!(r.subject, "espm.sim.gov.energystar.pm.share.revoked");
        assert_eq!(h(&r, "ce-specversion"), Some("1.0"));
        assert_eq!(h(&r, "ce-id"), Some("evt-1"));
        assert_eq!(h(&r, "ce-source"), Some("urn:espm:sim:acme"));
        assert_eq!(h(&r, "ce-type"), Some("gov.energystar.pm.share.revoked"));
        assert_eq!(h(&r, "ce-subject"), Some("property/5000006"));
        assert_eq!(h(&r, "ce-time"), Some("2024-01-02T03:04:05Z"));
        assert_eq!(
            h(&r, "ce-dataschema"),
            Some("https://espm-bridge.dev/schemas/share.revoked/v1.json")
        );
        assert_eq!(h(&r, "ce-espmenvironment"), Some("sim"));
        assert_eq!(h(&r, "ce-espmaccount"), Some("acme"));
        assert_eq!(h(&r, "ce-datacontenttype"), Some("application/json"));
        assert_eq!(h(&r, "content-type"), Some(CONTENT_TYPE));
        assert_eq!(
            r.headers.get(NATS_MESSAGE_ID).map(|v| v.as_str()),
            Some("evt-1")
        );
        let back: CloudEvent = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(back, ev());
    }

    #[test]
    fn core_mode_has_no_msg_id_and_optional_headers_are_omitted() {
        let t = Template::parse("espm.{environment}.{type}").unwrap();
        let mut e = ev();
        e.subject = None;
        e.time = None;
        let r = build_request(&t, &e, false);
        assert!(r.headers.get(NATS_MESSAGE_ID).is_none());
        assert_eq!(h(&r, "ce-subject"), None);
        assert_eq!(h(&r, "ce-time"), None);
        assert_eq!(h(&r, "ce-id"), Some("evt-1"));
    }

    #[test]
    fn header_values_are_percent_encoded_per_the_binding() {
        // The binding's own example.
        assert_eq!(
            percent_encode("Euro \u{20AC} \u{1F600}"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(percent_encode("100% \"x\""), "100%25%20%22x%22");
        assert_eq!(percent_encode("a\r\nb\u{7f}"), "a%0D%0Ab%7F");
        let t = Template::parse("x").unwrap();
        let mut e = ev();
        e.subject = Some("a\r\nb".into());
        e.espmaccount = "Caf\u{e9} Nord".into();
        let r = build_request(&t, &e, true);
        assert_eq!(h(&r, "ce-subject"), Some("a%0D%0Ab"));
        assert_eq!(h(&r, "ce-espmaccount"), Some("Caf%C3%A9%20Nord"));
        // Unreserved values pass unchanged.
        assert_eq!(h(&r, "ce-source"), Some("urn:espm:sim:acme"));
        assert_eq!(h(&r, "ce-time"), Some("2024-01-02T03:04:05Z"));
    }

    #[test]
    fn sanitises_bad_tokens() {
        assert_eq!(sanitize_subject("espm.sim.a b"), "espm.sim.a_b");
        assert_eq!(sanitize_subject("espm..x"), "espm._.x");
        assert_eq!(sanitize_subject("espm.sim."), "espm.sim._");
        assert_eq!(sanitize_subject(".a"), "_.a");
        assert_eq!(sanitize_subject(""), "_");
        assert_eq!(sanitize_subject("a.*.>"), "a._._");
        assert_eq!(sanitize_subject("a.b*c>d"), "a.b_c_d");
        assert_eq!(sanitize_subject("a.\tb\n"), "a._b_");
        assert_eq!(sanitize_subject("a.caf\u{e9}"), "a.caf\u{e9}");
        assert_eq!(sanitize_subject("a.x\u{a0}y"), "a.x_y");
    }

    #[test]
    fn missing_attribute_and_data_render_valid_subjects() {
        let t = Template::parse("espm.{subject}.{data.name}.{data.missing}").unwrap();
        let mut e = ev();
        e.subject = None;
        let s = render_subject(&t, &e);
        assert_eq!(s, "espm._.Main_St__HQ_._");
        assert!(is_valid_publish_subject(&s));
    }

    #[test]
    fn validity_predicate() {
        assert!(is_valid_publish_subject("espm.sim.x"));
        assert!(!is_valid_publish_subject(""));
        assert!(!is_valid_publish_subject("a..b"));
        assert!(!is_valid_publish_subject("a.>"));
        assert!(!is_valid_publish_subject("a.*"));
        assert!(!is_valid_publish_subject("a b"));
        assert!(!is_valid_publish_subject("a."));
    }

    fn any_event() -> impl Strategy<Value = CloudEvent> {
        let s = || any::<String>();
        (
            (s(), s(), s(), proptest::option::of(s())),
            (s(), s(), s(), s()),
        )
            .prop_map(|((id, source, ty, subject), (time, schema, env, acct))| {
                CloudEvent {
                    specversion: "1.0".into(),
                    id,
                    source,
                    ty,
                    subject,
                    time: Some(time),
                    datacontenttype: "application/json".into(),
                    dataschema: schema,
                    espmenvironment: env,
                    espmaccount: acct,
                    causationid: None,
                    correlationid: None,
                    data: serde_json::json!({"k": "v"}).into(),
                }
            })
    }

    proptest! {
        #[test]
        fn any_event_renders_a_valid_subject(e in any_event()) {
            for tpl in ["espm.{environment}.{type}", "{id}", "{subject}.{time}", "a.{account}.{source}.>"] {
                let t = Template::parse(tpl).unwrap();
                let s = render_subject(&t, &e);
                prop_assert!(is_valid_publish_subject(&s), "{tpl} -> {s:?}");
            }
        }

        #[test]
        fn sanitize_is_idempotent_and_keeps_valid_subjects(raw in any::<String>()) {
            let s = sanitize_subject(&raw);
            prop_assert!(is_valid_publish_subject(&s));
            prop_assert_eq!(sanitize_subject(&s), s.clone());
            if is_valid_publish_subject(&raw) {
                prop_assert_eq!(s, raw);
            }
        }

        #[test]
        fn header_values_are_printable_ascii_and_decode_back(e in any_event()) {
            let t = Template::parse("x").unwrap();
            let r = build_request(&t, &e, true);
            for (_, values) in r.headers.iter() {
                for v in values {
                    prop_assert!(v.as_str().chars().all(|c| matches!(c, '!'..='~')));
                }
            }
            prop_assert_eq!(percent_decode(h(&r, "ce-id").unwrap()), e.id.clone());
            prop_assert_eq!(percent_decode(h(&r, "ce-espmaccount").unwrap()), e.espmaccount.clone());
        }
    }
}
