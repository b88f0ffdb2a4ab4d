//! Operability end to end: the binary's `/metrics` carries the documented series, `/healthz`
//! and `/readyz` answer, and SIGTERM in the middle of deliveries exits cleanly with nothing lost
//! after a restart.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use espm_sim::{FaultConfig, FaultKind, SimServer};
use serde_json::{json, Value};
use support::*;

const PASSWORD_ENV: &str = "ESPM_OPS_TEST_PASSWORD";
const SECRET_ENV: &str = "ESPM_OPS_TEST_WHSEC";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn sim() -> SimServer {
    start_sim("ops", "ops-pw", 3).await
}

/// A webhook receiver that takes `delay` per request and records webhook-ids and bodies.
async fn receiver(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<(String, Value)>>>) {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                tokio::time::sleep(delay).await;
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                s.lock().unwrap().push((id, v));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// A webhook receiver whose first `fail_first` requests get a 500; returns how many it accepted.
async fn flaky_receiver(fail_first: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (c, a) = (calls.clone(), accepted.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (c, a) = (c.clone(), a.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    a.fetch_add(1, Ordering::SeqCst);
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, accepted)
}

async fn bulk(ctl: &SimControl, count: usize) {
    ctl.notifications(
        count,
        &["UNSHARE", "SHAREUPDATE", "DISCONNECT", "TRANSFERPROPERTY"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let ctl = SimControl::of(&sim);
    // One 500 (a PM retry) and one truncated body (a quarantine) on the first notification reads.
    ctl.set_faults(&FaultConfig {
        script: vec![FaultKind::Http500, FaultKind::Truncated],
        paths: vec!["/notification/list".into()],
        ..FaultConfig::default()
    })
    .await;
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml(
            "ops",
            &sim.base_url(),
            "ops",
            PASSWORD_ENV,
            "peek-then-clear"
        ),
        events_path.display()
    );
    // A webhook that fails its first request: the failure must show up in the metrics.
    let (hook, _) = flaky_receiver(1).await;
    let config = format!(
        "{config}\n[[sinks]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"http://{hook}/hook\"\nsecret_env = \"{SECRET_ENV}\"\nretry = {{ schedule = [\"10ms\", \"50ms\", \"50ms\"] }}\n"
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "ops-pw"), (SECRET_ENV, SECRET)],
        Some(port),
    );
    bulk(&ctl, 25).await;
    let delivered = eventually(Duration::from_secs(60), || {
        let p = events_path.clone();
        async move {
            (read_events(&p)
                .iter()
                .filter(|e| e["data"]["notificationId"].is_i64())
                .count()
                >= 25)
                .then_some(())
        }
    })
    .await;
    assert!(
        delivered.is_some(),
        "events never reached the file sink:\n{}",
        bridge.log()
    );

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = eventually(Duration::from_secs(20), || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    assert!(ready.is_some(), "/readyz never became ready");

    // Gauges refresh on their own schedule: wait until every series has appeared.
    let wanted = [
        "espm_bridge_polls_total{",
        "espm_bridge_sink_attempt_failures_total{sink=\"hook\"",
        "espm_bridge_build_info{",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "espm_bridge_sink_published_total{sink=\"hook\"}",
        "espm_bridge_notifications_drained_total{account=\"ops\"}",
        "espm_bridge_quarantined_bodies_total{account=\"ops\",kind=\"stored\"}",
        "espm_bridge_events_emitted_total{",
        "espm_bridge_sink_published_total{sink=\"audit\"}",
        "espm_bridge_delivery_latency_seconds_bucket{",
        "espm_bridge_outbox_depth{sink=\"audit\"}",
        "espm_bridge_outbox_oldest_age_seconds{sink=\"audit\"}",
        "espm_bridge_dlq_size{sink=\"audit\"}",
        "espm_bridge_pm_retries_total{",
        "espm_bridge_last_poll_timestamp_seconds{account=\"ops\"}",
    ];
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        last = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| last.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let missing: Vec<_> = wanted.iter().filter(|w| !last.contains(*w)).collect();
    assert!(missing.is_empty(), "missing series {missing:?} in:\n{last}");
    let drained: f64 = last
        .lines()
        .find(|l| l.starts_with("espm_bridge_notifications_drained_total{account=\"ops\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(drained >= 25.0, "drained counter {drained}");
    assert!(
        last.contains("outcome=\"ok\""),
        "no successful poll counted"
    );
    let status = bridge.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit: {status:?}\n{}",
        bridge.log()
    );

    // The operator's view of the same journal.
    let journal = |args: &[&str]| {
        let out = std::process::Command::new(bridge_bin())
            .arg("journal")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, depth) = journal(&["depth"]);
    assert!(ok && depth.contains("audit"), "{depth}");
    let (ok, quarantine) = journal(&["quarantine"]);
    assert!(
        ok && quarantine.contains("notification/list"),
        "the truncated body is listed: {quarantine}"
    );
    let raw_id = quarantine
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    // The truncated tail is quarantined on its own (the complete notifications went on).
    let (ok, body) = journal(&["quarantine", "--show", &raw_id]);
    assert!(ok, "{body}");
    let first = read_events(&events_path)
        .into_iter()
        .find_map(|e| e["data"]["notificationId"].as_i64())
        .unwrap();
    let (ok, history) = journal(&["history", &first.to_string()]);
    assert!(
        ok && history.contains("audit") && history.contains("Delivered"),
        "{history}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_delivery_exits_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let ctl = SimControl::of(&sim);
    let (addr, seen) = receiver(Duration::from_millis(150)).await;
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"webhook\"\nname = \"slowhook\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"{SECRET_ENV}\"\nmax_in_flight = 1\ntimeout = \"5s\"\n",
        journal_toml(dir.path()),
        account_toml("ops", &sim.base_url(), "ops", PASSWORD_ENV, "clear"),
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let env = [(PASSWORD_ENV, "ops-pw"), (SECRET_ENV, SECRET)];
    bulk(&ctl, 60).await;
    // A short grace period: SIGTERM must not wait for the whole backlog.
    let mut bridge =
        Bridge::start_with_grace(bridge_bin(), &config_path, dir.path(), &env, None, "1s");
    // Wait until delivery is under way, then SIGTERM in the middle of it.
    let started = eventually(Duration::from_secs(30), || {
        let n = seen.lock().unwrap().len();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    assert!(started.is_some(), "no webhook arrived:\n{}", bridge.log());
    let status = bridge.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit on SIGTERM: {status:?}\n{}",
        bridge.log()
    );
    let at_stop = seen.lock().unwrap().len();
    assert!(
        at_stop < 60,
        "everything was delivered before SIGTERM landed ({at_stop}); the test proves nothing"
    );
    assert!(bridge.log().contains("stopped cleanly"), "{}", bridge.log());

    // Restart: the rest comes out of the outbox, nothing is lost.
    let mut again = Bridge::start(bridge_bin(), &config_path, dir.path(), &env, None);
    let all = eventually(Duration::from_secs(60), || {
        let ids: BTreeSet<i64> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, v)| v["data"]["notificationId"].as_i64())
            .collect();
        async move { (ids.len() >= 60).then_some(ids) }
    })
    .await;
    assert!(
        all.is_some(),
        "after restart only some notifications arrived:\n{}",
        again.log()
    );
    // Every delivery of one event carries the same webhook-id (the event id).
    for (hook_id, body) in seen.lock().unwrap().iter() {
        assert_eq!(hook_id, body["id"].as_str().unwrap());
    }
    again.terminate(Duration::from_secs(20));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_provider_accounts_poll_side_by_side_with_their_own_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let live_like = sim().await;
    let other = start_sim("second", "second-pw", 4).await;
    let events_path = dir.path().join("events.jsonl");
    let config = format!(
        "{}{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n",
        journal_toml(dir.path()),
        account_toml("first", &live_like.base_url(), "ops", PASSWORD_ENV, "clear"),
        account_toml(
            "second",
            &other.base_url(),
            "second",
            "ESPM_OPS_SECOND_PASSWORD",
            "peek-then-clear"
        ),
        events_path.display()
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[
            (PASSWORD_ENV, "ops-pw"),
            ("ESPM_OPS_SECOND_PASSWORD", "second-pw"),
        ],
        None,
    );
    bulk(&SimControl::of(&live_like), 7).await;
    bulk(&SimControl::of(&other), 5).await;
    let sources = eventually(Duration::from_secs(30), || {
        let p = events_path.clone();
        async move {
            let ev = read_events(&p);
            let count = |src: &str| {
                ev.iter()
                    .filter(|e| e["source"] == src && e["data"]["notificationId"].is_i64())
                    .count()
            };
            (count("urn:espm:sim:first") == 7 && count("urn:espm:sim:second") == 5).then_some(())
        }
    })
    .await;
    assert!(
        sources.is_some(),
        "{}\n{:?}",
        bridge.log(),
        read_events(&events_path).len()
    );
    bridge.terminate(Duration::from_secs(20));
    live_like.shutdown().await;
    other.shutdown().await;
}

/// PM down and a broker down: the bridge stays ready (`helm install --wait` must not hang on a PM
/// outage), and `/status` and the metrics say what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm_and_sink_outages_show_in_status_not_in_readiness() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on these ports: PM and NATS are "down".
    let pm_port = free_port();
    let nats_port = free_port();
    let config = format!(
        "{}{}\n[[sinks]]\ntype = \"file\"\nname = \"audit\"\npath = \"{}\"\n\n[[sinks]]\ntype = \"nats\"\nname = \"bus\"\nurl = \"nats://127.0.0.1:{nats_port}\"\nconnect_timeout = \"500ms\"\n",
        journal_toml(dir.path()),
        account_toml(
            "down",
            &format!("http://127.0.0.1:{pm_port}/ws"),
            "ops",
            PASSWORD_ENV,
            "clear"
        ),
        dir.path().join("events.jsonl").display()
    );
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let bridge = Bridge::start(
        bridge_bin(),
        &config_path,
        dir.path(),
        &[(PASSWORD_ENV, "ops-pw")],
        Some(port),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let status = eventually(Duration::from_secs(30), || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let s: Value = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let account_down = s["accounts"][0]["healthy"] == json!(false)
                && s["accounts"][0]["last_error"].is_string();
            let bus = s["sinks"].as_array()?.iter().find(|x| x["name"] == "bus")?;
            let bus_down = bus["healthy"] == json!(false) && bus["last_error"].is_string();
            (account_down && bus_down).then_some(s)
        }
    })
    .await;
    let status =
        status.unwrap_or_else(|| panic!("/status never showed the outages:\n{}", bridge.log()));
    assert_eq!(status["ready"], json!(true), "{status}");
    assert_eq!(status["healthy"], json!(false), "{status}");
    let audit = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "audit")
        .unwrap();
    assert_eq!(audit["kind"], "file", "{status}");
    assert_eq!(audit["pending"], json!(0), "{status}");

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "PM or NATS down must not make the bridge unready"
    );

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "espm_bridge_account_up{account=\"down\"} 0",
        "espm_bridge_sink_up{sink=\"bus\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}
