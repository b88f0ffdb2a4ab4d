//! The published contract: one JSON Schema (draft 2020-12) per event type and an AsyncAPI 3.0
//! document, all generated from the Rust data types and [`EVENT_TYPES`].

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::data::*;
use crate::types::*;

fn data_schema<T: JsonSchema>() -> Value {
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
        | NOTIFICATION_RECEIVED => data_schema::<NotificationData>(),
        CONNECTION_REQUESTED => data_schema::<ConnectionRequestedData>(),
        PROPERTY_SHARE_REQUESTED => data_schema::<PropertyShareRequestedData>(),
        METER_SHARE_REQUESTED => data_schema::<MeterShareRequestedData>(),
        CONNECTION_RESOLVED => data_schema::<ConnectionResolvedData>(),
        PROPERTY_SHARE_RESOLVED => data_schema::<PropertyShareResolvedData>(),
        METER_SHARE_RESOLVED => data_schema::<MeterShareResolvedData>(),
        BODY_QUARANTINED => data_schema::<BodyQuarantinedData>(),
        _ => return None,
    })
}

fn description_of(event_type: &str) -> &'static str {
    match event_type {
        SHARE_REVOKED => "PM UNSHARE notification: access to a property or meter was removed.",
        SHARE_UPDATED => "PM SHAREUPDATE notification: an access level changed (accountId is the editor's).",
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
        _ => "",
    }
}

/// The full CloudEvent envelope schema of one event type, `data` being that type's data schema.
pub fn event_schema(event_type: &str) -> Option<Value> {
    let mut data = data_schema_of(event_type)?;
    let obj = data.as_object_mut()?;
    obj.remove("$schema");
    let defs = obj.remove("$defs").unwrap_or_else(|| json!({}));
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
    let uri = dataschema_uri(event_type);
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": uri,
        "title": event_type,
        "description": description_of(event_type),
        "type": "object",
        "required": ["specversion", "id", "source", "type", "datacontenttype", "dataschema",
                     "espmenvironment", "espmaccount", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "minLength": 1,
                    "description": "Deterministic UUIDv5: the same PM notification or request always gets the same id." },
            "source": { "type": "string", "pattern": "^urn:espm:[^:]+:.+$",
                        "description": "urn:espm:{environment}:{account}" },
            "type": { "const": event_type },
            "subject": { "type": "string",
                         "pattern": "^(property/-?[0-9]+(/meter/-?[0-9]+)?|meter/-?[0-9]+|account/-?[0-9]+)$",
                         "description": "The most specific thing the event concerns." },
            "time": { "type": "string", "format": "date-time" },
            "datacontenttype": { "const": "application/json" },
            "dataschema": { "const": uri },
            "espmenvironment": { "type": "string", "description": "PM environment: live, test or sim." },
            "espmaccount": { "type": "string", "description": "Configured name of the polled provider account." },
            "data": data,
        },
    });
    if defs.as_object().is_some_and(|d| !d.is_empty()) {
        if let Some(o) = schema.as_object_mut() {
            o.insert("$defs".into(), defs);
        }
    }
    Some(schema)
}

/// Every event type's envelope schema, keyed by event type (file `schemas/{type}.v1.json`).
pub fn event_schemas() -> BTreeMap<String, Value> {
    EVENT_TYPES
        .iter()
        .filter_map(|t| event_schema(t).map(|s| (t.to_string(), s)))
        .collect()
}

/// The AsyncAPI 3.0 document: Kafka topics `espm.{type}`, NATS subjects
/// `espm.{environment}.{type}` and the webhook, one message per event type referencing the
/// schema files beside it.
pub fn asyncapi_yaml() -> String {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut webhook_messages = Map::new();
    for ty in EVENT_TYPES {
        let msg_ref = json!({ "$ref": format!("#/components/messages/{ty}") });
        messages.insert(
            ty.to_string(),
            json!({
                "name": ty,
                "title": ty,
                "summary": description_of(ty),
                "contentType": "application/cloudevents+json",
                "payload": {
                    "schemaFormat": "application/schema+json;version=draft-2020-12",
                    "schema": { "$ref": format!("./{}", schema_file_name(ty)) },
                },
            }),
        );
        webhook_messages.insert(ty.to_string(), msg_ref.clone());
        for (transport, address, server, params) in [
            ("kafka", format!("espm.{ty}"), "kafka", None),
            (
                "nats",
                format!("espm.{{environment}}.{ty}"),
                "nats",
                Some(json!({ "environment": { "$ref": "#/components/parameters/environment" } })),
            ),
        ] {
            let channel_id = format!("{transport}.{ty}");
            let mut channel = json!({
                "address": address,
                "servers": [{ "$ref": format!("#/servers/{server}") }],
                "messages": { ty.to_string(): msg_ref.clone() },
            });
            if let (Some(p), Some(o)) = (params, channel.as_object_mut()) {
                o.insert("parameters".into(), p);
            }
            channels.insert(channel_id.clone(), channel);
            operations.insert(
                format!("publish.{channel_id}"),
                json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{channel_id}") },
                    "messages": [{ "$ref": format!("#/channels/{channel_id}/messages/{ty}") }],
                }),
            );
        }
    }
    let webhook_refs: Vec<Value> = EVENT_TYPES
        .iter()
        .map(|ty| json!({ "$ref": format!("#/channels/webhook/messages/{ty}") }))
        .collect();
    channels.insert(
        "webhook".into(),
        json!({
            "address": null,
            "description": "HTTP POST of each event (structured CloudEvents JSON, Standard Webhooks signature headers) to the configured URL.",
            "servers": [{ "$ref": "#/servers/webhook" }],
            "messages": webhook_messages,
        }),
    );
    operations.insert(
        "publish.webhook".into(),
        json!({
            "action": "send",
            "channel": { "$ref": "#/channels/webhook" },
            "messages": webhook_refs,
        }),
    );
    let doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "espm-bridge events",
            "version": "1.0.0",
            "description": "ENERGY STAR Portfolio Manager notifications and pending connection/share requests as CloudEvents 1.0. Generated by espm-events from its event types; do not edit.",
            "license": { "name": "Apache-2.0" },
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "kafka": { "host": "kafka:9092", "protocol": "kafka",
                       "description": "Topic template `espm.{type}` by default (configurable). Binary mode puts attributes in ce_* headers and data in the value; structured mode sends the whole event." },
            "nats": { "host": "nats:4222", "protocol": "nats",
                      "description": "JetStream; subject template `espm.{environment}.{type}` by default (configurable)." },
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
