//! Building Kafka records from events (the sink's own CPU per record, next to the derivation of
//! `partitionkey` from `data`, which a record needs for its key and its header).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use espm_config::KafkaMode;
use espm_events::{normalize_document, Origin, Template};
use espm_sink_kafka::RequestBuilder;

const LIST: &[u8] = include_bytes!("../../../tests/fixtures/notifications/mixed.xml");

fn bench(c: &mut Criterion) {
    let events = normalize_document(&Origin::new("sim", "acme"), LIST).expect("fixture parses");
    let builder = RequestBuilder::new(
        Template::parse("espm.{type}").expect("topic"),
        Template::parse("{partitionkey}").expect("key"),
        KafkaMode::Binary,
    );
    let mut g = c.benchmark_group("kafka_records");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("build", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(builder.build(black_box(ev)).ok());
            }
        })
    });
    g.bench_function("partitionkey_alone", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(black_box(ev).partitionkey());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
