//! `{placeholder}` templates over event attributes, used for Kafka topics and keys and NATS subjects.
//!
//! Placeholders: any context attribute (`{type}`, `{id}`, `{subject}`, `{source}`,
//! `{partitionkey}`), the short forms `{environment}` and `{account}`, and `{data.<field>}` /
//! `{data.<a>.<b>}` for fields of `data`. `{{` and `}}` are literal braces.

use std::borrow::Cow;

use crate::CloudEvent;

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("unclosed placeholder starting at byte {0}")]
    Unclosed(usize),
    /// A placeholder name that is not an attribute or a `data.` path.
    #[error("unknown placeholder {{{0}}}: use a CloudEvents attribute such as {{type}} or a data path such as {{data.accountId}}")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Attr(String),
    Data(Vec<String>),
}

/// A parsed template; parse once at start-up, render per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

const ATTRS: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "espmenvironment",
    "environment",
    "espmaccount",
    "account",
    "partitionkey",
];

impl Template {
    /// Parse a template such as `espm.{environment}.{type}`.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &s[i + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed(i))?;
                    let name = rest[..end].trim();
                    for _ in 0..=end {
                        chars.next();
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    if let Some(path) = name.strip_prefix("data.") {
                        if path.is_empty() {
                            return Err(TemplateError::Unknown(name.to_string()));
                        }
                        parts.push(Part::Data(path.split('.').map(str::to_string).collect()));
                    } else if ATTRS.contains(&name) {
                        parts.push(Part::Attr(name.to_string()));
                    } else {
                        return Err(TemplateError::Unknown(name.to_string()));
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self {
            parts,
            source: s.to_string(),
        })
    }

    /// The template text as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Render for one event. A missing attribute or data field renders as the empty string,
    /// numbers render in decimal, and booleans as `true`/`false`.
    pub fn render(&self, ev: &CloudEvent) -> String {
        self.render_with(ev, |name| ev.attribute(name))
    }

    /// [`Template::render`] with the event's attributes looked up through `attribute`: a caller
    /// that needs an attribute derived from `data` more than once (`partitionkey`) computes it
    /// once.
    pub fn render_with<'a>(
        &self,
        ev: &CloudEvent,
        attribute: impl Fn(&str) -> Option<Cow<'a, str>>,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Attr(a) => out.push_str(attribute(a).as_deref().unwrap_or("")),
                Part::Data(path) => {
                    let mut v: &serde_json::Value = ev.data.value();
                    for seg in path {
                        v = match v.get(seg) {
                            Some(x) => x,
                            None => &serde_json::Value::Null,
                        };
                    }
                    match v {
                        serde_json::Value::String(s) => out.push_str(s),
                        serde_json::Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "abc".into(),
            source: "urn:espm:sim:acme".into(),
            ty: "gov.energystar.pm.share.revoked".into(),
            subject: Some("property/1".into()),
            time: None,
            datacontenttype: "application/json".into(),
            dataschema: "x".into(),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({"accountId": 8833843022i64, "propertyInfo": {"name": "A"}})
                .into(),
        }
    }

    #[test]
    fn renders_attributes_and_data() {
        let t = Template::parse("espm.{environment}.{type}").unwrap();
        assert_eq!(t.render(&ev()), "espm.sim.gov.energystar.pm.share.revoked");
        let k = Template::parse("{data.accountId}").unwrap();
        assert_eq!(k.render(&ev()), "8833843022");
        let n = Template::parse("{{{data.propertyInfo.name}}}-{time}").unwrap();
        assert_eq!(n.render(&ev()), "{A}-");
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(Template::parse("a{type"), Err(TemplateError::Unclosed(1)));
        assert!(matches!(
            Template::parse("{nope}"),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            Template::parse("{data.}"),
            Err(TemplateError::Unknown(_))
        ));
    }
}
