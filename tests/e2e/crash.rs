//! The crash test: the bridge runs as a child process against the simulator, with faults on
//! (429 with Retry-After, 500, the 502 HTML page, truncated bodies, dropped connections,
//! latency), while notifications keep arriving through the control API, also while the bridge is
//! down. It is SIGKILLed at random moments and in the moments after PM handed it a large body,
//! and restarted, in both drain modes. The verdict comes from the simulator's ledger and the
//! journal, per the README's delivery guarantees:
//!
//! - every notification in a response the ledger shows delivered intact (a `clear=true` read, or
//!   a peek) reaches the file sink, with one stable event id;
//! - exempt, as the README says, are notifications whose only copies were in responses lost in
//!   transit (ledger `delivery` = lost: a dropped connection, a truncated body), and those whose
//!   only copy was in the last response a killed process received, if that response never made
//!   it into the journal (the process died between receiving and journalling its raw bytes; the
//!   poller makes one PM notification call at a time, so only a process's last read can be in
//!   that window). Exempt notifications may still arrive;
//! - every notification of a response the journal holds reaches the sink (a journalled body
//!   left uncommitted by a crash is committed at the next start), and such recoveries happened.
//!
//! The disk-full cases run the journal on a small tmpfs (they need root to mount it, as CI has;
//! elsewhere they skip with a message).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use espm_journal::{Journal, RawId};
use espm_sim::{Delivery, FaultConfig, Ledger};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

/// SIGKILLs per drain mode.
const KILLS: usize = 16;
const PASSWORD_ENV: &str = "ESPM_CRASH_TEST_PASSWORD";
const PASSWORD: &str = "crash-pw";
const RECOVERED: &str =
    "recovered a journalled body left unprocessed by a crash or a failed commit";
const TYPES: [&str; 5] = [
    "UNSHARE",
    "SHAREUPDATE",
    "DISCONNECT",
    "TRANSFERPROPERTY",
    "SOMETHINGNEW",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_delivered_notification_in_clear_mode() {
    crash_run("clear").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_delivered_notification_in_peek_then_clear_mode() {
    crash_run("peek-then-clear").await;
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// One bridge process's life: from just before its spawn to just after its SIGKILL returned.
#[derive(Debug, Clone, Copy)]
struct Life {
    started: DateTime<Utc>,
    killed: Option<DateTime<Utc>>,
}

fn crash_config(dir: &Path, sim: &espm_sim::SimServer, mode: &str) -> (PathBuf, PathBuf) {
    let events_path = dir.join("events.jsonl");
    // The simulator's SHAREUPDATEs name properties it does not have: their custom-field
    // re-reads all fail, one PM call at a time. A short budget keeps them from slowing every
    // drain (and so the reads the faults land on); the events still go out, flagged.
    let config = format!(
        "{}{}customer_lookup_timeout = \"100ms\"\n{}",
        journal_toml(dir),
        account_toml("crashy", &sim.base_url(), "crash", PASSWORD_ENV, mode),
        file_sink_toml("audit", &events_path),
    );
    let config_path = dir.join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    (config_path, events_path)
}

/// Creates a few notifications every few tens of milliseconds until `stop`.
fn feeder(ctl: SimControl, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut created = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = rng.gen_range(1..=6);
            ctl.notifications(n, &TYPES).await;
            created += n;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..60))).await;
        }
        created
    })
}

async fn crash_run(mode: &str) {
    let seed = seed();
    eprintln!("crash test ({mode}) seed: {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sim = start_sim("crash", PASSWORD, seed).await;
    let ctl = SimControl::of(&sim);
    ctl.set_faults(&FaultConfig {
        http429: 0.02,
        retry_after_secs: 1,
        http500: 0.02,
        http502: 0.02,
        truncated: 0.04,
        drop: 0.04,
        latency_ms: 5,
        ..FaultConfig::default()
    })
    .await;
    let (config_path, events_path) = crash_config(dir.path(), &sim, mode);
    let env = [(PASSWORD_ENV, PASSWORD)];

    let stop = Arc::new(AtomicBool::new(false));
    let feed = feeder(ctl.clone(), seed ^ 0x5eed, stop.clone());
    let mut lives = Vec::new();
    for round in 0..KILLS {
        let started = Utc::now();
        let mut bridge = Bridge::start(bridge_bin(), &config_path, &logs, &env, None);
        if round % 4 == 1 {
            // A large body: kill the moment the journal holds it uncommitted (a timing-free way
            // to land in that window, however fast the machine).
            let burst = rng.gen_range(3000..=6000);
            ctl.notifications(burst, &TYPES).await;
            let journal = dir.path().join("journal.db");
            let caught = tokio::task::spawn_blocking(move || {
                wait_until_uncommitted(&journal, Duration::from_secs(60))
            })
            .await
            .unwrap();
            if !caught {
                eprintln!("{mode} round {round}: never saw the burst journalled uncommitted");
            }
        } else if round % 2 == 1 {
            // A large body: kill in the moments after PM handed it out, while it is being
            // received, journalled or committed.
            let before = ctl.ledger_summary().await.handed_out;
            let burst = rng.gen_range(3000..=6000);
            ctl.notifications(burst, &TYPES).await;
            let handed =
                eventually_every(Duration::from_secs(60), Duration::from_millis(5), || {
                    let ctl = ctl.clone();
                    async move {
                        (ctl.ledger_summary().await.handed_out >= before + burst).then_some(())
                    }
                })
                .await;
            assert!(
                handed.is_some(),
                "{mode} round {round}: PM never handed out the burst; log:\n{}",
                bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..25))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        }
        bridge.kill9();
        lives.push(Life {
            started,
            killed: Some(Utc::now()),
        });
    }
    stop.store(true, Ordering::Relaxed);
    let fed = feed.await.unwrap();

    // What the killed processes journalled (read before the next start, so nothing moves).
    let journalled = journalled_notifications(&dir.path().join("journal.db"));

    // Recovery run without faults: everything still in PM is handed out intact.
    ctl.clear_faults().await;
    lives.push(Life {
        started: Utc::now(),
        killed: None,
    });
    let mut bridge = Bridge::start(bridge_bin(), &config_path, &logs, &env, None);
    let settled = eventually(Duration::from_secs(120), || {
        let ctl = ctl.clone();
        async move {
            let s = ctl.ledger_summary().await;
            (s.pending == 0 && s.in_flight == 0).then_some(())
        }
    })
    .await;
    assert!(
        settled.is_some(),
        "{mode}: the recovery run did not drain PM; log:\n{}",
        bridge.log()
    );
    let ledger = ctl.ledger().await;
    let verdict = Verdict::of(&ledger, &lives, &journalled);
    let complete = eventually(Duration::from_secs(120), || {
        let seen = notification_ids(&read_events(&events_path));
        let done = verdict.required.is_subset(&seen);
        async move { done.then_some(()) }
    })
    .await;
    let status = bridge.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{mode}: the bridge did not exit cleanly on SIGTERM: {status:?}"
    );

    let events = read_events(&events_path);
    let mut ids_by_notification: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for e in &events {
        if let Some(n) = e["data"]["notificationId"].as_i64() {
            ids_by_notification
                .entry(n)
                .or_default()
                .insert(e["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let missing: Vec<i64> = verdict
        .required
        .iter()
        .copied()
        .filter(|id| !ids_by_notification.contains_key(id))
        .collect();
    let summary = ctl.ledger_summary().await;
    let recoveries = count_logged(&logs, RECOVERED);
    let exempt_missing = |set: &BTreeSet<i64>| {
        set.iter()
            .filter(|id| !ids_by_notification.contains_key(id))
            .count()
    };
    eprintln!(
        "crash test ({mode}): {} notifications ({fed} fed continuously), {KILLS} SIGKILLs, \
         {recoveries} recovered bodies, {} required, {} only in responses lost in transit \
         ({} of them missing), {} only in a killed process's unjournalled last response \
         ({} missing), {} only in an intact clear=true response, {} duplicate deliveries; \
         ledger {summary:?}",
        ledger.notifications.len(),
        verdict.required.len(),
        verdict.lost_in_transit.len(),
        exempt_missing(&verdict.lost_in_transit),
        verdict.cut_by_kill.len(),
        exempt_missing(&verdict.cut_by_kill),
        verdict.clear_only,
        events
            .iter()
            .filter(|e| e["data"]["notificationId"].is_i64())
            .count()
            - ids_by_notification.len(),
    );
    assert!(
        complete.is_some() && missing.is_empty(),
        "{mode}: {} of {} notifications delivered intact or journalled never reached the file \
         sink, e.g. {:?} (seed {seed})",
        missing.len(),
        verdict.required.len(),
        &missing[..missing.len().min(10)]
    );
    let unstable: Vec<_> = ids_by_notification
        .iter()
        .filter(|(_, ids)| ids.len() != 1)
        .collect();
    assert!(
        unstable.is_empty(),
        "{mode}: notifications with more than one event id: {unstable:?}"
    );
    assert!(
        ledger.notifications.len() >= 2000,
        "{mode}: only {} notifications created",
        ledger.notifications.len()
    );
    assert!(
        summary.faulted_reads > 0,
        "{mode}: no fault was injected: the test did not test faults"
    );
    assert!(
        recoveries > 0,
        "{mode}: no kill landed between journalling a body and committing it (no \"{RECOVERED}\" \
         in {KILLS} runs): the test did not test recovery (seed {seed})"
    );
    // In peek-then-clear mode a notification is in a clear body alone only when it arrived
    // between the peek and the clear: a matter of timing, not required there.
    assert!(
        mode != "clear" || verdict.clear_only > 0,
        "{mode}: no notification depended on a clear=true response alone: the test did not \
         test clear bodies (seed {seed})"
    );
    sim.shutdown().await;
}

/// What the ledger and the journal require of the sink.
struct Verdict {
    /// Notifications that must reach the sink.
    required: BTreeSet<i64>,
    /// Not required: every response that held them was lost in transit.
    lost_in_transit: BTreeSet<i64>,
    /// Not required: the only intact response that held them was the last one a killed process
    /// received, and the journal does not have it.
    cut_by_kill: BTreeSet<i64>,
    /// Required notifications whose only intact response was a `clear=true` read.
    clear_only: usize,
}

impl Verdict {
    fn of(ledger: &Ledger, lives: &[Life], journalled: &BTreeSet<i64>) -> Verdict {
        // The life each read happened in (None: no process was alive, its sender was killed).
        let life_of = |at: &str| -> Option<usize> {
            let at = DateTime::parse_from_rfc3339(at)
                .unwrap_or_else(|e| panic!("ledger time {at}: {e}"))
                .with_timezone(&Utc);
            lives
                .iter()
                .position(|l| l.started <= at && l.killed.is_none_or(|k| at <= k))
        };
        let mut last_read: BTreeMap<usize, u64> = BTreeMap::new();
        let lives_of: Vec<Option<usize>> = ledger.reads.iter().map(|r| life_of(&r.at)).collect();
        for (r, life) in ledger.reads.iter().zip(&lives_of) {
            if let Some(l) = life {
                let last = last_read.entry(*l).or_default();
                *last = (*last).max(r.read_id);
            }
        }
        // Per notification: (in an intact peek, in an intact clear, in an intact response cut
        // by a kill).
        let mut seen: BTreeMap<i64, (bool, bool, bool)> = BTreeMap::new();
        for (r, life) in ledger.reads.iter().zip(&lives_of) {
            if r.delivery != Delivery::Delivered {
                continue;
            }
            let cut = match life {
                None => true,
                Some(l) => lives[*l].killed.is_some() && last_read.get(l) == Some(&r.read_id),
            };
            for id in &r.notification_ids {
                let s = seen.entry(*id).or_default();
                if cut {
                    s.2 = true;
                } else if r.clear {
                    s.1 = true;
                } else {
                    s.0 = true;
                }
            }
        }
        let mut v = Verdict {
            required: BTreeSet::new(),
            lost_in_transit: BTreeSet::new(),
            cut_by_kill: BTreeSet::new(),
            clear_only: 0,
        };
        for n in &ledger.notifications {
            let (peek, clear, cut) = seen.get(&n.id).copied().unwrap_or_default();
            if peek || clear || journalled.contains(&n.id) {
                v.required.insert(n.id);
                if clear && !peek {
                    v.clear_only += 1;
                }
            } else if cut {
                v.cut_by_kill.insert(n.id);
            } else {
                v.lost_in_transit.insert(n.id);
            }
        }
        v
    }
}

/// Watch the journal (read-only, as a second process would) until it holds a notification list
/// that is journalled but not yet committed, or `timeout` passes. True when seen.
fn wait_until_uncommitted(journal: &Path, timeout: Duration) -> bool {
    let scope = espm_journal::Scope {
        environment: "sim".into(),
        account: "crashy".into(),
    };
    let deadline = std::time::Instant::now() + timeout;
    let mut j = None;
    while std::time::Instant::now() < deadline {
        if j.is_none() {
            j = Journal::open_read_only(journal).ok();
        }
        if let Some(j) = &j {
            // Only a notification list counts: an interrupted pending-list page is set aside,
            // not recovered.
            let ids = j.unprocessed_raw_ids(&scope).unwrap_or_default();
            if ids.into_iter().any(|id| {
                j.stored_body(id)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.endpoint.starts_with("notification/list"))
            }) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// Every notification id in a notification list the journal holds, complete or cut off
/// (read-only).
fn journalled_notifications(journal: &Path) -> BTreeSet<i64> {
    let j = Journal::open_read_only(journal)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", journal.display()));
    let mut ids = BTreeSet::new();
    // Raw ids are a rowid sequence; nothing is compacted within the test (one day of retention).
    let (mut id, mut misses) = (1, 0);
    while misses < 100 {
        match j.raw_info(RawId(id)).unwrap() {
            Some(info) if info.endpoint.starts_with("notification/list") => {
                misses = 0;
                // Every complete notification counts, also in a body a kill cut off while it
                // was being journalled: the journal has those bytes, so they must be delivered.
                let stream = espm_model::NotificationStream::new(j.raw_reader(RawId(id)));
                for item in stream.flatten() {
                    if let espm_model::ListItem::Notification(n) = item {
                        ids.insert(n.notification_id);
                    }
                }
            }
            Some(_) => misses = 0,
            None => misses += 1,
        }
        id += 1;
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// Disk full: the journal on a small tmpfs.

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (e.g. `16m`) at `dir`, or None (with a message) where mounting is
    /// refused (not root).
    fn mount(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs at {} ({}): this disk-full test needs \
                     root (CI runs as root)",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot run mount ({e}): this disk-full test needs root");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fill the filesystem holding `dir` until about `leave` bytes are free; the filler file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut written = 0u64;
    // Until the filesystem refuses: then give back `leave` bytes.
    while let Ok(n) = f.write(&chunk) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    f.set_len(written.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
    path
}

async fn ready(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

struct DiskFull {
    _tmp: tempfile::TempDir,
    vol: Tmpfs,
    logs: PathBuf,
    spool: PathBuf,
    config_path: PathBuf,
    events_path: PathBuf,
    sim: espm_sim::SimServer,
    ctl: SimControl,
}

/// A simulator and a config whose journal lives on a 16 MiB tmpfs and whose spool does not.
async fn disk_full_setup(test: &str, journal_extra: &str) -> Option<DiskFull> {
    disk_full_setup_sized(test, journal_extra, "16m").await
}

async fn disk_full_setup_sized(test: &str, journal_extra: &str, size: &str) -> Option<DiskFull> {
    let tmp = tempfile::tempdir().unwrap();
    let vol = Tmpfs::mount(&tmp.path().join("vol"), size, test)?;
    let logs = tmp.path().join("logs");
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&logs).unwrap();
    let sim = start_sim("crash", PASSWORD, 3).await;
    let ctl = SimControl::of(&sim);
    let events_path = tmp.path().join("events.jsonl");
    let config = format!(
        "[journal]\npath = \"{}\"\nretention = \"1d\"\nspool_dir = \"{}\"\n{journal_extra}\n{}{}",
        vol.dir.join("journal.db").display(),
        spool.display(),
        account_toml("full", &sim.base_url(), "crash", PASSWORD_ENV, "clear"),
        file_sink_toml("audit", &events_path),
    );
    let config_path = tmp.path().join("bridge.toml");
    std::fs::write(&config_path, config).unwrap();
    Some(DiskFull {
        _tmp: tmp,
        vol,
        logs,
        spool,
        config_path,
        events_path,
        sim,
        ctl,
    })
}

impl DiskFull {
    fn start(&self, port: u16) -> Bridge {
        Bridge::start(
            bridge_bin(),
            &self.config_path,
            &self.logs,
            &[(PASSWORD_ENV, PASSWORD)],
            Some(port),
        )
    }

    async fn wait_ready(&self, bridge: &Bridge, port: u16) {
        let up = eventually(Duration::from_secs(30), || async move {
            (ready(port).await == Some(200)).then_some(())
        })
        .await;
        assert!(
            up.is_some(),
            "the bridge never became ready:\n{}",
            bridge.log()
        );
    }

    /// Free the volume, start again: every notification PM handed out reaches the sink.
    async fn recovers_everything(&self, filler: &Path) {
        std::fs::remove_file(filler).unwrap();
        let port = free_port();
        let mut bridge = self.start(port);
        let created: BTreeSet<i64> = self.ctl.created_ids().await.into_iter().collect();
        let all = eventually(Duration::from_secs(60), || {
            let seen = notification_ids(&read_events(&self.events_path));
            let done = created.is_subset(&seen);
            async move { done.then_some(()) }
        })
        .await;
        let seen = notification_ids(&read_events(&self.events_path));
        assert!(
            all.is_some(),
            "after freeing the volume, {} of {} notifications never reached the sink; log:\n{}",
            created.difference(&seen).count(),
            created.len(),
            bridge.log()
        );
        let status = bridge.terminate(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "the run after recovery did not exit cleanly: {status:?}\n{}",
            bridge.log()
        );
    }
}

/// Issue 8, item 1. Needs the spool (`journal.spool_dir`): fails until it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_drain_is_spooled_and_ingested_at_the_next_start() {
    let test = "disk_full_drain_is_spooled_and_ingested_at_the_next_start";
    // No free-space floor: the probe passes and the body itself does not fit.
    let Some(t) = disk_full_setup(test, "min_free = \"0\"").await else {
        return;
    };
    let port = free_port();
    let mut bridge = t.start(port);
    t.wait_ready(&bridge, port).await;
    let filler = fill(&t.vol.dir, 300 * 1024);
    t.ctl.notifications(2000, &TYPES).await;
    let drained = eventually(Duration::from_secs(30), || {
        let ctl = t.ctl.clone();
        async move { (ctl.ledger_summary().await.handed_out >= 2000).then_some(()) }
    })
    .await;
    assert!(
        drained.is_some(),
        "PM never handed out the burst:\n{}",
        bridge.log()
    );
    // SIGTERM while the body cannot be journalled.
    let status = bridge.terminate(Duration::from_secs(60));
    let spooled: Vec<_> = std::fs::read_dir(&t.spool)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a drained body that could not be journalled, and the exit status does not say so: \
         {status:?}\n{}",
        bridge.log()
    );
    assert!(
        !spooled.is_empty(),
        "nothing in the spool {} although the body could not be journalled:\n{}",
        t.spool.display(),
        bridge.log()
    );
    t.recovers_everything(&filler).await;
    let left: Vec<_> = std::fs::read_dir(&t.spool)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "spool files left after ingestion: {left:?}"
    );
    t.sim.shutdown().await;
}

/// Issue 8, item 1. Needs `journal.min_free`: fails until it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_free_keeps_notifications_in_pm_while_the_journal_volume_is_nearly_full() {
    let test = "min_free_keeps_notifications_in_pm_while_the_journal_volume_is_nearly_full";
    let Some(t) = disk_full_setup(test, "min_free = \"4MiB\"").await else {
        return;
    };
    let port = free_port();
    let mut bridge = t.start(port);
    t.wait_ready(&bridge, port).await;
    let filler = fill(&t.vol.dir, 300 * 1024);
    t.ctl.notifications(2000, &TYPES).await;
    let refused = eventually(Duration::from_secs(30), || async move {
        (ready(port).await == Some(503)).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "/readyz stayed ready with 300 KiB free under a 4 MiB floor:\n{}",
        bridge.log()
    );
    // Several poll intervals (200 ms) with the queue full: not one clear=true may go out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = t.ctl.ledger_summary().await;
    assert_eq!(
        (s.handed_out, s.pending),
        (0, 2000),
        "the bridge cleared PM notifications it had no room to journal:\n{}",
        bridge.log()
    );
    let status = bridge.terminate(Duration::from_secs(30));
    assert!(status.is_some(), "no exit on SIGTERM:\n{}", bridge.log());
    t.recovers_everything(&filler).await;
    t.sim.shutdown().await;
}

/// Issue 9: a body larger than any buffer the bridge holds (it is journalled in parts of
/// [`espm_journal::CHUNK`] as it arrives and parsed from the journal as a stream) is recovered
/// after a SIGKILL in the middle of its parsing, and delivered completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_any_buffer_survives_a_kill_mid_parse() {
    const BURST: usize = 25_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sim = start_sim("crash", PASSWORD, 9).await;
    let ctl = SimControl::of(&sim);
    let (config_path, events_path) = crash_config(dir.path(), &sim, "clear");
    let env = [(PASSWORD_ENV, PASSWORD)];
    let mut bridge = Bridge::start(bridge_bin(), &config_path, &logs, &env, None);
    // Let the bridge create its journal and settle into polling before the burst.
    let journal = dir.path().join("journal.db");
    let up = eventually(Duration::from_secs(30), || {
        let journal = journal.clone();
        async move { Journal::open_read_only(&journal).ok().map(|_| ()) }
    })
    .await;
    assert!(up.is_some(), "no journal:\n{}", bridge.log());
    ctl.notifications(BURST, &TYPES).await;
    let watched = journal.clone();
    let caught = tokio::task::spawn_blocking(move || {
        kill_point_mid_parse(&watched, BURST, Duration::from_secs(120))
    })
    .await
    .unwrap();
    bridge.kill9();
    let Some((raw_len, events_then)) = caught else {
        panic!(
            "never saw the burst journalled and partly committed:\n{}",
            bridge.log()
        );
    };
    assert!(
        raw_len > 2 * espm_journal::CHUNK as u64,
        "the body ({raw_len} bytes) must span several journal chunks"
    );
    assert!(
        events_then > 0 && events_then < BURST as i64,
        "killed mid-parse: {events_then} of {BURST} events committed"
    );
    let mut bridge = Bridge::start(bridge_bin(), &config_path, &logs, &env, None);
    let all = eventually(Duration::from_secs(180), || {
        let seen = notification_ids(&read_events(&events_path)).len();
        async move { (seen >= BURST).then_some(()) }
    })
    .await;
    let seen = notification_ids(&read_events(&events_path));
    let ledger = ctl.ledger().await;
    let missing: Vec<i64> = ledger
        .notifications
        .iter()
        .map(|n| n.id)
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(
        all.is_some() && missing.is_empty(),
        "{} of {BURST} notifications never delivered after the kill, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        bridge.log()
    );
    assert!(
        count_logged(&logs, RECOVERED) > 0,
        "the restart did not recover the journalled body:\n{}",
        bridge.log()
    );
    let _ = bridge.terminate(Duration::from_secs(30));
    sim.shutdown().await;
}

/// Watch the journal until a notification body of more than one chunk is stored and some, not
/// all, of its `burst` events are committed. Returns (body length, events committed then).
fn kill_point_mid_parse(journal: &Path, burst: usize, timeout: Duration) -> Option<(u64, i64)> {
    let scope = espm_journal::Scope {
        environment: "sim".into(),
        account: "crashy".into(),
    };
    let deadline = std::time::Instant::now() + timeout;
    let j = Journal::open_read_only(journal).ok()?;
    while std::time::Instant::now() < deadline {
        let ids = j.unprocessed_raw_ids(&scope).unwrap_or_default();
        for id in ids {
            let Some(info) = j.raw_info(id).ok().flatten() else {
                continue;
            };
            if !info.complete || info.len <= espm_journal::CHUNK as u64 {
                continue;
            }
            let head = j.head_seq().unwrap_or(0);
            if head > 0 && head < burst as i64 {
                return Some((info.len, head));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Issue 9 with issue 8's spool: the journal takes the first parts of a large drained body and
/// then the volume fills. The whole body (the parts the journal took, then the rest as it
/// arrives) goes to the spool, the partial copy is superseded when the spool is ingested, and
/// every notification is delivered once, with nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_journal_stops_taking_midway_is_spooled_whole() {
    let test = "a_body_the_journal_stops_taking_midway_is_spooled_whole";
    // Room to recover a body of a few chunks once the volume is freed.
    let Some(t) = disk_full_setup_sized(test, "min_free = \"0\"", "64m").await else {
        return;
    };
    let port = free_port();
    let mut bridge = t.start(port);
    t.wait_ready(&bridge, port).await;
    // Room for a journal chunk or two (with the WAL's own growth), not for the whole body
    // (about 3 MiB).
    let filler = fill(&t.vol.dir, espm_journal::CHUNK as u64 * 5 / 2);
    t.ctl.notifications(6_000, &TYPES).await;
    let drained = eventually(Duration::from_secs(60), || {
        let ctl = t.ctl.clone();
        async move { (ctl.ledger_summary().await.handed_out >= 6_000).then_some(()) }
    })
    .await;
    assert!(
        drained.is_some(),
        "PM never handed out the burst:\n{}",
        bridge.log()
    );
    let spooled = eventually(Duration::from_secs(60), || {
        let n = std::fs::read_dir(&t.spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
                    .count()
            })
            .unwrap_or(0);
        async move { (n > 0).then_some(()) }
    })
    .await;
    assert!(
        spooled.is_some(),
        "the body was never spooled to {}:\n{}",
        t.spool.display(),
        bridge.log()
    );
    let _ = bridge.terminate(Duration::from_secs(60));
    let partial = count_logged(
        &t.logs,
        "spool directory stopped taking the body: moving to the next",
    ) + bridge
        .log_records()
        .iter()
        .filter(|r| r["message"] == "CANNOT JOURNAL a drained PM body (the only copy): spooling it")
        .count();
    assert!(
        partial > 0,
        "the journal never refused the body:\n{}",
        bridge.log()
    );
    // The spooled copy names the partial one it replaces: the journal did take the first parts.
    let headers: Vec<serde_json::Value> = std::fs::read_dir(&t.spool)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| {
            let line = b.split(|c| *c == b'\n').next()?.to_vec();
            serde_json::from_slice(&line).ok()
        })
        .collect();
    assert!(
        headers.iter().any(|h| h["supersedes"].is_i64()),
        "no spooled body superseded a partial journal copy (the journal refused the first part, \
         so the test did not test a body refused midway): {headers:?}"
    );
    t.recovers_everything(&filler).await;
    let events = read_events(&t.events_path);
    let mut per_notification: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &events {
        if let Some(n) = e["data"]["notificationId"].as_i64() {
            *per_notification.entry(n).or_default() += 1;
        }
    }
    let quarantined = events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.contains("quarantined"))
        })
        .count();
    assert_eq!(
        quarantined, 0,
        "the partial copy was salvaged as a broken body instead of being superseded"
    );
    let twice: Vec<_> = per_notification
        .iter()
        .filter(|(_, n)| **n > 1)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "notifications delivered twice (the partial copy was not superseded): {twice:?}"
    );
    t.sim.shutdown().await;
}
