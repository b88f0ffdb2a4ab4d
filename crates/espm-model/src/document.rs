//! Parsing and writing whole documents, with a root-element check serde alone does not make.

use quick_xml::events::Event;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A PM document type with a known root element.
pub trait PmDocument: Serialize + DeserializeOwned {
    /// The unqualified root element name, e.g. `notificationList`.
    const ROOT: &'static str;
}

/// Why bytes could not be read as the expected PM document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The body is not XML at all (an HTML maintenance page, JSON, plain text, empty).
    #[error("not an XML document: {snippet:?}")]
    NotXml {
        /// The first characters of the body, for the log.
        snippet: String,
    },
    /// Well-formed enough to find a root, but it is another document (e.g. `<response>` or `<html>`).
    #[error("expected <{expected}> but the document root is <{found}>")]
    WrongRoot {
        /// The root we wanted.
        expected: &'static str,
        /// The root we found.
        found: String,
    },
    /// XML that does not parse or does not fit the type (truncated, bad number, ...).
    #[error("malformed <{root}> document: {message}")]
    Malformed {
        /// The root we wanted.
        root: &'static str,
        /// The parser's message.
        message: String,
    },
}

/// At most this many characters of a bad body are kept in an error.
const SNIPPET_CHARS: usize = 160;

pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(SNIPPET_CHARS).collect()
}

/// The name of the first element of a document, if it has one. HTML pages report `html`.
pub fn root_element(bytes: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(Event::Text(t)) if !t.iter().all(u8::is_ascii_whitespace) => return None,
            Ok(_) => {}
        }
        buf.clear();
    }
}

/// Parse a PM document, checking its root element first.
pub fn parse<T: PmDocument>(bytes: &[u8]) -> Result<T, DocumentError> {
    let found = match root_element(bytes) {
        Some(r) => r,
        None => {
            return Err(DocumentError::NotXml {
                snippet: snippet(bytes),
            })
        }
    };
    if found.eq_ignore_ascii_case("html") {
        return Err(DocumentError::NotXml {
            snippet: snippet(bytes),
        });
    }
    if found != T::ROOT {
        return Err(DocumentError::WrongRoot {
            expected: T::ROOT,
            found,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DocumentError::Malformed {
        root: T::ROOT,
        message: format!("not UTF-8: {e}"),
    })?;
    // quick-xml 0.38's deserializer can panic on some malformed input (a DOCTYPE inside element
    // text, found by fuzzing); outside input must give an error, never take the poller down.
    match std::panic::catch_unwind(|| quick_xml::de::from_str::<T>(text)) {
        Ok(res) => res.map_err(|e| DocumentError::Malformed {
            root: T::ROOT,
            message: e.to_string(),
        }),
        Err(_) => Err(DocumentError::Malformed {
            root: T::ROOT,
            message: "the XML parser rejected the document (internal parser panic)".to_string(),
        }),
    }
}

/// Write a PM document with the XML prolog PM itself uses.
pub fn to_xml<T: PmDocument>(doc: &T) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n");
    // Our document types are plain structs of strings, numbers and lists: serialising them into
    // a String cannot fail, so an error here is a bug in the types, surfaced as an empty root.
    match quick_xml::se::to_string_with_root(T::ROOT, doc) {
        Ok(body) => out.push_str(&body),
        Err(_) => {
            out.push('<');
            out.push_str(T::ROOT);
            out.push_str("/>");
        }
    }
    out
}
