//! Loading, environment overrides, validation rules and secret handling.

use std::path::{Path, PathBuf};
use std::time::Duration;

use espm_config::{
    from_toml_str, from_toml_str_with_env, load_with_env, resolve_password, BridgeConfig,
    ConfigError, Environment, SecretError, SinkConfig,
};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(rel)
}

const NO_ENV: [(&str, &str); 0] = [];

/// A minimal valid configuration; each rule test breaks one thing in it.
const BASE: &str = r#"
[journal]
path = "/tmp/j.db"

[[accounts]]
name = "live"
environment = "live"
username = "u"
password_env = "PM_PASSWORD"

[[sinks]]
name = "out"
type = "console"
"#;

fn problems_of(toml: &str) -> Vec<String> {
    let cfg = from_toml_str(toml).unwrap_or_else(|e| panic!("parse failed: {e}\n{toml}"));
    cfg.validate().iter().map(ToString::to_string).collect()
}

/// Assert that `toml` parses and that validation reports a problem at exactly `path` whose message
/// contains `needle`.
fn assert_problem(toml: &str, path: &str, needle: &str) {
    let cfg = from_toml_str(toml).unwrap_or_else(|e| panic!("parse failed: {e}\n{toml}"));
    let problems = cfg.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.path == path && p.message.contains(needle)),
        "expected a problem at {path} containing {needle:?}, got {problems:#?}"
    );
}

fn with_sink(sink: &str) -> String {
    format!("{BASE}\n[[sinks]]\n{sink}\n")
}

#[test]
fn base_is_valid() {
    assert_eq!(problems_of(BASE), Vec::<String>::new());
}

#[test]
fn example_configs_parse_and_validate() {
    for rel in ["config/production.toml", "config/demo.toml"] {
        let cfg = load_with_env(&repo_file(rel), NO_ENV).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(cfg.validate(), vec![], "{rel}");
    }
    let prod = load_with_env(&repo_file("config/production.toml"), NO_ENV).unwrap();
    assert_eq!(prod.accounts.len(), 2);
    let kinds: Vec<&str> = prod
        .sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Nats(_) => "nats",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Console(_) => "console",
            SinkConfig::File(_) => "file",
            SinkConfig::Arcadia(_) => "arcadia",
        })
        .collect();
    assert_eq!(kinds, ["kafka", "nats", "webhook", "file"]);
    assert_eq!(prod.journal.retention, Duration::from_secs(30 * 86_400));
}

#[test]
fn demo_toml_matches_demo_constructor() {
    let file = load_with_env(&repo_file("config/demo.toml"), NO_ENV).unwrap();
    let built = BridgeConfig::demo(
        "http://127.0.0.1:18080/ws",
        Path::new("/tmp/espm-bridge-demo"),
    );
    assert_eq!(file, built);
    assert_eq!(built.validate(), vec![]);
    assert_eq!(built.accounts[0].name, "sim");
    assert_eq!(built.accounts[0].environment, Environment::Sim);
}

#[test]
fn unknown_key_names_its_path() {
    let err = from_toml_str(&BASE.replace(
        "username = \"u\"",
        "username = \"u\"\npoll_intervall = \"5s\"",
    ))
    .unwrap_err();
    let p = err.problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "accounts[0].poll_intervall");
    assert!(p[0].message.contains("unknown field"), "{}", p[0]);
}

#[test]
fn unknown_key_inside_a_sink_names_its_path() {
    let err = from_toml_str(&with_sink(
        "name = \"k\"\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopik = \"x\"",
    ))
    .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["sinks[1].topik"]);
}

#[test]
fn every_deserialization_problem_is_reported() {
    let toml = r#"
bogus = 1
[journal]
retention = "soon"
[[accounts]]
name = "a"
environment = "prod"
username = "u"
[[sinks]]
name = "s"
type = "carrier-pigeon"
[[sinks]]
name = "w"
type = "webhook"
url = "https://x"
max_in_flight = "lots"
"#;
    let err = from_toml_str(toml).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bogus",
            "journal.retention",
            "accounts[0].environment",
            "sinks[0].type",
            "sinks[1].max_in_flight"
        ],
        "{err}"
    );
    // The Display lists them all, one per line, with their paths.
    let text = err.to_string();
    assert!(text.starts_with("5 configuration problems:"), "{text}");
    assert!(text.contains("\n  sinks[0].type: unknown sink type `carrier-pigeon`"));
}

#[test]
fn wrong_type_names_its_path() {
    let err = from_toml_str(&BASE.replace("name = \"out\"", "name = 7")).unwrap_err();
    let p = err.problems();
    assert_eq!(p[0].path, "sinks[0].name", "{p:?}");
}

#[test]
fn env_overrides_apply_with_paths_and_indices() {
    let env = [
        ("ESPM_BRIDGE__JOURNAL__PATH", "/data/journal.db"),
        ("ESPM_BRIDGE__ACCOUNTS__0__POLL_INTERVAL", "30s"),
        ("ESPM_BRIDGE__METRICS__LISTEN", "127.0.0.1:9999"),
        // append a second account, field by field
        ("ESPM_BRIDGE__ACCOUNTS__1__NAME", "test"),
        ("ESPM_BRIDGE__ACCOUNTS__1__ENVIRONMENT", "test"),
        ("ESPM_BRIDGE__ACCOUNTS__1__USERNAME", "\"12345\""),
        ("ESPM_BRIDGE__ACCOUNTS__1__PASSWORD_FILE", "/run/secrets/p"),
        // a TOML scalar
        ("ESPM_BRIDGE__SINKS__1__NAME", "k"),
        ("ESPM_BRIDGE__SINKS__1__TYPE", "kafka"),
        ("ESPM_BRIDGE__SINKS__1__BROKERS", "b:9092"),
        ("ESPM_BRIDGE__SINKS__1__CREATE_TOPICS", "true"),
        ("UNRELATED", "ignored"),
    ];
    let cfg = from_toml_str_with_env(BASE, env).unwrap();
    assert_eq!(cfg.journal.path, PathBuf::from("/data/journal.db"));
    assert_eq!(cfg.accounts[0].poll_interval, Duration::from_secs(30));
    assert_eq!(cfg.metrics.listen, "127.0.0.1:9999");
    assert_eq!(cfg.accounts[1].name, "test");
    assert_eq!(cfg.accounts[1].username, "12345");
    match &cfg.sinks[1] {
        SinkConfig::Kafka(k) => assert!(k.create_topics),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.validate(), vec![]);
}

#[test]
fn env_override_errors_name_the_variable() {
    let err = from_toml_str_with_env(BASE, [("ESPM_BRIDGE__ACCOUNTS__5__NAME", "x")]).unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.path, "accounts[5].name");
    assert!(p.message.contains("ESPM_BRIDGE__ACCOUNTS__5__NAME"), "{p}");
    assert!(p.message.contains("past the end"), "{p}");

    let err = from_toml_str_with_env(BASE, [("ESPM_BRIDGE__ACCOUNTS__0__POLL_INTERVAL", "often")])
        .unwrap_err();
    assert_eq!(err.problems()[0].path, "accounts[0].poll_interval");

    let err = from_toml_str_with_env(BASE, [("ESPM_BRIDGE__JOURNAL__PATH__X", "1")]).unwrap_err();
    assert_eq!(err.problems()[0].path, "journal.path.x", "{err}");
}

#[test]
fn load_reads_process_environment() {
    // A variable name no other test uses, so parallel tests cannot interfere.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, BASE).unwrap();
    std::env::set_var("ESPM_BRIDGE__JOURNAL__RETENTION", "2h");
    let cfg = espm_config::load(&path).unwrap();
    std::env::remove_var("ESPM_BRIDGE__JOURNAL__RETENTION");
    assert_eq!(cfg.journal.retention, Duration::from_secs(7200));
    assert!(matches!(
        espm_config::load(&dir.path().join("missing.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn helm_style_integral_floats_are_integers() {
    let cfg = from_toml_str(&with_sink(
        "name = \"w\"\ntype = \"webhook\"\nurl = \"https://x.example/\"\nsecret_env = \"W\"\nmax_in_flight = 4.0",
    ))
    .unwrap();
    match &cfg.sinks[1] {
        SinkConfig::Webhook(w) => {
            assert_eq!(w.max_in_flight, 4);
        }
        other => panic!("{other:?}"),
    }
    assert!(from_toml_str(&with_sink(
        "name = \"w\"\ntype = \"webhook\"\nurl = \"https://x.example/\"\nsecret_env = \"W\"\nmax_in_flight = 4.5"
    ))
    .is_err());
}

// ---- one failing example per validation rule ----

#[test]
fn rule_unique_account_names() {
    let t = format!(
        "{BASE}\n[[accounts]]\nname = \"live\"\nenvironment = \"test\"\nusername = \"u\"\npassword_env = \"P\"\n"
    );
    assert_problem(&t, "accounts[1].name", "duplicate account name");
}

#[test]
fn rule_one_account_name_per_pm_user() {
    // Same PM user on the same PM (case and a trailing slash do not make another one).
    let t = format!(
        "{BASE}\n[[accounts]]\nname = \"live2\"\nenvironment = \"live\"\nusername = \"U\"\npassword_env = \"P\"\n"
    );
    assert_problem(
        &t,
        "accounts[1].username",
        "already configured as account `live`",
    );
    let t = format!(
        "{BASE}\n[[accounts]]\nname = \"live2\"\nenvironment = \"live\"\nbase_url = \"https://portfoliomanager.energystar.gov/ws/\"\nusername = \"u\"\npassword_env = \"P\"\n"
    );
    assert_problem(&t, "accounts[1].username", "two pollers on one PM account");
    // The same username in PM's test environment is another PM account.
    let t = format!(
        "{BASE}\n[[accounts]]\nname = \"test\"\nenvironment = \"test\"\nusername = \"u\"\npassword_env = \"P\"\n"
    );
    assert_eq!(problems_of(&t), Vec::<String>::new());
}

#[test]
fn rule_unique_sink_names() {
    assert_problem(
        &with_sink("name = \"out\"\ntype = \"file\"\npath = \"/tmp/x\""),
        "sinks[1].name",
        "duplicate sink name",
    );
}

#[test]
fn rule_names_are_label_safe() {
    assert_problem(
        &BASE.replace("name = \"live\"", "name = \"Live Account\""),
        "accounts[0].name",
        "a-z, 0-9",
    );
    assert_problem(
        &BASE.replace("name = \"out\"", "name = \"out.put\""),
        "sinks[0].name",
        "a-z, 0-9",
    );
    assert_problem(
        &BASE.replace("name = \"out\"", "name = \"\""),
        "sinks[0].name",
        "empty",
    );
}

#[test]
fn rule_exactly_one_password_source() {
    assert_problem(
        &BASE.replace("password_env = \"PM_PASSWORD\"", ""),
        "accounts[0]",
        "missing secret",
    );
    assert_problem(
        &BASE.replace(
            "password_env = \"PM_PASSWORD\"",
            "password_env = \"PM_PASSWORD\"\npassword_file = \"/run/p\"",
        ),
        "accounts[0].password_env",
        "only one",
    );
}

#[test]
fn rule_sim_needs_a_valid_base_url() {
    assert_problem(
        &BASE.replace("environment = \"live\"", "environment = \"sim\""),
        "accounts[0].base_url",
        "required",
    );
    assert_problem(
        &BASE.replace(
            "environment = \"live\"",
            "environment = \"sim\"\nbase_url = \"ftp://127.0.0.1/ws\"",
        ),
        "accounts[0].base_url",
        "not an http(s) URL",
    );
    assert_problem(
        &BASE.replace(
            "environment = \"live\"",
            "environment = \"live\"\nbase_url = \"not a url\"",
        ),
        "accounts[0].base_url",
        "not a valid URL",
    );
}

#[test]
fn rule_templates_parse() {
    assert_problem(
        &with_sink("name = \"k\"\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"espm.{type\""),
        "sinks[1].topic",
        "unclosed",
    );
    assert_problem(
        &with_sink("name = \"k\"\ntype = \"kafka\"\nbrokers = \"b:9092\"\nkey = \"{nope}\""),
        "sinks[1].key",
        "unknown placeholder",
    );
    assert_problem(
        &with_sink(
            "name = \"n\"\ntype = \"nats\"\nurl = \"nats://n:4222\"\nsubject = \"espm.{bogus}\"",
        ),
        "sinks[1].subject",
        "unknown placeholder",
    );
}

#[test]
fn rule_webhook_url_and_secret() {
    assert_problem(
        &with_sink(
            "name = \"w\"\ntype = \"webhook\"\nurl = \"partner.example/hook\"\nsecret_env = \"W\"",
        ),
        "sinks[1].url",
        "not a valid URL",
    );
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://partner.example/hook\""),
        "sinks[1]",
        "missing secret",
    );
}

#[test]
fn rule_max_in_flight_at_least_one() {
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\nmax_in_flight = 0"),
        "sinks[1].max_in_flight",
        "at least 1",
    );
    assert_problem(
        &with_sink("name = \"n\"\ntype = \"nats\"\nurl = \"nats://n:4222\"\nmax_in_flight = 0"),
        "sinks[1].max_in_flight",
        "at least 1",
    );
}

#[test]
fn rule_durations_non_zero() {
    assert_problem(
        &BASE.replace(
            "username = \"u\"",
            "username = \"u\"\npoll_interval = \"0s\"",
        ),
        "accounts[0].poll_interval",
        "greater than zero",
    );
    for key in ["customer_cache_ttl", "customer_lookup_timeout"] {
        assert_problem(
            &BASE.replace(
                "username = \"u\"",
                &format!("username = \"u\"\n{key} = \"0s\""),
            ),
            &format!("accounts[0].{key}"),
            "greater than zero",
        );
    }
    assert_problem(
        &BASE.replace(
            "path = \"/tmp/j.db\"",
            "path = \"/tmp/j.db\"\nretention = \"0s\"",
        ),
        "journal.retention",
        "greater than zero",
    );
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\ntimeout = \"0s\""),
        "sinks[1].timeout",
        "greater than zero",
    );
}

#[test]
fn rule_kafka_brokers_non_empty() {
    assert_problem(
        &with_sink("name = \"k\"\ntype = \"kafka\"\nbrokers = \" \""),
        "sinks[1].brokers",
        "at least one broker",
    );
}

#[test]
fn rule_nats_url_non_empty() {
    assert_problem(
        &with_sink("name = \"n\"\ntype = \"nats\"\nurl = \"\""),
        "sinks[1].url",
        "at least one server",
    );
}

#[test]
fn rule_nats_stream_and_auth_consistency() {
    assert_problem(
        &with_sink("name = \"n\"\ntype = \"nats\"\nurl = \"nats://n:4222\"\ncreate_stream = true"),
        "sinks[1].stream",
        "required",
    );
    assert_problem(
        &with_sink("name = \"n\"\ntype = \"nats\"\nurl = \"nats://n:4222\"\npassword_env = \"N\""),
        "sinks[1].username",
        "required",
    );
}

#[test]
fn rule_metrics_listen_and_lists() {
    assert_problem(
        &format!("[metrics]\nlisten = \"9464\"\n{BASE}"),
        "metrics.listen",
        "host:port",
    );
    assert_problem("", "accounts", "no accounts");
    assert_problem("", "sinks", "no sinks");
}

#[test]
fn rule_webhook_type_filter_and_retry() {
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\ntypes = [\"gov.*.share\"]"),
        "sinks[1].types[0]",
        "prefix ending in `*`",
    );
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\nretry = { max_attempts = 0 }"),
        "sinks[1].retry.max_attempts",
        "retry.schedule",
    );
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\nretry = { initial_interval = \"1s\", max_interval = \"5m\" }"),
        "sinks[1].retry.max_interval",
        "was removed",
    );
    assert_problem(
        &with_sink("name = \"w\"\ntype = \"webhook\"\nurl = \"https://p.example/\"\nsecret_env = \"W\"\nretry = { schedule = [\"5s\", \"8days\"] }"),
        "sinks[1].retry.schedule[1]",
        "7 days",
    );
}

#[test]
fn problems_display_as_path_colon_message() {
    let p = espm_config::ConfigProblem::new("sinks[2].topic", "bad");
    assert_eq!(p.to_string(), "sinks[2].topic: bad");
}

// ---- secrets ----

#[test]
fn secrets_never_appear_in_debug_of_a_loaded_config() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2-very-secret\n").unwrap();
    let t = BASE.replace(
        "password_env = \"PM_PASSWORD\"",
        &format!("password_file = {:?}", pw.display().to_string()),
    );
    let cfg = from_toml_str(&t).unwrap();
    let secret = resolve_password(&cfg.accounts[0]).unwrap();
    assert_eq!(secret.expose(), "hunter2-very-secret");
    let shown = format!("{cfg:?} {cfg:#?} {secret:?} {secret}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***"));
}

#[test]
fn resolve_password_errors_name_the_source_only() {
    let mut cfg = from_toml_str(BASE).unwrap();
    cfg.accounts[0].password_env = Some("ESPM_CONFIG_TEST_SURELY_UNSET".into());
    match resolve_password(&cfg.accounts[0]) {
        Err(e @ SecretError::Env(_)) => {
            assert!(e.to_string().contains("ESPM_CONFIG_TEST_SURELY_UNSET"))
        }
        other => panic!("{other:?}"),
    }
    cfg.accounts[0].password_env = None;
    assert!(matches!(
        resolve_password(&cfg.accounts[0]),
        Err(SecretError::NotConfigured(_))
    ));
}

#[test]
fn effective_base_url_defaults_by_environment() {
    let cfg = from_toml_str(BASE).unwrap();
    assert_eq!(
        cfg.accounts[0].effective_base_url().as_deref(),
        Some("https://portfoliomanager.energystar.gov/ws")
    );
}

#[test]
fn rule_no_inline_credentials_in_sinks() {
    assert_problem(
        &with_sink("type = \"webhook\"\nname = \"w\"\nurl = \"https://x.example/h\"\nsecret_env = \"S\"\nheaders = { Authorization = \"Bearer abc\" }\n"),
        "sinks[1].headers.Authorization",
        "header_files",
    );
    assert_problem(
        &with_sink("type = \"kafka\"\nname = \"k\"\nbrokers = \"b:9092\"\n[sinks.properties]\n\"sasl.password\" = \"hunter2\"\n"),
        "sinks[1].properties.sasl.password",
        "secret_files",
    );
}

#[test]
fn arcadia_sink_is_checked() {
    let ok = with_sink(
        "type = \"arcadia\"\nname = \"arcadia\"\napp_id = \"id\"\napp_key_file = \"/run/secrets/espm-bridge/arcadia\"\ncustom_fields = { \"Master Tariff Id\" = \"masterTariffId\" }\n",
    );
    assert_eq!(problems_of(&ok), Vec::<String>::new());
    let cfg = from_toml_str(&ok).unwrap();
    match cfg.sinks.last().unwrap() {
        SinkConfig::Arcadia(a) => {
            assert_eq!(a.base_url, "https://api.genability.com/rest/v1");
            assert_eq!(a.custom_fields["Master Tariff Id"], "masterTariffId");
        }
        other => panic!("{other:?}"),
    }
    assert_problem(
        &with_sink("type = \"arcadia\"\nname = \"a\"\napp_id = \"id\"\n"),
        "sinks[1]",
        "app_key_file",
    );
    assert_problem(
        &with_sink("type = \"arcadia\"\nname = \"a\"\napp_id = \"id\"\napp_key_env = \"K\"\nprovider_account_id = \"espm\"\n"),
        "sinks[1].provider_account_id",
        "{propertyId}",
    );
    assert_problem(
        &with_sink("type = \"arcadia\"\nname = \"a\"\napp_id = \"id\"\napp_key_env = \"K\"\nbase_url = \"https://id:key@api.genability.com/rest/v1\"\n"),
        "sinks[1].base_url",
        "credentials",
    );
    let err = from_toml_str(&with_sink(
        "type = \"arcadia\"\nname = \"a\"\napp_id = \"id\"\napp_key = \"inline\"\n",
    ))
    .unwrap_err();
    assert!(
        err.problems().iter().any(|p| p.path == "sinks[1].app_key"),
        "{err}"
    );
}
