//! Any bytes, read in any buffer size: the streaming notification reader never panics, every
//! bad part it hands back is bytes of the body, and a body that parses whole streams to exactly
//! the same notifications.
#![no_main]

use std::io::BufReader;

use espm_model::{parse, ListItem, NotificationList, NotificationStream};
use libfuzzer_sys::fuzz_target;

mod known_bugs;

fuzz_target!(|input: &[u8]| {
    let Some((&size, data)) = input.split_first() else {
        return;
    };
    if known_bugs::hits_known_bug(data) {
        return;
    }
    let reader = BufReader::with_capacity(usize::from(size).max(1), data);
    let Ok(items) = NotificationStream::new(reader).collect::<Result<Vec<_>, _>>() else {
        return;
    };
    let mut good = Vec::new();
    for item in items {
        match item {
            ListItem::Notification(n) => good.push(n),
            ListItem::Bad { bytes, .. } => {
                assert!(bytes.is_empty() || data.windows(bytes.len()).any(|w| w == &bytes[..]));
            }
        }
    }
    if let Ok(whole) = parse::<NotificationList>(data) {
        assert_eq!(whole.notifications, good);
    }
});
