//! `espm-bridge pm accept|reject`: answers go to PM, and the `resolved` event that follows says
//! who answered.

mod support;

use std::time::Duration;

use espm_sim::CustomerSpec;
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_ANSWERS_TEST_PASSWORD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_through_the_bridge_show_up_in_resolved_events() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("ans", "pw", 9).await;
    let ctl = SimControl::of(&sim);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = ctl
            .create_customer(&CustomerSpec {
                last_name: Some(format!("N{i}")),
                ..CustomerSpec::default()
            })
            .await;
        ctl.request_connection(id, &[]).await;
        ids.push(id);
    }
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml("ans", &sim.base_url(), "ans", PASSWORD_ENV, "clear"),
        events_path.display()
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "pw")],
        None,
    );
    let of_type = |ty: &str| -> Vec<Value> {
        read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    };
    let requested = eventually(Duration::from_secs(30), || {
        let n = of_type("gov.energystar.pm.connection.requested").len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    assert!(requested.is_some(), "{}", bridge.log());

    let pm = |args: &[String]| {
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
        String::from_utf8(out.stdout).unwrap()
    };
    pm(&[
        "accept".into(),
        "connection".into(),
        ids[0].to_string(),
        "--note".into(),
        "Welcome".into(),
    ]);
    pm(&["reject".into(), "connection".into(), ids[1].to_string()]);
    // Answering again is not an error: the request is gone either way.
    assert!(
        pm(&["accept".into(), "connection".into(), ids[0].to_string()]).contains("nothing to do")
    );
    // The third one is withdrawn by the customer's side: it disconnects before we answer.
    // (The simulator answers 409 here: a customer that is not connected cannot disconnect, and
    // its request stays pending. The assertions below only concern the first two.)
    ctl.request(
        reqwest::Method::POST,
        "/disconnect",
        Some(&json!({"accountId": ids[2]})),
    )
    .await;

    let resolved = eventually(Duration::from_secs(30), || {
        let r = of_type("gov.energystar.pm.connection.resolved");
        async move { (r.len() >= 2).then_some(r) }
    })
    .await
    .unwrap_or_else(|| panic!("no resolved events:\n{}", bridge.log()));
    let resolution = |id: i64| {
        resolved
            .iter()
            .find(|e| e["data"]["accountId"] == id)
            .map(|e| e["data"]["resolution"].clone())
    };
    assert_eq!(resolution(ids[0]), Some(json!("accepted")));
    assert_eq!(resolution(ids[1]), Some(json!("rejected")));
    // Answered through the CLI's command path: the event names the command and `cli`.
    for id in &ids[..2] {
        let by = resolved
            .iter()
            .find(|e| e["data"]["accountId"] == *id)
            .map(|e| e["data"]["answeredBy"].clone());
        assert_eq!(
            by.as_ref().map(|b| b["requester"].clone()),
            Some(json!("cli"))
        );
        assert!(by.is_some_and(|b| b["commandId"].is_string()));
    }
    bridge.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}

/// `pm create-customer` from flags alone, and from a file with flags laid over it: PM gets the
/// account (read back through `pm customer`), the password never shows, and missing flags are
/// named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_customer_from_flags_or_a_file_template() {
    const NEW_PASSWORD_ENV: &str = "ESPM_NEW_CUSTOMER_PASSWORD";
    const NEW_PASSWORD: &str = "S3cret-new-customer-pw";
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("cc", "pw", 11).await;
    let config = format!(
        "{}{}{}",
        journal_toml(dir.path()),
        account_toml("cc", &sim.base_url(), "cc", PASSWORD_ENV, "clear"),
        file_sink_toml("audit", &dir.path().join("events.jsonl")),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let pm = |args: &[&str]| {
        std::process::Command::new(bridge_bin())
            .arg("pm")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env(PASSWORD_ENV, "pw")
            .env(NEW_PASSWORD_ENV, NEW_PASSWORD)
            .output()
            .unwrap()
    };
    let created_id = |out: &std::process::Output| -> i64 {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(!stdout.contains(NEW_PASSWORD) && !stderr.contains(NEW_PASSWORD));
        let view: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(view["state"], "completed", "{view}");
        view["accountId"]
            .as_i64()
            .unwrap_or_else(|| panic!("no accountId: {view}"))
    };
    let customer = |id: i64| -> Value {
        let out = pm(&["customer", &id.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Flags alone.
    let flags = [
        "create-customer",
        "--username",
        "acme_fm",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--email",
        "ada@example.com",
        "--phone",
        "555-0100",
        "--job-title",
        "Facility Manager",
        "--address1",
        "1 Main St",
        "--city",
        "Arlington",
        "--state",
        "VA",
        "--postal-code",
        "22201",
        "--organization",
        "Acme FM",
        "--password-env",
        NEW_PASSWORD_ENV,
    ];
    let id = created_id(&pm(&flags));
    let c = customer(id);
    assert_eq!(c["username"], "acme_fm", "{c}");
    assert_eq!(c["organization"], "Acme FM", "{c}");
    assert_eq!(c["lastName"], "Lovelace", "{c}");
    assert_eq!(c["email"], "ada@example.com", "{c}");

    // A file as a template: the flags win over its values.
    let template = json!({
        "username": "template_user",
        "password": "from-the-file-1",
        "webserviceUser": false,
        "searchable": false,
        "contact": {
            "firstName": "Grace", "lastName": "Hopper",
            "address": {"address1": "2 Side St", "city": "Toronto", "state": "ON",
                        "postalCode": "M5V", "country": "CA"},
            "email": "grace@example.com", "jobTitle": "Admiral", "phone": "555-0199"
        },
        "organization": {"name": "Navy FM", "primaryBusiness": "Other",
                         "energyStarPartner": false}
    });
    let file = dir.path().join("customer.json");
    std::fs::write(&file, template.to_string()).unwrap();
    let out = pm(&[
        "create-customer",
        "--file",
        file.to_str().unwrap(),
        "--username",
        "hopper_fm",
        "--organization",
        "Hopper FM",
    ]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("from-the-file-1"));
    let id2 = created_id(&out);
    assert_ne!(id, id2);
    let c = customer(id2);
    assert_eq!(c["username"], "hopper_fm", "{c}");
    assert_eq!(c["organization"], "Hopper FM", "{c}");
    assert_eq!(c["lastName"], "Hopper", "{c}");

    // Without --file, the required flags that are missing are named, and PM is not called.
    let before = SimControl::of(&sim).calls().await;
    let out = pm(&[
        "create-customer",
        "--username",
        "x_fm",
        "--password-env",
        NEW_PASSWORD_ENV,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for flag in ["--first-name", "--email", "--organization"] {
        assert!(stderr.contains(flag), "{stderr}");
    }
    let after = SimControl::of(&sim).calls().await;
    assert_eq!(
        before.get("POST /customer"),
        after.get("POST /customer"),
        "{after:?}"
    );
    sim.shutdown().await;
}
