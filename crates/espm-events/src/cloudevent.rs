use serde::{Deserialize, Serialize};

/// A CloudEvents 1.0 event in its JSON (structured) form.
///
/// The two extension attributes `espmenvironment` and `espmaccount` name the PM environment
/// (`live`, `test`, `sim`) and the configured provider account the event was polled from, so
/// that subjects and topics can be routed on them without parsing `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The event payload, PM's own field names in camelCase.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// The value of a context attribute by its CloudEvents name (`id`, `type`, `source`, ...).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        match name {
            "specversion" => Some(&self.specversion),
            "id" => Some(&self.id),
            "source" => Some(&self.source),
            "type" => Some(&self.ty),
            "subject" => self.subject.as_deref(),
            "time" => self.time.as_deref(),
            "datacontenttype" => Some(&self.datacontenttype),
            "dataschema" => Some(&self.dataschema),
            "espmenvironment" | "environment" => Some(&self.espmenvironment),
            "espmaccount" | "account" => Some(&self.espmaccount),
            _ => None,
        }
    }

    /// The structured-mode JSON encoding of the whole event.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
