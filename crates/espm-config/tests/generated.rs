//! The checked-in generated files must match what the Rust types generate today.

use std::path::PathBuf;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(rel)
}

/// Compare `generated` with the checked-in file; rewrite it when `UPDATE_GENERATED=1`.
fn check(rel: &str, generated: &str) {
    let path = repo_file(rel);
    if std::env::var("UPDATE_GENERATED").as_deref() == Ok("1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "{rel} is stale: run `UPDATE_GENERATED=1 cargo test -p espm-config`"
    );
}

#[test]
fn config_schema_is_fresh() {
    check(
        "schemas/config.schema.json",
        &espm_config::to_pretty_json(&espm_config::config_json_schema()),
    );
}

#[test]
fn helm_values_schema_is_fresh() {
    check(
        "charts/espm-bridge/values.schema.json",
        &espm_config::to_pretty_json(&espm_config::helm_values_schema()),
    );
}

#[test]
fn reference_is_fresh() {
    check("config/REFERENCE.md", &espm_config::reference_markdown());
}

#[test]
fn config_schema_is_draft_2020_12_and_documents_every_section() {
    let s = espm_config::config_json_schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{s}"
    );
    for key in ["journal", "metrics", "accounts", "sinks"] {
        assert!(s["properties"][key].is_object(), "missing {key}");
    }
    let r = espm_config::reference_markdown();
    for path in [
        "`journal.retention`",
        "`accounts[].poll_interval`",
        "`sinks[].brokers`",
        "`sinks[].retry.max_attempts`",
        "`sinks[].jetstream`",
    ] {
        assert!(r.contains(path), "reference lacks {path}");
    }
}

#[test]
fn helm_values_schema_embeds_the_config_schema() {
    let s = espm_config::helm_values_schema();
    let defs = s["definitions"].as_object().expect("draft-07 definitions");
    assert!(defs.contains_key("BridgeConfig"));
    assert!(defs.contains_key("AccountConfig"));
    for key in [
        "image",
        "persistence",
        "serviceMonitor",
        "existingSecret",
        "secrets",
        "config",
    ] {
        assert!(s["properties"].get(key).is_some(), "missing {key}");
    }
}
