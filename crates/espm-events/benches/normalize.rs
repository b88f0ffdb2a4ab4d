//! Normalizer throughput against a bare quick-xml event scan of the same bytes (the floor any
//! XML-based normalizer pays).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use espm_events::{normalize_document, Origin};
use espm_model::{to_xml, Notification, NotificationList};
use quick_xml::events::Event;

const CODES: &[&str] = &[
    "UNSHARE",
    "SHAREUPDATE",
    "DISCONNECT",
    "TRANSFERPROPERTY",
    "NEWCODE",
];

fn big_list(n: usize) -> String {
    let notifications = (0..n)
        .map(|i| {
            let i = i as i64;
            Notification {
                notification_type_code: CODES[i as usize % CODES.len()].to_string(),
                notification_id: 8_833_000_000 + i,
                description: format!("Property {i} - Share terminated by Dana Reyes."),
                account_id: Some(68_000 + i % 97),
                username: Some(format!("customer_{}", i % 97)),
                property_id: Some(5_000_000 + i),
                meter_id: (i % 3 == 0).then_some(i),
                notification_created_date: Some(format!(
                    "2025-03-{:02}T{:02}:{:02}:07-05:00",
                    1 + i % 28,
                    i % 24,
                    i % 60
                )),
                notification_created_by: Some("riverside_dana".to_string()),
                notification_created_by_account_id: Some("68005".to_string()),
            }
        })
        .collect();
    to_xml(&NotificationList { notifications })
}

fn scan(bytes: &[u8]) -> usize {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => n += 1,
        }
        buf.clear();
    }
    n
}

fn bench(c: &mut Criterion) {
    const N: usize = 10_000;
    let xml = big_list(N);
    let bytes = xml.as_bytes();
    let origin = Origin::new("live", "acme");
    assert_eq!(
        normalize_document(&origin, bytes).map(|v| v.len()).ok(),
        Some(N)
    );

    let mut by_bytes = c.benchmark_group("bytes");
    by_bytes.throughput(Throughput::Bytes(bytes.len() as u64));
    by_bytes.bench_with_input(BenchmarkId::new("normalize_document", N), bytes, |b, x| {
        b.iter(|| normalize_document(&origin, black_box(x)))
    });
    by_bytes.bench_with_input(BenchmarkId::new("quick_xml_scan", N), bytes, |b, x| {
        b.iter(|| scan(black_box(x)))
    });
    // The model's serde parse alone: splits normalize_document into parsing and event building.
    by_bytes.bench_with_input(BenchmarkId::new("model_parse_only", N), bytes, |b, x| {
        b.iter(|| espm_model::parse::<NotificationList>(black_box(x)))
    });
    by_bytes.finish();

    let mut by_elems = c.benchmark_group("notifications");
    by_elems.throughput(Throughput::Elements(N as u64));
    by_elems.bench_with_input(BenchmarkId::new("normalize_document", N), bytes, |b, x| {
        b.iter(|| normalize_document(&origin, black_box(x)))
    });
    by_elems.bench_with_input(BenchmarkId::new("quick_xml_scan", N), bytes, |b, x| {
        b.iter(|| scan(black_box(x)))
    });
    by_elems.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
