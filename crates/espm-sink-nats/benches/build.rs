//! Building NATS messages from events: the sink's own CPU per message (headers, subject and
//! the structured payload), measured apart from the broker.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use espm_events::{normalize_document, Origin, Template};
use espm_sink_nats::request_builder::build_request;

const LIST: &[u8] = include_bytes!("../../../tests/fixtures/notifications/mixed.xml");

fn bench(c: &mut Criterion) {
    let events = normalize_document(&Origin::new("sim", "acme"), LIST).expect("fixture parses");
    let subject = Template::parse("espm.{espmenvironment}.{type}").expect("subject");
    let mut g = c.benchmark_group("nats_messages");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("build", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(build_request(&subject, black_box(ev), true));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
