//! PM simulator → espm-bridge → Arcadia simulator: accepted property shares become Arcadia
//! accounts (area in square feet, class, tariff), unshares and disconnects make them INACTIVE,
//! a replay of every event changes nothing, and a 429 storm delays but loses nothing.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use espm_arcadia::Account;
use espm_arcadia_sim::{ArcadiaSimConfig, ArcadiaSimServer, FaultConfig};
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_ARCADIA_E2E_PASSWORD";
const APP_KEY_ENV: &str = "ESPM_ARCADIA_E2E_APP_KEY";
const WAIT: Duration = Duration::from_secs(60);

fn arcadia_sink_toml(name: &str, base_url: &str) -> String {
    format!(
        r#"
[[sinks]]
type = "arcadia"
name = "{name}"
base_url = "{base_url}"
app_id = "{app_id}"
app_key_env = "{APP_KEY_ENV}"
custom_fields = {{ "Master Tariff Id" = "masterTariffId" }}
timeout = "5s"
retry = {{ max_attempts = 100, max_age = "1h", initial_interval = "50ms", max_interval = "2s" }}
"#,
        app_id = ArcadiaSimConfig::default().app_id
    )
}

fn by_pid(accounts: &[Account]) -> BTreeMap<String, Account> {
    espm_arcadia_sim::store::by_provider_id(accounts)
}

/// `(cursor, pending, dlq)` of a sink and the outbox head, from `espm-bridge journal depth`.
fn depth(journal: &Path, sink: &str) -> Option<(i64, i64, i64, i64)> {
    let out = std::process::Command::new(bridge_bin())
        .args(["journal", "--path"])
        .arg(journal)
        .arg("depth")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let head: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("outbox head: "))?
        .trim()
        .parse()
        .ok()?;
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(sink))?
        .split_whitespace()
        .collect();
    Some((
        row.get(1)?.parse().ok()?,
        row.get(2)?.parse().ok()?,
        row.last()?.parse().ok()?,
        head,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcadia_mirrors_property_shares() {
    let dir = tempfile::tempdir().unwrap();
    let pm = start_sim("arc", "pw", 12).await;
    let arcadia =
        ArcadiaSimServer::start(ArcadiaSimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let app_key = ArcadiaSimConfig::default().app_key;
    let ctl = pm.control_url();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http.post(format!("{ctl}{path}")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };

    let customer = post(
        "/customers",
        json!({"lastName": "Reyes", "organization": "ACME"}),
    )
    .await;
    let cid = customer["accountId"].as_i64().unwrap();
    post("/connections", json!({"accountId": cid})).await;
    let share = |name: &str, area: f64, units: &str, tariff: &str| {
        json!({"accountId": cid, "name": name, "accessLevel": "Read",
               "customFields": {"Master Tariff Id": tariff, "Lot": "7"},
               "grossFloorArea": {"value": area, "units": units}})
    };
    let rejected = post(
        "/shares/property",
        share("Harbor Warehouse", 20000.0, "Square Feet", "3001"),
    )
    .await["propertyId"]
        .as_i64()
        .unwrap();
    let metric = post(
        "/shares/property",
        share("Main Street Office", 1000.0, "Square Meters", "522"),
    )
    .await["propertyId"]
        .as_i64()
        .unwrap();

    let events_path = dir.path().join("events.jsonl");
    let journal_path = dir.path().join("journal.db");
    let base_config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n{}",
        journal_toml(dir.path()),
        account_toml("arc", &pm.base_url(), "arc", PASSWORD_ENV, "clear"),
        events_path.display(),
        arcadia_sink_toml("arcadia", &arcadia.base_url()),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, &base_config).unwrap();
    let env = [(PASSWORD_ENV, "pw"), (APP_KEY_ENV, app_key.as_str())];
    let mut bridge = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    let of_type = |ty: &str| -> Vec<Value> {
        read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    };
    let seen = eventually(WAIT, || {
        let n = of_type("gov.energystar.pm.property_share.requested").len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    assert!(seen.is_some(), "{}", bridge.log());

    let answer = |args: &[&str]| {
        let out = std::process::Command::new(bridge_bin())
            .arg("pm")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env(PASSWORD_ENV, "pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    answer(&["accept", "connection", &cid.to_string()]);
    answer(&["accept", "property", &metric.to_string()]);
    answer(&["reject", "property", &rejected.to_string()]);

    let metric_pid = format!("espm-{metric}");
    let account_of = |pid: &str| by_pid(&arcadia.state().accounts()).get(pid).cloned();
    // The tariff is the last call of the plan: once it is there, the upsert and the rest are too.
    let mirrored = eventually(WAIT, || {
        let a = account_of(&metric_pid).filter(|a| !a.tariffs.is_empty());
        async move { a }
    })
    .await
    .unwrap_or_else(|| panic!("not mirrored:\n{}", bridge.log()));
    // Both resolutions are out, so the rejected share had its chance to (wrongly) show up.
    let resolved = eventually(WAIT, || {
        let n = of_type("gov.energystar.pm.property_share.resolved").len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    assert!(resolved.is_some(), "{}", bridge.log());
    let accounts = arcadia.state().accounts();
    assert_eq!(accounts.len(), 1, "exactly one account: {accounts:#?}");
    assert_eq!(mirrored.status.as_deref(), Some("ACTIVE"));
    assert_eq!(mirrored.account_type.as_deref(), Some("CUSTOMER"));
    assert_eq!(mirrored.account_name.as_deref(), Some("Main Street Office"));
    assert_eq!(mirrored.customer_org_id, Some(cid.to_string()));
    assert_eq!(
        mirrored.customer_org_name.as_deref(),
        Some("ACME"),
        "the customer's organisation, not its username"
    );
    // Shared while the customer was not connected yet: PM does not tell who they are, so the
    // requests went out flagged; once connected, the resolutions carry the organisation.
    for e in of_type("gov.energystar.pm.property_share.requested") {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
    }
    for e in of_type("gov.energystar.pm.property_share.resolved") {
        assert_eq!(e["data"]["customer"]["organization"], "ACME", "{e}");
    }
    assert_eq!(
        mirrored.property("buildingArea"),
        Some("10764"),
        "1000 m² in ft²"
    );
    assert_eq!(mirrored.property("customerClass"), Some("2"));
    assert_eq!(mirrored.property("Lot"), None, "unmapped custom field");
    assert_eq!(mirrored.tariffs.len(), 1);
    assert_eq!(mirrored.tariffs[0].master_tariff_id, 522);
    assert_eq!(
        mirrored.tariffs[0]
            .customer_likelihood
            .as_ref()
            .map(|n| n.to_string()),
        Some("100".into())
    );
    let addr = mirrored.address.clone().expect("itemised address");
    assert!(
        addr.zip.is_some() && addr.city.is_some() && addr.address1.is_some(),
        "{addr:?}"
    );

    // A second accepted property, for the disconnect to find.
    let second = post(
        "/shares/property",
        share("Oak Avenue School", 30000.0, "Square Feet", "600"),
    )
    .await["propertyId"]
        .as_i64()
        .unwrap();
    let second_pid = format!("espm-{second}");
    let seen = eventually(WAIT, || {
        let n = of_type("gov.energystar.pm.property_share.requested").len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    assert!(seen.is_some(), "{}", bridge.log());
    answer(&["accept", "property", &second.to_string()]);
    let active = eventually(WAIT, || {
        let a = account_of(&second_pid).filter(|a| !a.tariffs.is_empty());
        async move { a }
    })
    .await
    .unwrap_or_else(|| panic!("second not mirrored:\n{}", bridge.log()));
    assert_eq!(active.property("buildingArea"), Some("30000"));
    assert_eq!(active.customer_org_name.as_deref(), Some("ACME"));
    let oak = of_type("gov.energystar.pm.property_share.requested")
        .into_iter()
        .find(|e| e["data"]["propertyId"] == second)
        .expect("requested");
    assert_eq!(oak["data"]["customer"]["organization"], "ACME", "{oak}");
    // One refused lookup (not connected yet), then one answer, cached for everything after.
    let lookups = pm
        .state()
        .calls()
        .get(&format!("GET /customer/{cid}"))
        .copied();
    assert_eq!(lookups, Some(2), "{:?}", pm.state().calls());

    // From here on, Arcadia throttles half of all calls.
    arcadia
        .state()
        .set_faults(FaultConfig {
            http429: 0.5,
            retry_after_secs: 1,
            ..FaultConfig::default()
        })
        .unwrap();
    let (_, faults_before) = arcadia.state().stats();
    let status_of = |pid: &str| account_of(pid).and_then(|a| a.status);

    post("/unshare", json!({"propertyId": metric})).await;
    let inactive = eventually(WAIT, || {
        let s = status_of(&metric_pid);
        async move { (s.as_deref() == Some("INACTIVE")).then_some(()) }
    })
    .await;
    assert!(
        inactive.is_some(),
        "unshare not mirrored:\n{}",
        bridge.log()
    );
    assert_eq!(status_of(&second_pid).as_deref(), Some("ACTIVE"));

    post("/disconnect", json!({"accountId": cid})).await;
    let inactive = eventually(WAIT, || {
        let s = status_of(&second_pid);
        async move { (s.as_deref() == Some("INACTIVE")).then_some(()) }
    })
    .await;
    assert!(
        inactive.is_some(),
        "disconnect not mirrored:\n{}",
        bridge.log()
    );
    // Wait for the sink to pass everything, so the storm's events are all settled.
    let drained = eventually(WAIT, || {
        let d = depth(&journal_path, "arcadia");
        async move { d.filter(|(cursor, pending, _, head)| *pending == 0 && cursor == head) }
    })
    .await
    .unwrap_or_else(|| panic!("arcadia sink did not drain:\n{}", bridge.log()));
    assert_eq!(drained.2, 0, "the storm dead-lettered events");
    let (_, faults_after) = arcadia.state().stats();
    assert!(faults_after > faults_before, "no 429 was injected");
    arcadia.state().set_faults(FaultConfig::default()).unwrap();
    assert_eq!(
        bridge
            .terminate(Duration::from_secs(20))
            .map(|s| s.success()),
        Some(true)
    );

    // Replay every event: a new arcadia sink starts at the beginning of the outbox.
    let before = by_pid(&arcadia.state().accounts());
    assert_eq!(before.len(), 2);
    let (requests_before, _) = arcadia.state().stats();
    std::fs::write(
        &config_path,
        format!(
            "{base_config}{}",
            arcadia_sink_toml("arcadia-replay", &arcadia.base_url())
        ),
    )
    .unwrap();
    let mut bridge = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    let replayed = eventually(WAIT, || {
        let d = depth(&journal_path, "arcadia-replay");
        async move {
            d.filter(|(cursor, pending, _, head)| *pending == 0 && cursor == head && *head > 0)
        }
    })
    .await
    .unwrap_or_else(|| panic!("replay did not finish:\n{}", bridge.log()));
    assert_eq!(replayed.2, 0, "the replay dead-lettered events");
    let (requests_after, _) = arcadia.state().stats();
    assert!(requests_after > requests_before, "nothing was replayed");
    assert_eq!(
        by_pid(&arcadia.state().accounts()),
        before,
        "the replay changed Arcadia"
    );
    bridge.terminate(Duration::from_secs(20));
    arcadia.shutdown().await;
    pm.shutdown().await;
}

/// `espm-bridge arcadia set-property`: the seed's call by hand, by either id, with the tariff's
/// accuracy and dates; a refusal exits non-zero with Arcadia's message; the key never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_property_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let arcadia =
        ArcadiaSimServer::start(ArcadiaSimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let app_key = ArcadiaSimConfig::default().app_key;
    let created = arcadia.state().with_store(|s| {
        s.upsert(
            Account {
                provider_account_id: Some("espm-5".into()),
                account_name: Some("Five".into()),
                ..Account::default()
            },
            "8a1f1a7e-0000-4000-8000-000000000005".into(),
        )
        .unwrap()
    });
    let account_id = created.account_id.unwrap();
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(
        &config_path,
        format!(
            "{}{}{}",
            journal_toml(dir.path()),
            account_toml("arc", "http://127.0.0.1:9/ws", "arc", PASSWORD_ENV, "clear"),
            arcadia_sink_toml("arcadia", &arcadia.base_url()),
        ),
    )
    .unwrap();
    let set = |args: &[&str]| {
        let out = std::process::Command::new(bridge_bin())
            .args(["arcadia", "set-property", "--config"])
            .arg(&config_path)
            .args(args)
            .env(APP_KEY_ENV, &app_key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !stdout.contains(&app_key) && !stderr.contains(&app_key),
            "the app key was printed"
        );
        (out.status.success(), stdout, stderr)
    };

    let (ok, stdout, stderr) = set(&[
        "--pid",
        "espm-5",
        "masterTariffId",
        "522",
        "--accuracy",
        "100",
        "--from",
        "2026-01-01",
        "--to",
        "2026-12-31",
    ]);
    assert!(ok, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        answer,
        json!({"keyName": "masterTariffId", "dataType": null, "dataValue": "522",
               "accuracy": 100, "fromDateTime": "2026-01-01", "toDateTime": "2026-12-31"})
    );
    let (ok, stdout, stderr) = set(&["--account-id", &account_id, "buildingArea", "2000"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"keyName": "buildingArea", "dataType": null, "dataValue": "2000"})
    );
    let a = by_pid(&arcadia.state().accounts())["espm-5"].clone();
    assert_eq!(a.property("buildingArea"), Some("2000"));
    assert_eq!(a.tariffs.len(), 1);
    assert_eq!(a.tariffs[0].master_tariff_id, 522);
    assert_eq!(a.tariffs[0].effective_date.as_deref(), Some("2026-01-01"));
    assert_eq!(a.tariffs[0].end_date.as_deref(), Some("2026-12-31"));

    let (ok, _, stderr) = set(&["--pid", "espm-404", "status", "INACTIVE"]);
    assert!(!ok);
    assert!(stderr.contains("ObjectNotFound"), "{stderr}");
    let (ok, _, stderr) = set(&["--pid", "espm-5", "status", "SLEEPING"]);
    assert!(!ok);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("status"),
        "{stderr}"
    );
    arcadia.shutdown().await;
}

/// `espm-bridge arcadia-sim`: Arcadia's paths under /rest/v1 behind HTTP Basic, the control API
/// under /sim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcadia_sim_command_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("arcadia-sim.log")).unwrap();
    let mut child = std::process::Command::new(bridge_bin())
        .args(["arcadia-sim", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--app-id", "cli-id", "--app-key", "cli-key"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = eventually(Duration::from_secs(30), || {
        let req = http
            .get(format!("{base}/rest/v1/accounts"))
            .basic_auth("cli-id", Some("cli-key"));
        async move { req.send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let log_text = || std::fs::read_to_string(dir.path().join("arcadia-sim.log")).unwrap();
    assert!(up.is_some(), "arcadia-sim did not come up: {}", log_text());
    let wrong = http
        .get(format!("{base}/rest/v1/accounts"))
        .basic_auth("cli-id", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let put = http
        .put(format!("{base}/rest/v1/accounts"))
        .basic_auth("cli-id", Some("cli-key"))
        .json(&json!({"providerAccountId": "espm-1", "accountName": "One"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let listed: Vec<Account> = http
        .get(format!("{base}/sim/accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!log_text().contains("cli-key"), "the app key was logged");
    let _ = child.kill();
    let _ = child.wait();
}

/// `espm-bridge demo --arcadia`: the demo's provider accepts the scenario's pending property
/// shares and the Arcadia simulator ends up holding their accounts.
#[test]
fn demo_with_arcadia_mirrors_accepted_shares() {
    let out = std::process::Command::new(bridge_bin())
        .args([
            "demo",
            "--arcadia",
            "--duration",
            "25s",
            "--activity-every",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let accepted = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "gov.energystar.pm.property_share.resolved"
                && e["data"]["resolution"] == "accepted"
        })
        .count();
    assert!(accepted > 0, "the demo accepted no property share\n{err}");
    // "Arcadia simulator: N accounts mirrored (M ACTIVE)", printed before it stops.
    let line = err
        .lines()
        .find(|l| l.contains("accounts mirrored"))
        .unwrap_or_else(|| panic!("no Arcadia summary:\n{err}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [mirrored, active] = numbers[..] else {
        panic!("{line}")
    };
    assert!(active >= 1, "{line}\n{err}");
    assert!(
        mirrored <= accepted,
        "{line}: more accounts than accepted shares"
    );
}
