//! Events checked against their published JSON Schemas (draft 2020-12): the envelope schema of
//! the event's type, whose `data` refers to the data schema `dataschema` names.
//!
//! ```
//! use espm_testkit::schemas::event_errors;
//! let event = serde_json::json!({"type": "gov.energystar.pm.share.updated"});
//! assert!(!event_errors(&event).is_empty(), "no id, source, data, ...");
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use espm_events::{data_schemas, event_schemas, CloudEvent};
use serde_json::Value;

fn validators() -> &'static BTreeMap<String, jsonschema::Validator> {
    static V: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        let resources: Vec<(String, jsonschema::Resource)> = data_schemas()
            .into_values()
            .map(|s| {
                let id = s["$id"]
                    .as_str()
                    .expect("a data schema has an $id")
                    .to_string();
                let r = jsonschema::Resource::from_contents(s).expect("a data schema is a schema");
                (id, r)
            })
            .collect();
        event_schemas()
            .into_iter()
            .map(|(ty, schema)| {
                let v = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .with_resources(resources.clone().into_iter())
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("the schema of {ty} does not compile: {e}"));
                (ty, v)
            })
            .collect()
    })
}

/// Why the JSON form of an event does not match the schema of its `type` (empty: it does).
/// An event of a type without a schema is one error.
pub fn event_errors(event: &Value) -> Vec<String> {
    let ty = event["type"].as_str().unwrap_or_default();
    let Some(v) = validators().get(ty) else {
        return vec![format!("no schema for type {ty:?}")];
    };
    v.iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// Panics, with every error and the event, unless the JSON form of an event matches the schema
/// of its type.
pub fn assert_valid_json(event: &Value) {
    let errors = event_errors(event);
    assert!(
        errors.is_empty(),
        "event does not match the schema of its type:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(event).unwrap_or_default()
    );
}

/// [`assert_valid_json`] of an event as the sinks send it.
pub fn assert_valid(event: &CloudEvent) {
    let json: Value =
        serde_json::from_slice(&event.to_json_bytes()).expect("an event serializes to JSON");
    assert_valid_json(&json);
}
