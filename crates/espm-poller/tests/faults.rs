//! The loss paths of ordinary production faults (issue 8, items 1, 2, 4 and 5): a journal that
//! refuses a drained body, a failed commit, a poison notification, and a shutdown during a drain.
//! PM is an in-process fake here, so each test controls exactly what a read returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use espm_client::{ClientConfig, PmClient, RetryPolicy};
use espm_journal::{Journal, Scope, Spool};
use espm_poller::{DrainMode, PollError, Poller, PollerConfig};
use tokio_util::sync::CancellationToken;

const BODY_QUARANTINED: &str = "gov.energystar.pm.bridge.body_quarantined";

fn notification(id: i64) -> String {
    format!(
        "<notification><notificationTypeCode>UNSHARE</notificationTypeCode><notificationId>{id}</notificationId>\
         <description>d{id}</description><accountId>7</accountId><propertyId>5</propertyId></notification>"
    )
}

fn list(items: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><notificationList>{}</notificationList>",
        items.concat()
    )
}

/// A PM whose notification queue the test sets; `clear=true` empties it. It counts reads.
#[derive(Default)]
struct FakePm {
    queue: Mutex<Vec<String>>,
    clears: AtomicUsize,
    peeks: AtomicUsize,
    peek_delay_ms: AtomicUsize,
}

async fn notifications(
    State(pm): State<Arc<FakePm>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ([(&'static str, &'static str); 1], String) {
    let clear = q.get("clear").is_some_and(|v| v == "true");
    if clear {
        pm.clears.fetch_add(1, Ordering::SeqCst);
        let items = std::mem::take(&mut *pm.queue.lock().unwrap());
        return ([("content-type", "application/xml")], list(&items));
    }
    pm.peeks.fetch_add(1, Ordering::SeqCst);
    let delay = pm.peek_delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let items = pm.queue.lock().unwrap().clone();
    ([("content-type", "application/xml")], list(&items))
}

struct Env {
    pm: Arc<FakePm>,
    base_url: String,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let pm = Arc::new(FakePm::default());
    let app = axum::Router::new()
        .route("/ws/notification/list", axum::routing::get(notifications))
        .with_state(pm.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Env {
        pm,
        base_url: format!("http://{addr}/ws"),
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    fn journal_path(&self) -> std::path::PathBuf {
        self.dir.path().join("journal.db")
    }

    fn journal(&self) -> Journal {
        Journal::open(&self.journal_path()).unwrap()
    }

    fn spool(&self) -> Spool {
        Spool::for_journal(&self.journal_path(), None)
    }

    fn poller(&self, journal: &Journal, mode: DrainMode, min_free: u64, spool: Spool) -> Poller {
        let mut c = ClientConfig::new(self.base_url.clone(), "p", "pw");
        c.retry = RetryPolicy::none();
        c.timeout = Duration::from_secs(5);
        let cfg = PollerConfig {
            scope: Scope::new("sim", "acct"),
            drain_mode: mode,
            poll_interval: Duration::from_millis(20),
            pending_interval: Duration::from_secs(3600),
            max_error_backoff: Duration::from_millis(100),
            min_free,
            spool,
        };
        Poller::new(PmClient::new(c).unwrap(), journal.clone(), cfg, vec![])
    }

    fn put(&self, ids: impl IntoIterator<Item = i64>) {
        let mut q = self.pm.queue.lock().unwrap();
        q.extend(ids.into_iter().map(notification));
    }

    /// A second connection to the journal file, for injecting faults with triggers.
    fn sql(&self, sql: &str) {
        espm_testkit::journal_sql(&self.journal_path(), sql);
    }
}

/// The notification ids of the outbox's events, in outbox order.
fn outbox_notification_ids(j: &Journal) -> Vec<i64> {
    j.read_outbox("probe", 0, 100_000)
        .unwrap()
        .iter()
        .filter_map(|r| r.event.data.get("notificationId").and_then(|v| v.as_i64()))
        .collect()
}

fn notification_ids(j: &Journal) -> Vec<i64> {
    let mut ids = outbox_notification_ids(j);
    ids.sort();
    ids.dedup();
    ids
}

fn q_event(id: espm_journal::RawId, digest: &str) -> espm_events::CloudEvent {
    espm_events::quarantine_event(
        &espm_events::Origin {
            environment: "sim".into(),
            account: "acct".into(),
        },
        &espm_events::BodyQuarantinedData {
            endpoint: "notification/list?clear=true".into(),
            raw_id: id.0,
            sha256: digest.into(),
            fragment_of: None,
            error: "test".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
        },
    )
}

fn quarantine_events(j: &Journal) -> usize {
    j.read_outbox("probe", 0, 100_000)
        .unwrap()
        .iter()
        .filter(|r| r.event.ty == BODY_QUARANTINED)
        .count()
}

#[tokio::test]
async fn no_clear_without_the_free_space_floor() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=5);
    for mode in [DrainMode::Clear, DrainMode::PeekThenClear] {
        let p = e.poller(&j, mode, u64::MAX / 8, e.spool());
        let err = p.drain_once().await.unwrap_err();
        assert!(
            matches!(err, PollError::Journal(ref je) if je.is_unwritable()),
            "{err}"
        );
        assert!(err.to_string().contains("min_free"), "{err}");
    }
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 0);
    assert_eq!(e.pm.queue.lock().unwrap().len(), 5, "PM still holds them");
}

#[tokio::test]
async fn a_drained_body_the_journal_refuses_is_spooled_at_once_and_ingested_later() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=2000);
    // The journal refuses the drained body (as a full disk would after the checks passed).
    e.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON raw_bodies WHEN NEW.endpoint LIKE '%clear=true%' \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    let p = e.poller(&j, DrainMode::Clear, 0, e.spool());
    let err = tokio::time::timeout(Duration::from_secs(10), p.drain_once())
        .await
        .expect("a refused body is spooled at once, not retried in memory")
        .unwrap_err();
    assert!(matches!(err, PollError::Spooled { .. }), "{err}");
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 1);
    assert_eq!(e.spool().pending(None).len(), 1);
    assert!(p.status().not_ready_reason().is_some());
    // While it waits, nothing new is cleared.
    e.put(2001..=2010);
    assert!(p.drain_once().await.is_err());
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 1);
    // The journal recovers: the spooled body goes in first, then draining resumes.
    e.sql("DROP TRIGGER refuse;");
    let out = p.drain_once().await.unwrap();
    assert_eq!(out.unspooled, 1);
    assert!(e.spool().pending(None).is_empty());
    p.drain_once().await.unwrap();
    assert_eq!(notification_ids(&j), (1..=2010).collect::<Vec<_>>());
    assert_eq!(p.status().not_ready_reason(), None);
}

#[tokio::test]
async fn a_spooled_body_is_ingested_by_the_next_start() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=50);
    e.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON raw_bodies WHEN NEW.endpoint LIKE '%clear=true%' \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    let p = e.poller(&j, DrainMode::Clear, 0, e.spool());
    assert!(p.drain_once().await.is_err());
    drop(p);
    drop(j);
    e.sql("DROP TRIGGER refuse;");
    // A new process: run() ingests the spool before it polls.
    let j = e.journal();
    let p = e.poller(&j, DrainMode::Clear, 0, e.spool());
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while notification_ids(&j).len() < 50 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(notification_ids(&j), (1..=50).collect::<Vec<_>>());
    assert!(e.spool().pending(None).is_empty());
}

#[tokio::test]
async fn a_body_nothing_will_store_is_not_dropped_by_a_shutdown() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=3);
    e.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON raw_bodies WHEN NEW.endpoint LIKE '%clear=true%' \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    // No spool directory can be created: its path is taken by a file.
    let blocked = e.dir.path().join("blocked");
    std::fs::write(&blocked, b"in the way").unwrap();
    let spool = Spool::for_journal(&blocked.join("j.db"), None);
    let p = e.poller(&j, DrainMode::Clear, 0, spool);
    let status = p.status();
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while e.pm.clears.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        status.holding_body(),
        "the body is held while nothing stores it"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shutdown ends the retries")
        .unwrap();
    // The last resort went to stderr, and the status says so (the binary exits 74 on it).
    assert!(status.unsaved());
    assert!(status.not_ready_reason().is_some());
}

#[tokio::test]
async fn a_failed_commit_is_retried_in_process_in_order() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=100);
    e.sql(
        "CREATE TRIGGER fail_commit BEFORE INSERT ON notifications \
         BEGIN SELECT RAISE(ABORT, 'database is locked'); END;",
    );
    let p = e.poller(&j, DrainMode::Clear, 0, e.spool());
    assert!(p.drain_once().await.is_err());
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 1);
    assert_eq!(p.status().stranded(), 1);
    assert!(p.status().not_ready_reason().unwrap().contains("commit"));
    // While it waits, newer notifications are not cleared past it.
    e.put(101..=110);
    assert!(p.drain_once().await.is_err());
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 1);
    e.sql("DROP TRIGGER fail_commit;");
    // No restart: the same poller finishes it, then goes on.
    let out = p.drain_once().await.unwrap();
    assert_eq!(out.recovered, 1);
    assert_eq!(p.status().stranded(), 0);
    p.drain_once().await.unwrap();
    assert_eq!(notification_ids(&j), (1..=110).collect::<Vec<_>>());
    assert_eq!(p.status().not_ready_reason(), None);
}

/// A body of several parts commits them in order, and none past one that failed: a retry finds
/// the rest, and every event is in the outbox once, in PM's order.
#[tokio::test]
async fn a_body_commits_its_parts_in_order_and_none_past_a_failed_one() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=2500);
    e.sql(
        "CREATE TRIGGER fail_part BEFORE INSERT ON notifications WHEN NEW.notification_id = 1500 \
         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;",
    );
    let p = e.poller(&j, DrainMode::Clear, 0, e.spool());
    assert!(p.drain_once().await.is_err());
    let committed = notification_ids(&j);
    assert!(
        !committed.is_empty(),
        "the parts before the failed one commit"
    );
    assert_eq!(
        committed,
        (1..=committed.len() as i64).collect::<Vec<_>>(),
        "a prefix of the body, none of it at or past the failed notification"
    );
    assert!(committed.len() < 1500);
    e.sql("DROP TRIGGER fail_part;");
    assert_eq!(p.drain_once().await.unwrap().recovered, 1);
    let in_order = outbox_notification_ids(&j);
    assert_eq!(
        in_order,
        (1..=2500).collect::<Vec<_>>(),
        "every event once, in PM's order"
    );
}

#[tokio::test]
async fn a_poison_notification_blocks_neither_the_others_nor_the_clear() {
    let e = env().await;
    let j = e.journal();
    {
        let mut q = e.pm.queue.lock().unwrap();
        q.push(notification(1));
        q.push(notification(2).replace("<notificationId>2<", "<notificationId>two<"));
        q.push(notification(3));
    }
    let p = e.poller(&j, DrainMode::PeekThenClear, 0, e.spool());
    p.drain_once().await.unwrap();
    assert_eq!(
        e.pm.clears.load(Ordering::SeqCst),
        1,
        "a peek that does not parse must still lead to clear=true"
    );
    assert_eq!(notification_ids(&j), vec![1, 3]);
    let q = j.quarantine_list().unwrap();
    assert_eq!(
        q.len(),
        1,
        "the peek's and the clear's copies are one entry"
    );
    assert_eq!(q[0].seen_count, 2);
    let fragment = j.raw_body(q[0].id).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&fragment).contains("<notificationId>two<"));
    assert_eq!(quarantine_events(&j), 1);
    assert!(p.status().parse_failing());
    assert!(p.status().not_ready_reason().is_some());
    // PM's queue is empty now; a clean poll clears the flag.
    p.drain_once().await.unwrap();
    assert!(!p.status().parse_failing());
}

#[tokio::test]
async fn a_poison_body_that_keeps_coming_is_stored_once_and_counted() {
    let e = env().await;
    let j = e.journal();
    let p = e.poller(&j, DrainMode::PeekThenClear, 0, e.spool());
    for _ in 0..5 {
        e.pm.queue
            .lock()
            .unwrap()
            .push(notification(9).replace("<notificationId>9<", "<notificationId>nine<"));
        p.drain_once().await.unwrap();
    }
    let q = j.quarantine_list().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].seen_count, 10, "5 peeks and 5 clears");
    assert_eq!(quarantine_events(&j), 1);
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn reprocess_parses_a_quarantined_body_again_idempotently() {
    let e = env().await;
    let j = e.journal();
    let s = Scope::new("sim", "acct");
    // A body an older build could not read, now readable.
    let body = list(&[notification(41), notification(42)]);
    let raw = j
        .record_raw(&s, "notification/list?clear=true", 200, body.as_bytes())
        .unwrap();
    j.quarantine(raw, "unknown element (old build)", q_event)
        .unwrap();
    let r = espm_poller::reprocess(&j, raw).await.unwrap();
    assert!(!r.still_bad);
    assert_eq!((r.notifications, r.new_events), (2, 2));
    assert_eq!(notification_ids(&j), vec![41, 42]);
    assert!(j.quarantine_list().unwrap().is_empty());
    // Not quarantined any more: a second reprocess is refused, nothing is sent twice.
    assert!(espm_poller::reprocess(&j, raw).await.is_err());
    assert_eq!(notification_ids(&j), vec![41, 42]);

    // A body that still does not parse stays quarantined, without a second event.
    let bad = j
        .record_raw(
            &s,
            "notification/list?clear=true",
            200,
            b"<html>down</html>",
        )
        .unwrap();
    let mut first_event = None;
    j.quarantine(bad, "not xml", |id, d| {
        first_event = Some(d.to_string());
        q_event(id, d)
    })
    .unwrap();
    let before = j.head_seq().unwrap();
    let r = espm_poller::reprocess(&j, bad).await.unwrap();
    assert!(r.still_bad);
    assert_eq!(j.quarantine_list().unwrap().len(), 1);
    assert_eq!(j.head_seq().unwrap(), before, "no new event");
    assert!(first_event.is_some());
}

#[tokio::test]
async fn a_shutdown_during_the_peek_never_sends_clear() {
    let e = env().await;
    let j = e.journal();
    e.put(1..=5);
    e.pm.peek_delay_ms.store(700, Ordering::SeqCst);
    let p = e.poller(&j, DrainMode::PeekThenClear, 0, e.spool());
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e.pm.peeks.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the poller stops without waiting for the peek")
        .unwrap();
    // Give a stray clear time to arrive, if one was (wrongly) sent.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(e.pm.clears.load(Ordering::SeqCst), 0);
    assert_eq!(e.pm.queue.lock().unwrap().len(), 5);
}
