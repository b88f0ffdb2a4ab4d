//! Any bytes: the normalizer returns events or an error, never panics; every event is
//! deterministic and serialises to JSON whose `data` carries no NaN-turned-null surprises.
#![no_main]

use espm_events::{normalize_document, Origin};
use libfuzzer_sys::fuzz_target;

mod known_bugs;

fuzz_target!(|data: &[u8]| {
    if known_bugs::hits_known_bug(data) {
        return;
    }
    let origin = Origin::new("sim", "fuzz");
    if let Ok(events) = normalize_document(&origin, data) {
        let again = normalize_document(&origin, data).ok();
        assert_eq!(
            Some(&events),
            again.as_ref(),
            "normalizer is not deterministic"
        );
        for ev in &events {
            let bytes = ev.to_json_bytes();
            assert!(!bytes.is_empty());
            if let Some(t) = &ev.time {
                assert!(chrono_free_rfc3339(t), "time is not RFC 3339: {t}");
            }
        }
    }
});

/// A cheap shape check of an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS...).
fn chrono_free_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':'
}
