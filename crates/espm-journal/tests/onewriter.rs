//! Issue 8, items 8 and 9: one writer per journal, cursors that never move backwards, inspection
//! that never writes, and sink cursors nobody reads any more.

mod common;

use std::time::{Duration, SystemTime};

use common::ev;
use espm_journal::{Journal, JournalError, JournalLock, NewDeadLetter};

fn far_future() -> SystemTime {
    SystemTime::now() + Duration::from_secs(365 * 86_400)
}

#[test]
fn a_cursor_never_moves_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.enqueue(&[ev("1"), ev("2"), ev("3"), ev("4")]).unwrap();
    j.set_cursor("s", 3).unwrap();
    // A stale writer (a second process, a slow batch) stores an older position.
    j.set_cursor("s", 1).unwrap();
    assert_eq!(j.cursor("s").unwrap(), 3);
    j.settle("s", &[] as &[NewDeadLetter], 2).unwrap();
    assert_eq!(j.cursor("s").unwrap(), 3);
    assert_eq!(j.outbox_depth("s").unwrap().pending, 1);
    j.set_cursor("s", 4).unwrap();
    assert_eq!(j.cursor("s").unwrap(), 4);
}

#[test]
fn a_second_lock_on_one_journal_is_refused_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let first = JournalLock::acquire(&path).unwrap();
    let err = JournalLock::acquire(&path).unwrap_err();
    match &err {
        JournalError::InUse { holder, .. } => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(err.to_string().contains("in use"), "{err}");
    // Another journal is independent; releasing the lock lets the next writer in.
    let _other = JournalLock::acquire(&dir.path().join("other.db")).unwrap();
    drop(first);
    let _again = JournalLock::acquire(&path).unwrap();
}

#[test]
fn sinks_no_longer_configured_are_reported_and_can_be_released() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.enqueue(&[ev("1"), ev("2")]).unwrap();
    // An earlier configuration had "retired"; it never read anything.
    assert!(j.register_sinks(&["retired".into()]).unwrap().is_empty());
    let orphans = j.register_sinks(&["kafka".into()]).unwrap();
    assert_eq!(
        orphans.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec!["retired"]
    );
    j.set_cursor("kafka", 2).unwrap();
    // The orphan freezes compaction...
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        0
    );
    // ...until it is released.
    assert!(j.forget_sink("retired").unwrap());
    assert!(!j.forget_sink("retired").unwrap());
    assert!(j.register_sinks(&["kafka".into()]).unwrap().is_empty());
    assert_eq!(
        j.compact(Duration::ZERO, far_future()).unwrap().outbox_rows,
        2
    );
}

#[test]
fn read_only_inspection_of_a_closed_journal_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let j = Journal::open(&path).unwrap();
        j.enqueue(&[ev("1")]).unwrap();
        j.set_cursor("s", 0).unwrap();
    }
    let listing = |d: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before_files = listing(dir.path());
    let before = std::fs::read(&path).unwrap();
    let j = Journal::open_read_only(&path).unwrap();
    assert_eq!(j.outbox_depth("s").unwrap().pending, 1);
    assert_eq!(j.sinks().unwrap().len(), 1);
    assert!(j.check_writable().is_err());
    drop(j);
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    // SQLite may leave its shared-memory index and an empty WAL beside the file; nothing else.
    for f in listing(dir.path()) {
        assert!(
            before_files.contains(&f) || f == "j.db-shm" || f == "j.db-wal",
            "{f} appeared"
        );
    }
    let wal = dir.path().join("j.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL written"
    );
}
