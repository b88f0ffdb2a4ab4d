//! Properties of the streaming notification reader: whatever the read sizes, it finds exactly
//! what reading the body in memory finds, never invents a notification, and hands every byte it
//! could not read to the caller.

use std::io::BufReader;

use espm_model::{
    parse_notifications_salvaging, to_xml, ListItem, Notification, NotificationList,
    NotificationStream,
};
use proptest::prelude::*;

fn list(n: usize) -> NotificationList {
    NotificationList {
        notifications: (0..n)
            .map(|i| Notification {
                notification_type_code: ["UNSHARE", "DISCONNECT", "SHAREUPDATE"][i % 3].into(),
                notification_id: 1000 + i as i64,
                description: format!("note {i} <&> é"),
                account_id: Some(7 + i as i64),
                ..Notification::default()
            })
            .collect(),
    }
}

fn stream(bytes: &[u8], buf: usize) -> Result<Vec<ListItem>, String> {
    NotificationStream::new(BufReader::with_capacity(buf, bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn good(items: &[ListItem]) -> Vec<Notification> {
    items
        .iter()
        .filter_map(|i| match i {
            ListItem::Notification(n) => Some(n.clone()),
            ListItem::Bad { .. } => None,
        })
        .collect()
}

proptest! {
    #[test]
    fn a_clean_list_streams_like_it_parses(n in 0usize..40, buf in 1usize..300) {
        let body = to_xml(&list(n));
        let items = stream(body.as_bytes(), buf).unwrap();
        prop_assert_eq!(good(&items), list(n).notifications);
        prop_assert_eq!(items.len(), n);
    }

    #[test]
    fn a_cut_anywhere_finds_what_the_in_memory_salvage_finds(
        n in 1usize..30, cut in 0.0f64..1.0, buf in 1usize..200,
    ) {
        let body = to_xml(&list(n));
        let at = ((body.len() as f64) * cut) as usize;
        let cut_body = &body.as_bytes()[..at];
        match (parse_notifications_salvaging(cut_body), stream(cut_body, buf)) {
            (Ok(s), Ok(items)) => {
                prop_assert_eq!(good(&items), s.notifications);
                if at < body.len() {
                    // The rest is handed back as a bad part, and it is the body's own bytes.
                    let bad: Vec<&Vec<u8>> = items.iter().filter_map(|i| match i {
                        ListItem::Bad { bytes, .. } => Some(bytes),
                        _ => None,
                    }).collect();
                    let end = b"</notification>";
                    let complete = cut_body.windows(end.len()).filter(|w| w == end).count();
                    prop_assert!(!bad.is_empty() || complete == n);
                    for b in bad {
                        prop_assert!(cut_body.windows(b.len().max(1)).any(|w| w == &b[..]) || b.is_empty());
                    }
                }
            }
            // Not a list at all (cut inside the prolog or the root tag): nothing to salvage.
            (Err(_), Err(_)) => {}
            (Ok(s), Err(e)) => prop_assert!(s.notifications.is_empty(), "stream: {e}"),
            (Err(e), Ok(items)) => prop_assert!(good(&items).is_empty(), "in memory: {e}"),
        }
    }

    /// Elements PM's writer would not lay out so (comments, CDATA, carriage returns, entities,
    /// whitespace, duplicates, unknown children) stream as the in-memory salvage reads them:
    /// the stream's own fast reading gives way to serde exactly where the fast path would.
    #[test]
    fn edited_elements_stream_like_they_parse(
        n in 1usize..12,
        edits in proptest::collection::vec((0usize..11, any::<prop::sample::Index>()), 1..6),
        buf in 1usize..300,
    ) {
        let mut body = to_xml(&list(n));
        for (edit, at) in edits {
            let insert = [
                " ", "\r\n", "<!-- c -->", "<![CDATA[x]]>", "&amp;", "<extra>1</extra>",
                "<notificationId>9</notificationId>", "\t", "<accountId/>", "+", "0",
            ][edit];
            // Only between the root's tags: the edits are to the elements, not the list.
            let lo = body.find("<notification>").unwrap_or(0);
            let hi = body.rfind("</notification>").unwrap_or(body.len());
            // Right after a tag: between children, or at the start of a child's text.
            let cuts: Vec<usize> = (lo + 1..hi)
                .filter(|&i| body.as_bytes()[i - 1] == b'>')
                .collect();
            if cuts.is_empty() {
                continue;
            }
            body.insert_str(cuts[at.index(cuts.len())], insert);
        }
        // serde over the whole body, where it reads it: an oracle the fast path is not part of.
        if let (Ok(list), Ok(items)) = (
            espm_model::parse::<NotificationList>(body.as_bytes()),
            stream(body.as_bytes(), buf),
        ) {
            prop_assert_eq!(good(&items), list.notifications, "{}", body);
        }
        match (parse_notifications_salvaging(body.as_bytes()), stream(body.as_bytes(), buf)) {
            (Ok(s), Ok(items)) => prop_assert_eq!(good(&items), s.notifications, "{}", body),
            (Err(_), Err(_)) => {}
            (Ok(s), Err(e)) => prop_assert!(s.notifications.is_empty(), "stream: {e}"),
            (Err(e), Ok(items)) => prop_assert!(good(&items).is_empty(), "in memory: {e}"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_invent(bytes in proptest::collection::vec(any::<u8>(), 0..400), buf in 1usize..64) {
        if let Ok(items) = stream(&bytes, buf) {
            for n in good(&items) {
                // A notification only comes out of bytes that spell its id.
                let id = n.notification_id.to_string();
                prop_assert!(bytes.windows(id.len()).any(|w| w == id.as_bytes()));
            }
        }
    }
}
