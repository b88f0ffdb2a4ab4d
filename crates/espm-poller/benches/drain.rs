//! The drain's own path, without PM, the network or a sink: a journalled `clear=true` body of
//! the simulator's bulk notifications (as `espm-load` creates them) parsed from the journal,
//! normalized and committed in parts, on a fresh journal per iteration. End to end runs on
//! the 2-core machine vary by ±15%; this is the repeatable figure for the drain's CPU per
//! notification (issue 9). No PM client: `share.updated` events are flagged, nothing is read.

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use espm_events::{quarantine_event, BodyQuarantinedData, Origin};
use espm_journal::{Journal, Scope};

/// The binary's allocator: with glibc's the figures would be the allocator's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const N: usize = 10_000;

fn body() -> Vec<u8> {
    let mut world = espm_sim::World::new(7);
    world.bulk_notifications(N, &[]);
    let (_, list) = world.read_notifications(true, true, None);
    assert_eq!(list.notifications.len(), N);
    espm_model::to_xml(&list).into_bytes()
}

/// A fresh journal holding `xml` as a quarantined body, for `reprocess` to parse and commit.
fn journal_with(xml: &[u8]) -> (tempfile::TempDir, Journal, espm_journal::RawId) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let journal = Journal::open(&dir.path().join("journal.db")).expect("journal");
    let scope = Scope::new("sim", "load");
    // Journalled as the poller does: in parts of 1 MiB as they arrive.
    let mut parts = xml.chunks(1 << 20);
    let raw = journal
        .begin_raw(
            &scope,
            "/notification/list?clear=true",
            200,
            parts.next().unwrap_or_default(),
        )
        .expect("begin");
    for (seq, part) in parts.enumerate() {
        journal
            .append_raw(raw, seq as i64 + 1, part)
            .expect("append");
    }
    journal.finish_raw(raw).expect("finish");
    let origin = Origin::new("sim", "load");
    journal
        .quarantine(raw, "bench", |id, digest| {
            quarantine_event(
                &origin,
                &BodyQuarantinedData {
                    endpoint: "/notification/list".into(),
                    raw_id: id.0,
                    sha256: digest.to_string(),
                    fragment_of: None,
                    error: "bench".into(),
                    received_at: "2026-01-01T00:00:00Z".into(),
                },
            )
        })
        .expect("quarantine");
    (dir, journal, raw)
}

fn bench(c: &mut Criterion) {
    let xml = body();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("drain");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("parse_normalize_commit_10k", |b| {
        b.iter_batched(
            || journal_with(&xml),
            |(_dir, journal, raw)| {
                let done = rt
                    .block_on(espm_poller::reprocess(&journal, raw))
                    .expect("reprocess");
                assert_eq!(done.new_events, N);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);

/// `ESPM_DRAIN_ONCE=drain` runs one iteration and exits, `ESPM_DRAIN_ONCE=setup` only its
/// set-up: under `valgrind --tool=callgrind` the difference of their instruction counts is the
/// drain's, repeatable where wall time on a shared VM is not (README, Performance).
fn main() {
    match std::env::var("ESPM_DRAIN_ONCE").as_deref() {
        Ok("setup") => {
            let xml = body();
            let _ = journal_with(&xml);
        }
        Ok(_) => {
            let xml = body();
            let (_dir, journal, raw) = journal_with(&xml);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let done = rt
                .block_on(espm_poller::reprocess(&journal, raw))
                .expect("reprocess");
            assert_eq!(done.new_events, N);
        }
        Err(_) => {
            benches();
            criterion::Criterion::default()
                .configure_from_args()
                .final_summary();
        }
    }
}
