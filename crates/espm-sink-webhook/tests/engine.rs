//! The webhook delivery engine end to end: the outbox driver with a real SQLite journal, the
//! webhook sink and a real HTTP receiver on loopback. A failing event waits in the journal's
//! retry queue while the others are delivered; endpoint health (410, continuous failure) is
//! stored in the journal and cleared by `enable_sink`, which a running driver notices.
//!
//! Waits are bounded only so that a broken engine fails instead of hanging; nothing here asserts
//! how fast anything happens.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use espm_config::{WebhookMode, WebhookRetry, WebhookSinkConfig};
use espm_journal::Journal;
use espm_sink::{run_sink, CloudEvent, DriverConfig, SinkState};
use espm_sink_webhook::WebhookSink;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BOUND: Duration = Duration::from_secs(60);

/// What the receiver answers: per event id a status (default 200), or one status for the first
/// `n` requests of any event.
#[derive(Default)]
struct Script {
    by_id: BTreeMap<String, u16>,
    first: Vec<u16>,
    always: Option<u16>,
}

#[derive(Default)]
struct Rx {
    script: Mutex<Script>,
    /// Ids in the order requests arrived, with the status they got.
    log: Mutex<Vec<(String, u16)>>,
}

impl Rx {
    fn delivered(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s < 300)
            .map(|(id, _)| id.clone())
            .collect()
    }
    fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

async fn receiver() -> (String, Arc<Rx>) {
    async fn handle(State(rx): State<Arc<Rx>>, headers: HeaderMap) -> StatusCode {
        let id = headers["webhook-id"].to_str().unwrap().to_string();
        let status = {
            let mut s = rx.script.lock().unwrap();
            if !s.first.is_empty() {
                s.first.remove(0)
            } else if let Some(a) = s.always {
                a
            } else {
                s.by_id.get(&id).copied().unwrap_or(200)
            }
        };
        rx.log.lock().unwrap().push((id, status));
        StatusCode::from_u16(status).unwrap()
    }
    let rx = Arc::new(Rx::default());
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

fn event(i: usize) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("evt-{i}"),
        source: "urn:espm:test:acme".into(),
        ty: "gov.energystar.pm.share.revoked".into(),
        subject: None,
        time: None,
        datacontenttype: "application/json".into(),
        dataschema: "https://espm-bridge.invalid/s.json".into(),
        espmenvironment: "test".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({"n": i}).into(),
    }
}

fn config(url: &str, secret: &Path, schedule: Vec<Duration>) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: "hook".into(),
        url: url.into(),
        secret_file: Some(secret.to_path_buf()),
        secret_env: None,
        types: Vec::new(),
        max_in_flight: 1,
        timeout: Duration::from_secs(10),
        headers: BTreeMap::new(),
        header_files: BTreeMap::new(),
        header_envs: BTreeMap::new(),
        retry: WebhookRetry {
            schedule,
            ..WebhookRetry::default()
        },
        disable_after: Duration::ZERO,
        mode: WebhookMode::Structured,
    }
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state: Arc<SinkState>,
}

impl Running {
    fn start(journal: &Journal, cfg: &WebhookSinkConfig) -> Self {
        Self::start_with(journal, cfg, fast(10))
    }

    fn start_with(journal: &Journal, cfg: &WebhookSinkConfig, driver: DriverConfig) -> Self {
        let sink = Arc::new(WebhookSink::new(cfg).unwrap());
        let shutdown = CancellationToken::new();
        let state = Arc::new(SinkState::new());
        let task = tokio::spawn(run_sink(
            journal.clone(),
            sink,
            driver,
            Arc::new(Notify::new()),
            shutdown.clone(),
            state.clone(),
        ));
        Self {
            shutdown,
            task,
            state,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// A driver that reads `batch_size` events per round and backs off briefly.
fn fast(batch_size: usize) -> DriverConfig {
    DriverConfig {
        batch_size,
        idle_poll: Duration::from_millis(20),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A journal in a fresh directory (kept while the guard lives) with events 1..=`n` enqueued.
fn journal_with(n: usize) -> (tempfile::TempDir, std::path::PathBuf, Journal) {
    journal_of(n, false)
}

/// [`journal_with`], or with the events committed as a drain commits a part (`paged`): one
/// outbox page holding them all, larger than any round.
fn journal_of(n: usize, paged: bool) -> (tempfile::TempDir, std::path::PathBuf, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let journal = Journal::open(&path).unwrap();
    let events: Vec<CloudEvent> = (1..=n).map(event).collect();
    if paged {
        let scope = espm_journal::Scope::new("sim", "acme");
        let raw = journal
            .record_raw(&scope, "notification/list", 200, b"<x/>")
            .unwrap();
        let items: Vec<espm_journal::NotificationEntry> = (1..=n as i64)
            .map(|id| espm_journal::NotificationEntry {
                notification_id: id,
                type_code: "UNSHARE".into(),
                json: "{}".into(),
            })
            .collect();
        let stats = journal
            .commit_paired_part(&scope, raw, &items, &events, true)
            .unwrap();
        assert_eq!(stats.new_events, n);
    } else {
        journal.enqueue(&events).unwrap();
    }
    (dir, path, journal)
}

fn secret_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{SECRET}").unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_waits_in_the_journal_while_the_others_are_delivered() {
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().by_id.insert("evt-1".into(), 503);
    let (_dir, path, journal) = journal_with(5);
    let secret = secret_file();

    // A long first delay: the failed event cannot come back during this phase.
    let cfg = config(&url, secret.path(), vec![Duration::from_secs(3600)]);
    let running = Running::start(&journal, &cfg);
    until("the four healthy events", || rx.delivered().len() == 4).await;
    until("the retry row", || {
        journal.retry_count("hook").unwrap() == 1
    })
    .await;
    running.stop().await;
    assert_eq!(rx.delivered(), ["evt-2", "evt-3", "evt-4", "evt-5"]);
    assert_eq!(journal.cursor("hook").unwrap(), journal.head_seq().unwrap());
    assert_eq!(journal.dlq_count(Some("hook")).unwrap(), 0);
    drop(journal);

    // The retry state survives a restart: attempt count, schedule, the event itself.
    let journal = Journal::open(&path).unwrap();
    let queued = journal.retry_list("hook").unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].row.event.id, "evt-1");
    assert_eq!(queued[0].attempts, 1);
    assert!(
        queued[0].last_error.contains("503"),
        "{}",
        queued[0].last_error
    );
    assert!(
        queued[0].next_attempt_at > SystemTime::now() + Duration::from_secs(1800),
        "the schedule's first delay is kept"
    );
    assert!(journal
        .due_retries("hook", SystemTime::now(), 10)
        .unwrap()
        .is_empty());

    // Once due (an operator's disable + enable makes the queue due at once), it is delivered
    // after the events behind it: order is not kept across a retry.
    journal.disable_sink("hook", "test").unwrap();
    assert!(journal.enable_sink("hook").unwrap());
    rx.script.lock().unwrap().by_id.clear();
    let running = Running::start(&journal, &cfg);
    until("the retried event", || rx.delivered().len() == 5).await;
    until("an empty retry queue", || {
        journal.retry_count("hook").unwrap() == 0
    })
    .await;
    running.stop().await;
    assert_eq!(
        rx.delivered(),
        ["evt-2", "evt-3", "evt-4", "evt-5", "evt-1"]
    );
    assert_eq!(journal.dlq_count(Some("hook")).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_retried_on_its_schedule_then_dead_lettered() {
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().always = Some(500);
    let (_dir, _, journal) = journal_with(3);
    let secret = secret_file();
    let cfg = config(&url, secret.path(), vec![Duration::from_millis(1); 2]);
    let running = Running::start(&journal, &cfg);
    until("three dead letters", || {
        journal.dlq_count(Some("hook")).unwrap() == 3
    })
    .await;
    running.stop().await;
    for d in journal.dlq_list(Some("hook")).unwrap() {
        assert_eq!(d.attempts, 3, "{}: {}", d.event_id, d.reason);
        assert!(d.reason.contains("3 attempts"), "{}", d.reason);
    }
    assert_eq!(rx.requests(), 9);
    assert_eq!(journal.retry_count("hook").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_until_it_is_enabled_again_without_a_restart() {
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().first = vec![410];
    let (_dir, path, journal) = journal_with(3);
    let secret = secret_file();
    let cfg = config(&url, secret.path(), vec![Duration::from_millis(1); 3]);
    let running = Running::start(&journal, &cfg);

    until("the endpoint disabled", || running.state.is_disabled()).await;
    let health = journal.sink_health("hook").unwrap();
    assert!(
        health
            .disabled_reason
            .as_deref()
            .is_some_and(|r| r.contains("410")),
        "{health:?}"
    );
    // Events stay queued; nothing more is sent while disabled.
    until("three queued events", || {
        journal.retry_count("hook").unwrap() == 3
    })
    .await;
    assert_eq!(rx.requests(), 1);
    assert!(rx.delivered().is_empty());

    // `espm-bridge webhook enable hook` does this from another process: its own handle.
    let operator = Journal::open(&path).unwrap();
    assert!(operator.enable_sink("hook").unwrap());
    assert!(!operator.enable_sink("hook").unwrap(), "already enabled");
    until("every event delivered", || rx.delivered().len() == 3).await;
    until("the state cleared", || !running.state.is_disabled()).await;
    running.stop().await;
    let got: BTreeSet<String> = rx.delivered().into_iter().collect();
    assert_eq!(got, ["evt-1", "evt-2", "evt-3"].map(String::from).into());
    assert_eq!(journal.retry_count("hook").unwrap(), 0);
    assert_eq!(journal.dlq_count(Some("hook")).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_failure_disables_the_endpoint_and_the_flag_survives_a_restart() {
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().always = Some(503);
    let (_dir, _, journal) = journal_with(2);
    let secret = secret_file();
    let mut cfg = config(&url, secret.path(), vec![Duration::from_millis(1); 1000]);
    cfg.disable_after = Duration::from_millis(1);
    let running = Running::start(&journal, &cfg);
    until("the endpoint disabled", || {
        journal
            .sink_health("hook")
            .unwrap()
            .disabled_reason
            .is_some()
    })
    .await;
    running.stop().await;
    let reason = journal
        .sink_health("hook")
        .unwrap()
        .disabled_reason
        .unwrap();
    assert!(reason.contains("disable_after"), "{reason}");
    assert_eq!(
        journal.dlq_count(Some("hook")).unwrap(),
        0,
        "events are kept"
    );
    assert_eq!(journal.retry_count("hook").unwrap(), 2);

    // A restarted driver starts disabled and sends nothing.
    let sent = rx.requests();
    let running = Running::start(&journal, &cfg);
    until("the state disabled", || running.state.is_disabled()).await;
    running.stop().await;
    assert_eq!(rx.requests(), sent);

    // A healthy endpoint once enabled: the failure streak is forgotten.
    rx.script.lock().unwrap().always = None;
    assert!(journal.enable_sink("hook").unwrap());
    assert_eq!(journal.sink_health("hook").unwrap().failing_since, None);
    let running = Running::start(&journal, &cfg);
    until("both delivered", || rx.delivered().len() == 2).await;
    running.stop().await;
}

/// An endpoint that is down for everything is an outage, not 1,000 failing events: the backlog
/// stays in the outbox behind the cursor (one probe event per back-off delay goes into the retry
/// queue), and once the endpoint is back it flows from the outbox at full speed. Moving every
/// event into the retry queue made a 1,000,000-event backlog drain at 2,810 events/s (issue 9).
/// The probes keep the driver's back-off pace, not the queued events' schedule (an hour here),
/// and the events queued during the outage go again once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_backlog_in_the_outbox_and_probes_at_the_back_off_pace() {
    outage_case(false).await;
}

/// The same with the backlog in one outbox page: what the engine read ahead of a round is
/// held back during the outage, one probe at a time, and all of it is delivered after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_over_a_backlog_in_one_page_probes_one_event_at_a_time() {
    outage_case(true).await;
}

async fn outage_case(paged: bool) {
    const EVENTS: usize = 2_000;
    const BATCH: usize = 10;
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().always = Some(503);
    let (_dir, _, journal) = journal_of(EVENTS, paged);
    let secret = secret_file();
    let cfg = config(&url, secret.path(), vec![Duration::from_secs(3600); 10]);
    let probe = Duration::from_millis(200);
    let running = Running::start_with(
        &journal,
        &cfg,
        DriverConfig {
            batch_size: BATCH,
            idle_poll: Duration::from_millis(20),
            retry_initial: probe,
            retry_max: probe,
        },
    );
    let outage = Duration::from_secs(2);
    tokio::time::sleep(outage).await;
    let queued = journal.retry_count("hook").unwrap();
    // The first batch, then at most one probe per back-off delay (jitter: up to 1.5x shorter).
    let most = BATCH as u64 + 2 * (outage.as_millis() / probe.as_millis()) as u64 + 2;
    assert!(
        queued >= 1 && queued <= most,
        "{queued} events moved into the retry queue during a {outage:?} outage (at most {most})"
    );
    assert!(journal.cursor("hook").unwrap() < journal.head_seq().unwrap());
    assert!(rx.delivered().is_empty());

    // Back up: the next probe succeeds, the backlog flows, and what failed during the outage
    // goes again at once instead of in an hour.
    rx.script.lock().unwrap().always = None;
    until("every event delivered", || {
        rx.delivered().iter().collect::<BTreeSet<_>>().len() == EVENTS
    })
    .await;
    until("an empty retry queue", || {
        journal.retry_count("hook").unwrap() == 0
    })
    .await;
    running.stop().await;
    assert_eq!(journal.dlq_count(Some("hook")).unwrap(), 0);
}

/// A receiver that holds every request until `need` are in flight together (once), then answers
/// each 200 after `hold`; it records the most requests it ever had in flight at once.
#[derive(Default)]
struct Gate {
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    need: usize,
    hold: Duration,
    open: Notify,
    opened: std::sync::atomic::AtomicBool,
    ids: Mutex<BTreeSet<String>>,
}

async fn gated_receiver(need: usize, hold: Duration) -> (String, Arc<Gate>) {
    use std::sync::atomic::Ordering::SeqCst;
    async fn handle(State(g): State<Arc<Gate>>, headers: HeaderMap) -> StatusCode {
        let now = g.in_flight.fetch_add(1, SeqCst) + 1;
        g.most.fetch_max(now, SeqCst);
        if now >= g.need {
            g.opened.store(true, SeqCst);
            g.open.notify_waiters();
        }
        while !g.opened.load(SeqCst) {
            let opened = g.open.notified();
            if g.opened.load(SeqCst) {
                break;
            }
            opened.await;
        }
        tokio::time::sleep(g.hold).await;
        let id = headers["webhook-id"].to_str().unwrap().to_string();
        g.ids.lock().unwrap().insert(id);
        g.in_flight.fetch_sub(1, SeqCst);
        StatusCode::OK
    }
    let g = Arc::new(Gate {
        need,
        hold,
        ..Gate::default()
    });
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_round_goes_out_before_the_last_one_is_answered_within_the_endpoints_limit() {
    // Rounds of 3 and `max_in_flight = 4`: the receiver only answers once 4 requests are in
    // flight together, which takes two rounds on the wire at once; it then holds each a while,
    // so two rounds could have 6 in flight if each had the limit to itself.
    let (url, gate) = gated_receiver(4, Duration::from_millis(20)).await;
    let (_dir, _, journal) = journal_with(30);
    let secret = secret_file();
    let mut cfg = config(&url, secret.path(), vec![Duration::from_millis(10)]);
    cfg.max_in_flight = 4;
    let running = Running::start_with(&journal, &cfg, fast(3));
    until("every event delivered", || {
        gate.ids.lock().unwrap().len() == 30
    })
    .await;
    until("the cursor over all of them", || {
        running.state.cursor() == 30
    })
    .await;
    running.stop().await;
    assert_eq!(gate.most.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(journal.retry_count("hook").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_whose_outcomes_cannot_be_stored_goes_again_though_a_later_round_was_answered() {
    refused_settle_case(false).await;
}

/// The same with the events in one outbox page: the engine goes back to the cursor, not to
/// what it had read ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settle_inside_a_page_goes_back_to_the_cursor() {
    refused_settle_case(true).await;
}

async fn refused_settle_case(paged: bool) {
    // evt-1 fails in the first round and the journal refuses to queue its retry; the second
    // round is on the wire meanwhile and answered. Settling that one would move the cursor over
    // evt-1, which would then never be sent again.
    let (url, rx) = receiver().await;
    rx.script.lock().unwrap().by_id.insert("evt-1".into(), 503);
    let (_dir, path, journal) = journal_of(6, paged);
    let sql = |s: &str| espm_testkit::journal_sql(&path, s);
    sql("CREATE TRIGGER refuse BEFORE INSERT ON sink_retries \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;");
    let secret = secret_file();
    let mut cfg = config(&url, secret.path(), vec![Duration::from_millis(10); 5]);
    cfg.max_in_flight = 4;
    let running = Running::start_with(&journal, &cfg, fast(2));
    until("a refused settle", || {
        running
            .state
            .last_error()
            .is_some_and(|e| e.contains("disk is full"))
    })
    .await;
    until("the second round answered", || {
        let d = rx.delivered();
        (2..=4).all(|i| d.contains(&format!("evt-{i}")))
    })
    .await;
    assert_eq!(running.state.cursor(), 0, "nothing settled past evt-1");
    sql("DROP TRIGGER refuse;");
    rx.script.lock().unwrap().by_id.clear();
    until("evt-1 delivered", || {
        rx.delivered().contains(&"evt-1".to_string())
    })
    .await;
    until("the cursor over all of them", || {
        running.state.cursor() == 6
    })
    .await;
    running.stop().await;
}
