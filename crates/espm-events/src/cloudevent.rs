use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};

/// A CloudEvents 1.0 event in its JSON (structured) form.
///
/// The two extension attributes `espmenvironment` and `espmaccount` name the PM environment
/// (`live`, `test`, `sim`) and the configured provider account the event was polled from, so
/// that subjects and topics can be routed on them without parsing `source`. `correlationid`,
/// when present, groups the events of one customer action (a DISCONNECT and its UNSHAREs). The
/// last,
/// `partitionkey`, is derived from `type` and `data` (see [`CloudEvent::partitionkey`]): it is
/// serialised but never stored, so it cannot contradict them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Deterministic: the same PM notification or pending request always gets the same id.
    pub id: String,
    /// URI reference naming the PM environment and the polled provider account.
    pub source: String,
    /// Event type, e.g. `gov.energystar.pm.share.revoked`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The property, meter or account the event concerns, e.g. `property/5000006/meter/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339 timestamp of the occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// URI of the versioned JSON Schema of `data`.
    pub dataschema: String,
    /// Extension: PM environment (`live`, `test`, `sim`).
    pub espmenvironment: String,
    /// Extension: configured name of the provider account that was polled.
    pub espmaccount: String,
    /// Extension `causationid`: the id of the command that caused this event (command results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// Extension: shared by the events of one PM action: a DISCONNECT and the UNSHAREs PM sends
    /// with it carry the DISCONNECT event's `id`. Absent on every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// The event payload, PM's own field names in camelCase.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// The value of a context attribute by its CloudEvents name (`id`, `type`, `source`, ...).
    pub fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        let borrowed = match name {
            "specversion" => &self.specversion,
            "id" => &self.id,
            "source" => &self.source,
            "type" => &self.ty,
            "subject" => self.subject.as_ref()?,
            "time" => self.time.as_ref()?,
            "datacontenttype" => &self.datacontenttype,
            "dataschema" => &self.dataschema,
            "espmenvironment" | "environment" => &self.espmenvironment,
            "espmaccount" | "account" => &self.espmaccount,
            "causationid" => self.causationid.as_ref()?,
            "correlationid" => self.correlationid.as_ref()?,
            "partitionkey" => return self.partitionkey().map(Cow::Owned),
            _ => return None,
        };
        Some(Cow::Borrowed(borrowed))
    }

    /// Extension `partitionkey`: the PM account id of the customer the event is about, per
    /// [`crate::partition_key`]; `None` when the event is about no customer account.
    pub fn partitionkey(&self) -> Option<String> {
        crate::partition_key(&self.ty, &self.data)
    }

    /// Every context attribute that has a value, in a fixed order (`datacontenttype` included),
    /// as binary content modes put them in headers.
    pub fn attributes(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        ATTRIBUTE_NAMES
            .iter()
            .filter_map(|n| self.attribute(n).map(|v| (*n, v)))
            .collect()
    }

    /// The structured-mode JSON encoding of the whole event.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A header value as the CloudEvents NATS (3.1.3.2) and HTTP (3.1.3.2) bindings require in
/// binary mode: space, `"`, `%` and every character outside printable ASCII (U+0021..=U+007E)
/// become `%XY` per UTF-8 byte, upper-case. Nothing can then break a line-based frame or need
/// quoting.
pub fn percent_encode_header(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '!'..='~') && c != '"' && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The context attribute names of our events, in the order of the JSON form.
pub const ATTRIBUTE_NAMES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "espmenvironment",
    "espmaccount",
    "causationid",
    "correlationid",
    "partitionkey",
];

/// A protocol binding's header name for each context attribute (`ce_id` for Kafka, `ce-id` for
/// HTTP and NATS): built once per binding and process, so a record allocates no header name
/// (a `format!` per header and record was a measurable share of a burst, issue 9).
#[derive(Debug)]
pub struct AttributeHeaders {
    names: Vec<(&'static str, &'static str)>,
}

impl AttributeHeaders {
    /// `prefix` and each of [`ATTRIBUTE_NAMES`]. Meant for a `static` (the names live as long as
    /// the process).
    pub fn new(prefix: &str) -> Self {
        Self {
            names: ATTRIBUTE_NAMES
                .iter()
                .map(|n| {
                    let name: &'static str = Box::leak(format!("{prefix}{n}").into_boxed_str());
                    (*n, name)
                })
                .collect(),
        }
    }

    /// The header name of `attribute` (one of [`ATTRIBUTE_NAMES`]).
    pub fn get(&self, attribute: &str) -> Option<&'static str> {
        self.names
            .iter()
            .find(|(n, _)| *n == attribute)
            .map(|(_, h)| *h)
    }
}

/// The JSON form: the stored fields plus the derived `partitionkey`.
#[derive(Serialize)]
struct Wire<'a> {
    specversion: &'a str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    datacontenttype: &'a str,
    dataschema: &'a str,
    espmenvironment: &'a str,
    espmaccount: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitionkey: Option<String>,
    data: &'a serde_json::Value,
}

impl Serialize for CloudEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            specversion: &self.specversion,
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            time: self.time.as_deref(),
            datacontenttype: &self.datacontenttype,
            dataschema: &self.dataschema,
            espmenvironment: &self.espmenvironment,
            espmaccount: &self.espmaccount,
            causationid: self.causationid.as_deref(),
            correlationid: self.correlationid.as_deref(),
            partitionkey: self.partitionkey(),
            data: &self.data,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attribute gets the binding's prefix; nothing else gets a header name.
    #[test]
    fn attribute_headers_prefix_every_attribute_and_nothing_else() {
        let kafka = AttributeHeaders::new("ce_");
        let http = AttributeHeaders::new("ce-");
        for n in ATTRIBUTE_NAMES {
            assert_eq!(kafka.get(n), Some(format!("ce_{n}").as_str()));
            assert_eq!(http.get(n), Some(format!("ce-{n}").as_str()));
        }
        assert_eq!(kafka.get("data"), None);
    }
}
