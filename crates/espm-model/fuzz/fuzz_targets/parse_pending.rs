//! Any bytes: parsing a pending list must return Ok or a typed error, never panic.
#![no_main]

use espm_model::{parse, to_xml, PendingList};
use libfuzzer_sys::fuzz_target;

mod known_bugs;

fuzz_target!(|data: &[u8]| {
    if known_bugs::hits_known_bug(data) {
        return;
    }
    if let Ok(list) = parse::<PendingList>(data) {
        let _ = list.next_page();
        let _ = to_xml(&list);
    }
});
