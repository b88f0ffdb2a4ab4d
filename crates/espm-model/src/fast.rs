//! A fast path for the common `<notification>`: its children read straight from quick-xml's
//! events, without serde's deserializer (a third of the drain's parse time in a burst, issue 9).
//!
//! It only answers for the plain form PM writes: known children, each once, holding plain text
//! (entities allowed) with no surrounding whitespace, no prefixes, comments, CDATA, attributes on
//! the children, carriage returns or non-ASCII text. Anything else is `None`, and the caller
//! parses the fragment with serde as before, so both paths agree on every input (property test
//! below, and the `salvage_notifications` fuzz target goes through it).

use quick_xml::events::Event;

use crate::Notification;

/// The notification in `fragment` (one `<notification>` element), or `None` when the fast path
/// cannot say (then serde decides, errors included).
pub(crate) fn notification(fragment: &[u8]) -> Option<Notification> {
    let mut reader = quick_xml::Reader::from_reader(fragment);
    match reader.read_event().ok()? {
        Event::Start(e) if opens_fast(&e) => {}
        _ => return None,
    }
    let mut fast = Fast::default();
    let n = loop {
        match fast.feed(&reader.read_event().ok()?) {
            Feed::More => {}
            Feed::Done(n) => break n,
            Feed::Reject => return None,
        }
    };
    // Nothing may follow the element but whitespace.
    loop {
        match reader.read_event().ok()? {
            Event::Eof => break,
            Event::Text(t) if blank(&t) => {}
            _ => return None,
        }
    }
    Some(n)
}

/// Whether a `<notification>` start tag is one the fast path reads (no prefix, no attributes).
pub(crate) fn opens_fast(e: &quick_xml::events::BytesStart<'_>) -> bool {
    e.name().as_ref() == b"notification" && e.attributes_raw().is_empty()
}

/// The fast path as a state machine over the events after a `<notification>` start tag that
/// [`opens_fast`] accepts: [`notification`] feeds it from a fragment, the stream from its own
/// reader (each element tokenized once). One statement of what the fast path accepts.
#[derive(Debug, Default)]
pub(crate) struct Fast {
    n: Notification,
    code: bool,
    id: bool,
    seen: u16,
    /// The child being read and its text so far.
    child: Option<(Field, String)>,
}

/// What [`Fast::feed`] made of an event.
#[derive(Debug)]
pub(crate) enum Feed {
    /// Not at the end of the element yet.
    More,
    /// The element's end: the notification.
    Done(Notification),
    /// Not the plain form: serde decides (the caller parses the element's bytes).
    Reject,
}

impl Fast {
    /// The next event of the element.
    pub(crate) fn feed(&mut self, ev: &Event<'_>) -> Feed {
        match self.step(ev) {
            Some(Some(n)) => Feed::Done(n),
            Some(None) => Feed::More,
            None => Feed::Reject,
        }
    }

    /// `None`: reject; `Some(None)`: more; `Some(Some(n))`: done.
    fn step(&mut self, ev: &Event<'_>) -> Option<Option<Notification>> {
        let Some((child, text)) = &mut self.child else {
            let child = match ev {
                Event::Start(e) if e.attributes_raw().is_empty() => field(e.name().as_ref())?,
                Event::End(e) if e.name().as_ref() == b"notification" => {
                    return (self.code && self.id).then(|| Some(std::mem::take(&mut self.n)));
                }
                Event::Text(t) if blank(t) => return Some(None),
                _ => return None,
            };
            let bit = 1u16 << child as u16;
            if self.seen & bit != 0 {
                return None; // a duplicate: serde's error to give
            }
            self.seen |= bit;
            self.child = Some((child, String::new()));
            return Some(None);
        };
        let child = *child;
        // quick-xml hands text and entity references out as separate events.
        match ev {
            Event::Text(t) => {
                if t.iter().any(|b| *b == b'\r' || !b.is_ascii()) {
                    return None;
                }
                text.push_str(&t.decode().ok()?);
                Some(None)
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().ok()? {
                    Some(c) => c,
                    None => match r.as_ref() {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        _ => return None,
                    },
                };
                if !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control() {
                    return None;
                }
                text.push(c);
                Some(None)
            }
            Event::End(end) => {
                let text = self.child.take().map(|(_, t)| t)?;
                if field(end.name().as_ref()) != Some(child)
                    || text.is_empty()
                    || text.starts_with(|c: char| c.is_ascii_whitespace())
                    || text.ends_with(|c: char| c.is_ascii_whitespace())
                {
                    return None;
                }
                let n = &mut self.n;
                match child {
                    Field::NotificationTypeCode => {
                        n.notification_type_code = text;
                        self.code = true;
                    }
                    Field::NotificationId => {
                        n.notification_id = int(&text)?;
                        self.id = true;
                    }
                    Field::Description => n.description = text,
                    Field::AccountId => n.account_id = Some(int(&text)?),
                    Field::Username => n.username = Some(text),
                    Field::PropertyId => n.property_id = Some(int(&text)?),
                    Field::MeterId => n.meter_id = Some(int(&text)?),
                    Field::NotificationCreatedDate => n.notification_created_date = Some(text),
                    Field::NotificationCreatedBy => n.notification_created_by = Some(text),
                    Field::NotificationCreatedByAccountId => {
                        n.notification_created_by_account_id = Some(text)
                    }
                }
                Some(None)
            }
            _ => None,
        }
    }
}

/// Layout between elements: spaces, tabs and newlines only (a carriage return is serde's).
fn blank(text: &[u8]) -> bool {
    text.iter().all(|b| matches!(b, b' ' | b'\n' | b'\t'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    NotificationTypeCode,
    NotificationId,
    Description,
    AccountId,
    Username,
    PropertyId,
    MeterId,
    NotificationCreatedDate,
    NotificationCreatedBy,
    NotificationCreatedByAccountId,
}

fn field(name: &[u8]) -> Option<Field> {
    Some(match name {
        b"notificationTypeCode" => Field::NotificationTypeCode,
        b"notificationId" => Field::NotificationId,
        b"description" => Field::Description,
        b"accountId" => Field::AccountId,
        b"username" => Field::Username,
        b"propertyId" => Field::PropertyId,
        b"meterId" => Field::MeterId,
        b"notificationCreatedDate" => Field::NotificationCreatedDate,
        b"notificationCreatedBy" => Field::NotificationCreatedBy,
        b"notificationCreatedByAccountId" => Field::NotificationCreatedByAccountId,
        _ => return None,
    })
}

/// Plain decimal digits with an optional minus: anything serde might read differently (a plus
/// sign, leading zeros are fine for both) is left to serde.
fn int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salvage::parse_fragment_serde;
    use crate::to_xml;
    use proptest::prelude::*;

    fn arb_notification() -> impl Strategy<Value = Notification> {
        let text = || "[ -~]{0,12}";
        let opt_text = || prop::option::of("[ -~é\r\n]{0,12}");
        (
            (
                prop_oneof![
                    Just("UNSHARE".to_string()),
                    Just("SHAREUPDATE".to_string()),
                    "[A-Z]{1,10}"
                ],
                any::<i64>(),
                text(),
            ),
            (
                prop::option::of(any::<i64>()),
                opt_text(),
                prop::option::of(any::<i64>()),
                prop::option::of(any::<i64>()),
            ),
            (opt_text(), opt_text(), opt_text()),
        )
            .prop_map(
                |(
                    (code, id, description),
                    (account, username, property, meter),
                    (date, by, by_id),
                )| {
                    Notification {
                        notification_type_code: code,
                        notification_id: id,
                        description,
                        account_id: account,
                        username,
                        property_id: property,
                        meter_id: meter,
                        notification_created_date: date,
                        notification_created_by: by,
                        notification_created_by_account_id: by_id,
                    }
                },
            )
    }

    /// The `<notification>` element of a one-notification list, as PM's writer lays it out.
    fn fragment(n: &Notification) -> String {
        let xml = to_xml(&crate::NotificationList {
            notifications: vec![n.clone()],
        });
        let start = xml.find("<notification>").unwrap_or(0);
        let end = xml.rfind("</notification>").map_or(xml.len(), |e| e + 15);
        xml[start..end].to_string()
    }

    /// Edits that PM's writer does not make but a body may hold.
    fn perturb(xml: &str, edit: u8, at: usize) -> String {
        let cut = xml
            .char_indices()
            .map(|(i, _)| i)
            .nth(at % xml.chars().count().max(1))
            .unwrap_or(0);
        let (a, b) = xml.split_at(cut);
        let insert = match edit % 12 {
            0 => " ",
            1 => "\r\n",
            2 => "<!-- c -->",
            3 => "<![CDATA[x]]>",
            4 => "&amp;",
            5 => "<extra>1</extra>",
            6 => "<notificationId>9</notificationId>",
            7 => "é",
            8 => "\t",
            9 => "<accountId/>",
            10 => "+",
            _ => "0",
        };
        format!("{a}{insert}{b}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// What the fast path answers, serde answers the same; PM's plain layout takes the
        /// fast path.
        #[test]
        fn the_fast_path_agrees_with_serde(n in arb_notification()) {
            let xml = fragment(&n);
            let fast = notification(xml.as_bytes());
            let serde = parse_fragment_serde(b"", b"notificationList", xml.as_bytes());
            if let Some(f) = &fast {
                prop_assert_eq!(Ok(f.clone()), serde.clone(), "{}", xml);
            }
            let plain = [&n.description]
                .into_iter()
                .chain(n.username.iter())
                .chain(n.notification_created_date.iter())
                .chain(n.notification_created_by.iter())
                .chain(n.notification_created_by_account_id.iter())
                .all(|t| !t.is_empty() && t.is_ascii() && t.trim() == t && !t.contains('\r'));
            if plain && !n.notification_type_code.is_empty() {
                prop_assert!(fast.is_some(), "plain layout not taken fast: {}", xml);
            }
        }

        /// Whatever is done to the element, the fast path never answers differently from serde.
        #[test]
        fn an_edited_element_never_parses_differently(
            n in arb_notification(),
            edits in prop::collection::vec((any::<u8>(), any::<usize>()), 1..4),
        ) {
            let mut xml = fragment(&n);
            for (edit, at) in edits {
                xml = perturb(&xml, edit, at);
            }
            if let Some(f) = notification(xml.as_bytes()) {
                let serde = parse_fragment_serde(b"", b"notificationList", xml.as_bytes());
                prop_assert_eq!(Ok(f), serde, "{}", xml);
            }
        }
    }

    #[test]
    fn pm_layout_is_read_fast() {
        let xml = "<notification>\n  <notificationTypeCode>UNSHARE</notificationTypeCode>\n  \
                   <notificationId>42</notificationId>\n  <description>A &amp; B</description>\n  \
                   <accountId>-7</accountId>\n</notification>";
        let n = notification(xml.as_bytes()).expect("fast");
        assert_eq!(n.notification_id, 42);
        assert_eq!(n.description, "A & B");
        assert_eq!(n.account_id, Some(-7));
        assert_eq!(n.username, None);
        for odd in [
            "<notification><notificationId>1</notificationId></notification>",
            "<notification><notificationTypeCode>X</notificationTypeCode><notificationId>1</notificationId><notificationId>2</notificationId></notification>",
            "<notification><notificationTypeCode>X</notificationTypeCode><notificationId>+1</notificationId></notification>",
            "<notification><notificationTypeCode> X</notificationTypeCode><notificationId>1</notificationId></notification>",
            "<p:notification><notificationTypeCode>X</notificationTypeCode><notificationId>1</notificationId></p:notification>",
        ] {
            assert_eq!(notification(odd.as_bytes()), None, "{odd}");
        }
    }
}
