//! Issue 8, items 8 and 9 end to end: one bridge per journal, inspection commands that never
//! write, and the cursor of a sink removed from the configuration.

mod support;

use std::process::Command;
use std::time::Duration;

use espm_journal::Journal;
use espm_testkit::events::events;
use support::*;

const PASSWORD_ENV: &str = "ESPM_ONEWRITER_TEST_PASSWORD";

fn config(dir: &std::path::Path, base_url: &str, sink: &str) -> std::path::PathBuf {
    let text = format!(
        "{}{}{}",
        journal_toml(dir),
        account_toml("acme", base_url, "acme", PASSWORD_ENV, "clear"),
        file_sink_toml(sink, &dir.join("events.jsonl")),
    );
    let path = dir.join(format!("bridge-{sink}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Start `run` and wait until it says it is running.
async fn start_running(cfg: &std::path::Path, logs: &std::path::Path, what: &str) -> Bridge {
    let bridge = Bridge::start(bridge_bin(), cfg, logs, &[(PASSWORD_ENV, "acme-pw")], None);
    let running = eventually(Duration::from_secs(30), || {
        let log = bridge.log();
        async move { log.contains("espm-bridge running").then_some(()) }
    })
    .await;
    assert!(running.is_some(), "{what}: {}", bridge.log());
    bridge
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(bridge_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run espm-bridge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bridge_on_one_journal_exits_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sim = start_sim("acme", "acme-pw", 11).await;
    let cfg = config(dir.path(), &sim.base_url(), "out");
    let mut first = start_running(&cfg, &logs, "first bridge").await;

    let mut second = Bridge::start(
        bridge_bin(),
        &cfg,
        &logs,
        &[(PASSWORD_ENV, "acme-pw")],
        None,
    );
    let status = second
        .wait_exit(Duration::from_secs(30))
        .expect("the second bridge must exit on its own");
    assert_eq!(status.code(), Some(73), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains(&format!("pid {}", first.pid())),
        "the holder is named: {log}"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first bridge keeps running"
    );
    assert_eq!(
        first
            .terminate(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );

    // The lock goes with its holder, even one killed with SIGKILL.
    let mut third = start_running(&cfg, &logs, "third bridge").await;
    third.kill9();
    let mut fourth = start_running(&cfg, &logs, "after a SIGKILL").await;
    fourth.terminate(Duration::from_secs(30));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_sink_is_reported_and_forget_sink_releases_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let journal_path = dir.path().join("journal.db");
    {
        // An earlier configuration delivered to "retired", which never caught up.
        let j = Journal::open(&journal_path).unwrap();
        j.enqueue(&events(&["a", "b", "c"])).unwrap();
        j.register_sink("retired").unwrap();
    }
    let sim = start_sim("acme", "acme-pw", 12).await;
    let cfg = config(dir.path(), &sim.base_url(), "out");
    let port = free_port();
    let mut bridge = Bridge::start(
        bridge_bin(),
        &cfg,
        &logs,
        &[(PASSWORD_ENV, "acme-pw")],
        Some(port),
    );
    let metrics = eventually(Duration::from_secs(30), || async move {
        let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find(|l| l.starts_with("espm_bridge_orphan_sink_cursors "))
            .map(str::to_string)
    })
    .await
    .expect("the orphan gauge is exported");
    assert_eq!(metrics.trim(), "espm_bridge_orphan_sink_cursors 1");
    let warned = bridge
        .log_records()
        .iter()
        .any(|r| r["sink"] == "retired" && r["level"] == "WARN");
    assert!(warned, "a warning names the orphan: {}", bridge.log());
    // Wait until "out" passed the three events, then stop.
    let delivered = eventually(Duration::from_secs(30), || {
        let p = dir.path().join("events.jsonl");
        async move { (read_events(&p).len() >= 3).then_some(()) }
    })
    .await;
    assert!(delivered.is_some(), "{}", bridge.log());
    assert_eq!(
        bridge
            .terminate(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );

    let cfg_s = cfg.to_str().unwrap();
    let depth = cli(&["journal", "--config", cfg_s, "depth", "--output", "json"]);
    assert!(depth.status.success(), "{depth:?}");
    let v: serde_json::Value = serde_json::from_slice(&depth.stdout).unwrap();
    let retired = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "retired")
        .expect("the orphan is listed");
    assert_eq!(retired["configured"], false);
    assert_eq!(retired["pending"], 3);

    // Compaction is frozen by the orphan...
    let compact = cli(&["journal", "--config", cfg_s, "compact", "--retention", "0s"]);
    assert!(compact.status.success(), "{compact:?}");
    assert_eq!(
        Journal::open_read_only(&journal_path)
            .unwrap()
            .outbox_depth("retired")
            .unwrap()
            .pending,
        3
    );

    // A configured sink cannot be forgotten; an unknown one exits 1.
    let refused = cli(&["journal", "--config", cfg_s, "forget-sink", "out"]);
    assert!(!refused.status.success(), "{refused:?}");
    let unknown = cli(&["journal", "--config", cfg_s, "forget-sink", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");

    let forget = cli(&["journal", "--config", cfg_s, "forget-sink", "retired"]);
    assert!(forget.status.success(), "{forget:?}");
    let compact = cli(&["journal", "--config", cfg_s, "compact", "--retention", "0s"]);
    assert!(compact.status.success(), "{compact:?}");
    let j = Journal::open_read_only(&journal_path).unwrap();
    assert!(j.sinks().unwrap().iter().all(|s| s.name != "retired"));
    let out_cursor = j
        .sinks()
        .unwrap()
        .iter()
        .find(|s| s.name == "out")
        .unwrap()
        .cursor;
    assert!(
        j.read_outbox("out", 0, 100)
            .unwrap()
            .iter()
            .all(|r| r.seq > out_cursor),
        "what every sink passed is compacted once the orphan is gone"
    );
    sim.shutdown().await;
}

/// An operator inspects a journal on a read-only volume (a snapshot, a copy mounted read-only):
/// the inspection commands must work there, so they cannot write anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_commands_work_on_a_read_only_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED inspection_commands_work_on_a_read_only_volume: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("journal.db");
    {
        let j = Journal::open(&path).unwrap();
        j.enqueue(&events(&["a", "b"])).unwrap();
        j.register_sink("out").unwrap();
    }
    let ro = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ro.success());
    let p = path.to_str().unwrap();
    let depth = cli(&["journal", "--path", p, "depth", "--output", "json"]);
    assert!(depth.status.success(), "{depth:?}");
    let v: serde_json::Value = serde_json::from_slice(&depth.stdout).unwrap();
    assert_eq!(v["sinks"][0]["pending"], 2, "{v}");
    let q = cli(&["journal", "--path", p, "quarantine", "--output", "json"]);
    assert!(q.status.success(), "{q:?}");
    let dlq = cli(&["dlq", "--path", p, "list", "--output", "json"]);
    assert!(dlq.status.success(), "{dlq:?}");
    // A command that writes says why it cannot.
    let compact = cli(&["journal", "--path", p, "compact"]);
    assert!(!compact.status.success());
}
