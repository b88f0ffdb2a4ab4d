//! The published contract: one JSON Schema (draft 2020-12) per event type and an AsyncAPI 3.0
//! document, all generated from the Rust data types and [`EVENT_TYPES`].

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::data::*;
use crate::types::*;

fn schema_for<T: JsonSchema>() -> Value {
    let root = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = root.to_value();
    remove_null(&mut value);
    value
}

/// Absent optional fields are omitted, never `null`, so the schemas do not allow `null` either
/// (schemars 1 always adds it for `Option`).
fn remove_null(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
                any.retain(|s| s.get("type").and_then(Value::as_str) != Some("null"));
                if any.len() == 1 {
                    if let Some(Value::Object(single)) = any.pop() {
                        obj.remove("anyOf");
                        for (k, val) in single {
                            obj.entry(k).or_insert(val);
                        }
                    }
                }
            }
            obj.values_mut().for_each(remove_null);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_null),
        _ => {}
    }
}

/// The data schema (with its `$defs`) of an event type; `None` for a type we do not know.
fn data_schema_of(event_type: &str) -> Option<Value> {
    Some(match event_type {
        SHARE_REVOKED
        | SHARE_UPDATED
        | CONNECTION_TERMINATED
        | PROPERTY_TRANSFERRED
        | NOTIFICATION_RECEIVED => schema_for::<NotificationData>(),
        CONNECTION_REQUESTED => schema_for::<ConnectionRequestedData>(),
        PROPERTY_SHARE_REQUESTED => schema_for::<PropertyShareRequestedData>(),
        METER_SHARE_REQUESTED => schema_for::<MeterShareRequestedData>(),
        CONNECTION_RESOLVED => schema_for::<ConnectionResolvedData>(),
        PROPERTY_SHARE_RESOLVED => schema_for::<PropertyShareResolvedData>(),
        METER_SHARE_RESOLVED => schema_for::<MeterShareResolvedData>(),
        BODY_QUARANTINED => schema_for::<BodyQuarantinedData>(),
        COMMAND_COMPLETED | COMMAND_FAILED => schema_for::<CommandResultData>(),
        POLICY_DECIDED => schema_for::<PolicyDecidedData>(),
        _ => return None,
    })
}

fn data_is_notification(event_type: &str) -> bool {
    matches!(
        event_type,
        SHARE_REVOKED
            | SHARE_UPDATED
            | CONNECTION_TERMINATED
            | PROPERTY_TRANSFERRED
            | NOTIFICATION_RECEIVED
    )
}

/// Drop the `$defs` entries nothing refers to any more.
fn prune_unused_defs(schema: &mut Map<String, Value>) {
    let Some(Value::Object(defs)) = schema.remove("$defs") else {
        return;
    };
    let mut refs = Vec::new();
    collect_refs(&Value::Object(schema.clone()), &mut refs);
    let mut kept = Map::new();
    for (name, def) in defs {
        if refs.iter().any(|r| r == &format!("#/$defs/{name}")) {
            kept.insert(name, def);
        }
    }
    if !kept.is_empty() {
        schema.insert("$defs".into(), Value::Object(kept));
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                out.push(r.to_string());
            }
            o.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn description_of(event_type: &str) -> &'static str {
    match event_type {
        SHARE_REVOKED => "PM UNSHARE notification: access to a property or meter was removed.",
        SHARE_UPDATED => "PM SHAREUPDATE notification: an access level or the custom field values of a share changed; accessLevel is the new level, customFields the values re-read from PM (absent with enrichment \"unavailable\" when the read failed). accountId is the customer whose share changed, notificationCreatedBy/notificationCreatedByAccountId the editor.",
        CONNECTION_TERMINATED => "PM DISCONNECT notification: a customer is no longer connected.",
        PROPERTY_TRANSFERRED => "PM TRANSFERPROPERTY notification: a property was transferred (accountId and username are the new owner's).",
        NOTIFICATION_RECEIVED => "A PM notification whose code has no type of its own; notificationTypeCode carries it.",
        CONNECTION_REQUESTED => "A pending connection request appeared on /connect/account/pending/list.",
        PROPERTY_SHARE_REQUESTED => "A pending property share appeared on /share/property/pending/list.",
        METER_SHARE_REQUESTED => "A pending meter share appeared on /share/meter/pending/list.",
        CONNECTION_RESOLVED => "A pending connection request left the pending list; data is the request as last seen plus resolution and observedAt.",
        PROPERTY_SHARE_RESOLVED => "A pending property share left the pending list; data is the share as last seen plus resolution and observedAt.",
        METER_SHARE_RESOLVED => "A pending meter share left the pending list; data is the share as last seen plus resolution and observedAt.",
        BODY_QUARANTINED => "Bridge-originated: a PM response body failed to parse and was quarantined in the journal.",
        COMMAND_COMPLETED => "Bridge-originated: a command (answer, disconnect, unshare, create customer) finished: PM did it, or it was already so (outcome nothing_to_do). causationid is the command id.",
        COMMAND_FAILED => "Bridge-originated: a command failed: PM refused it or could not be reached, or it was malformed; error says why. causationid is the command id.",
        POLICY_DECIDED => "Bridge-originated: an auto-accept policy decided a pending request: which rule or the decision webhook decided (decidedBy), or which other answer implies it (impliedBy). Unless dryRun, the answer goes to PM as the command commandId (the causationid of its command.completed event); an implied answer is never sent.",
        _ => "",
    }
}

/// The schema `data` of an event type adheres to (what `dataschema` names), with `$id`
/// [`dataschema_uri`]; `None` for a type we do not know.
pub fn data_schema(event_type: &str) -> Option<Value> {
    let mut data = data_schema_of(event_type)?;
    let obj = data.as_object_mut()?;
    // Only share.updated re-reads custom fields: the other notification types never carry them.
    if event_type != SHARE_UPDATED && data_is_notification(event_type) {
        if let Some(p) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("customFields");
            p.remove("enrichment");
        }
        prune_unused_defs(obj);
    }
    // Each specific notification type carries exactly its PM code.
    if let Some((code, _)) = KNOWN_NOTIFICATION_CODES
        .iter()
        .find(|(_, t)| *t == event_type)
    {
        if let Some(p) = obj
            .get_mut("properties")
            .and_then(|p| p.get_mut("notificationTypeCode"))
            .and_then(Value::as_object_mut)
        {
            p.insert("const".into(), Value::from(*code));
        }
    }
    let mut schema = Map::new();
    schema.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    schema.insert("$id".into(), dataschema_uri(event_type).into());
    schema.insert("title".into(), format!("data of {event_type}").into());
    schema.insert("description".into(), description_of(event_type).into());
    for (k, v) in std::mem::take(obj) {
        if !matches!(k.as_str(), "$schema" | "title" | "description") {
            schema.insert(k, v);
        }
    }
    Some(Value::Object(schema))
}

/// The schema of a whole event of one type (the structured-mode JSON), with `$id`
/// [`envelope_schema_uri`]; `data` refers to [`data_schema`] by its id.
pub fn event_schema(event_type: &str) -> Option<Value> {
    data_schema_of(event_type)?;
    let data_uri = dataschema_uri(event_type);
    let mut required = vec![
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "dataschema",
        "espmenvironment",
        "espmaccount",
        "data",
    ];
    if matches!(event_type, COMMAND_COMPLETED | COMMAND_FAILED) {
        required.push("causationid");
    }
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": envelope_schema_uri(event_type),
        "title": event_type,
        "description": description_of(event_type),
        "type": "object",
        "required": required,
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "minLength": 1,
                    "description": "Deterministic UUIDv5: the same PM notification or request always gets the same id." },
            "source": { "type": "string", "pattern": "^urn:espm:[^:]+:.+$",
                        "description": "urn:espm:{environment}:{account}" },
            "type": { "const": event_type },
            "subject": { "type": "string",
                         "pattern": SUBJECT_PATTERN,
                         "description": "The most specific thing the event concerns." },
            "time": { "type": "string", "format": "date-time" },
            "datacontenttype": { "const": "application/json" },
            "dataschema": { "const": data_uri, "description": "The $id of the schema data adheres to." },
            "espmenvironment": { "type": "string", "description": "PM environment: live, test or sim." },
            "espmaccount": { "type": "string", "description": "Configured name of the polled provider account." },
            "causationid": { "type": "string", "minLength": 1,
                             "description": "The id of the command that caused the event (command results only)." },
            "correlationid": { "type": "string", "minLength": 1,
                               "description": "Extension: shared by the events of one PM action. A DISCONNECT and the UNSHAREs PM sends with it carry the DISCONNECT event's id; absent otherwise." },
            "partitionkey": partitionkey_schema(event_type),
            "data": { "$ref": data_uri },
        },
    }))
}

const SUBJECT_PATTERN: &str =
    "^(property/-?[0-9]+(/meter/-?[0-9]+)?|meter/-?[0-9]+|account/-?[0-9]+)$";

fn partitionkey_schema(event_type: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "description": format!(
            "Partitioning extension: the PM account id of the customer the event is about, and the default Kafka key. {}",
            crate::partition_key_doc(event_type)
        ),
    })
}

/// Every event type's envelope schema, keyed by event type (file `schemas/{type}.v1.json`).
pub fn event_schemas() -> BTreeMap<String, Value> {
    EVENT_TYPES
        .iter()
        .filter_map(|t| event_schema(t).map(|s| (t.to_string(), s)))
        .collect()
}

/// Every event type's data schema, keyed by event type (file `schemas/data/{type}.v1.json`).
pub fn data_schemas() -> BTreeMap<String, Value> {
    EVENT_TYPES
        .iter()
        .filter_map(|t| data_schema(t).map(|s| (t.to_string(), s)))
        .collect()
}

/// How a transport carries an event, for the AsyncAPI document.
#[derive(Clone, Copy)]
enum Carriage {
    /// Kafka binary mode: `ce_*` headers (`datacontenttype` as `content-type`), value = `data`.
    KafkaBinary,
    /// Kafka structured mode: `content-type` header, value = the whole event.
    KafkaStructured,
    /// NATS: the whole event as payload, `ce-*` headers beside it (percent-encoded), `Nats-Msg-Id`.
    Nats,
    /// Webhook structured mode: the whole event as body, Standard Webhooks headers.
    WebhookStructured,
}

impl Carriage {
    fn id(self) -> &'static str {
        match self {
            Carriage::KafkaBinary => "kafka.binary",
            Carriage::KafkaStructured => "kafka.structured",
            Carriage::Nats => "nats",
            Carriage::WebhookStructured => "webhook.structured",
        }
    }
}

/// `name: schema` of the attribute headers of a binary-style carriage, from the envelope schema
/// (so header and JSON attribute rules cannot differ), plus whether each is required.
fn attribute_headers(
    event_type: &str,
    prefix: &str,
    with_content_type: bool,
) -> (Map<String, Value>, Vec<Value>) {
    let envelope = event_schema(event_type).unwrap_or_default();
    let required: Vec<&str> = envelope["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut props = Map::new();
    let mut req = Vec::new();
    for name in crate::cloudevent::ATTRIBUTE_NAMES {
        if *name == "datacontenttype" && !with_content_type {
            continue;
        }
        let header = format!("{prefix}{name}");
        props.insert(header.clone(), envelope["properties"][*name].clone());
        if required.contains(name) {
            req.push(Value::from(header));
        }
    }
    (props, req)
}

fn header_schema(props: Map<String, Value>, required: Vec<Value>) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn message(ty: &str, carriage: Carriage) -> Value {
    let envelope_ref = json!({ "$ref": format!("./{}", schema_file_name(ty)) });
    let data_ref = json!({ "$ref": format!("./{}", data_schema_file_name(ty)) });
    let payload = |schema: Value| json!({ "schemaFormat": "application/schema+json;version=draft-2020-12", "schema": schema });
    let (summary, content_type, headers, body) = match carriage {
        Carriage::KafkaBinary => {
            let (mut props, mut req) = attribute_headers(ty, "ce_", false);
            props.insert("content-type".into(), json!({ "const": "application/json" }));
            req.push("content-type".into());
            (
                "Kafka, binary mode (default): context attributes in ce_ headers, the record value is data.",
                "application/json",
                header_schema(props, req),
                payload(data_ref),
            )
        }
        Carriage::KafkaStructured => {
            let mut props = Map::new();
            props.insert(
                "content-type".into(),
                json!({ "const": "application/cloudevents+json; charset=UTF-8" }),
            );
            (
                "Kafka, structured mode (mode = \"structured\"): the record value is the whole event.",
                "application/cloudevents+json",
                header_schema(props, vec!["content-type".into()]),
                payload(envelope_ref),
            )
        }
        Carriage::Nats => {
            let (mut props, mut req) = attribute_headers(ty, "ce-", true);
            props.insert("content-type".into(), json!({ "const": "application/cloudevents+json" }));
            props.insert(
                "Nats-Msg-Id".into(),
                json!({ "type": "string", "description": "The event id, in JetStream mode: the stream's duplicate window drops a retried publish." }),
            );
            req.push("content-type".into());
            (
                "NATS: the payload is the whole event (structured mode); the ce- headers repeat its context attributes, percent-encoded as the CloudEvents NATS binding requires, for routing without parsing.",
                "application/cloudevents+json",
                header_schema(props, req),
                payload(envelope_ref),
            )
        }
        Carriage::WebhookStructured => (
            "Webhook, structured mode (default): the body is the whole event, signed per Standard Webhooks.",
            "application/cloudevents+json",
            header_schema(webhook_headers("application/cloudevents+json"), webhook_required()),
            payload(envelope_ref),
        ),
    };
    let mut msg = json!({
        "name": ty,
        "title": format!("{ty} ({})", carriage.id()),
        "summary": summary,
        "description": description_of(ty),
        "contentType": content_type,
        "headers": headers,
        "payload": body,
    });
    if matches!(carriage, Carriage::KafkaBinary | Carriage::KafkaStructured) {
        let key = match crate::partition_key_fields(ty) {
            [] => {
                json!({ "type": "null", "description": "No key by default: the event is about no customer account." })
            }
            _ => json!({
                "type": "string",
                "description": format!(
                    "The `key` template, by default `{{partitionkey}}`: {}",
                    crate::partition_key_doc(ty)
                ),
            }),
        };
        if let Some(o) = msg.as_object_mut() {
            o.insert(
                "bindings".into(),
                json!({ "kafka": { "key": key, "bindingVersion": "0.5.0" } }),
            );
        }
    }
    msg
}

fn webhook_headers(content_type: &str) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert("content-type".into(), json!({ "const": content_type }));
    props.insert(
        "webhook-id".into(),
        json!({ "type": "string", "description": "The event id: stable across retries, deduplicate on it." }),
    );
    props.insert(
        "webhook-timestamp".into(),
        json!({ "type": "string", "pattern": "^[0-9]+$", "description": "Unix seconds of the attempt." }),
    );
    props.insert(
        "webhook-signature".into(),
        json!({ "type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$",
                "description": "Standard Webhooks: space-separated v1,base64(HMAC-SHA256(id.timestamp.body)), one per configured secret." }),
    );
    props.insert(
        "user-agent".into(),
        json!({ "type": "string", "pattern": "^espm-bridge/" }),
    );
    props
}

fn webhook_required() -> Vec<Value> {
    [
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    .into_iter()
    .map(Value::from)
    .collect()
}

/// The AsyncAPI 3.0 document: Kafka topics `espm.{type}`, NATS subjects
/// `espm.{environment}.{type}` and the webhook, with the headers, payload and Kafka key each
/// transport actually sends, referencing the schema files beside it.
pub fn asyncapi_yaml() -> String {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut webhook_messages = Map::new();
    let mut send = |channel_id: &str, channel: Value, message_ids: Vec<String>| {
        let refs: Vec<Value> = message_ids
            .iter()
            .map(|m| json!({ "$ref": format!("#/channels/{channel_id}/messages/{m}") }))
            .collect();
        channels.insert(channel_id.to_string(), channel);
        operations.insert(
            format!("publish.{channel_id}"),
            json!({ "action": "send", "channel": { "$ref": format!("#/channels/{channel_id}") }, "messages": refs }),
        );
    };
    let mut webhook_ids = Vec::new();
    for ty in EVENT_TYPES {
        let mut add = |carriage: Carriage| {
            let id = format!("{}.{ty}", carriage.id());
            messages.insert(id.clone(), message(ty, carriage));
            (
                id.clone(),
                json!({ "$ref": format!("#/components/messages/{id}") }),
            )
        };
        let (kb, kb_ref) = add(Carriage::KafkaBinary);
        let (ks, ks_ref) = add(Carriage::KafkaStructured);
        let (n, n_ref) = add(Carriage::Nats);
        let (w, w_ref) = add(Carriage::WebhookStructured);
        webhook_messages.insert(w.clone(), w_ref);
        webhook_ids.push(w);
        send(
            &format!("kafka.{ty}"),
            json!({
                "address": format!("espm.{ty}"),
                "description": "The default topic template `espm.{type}`; binary or structured mode per the sink's `mode`.",
                "servers": [{ "$ref": "#/servers/kafka" }],
                "messages": { kb.clone(): kb_ref, ks.clone(): ks_ref },
            }),
            vec![kb, ks],
        );
        send(
            &format!("nats.{ty}"),
            json!({
                "address": format!("espm.{{environment}}.{ty}"),
                "description": "The default subject template `espm.{environment}.{type}`.",
                "servers": [{ "$ref": "#/servers/nats" }],
                "parameters": { "environment": { "$ref": "#/components/parameters/environment" } },
                "messages": { n.clone(): n_ref },
            }),
            vec![n],
        );
    }
    send(
        "webhook",
        json!({
            "address": null,
            "description": "One HTTP POST per event to the configured URL; a 2xx acknowledges it.",
            "servers": [{ "$ref": "#/servers/webhook" }],
            "messages": webhook_messages,
        }),
        webhook_ids,
    );
    let doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "espm-bridge events",
            "version": "1.0.0",
            "description": "ENERGY STAR Portfolio Manager notifications and pending connection/share requests as CloudEvents 1.0, as each transport carries them. Generated by espm-events from its event types; do not edit.",
            "license": { "name": "Apache-2.0" },
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "kafka": { "host": "kafka:9092", "protocol": "kafka",
                       "description": "Topic and key templates are configurable (`topic`, `key`)." },
            "nats": { "host": "nats:4222", "protocol": "nats",
                      "description": "JetStream by default; the subject template is configurable (`subject`)." },
            "webhook": { "host": "receiver.example.com", "protocol": "https",
                         "description": "The configured webhook receiver." },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {
                "environment": { "enum": ["live", "test", "sim"], "description": "PM environment." },
            },
            "messages": messages,
        },
    });
    // A serde_json::Value of strings, arrays and objects always serialises to YAML.
    let body = serde_norway::to_string(&doc).unwrap_or_default();
    format!("# Generated by espm-events (`UPDATE_GENERATED=1 cargo test -p espm-events`); do not edit.\n{body}")
}
