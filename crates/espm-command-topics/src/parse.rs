//! Pure reading of one broker message as a command CloudEvent: structured or binary mode
//! (CloudEvents Kafka and NATS protocol bindings), the command type, its `data`, the account it
//! names. No I/O, no panics on input: whatever cannot be read becomes a problem to answer with.

use espm_command::{Command, CreateCustomerBody, Decision, PendingKind};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::types;

/// Which protocol binding a message came by: it names the binary-mode headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `ce_*` headers, values as UTF-8.
    Kafka,
    /// `ce-*` headers, values percent-encoded (as the bridge's own NATS sink writes them).
    Nats,
}

impl Binding {
    fn prefix(self) -> &'static str {
        match self {
            Binding::Kafka => "ce_",
            Binding::Nats => "ce-",
        }
    }
}

/// A command message as far as it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The CloudEvent `id`, when there is one: the command id.
    pub id: Option<String>,
    /// The CloudEvent `source`, when there is one: who asks.
    pub source: Option<String>,
    /// The provider account the message names: the `espmaccount` attribute, else
    /// `data.account`.
    pub account: Option<String>,
    /// The command, or why there is none (the detail of the `.failed` event).
    pub command: Result<Command, String>,
}

impl Parsed {
    fn malformed(detail: impl Into<String>) -> Self {
        Self {
            id: None,
            source: None,
            account: None,
            command: Err(detail.into()),
        }
    }
}

/// `data` of `gov.energystar.pm.command.answer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerData {
    /// The provider account to answer as; else the `espmaccount` attribute or the only account.
    #[serde(default)]
    pub account: Option<String>,
    /// Which pending list: `connection`, `property_share` or `meter_share`.
    pub kind: PendingKind,
    /// The request's id on that list (account, property or meter id).
    pub request_id: i64,
    /// `accept` or `reject`.
    pub decision: Decision,
    /// Optional note for the customer, at most 1,000 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// `data` of `gov.energystar.pm.command.disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectData {
    /// The provider account; else the `espmaccount` attribute or the only account.
    #[serde(default)]
    pub account: Option<String>,
    /// The customer's PM account id.
    pub customer_id: i64,
    /// Whether the customer's property and meter shares stay. Required.
    pub keep_shares: bool,
    /// Optional note for the customer, at most 1,000 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// `data` of `gov.energystar.pm.command.unshare`: exactly one of `propertyId` and `meterId`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnshareData {
    /// The provider account; else the `espmaccount` attribute or the only account.
    #[serde(default)]
    pub account: Option<String>,
    /// The property to stop receiving.
    #[serde(default)]
    pub property_id: Option<i64>,
    /// The meter to stop receiving.
    #[serde(default)]
    pub meter_id: Option<i64>,
    /// Optional note for the customer, at most 1,000 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// Read one message. `headers` are the broker's record headers (name, raw value), `body` its
/// value or payload.
pub fn parse(binding: Binding, headers: &[(String, Vec<u8>)], body: &[u8]) -> Parsed {
    let header = |name: &str| -> Option<String> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_header(binding, v))
    };
    let content_type = header("content-type").map(|c| c.trim().to_ascii_lowercase());
    let has_ce_headers = header(&format!("{}specversion", binding.prefix())).is_some();
    let structured_ct = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/cloudevents"));
    if content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/cloudevents-batch"))
    {
        return Parsed::malformed("batched CloudEvents (application/cloudevents-batch+json) are not accepted: send one command per message");
    }
    if structured_ct || !has_ce_headers {
        // Structured mode; also a JSON CloudEvent sent without a content-type header.
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) if structured_ct => {
                return Parsed::malformed(format!("the message is not JSON: {e}"))
            }
            Err(_) => {
                return Parsed::malformed(format!(
                "not a CloudEvent: no {}specversion header and the body is not a JSON CloudEvent",
                binding.prefix()
            ))
            }
        };
        let Value::Object(mut o) = v else {
            return Parsed::malformed("not a CloudEvent: the JSON body is not an object");
        };
        if !structured_ct && !o.contains_key("specversion") {
            return Parsed::malformed(format!(
                "not a CloudEvent: no {}specversion header and no `specversion` in the JSON body",
                binding.prefix()
            ));
        }
        let attr = |o: &Map<String, Value>, name: &str| -> Result<Option<String>, String> {
            match o.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("attribute `{name}` must be a string")),
            }
        };
        let mut read = Attributes::default();
        let mut problems = Vec::new();
        for (name, slot) in [
            ("specversion", &mut read.specversion),
            ("id", &mut read.id),
            ("source", &mut read.source),
            ("type", &mut read.ty),
            ("espmaccount", &mut read.espmaccount),
            ("datacontenttype", &mut read.datacontenttype),
        ] {
            match attr(&o, name) {
                Ok(v) => *slot = v,
                Err(p) => problems.push(p),
            }
        }
        if o.contains_key("data_base64") {
            problems.push("`data_base64` is not accepted: `data` must be JSON".into());
        }
        let data = o.remove("data").unwrap_or(Value::Null);
        finish(read, Ok(data), problems)
    } else {
        // Binary mode: attributes in headers, the body is `data`.
        let p = binding.prefix();
        let read = Attributes {
            specversion: header(&format!("{p}specversion")),
            id: header(&format!("{p}id")),
            source: header(&format!("{p}source")),
            ty: header(&format!("{p}type")),
            espmaccount: header(&format!("{p}espmaccount")),
            datacontenttype: content_type.clone(),
        };
        let data = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(body).map_err(|e| format!("data is not JSON: {e}"))
        };
        finish(read, data, Vec::new())
    }
}

#[derive(Default)]
struct Attributes {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    espmaccount: Option<String>,
    datacontenttype: Option<String>,
}

fn finish(a: Attributes, data: Result<Value, String>, mut problems: Vec<String>) -> Parsed {
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let id = nonempty(a.id);
    let source = nonempty(a.source);
    match a.specversion.as_deref() {
        Some("1.0") => {}
        Some(v) => problems.push(format!("specversion {v:?} is not supported (only \"1.0\")")),
        None => problems.push("the required attribute `specversion` is missing".into()),
    }
    if id.is_none() {
        problems.push("the required attribute `id` is missing or empty".into());
    }
    if source.is_none() {
        problems.push("the required attribute `source` is missing or empty".into());
    }
    if let Some(ct) = a.datacontenttype.as_deref() {
        let ct = ct.to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            problems.push(format!("data content type {essence:?} is not JSON"));
        }
    }
    let mut account = nonempty(a.espmaccount);
    let command = match (problems.is_empty(), data) {
        (false, _) => Err(problems.join("; ")),
        (true, Err(e)) => Err(e),
        (true, Ok(data)) => {
            if let Some(Value::String(acct)) = data.get("account") {
                if account.is_none() && !acct.trim().is_empty() {
                    account = Some(acct.clone());
                }
            }
            match a.ty.as_deref() {
                None => Err("the required attribute `type` is missing".into()),
                Some(ty) => command_of(ty, data),
            }
        }
    };
    Parsed {
        id,
        source,
        account,
        command,
    }
}

fn data_of<T: DeserializeOwned>(ty: &str, data: Value) -> Result<T, String> {
    if data.is_null() {
        return Err(format!("{ty} needs `data`"));
    }
    serde_json::from_value(data).map_err(|e| format!("data of {ty}: {e}"))
}

/// The command a type and its `data` ask for, checked as [`Command::validate`] checks it.
pub fn command_of(ty: &str, data: Value) -> Result<Command, String> {
    let command = match ty {
        types::ANSWER => {
            let d: AnswerData = data_of(ty, data)?;
            Command::Answer {
                kind: d.kind,
                request_id: d.request_id,
                decision: d.decision,
                note: d.note,
            }
        }
        types::DISCONNECT => {
            let d: DisconnectData = data_of(ty, data)?;
            Command::Disconnect {
                customer_id: d.customer_id,
                keep_shares: d.keep_shares,
                note: d.note,
            }
        }
        types::UNSHARE => {
            let d: UnshareData = data_of(ty, data)?;
            match (d.property_id, d.meter_id) {
                (Some(property_id), None) => Command::UnshareProperty {
                    property_id,
                    note: d.note,
                },
                (None, Some(meter_id)) => Command::UnshareMeter {
                    meter_id,
                    note: d.note,
                },
                _ => {
                    return Err(format!(
                        "data of {ty}: give exactly one of `propertyId` and `meterId`"
                    ))
                }
            }
        }
        types::CREATE_CUSTOMER => {
            let mut data = data;
            // `account` may name the provider account; the body itself denies unknown fields.
            if let Value::Object(o) = &mut data {
                if matches!(o.get("account"), Some(Value::String(_))) {
                    o.remove("account");
                }
            }
            Command::CreateCustomer(Box::new(data_of::<CreateCustomerBody>(ty, data)?))
        }
        other => {
            return Err(format!(
                "unknown command type {other:?}; expected one of {}",
                types::ALL.join(", ")
            ))
        }
    };
    command.validate().map_err(|e| match e {
        espm_command::CommandError::Invalid(m) => m,
        other => other.to_string(),
    })?;
    Ok(command)
}

fn decode_header(binding: Binding, raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    match binding {
        Binding::Kafka => s.into_owned(),
        Binding::Nats => percent_decode(&s),
    }
}

/// Undo the binding's percent-encoding; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn structured(v: Value) -> Parsed {
        parse(
            Binding::Kafka,
            &[(
                "content-type".into(),
                b"application/cloudevents+json; charset=UTF-8".to_vec(),
            )],
            v.to_string().as_bytes(),
        )
    }

    fn ce(ty: &str, data: Value) -> Value {
        json!({"specversion": "1.0", "id": "c-1", "source": "urn:crm", "type": ty, "data": data})
    }

    #[test]
    fn structured_commands_of_every_type() {
        let p = structured(ce(
            types::ANSWER,
            json!({"account": "main", "kind": "connection", "requestId": 7, "decision": "accept"}),
        ));
        assert_eq!(p.id.as_deref(), Some("c-1"));
        assert_eq!(p.source.as_deref(), Some("urn:crm"));
        assert_eq!(p.account.as_deref(), Some("main"));
        assert_eq!(
            p.command,
            Ok(Command::Answer {
                kind: PendingKind::Connection,
                request_id: 7,
                decision: Decision::Accept,
                note: None
            })
        );
        let p = structured(ce(
            types::DISCONNECT,
            json!({"customerId": 9, "keepShares": true, "note": "bye"}),
        ));
        assert!(matches!(
            p.command,
            Ok(Command::Disconnect {
                customer_id: 9,
                keep_shares: true,
                ..
            })
        ));
        assert_eq!(p.account, None);
        let p = structured(ce(types::UNSHARE, json!({"meterId": 3})));
        assert!(matches!(
            p.command,
            Ok(Command::UnshareMeter { meter_id: 3, .. })
        ));
        let mut e = ce(types::UNSHARE, json!({"propertyId": 4}));
        e["espmaccount"] = json!("other");
        let p = structured(e);
        assert!(matches!(
            p.command,
            Ok(Command::UnshareProperty { property_id: 4, .. })
        ));
        assert_eq!(p.account.as_deref(), Some("other"));
    }

    #[test]
    fn malformed_messages_name_their_problem() {
        let err = |p: Parsed| p.command.unwrap_err();
        assert!(err(parse(Binding::Kafka, &[], b"not json")).contains("not a CloudEvent"));
        assert!(err(structured(json!([1]))).contains("not an object"));
        let p = structured(ce(types::DISCONNECT, json!({"customerId": 9})));
        assert_eq!(p.id.as_deref(), Some("c-1"));
        assert!(err(p).contains("missing field `keepShares`"));
        assert!(err(structured(ce(
            types::UNSHARE,
            json!({"propertyId": 1, "meterId": 2})
        )))
        .contains("exactly one"));
        assert!(err(structured(ce(
            "gov.energystar.pm.command.launch",
            json!({})
        )))
        .contains("unknown command type"));
        assert!(err(structured(ce(
            types::ANSWER,
            json!({"kind": "connection", "requestId": -1, "decision": "accept"})
        )))
        .contains("requestId must be a positive PM id"));
        assert!(err(structured(ce(
            types::ANSWER,
            json!({"kind": "friend", "requestId": 1, "decision": "accept"})
        )))
        .contains("unknown variant"));
        let mut e = ce(types::UNSHARE, json!({"meterId": 3}));
        e.as_object_mut().unwrap().remove("id");
        let p = structured(e);
        assert_eq!(p.id, None);
        assert!(err(p).contains("`id`"));
        assert!(err(structured(ce(types::DISCONNECT, Value::Null))).contains("needs `data`"));
    }

    #[test]
    fn every_type_has_a_data_schema() {
        for ty in types::ALL {
            let s = crate::data_schema(ty).unwrap();
            assert_eq!(s["type"], "object", "{ty}: {s}");
        }
        assert!(crate::data_schema("gov.energystar.pm.command.completed").is_none());
        let answer = crate::data_schema(types::ANSWER).unwrap();
        assert!(answer["required"]
            .as_array()
            .unwrap()
            .contains(&json!("requestId")));
    }

    #[test]
    fn binary_mode_in_kafka_and_nats_headers() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let body = json!({"customerId": 5, "keepShares": false}).to_string();
        let p = parse(
            Binding::Kafka,
            &h(&[
                ("ce_specversion", "1.0"),
                ("ce_id", "k-1"),
                ("ce_source", "urn:billing"),
                ("ce_type", types::DISCONNECT),
                ("ce_espmaccount", "main"),
                ("content-type", "application/json"),
            ]),
            body.as_bytes(),
        );
        assert_eq!(p.id.as_deref(), Some("k-1"));
        assert_eq!(p.account.as_deref(), Some("main"));
        assert!(p.command.is_ok(), "{p:?}");
        let p = parse(
            Binding::Nats,
            &h(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "n%201"),
                ("ce-source", "urn:crm%2Fa"),
                ("ce-type", types::DISCONNECT),
            ]),
            body.as_bytes(),
        );
        assert_eq!(p.id.as_deref(), Some("n 1"));
        assert_eq!(p.source.as_deref(), Some("urn:crm/a"));
        assert!(p.command.is_ok());
        let p = parse(
            Binding::Nats,
            &h(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "n-2"),
                ("ce-source", "s"),
                ("ce-type", types::DISCONNECT),
                ("content-type", "text/plain"),
            ]),
            b"hello",
        );
        assert!(p.command.unwrap_err().contains("not JSON"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
