//! Behaviour of the journal against real SQLite files.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{ev, ev_for, scope};
use espm_journal::{DeliveryStatus, Journal, NewDeadLetter, NotificationEntry, RawId, Scope};

fn note(id: i64) -> NotificationEntry {
    NotificationEntry {
        notification_id: id,
        type_code: "SHARE_UPDATE".into(),
        json: serde_json::json!({ "notificationId": id }).to_string(),
    }
}

fn ids(rows: &[espm_journal::OutboxRow]) -> Vec<String> {
    rows.iter().map(|r| r.event.id.clone()).collect()
}

fn far_future() -> SystemTime {
    SystemTime::now() + Duration::from_secs(365 * 86_400)
}

#[test]
fn open_creates_parent_dirs_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/journal.db");
    let s = scope();
    {
        let j = Journal::open(&path).unwrap();
        let raw = j
            .record_raw(&s, "/notification/list", 200, b"<xml/>")
            .unwrap();
        let stats = j
            .commit_notifications(
                &s,
                raw,
                &[note(1), note(2)],
                &[ev_for("e1", 1), ev_for("e2", 2)],
            )
            .unwrap();
        assert_eq!(stats.new_notifications, 2);
        assert_eq!(stats.new_events, 2);
        j.set_cursor("k", 1).unwrap();
        let bad = j
            .record_raw(&s, "/notification/list", 200, b"garbage")
            .unwrap();
        j.quarantine(bad, "not xml", |_, _| ev("q")).unwrap();
        j.record_answer(&s, "connection", 77, "accept").unwrap();
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.cursor("k").unwrap(), 1);
    assert_eq!(
        ids(&j.read_outbox("k", 0, 10).unwrap()),
        vec!["e1", "e2", "q"]
    );
    assert_eq!(ids(&j.read_outbox("k", 1, 10).unwrap()), vec!["e2", "q"]);
    assert_eq!(j.head_seq().unwrap(), 3);
    let q = j.quarantine_list().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].error, "not xml");
    assert_eq!(q[0].len, 7);
    assert_eq!(
        j.raw_body(q[0].id).unwrap().as_deref(),
        Some(&b"garbage"[..])
    );
    assert_eq!(
        j.answer_for(&s, "connection", 77).unwrap().as_deref(),
        Some("accept")
    );
    assert_eq!(j.answer_for(&s, "connection", 78).unwrap(), None);
    // Same notification after reopen is a duplicate, and its event is not enqueued again.
    let raw = j
        .record_raw(&s, "/notification/list", 200, b"<xml/>")
        .unwrap();
    let stats = j
        .commit_notifications(
            &s,
            raw,
            &[note(2), note(3)],
            &[ev_for("e2", 2), ev_for("e3", 3)],
        )
        .unwrap();
    assert_eq!(stats.new_notifications, 1);
    assert_eq!(stats.duplicate_notifications, 1);
    assert_eq!(stats.new_events, 1);
    assert_eq!(
        ids(&j.read_outbox("k", 0, 10).unwrap()),
        vec!["e1", "e2", "q", "e3"]
    );
}

#[test]
fn notifications_are_scoped_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let a = Scope::new("live", "a");
    let b = Scope::new("live", "b");
    let ra = j.record_raw(&a, "/n", 200, b"x").unwrap();
    let rb = j.record_raw(&b, "/n", 200, b"x").unwrap();
    assert_eq!(
        j.commit_notifications(&a, ra, &[note(5)], &[ev("a5")])
            .unwrap()
            .new_notifications,
        1
    );
    assert_eq!(
        j.commit_notifications(&b, rb, &[note(5)], &[ev("b5")])
            .unwrap()
            .new_notifications,
        1
    );
    assert_eq!(j.notification_history(None, 5).unwrap().len(), 2);
    assert_eq!(j.notification_history(Some(&a), 5).unwrap().len(), 1);
}

#[test]
fn enqueue_is_idempotent_even_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    assert_eq!(j.enqueue(&[ev("x"), ev("y"), ev("x")]).unwrap(), 2);
    assert_eq!(j.enqueue(&[ev("y"), ev("z")]).unwrap(), 1);
    j.set_cursor("s", j.head_seq().unwrap()).unwrap();
    let st = j.compact(Duration::ZERO, far_future()).unwrap();
    assert_eq!(st.outbox_rows, 3);
    assert_eq!(
        j.enqueue(&[ev("x")]).unwrap(),
        0,
        "compacted id must stay known"
    );
    assert!(j.read_outbox("s", 0, 10).unwrap().is_empty());
    // Sequence numbers are never reused after compaction emptied the outbox.
    assert_eq!(j.enqueue(&[ev("w")]).unwrap(), 1);
    let rows = j.read_outbox("s", 0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].seq, 4);
    assert_eq!(j.read_outbox("s", 3, 10).unwrap().len(), 1);
}

#[test]
fn cursors_are_independent_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.enqueue(&[ev("1"), ev("2"), ev("3")]).unwrap();
    assert_eq!(j.cursor("fast").unwrap(), 0);
    assert_eq!(j.cursor("slow").unwrap(), 0);
    j.set_cursor("fast", 3).unwrap();
    assert_eq!(j.cursor("slow").unwrap(), 0);
    assert_eq!(j.outbox_depth("fast").unwrap().pending, 0);
    let d = j.outbox_depth("slow").unwrap();
    assert_eq!(d.pending, 3);
    assert!(d.oldest_enqueued_at.is_some());
    assert_eq!(ids(&j.read_outbox("slow", 0, 2).unwrap()), vec!["1", "2"]);
    // Compaction must keep what "slow" has not passed.
    j.set_cursor("slow", 1).unwrap();
    let st = j.compact(Duration::ZERO, far_future()).unwrap();
    assert_eq!(st.outbox_rows, 1);
    assert_eq!(ids(&j.read_outbox("slow", 1, 10).unwrap()), vec!["2", "3"]);
    let names: Vec<_> = j
        .sinks()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.cursor))
        .collect();
    assert_eq!(
        names,
        vec![("fast".to_string(), 3), ("slow".to_string(), 1)]
    );
}

#[test]
fn compaction_respects_retention_and_never_drops_undelivered() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let s = scope();
    // No sink registered: nothing untargeted may go.
    j.enqueue(&[ev("1"), ev("2")]).unwrap();
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        0
    );
    j.register_sink("a").unwrap();
    j.set_cursor("b", 2).unwrap();
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        0
    );
    j.set_cursor("a", 2).unwrap();
    // Too young for a 1-day retention.
    assert_eq!(
        j.compact(Duration::from_secs(86_400), SystemTime::now())
            .unwrap()
            .outbox_rows,
        0
    );
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        2
    );

    // Raw bodies: parsed ones go, quarantined and unparsed stay.
    let parsed = j.record_raw(&s, "/n", 200, b"ok").unwrap();
    j.commit_notifications(&s, parsed, &[note(1)], &[]).unwrap();
    let quarantined = j.record_raw(&s, "/n", 200, b"bad").unwrap();
    j.quarantine(quarantined, "boom", |_, _| ev("qb")).unwrap();
    let unparsed = j.record_raw(&s, "/n", 200, b"?").unwrap();
    let st = j.compact(Duration::ZERO, far_future()).unwrap();
    assert_eq!(st.raw_bodies, 1);
    assert_eq!(j.raw_body(parsed).unwrap(), None);
    assert!(j.raw_body(quarantined).unwrap().is_some());
    assert!(j.raw_body(unparsed).unwrap().is_some());

    // A forgotten sink no longer holds compaction back.
    j.enqueue(&[ev("3")]).unwrap();
    j.set_cursor("a", 3).unwrap();
    j.set_cursor("b", 3).unwrap();
    j.register_sink("gone").unwrap();
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        0
    );
    assert!(j.forget_sink("gone").unwrap());
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        1
    );
}

#[test]
fn dlq_replay_targets_one_sink() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.enqueue(&[ev("1"), ev("2")]).unwrap();
    let rows = j.read_outbox("hook", 0, 10).unwrap();
    j.settle(
        "hook",
        &[NewDeadLetter {
            row: rows[0].clone(),
            reason: "HTTP 400".into(),
            attempts: 3,
        }],
        2,
    )
    .unwrap();
    j.set_cursor("kafka", 2).unwrap();
    assert_eq!(j.cursor("hook").unwrap(), 2);
    let dl = j.dlq_list(Some("hook")).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].event_id, "1");
    assert_eq!(dl[0].seq, 1);
    assert_eq!(dl[0].reason, "HTTP 400");
    assert_eq!(dl[0].attempts, 3);
    assert_eq!(dl[0].event, *rows[0].event);
    assert_eq!(j.dlq_count(Some("hook")).unwrap(), 1);
    assert_eq!(j.dlq_count(Some("kafka")).unwrap(), 0);
    assert_eq!(j.dlq_count(None).unwrap(), 1);
    assert!(j.dlq_list(Some("kafka")).unwrap().is_empty());

    // Replaying an event whose id is already in the outbox must still work.
    let seq = j.dlq_replay(dl[0].id).unwrap();
    assert_eq!(seq, 3);
    assert_eq!(j.dlq_count(None).unwrap(), 0);
    assert_eq!(ids(&j.read_outbox("hook", 2, 10).unwrap()), vec!["1"]);
    assert!(j.read_outbox("kafka", 2, 10).unwrap().is_empty());
    assert_eq!(j.outbox_depth("kafka").unwrap().pending, 0);
    assert_eq!(j.outbox_depth("hook").unwrap().pending, 1);
    assert!(matches!(
        j.dlq_replay(dl[0].id),
        Err(espm_journal::JournalError::NotFound { .. })
    ));

    // The replay row is kept until its target passes it, whatever other sinks do.
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        2
    );
    assert_eq!(ids(&j.read_outbox("hook", 2, 10).unwrap()), vec!["1"]);
    j.set_cursor("hook", 3).unwrap();
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        1
    );

    // Dead-lettering the same (sink, seq) twice keeps one entry; drop removes it.
    let row = j.read_outbox("x", 0, 10).unwrap();
    assert!(row.is_empty());
    j.enqueue(&[ev("4")]).unwrap();
    let row = j.read_outbox("x", 0, 10).unwrap().remove(0);
    j.dead_letter("x", &row, "first", 1).unwrap();
    j.dead_letter("x", &row, "second", 2).unwrap();
    let dl = j.dlq_list(Some("x")).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "second");
    assert!(j.dlq_drop(dl[0].id).unwrap());
    assert!(!j.dlq_drop(dl[0].id).unwrap());
}

#[test]
fn pending_snapshots_replace_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let s = scope();
    let j = Journal::open(&path).unwrap();
    assert!(j.pending_snapshot(&s, "connection").unwrap().is_empty());
    let raw = j
        .record_raw(&s, "/connect/account/pending/list", 200, b"<x/>")
        .unwrap();
    let mut snap = BTreeMap::new();
    snap.insert("1".to_string(), serde_json::json!({"id": 1}));
    snap.insert("2".to_string(), serde_json::json!({"id": 2}));
    assert_eq!(
        j.commit_pending(&s, "connection", &[raw], &snap, &[ev("p1"), ev("p2")])
            .unwrap(),
        2
    );
    let mut snap2 = BTreeMap::new();
    snap2.insert("2".to_string(), serde_json::json!({"id": 2}));
    assert_eq!(
        j.commit_pending(&s, "connection", &[], &snap2, &[ev("p1-gone"), ev("p2")])
            .unwrap(),
        1
    );
    drop(j);
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.pending_snapshot(&s, "connection").unwrap(), snap2);
    assert!(j.pending_snapshot(&s, "property").unwrap().is_empty());
    // The raw body was marked parsed, so compaction may drop it.
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().raw_bodies,
        1
    );
}

#[test]
fn history_shows_raws_events_and_per_sink_state() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let s = scope();
    j.register_sink("a").unwrap();
    j.register_sink("b").unwrap();
    let r1 = j
        .record_raw(&s, "/notification/list?clear=false", 200, b"1")
        .unwrap();
    j.commit_notifications(
        &s,
        r1,
        &[note(9), note(10)],
        &[ev_for("n9", 9), ev_for("n10", 10)],
    )
    .unwrap();
    let r2 = j
        .record_raw(&s, "/notification/list?clear=true", 200, b"2")
        .unwrap();
    j.commit_notifications(&s, r2, &[note(9)], &[ev_for("n9", 9)])
        .unwrap();

    let rows = j.read_outbox("a", 0, 10).unwrap();
    j.settle(
        "a",
        &[NewDeadLetter {
            row: rows[0].clone(),
            reason: "nope".into(),
            attempts: 5,
        }],
        2,
    )
    .unwrap();

    let h = j.notification_history(Some(&s), 9).unwrap();
    assert_eq!(h.len(), 1);
    let h = &h[0];
    assert_eq!(h.type_code, "SHARE_UPDATE");
    assert_eq!(h.raw_ids, vec![r1, r2]);
    assert_eq!(h.events.len(), 1);
    let e = &h.events[0];
    assert_eq!((e.event_id.as_str(), e.seq), ("n9", 1));
    assert_eq!(e.deliveries.len(), 2);
    assert_eq!(e.deliveries[0].sink, "a");
    assert_eq!(
        e.deliveries[0].status,
        DeliveryStatus::DeadLettered {
            reason: "nope".into(),
            attempts: 5
        }
    );
    assert_eq!(e.deliveries[1].status, DeliveryStatus::Pending);

    let id = j.dlq_list(Some("a")).unwrap()[0].id;
    let seq = j.dlq_replay(id).unwrap();
    let h = j.notification_history(Some(&s), 9).unwrap().remove(0);
    assert_eq!(h.events.len(), 2);
    assert_eq!(h.events[1].seq, seq);
    assert_eq!(h.events[1].target_sink.as_deref(), Some("a"));
    assert_eq!(h.events[1].deliveries.len(), 1);
    assert_eq!(h.events[1].deliveries[0].status, DeliveryStatus::Pending);
    j.set_cursor("a", seq).unwrap();
    let h = j.notification_history(Some(&s), 9).unwrap().remove(0);
    assert_eq!(h.events[1].deliveries[0].status, DeliveryStatus::Delivered);

    let h10 = j.notification_history(Some(&s), 10).unwrap().remove(0);
    assert_eq!(h10.raw_ids, vec![r1]);
    assert_eq!(h10.events[0].event_id, "n10");
    assert_eq!(
        h10.events[0].deliveries[0].status,
        DeliveryStatus::Delivered
    );
    assert!(j.notification_history(Some(&s), 11).unwrap().is_empty());
}

#[test]
fn quarantine_of_unknown_raw_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    assert!(matches!(
        j.quarantine(RawId(42), "x", |_, _| ev("q")),
        Err(espm_journal::JournalError::NotFound { .. })
    ));
}

#[test]
fn read_only_journal_is_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let j = Journal::open(&path).unwrap();
        j.enqueue(&[ev("1")]).unwrap();
        j.check_writable().unwrap();
    }
    let ro = Journal::open_read_only(&path).unwrap();
    // Reads work...
    assert_eq!(ro.read_outbox("s", 0, 10).unwrap().len(), 1);
    // ...every write reports unwritable.
    let e = ro.check_writable().unwrap_err();
    assert!(e.is_unwritable(), "{e}");
    let e = ro.enqueue(&[ev("2")]).unwrap_err();
    assert!(e.is_unwritable(), "{e}");
    assert_eq!(
        e.unwritable_kind(),
        Some(espm_journal::UnwritableKind::ReadOnly)
    );
    let e = ro.record_raw(&scope(), "/n", 200, b"x").unwrap_err();
    assert!(e.is_unwritable(), "{e}");
}

#[test]
fn locked_journal_is_unwritable() {
    // A second process holding the write lock (here: a raw connection with an open write
    // transaction) must surface as unwritable once the busy timeout expires.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = Journal::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO write_probe(id, at) VALUES (1, 0);")
        .unwrap();
    let e = j.check_writable().unwrap_err();
    assert_eq!(
        e.unwritable_kind(),
        Some(espm_journal::UnwritableKind::Locked),
        "{e}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    j.check_writable().unwrap();
}

#[test]
fn unwritable_location_is_reported_on_open() {
    // A path whose parent is a regular file cannot be created by anyone (even root).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = Journal::open(&file.join("j.db")).unwrap_err();
    // create_dir_all fails with NotADirectory/AlreadyExists; it is an I/O error, not unwritable
    // by kind, but it must not succeed.
    assert!(
        matches!(
            e,
            espm_journal::JournalError::Io(_) | espm_journal::JournalError::Unwritable { .. }
        ),
        "{e}"
    );
}

#[test]
fn retry_queue_and_endpoint_health_are_durable_and_survive_compaction() {
    use espm_journal::{NewRetry, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = Journal::open(&path).unwrap();
    j.register_sink("hook").unwrap();
    j.enqueue(&[ev("e1"), ev("e2"), ev("e3")]).unwrap();
    let rows = j.read_outbox("hook", 0, 10).unwrap();
    let now = SystemTime::now();
    let later = now + Duration::from_secs(300);
    // e1 failed (due in 5 minutes), e2 failed (due now), e3 delivered: the cursor passes all three.
    j.settle_batch(
        "hook",
        &Settlement {
            retries: vec![
                NewRetry {
                    row: rows[0].clone(),
                    attempts: 1,
                    next_attempt_at: later,
                    last_error: "HTTP 503".into(),
                },
                NewRetry {
                    row: rows[1].clone(),
                    attempts: 2,
                    next_attempt_at: now,
                    last_error: "timeout".into(),
                },
            ],
            cursor: rows[2].seq,
            succeeded: Some(false),
            ..Settlement::default()
        },
    )
    .unwrap();
    assert_eq!(j.cursor("hook").unwrap(), rows[2].seq);
    assert_eq!(j.retry_count("hook").unwrap(), 2);
    let due = j.due_retries("hook", now, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].row.event.id.as_str(), due[0].attempts), ("e2", 2));
    assert!(j.sink_health("hook").unwrap().failing_since.is_some());
    // Another sink's queue is its own.
    assert_eq!(j.retry_count("other").unwrap(), 0);

    // Compaction may drop the outbox rows the cursor passed: the queue keeps its events.
    j.compact(Duration::ZERO, far_future()).unwrap();
    drop(j);
    let j = Journal::open(&path).unwrap();
    let all = j.retry_list("hook").unwrap();
    assert_eq!(
        ids(&all.iter().map(|r| r.row.clone()).collect::<Vec<_>>()),
        ["e2", "e1"]
    );
    assert_eq!(all[1].last_error, "HTTP 503");

    // Settling a retry removes it; a success clears the failure streak.
    j.settle_batch(
        "hook",
        &Settlement {
            settled_retries: vec![rows[1].seq],
            cursor: rows[2].seq,
            succeeded: Some(true),
            ..Settlement::default()
        },
    )
    .unwrap();
    assert_eq!(j.retry_count("hook").unwrap(), 1);
    assert_eq!(j.sink_health("hook").unwrap().failing_since, None);

    // Disabled until enabled; enabling makes the queue due at once.
    assert!(!j.enable_sink("hook").unwrap());
    j.disable_sink("hook", "endpoint answered HTTP 410 Gone")
        .unwrap();
    assert!(j.sink_health("hook").unwrap().disabled_reason.is_some());
    assert!(j
        .due_retries("hook", SystemTime::now(), 10)
        .unwrap()
        .is_empty());
    assert!(j.enable_sink("hook").unwrap());
    assert_eq!(j.sink_health("hook").unwrap().disabled_reason, None);
    assert_eq!(
        j.due_retries("hook", SystemTime::now(), 10).unwrap().len(),
        1
    );

    // Forgetting the sink releases its queue and health.
    j.disable_sink("hook", "x").unwrap();
    assert!(j.forget_sink("hook").unwrap());
    assert_eq!(j.retry_count("hook").unwrap(), 0);
    assert_eq!(j.sink_health("hook").unwrap(), Default::default());
}

#[test]
fn history_shows_an_event_waiting_for_a_retry() {
    use espm_journal::{NewRetry, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let s = scope();
    j.register_sink("hook").unwrap();
    let r = j.record_raw(&s, "/notification/list", 200, b"1").unwrap();
    j.commit_notifications(&s, r, &[note(9)], &[ev_for("n9", 9)])
        .unwrap();
    let rows = j.read_outbox("hook", 0, 10).unwrap();
    j.settle_batch(
        "hook",
        &Settlement {
            retries: vec![NewRetry {
                row: rows[0].clone(),
                attempts: 1,
                next_attempt_at: far_future(),
                last_error: "HTTP 500".into(),
            }],
            cursor: rows[0].seq,
            ..Settlement::default()
        },
    )
    .unwrap();
    let h = j.notification_history(Some(&s), 9).unwrap().remove(0);
    assert!(
        matches!(
            &h.events[0].deliveries[0].status,
            DeliveryStatus::Retrying { attempts: 1, last_error, .. } if last_error == "HTTP 500"
        ),
        "{:?}",
        h.events[0].deliveries
    );
}

/// A notification listed twice in one body (PM has been seen to repeat one): its event is
/// appended once, and a second commit of the same part (a crash before the body was marked)
/// appends nothing; history names the body once.
#[test]
fn a_notification_listed_twice_in_one_commit_appends_its_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let s = scope();
    let raw = j
        .record_raw(&s, "/notification/list?clear=true", 200, b"x")
        .unwrap();
    let items = [note(5), note(6), note(5)];
    let events = [ev_for("n5", 5), ev_for("n6", 6), ev_for("n5", 5)];
    let stats = j
        .commit_notifications_part(&s, raw, &items, &events, false)
        .unwrap();
    assert_eq!(
        (
            stats.new_notifications,
            stats.duplicate_notifications,
            stats.new_events
        ),
        (2, 1, 2)
    );
    assert_eq!(ids(&j.read_outbox("a", 0, 10).unwrap()), ["n5", "n6"]);
    let again = j.commit_notifications(&s, raw, &items, &events).unwrap();
    assert_eq!((again.new_notifications, again.new_events), (0, 0));
    assert_eq!(j.read_outbox("a", 0, 10).unwrap().len(), 2);
    let h = j.notification_history(Some(&s), 5).unwrap().remove(0);
    assert_eq!(h.raw_ids, vec![raw]);
    assert_eq!(h.events.len(), 1);
}

/// A part's events take one outbox row (a page), yet every event keeps a sequence number of its
/// own: a sink reads them one by one from any cursor, even inside the page; its depth counts only
/// the events after the cursor; compaction keeps the page until every event in it was passed.
#[test]
fn a_parts_events_share_one_page_and_keep_their_own_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = Journal::open(&path).unwrap();
    let s = scope();
    j.enqueue(&[ev("before")]).unwrap();
    let raw = j
        .record_raw(&s, "/notification/list", 200, b"<x/>")
        .unwrap();
    let notes: Vec<_> = (1..=5).map(note).collect();
    let events: Vec<_> = (1..=5).map(|i| ev_for(&format!("e{i}"), i)).collect();
    let stats = j.commit_notifications(&s, raw, &notes, &events).unwrap();
    assert_eq!(stats.new_events, 5);
    j.enqueue(&[ev("after")]).unwrap();

    let rows: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3, "one row before, one page, one row after");
    assert_eq!(j.head_seq().unwrap(), 7);

    let all = j.read_outbox("k", 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&all),
        vec!["before", "e1", "e2", "e3", "e4", "e5", "after"]
    );
    // Batches smaller than the page, starting inside it.
    assert_eq!(
        ids(&j.read_outbox("k", 0, 2).unwrap()),
        vec!["before", "e1"]
    );
    assert_eq!(ids(&j.read_outbox("k", 2, 2).unwrap()), vec!["e2", "e3"]);
    assert_eq!(
        ids(&j.read_outbox("k", 4, 10).unwrap()),
        vec!["e4", "e5", "after"]
    );
    // Read ahead in whole pages: a page is never cut, whatever the limit.
    assert_eq!(
        ids(&j.read_outbox_pages("k", 0, 2).unwrap()),
        vec!["before", "e1", "e2", "e3", "e4", "e5"]
    );
    assert_eq!(
        ids(&j.read_outbox_pages("k", 2, 1).unwrap()),
        vec!["e2", "e3", "e4", "e5"]
    );
    assert_eq!(
        ids(&j.read_outbox_pages("k", 5, 2).unwrap()),
        vec!["e5", "after"]
    );

    j.set_cursor("k", 4).unwrap();
    assert_eq!(j.outbox_depth("k").unwrap().pending, 3);
    // The cursor is inside the page: only the row before it goes.
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        1
    );
    assert_eq!(
        ids(&j.read_outbox("k", 4, 10).unwrap()),
        vec!["e4", "e5", "after"]
    );
    j.set_cursor("k", 6).unwrap();
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        5
    );
    assert_eq!(ids(&j.read_outbox("k", 6, 10).unwrap()), vec!["after"]);
    assert_eq!(j.outbox_depth("k").unwrap().pending, 1);

    // The history still finds each event by its own sequence number.
    let h = j.notification_history(Some(&s), 3).unwrap();
    assert_eq!(h[0].events[0].event_id, "e3");
    assert_eq!(h[0].events[0].seq, 4);
}

/// A new journal is created with 16 KiB pages (a quarter of the system calls of SQLite's 4 KiB
/// default for the same burst); a journal created with other pages keeps them and opens as before.
#[test]
fn a_new_journal_has_16_kib_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let new = dir.path().join("new.db");
    drop(Journal::open(&new).unwrap());
    assert_eq!(page_size(&new), 16 * 1024);

    let old = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&old).unwrap();
        c.pragma_update(None, "page_size", 4096).unwrap();
        c.execute_batch("CREATE TABLE t(x); DROP TABLE t;").unwrap();
    }
    let j = Journal::open(&old).unwrap();
    assert_eq!(j.enqueue(&[ev("a")]).unwrap(), 1);
    drop(j);
    assert_eq!(page_size(&old), 4096);
}

/// A part of 153 notifications, some repeated near and far apart and some stored by an earlier
/// body: each is stored once, the first time, its event appended once and in order, and history
/// names every body that carried it. (Kept from a multi-row INSERT that was measured slower and
/// dropped: it guards any batching of the part's statements.)
#[test]
fn a_large_part_with_repeats_stores_each_notification_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let s = scope();
    let earlier = j
        .record_raw(&s, "/notification/list?clear=true", 200, b"a")
        .unwrap();
    let before = [3, 70, 145];
    j.commit_notifications(
        &s,
        earlier,
        &before.map(note),
        &before.map(|i| ev_for(&format!("n{i}"), i)),
    )
    .unwrap();
    let raw = j
        .record_raw(&s, "/notification/list?clear=true", 200, b"b")
        .unwrap();
    let mut order: Vec<i64> = (1..=150).collect();
    order.insert(20, 10);
    order.insert(100, 30);
    order.push(5);
    let items: Vec<_> = order.iter().map(|i| note(*i)).collect();
    let events: Vec<_> = order.iter().map(|i| ev_for(&format!("n{i}"), *i)).collect();
    let stats = j
        .commit_notifications_part(&s, raw, &items, &events, true)
        .unwrap();
    assert_eq!(
        (
            stats.new_notifications,
            stats.duplicate_notifications,
            stats.new_events
        ),
        (147, 6, 147)
    );
    let expected: Vec<String> = (1..=150)
        .filter(|i| !before.contains(i))
        .map(|i| format!("n{i}"))
        .collect();
    let read = j.read_outbox("a", 3, 1000).unwrap();
    assert_eq!(ids(&read), expected);
    let h = j.notification_history(Some(&s), 70).unwrap().remove(0);
    assert_eq!(h.raw_ids, vec![earlier, raw]);
    assert_eq!(h.events.len(), 1);
    for repeated in [10, 30, 5] {
        let h = j
            .notification_history(Some(&s), repeated)
            .unwrap()
            .remove(0);
        assert_eq!(h.raw_ids, vec![raw], "{repeated}");
        assert_eq!(h.events.len(), 1, "{repeated}");
    }
    // Committing the part again (a crash before the body was marked) adds nothing.
    let again = j
        .commit_notifications_part(&s, raw, &items, &events, true)
        .unwrap();
    assert_eq!((again.new_notifications, again.new_events), (0, 0));
}
