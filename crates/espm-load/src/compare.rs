//! Two bridge builds side by side: runs alternate between them on the same broker, and the summary
//! compares medians, since one run of each is within a shared machine's noise.

use std::fmt::Write as _;

use crate::report::RunResult;

/// The median of `xs` (the mean of the middle two for an even count); 0 for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Bridge CPU per received event, microseconds, of the runs that measured it.
fn cpu_per_event(runs: &[RunResult]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| {
            let cpu = r.bridge_cpu?;
            Some(cpu.as_secs_f64() * 1e6 / r.received.max(1) as f64)
        })
        .collect()
}

fn side(s: &mut String, name: &str, runs: &[RunResult]) -> f64 {
    let rates: Vec<f64> = runs.iter().map(|r| r.events_per_s).collect();
    let m = median(rates.clone());
    let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    let _ = write!(
        s,
        " {name}={m:.0}/s ({}) cpu={:.1}us/event",
        each.join(", "),
        median(cpu_per_event(runs))
    );
    m
}

/// `compare kafka: 3 pairs this=31113/s (...) cpu=32.0us/event against=30067/s (...)
/// cpu=31.7us/event this/against=1.03`: medians of events/s and of CPU per event.
pub fn summary(kind: &str, this: &[RunResult], against: &[RunResult]) -> String {
    let mut s = format!("compare {kind}: {} pairs", this.len().min(against.len()));
    let a = side(&mut s, "this", this);
    let b = side(&mut s, "against", against);
    let _ = write!(s, " this/against={:.2}", a / b.max(1e-9));
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SinkKind;

    fn run(per_s: f64, cpu_ms: u64) -> RunResult {
        RunResult {
            sink: SinkKind::Kafka,
            expected: 1000,
            received: 1000,
            duplicates: 0,
            events_per_s: per_s,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            bridge_ms: (0.0, 0.0),
            queue_ms: (0.0, 0.0),
            peak_rss_kib: None,
            bridge_cpu: Some(Duration::from_millis(cpu_ms)),
            elapsed: Duration::from_secs(1),
            note: None,
            dir: None,
        }
    }

    #[test]
    fn medians_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn summary_compares_the_medians() {
        let this = [run(300.0, 30), run(100.0, 10), run(200.0, 20)];
        let against = [run(100.0, 40), run(50.0, 50), run(400.0, 60)];
        let s = summary("kafka", &this, &against);
        assert_eq!(
            s,
            "compare kafka: 3 pairs this=200/s (300, 100, 200) cpu=20.0us/event \
             against=100/s (100, 50, 400) cpu=50.0us/event this/against=2.00"
        );
    }
}
