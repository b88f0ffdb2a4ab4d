//! Quarantine (one transaction with its event, stored once per digest), fragments, requeue, the
//! spool and the free-space check, against real SQLite files.

mod common;

use common::{ev, scope};
use espm_journal::{body_digest, Journal, QuarantineOutcome, RawId, Scope, Spool};

fn open(dir: &tempfile::TempDir) -> Journal {
    Journal::open(&dir.path().join("j.db")).unwrap()
}

#[test]
fn quarantine_and_its_event_are_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(&dir);
    let raw = j.record_raw(&scope(), "/n", 200, b"garbage").unwrap();
    // Make the event's append fail inside the transaction, as a crash between the two would.
    let conn = rusqlite::Connection::open(dir.path().join("j.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_events BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .unwrap();
    assert!(j.quarantine(raw, "not xml", |_, _| ev("q")).is_err());
    // Neither happened: the body is still waiting for a parse, so recovery retries it.
    assert_eq!(j.unprocessed_raw_ids(&scope()).unwrap(), vec![raw]);
    assert!(j.quarantine_list().unwrap().is_empty());
    conn.execute_batch("DROP TRIGGER no_events;").unwrap();
    assert_eq!(
        j.quarantine(raw, "not xml", |_, _| ev("q")).unwrap(),
        QuarantineOutcome::Stored(raw)
    );
    assert_eq!(j.quarantine_list().unwrap().len(), 1);
    assert_eq!(j.head_seq().unwrap(), 1);
}

#[test]
fn identical_quarantined_bodies_are_stored_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(&dir);
    let mut events = 0;
    for i in 0..5 {
        let raw = j.record_raw(&scope(), "/n", 200, b"poison").unwrap();
        let out = j
            .quarantine(raw, "bad", |_, d| {
                events += 1;
                ev(&format!("q-{d}"))
            })
            .unwrap();
        if i == 0 {
            assert_eq!(out, QuarantineOutcome::Stored(raw));
        } else {
            assert!(matches!(out, QuarantineOutcome::Duplicate(_)));
            // The copy's row is gone: the bytes are stored once.
            assert_eq!(j.raw_body(raw).unwrap(), None);
        }
    }
    let q = j.quarantine_list().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].seen_count, 5);
    assert_eq!(q[0].sha256, body_digest(b"poison"));
    assert_eq!(events, 1, "only the first sighting is announced");
    assert_eq!(j.head_seq().unwrap(), 1);
    // Other bytes, or another account, are stored on their own.
    let other = j.record_raw(&scope(), "/n", 200, b"other").unwrap();
    assert_eq!(
        j.quarantine(other, "bad", |_, _| ev("q2")).unwrap(),
        QuarantineOutcome::Stored(other)
    );
    let b = Scope::new("sim", "other-account");
    let elsewhere = j.record_raw(&b, "/n", 200, b"poison").unwrap();
    assert_eq!(
        j.quarantine(elsewhere, "bad", |_, _| ev("q3")).unwrap(),
        QuarantineOutcome::Stored(elsewhere)
    );
}

#[test]
fn a_fragment_is_quarantined_with_its_bytes_and_requeued_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(&dir);
    let parent = j
        .record_raw(&scope(), "/n", 200, b"<list>...</list>")
        .unwrap();
    let out = j
        .quarantine_fragment(
            parent,
            "/n#notification",
            b"<notification>x</notification>",
            "bad id",
            |id, _| ev(&format!("frag-{}", id.0)),
        )
        .unwrap();
    let QuarantineOutcome::Stored(frag) = out else {
        panic!("expected a stored fragment, got {out:?}")
    };
    let q = j.quarantine_list().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].fragment_of, Some(parent));
    assert_eq!(
        j.raw_body(frag).unwrap().as_deref(),
        Some(&b"<notification>x</notification>"[..])
    );
    // The same fragment again (the peek, then the clear) is counted, not stored.
    assert!(matches!(
        j.quarantine_fragment(parent, "/n#notification", b"<notification>x</notification>", "bad id", |_, _| ev("dup")).unwrap(),
        QuarantineOutcome::Duplicate(f) if f == frag
    ));
    let body = j.requeue_quarantined(frag).unwrap();
    assert_eq!(body.state, "received");
    assert_eq!(body.fragment_of, Some(parent));
    assert!(
        j.requeue_quarantined(frag).is_err(),
        "only a quarantined body can be requeued"
    );
    assert!(j.requeue_quarantined(RawId(999)).is_err());
}

#[test]
fn spooled_bodies_are_ingested_in_order_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(&dir);
    let spool = Spool::for_journal(&dir.path().join("j.db"), None);
    let other = Scope::new("sim", "b");
    spool
        .write(&scope(), "notification/list?clear=true", 200, b"first")
        .unwrap();
    spool
        .write(&other, "notification/list?clear=true", 200, b"theirs")
        .unwrap();
    spool
        .write(&scope(), "notification/list?clear=true", 200, b"second")
        .unwrap();
    assert_eq!(spool.pending(None).len(), 3);
    assert_eq!(spool.pending(Some(&scope())).len(), 2);
    assert_eq!(spool.ingest(&j, Some(&scope())).unwrap(), 2);
    let ids = j.unprocessed_raw_ids(&scope()).unwrap();
    let bodies: Vec<Vec<u8>> = ids
        .iter()
        .map(|&id| j.stored_body(id).unwrap().unwrap().body)
        .collect();
    assert_eq!(bodies, vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(
        spool.pending(None).len(),
        1,
        "the other account's body stays"
    );
    assert_eq!(spool.ingest(&j, None).unwrap(), 1);
    assert!(spool.pending(None).is_empty());
}

#[test]
fn a_spool_falls_back_to_the_second_directory() {
    let dir = tempfile::tempdir().unwrap();
    // The primary spool path is a file, so it cannot be a directory.
    let journal_path = dir.path().join("j.db");
    std::fs::write(dir.path().join("j.db.spool"), b"in the way").unwrap();
    let fallback = dir.path().join("fallback");
    let spool = Spool::for_journal(&journal_path, Some(fallback.clone()));
    let p = spool
        .write(&scope(), "notification/list?clear=true", 200, b"kept")
        .unwrap();
    assert!(p.starts_with(&fallback));
    assert_eq!(spool.pending(None).len(), 1);
}

#[test]
fn check_room_compares_free_space_with_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(&dir);
    let free = j.free_space().unwrap();
    assert!(free > 0);
    assert!(j.check_room(1).is_ok());
    let e = j.check_room(u64::MAX).unwrap_err();
    assert!(e.is_unwritable(), "{e}");
    assert!(e.to_string().contains("needed"), "{e}");
}
