//! Outbox throughput: batched append (as the poller commits) and batched reads (as a sink
//! driver consumes).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use espm_journal::{CloudEvent, Journal, NotificationEntry, Scope};

fn event(n: u64) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("bench-{n}"),
        source: "espm://sim/bench".into(),
        ty: "gov.energystar.pm.share.updated".into(),
        subject: Some(format!("property/{n}")),
        time: Some("2025-01-01T00:00:00Z".into()),
        datacontenttype: "application/json".into(),
        dataschema: "https://example.invalid/share.json".into(),
        espmenvironment: "sim".into(),
        espmaccount: "bench".into(),
        causationid: None,
        correlationid: None,
        data:
            serde_json::json!({ "notificationId": n, "propertyId": n, "accessLevel": "READ_WRITE" })
                .into(),
    }
}

fn append(c: &mut Criterion) {
    const BATCH: u64 = 500;
    let mut g = c.benchmark_group("outbox_append");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("bench.db")).unwrap();
    let scope = Scope::new("sim", "bench");
    let mut next = 0u64;
    g.bench_function("commit_notifications_500", |b| {
        b.iter_batched(
            || {
                let start = next;
                next += BATCH;
                let items: Vec<_> = (start..start + BATCH)
                    .map(|n| NotificationEntry {
                        notification_id: n as i64,
                        type_code: "SHARE_UPDATE".into(),
                        json: serde_json::json!({ "notificationId": n }).to_string(),
                    })
                    .collect();
                let events: Vec<_> = (start..start + BATCH).map(event).collect();
                (items, events)
            },
            |(items, events)| {
                let raw = j
                    .record_raw(&scope, "/notification/list", 200, b"<x/>")
                    .unwrap();
                j.commit_notifications(&scope, raw, &items, &events)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("enqueue_500", |b| {
        b.iter_batched(
            || {
                let start = next;
                next += BATCH;
                (start..start + BATCH).map(event).collect::<Vec<_>>()
            },
            |events| j.enqueue(&events).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    const TOTAL: u64 = 100_000;
    const BATCH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("bench.db")).unwrap();
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(5_000) {
        let events: Vec<_> = chunk.iter().copied().map(event).collect();
        j.enqueue(&events).unwrap();
    }
    let mut g = c.benchmark_group("outbox_read");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut cursor = 0i64;
    g.bench_function("read_outbox_500_and_set_cursor", |b| {
        b.iter(|| {
            let rows = j.read_outbox("bench", cursor, BATCH).unwrap();
            cursor = match rows.last() {
                Some(r) => r.seq,
                None => 0,
            };
            j.set_cursor("bench", cursor).unwrap();
            rows.len()
        })
    });
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
