//! Salvaging a notification list that does not parse as a whole.
//!
//! A `clear=true` body is the only copy of its notifications, so one bad `<notification>` (a
//! field PM changed, a truncated tail) must not hold back the good ones beside it. The list is
//! cut into its top-level `<notification>` elements by byte range; each is parsed on its own, and
//! what does not parse is reported with its exact bytes, so the caller can quarantine them.

use std::ops::Range;

use quick_xml::events::Event;

use crate::document::{parse, DocumentError};
use crate::notification::{Notification, NotificationList};
use crate::PmDocument;

/// A part of a notification list that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFragment {
    /// Its bytes within the body.
    pub range: Range<usize>,
    /// Why it could not be read.
    pub error: String,
}

/// What [`parse_notifications_salvaging`] could read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SalvagedList {
    /// Every notification that parsed, in body order.
    pub notifications: Vec<Notification>,
    /// Every part that did not, in body order. Empty when the whole body parsed.
    pub bad: Vec<BadFragment>,
}

impl SalvagedList {
    /// True when the whole body parsed.
    pub fn is_clean(&self) -> bool {
        self.bad.is_empty()
    }
}

/// Parse a `notificationList`, salvaging the notifications that parse when the whole does not.
///
/// `Err` means the body is not a notification list at all (an HTML page, another root): nothing
/// in it can be salvaged and the whole body is the bad part.
pub fn parse_notifications_salvaging(bytes: &[u8]) -> Result<SalvagedList, DocumentError> {
    let whole_error = match parse::<NotificationList>(bytes) {
        Ok(list) => {
            return Ok(SalvagedList {
                notifications: list.notifications,
                bad: Vec::new(),
            })
        }
        Err(e @ (DocumentError::NotXml { .. } | DocumentError::WrongRoot { .. })) => return Err(e),
        Err(e) => e.to_string(),
    };
    let scan = scan(bytes);
    let root_open = &bytes[scan.root_open.clone()];
    let mut out = SalvagedList::default();
    for fragment in scan.fragments {
        match parse_fragment(root_open, &scan.root_name, &bytes[fragment.clone()]) {
            Ok(n) => out.notifications.push(n),
            Err(error) => out.bad.push(BadFragment {
                range: fragment,
                error,
            }),
        }
    }
    if let Some((range, error)) = scan.broken {
        out.bad.push(BadFragment { range, error });
    }
    if out.bad.is_empty() {
        // Every element parsed alone but the whole did not: the fault lies between them. Keep
        // the whole body as the bad part rather than guess.
        out.bad.push(BadFragment {
            range: 0..bytes.len(),
            error: whole_error,
        });
    }
    Ok(out)
}

struct Scan {
    /// The bytes of the root's start tag (namespace declarations included).
    root_open: Range<usize>,
    /// The root's qualified name.
    root_name: Vec<u8>,
    /// Complete top-level `<notification>` elements.
    fragments: Vec<Range<usize>>,
    /// Where reading stopped on an error or a truncated document, and why.
    broken: Option<(Range<usize>, String)>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut out = Scan {
        root_open: 0..0,
        root_name: NotificationList::ROOT.as_bytes().to_vec(),
        fragments: Vec::new(),
        broken: None,
    };
    let mut depth = 0usize;
    let mut open: Option<usize> = None;
    let mut root_closed = false;
    loop {
        let before = pos(&reader);
        let ev = reader.read_event_into(&mut buf);
        let after = pos(&reader);
        match ev {
            Ok(Event::Start(e)) => {
                depth += 1;
                if depth == 1 {
                    out.root_open = before..after;
                    out.root_name = e.name().as_ref().to_vec();
                } else if depth == 2 && e.local_name().as_ref() == b"notification" {
                    open = Some(before);
                }
            }
            Ok(Event::Empty(e)) if depth == 1 && e.local_name().as_ref() == b"notification" => {
                out.fragments.push(before..after);
            }
            Ok(Event::End(_)) => {
                if depth == 2 {
                    if let Some(start) = open.take() {
                        out.fragments.push(start..after);
                    }
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    root_closed = true;
                }
            }
            Ok(Event::Text(t)) if root_closed && !t.iter().all(u8::is_ascii_whitespace) => {
                out.broken = Some((before..bytes.len(), "content after the root element".into()));
                break;
            }
            Ok(Event::Eof) => {
                if !root_closed {
                    let start = open.unwrap_or(before.min(bytes.len()));
                    out.broken = Some((
                        start..bytes.len(),
                        "document ends before </notificationList> (truncated)".into(),
                    ));
                }
                break;
            }
            Err(e) => {
                let start = open.unwrap_or(before.min(bytes.len()));
                out.broken = Some((start..bytes.len(), format!("XML error: {e}")));
                break;
            }
            Ok(_) => {}
        }
        buf.clear();
    }
    out
}

fn pos(reader: &quick_xml::Reader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

/// Parse one `<notification>` element: PM's plain layout straight from quick-xml's events
/// ([`crate::fast`]), anything else with serde ([`parse_fragment_serde`]).
pub(crate) fn parse_fragment(
    root_open: &[u8],
    root_name: &[u8],
    fragment: &[u8],
) -> Result<Notification, String> {
    match crate::fast::notification(fragment) {
        Some(n) => Ok(n),
        None => parse_fragment_serde(root_open, root_name, fragment),
    }
}

/// Parse one `<notification>` element with serde, inside a copy of the original root start tag,
/// so that namespace declarations on the root still apply.
pub(crate) fn parse_fragment_serde(
    root_open: &[u8],
    root_name: &[u8],
    fragment: &[u8],
) -> Result<Notification, String> {
    let mut doc = Vec::with_capacity(root_open.len() + fragment.len() + root_name.len() + 3);
    if root_open.is_empty() {
        doc.extend_from_slice(b"<notificationList>");
    } else {
        doc.extend_from_slice(root_open);
    }
    doc.extend_from_slice(fragment);
    doc.extend_from_slice(b"</");
    doc.extend_from_slice(root_name);
    doc.push(b'>');
    match parse::<NotificationList>(&doc) {
        Ok(list) if list.notifications.len() == 1 => list
            .notifications
            .into_iter()
            .next()
            .ok_or_else(String::new),
        Ok(list) => Err(format!(
            "expected one <notification>, found {}",
            list.notifications.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_xml;

    fn list(ids: &[i64]) -> NotificationList {
        NotificationList {
            notifications: ids
                .iter()
                .map(|&id| Notification {
                    notification_type_code: "UNSHARE".into(),
                    notification_id: id,
                    ..Notification::default()
                })
                .collect(),
        }
    }

    #[test]
    fn a_clean_list_is_clean() {
        let body = to_xml(&list(&[1, 2, 3]));
        let s = parse_notifications_salvaging(body.as_bytes()).unwrap();
        assert!(s.is_clean());
        assert_eq!(s.notifications.len(), 3);
    }

    #[test]
    fn one_bad_notification_does_not_block_the_others() {
        let body = to_xml(&list(&[1, 2, 3])).replace(
            "<notificationId>2</notificationId>",
            "<notificationId>two</notificationId>",
        );
        let s = parse_notifications_salvaging(body.as_bytes()).unwrap();
        let ids: Vec<i64> = s.notifications.iter().map(|n| n.notification_id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(s.bad.len(), 1);
        let bad = &body.as_bytes()[s.bad[0].range.clone()];
        let bad = std::str::from_utf8(bad).unwrap();
        assert!(bad.starts_with("<notification>") && bad.ends_with("</notification>"));
        assert!(bad.contains("two"));
    }

    #[test]
    fn a_truncated_tail_keeps_the_complete_notifications() {
        let full = to_xml(&list(&[1, 2, 3]));
        let cut = full.find("<notificationId>3").unwrap();
        let body = &full.as_bytes()[..cut];
        let s = parse_notifications_salvaging(body).unwrap();
        let ids: Vec<i64> = s.notifications.iter().map(|n| n.notification_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(s.bad.len(), 1);
        assert_eq!(s.bad[0].range.end, body.len());
    }

    #[test]
    fn html_is_not_salvaged() {
        let e = parse_notifications_salvaging(b"<html><body>down</body></html>").unwrap_err();
        assert!(matches!(e, DocumentError::NotXml { .. }));
    }
}
