//! The Helm chart: static YAML parses, values.yaml matches the generated schema and the Rust types,
//! the rendered `config` passes check-config, templates are well-formed, and Helm itself (v4, as a
//! library through helm-python-sdk) lints and renders the chart into manifests that
//! kubernetes-validate accepts (`tests/helm/check_chart.py`).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

fn chart_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/espm-bridge"
    ))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn chart_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(&chart_dir(), &mut out);
    out.sort();
    out
}

fn values_yaml() -> serde_norway::Value {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn values_json() -> Json {
    serde_json::to_value(values_yaml()).unwrap()
}

fn schema() -> Json {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn schema_errors(instance: &Json) -> Vec<String> {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// YAML -> TOML the way Helm's `toToml` sees it: Helm reads values through JSON, so every number
/// is a float.
fn helm_yaml_to_toml(v: &serde_norway::Value) -> Option<toml::Value> {
    Some(match v {
        serde_norway::Value::Null => return None,
        serde_norway::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_norway::Value::Number(n) => toml::Value::Float(n.as_f64()?),
        serde_norway::Value::String(s) => toml::Value::String(s.clone()),
        serde_norway::Value::Sequence(s) => {
            toml::Value::Array(s.iter().filter_map(helm_yaml_to_toml).collect())
        }
        serde_norway::Value::Mapping(m) => {
            let mut t = toml::Table::new();
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), helm_yaml_to_toml(v)) {
                    t.insert(k.to_string(), v);
                }
            }
            toml::Value::Table(t)
        }
        serde_norway::Value::Tagged(t) => return helm_yaml_to_toml(&t.value),
    })
}

#[test]
fn static_yaml_and_json_files_parse() {
    let mut checked = 0;
    for p in chart_files() {
        let text = std::fs::read_to_string(&p).unwrap();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if text.contains("{{") {
            continue;
        }
        match ext {
            "yaml" | "yml" => {
                serde_norway::from_str::<serde_norway::Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                checked += 1;
            }
            "json" => {
                serde_json::from_str::<Json>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                checked += 1;
            }
            _ => {}
        }
    }
    // Chart.yaml, values.yaml, values.schema.json
    assert!(checked >= 3, "only {checked} static files found");
    let chart: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("espm-bridge"));
    assert!(chart["appVersion"].as_str().is_some());
}

#[test]
fn values_yaml_validates_against_values_schema() {
    let errors = schema_errors(&values_json());
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn values_schema_rejects_mistakes() {
    let mut v = values_json();
    v["replicaCount"] = Json::from(2);
    assert!(
        !schema_errors(&v).is_empty(),
        "replicaCount must be rejected"
    );

    let mut v = values_json();
    v["config"]["accounts"][0]["poll_intervall"] = Json::from("5s");
    assert!(
        !schema_errors(&v).is_empty(),
        "typo in config must be rejected"
    );

    let mut v = values_json();
    v["config"]["sinks"][0] = serde_json::json!({"name": "k", "type": "kafka"});
    assert!(
        !schema_errors(&v).is_empty(),
        "kafka without brokers must be rejected"
    );

    let mut v = values_json();
    v["config"]["accounts"][0]["poll_interval"] = Json::from("often");
    assert!(
        !schema_errors(&v).is_empty(),
        "non-duration must be rejected"
    );
}

#[test]
fn values_yaml_deserializes_into_the_rust_types() {
    let v: espm_config::HelmValues = serde_norway::from_value(values_yaml()).unwrap();
    assert_eq!(v.image.repository, "ghcr.io/espm-bridge/espm-bridge");
    assert_eq!(v.image.tag, "", "tag defaults to appVersion");
    assert!(v.persistence.enabled);
    assert!(v.config.journal.path.starts_with("/var/lib/espm-bridge"));
}

#[test]
fn rendered_config_passes_check_config() {
    let values = values_yaml();
    let toml_value = helm_yaml_to_toml(&values["config"]).unwrap();
    let text = toml::to_string(&toml_value).unwrap();
    let cfg = espm_config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(cfg.validate(), vec![], "{text}");
    // Secrets are files from the chart's mount, never inline.
    for a in &cfg.accounts {
        if let Some(f) = &a.password_file {
            assert!(f.starts_with("/run/secrets/espm-bridge"), "{}", f.display());
        }
    }
    let port = cfg.metrics.listen.rsplit(':').next().unwrap();
    assert_eq!(
        port,
        values["service"]["port"].as_u64().unwrap().to_string()
    );
}

const KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "Service",
    "ServiceAccount",
    "ServiceMonitor",
    "StatefulSet",
];

#[test]
fn templates_are_well_formed() {
    let dir = chart_dir().join("templates");
    let mut kinds_seen = Vec::new();
    for p in chart_files().into_iter().filter(|p| p.starts_with(&dir)) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap();

        // Every `{{` closes before the next one opens.
        let mut rest = text.as_str();
        let mut actions = Vec::new();
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .unwrap_or_else(|| panic!("{name}: unclosed {{{{"));
            let inner = &after[..close];
            assert!(!inner.contains("{{"), "{name}: nested {{{{ in {inner:?}");
            actions.push(inner.trim_matches('-').trim().to_string());
            rest = &after[close + 2..];
        }
        assert!(!rest.contains("}}"), "{name}: stray }}}}");

        // Block actions balance with `end`.
        let opens = actions
            .iter()
            .filter(|a| {
                ["if ", "with ", "range ", "define "]
                    .iter()
                    .any(|k| a.starts_with(k))
            })
            .count();
        let ends = actions.iter().filter(|a| a.as_str() == "end").count();
        assert_eq!(opens, ends, "{name}: {opens} blocks opened, {ends} ended");

        if name.ends_with(".yaml") {
            let kinds: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("kind: "))
                .map(str::trim)
                .collect();
            assert!(!kinds.is_empty(), "{name}: no top-level kind");
            for k in &kinds {
                assert!(KINDS.contains(k), "{name}: unexpected kind {k}");
            }
            let api_versions = text
                .lines()
                .filter(|l| l.starts_with("apiVersion: "))
                .count();
            assert_eq!(api_versions, kinds.len(), "{name}: apiVersion per kind");
            kinds_seen.extend(kinds.iter().map(|k| k.to_string()));
        } else {
            assert!(
                name == "_helpers.tpl" || name == "NOTES.txt",
                "unexpected template file {name}"
            );
        }
    }
    kinds_seen.sort();
    kinds_seen.dedup();
    assert_eq!(kinds_seen, KINDS, "every expected kind has a template");
}

#[test]
fn statefulset_keeps_the_single_poller_contract() {
    let text = std::fs::read_to_string(chart_dir().join("templates/statefulset.yaml")).unwrap();
    for needle in [
        "replicas: 1",
        "volumeClaimTemplates:",
        "type: RollingUpdate",
        "mountPath: /var/lib/espm-bridge",
        "mountPath: /etc/espm-bridge",
        "mountPath: /run/secrets/espm-bridge",
        "espm-bridge.livenessProbe",
        "espm-bridge.readinessProbe",
        "espm-bridge.startupProbe",
        "espm-bridge.terminationGracePeriodSeconds",
        "espm-bridge.checkSecretFiles",
        "checksum/config:",
        "checksum/secret:",
        "- /etc/espm-bridge/config.toml",
        "name: RUST_LOG",
    ] {
        assert!(text.contains(needle), "statefulset.yaml lacks {needle:?}");
    }
    let values = values_yaml();
    let sc = &values["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["runAsUser"].as_u64(), Some(10001));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let cm = std::fs::read_to_string(chart_dir().join("templates/configmap.yaml")).unwrap();
    assert!(cm.contains("toToml .Values.config"));
}

/// Helm lints and renders the chart with several value sets; every manifest is validated against
/// the Kubernetes schemas of two minor versions; render failures (missing secret files, a grace
/// period shorter than the shutdown needs) are checked. Needs `bash tests/setup.sh` (pip).
#[test]
fn chart_renders_with_helm_and_validates() {
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/helm/check_chart.py"
    ));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_chart.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("manifests validated"), "{stdout}");
}
