//! State-machine property test: random interleavings of enqueue, commits of notifications (whose
//! events share one outbox page per commit), per-sink read + cursor moves, compaction and reopen never skip or lose an undelivered event for any sink.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::{ev, ev_for, scope};
use espm_journal::{Journal, NotificationEntry};
use proptest::prelude::*;

const SINKS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// Enqueue events with these ids (from a small space, so duplicates happen).
    Enqueue(Vec<u8>),
    /// Commit notifications with these ids, one event each (a page), as a drain part does.
    Commit(Vec<u8>),
    /// Sink reads up to `limit` after its cursor and acknowledges the first `ack` of them.
    Consume {
        sink: usize,
        limit: usize,
        ack: usize,
    },
    /// Compact with zero retention in the far future (the most aggressive compaction).
    Compact,
    /// Drop and reopen the journal.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0u8..40, 0..6).prop_map(Op::Enqueue),
        3 => prop::collection::vec(0u8..40, 0..8).prop_map(Op::Commit),
        4 => (0..SINKS.len(), 1usize..6, 0usize..6)
            .prop_map(|(sink, limit, ack)| Op::Consume { sink, limit, ack }),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_sink_ever_skips_or_loses_an_event(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = Journal::open(&path).unwrap();
        for s in SINKS {
            j.register_sink(s).unwrap();
        }
        // Model: every distinct id in enqueue order; per sink how many it has acknowledged.
        let mut log: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut acked = [0usize; SINKS.len()];
        let far = SystemTime::now() + Duration::from_secs(86_400);

        for op in ops {
            match op {
                Op::Enqueue(ids) => {
                    let events: Vec<_> = ids.iter().map(|i| ev(&format!("e{i}"))).collect();
                    let mut expected = 0;
                    for e in &events {
                        if seen.insert(e.id.clone()) {
                            log.push(e.id.clone());
                            expected += 1;
                        }
                    }
                    prop_assert_eq!(j.enqueue(&events).unwrap(), expected);
                }
                Op::Commit(ids) => {
                    let raw = j.record_raw(&scope(), "/notification/list", 200, b"<x/>").unwrap();
                    let notes: Vec<_> = ids
                        .iter()
                        .map(|i| NotificationEntry {
                            notification_id: i64::from(*i),
                            type_code: "UNSHARE".into(),
                            json: "{}".into(),
                        })
                        .collect();
                    let events: Vec<_> = ids
                        .iter()
                        .map(|i| ev_for(&format!("n{i}"), i64::from(*i)))
                        .collect();
                    let mut expected = 0;
                    for e in &events {
                        if seen.insert(e.id.clone()) {
                            log.push(e.id.clone());
                            expected += 1;
                        }
                    }
                    let stats = j.commit_notifications(&scope(), raw, &notes, &events).unwrap();
                    prop_assert_eq!(stats.new_events, expected);
                }
                Op::Consume { sink, limit, ack } => {
                    let name = SINKS[sink];
                    let cursor = j.cursor(name).unwrap();
                    let rows = j.read_outbox(name, cursor, limit).unwrap();
                    let want: Vec<_> = log[acked[sink]..].iter().take(limit).cloned().collect();
                    let got: Vec<_> = rows.iter().map(|r| r.event.id.clone()).collect();
                    prop_assert_eq!(&got, &want, "sink {} read after cursor {}", name, cursor);
                    let n = ack.min(rows.len());
                    if n > 0 {
                        j.set_cursor(name, rows[n - 1].seq).unwrap();
                        acked[sink] += n;
                    }
                }
                Op::Compact => {
                    j.compact(Duration::ZERO, far).unwrap();
                }
                Op::Reopen => {
                    drop(j);
                    j = Journal::open(&path).unwrap();
                }
            }
            // Invariant after every step: each sink's unacknowledged events are all still there,
            // in order, and its depth matches.
            for (i, name) in SINKS.iter().enumerate() {
                let cursor = j.cursor(name).unwrap();
                let rows = j.read_outbox(name, cursor, usize::MAX).unwrap();
                let got: Vec<_> = rows.iter().map(|r| r.event.id.clone()).collect();
                prop_assert_eq!(&got[..], &log[acked[i]..]);
                prop_assert_eq!(j.outbox_depth(name).unwrap().pending as usize, log.len() - acked[i]);
            }
        }
    }
}
