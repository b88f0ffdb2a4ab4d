//! The command line: `normalize`, `check-config`, `--help`.

mod support;

use std::process::Command;

use support::bridge_bin;

fn fixture(rel: &str) -> String {
    format!("{}/../../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn normalize_prints_one_cloudevent_per_notification() {
    let out = Command::new(bridge_bin())
        .args(["normalize", &fixture("notifications/mixed.xml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "gov.energystar.pm.share.revoked",
            "gov.energystar.pm.connection.terminated",
            "gov.energystar.pm.share.updated",
            "gov.energystar.pm.property.transferred"
        ]
    );
    assert_eq!(
        lines[2]["data"]["accountId"],
        serde_json::json!(8_833_843_022i64)
    );
    assert_eq!(lines[0]["specversion"], "1.0");
}

#[test]
fn normalize_reads_pending_lists_from_stdin() {
    let xml = std::fs::read(fixture("pending/accounts-page1.xml")).unwrap();
    let mut child = Command::new(bridge_bin())
        .args(["normalize", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&xml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("gov.energystar.pm.connection.requested"));
}

#[test]
fn normalize_rejects_bad_input_with_a_clear_message() {
    for (rel, needle) in [
        ("bad/truncated-notifications.xml", "malformed"),
        ("bad/maintenance.html", "not an XML"),
    ] {
        let out = Command::new(bridge_bin())
            .args(["normalize", &fixture(rel)])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{rel} was accepted");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains(&needle.to_lowercase()), "{rel}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn check_config_accepts_the_examples_and_names_key_paths() {
    for cfg in ["production.toml", "demo.toml"] {
        let path = format!("{}/../../config/{cfg}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(bridge_bin())
            .args(["check-config", "--config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cfg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[journal]\npaht = \"/tmp/x\"\n").unwrap();
    let out = Command::new(bridge_bin())
        .args(["check-config", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("journal.paht"), "{err}");
    let bad = dir.path().join("bad.toml");
    let accounts = "[[accounts]]\nname = \"a\"\nenvironment = \"test\"\nusername = \"u\"\npassword_env = \"P\"\n";
    let sinks =
        "[[sinks]]\ntype = \"kafka\"\nname = \"k\"\nbrokers = \"b:9092\"\ntopic = \"{nope}\"\n";
    std::fs::write(&bad, format!("{accounts}{sinks}")).unwrap();
    let out = Command::new(bridge_bin())
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks[0].topic"), "{err}");
    // `run` refuses the same file with the same messages.
    let out = Command::new(bridge_bin())
        .args(["run", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sinks[0].topic"));
}

#[test]
fn help_teaches() {
    let out = Command::new(bridge_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "demo",
        "run",
        "sim",
        "normalize",
        "check-config",
        "journal",
        "dlq",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn demo_runs_on_embedded_defaults_and_prints_events() {
    let out = Command::new(bridge_bin())
        .args([
            "--log-format",
            "json",
            "demo",
            "--duration",
            "12s",
            "--activity-every",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout is JSON lines"))
        .collect();
    let types: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "gov.energystar.pm.connection.requested",
        "gov.energystar.pm.property_share.requested",
    ] {
        assert!(
            types.contains(t),
            "the demo printed no {t}: {types:?}\n{err}"
        );
    }
    assert!(
        types
            .iter()
            .any(|t| t.starts_with("gov.energystar.pm.share.")),
        "no notification events: {types:?}"
    );
    assert!(err.contains("stopped cleanly"), "{err}");
}

#[test]
fn the_chart_default_config_passes_check_config() {
    // What the chart's ConfigMap renders: `.Values.config | toToml`, converted with serde here
    // (Helm's own rendering is checked by crates/espm-config/tests/chart.rs).
    let values = std::fs::read_to_string(format!(
        "{}/../../charts/espm-bridge/values.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let values: serde_json::Value = serde_norway::from_str(&values).unwrap();
    let config = toml::Value::try_from(&values["config"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = Command::new(bridge_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&path).unwrap()
    );
}

#[test]
fn exit_codes_are_78_for_configuration_and_2_for_usage_and_documented() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    // check-config and run agree (blank webhook type filter, caught before any secret is read).
    std::fs::write(
        &bad,
        "[[accounts]]\nname = \"a\"\nenvironment = \"test\"\nusername = \"u\"\npassword_env = \"P\"\n\
         [[sinks]]\ntype = \"webhook\"\nname = \"h\"\nurl = \"https://example.com/h\"\nsecret_env = \"S\"\ntypes = [\" \"]\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", "--config", bad.to_str().unwrap()],
        vec!["run", "--config", bad.to_str().unwrap()],
        vec!["check-config", "--config", "/nonexistent/bridge.toml"],
    ] {
        let out = Command::new(bridge_bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
    }
    let out = Command::new(bridge_bin())
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("sinks[0].types[0]"));
    for args in [
        vec!["--no-such-flag"],
        vec!["journal", "depth"],
        vec!["dlq", "replay"],
        vec!["frobnicate"],
    ] {
        let out = Command::new(bridge_bin())
            .args(&args)
            .env_remove("ESPM_BRIDGE_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for args in [vec!["--help"], vec!["check-config", "--help"]] {
        let out = Command::new(bridge_bin()).args(&args).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("78") && help.contains("EX_CONFIG") && help.contains("usage error"),
            "{args:?} does not document the exit codes:\n{help}"
        );
    }
}

#[test]
fn inspection_commands_print_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    drop(espm_journal::Journal::open(&path).unwrap());
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(bridge_bin())
            .args(args)
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    let p = path.to_str().unwrap();
    let depth = run(&["journal", "--path", p, "depth"]);
    assert!(depth["outbox_head"].is_i64(), "{depth}");
    assert!(depth["sinks"].is_array(), "{depth}");
    assert_eq!(
        run(&["journal", "--path", p, "quarantine"]),
        serde_json::json!([])
    );
    assert_eq!(run(&["dlq", "--path", p, "list"]), serde_json::json!([]));
}

#[test]
fn webhook_enable_clears_a_disabled_endpoint_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let journal = espm_journal::Journal::open(&path).unwrap();
    journal
        .disable_sink("partner", "endpoint answered HTTP 410 Gone")
        .unwrap();
    let p = path.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bridge_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&run(&[
        "webhook", "--path", p, "status", "partner", "--output", "json",
    ]))
    .unwrap();
    assert_eq!(status["disabled"], true, "{status}");
    assert!(
        status["disabled_reason"].as_str().unwrap().contains("410"),
        "{status}"
    );
    assert!(run(&["webhook", "--path", p, "enable", "partner"]).contains("enabled"));
    assert_eq!(
        journal.sink_health("partner").unwrap().disabled_reason,
        None
    );
    assert!(run(&["webhook", "--path", p, "enable", "partner"]).contains("was not disabled"));
}
