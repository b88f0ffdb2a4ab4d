//! Reading a notification list of any size in bounded memory.
//!
//! PM hands out a whole backlog in one `clear=true` body, so its size is not ours to choose.
//! [`NotificationStream`] reads the list from any [`BufRead`] (the journal's stored chunks),
//! cuts it into its top-level `<notification>` elements as they go by and parses each on its
//! own, the way [`crate::parse_notifications_salvaging`] does for a body in memory: what parses
//! is yielded, what does not is yielded with its exact bytes. An element in PM's plain layout is
//! read by the fast path from this reader's own events as they pass (tokenized once); its bytes
//! are kept until it ends, for serde should the fast path give way. Memory holds one element at
//! a time, never the body.

use std::io::BufRead;

use quick_xml::events::Event;

use crate::fast::{opens_fast, Fast, Feed};
use crate::salvage::parse_fragment;
use crate::{Notification, NotificationList, PmDocument};

/// The most bytes of one bad part kept for quarantine (the whole body stays in the journal).
pub const MAX_BAD_PART: usize = 16 * 1024 * 1024;

/// One part of a streamed notification list, in body order.
#[derive(Debug, Clone, PartialEq)]
pub enum ListItem {
    /// A `<notification>` that parsed.
    Notification(Notification),
    /// A part that did not: one `<notification>`, or the rest of a body that breaks off or goes
    /// wrong (truncated, an XML error). `bytes` holds at most [`MAX_BAD_PART`] bytes of it.
    Bad {
        /// Its bytes (see above).
        bytes: Vec<u8>,
        /// Why it could not be read.
        error: String,
        /// True when `bytes` was cut at [`MAX_BAD_PART`].
        cut: bool,
    },
}

/// Why a body is not a notification list at all (nothing in it can be salvaged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAList(pub String);

/// A streaming reader of one notification list (see the module documentation).
pub struct NotificationStream<R: BufRead> {
    reader: quick_xml::Reader<Recorder<R>>,
    buf: Vec<u8>,
    root_open: Vec<u8>,
    root_name: Vec<u8>,
    depth: usize,
    /// Offset where the `<notification>` being read starts.
    open: Option<u64>,
    /// The fast path reading that `<notification>` from this reader's own events, until it
    /// rejects it (then its kept bytes go to [`parse_fragment`], as every element once did).
    fast: Option<Fast>,
    root_closed: bool,
    done: bool,
}

impl<R: BufRead> NotificationStream<R> {
    /// A stream over `input`.
    pub fn new(input: R) -> Self {
        NotificationStream {
            reader: quick_xml::Reader::from_reader(Recorder::new(input)),
            buf: Vec::new(),
            root_open: Vec::new(),
            root_name: NotificationList::ROOT.as_bytes().to_vec(),
            depth: 0,
            open: None,
            fast: None,
            root_closed: false,
            done: false,
        }
    }

    /// The next part, `Ok(None)` at the end. `Err` only before anything was yielded: the body
    /// is not a notification list (not XML, another root element, empty).
    pub fn next_item(&mut self) -> Result<Option<ListItem>, NotAList> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.open.is_none() {
                // Between elements nothing needs keeping.
                self.reader.get_mut().forget();
            }
            let before = self.reader.get_ref().consumed;
            self.buf.clear();
            let ev = self.reader.read_event_into(&mut self.buf);
            let after = self.reader.get_ref().consumed;
            let mut done = None;
            if let (Some(fast), Ok(e)) = (&mut self.fast, &ev) {
                match fast.feed(e) {
                    Feed::More => {}
                    Feed::Done(n) => done = Some(n),
                    Feed::Reject => self.fast = None,
                }
            }
            match ev {
                Ok(Event::Start(e)) => {
                    self.depth += 1;
                    if self.depth == 1 {
                        if e.local_name().as_ref() != NotificationList::ROOT.as_bytes() {
                            self.done = true;
                            return Err(NotAList(format!(
                                "root element is <{}>, expected <{}>",
                                String::from_utf8_lossy(e.name().as_ref()),
                                NotificationList::ROOT
                            )));
                        }
                        let mut open = b"<".to_vec();
                        open.extend_from_slice(&e);
                        open.push(b'>');
                        self.root_open = open;
                        self.root_name = e.name().as_ref().to_vec();
                    } else if self.depth == 2 && e.local_name().as_ref() == b"notification" {
                        // The parser may have consumed the `<` with the text before it.
                        self.open = Some(after.saturating_sub(e.len() as u64 + 2));
                        self.fast = opens_fast(&e).then(Fast::default);
                    }
                }
                Ok(Event::Empty(e)) if self.depth == 0 => {
                    self.done = true;
                    if e.local_name().as_ref() == NotificationList::ROOT.as_bytes() {
                        return Ok(None);
                    }
                    return Err(NotAList(format!(
                        "root element is <{}/>, expected <{}>",
                        String::from_utf8_lossy(e.name().as_ref()),
                        NotificationList::ROOT
                    )));
                }
                Ok(Event::Empty(e))
                    if self.depth == 1 && e.local_name().as_ref() == b"notification" =>
                {
                    let start = after.saturating_sub(e.len() as u64 + 3);
                    let bytes = self.reader.get_ref().since(start).to_vec();
                    return Ok(Some(self.item(bytes)));
                }
                Ok(Event::End(_)) => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 {
                        if let Some(start) = self.open.take() {
                            self.fast = None;
                            let rec = self.reader.get_ref();
                            if let (Some(n), false) = (done, rec.overflowed) {
                                // Read once, from these events: its bytes are not needed.
                                return Ok(Some(ListItem::Notification(n)));
                            }
                            if rec.overflowed {
                                let bytes = rec.since(start).to_vec();
                                return Ok(Some(ListItem::Bad {
                                    bytes,
                                    error: format!(
                                        "one <notification> larger than {MAX_BAD_PART} bytes"
                                    ),
                                    cut: true,
                                }));
                            }
                            let bytes = rec.since(start).to_vec();
                            return Ok(Some(self.item(bytes)));
                        }
                    } else if self.depth == 0 {
                        self.root_closed = true;
                    }
                }
                Ok(Event::Text(t)) if self.depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                    if self.root_closed {
                        return Ok(Some(self.broken(before, "content after the root element")));
                    }
                    self.done = true;
                    return Err(NotAList("text before the root element: not XML".into()));
                }
                Ok(Event::Eof) => {
                    self.done = true;
                    if self.root_closed {
                        return Ok(None);
                    }
                    if self.root_open.is_empty() {
                        return Err(NotAList("empty body: no root element".into()));
                    }
                    let start = self.open.unwrap_or(before.saturating_sub(1));
                    return Ok(Some(self.broken(
                        start,
                        "document ends before </notificationList> (truncated)",
                    )));
                }
                Err(e) => {
                    if self.root_open.is_empty() {
                        self.done = true;
                        return Err(NotAList(format!("not XML: {e}")));
                    }
                    let start = self.open.unwrap_or(before.saturating_sub(1));
                    return Ok(Some(self.broken(start, &format!("XML error: {e}"))));
                }
                Ok(_) => {}
            }
        }
    }

    /// The input being read.
    pub fn get_ref(&self) -> &R {
        &self.reader.get_ref().inner
    }

    fn item(&self, bytes: Vec<u8>) -> ListItem {
        match parse_fragment(&self.root_open, &self.root_name, &bytes) {
            Ok(n) => ListItem::Notification(n),
            Err(error) => ListItem::Bad {
                bytes,
                error,
                cut: false,
            },
        }
    }

    /// The rest of the body from `start` on, as one bad part; the stream ends.
    fn broken(&mut self, start: u64, error: &str) -> ListItem {
        self.done = true;
        let rec = self.reader.get_mut();
        let mut bytes = rec.since(start).to_vec();
        let mut cut = rec.overflowed;
        // What the parser had not consumed yet is part of it too.
        loop {
            let chunk = match rec.inner.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(c) => c,
            };
            let n = chunk.len();
            let room = MAX_BAD_PART.saturating_sub(bytes.len());
            if room == 0 {
                cut = true;
            } else {
                bytes.extend_from_slice(&chunk[..n.min(room)]);
                cut |= n > room;
            }
            rec.inner.consume(n);
        }
        ListItem::Bad {
            bytes,
            error: error.to_string(),
            cut,
        }
    }
}

impl<R: BufRead> Iterator for NotificationStream<R> {
    type Item = Result<ListItem, NotAList>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

/// A [`BufRead`] that keeps the bytes consumed since the last [`Recorder::forget`], so the exact
/// bytes of the element being read are at hand (bounded by [`MAX_BAD_PART`]).
struct Recorder<R> {
    inner: R,
    /// Bytes consumed since `kept_from`.
    kept: Vec<u8>,
    kept_from: u64,
    consumed: u64,
    /// More than [`MAX_BAD_PART`] bytes since `kept_from`: `kept` holds the first ones only.
    overflowed: bool,
}

impl<R> Recorder<R> {
    fn new(inner: R) -> Self {
        Recorder {
            inner,
            kept: Vec::new(),
            kept_from: 0,
            consumed: 0,
            overflowed: false,
        }
    }

    /// Drop what was kept, except the last byte consumed: it may be the `<` of the next
    /// element, read along with the text before it.
    fn forget(&mut self) {
        let last = self.kept.last().copied();
        self.kept.clear();
        if self.kept.capacity() > 1024 * 1024 {
            self.kept.shrink_to(64 * 1024);
        }
        match last {
            Some(b) if self.consumed > 0 => {
                self.kept.push(b);
                self.kept_from = self.consumed - 1;
            }
            _ => self.kept_from = self.consumed,
        }
        self.overflowed = false;
    }

    /// The kept bytes from offset `start` on (start at or after the last forget).
    fn since(&self, start: u64) -> &[u8] {
        let skip = usize::try_from(start.saturating_sub(self.kept_from)).unwrap_or(usize::MAX);
        self.kept.get(skip..).unwrap_or_default()
    }
}

impl<R: BufRead> std::io::Read for Recorder<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Recorder<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let take = n.min(buf.len());
            let room = MAX_BAD_PART.saturating_sub(self.kept.len());
            if take > room {
                self.overflowed = true;
            }
            self.kept.extend_from_slice(&buf[..take.min(room)]);
        }
        self.consumed += n as u64;
        self.inner.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_xml;

    fn list(ids: &[i64]) -> String {
        to_xml(&NotificationList {
            notifications: ids
                .iter()
                .map(|&id| Notification {
                    notification_type_code: "UNSHARE".into(),
                    notification_id: id,
                    ..Notification::default()
                })
                .collect(),
        })
    }

    fn all(bytes: &[u8]) -> Result<Vec<ListItem>, NotAList> {
        // A tiny buffer: element boundaries fall across reads.
        NotificationStream::new(std::io::BufReader::with_capacity(7, bytes)).collect()
    }

    fn ids(items: &[ListItem]) -> Vec<i64> {
        items
            .iter()
            .filter_map(|i| match i {
                ListItem::Notification(n) => Some(n.notification_id),
                ListItem::Bad { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_clean_list_streams_every_notification_in_order() {
        let body = list(&[1, 2, 3]);
        let items = all(body.as_bytes()).unwrap();
        assert_eq!(ids(&items), vec![1, 2, 3]);
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn an_empty_list_is_no_items() {
        assert_eq!(all(b"<notificationList/>").unwrap(), vec![]);
        assert_eq!(
            all(b"<?xml version=\"1.0\"?><notificationList>\n</notificationList>").unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_truncated_body_yields_the_complete_ones_and_the_tail_as_bad() {
        let body = list(&[1, 2, 3]);
        let cut = &body.as_bytes()[..body.len() - 40];
        let items = all(cut).unwrap();
        assert_eq!(ids(&items), vec![1, 2]);
        match items.last() {
            Some(ListItem::Bad {
                bytes,
                error,
                cut: false,
            }) => {
                assert!(
                    error.contains("truncated") || error.contains("XML error"),
                    "{error}"
                );
                assert!(
                    bytes.starts_with(b"<notification>"),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                assert!(cut.ends_with(bytes), "the bad tail is the rest of the body");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_bad_notification_is_yielded_with_its_exact_bytes() {
        let body = list(&[1, 2, 3]).replacen(
            "<notificationId>2</notificationId>",
            "<notificationId>two</notificationId>",
            1,
        );
        let items = all(body.as_bytes()).unwrap();
        assert_eq!(ids(&items), vec![1, 3]);
        let bad: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                ListItem::Bad { bytes, .. } => Some(String::from_utf8_lossy(bytes).to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("<notification>") && bad[0].ends_with("</notification>"));
        assert!(body.contains(&bad[0]));
    }

    #[test]
    fn html_and_other_roots_are_not_a_list() {
        assert!(all(b"<!DOCTYPE html><html><body>502</body></html>").is_err());
        assert!(all(b"<response status=\"Error\"/>").is_err());
        assert!(all(b"").is_err());
        assert!(all(b"Bad Gateway").is_err());
    }
}
