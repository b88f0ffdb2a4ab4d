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
    /// The event payload, PM's own field names in camelCase, as the JSON text it was encoded to.
    pub data: crate::Data,
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
        crate::partition::partition_key_of(&self.ty, &self.data)
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

    /// [`CloudEvent::to_json_bytes`] with `partitionkey` derived already (by the caller, from
    /// [`CloudEvent::partitionkey`]): a binding that also puts it in a header reads `data` once.
    pub fn to_json_bytes_keyed(&self, partitionkey: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&self.wire_keyed(false, partitionkey.map(Cow::Borrowed)))
            .unwrap_or_default()
    }
}

/// A header value as the CloudEvents NATS (3.1.3.2) and HTTP (3.1.3.2) bindings require in
/// binary mode: space, `"`, `%` and every character outside printable ASCII (U+0021..=U+007E)
/// become `%XY` per UTF-8 byte, upper-case. Nothing can then break a line-based frame or need
/// quoting.
pub fn percent_encode_header(v: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let safe = |b: u8| (b'!'..=b'~').contains(&b) && b != b'"' && b != b'%';
    // Ids, types and URIs need no escape: one copy (a char loop was a fifth of a NATS
    // message's build, issue 9). Bytes before the first escape are ASCII, so it is a boundary.
    let Some(first) = v.bytes().position(|b| !safe(b)) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(v.len() + 16);
    out.push_str(&v[..first]);
    for &b in &v.as_bytes()[first..] {
        if safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
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

    /// Each attribute with its header name, in the order of [`ATTRIBUTE_NAMES`]: a binding that
    /// writes every header walks this instead of looking each name up.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.names.iter().copied()
    }

    /// The header name of `attribute` (one of [`ATTRIBUTE_NAMES`]).
    pub fn get(&self, attribute: &str) -> Option<&'static str> {
        self.names
            .iter()
            .find(|(n, _)| *n == attribute)
            .map(|(_, h)| *h)
    }
}

/// The JSON form of an event, on the wire (every attribute, `partitionkey` derived) or as the
/// journal stores it (see [`CloudEvent::to_stored_json`]): one struct, so the two cannot drift.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    specversion: Option<&'a str>,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataschema: Option<&'a str>,
    espmenvironment: &'a str,
    espmaccount: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitionkey: Option<Cow<'a, str>>,
    data: &'a crate::Data,
}

/// The only `specversion` and `datacontenttype` our events have, left out of the stored form.
const SPEC_VERSION: &str = "1.0";
const JSON: &str = "application/json";

/// [`Wire`]'s stored form read back; a full event reads too (`partitionkey` is ignored: it is
/// derived).
#[derive(Deserialize)]
struct Stored {
    specversion: Option<String>,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    espmenvironment: String,
    espmaccount: String,
    #[serde(default)]
    causationid: Option<String>,
    #[serde(default)]
    correlationid: Option<String>,
    data: crate::Data,
}

impl CloudEvent {
    fn wire(&self, stored: bool) -> Wire<'_> {
        let partitionkey = if stored {
            None
        } else {
            self.partitionkey().map(Cow::Owned)
        };
        self.wire_keyed(stored, partitionkey)
    }

    /// [`CloudEvent::wire`] with `partitionkey` given.
    fn wire_keyed<'a>(&'a self, stored: bool, partitionkey: Option<Cow<'a, str>>) -> Wire<'a> {
        // The stored form leaves out what the type implies (`&&`: the wire form computes none).
        let omit_version = stored && self.specversion == SPEC_VERSION;
        let omit_content_type = stored && self.datacontenttype == JSON;
        let omit_schema = stored && crate::types::is_dataschema_uri(&self.dataschema, &self.ty);
        Wire {
            specversion: (!omit_version).then_some(self.specversion.as_str()),
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            time: self.time.as_deref(),
            datacontenttype: (!omit_content_type).then_some(self.datacontenttype.as_str()),
            dataschema: (!omit_schema).then_some(self.dataschema.as_str()),
            espmenvironment: &self.espmenvironment,
            espmaccount: &self.espmaccount,
            causationid: self.causationid.as_deref(),
            correlationid: self.correlationid.as_deref(),
            partitionkey,
            data: &self.data,
        }
    }

    /// The form the journal stores: what the type and the specification imply (`specversion`,
    /// `datacontenttype`, the type's `dataschema`, the derived `partitionkey`) is left out, about
    /// a quarter of a notification event's bytes (issue 9). One line: JSON escapes every newline.
    pub fn to_stored_json(&self) -> String {
        let mut out = Vec::with_capacity(1024);
        self.write_stored_json(&mut out);
        // serde_json writes UTF-8 only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`CloudEvent::to_stored_json`] appended to `out` (a page of them, without a string each).
    pub fn write_stored_json(&self, out: &mut Vec<u8>) {
        // Serialising a struct of strings and JSON text into memory cannot fail.
        let _ = serde_json::to_writer(out, &self.wire(true));
    }

    /// An event from [`CloudEvent::to_stored_json`], or from the full form.
    pub fn from_stored_json(json: &str) -> Result<CloudEvent, serde_json::Error> {
        let s: Stored = serde_json::from_str(json)?;
        Ok(CloudEvent {
            specversion: s.specversion.unwrap_or_else(|| SPEC_VERSION.to_string()),
            dataschema: s.dataschema.unwrap_or_else(|| crate::dataschema_uri(&s.ty)),
            id: s.id,
            source: s.source,
            ty: s.ty,
            subject: s.subject,
            time: s.time,
            datacontenttype: s.datacontenttype.unwrap_or_else(|| JSON.to_string()),
            espmenvironment: s.espmenvironment,
            espmaccount: s.espmaccount,
            causationid: s.causationid,
            correlationid: s.correlationid,
            data: s.data,
        })
    }
}

impl Serialize for CloudEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire(false).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn arb_event() -> impl Strategy<Value = CloudEvent> {
        let opt = || prop::option::of("[a-z0-9 /:.\\-\"\n]{0,20}");
        (
            (
                prop_oneof![Just("1.0".to_string()), "[0-9.]{1,4}"],
                "[a-z0-9-]{1,36}",
                "[a-z:]{1,20}",
            ),
            (
                prop_oneof![
                    Just("gov.energystar.pm.share.revoked".to_string()),
                    "[a-z.]{1,30}"
                ],
                opt(),
                opt(),
            ),
            (
                prop_oneof![Just("application/json".to_string()), "[a-z/+]{1,20}"],
                prop::option::of("[a-z:/.]{1,40}"),
                "[a-z]{1,5}",
                "[a-z]{1,5}",
            ),
            (
                opt(),
                opt(),
                // `accountId` gives a share event its `partitionkey`.
                prop::collection::btree_map(
                    prop_oneof![Just("accountId".to_string()), "[a-zA-Z]{1,8}"],
                    any::<i64>(),
                    0..4,
                ),
            ),
        )
            .prop_map(
                |(
                    (specversion, id, source),
                    (ty, subject, time),
                    (dct, schema, env, acct),
                    (causationid, correlationid, data),
                )| {
                    CloudEvent {
                        specversion,
                        dataschema: schema.unwrap_or_else(|| crate::dataschema_uri(&ty)),
                        id,
                        source,
                        ty,
                        subject,
                        time,
                        datacontenttype: dct,
                        espmenvironment: env,
                        espmaccount: acct,
                        causationid,
                        correlationid,
                        data: crate::Data::of(&data),
                    }
                },
            )
    }

    proptest! {
        /// Header values: printable ASCII only, no space or `"`, `%` only in an escape, and
        /// decoding gives the value back, whatever it holds.
        #[test]
        fn percent_encoded_headers_are_safe_and_decode_back(v in any::<String>(), ascii in "[ -~]{0,40}") {
            for v in [v, ascii] {
                let enc = percent_encode_header(&v);
                prop_assert!(enc.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'"'), "{enc:?}");
                // Decoded by the `percent-encoding` crate, not by us.
                let decoded: Vec<u8> = percent_encoding::percent_decode_str(&enc).collect();
                prop_assert_eq!(decoded, v.as_bytes().to_vec());
            }
        }

        /// Whatever is left out of the stored form comes back: an event reads as it was written,
        /// and its full (wire) form reads the same, as rows written before the stored form do.
        #[test]
        fn the_stored_form_reads_back_the_same_event(ev in arb_event()) {
            let stored = ev.to_stored_json();
            prop_assert!(!stored.contains('\n'), "one event per line of a page");
            prop_assert_eq!(&CloudEvent::from_stored_json(&stored).unwrap(), &ev);
            let full = serde_json::to_string(&ev).unwrap();
            prop_assert_eq!(&CloudEvent::from_stored_json(&full).unwrap(), &ev);
            prop_assert!(stored.len() <= full.len());
        }

        /// The wire form with the key derived by the caller is the wire form.
        #[test]
        fn the_keyed_wire_form_is_the_wire_form(ev in arb_event()) {
            let key = ev.partitionkey();
            prop_assert_eq!(ev.to_json_bytes_keyed(key.as_deref()), ev.to_json_bytes());
        }
    }

    /// A `share.revoked` event about customer account 5, as the normalizer makes one.
    fn share_revoked() -> CloudEvent {
        let ty = "gov.energystar.pm.share.revoked";
        CloudEvent {
            specversion: "1.0".into(),
            id: "id".into(),
            source: "urn:espm:sim:acme".into(),
            ty: ty.into(),
            subject: None,
            time: None,
            datacontenttype: "application/json".into(),
            dataschema: crate::dataschema_uri(ty),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({"accountId": 5}).into(),
        }
    }

    /// The key given is the key written: the same bytes as deriving it, other bytes for another.
    #[test]
    fn the_keyed_wire_form_writes_the_key_it_is_given() {
        let ev = share_revoked();
        let key = ev.partitionkey();
        assert_eq!(key.as_deref(), Some("5"));
        assert_eq!(ev.to_json_bytes_keyed(key.as_deref()), ev.to_json_bytes());
        let other: serde_json::Value =
            serde_json::from_slice(&ev.to_json_bytes_keyed(Some("6"))).unwrap();
        assert_eq!(other["partitionkey"], "6");
    }

    /// A notification event's stored form leaves out what its type implies.
    #[test]
    fn the_stored_form_leaves_out_what_the_type_implies() {
        let ev = share_revoked();
        let stored = ev.to_stored_json();
        for left_out in [
            "specversion",
            "datacontenttype",
            "dataschema",
            "partitionkey",
        ] {
            assert!(!stored.contains(left_out), "{left_out} in {stored}");
        }
        assert!(serde_json::to_string(&ev).unwrap().contains("partitionkey"));
        assert_eq!(CloudEvent::from_stored_json(&stored).unwrap(), ev);
    }
}
