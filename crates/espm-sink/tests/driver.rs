//! The driver against a real journal (tempdir) and scripted sinks, plus the file and console sinks.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use espm_config::FileSinkConfig;
use espm_journal::Journal;
use espm_sink::{
    run_sink, Acks, CloudEvent, ConsoleSink, DriverConfig, Envelope, FileSink, Outcome, Sink,
    SinkState,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn ev(id: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: id.into(),
        source: "espm://sim/acme".into(),
        ty: if id.starts_with("skip") {
            "gov.energystar.pm.other".into()
        } else {
            "gov.energystar.pm.test".into()
        },
        subject: None,
        time: None,
        datacontenttype: "application/json".into(),
        dataschema: "https://example.invalid/s.json".into(),
        espmenvironment: "sim".into(),
        espmaccount: "acme".into(),
        causationid: None,
        correlationid: None,
        data: serde_json::json!({ "id": id }).into(),
    }
}

fn evs(ids: &[&str]) -> Vec<CloudEvent> {
    ids.iter().map(|i| ev(i)).collect()
}

type Rule = Box<dyn Fn(&Envelope) -> Outcome + Send + Sync>;

/// A sink whose outcome per envelope comes from a rule; without a rule it delivers everything.
#[derive(Default)]
struct ScriptSink {
    name: String,
    rule: Option<Rule>,
    /// Every (event id, attempts) the sink reported Delivered for, in order.
    delivered: Mutex<Vec<(String, u32)>>,
    /// Every envelope seen, (id, attempts).
    seen: Mutex<Vec<(String, u32)>>,
    starts: AtomicU32,
    /// When set, deliver waits for a permit (a slow sink).
    gate: Option<Arc<Semaphore>>,
    /// When true, events whose id starts with "skip" are not accepted.
    filter: bool,
    /// Batches in flight (`Sink::pipeline_depth`); above 1 the acks arrive a little later.
    depth: usize,
    /// The size of every batch handed to the sink.
    batches: Mutex<Vec<usize>>,
}

impl ScriptSink {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    fn rule(mut self, f: impl Fn(&Envelope) -> Outcome + Send + Sync + 'static) -> Self {
        self.rule = Some(Box::new(f));
        self
    }

    fn delivered_ids(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|(i, _)| i.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Sink for ScriptSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "console"
    }
    fn accepts(&self, event: &CloudEvent) -> bool {
        !(self.filter && event.id.starts_with("skip"))
    }
    async fn start(&self) -> Result<(), espm_sink::SinkError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn pipeline_depth(&self) -> usize {
        self.depth.max(1)
    }
    async fn submit(&self, batch: Vec<Envelope>) -> Acks {
        let outcomes = self.deliver(&batch).await;
        // The acks come later, as a broker's would; some batches are acknowledged together.
        let delay = Duration::from_millis(1 + batch[0].seq as u64 % 3);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            outcomes
        })
    }
    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.batches.lock().unwrap().push(batch.len());
        let mut out = Vec::new();
        for e in batch {
            self.seen
                .lock()
                .unwrap()
                .push((e.event.id.clone(), e.attempts));
            let o = match &self.rule {
                Some(rule) => rule(e),
                None => Outcome::Delivered,
            };
            if o == Outcome::Delivered {
                self.delivered
                    .lock()
                    .unwrap()
                    .push((e.event.id.clone(), e.attempts));
            }
            out.push(o);
        }
        out
    }
}

fn retry(reason: &str) -> Outcome {
    Outcome::Retry {
        reason: reason.into(),
        retry_after: None,
        attempts: 1,
    }
}

fn fast_cfg(batch_size: usize) -> DriverConfig {
    DriverConfig {
        batch_size,
        idle_poll: Duration::from_millis(20),
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
    }
}

struct Running {
    state: Arc<SinkState>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

fn spawn(journal: &Journal, sink: Arc<dyn Sink>, cfg: DriverConfig) -> Running {
    let state = Arc::new(SinkState::new());
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run_sink(
        journal.clone(),
        sink,
        cfg,
        wake.clone(),
        shutdown.clone(),
        state.clone(),
    ));
    Running {
        state,
        wake,
        shutdown,
        handle,
    }
}

/// Wait (generously) for a condition; this bounds a hang, it is not a performance assertion.
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    for _ in 0..6000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    (dir, j)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_redelivers_without_loss() {
    let (_d, j) = journal();
    j.enqueue(&evs(&["e1", "e2", "e3", "e4", "e5", "e6"]))
        .unwrap();
    let sink = Arc::new(
        ScriptSink::new("s").rule(|e| match (e.event.id.as_str(), e.attempts) {
            ("e2", 0 | 1) => retry("503"),
            ("e4", _) => Outcome::DeadLetter {
                reason: "HTTP 400".into(),
                attempts: 1,
            },
            _ => Outcome::Delivered,
        }),
    );
    let r = spawn(&j, sink.clone(), fast_cfg(100));
    wait_for("cursor at 6", || r.state.cursor() == 6).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();

    assert_eq!(j.cursor("s").unwrap(), 6);
    // Everything but the dead letter was delivered at least once, in order of first delivery.
    for id in ["e1", "e2", "e3", "e5", "e6"] {
        assert!(
            sink.delivered_ids().iter().any(|d| d == id),
            "{id} never delivered"
        );
    }
    // e3 was acknowledged by the sink after e2 failed, so it was sent again (at least once).
    assert!(sink.delivered_ids().iter().filter(|d| *d == "e3").count() >= 2);
    // e2 succeeded on its third attempt, and the envelope said so.
    let e2: Vec<u32> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _)| i == "e2")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(e2, vec![0, 1, 2]);
    // The dead letter is stored with its reason and attempts, and not delivered.
    let dl = j.dlq_list(Some("s")).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].event_id, "e4");
    assert_eq!(dl[0].reason, "HTTP 400");
    // e4 was sent with every batch: twice behind the failing e2, then once more.
    assert_eq!(dl[0].attempts, 3);
    assert!(!sink.delivered_ids().iter().any(|d| d == "e4"));
    assert!(r.state.last_delivery().is_some());
    assert_eq!(r.state.last_error().as_deref(), Some("503"));
    assert!(!r.state.is_disabled());
    assert!(sink.starts.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_never_skip_a_failed_event_and_count_every_send() {
    let (_d, j) = journal();
    let ids: Vec<String> = (1..=60).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    j.enqueue(&evs(&refs)).unwrap();
    let sink = Arc::new(ScriptSink {
        depth: 4,
        ..ScriptSink::new("p").rule(|e| match (e.event.id.as_str(), e.attempts) {
            ("e17", 0 | 1) => retry("503"),
            ("e30", _) => Outcome::DeadLetter {
                reason: "too large".into(),
                attempts: 1,
            },
            ("e44", 0) => retry("timeout"),
            _ => Outcome::Delivered,
        })
    });
    let r = spawn(&j, sink.clone(), fast_cfg(5));
    wait_for("cursor at 60", || r.state.cursor() == 60).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();

    assert_eq!(j.cursor("p").unwrap(), 60);
    let delivered = sink.delivered_ids();
    for id in ids.iter().filter(|i| *i != "e30") {
        assert!(delivered.contains(id), "{id} never delivered");
    }
    // Batches behind a failure were in flight, and are sent again from the cursor.
    assert!(delivered.iter().filter(|d| *d == "e18").count() >= 2);
    // Each failing event saw its true attempt count.
    let seen = sink.seen.lock().unwrap().clone();
    let attempts_of = |id: &str| -> Vec<u32> {
        seen.iter()
            .filter(|(i, _)| i == id)
            .map(|(_, a)| *a)
            .collect()
    };
    assert_eq!(attempts_of("e17"), vec![0, 1, 2]);
    assert_eq!(attempts_of("e44"), vec![0, 1]);
    // The dead letter counts every send of it, including those of batches behind a failure.
    let dl = j.dlq_list(Some("p")).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].event_id, "e30");
    assert_eq!(dl[0].attempts as usize, attempts_of("e30").len());
}

/// A drain part's events share one outbox page, larger than a batch: the driver still hands
/// out batches of at most `batch_size`, in order, and a failure inside the page sends again
/// from the cursor, not from what it had read ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cut_from_a_page_larger_than_a_batch_resend_from_the_cursor() {
    let (_d, j) = journal();
    let scope = espm_journal::Scope::new("sim", "acme");
    let raw = j
        .record_raw(&scope, "notification/list", 200, b"<x/>")
        .unwrap();
    let ids: Vec<String> = (1..=60).map(|i| format!("e{i}")).collect();
    let items: Vec<espm_journal::NotificationEntry> = (1..=60)
        .map(|i| espm_journal::NotificationEntry {
            notification_id: i,
            type_code: "UNSHARE".into(),
            json: "{}".into(),
        })
        .collect();
    let events: Vec<CloudEvent> = ids.iter().map(|i| ev(i)).collect();
    let stats = j
        .commit_paired_part(&scope, raw, &items, &events, true)
        .unwrap();
    assert_eq!(stats.new_events, 60);
    let sink = Arc::new(ScriptSink {
        depth: 4,
        ..ScriptSink::new("p").rule(|e| match (e.event.id.as_str(), e.attempts) {
            ("e17", 0 | 1) => retry("503"),
            _ => Outcome::Delivered,
        })
    });
    let r = spawn(&j, sink.clone(), fast_cfg(7));
    wait_for("cursor at 60", || r.state.cursor() == 60).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();

    let delivered = sink.delivered_ids();
    for id in &ids {
        assert!(delivered.contains(id), "{id} never delivered");
    }
    let seen = sink.seen.lock().unwrap().clone();
    let e17: Vec<u32> = seen
        .iter()
        .filter(|(i, _)| i == "e17")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(e17, vec![0, 1, 2]);
    // The first pass over the page went in order, up to the failed event's batch.
    let first: Vec<&str> = seen.iter().take(21).map(|(i, _)| i.as_str()).collect();
    let expected: Vec<&str> = ids.iter().take(21).map(String::as_str).collect();
    assert_eq!(first, expected);
    let batches = sink.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| (1..=7).contains(&n)), "{batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_the_journal_refuses_is_never_passed_over_by_a_later_one() {
    // e3 is dead-lettered in the first batch and the journal refuses to store dead letters.
    // Later batches are in flight (depth 4) and answered meanwhile; settling any of them would
    // move the cursor over e3, whose dead letter would then be lost.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = Journal::open(&path).unwrap();
    let ids: Vec<String> = (1..=40).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    j.enqueue(&evs(&refs)).unwrap();
    let sql = |s: &str| espm_testkit::journal_sql(&path, s);
    sql("CREATE TRIGGER refuse BEFORE INSERT ON dead_letters \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;");
    let sink = Arc::new(ScriptSink {
        depth: 4,
        ..ScriptSink::new("p").rule(|e| match e.event.id.as_str() {
            "e3" => Outcome::DeadLetter {
                reason: "too large".into(),
                attempts: 1,
            },
            _ => Outcome::Delivered,
        })
    });
    let r = spawn(&j, sink.clone(), fast_cfg(5));
    wait_for("a refused settle", || {
        r.state
            .last_error()
            .is_some_and(|e| e.contains("disk is full"))
    })
    .await;
    wait_for("later batches answered, more than once", || {
        sink.delivered_ids().iter().filter(|d| *d == "e20").count() >= 2
    })
    .await;
    assert!(
        r.state.cursor() < 3,
        "cursor {} passed e3",
        r.state.cursor()
    );
    assert_eq!(j.cursor("p").unwrap(), r.state.cursor());
    assert!(j.dlq_list(Some("p")).unwrap().is_empty());

    sql("DROP TRIGGER refuse;");
    wait_for("cursor at 40", || r.state.cursor() == 40).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();
    assert_eq!(j.cursor("p").unwrap(), 40);
    let dl = j.dlq_list(Some("p")).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].event_id, "e3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_stops_and_keeps_events() {
    let (_d, j) = journal();
    j.enqueue(&evs(&["a", "b", "c", "d"])).unwrap();
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let g = gone.clone();
    let sink = Arc::new(ScriptSink::new("hook").rule(move |e| {
        if e.event.id == "c" && g.load(Ordering::SeqCst) {
            Outcome::Disabled {
                reason: "410 Gone".into(),
            }
        } else {
            Outcome::Delivered
        }
    }));
    let r = spawn(&j, sink.clone(), fast_cfg(10));
    // The driver returns on its own.
    r.handle.await.unwrap();
    assert!(r.state.is_disabled());
    assert!(!r.state.is_ready());
    assert_eq!(r.state.disabled_reason().as_deref(), Some("410 Gone"));
    assert_eq!(j.cursor("hook").unwrap(), 2);
    let left: Vec<_> = j
        .read_outbox("hook", 2, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.event.id.clone())
        .collect();
    assert_eq!(left, vec!["c", "d"]);
    assert_eq!(j.dlq_count(Some("hook")).unwrap(), 0);

    // Re-enabled (a new driver), it picks up where it stopped.
    r.state.clear_disabled();
    gone.store(false, Ordering::SeqCst);
    let r2 = spawn(&j, sink.clone(), fast_cfg(10));
    wait_for("cursor at 4", || r2.state.cursor() == 4).await;
    r2.shutdown.cancel();
    r2.handle.await.unwrap();
    assert!(sink.delivered_ids().iter().any(|d| d == "c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sink_does_not_hold_back_another() {
    let (_d, j) = journal();
    j.enqueue(&evs(&["1", "2", "3"])).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let slow = Arc::new(ScriptSink {
        name: "slow".into(),
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let fast = Arc::new(ScriptSink::new("fast"));
    let rs = spawn(&j, slow.clone(), fast_cfg(2));
    let rf = spawn(&j, fast.clone(), fast_cfg(2));
    wait_for("fast drained", || rf.state.cursor() == 3).await;
    assert_eq!(j.cursor("slow").unwrap(), 0);
    assert_eq!(j.outbox_depth("slow").unwrap().pending, 3);
    assert_eq!(fast.delivered_ids(), vec!["1", "2", "3"]);
    // Compaction must not drop what the slow sink still needs.
    j.compact(
        Duration::ZERO,
        std::time::SystemTime::now() + Duration::from_secs(3600),
    )
    .unwrap();
    gate.add_permits(10);
    wait_for("slow drained", || rs.state.cursor() == 3).await;
    assert_eq!(slow.delivered_ids(), vec!["1", "2", "3"]);
    for r in [rs, rf] {
        r.shutdown.cancel();
        r.handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaccepted_events_are_skipped_and_wake_works() {
    let (_d, j) = journal();
    let sink = Arc::new(ScriptSink {
        name: "filtered".into(),
        filter: true,
        ..Default::default()
    });
    // A very long idle poll: only the wake-up can make it notice new events.
    let cfg = DriverConfig {
        idle_poll: Duration::from_secs(3600),
        ..fast_cfg(10)
    };
    let r = spawn(&j, sink.clone(), cfg);
    wait_for("started", || r.state.is_connected()).await;
    // Let it reach the idle wait, then enqueue and wake.
    tokio::time::sleep(Duration::from_millis(50)).await;
    j.enqueue(&evs(&["x", "skip1", "y", "skip2"])).unwrap();
    r.wake.notify_one();
    wait_for("cursor at 4", || r.state.cursor() == 4).await;
    assert_eq!(sink.delivered_ids(), vec!["x", "y"]);
    let seen: Vec<_> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(i, _)| i.clone())
        .collect();
    assert_eq!(seen, vec!["x", "y"]);
    r.shutdown.cancel();
    r.handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_writes_every_event_and_survives_reopen() {
    let (d, j) = journal();
    let path = d.path().join("out/nested/events.jsonl");
    let cfg = FileSinkConfig {
        name: "file".into(),
        path: path.clone(),
    };
    let ids1: Vec<String> = (0..1200).map(|i| format!("f{i}")).collect();
    j.enqueue(&ids1.iter().map(|i| ev(i)).collect::<Vec<_>>())
        .unwrap();
    let sink = Arc::new(FileSink::new(&cfg));
    let r = spawn(&j, sink.clone(), fast_cfg(500));
    wait_for("file drained", || r.state.cursor() == 1200).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();
    sink.close(Duration::from_secs(1)).await;

    // A new sink instance on the same file appends.
    let ids2: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
    j.enqueue(&ids2.iter().map(|i| ev(i)).collect::<Vec<_>>())
        .unwrap();
    let sink2 = Arc::new(FileSink::new(&cfg));
    let r = spawn(&j, sink2.clone(), fast_cfg(500));
    wait_for("file drained again", || r.state.cursor() == 1210).await;
    r.shutdown.cancel();
    r.handle.await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let got: Vec<CloudEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got_ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    let want: Vec<String> = ids1.iter().chain(&ids2).cloned().collect();
    assert_eq!(got_ids, want);
    assert_eq!(got[0], ev("f0"));
}

#[tokio::test]
async fn console_sink_prints_one_json_line_per_event() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let sink = ConsoleSink::with_writer("console", Box::new(buf.clone()));
    assert_eq!(sink.kind(), "console");
    let batch: Vec<Envelope> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, id)| Envelope {
            seq: i as i64 + 1,
            event: ev(id).into(),
            enqueued_at: std::time::SystemTime::now(),
            attempts: 0,
        })
        .collect();
    assert_eq!(
        sink.deliver(&batch).await,
        vec![Outcome::Delivered, Outcome::Delivered]
    );
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<CloudEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, vec![ev("a"), ev("b")]);
}

#[tokio::test]
async fn file_sink_reports_retry_when_it_cannot_write() {
    // A path whose parent is a regular file cannot be created, even by root.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let sink = FileSink::new(&FileSinkConfig {
        name: "bad".into(),
        path: plain.join("events.jsonl"),
    });
    assert!(sink.start().await.is_err());
    let out = sink
        .deliver(&[Envelope {
            seq: 1,
            event: ev("a").into(),
            enqueued_at: std::time::SystemTime::now(),
            attempts: 0,
        }])
        .await;
    assert!(matches!(out.as_slice(), [Outcome::Retry { .. }]));
}
