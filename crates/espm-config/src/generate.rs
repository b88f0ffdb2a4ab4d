//! Generated artifacts, all derived from the Rust types: the config JSON Schema, the Helm values
//! schema and the Markdown configuration reference. The checked-in copies are kept fresh by
//! `tests/generated.rs` (`UPDATE_GENERATED=1 cargo test -p espm-config` rewrites them).

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::{BridgeConfig, HelmValues};

/// JSON Schema (draft 2020-12) of the configuration file (`schemas/config.schema.json`).
pub fn config_json_schema() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<BridgeConfig>();
    let mut v = schema.to_value();
    if let Some(o) = v.as_object_mut() {
        o.insert("title".into(), json!("espm-bridge configuration"));
    }
    canonical(v)
}

/// JSON Schema of the Helm chart's values (`charts/espm-bridge/values.schema.json`): the chart keys
/// plus `config`, which is the configuration schema.
///
/// Draft-07, because Helm before 3.18 validates values with a draft-07 validator and ignores or
/// rejects 2020-12 keywords.
pub fn helm_values_schema() -> Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<HelmValues>();
    canonical(schema.to_value())
}

/// Pretty JSON with sorted keys and a trailing newline: the form of the checked-in files, stable
/// whatever serde_json's `preserve_order` feature is.
pub fn to_pretty_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&canonical(v.clone())).unwrap_or_default(); // Value always serializes
    s.push('\n');
    s
}

fn canonical(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let sorted: BTreeMap<String, Value> =
                o.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect::<Map<String, Value>>())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// The configuration reference (`config/REFERENCE.md`): every key path with its type, default and
/// description, generated from [`config_json_schema`].
pub fn reference_markdown() -> String {
    let schema = config_json_schema();
    let r = Ref { root: &schema };
    let mut out = String::new();
    out.push_str(
        "# espm-bridge configuration reference\n\n\
         <!-- Generated from the Rust types in crates/espm-config. Do not edit: run\n\
         `UPDATE_GENERATED=1 cargo test -p espm-config`. -->\n\n\
         The configuration is one TOML file (`espm-bridge run --config FILE`). In the Helm chart the\n\
         same structure, written as YAML, is the `config` value. The JSON Schema is\n\
         `schemas/config.schema.json`; `espm-bridge check-config --config FILE` prints every problem\n\
         with its key path.\n\n\
         - Unknown keys are errors, so a typo never silently falls back to a default.\n\
         - Durations are strings: a number and a unit, e.g. `\"60s\"`, `\"5m\"`, `\"1h 30m\"`, `\"30d\"`.\n\
         - Secrets are never written inline: every secret comes from a `*_file` key (a mounted\n\
           file; one trailing newline is ignored) or a `*_env` key (the name of an environment\n\
           variable); named sets of secrets from `*_files` / `*_envs` maps (name -> file or\n\
           variable).\n\
         - Each secret has exactly one source. Setting both `X_file` and `X_env`, or one name in\n\
           both `*_files` and `*_envs`, is an error for every secret (`check-config` and `run` say\n\
           so); no source silently wins.\n\
         - Account and sink names may contain only `a-z`, `0-9`, `_` and `-`, and must be unique:\n\
           they appear in metric labels, event sources, subjects and topic names, and key the journal.\n\n\
         ## Environment overrides\n\n\
         Any key can be set from the environment: `ESPM_BRIDGE__` followed by the key path, segments\n\
         separated by `__` (case-insensitive), array indices as numbers.\n\n\
         ```sh\n\
         ESPM_BRIDGE__JOURNAL__PATH=/data/journal.db\n\
         ESPM_BRIDGE__ACCOUNTS__0__POLL_INTERVAL=30s\n\
         ESPM_BRIDGE__SINKS__1__CREATE_STREAM=true\n\
         ```\n\n\
         The value is parsed as a TOML value (`30`, `true`, `[\"a\", \"b\"]`, `'\"quoted\"'`) and\n\
         otherwise taken as a string. An index equal to the array's length appends an entry; missing\n\
         tables are created. Overrides are checked exactly like the file.\n",
    );

    let props = r.properties(&schema);
    for (key, prop) in order(&props) {
        out.push_str(&format!("\n## `{key}`\n\n"));
        let target = r.resolve(prop);
        if let Some(d) = description(prop).or_else(|| description(target)) {
            out.push_str(&format!("{}\n\n", one_line(&d)));
        }
        let is_array = type_names(target).contains(&"array".to_string());
        let item = if is_array {
            target.get("items").map(|i| r.resolve(i))
        } else {
            None
        };
        let (body, prefix) = match item {
            Some(i) => (i, format!("{key}[]")),
            None => (target, key.to_string()),
        };
        let variants = body.get("oneOf").and_then(Value::as_array);
        match variants {
            Some(vs) if vs.iter().all(|v| tag_of(&r, v).is_some()) => {
                for v in vs {
                    let tag = tag_of(&r, v).unwrap_or_default();
                    out.push_str(&format!("### `type = \"{tag}\"`\n\n"));
                    if let Some(d) = description(v) {
                        out.push_str(&format!("{}\n\n", one_line(&d)));
                    }
                    table(&r, v, &prefix, &mut out);
                }
            }
            _ => table(&r, body, &prefix, &mut out),
        }
    }
    out
}

fn table(r: &Ref, schema: &Value, prefix: &str, out: &mut String) {
    out.push_str("| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n");
    let mut rows = Vec::new();
    rows_for(r, schema, prefix, &mut rows);
    for row in rows {
        out.push_str(&row);
    }
    out.push('\n');
}

fn rows_for(r: &Ref, schema: &Value, prefix: &str, rows: &mut Vec<String>) {
    let props = r.properties(schema);
    let required = r.required(schema);
    for (key, prop) in order(&props) {
        let path = format!("{prefix}.{key}");
        let target = r.resolve(prop);
        let ty = r.type_label(prop);
        let default = match prop.get("default") {
            _ if required.contains(&key.to_string()) => "**required**".to_string(),
            Some(Value::Null) | None => "—".to_string(),
            Some(d) => format!("`{}`", toml_literal(d)),
        };
        let mut desc = description(prop)
            .or_else(|| description(target))
            .map(|d| one_line(&d))
            .unwrap_or_default();
        if let Some(values) = r.enum_values(prop) {
            let docs: Vec<String> = values
                .iter()
                .filter_map(|(v, d)| {
                    d.as_ref()
                        .map(|d| format!("`{v}`: {}", one_line(d).trim_end_matches('.')))
                })
                .collect();
            if !docs.is_empty() {
                desc.push_str(&format!(" ({})", docs.join("; ")));
            }
        }
        let nested = r.properties(target);
        let sub_object = !nested.is_empty() && ty == "table";
        rows.push(format!(
            "| `{path}` | {} | {} | {} |\n",
            escape(&ty),
            escape(&default),
            escape(&desc)
        ));
        if sub_object {
            rows_for(r, target, &path, rows);
        } else if ty == "array of table" {
            // An array of tables (`[[x.y]]`): its keys as `x.y[].key`.
            if let Some(items) = target.get("items") {
                let item = r.resolve(items);
                if !r.properties(item).is_empty() {
                    rows_for(r, item, &format!("{path}[]"), rows);
                }
            }
        }
    }
}

struct Ref<'a> {
    root: &'a Value,
}

impl<'a> Ref<'a> {
    fn resolve(&self, s: &'a Value) -> &'a Value {
        let mut cur = s;
        for _ in 0..8 {
            let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
                // schemars wraps a lone $ref in allOf for older drafts
                match cur.get("allOf").and_then(Value::as_array) {
                    Some(a) if a.len() == 1 && cur.get("properties").is_none() => {
                        cur = &a[0];
                        continue;
                    }
                    _ => {}
                }
                // An optional table (`Option<T>`) is `anyOf: [T, null]`: document T.
                let non_null: Vec<&Value> = cur
                    .get("anyOf")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                            .collect()
                    })
                    .unwrap_or_default();
                match non_null.as_slice() {
                    [only] if cur.get("properties").is_none() && only.get("$ref").is_some() => {
                        cur = only;
                        continue;
                    }
                    _ => return cur,
                }
            };
            let Some(ptr) = r.strip_prefix('#') else {
                return cur;
            };
            match self.root.pointer(ptr) {
                Some(t) => cur = t,
                None => return cur,
            }
        }
        cur
    }

    fn ref_name(s: &Value) -> Option<&str> {
        s.get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
    }

    /// Properties of a schema, merged from itself, its `$ref` and `allOf` parts.
    fn properties(&self, s: &'a Value) -> BTreeMap<String, &'a Value> {
        let mut out = BTreeMap::new();
        self.collect(s, &mut out, 0);
        out
    }

    fn collect(&self, s: &'a Value, out: &mut BTreeMap<String, &'a Value>, depth: usize) {
        if depth > 8 {
            return;
        }
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                out.entry(k.clone()).or_insert(v);
            }
        }
        if s.get("$ref").is_some() {
            let t = self.resolve(s);
            if !std::ptr::eq(t, s) {
                self.collect(t, out, depth + 1);
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for a in all {
                self.collect(a, out, depth + 1);
            }
        }
    }

    fn required(&self, s: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |v: &Value| {
            if let Some(r) = v.get("required").and_then(Value::as_array) {
                out.extend(r.iter().filter_map(Value::as_str).map(str::to_string));
            }
        };
        push(s);
        if s.get("$ref").is_some() {
            push(self.resolve(s));
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for a in all {
                push(a);
                push(self.resolve(a));
            }
        }
        out
    }

    /// String values of an enum-like schema, with per-value docs.
    fn enum_values(&self, s: &Value) -> Option<Vec<(String, Option<String>)>> {
        let t = self.resolve(s);
        if let Some(e) = t.get("enum").and_then(Value::as_array) {
            return Some(
                e.iter()
                    .filter_map(Value::as_str)
                    .map(|v| (v.to_string(), None))
                    .collect(),
            );
        }
        let one = t.get("oneOf").and_then(Value::as_array)?;
        let mut out = Vec::new();
        for o in one {
            if let Some(c) = o.get("const").and_then(Value::as_str) {
                out.push((c.to_string(), description(o)));
            } else if let Some(e) = o.get("enum").and_then(Value::as_array) {
                for v in e.iter().filter_map(Value::as_str) {
                    out.push((v.to_string(), description(o)));
                }
            } else {
                return None;
            }
        }
        Some(out)
    }

    fn type_label(&self, s: &Value) -> String {
        if Self::ref_name(s) == Some("Duration")
            || s.get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Self::ref_name)
                == Some("Duration")
        {
            return "duration".into();
        }
        if let Some(vals) = self.enum_values(s) {
            return vals
                .iter()
                .map(|(v, _)| format!("`\"{v}\"`"))
                .collect::<Vec<_>>()
                .join(" | ");
        }
        let t = self.resolve(s);
        let names: Vec<String> = type_names(t).into_iter().filter(|n| n != "null").collect();
        let name = names.first().map(String::as_str).unwrap_or("any");
        match name {
            "array" => match t.get("items") {
                Some(i) => format!("array of {}", self.type_label(i)),
                None => "array".into(),
            },
            "object" => match t.get("additionalProperties") {
                Some(Value::Bool(false)) | None => "table".into(),
                Some(Value::Bool(true)) => "map".into(),
                Some(a) => format!("map of {}", self.type_label(a)),
            },
            "integer" => match t.get("minimum").and_then(Value::as_f64) {
                Some(m) if m >= 0.0 => "integer (≥ 0)".into(),
                _ => "integer".into(),
            },
            other => other.to_string(),
        }
    }
}

fn type_names(s: &Value) -> Vec<String> {
    match s.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The `type` tag of a tagged-enum variant schema.
fn tag_of(r: &Ref, v: &Value) -> Option<String> {
    r.properties(v)
        .get("type")
        .and_then(|t| t.get("const").and_then(Value::as_str).map(str::to_string))
}

fn description(s: &Value) -> Option<String> {
    s.get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `name` first, then alphabetical (schemars' maps are sorted; the declaration order is not kept).
fn order<'a>(props: &BTreeMap<String, &'a Value>) -> Vec<(String, &'a Value)> {
    let mut v: Vec<(String, &Value)> = props
        .iter()
        .filter(|(k, _)| k.as_str() != "type")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    v.sort_by_key(|(k, _)| (k != "name", k.clone()));
    v
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn toml_literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .map(|(k, v)| format!("{k} = {}", toml_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
