//! Figures of one run and how they are printed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::SinkKind;

/// What one run measured.
#[derive(Debug)]
pub struct RunResult {
    /// The sink measured.
    pub sink: SinkKind,
    /// Notifications in the simulator's ledger.
    pub expected: usize,
    /// Unique ledger notifications that reached the consumer.
    pub received: usize,
    /// Deliveries of an already seen notification (at-least-once redeliveries).
    pub duplicates: u64,
    /// Unique received / (last receive - first POST).
    pub events_per_s: f64,
    /// Median end-to-end latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile end-to-end latency, milliseconds.
    pub p99_ms: f64,
    /// Maximum end-to-end latency, milliseconds.
    pub max_ms: f64,
    /// The bridge's own latency: PM's response handed out (the ledger's `handedOutAt`) to the
    /// consumer's receipt, median and 99th percentile, milliseconds. PM queueing (created to
    /// handed out, which the poll interval decides) is not in it.
    pub bridge_ms: (f64, f64),
    /// PM queueing: created to handed out, median and 99th percentile, milliseconds.
    pub queue_ms: (f64, f64),
    /// The bridge's VmHWM just before SIGTERM, KiB.
    pub peak_rss_kib: Option<u64>,
    /// CPU time (user + system) the bridge used over the run, just before SIGTERM.
    pub bridge_cpu: Option<Duration>,
    /// First POST to last receive.
    pub elapsed: Duration,
    /// Why the run ended early, if it did.
    pub note: Option<String>,
    /// The run's directory (kept when the run is incomplete).
    pub dir: Option<PathBuf>,
}

impl RunResult {
    /// Every ledger notification arrived.
    pub fn complete(&self) -> bool {
        self.received >= self.expected && self.expected > 0
    }
}

fn rss(r: &RunResult) -> String {
    match r.peak_rss_kib {
        Some(kib) => format!("{:.1}MiB", kib as f64 / 1024.0),
        None => "n/a".into(),
    }
}

/// `sink=kafka events=100000 events/s=... p50=...ms p99=...ms peak_rss=...MiB`
pub fn line(r: &RunResult) -> String {
    let mut s = format!(
        "sink={} events={} events/s={:.0} p50={:.0}ms p99={:.0}ms peak_rss={}",
        r.sink.as_str(),
        r.received,
        r.events_per_s,
        r.p50_ms,
        r.p99_ms,
        rss(r)
    );
    let _ = write!(
        s,
        " bridge_p50={:.0}ms bridge_p99={:.0}ms pm_queue_p50={:.0}ms pm_queue_p99={:.0}ms",
        r.bridge_ms.0, r.bridge_ms.1, r.queue_ms.0, r.queue_ms.1
    );
    let _ = write!(
        s,
        " max={:.0}ms elapsed={:.1}s duplicates={}",
        r.max_ms,
        r.elapsed.as_secs_f64(),
        r.duplicates
    );
    if let Some(cpu) = r.bridge_cpu {
        // CPU per event varies far less between runs than events/s on a shared machine.
        let per_event = cpu.as_secs_f64() * 1e6 / r.received.max(1) as f64;
        let _ = write!(
            s,
            " bridge_cpu={:.2}s ({per_event:.1}us/event)",
            cpu.as_secs_f64()
        );
    }
    if !r.complete() {
        let _ = write!(s, " INCOMPLETE {} of {}", r.received, r.expected);
        if let Some(n) = &r.note {
            let _ = write!(s, " ({n})");
        }
    }
    if let Some(d) = &r.dir {
        let _ = write!(s, " dir={}", d.display());
    }
    s
}

/// The results as a Markdown table.
pub fn markdown(results: &[RunResult]) -> String {
    let mut s = String::from(
        "| sink | events | events/s | p50 latency | p99 latency | bridge p50 | bridge p99 | bridge peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let events = if r.complete() {
            r.received.to_string()
        } else {
            format!("{} of {} (incomplete)", r.received, r.expected)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            r.sink.as_str(),
            events,
            r.events_per_s,
            r.p50_ms,
            r.p99_ms,
            r.bridge_ms.0,
            r.bridge_ms.1,
            rss(r).replace("MiB", " MiB")
        );
    }
    s
}

/// Nearest-rank percentile of sorted values (`p` in 0..=1); 0 for an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn line_and_table() {
        let r = RunResult {
            sink: SinkKind::Kafka,
            expected: 10,
            received: 10,
            duplicates: 0,
            events_per_s: 1234.4,
            p50_ms: 10.2,
            p99_ms: 99.6,
            max_ms: 120.0,
            bridge_ms: (4.0, 20.5),
            queue_ms: (6.0, 79.0),
            peak_rss_kib: Some(2048),
            bridge_cpu: Some(Duration::from_millis(250)),
            elapsed: Duration::from_secs(1),
            note: None,
            dir: None,
        };
        let l = line(&r);
        assert!(
            l.starts_with("sink=kafka events=10 events/s=1234 p50=10ms p99=100ms peak_rss=2.0MiB"),
            "{l}"
        );
        assert!(
            l.contains(" bridge_p50=4ms bridge_p99=20ms pm_queue_p50=6ms"),
            "{l}"
        );
        assert!(l.contains(" bridge_cpu=0.25s (25000.0us/event)"), "{l}");
        assert!(!l.contains("INCOMPLETE"));
        let t = markdown(&[r]);
        assert!(
            t.contains("| kafka | 10 | 1234 | 10 ms | 100 ms | 4 ms | 20 ms | 2.0 MiB |"),
            "{t}"
        );
    }
}
