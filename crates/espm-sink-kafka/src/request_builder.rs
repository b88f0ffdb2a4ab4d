//! Pure mapping of a CloudEvent to a Kafka record (CloudEvents Kafka protocol binding 1.0).

use std::borrow::Cow;

use espm_config::KafkaMode;
use espm_events::{AttributeHeaders, CloudEvent, Template, ATTRIBUTE_NAMES};

/// `content-type` of a binary-mode record: the value is the JSON of `data`.
pub const BINARY_CONTENT_TYPE: &str = "application/json";
/// `content-type` of a structured-mode record: the value is the whole event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// One Kafka record, ready to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRequest {
    /// Rendered topic.
    pub topic: String,
    /// Rendered partition key; `None` when the key template rendered empty.
    pub key: Option<String>,
    /// Record headers in order (`ce_*` attributes and `content-type`); the names are static, so
    /// a record allocates none.
    pub headers: Vec<(&'static str, String)>,
    /// Record value.
    pub payload: Vec<u8>,
}

/// Why an event cannot become a record. Permanent: the same event always fails the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The topic template rendered a name Kafka rejects.
    InvalidTopic {
        /// The rendered name.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::InvalidTopic { topic, reason } => {
                write!(f, "invalid topic {topic:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Maps events to records with the configured topic and key templates and binding mode.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    topic: Template,
    key: Template,
    mode: KafkaMode,
    /// The topic of every record when the template has no placeholders, checked once.
    fixed_topic: Option<Result<String, BuildError>>,
}

impl RequestBuilder {
    /// A builder from parsed templates.
    pub fn new(topic: Template, key: Template, mode: KafkaMode) -> Self {
        let mut b = Self {
            topic,
            key,
            mode,
            fixed_topic: None,
        };
        b.fixed_topic = b
            .static_topic()
            .map(|t| validate_topic(t).map(|()| t.to_string()));
        b
    }

    /// The topic template.
    pub fn topic_template(&self) -> &Template {
        &self.topic
    }

    /// The topic when the template has no placeholders (so it can be created at start-up).
    pub fn static_topic(&self) -> Option<&str> {
        let s = self.topic.as_str();
        (!s.contains('{') && !s.contains('}')).then_some(s)
    }

    /// Map one event to a record.
    pub fn build(&self, ev: &CloudEvent) -> Result<KafkaRequest, BuildError> {
        // `partitionkey` is read from `data`; the key template and its header share one reading.
        let partitionkey = std::cell::OnceCell::new();
        let attribute = |name: &str| match name {
            "partitionkey" => partitionkey
                .get_or_init(|| ev.partitionkey())
                .as_deref()
                .map(Cow::Borrowed),
            _ => ev.attribute(name),
        };
        let topic = match &self.fixed_topic {
            Some(fixed) => fixed.clone()?,
            None => {
                let topic = self.topic.render_with(ev, attribute);
                validate_topic(&topic)?;
                topic
            }
        };
        let key = self.key.render_with(ev, attribute);
        let key = (!key.is_empty()).then_some(key);
        let (headers, payload) = match self.mode {
            KafkaMode::Binary => (binary_headers(attribute), data_json(ev)),
            KafkaMode::Structured => (
                vec![("content-type", STRUCTURED_CONTENT_TYPE.to_string())],
                ev.to_json_bytes(),
            ),
        };
        Ok(KafkaRequest {
            topic,
            key,
            headers,
            payload,
        })
    }
}

fn data_json(ev: &CloudEvent) -> Vec<u8> {
    // The text the normalizer encoded, as it is (issue 9: no tree, no re-encoding).
    ev.data.json().as_bytes().to_vec()
}

/// The Kafka binding's header names: `ce_` and the attribute.
static HEADERS: std::sync::LazyLock<AttributeHeaders> =
    std::sync::LazyLock::new(|| AttributeHeaders::new("ce_"));

/// Every context attribute as a `ce_` header, except `datacontenttype`, which the binding maps
/// to `content-type` (our data is always JSON).
fn binary_headers<'a>(
    attribute: impl Fn(&str) -> Option<Cow<'a, str>>,
) -> Vec<(&'static str, String)> {
    // Straight into one vector, names in attribute order: no list of attributes in between and
    // no name looked up per header (a quarter of a record's build time, issue 9).
    let mut h: Vec<(&'static str, String)> = Vec::with_capacity(ATTRIBUTE_NAMES.len());
    for (name, header) in HEADERS.pairs() {
        if name == "datacontenttype" {
            continue;
        }
        if let Some(value) = attribute(name) {
            h.push((header, value.into_owned()));
        }
    }
    h.push(("content-type", BINARY_CONTENT_TYPE.to_string()));
    h
}

/// Kafka's topic name rules ([`espm_config::kafka_topic_name`]) on a rendered topic.
pub fn validate_topic(topic: &str) -> Result<(), BuildError> {
    espm_config::kafka_topic_name(topic).map_err(|reason| BuildError::InvalidTopic {
        topic: topic.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "id-1".into(),
            source: "urn:espm:sim:acme".into(),
            ty: "gov.energystar.pm.share.revoked".into(),
            subject: Some("property/5000006".into()),
            time: Some("2024-05-01T12:00:00Z".into()),
            datacontenttype: "application/json".into(),
            dataschema: "https://example.org/schema/v1".into(),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({"accountId": 8833843022i64, "propertyId": 5000006}).into(),
        }
    }

    fn builder(topic: &str, key: &str, mode: KafkaMode) -> RequestBuilder {
        RequestBuilder::new(
            Template::parse(topic).unwrap(),
            Template::parse(key).unwrap(),
            mode,
        )
    }

    fn header<'a>(r: &'a KafkaRequest, k: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn binary_mode_headers_key_and_value() {
        let r = builder("espm.{type}", "{partitionkey}", KafkaMode::Binary)
            .build(&ev())
            .unwrap();
        assert_eq!(r.topic, "espm.gov.energystar.pm.share.revoked");
        assert_eq!(r.key.as_deref(), Some("8833843022"));
        assert_eq!(header(&r, "ce_partitionkey"), Some("8833843022"));
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "ce_dataschema",
                "ce_espmenvironment",
                "ce_espmaccount",
                "ce_partitionkey",
                "content-type"
            ]
        );
        assert_eq!(header(&r, "ce_id"), Some("id-1"));
        assert_eq!(
            header(&r, "ce_type"),
            Some("gov.energystar.pm.share.revoked")
        );
        assert_eq!(header(&r, "ce_subject"), Some("property/5000006"));
        assert_eq!(header(&r, "ce_time"), Some("2024-05-01T12:00:00Z"));
        assert_eq!(header(&r, "ce_espmaccount"), Some("acme"));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v, ev().data);
    }

    #[test]
    fn binary_mode_omits_absent_optional_attributes() {
        let mut e = ev();
        e.subject = None;
        e.time = None;
        e.data = serde_json::json!({"propertyId": 1}).into();
        let r = builder("t", "{partitionkey}", KafkaMode::Binary)
            .build(&e)
            .unwrap();
        assert_eq!(header(&r, "ce_subject"), None);
        assert_eq!(header(&r, "ce_time"), None);
        assert_eq!(header(&r, "ce_partitionkey"), None);
        assert_eq!(r.key, None);
        assert_eq!(r.headers.len(), 8);
    }

    #[test]
    fn structured_mode_carries_the_whole_event() {
        let r = builder("espm-events", "{account}", KafkaMode::Structured)
            .build(&ev())
            .unwrap();
        assert_eq!(r.topic, "espm-events");
        assert_eq!(r.key.as_deref(), Some("acme"));
        assert_eq!(
            r.headers,
            vec![(
                "content-type",
                "application/cloudevents+json; charset=UTF-8".to_string()
            )]
        );
        let back: CloudEvent = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(back, ev());
    }

    #[test]
    fn empty_key_means_no_key() {
        let mut e = ev();
        e.data = serde_json::json!({"other": 1}).into();
        let r = builder("t", "{data.accountId}", KafkaMode::Binary)
            .build(&e)
            .unwrap();
        assert_eq!(r.key, None);
    }

    #[test]
    fn invalid_rendered_topics_are_rejected() {
        let b = builder("espm.{subject}", "", KafkaMode::Binary);
        let err = b.build(&ev()).unwrap_err();
        assert!(
            matches!(err, BuildError::InvalidTopic { ref topic, .. } if topic == "espm.property/5000006")
        );
        let mut e = ev();
        e.subject = None;
        assert!(builder("{subject}", "", KafkaMode::Binary)
            .build(&e)
            .is_err());
        assert!(validate_topic(&"a".repeat(250)).is_err());
        assert!(validate_topic("..").is_err());
        assert!(validate_topic("espm.sim_x-1").is_ok());
    }

    /// A topic without placeholders is checked once, at construction, and every record still
    /// gets it, or the same error.
    #[test]
    fn fixed_topics_are_checked_once_and_given_to_every_record() {
        let good = builder("espm-events", "{id}", KafkaMode::Binary);
        for id in ["a", "b"] {
            let mut e = ev();
            e.id = id.into();
            let r = good.build(&e).unwrap();
            assert_eq!(
                (r.topic.as_str(), r.key.as_deref()),
                ("espm-events", Some(id))
            );
        }
        let bad = builder("espm events", "", KafkaMode::Binary);
        for _ in 0..2 {
            assert!(matches!(
                bad.build(&ev()),
                Err(BuildError::InvalidTopic { ref topic, .. }) if topic == "espm events"
            ));
        }
    }

    #[test]
    fn static_topic_detection() {
        assert_eq!(
            builder("espm-events", "", KafkaMode::Binary).static_topic(),
            Some("espm-events")
        );
        assert_eq!(
            builder("espm.{type}", "", KafkaMode::Binary).static_topic(),
            None
        );
    }
}
