//! Any bytes: salvaging a notification list never panics, its bad ranges lie inside the body,
//! and a body that parses whole salvages to exactly the same notifications.
#![no_main]

use espm_model::{parse, parse_notifications_salvaging, NotificationList};
use libfuzzer_sys::fuzz_target;

mod known_bugs;

fuzz_target!(|data: &[u8]| {
    if known_bugs::hits_known_bug(data) {
        return;
    }
    if let Ok(s) = parse_notifications_salvaging(data) {
        for bad in &s.bad {
            assert!(bad.range.start <= bad.range.end && bad.range.end <= data.len());
        }
        if let Ok(whole) = parse::<NotificationList>(data) {
            assert!(s.bad.is_empty());
            assert_eq!(whole.notifications, s.notifications);
        }
    }
});
