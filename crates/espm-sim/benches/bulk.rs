//! Load generation and a full clear=true read of 100k notifications (the `/sim/notifications`
//! path must stay well under a few seconds).

use criterion::{criterion_group, criterion_main, Criterion};
use espm_sim::World;

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("notifications");
    g.sample_size(10);
    g.bench_function("generate_and_read_100k", |b| {
        b.iter(|| {
            let mut w = World::new(42);
            w.bulk_notifications(100_000, &[]);
            let (_, list) = w.read_notifications(true, true, None);
            espm_model::to_xml(&list).len()
        })
    });
    g.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
