//! Inputs that hit known, reported bugs outside this repository, skipped so a run can look for
//! new ones. Set FUZZ_KNOWN_BUGS=1 to fuzz them anyway (e.g. to check an upgrade fixed them).

/// quick-xml 0.38.4's deserializer panics (`unreachable!()` in `read_text`, "cannot be two
/// consequent Text events") when a `<!DOCTYPE ...>` sits between text runs inside an element,
/// e.g. `<a>x<!DOCTYPE y>z</a>`: fixed upstream by tafia/quick-xml PR #964. Reproducer:
/// `found/quick-xml-doctype-in-text.xml`. Skipped: any DOCTYPE after the first start tag.
pub fn hits_known_bug(data: &[u8]) -> bool {
    if std::env::var_os("FUZZ_KNOWN_BUGS").is_some() {
        return false;
    }
    let first_tag = data
        .windows(2)
        .position(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] >= 0x80));
    let Some(start) = first_tag else {
        return false;
    };
    data[start..]
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"<!doctype"))
}
