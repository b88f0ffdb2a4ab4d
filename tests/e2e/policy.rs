//! The bridge binary with an auto-accept policy: requests created in the simulator end
//! accepted, rejected or pending as the rules say, each answered once across a restart; `ask`
//! rules go to a real HTTP decision webhook that verifies the Standard Webhooks signature, and a
//! webhook that times out leaves the request pending until a later walk gets an answer.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use espm_sim::CustomerSpec;
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_POLICY_TEST_PASSWORD";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the decision webhook saw: the `requestId` of every verified question, in order.
#[derive(Default)]
struct Seen {
    questions: Mutex<Vec<Value>>,
    bad_signatures: AtomicUsize,
    /// Questions about the slow customer answered so far (the first one sleeps past the
    /// bridge's timeout).
    slow_calls: AtomicUsize,
}

/// The decision webhook: verifies every signature with the `standardwebhooks` crate (not ours),
/// rejects `ASK-NO`, accepts `ASK-SLOW` but only after sleeping past the timeout the first time.
async fn decision_webhook() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/decide",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
                if wh.verify(&body, &headers).is_err() {
                    s.bad_signatures.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                let q: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                // webhook-id is the command id the answer will run under.
                if headers.get("webhook-id").and_then(|h| h.to_str().ok())
                    != q["commandId"].as_str()
                {
                    s.bad_signatures.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::BAD_REQUEST, String::new());
                }
                s.questions.lock().unwrap().push(q.clone());
                let number = q["request"]["customFields"]["Customer Number"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let answer = match number.as_str() {
                    "ASK-NO" => json!({"decision": "reject", "note": "Unknown account number."}),
                    "ASK-SLOW" => {
                        if s.slow_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        json!({"decision": "accept"})
                    }
                    _ => json!({"decision": "defer"}),
                };
                (StatusCode::OK, answer.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn policy_toml(dir: &Path, webhook: SocketAddr) -> String {
    format!(
        r#"
[accounts.policy]
[accounts.policy.webhook]
url = "http://{webhook}/decide"
secret_file = "{secret}"
timeout = "1s"

[[accounts.policy.rules]]
name = "known"
kinds = ["connection"]
decision = "accept"
note = "Welcome."
[[accounts.policy.rules.fields]]
name = "Customer Number"
in_file = "{lookup}"

[[accounts.policy.rules]]
name = "blank"
kinds = ["connection"]
decision = "reject"
note = "Please fill in your customer number."
[[accounts.policy.rules.fields]]
name = "Customer Number"
present = false

[[accounts.policy.rules]]
name = "ask billing"
decision = "ask"
[[accounts.policy.rules.fields]]
name = "Customer Number"
regex = '^ASK-'
"#,
        secret = dir.join("whsec").display(),
        lookup = dir.join("customers.txt").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_happen_once_each_across_a_restart_and_the_webhook_decides_asked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(dir.path().join("whsec"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("customers.txt"), "C-1\nC-2\n").unwrap();
    let (webhook, seen) = decision_webhook().await;
    let sim = start_sim("pol", "pw", 13).await;
    let ctl = SimControl::of(&sim);
    let customer = |name: &str| {
        let spec = CustomerSpec {
            username: Some(name.to_string()),
            ..CustomerSpec::default()
        };
        let ctl = ctl.clone();
        async move { ctl.create_customer(&spec).await }
    };
    let known = customer("known_co").await;
    let blank = customer("blank_co").await;
    let stranger = customer("stranger_co").await;
    let asked_no = customer("asked_no_co").await;
    let slow = customer("slow_co").await;
    ctl.request_connection(known, &[("Customer Number", "C-1")])
        .await;
    ctl.request_connection(blank, &[]).await;
    ctl.request_connection(stranger, &[("Customer Number", "Z-9")])
        .await;
    ctl.request_connection(asked_no, &[("Customer Number", "ASK-NO")])
        .await;
    ctl.request_connection(slow, &[("Customer Number", "ASK-SLOW")])
        .await;

    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}{}{}",
        journal_toml(dir.path()),
        account_toml("pol", &sim.base_url(), "pol", PASSWORD_ENV, "clear"),
        policy_toml(dir.path(), webhook),
        file_sink_toml("audit", &events_path),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let check = std::process::Command::new(bridge_bin())
        .args(["check-config", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let of_type = |ty: &str| -> Vec<Value> {
        read_events(&events_path)
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    };
    let resolved = |id: i64| -> Option<Value> {
        of_type("gov.energystar.pm.connection.resolved")
            .into_iter()
            .find(|e| e["data"]["accountId"] == id)
            .map(|e| e["data"]["resolution"].clone())
    };

    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        &logs,
        &[(PASSWORD_ENV, "pw")],
        None,
    );
    let all = eventually(Duration::from_secs(40), || {
        let done = [known, blank, asked_no, slow]
            .iter()
            .all(|id| resolved(*id).is_some());
        async move { done.then_some(()) }
    })
    .await;
    assert!(all.is_some(), "not all decided:\n{}", bridge.log());
    assert_eq!(resolved(known), Some(json!("accepted")));
    assert_eq!(resolved(blank), Some(json!("rejected")));
    assert_eq!(resolved(asked_no), Some(json!("rejected")));
    assert_eq!(resolved(slow), Some(json!("accepted")));
    assert_eq!(
        resolved(stranger),
        None,
        "no rule matches it: it stays pending"
    );
    assert!(bridge.terminate(Duration::from_secs(20)).is_some());

    // The slow customer was asked at least twice: the first question timed out (deferred),
    // a later walk asked again and got the answer.
    let questions_about = |id: i64| {
        seen.questions
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q["requestId"] == id)
            .count()
    };
    assert!(questions_about(slow) >= 2, "{}", questions_about(slow));
    assert_eq!(questions_about(asked_no), 1);
    assert_eq!(
        questions_about(known),
        0,
        "a rule's own decision never asks"
    );
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
    // Its decision came after the deferral: the first policy.decided about it is the webhook's.
    let slow_decided: Vec<Value> = of_type("gov.energystar.pm.policy.decided")
        .into_iter()
        .filter(|e| e["data"]["requestId"] == slow)
        .collect();
    assert_eq!(slow_decided.len(), 1);
    assert_eq!(slow_decided[0]["data"]["decidedBy"]["source"], "webhook");
    assert_eq!(
        slow_decided[0]["data"]["decidedBy"]["ruleName"],
        "ask billing"
    );

    // Restart with one more request waiting; the earlier ones must not be answered again.
    let late = customer("late_co").await;
    ctl.request_connection(late, &[("Customer Number", "C-2")])
        .await;
    let calls_before: BTreeMap<String, u64> = sim.state().calls();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        &logs,
        &[(PASSWORD_ENV, "pw")],
        None,
    );
    let late_done = eventually(Duration::from_secs(30), || {
        let r = resolved(late);
        async move { r }
    })
    .await;
    assert_eq!(late_done, Some(json!("accepted")), "{}", bridge.log());
    // A few more walks (every 2 s) for a second answer to show up, if there were one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(bridge.terminate(Duration::from_secs(20)).is_some());

    let calls = sim.state().calls();
    for id in [known, blank, asked_no, slow] {
        let key = format!("POST /connect/account/{id}");
        assert_eq!(calls.get(&key), Some(&1), "{key}: answered once");
        assert_eq!(calls.get(&key), calls_before.get(&key));
    }
    assert_eq!(
        calls.get(&format!("POST /connect/account/{late}")),
        Some(&1)
    );
    assert_eq!(
        calls.get(&format!("POST /connect/account/{stranger}")),
        None
    );
    assert_eq!(
        questions_about(asked_no),
        1,
        "not asked again after the restart"
    );

    // One decision event and one command result per answered request, tied by the command id.
    let decided = of_type("gov.energystar.pm.policy.decided");
    let completed = of_type("gov.energystar.pm.command.completed");
    for id in [known, blank, asked_no, slow, late] {
        let d: Vec<&Value> = decided
            .iter()
            .filter(|e| e["data"]["requestId"] == id)
            .collect();
        assert_eq!(d.len(), 1, "{id}: {d:?}");
        let command_id = d[0]["data"]["commandId"].as_str().unwrap();
        let c: Vec<&Value> = completed
            .iter()
            .filter(|e| e["causationid"] == command_id)
            .collect();
        assert_eq!(c.len(), 1, "{id}: {c:?}");
        assert_eq!(c[0]["data"]["origin"], "policy");
        let by = of_type("gov.energystar.pm.connection.resolved")
            .into_iter()
            .find(|e| e["data"]["accountId"] == id)
            .map(|e| e["data"]["answeredBy"]["commandId"].clone());
        assert_eq!(by, Some(json!(command_id)));
    }
    let blank_decision = decided
        .iter()
        .find(|e| e["data"]["requestId"] == blank)
        .unwrap();
    assert_eq!(
        blank_decision["data"]["note"],
        "Please fill in your customer number."
    );
    assert_eq!(blank_decision["data"]["decidedBy"]["ruleIndex"], 1);
    sim.shutdown().await;
}

/// `check-config` compiles the regexes, reads the lookup files and checks notes against PM's
/// limit, naming each problem by its key path; `run` refuses the same file.
#[test]
fn check_config_names_policy_problems_by_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{}{}
[accounts.policy]
[[accounts.policy.rules]]
decision = "ask"
[[accounts.policy.rules]]
decision = "reject"
note = "{long}"
[[accounts.policy.rules.fields]]
name = "Customer Number"
regex = "(unclosed"
[[accounts.policy.rules.fields]]
name = "Meter Number"
in_file = "{missing}"
{}"#,
        journal_toml(dir.path()),
        account_toml("pol", "http://127.0.0.1:9/ws", "pol", PASSWORD_ENV, "clear"),
        file_sink_toml("audit", &dir.path().join("events.jsonl")),
        long = "n".repeat(1001),
        missing = dir.path().join("missing.txt").display(),
    );
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, config).unwrap();
    for cmd in [&["check-config", "--config"][..], &["run", "--config"][..]] {
        let out = std::process::Command::new(bridge_bin())
            .args(cmd)
            .arg(&path)
            .env(PASSWORD_ENV, "pw")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {stderr}");
        for key in [
            "accounts[0].policy.rules[0].decision",
            "accounts[0].policy.rules[1].note",
            "accounts[0].policy.rules[1].fields[0].regex",
            "accounts[0].policy.rules[1].fields[1].in_file",
        ] {
            assert!(
                stderr.contains(key),
                "{cmd:?} does not name {key}: {stderr}"
            );
        }
    }
}
